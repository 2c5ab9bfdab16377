// SPDX-License-Identifier: GPL-2.0
/* The tailored monitor: counts, in the kernel, the bag-of-nodes features a
 * model kept, per detection window, with no event sent to user space.
 *
 * A process's node type is its comm, which is the basename of the last
 * executable it ran (cut to 15 bytes by the kernel at exec) or, for a
 * process that never exec'd, its parent's comm at fork. Only node types put
 * in `names` before attach are counted.
 *
 * A window opens at the first request accepted on the trigger socket after
 * a quiet time with no request. It closes when quiet_ns pass with no
 * request, and an event after that belongs to no window. In a window, for
 * each node type T:
 *   count:T  = processes of type T alive at the open + processes that
 *              became type T (fork or exec) in the window - processes that
 *              left type T by exec in the window;
 *   degree:T = spawn edges (one per fork, to the parent and to the child)
 *              and connection ends (TCP and unix stream connect and accept)
 *              of the processes of type T, counted in the window. A process
 *              that execs into another type takes the degree it gathered in
 *              the window along.
 *
 * Each program does the least its event needs. A process of no counted type
 * costs a hash lookup and nothing else. The live processes of each type are
 * counted as they come and go, with each entry of procs, so that opening a
 * window copies one count per type. The counters live in one global, which
 * a program reaches without a map lookup, and each program takes its address
 * once. Opening a window is a program of its own, which the accept program
 * tail-calls, so that an accept in an open window does not carry that
 * code. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "monitor.h"
#include "sockets.h"

#define EEXIST 17
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

char LICENSE[] SEC("license") = "GPL";

const volatile struct monitor_config cfg = {};

struct monitor_state state = {};

/* The address of state, for a program to hold in a register. Without the
 * barrier, clang loads the address again as a two-instruction constant at
 * each use after a helper call. */
static __always_inline struct monitor_state *monitor_state(void)
{
	struct monitor_state *s = &state;

	barrier_var(s);
	return s;
}

/* comm (zero-padded to 16 bytes) -> node type index, 1-based. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NODE_TYPES);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u32);
} names SEC(".maps");

/* By tgid: every live process of a counted type, and, when degrees are
 * counted, every process forked in a window, whose spawn edge an exec into
 * a counted type carries along. Entries of type 0 are not counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct proc_state);
} procs SEC(".maps");

/* Whether now falls in the open window. User space sets last_request_ns
 * before attach to a time more than the quiet time back, so that no window
 * is open until the first request. */
static __always_inline bool in_window(struct monitor_state *s, __u64 now)
{
	/* Signed: another CPU may have stored a request later than now. */
	return (__s64)(now - s->window.last_request_ns) <= (__s64)s->window.quiet_ns;
}

/* The counters of a node type. The mask bounds the index for the
 * verifier. */
static __always_inline struct type_state *type_state(struct monitor_state *s, __u64 type)
{
	return &s->types[type & (TYPE_SLOTS - 1)];
}

/* The node type of a task, from its comm, or 0 when it is not counted. task
 * is a BTF pointer, so its comm is read directly, 8 bytes at a time. */
static __always_inline __u64 type_of_task(struct task_struct *task)
{
	__u64 comm[TASK_COMM_LEN / 8];
	__u32 *type;

	comm[0] = *(__u64 *)&task->comm[0];
	comm[1] = *(__u64 *)&task->comm[8];
	type = bpf_map_lookup_elem(&names, comm);
	return type ? *type : 0;
}

/* One edge end for process p in the open window. */
static __always_inline void bump_degree(struct monitor_state *s, struct proc_state *p)
{
	__u64 epoch = s->window.epoch;

	if (p->epoch != (__u32)epoch) {
		p->epoch = epoch;
		p->degree = 0;
	}
	p->degree += 1;
	__sync_fetch_and_add(&type_state(s, p->type)->windows[epoch & 1].degree, 1);
}

/* Put a process in procs; return whether it was added, which the caller
 * then counts live. An entry that exists already was put there, and
 * counted, by the start-up snapshot or, for the snapshot, by a fork or exec
 * program: each can visit a process between the other's check and
 * update. */
static __always_inline bool add_proc(struct monitor_state *s, const __u32 *tgid,
				     const struct proc_state *fresh)
{
	long err = bpf_map_update_elem(&procs, tgid, fresh, BPF_NOEXIST);

	if (err && err != -EEXIST)
		__sync_fetch_and_add(&s->errors[MONITOR_ERROR_PROCS_FULL], 1);
	return !err;
}

