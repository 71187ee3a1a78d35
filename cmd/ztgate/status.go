package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/buildinfo"
)

func (a *app) statusCommand() *cli.Command {
	return &cli.Command{
		Name:   "status",
		Usage:  "show the agent's state: policy in force, interfaces, map fill levels, flow table, event counters",
		Flags:  []cli.Flag{outputFlag(fmtTable, fmtJSON)},
		Action: queryAction(a, (*api.Client).Status, writeStatus),
	}
}

// writeStatus renders the status as sections of aligned text.
func writeStatus(w io.Writer, st *api.Status) error {
	tw := newTable(w)
	up := "-"
	if !st.Started.IsZero() {
		up = humanDuration(now().Sub(st.Started))
	}
	row(tw, "Agent:", fmt.Sprintf("%s (pid %d, up %s)", orDash(st.Version), st.PID, up))
	row(tw, "Ready:", yesNo(st.Ready))
	for _, d := range st.Damage {
		row(tw, "Damaged:", d+" (apply a policy to repair)")
	}
	p := st.Policy
	if p.Revision == 0 {
		row(tw, "Policy:", "none (every frame is dropped as no_policy)")
	} else {
		row(tw, "Policy:", fmt.Sprintf("revision %d, %q", p.Revision, p.Name))
		row(tw, "  Hash:", orDash(p.Hash))
		applied := "-"
		if !p.AppliedAt.IsZero() {
			applied = fmt.Sprintf("%s (%s)", p.AppliedAt.Local().Format(time.RFC3339), age(p.AppliedAt))
		}
		row(tw, "  Applied:", applied)
		row(tw, "  Devices:", fmt.Sprintf("%d in %d segments", p.Devices, p.Segments))
	}
	if f := st.Flows; f != nil {
		row(tw, "Flows:", fmt.Sprintf("%d of %d (%.1f%%), %d devices hold any, at most %d each",
			f.Entries, f.Capacity, percent(f.Entries, f.Capacity), f.Devices, f.Quota))
		if len(f.Top) > 0 {
			top := make([]string, 0, len(f.Top))
			for _, d := range f.Top {
				name := d.Device
				if name == "" {
					name = fmt.Sprintf("id %d", d.DevID)
				}
				top = append(top, fmt.Sprintf("%s %d", name, d.Flows))
			}
			row(tw, "  Most:", strings.Join(top, ", "))
		}
	}
	e := st.Events
	row(tw, "Events:", fmt.Sprintf("emitted %d, lost %d, suppressed %d, read %d, dropped %d",
		e.Emitted, e.Lost, e.Suppressed, e.Read, e.Dropped))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nInterfaces:")
	tw = newTable(w)
	row(tw, "  NAME", "IFINDEX", "MODE", "ATTACHED", "STATE", "SINCE", "ATTACHES", "ERROR")
	for _, i := range st.Interfaces {
		row(tw, "  "+i.Name, i.Ifindex, orDash(i.Mode), yesNo(i.Attached), orDash(i.State), age(i.Since), i.Attaches,
			orDash(i.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nMaps:")
	tw = newTable(w)
	row(tw, "  MAP", "ENTRIES", "CAPACITY", "FILL")
	for _, m := range st.Maps {
		row(tw, "  "+m.Map, m.Entries, m.Capacity, fmt.Sprintf("%.1f%%", percent(m.Entries, m.Capacity)))
	}
	return tw.Flush()
}

func (a *app) devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list the devices of the policy in force with their counters (packets/bytes) and flows",
		Description: `ALLOWED, DROPPED and AUDITED count the frames each device sent; IN-ALLOWED, IN-DROPPED and
IN-AUDITED the frames toward it; FLOWS the connections of the flow table charged to it.`,
		Flags:  []cli.Flag{outputFlag(fmtTable, fmtJSON)},
		Action: queryAction(a, orEmpty((*api.Client).Devices), writeDevices),
	}
}

// writeDevices renders devices as a table; counters are packets/bytes.
func writeDevices(w io.Writer, ds []api.Device) error {
	tw := newTable(w)
	row(tw, "NAME", "SEGMENT", "STATE", "MAC", "IPV4", "ALLOWED", "DROPPED", "AUDITED", "IN-ALLOWED", "IN-DROPPED",
		"IN-AUDITED", "FLOWS", "LAST-SEEN")
	for _, d := range ds {
		row(tw, d.Name, orDash(d.Segment), d.State, orDash(d.MAC), orDash(strings.Join(d.IPv4, ",")),
			traffic(d.Allowed), traffic(d.Dropped), traffic(d.Audited), traffic(d.Inbound.Allowed),
			traffic(d.Inbound.Dropped), traffic(d.Inbound.Audited), d.Flows, age(d.LastSeen))
	}
	return tw.Flush()
}

func (a *app) flowsCommand() *cli.Command {
	return &cli.Command{
		Name:  "flows",
		Usage: "list the connections of the flow table: their replies pass without a rule of their own",
		Description: `Each flow is shown from the endpoint that opened it. DIRECTION from_device: a device opened
it under its own rules; to_device: it was opened toward the device under its from: rules. IDLE
is the time since its last packet either way; the agent removes flows idle past their lifetime.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "device", Usage: "only the flows charged to this device (name)"},
			&cli.IntFlag{Name: "limit", Usage: "at most this many flows (0: all)",
				Validator: func(n int) error {
					if n < 0 {
						return fmt.Errorf("limit must not be negative, got %d", n)
					}
					return nil
				}},
			outputFlag(fmtTable, fmtJSON),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			f := api.FlowFilter{Device: cmd.String("device"), Limit: cmd.Int("limit")}
			fs, err := callFor(ctx, cmd, func(c *api.Client, ctx context.Context) ([]api.Flow, error) {
				fs, err := c.Flows(ctx, f)
				if fs == nil {
					fs = []api.Flow{}
				}
				return fs, err
			})
			if err != nil {
				return err
			}
			return show(a, cmd, fs, writeFlows)
		},
	}
}

// writeFlows renders flows as a table.
func writeFlows(w io.Writer, fs []api.Flow) error {
	tw := newTable(w)
	row(tw, "OPENER", "RESPONDER", "PROTO", "DIRECTION", "DEVICE", "IDLE", "REVISION")
	for _, f := range fs {
		dev := f.Device
		if dev == "" {
			dev = fmt.Sprintf("id %d", f.DevID)
		}
		row(tw, f.Opener, f.Responder, f.Proto, f.Direction, dev, humanDuration(f.Idle), f.Revision)
	}
	return tw.Flush()
}

// traffic renders a counter as packets/bytes.
func traffic(t api.Traffic) string {
	return fmt.Sprintf("%d/%s", t.Packets, humanBytes(t.Bytes))
}

func (a *app) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of this binary",
		Action: func(_ context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			_, err := fmt.Fprintf(a.stdout, "ztgate %s (%s, %s/%s)\n",
				buildinfo.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
