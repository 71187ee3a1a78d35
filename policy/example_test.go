package policy_test

import (
	"errors"
	"fmt"

	"github.com/ztgate/ztgate/policy"
)

const examplePolicy = `apiVersion: ztgate/v1
kind: Policy
metadata: {name: lab}
spec:
  gateway: {ipv4: [10.0.0.1], services: [dns]}
  segments:
    - name: sensors
      allow:
        - {to: {cidr: 192.0.2.10/32}, proto: tcp, ports: [8883]}
  devices:
    - name: thermo
      mac: "02:00:00:00:00:0a"
      ipv4: [10.0.0.10]
      segment: sensors
`

// Parse, validate and compile a policy into the snapshot the datapath's maps hold.
func Example() {
	p, err := policy.Parse("lab.yaml", []byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("policy %s: %d device, %d segment, revision %d\n",
		p.Metadata.Name, len(s.Devices), len(p.Spec.Segments), s.Revision)
	// Output:
	// policy lab: 1 device, 1 segment, revision 1
}

// Every problem names the file, line, column and field.
func ExampleParse_errors() {
	_, err := policy.Parse("lab.yaml", []byte("apiVersion: ztgate/v1\nkind: Policy\nmetadata: {name: lab, owner: me}\n"))
	var errs policy.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Println(e)
		}
	}
	// Output:
	// lab.yaml:3:23: metadata.owner: unknown field "owner", allowed fields are name, revision
}

// Ask the reference model whether a device may reach a destination, and which rule decides.
func ExampleExplain() {
	p, err := policy.Parse("lab.yaml", []byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, q := range []policy.Query{
		{From: "thermo", To: "192.0.2.10", Proto: "tcp", Port: 8883},
		{From: "thermo", To: "192.0.2.10", Proto: "tcp", Port: 22},
	} {
		e, err := policy.Explain(p, s, q)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("port %d: %s (%s)", q.Port, e.Verdict, e.Reason)
		if e.Rule != "" {
			fmt.Printf(" by %s: %s", e.Rule, e.RuleText)
		}
		fmt.Println()
	}
	// Output:
	// port 8883: pass (allow) by spec.segments[0].allow[0]: to cidr 192.0.2.10/32 proto tcp ports 8883
	// port 22: drop (no_rule)
}
