#!/usr/bin/env bash
# test-kernels.sh runs the eBPF packages' tests, unchanged, on each stock
# Debian kernel of test/vmtest/kernels.sh under QEMU (TCG), so hooks are
# tested on the kernels operators run, not only on this host's.
# Usage: bash scripts/test-kernels.sh [PKG...]   (default: the sensor packages)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in qemu-system-x86 busybox-static cpio; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./internal/agent/sensor/...)
rc=0
for k in $(bash test/vmtest/kernels.sh 2>/dev/null); do
	echo "--- kernel $(basename "$k")"
	if ! CGO_ENABLED=0 VMTEST_KERNEL=$PWD/$k go test -count=1 -v -exec "$PWD/test/vmtest/run.sh" "${pkgs[@]}"; then
		echo "FAIL on kernel $(basename "$k")"
		rc=1
	fi
done
exit $rc
