#!/usr/bin/env bash
# check-style.sh [PATH...]: the source rules gofmt and clang-format do not check, over the Go and
# C files git knows below PATH (default: the whole tree), generated bpf2go output left out:
#   - no line over 120 characters (a tab counts as one);
#   - no comment that names an issue, quotes a timing, or points outside the repository
#     (those go stale; figures belong in docs/performance.md, history in git).
# Prints file:line: what, and exits 1 when anything is found.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mapfile -t files < <(git ls-files --cached --others --exclude-standard -- "${@:-.}" |
	grep -E '\.(go|c|h)$' | grep -vE '_bpfe[lb]\.go$' || true)
[[ ${#files[@]} -eq 0 ]] && exit 0

awk '
	length($0) > 120 && $0 !~ /^\/\/go:generate / { printf "%s:%d: line of %d characters (at most 120)\n", FILENAME, FNR, length($0); bad = 1 }
	{
		c = ""
		if (match($0, /\/\/.*/)) c = substr($0, RSTART)
		else if ($0 ~ /^[ \t]*(\/\*|\*)/) c = $0
		if (c == "") next
		if (c ~ /[Ii]ssue [0-9]|[Ii]ssue #[0-9]|[Aa]cceptance [0-9]/) {
			printf "%s:%d: comment names an issue (history lives in git)\n", FILENAME, FNR; bad = 1
		}
		if (c ~ /[0-9] ?(ns|µs|ms)([^a-zA-Z]|$)/) {
			printf "%s:%d: comment quotes a timing (figures go to docs/performance.md)\n", FILENAME, FNR; bad = 1
		}
		if (c ~ /\.\.\/shared|shared\/docs/) {
			printf "%s:%d: comment points outside the repository\n", FILENAME, FNR; bad = 1
		}
	}
	END { exit bad }
' "${files[@]}"
