package policy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxErrors is the largest number of errors Parse and Validate report; when there are more,
// a last entry says how many were left out.
const MaxErrors = 50

// maxCollected bounds the errors kept before sorting, so that a hostile document cannot make
// the error list itself large. Beyond it errors are only counted.
const maxCollected = 1000

// FieldError is one problem in a policy document. Line and Col are 1-based positions in File
// and are 0 when unknown (a Policy built in Go and checked with Validate). Path is the field
// path, e.g. "spec.devices[2].mac"; it is empty for problems with the whole document.
type FieldError struct {
	File      string
	Line, Col int
	Path      string
	Msg       string
}

// Error formats the error as "file:line:col: path: msg", leaving out the parts that are
// unknown or empty.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(e.Line))
		if e.Col > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Col))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a document, sorted by position. Parse and Validate return
// it (never an empty one) as their error.
type Errors []*FieldError

// Error returns one error per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *FieldError values.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// errorList collects the errors of one Parse or Validate call.
type errorList struct {
	errs    Errors
	dropped int // errors beyond maxCollected
}

// add collects e, or only counts it once maxCollected are held.
func (l *errorList) add(e *FieldError) {
	if len(l.errs) >= maxCollected {
		l.dropped++
		return
	}
	l.errs = append(l.errs, e)
}

// len is the number of errors found, collected or not.
func (l *errorList) len() int { return len(l.errs) + l.dropped }

// err returns the collected errors sorted by position and capped at MaxErrors, or nil.
// Errors without a position keep the order in which they were found.
func (l *errorList) err() error {
	if l.len() == 0 {
		return nil
	}
	errs := l.errs
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Col < errs[j].Col
	})
	more := l.dropped
	if len(errs) > MaxErrors {
		more += len(errs) - MaxErrors
		errs = errs[:MaxErrors:MaxErrors]
	}
	if more > 0 {
		errs = append(errs, &FieldError{File: errs[0].File, Msg: fmt.Sprintf("too many errors, %d more not shown", more)})
	}
	return errs
}

// maxShown is how much of a value from the document an error message shows.
const maxShown = 64

// quote quotes a value from the document for an error message, shortening long values.
func quote(s string) string {
	if len(s) > maxShown {
		return strconv.Quote(s[:maxShown]) + "..."
	}
	return strconv.Quote(s)
}

// clip shortens a long number from the document for an error message.
func clip(s string) string {
	if len(s) > maxShown {
		return s[:maxShown] + "..."
	}
	return s
}
