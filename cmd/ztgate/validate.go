package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

const validateDescription = `Checks each FILE as 'policy apply' would, without applying it. When the agent answers on
its socket, it checks the policy: parse, validate, compile against the gateway's interfaces and the
datapath's capacities. When no agent answers (no socket, connection refused, no access to it),
ztgate checks the policy offline instead: parse, validate and compile, everything but the
gateway's interface names and the capacities; a note on stderr says what was not checked. A
policy can so be checked on any machine and in CI.

Every problem is printed as file:line:col: field: message. Exit status: 0 when every FILE is
valid, else that of the first FILE that is not (4 for an invalid policy). With -o json, one
JSON document per valid FILE.`

func (a *app) policyValidateCommand() *cli.Command {
	return &cli.Command{
		Name:        "validate",
		Usage:       "check policies without applying them (offline when no agent answers)",
		ArgsUsage:   "FILE...",
		Description: validateDescription,
		Flags:       []cli.Flag{outputFlag(fmtText, fmtJSON)},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() == 0 {
				return usagef(cmd, "missing FILE (a policy file, or - for the standard input)")
			}
			v := &validator{app: a, agent: true}
			var first error
			for _, path := range cmd.Args().Slice() {
				err := v.file(ctx, cmd, path)
				if err == nil {
					continue
				}
				if cmd.NArg() == 1 {
					return err
				}
				reportError(a.stderr, err)
				if first == nil {
					first = err
				}
			}
			if first != nil {
				return &codeError{code: exitCode(first), err: errReported}
			}
			return nil
		},
	}
}

// errReported is the error of a command that has already reported its errors.
var errReported = errors.New("reported")

// validator checks policy files, with the agent while it answers and offline once it does not.
type validator struct {
	*app
	agent bool // false once the agent did not answer
}

// file checks the policy at path ("-": the standard input) and prints the result.
func (v *validator) file(ctx context.Context, cmd *cli.Command, path string) error {
	file, doc, err := v.readFile(path)
	if err != nil {
		return err
	}
	var r *api.ValidateResult
	if v.agent {
		r, err = callFor(ctx, cmd, func(c *api.Client, ctx context.Context) (*api.ValidateResult, error) {
			return c.Validate(ctx, file, doc)
		})
		var ur *api.ErrUnreachable
		if errors.As(err, &ur) {
			fmt.Fprintf(v.stderr, "ztgate: no agent answered (%v): checking offline; the live capacity check "+
				"and the gateway's interface names are not checked\n", err)
			v.agent = false
		} else if err != nil {
			return err
		}
	}
	if !v.agent {
		if r, err = validateOffline(file, doc); err != nil {
			return err
		}
	}
	return show(v.app, cmd, r, func(w io.Writer, r *api.ValidateResult) error {
		_, err := fmt.Fprintf(w, "%s: valid: policy %q, %d devices in %d segments, hash %s\n",
			file, r.Name, r.Devices, r.Segments, shortHash(r.Hash))
		return err
	})
}

// validateOffline checks doc with the policy package alone; errors are reported as the agent
// reports them.
func validateOffline(file string, doc []byte) (*api.ValidateResult, error) {
	p, _, err := policy.CheckOffline(file, doc)
	if err != nil {
		fields := api.FieldErrors(err)
		return nil, &api.Error{Kind: api.KindInvalidPolicy, Fields: fields,
			Message: fmt.Sprintf("invalid policy: %d problem(s)", len(fields))}
	}
	return &api.ValidateResult{Name: p.Metadata.Name, Hash: policy.Hash(doc),
		Devices: len(p.Spec.Devices), Segments: len(p.Spec.Segments)}, nil
}

// readFile reads a policy file, or the standard input for "-": its name for error messages
// and its bytes.
func (a *app) readFile(path string) (string, []byte, error) {
	if path == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return "", nil, fmt.Errorf("read standard input: %w", err)
		}
		return "<stdin>", data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	return path, data, nil
}