/* The fork, exec, accept and opener programs come in two builds, for
 * counts only and for degrees too. `degree` is a compile-time constant, so
 * each build has only the code it needs, and the plan loads one of them. */

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child,
				   const bool degree)
{
	__u32 parent_tgid = parent->tgid, tgid = child->tgid;
	struct monitor_state *s = monitor_state();
	struct node_features *f = NULL;
	struct proc_state fresh = {};
	struct type_state *t;
	struct proc_state *p;
	__u64 epoch;

	if (tgid == parent_tgid)
		return 0;
	fresh.type = type_of_task(child);
	/* Counting degrees, every fork in a window matters: the child, even of
	 * no counted type, has a spawn edge it may carry into one. */
	if (!degree && !fresh.type)
		return 0;
	t = type_state(s, fresh.type);

	if (in_window(s, bpf_ktime_get_boot_ns())) {
		epoch = s->window.epoch;
		f = &t->windows[epoch & 1];
		__sync_fetch_and_add(&f->count, 1);
		/* The entry's epoch and degree serve the degree build only. */
		if (degree) {
			fresh.epoch = epoch;
			fresh.degree = 1;
			__sync_fetch_and_add(&f->degree, 1);
		}
	}
	/* A child of no counted type is kept only for its spawn edge. */
	if (degree && !fresh.type && !f)
		return 0;
	if (add_proc(s, &tgid, &fresh))
		__sync_fetch_and_add(&t->live, 1);
	if (degree && f) {
		p = bpf_map_lookup_elem(&procs, &parent_tgid);
		if (p)
			bump_degree(s, p);
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(mon_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child, false);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(mon_fork_deg, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child, true);
}

static __always_inline int on_exec(struct task_struct *task, const bool degree)
{
	__u32 tgid = task->tgid;
	struct monitor_state *s = monitor_state();
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	/* The kernel has set comm to the new executable's basename. */
	__u64 old = p ? p->type : 0, type = type_of_task(task);
	struct type_state *from = type_state(s, old), *to = type_state(s, type);
	struct proc_state fresh = {};
	struct node_features *f_from, *f_to;
	__s64 carried = 0;
	__u64 epoch;

	if (type == old)
		return 0;
	if (p) {
		p->type = type;
	} else {
		fresh.type = type;
		if (!add_proc(s, &tgid, &fresh))
			return 0;
	}
	/* A process that was in no entry leaves slot 0, which nothing reads. */
	__sync_fetch_and_add(&from->live, -1);
	__sync_fetch_and_add(&to->live, 1);

	if (!in_window(s, bpf_ktime_get_boot_ns()))
		return 0;
	epoch = s->window.epoch;
	if (degree && p && p->epoch == (__u32)epoch)
		carried = p->degree;
	f_from = &from->windows[epoch & 1];
	f_to = &to->windows[epoch & 1];
	__sync_fetch_and_add(&f_from->count, -1);
	__sync_fetch_and_add(&f_to->count, 1);
	/* Unconditional in the degree build: a branch on carried makes clang
	 * duplicate the rest of the program. */
	if (degree) {
		__sync_fetch_and_add(&f_from->degree, -carried);
		__sync_fetch_and_add(&f_to->degree, carried);
	}
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(mon_exec, struct task_struct *task)
{
	return on_exec(task, false);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(mon_exec_deg, struct task_struct *task)
{
	return on_exec(task, true);
}

/* A process that exits leaves procs and the live count of its type. The
 * count of its type in the open window does not change, because a node
 * stays in the graph when its process exits. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(mon_exit, struct task_struct *task, bool group_dead)
{
	__u32 tgid = task->tgid;
	struct proc_state *p;
	__u64 type;

	if (!group_dead)
		return 0;
	p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p)
		return 0;
	/* Read before the delete, which frees the entry for reuse. */
	type = p->type;
	if (!bpf_map_delete_elem(&procs, &tgid))
		__sync_fetch_and_add(&type_state(monitor_state(), type)->live, -1);
	return 0;
}

/* The socket of the file that accept returned as fd, or NULL. Reads
 * through a NULL BTF pointer give 0, so no step checks for one. fd needs no
 * bound check either: accept put it in the task's file table, and the
 * kernel replaces a file table only with a larger one (copy_fdtable). */
static __always_inline struct sock *accepted_sock(struct task_struct *task, __u64 fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return kernel_cast(kernel_cast(file, struct file)->private_data, struct socket)->sk;
}

/* Whether an accepted socket is the trigger: a TCP socket on its local
 * port, or a unix stream socket with the name it carries from its
 * listener. sk may be NULL. */
static __always_inline bool is_trigger(struct sock *sk)
{
	const volatile __u64 *want = (const volatile __u64 *)cfg.trigger_path;
	__u32 kind = cfg.trigger_kind, len, words, i;
	__u64 name[UNIX_PATH_LEN / 8 + 1];
	struct unix_address *addr;

	/* A unix socket's local port is 0, and the trigger's is not. */
	if (kind == TRIGGER_TCP)
		return sk->__sk_common.skc_num == cfg.trigger_port &&
		       sk->sk_protocol == IPPROTO_TCP;
	/* cfg is volatile: its fields are read once, into locals. */
	len = cfg.trigger_path_len;
	if (kind != TRIGGER_UNIX || sk->__sk_common.skc_family != AF_UNIX ||
	    sk->sk_type != SOCK_STREAM || len > UNIX_PATH_LEN)
		return false;

	/* Most other unix sockets already differ in the name's length.
	 * addr->len counts sun_family too. */
	addr = kernel_cast(sk, struct unix_sock)->addr;
	if (!addr || addr->len != len + SUN_PATH_OFFSET)
		return false;
	/* Eight bytes at a time. cfg.trigger_path is zero-padded, so the
	 * last word read is zeroed first, and only the name's own bytes are
	 * read: the kernel's copy of it ends there. */
	name[len / 8] = 0;
	bpf_probe_read_kernel(name, len,
			      (void *)addr + bpf_core_field_offset(struct unix_address, name) +
				      SUN_PATH_OFFSET);
	words = (len + 7) / 8;
#pragma clang loop unroll(disable)
	for (i = 0; i < words && i < UNIX_PATH_LEN / 8 + 1; i++) {
		if (name[i] != want[i])
			return false;
	}
	return true;
}

/* Count a request at now, in the open window, and move the window's last
 * request to now unless another CPU has stored a later one. */
static __always_inline void count_request(struct window_state *w, __u64 now)
{
	__sync_fetch_and_add(&w->requests, 1);
	if ((__s64)(now - w->last_request_ns) > 0)
		w->last_request_ns = now;
}

/* One edge end for the current process, if it is of a counted type, in the
 * window open at now. */
static __always_inline void bump_current(struct monitor_state *s, __u64 now)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);

	if (p && p->type && in_window(s, now))
		bump_degree(s, p);
}

