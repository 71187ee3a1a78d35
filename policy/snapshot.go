package policy

import "github.com/ztgate/ztgate/bpf"

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
