//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * process.c: process exec, fork and exit events for Mamori.
 *
 * Every hook exists twice, as tp_btf (typed arguments, 5.5+) and as raw_tp
 * (for kernels that refuse BTF-typed tracing). Both read the kernel with
 * BPF_CORE_READ, so one body serves both. The loader picks one set.
 *
 * An event is a fixed header followed by a variable tail:
 *   exe components (leaf first) | cwd components (leaf first) | argv bytes
 * The header is built in a per-CPU slot of the "heap" map and copied to the
 * ring with bpf_ringbuf_output, sized to what was written, so a typical exec
 * costs a few hundred bytes of ring instead of the worst case.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lib/path.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define KIND_EXEC 1
#define KIND_FORK 2
#define KIND_EXIT 3

#define HOOK_EXEC 0
#define HOOK_FORK 1
#define HOOK_EXIT 2
#define HOOK_MAX 3

/* Header flags. */
#define F_EXE 0x01	   /* exe components present */
#define F_EXE_TRUNC 0x02   /* exe path is a suffix only */
#define F_CWD 0x04	   /* cwd components present */
#define F_CWD_TRUNC 0x08   /* cwd path is a suffix only */
#define F_ARGS_TRUNC 0x10  /* argv longer than args_max */
#define F_ARGS_FAULT 0x20  /* argv could not be read */
#define F_EXE_UNLINKED 0x40 /* exe has no links: deleted, memfd, O_TMPFILE */

#define ARGS_LIMIT 32768 /* hard cap for args_max */
#define TAIL_SIZE (2 * MAMORI_PATH_REGION + ARGS_LIMIT + MAMORI_NAME_BUF)

#define PF_KTHREAD 0x00200000

struct event_hdr {
	__u8 kind;
	__u8 flags;
	__u16 exe_len;
	__u16 cwd_len;
	__u16 _pad;
	__u32 args_len;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u32 egid;
	__u32 loginuid;
	__u32 sessionid;
	__s32 exit_code;
	__u32 dev; /* kernel dev_t of the exe's super block */
	__u64 ktime;
	__u64 start;
	__u64 pstart;
	__u64 cgroup;
	__u64 ino;
	__s64 size;
	__s64 mtime;
	__s64 ctime;
	char comm[16];
};

struct scratch {
	__u32 pos; /* path walk offset, see lib/path.h */
	__u32 _pad;
	struct event_hdr h;
	char tail[TAIL_SIZE];
};

struct drop_counter {
	__u64 dropped;
};

/* Maximum argv bytes copied; set by the loader. */
const volatile __u32 args_max = 16384;

/* Queued bytes above which an event wakes the reader; set by the loader.
 * Below it events are queued silently and the reader polls on a timer:
 * a wakeup per event costs an IPI, which in a VM is several microseconds,
 * more than the rest of the program. */
const volatile __u64 wakeup_bytes = 1 << 20;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} events SEC(".maps");

