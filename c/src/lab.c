/*
 * lab.c: a Linux kernel TCP peer in network namespaces of its own.
 *
 * Entry points, in the order of a lab's life: fp_lab_open() has a helper
 * forked (by the caller's zygote, see zygote_main) that builds the lab and
 * hands back descriptors; fp_lab_packet_fd(),
 * fp_lab_netns_fd() and fp_lab_userns_fd() give them out; fp_lab_socket()
 * and fp_lab_sysctl() are requests the helper serves inside the kernel
 * namespace; fp_lab_enter() runs in a child the caller forks, which the
 * helper then kills when the lab ends; fp_lab_close() ends it all. A lab
 * serves one call at a time: callers sharing one between threads
 * serialize their calls. Every wait for the helper is bounded.
 *
 * The helper (helper_main) builds the lab in build_lab's order:
 * enter_kernel_namespace (through a user namespace when the caller may not
 * make network namespaces), enter_probe_namespace, make_veth, setup_probe,
 * setup_kernel; then it hands the descriptors over and serve()s until EOF.
 * A helper forked by a zygote that has a probe namespace of its own (root)
 * starts there and makes only the kernel's: use_shared_probe_namespace,
 * enter_kernel_namespace, then as above from make_veth on.
 * It is forked from a copy of a caller that may have threads (a Jupyter
 * kernel), so between fork() and _exit() it makes system calls and libmnl's
 * buffer-only calls and nothing else: no malloc, no stdio, no locale. The
 * parent turns its errno into text.
 *
 * A stack lab (fp_lab_open_stack) is built in build_stack_lab's order:
 * enter_kernel_namespace, make_tap, setup_tap. Its one namespace holds the
 * TAP a user-space stack attaches to, and the packet socket on it.
 */
#include <errno.h>
#include <link.h>
#include <fcntl.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>

#include "finprobe.h"

#define LAB_IF "lab0"	   /* the kernel's end of the veth */
#define PROBE_IF "probe0"  /* finprobe's end */
#define LOOPBACK_IFINDEX 1 /* lo is always the first device of a namespace */
#define EXIT_WAIT_MS 1000  /* after EOF, then SIGKILL */
#define CALL_WAIT_MS 10000 /* for an answer: the helper takes microseconds */
#define OPEN_WAIT_MS                                                           \
	30000 /* for the lab: each of the helper's steps is bounded */
#define NETLINK_WAIT_MS 5000 /* for the kernel's answer to a netlink request */
#define READY_WAIT_MS 10000  /* for the local routes of the lab's addresses */
#define MAX_ADOPTED                                                            \
	1024 /* children of the caller the helper kills at its end */
#define SLIM_MIN (256u * 1024u) /* the smallest mapping a helper goes without */
#ifdef __SANITIZE_ADDRESS__
#define SLIM_HELPERS 0 /* ASan's shadow and allocator are not ours to wipe */
#else
#define SLIM_HELPERS 1
#endif

static const uint8_t peer_mac[ETH_ALEN] = FP_LAB_PEER_MAC;
static const uint8_t local_mac[ETH_ALEN] = FP_LAB_LOCAL_MAC;
static const uint8_t lab_ip4[4] = { 192, 0, 2, 1 };
static const uint8_t local_ip4[4] = { 192, 0, 2, 2 };
static const uint8_t lab_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t local_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };

struct fp_lab {
	pid_t pid;    /* the helper, when we forked it; else 0 */
	int pidfd;    /* the helper, when the zygote forked it; else -1 */
	int spawning; /* the zygote's LAB_SPAWNED is still to come */
	int ctl;      /* our end of the socketpair to it */
	/* of the last request: an answer to an earlier one is stale */
	uint32_t seq;
	int packet_fd, netns_fd, userns_fd;
	char err[256];
};

/* ------------------------------------------------------------------ */
/* The protocol: one struct lab_msg a datagram, each way               */
/* ------------------------------------------------------------------ */

/* LAB_ADOPT comes from a child in fp_lab_enter(), with its pidfd, and is
 * not answered; every other request is, with its seq. LAB_SPAWN goes to
 * the zygote with the new helper's end of its socketpair, and the zygote
 * answers LAB_SPAWNED on that socketpair, with the helper's pidfd. */
enum lab_op {
	LAB_SOCKET = 1,
	LAB_SYSCTL_READ,
	LAB_SYSCTL_WRITE,
	LAB_ADOPT,
	LAB_SPAWN,
	LAB_SPAWNED
};

struct lab_msg {
	uint32_t seq;	/* request: lab_call's number; the answer repeats it */
	int32_t op;	/* request: enum lab_op */
	int32_t err;	/* response: 0 or the negative errno to return */
	int32_t cause;	/* response: the errno behind err, for the message */
	int32_t arg[3]; /* LAB_SOCKET: family, type, protocol; LAB_ADOPT: [0] the
			    child's process group if it leads one, else 0;
			    LAB_SPAWN: [0] 1 for a stack lab */
	char name[96];	/* request: sysctl name; failed setup: the step */
	char value[512]; /* sysctl value to write, or the value read */
};

