package core

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// NumCPU is the number of CPUs the suite may use.
func NumCPU() int { return runtime.NumCPU() }

// BenchCPU is the CPU a measuring thread is pinned to: the last one, away from CPU 0's
// housekeeping.
func BenchCPU() int { return max(0, NumCPU()-1) }

// Count writes n for a name: 1, 1k, 100k, 1M.
func Count(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// NsMs is ns nanoseconds in milliseconds.
func NsMs(ns int64) float64 { return float64(ns) / 1e6 }

// PinDir returns a fresh bpffs directory for one datapath or agent of the suite, what naming
// its user.
func PinDir(what string) string {
	var id [6]byte
	_, _ = rand.Read(id[:])
	return filepath.Join("/sys/fs/bpf", "ztgate-bench-"+what+"-"+hex.EncodeToString(id[:]))
}
