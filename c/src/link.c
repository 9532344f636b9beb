/*
 * link.c: where IP packets go in and out, behind one small ops table.
 *
 *  - packet: AF_PACKET on an Ethernet device. A classic BPF filter lets
 *    only IPv4/IPv6 TCP frames through, outgoing copies are ignored, and
 *    each frame is stamped by the kernel on arrival (SO_TIMESTAMPNS) and
 *    read in batches (recvmmsg). Frames the kernel left with a partial
 *    checksum (offload) are completed, so what we hand on verifies.
 *    On a stack lab's TAP (fp_link_packet_answer) ARP and ICMPv6 pass too:
 *    the link answers who-has / neighbour solicitation for our own
 *    address and learns the stack's MAC (fp_link_packet_resolve).
 *  - raw: towards a remote target. Raw IP sockets send (IPPROTO_RAW, the
 *    header ours), so the kernel routes and resolves neighbours; AF_PACKET
 *    SOCK_DGRAM on the outgoing interface receives IP packets without their
 *    link header, through a BPF filter built for the target, and stamped and
 *    batched as above. Source and interface come from RTM_GETROUTE.
 *  - pair: two in-memory links joined to each other, for unit tests.
 *
 * Call order: fp_link_*_open -> fp_link_send / fp_link_recv (poll on
 * fp_link_fd) -> fp_link_close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "finprobe.h"
#include "tuple.h"

#define BATCH 32
#define FRAME_ROOM 9216 /* jumbo frames; the lab's veth has offloads off */
#define ETH_HEADER 14
#define RAW_ROOM 65536 /* a remote target's segments may come GRO-merged */

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
	/* raw: fd captures, send_fd sends; frames land in bufs */
	int send_fd, ifindex;
	uint8_t family; /* raw; packet: 4 or 6 once answering neighbours */
	/* packet on a stack's TAP: our address, and the one being resolved */
	uint8_t local[16], peer[16];
	int resolved; /* dst_mac is the peer's answer */
	uint8_t *bufs;
};

uint64_t fp_now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
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
	struct iovec iov[2] = { { eth, ETH_HEADER }, { (void *)pkt, len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	return sendmsg(link->fd, &msg, 0) < 0 ? -errno : 0;
}

struct recv_batch {
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char control[BATCH][CMSG_SPACE(sizeof(struct timespec)) +
			    CMSG_SPACE(sizeof(struct tpacket_auxdata))];
};

/* hdr: link-layer bytes before the IP header (ETH_HEADER, or 0 for raw). */
static void frame_from_msg(struct fp_frame *f, uint8_t *frame,
			   struct mmsghdr *m, size_t hdr)
{
	int partial = 0;
	f->ts_ns = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr); c;
	     c = CMSG_NXTHDR(&m->msg_hdr, c)) {
		if (c->cmsg_level == SOL_SOCKET &&
		    c->cmsg_type == SO_TIMESTAMPNS)
			f->ts_ns = realtime_to_monotonic(
				(struct timespec *)CMSG_DATA(c));
		if (c->cmsg_level == SOL_PACKET &&
		    c->cmsg_type == PACKET_AUXDATA) {
			struct tpacket_auxdata aux;
			memcpy(&aux, CMSG_DATA(c), sizeof(aux));
			partial = !!(aux.tp_status & TP_STATUS_CSUMNOTREADY);
		}
	}
	if (!f->ts_ns)
		f->ts_ns = fp_now_ns();
	f->pkt = frame + hdr;
	f->len = m->msg_len > hdr ? m->msg_len - hdr : 0;
	if (m->msg_hdr.msg_flags & MSG_TRUNC)
		f->len = 0; /* the engine counts it as truncated */
	else if (partial)
		fp_segment_fill_checksum(f->pkt, f->len);
}

