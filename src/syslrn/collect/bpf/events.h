/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Record layout shared by the BPF programs and syslrn.collect.events.
 * Every record has the same size, so user space decodes a batch of them
 * with one numpy structured dtype. */
#ifndef SYSLRN_EVENTS_H
#define SYSLRN_EVENTS_H

#define TASK_COMM_LEN 16
#define EVENT_STR_LEN 256
#define UNIX_PATH_LEN 108
#define PATH_MAX_LEN 4096

enum event_kind {
	EVENT_SNAPSHOT = 1,
	EVENT_FORK = 2,
	EVENT_EXEC = 3,
	EVENT_EXIT = 4,
	EVENT_CONNECT = 5,
	EVENT_ACCEPT = 6,
	EVENT_REQUEST = 7,
};

enum event_family {
	FAMILY_NONE = 0,
	FAMILY_INET = 1,
	FAMILY_INET6 = 2,
	FAMILY_UNIX = 3,
};

enum event_flag {
	FLAG_DRIVER = 1 << 0,
	FLAG_TRUNCATED = 1 << 1,
	FLAG_INPROGRESS = 1 << 2,
	FLAG_KTHREAD = 1 << 3,
	/* str contains an abstract unix name, whose first byte is NUL. */
	FLAG_ABSTRACT = 1 << 4,
	/* The accept was on the trigger socket: it counts as a request. */
	FLAG_REQUEST = 1 << 5,
};

/* Indices of the per-CPU counters map. */
enum counter {
	COUNTER_RESERVE_FAILED = 0, /* reservation failed: the event is lost */
	COUNTER_SHORT_READ = 1,   /* a kernel read failed: a field is empty */
	COUNTER_TRUNCATED = 2,    /* a string kept only its tail */
	COUNTER_MAP_FULL = 3,     /* a tracking map had no room */
	COUNTER_REQUESTS = 4,     /* connections accepted at the trigger */
	COUNTER_MAX = 8,
};

enum trigger_kind {
	TRIGGER_NONE = 0,
	TRIGGER_TCP = 1,
	TRIGGER_UNIX = 2,
};

struct event {
	__u64 ts_ns;
	__u64 start_ns;
	__u64 parent_start_ns;
	__u64 sock_id;
	__u64 peer_id;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__s32 exit_code;
	__u32 netns;
	__u32 peer_pid;
	__u8 kind;
	__u8 family;
	__u8 flags;
	__u8 pad0;
	__u16 lport;
	__u16 rport;
	__u16 str_len;
	__u16 pad1;
	__u32 pad2;
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
	char str[EVENT_STR_LEN];
};

/* Set by user space before load; the verifier then prunes what a
 * configuration does not use. */
struct config {
	__u32 self_tgid;
	__u32 trigger_kind;
	__u32 trigger_port;
	__u32 trigger_path_len;
	__u64 sock_key;
	char trigger_path[UNIX_PATH_LEN];
};

#endif
