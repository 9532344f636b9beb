/*
 * link.c: where IP packets go in and out, behind one small ops table.
 *
 *  - packet: AF_PACKET on an Ethernet device. A classic BPF filter lets
 *    only IPv4/IPv6 TCP frames through, outgoing copies are ignored, and
 *    each frame is stamped by the kernel on arrival (SO_TIMESTAMPNS) and
 *    read in batches (recvmmsg). Frames the kernel left with a partial
 *    checksum (offload) are completed, so what we hand on verifies.
 *  - pair: two in-memory links joined to each other, for unit tests.
 *
 * Call order: fp_link_*_open -> fp_link_send / fp_link_recv (poll on
 * fp_link_fd) -> fp_link_close.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "finprobe.h"

#define BATCH 32
#define FRAME_ROOM 9216 /* jumbo frames; the lab's veth has offloads off */
#define ETH_HEADER 14

struct link_ops {
	int (*send)(struct fp_link *link, const uint8_t *pkt, size_t len);
	int (*recv)(struct fp_link *link, struct fp_frame *frames, int max);
	void (*close)(struct fp_link *link);
};

struct fp_link {
	const struct link_ops *ops;
	int fd;
	/* packet */
	uint8_t src_mac[6], dst_mac[6];
	uint8_t (*frames)[FRAME_ROOM];
	/* pair: what the other end sent us, in a ring */
	struct fp_link *other;
	uint8_t (*ring)[FRAME_ROOM];
	size_t ring_len[BATCH];
	uint64_t ring_ts[BATCH];
	unsigned head, count;
};

uint64_t fp_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Kernel timestamps are CLOCK_REALTIME; traces are CLOCK_MONOTONIC. */
static uint64_t realtime_to_monotonic(const struct timespec *rt)
{
	struct timespec now_rt;
	clock_gettime(CLOCK_REALTIME, &now_rt);
	int64_t age = ((int64_t)now_rt.tv_sec - rt->tv_sec) * 1000000000 +
		      (now_rt.tv_nsec - rt->tv_nsec);
	uint64_t now = fp_now_ns();
	return age > 0 && (uint64_t)age < now ? now - (uint64_t)age : now;
}

/* ---- packet backend -------------------------------------------------------- */

/*
 * Accept only IPv4 or IPv6 frames carrying TCP (IPv6 with TCP right after
 * the fixed header; extension headers are rare enough on a lab link).
 *   ldh [12]; jeq #0x800 -> v4; jeq #0x86dd -> v6; ret 0
 *   v4: ldb [23]; jeq #6 -> ok; ret 0
 *   v6: ldb [20]; jeq #6 -> ok; ret 0
 */
static struct sock_filter tcp_only[] = {
	BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 3),
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 4, 5),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 3),
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 20),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0x40000),
	BPF_STMT(BPF_RET | BPF_K, 0),
};

static int packet_send(struct fp_link *link, const uint8_t *pkt, size_t len)
{
	uint8_t eth[ETH_HEADER];
	memcpy(eth, link->dst_mac, 6);
	memcpy(eth + 6, link->src_mac, 6);
	uint16_t type = (pkt[0] >> 4) == 6 ? ETH_P_IPV6 : ETH_P_IP;
	eth[12] = (uint8_t)(type >> 8);
	eth[13] = (uint8_t)type;
	struct iovec iov[2] = {{eth, ETH_HEADER}, {(void *)pkt, len}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	return sendmsg(link->fd, &msg, 0) < 0 ? -errno : 0;
}

struct recv_batch {
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char control[BATCH][CMSG_SPACE(sizeof(struct timespec)) +
			    CMSG_SPACE(sizeof(struct tpacket_auxdata))];
};

static void frame_from_msg(struct fp_frame *f, uint8_t *frame, struct mmsghdr *m)
{
	int partial = 0;
	f->ts_ns = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr); c; c = CMSG_NXTHDR(&m->msg_hdr, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS)
			f->ts_ns = realtime_to_monotonic((struct timespec *)CMSG_DATA(c));
		if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
			struct tpacket_auxdata aux;
			memcpy(&aux, CMSG_DATA(c), sizeof(aux));
			partial = !!(aux.tp_status & TP_STATUS_CSUMNOTREADY);
		}
	}
	if (!f->ts_ns)
		f->ts_ns = fp_now_ns();
	f->pkt = frame + ETH_HEADER;
	f->len = m->msg_len > ETH_HEADER ? m->msg_len - ETH_HEADER : 0;
	if (m->msg_hdr.msg_flags & MSG_TRUNC)
		f->len = 0; /* the engine counts it as truncated */
	else if (partial)
		fp_segment_fill_checksum(f->pkt, f->len);
}

