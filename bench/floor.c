/*
 * floor.c: the bare C floor of a TCP lifecycle against a Lab's kernel, no
 * finprobe library: what the Python API's rate is measured against
 * (bench/lifecycle.py runs both in one Lab and prints the ratio).
 *
 * One lifecycle, the same as bench/lifecycle.py's through the API: SYN ->
 * SYN-ACK, ACK, FIN -> ACK, RST (so the kernel keeps no socket), one at a
 * time; every DRAIN_EVERY lifecycles the listener's queue of reset children
 * is accepted and closed, as the Python side does.
 *
 * It speaks over the Lab's own AF_PACKET socket (bound to our end of the
 * veth, filtered to TCP, our own frames ignored), handed down by the
 * driver, so it pays exactly the wire costs finprobe's engine pays:
 *
 *   floor PACKET_FD LISTEN_FD SRC_MAC DST_MAC COUNT FIRST_PORT [check]
 *
 * With "check" (run inside the Lab's kernel namespace, lab.popen) each
 * lifecycle first asks the kernel whether it still has a socket for the
 * 4-tuple, as lab.connect does before it takes a source port (a TIME_WAIT
 * there would catch our SYN): one exact sock_diag lookup among AF_INET
 * sockets, which also finds a dual-stack AF_INET6 socket's v4-mapped
 * connection (both are hashed by the IPv4 addresses), the bare form of
 * c/src/diag.c's.
 *
 * MACs as 12 hex digits. Prints "floor: N lifecycles in S s = R per second".
 */
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

#define WAIT_MS 1000 /* a lost answer ends the run rather than hanging it */
#define DRAIN_EVERY 64

struct link {
	int fd;
	uint8_t src_mac[6], dst_mac[6];
};

/* One frame (wire.h's build_tcp), written to the Lab's packet socket. */
static int send_tcp(const struct link *l, uint16_t sport, uint32_t seq,
		    uint32_t ack, uint8_t flags)
{
	uint8_t f[FRAME_MAX];
	size_t len = build_tcp(f, l->src_mac, l->dst_mac, sport, seq, ack,
			       flags);
	return write(l->fd, f, len) < 0 ? -errno : 0;
}

/* The next TCP segment from the kernel to sport: its flags, seq and ack.
 * 0, or -ETIMEDOUT after WAIT_MS of nothing for us. */
static int recv_tcp(const struct link *l, uint16_t sport, uint8_t *flags,
		    uint32_t *seq, uint32_t *ack)
{
	uint8_t f[2048];
	for (;;) {
		ssize_t n = recv(l->fd, f, sizeof(f), MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = l->fd, .events = POLLIN };
			if (poll(&p, 1, WAIT_MS) == 0)
				return -ETIMEDOUT;
			continue;
		}
		if (n < 0)
			return -errno;
		const uint8_t *ip = f + ETH;
		if (n < ETH + IP4 + 20 || f[12] != 0x08 || f[13] != 0 ||
		    (ip[0] >> 4) != 4 || ip[9] != 6)
			continue;
		const uint8_t *tcp = ip + (ip[0] & 15) * 4;
		if (tcp + 20 > f + n || (tcp[2] << 8 | tcp[3]) != sport ||
		    (tcp[0] << 8 | tcp[1]) != DPORT)
			continue;
		*flags = tcp[13];
		*seq = get32(tcp + 4);
		*ack = get32(tcp + 8);
		return 0;
	}
}

static int fail(uint16_t sport, const char *what, int rc)
{
	fprintf(stderr, "floor: port %u: %s (%s)\n", sport, what,
		rc < 0 ? strerror(-rc) : "unexpected segment");
	return -1;
}

