/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Configuration and counters of the tailored monitor, shared with
 * syslrn.monitor.kernel, which mirrors them with ctypes. */
#ifndef SYSLRN_MONITOR_H
#define SYSLRN_MONITOR_H

/* Node types one monitor counts at most. Index 0 is "not counted". */
#define MAX_NODE_TYPES 64
/* Slots of node type counters: a power of two above MAX_NODE_TYPES, so that
 * a mask bounds a type index without a branch. Slot 0 takes the adds of
 * processes of no counted type, and nothing reads it. */
#define TYPE_SLOTS 128
/* Reads of the opening flag by a request that waits for another CPU to
 * open the window. */
#define OPEN_WAIT_READS 4096

enum monitor_error {
	MONITOR_ERROR_PROCS_FULL = 0,
	/* A request found no window opener to tail-call. */
	MONITOR_ERROR_NO_OPENER = 1,
	/* A request waited in vain for another CPU to open the window, so
	 * its connection end may be missing. */
	MONITOR_ERROR_OPEN_WAIT = 2,
	MONITOR_ERROR_MAX = 4,
};

struct monitor_config {
	__u32 node_types;
	__u32 trigger_kind;
	__u32 trigger_port;
	__u32 trigger_path_len;
	char trigger_path[UNIX_PATH_LEN];
	/* Pads the path to whole 8-byte words, which the trigger check
	 * compares. */
	char trigger_path_pad[4];
};

/* A process of a counted node type, or a process of no counted type that
 * was forked in a window and may exec into one. */
struct proc_state {
	__u32 type;
	/* The window that degree was counted in, cut to 32 bits. */
	__u32 epoch;
	__s64 degree;
};

struct node_features {
	__s64 count;
	__s64 degree;
};

/* The counters of one node type, side by side, so that a program finds
 * them all from one index. */
struct type_state {
	/* Its features in the two windows of window_state, by epoch parity. */
	struct node_features windows[2];
	/* Its processes in procs. */
	__s64 live;
};

struct window_meta {
	__u64 open_ns;
	/* Requests before the window's first. */
	__u64 first_request;
	/* The window's last request, set when the next window opens; until
	 * then, see window_state.last_request_ns. */
	__u64 last_request_ns;
};

/* The current window and the one before it, by epoch parity, so that a
 * window that closed before user space polled can still be read until a
 * second one opens. A window's requests are the next window's
 * first_request, or the total for the current one, minus its own
 * first_request. */
struct window_state {
	/* quiet_ns and the first last_request_ns are set by user space
	 * before attach. They sit here rather than in the read-only config
	 * so that the programs reach them from the address they already
	 * hold. */
	__u64 quiet_ns;
	__u64 epoch;
	__u64 requests;
	__u64 last_request_ns;
	/* Set while one CPU opens the next window; user space reads again
	 * when it finds it set. */
	__u64 opening;
	struct window_meta meta[2];
};

/* Everything the programs count, as one global in .bss: the programs reach
 * it without a map lookup, and user space reads it through one mmap. */
struct monitor_state {
	struct window_state window;
	struct type_state types[TYPE_SLOTS];
	__u64 errors[MONITOR_ERROR_MAX];
};

#endif
