#!/usr/bin/env bash
# run.sh runs a statically linked Go test binary inside a stock kernel under
# QEMU (TCG), for `go test -exec`: the same BPF tests that run on the host
# kernel run, unchanged, on each kernel of test/vmtest/kernels.sh — including
# hooks the host refuses (BPF LSM, fentry).
#
# Usage: VMTEST_KERNEL=/path/vmlinuz go test -exec "$PWD/test/vmtest/run.sh" PKG
# The guest gets busybox, /bin/true, /bin/sh and their libraries, mounts proc,
# sysfs, bpffs, tracefs, securityfs, cgroup2, and runs the binary from a copy
# of the package directory (so testdata/ is found). The exit status is the
# binary's.
set -euo pipefail
kernel=${VMTEST_KERNEL:?set VMTEST_KERNEL to a vmlinuz}
bin=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,lib,lib64,proc,sys,dev,tmp,etc,run,pkg,usr/bin}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount mkdir poweroff echo cat ls sleep mknod; do ln -sf busybox "$root/bin/$a"; done
# Real binaries the tests run (they copy /bin/true, switch ids with
# setpriv), with their libraries.
for f in /bin/true /bin/false /bin/sleep /usr/bin/setpriv; do
	[[ -e $f ]] || continue
	rm -f "$root$f"
	mkdir -p "$root$(dirname "$f")"
	cp -L "$f" "$root$f"
	ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
cp "$bin" "$root/test.bin"
# go test runs the binary in the package directory: copy its testdata.
[[ -d testdata ]] && cp -r testdata "$root/pkg/"
args=""
for a in "$@"; do args+=" '${a//\'/\'\\\'\'}'"; done
cat >"$root/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo 00000000-0000-0000-0000-00000000vm01 > /etc/machine-id
cd /pkg
export HOME=/tmp TMPDIR=/tmp PATH=/bin:/usr/bin:/sbin
echo "vmtest: kernel \$(cat /proc/sys/kernel/osrelease) lsm=\$(cat /sys/kernel/security/lsm 2>/dev/null)"
/test.bin $args
echo "vmtest-exit-status: \$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
out=$work/console.log
# A guest that dies before /init prints its first line never ran the test:
# under TCG the emulated boot itself has been seen to panic now and then
# (a fatal exception in a timer interrupt at ~2 s). Boot again, up to three
# times; anything after the test started counts as the test's result.
for boot in 1 2 3; do
	timeout "${VMTEST_TIMEOUT:-600}" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
		-kernel "$kernel" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,bpf" </dev/null >"$out" 2>&1 || true
	grep -q 'vmtest: kernel' "$out" && break
	echo "vmtest: boot $boot of $(basename "$kernel") failed before the test started; last console lines:" >&2
	tail -5 "$out" >&2
done
# Print the guest's output without the kernel's own lines.
tr -d '\r' <"$out" | sed -n 's/.*\(vmtest: kernel\)/\1/; /vmtest: kernel/,$p' |
	grep -v -E '^\[ *[0-9]+\.[0-9]+\]|^vmtest-exit-status' || true
status=$(tr -d '\r' <"$out" | sed -n 's/^vmtest-exit-status: \([0-9]*\)$/\1/p' | tail -1)
if [[ -z $status ]]; then
	echo "vmtest: the guest did not report an exit status (kernel $kernel); last console lines:" >&2
	tail -20 "$out" >&2
	exit 1
fi
exit "$status"
