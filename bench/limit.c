/*
 * limit.c: the bare C limit of many lifecycles in flight against a Lab's
 * kernel, no finprobe library: what fp.AsyncLab's rate with as many in
 * flight is measured against (bench/lifecycle.py runs both in one Lab).
 *
 * The lifecycle is floor.c's (SYN -> SYN-ACK, ACK, FIN -> ACK, RST), IN_FLIGHT
 * of them at once. Frames go out in sendmmsg batches, come in by recvmmsg
 * batches on the Lab's AF_PACKET socket (its BPF filter lets TCP through
 * only, our own frames are ignored), and are matched through a flat table
 * indexed by our source port. Our side of the Lab has no address, so our
 * kernel builds no RST for the replies: no netdev-ingress drop is needed,
 * as it is over raw IP sockets on a host's own address.
 *
 *   limit PACKET_FD LISTEN_FD SRC_MAC DST_MAC TOTAL IN_FLIGHT FIRST_PORT
 *
 * Each slot uses the ports FIRST_PORT + slot + k * IN_FLIGHT in turn, over
 * PORT_ROUNDS rounds, so a port comes back only once its last reset child
 * has long left the kernel's tables. A frame lost (the packet socket's
 * queue overflowing) is sent again after RETRY_MS of silence.
 * Prints "limit: N lifecycles, M in flight, in S s = R per second".
 */
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

#define BATCH 64
#define RETRY_MS 200
#define MAX_SILENCES 25 /* 5 s of nothing: the run has failed */
#define PORT_ROUNDS 16
#define DRAIN_EVERY 64
#define RCVBUF (8 << 20) /* a burst of IN_FLIGHT answers must fit */

enum { IDLE, SYN_SENT, FIN_SENT };

struct slot {
	uint8_t state;
	uint16_t port;
	uint32_t iss, rcv_nxt;
};

struct out {
	int fd;
	uint8_t src_mac[6], dst_mac[6];
	uint8_t frames[BATCH][FRAME_MAX];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	int n;
};

/* Send the batch: every frame, or -1 (a send error). */
static int flush(struct out *o)
{
	int done = 0;
	while (done < o->n) {
		int n = sendmmsg(o->fd, o->msgs + done, (unsigned)(o->n - done),
				 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("limit: sendmmsg");
			return -1;
		}
		done += n;
	}
	o->n = 0;
	return 0;
}

/* Queue one frame (wire.h's build_tcp), sent when the batch is full or
 * before the next wait. */
static int queue_tcp(struct out *o, uint16_t sport, uint32_t seq, uint32_t ack,
		     uint8_t flags)
{
	if (o->n == BATCH && flush(o) < 0)
		return -1;
	o->iov[o->n].iov_len = build_tcp(o->frames[o->n], o->src_mac,
					 o->dst_mac, sport, seq, ack, flags);
	o->n++;
	return 0;
}

struct run {
	struct out *out;
	struct slot *slots;    /* IN_FLIGHT of them */
	struct slot **by_port; /* 65536: the slot a source port is in use by */
	long total, started, done;
	int in_flight, first;
};

static int start(struct run *r, struct slot *s)
{
	if (r->started == r->total) {
		s->state = IDLE;
		return 0;
	}
	long k = r->started++;
	int i = (int)(s - r->slots);
	s->port = (uint16_t)(r->first + i +
			     (k / r->in_flight % PORT_ROUNDS) * r->in_flight);
	s->iss = (uint32_t)k * 2654435761u;
	s->state = SYN_SENT;
	r->by_port[s->port] = s;
	return queue_tcp(r->out, s->port, s->iss, 0, TCP_S);
}

/* One frame from the kernel: the next step of the lifecycle it answers. */
static int on_frame(struct run *r, const uint8_t *f, size_t n)
{
	const uint8_t *ip = f + ETH;
	if (n < ETH + IP4 + 20 || f[12] != 0x08 || f[13] != 0 ||
	    (ip[0] >> 4) != 4 || ip[9] != 6)
		return 0;
	const uint8_t *tcp = ip + (ip[0] & 15) * 4;
	if (tcp + 20 > f + n || (tcp[0] << 8 | tcp[1]) != DPORT)
		return 0;
	struct slot *s = r->by_port[tcp[2] << 8 | tcp[3]];
	uint8_t flags = tcp[13];
	uint32_t seq = get32(tcp + 4), ack = get32(tcp + 8);
	if (!s)
		return 0;
	if (s->state == SYN_SENT && flags == (TCP_S | TCP_A) &&
	    ack == s->iss + 1) {
		s->rcv_nxt = seq + 1;
		s->state = FIN_SENT;
		return queue_tcp(r->out, s->port, s->iss + 1, s->rcv_nxt,
				 TCP_A) < 0 ||
				       queue_tcp(r->out, s->port, s->iss + 1,
						 s->rcv_nxt, TCP_F | TCP_A) < 0
			       ? -1
			       : 0;
	}
	if (s->state == FIN_SENT && flags == TCP_A && ack == s->iss + 2) {
		r->by_port[s->port] = NULL;
		r->done++;
		if (queue_tcp(r->out, s->port, s->iss + 2, 0, TCP_R) < 0)
			return -1;
		return start(r, s);
	}
	return 0; /* a retransmission, or an answer to a frame sent again */
}

