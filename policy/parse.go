package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// MaxDocumentSize is the largest policy document Parse accepts, in bytes.
const MaxDocumentSize = 16 << 20

// maxAliasNodes bounds how many nodes may be reached through YAML aliases, so that a small
// document cannot expand into a huge policy ("billion laughs").
const maxAliasNodes = 1 << 18

// ParseFile reads and parses the policy document at path. Errors in the document name path.
func ParseFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes and validates one policy document. filename only labels errors.
//
// Decoding is strict: unknown and duplicate fields, values of the wrong kind or out of range,
// more than one YAML document and an empty document are errors. The error, when not nil, is
// an Errors listing every problem found (up to MaxErrors) with its line, column and field
// path. Parse returns a nil Policy with any error.
//
// A document written as plain JSON is decoded without building yaml.v3's node tree (see
// ParseJSON); the result is the same policy, and an invalid one gets the same errors.
func Parse(filename string, data []byte) (*Policy, error) {
	return ParseLimit(filename, data, MaxDocumentSize)
}

// ParseLimit is Parse with another limit on the document size, in bytes (limit <= 0:
// MaxDocumentSize). The agent raises it for very large fleets (its max_policy_bytes setting).
func ParseLimit(filename string, data []byte, limit int) (*Policy, error) {
	if limit <= 0 {
		limit = MaxDocumentSize
	}
	errs := &errorList{}
	if len(data) > limit {
		errs.add(&FieldError{File: filename, Msg: "document is larger than " + sizeText(limit)})
		return nil, errs.err()
	}
	if p := ParseJSON(filename, data); p != nil {
		return p, nil
	}
	return parseYAML(filename, data, errs)
}

// ParseJSON is Parse's JSON fast path alone (see decodeJSON): the policy when data is a valid
// policy within the JSON subset the fast path reads, nil otherwise (Parse then reads data as
// YAML, which also locates every error). It does not check the size of data.
func ParseJSON(filename string, data []byte) *Policy {
	if !looksJSON(data) {
		return nil
	}
	var p Policy
	if !decodeJSON(data, &p) {
		return nil
	}
	errs := &errorList{}
	if (&validator{file: filename, errs: errs}).policy(&p); errs.len() != 0 {
		return nil
	}
	return &p
}