static int packet_recv(struct fp_link *link, struct fp_frame *frames, int max)
{
	struct recv_batch b;
	if (max > BATCH)
		max = BATCH;
	for (int i = 0; i < max; i++) {
		b.iov[i] = (struct iovec){link->frames[i], FRAME_ROOM};
		b.msgs[i].msg_hdr = (struct msghdr){
			.msg_iov = &b.iov[i], .msg_iovlen = 1,
			.msg_control = b.control[i], .msg_controllen = sizeof(b.control[i])};
	}
	int n = recvmmsg(link->fd, b.msgs, (unsigned)max, MSG_DONTWAIT, NULL);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
	for (int i = 0; i < n; i++)
		frame_from_msg(&frames[i], link->frames[i], &b.msgs[i]);
	return n;
}

static void packet_close(struct fp_link *link) { free(link->frames); }

static const struct link_ops packet_ops = {packet_send, packet_recv, packet_close};

static int packet_configure(int fd)
{
	int one = 1, rcvbuf = 8 << 20;
	struct sock_fprog prog = {sizeof(tcp_only) / sizeof(tcp_only[0]), tcp_only};
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0)
		return -errno;
	/* A big buffer rides out bursts while no one polls; FORCE needs
	 * CAP_NET_ADMIN, which a user-namespace lab lacks: then take the cap. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	return 0;
}

/* Frames that arrived before the filter was attached may be anything. */
static void packet_drain(int fd)
{
	uint8_t junk[64];
	while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_TRUNC) >= 0)
		;
}

int fp_link_packet_open(struct fp_link **out, int fd, const uint8_t src_mac[6],
			const uint8_t dst_mac[6])
{
	struct fp_link *link = calloc(1, sizeof(*link));
	if (!link)
		return -ENOMEM;
	link->frames = malloc(sizeof(*link->frames) * BATCH);
	int err = link->frames ? packet_configure(fd) : -ENOMEM;
	if (err) {
		free(link->frames);
		free(link);
		return err;
	}
	packet_drain(fd);
	link->ops = &packet_ops;
	link->fd = fd;
	memcpy(link->src_mac, src_mac, 6);
	memcpy(link->dst_mac, dst_mac, 6);
	*out = link;
	return 0;
}

/* ---- pair backend ---------------------------------------------------------- */

static int pair_send(struct fp_link *link, const uint8_t *pkt, size_t len)
{
	struct fp_link *to = link->other;
	if (!to)
		return -ENOTCONN;
	if (len > FRAME_ROOM)
		return -EMSGSIZE;
	if (to->count == BATCH)
		return 0; /* a full queue drops, as a real link would */
	unsigned slot = (to->head + to->count) % BATCH;
	memcpy(to->ring[slot], pkt, len);
	to->ring_len[slot] = len;
	to->ring_ts[slot] = fp_now_ns();
	to->count++;
	uint64_t one = 1;
	return write(to->fd, &one, sizeof(one)) < 0 ? -errno : 0;
}

/* Frames handed out stay valid until the next call: they are copied to
 * frames[] (the ring slots may be reused by the other end's next send). */
static int pair_recv(struct fp_link *link, struct fp_frame *frames, int max)
{
	uint64_t ignored;
	int n = 0;
	if (read(link->fd, &ignored, sizeof(ignored)) < 0 && errno != EAGAIN)
		return -errno;
	while (link->count && n < max && n < BATCH) {
		memcpy(link->frames[n], link->ring[link->head], link->ring_len[link->head]);
		frames[n] = (struct fp_frame){link->frames[n], link->ring_len[link->head],
					      link->ring_ts[link->head]};
		link->head = (link->head + 1) % BATCH;
		link->count--;
		n++;
	}
	return n;
}

static void pair_close(struct fp_link *link)
{
	if (link->other)
		link->other->other = NULL;
	close(link->fd);
	free(link->ring);
	free(link->frames);
}

static const struct link_ops pair_ops = {pair_send, pair_recv, pair_close};

static struct fp_link *pair_end(void)
{
	struct fp_link *link = calloc(1, sizeof(*link));
	if (!link)
		return NULL;
	link->ops = &pair_ops;
	link->ring = malloc(sizeof(*link->ring) * BATCH);
	link->frames = malloc(sizeof(*link->frames) * BATCH);
	link->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!link->ring || !link->frames || link->fd < 0) {
		if (link->fd >= 0)
			close(link->fd);
		free(link->ring);
		free(link->frames);
		free(link);
		return NULL;
	}
	return link;
}

int fp_link_pair_open(struct fp_link **a, struct fp_link **b)
{
	*a = pair_end();
	*b = *a ? pair_end() : NULL;
	if (!*b) {
		fp_link_close(*a);
		return -ENOMEM;
	}
	(*a)->other = *b;
	(*b)->other = *a;
	return 0;
}

/* ---- the public face ------------------------------------------------------- */

int fp_link_send(struct fp_link *link, const uint8_t *pkt, size_t len)
{
	if (len == 0)
		return -EINVAL;
	return link->ops->send(link, pkt, len);
}

int fp_link_recv(struct fp_link *link, struct fp_frame *frames, int max)
{
	return link->ops->recv(link, frames, max);
}

int fp_link_fd(const struct fp_link *link) { return link->fd; }

void fp_link_close(struct fp_link *link)
{
	if (!link)
		return;
	link->ops->close(link);
	free(link);
}
