/*
 * diag.c: the peer's TCP sockets, as the kernel reports them (sock_diag).
 *
 * fp_diag_lookup() sends one exact
 * SOCK_DIAG_BY_FAMILY request for the 4-tuple, runs the answer through
 * mnl_cb_run() and keeps the socket if its 4-tuple matches; on_diag_msg()
 * and on_diag_attr() are its callbacks. fp_diag_state_from_linux() is the one place where
 * Linux's state numbers become RFC 9293's.
 *
 * The caller's descriptor is used with plain send/recv: libmnl 1.0.4 can
 * wrap it (mnl_socket_fdopen) but not let go of it without closing it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h> /* struct tcp_info; never with <netinet/tcp.h> */

#include "finprobe.h"

/* Linux's socket states (include/net/tcp_states.h, in no uapi header). */
enum {
	LINUX_TCP_ESTABLISHED = 1,
	LINUX_TCP_SYN_SENT,
	LINUX_TCP_SYN_RECV,
	LINUX_TCP_FIN_WAIT1,
	LINUX_TCP_FIN_WAIT2,
	LINUX_TCP_TIME_WAIT,
	LINUX_TCP_CLOSE,
	LINUX_TCP_CLOSE_WAIT,
	LINUX_TCP_LAST_ACK,
	LINUX_TCP_LISTEN,
	LINUX_TCP_CLOSING,
	LINUX_TCP_NEW_SYN_RECV,	  /* a request socket, before accept's child */
	LINUX_TCP_BOUND_INACTIVE, /* 6.8: bound, neither listening nor open */
	LINUX_TCP_MAX_STATES,
};

/* The kernel answers within microseconds; this bounds a lost answer. */
#define DIAG_WAIT_MS 5000

/* Every state a 4-tuple can be in; BOUND_INACTIVE has no remote end. */
#define DIAG_STATES (((1U << LINUX_TCP_BOUND_INACTIVE) - 1) & ~1U)

/* Returns FP_STATE_COUNT (fp_state_name: "?") for a number Linux does not
 * have. */
enum fp_state fp_diag_state_from_linux(int linux_state)
{
	static const enum fp_state rfc[LINUX_TCP_MAX_STATES] = {
		[0] = FP_STATE_COUNT,
		[LINUX_TCP_ESTABLISHED] = FP_STATE_ESTABLISHED,
		[LINUX_TCP_SYN_SENT] = FP_STATE_SYN_SENT,
		[LINUX_TCP_SYN_RECV] = FP_STATE_SYN_RECEIVED,
		[LINUX_TCP_FIN_WAIT1] = FP_STATE_FIN_WAIT_1,
		[LINUX_TCP_FIN_WAIT2] = FP_STATE_FIN_WAIT_2,
		[LINUX_TCP_TIME_WAIT] = FP_STATE_TIME_WAIT,
		[LINUX_TCP_CLOSE] = FP_STATE_CLOSED,
		[LINUX_TCP_CLOSE_WAIT] = FP_STATE_CLOSE_WAIT,
		[LINUX_TCP_LAST_ACK] = FP_STATE_LAST_ACK,
		[LINUX_TCP_LISTEN] = FP_STATE_LISTEN,
		[LINUX_TCP_CLOSING] = FP_STATE_CLOSING,
		[LINUX_TCP_NEW_SYN_RECV] = FP_STATE_SYN_RECEIVED,
		[LINUX_TCP_BOUND_INACTIVE] = FP_STATE_CLOSED,
	};

	if (linux_state < 0 || linux_state >= LINUX_TCP_MAX_STATES)
		return FP_STATE_COUNT;
	return rfc[linux_state];
}

/* idiag_timer: which of the socket's timers is pending. */
static enum fp_diag_timer timer_from_linux(uint8_t timer)
{
	static const enum fp_diag_timer timers[] = {
		FP_TIMER_NONE,	   FP_TIMER_RETRANS, FP_TIMER_KEEPALIVE,
		FP_TIMER_TIMEWAIT, FP_TIMER_PERSIST,
	};