/* A batch from fd into bufs (room bytes apiece), frames starting hdr bytes in. */
static int recv_batch(int fd, uint8_t *bufs, size_t room, size_t hdr,
		      struct fp_frame *frames, int max)
{
	struct recv_batch b;
	if (max > BATCH)
		max = BATCH;
	for (int i = 0; i < max; i++) {
		b.iov[i] = (struct iovec){ bufs + (size_t)i * room, room };
		b.msgs[i].msg_hdr =
			(struct msghdr){ .msg_iov = &b.iov[i],
					 .msg_iovlen = 1,
					 .msg_control = b.control[i],
					 .msg_controllen =
						 sizeof(b.control[i]) };
	}
	int n = recvmmsg(fd, b.msgs, (unsigned)max, MSG_DONTWAIT, NULL);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
	for (int i = 0; i < n; i++)
		frame_from_msg(&frames[i], bufs + (size_t)i * room, &b.msgs[i],
			       hdr);
	return n;
}

/* ---- neighbours on a stack's TAP ------------------------------------------- */

/*
 * On a stack lab's TAP no kernel resolves addresses for us, so the link
 * does the least it can: it answers ARP who-has and neighbour solicitation
 * for finprobe's own address, and asks for the stack's. Answering for our
 * address is the only thing finprobe ever says on its own; every TCP
 * segment stays the caller's.
 */
#define ARP_LEN 28
#define ICMP6_ND_LEN 32 /* NS/NA with one link-layer address option */
#define ND_SOLICIT 135
#define ND_ADVERT 136

static const uint8_t arp_head[6] = { 0, 1, 0x08, 0, 6, 4 }; /* Ethernet, IPv4 */

