//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * process.c: process exec, fork and exit events for Mamori.
 *
 * Every hook exists twice, as tp_btf (typed arguments, 5.5+) and as raw_tp
 * (for kernels that refuse BTF-typed tracing). process_hooks.h holds one
 * body, compiled once with direct loads (tp_btf) and once with CO-RE probe
 * reads (raw_tp). The loader picks one set.
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

/* Whether fork events carry the child's image (exe, cwd, argv); set by the
 * loader. Without it a fork costs about as little as an exit. */
const volatile __u8 fork_image = 1;

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

/* exit_claim lets one thread report a process's exit. signal->live is
 * decremented early in do_exit, long before the tracepoint, so when several
 * threads exit at once (exit_group) more than one can read zero there: the
 * first to insert the process's key reports. Duplicates follow within
 * microseconds, so a small LRU map is enough. */
struct exit_key {
	__u32 tgid;
	__u32 _pad;
	__u64 start;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exit_key);
	__type(value, __u8);
} exit_claim SEC(".maps");

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

static __always_inline void submit(struct scratch *s, __u32 tail, __u32 hook)
{
	__u64 size = sizeof(struct event_hdr) + tail;
	__u64 flags = BPF_RB_NO_WAKEUP;

	barrier_var(size);
	if (size > sizeof(struct event_hdr) + TAIL_SIZE)
		size = sizeof(struct event_hdr) + TAIL_SIZE;

	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	/* Wake when the queued data crosses a multiple of the mark, not on
	 * every event (an IPI each). Every multiple, not only the first: two
	 * CPUs racing past the first mark can both see themselves below it,
	 * and the reader must not then sleep until its poll timer while the
	 * ring fills and drops. */
	if (avail / wakeup_bytes != (avail + size) / wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, &s->h, size, flags))
		count_drop(hook);
}

/* Direct loads on BTF pointers. */
#define RD(x) (x)
#define SFX(name) name##_btf
#include "process_hooks.h"
#undef RD
#undef SFX

/* CO-RE probe reads on untyped pointers. */
#define RD(x)                                                                  \
	({                                                                     \
		typeof(x) __rd;                                                \
		bpf_core_read(&__rd, sizeof(__rd), &(x));                      \
		__rd;                                                          \
	})
#define SFX(name) name##_raw
#include "process_hooks.h"
#undef RD
#undef SFX

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec_btf(p, bprm);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_btf_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork_btf(parent, child);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_btf_exit, struct task_struct *p)
{
	return on_exit_btf(p);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec_raw(p, bprm);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_tp_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork_raw(parent, child);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_tp_exit, struct task_struct *p)
{
	return on_exit_raw(p);
}