	return timer < sizeof(timers) / sizeof(timers[0]) ? timers[timer]
							  : FP_TIMER_NONE;
}

/* The 4-tuple sought, in inet_diag's terms, and what was found. */
struct lookup {
	int family;
	uint8_t local[16], remote[16];	  /* network order, 4 used for IPv4 */
	uint16_t local_port, remote_port; /* host order */
	int want_info; /* ask for tcp_info (INET_DIAG_INFO) too */
	int found;
	struct fp_diag_info info;
};

/* ::ffff:a.b.c.d, how an AF_INET6 socket holds IPv4 address a.b.c.d. */
static int is_v4_mapped(const uint32_t *addr6, const uint8_t *v4)
{
	static const uint8_t prefix[12] = { [10] = 0xff, [11] = 0xff };

	return memcmp(addr6, prefix, 12) == 0 && memcmp(addr6 + 3, v4, 4) == 0;
}

/* An IPv4 4-tuple is held by an AF_INET socket, or by a dual-stack AF_INET6
 * one (python -m http.server's) with v4-mapped addresses: the kernel's
 * exact AF_INET lookup finds both (both are hashed by the IPv4 addresses)
 * and answers with the socket's own family. */
static int same_socket(const struct lookup *l, const struct inet_diag_msg *m)
{
	size_t len = l->family == AF_INET ? 4 : 16;

	if (ntohs(m->id.idiag_sport) != l->local_port ||
	    ntohs(m->id.idiag_dport) != l->remote_port)
		return 0;
	if (m->idiag_family == l->family)
		return memcmp(m->id.idiag_src, l->local, len) == 0 &&
		       memcmp(m->id.idiag_dst, l->remote, len) == 0;
	return l->family == AF_INET && m->idiag_family == AF_INET6 &&
	       is_v4_mapped(m->id.idiag_src, l->local) &&
	       is_v4_mapped(m->id.idiag_dst, l->remote);
}

/* INET_DIAG_INFO carries struct tcp_info; older kernels send a shorter
 * one, newer a longer: copy what both know, zero the rest. */
static int on_diag_attr(const struct nlattr *attr, void *data)
{
	struct fp_diag_info *info = data;
	struct tcp_info ti;
	size_t len = mnl_attr_get_payload_len(attr);

	if (mnl_attr_get_type(attr) != INET_DIAG_INFO)
		return MNL_CB_OK;
	memset(&ti, 0, sizeof(ti));
	if (len > sizeof(ti))
		len = sizeof(ti);
	memcpy(&ti, mnl_attr_get_payload(attr), len);
	info->has_tcp_info = 1;
	info->backoff = ti.tcpi_backoff;
	info->rto_us = ti.tcpi_rto;
	info->total_retrans = ti.tcpi_total_retrans;
	info->snd_cwnd = ti.tcpi_snd_cwnd;
	return MNL_CB_OK;
}

/* The socket the kernel answered with, kept if it is the one sought. */
static int on_diag_msg(const struct nlmsghdr *nlh, void *data)
{
	struct lookup *l = data;
	const struct inet_diag_msg *m = mnl_nlmsg_get_payload(nlh);

	if (mnl_nlmsg_get_payload_len(nlh) < sizeof(*m) || l->found ||
	    !same_socket(l, m))
		return MNL_CB_OK;
	l->found = 1;
	memset(&l->info, 0, sizeof(l->info));
	/* for TIME_WAIT sockets idiag_state is tw_substate: FIN_WAIT2 or
	 * TIME_WAIT, mapped like any other */
	l->info.state = fp_diag_state_from_linux(m->idiag_state);
	l->info.timer = timer_from_linux(m->idiag_timer);
	l->info.expires_ms = m->idiag_expires;
	l->info.retransmits = m->idiag_retrans;
	l->info.rqueue = m->idiag_rqueue;
	l->info.wqueue = m->idiag_wqueue;
	mnl_attr_parse(nlh, MNL_ALIGN(sizeof(*m)), on_diag_attr, &l->info);
	return MNL_CB_OK;
}