/* One scratch slot per CPU; max_entries is set to the CPU count by the
 * loader. A plain array, not a per-CPU one, because per-CPU values are
 * limited to 32 KiB. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} heap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX);
	__type(key, __u32);
	__type(value, struct drop_counter);
} drops SEC(".maps");

/* Inode time layouts across kernels, resolved by CO-RE. */
struct inode___v611 {
	time64_t i_mtime_sec;
	time64_t i_ctime_sec;
	__u32 i_mtime_nsec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

struct inode___v67 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___v66 {
	struct timespec64 i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___old {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

/* Since 6.13 bit 31 of i_ctime_nsec flags a queried multigrain ctime; no
 * valid nanosecond count reaches bit 30, so mask both. */
static __always_inline __s64 ts_ns(__s64 sec, __s64 nsec)
{
	return sec * 1000000000LL + (nsec & 0x3fffffff);
}

static __always_inline void inode_times(struct inode *ino, __s64 *mtime, __s64 *ctime)
{
	if (bpf_core_field_exists(((struct inode___v611 *)0)->i_mtime_sec)) {
		struct inode___v611 *i = (void *)ino;
		*mtime = ts_ns(BPF_CORE_READ(i, i_mtime_sec), BPF_CORE_READ(i, i_mtime_nsec));
		*ctime = ts_ns(BPF_CORE_READ(i, i_ctime_sec), BPF_CORE_READ(i, i_ctime_nsec));
	} else if (bpf_core_field_exists(((struct inode___v67 *)0)->__i_mtime)) {
		struct inode___v67 *i = (void *)ino;
		*mtime = ts_ns(BPF_CORE_READ(i, __i_mtime.tv_sec), BPF_CORE_READ(i, __i_mtime.tv_nsec));
		*ctime = ts_ns(BPF_CORE_READ(i, __i_ctime.tv_sec), BPF_CORE_READ(i, __i_ctime.tv_nsec));
	} else if (bpf_core_field_exists(((struct inode___v66 *)0)->__i_ctime)) {
		struct inode___v66 *i = (void *)ino;
		*mtime = ts_ns(BPF_CORE_READ(i, i_mtime.tv_sec), BPF_CORE_READ(i, i_mtime.tv_nsec));
		*ctime = ts_ns(BPF_CORE_READ(i, __i_ctime.tv_sec), BPF_CORE_READ(i, __i_ctime.tv_nsec));
	} else {
		struct inode___old *i = (void *)ino;
		*mtime = ts_ns(BPF_CORE_READ(i, i_mtime.tv_sec), BPF_CORE_READ(i, i_mtime.tv_nsec));
		*ctime = ts_ns(BPF_CORE_READ(i, i_ctime.tv_sec), BPF_CORE_READ(i, i_ctime.tv_nsec));
	}
}

static __always_inline struct scratch *scratch_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&heap, &cpu);
}

static __always_inline void count_drop(__u32 hook)
{
	struct drop_counter *c = bpf_map_lookup_elem(&drops, &hook);

	if (c)
		c->dropped++;
}

/* fill_task fills the identity part of the header from a task. */
static __always_inline void fill_task(struct event_hdr *h, struct task_struct *task)
{
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	const struct cred *cred = BPF_CORE_READ(task, cred);

	h->ktime = bpf_ktime_get_boot_ns();
	h->pid = BPF_CORE_READ(task, tgid);
	h->tid = BPF_CORE_READ(task, pid);
	h->ppid = BPF_CORE_READ(parent, tgid);
	/* The process's start is its leader's: the last thread to exit, or a
	 * parent that was a non-leader thread, started later. */
	h->start = BPF_CORE_READ(task, group_leader, start_boottime);
	h->pstart = BPF_CORE_READ(parent, group_leader, start_boottime);
	h->uid = BPF_CORE_READ(cred, uid.val);
	h->euid = BPF_CORE_READ(cred, euid.val);
	h->gid = BPF_CORE_READ(cred, gid.val);
	h->egid = BPF_CORE_READ(cred, egid.val);
	if (bpf_core_field_exists(task->loginuid)) {
		h->loginuid = BPF_CORE_READ(task, loginuid.val);
		h->sessionid = BPF_CORE_READ(task, sessionid);
	} else {
		h->loginuid = (__u32)-1;
		h->sessionid = (__u32)-1;
	}
	h->cgroup = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&h->comm, task, comm);
}

/*
 * fill_image writes exe identity, exe path, cwd and argv of task into s and
 * returns the tail length. argv is read from the current task's memory at
 * task->mm's addresses: for exec current is task, for fork current is the
 * parent whose memory the child's is a copy of.
 */
static __always_inline __u32 fill_image(struct scratch *s, struct task_struct *task,
					struct file *exe)
{
	struct event_hdr *h = &s->h;
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u32 off = 0, n;
	__u8 res;