// parseYAML decodes and validates data through yaml.v3's node tree, which locates every error.
func parseYAML(filename string, data []byte, errs *errorList) (*Policy, error) {
	root, ferr := decodeYAML(data)
	if ferr != nil {
		ferr.File = filename
		errs.add(ferr)
		return nil, errs.err()
	}

	var p Policy
	d := &decoder{file: filename, errs: errs}
	d.value(root, "", reflect.ValueOf(&p).Elem())
	if errs.len() < MaxErrors && !d.aborted {
		// Validate what was decoded, but say nothing more about fields that failed to
		// decode: their zero values would only produce confusing follow-up errors.
		v := &validator{
			file:   filename,
			errs:   errs,
			locate: func(path string) (int, int) { return locateNode(root, path) },
			skip:   d.failedNear,
		}
		v.policy(&p)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &p, nil
}

// sizeText writes a size limit in MiB when it is a whole number of MiB, else in bytes.
func sizeText(n int) string {
	if n%(1<<20) == 0 {
		return strconv.Itoa(n>>20) + " MiB"
	}
	return strconv.Itoa(n) + " bytes"
}

// yamlLineRE matches the position yaml.v3 puts in its syntax errors.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeYAML parses data into a node tree and returns the content node of its only document.
func decodeYAML(data []byte) (root *yaml.Node, ferr *FieldError) {
	defer func() {
		// yaml.v3 is not supposed to panic on any input; a document it cannot handle is
		// still only an invalid document.
		if r := recover(); r != nil {
			root, ferr = nil, &FieldError{Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Msg: "empty document"}
		}
		return nil, syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &FieldError{Line: next.Line, Col: next.Column,
			Msg: "more than one YAML document, a policy file holds exactly one"}
	}
	if len(doc.Content) == 0 || nodeIsNull(doc.Content[0]) {
		return nil, &FieldError{Line: doc.Line, Col: doc.Column, Msg: "empty document"}
	}
	return doc.Content[0], nil
}

// syntaxError is yaml.v3's syntax error err as a FieldError with its line.
func syntaxError(err error) *FieldError {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &FieldError{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decoder fills a Policy from a yaml.Node tree, walking the Go types by reflection: a struct
// is a mapping whose keys are the yaml tags of its fields, a slice a sequence, and strings,
// booleans, unsigned integers and PortRange are scalars.
type decoder struct {
	file       string
	errs       *errorList
	failed     []string // paths of the errors found while decoding
	aliasDepth int      // > 0 while decoding a node reached through an alias
	aliasNodes int
	aborted    bool
}

// errorf records an error at node n for the field at path.
func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.failed = append(d.failed, path)
	d.errs.add(&FieldError{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// failedNear reports whether decoding failed at path, inside it or at one of its parents.
func (d *decoder) failedNear(path string) bool {
	for _, f := range d.failed {
		if pathWithin(path, f) || pathWithin(f, path) {
			return true
		}
	}
	return false
}

// pathWithin reports whether path is base or a field or element inside it.
func pathWithin(path, base string) bool {
	if base == "" || path == base {
		return true
	}
	return strings.HasPrefix(path, base) && len(path) > len(base) && (path[len(base)] == '.' || path[len(base)] == '[')
}

// charge counts n nodes reached through aliases and reports whether the budget allows them.
func (d *decoder) charge(node *yaml.Node, path string, n int) bool {
	if d.aliasDepth == 0 {
		return true
	}
	d.aliasNodes += n
	if d.aliasNodes > maxAliasNodes {
		d.errorf(node, path, "aliases expand to more than %d values", maxAliasNodes)
		d.aborted = true
		return false
	}
	return true
}

var (
	portRangeType = reflect.TypeFor[PortRange]()
	icmpTypeType  = reflect.TypeFor[ICMPType]()
)

// value decodes n into v, which is addressable.
func (d *decoder) value(n *yaml.Node, path string, v reflect.Value) {
	if d.aborted {
		return
	}
	if n.Kind == yaml.AliasNode {
		d.aliasDepth++
		defer func() { d.aliasDepth-- }()
		n = derefAlias(n)
	}
	if !d.charge(n, path, 1) {
		return
	}
	switch {
	case v.Type() == portRangeType:
		pr, err := decodePortRange(n)
		if err != nil {
			d.errorf(n, path, "%s", err)
			return
		}
		v.Set(reflect.ValueOf(pr))
	case v.Kind() == reflect.Struct:
		d.mapping(n, path, v)
	case v.Kind() == reflect.Slice:
		d.sequence(n, path, v)
	case v.Kind() == reflect.String:
		d.str(n, path, v)
	case v.Kind() == reflect.Bool:
		d.boolean(n, path, v)
	case v.CanUint():
		d.unsigned(n, path, v)
	default:
		panic("policy: cannot decode into " + v.Type().String())
	}
}

// mapping decodes a mapping into struct v: every key a field, none twice, no merge keys.
func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if nodeIsNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describeNode(n))
		return
	}
	fields := fieldsOf(v.Type())
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := derefAlias(n.Content[i]), n.Content[i+1]
		if key.Kind != yaml.ScalarNode {
			d.errorf(key, path, "expected a field name, got %s", describeNode(key))
			continue
		}
		name := key.Value
		fpath := joinPath(path, name)
		if first, dup := seen[name]; dup {
			d.errorf(key, fpath, "duplicate field %s, first defined at line %d", quote(name), first.Line)
			continue
		}
		seen[name] = key
		idx := fields.index(name)
		switch {
		case key.ShortTag() == "!!merge":
			d.errorf(key, path, "merge keys (<<) are not supported")
		case idx < 0:
			d.errorf(key, fpath, "unknown field %s, allowed fields are %s", quote(name), fields.names())
		default:
			d.value(val, fpath, v.Field(idx))
		}
	}
}

// sequence decodes a list into slice v.
func (d *decoder) sequence(n *yaml.Node, path string, v reflect.Value) {
	if nodeIsNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describeNode(n))
		return
	}
	// An empty list stays nil, like an absent one, so that documents round-trip.
	if len(n.Content) == 0 || !d.charge(n, path, len(n.Content)) {
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, index(path, i), s.Index(i))
	}
	v.Set(s)
}