static int send_frame(struct fp_link *link, const uint8_t *dst_mac,
		      uint16_t type, const uint8_t *body, size_t len)
{
	uint8_t eth[ETH_HEADER];
	memcpy(eth, dst_mac, 6);
	memcpy(eth + 6, link->src_mac, 6);
	eth[12] = (uint8_t)(type >> 8);
	eth[13] = (uint8_t)type;
	struct iovec iov[2] = { { eth, ETH_HEADER }, { (void *)body, len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	return sendmsg(link->fd, &msg, 0) < 0 ? -errno : 0;
}

static int arp_send(struct fp_link *link, uint16_t op, const uint8_t *to_mac,
		    const uint8_t *target_mac, const uint8_t *target_ip)
{
	uint8_t a[ARP_LEN];
	memcpy(a, arp_head, 6);
	a[6] = 0;
	a[7] = (uint8_t)op;
	memcpy(a + 8, link->src_mac, 6);
	memcpy(a + 14, link->local, 4);
	memcpy(a + 18, target_mac, 6);
	memcpy(a + 24, target_ip, 4);
	return send_frame(link, to_mac, ETH_P_ARP, a, sizeof(a));
}

static void arp_input(struct fp_link *link, const uint8_t *a, size_t len)
{
	if (link->family != 4 || len < ARP_LEN || memcmp(a, arp_head, 6) != 0)
		return;
	if (a[7] == 1 && memcmp(a + 24, link->local, 4) == 0)
		arp_send(link, 2, a + 8, a + 8, a + 14);
	else if (a[7] == 2 && memcmp(a + 14, link->peer, 4) == 0) {
		memcpy(link->dst_mac, a + 8, 6);
		link->resolved = 1;
	}
}

static uint16_t icmp6_checksum(const uint8_t *ip6, const uint8_t *icmp,
			       size_t len)
{
	uint32_t sum = (uint32_t)len + 58;
	for (int i = 8; i < 40; i += 2) /* source and destination */
		sum += (uint32_t)(ip6[i] << 8 | ip6[i + 1]);
	for (size_t i = 0; i < len; i += 2)
		sum += (uint32_t)(icmp[i] << 8 |
				  (i + 1 < len ? icmp[i + 1] : 0));
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* An NS or NA about target, from our address to dst, with our MAC in the
 * link-layer address option (source for NS, target for NA). */
static int nd_send(struct fp_link *link, uint8_t type, uint8_t flags,
		   const uint8_t *to_mac, const uint8_t *dst,
		   const uint8_t *target)
{
	uint8_t p[40 + ICMP6_ND_LEN] = { 0x60 };
	uint8_t *icmp = p + 40;
	p[5] = ICMP6_ND_LEN;
	p[6] = 58;
	p[7] = 255; /* RFC 4861: anything else is dropped */
	memcpy(p + 8, link->local, 16);
	memcpy(p + 24, dst, 16);
	icmp[0] = type;
	icmp[4] = flags;
	memcpy(icmp + 8, target, 16);
	icmp[24] = type == ND_SOLICIT ? 1 : 2;
	icmp[25] = 1; /* 8 bytes */
	memcpy(icmp + 26, link->src_mac, 6);
	uint16_t sum = icmp6_checksum(p, icmp, ICMP6_ND_LEN);
	icmp[2] = (uint8_t)(sum >> 8);
	icmp[3] = (uint8_t)sum;
	return send_frame(link, to_mac, ETH_P_IPV6, p, sizeof(p));
}

/* The MAC of an ND option of type opt in an NS/NA of len bytes, or NULL. */
static const uint8_t *nd_option(const uint8_t *icmp, size_t len, uint8_t opt)
{
	for (size_t off = 24; off + 8 <= len && icmp[off + 1];
	     off += (size_t)icmp[off + 1] * 8)
		if (icmp[off] == opt)
			return icmp + off + 2;
	return NULL;
}

static void nd_input(struct fp_link *link, const uint8_t *p, size_t len,
		     const uint8_t *eth_src)
{
	static const uint8_t unspecified[16],
		all_nodes[16] = { 0xff, 2, [15] = 1 };
	static const uint8_t all_nodes_mac[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	const uint8_t *icmp = p + 40;
	if (link->family != 6 || len < 40 + 24 || p[6] != 58 || p[7] != 255)
		return;
	size_t icmp_len = len - 40;
	if (icmp[0] == ND_SOLICIT && memcmp(icmp + 8, link->local, 16) == 0) {
		/* RFC 4861 §7.2.4: to the solicitor, or all nodes from DAD */
		int dad = memcmp(p + 8, unspecified, 16) == 0;
		nd_send(link, ND_ADVERT, dad ? 0x20 : 0x60,
			dad ? all_nodes_mac : eth_src, dad ? all_nodes : p + 8,
			link->local);
	} else if (icmp[0] == ND_ADVERT &&
		   memcmp(icmp + 8, link->peer, 16) == 0) {
		const uint8_t *mac = nd_option(icmp, icmp_len, 2);
		memcpy(link->dst_mac, mac ? mac : eth_src, 6);
		link->resolved = 1;
	}
}

/* Whether f was a neighbour frame (ARP, ICMPv6), now dealt with; only a
 * stack's link lets them through its filter. */
static int neighbour_frame(struct fp_link *link, const struct fp_frame *f)
{
	const uint8_t *eth = f->pkt - ETH_HEADER;
	uint16_t type = (uint16_t)(eth[12] << 8 | eth[13]);
	if (type == ETH_P_ARP) {
		arp_input(link, f->pkt, f->len);
		return 1;
	}
	if (type == ETH_P_IPV6 && f->len >= 40 && f->pkt[6] == 58) {
		nd_input(link, f->pkt, f->len, eth + 6);
		return 1;
	}
	return 0;
}

static int packet_recv(struct fp_link *link, struct fp_frame *frames, int max)
{
	int n, kept;
	do {
		n = recv_batch(link->fd, link->frames[0], FRAME_ROOM,
			       ETH_HEADER, frames, max);
		if (n <= 0 || !link->family)
			return n;
		kept = 0;
		for (int i = 0; i < n; i++)
			if (!neighbour_frame(link, &frames[i]))
				frames[kept++] = frames[i];
		/* a full batch of ARP alone must not look like "no more" */
	} while (kept == 0 && n == (max < BATCH ? max : BATCH));
	return kept;
}

static void packet_close(struct fp_link *link)
{
	free(link->frames);
}

static const struct link_ops packet_ops = { packet_send, packet_recv,
					    packet_close };

static int packet_configure(int fd, struct sock_fprog prog)
{
	int one = 1, rcvbuf = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) <
		    0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one,
		       sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0)
		return -errno;
	/* A big buffer rides out bursts while no one polls; FORCE needs
	 * CAP_NET_ADMIN, which a user-namespace lab lacks: then take the cap. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
		       sizeof(rcvbuf)) < 0)
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

/*
 * What packet_recv lets through on a stack's TAP:
 *   0: ldh [12]; 1: jeq ARP -> 10; 2: jeq IPv4 ? 3 : 6
 *   3: ldb [23]; 4: jeq TCP -> 10; 5: ret 0
 *   6: jeq IPv6 ? 7 : 11; 7: ldb [20]; 8: jeq TCP -> 10; 9: jeq ICMPv6 ? 10 : 11
 *  10: ret 0x40000; 11: ret 0
 */
static struct sock_filter tcp_and_neighbours[] = {
	BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_ARP, 8, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 3),
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 5, 0),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 4),
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 20),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 58, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0x40000),
	BPF_STMT(BPF_RET | BPF_K, 0),
};