/* The program that opens a window, which an accept program tail-calls at a
 * request outside the open window. User space puts the plan's build in
 * slot 0 before attach. A window opens rarely, so the accept programs do
 * not carry its code. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} openers SEC(".maps");

static __always_inline int on_accept(struct trace_event_raw_sys_exit *ctx, const bool degree)
{
	struct socket_info info = {};
	struct monitor_state *s;
	struct task_struct *task;
	long fd = ctx->ret;
	bool trigger;
	__u64 now;

	if (fd < 0)
		return 0;
	task = bpf_get_current_task_btf();
	/* Counting degrees, any stream socket the process accepts is an edge
	 * end. Otherwise only the trigger matters. */
	if (degree) {
		if (!socket_of_fd(task, fd, &info))
			return 0;
		trigger = is_trigger(info.sk);
	} else {
		trigger = is_trigger(accepted_sock(task, fd));
		if (!trigger)
			return 0;
	}
	/* The clock is read only for an accept that needs it. */
	now = bpf_ktime_get_boot_ns();
	s = monitor_state();

	if (trigger) {
		if (!in_window(s, now)) {
			/* Returns only when slot 0 is empty. */
			bpf_tail_call(ctx, &openers, 0);
			__sync_fetch_and_add(&s->errors[MONITOR_ERROR_NO_OPENER], 1);
			return 0;
		}
		count_request(&s->window, now);
	}
	if (degree)
		bump_current(s, now);
	return 0;
}

/* Each accept program is attached at sys_exit_accept4 and sys_exit_accept. */
SEC("tracepoint/syscalls/sys_exit_accept4")
int mon_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx, false);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int mon_accept_deg(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx, true);
}

/* Count the request of the accept program that tail-called, and open the
 * next window unless another CPU has opened it since. The accept's
 * connection end, when degrees are counted, goes to that window. */
