package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
)

// Exit codes of ztgate.
const (
	exitOK          = 0 // success
	exitError       = 1 // any other error (agent errors, I/O, a broken audit chain, ...)
	exitUsage       = 2 // bad flags or arguments: unknown flag or command, bad -o, missing FILE
	exitUnreachable = 3 // the agent's socket cannot be reached (agent not running?)
	exitRejected    = 4 // the agent rejected the policy (invalid_policy or rejected)
	exitForbidden   = 5 // permission denied (the agent refused the caller, or the socket is not accessible)
)

// exitCodesHelp documents the exit codes in the root command's help.
const exitCodesHelp = `EXIT STATUS:
   0  success
   1  other error
   2  usage error (bad flags or arguments, unknown -o format, missing FILE)
   3  agent unreachable (no socket, connection refused: is the agent running?)
   4  policy rejected (every problem is printed as file:line:col: field: message)
   5  permission denied (not root, nor in the agent's socket group)`

// usageError is a mistake on the command line: exit 2.
type usageError struct {
	cmd string // full name of the command, for the help hint ("" for none)
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usage error of cmd.
func usagef(cmd *cli.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.FullName(), err: fmt.Errorf(format, args...)}
}

// codeError carries an explicit exit code.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// exitCode maps an error returned by a command to the process's exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var (
		ue *usageError
		ce *codeError
		ur *api.ErrUnreachable
		ae *api.Error
		ec cli.ExitCoder
	)
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ur):
		if errors.Is(ur.Err, fs.ErrPermission) {
			return exitForbidden
		}
		return exitUnreachable
	case errors.As(err, &ae):
		switch ae.Kind {
		case api.KindInvalidPolicy, api.KindRejected:
			return exitRejected
		case api.KindForbidden:
			return exitForbidden
		}
		return exitError
	case errors.As(err, &ec):
		if c := ec.ExitCode(); c != 0 {
			return c
		}
		return exitError
	}
	return exitError
}

// reportError writes err to w the way the user should see it: "ztgate: message", then for a
// rejected policy each problem on its own line as file:line:col: field: message, then a hint.
func reportError(w io.Writer, err error) {
	if errors.Is(err, errReported) {
		return
	}
	var (
		ue *usageError
		ur *api.ErrUnreachable
		ae *api.Error
	)
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(w, "ztgate: %v\n", err)
		if ue.cmd != "" {
			fmt.Fprintf(w, "Run '%s --help' for usage.\n", ue.cmd)
		}
	case errors.As(err, &ur):
		fmt.Fprintf(w, "ztgate: %v\n", err)
		if errors.Is(ur.Err, fs.ErrPermission) {
			fmt.Fprintln(w, "ztgate: permission denied: run as root or as a member of the agent's socket group")
		} else {
			fmt.Fprintln(w, "ztgate: is the agent running? (ztgate agent, or --socket/ZTGATE_SOCKET to name its socket)")
		}
	case errors.As(err, &ae):
		msg := ae.Message
		switch ae.Kind {
		case api.KindInvalidPolicy:
			if msg == "" {
				msg = "invalid policy"
			}
		case api.KindRejected:
			if msg == "" {
				msg = "policy rejected"
			}
		case api.KindForbidden:
			msg = "permission denied: " + msg
		}
		if msg == "" {
			msg = ae.Kind
		}
		fmt.Fprintf(w, "ztgate: %s\n", msg)
		for _, f := range ae.Fields {
			fmt.Fprintln(w, f.String())
		}
		if ae.Kind == api.KindForbidden {
			fmt.Fprintln(w, "ztgate: run as root or as a member of the agent's socket group")
		}
	default:
		fmt.Fprintf(w, "ztgate: %v\n", err)
	}
}