/* After RETRY_MS of silence: each lifecycle's last frame again. */
static int retry(struct run *r)
{
	for (int i = 0; i < r->in_flight; i++) {
		struct slot *s = &r->slots[i];
		int rc = 0;
		if (s->state == SYN_SENT)
			rc = queue_tcp(r->out, s->port, s->iss, 0, TCP_S);
		else if (s->state == FIN_SENT)
			rc = queue_tcp(r->out, s->port, s->iss + 1, s->rcv_nxt,
				       TCP_F | TCP_A);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int loop(struct run *r, int listen_fd)
{
	static uint8_t bufs[BATCH][2048];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	int silences = 0;
	long drained = 0;
	for (int i = 0; i < r->in_flight; i++)
		if (start(r, &r->slots[i]) < 0)
			return -1;
	while (r->done < r->total) {
		if (flush(r->out) < 0)
			return -1;
		for (int i = 0; i < BATCH; i++) {
			iov[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
			msgs[i] = (struct mmsghdr){ .msg_hdr = {
							    .msg_iov = &iov[i],
							    .msg_iovlen = 1 } };
		}
		int n = recvmmsg(r->out->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			perror("limit: recvmmsg");
			return -1;
		}
		if (n <= 0) {
			struct pollfd p = { .fd = r->out->fd,
					    .events = POLLIN };
			if (poll(&p, 1, RETRY_MS) == 0) {
				if (++silences == MAX_SILENCES) {
					fprintf(stderr,
						"limit: stalled, %ld of %ld done\n",
						r->done, r->total);
					return -1;
				}
				if (retry(r) < 0)
					return -1;
			}
			continue;
		}
		silences = 0;
		for (int i = 0; i < n; i++)
			if (on_frame(r, bufs[i], msgs[i].msg_len) < 0)
				return -1;
		if (r->done - drained >= DRAIN_EVERY) {
			drain(listen_fd);
			drained = r->done;
		}
	}
	return flush(r->out);
}

int main(int argc, char **argv)
{
	static struct out out;
	struct run r = { .out = &out };
	if (argc != 8 || mac_arg(argv[3], out.src_mac) < 0 ||
	    mac_arg(argv[4], out.dst_mac) < 0) {
		fprintf(stderr, "usage: limit PACKET_FD LISTEN_FD SRC_MAC "
				"DST_MAC TOTAL IN_FLIGHT FIRST_PORT\n");
		return 2;
	}
	out.fd = atoi(argv[1]);
	int listen_fd = atoi(argv[2]);
	r.total = atol(argv[5]);
	r.in_flight = atoi(argv[6]);
	r.first = atoi(argv[7]);
	if (r.in_flight < 1 || r.total < 1 ||
	    r.first + r.in_flight * PORT_ROUNDS > 65536) {
		fprintf(stderr, "limit: TOTAL, IN_FLIGHT or FIRST_PORT out of "
				"range\n");
		return 2;
	}
	for (int i = 0; i < BATCH; i++) {
		out.iov[i].iov_base = out.frames[i];
		out.msgs[i].msg_hdr.msg_iov = &out.iov[i];
		out.msgs[i].msg_hdr.msg_iovlen = 1;
	}
	/* the Lab's socket, shared with its engine: its buffer set back after */
	int old_rcvbuf, big = RCVBUF, fl = 1;
	socklen_t len = sizeof(old_rcvbuf);
	if (getsockopt(out.fd, SOL_SOCKET, SO_RCVBUF, &old_rcvbuf, &len) < 0 ||
	    setsockopt(out.fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) <
		    0 ||
	    ioctl(listen_fd, FIONBIO, &fl) < 0) {
		perror("limit: sockets");
		return 1;
	}
	r.slots = calloc((size_t)r.in_flight, sizeof(*r.slots));
	r.by_port = calloc(65536, sizeof(*r.by_port));
	if (!r.slots || !r.by_port) {
		perror("limit");
		return 1;
	}
	double t = now_s();
	int rc = loop(&r, listen_fd);
	double s = now_s() - t;
	drain(listen_fd);
	old_rcvbuf /= 2; /* the kernel reports twice what was set */
	setsockopt(out.fd, SOL_SOCKET, SO_RCVBUFFORCE, &old_rcvbuf,
		   sizeof(old_rcvbuf));
	free(r.slots);
	free(r.by_port);
	if (rc < 0)
		return 1;
	printf("limit: %ld lifecycles, %d in flight, in %.3f s = %.0f per "
	       "second\n",
	       r.total, r.in_flight, s, (double)r.total / s);
	return 0;
}