// str decodes a scalar into string v.
func (d *decoder) str(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a string, got %s", describeNode(n))
		return
	}
	switch tag := n.ShortTag(); tag {
	case "!!null":
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp", "!!merge":
		// Plain scalars such as 17 or 2024-01-01 are strings where a string is expected.
		v.SetString(n.Value)
	case "!!binary":
		var s string
		if err := n.Decode(&s); err != nil {
			d.errorf(n, path, "invalid !!binary value")
			return
		}
		v.SetString(s)
	default:
		d.errorf(n, path, "expected a string, got %s", describeNode(n))
	}
}

// boolean decodes true or false into v.
func (d *decoder) boolean(n *yaml.Node, path string, v reflect.Value) {
	if nodeIsNull(n) {
		return
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		d.errorf(n, path, "expected true or false, got %s", describeNode(n))
		return
	}
	v.SetBool(b)
}

// uintMax gives fields a tighter range than their Go type where the document format has one.
var uintMax = map[string]uint64{
	"vlan": maxVLAN,
}

// uintLimit is the largest value an unsigned field of type t named name takes.
func uintLimit(t reflect.Type, name string) uint64 {
	if m, ok := uintMax[name]; ok {
		return m
	}
	return uint64(math.MaxUint64) >> (64 - t.Bits())
}

// portOf is the port range of the integer port u, if u is a port (1-65535).
func portOf(u uint64) (PortRange, bool) {
	if u < 1 || u > math.MaxUint16 {
		return PortRange{}, false
	}
	return PortRange{uint16(u), uint16(u)}, true
}

// unsigned decodes a decimal integer within the range of v's field into v.
func (d *decoder) unsigned(n *yaml.Node, path string, v reflect.Value) {
	if nodeIsNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n, path, "expected an integer, got %s", describeNode(n))
		return
	}
	limit := uintLimit(v.Type(), lastPathElem(path))
	if hasLeadingZero(n.Value) {
		d.errorf(n, path, "%s", leadingZeroMsg(n.Value))
		return
	}
	var u uint64
	if err := n.Decode(&u); err != nil || u > limit {
		d.errorf(n, path, "%s is out of range 0-%d", clip(n.Value), limit)
		return
	}
	v.SetUint(u)
}

// decodePortRange decodes 443, "443" or "8000-8080".
func decodePortRange(n *yaml.Node) (PortRange, error) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			if hasLeadingZero(n.Value) {
				return PortRange{}, errors.New(leadingZeroMsg(n.Value))
			}
			var u uint64
			err := n.Decode(&u)
			pr, ok := portOf(u)
			if err != nil || !ok {
				return PortRange{}, fmt.Errorf("port %s is out of range 1-65535", clip(n.Value))
			}
			return pr, nil
		case "!!str":
			return ParsePortRange(n.Value)
		}
	}
	return PortRange{}, fmt.Errorf(`expected a port (443) or a port range ("8000-8080"), got %s`, describeNode(n))
}

// hasLeadingZero reports whether an integer literal such as 0443 has a leading zero, which
// yaml.v3 reads as an octal number: a port written 0443 would silently be port 291.
func hasLeadingZero(lit string) bool {
	lit = strings.TrimLeft(lit, "+-")
	return len(lit) > 1 && lit[0] == '0' && lit[1] >= '0' && lit[1] <= '9'
}

// leadingZeroMsg is the error message for the literal lit with a leading zero.
func leadingZeroMsg(lit string) string {
	return fmt.Sprintf("%s has a leading zero, which YAML reads as octal: remove it (or write 0o for octal)", clip(lit))
}