int fp_link_packet_answer(struct fp_link *link, uint8_t family,
			  const uint8_t *local)
{
	if (link->ops != &packet_ops || (family != 4 && family != 6))
		return -EINVAL;
	struct sock_fprog prog = { sizeof(tcp_and_neighbours) /
					   sizeof(tcp_and_neighbours[0]),
				   tcp_and_neighbours };
	if (setsockopt(link->fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog,
		       sizeof(prog)) < 0)
		return -errno;
	link->family = family;
	memcpy(link->local, local, family == 6 ? 16 : 4);
	return 0;
}

/* Ask again every RESOLVE_EVERY_MS: a stack still starting drops the first. */
#define RESOLVE_EVERY_MS 50

static int resolve_ask(struct fp_link *link)
{
	static const uint8_t
		broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
		none[6];
	if (link->family == 4)
		return arp_send(link, 1, broadcast, none, link->peer);
	/* the solicited-node multicast address of peer, RFC 4291 §2.7.1 */
	uint8_t group[16] = { 0xff, 2, [11] = 1, 0xff };
	uint8_t mac[6] = { 0x33, 0x33, 0xff };
	memcpy(group + 13, link->peer + 13, 3);
	memcpy(mac + 3, link->peer + 13, 3);
	return nd_send(link, ND_SOLICIT, 0, mac, group, link->peer);
}

int fp_link_packet_resolve(struct fp_link *link, const uint8_t *peer,
			   int timeout_ms, uint8_t mac[6])
{
	struct fp_frame frames[BATCH];
	if (link->ops != &packet_ops || !link->family || timeout_ms < 0)
		return -EINVAL;
	memcpy(link->peer, peer, link->family == 6 ? 16 : 4);
	link->resolved = 0;
	uint64_t now = fp_now_ns(), next = now,
		 end = now + (uint64_t)timeout_ms * 1000000u;
	for (;;) {
		if (now >= next) {
			/* -ENOBUFS: no one has the TAP open yet (tun drops) */
			int err = resolve_ask(link);
			if (err && err != -ENOBUFS)
				return err;
			next = now + RESOLVE_EVERY_MS * 1000000u;
		}
		/* TCP frames read here are dropped: before the stack is
		 * known to be there no connection of ours exists */
		int n = packet_recv(link, frames, BATCH);
		if (n < 0)
			return n;
		if (link->resolved) {
			memcpy(mac, link->dst_mac, 6);
			return 0;
		}
		if (now >= end)
			return -ETIMEDOUT;
		uint64_t until = next < end ? next : end;
		struct pollfd p = { link->fd, POLLIN, 0 };
		if (poll(&p, 1, (int)((until - now + 999999u) / 1000000u)) <
			    0 &&
		    errno != EINTR)
			return -errno;
		now = fp_now_ns();
	}
}

