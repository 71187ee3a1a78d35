package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ---------------------------------------------------------------------------------------------
// Step 7: one device changed.

// changeDevice gives the camera one more rule with `ztgate policy set-device`: the agent
// checks and compiles that device only and writes what changes, as the next revision.
func (d *demo) changeDevice() error {
	d.heading("One device changed: set-device, without resending the policy")
	to := hostPort(d.cloud.IPv4, portMQTT)
	d.expect("before: camera → cloud "+to+" TCP is dropped (cameras may use tcp 443 and 8443-8444)",
		d.blockedTCP(d.cam, to))
	quoted := func(as []string) string {
		for i := range as {
			as[i] = fmt.Sprintf("%q", as[i])
		}
		return "[" + strings.Join(as, ", ") + "]"
	}
	var v4, v6 []string
	for _, a := range d.cam.IPv4 {
		v4 = append(v4, a.String())
	}
	for _, a := range append(slices.Clone(d.cam.IPv6), d.linkLocal[d.cam.Name]) {
		v6 = append(v6, a.String())
	}
	doc := fmt.Sprintf("name: %s\nmac: %q\nipv4: %s\nipv6: %s\nport: %s\nsegment: cameras\nallow:\n"+
		"  - {to: {cidr: \"%s/32\"}, proto: tcp, ports: [%d]}   # MQTT, its own rule\n",
		d.cam.Name, d.cam.MAC.String(), quoted(v4), quoted(v6), d.cam.Port.Name, d.cloud.IPv4, portMQTT)
	if err := os.WriteFile(filepath.Join(d.dir, "camera.yaml"), []byte(doc), 0o644); err != nil {
		return err
	}
	d.printf("camera.yaml holds the camera as policy.yaml has it, plus a rule of its own: MQTT to the cloud.\n")
	r, err := d.show(0, nil, "policy", "set-device", "camera.yaml")
	if err != nil {
		return err
	}
	var setErr error
	if !strings.HasPrefix(r.stdout, "applied revision 1 -> 2 ") {
		setErr = fmt.Errorf("set-device said %q", firstLine(r.stdout))
	} else if !strings.Contains(r.stdout, "~ device camera") {
		setErr = errors.New("set-device did not list the camera's change")
	}
	d.expect("revision 2 is in force: one device compiled, only what changed written, then one flip", setErr)
	d.expect("after: camera → cloud "+to+" TCP echo", d.echo(d.cam, "tcp", to, "status=recording"))
	return nil
}
