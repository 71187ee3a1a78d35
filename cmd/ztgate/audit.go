package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/agent/audit"
	"github.com/ztgate/ztgate/api"
)

func (a *app) auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "list the agent's audit log of policy changes and refused connections",
		Description: `--verify also re-checks the log's hash chain here, in the client: sequence numbers count up
from 1, each record's prev is the hash of the record before, and each hash recomputes. A broken
chain fails with exit status 1, naming the first bad record.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verify", Usage: "verify the hash chain of the records"},
			outputFlag(fmtTable, fmtJSON),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			rs, err := callFor(ctx, cmd, orEmpty((*api.Client).Audit))
			if err != nil {
				return err
			}
			if err := show(a, cmd, rs, writeAudit); err != nil || !cmd.Bool("verify") {
				return err
			}
			if err := verifyChain(rs); err != nil {
				return err
			}
			head := "(empty log)"
			if len(rs) > 0 {
				head = "head " + rs[len(rs)-1].Hash
			}
			fmt.Fprintf(a.stderr, "ztgate: audit chain verified: %d records, %s\n", len(rs), head)
			return nil
		},
	}
}

// writeAudit renders audit records as a table.
func writeAudit(w io.Writer, rs []api.AuditRecord) error {
	tw := newTable(w)
	row(tw, "SEQ", "TIME", "ACTION", "RESULT", "UID", "GID", "PID", "REVISION", "POLICY", "CHANGE", "ERROR")
	for _, r := range rs {
		rev := "-"
		if r.OldRevision != 0 || r.NewRevision != 0 {
			rev = fmt.Sprintf("%d -> %d", r.OldRevision, r.NewRevision)
		}
		row(tw, r.Seq, r.Time.Local().Format(time.RFC3339), r.Action, r.Result, id(r.UID), id(r.GID), id(r.PID),
			rev, shortHash(r.PolicyHash), orDash(r.Change), orDash(r.Error))
	}
	return tw.Flush()
}

// id renders a uid, gid or pid, "-" for unknown (-1).
func id(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

// verifyChain checks the hash chain of the audit log rs (oldest first): Seq counts up from 1,
// Prev is the Hash of the record before ("" for the first), Hash recomputes.
func verifyChain(rs []api.AuditRecord) error {
	prev := ""
	for i, r := range rs {
		broken := func(format string, args ...any) error {
			return fmt.Errorf("audit chain broken at seq %d: %s", r.Seq, fmt.Sprintf(format, args...))
		}
		if want := uint64(i) + 1; r.Seq != want {
			return broken("record %d has seq %d, want %d", i+1, r.Seq, want)
		}
		if r.Prev != prev {
			return broken("prev is %q, want the hash of the record before, %q", r.Prev, prev)
		}
		if h := audit.HashRecord(r); r.Hash != h {
			return broken("hash is %q, but the record hashes to %q (modified)", r.Hash, h)
		}
		prev = r.Hash
	}
	return nil
}
