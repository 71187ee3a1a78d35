package policy

import (
	"bytes"
	"errors"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Marshal encodes p as a YAML document, leaving out empty fields. When p is valid, Parse
// accepts the result and returns a Policy equal to p.
func Marshal(p *Policy) ([]byte, error) {
	if p == nil {
		return nil, errors.New("policy: cannot marshal a nil policy")
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// String returns "443" for a single port and "8000-8080" for a range.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// MarshalYAML writes a single port as an integer (443) and a range as a string ("8000-8080").
func (r PortRange) MarshalYAML() (any, error) {
	if r.Lo == r.Hi {
		return int(r.Lo), nil
	}
	return r.String(), nil
}

// UnmarshalYAML accepts the forms Parse accepts: 443, "443" and "8000-8080".
func (r *PortRange) UnmarshalYAML(n *yaml.Node) error {
	pr, err := decodePortRange(n)
	if err != nil {
		return err
	}
	*r = pr
	return nil
}
