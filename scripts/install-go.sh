#!/usr/bin/env bash
# Make sure a Go toolchain at least as new as go.mod asks for is available, installing the
# official release tarball into /usr/local/go when it is not (needs root and access to go.dev).
# Used by `make deps` and by the Vagrantfile provisioner. Does nothing when Go is recent enough.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gomod="$here/../go.mod"
prefix=${GO_PREFIX:-/usr/local}

# Required version: $GO_VERSION if set, else the toolchain line of go.mod if there is one, else
# its go line (go1.21+ format).
want=${GO_VERSION:-}
if [[ -z $want ]]; then
	want=$(sed -n 's/^toolchain go\([0-9.]*\).*/\1/p' "$gomod" | head -n1)
fi
if [[ -z $want ]]; then
	want=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -n1)
fi
if [[ -z $want ]]; then
	echo "install-go: no go version found in $gomod" >&2
	exit 1
fi
# "1.26" names no release: the first release of a line is "1.26.0".
if [[ $want =~ ^[0-9]+\.[0-9]+$ ]]; then
	want="$want.0"
fi

version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

have=""
for gobin in "$(command -v go 2>/dev/null || true)" "$prefix/go/bin/go"; do
	if [[ -n $gobin && -x $gobin ]]; then
		# GOTOOLCHAIN=local: report this binary's own version, do not switch toolchains.
		have=$(GOTOOLCHAIN=local "$gobin" env GOVERSION 2>/dev/null | sed 's/^go//') || have=""
		if [[ -n $have ]] && version_ge "$have" "$want"; then
			echo "install-go: $gobin is go$have (need go$want or newer): ok"
			exit 0
		fi
	fi
done

if [[ $(id -u) -ne 0 ]]; then
	echo "install-go: need go$want or newer (found: ${have:-none}); run as root to install it into $prefix/go" >&2
	exit 1
fi

case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
armv6l | armv7l) arch=armv6l ;;
i386 | i686) arch=386 ;;
ppc64le) arch=ppc64le ;;
riscv64) arch=riscv64 ;;
s390x) arch=s390x ;;
*)
	echo "install-go: unsupported machine $(uname -m)" >&2
	exit 1
	;;
esac

"$here/install-deps.sh" curl ca-certificates

tarball="go$want.linux-$arch.tar.gz"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-go: downloading $tarball"
curl -fsSL --retry 3 -o "$tmp/$tarball" "https://dl.google.com/go/$tarball"
curl -fsSL --retry 3 -o "$tmp/$tarball.sha256" "https://dl.google.com/go/$tarball.sha256"
echo "$(cat "$tmp/$tarball.sha256")  $tmp/$tarball" | sha256sum -c -
mkdir "$tmp/x"
tar -C "$tmp/x" -xzf "$tmp/$tarball"
rm -rf "$prefix/go"
mv "$tmp/x/go" "$prefix/go"
ln -sf "$prefix/go/bin/go" "$prefix/bin/go"
ln -sf "$prefix/go/bin/gofmt" "$prefix/bin/gofmt"
echo "install-go: installed $("$prefix/go/bin/go" version)"
