/* SPDX-License-Identifier: GPL-2.0 */
/* Reading a connection end from the current task's file table, shared by
 * the recorder and the tailored monitor. Needs vmlinux.h and events.h. */
#ifndef SYSLRN_SOCKETS_H
#define SYSLRN_SOCKETS_H

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define EINPROGRESS 115
#define PF_KTHREAD 0x00200000
/* offsetof(struct sockaddr_un, sun_path) */
#define SUN_PATH_OFFSET 2

struct socket_info {
	struct socket *sock;
	struct sock *sk;
	__u16 family;
	bool read_failed;
};

/* bpf_core_cast() of newer libbpf headers, spelled out for the 1.1 headers
 * of Debian 12. The verifier turns the call into a plain move and lets the
 * program read the result's fields directly, one instruction each. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define kernel_cast(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

/* Find the stream socket behind fd in task's file table. Returns false for
 * anything but a TCP or unix stream socket, or when a read failed. task
 * must be a BTF pointer (bpf_get_current_task_btf() or a tp_btf argument):
 * its fields are read directly, and a read through a NULL pointer gives 0. */
static __always_inline bool socket_of_fd(struct task_struct *task, __u64 fd,
					 struct socket_info *info)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;

	/* fdt->fd is an array of pointers, which the verifier does not let a
	 * program index directly, so its entry is copied. */
	if (fd >= fdt->max_fds || bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]) ||
	    !file) {
		info->read_failed = true;
		return false;
	}
	sock = kernel_cast(kernel_cast(file, struct file)->private_data, struct socket);
	sk = sock->sk;
	if (!sk) {
		info->read_failed = true;
		return false;
	}

	info->family = sk->__sk_common.skc_family;
	if (sk->sk_type != SOCK_STREAM)
		return false;
	if (info->family == AF_INET || info->family == AF_INET6) {
		/* sk_protocol is a plain u16 since Linux 5.6. */
		if (sk->sk_protocol != IPPROTO_TCP)
			return false;
	} else if (info->family != AF_UNIX) {
		return false;
	}
	info->sock = sock;
	info->sk = sk;
	return true;
}

/* Copy the unix socket name of named into buf; return its length, 0 for an
 * unnamed socket. A path name's length includes its NUL, an abstract name
 * has no NUL and starts with one. */
static __always_inline __u16 read_unix_path(char buf[UNIX_PATH_LEN], struct sock *named)
{
	struct unix_address *addr = BPF_CORE_READ((struct unix_sock *)named, addr);
	int len;

	if (!addr)
		return 0;
	/* addr->len counts sun_family too. */
	len = BPF_CORE_READ(addr, len) - SUN_PATH_OFFSET;
	if (len <= 0)
		return 0;
	if (len > UNIX_PATH_LEN)
		len = UNIX_PATH_LEN;
	bpf_probe_read_kernel(buf, UNIX_PATH_LEN,
			      (void *)addr + bpf_core_field_offset(struct unix_address, name) +
				      SUN_PATH_OFFSET);
	return len;
}

static __always_inline void fill_unix_path(struct event *e, struct sock *named)
{
	e->str_len = read_unix_path(e->str, named);
	if (e->str_len && e->str[0] == '\0')
		e->flags |= FLAG_ABSTRACT;
}

/* Fill the connection end of e. The socket ids are masked kernel pointers:
 * equal pointers give equal ids, and the trace reveals no kernel address. */
static __always_inline void fill_socket(struct event *e, struct socket_info *info,
					bool is_connect, __u64 key)
{
	struct socket *sock = info->sock;
	struct sock *sk = info->sk;
	struct sock *peer;
	struct pid *peer_pid;

	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	/* sk is a BTF pointer, on which the verifier allows no arithmetic,
	 * so its value is read again as a plain number. */
	e->sock_id = (__u64)BPF_CORE_READ(sock, sk) ^ key;

	if (info->family == AF_UNIX) {
		e->family = FAMILY_UNIX;
		peer = BPF_CORE_READ((struct unix_sock *)sk, peer);
		if (peer)
			e->peer_id = (__u64)peer ^ key;
		peer_pid = BPF_CORE_READ(sk, sk_peer_pid);
		if (peer_pid)
			e->peer_pid = BPF_CORE_READ(peer_pid, numbers[0].nr);
		/* The accepted socket carries the listener's address; the
		 * connecting socket may have a name of its own, so its path
		 * is read from its peer, the accepted socket. */
		fill_unix_path(e, is_connect ? peer : sk);
		return;
	}

	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (info->family == AF_INET) {
		e->family = FAMILY_INET;
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_daddr);
	} else {
		e->family = FAMILY_INET6;
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	}
}

/* Whether an accepted end is on the trigger socket: for TCP its local port,
 * for unix its name (path, path_len as the kernel stores them). */
static __always_inline bool matches_trigger(__u8 family, __u16 lport, const char *name,
					    __u16 name_len, __u32 kind, __u32 port,
					    const volatile char *path, __u32 path_len)
{
	if (kind == TRIGGER_TCP)
		return (family == FAMILY_INET || family == FAMILY_INET6) && lport == port;
	if (kind != TRIGGER_UNIX || family != FAMILY_UNIX || name_len != path_len)
		return false;
#pragma clang loop unroll(disable)
	for (int i = 0; i < UNIX_PATH_LEN; i++) {
		if (i >= path_len)
			break;
		if (name[i] != path[i])
			return false;
	}
	return true;
}

#endif