// structField is a field of a document struct: its yaml name and its index in the struct.
type structField struct {
	name  string
	index int
}

// structFields are the fields of a document struct.
type structFields []structField

var fieldCache sync.Map // reflect.Type -> structFields

// fieldsOf lists the fields of struct type t by their yaml tag names, in declaration order.
func fieldsOf(t reflect.Type) structFields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(structFields)
	}
	var fs structFields
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fs = append(fs, structField{name, i})
	}
	fieldCache.Store(t, fs)
	return fs
}

// index is the struct index of the field named name, or -1.
func (fs structFields) index(name string) int {
	for _, f := range fs {
		if f.name == name {
			return f.index
		}
	}
	return -1
}

// names lists the field names for an error message.
func (fs structFields) names() string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

// derefAlias returns the node an alias stands for.
func derefAlias(n *yaml.Node) *yaml.Node {
	// yaml.v3 never anchors an alias, so one step is enough; the bound is only defensive.
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// nodeIsNull reports whether n is a null scalar (~, null or nothing).
func nodeIsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describeNode names what a node is, for "expected X, got Y" messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!null":
			return "null"
		case "!!str":
			return "string " + quote(n.Value)
		case "!!int":
			return "integer " + clip(n.Value)
		case "!!float":
			return "number " + clip(n.Value)
		case "!!bool":
			return "boolean " + clip(n.Value)
		default:
			return tag + " " + quote(n.Value)
		}
	}
	return "nothing"
}

// joinPath is the path of field name within path.
func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// lastPathElem is the last field name of path.
func lastPathElem(path string) string {
	return path[strings.LastIndexAny(path, ".]")+1:]
}

// locateNode returns the position of the node at path, or of its closest existing parent
// when the field is absent (a missing required field is reported where it belongs).
func locateNode(root *yaml.Node, path string) (line, col int) {
	n := derefAlias(root)
	line, col = n.Line, n.Column
	for path != "" {
		var next *yaml.Node
		if path[0] == '[' {
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return line, col
			}
			i, err := strconv.Atoi(path[1:end])
			path = path[end+1:]
			if err == nil && n.Kind == yaml.SequenceNode && i >= 0 && i < len(n.Content) {
				next = n.Content[i]
			}
		} else {
			path = strings.TrimPrefix(path, ".")
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			name := path[:end]
			path = path[end:]
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if key := derefAlias(n.Content[i]); key.Value == name {
						next = n.Content[i+1]
						// An empty value sits wherever the parser ended it: use the key.
						if v := derefAlias(next); nodeIsNull(v) && v.Value == "" {
							line, col = key.Line, key.Column
							next = v
						}
						break
					}
				}
			}
		}
		if next == nil {
			return line, col
		}
		n = derefAlias(next)
		if !(nodeIsNull(n) && n.Value == "") {
			line, col = n.Line, n.Column
		}
	}
	return line, col
}

// ParseDevice decodes one device document: a mapping with the fields of an entry of
// spec.devices. It checks only what decoding checks (fields, kinds, ranges); the Editor checks
// the device against the policy in force, and locate gives those errors their position.
func ParseDevice(filename string, data []byte) (d *Device, locate func(path string) (line, col int), err error) {
	errs := &errorList{}
	if len(data) > maxDeviceDocument {
		errs.add(&FieldError{File: filename, Msg: "device document is larger than " + sizeText(maxDeviceDocument)})
		return nil, nil, errs.err()
	}
	root, ferr := decodeYAML(data)
	if ferr != nil {
		ferr.File = filename
		errs.add(ferr)
		return nil, nil, errs.err()
	}
	var dev Device
	dec := &decoder{file: filename, errs: errs}
	dec.value(root, "", reflect.ValueOf(&dev).Elem())
	if err := errs.err(); err != nil {
		return nil, nil, err
	}
	return &dev, func(path string) (int, int) { return locateNode(root, path) }, nil
}

// maxDeviceDocument bounds one device document (a device has at most a few hundred rules).
const maxDeviceDocument = 1 << 20