/* Send msg with nfds descriptors. Returns 0 or a negative errno. */
static int send_msg(int sock, const struct lab_msg *msg, const int *fds,
		    int nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(3 * sizeof(int))];
	} control;
	struct iovec iov = { (void *)msg, sizeof(*msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nfds > 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Keep up to max descriptors of mh's SCM_RIGHTS in fds, close the rest;
 * returns how many were kept. */
static int take_fds(struct msghdr *mh, int *fds, int max)
{
	struct cmsghdr *cm;
	int n = 0, fd;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < count; i++) {
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(fd), sizeof(fd));
			if (n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* Receive one msg and up to max descriptors (close-on-exec). Returns how
 * many descriptors came, -EPIPE if the other end is gone, -EPROTO for a
 * datagram that is not a whole lab_msg. */
static int recv_msg(int sock, struct lab_msg *msg, int *fds, int max)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(3 * sizeof(int))];
	} control;
	struct iovec iov = { msg, sizeof(*msg) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	ssize_t len;
	int n;

	while ((len = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0)
		if (errno != EINTR)
			return -errno;
	n = take_fds(&mh, fds, max);
	if (len == (ssize_t)sizeof(*msg) && !(mh.msg_flags & MSG_TRUNC)) {
		msg->name[sizeof(msg->name) - 1] = '\0';
		msg->value[sizeof(msg->value) - 1] = '\0';
		return n;
	}
	while (n > 0)
		close(fds[--n]);
	return len == 0 ? -EPIPE : -EPROTO;
}

/* ------------------------------------------------------------------ */
/* The helper: building the lab                                        */
/* ------------------------------------------------------------------ */

struct helper {
	int ctl;	 /* the helper's end of the socketpair */
	int kernel_ns;	 /* /proc/self/ns/net of the kernel namespace */
	int user_ns;	 /* /proc/self/ns/user when one was made, else -1 */
	int rtnl_kernel; /* rtnetlink (and ioctl) socket of each namespace */
	int rtnl_probe;
	int packet;	  /* AF_PACKET on probe0 (a stack lab's: its TAP) */
	int stack;	  /* a stack lab: a TAP, no veth, no addresses */
	int shared_probe; /* started in its zygote's probe namespace */
	char probe_if[IFNAMSIZ]; /* the name of finprobe's end of the veth */
	const char *what;	 /* the step that failed */
	int cause;		 /* its errno */
	int err;		 /* what fp_lab_open returns */
};

/* Record the failed step and its errno; returns -1 for `return failed()`. */
static int failed(struct helper *h, const char *what, int cause)
{
	h->what = what;
	h->cause = cause;
	h->err = -cause;
	return -1;
}

/* Write a whole small file (/proc). Returns 0, or -1 with errno. */
static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t len = (ssize_t)strlen(text), n;

	if (fd < 0)
		return -1;
	n = write(fd, text, len);
	if (n < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	if (n != len)
		errno = EIO;
	return n == len ? 0 : -1;
}

/* "0 <id> 1": a map of root in the new user namespace to id outside, made
 * without snprintf (not safe after fork in a threaded process). */
static void id_map(char *out, unsigned id)
{
	char digits[12];
	int n = 0;

	do
		digits[n++] = (char)('0' + id % 10);
	while ((id /= 10) && n < (int)sizeof(digits));
	*out++ = '0';
	*out++ = ' ';
	while (n > 0)
		*out++ = digits[--n];
	memcpy(out, " 1", 3);
}

/* Become root of a new user namespace so that the network namespaces can
 * be made; the header promises -EPERM when this fails too. */
static int enter_user_namespace(struct helper *h)
{
	char uid_map[32], gid_map[32];

	id_map(uid_map, geteuid());
	id_map(gid_map, getegid());
	if (unshare(CLONE_NEWUSER) < 0) {
		failed(h,
		       "making a user namespace (not allowed to make a "
		       "network namespace)",
		       errno);
		h->err = -EPERM;
		return -1;
	}
	/* An unprivileged writer of gid_map must give up setgroups first;
	 * kernels before 3.19 have no such file. */
	if (write_file("/proc/self/setgroups", "deny") < 0 && errno != ENOENT)
		return failed(h, "writing /proc/self/setgroups", errno);
	if (write_file("/proc/self/uid_map", uid_map) < 0)
		return failed(h, "writing /proc/self/uid_map", errno);
	if (write_file("/proc/self/gid_map", gid_map) < 0)
		return failed(h, "writing /proc/self/gid_map", errno);
	h->user_ns = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
	if (h->user_ns < 0)
		return failed(h, "opening the user namespace", errno);
	return 0;
}

/* Every wait for the kernel's answer on it is bounded (recv: EAGAIN). */
static int rtnl_socket(void)
{
	struct timeval wait = { .tv_sec = NETLINK_WAIT_MS / 1000 };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

	if (fd >= 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* errno of a failed netlink recv, a timeout named as one. */
static int recv_errno(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
}

static int enter_kernel_namespace(struct helper *h)
{
	if (unshare(CLONE_NEWNET) < 0) {
		if (errno != EPERM)
			return failed(h, "making the kernel namespace", errno);
		if (enter_user_namespace(h) < 0)
			return -1;
		if (unshare(CLONE_NEWNET) < 0)
			return failed(h, "making the kernel namespace", errno);
	}
	h->kernel_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (h->kernel_ns < 0)
		return failed(h, "opening the kernel namespace", errno);
	h->rtnl_kernel = rtnl_socket();
	if (h->rtnl_kernel < 0)
		return failed(h, "opening rtnetlink", errno);
	/* lab0 is born later, from the probe namespace, with the "default"
	 * settings of this one: without duplicate address detection its
	 * addresses are usable at once (both must be 0, see addrconf). */
	if (write_file("/proc/sys/net/ipv6/conf/all/accept_dad", "0") < 0 ||
	    write_file("/proc/sys/net/ipv6/conf/default/accept_dad", "0") < 0)
		return failed(h, "setting net.ipv6.conf.*.accept_dad", errno);
	return 0;
}

static int enter_probe_namespace(struct helper *h)
{
	if (unshare(CLONE_NEWNET) < 0)
		return failed(h, "making the probe namespace", errno);
	h->rtnl_probe = rtnl_socket();
	if (h->rtnl_probe < 0)
		return failed(h, "opening rtnetlink", errno);
	/* probe0 must never speak: no link-local address, no MLD, no router
	 * solicitation. Set as the default before it exists, it holds from
	 * its first moment up. */
	if (write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") < 0)
		return failed(h, "disabling IPv6 for probe0", errno);
	return 0;
}

/* A zygote's helper starts in the zygote's probe namespace, which the
 * probe ends of all its labs share (zygote_probe_namespace): one namespace
 * fewer to make and tear down a lab, a seventh of a lab's CPU. It takes
 * its rtnetlink and packet sockets there before it makes the kernel
 * namespace; the veth's probe end is named by the zygote's serial number
 * of the helper, unique in that namespace. */
static int use_shared_probe_namespace(struct helper *h, unsigned serial)
{
	char digits[12];
	int n = 0;

	h->rtnl_probe = rtnl_socket();
	if (h->rtnl_probe < 0)
		return failed(h, "opening rtnetlink", errno);
	h->packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (h->packet < 0)
		return failed(h, "making the packet socket", errno);
	do
		digits[n++] = (char)('0' + serial % 10);
	while ((serial /= 10) && n < (int)sizeof(digits));
	memcpy(h->probe_if, "fp", 2);
	for (int i = 0; i < n; i++)
		h->probe_if[2 + i] = digits[n - 1 - i];
	h->probe_if[2 + n] = '\0';
	return 0;
}

/* Several rtnetlink requests sent at once: the kernel runs them in order
 * within send(); only the last asks for an ACK, so an error of any other
 * is already queued when that ACK arrives. */
struct nl_batch {
	char buf[1024]; /* holds the largest batch (six small requests) */
	size_t len;
	unsigned n;
	struct nlmsghdr *last;
	const char *what[8];
};

static struct nlmsghdr *batch_add(struct nl_batch *b, uint16_t type,
				  uint16_t flags, const char *what)
{
	struct nlmsghdr *nlh;

	if (b->last)
		b->len += MNL_ALIGN(b->last->nlmsg_len);
	nlh = mnl_nlmsg_put_header(b->buf + b->len);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = b->n + 1; /* seq 0 would turn checks off */
	b->what[b->n++] = what;
	b->last = nlh;
	return nlh;
}

/* The first error of b's requests, or the ACK of the last one. */
static int batch_ack(struct helper *h, const struct nl_batch *b,
		     const char *buf, int len)
{
	const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf;
	const struct nlmsgerr *e;
	unsigned seq;

	for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
		if (nlh->nlmsg_type != NLMSG_ERROR ||
		    mnl_nlmsg_get_payload_len(nlh) < sizeof(*e))
			continue;
		e = mnl_nlmsg_get_payload(nlh);
		seq = nlh->nlmsg_seq;
		if (e->error && seq >= 1 && seq <= b->n)
			return failed(h, b->what[seq - 1], -e->error);
		if (seq == b->n)
			return 1;
	}
	return 0;
}

/* Send b on fd, wait for the last ACK. Returns 0 or -1 (failed step). */
static int batch_run(struct helper *h, int fd, struct nl_batch *b)
{
	uint32_t buf[2048]; /* an error echoes its request */
	ssize_t n;
	int rc;

	b->last->nlmsg_flags |= NLM_F_ACK;
	b->len += MNL_ALIGN(b->last->nlmsg_len);
	b->last = NULL;
	if (send(fd, b->buf, b->len, 0) < 0)
		return failed(h, b->what[0], errno);
	do {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno != EINTR)
			return failed(h, b->what[b->n - 1], recv_errno());
		rc = n > 0 ? batch_ack(h, b, (const char *)buf, (int)n) : 0;
	} while (rc == 0);
	return rc < 0 ? -1 : 0;
}

static void put_ifinfo(struct nlmsghdr *nlh, int index, unsigned up)
{
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = index;
	ifi->ifi_flags = up;
	ifi->ifi_change = up;
}

/* probe0 here, up, and its peer lab0 in the kernel namespace, down until
 * its offloads are off. */
static int make_veth(struct helper *h)
{
	struct nl_batch b = { .n = 0 };
	struct nlmsghdr *nlh;
	struct nlattr *info, *data, *peer;

	nlh = batch_add(&b, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
			"creating veth pair");
	put_ifinfo(nlh, 0, IFF_UP);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, h->probe_if);
	mnl_attr_put(nlh, IFLA_ADDRESS, ETH_ALEN, local_mac);
	info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	put_ifinfo(nlh, 0, 0);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, LAB_IF);
	mnl_attr_put(nlh, IFLA_ADDRESS, ETH_ALEN, peer_mac);
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)h->kernel_ns);
	mnl_attr_nest_end(nlh, peer);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);
	return batch_run(h, h->rtnl_probe, &b);
}

/* ifindex of name in the namespace of sock; 0 on failure (errno set). */
static int ifindex(int sock, const char *name)
{
	struct ifreq ifr = { .ifr_ifindex = 0 };

	memcpy(ifr.ifr_name, name, strlen(name) + 1);
	return ioctl(sock, SIOCGIFINDEX, &ifr) < 0 ? 0 : ifr.ifr_ifindex;
}

/* One legacy ethtool "set" (ETHTOOL_STSO ...) on name: -1 with errno. */
static int ethtool_set(int sock, const char *name, uint32_t cmd, uint32_t value)
{
	struct ethtool_value ev = { .cmd = cmd, .data = value };
	struct ifreq ifr = { .ifr_data = (void *)&ev };

	memcpy(ifr.ifr_name, name, strlen(name) + 1);
	return ioctl(sock, SIOCETHTOOL, &ifr);
}

