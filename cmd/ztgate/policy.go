package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

func (a *app) policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "validate, compare, apply, show and query policies",
		Description: `FILE is a policy YAML document, or - for the standard input. Problems are reported as
file:line:col: field: message, one per line, with exit status 4.`,
		Commands: []*cli.Command{
			a.policyValidateCommand(),
			a.policyDiffCommand(),
			a.policyApplyCommand(),
			a.policySetDeviceCommand(),
			a.policyDeleteDeviceCommand(),
			a.policyGetCommand(),
			a.policyExplainCommand(),
		},
		Action: groupAction,
	}
}

// readPolicy reads the FILE argument of cmd: its name for error messages and its bytes.
func (a *app) readPolicy(cmd *cli.Command) (string, []byte, error) {
	switch cmd.NArg() {
	case 0:
		return "", nil, usagef(cmd, "missing FILE (a policy file, or - for the standard input)")
	case 1:
	default:
		return "", nil, usagef(cmd, "one FILE expected, got %d arguments", cmd.NArg())
	}
	return a.readFile(cmd.Args().First())
}

// sendPolicy is a command that sends the FILE argument to the agent with send and prints the
// answer: as JSON with -o json, else with text.
func sendPolicy[R any](a *app, name, usage string, send func(*api.Client, context.Context, string, []byte) (R, error),
	text func(w io.Writer, file string, r R) error) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "FILE",
		Flags:     []cli.Flag{outputFlag(fmtText, fmtJSON)},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			file, doc, err := a.readPolicy(cmd)
			if err != nil {
				return err
			}
			r, err := callFor(ctx, cmd, func(c *api.Client, ctx context.Context) (R, error) {
				return send(c, ctx, file, doc)
			})
			if err != nil {
				return err
			}
			return show(a, cmd, r, func(w io.Writer, r R) error { return text(w, file, r) })
		},
	}
}

func (a *app) policyDiffCommand() *cli.Command {
	return sendPolicy(a, "diff", "show what applying a policy would change against the policy in force",
		(*api.Client).Diff, func(w io.Writer, _ string, r *api.DiffResult) error {
			if r.Diff.Empty() {
				_, err := fmt.Fprintf(w, "no changes against revision %d\n", r.Revision)
				return err
			}
			fmt.Fprintf(w, "changes against revision %d:\n", r.Revision)
			_, err := io.WriteString(w, r.Diff.String())
			return err
		})
}

func (a *app) policyApplyCommand() *cli.Command {
	return sendPolicy(a, "apply", "make a policy the one in force (all or nothing)",
		(*api.Client).Apply, printApplied)
}

func (a *app) policySetDeviceCommand() *cli.Command {
	const usage = "add or replace one device of the policy in force (FILE: the fields of one spec.devices entry)"
	cmd := sendPolicy(a, "set-device", usage,
		func(c *api.Client, ctx context.Context, file string, doc []byte) (*api.ApplyResult, error) {
			d, locate, err := policy.ParseDevice(file, doc)
			if err != nil {
				return nil, &codeError{code: exitRejected, err: fmt.Errorf("invalid device:\n%w", err)}
			}
			if d.Name == "" {
				fe := &policy.FieldError{File: file, Path: "name", Msg: "is required"}
				fe.Line, fe.Col = locate("name")
				return nil, &codeError{code: exitRejected, err: fmt.Errorf("invalid device:\n%w", fe)}
			}
			return c.PutDevice(ctx, file, d.Name, doc)
		}, printApplied)
	cmd.Description = `Changes one device as the next revision, without sending the whole policy: the agent checks
the device against the policy in force (names, MACs and addresses of the other devices,
segments, rule destinations), writes only what changes and answers once it is enforced. A device
of the same name is replaced; a new MAC address is a new identity and is refused while rules
name the device. Example FILE:

  name: cam-07
  mac: "02:00:0a:0a:00:17"
  ipv4: [10.10.0.17]
  segment: cameras
  allow:
    - {to: {device: nvr}, proto: tcp, ports: [554]}`
	return cmd
}

func (a *app) policyDeleteDeviceCommand() *cli.Command {
	return &cli.Command{
		Name:      "delete-device",
		Usage:     "remove one device from the policy in force (refused while rules name it as a destination)",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{outputFlag(fmtText, fmtJSON)},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef(cmd, "one device NAME expected, got %d arguments", cmd.NArg())
			}
			if err := policy.CheckName(cmd.Args().First()); err != nil {
				return usagef(cmd, "%v", err)
			}
			r, err := callFor(ctx, cmd, func(c *api.Client, ctx context.Context) (*api.ApplyResult, error) {
				return c.DeleteDevice(ctx, cmd.Args().First())
			})
			if err != nil {
				return err
			}
			return show(a, cmd, r, func(w io.Writer, r *api.ApplyResult) error { return printApplied(w, "", r) })
		},
	}
}

