package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"reflect"
	"slices"
	"sync"
	"unsafe"

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

	// Fresh are the dev_ids Compile gave to devices the snapshot it compiled over
	// (CompileOptions.Prev) did not know: an id a deleted device left, or one never used. Their
	// counters must start from zero so that a new device never inherits a deleted one's:
	// maps.Apply clears them, and empties Fresh once the snapshot is in force (applying it
	// again is no new step). Not part of Hash: it describes the step, not the content.
	Fresh []uint32
}

// FreshOver returns, in increasing order, the dev_ids s gives devices (MACs) that active does
// not give them (every id when active is nil): Fresh for s applied over what the datapath
// enforces. A device that keeps its id keeps its counters.
func (s *Snapshot) FreshOver(active *Snapshot) []uint32 {
	var fresh []uint32
	for k, d := range s.Devices {
		if active == nil || active.Devices[k].DevId != d.DevId {
			fresh = append(fresh, d.DevId)
		}
	}
	slices.Sort(fresh)
	return fresh
}

// MaxDevID is the largest dev_id in the snapshot (checked against zt_devstats).
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

// hashEntries writes the map's entries, encoded (binary.LittleEndian) and sorted by key, to h.
func hashEntries[K comparable, V any](h hash.Hash, name string, m map[K]V) {
	kc, vc := rawCodecOf[K](), rawCodecOf[V]()
	if !kc.ok || !vc.ok {
		hashEntriesSlow(h, name, m)
		return
	}
	// Keys in one buffer, sorted through an index; values looked up in key order.
	ks := kc.size
	keys := make([]K, 0, len(m))
	raw := make([]byte, 0, len(m)*ks)
	for k := range m {
		keys = append(keys, k)
		raw = kc.append(raw, unsafe.Pointer(&k))
	}
	idx := make([]int32, len(keys))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		return bytes.Compare(raw[int(a)*ks:int(a+1)*ks], raw[int(b)*ks:int(b+1)*ks])
	})
	fmt.Fprintf(h, "%s %d\n", name, len(keys))
	buf := make([]byte, 0, 64<<10)
	for _, i := range idx {
		buf = append(buf, raw[int(i)*ks:int(i+1)*ks]...)
		v := m[keys[i]]
		buf = vc.append(buf, unsafe.Pointer(&v))
		if len(buf) >= 60<<10 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
}

// hashEntriesSlow is hashEntries with encoding/binary, for types rawCodec cannot copy.
func hashEntriesSlow[K comparable, V any](h hash.Hash, name string, m map[K]V) {
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

// rawCodec encodes a fixed-size type as binary.Write(LittleEndian) does, by copying its
// memory: valid on a little-endian host for a type without implicit padding (binary.Size equals
// its size in memory), once its blank (_) fields, which binary.Write writes as zeros, are zeroed.
type rawCodec struct {
	ok     bool
	size   int
	blanks [][2]int // byte ranges of blank fields
}

// append appends the bytes of the value at p to b, its blank fields zeroed.
func (c rawCodec) append(b []byte, p unsafe.Pointer) []byte {
	n := len(b)
	b = append(b, unsafe.Slice((*byte)(p), c.size)...)
	for _, r := range c.blanks {
		clear(b[n+r[0] : n+r[1]])
	}
	return b
}

var rawCodecs sync.Map // reflect.Type -> rawCodec

// rawCodecOf is the (cached) rawCodec of T.
func rawCodecOf[T any]() rawCodec {
	t := reflect.TypeFor[T]()
	if c, ok := rawCodecs.Load(t); ok {
		return c.(rawCodec)
	}
	var zero T
	c := rawCodec{size: int(t.Size())}
	one := uint16(1)
	littleEndian := *(*byte)(unsafe.Pointer(&one)) == 1
	if littleEndian && binary.Size(&zero) == c.size && blankRanges(t, 0, &c.blanks) {
		c.ok = true
	}
	rawCodecs.Store(t, c)
	return c
}

// blankRanges collects the byte ranges of the blank fields of t (at offset off), and reports
// whether t is made of fixed-size numbers, arrays and structs only.
func blankRanges(t reflect.Type, off int, out *[][2]int) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Uint8, reflect.Int16, reflect.Uint16, reflect.Int32, reflect.Uint32,
		reflect.Int64, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	case reflect.Array:
		for i := range t.Len() {
			if !blankRanges(t.Elem(), off+i*int(t.Elem().Size()), out) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Name == "_" {
				if f.Type.Size() > 0 {
					*out = append(*out, [2]int{off + int(f.Offset), off + int(f.Offset) + int(f.Type.Size())})
				}
				continue
			}
			if !blankRanges(f.Type, off+int(f.Offset), out) {
				return false
			}
		}
		return true
	}
	return false
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