/* GRO off so frames arrive on probe0 as the kernel sent them, then the
 * packet socket. It is made with protocol 0, which receives nothing, and
 * given ETH_P_ALL by bind(): a socket made with ETH_P_ALL would hear the
 * whole namespace until bind(), and bind() would then wait out an RCU
 * grace period to unhook it (synchronize_net(), ~10 ms). */
static int setup_probe(struct helper *h)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ETH_P_ALL) };

	sll.sll_ifindex = ifindex(h->rtnl_probe, h->probe_if);
	if (!sll.sll_ifindex)
		return failed(h, "finding finprobe's end of the veth", errno);
	if (ethtool_set(h->rtnl_probe, h->probe_if, ETHTOOL_SGRO, 0) < 0 &&
	    errno != EOPNOTSUPP)
		return failed(h, "disabling GRO on finprobe's end of the veth",
			      errno);
	if (h->packet < 0) /* a shared probe namespace's is made */
		h->packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (h->packet < 0)
		return failed(h, "making the packet socket", errno);
	if (bind(h->packet, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return failed(h,
			      "binding the packet socket to finprobe's end of "
			      "the veth",
			      errno);
	close(h->rtnl_probe);
	h->rtnl_probe = -1;
	return 0;
}

static void add_link_up(struct nl_batch *b, int index, const char *what)
{
	put_ifinfo(batch_add(b, RTM_NEWLINK, 0, what), index, IFF_UP);
}

static void add_address(struct nl_batch *b, int index, int family,
			const uint8_t *addr, int prefix, const char *what)
{
	struct nlmsghdr *nlh;
	struct ifaddrmsg *ifa;
	size_t len = family == AF_INET ? 4 : 16;

	nlh = batch_add(b, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, what);
	ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = (uint8_t)family;
	ifa->ifa_prefixlen = (uint8_t)prefix;
	/* NODAD: never tentative, so bind() works at once */
	ifa->ifa_flags = family == AF_INET6 ? IFA_F_NODAD : 0;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (uint32_t)index;
	mnl_attr_put(nlh, IFA_LOCAL, len, addr);
	mnl_attr_put(nlh, IFA_ADDRESS, len, addr);
}

static void add_neighbour(struct nl_batch *b, int index, int family,
			  const uint8_t *addr, const char *what)
{
	struct nlmsghdr *nlh;
	struct ndmsg *ndm;

	nlh = batch_add(b, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, what);
	ndm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ndm));
	ndm->ndm_family = (uint8_t)family;
	ndm->ndm_ifindex = index;
	ndm->ndm_state = NUD_PERMANENT;
	mnl_attr_put(nlh, NDA_DST, family == AF_INET ? 4 : 16, addr);
	mnl_attr_put(nlh, NDA_LLADDR, ETH_ALEN, local_mac);
}

/* lab0 sends full checksums and segments no larger than the MTU, so what
 * probe0 captures is what a wire would carry. */
static int lab0_offloads_off(struct helper *h)
{
	static const struct {
		uint32_t cmd;
		const char *what;
	} off[] = {
		{ ETHTOOL_STXCSUM, "disabling TX checksum offload on " LAB_IF },
		{ ETHTOOL_STSO, "disabling TSO on " LAB_IF },
		{ ETHTOOL_SGSO, "disabling GSO on " LAB_IF },
	};

	for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
		if (ethtool_set(h->rtnl_kernel, LAB_IF, off[i].cmd, 0) < 0)
			return failed(h, off[i].what, errno);
	return 0;
}

/* The answer to RTM_GETROUTE request seq: 1 for a local route (RTN_LOCAL),
 * 0 for another, -1 failed; notifications and other answers are skipped. */
static int local_route_answer(struct helper *h, unsigned seq)
{
	uint32_t buf[2048];
	const struct nlmsghdr *nlh;
	const struct nlmsgerr *e;
	int len;

	for (;;) {
		len = (int)recv(h->rtnl_kernel, buf, sizeof(buf), 0);
		if (len < 0 && (errno == EINTR || errno == ENOBUFS))
			continue; /* ENOBUFS: notifications were lost, not us */
		if (len < 0)
			return failed(h, "asking for the lab's routes",
				      recv_errno());
		nlh = (const struct nlmsghdr *)buf;
		for (; mnl_nlmsg_ok(nlh, len);
		     nlh = mnl_nlmsg_next(nlh, &len)) {
			if (nlh->nlmsg_seq != seq)
				continue;
			if (nlh->nlmsg_type == RTM_NEWROUTE)
				return ((const struct rtmsg *)
						mnl_nlmsg_get_payload(nlh))
					       ->rtm_type == RTN_LOCAL;
			if (nlh->nlmsg_type != NLMSG_ERROR)
				continue;
			e = mnl_nlmsg_get_payload(nlh);
			if (e->error == -ENETUNREACH || e->error == 0)
				return 0;
			return failed(h, "asking for the lab's routes",
				      -e->error);
		}
	}
}

/* How the kernel routes a packet to addr, as its input path would. */
static int routed_locally(struct helper *h, int family, const uint8_t *addr,
			  unsigned seq)
{
	uint32_t buf[MNL_NLMSG_HDRLEN / 4 + 16];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtmsg *rtm;
	size_t len = family == AF_INET ? 4 : 16;

	nlh->nlmsg_type = RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)family;
	rtm->rtm_dst_len = (uint8_t)(len * 8);
	mnl_attr_put(nlh, RTA_DST, len, addr);
	if (send(h->rtnl_kernel, nlh, nlh->nlmsg_len, 0) < 0)
		return failed(h, "asking for the lab's routes", errno);
	return local_route_answer(h, seq);
}

/* Notifications that woke us: the next look is a fresh request anyway. */
static void drain_notifications(int fd)
{
	uint32_t buf[2048];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0 || errno == ENOBUFS)
		;
}

/* The lab is handed over only once the kernel delivers packets to its
 * addresses. IPv4 installs the local route with the address; IPv6 only in
 * addrconf's DAD work, even for an IFA_F_NODAD address (inet6_addr_add ->
 * addrconf_dad_start -> addrconf_dad_work -> addrconf_dad_completed ->
 * ipv6_ifa_notify -> ip6_ins_rt), a workqueue item that takes the RTNL
 * lock. On a busy machine it ran after our first SYN, about one fresh IPv6
 * lab in a hundred: with no local route, the SYN was routed out through
 * 2001:db8::/64 and dropped (forwarding is off), never answered. Woken by
 * route notifications, joined before the first look; bounded. */
static int wait_local_routes(struct helper *h)
{
	struct pollfd p = { .fd = h->rtnl_kernel, .events = POLLIN };
	uint64_t deadline = fp_now_ns() + (uint64_t)READY_WAIT_MS * 1000000u;
	unsigned group = RTNLGRP_IPV6_ROUTE, seq = 100;
	int v4, v6;

	/* without notifications the 10 ms polls below still look again */
	setsockopt(h->rtnl_kernel, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group,
		   sizeof(group));
	for (;;) {
		drain_notifications(h->rtnl_kernel);
		v4 = routed_locally(h, AF_INET, lab_ip4, ++seq);
		v6 = v4 < 0 ? -1 : routed_locally(h, AF_INET6, lab_ip6, ++seq);
		if (v6 < 0)
			return -1;
		if (v4 && v6)
			return 0;
		if (fp_now_ns() >= deadline)
			return failed(
				h,
				"waiting for the kernel to deliver to "
				"192.0.2.1 and 2001:db8::1 (local routes)",
				ETIMEDOUT);
		poll(&p, 1, 10);
	}
}

/* Through the kernel namespace's rtnetlink socket, wherever we stand. */
static int setup_kernel(struct helper *h)
{
	struct nl_batch b = { .n = 0 };
	int lab0 = ifindex(h->rtnl_kernel, LAB_IF);

	if (!lab0)
		return failed(h, "finding " LAB_IF, errno);
	if (lab0_offloads_off(h) < 0)
		return -1;
	add_link_up(&b, LOOPBACK_IFINDEX, "bringing lo up");
	add_link_up(&b, lab0, "bringing " LAB_IF " up");
	add_address(&b, lab0, AF_INET, lab_ip4, 24,
		    "adding 192.0.2.1/24 to " LAB_IF);
	add_address(&b, lab0, AF_INET6, lab_ip6, 64,
		    "adding 2001:db8::1/64 to " LAB_IF);
	add_neighbour(&b, lab0, AF_INET, local_ip4,
		      "adding neighbour 192.0.2.2 on " LAB_IF);
	add_neighbour(&b, lab0, AF_INET6, local_ip6,
		      "adding neighbour 2001:db8::2 on " LAB_IF);
	if (batch_run(h, h->rtnl_kernel, &b) < 0 || wait_local_routes(h) < 0)
		return -1;
	close(h->rtnl_kernel);
	h->rtnl_kernel = -1;
	return 0;
}

