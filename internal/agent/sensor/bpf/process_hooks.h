/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * process_hooks.h: the bodies of the process hooks, included twice by
 * process.c with a different RD():
 *   tp_btf: RD(x) is x, a direct load the verifier turns into a faulting
 *           load on BTF-typed pointers (a nanosecond instead of a helper
 *           call per field);
 *   raw_tp: RD(x) is a CO-RE bpf_probe_read_kernel, since raw tracepoint
 *           arguments are plain integers to the verifier.
 * SFX(name) gives each copy its own names. The path walk (lib/path.h) always
 * uses probe reads: it crosses from a vfsmount to its enclosing mount with
 * container_of, which the verifier refuses on BTF pointers.
 */

static __always_inline void SFX(inode_times)(struct inode *ino, __s64 *mtime, __s64 *ctime)
{
	if (bpf_core_field_exists(((struct inode___v611 *)0)->i_mtime_sec)) {
		struct inode___v611 *i = (void *)ino;
		*mtime = ts_ns(RD(i->i_mtime_sec), RD(i->i_mtime_nsec));
		*ctime = ts_ns(RD(i->i_ctime_sec), RD(i->i_ctime_nsec));
	} else if (bpf_core_field_exists(((struct inode___v67 *)0)->__i_mtime)) {
		struct inode___v67 *i = (void *)ino;
		*mtime = ts_ns(RD(i->__i_mtime.tv_sec), RD(i->__i_mtime.tv_nsec));
		*ctime = ts_ns(RD(i->__i_ctime.tv_sec), RD(i->__i_ctime.tv_nsec));
	} else if (bpf_core_field_exists(((struct inode___v66 *)0)->__i_ctime)) {
		struct inode___v66 *i = (void *)ino;
		*mtime = ts_ns(RD(i->i_mtime.tv_sec), RD(i->i_mtime.tv_nsec));
		*ctime = ts_ns(RD(i->__i_ctime.tv_sec), RD(i->__i_ctime.tv_nsec));
	} else {
		struct inode___old *i = (void *)ino;
		*mtime = ts_ns(RD(i->i_mtime.tv_sec), RD(i->i_mtime.tv_nsec));
		*ctime = ts_ns(RD(i->i_ctime.tv_sec), RD(i->i_ctime.tv_nsec));
	}
}

/* fill_task fills the identity part of the header from a task. */
static __always_inline void SFX(fill_task)(struct event_hdr *h, struct task_struct *task)
{
	struct task_struct *parent = RD(task->real_parent);
	/* Not const: RD() declares a variable of the field type and reads into it. */
	struct cred *cred = (struct cred *)RD(task->cred);

	h->ktime = bpf_ktime_get_boot_ns();
	h->pid = RD(task->tgid);
	h->tid = RD(task->pid);
	h->ppid = RD(parent->tgid);
	/* The process's start is its leader's: the last thread to exit, or a
	 * parent that was a non-leader thread, started later. */
	struct task_struct *leader = RD(task->group_leader);
	struct task_struct *pleader = RD(parent->group_leader);
	h->start = RD(leader->start_boottime);
	h->pstart = RD(pleader->start_boottime);
	h->uid = RD(cred->uid.val);
	h->euid = RD(cred->euid.val);
	h->gid = RD(cred->gid.val);
	h->egid = RD(cred->egid.val);
	if (bpf_core_field_exists(task->loginuid)) {
		h->loginuid = RD(task->loginuid.val);
		h->sessionid = RD(task->sessionid);
	} else {
		h->loginuid = (__u32)-1;
		h->sessionid = (__u32)-1;
	}
	struct css_set *cset = RD(task->cgroups);
	struct cgroup *cgrp = RD(cset->dfl_cgrp);
	struct kernfs_node *kn = RD(cgrp->kn);
	h->cgroup = RD(kn->id);
	bpf_core_read_str(&h->comm, sizeof(h->comm), &task->comm);
}

/*
 * fill_image writes exe identity, exe path, cwd and argv of task into s and
 * returns the tail length. argv is read from the current task's memory at
 * task->mm's addresses: for exec current is task, for fork current is the
 * parent whose memory the child's is a copy of.
 */
static __always_inline __u32 SFX(fill_image)(struct scratch *s, struct task_struct *task,
					struct file *exe)
{
	struct event_hdr *h = &s->h;
	struct mm_struct *mm = RD(task->mm);
	__u32 off = 0, n;
	__u8 res;

	if (exe) {
		struct inode *ino = RD(exe->f_inode);

		h->ino = RD(ino->i_ino);
		struct super_block *sb = RD(ino->i_sb);
		h->dev = RD(sb->s_dev);
		h->size = RD(ino->i_size);
		if (RD(ino->__i_nlink) == 0)
			h->flags |= F_EXE_UNLINKED;
		SFX(inode_times)(ino, &h->mtime, &h->ctime);

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
		struct fs_struct *fs = RD(task->fs);

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
		unsigned long start = RD(mm->arg_start);
		unsigned long end = RD(mm->arg_end);
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

static __always_inline int SFX(on_exec)(struct task_struct *task, struct linux_binprm *bprm)
{
	struct scratch *s;
	__u32 tail;

	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_EXEC;
	SFX(fill_task)(&s->h, task);
	tail = SFX(fill_image)(s, task, RD(bprm->file));
	submit(s, tail, HOOK_EXEC);
	return 0;
}

static __always_inline int SFX(on_fork)(struct task_struct *parent, struct task_struct *child)
{
	struct scratch *s;
	__u32 tail;

	/* Threads share the parent's tgid; kernel threads have no image. */
	if (RD(child->pid) != RD(child->tgid))
		return 0;
	if (RD(child->flags) & PF_KTHREAD)
		return 0;
	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_FORK;
	SFX(fill_task)(&s->h, child);
	tail = 0;
	if (fork_image) {
		struct mm_struct *mm = RD(child->mm);

		tail = SFX(fill_image)(s, child, mm ? RD(mm->exe_file) : NULL);
	}
	submit(s, tail, HOOK_FORK);
	return 0;
}

static __always_inline int SFX(on_exit)(struct task_struct *task)
{
	struct scratch *s;

	if (RD(task->flags) & PF_KTHREAD)
		return 0;
	/* do_exit decrements signal->live before the tracepoint: zero means
	 * this is the last thread of the process. */
	struct signal_struct *sig = RD(task->signal);
	if (RD(sig->live.counter) != 0)
		return 0;
	struct task_struct *leader = RD(task->group_leader);
	struct exit_key key = { .tgid = RD(task->tgid), .start = RD(leader->start_boottime) };
	__u8 one = 1;
	if (bpf_map_update_elem(&exit_claim, &key, &one, BPF_NOEXIST) != 0)
		return 0; /* another thread of this process reported its exit */
	s = scratch_get();
	if (!s)
		return 0;
	__builtin_memset(&s->h, 0, sizeof(s->h));
	s->h.kind = KIND_EXIT;
	SFX(fill_task)(&s->h, task);
	s->h.exit_code = RD(task->exit_code);
	submit(s, 0, HOOK_EXIT);
	return 0;
}