// printApplied prints the answer to an apply or a device change.
func printApplied(w io.Writer, _ string, r *api.ApplyResult) error {
	ms := float64(r.Duration) / float64(time.Millisecond)
	if r.NewRevision == r.OldRevision {
		_, err := fmt.Fprintf(w, "unchanged at revision %d (hash %s)\n", r.NewRevision, shortHash(r.Hash))
		return err
	}
	fmt.Fprintf(w, "applied revision %d -> %d (hash %s, %s ms)\n",
		r.OldRevision, r.NewRevision, shortHash(r.Hash), strconv.FormatFloat(ms, 'f', 1, 64))
	if r.Changes.Empty() {
		return nil
	}
	_, err := io.WriteString(w, r.Changes.String())
	return err
}

func (a *app) policyGetCommand() *cli.Command {
	return &cli.Command{
		Name:  "get",
		Usage: "print the policy in force (-o yaml is valid input to apply)",
		Flags: []cli.Flag{outputFlag(fmtYAML, fmtJSON)},
		Action: queryAction(a, (*api.Client).Policy, func(w io.Writer, p *api.PolicyInfo) error {
			_, err := io.WriteString(w, p.YAML)
			return err
		}),
	}
}

func (a *app) policyExplainCommand() *cli.Command {
	return &cli.Command{
		Name: "explain",
		Usage: "tell whether a device may reach a destination, or a source open a connection toward a device, " +
			"under the policy in force, and why",
		UsageText: "ztgate policy explain --from SRC --to DST --proto PROTO [--port N | --icmp TYPE[/CODE]] " +
			"[-o table|json]\n\n" +
			"SRC is a device name (its to: rules decide), or an IP address or \"gateway\" when DST is a device " +
			"(the device's from: rules decide);\nDST is an IP address, a device name or \"gateway\"; " +
			"PROTO is tcp, udp, icmp, icmpv6, any or a number.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the source: a device name, or an IP address or \"gateway\" " +
				"toward the device --to names", Required: true},
			&cli.StringFlag{Name: "to", Usage: "the destination: an IP address, a device name or \"gateway\"", Required: true},
			&cli.StringFlag{Name: "proto", Usage: "the protocol: tcp, udp, icmp, icmpv6, any or a number", Required: true},
			&cli.Uint16Flag{Name: "port", Usage: "the destination port (tcp, udp)"},
			&cli.StringFlag{Name: "icmp", Usage: "the ICMP message (icmp, icmpv6): TYPE or TYPE/CODE, as in a rule; " +
				"default echo-request"},
			outputFlag(fmtTable, fmtJSON),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			q := api.ExplainRequest{
				From:  cmd.String("from"),
				To:    cmd.String("to"),
				Proto: cmd.String("proto"),
				Port:  cmd.Uint16("port"),
				ICMP:  cmd.String("icmp"),
			}
			e, err := callFor(ctx, cmd, func(c *api.Client, ctx context.Context) (*api.Explanation, error) {
				return c.Explain(ctx, q)
			})
			if err != nil {
				return err
			}
			return show(a, cmd, e, writeExplanation)
		},
	}
}

// writeExplanation renders an explanation as aligned key/value lines.
func writeExplanation(w io.Writer, e *api.Explanation) error {
	tw := newTable(w)
	row(tw, "Verdict:", fmt.Sprintf("%s (%s)", e.Verdict, e.Reason))
	from := fmt.Sprintf("%s (%s)", e.From, orDash(e.Src))
	switch {
	case e.SrcDevice != "":
		from = fmt.Sprintf("%s (device %s)", e.Src, e.SrcDevice)
	case e.From == e.Src:
		from = e.Src
	}
	row(tw, "From:", from)
	to := e.Dst
	if e.DstDevice != "" {
		to += " (device " + e.DstDevice + ")"
	}
	row(tw, "To:", to)
	flow := e.Proto
	if e.Port != 0 {
		flow += " port " + strconv.Itoa(int(e.Port))
	}
	if e.ICMP != "" {
		flow += " " + e.ICMP
	}
	if e.Direction == policy.DirectionInbound {
		flow += ", inbound (the device's from: rules)"
	}
	row(tw, "Flow:", flow)
	row(tw, "Mode:", orDash(e.Mode))
	rule := orDash(e.Rule)
	if e.RuleText != "" {
		rule += ": " + e.RuleText
	}
	row(tw, "Rule:", rule)
	if e.Replies != "" {
		row(tw, "Replies:", e.Replies)
	}
	row(tw, "Revision:", e.Revision)
	return tw.Flush()
}
