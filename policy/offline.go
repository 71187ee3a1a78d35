package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// CheckOffline parses, validates and compiles the policy document data, as the agent does
// before it applies one, without a kernel or an agent: every gateway port name gets a
// placeholder interface index, and the datapath's capacities are not checked. Errors are
// Errors with the file, line, column and field of each problem.
func CheckOffline(filename string, data []byte) (*Policy, *Snapshot, error) {
	p, err := Parse(filename, data)
	if err != nil {
		return nil, nil, err
	}
	ports := map[string]uint32{}
	ifindex := func(name string) (uint32, error) {
		if _, ok := ports[name]; !ok {
			ports[name] = uint32(len(ports) + 1)
		}
		return ports[name], nil
	}
	s, err := Compile(p, CompileOptions{Revision: 1, Ifindex: ifindex})
	if err != nil {
		return nil, nil, compileErrors(filename, data, err)
	}
	return p, s, nil
}

// compileErrors turns an error of Compile into Errors located in data.
func compileErrors(filename string, data []byte, err error) Errors {
	if located, ok := Locate(filename, data, err).(Errors); ok {
		return located
	}
	return Errors{{File: filename, Msg: fmt.Sprintf("cannot compile: %v", err)}}
}

// Locate returns err, an error of Compile for the document data of filename, as Errors that give
// the file, line, column and field of the problem; an error that names no field is returned as it is.
func Locate(filename string, data []byte, err error) error {
	var pe *PathError
	if !errors.As(err, &pe) {
		return err
	}
	fe := &FieldError{File: filename, Path: pe.Path, Msg: pe.Err.Error()}
	if root, ferr := decodeYAML(data); ferr == nil {
		fe.Line, fe.Col = locateNode(root, pe.Path)
	}
	return Errors{fe}
}

// Hash is the hash that names a policy document: the hex SHA-256 of its bytes as sent.
func Hash(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}
