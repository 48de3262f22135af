/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * path.h: build a file's absolute path in the kernel without bpf_d_path,
 * which tracepoint programs may not call.
 *
 * The walk goes from the dentry up to the root, crossing mount points, and
 * writes the component names leaf first, each NUL terminated:
 *   /usr/bin/true  ->  "true\0bin\0usr\0"
 * User space reverses the list. Writing leaf first keeps every store at a
 * growing offset, which the verifier can bound with a mask; building the
 * string backwards would need a second copy.
 *
 * The region handed to mamori_path_walk must be MAMORI_PATH_REGION +
 * MAMORI_NAME_BUF bytes long; the walk never returns more than
 * MAMORI_PATH_REGION bytes.
 */
#ifndef MAMORI_PATH_H
#define MAMORI_PATH_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MAMORI_PATH_REGION 4096 /* PATH_MAX; power of two, used as a mask */
#define MAMORI_NAME_BUF 256	/* NAME_MAX + NUL */
#define MAMORI_PATH_DEPTH 64	/* components + mount crossings walked */

/* Walk result flags. */
#define MAMORI_PATH_OK 1	/* reached the root of the mount tree */
#define MAMORI_PATH_TRUNC 2	/* ran out of depth or room: a suffix only */

#ifndef container_of
#define container_of(ptr, type, member)                                        \
	({                                                                     \
		void *__mptr = (void *)(ptr);                                  \
		((type *)(__mptr - __builtin_offsetof(type, member)));         \
	})
#endif

/*
 * mamori_path_walk writes the components of path into buf (leaf first) and
 * returns the number of bytes written; *res gets MAMORI_PATH_* flags.
 *
 * pos must point into map memory (the caller's scratch value). Keeping the
 * write offset there rather than in a register hides its range from the
 * verifier, so the state at the loop head is the same on every branch and
 * the verifier prunes instead of exploring 2^depth paths.
 */
static __always_inline __u32 mamori_path_walk(char *buf, const struct path *path,
					      volatile __u32 *pos, __u8 *res)
{
	struct dentry *d = BPF_CORE_READ(path, dentry);
	struct vfsmount *vfs = BPF_CORE_READ(path, mnt);
	struct mount *mnt = container_of(vfs, struct mount, mnt);
	struct dentry *mnt_root = BPF_CORE_READ(vfs, mnt_root);
	int i;

	*pos = 0;
	*res = MAMORI_PATH_TRUNC;
	if (!d || !vfs)
		return 0;

	for (i = 0; i < MAMORI_PATH_DEPTH; i++) {
		struct dentry *parent;
		const unsigned char *name;
		__u32 p;
		long n;

		if (d == mnt_root) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (!up || up == mnt) {
				*res = MAMORI_PATH_OK;
				break;
			}
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			mnt_root = BPF_CORE_READ(up, mnt.mnt_root);
			continue;
		}
		p = *pos;
		if (p > MAMORI_PATH_REGION - MAMORI_NAME_BUF)
			break;
		parent = BPF_CORE_READ(d, d_parent);
		name = BPF_CORE_READ(d, d_name.name);
		n = bpf_probe_read_kernel_str(&buf[p & (MAMORI_PATH_REGION - 1)],
					      MAMORI_NAME_BUF, name);
		if (n <= 0)
			break;
		*pos = p + n;
		if (!parent || parent == d) {
			/* Root of a filesystem that is not mounted here
			 * (pipe:, socket:, memfd on an internal mount). */
			*res = MAMORI_PATH_OK;
			break;
		}
		d = parent;
	}
	return *pos;
}

#endif /* MAMORI_PATH_H */
