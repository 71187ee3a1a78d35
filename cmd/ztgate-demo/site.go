package main

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"text/template"
)

// policyTemplate is the demo site's policy, a text/template: the addresses, MACs and gateway
// ports of the lab are only known once its network exists.
//
//go:embed policy.yaml.tmpl
var policyTemplate string

// site is the data policy.yaml.tmpl is rendered with.
type site struct {
	GatewayIPv4, GatewayIPv6 string // the gateway's addresses on the device ports
	CloudIPv4, CloudIPv6     string // the cloud host the devices report to
	Devices                  []siteDevice
}

// siteDevice is one device of the site, as the template sees it.
type siteDevice struct {
	Name string
	MAC  string
	IPv4 []string
	IPv6 []string
	Port string // the gateway port (interface name) the device is plugged into
}

// renderPolicy renders policy.yaml.tmpl for s. Every device the template names must be in
// s.Devices. The result still has to be parsed and validated (policy.Parse).
func renderPolicy(s site) ([]byte, error) {
	funcs := template.FuncMap{
		"device": func(name string) (siteDevice, error) {
			for _, d := range s.Devices {
				if d.Name == name {
					return d, nil
				}
			}
			return siteDevice{}, fmt.Errorf("the site has no device %q", name)
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
	t, err := template.New("policy.yaml.tmpl").Funcs(funcs).Option("missingkey=error").Parse(policyTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse policy template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, s); err != nil {
		return nil, fmt.Errorf("render policy template: %w", err)
	}
	return []byte(b.String()), nil
}
