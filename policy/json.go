package policy

import (
	"reflect"
	"strconv"
)

// The JSON fast path decodes a policy written as JSON (YAML's subset that generated fleets use)
// without yaml.v3's node tree. decodeJSON either gives up, and Parse takes the YAML path, or
// returns exactly the Policy the YAML path decodes: it takes only a conservative subset (spaces
// and newlines, printable ASCII strings without escapes, unsigned integers, no null, known
// fields once each, values of their field's kind) and leaves every error to the YAML path, so
// that it carries its position. FuzzJSONFastPath keeps the two paths equal.

// maxKeySpan bounds how far a key's ':' may be from the key's opening quote. yaml.v3 takes a
// key for a key only when its ':' comes within 1024 characters of its start (a YAML "simple
// key"); the fast path stays well inside that.
const maxKeySpan = 1000

// jsonDoc is a cursor over a JSON document.
type jsonDoc struct {
	b []byte
	i int
}

// decodeJSON decodes data into p; false means data is outside the subset (p is then garbage).
func decodeJSON(data []byte, p *Policy) bool {
	d := &jsonDoc{b: data}
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return false
	}
	if !d.value(reflect.ValueOf(p).Elem(), "") {
		return false
	}
	d.space()
	return d.i == len(d.b)
}

// looksJSON reports whether data starts, after whitespace, with '{': the only documents
// decodeJSON tries.
func looksJSON(data []byte) bool {
	for _, c := range data {
		switch c {
		case ' ', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// space skips spaces and newlines.
func (d *jsonDoc) space() {
	for d.i < len(d.b) && (d.b[d.i] == ' ' || d.b[d.i] == '\n') {
		d.i++
	}
}

// blanks skips spaces only (YAML wants a key and its ':' on one line).
func (d *jsonDoc) blanks() {
	for d.i < len(d.b) && d.b[d.i] == ' ' {
		d.i++
	}
}

// next skips whitespace and consumes c if it comes next.
func (d *jsonDoc) next(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes; the bytes alias the document.
func (d *jsonDoc) str() ([]byte, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			return d.b[start:j], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// uint reads an unsigned integer literal: digits without a leading zero, not followed by a
// fraction or an exponent (the caller checks what follows for a delimiter).
func (d *jsonDoc) uint() (uint64, bool) {
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	lit := d.b[start:d.i]
	if len(lit) == 0 || len(lit) > 19 || (len(lit) > 1 && lit[0] == '0') {
		return 0, false
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	u, err := strconv.ParseUint(string(lit), 10, 64)
	return u, err == nil
}

// literal consumes word (true or false) if it comes next.
func (d *jsonDoc) literal(word string) bool {
	if len(d.b)-d.i >= len(word) && string(d.b[d.i:d.i+len(word)]) == word {
		d.i += len(word)
		return true
	}
	return false
}

// value decodes the value at the cursor into v, whose field name is name ("" at the root or
// for a list item).
func (d *jsonDoc) value(v reflect.Value, name string) bool {
	if d.i >= len(d.b) {
		return false
	}
	switch {
	case v.Type() == portRangeType:
		return d.portRange(v)
	case v.Kind() == reflect.Struct:
		return d.object(v)
	case v.Kind() == reflect.Slice:
		return d.array(v)
	case v.Type() == icmpTypeType && d.b[d.i] >= '0' && d.b[d.i] <= '9':
		// A bare type number, which the YAML path reads as the string of its digits.
		start := d.i
		if _, ok := d.uint(); !ok {
			return false
		}
		v.SetString(string(d.b[start:d.i]))
		return true
	case v.Kind() == reflect.String:
		s, ok := d.str()
		if ok {
			v.SetString(string(s))
		}
		return ok
	case v.Kind() == reflect.Bool:
		switch {
		case d.literal("true"):
			v.SetBool(true)
		case d.literal("false"):
			v.SetBool(false)
		default:
			return false
		}
		return true
	case v.CanUint():
		u, ok := d.uint()
		if !ok || u > uintLimit(v.Type(), name) {
			return false
		}
		v.SetUint(u)
		return true
	}
	return false
}

// portRange decodes 443 or "8000-8080" as decodePortRange does.
func (d *jsonDoc) portRange(v reflect.Value) bool {
	var pr PortRange
	if d.b[d.i] == '"' {
		s, ok := d.str()
		if !ok {
			return false
		}
		var err error
		if pr, err = ParsePortRange(string(s)); err != nil {
			return false
		}
	} else {
		u, ok := d.uint()
		if !ok {
			return false
		}
		if pr, ok = portOf(u); !ok {
			return false
		}
	}
	v.Set(reflect.ValueOf(pr))
	return true
}

// object decodes a JSON object into struct v: every key a field, none twice.
func (d *jsonDoc) object(v reflect.Value) bool {
	if !d.next('{') {
		return false
	}
	fields := fieldsOf(v.Type())
	var seen uint64
	if d.next('}') {
		return true
	}
	for {
		d.space()
		keyStart := d.i
		key, ok := d.str()
		if !ok {
			return false
		}
		f := -1
		for k := range fields {
			if string(key) == fields[k].name {
				f = k
				break
			}
		}
		if f < 0 || f >= 64 || seen&(1<<f) != 0 {
			return false
		}
		seen |= 1 << f
		d.blanks()
		if d.i >= len(d.b) || d.b[d.i] != ':' || d.i-keyStart >= maxKeySpan {
			return false
		}
		d.i++
		d.blanks()
		if !d.value(v.Field(fields[f].index), fields[f].name) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// array decodes a JSON array into slice v; an empty one leaves v nil, as in YAML. The slice
// it sets has no spare capacity (a policy lives as long as it is in force).
func (d *jsonDoc) array(v reflect.Value) bool {
	if !d.next('[') {
		return false
	}
	if d.next(']') {
		return true
	}
	s, n := v, 0
	for {
		if n == s.Cap() {
			grown := reflect.MakeSlice(v.Type(), n, max(1, 2*n))
			reflect.Copy(grown, s)
			s = grown
		}
		s = s.Slice(0, n+1)
		d.space()
		if !d.value(s.Index(n), "") {
			return false
		}
		n++
		if d.next(']') {
			if s.Cap() > n {
				exact := reflect.MakeSlice(v.Type(), n, n)
				reflect.Copy(exact, s)
				s = exact
			}
			v.Set(s)
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}
