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
 *              the window along. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "monitor.h"
#include "sockets.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct monitor_config cfg = {};

/* comm (zero-padded to 16 bytes) -> node type index, 1-based. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NODE_TYPES);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u32);
} names SEC(".maps");

/* Every live process: its node type and its degree in the current window. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct proc_state);
} procs SEC(".maps");

/* Live processes per node type. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_NODE_TYPES + 1);
	__type(key, __u32);
	__type(value, __s64);
} alive SEC(".maps");

/* Two windows of features, alternating by epoch parity, so the one just
 * closed stays readable while the next one opens. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * (MAX_NODE_TYPES + 1));
	__type(key, __u32);
	__type(value, struct node_features);
} windows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct window_state);
} state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MONITOR_ERROR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} errors SEC(".maps");

/* The fd passed to connect(), by thread, for processes of a counted type. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} connect_fds SEC(".maps");

static __always_inline void count_error(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&errors, &index);

	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline struct window_state *current_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&state, &zero);
}

/* Whether now falls in the open window. */
static __always_inline bool in_window(struct window_state *s, __u64 now)
{
	return s->epoch && now - s->current.last_request_ns <= cfg.quiet_ns;
}

/* Add to the live processes of a node type. The subprograms below are
 * shared by every caller, which keeps each program small. */
static __noinline void add_alive(__u32 type, __s64 delta)
{
	__s64 *value;

	if (!type)
		return;
	value = bpf_map_lookup_elem(&alive, &type);
	if (value)
		__sync_fetch_and_add(value, delta);
}

/* Add to the open window's count and degree of a node type. */
static __noinline void add_features(struct window_state *s, __u32 type, __s64 count,
				    __s64 degree)
{
	struct node_features *f;
	__u32 index;

	if (!s || type == 0 || type > MAX_NODE_TYPES)
		return;
	index = (s->epoch & 1) * (MAX_NODE_TYPES + 1) + type;
	f = bpf_map_lookup_elem(&windows, &index);
	if (!f)
		return;
	if (count)
		__sync_fetch_and_add(&f->count, count);
	if (degree)
		__sync_fetch_and_add(&f->degree, degree);
}

/* The node type of a task, from its comm; 0 when it is not counted. */
static __always_inline __u32 type_of_task(struct task_struct *task)
{
	char comm[TASK_COMM_LEN];
	__u32 *type;

	bpf_probe_read_kernel(comm, sizeof(comm), &task->comm);
	type = bpf_map_lookup_elem(&names, comm);
	return type ? *type : 0;
}

/* One edge end for process p in the open window. */
static __always_inline void bump_degree(struct window_state *s, struct proc_state *p)
{
	if (p->epoch != s->epoch) {
		p->epoch = s->epoch;
		p->degree = 0;
	}
	p->degree += 1;
	add_features(s, p->type, 0, 1);
}

/* The state of a process, created from its comm when the monitor has not
 * seen it yet (a process the start-up snapshot missed). */
