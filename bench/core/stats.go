package core

import (
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// Median of xs (NaN-free, non-empty).
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Spread is (max-min)/median of xs.
func Spread(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m := Median(xs)
	if m == 0 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / m
}

// Percentile p (0..100) of xs, nearest rank.
func Percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(len(s)-1, i))]
}

// Variant is one thing measured in interleaved rounds: Run returns its cost per operation.
type Variant struct {
	Name string
	Run  func() (float64, error)
}

// Interleave runs every variant once per round, round-robin, for rounds rounds, and returns
// each variant's per-round costs (same order as variants).
func Interleave(rounds int, vs []Variant) ([][]float64, error) {
	out := make([][]float64, len(vs))
	for r := 0; r < rounds; r++ {
		for i, v := range vs {
			c, err := v.Run()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.Name, err)
			}
			out[i] = append(out[i], c)
		}
	}
	return out, nil
}

// Ratios returns, per round, a[i]/b[i].
func Ratios(a, b []float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range a {
		if i < len(b) && b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// PinThread locks the calling goroutine to its OS thread and that thread to cpu; the returned
// function undoes both.
func PinThread(cpu int) (func(), error) {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("get affinity: %w", err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	return func() {
		_ = unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}, nil
}