	if (exe) {
		struct inode *ino = BPF_CORE_READ(exe, f_inode);

		h->ino = BPF_CORE_READ(ino, i_ino);
		h->dev = BPF_CORE_READ(ino, i_sb, s_dev);
		h->size = BPF_CORE_READ(ino, i_size);
		if (BPF_CORE_READ(ino, i_nlink) == 0)
			h->flags |= F_EXE_UNLINKED;
		inode_times(ino, &h->mtime, &h->ctime);

		n = mamori_path_walk(s->tail, &exe->f_path, &s->pos, &res);
		if (n > MAMORI_PATH_REGION)
			n = MAMORI_PATH_REGION;
		h->exe_len = n;
		h->flags |= F_EXE;
		if (res & MAMORI_PATH_TRUNC)
			h->flags |= F_EXE_TRUNC;
		off = n;
	}

	{
		struct fs_struct *fs = BPF_CORE_READ(task, fs);

		if (fs) {
			barrier_var(off);
			if (off > MAMORI_PATH_REGION)
				off = MAMORI_PATH_REGION;
			n = mamori_path_walk(&s->tail[off], &fs->pwd, &s->pos, &res);
			if (n > MAMORI_PATH_REGION)
				n = MAMORI_PATH_REGION;
			h->cwd_len = n;
			h->flags |= F_CWD;
			if (res & MAMORI_PATH_TRUNC)
				h->flags |= F_CWD_TRUNC;
			off += n;
		}
	}

	if (mm) {
		unsigned long start = BPF_CORE_READ(mm, arg_start);
		unsigned long end = BPF_CORE_READ(mm, arg_end);
		__u32 max = args_max;
		__u32 len;

		if (end > start) {
			if (end - start > max) {
				len = max;
				h->flags |= F_ARGS_TRUNC;
			} else {
				len = end - start;
			}
			barrier_var(len);
			if (len > ARGS_LIMIT)
				len = ARGS_LIMIT;
			barrier_var(off);
			if (off > 2 * MAMORI_PATH_REGION)
				off = 2 * MAMORI_PATH_REGION;
			if (len && bpf_probe_read_user(&s->tail[off], len, (void *)start) == 0) {
				h->args_len = len;
				off += len;
			} else if (len) {
				h->flags |= F_ARGS_FAULT;
			}
		}
	}
	return off;
}

static __always_inline void submit(struct scratch *s, __u32 tail, __u32 hook)
{
	__u64 size = sizeof(struct event_hdr) + tail;
	__u64 flags = BPF_RB_NO_WAKEUP;

	barrier_var(size);
	if (size > sizeof(struct event_hdr) + TAIL_SIZE)
		size = sizeof(struct event_hdr) + TAIL_SIZE;

	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	/* Wake on crossing the mark only: above it the reader is already
	 * busy draining and more wakeups would only cost IPIs. A crossing
	 * lost to a race is caught by the reader's poll timer. */
	if (avail < wakeup_bytes && avail + size >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, &s->h, size, flags))
		count_drop(hook);
}

static __always_inline int on_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct scratch *s;
	__u32 tail;

	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_EXEC;
	fill_task(&s->h, task);
	tail = fill_image(s, task, BPF_CORE_READ(bprm, file));
	submit(s, tail, HOOK_EXEC);
	return 0;
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	struct scratch *s;
	__u32 tail;

	/* Threads share the parent's tgid; kernel threads have no image. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	if (BPF_CORE_READ(child, flags) & PF_KTHREAD)
		return 0;
	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_FORK;
	fill_task(&s->h, child);
	tail = fill_image(s, child, BPF_CORE_READ(child, mm, exe_file));
	submit(s, tail, HOOK_FORK);
	return 0;
}

static __always_inline int on_exit(struct task_struct *task)
{
	struct scratch *s;

	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	/* do_exit decrements signal->live before the tracepoint: zero means
	 * this is the last thread of the process. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_EXIT;
	fill_task(&s->h, task);
	s->h.exit_code = BPF_CORE_READ(task, exit_code);
	submit(s, 0, HOOK_EXIT);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_btf_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_btf_exit, struct task_struct *p)
{
	return on_exit(p);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_tp_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_tp_exit, struct task_struct *p)
{
	return on_exit(p);
}
