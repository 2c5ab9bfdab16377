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
 * a program reaches without a map lookup. Opening a window is a program of its
 * own, which the accept program tail-calls, so that an accept in an open
 * window does not carry that code. */
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

/* Whether now falls in the open window. Before the first window,
 * last_request_ns is 0, which makes this false once the host has been up
 * longer than the quiet time. On a host booted more recently, the counts go
 * to the window of epoch 0, which user space never reads and the second
 * window's opening clears, and the first request opens window 1. */
static __always_inline bool in_window(__u64 now)
{
	/* Signed: another CPU may have stored a request later than now. */
	return (__s64)(now - state.window.last_request_ns) <= (__s64)state.window.quiet_ns;
}

/* The open window's features, by node type. */
static __always_inline struct node_features *open_row(void)
{
	return state.features[state.window.epoch & 1];
}

/* A node type's slot in a row. The mask bounds it for the verifier. */
static __always_inline __u64 slot_of(__u64 type)
{
	return type & (FEATURE_SLOTS - 1);
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
static __always_inline void bump_degree(struct proc_state *p)
{
	__u64 epoch = state.window.epoch;

	if (p->epoch != epoch) {
		p->epoch = epoch;
		p->degree = 0;
	}
	p->degree += 1;
	__sync_fetch_and_add(&open_row()[slot_of(p->type)].degree, 1);
}

/* Put a process in procs and count it live; return whether it was added.
 * An entry that exists already was put there, and counted, by the start-up
 * snapshot or, for the snapshot, by a fork or exec program: each can visit
 * a process between the other's check and update. */
static __always_inline bool add_proc(const __u32 *tgid, struct proc_state *fresh)
{
	long err = bpf_map_update_elem(&procs, tgid, fresh, BPF_NOEXIST);

	if (!err) {
		__sync_fetch_and_add(&state.live[slot_of(fresh->type)], 1);
		return true;
	}
	if (err != -EEXIST)
		__sync_fetch_and_add(&state.errors[MONITOR_ERROR_PROCS_FULL], 1);
	return false;
}

/* The fork, exec, accept and opener programs come in two builds, for
 * counts only and for degrees too. `degree` is a compile-time constant, so
 * each build has only the code it needs, and the plan loads one of them. */

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child,
				   const bool degree)
{
	__u32 parent_tgid = parent->tgid, tgid = child->tgid;
	struct proc_state fresh = {};
	struct proc_state *p = NULL;
	struct node_features *f;
	bool open;

	if (tgid == parent_tgid)
		return 0;
	fresh.type = type_of_task(child);
	/* Counting degrees, every fork in a window matters: the child, even of
	 * no counted type, has a spawn edge it may carry into one. */
	if (!degree && !fresh.type)
		return 0;
	open = in_window(bpf_ktime_get_boot_ns());
	if (degree)
		p = bpf_map_lookup_elem(&procs, &parent_tgid);

	if (open) {
		/* The entry's epoch and degree serve the degree build only. */
		if (degree) {
			fresh.epoch = state.window.epoch;
			fresh.degree = 1;
		}
		f = &open_row()[slot_of(fresh.type)];
		__sync_fetch_and_add(&f->count, 1);
		if (degree)
			__sync_fetch_and_add(&f->degree, 1);
	}
	if (fresh.type || (degree && open))
		add_proc(&tgid, &fresh);
	if (degree && open && p)
		bump_degree(p);
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
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	__u64 type, old = slot_of(p ? p->type : 0);
	__s64 carried = 0;
	struct node_features *row;

	/* The kernel has set comm to the new executable's basename. Both
	 * types are slots already, so each is masked once. */
	type = slot_of(type_of_task(task));
	if (type == old)
		return 0;

	if (in_window(bpf_ktime_get_boot_ns())) {
		if (degree && p && p->epoch == state.window.epoch)
			carried = p->degree;
		row = open_row();
		__sync_fetch_and_add(&row[old].count, -1);
		__sync_fetch_and_add(&row[type].count, 1);
		/* Unconditional in the degree build: a branch on carried makes
		 * clang duplicate the rest of the program. */
		if (degree) {
			__sync_fetch_and_add(&row[old].degree, -carried);
			__sync_fetch_and_add(&row[type].degree, carried);
		}
	}
	if (p) {
		__sync_fetch_and_add(&state.live[old], -1);
		__sync_fetch_and_add(&state.live[type], 1);
		p->type = type;
	} else {
		struct proc_state fresh = { .type = type };

		add_proc(&tgid, &fresh);
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
		__sync_fetch_and_add(&state.live[slot_of(type)], -1);
	return 0;
}

/* Whether an accepted socket is the trigger: its local port, or the name
 * it carries from its listener. */
static __always_inline bool is_trigger(struct socket_info *info)
{
	const volatile __u64 *want = (const volatile __u64 *)cfg.trigger_path;
	__u32 kind = cfg.trigger_kind, len, words, i;
	__u64 name[UNIX_PATH_LEN / 8 + 1];
	struct unix_address *addr;

	if (kind == TRIGGER_TCP)
		return info->family != AF_UNIX && info->sk->__sk_common.skc_num == cfg.trigger_port;
	/* cfg is volatile: its fields are read once, into locals. */
	len = cfg.trigger_path_len;
	if (kind != TRIGGER_UNIX || info->family != AF_UNIX || len > UNIX_PATH_LEN)
		return false;

	/* Most other unix sockets already differ in the name's length.
	 * addr->len counts sun_family too. */
	addr = kernel_cast(info->sk, struct unix_sock)->addr;
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

/* Whether a request at now falls in the open window. Epoch 0 is no window,
 * even on a host up for less than the quiet time, where in_window() is true
 * before any request. */
static __always_inline bool in_request_window(__u64 now)
{
	return in_window(now) && state.window.epoch;
}

/* Move the window's last request to now, unless another CPU has stored a
 * later one. */
static __always_inline void store_last_request(__u64 now)
{
	if ((__s64)(now - state.window.last_request_ns) > 0)
		state.window.last_request_ns = now;
}

/* One edge end for the current process, if it is of a counted type, in the
 * window open at now. */
static __always_inline void bump_current(__u64 now)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);

	if (p && p->type && in_window(now))
		bump_degree(p);
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
	bool trigger;
	__u64 now;

	if (ctx->ret < 0 || !socket_of_fd(bpf_get_current_task_btf(), ctx->ret, &info))
		return 0;
	/* The clock is read only for an accept that needs it. */
	trigger = is_trigger(&info);
	if (!trigger && !degree)
		return 0;
	now = bpf_ktime_get_boot_ns();

	if (trigger) {
		if (!in_request_window(now)) {
			/* Returns only when slot 0 is empty. */
			bpf_tail_call(ctx, &openers, 0);
			__sync_fetch_and_add(&state.errors[MONITOR_ERROR_NO_OPENER], 1);
			return 0;
		}
		__sync_fetch_and_add(&state.window.requests, 1);
		store_last_request(now);
	}
	if (degree)
		bump_current(now);
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
	struct window_state *w = &state.window;
	__u64 now = bpf_ktime_get_boot_ns();
	struct node_features *row;
	__u64 type;
	int i;

	/* Each branch counts the request only once the new window's first
	 * request is fixed, so that a request that raced the opening does
	 * not fall into the window before. */
	if (__sync_val_compare_and_swap(&w->opening, 0, 1) != 0) {
		/* Another CPU is opening the window. Opening takes a loop over
		 * the node types, so a short wait lets this request and its
		 * connection end go to the new window. */
		for (i = 0; i < OPEN_WAIT_READS && READ_ONCE(w->opening); i++)
			;
		if (READ_ONCE(w->opening))
			__sync_fetch_and_add(&state.errors[MONITOR_ERROR_OPEN_WAIT], 1);
		__sync_fetch_and_add(&w->requests, 1);
		store_last_request(now);
	} else if (in_request_window(now)) {
		/* Another CPU opened it since the accept program looked. */
		__sync_fetch_and_add(&w->requests, 1);
		store_last_request(now);
		w->opening = 0;
	} else {
		/* The new window's counts start from the live processes. The
		 * other programs see the window once last_request_ns moves,
		 * which comes after the epoch. */
		row = state.features[(w->epoch + 1) & 1];
#pragma clang loop unroll(disable)
		for (type = 1; type <= cfg.node_types && type <= MAX_NODE_TYPES; type++) {
			row[type].count = state.live[type] + state.seeded[type];
			row[type].degree = 0;
		}
		w->previous.open_ns = w->current.open_ns;
		w->previous.first_request = w->current.first_request;
		w->previous.last_request_ns = w->last_request_ns;
		w->current.open_ns = now;
		/* Until the window is published, requests are counted only by
		 * CPUs that wait for the flag, after this read. */
		w->current.first_request = READ_ONCE(w->requests);
		__sync_fetch_and_add(&w->requests, 1);
		w->epoch += 1;
		/* NOTE: the barriers keep clang from reordering these stores,
		 * and x86 keeps stores in order, so other CPUs see them in
		 * order. Other architectures need release stores here. */
		barrier();
		w->last_request_ns = now;
		barrier();
		w->opening = 0;
	}
	if (degree)
		bump_current(now);
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
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	struct socket_info info = {};
	struct task_struct *task;
	__u64 fd;

	if (!p || !p->type || (ctx->ret != 0 && ctx->ret != -EINPROGRESS))
		return 0;
	if (!in_window(bpf_ktime_get_boot_ns()))
		return 0;
	task = bpf_get_current_task_btf();
	fd = PT_REGS_PARM1_SYSCALL((struct pt_regs *)bpf_task_pt_regs(task));
	if (socket_of_fd(task, fd, &info))
		bump_degree(p);
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
	struct task_struct *task = ctx->task;
	struct proc_state fresh = {};
	__u32 tgid;

	if (!task || task->pid != task->tgid)
		return 0;
	tgid = task->tgid;
	bpf_seq_write(ctx->meta->seq, &tgid, sizeof(tgid));
	fresh.type = type_of_task(task);
	if (!fresh.type || group_dead(task) || !add_proc(&tgid, &fresh))
		return 0;
	/* If the group died since the check above, its exit event may have
	 * come before the insert, and nothing else would remove the entry.
	 * When the exit event comes after, only one of the two deletes finds
	 * the entry. */
	if (group_dead(task) && !bpf_map_delete_elem(&procs, &tgid))
		__sync_fetch_and_add(&state.live[slot_of(fresh.type)], -1);
	return 0;
}
