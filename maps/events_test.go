package maps

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

// TestDecodeEvent: the hand-written decoder reads what the reflection-based one reads.
func TestDecodeEvent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		b := make([]byte, eventSize)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		var want, got bpf.Event
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &want); err != nil {
			t.Fatal(err)
		}
		decodeEvent(b, &got)
		if got != want {
			t.Fatalf("decodeEvent = %+v, binary.Read = %+v", got, want)
		}
	}
}