/* The TAP, persistent so that the stack can attach to it by name (a
 * non-persistent one would vanish with our descriptor, and while we held
 * it the stack's TUNSETIFF would fail with EBUSY). It dies with the
 * namespace. IPv6 is off for it from birth (the default of this
 * namespace): no link-local address, no router solicitation, MLD or DAD. */
static int make_tap(struct helper *h)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	int fd;

	if (write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") < 0)
		return failed(h, "disabling IPv6 for " FP_LAB_TAP, errno);
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return failed(h, "opening /dev/net/tun", errno);
	memcpy(ifr.ifr_name, FP_LAB_TAP, sizeof(FP_LAB_TAP));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
		int e = errno;
		close(fd);
		return failed(h, "making the TAP device " FP_LAB_TAP, e);
	}
	close(fd);
	return 0;
}

/* lo and the TAP up, and the packet socket bound to the TAP (made with
 * protocol 0 and given ETH_P_ALL by bind, as in setup_probe). The TAP has
 * no address: the kernel neither answers ARP for the stack's addresses
 * nor takes the stack's IP packets, which are not for it. */
static int setup_tap(struct helper *h)
{
	struct nl_batch b = { .n = 0 };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ETH_P_ALL) };

	sll.sll_ifindex = ifindex(h->rtnl_kernel, FP_LAB_TAP);
	if (!sll.sll_ifindex)
		return failed(h, "finding " FP_LAB_TAP, errno);
	add_link_up(&b, LOOPBACK_IFINDEX, "bringing lo up");
	add_link_up(&b, sll.sll_ifindex, "bringing " FP_LAB_TAP " up");
	if (batch_run(h, h->rtnl_kernel, &b) < 0)
		return -1;
	h->packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (h->packet < 0)
		return failed(h, "making the packet socket", errno);
	if (bind(h->packet, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return failed(h, "binding the packet socket to " FP_LAB_TAP,
			      errno);
	close(h->rtnl_kernel);
	h->rtnl_kernel = -1;
	return 0;
}

static int build_stack_lab(struct helper *h)
{
	if (enter_kernel_namespace(h) < 0 || make_tap(h) < 0 ||
	    setup_tap(h) < 0)
		return -1;
	return 0;
}

static int build_lab(struct helper *h, unsigned serial)
{
	if (h->stack)
		return build_stack_lab(h);
	if (h->shared_probe) {
		if (use_shared_probe_namespace(h, serial) < 0 ||
		    enter_kernel_namespace(h) < 0)
			return -1;
	} else if (enter_kernel_namespace(h) < 0 ||
		   enter_probe_namespace(h) < 0) {
		return -1;
	}
	if (make_veth(h) < 0 || setup_probe(h) < 0 || setup_kernel(h) < 0)
		return -1;
	/* Sockets made from now on, and /proc/sys/net, are the kernel's. */
	if (setns(h->kernel_ns, CLONE_NEWNET) < 0)
		return failed(h, "returning to the kernel namespace", errno);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The helper: serving                                                 */
/* ------------------------------------------------------------------ */

static void serve_socket(int ctl, struct lab_msg *msg)
{
	int fd = socket(msg->arg[0], msg->arg[1], msg->arg[2]);

	msg->err = fd < 0 ? -errno : 0;
	send_msg(ctl, msg, &fd, fd < 0 ? 0 : 1);
	if (fd >= 0)
		close(fd);
}

/* The value without its newline; -ENOSPC if it may not all fit. */
static int sysctl_read(int fd, char *value, size_t cap)
{
	ssize_t n = read(fd, value, cap);

	if (n < 0)
		return -errno;
	if ((size_t)n == cap)
		return -ENOSPC;
	if (n > 0 && value[n - 1] == '\n')
		n--;
	value[n] = '\0';
	return 0;
}

/* /proc/sys/net/... is looked up in the namespace of the task opening it,
 * which is the kernel's: the helper lives there. */
static int sysctl_rw(struct lab_msg *msg)
{
	char path[sizeof("/proc/sys/") + sizeof(msg->name)] = "/proc/sys/";
	char *p = path + strlen(path);
	int write_it = msg->op == LAB_SYSCTL_WRITE, fd, rc = 0;

	for (const char *s = msg->name; *s; s++)
		*p++ = *s == '.' ? '/' : *s; /* so ".." cannot survive */
	*p = '\0';
	fd = open(path, (write_it ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!write_it)
		rc = sysctl_read(fd, msg->value, sizeof(msg->value));
	else if (write(fd, msg->value, strlen(msg->value)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* The caller's children that joined the lab (fp_lab_enter), as pidfds:
 * they end with the lab, whichever of the caller's threads forked them. */
struct adopted {
	int pidfd[MAX_ADOPTED];
	pid_t pgid[MAX_ADOPTED]; /* its process group, if it leads one; or 0 */
	int n;
};

/* Whether the process group pgid still has a member. */
static int group_alive(pid_t pgid)
{
	return pgid > 0 && (kill(-pgid, 0) == 0 || errno != ESRCH);
}

/* Forget the children that have ended (their pidfd polls readable), and
 * whose process group, if they led one, has no member left. */
static void prune_adopted(struct adopted *a)
{
	int kept = 0;

	for (int i = 0; i < a->n; i++) {
		struct pollfd p = { .fd = a->pidfd[i], .events = POLLIN };

		if (poll(&p, 1, 0) == 1 && !group_alive(a->pgid[i])) {
			close(a->pidfd[i]);
			continue;
		}
		a->pgid[kept] = a->pgid[i];
		a->pidfd[kept++] = a->pidfd[i];
	}
	a->n = kept;
}

/* MAX_ADOPTED children alive at once is far beyond any test; past it a
 * child is not tracked here, and only the caller's close stops it. */
static void adopt(struct adopted *a, int pidfd, pid_t pgid)
{
	if (a->n == MAX_ADOPTED)
		prune_adopted(a);
	if (a->n == MAX_ADOPTED) {
		close(pidfd);
		return;
	}
	a->pgid[a->n] = pgid;
	a->pidfd[a->n++] = pidfd;
}

/* The lab ends: so does every child that joined it, and every process of
 * a group such a child led (a stack's workers). A group's number cannot be
 * taken by a new process while the group has a member, so killing it
 * reaches no stranger unless the group had already emptied. */
static _Noreturn void end_lab(const struct adopted *a)
{
	for (int i = 0; i < a->n; i++) {
		syscall(SYS_pidfd_send_signal, a->pidfd[i], SIGKILL, NULL, 0U);
		if (a->pgid[i] > 0)
			kill(-a->pgid[i], SIGKILL);
	}
	_exit(0);
}

/* The children a terminating signal ends with the lab (end_on_signal). */
static struct adopted *signal_ends;
static const int ending_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };

/* A signal that ends the helper ends the lab, as its owner's end does:
 * `timeout` and a terminal's Ctrl-C signal a whole process group, the owner
 * and this helper at once, and a child in a group of its own (a stack)
 * would outlive both. end_lab() makes only async-signal-safe calls. */
static void end_on_signal(int sig __attribute__((unused)))
{
	end_lab(signal_ends);
}

/* sigprocmask how (SIG_BLOCK, SIG_UNBLOCK) for ending_signals. */
static void ending_signals_mask(int how)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(ending_signals) / sizeof(*ending_signals);
	     i++)
		sigaddset(&set, ending_signals[i]);
	sigprocmask(how, &set, NULL);
}

static void end_lab_on_signals(struct adopted *children)
{
	struct sigaction sa = { .sa_handler = end_on_signal };

	signal_ends = children;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(ending_signals) / sizeof(*ending_signals);
	     i++)
		sigaction(ending_signals[i], &sa, NULL);
}

/* Requests until the socketpair closes: our caller closed the lab, or
 * died, and the lab dies with it. A datagram that is not a whole request
 * (a child that wrote to its copy of ctl) is dropped. */
static _Noreturn void serve(int ctl)
{
	struct adopted children = { .n = 0 };
	struct lab_msg msg;
	int fd, n;

	end_lab_on_signals(&children);
	for (;;) {
		n = recv_msg(ctl, &msg, &fd, 1);
		if (n == -EPROTO)
			continue;
		if (n < 0)
			end_lab(&children);
		if (msg.op == LAB_ADOPT) {
			/* the set whole whenever the handler may read it */
			ending_signals_mask(SIG_BLOCK);
			if (n == 1)
				adopt(&children, fd, (pid_t)msg.arg[0]);
			ending_signals_mask(SIG_UNBLOCK);
			continue;
		}
		if (n == 1)
			close(fd);
		if (msg.op == LAB_SOCKET) {
			serve_socket(ctl, &msg);
			continue;
		}
		if (msg.op == LAB_SYSCTL_READ || msg.op == LAB_SYSCTL_WRITE)
			msg.err = sysctl_rw(&msg);
		else
			msg.err = -EINVAL;
		msg.cause = -msg.err;
		send_msg(ctl, &msg, NULL, 0);
	}
}

/* Signals as a fresh process has them: the caller's handlers (Python's)
 * have no business here, and a blocked SIGTERM would keep us alive. */
static void reset_signals(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;

	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL); /* EINVAL for KILL, STOP: fine */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Keep ctl (moved to 3) and nothing else the caller had: stdio becomes
 * /dev/null, every other descriptor is closed. A caller whose fd 0 was
 * closed got fd 0 from socketpair() for its own end, and a helper keeping
 * that would hold its own peer and never see EOF; another lab's
 * socketpair or packet socket held here would keep that lab alive. */
static void close_stray_fds(int ctl)
{
	long max;
	int null;

	if (ctl != 3 && dup2(ctl, 3) < 0)
		_exit(1); /* the caller reads EOF: "the lab helper died" */
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int fd = 0; fd < 3; fd++)
		if (null < 0 || dup2(null, fd) < 0)
			close(fd); /* no /dev/null: closed is as good */
	if (syscall(SYS_close_range, 4U, ~0U, 0U) == 0)
		return;
	max = sysconf(_SC_OPEN_MAX); /* kernels before 5.9 */
	for (long fd = 4; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		close((int)fd);
}

/* serial: the zygote's number of this helper when shared_probe (it
 * started in the zygote's probe namespace), else 0. */
static _Noreturn void helper_main(int ctl, int stack, int shared_probe,
				  unsigned serial)
{
	struct helper h = { .ctl = -1,
			    .kernel_ns = -1,
			    .user_ns = -1,
			    .rtnl_kernel = -1,
			    .rtnl_probe = -1,
			    .packet = -1,
			    .stack = stack,
			    .shared_probe = shared_probe,
			    .probe_if = PROBE_IF };
	struct lab_msg msg;
	int fds[3];

	reset_signals();
	close_stray_fds(ctl);
	h.ctl = 3;
	memset(&msg, 0, sizeof(msg));
	if (build_lab(&h, serial) < 0) {
		msg.err = h.err;
		msg.cause = h.cause;
		strncpy(msg.name, h.what, sizeof(msg.name) - 1);
		send_msg(h.ctl, &msg, NULL, 0);
		_exit(1);
	}
	fds[0] = h.packet;
	fds[1] = h.kernel_ns;
	fds[2] = h.user_ns;
	if (send_msg(h.ctl, &msg, fds, h.user_ns >= 0 ? 3 : 2) < 0)
		_exit(1);
	close(h.packet);
	close(h.kernel_ns);
	if (h.user_ns >= 0)
		close(h.user_ns);
	serve(h.ctl);
}

/* ------------------------------------------------------------------ */
/* The zygote: a small process that forks the helpers                  */
/* ------------------------------------------------------------------ */

/*
 * fork() copies the caller's page tables under its mm lock: in a big
 * process (pytest with a few hundred MiB) every thread of the caller
 * stalls for milliseconds wherever the fork runs, a background thread's
 * too. So the helpers are forked by a zygote, forked once from the caller
 * (at its first lab, while it is still small) and then forked only from
 * itself. As root it stands in a network namespace of its own, the probe
 * namespace its helpers share (zygote_probe_namespace); else in the
 * caller's, and each helper makes both of its lab's. Its only descriptor
 * is its end of the zygote socket; a helper's end of its socketpair comes
 * in a LAB_SPAWN and is closed once the helper has it. Its helpers get no
 * copy of the caller's heaps
 * (slim_helpers). It ends at EOF on the zygote socket: when the caller,
 * and every child the caller forked that did not exec, are gone. Like a
 * helper, it makes system calls only (it was forked from a caller that
 * may have threads).
 */

/* The loaded objects' writable segments (data, .bss), page-aligned, as
 * the caller saw them when it forked the zygote (note_kept): a helper has
 * them whole. Past ZYGOTE_KEPT_MAX, no helper is slimmed at all. */
#define ZYGOTE_KEPT_MAX 512
static struct {
	uintptr_t start, end;
} zygote_kept[ZYGOTE_KEPT_MAX];
static int zygote_kept_n, zygote_kept_full;

/* dl_iterate_phdr's callback: note info's writable PT_LOAD segments. */
static int note_kept(struct dl_phdr_info *info, size_t size, void *page)
{
	uintptr_t mask = ~(*(uintptr_t *)page - 1), start, end;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
			continue;
		if (zygote_kept_n == ZYGOTE_KEPT_MAX) {
			zygote_kept_full = 1;
			return 1;
		}
		start = (info->dlpi_addr + ph->p_vaddr) & mask;
		end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + ~mask) &
		      mask;
		zygote_kept[zygote_kept_n].start = start;
		zygote_kept[zygote_kept_n++].end = end;
	}
	return 0;
}

