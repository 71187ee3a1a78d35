package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/fsutil"
	"github.com/ztgate/ztgate/policy"
)

// stateFile is the applied policy and its revision, written atomically (one file, renamed into
// place) before the maps change: after a crash the agent restores exactly this.
const (
	stateFile = "state.json"
	auditFile = "audit.log"
	lockFile  = "agent.lock"
)

// persisted is the content of stateFile.
type persisted struct {
	Revision  uint64    `json:"revision"`
	Name      string    `json:"name"`
	Hash      string    `json:"hash"`
	AppliedAt time.Time `json:"applied_at"`
	Filename  string    `json:"filename,omitempty"` // where the policy came from, for errors
	YAML      string    `json:"yaml"`
	// DevIDs (MAC -> dev_id) and SnapshotHash (policy.Snapshot.Hash) let a restarted agent
	// recompile exactly the snapshot the pinned maps hold, and recognise it, without reading
	// the maps back (which would need CAP_SYS_ADMIN: BPF_MAP_GET_FD_BY_ID).
	DevIDs       map[string]uint32 `json:"dev_ids,omitempty"`
	SnapshotHash string            `json:"snapshot_hash,omitempty"`

	// devs, when DevIDs is nil, is where save takes the device ids from (the applied
	// snapshot's devices): formatting them straight into the file spares building DevIDs.
	devs map[bpf.DevKey]bpf.DevRec
}

// store is the agent's state directory.
type store struct {
	dir string
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return &store{dir: dir}, nil
}

// lock takes the agent lock of the state directory: one agent per state directory. The
// kernel releases it when the process dies, however it dies.
func (s *store) lock() (func(), error) {
	path := filepath.Join(s.dir, lockFile)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another agent holds %s (pid %s)", path, string(holder))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = unix.Ftruncate(fd, 0)
	_, _ = unix.Pwrite(fd, []byte(strconv.Itoa(os.Getpid())), 0)
	return func() { unix.Close(fd) }, nil
}

// load returns the persisted policy, or nil when none was ever applied.
func (s *store) load() (*persisted, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("read state %s: %w", filepath.Join(s.dir, stateFile), err)
	}
	if got := policy.Hash([]byte(p.YAML)); got != p.Hash {
		return nil, fmt.Errorf("read state %s: policy hash %s does not match its content (%s)",
			filepath.Join(s.dir, stateFile), p.Hash, got)
	}
	return &p, nil
}

// save replaces the persisted policy atomically (write, fsync, rename, fsync the directory).
func (s *store) save(p *persisted) error {
	data, err := p.marshal()
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return fsutil.WriteAtomic(filepath.Join(s.dir, stateFile), data)
}

// marshal encodes p as encoding/json would (one field a line), but writes the device ids
// unsorted and straight from devs when DevIDs is nil, sparing encoding/json's sorting and
// formatting of a map that can hold a million devices.
func (p *persisted) marshal() ([]byte, error) {
	var fields [][2]any
	add := func(name string, v any) { fields = append(fields, [2]any{name, v}) }
	add("revision", p.Revision)
	add("name", p.Name)
	add("hash", p.Hash)
	add("applied_at", p.AppliedAt)
	if p.Filename != "" {
		add("filename", p.Filename)
	}
	add("yaml", p.YAML)
	b := make([]byte, 0, len(p.YAML)+len(p.YAML)/8+48*max(len(p.DevIDs), len(p.devs))+512)
	b = append(b, '{')
	for i, f := range fields {
		v, err := json.Marshal(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f[0], err)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  \""...)
		b = append(b, f[0].(string)...)
		b = append(b, "\": "...)
		b = append(b, v...)
	}
	if len(p.DevIDs) > 0 || (p.DevIDs == nil && len(p.devs) > 0) {
		b = append(b, ",\n  \"dev_ids\": {"...)
		first := true
		entry := func(mac [6]byte, id uint32) {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, "\n    \""...)
			b = appendMAC(b, mac)
			b = append(b, "\": "...)
			b = strconv.AppendUint(b, uint64(id), 10)
		}
		if p.DevIDs != nil {
			for mac, id := range p.DevIDs {
				key, err := json.Marshal(mac)
				if err != nil {
					return nil, err
				}
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, "\n    "...)
				b = append(b, key...)
				b = append(b, ": "...)
				b = strconv.AppendUint(b, uint64(id), 10)
			}
		} else {
			for k, d := range p.devs {
				entry(k.Mac, d.DevId)
			}
		}
		b = append(b, "\n  }"...)
	}
	if p.SnapshotHash != "" {
		v, err := json.Marshal(p.SnapshotHash)
		if err != nil {
			return nil, err
		}
		b = append(b, ",\n  \"snapshot_hash\": "...)
		b = append(b, v...)
	}
	return append(b, "\n}\n"...), nil
}

// appendMAC appends mac as net.HardwareAddr.String does (lower-case hex, colons).
func appendMAC(b []byte, mac [6]byte) []byte {
	const hexDigits = "0123456789abcdef"
	for i, c := range mac {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}
