// SPDX-License-Identifier: GPL-2.0
/* The full recorder: every process fork, exec and exit, every TCP and unix
 * stream connect and accept, into one ring buffer of fixed-size records.
 *
 * Only tracepoints, BTF raw tracepoints and a task iterator are used,
 * because kernels built without kprobes or with fentry refused still offer
 * those. Socket details come from the current task's file table at the exit
 * of connect and accept, where the calling process is current (the
 * inet_sock_set_state tracepoint runs in softirq for passive opens). */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "sockets.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Thread-group ids of the workload driver's process tree. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} driver_pids SEC(".maps");

#define SCRATCH_LEN (PATH_MAX_LEN + EVENT_STR_LEN)

struct scratch {
	char buf[SCRATCH_LEN];
	struct event snapshot;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1;
}

static __always_inline struct event *reserve(__u8 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(COUNTER_RESERVE_FAILED);
		return NULL;
	}
	/* Ring buffer memory is not zeroed; clear everything before str,
	 * whose valid length str_len gives. */
	__builtin_memset(e, 0, offsetof(struct event, str));
	e->kind = kind;
	e->ts_ns = bpf_ktime_get_boot_ns();
	return e;
}

static __always_inline void submit(struct event *e)
{
	/* User space polls on a timer, so the kernel need not wake it. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void fill_task(struct event *e, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);

	e->pid = tgid;
	e->tid = BPF_CORE_READ(task, pid);
	e->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_core_read_str(&e->comm, sizeof(e->comm), &task->comm);
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		e->flags |= FLAG_KTHREAD;
	if (bpf_map_lookup_elem(&driver_pids, &tgid))
		e->flags |= FLAG_DRIVER;
}

static __always_inline void fill_parent(struct event *e, struct task_struct *parent)
{
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	struct event *e;
	__u8 one = 1;

	/* A new thread shares its parent's thread group: not a process. */
	if (parent_tgid == child_tgid)
		return 0;

	/* The recorder forks only the command it runs, the root of the
	 * driver's tree; descendants of a driver process are drivers too. */
	if (parent_tgid == cfg.self_tgid || bpf_map_lookup_elem(&driver_pids, &parent_tgid)) {
		if (bpf_map_update_elem(&driver_pids, &child_tgid, &one, BPF_ANY))
			count(COUNTER_MAP_FULL);
	}

	e = reserve(EVENT_FORK);
	if (!e)
		return 0;
	fill_task(e, child);
	fill_parent(e, parent);
	submit(e);
	return 0;
}

/* Copy a kernel string into e->str, keeping its tail when it is too long,
 * because the basename is what the system graph labels nodes with. */
static __always_inline void read_tail(struct event *e, const char *src)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	long len;
	__u32 off = 0;

	if (!s)
		return;
	len = bpf_probe_read_kernel_str(s->buf, PATH_MAX_LEN, src);
	if (len <= 0) {
		count(COUNTER_SHORT_READ);
		return;
	}
	/* len counts the terminating NUL. */
	if (len > EVENT_STR_LEN) {
		off = (len - EVENT_STR_LEN) & (PATH_MAX_LEN - 1);
		e->flags |= FLAG_TRUNCATED;
		count(COUNTER_TRUNCATED);
		e->str_len = EVENT_STR_LEN - 1;
	} else {
		e->str_len = len - 1;
	}
	bpf_probe_read_kernel(e->str, EVENT_STR_LEN, s->buf + off);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct event *e;

	if (BPF_CORE_READ(task, tgid) == cfg.self_tgid)
		return 0;
	e = reserve(EVENT_EXEC);
	if (!e)
		return 0;
	fill_task(e, task);
	read_tail(e, BPF_CORE_READ(bprm, filename));
	submit(e);
	return 0;
}

/* group_dead is true for the last thread of the group to exit: the
 * process exit. The argument exists since Linux 6.15. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task, bool group_dead)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct event *e;

	if (!group_dead || tgid == cfg.self_tgid)
		return 0;
	e = reserve(EVENT_EXIT);
	if (e) {
		fill_task(e, task);
		e->exit_code = BPF_CORE_READ(task, exit_code);
		submit(e);
	}
	bpf_map_delete_elem(&driver_pids, &tgid);
	return 0;
}

static __always_inline void emit_socket(__u8 kind, __u64 fd, bool in_progress)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct socket_info info = {};
	struct event *e;
	__u32 path_len;

	if (!socket_of_fd(task, fd, &info)) {
		if (info.read_failed)
			count(COUNTER_SHORT_READ);
		return;
	}

	e = reserve(kind);
	if (!e)
		return;
	fill_task(e, task);
	if (in_progress)
		e->flags |= FLAG_INPROGRESS;
	fill_socket(e, &info, kind == EVENT_CONNECT, cfg.sock_key);

	if (kind == EVENT_ACCEPT && cfg.trigger_kind != TRIGGER_NONE) {
		path_len = cfg.trigger_path_len;
		if (matches_trigger(e->family, e->lport, e->str, e->str_len, cfg.trigger_kind,
				    cfg.trigger_port, cfg.trigger_path, path_len)) {
			e->flags |= FLAG_REQUEST;
			count(COUNTER_REQUESTS);
		}
	}
	submit(e);
}

/* The fd is connect's first argument, which the task's saved user
 * registers still contain at syscall exit, so no entry program is needed. */
SEC("tracepoint/syscalls/sys_exit_connect")
int handle_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 fd;

	if ((bpf_get_current_pid_tgid() >> 32) == cfg.self_tgid)
		return 0;
	/* A non-blocking TCP connect returns EINPROGRESS with its 4-tuple
	 * already bound. */
	if (ret != 0 && ret != -EINPROGRESS)
		return 0;
	fd = PT_REGS_PARM1_SYSCALL((struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()));
	emit_socket(EVENT_CONNECT, fd, ret != 0);
	return 0;
}

static __always_inline int handle_accept(long ret)
{
	if (ret < 0 || (bpf_get_current_pid_tgid() >> 32) == cfg.self_tgid)
		return 0;
	emit_socket(EVENT_ACCEPT, (__u32)ret, false);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(ctx->ret);
}

/* Processes alive when the recording starts, with their parents, read
 * through a task iterator so that start times have the same nanosecond
 * resolution as the events' (procfs gives clock ticks only). */
SEC("iter/task")
int snapshot_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	__u32 zero = 0;
	struct scratch *s;
	struct event *e;

	if (!task || task->pid != task->tgid || task->tgid == cfg.self_tgid)
		return 0;
	s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return 0;
	e = &s->snapshot;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EVENT_SNAPSHOT;
	e->ts_ns = bpf_ktime_get_boot_ns();
	fill_task(e, task);
	fill_parent(e, task->real_parent);
	bpf_seq_write(seq, e, sizeof(*e));
	return 0;
}