/* Before the zygote is forked, in the caller: what its helpers keep. */
static void note_all_kept(void)
{
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t p = page > 0 ? (uintptr_t)page : 4096;

	zygote_kept_n = 0;
	zygote_kept_full = 0;
	dl_iterate_phdr(note_kept, &p);
}

/* The fields of one /proc/self/maps line that slim_line needs. */
struct map_line {
	uintptr_t start, end;
	int anon_rw; /* private read-write memory of no file (the brk heap too) */
};

static const char *parse_hex(const char *s, const char *end, uintptr_t *v)
{
	*v = 0;
	for (; s < end; s++) {
		int d = *s >= '0' && *s <= '9'	 ? *s - '0'
			: *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
						 : -1;
		if (d < 0)
			break;
		*v = *v * 16 + (uintptr_t)d;
	}
	return s;
}

/* The next field of a maps line after s (spaces skipped). */
static const char *next_field(const char *s, const char *end)
{
	while (s < end && *s != ' ')
		s++;
	while (s < end && *s == ' ')
		s++;
	return s;
}

/* "start-end perms offset dev inode [path]"; 0 if it is not one. */
static int parse_map_line(const char *s, const char *end, struct map_line *m)
{
	const char *inode, *path;

	s = parse_hex(s, end, &m->start);
	if (s == end || *s != '-')
		return 0;
	s = parse_hex(s + 1, end, &m->end);
	if (end - s < 5 || m->end <= m->start)
		return 0;
	inode = next_field(next_field(next_field(s + 1, end), end), end);
	path = next_field(inode, end);
	m->anon_rw = memcmp(s + 1, "rw-p", 4) == 0 && inode < end &&
		     *inode == '0' && (inode + 1 == end || inode[1] == ' ') &&
		     (path == end ||
		      (end - path == 6 && memcmp(path, "[heap]", 6) == 0));
	return 1;
}

/* Wipe [at, end) in the zygote's children but for the kept ranges. */
static void wipe_but_kept(uintptr_t at, uintptr_t end)
{
	while (at < end) {
		uintptr_t stop = end, resume = end;

		/* the lowest kept range from at on, if any starts before end */
		for (int i = 0; i < zygote_kept_n; i++) {
			if (zygote_kept[i].end <= at ||
			    zygote_kept[i].start >= stop)
				continue;
			stop = zygote_kept[i].start > at ? zygote_kept[i].start
							 : at;
			resume = zygote_kept[i].end;
		}
		if (stop > at)
			madvise((void *)at, stop - at, MADV_WIPEONFORK);
		at = resume;
	}
}