/* An exact request: the kernel looks the 4-tuple up in its hash tables
 * (established, TIME_WAIT and request sockets, then listeners), where a
 * dump would walk every bucket of a table shared by all namespaces:
 * milliseconds, on a big machine, for each lookup. */
static int send_exact_request(int fd, const struct lookup *l, unsigned seq)
{
	uint32_t buf[MNL_NLMSG_HDRLEN / 4 + sizeof(struct inet_diag_req_v2) / 4];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct inet_diag_req_v2 *req;
	size_t len = l->family == AF_INET ? 4 : 16;

	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq;
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->sdiag_family = (uint8_t)l->family;
	req->sdiag_protocol = IPPROTO_TCP;
	/* tcp_info only when kept: the kernel fills it even for a listener */
	req->idiag_ext = l->want_info ? 1 << (INET_DIAG_INFO - 1) : 0;
	req->idiag_states = DIAG_STATES;
	req->id.idiag_sport = htons(l->local_port);
	req->id.idiag_dport = htons(l->remote_port);
	memcpy(req->id.idiag_src, l->local, len);
	memcpy(req->id.idiag_dst, l->remote, len);
	req->id.idiag_cookie[0] = req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (send(fd, nlh, nlh->nlmsg_len, 0) < 0)
		return -errno;
	return 0;
}

/* Wait up to DIAG_WAIT_MS for the answer: 0, -ETIMEDOUT, or -EINTR for a
 * signal (the caller's to handle: a Ctrl-C must not wait for the kernel). */
static int wait_answer(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, DIAG_WAIT_MS);

	if (n > 0)
		return 0;
	return n == 0 ? -ETIMEDOUT : -errno;
}

/* One exact request and its one answer: a socket, or ENOENT. A listener
 * the kernel offers for a 4-tuple it has no connection for does not match
 * (same_socket), so it reads as no socket. The kernel answers within send()
 * (netlink runs the request in the sender's context), so the answer is read
 * at once and only waited for if it is not there. An answer with another
 * seq is an earlier call's, which stopped waiting (a signal): skipped, so
 * nothing need be drained first. */
static int lookup_once(int fd, struct lookup *l)
{
	static const size_t len = 32768;
	uint32_t buf[32768 / 4];
	ssize_t n;
	int rc;

	unsigned seq = (unsigned)fp_now_ns() | 1U;
	l->found = 0;
	rc = send_exact_request(fd, l, seq);
	if (rc < 0)
		return rc;
	for (;;) {
		n = recv(fd, buf, len, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			rc = wait_answer(fd);
			if (rc < 0)
				return rc;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPROTO;
		rc = mnl_cb_run(buf, (size_t)n, seq, 0, on_diag_msg, l);
		if (rc == MNL_CB_ERROR && errno == EPROTO)
			continue; /* libmnl: seq mismatch, a stale answer */
		if (rc == MNL_CB_ERROR && errno != ENOENT)
			return -errno;
		return l->found ? 0 : -ENOENT;
	}
}

/* -EINVAL for a family other than AF_INET, AF_INET6 or a NULL address;
 * info NULL asks only whether the socket exists (a port pick's question).
 * One request answers for an IPv4 4-tuple held by a socket of either
 * family: the kernel's AF_INET lookup (inet_lookup) also finds a
 * dual-stack AF_INET6 socket's v4-mapped connection, and asking again as
 * AF_INET6 with v4-mapped addresses would run that same lookup. */
int fp_diag_lookup(int nl_fd, int family, const uint8_t *local_addr,
		   uint16_t local_port, const uint8_t *remote_addr,
		   uint16_t remote_port, struct fp_diag_info *info)
{
	struct lookup l = { .family = family,
			    .local_port = local_port,
			    .remote_port = remote_port,
			    .want_info = info != NULL };
	size_t len = family == AF_INET ? 4 : 16;
	int rc;

	if ((family != AF_INET && family != AF_INET6) || !local_addr ||
	    !remote_addr)
		return -EINVAL;
	memcpy(l.local, local_addr, len);
	memcpy(l.remote, remote_addr, len);
	rc = lookup_once(nl_fd, &l);
	if (rc == 0 && info)
		*info = l.info;
	return rc;
}