int fp_link_packet_open(struct fp_link **out, int fd, const uint8_t src_mac[6],
			const uint8_t dst_mac[6])
{
	struct fp_link *link = calloc(1, sizeof(*link));
	if (!link)
		return -ENOMEM;
	link->frames = malloc(sizeof(*link->frames) * BATCH);
	struct sock_fprog prog = { sizeof(tcp_only) / sizeof(tcp_only[0]),
				   tcp_only };
	int err = link->frames ? packet_configure(fd, prog) : -ENOMEM;
	/* Straight to the driver: a veth end that came up before its peer has
	 * no qdisc but noop (which drops) until the kernel's linkwatch work
	 * attaches one, up to a second later, so a fresh lab's first frames
	 * would vanish. The qdisc does nothing for us anyway. */
	int one = 1;
	if (!err && setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one,
			       sizeof(one)) < 0)
		err = -errno;
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

/* ---- raw backend ----------------------------------------------------------- */

/* The route to remote, as the kernel would take it (RTM_GETROUTE). */
struct route {
	uint8_t alen, type, has_src;
	uint8_t src[16];
	int oif;
};

static int route_attr(const struct nlattr *a, void *data)
{
	struct route *r = data;
	if (mnl_attr_get_type(a) == RTA_OIF &&
	    mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
		r->oif = (int)mnl_attr_get_u32(a);
	if (mnl_attr_get_type(a) == RTA_PREFSRC &&
	    mnl_attr_get_payload_len(a) == r->alen) {
		memcpy(r->src, mnl_attr_get_payload(a), r->alen);
		r->has_src = 1;
	}
	return MNL_CB_OK;
}

static int route_answer(const struct nlmsghdr *nlh, void *data)
{
	struct route *r = data;
	if (nlh->nlmsg_type != RTM_NEWROUTE ||
	    mnl_nlmsg_get_payload_len(nlh) < sizeof(struct rtmsg))
		return MNL_CB_OK;
	r->type = ((struct rtmsg *)mnl_nlmsg_get_payload(nlh))->rtm_type;
	return mnl_attr_parse(nlh, sizeof(struct rtmsg), route_attr, r);
}

static int route_query(struct mnl_socket *nl, uint8_t family,
		       const uint8_t *remote, const uint8_t *local, int oif,
		       struct route *r)
{
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = 1;
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = family == 6 ? AF_INET6 : AF_INET;
	rtm->rtm_dst_len = (uint8_t)(r->alen * 8);
	mnl_attr_put(nlh, RTA_DST, r->alen, remote);
	if (local) {
		rtm->rtm_src_len = (uint8_t)(r->alen * 8);
		mnl_attr_put(nlh, RTA_SRC, r->alen, local);
	}
	if (oif)
		mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)oif);
	/* as our packets will be routed */
	mnl_attr_put_u32(nlh, RTA_MARK, FP_RAW_MARK);
	/* the kernel answers at once; a lost answer must not hang the caller */
	struct timeval wait = { .tv_sec = 5 };
	if (setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &wait,
		       sizeof(wait)) < 0 ||
	    mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
	    mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT
							       : -errno;
	if (mnl_cb_run(buf, (size_t)n, 1, mnl_socket_get_portid(nl),
		       route_answer, r) < 0)
		return errno ? -errno : -EIO;
	return 0;
}

/* Whether addr is an address of this host: only those bind. */
static int address_is_local(uint8_t family, const uint8_t *addr)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = sizeof(struct sockaddr_in);
	if (family == 6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
	}
	int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int err = bind(fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
	close(fd);
	return err;
}