/* A helper needs of its zygote's memory only the code, the libraries'
 * data, and this thread's stack and TLS: the caller's heaps (a Python
 * process's: tens of MiB) are not copied into it (MADV_WIPEONFORK), as
 * copying their page tables at each fork and freeing them at each exit
 * cost as much as a namespace. Kept whole: the libraries' writable
 * segments (zygote_kept, their .bss is anonymous memory), mappings under
 * SLIM_MIN (the loader's own), and the zygote's own memory: only its
 * children see zeros. */
static void slim_line(const struct map_line *m, uintptr_t sp, uintptr_t tp)
{
	if (!m->anon_rw || m->end - m->start < SLIM_MIN)
		return;
	if ((sp >= m->start && sp < m->end) || (tp >= m->start && tp < m->end))
		return;
	wipe_but_kept(m->start, m->end);
}

static void slim_helpers(void)
{
	char buf[4096];
	struct map_line m;
	uintptr_t sp = (uintptr_t)buf, tp = (uintptr_t)&errno;
	size_t have = 0;
	ssize_t n;
	int fd;

	if (!SLIM_HELPERS || zygote_kept_full)
		return; /* helpers are whole copies */
	fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	while ((n = read(fd, buf + have, sizeof(buf) - have)) > 0) {
		char *line = buf, *nl;

		have += (size_t)n;
		while ((nl = memchr(line, '\n', (size_t)(buf + have - line)))) {
			if (parse_map_line(line, nl, &m))
				slim_line(&m, sp, tp);
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (have == sizeof(buf))
			have = 0; /* a path longer than buf: that line is lost */
	}
	close(fd);
}

/* Fork a helper for the lab whose socketpair end is ctl, and tell the
 * caller on ctl: LAB_SPAWNED with the helper's pidfd (none if it already
 * ended), or the errno of fork. */
static void zygote_spawn(int ctl, int stack, int shared_probe, unsigned serial)
{
	struct lab_msg msg;
	pid_t pid;
	int pidfd = -1;

	memset(&msg, 0, sizeof(msg));
	msg.op = LAB_SPAWNED;
	/* no atfork handlers: the caller's, and glibc's malloc reset, would
	 * run in the helper on the memory slim_helpers left out */
	pid = _Fork();
	if (pid == 0)
		helper_main(ctl, stack, shared_probe, serial);
	if (pid < 0) {
		msg.err = -errno;
		msg.cause = errno;
	} else {
		/* ESRCH: it ended and was reaped, nothing to wait for */
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0U);
		msg.arg[0] = (int32_t)pid;
	}
	send_msg(ctl, &msg, &pidfd, pidfd >= 0 ? 1 : 0);
	if (pidfd >= 0)
		close(pidfd);
	close(ctl);
}

/* The probe namespace the zygote's helpers share (see
 * use_shared_probe_namespace), the zygote's own: it goes with the zygote.
 * IPv6 is off by default there, so no probe end ever speaks. Returns 1, or
 * 0 where the zygote may not make one (no root: a user namespace would
 * be needed) and stays where it was: its helpers make their own. */
static int zygote_probe_namespace(void)
{
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), made = 0;

	if (home < 0)
		return 0;
	if (unshare(CLONE_NEWNET) == 0) {
		made = write_file(
			       "/proc/sys/net/ipv6/conf/default/disable_ipv6",
			       "1") == 0;
		if (!made && setns(home, CLONE_NEWNET) < 0)
			_exit(1); /* the caller restarts it, or forks helpers */
	}
	close(home);
	return made;
}

static _Noreturn void zygote_main(int sock)
{
	struct sigaction reap = { .sa_handler = SIG_IGN,
				  .sa_flags = SA_NOCLDWAIT };
	struct sigaction ignore = { .sa_handler = SIG_IGN };
	struct lab_msg msg;
	unsigned serial = 0;
	int fd, n, shared_probe;

	reset_signals();
	close_stray_fds(sock);
	slim_helpers();
	shared_probe = zygote_probe_namespace();
	/* the kernel reaps the helpers; the caller waits on their pidfds */
	sigaction(SIGCHLD, &reap, NULL);
	/* Ctrl-C is the caller's to handle: a REPL goes on making labs */
	sigaction(SIGINT, &ignore, NULL);
	for (;;) {
		n = recv_msg(3, &msg, &fd, 1);
		if (n == -EPROTO)
			continue;
		if (n < 0)
			_exit(0);
		if (n == 1 && msg.op == LAB_SPAWN)
			zygote_spawn(fd, msg.arg[0] != 0, shared_probe,
				     ++serial);
		else if (n == 1)
			close(fd);
	}
}

/* ------------------------------------------------------------------ */
/* The caller's side                                                   */
/* ------------------------------------------------------------------ */

/* The caller's socket to its zygote, forked at the first lab. The number
 * stays: a new zygote's socket is dup3()ed onto it, so a thread sending
 * meanwhile reaches the old zygote or the new, never another file. A
 * child the caller forks shares the zygote, which serves it as well. */
static pthread_mutex_t zygote_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t zygote_once = PTHREAD_ONCE_INIT;
static int zygote_fd = -1;
static pid_t zygote_pid;
static unsigned zygote_gen; /* the zygotes started */
static int zygote_none;	    /* no pidfds here: every helper is forked */

/* What a helper inherits from the process that forked the zygote and
 * that matters to its lab: a child we forked, or this process after
 * setuid, chroot, capset or setns, gets a zygote of its own (an
 * unprivileged child must get the user namespace, a chrooted one -EPERM,
 * not a lab made with our rights). */
struct zygote_key {
	pid_t pid;
	uid_t euid;
	gid_t egid;
	uint64_t caps; /* effective */
	dev_t root_dev;
	ino_t root_ino, user_ns, mnt_ns;
};

static struct zygote_key zygote_made_for;

static ino_t ns_inode(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_ino : 0;
}

static void zygote_key_now(struct zygote_key *k)
{
	struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3,
						 0 };
	struct __user_cap_data_struct data[2];
	struct stat root;

	memset(k, 0, sizeof(*k));
	k->pid = getpid();
	k->euid = geteuid();
	k->egid = getegid();
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &head, data) == 0)
		k->caps = data[0].effective | (uint64_t)data[1].effective << 32;
	if (stat("/", &root) == 0) {
		k->root_dev = root.st_dev;
		k->root_ino = root.st_ino;
	}
	k->user_ns = ns_inode("/proc/self/ns/user");
	k->mnt_ns = ns_inode("/proc/self/ns/mnt");
}

/* A fork in another thread may copy zygote_lock held: the child's is
 * free. */
static void zygote_lock_reset(void)
{
	pthread_mutex_init(&zygote_lock, NULL);
}

static void zygote_atfork(void)
{
	pthread_atfork(NULL, NULL, zygote_lock_reset);
}

/* Fork a zygote with all signals blocked, as start_helper. Returns our
 * end of its socket, or a negative errno. */
static int fork_zygote(pid_t *pid)
{
	sigset_t all, old;
	int sv[2], e;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	note_all_kept();
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	*pid = fork();
	if (*pid == 0)
		zygote_main(sv[1]);
	e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(sv[1]);
	if (*pid < 0) {
		close(sv[0]);
		return -e;
	}
	return sv[0];
}

/* With zygote_lock held: a zygote in place of generation gen (the one a
 * caller found dead), or the first one. Returns 0 or a negative errno. */
static int zygote_start(unsigned gen, const struct zygote_key *key)
{
	pid_t pid = 0, old = zygote_pid;
	int fd, pidfd;

	if (zygote_none)
		return -ENOSYS;
	if (zygote_fd >= 0 && gen != zygote_gen &&
	    memcmp(key, &zygote_made_for, sizeof(*key)) == 0)
		return 0; /* another thread replaced it already */
	pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
	if (pidfd < 0) {
		/* the caller could neither wait for nor kill a helper it
		 * did not fork */
		zygote_none = errno == ENOSYS || errno == EPERM;
		return -errno;
	}
	close(pidfd);
	fd = fork_zygote(&pid);
	if (fd < 0)
		return fd;
	if (zygote_fd < 0) {
		zygote_fd = fd;
	} else {
		/* our copy of the old zygote's socket goes: it ends once
		 * no process holds one */
		dup3(fd, zygote_fd, O_CLOEXEC);
		close(fd);
		if (zygote_made_for.pid == key->pid)
			waitpid(old, NULL, WNOHANG); /* ours, dead or dying */
	}
	memcpy(&zygote_made_for, key, sizeof(*key));
	zygote_pid = pid;
	zygote_gen++;
	return 0;
}

