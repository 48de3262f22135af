#!/usr/bin/env bash
# setup.sh installs what Mamori needs to build, run and test on Debian 12,
# idempotently: apt packages, a Go toolchain from the Go module proxy when the
# machine has none new enough, and the kernel filesystems the agent uses.
#
# Usage: sudo bash scripts/setup.sh [--test]   (--test adds what the tests need)
set -euo pipefail

GO_VERSION=1.26.8
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

log() { printf 'setup: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
	log "must run as root (the agent loads eBPF programs)"
	exit 1
fi

# --- apt packages -----------------------------------------------------------
pkgs=(ca-certificates curl unzip make gcc git file)
# clang/libbpf/bpftool regenerate the eBPF objects (committed, so only CI's
# "generate and diff" check needs them).
pkgs+=(clang llvm libbpf-dev bpftool)
# The agent isolates a host with nft.
pkgs+=(nftables)
if [[ $want_test -eq 1 ]]; then
	pkgs+=(iproute2 util-linux procps qemu-system-x86 busybox-static cpio tinyproxy)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing apt packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Go toolchain -------------------------------------------------------------
# Debian 12's golang is too old; the toolchain is published on the Go module
# proxy as golang.org/toolchain, so fetch it from there when needed.
go_ok() {
	local gobin=$1
	[[ -x $gobin ]] || return 1
	local v
	v=$("$gobin" env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	[[ $(printf '%s\n%s\n' "1.26" "$v" | sort -V | head -1) == "1.26" ]]
}
GOBIN_PATH=$(command -v go || true)
if ! go_ok "${GOBIN_PATH:-/nonexistent}" && ! go_ok /usr/local/go/bin/go; then
	proxy=${GOPROXY:-https://proxy.golang.org}
	proxy=${proxy%%,*}
	url="$proxy/golang.org/toolchain/@v/v0.0.1-go${GO_VERSION}.linux-$(dpkg --print-architecture).zip"
	log "installing Go $GO_VERSION from $url"
	tmp=$(mktemp -d)
	curl -fsSL -o "$tmp/go.zip" "$url"
	unzip -q "$tmp/go.zip" -d "$tmp"
	rm -rf /usr/local/go
	mv "$tmp"/golang.org/toolchain@*/ /usr/local/go
	chmod -R a+rX /usr/local/go
	chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
	rm -rf "$tmp"
fi
if ! command -v go >/dev/null || ! go_ok "$(command -v go)"; then
	ln -sf /usr/local/go/bin/go /usr/local/bin/go
	ln -sf /usr/local/go/bin/gofmt /usr/local/bin/gofmt
fi

# --- kernel filesystems -------------------------------------------------------
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || log "warning: cannot mount bpffs"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true

log "ok ($(go version))"