/* Fill an all-zero local and a zero *ifindex from the route to remote. */
static int route_lookup(uint8_t family, const uint8_t *remote, uint8_t *local,
			int *ifindex)
{
	static const uint8_t zero[16];
	struct route r = { .alen = addr_len(family) };
	int given = memcmp(local, zero, r.alen) != 0;
	int err = given ? address_is_local(family, local) : 0;
	if (err)
		return err;
	struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	err = route_query(nl, family, remote, given ? local : NULL, *ifindex,
			  &r);
	mnl_socket_close(nl);
	if (err)
		return err;
	if (!r.oif)
		return -ENETUNREACH;
	if (r.type != RTN_UNICAST && r.type != RTN_LOCAL)
		/* unreachable, blackhole, prohibit routes */
		return -EHOSTUNREACH;
	if (!given && !r.has_src)
		return -EADDRNOTAVAIL;
	if (!given)
		memcpy(local, r.src, r.alen);
	if (!*ifindex)
		*ifindex = r.oif;
	return 0;
}

/* A classic BPF program being built; DROP marks jumps to its final "ret 0". */
#define FILTER_MAX 40
#define DROP 0xff

struct filter {
	struct sock_filter ins[FILTER_MAX];
	unsigned short n;
};

static void op(struct filter *f, uint16_t code, uint32_t k)
{
	f->ins[f->n++] = (struct sock_filter)BPF_STMT(code, k);
}

/* Go on if A == k, else drop. */
static void need(struct filter *f, uint32_t k)
{
	f->ins[f->n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
						      k, 0, DROP);
}

/* Go on if the address at off (4 or 16 bytes) is addr, else drop. */
static void need_address(struct filter *f, uint32_t off, const uint8_t *addr,
			 size_t len)
{
	for (size_t i = 0; i < len; i += 4) {
		uint32_t word;
		memcpy(&word, addr + i, 4);
		op(f, BPF_LD | BPF_W | BPF_ABS, off + (uint32_t)i);
		need(f, ntohl(word)); /* ld loads in host order */
	}
}

static void finish(struct filter *f)
{
	op(f, BPF_RET | BPF_K, 0x40000);
	op(f, BPF_RET | BPF_K, 0);
	for (unsigned short i = 0; i + 2 < f->n; i++) {
		uint8_t to_drop = (uint8_t)(f->n - 1 - (i + 1));
		if (BPF_CLASS(f->ins[i].code) != BPF_JMP)
			continue;
		if (f->ins[i].jt == DROP)
			f->ins[i].jt = to_drop;
		if (f->ins[i].jf == DROP)
			f->ins[i].jf = to_drop;
	}
}

/*
 * TCP from (remote, port) to local, offsets from the IP header (SOCK_DGRAM):
 *   v4: version 4, protocol 6, not a later fragment, saddr, daddr,
 *       then the source port at 4 * IHL;
 *   v6: version 6, next header 6 (TCP right after the fixed header, as
 *       targets send it), saddr, daddr, source port at 40.
 */
static void raw_filter(struct filter *f, uint8_t family, const uint8_t *remote,
		       uint16_t port, const uint8_t *local)
{
	f->n = 0;
	op(f, BPF_LD | BPF_B | BPF_ABS, 0);
	op(f, BPF_ALU | BPF_AND | BPF_K, 0xf0);
	if (family == 4) {
		need(f, 0x40);
		op(f, BPF_LD | BPF_B | BPF_ABS, 9);
		need(f, IPPROTO_TCP);
		op(f, BPF_LD | BPF_H | BPF_ABS, 6);
		f->ins[f->n++] = (struct sock_filter)BPF_JUMP(
			BPF_JMP | BPF_JSET | BPF_K, 0x1fff, DROP, 0);
		need_address(f, 12, remote, 4);
		need_address(f, 16, local, 4);
		op(f, BPF_LDX | BPF_B | BPF_MSH, 0);
		op(f, BPF_LD | BPF_H | BPF_IND, 0);
	} else {
		need(f, 0x60);
		op(f, BPF_LD | BPF_B | BPF_ABS, 6);
		need(f, IPPROTO_TCP);
		need_address(f, 8, remote, 16);
		need_address(f, 24, local, 16);
		op(f, BPF_LD | BPF_H | BPF_ABS, 40);
	}
	need(f, port);
	finish(f);
}