/* The zygote socket and its generation, starting the zygote first if
 * there is none. Returns the socket or a negative errno. */
static int zygote_socket(unsigned *gen, int restart)
{
	struct zygote_key key;
	int rc = 0, fd;

	zygote_key_now(&key);
	pthread_once(&zygote_once, zygote_atfork);
	pthread_mutex_lock(&zygote_lock);
	if (zygote_fd < 0 || restart ||
	    memcmp(&key, &zygote_made_for, sizeof(key)) != 0)
		rc = zygote_start(*gen, &key);
	fd = zygote_fd;
	*gen = zygote_gen;
	pthread_mutex_unlock(&zygote_lock);
	return rc < 0 ? rc : fd;
}

/* Ask the zygote for a helper on ctl; a zygote found dead (killed) is
 * replaced once. Returns 0, or a negative errno: then we fork. */
static int zygote_request(int ctl, int stack, unsigned *gen, int restart)
{
	struct lab_msg msg;
	int zfd, rc;

	memset(&msg, 0, sizeof(msg));
	msg.op = LAB_SPAWN;
	msg.arg[0] = stack;
	for (int tries = 0; tries < 2; tries++, restart = 1) {
		zfd = zygote_socket(gen, restart);
		if (zfd < 0)
			return zfd;
		rc = send_msg(zfd, &msg, &ctl, 1);
		if (rc != -EPIPE && rc != -ECONNRESET && rc != -ENOTCONN)
			return rc;
	}
	return rc;
}

/* Fork the helper ourselves, with all signals blocked, so no handler of
 * ours runs in it before it resets them. Returns 0 or a negative errno. */
static int fork_helper(struct fp_lab *lab, int stack)
{
	sigset_t all, old;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	lab->pid = fork();
	if (lab->pid == 0)
		helper_main(sv[1], stack, 0, 0);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(sv[1]);
	lab->ctl = sv[0];
	return lab->pid < 0 ? -e : 0;
}

/* The zygote forks the helper; we fork it only where there can be no
 * zygote (no pidfds, or it cannot be forked). Returns 0 or a negative
 * errno. */
static int start_helper(struct fp_lab *lab, int stack, unsigned *gen,
			int restart)
{
	int sv[2], rc;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	rc = zygote_request(sv[1], stack, gen, restart);
	close(sv[1]); /* the zygote has its own copy */
	if (rc < 0) {
		close(sv[0]);
		return fork_helper(lab, stack);
	}
	lab->ctl = sv[0];
	lab->spawning = 1;
	return 0;
}

/* Wait up to ms for fd to be readable: 0, -ETIMEDOUT, or -EINTR when a
 * signal came first and intr is set (else the wait goes on). */
static int wait_readable(int fd, int ms, int intr)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t deadline = fp_now_ns() + (uint64_t)ms * 1000000u, now;
	int n;

	for (;;) {
		n = poll(&p, 1, ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
		if (intr)
			return -EINTR;
		now = fp_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		ms = (int)((deadline - now + 999999u) / 1000000u);
	}
}

/* The zygote's LAB_SPAWNED: the helper's pidfd, or why there is none. */
static int take_spawned(struct fp_lab *lab, const struct lab_msg *msg, int *fds,
			int n)
{
	lab->spawning = 0;
	if (msg->err < 0) {
		while (n > 0)
			close(fds[--n]);
		snprintf(lab->err, sizeof(lab->err),
			 "starting the lab helper: %s", strerror(msg->cause));
		return msg->err;
	}
	while (n > 1)
		close(fds[--n]);
	lab->pidfd = n == 1 ? fds[0] : -1;
	return 0;
}

/* The helper's first message: the lab's descriptors, or what failed. */
static int take_lab(struct fp_lab *lab, const struct lab_msg *msg, int *fds,
		    int n)
{
	if (msg->err < 0 || n < 2) {
		while (n > 0)
			close(fds[--n]);
		snprintf(lab->err, sizeof(lab->err), "%s: %s",
			 msg->err < 0 ? msg->name : "the lab helper",
			 strerror(msg->err < 0 ? msg->cause : EPROTO));
		return msg->err < 0 ? msg->err : -EPROTO;
	}
	lab->packet_fd = fds[0];
	lab->netns_fd = fds[1];
	lab->userns_fd = n > 2 ? fds[2] : -1;
	return 0;
}

/* The helper's first message and, from a zygote, LAB_SPAWNED, in either
 * order: both write to the helper's end of the socketpair. */
static int receive_lab(struct fp_lab *lab)
{
	uint64_t deadline = fp_now_ns() + (uint64_t)OPEN_WAIT_MS * 1000000u;
	struct lab_msg msg;
	int fds[3], n, built = 0, rc = 0;

	while (!built || lab->spawning) {
		uint64_t now = fp_now_ns();

		n = now >= deadline
			    ? -ETIMEDOUT
			    : wait_readable(lab->ctl,
					    (int)((deadline - now + 999999u) /
						  1000000u),
					    0);
		if (n == 0)
			n = recv_msg(lab->ctl, &msg, fds, 3);
		if (n < 0) {
			snprintf(lab->err, sizeof(lab->err),
				 n == -ETIMEDOUT
					 ? "the lab helper did not finish the "
					   "lab: %s"
					 : "the lab helper died while building "
					   "the lab: %s",
				 strerror(-n));
			return n;
		}
		if (msg.op == LAB_SPAWNED && lab->spawning) {
			n = take_spawned(lab, &msg, fds, n);
			if (n < 0)
				return n;
		} else if (!built) {
			built = 1;
			rc = take_lab(lab, &msg, fds, n);
		} else {
			while (n > 0)
				close(fds[--n]);
		}
	}
	return rc;
}

/* -EPERM without the right to make namespaces, -ENOMEM, or the errno of
 * the step that failed, named in err. A zygote that died with our request
 * (EOF before LAB_SPAWNED) is replaced once. */
static int lab_open(struct fp_lab **out, int stack, char *err, size_t err_len)
{
	struct fp_lab *lab = calloc(1, sizeof(*lab));
	unsigned gen = 0;
	int rc;

	*out = NULL;
	if (!lab) {
		if (err && err_len)
			snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	for (int tries = 0; tries < 2; tries++) {
		lab->ctl = lab->packet_fd = lab->netns_fd = lab->userns_fd = -1;
		lab->pidfd = -1;
		rc = start_helper(lab, stack, &gen, tries > 0);
		if (rc < 0)
			snprintf(lab->err, sizeof(lab->err),
				 "starting the lab helper: %s", strerror(-rc));
		else
			rc = receive_lab(lab);
		if (rc != -EPIPE || !lab->spawning)
			break;
		close(lab->ctl); /* nothing else came: no helper */
		lab->spawning = 0;
	}
	if (rc < 0) {
		if (err && err_len)
			snprintf(err, err_len, "%s", lab->err);
		fp_lab_close(lab);
		return rc;
	}
	*out = lab;
	return 0;
}

int fp_lab_open(struct fp_lab **out, char *err, size_t err_len)
{
	return lab_open(out, 0, err, err_len);
}

int fp_lab_open_stack(struct fp_lab **out, char *err, size_t err_len)
{
	return lab_open(out, 1, err, err_len);
}

/* Wait up to ms for the process of pidfd to exit; 1 if it did. */
static int pidfd_exited(int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int n;

	while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	return n > 0;
}

/* Wait up to ms for pid to exit, without reaping it; 1 if it did. */
static int helper_exited(pid_t pid, int ms)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), n;
	siginfo_t si;

	if (pidfd >= 0) {
		n = pidfd_exited(pidfd, ms);
		close(pidfd);
		return n;
	}
	/* No pidfd (old kernel, seccomp): look every 100 µs. ECHILD means
	 * someone else reaped it. */
	for (int i = 0; i < ms * 10; i++) {
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) <
			    0 ||
		    si.si_pid)
			return 1;
		usleep(100);
	}
	return 0;
}

static void *close_fd_thread(void *fd)
{
	close((int)(intptr_t)fd);
	return NULL;
}

