// Command ztgate runs and controls the ztgate agent, the eBPF/XDP zero-trust enforcement
// agent of an IoT gateway.
//
// `ztgate agent` is the (privileged) daemon and `ztgate uninstall` removes its datapath; every
// other command is an unprivileged client of the agent's local API on its unix socket:
//
//	ztgate [--socket PATH] [--timeout D] COMMAND
//	  agent                      run the agent (root)
//	  uninstall                  detach and unpin the datapath (root)
//	  status                     agent, policy, interfaces, map fill levels, flow table, event counters
//	  devices                    devices of the policy in force with their counters, both ways
//	  flows                      the connections of the flow table
//	  events                     sampled drop and audit events (-f to follow, --pcap to save)
//	  audit                      the agent's audit log (--verify checks its hash chain)
//	  policy validate FILE...    check policies without applying them (offline when no agent answers)
//	  policy diff FILE           what applying a policy would change
//	  policy apply FILE          make a policy the one in force
//	  policy set-device FILE     add or replace one device of the policy in force
//	  policy delete-device NAME  remove one device from the policy in force
//	  policy get                 the policy in force (YAML, valid input to apply)
//	  policy explain             whether a flow is allowed, and which rule decides
//	  version                    the version of this binary
//	  completion SHELL           a shell completion script (bash, zsh, fish, pwsh)
//
// Data goes to stdout, diagnostics to stderr. Exit status: 0 success, 1 other error, 2 usage
// error, 3 agent unreachable, 4 policy rejected, 5 permission denied.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/buildinfo"
)

func main() {
	// SIGINT/SIGTERM cancel ctx: `events -f` and `agent` stop cleanly, a pending call is
	// abandoned. A second signal kills the process the usual way.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (args[0] is the program name) and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, os.Stdin, stdout, stderr)
}

// runIO is run with the standard input given.
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	err := a.command().Run(ctx, args)
	if err != nil {
		reportError(stderr, err)
	}
	return exitCode(err)
}

// app is one invocation of ztgate: its standard streams.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

const rootDescription = `ztgate enforces a zero-trust policy on an IoT gateway with an XDP program: every frame from
a device-facing interface must be allowed by the policy in force, everything else is dropped.

'ztgate agent' is the daemon (root); every other command talks to it over its unix socket
(--socket, $ZTGATE_SOCKET) and needs no privileges beyond access to that socket.
Data is written to stdout, diagnostics and errors to stderr; -o json gives machine-readable
output on every listing.

` + exitCodesHelp

// command builds the command tree. It is built anew for every run: cli keeps parse state in
// the commands and flags.
func (a *app) command() *cli.Command {
	root := &cli.Command{
		Name:                  "ztgate",
		Usage:                 "zero-trust enforcement for IoT gateways",
		Version:               buildinfo.Version(),
		Description:           rootDescription,
		EnableShellCompletion: true,
		Suggest:               true,
		Reader:                a.stdin,
		Writer:                a.stdout,
		ErrWriter:             a.stderr,
		// Errors are reported and mapped to exit codes by runIO, never by cli (which would
		// call os.Exit).
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		ConfigureShellCompletionCommand: func(c *cli.Command) {
			c.Hidden = false
			c.Usage = "print a shell completion script (bash, zsh, fish or pwsh)"
			c.Action = groupAction
			setUsageErrorHandlers(c)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:      "socket",
				Usage:     "the agent's API socket (the agent listens on it, the other commands connect to it)",
				Value:     api.DefaultSocket,
				Sources:   cli.EnvVars("ZTGATE_SOCKET"),
				TakesFile: true,
			},
			&cli.DurationFlag{
				Name:  "timeout",
				Usage: "time limit of a call to the agent (not of 'events -f'); 0 for none",
				Value: 10 * time.Second,
			},
		},
		Commands: []*cli.Command{
			a.agentCommand(),
			a.uninstallCommand(),
			a.statusCommand(),
			a.devicesCommand(),
			a.flowsCommand(),
			a.eventsCommand(),
			a.auditCommand(),
			a.policyCommand(),
			a.versionCommand(),
		},
		Action: groupAction,
	}
	setUsageErrorHandlers(root)
	return root
}

// setUsageErrorHandlers makes every flag and argument error of cmd and its subcommands a
// usageError (exit 2). cli only calls a command's own OnUsageError.
func setUsageErrorHandlers(cmd *cli.Command) {
	_ = cmd.Walk(func(c *cli.Command) error {
		c.OnUsageError = func(_ context.Context, c *cli.Command, err error, _ bool) error {
			return &usageError{cmd: c.FullName(), err: err}
		}
		return nil
	})
}

// groupAction is the action of a command that only groups subcommands: help when none is
// named, a usage error for an unknown one.
func groupAction(_ context.Context, cmd *cli.Command) error {
	if cmd.NArg() > 0 {
		return usagef(cmd, "unknown command %q for %q", cmd.Args().First(), cmd.FullName())
	}
	if cmd.Root() == cmd {
		return cli.ShowRootCommandHelp(cmd)
	}
	return cli.ShowSubcommandHelp(cmd)
}

// call runs fn with a client of the agent named by the global --socket flag, bounded by the
// global --timeout.
func call(ctx context.Context, cmd *cli.Command, fn func(context.Context, *api.Client) error) error {
	c := api.NewClient(cmd.String("socket"))
	defer c.Close()
	d := cmd.Duration("timeout")
	var (
		cctx   context.Context
		cancel context.CancelFunc
	)
	if d > 0 {
		cctx, cancel = context.WithTimeout(ctx, d)
	} else {
		cctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	err := fn(cctx, c)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("no answer from the agent at %s within %s (--timeout)", c.Socket(), d)
	}
	return err
}

// getter is a request to the agent whose answer is a value, e.g. (*api.Client).Status.
type getter[T any] func(*api.Client, context.Context) (T, error)

// callFor is call for a request whose answer is a value, e.g. (*api.Client).Status.
func callFor[T any](ctx context.Context, cmd *cli.Command, get getter[T]) (T, error) {
	var v T
	err := call(ctx, cmd, func(ctx context.Context, c *api.Client) (err error) {
		v, err = get(c, ctx)
		return err
	})
	return v, err
}

// show writes v to the standard output: as JSON with -o json, else with text.
func show[T any](a *app, cmd *cli.Command, v T, text func(io.Writer, T) error) error {
	if cmd.String("output") == fmtJSON {
		return writeJSON(a.stdout, v)
	}
	return text(a.stdout, v)
}

// queryAction is the action of a command without arguments that asks the agent with get and
// shows the answer.
func queryAction[T any](a *app, get getter[T], text func(io.Writer, T) error) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		if err := noArgs(cmd); err != nil {
			return err
		}
		v, err := callFor(ctx, cmd, get)
		if err != nil {
			return err
		}
		return show(a, cmd, v, text)
	}
}

// orEmpty makes get answer an empty list instead of nil, so that -o json prints [] for none.
func orEmpty[T any](get getter[[]T]) getter[[]T] {
	return func(c *api.Client, ctx context.Context) ([]T, error) {
		v, err := get(c, ctx)
		if v == nil {
			v = []T{}
		}
		return v, err
	}
}

// noArgs fails with a usage error when cmd was given positional arguments.
func noArgs(cmd *cli.Command) error {
	if cmd.NArg() > 0 {
		return usagef(cmd, "unexpected argument %q", cmd.Args().First())
	}
	return nil
}
