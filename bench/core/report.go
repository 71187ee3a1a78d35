package core

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Result is one measured figure.
type Result struct {
	Section string  `json:"section"`          // hot, cold, live, control, events
	Name    string  `json:"name"`             // what was measured
	Value   float64 `json:"value"`            // in Unit
	Unit    string  `json:"unit"`             // ns/pkt, ms, B/device, MB, events/s, ...
	Ratio   float64 `json:"ratio,omitempty"`  // Value relative to Base, measured in the same run
	Base    string  `json:"base,omitempty"`   // what Ratio is relative to
	Spread  float64 `json:"spread,omitempty"` // (max-min)/median of the per-round ratios, when rounds were run
	Note    string  `json:"note,omitempty"`
	Sender  string  `json:"sender,omitempty"` // live section: the sender that made the figure (kernel, afpacket)
}

// Target is one performance target of the suite and its verdict.
type Target struct {
	Section  string  `json:"section"`
	Desc     string  `json:"target"`   // e.g. "allowed path <= 3.0x the floor"
	Measured float64 `json:"measured"` // the figure compared with Limit
	Op       string  `json:"op"`       // "<=" or ">="
	Limit    float64 `json:"limit"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
	Note     string  `json:"note,omitempty"`
	Sender   string  `json:"sender,omitempty"` // live section: the sender that made the figures compared
}

// Report collects results and targets; safe for concurrent use.
type Report struct {
	mu      sync.Mutex
	Started time.Time `json:"started"`
	Host    Host      `json:"host"`
	Quick   bool      `json:"quick"`
	Results []Result  `json:"results"`
	Targets []Target  `json:"targets"`
	Errors  []string  `json:"errors,omitempty"` // sections that failed
}

// Host describes the machine the figures come from.
type Host struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
}

// Add records a result.
func (r *Report) Add(res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Results = append(r.Results, res)
}

// Check records a target: measured op limit (op "<=" or ">=").
func (r *Report) Check(section, desc string, measured float64, op string, limit float64, unit, note string) {
	met := measured <= limit
	if op == ">=" {
		met = measured >= limit
	}
	if math.IsNaN(measured) {
		met = false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Targets = append(r.Targets, Target{Section: section, Desc: desc, Measured: measured, Op: op, Limit: limit,
		Unit: unit, Met: met, Note: note})
}

// TagSender records sender as the sender of every result and target of section.
func (r *Report) TagSender(section, sender string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.Results {
		if r.Results[i].Section == section {
			r.Results[i].Sender = sender
		}
	}
	for i := range r.Targets {
		if r.Targets[i].Section == section {
			r.Targets[i].Sender = sender
		}
	}
}

// Fail records a section that could not run.
func (r *Report) Fail(section string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", section, err))
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Num formats v for the table: "-" for NaN, three significant digits at most.
func Num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3g", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Print writes the results by section, then the targets with their verdicts.
func (r *Report) Print(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sections []string
	for _, res := range r.Results {
		if !slices.Contains(sections, res.Section) {
			sections = append(sections, res.Section)
		}
	}
	for _, s := range sections {
		head := s
		if i := slices.IndexFunc(r.Results, func(res Result) bool { return res.Section == s && res.Sender != "" }); i >= 0 {
			head += " (sender: " + r.Results[i].Sender + ")"
		}
		fmt.Fprintf(w, "\n== %s ==\n", head)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MEASURE\tVALUE\tUNIT\tRATIO\tVS\tSPREAD\tNOTE")
		for _, res := range r.Results {
			if res.Section != s {
				continue
			}
			ratio, spread := "", ""
			if res.Base != "" {
				ratio = Num(res.Ratio) + "x"
			}
			if res.Spread > 0 {
				spread = fmt.Sprintf("±%.0f%%", res.Spread*50)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.Name, Num(res.Value), res.Unit, ratio, res.Base, spread,
				res.Note)
		}
		tw.Flush()
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n== targets ==\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SECTION\tTARGET\tMEASURED\tLIMIT\tVERDICT\tNOTE")
		met := 0
		for _, t := range r.Targets {
			v := "MISSED"
			if t.Met {
				v = "met"
				met++
			}
			note := t.Note
			if t.Sender != "" {
				note = "sender " + t.Sender + "; " + note
			}
			fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s %s %s\t%s\t%s\n", t.Section, t.Desc, Num(t.Measured), t.Unit, t.Op,
				Num(t.Limit), t.Unit, v, note)
		}
		tw.Flush()
		fmt.Fprintf(w, "%d of %d targets met\n", met, len(r.Targets))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR %s\n", e)
	}
}

// HostInfo reads the kernel release and CPU model.
func HostInfo() Host {
	h := Host{CPUs: NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}