/* Closing an AF_PACKET socket waits out an RCU grace period
 * (packet_release() calls synchronize_net(): 8-16 ms here, most of a
 * lab's cost), so a short-lived detached thread pays it instead of the
 * caller; the namespaces go a grace period later, as they would anyway
 * (their teardown is asynchronous). Without a thread, close here. */
static void close_packet_socket(int fd)
{
	pthread_attr_t attr;
	pthread_t thread;
	sigset_t all, old;
	int rc;

	if (pthread_attr_init(&attr) != 0) {
		close(fd);
		return;
	}
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024); /* else the default */
	sigfillset(&all); /* signals are for the caller's threads */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&thread, &attr, close_fd_thread,
			    (void *)(intptr_t)fd);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0)
		close(fd);
}

/* Cannot fail: a helper that ignores EOF for EXIT_WAIT_MS is killed. */
void fp_lab_close(struct fp_lab *lab)
{
	if (!lab)
		return;
	if (lab->ctl >= 0) {
		/* shutdown, not only close: a child the caller forked may
		 * hold a copy of ctl, and the helper must see EOF anyway */
		shutdown(lab->ctl, SHUT_RDWR);
		close(lab->ctl);
	}
	if (lab->packet_fd >= 0)
		close_packet_socket(lab->packet_fd);
	if (lab->netns_fd >= 0)
		close(lab->netns_fd);
	if (lab->userns_fd >= 0)
		close(lab->userns_fd);
	if (lab->pidfd >= 0) {
		/* the zygote's child, which the zygote reaps */
		if (!pidfd_exited(lab->pidfd, EXIT_WAIT_MS)) {
			syscall(SYS_pidfd_send_signal, lab->pidfd, SIGKILL,
				NULL, 0U);
			pidfd_exited(lab->pidfd, -1);
		}
		close(lab->pidfd);
	}
	if (lab->pid > 0) {
		if (!helper_exited(lab->pid, EXIT_WAIT_MS))
			kill(lab->pid, SIGKILL);
		while (waitpid(lab->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	free(lab);
}

/* Never NULL: "" before any failure. */
const char *fp_lab_error(const struct fp_lab *lab)
{
	return lab ? lab->err : "no lab";
}

/* The descriptors the helper handed over; -1 only for userns_fd, when
 * the caller could make namespaces itself. */
int fp_lab_packet_fd(const struct fp_lab *lab)
{
	return lab->packet_fd;
}

int fp_lab_netns_fd(const struct fp_lab *lab)
{
	return lab->netns_fd;
}

int fp_lab_userns_fd(const struct fp_lab *lab)
{
	return lab->userns_fd;
}

/* Between fork and exec, so system calls only. The child sends its own
 * pidfd on its copy of ctl: a pidfd names this process and no later one
 * with the same pid, and the helper, which sees EOF only once this copy
 * too is closed by exec, has it before the lab can end. PR_SET_PDEATHSIG
 * would follow the thread that forked, not the process or the lab; it
 * remains the fallback where there are no pidfds (before Linux 5.3). */
int fp_lab_enter(const struct fp_lab *lab)
{
	struct lab_msg msg;
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U), rc = 0;

	memset(&msg, 0, sizeof(msg));
	msg.op = LAB_ADOPT;
	/* a group leader's group goes with it (a stack and its workers) */
	msg.arg[0] = getpgrp() == getpid() ? (int32_t)getpid() : 0;
	if (pidfd >= 0) {
		rc = send_msg(lab->ctl, &msg, &pidfd, 1);
		close(pidfd);
	} else if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
		rc = -errno;
	}
	if (rc < 0)
		return rc;
	if (lab->userns_fd >= 0 && setns(lab->userns_fd, CLONE_NEWUSER) < 0)
		return -errno;
	if (setns(lab->netns_fd, CLONE_NEWNET) < 0)
		return -errno;
	return 0;
}

/* The answer to request seq; answers to earlier requests, whose caller
 * stopped waiting (-EINTR), are dropped with their descriptors. */
static int receive_answer(struct fp_lab *lab, uint32_t seq, struct lab_msg *msg,
			  int *fd)
{
	int rc;

	for (;;) {
		rc = wait_readable(lab->ctl, CALL_WAIT_MS, 1);
		if (rc == 0)
			rc = recv_msg(lab->ctl, msg, fd, fd ? 1 : 0);
		if (rc < 0 || msg->seq == seq)
			return rc;
		if (rc == 1)
			close(*fd);
	}
}

/* One request, one response (and maybe a descriptor into *fd). Returns
 * 0 when the helper answered (its answer in msg->err), -EINTR when a
 * signal came first (the helper may still carry the request out), or a
 * negative errno with the message kept if it is gone or silent. */
static int lab_call(struct fp_lab *lab, struct lab_msg *msg, int *fd)
{
	uint32_t seq = ++lab->seq ? lab->seq : ++lab->seq; /* 0: no answer */
	int rc;

	msg->seq = seq;
	rc = send_msg(lab->ctl, msg, NULL, 0);
	if (rc == 0)
		rc = receive_answer(lab, seq, msg, fd);
	if (rc >= 0 && fd && msg->err == 0 && rc != 1)
		rc = -EPROTO; /* a socket promised and none came */
	if (rc == -EINTR) {
		snprintf(lab->err, sizeof(lab->err),
			 "interrupted while waiting for the lab helper");
		return rc;
	}
	if (rc < 0) {
		snprintf(lab->err, sizeof(lab->err),
			 "no answer from the lab helper: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

/* The descriptor, or socket()'s negative errno in the lab, or -EPIPE /
 * -EPROTO when the helper is gone or garbled. */
int fp_lab_socket(struct fp_lab *lab, int family, int type, int protocol)
{
	struct lab_msg msg = { .op = LAB_SOCKET };
	int fd = -1, rc;

	msg.arg[0] = family;
	msg.arg[1] = type;
	msg.arg[2] = protocol;
	rc = lab_call(lab, &msg, &fd);

	if (rc < 0)
		return rc;
	if (msg.err < 0) {
		snprintf(lab->err, sizeof(lab->err),
			 "socket(%d, %d, %d) in the lab: %s", family, type,
			 protocol, strerror(-msg.err));
		return msg.err;
	}
	return fd;
}

/* Only net.* sysctls belong to a network namespace; the helper may be
 * real root, and kernel.* would change the host. Each refusal has a code
 * of its own, none of them -EINVAL, which is the kernel's refusal of a
 * value. */
static int check_sysctl(struct fp_lab *lab, const char *name, const char *value,
			char *out, size_t out_len)
{
	const char *why = NULL;
	int rc = 0;

	if (!name || strncmp(name, "net.", 4) != 0 || strchr(name, '/')) {
		why = "is not a net.* sysctl";
		rc = -EDOM;
	} else if (strlen(name) >= sizeof(((struct lab_msg *)0)->name)) {
		why = "is too long";
		rc = -ENAMETOOLONG;
	} else if (value &&
		   strlen(value) >= sizeof(((struct lab_msg *)0)->value)) {
		why = "has a value too long";
		rc = -E2BIG;
	} else if (!value && (!out || !out_len)) {
		why = "is read without room for the value";
		rc = -ENOSPC;
	}
	if (rc < 0)
		snprintf(lab->err, sizeof(lab->err), "sysctl \"%s\" %s",
			 name ? name : "(null)", why);
	return rc;
}

/* The codes are listed in finprobe.h; -EINVAL is only ever the kernel's
 * (a value it refused). */
int fp_lab_sysctl(struct fp_lab *lab, const char *name, const char *value,
		  char *out, size_t out_len)
{
	struct lab_msg msg = { .op = value ? LAB_SYSCTL_WRITE
					   : LAB_SYSCTL_READ };
	int rc = check_sysctl(lab, name, value, out, out_len);

	if (rc < 0)
		return rc;
	strcpy(msg.name, name);
	if (value)
		strcpy(msg.value, value);
	rc = lab_call(lab, &msg, NULL);
	if (rc < 0)
		return rc;
	if (msg.err == 0 && !value && strlen(msg.value) >= out_len)
		msg.err = -ENOSPC;
	if (msg.err < 0) {
		snprintf(lab->err, sizeof(lab->err), "%s sysctl %s: %s",
			 value ? "writing" : "reading", name,
			 strerror(-msg.err));
		return msg.err;
	}
	if (!value)
		memcpy(out, msg.value, strlen(msg.value) + 1);
	return 0;
}
