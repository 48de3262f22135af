#!/usr/bin/env bash
# kernels.sh fetches the stock Debian kernels the BPF tests also run on (the
# packages behind linux-image-cloud-amd64 and linux-image-6.12-cloud-amd64)
# with apt, and unpacks each vmlinuz into .cache/kernels/NAME/. Idempotent.
# Prints one kernel image path per line.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=.cache/kernels
mkdir -p "$cache"
for meta in linux-image-cloud-amd64 linux-image-6.12-cloud-amd64; do
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	if [[ -z $pkg ]]; then
		apt-get update -qq >/dev/null
		pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/{print $2; exit}')
	fi
	[[ -n $pkg ]] || { echo "kernels: cannot resolve $meta" >&2; exit 1; }
	dir=$cache/$pkg
	if ! ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1; then
		tmp=$(mktemp -d) && chmod 755 "$tmp"
		(cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
		mkdir -p "$dir"
		dpkg-deb -x "$tmp"/*.deb "$dir"
		find "$dir" -mindepth 1 -maxdepth 1 ! -name boot -exec rm -rf {} +
		rm -rf "$tmp"
	fi
	ls "$dir"/boot/vmlinuz-*
done