static int lifecycle(const struct link *l, uint16_t sport, uint32_t iss)
{
	uint8_t flags;
	uint32_t seq, ack;
	int rc = send_tcp(l, sport, iss, 0, TCP_S);
	if (rc < 0)
		return fail(sport, "sending the SYN", rc);
	rc = recv_tcp(l, sport, &flags, &seq, &ack);
	if (rc < 0 || flags != (TCP_S | TCP_A) || ack != iss + 1)
		return fail(sport, "waiting for the SYN-ACK", rc);
	uint32_t rcv_nxt = seq + 1;
	if ((rc = send_tcp(l, sport, iss + 1, rcv_nxt, TCP_A)) < 0 ||
	    (rc = send_tcp(l, sport, iss + 1, rcv_nxt, TCP_F | TCP_A)) < 0)
		return fail(sport, "sending ACK, FIN", rc);
	rc = recv_tcp(l, sport, &flags, &seq, &ack);
	if (rc < 0 || flags != TCP_A || ack != iss + 2)
		return fail(sport, "waiting for the ACK of our FIN", rc);
	rc = send_tcp(l, sport, iss + 2, 0, TCP_R);
	return rc < 0 ? fail(sport, "sending the RST", rc) : 0;
}

/* Whether the kernel has a socket for (peer:DPORT, us:sport): 1, 0, or -1.
 * One exact AF_INET request, one answer (a socket, or an error message
 * saying ENOENT). */
static int kernel_has(int nl, uint16_t sport)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} m = { 0 };
	m.nlh.nlmsg_len = sizeof(m);
	m.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	m.nlh.nlmsg_flags = NLM_F_REQUEST;
	m.req.sdiag_family = AF_INET;
	m.req.sdiag_protocol = IPPROTO_TCP;
	m.req.idiag_states = ~0u;
	m.req.id.idiag_sport = htons(DPORT);
	m.req.id.idiag_dport = htons(sport);
	memcpy(m.req.id.idiag_src, peer, 4);
	memcpy(m.req.id.idiag_dst, us, 4);
	m.req.id.idiag_cookie[0] = m.req.id.idiag_cookie[1] =
		INET_DIAG_NOCOOKIE;
	if (send(nl, &m, sizeof(m), 0) < 0)
		return -1;
	char buf[8192];
	ssize_t n = recv(nl, buf, sizeof(buf), 0);
	if (n < (ssize_t)sizeof(struct nlmsghdr))
		return -1;
	const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
	if (h->nlmsg_type != NLMSG_ERROR) {
		/* a listener offered for a tuple with no connection: none */
		const struct inet_diag_msg *d = NLMSG_DATA(h);
		return d->id.idiag_dport == htons(sport);
	}
	return ((const struct nlmsgerr *)NLMSG_DATA(h))->error == -ENOENT ? 0
									  : -1;
}

/* lab.connect's check of a source port: free if the kernel has no socket
 * for the 4-tuple, of either family. One request, as fp_diag_lookup makes:
 * asking again as AF_INET6 with v4-mapped addresses runs the same lookup. */
static int port_free(int nl, uint16_t sport)
{
	return kernel_has(nl, sport) == 0;
}

/* Accept and close what the listener holds (children already reset). */
int main(int argc, char **argv)
{
	struct link l;
	if (argc < 7 || argc > 8 || mac_arg(argv[3], l.src_mac) < 0 ||
	    mac_arg(argv[4], l.dst_mac) < 0) {
		fprintf(stderr, "usage: floor PACKET_FD LISTEN_FD SRC_MAC "
				"DST_MAC COUNT FIRST_PORT [check]\n");
		return 2;
	}
	l.fd = atoi(argv[1]);
	int listen_fd = atoi(argv[2]);
	long count = atol(argv[5]);
	int first = atoi(argv[6]);
	/* the listener non-blocking for drain; accept4 would not make it so */
	int fl = 1;
	if (ioctl(listen_fd, FIONBIO, &fl) < 0) {
		perror("floor: listener");
		return 1;
	}
	int nl = -1;
	if (argc == 8 &&
	    (nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG)) < 0) {
		perror("floor: sock_diag socket");
		return 1;
	}
	double t = now_s();
	for (long i = 0; i < count; i++) {
		uint16_t sport = (uint16_t)(first + i % 10000);
		if (nl >= 0 && !port_free(nl, sport)) {
			fprintf(stderr, "floor: port %u is not free\n", sport);
			return 1;
		}
		if (lifecycle(&l, sport, (uint32_t)(i * 2654435761u)) < 0)
			return 1;
		if (i % DRAIN_EVERY == DRAIN_EVERY - 1)
			drain(listen_fd);
	}
	double s = now_s() - t;
	drain(listen_fd);
	printf("floor: %ld lifecycles in %.3f s = %.0f per second\n", count, s,
	       (double)count / s);
	return 0;
}
