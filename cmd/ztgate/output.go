package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"
)

// Output formats of -o.
const (
	fmtTable = "table"
	fmtJSON  = "json"
	fmtYAML  = "yaml"
	fmtText  = "text"
)

// outputFlag is the -o/--output flag accepting formats, the first being the default. An unknown
// format fails flag parsing, which makes it a usage error.
func outputFlag(formats ...string) *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "output",
		Aliases: []string{"o"},
		Usage:   "output format: " + strings.Join(formats, " or "),
		Value:   formats[0],
		Validator: func(s string) error {
			if !slices.Contains(formats, s) {
				return fmt.Errorf("unknown output format %q (want %s)", s, strings.Join(formats, " or "))
			}
			return nil
		},
	}
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tabwriter for aligned columns; Flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes cells as one tab-separated line.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// now is the clock of relative times (replaced in tests).
var now = time.Now

// age renders how long ago t was, "-" for the zero time (never).
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now().Sub(t)) + " ago"
}

// humanDuration renders d coarsely: 45s, 12m, 5h, 3d.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// humanBytes renders a byte count with a binary-prefix unit: 512B, 1.5K, 20.0M.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// yesNo renders a bool for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortHash shortens a hex digest for tables.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return orDash(h)
}

// percent is n of total in percent, 0 when total is 0.
func percent(n, total int) float64 {
	if total <= 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}