static int raw_send(struct fp_link *link, const uint8_t *pkt, size_t len)
{
	struct sockaddr_storage to = { 0 };
	socklen_t to_len;
	if ((pkt[0] >> 4) != link->family ||
	    len < (link->family == 6 ? 40u : 20u))
		return -EINVAL;
	if (link->family == 6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&to;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, pkt + 24, 16);
		if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr))
			sin6->sin6_scope_id = (uint32_t)link->ifindex;
		to_len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&to;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, pkt + 16, 4);
		to_len = sizeof(*sin);
	}
	return sendto(link->send_fd, pkt, len, 0, (struct sockaddr *)&to,
		      to_len) < 0
		       ? -errno
		       : 0;
}

static int raw_recv(struct fp_link *link, struct fp_frame *frames, int max)
{
	return recv_batch(link->fd, link->bufs, RAW_ROOM, 0, frames, max);
}

static void raw_close(struct fp_link *link)
{
	if (link->send_fd >= 0)
		close(link->send_fd);
	if (link->fd >= 0)
		close(link->fd);
	free(link->bufs);
}

static const struct link_ops raw_ops = { raw_send, raw_recv, raw_close };

/* The capture socket is made with protocol 0, which receives nothing, and
 * bound only once its filter is on: no stray packet gets in before. */
static int raw_sockets(struct fp_link *link, const uint8_t *remote,
		       uint16_t remote_port, const uint8_t *local)
{
	int ifindex = link->ifindex;
	link->send_fd = socket(link->family == 6 ? AF_INET6 : AF_INET,
			       SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (link->send_fd < 0)
		return -errno;
	/* Leave by the interface we capture on, whatever the routes do later;
	 * marked, so that the guard tells our RSTs from the kernel's. */
	unsigned mark = FP_RAW_MARK;
	if (setsockopt(link->send_fd, SOL_SOCKET, SO_BINDTOIFINDEX, &ifindex,
		       sizeof(ifindex)) < 0 ||
	    setsockopt(link->send_fd, SOL_SOCKET, SO_MARK, &mark,
		       sizeof(mark)) < 0)
		return -errno;
	link->fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (link->fd < 0)
		return -errno;
	struct filter f;
	raw_filter(&f, link->family, remote, remote_port, local);
	int err = packet_configure(link->fd, (struct sock_fprog){ f.n, f.ins });
	if (err)
		return err;
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol =
			htons(link->family == 6 ? ETH_P_IPV6 : ETH_P_IP),
		.sll_ifindex = ifindex,
	};
	return bind(link->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0 ? -errno
									: 0;
}

int fp_link_raw_open(struct fp_link **out, uint8_t family,
		     const uint8_t *remote, uint16_t remote_port,
		     uint8_t local[16], int *ifindex)
{
	if (family != 4 && family != 6)
		return -EINVAL;
	int err = route_lookup(family, remote, local, ifindex);
	if (err)
		return err;
	struct fp_link *link = calloc(1, sizeof(*link));
	if (!link)
		return -ENOMEM;
	link->ops = &raw_ops;
	link->fd = link->send_fd = -1;
	link->family = family;
	link->ifindex = *ifindex;
	link->bufs = malloc((size_t)RAW_ROOM * BATCH);
	err = link->bufs ? raw_sockets(link, remote, remote_port, local)
			 : -ENOMEM;
	if (err) {
		raw_close(link);
		free(link);
		return err;
	}
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
		memcpy(link->frames[n], link->ring[link->head],
		       link->ring_len[link->head]);
		frames[n] = (struct fp_frame){ link->frames[n],
					       link->ring_len[link->head],
					       link->ring_ts[link->head] };
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

static const struct link_ops pair_ops = { pair_send, pair_recv, pair_close };

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

int fp_link_fd(const struct fp_link *link)
{
	return link->fd;
}

void fp_link_close(struct fp_link *link)
{
	if (!link)
		return;
	link->ops->close(link);
	free(link);
}
