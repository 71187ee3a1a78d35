#!/usr/bin/env bash
# Install the given Debian/Ubuntu packages, but only those not installed yet; runs
# `apt-get update` first whenever something has to be installed. Used by `make deps` and .ci/run.
#
#   scripts/install-deps.sh clang llvm libbpf-dev ...
#
# With NO_SERVICE_START=1 (CI), packages that ship a daemon (prometheus) are not started: a
# temporary /usr/sbin/policy-rc.d denies service starts, unless the machine already has one.
set -euo pipefail

if [[ $# -eq 0 ]]; then
	echo "usage: $0 PACKAGE..." >&2
	exit 2
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
	echo "install-deps: apt-get not found: this script knows Debian and Ubuntu only." >&2
	echo "install-deps: install the equivalents of these packages by hand: $*" >&2
	exit 1
fi

missing=()
for pkg in "$@"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
	if [[ $status != ii* ]]; then
		missing+=("$pkg")
	fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: already installed: $*"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing packages: ${missing[*]}" >&2
	echo "install-deps: run as root (e.g. 'sudo make deps') to install them" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [[ ${NO_SERVICE_START:-} == 1 && ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "install-deps: installing: ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