static __always_inline int open_window(const bool degree)
{
	struct monitor_state *s = monitor_state();
	struct window_state *w = &s->window;
	__u64 now = bpf_ktime_get_boot_ns();
	struct type_state *t;
	__u64 epoch, type, i;

	/* The request is counted only once the new window's first request is
	 * fixed, so that a request that raced the opening does not fall into
	 * the window before. The flag is taken with an exchange, which is
	 * shorter than a compare-and-swap: storing 1 over 1 changes
	 * nothing. */
	if (__sync_lock_test_and_set(&w->opening, 1)) {
		/* Another CPU is opening the window. Opening takes a loop over
		 * the node types, so a short wait lets this request and its
		 * connection end go to the new window. */
		for (i = OPEN_WAIT_READS; i && READ_ONCE(w->opening); i--)
			;
		if (READ_ONCE(w->opening))
			__sync_fetch_and_add(&s->errors[MONITOR_ERROR_OPEN_WAIT], 1);
	} else if (in_window(s, now)) {
		/* Another CPU opened it since the accept program looked. */
		w->opening = 0;
	} else {
		/* The new window's counts start from the live processes. The
		 * other programs see the window once last_request_ns moves,
		 * which comes after the epoch. A loop over all the slots of
		 * counted types costs no more than a few hundred
		 * instructions run, and needs no bound from the config. */
		epoch = w->epoch + 1;
#pragma clang loop unroll(disable)
		for (type = 1; type <= MAX_NODE_TYPES; type++) {
			t = &s->types[type];
			t->windows[epoch & 1].count = t->live;
			t->windows[epoch & 1].degree = 0;
		}
		w->meta[(epoch - 1) & 1].last_request_ns = w->last_request_ns;
		w->meta[epoch & 1].open_ns = now;
		/* Until the window is published, requests are counted only by
		 * CPUs that wait for the flag, after this read. */
		w->meta[epoch & 1].first_request = READ_ONCE(w->requests);
		__sync_fetch_and_add(&w->requests, 1);
		w->epoch = epoch;
		/* NOTE: the barriers keep clang from reordering these stores,
		 * and x86 keeps stores in order, so other CPUs see them in
		 * order. Other architectures need release stores here. */
		barrier();
		w->last_request_ns = now;
		barrier();
		w->opening = 0;
		goto out;
	}
	count_request(w, now);
out:
	if (degree)
		bump_current(s, now);
	return 0;
}

/* Reached by tail call only, so the section names no tracepoint. */
SEC("tracepoint")
int mon_open(struct trace_event_raw_sys_exit *ctx)
{
	return open_window(false);
}

SEC("tracepoint")
int mon_open_deg(struct trace_event_raw_sys_exit *ctx)
{
	return open_window(true);
}

/* A connect that succeeded or is in progress, by a process of a counted
 * type. The fd is the syscall's first argument, still in the task's saved
 * user registers at syscall exit. */
SEC("tracepoint/syscalls/sys_exit_connect")
int mon_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct monitor_state *s = monitor_state();
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	struct socket_info info = {};
	struct task_struct *task;
	__u64 fd;

	if (!p || !p->type || (ctx->ret != 0 && ctx->ret != -EINPROGRESS))
		return 0;
	if (!in_window(s, bpf_ktime_get_boot_ns()))
		return 0;
	task = bpf_get_current_task_btf();
	fd = PT_REGS_PARM1_SYSCALL((struct pt_regs *)bpf_task_pt_regs(task));
	if (socket_of_fd(task, fd, &info))
		bump_degree(s, p);
	return 0;
}

/* Whether the last thread of task's group has begun to exit. The exit
 * event with group_dead set comes after the count drops to 0. */
static __always_inline bool group_dead(struct task_struct *task)
{
	return task->signal->live.counter == 0;
}

/* Fill procs with the processes of counted types alive at start-up, and
 * write the tgid of each process visited. */
SEC("iter/task")
int mon_snapshot(struct bpf_iter__task *ctx)
{
	struct monitor_state *s = monitor_state();
	struct task_struct *task = ctx->task;
	struct proc_state fresh = {};
	__u32 tgid;

	if (!task || task->pid != task->tgid)
		return 0;
	tgid = task->tgid;
	bpf_seq_write(ctx->meta->seq, &tgid, sizeof(tgid));
	fresh.type = type_of_task(task);
	if (!fresh.type || group_dead(task) || !add_proc(s, &tgid, &fresh))
		return 0;
	__sync_fetch_and_add(&type_state(s, fresh.type)->live, 1);
	/* If the group died since the check above, its exit event may have
	 * come before the insert, and nothing else would remove the entry.
	 * When the exit event comes after, only one of the two deletes finds
	 * the entry. */
	if (group_dead(task) && !bpf_map_delete_elem(&procs, &tgid))
		__sync_fetch_and_add(&type_state(s, fresh.type)->live, -1);
	return 0;
}
