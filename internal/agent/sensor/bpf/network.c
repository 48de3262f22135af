//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * network.c: TCP connect, accept and listen events for Mamori.
 *
 * Hooks:
 *   sock/inet_sock_set_state (tp_btf, raw_tp fallback): TCP state changes.
 *     CLOSE->SYN_SENT   runs in connect(2): current is the owner; remembered
 *                       in "owners" keyed by the sock pointer.
 *     SYN_SENT->ESTABLISHED / SYN_SENT->CLOSE may run in softirq, where
 *                       current is whoever was interrupted: the event is
 *                       attributed to the remembered owner, never current.
 *     *->LISTEN         runs in listen(2): current is the owner.
 *   syscalls/sys_exit_accept, sys_exit_accept4 (tracepoint): the acceptor
 *     in process context; the 5-tuple is read from the returned fd's socket.
 *     (SYN_RECV->ESTABLISHED runs in softirq before anyone accepts.)
 *
 * Dedup rule: connect and accept events are keyed by (process, kind,
 * result, family, client address, server address, server port): everything
 * but the client's ephemeral port. The first event of a key is
 * sent; repeats only count up in the "flows" map. User space ends a key's
 * window (LookupAndDelete) once it is older than the window and reports the
 * repeat count as a summary event. Listen events are not deduplicated.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define KIND_CONNECT 1
#define KIND_ACCEPT 2
#define KIND_LISTEN 3

#define RES_OK 0
#define RES_FAILED 1

#define HOOK_STATE 0
#define HOOK_ACCEPT 1
#define HOOK_MAX 2

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

struct owner {
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u64 start;
	__u64 pstart;
	__u64 cgroup;
	char comm[16];
};

struct net_event {
	__u8 kind;
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 protocol;
	__u8 result;
	__u16 sport; /* client side, host order */
	__u16 dport; /* server side, host order */
	__u64 ktime;
	struct owner o;
	__u8 saddr[16]; /* client side (for listen: unused) */
	__u8 daddr[16]; /* server side (for listen: the bound address) */
};

struct flow_key {
	__u32 pid;
	__u8 kind;
	__u8 result;
	__u8 family;
	__u8 _pad;
	__u64 start;
	__u16 port; /* server port */
	__u16 _pad2;
	__u32 _pad3;
	__u8 caddr[16]; /* client address */
	__u8 saddr[16]; /* server address */
};

struct flow_val {
	__u64 first;
	__u64 last;
	__u64 count; /* repeats after the first, not sent */
};

struct drop_counter {
	__u64 dropped;
};

/* Unused: they export the record types to bpf2go (decode_test checks the
 * Go decoder against them). */
const struct net_event *unused_event __attribute__((unused));
const struct flow_key *unused_key __attribute__((unused));

/* Whether repeats are summarised (set by the loader). */
const volatile __u8 dedup = 1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX);
	__type(key, __u32);
	__type(value, struct drop_counter);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 hook)
{
	struct drop_counter *c = bpf_map_lookup_elem(&drops, &hook);

	if (c)
		__sync_fetch_and_add(&c->dropped, 1);
}

static __always_inline void fill_owner(struct owner *o)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	o->pid = id >> 32;
	o->tid = (__u32)id;
	o->uid = (__u32)bpf_get_current_uid_gid();
	o->ppid = BPF_CORE_READ(task, real_parent, tgid);
	o->start = BPF_CORE_READ(task, group_leader, start_boottime);
	o->pstart = BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
	o->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&o->comm, sizeof(o->comm));
}

/* fill_tuple reads the endpoints of sk. local_is_server says whether the
 * local end is the server side (accept, listen). */
static __always_inline int fill_tuple(struct net_event *e, struct sock *sk, int local_is_server)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__u8 *local, *remote;

	if (local_is_server) {
		local = e->daddr;
		remote = e->saddr;
		e->dport = lport;
		e->sport = rport;
	} else {
		local = e->saddr;
		remote = e->daddr;
		e->sport = lport;
		e->dport = rport;
	}
	e->family = family;
	if (family == AF_INET) {
		bpf_core_read(local, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(remote, 4, &sk->__sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(remote, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return -1;
	}
	return 0;
}

/* seen returns 1 when e repeats a flow inside its window (and counts it). */
static __always_inline int seen(struct net_event *e)
{
	struct flow_key k = {};
	struct flow_val *v, nv = {};

	if (!dedup)
		return 0;
	k.pid = e->o.pid;
	k.start = e->o.start;
	k.kind = e->kind;
	k.result = e->result;
	k.family = e->family;
	k.port = e->dport;
	__builtin_memcpy(k.caddr, e->saddr, 16);
	__builtin_memcpy(k.saddr, e->daddr, 16);
	v = bpf_map_lookup_elem(&flows, &k);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		v->last = e->ktime;
		return 1;
	}
	nv.first = e->ktime;
	nv.last = e->ktime;
	bpf_map_update_elem(&flows, &k, &nv, BPF_NOEXIST);
	return 0;
}

static __always_inline void emit(struct net_event *e, __u32 hook)
{
	if (e->kind != KIND_LISTEN && seen(e))
		return;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		count_drop(hook);
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate)
{
	struct net_event e = {};
	__u64 key = (__u64)sk;
	struct owner *o;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	if (newstate == TCP_SYN_SENT) {
		struct owner no = {};

		fill_owner(&no);
		bpf_map_update_elem(&owners, &key, &no, BPF_ANY);
		return 0;
	}
	if (newstate == TCP_LISTEN) {
		e.kind = KIND_LISTEN;
		e.protocol = IPPROTO_TCP;
		e.ktime = bpf_ktime_get_boot_ns();
		fill_owner(&e.o);
		if (fill_tuple(&e, sk, 1))
			return 0;
		e.sport = 0;
		__builtin_memset(e.saddr, 0, sizeof(e.saddr));
		emit(&e, HOOK_STATE);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	o = bpf_map_lookup_elem(&owners, &key);
	if (!o)
		return 0; /* connect began before the sensor */
	e.o = *o;
	bpf_map_delete_elem(&owners, &key);
	e.kind = KIND_CONNECT;
	e.protocol = IPPROTO_TCP;
	e.result = newstate == TCP_ESTABLISHED ? RES_OK : RES_FAILED;
	e.ktime = bpf_ktime_get_boot_ns();
	if (fill_tuple(&e, sk, 0))
		return 0;
	emit(&e, HOOK_STATE);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_state, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(raw_tp_state, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

/* on_accept reads the socket behind the fd accept returned. */
static __always_inline int on_accept(long ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct net_event e = {};
	struct file **fds;
	struct file *f;
	struct socket *sock;
	struct sock *sk;
	unsigned int max;

	if (ret < 0)
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	max = BPF_CORE_READ(task, files, fdt, max_fds);
	if ((unsigned long)ret >= max)
		return 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[ret]) || !f)
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	e.kind = KIND_ACCEPT;
	e.protocol = IPPROTO_TCP;
	e.ktime = bpf_ktime_get_boot_ns();
	fill_owner(&e.o);
	if (fill_tuple(&e, sk, 1))
		return 0;
	emit(&e, HOOK_ACCEPT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}