static __always_inline struct proc_state *lookup_proc(__u32 tgid, struct task_struct *task)
{
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	struct proc_state fresh = {};

	if (p)
		return p;
	fresh.type = type_of_task(task);
	if (bpf_map_update_elem(&procs, &tgid, &fresh, BPF_NOEXIST)) {
		p = bpf_map_lookup_elem(&procs, &tgid);
		if (!p)
			count_error(MONITOR_ERROR_PROCS_FULL);
		return p;
	}
	add_alive(fresh.type, 1);
	return bpf_map_lookup_elem(&procs, &tgid);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(mon_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid;
	__u32 child_tgid = child->tgid;
	struct proc_state fresh = {};
	struct window_state *s;
	struct proc_state *p;
	bool open;

	if (parent_tgid == child_tgid)
		return 0;
	s = current_state();
	if (!s)
		return 0;
	open = in_window(s, bpf_ktime_get_boot_ns());

	fresh.type = type_of_task(child);
	if (open) {
		fresh.epoch = s->epoch;
		fresh.degree = 1;
		add_features(s, fresh.type, 1, cfg.track_degree);
	}
	if (bpf_map_update_elem(&procs, &child_tgid, &fresh, BPF_ANY))
		count_error(MONITOR_ERROR_PROCS_FULL);
	add_alive(fresh.type, 1);

	if (open && cfg.track_degree) {
		p = lookup_proc(parent_tgid, parent);
		if (p)
			bump_degree(s, p);
	}
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(mon_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = task->tgid;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	struct window_state *s = current_state();
	struct proc_state fresh = {};
	__s64 carried = 0;
	__u32 type;

	if (!s)
		return 0;
	/* The kernel has set comm to the new executable's basename. */
	type = type_of_task(task);
	if (!p) {
		fresh.type = type;
		if (bpf_map_update_elem(&procs, &tgid, &fresh, BPF_ANY))
			count_error(MONITOR_ERROR_PROCS_FULL);
		add_alive(type, 1);
		return 0;
	}
	if (p->type == type)
		return 0;

	add_alive(p->type, -1);
	add_alive(type, 1);
	if (in_window(s, bpf_ktime_get_boot_ns())) {
		if (cfg.track_degree && p->epoch == s->epoch)
			carried = p->degree;
		add_features(s, p->type, -1, -carried);
		add_features(s, type, 1, carried);
	}
	p->type = type;
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(mon_exit, struct task_struct *task, bool group_dead)
{
	__u32 tgid = task->tgid;
	struct proc_state *p;

	if (!group_dead)
		return 0;
	p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p)
		return 0;
	add_alive(p->type, -1);
	bpf_map_delete_elem(&procs, &tgid);
	return 0;
}

/* One connection end of the current process, when its type is counted. The
 * caller has checked that fd is a TCP or unix stream socket. */
static __always_inline void connection_end(struct window_state *s)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p;

	if (!in_window(s, bpf_ktime_get_boot_ns()))
		return;
	p = bpf_map_lookup_elem(&procs, &tgid);
	if (p && p->type)
		bump_degree(s, p);
}

/* Whether an accepted socket is the trigger. */
static __always_inline bool is_trigger(struct socket_info *info)
{
	char name[UNIX_PATH_LEN] = {};
	struct sock *sk = info->sk;
	__u16 name_len = 0, lport = 0;
	__u8 family;

	/* cfg is read-only, so the verifier drops the branch not taken. */
	if (cfg.trigger_kind == TRIGGER_UNIX) {
		if (info->family != AF_UNIX)
			return false;
		family = FAMILY_UNIX;
		name_len = read_unix_path(name, sk);
	} else {
		if (info->family == AF_UNIX)
			return false;
		family = FAMILY_INET;
		lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	}
	return matches_trigger(family, lport, name, name_len, cfg.trigger_kind, cfg.trigger_port,
			       cfg.trigger_path, cfg.trigger_path_len);
}

/* Count a request, opening a window when the last request is older than the
 * quiet time. */
static __always_inline void request(struct window_state *s)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct window_meta previous;
	__u32 base, type;
	__u64 epoch;

	if (!s)
		return;
	if (!in_window(s, now)) {
		/* Open the next window: its counts start from the live processes.
		 * Two CPUs may both get here; both write the same counts and the
		 * compare-and-swap lets one of them advance the epoch. */
		epoch = s->epoch;
		base = ((epoch + 1) & 1) * (MAX_NODE_TYPES + 1);
#pragma clang loop unroll(disable)
		for (type = 1; type <= MAX_NODE_TYPES; type++) {
			__u32 index = base + type;
			struct node_features *f;
			__s64 *live;

			if (type > cfg.node_types)
				break;
			f = bpf_map_lookup_elem(&windows, &index);
			live = bpf_map_lookup_elem(&alive, &type);
			if (!f || !live)
				break;
			f->count = *live;
			f->degree = 0;
		}
		previous = s->current;
		if (__sync_val_compare_and_swap(&s->epoch, epoch, epoch + 1) == epoch) {
			s->previous = previous;
			s->current.open_ns = now;
			s->current.requests = 0;
		}
	}
	s->current.last_request_ns = now;
	__sync_fetch_and_add(&s->current.requests, 1);
	__sync_fetch_and_add(&s->total_requests, 1);
}

static __always_inline int handle_accept(long ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct window_state *s = current_state();
	struct socket_info info = {};

	if (ret < 0 || !s || !socket_of_fd(task, (__u32)ret, &info))
		return 0;
	if (is_trigger(&info))
		request(s);
	if (cfg.track_degree)
		connection_end(s);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int mon_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int mon_accept(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int mon_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	__u32 fd = (__u32)ctx->args[0];
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);

	if (!p || !p->type)
		return 0;
	if (bpf_map_update_elem(&connect_fds, &tid, &fd, BPF_ANY))
		count_error(MONITOR_ERROR_CONNECT_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int mon_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 *fd = bpf_map_lookup_elem(&connect_fds, &tid);
	struct window_state *s = current_state();
	struct socket_info info = {};
	long ret = ctx->ret;
	__u32 saved;

	if (!fd)
		return 0;
	saved = *fd;
	bpf_map_delete_elem(&connect_fds, &tid);
	if ((ret == 0 || ret == -EINPROGRESS) && s && socket_of_fd(task, saved, &info))
		connection_end(s);
	return 0;
}

/* Fill procs and alive from the processes alive at start-up. */
SEC("iter/task")
int mon_snapshot(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct proc_state fresh = {};
	__u32 tgid;

	if (!task || task->pid != task->tgid)
		return 0;
	tgid = task->tgid;
	fresh.type = type_of_task(task);
	if (bpf_map_update_elem(&procs, &tgid, &fresh, BPF_NOEXIST))
		return 0;
	add_alive(fresh.type, 1);
	bpf_seq_write(ctx->meta->seq, &tgid, sizeof(tgid));
	return 0;
}
