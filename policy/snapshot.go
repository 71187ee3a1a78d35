package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"slices"

	"github.com/ztgate/ztgate/bpf"
)

// Snapshot is a compiled policy revision: exactly the content of one policy slot of the
// datapath's maps. The maps package writes it; the reference model decides from it.
type Snapshot struct {
	Revision uint64
	Config   bpf.Config
	Devices  map[bpf.DevKey]bpf.DevRec
	Addrs    map[bpf.AddrKey]bpf.AddrVal
	Prefixes map[bpf.PrefixKey]bpf.PrefixVal
	Rules    map[bpf.RuleKey]bpf.RuleVal

	// For reporting only (not written to the datapath).
	DeviceNames  map[uint32]string // dev_id -> device name
	SegmentNames map[uint16]string // segment id -> segment name
}

// MaxDevID is the largest dev_id in the snapshot (sizes dev_stats).
func (s *Snapshot) MaxDevID() uint32 {
	var m uint32
	for _, d := range s.Devices {
		m = max(m, d.DevId)
	}
	return m
}

// Hash is a digest of what the snapshot writes to the datapath (revision, config and the four
// policy maps), independent of map iteration order: equal hashes, equal map contents. The
// agent persists it to recognise, after a restart, that the pinned maps hold its policy.
func (s *Snapshot) Hash() string {
	h := sha256.New()
	cfg := s.Config
	cfg.Revision = s.Revision
	_ = binary.Write(h, binary.LittleEndian, &cfg)
	hashEntries(h, "devices", s.Devices)
	hashEntries(h, "addrs", s.Addrs)
	hashEntries(h, "prefixes", s.Prefixes)
	hashEntries(h, "rules", s.Rules)
	return hex.EncodeToString(h.Sum(nil))
}

// hashEntries writes the map's entries, encoded and sorted by key, to h.
func hashEntries[K comparable, V any](h hash.Hash, name string, m map[K]V) {
	type entry struct{ k, v []byte }
	entries := make([]entry, 0, len(m))
	for k, v := range m {
		var kb, vb bytes.Buffer
		_ = binary.Write(&kb, binary.LittleEndian, &k)
		_ = binary.Write(&vb, binary.LittleEndian, &v)
		entries = append(entries, entry{kb.Bytes(), vb.Bytes()})
	}
	slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.k, b.k) })
	fmt.Fprintf(h, "%s %d\n", name, len(entries))
	for _, e := range entries {
		h.Write(e.k)
		h.Write(e.v)
	}
}

// DevIDs returns the dev_id of every device of the snapshot by MAC: what a later Compile needs
// (as CompileOptions.Prev, see PrevFromDevIDs) to keep the ids.
func (s *Snapshot) DevIDs() map[string]uint32 {
	out := make(map[string]uint32, len(s.Devices))
	for k, d := range s.Devices {
		out[net.HardwareAddr(k.Mac[:]).String()] = d.DevId
	}
	return out
}

// PrevFromDevIDs builds a snapshot carrying only device ids, from DevIDs' output: enough as
// CompileOptions.Prev to keep every device's id.
func PrevFromDevIDs(ids map[string]uint32) (*Snapshot, error) {
	s := &Snapshot{Devices: make(map[bpf.DevKey]bpf.DevRec, len(ids))}
	for mac, id := range ids {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("device id of %q: not a MAC address", mac)
		}
		s.Devices[devKey(hw)] = bpf.DevRec{DevId: id}
	}
	return s, nil
}
