/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps and configuration of the tailored monitor, shared with
 * syslrn.monitor.kernel, which mirrors them with ctypes. */
#ifndef SYSLRN_MONITOR_H
#define SYSLRN_MONITOR_H

/* Node types one monitor counts at most. */
#define MAX_NODE_TYPES 64

enum monitor_error {
	MONITOR_ERROR_PROCS_FULL = 0,
	MONITOR_ERROR_CONNECT_FULL = 1,
	MONITOR_ERROR_MAX = 4,
};

struct monitor_config {
	__u64 quiet_ns;
	__u32 node_types;
	__u32 track_degree;
	__u32 trigger_kind;
	__u32 trigger_port;
	__u32 trigger_path_len;
	__u32 pad;
	char trigger_path[UNIX_PATH_LEN];
};

struct proc_state {
	__u32 type;
	__u32 epoch;
	__s64 degree;
};

struct node_features {
	__s64 count;
	__s64 degree;
};

struct window_meta {
	__u64 open_ns;
	__u64 last_request_ns;
	__u64 requests;
};

/* The current window, and the previous one kept whole when the next opens,
 * so a window that closed before user space polled can still be read until
 * a second one opens. */
struct window_state {
	__u64 epoch;
	struct window_meta current;
	struct window_meta previous;
	__u64 total_requests;
};

#endif
