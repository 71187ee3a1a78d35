#!/usr/bin/env bash
# Make sure a BPF filesystem is mounted at /sys/fs/bpf (where ztgate pins its maps and links).
# systemd-based hosts mount it at boot; minimal VMs and containers may not. Needs root to mount.
set -euo pipefail

dir=${1:-/sys/fs/bpf}

if [[ $(stat -f -c %T "$dir" 2>/dev/null || true) == bpf_fs ]]; then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "ensure-bpffs: $dir is not a bpffs and we are not root: not mounting" >&2
	exit 0
fi
echo "ensure-bpffs: mounting bpffs at $dir"
mkdir -p "$dir"
mount -t bpf bpf "$dir"
