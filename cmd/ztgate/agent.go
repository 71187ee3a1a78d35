package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/loader"
)

func (a *app) agentCommand() *cli.Command {
	oneOf := func(name string, values ...string) func(string) error {
		return func(s string) error {
			for _, v := range values {
				if s == v {
					return nil
				}
			}
			return fmt.Errorf("%s %q: must be one of %v", name, s, values)
		}
	}
	return &cli.Command{
		Name:  "agent",
		Usage: "run the agent: load and attach the datapath, enforce the policy, serve the API (root)",
		Description: `Reads the configuration file (--config, else ` + agent.DefaultConfigFile + ` if it exists);
flags that are set override its settings. The global --socket (or $ZTGATE_SOCKET) is the socket
the agent listens on. Runs until SIGINT or SIGTERM; enforcement stays in place when it exits.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "configuration `FILE` (required to exist when given)", TakesFile: true},
			&cli.StringSliceFlag{Name: "interface", Aliases: []string{"i"},
				Usage: "device-facing interface to protect, a name or a pattern such as 'gw-p*' (repeat for more)"},
			&cli.StringSliceFlag{Name: "bridge", Usage: "bridge whose every port is protected (repeat for more)"},
			&cli.StringFlag{Name: "policy", Usage: "policy `FILE` applied at start when the state directory holds none",
				TakesFile: true},
			&cli.StringFlag{Name: "state-dir", Usage: "directory of the applied policy, its revision and the audit log",
				TakesFile: true},
			&cli.StringFlag{Name: "bpffs-dir", Usage: "bpffs directory of the datapath's pins", TakesFile: true},
			&cli.StringFlag{Name: "socket-group", Usage: "group (name or gid) whose members may use the API socket"},
			&cli.StringFlag{Name: "metrics-address", Usage: "address serving /metrics, /healthz and /readyz (\"\" disables)"},
			&cli.StringFlag{Name: "xdp-mode", Usage: "XDP attach mode: auto (native, else generic), native or generic",
				Validator: oneOf("xdp mode", "auto", "native", "generic")},
			&cli.StringFlag{Name: "tc-mode", Usage: "TC attach toward devices: auto (tcx, else clsact), tcx or clsact",
				Validator: oneOf("tc mode", "auto", "tcx", "clsact")},
			&cli.BoolFlag{Name: "no-events", Usage: "turn off the drop/audit event ring buffer"},
			&cli.StringFlag{Name: "log-level", Usage: "log level: debug, info, warn or error",
				Validator: oneOf("log level", "debug", "info", "warn", "error")},
			&cli.StringFlag{Name: "log-format", Usage: "log format: text or json",
				Validator: oneOf("log format", "text", "json")},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			cfg, err := agentConfig(cmd)
			if err != nil {
				return err
			}
			log, err := newLogger(a.stderr, cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			return runAgent(ctx, cfg, log)
		},
	}
}

// runAgent runs the agent (replaced in tests).
var runAgent = agent.Run

// agentConfig loads the agent's configuration file and applies the flags that were set.
func agentConfig(cmd *cli.Command) (agent.Config, error) {
	path, optional := agent.DefaultConfigFile, true
	if cmd.IsSet("config") {
		path, optional = cmd.String("config"), false
	}
	cfg, err := agent.LoadConfig(path, optional)
	// LoadConfig validates the file on its own, but flags may complete it (interfaces): only
	// a read or parse error is final here; the merged configuration is validated below.
	if err != nil {
		if verr := cfg.Validate(); verr == nil || verr.Error() != err.Error() {
			return cfg, err
		}
	}

	str := func(flag string, dst *string) {
		if cmd.IsSet(flag) {
			*dst = cmd.String(flag)
		}
	}
	if cmd.IsSet("interface") {
		cfg.Interfaces = cmd.StringSlice("interface")
	}
	if cmd.IsSet("bridge") {
		cfg.Bridges = cmd.StringSlice("bridge")
	}
	str("policy", &cfg.Policy)
	str("state-dir", &cfg.StateDir)
	str("bpffs-dir", &cfg.BPFFSDir)
	str("socket", &cfg.Socket)
	str("socket-group", &cfg.SocketGroup)
	str("metrics-address", &cfg.MetricsAddress)
	str("xdp-mode", &cfg.XDPMode)
	str("tc-mode", &cfg.TCMode)
	str("log-level", &cfg.LogLevel)
	str("log-format", &cfg.LogFormat)
	if cmd.IsSet("no-events") {
		cfg.Events = !cmd.Bool("no-events")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usagef(cmd, "invalid configuration:\n%v", err)
	}
	return cfg, nil
}

// newLogger returns the agent's logger: text or json records at level and above, to w.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: must be text or json", format)
}

func (a *app) uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "detach the XDP programs and unpin the datapath's maps: enforcement stops (root)",
		Description: `Stop the agent first: uninstall removes the pins the agent would otherwise adopt again.
It is idempotent: nothing pinned is not an error.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bpffs-dir", Usage: "bpffs directory of the datapath's pins", Value: loader.DefaultPinDir,
				TakesFile: true},
		},
		Action: func(_ context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			dir := cmd.String("bpffs-dir")
			_, statErr := os.Lstat(dir)
			if err := loader.Uninstall(dir); err != nil {
				if errors.Is(err, fs.ErrPermission) {
					return &codeError{code: exitForbidden, err: fmt.Errorf("%w (uninstall needs root)", err)}
				}
				return err
			}
			if errors.Is(statErr, fs.ErrNotExist) {
				fmt.Fprintf(a.stderr, "ztgate: nothing pinned at %s: nothing to do\n", dir)
				return nil
			}
			fmt.Fprintf(a.stderr, "ztgate: detached the XDP programs and removed the datapath pinned at %s: "+
				"enforcement stopped\n", dir)
			return nil
		},
	}
}
