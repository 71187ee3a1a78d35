// Package examples holds example files shipped with ztgate. policy.yaml, the policy of the demo
// site, is a text/template: the addresses, MACs and gateway ports of a site are only known once
// its network exists, so the demo (cmd/ztgate-demo) renders it with RenderPolicy. It is embedded
// so that the demo finds it wherever it runs.
package examples

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"text/template"
)

// PolicyTemplate is the text of policy.yaml.
//
//go:embed policy.yaml
var PolicyTemplate string

// Site is the data policy.yaml is rendered with.
type Site struct {
	GatewayIPv4, GatewayIPv6 string // the gateway's addresses on the device ports
	CloudIPv4, CloudIPv6     string // the cloud host the devices report to
	Devices                  []Device
}

// Device is one device of the site, as the template sees it.
type Device struct {
	Name string
	MAC  string
	IPv4 []string
	IPv6 []string
	Port string // the gateway port (interface name) the device is plugged into
}

// RenderPolicy renders policy.yaml for site. Every device the template names must be in
// site.Devices. The result still has to be parsed and validated (policy.Parse).
func RenderPolicy(site Site) ([]byte, error) {
	funcs := template.FuncMap{
		"device": func(name string) (Device, error) {
			for _, d := range site.Devices {
				if d.Name == name {
					return d, nil
				}
			}
			return Device{}, fmt.Errorf("the site has no device %q", name)
		},
		// list renders a YAML flow sequence of double-quoted strings.
		"list": func(items []string) string {
			q := make([]string, len(items))
			for i, s := range items {
				q[i] = strconv.Quote(s)
			}
			return "[" + strings.Join(q, ", ") + "]"
		},
	}
	t, err := template.New("policy.yaml").Funcs(funcs).Option("missingkey=error").Parse(PolicyTemplate)
	if err != nil {
		return nil, fmt.Errorf("examples: parse policy template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, site); err != nil {
		return nil, fmt.Errorf("examples: render policy template: %w", err)
	}
	return []byte(b.String()), nil
}
