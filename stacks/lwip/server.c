/*
 * stacks/lwip/server.c: an HTTP server on lwIP 2.1.3 (Debian's liblwip, the
 * unix port), the peer of a finprobe stack Lab.
 *
 *   lwip-http --tap TAP --addr PEER --prefix N --gateway LOCAL --port P [--ipv6]
 *             [--control PATH] [--exit-after N]
 *
 * lwIP runs in its own threads (tcpip_init: the core; tap_start: a thread
 * reading the TAP, which feeds frames to the core under its lock). The
 * netif is ours, not the unix port's tapif (see tap_init's section), on the
 * existing TAP, with tapif's MAC 02:12:34:56:78:ab. lwIP answers ARP /
 * neighbour solicitation for PEER itself. Each connection gets a thread: read until
 * "\r\n\r\n", answer, then by the request's path: "/shut": shutdown(SHUT_WR)
 * and read until the client's FIN, then close; "/hold": read until the
 * client's FIN, hold the socket HOLD_SECONDS (CLOSE_WAIT), close; any other:
 * close. EOF before a whole request: close.
 *
 * With --control PATH it also listens on a Unix stream socket at PATH and
 * answers each line "state LADDR LPORT RADDR RPORT" (the 4-tuple as lwIP
 * sees it) with the state of that connection's pcb, named as RFC 9293 does
 * ("CLOSED" when lwIP has none), or "error TEXT": a stack Lab's
 * lab.peer_state.
 *
 * With --exit-after N the process exits (status 3) on reading its Nth whole
 * request, before answering it: a stack that dies mid-connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lwip/init.h>
#include <lwip/mld6.h>
#include <lwip/netif.h>
#include <lwip/sockets.h>
#include <lwip/priv/tcp_priv.h>
#include <lwip/etharp.h>
#include <lwip/ethip6.h>
#include <lwip/tcpip.h>
#include <netif/ethernet.h>

static const char answer[] =
	"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";

struct options {
	const char *tap, *addr, *gateway, *control;
	int prefix, port, ipv6, exit_after;
};

/* --exit-after N: the process exits, status 3, on reading its Nth whole
 * request, before answering it: a stack that dies mid-connection, for the
 * tests of what finprobe says then (0: never). */
static int exit_after;
static atomic_int requests_read;

static void usage(const char *why)
{
	fprintf(stderr,
		"lwip-http: %s\nusage: lwip-http --tap TAP --addr ADDR --prefix N "
		"--gateway ADDR --port PORT [--ipv6] [--control PATH] "
		"[--exit-after N]\n",
		why);
	exit(2);
}

static struct options parse(int argc, char **argv)
{
	struct options o = { .prefix = -1 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--ipv6")) {
			o.ipv6 = 1;
			continue;
		}
		if (!v)
			usage("an option lacks its value");
		i++;
		if (!strcmp(a, "--tap"))
			o.tap = v;
		else if (!strcmp(a, "--addr"))
			o.addr = v;
		else if (!strcmp(a, "--gateway"))
			o.gateway = v;
		else if (!strcmp(a, "--prefix"))
			o.prefix = atoi(v);
		else if (!strcmp(a, "--port"))
			o.port = atoi(v);
		else if (!strcmp(a, "--control"))
			o.control = v;
		else if (!strcmp(a, "--exit-after"))
			o.exit_after = atoi(v);
		else
			usage("unknown option");
	}
	if (!o.tap || !o.addr || !o.gateway || o.prefix < 0 || o.port <= 0 ||
	    o.port > 65535)
		usage("--tap, --addr, --prefix, --gateway and --port are needed");
	return o;
}

/* ---- the TAP: lwIP's netif on the Lab's TAP device ------------------- */

/* Not the unix port's tapif: Debian's liblwip sizes its pool pbufs for a
 * TCP_MSS of 536 (616-byte blocks) while pbuf_alloc fills them as for its
 * 1460, and tapif reads each frame into one: a frame over 592 bytes overran
 * the heap (seen: a 1000-byte segment killed the recipe, "malloc():
 * corrupted top size"; valgrind: pbuf_take from tapif's reader writing past
 * a 616-byte block). Here frames go into PBUF_RAM pbufs, malloc'd at their
 * size. The MAC is tapif's, 02:12:34:56:78:ab. */

#define FRAME_MAX 1518 /* Ethernet with a VLAN tag, without FCS */

static struct netif tap_netif;
static int tap_fd = -1;

/* The existing TAP device name, attached to (IFF_TAP | IFF_NO_PI). */
static void tap_open(const char *name)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	if (strlen(name) >= sizeof(ifr.ifr_name))
		usage("--tap: the name is too long");
	strcpy(ifr.ifr_name, name);
	tap_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tap_fd < 0 || ioctl(tap_fd, TUNSETIFF, &ifr) < 0) {
		perror("lwip-http: TAP");
		exit(1);
	}
}

/* A frame lwIP sends, onto the TAP. */
static err_t tap_output(struct netif *netif, struct pbuf *p)
{
	char frame[FRAME_MAX];
	u16_t len = pbuf_copy_partial(p, frame, sizeof(frame), 0);
	(void)netif;
	if (len != p->tot_len || write(tap_fd, frame, len) < 0)
		return ERR_IF;
	return ERR_OK;
}

/* A frame from the TAP into lwIP's core at once, under the core lock, as
 * lwIP's LWIP_TCPIP_CORE_LOCKING_INPUT would have it (Debian builds
 * without). tcpip_input would post it to the tcpip thread's mailbox, whose
 * size the unix port fixes (SYS_MBOX_SIZE, 128), and drop it when full:
 * seen, a GET on each of 300 connections at once left the 127th on
 * unanswered, and finprobe retransmits nothing. Here a burst waits in the
 * TAP's queue (1000 frames) instead. */
static err_t input_locked(struct pbuf *p, struct netif *inp)
{
	err_t err;
	LOCK_TCPIP_CORE();
	err = ethernet_input(p, inp);
	UNLOCK_TCPIP_CORE();
	return err;
}

/* The TAP's reader: each frame into a pbuf of its size, then lwIP. */
static void *tap_reader(void *arg)
{
	struct netif *netif = arg;
	char frame[FRAME_MAX];
	for (;;) {
		ssize_t n = read(tap_fd, frame, sizeof(frame));
		struct pbuf *p;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("lwip-http: read from the TAP");
			exit(1);
		}
		p = pbuf_alloc(PBUF_RAW, (u16_t)n, PBUF_RAM);
		if (!p)
			continue; /* out of memory: dropped, as by a NIC */
		memcpy(p->payload, frame, (size_t)n);
		if (netif->input(p, netif) != ERR_OK)
			pbuf_free(p);
	}
	return NULL;
}

/* netif_add's init: an Ethernet netif writing to the TAP. */
static err_t tap_init(struct netif *netif)
{
	static const u8_t mac[] = { 0x02, 0x12, 0x34, 0x56, 0x78, 0xab };
	netif->name[0] = 't';
	netif->name[1] = 'p';
	netif->output = etharp_output;
	netif->output_ip6 = ethip6_output;
	netif->linkoutput = tap_output;
	netif->mtu = 1500;
	netif->hwaddr_len = sizeof(mac);
	memcpy(netif->hwaddr, mac, sizeof(mac));
	netif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP |
		       NETIF_FLAG_ETHERNET | NETIF_FLAG_IGMP;
	return ERR_OK;
}

/* The reader, once the netif is there to take its frames. */
static void tap_start(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, tap_reader, &tap_netif) != 0) {
		fprintf(stderr, "lwip-http: no thread for the TAP\n");
		exit(1);
	}
	pthread_detach(t);
}

/* IPv4: address, netmask from the prefix, gateway. */
static void add_ipv4(const struct options *o)
{
	ip4_addr_t addr, mask, gw;
	if (!ip4addr_aton(o->addr, &addr) || !ip4addr_aton(o->gateway, &gw) ||
	    o->prefix > 32)
		usage("bad IPv4 address or prefix");
	ip4_addr_set_u32(&mask,
			 o->prefix ? lwip_htonl(~0u << (32 - o->prefix)) : 0);
	netif_add(&tap_netif, &addr, &mask, &gw, NULL, tap_init, input_locked);
}

/* Address index of the netif preferred at once, and its solicited-node
 * group joined, which lwIP does only when duplicate address detection
 * starts (nd6_tmr): without it a neighbour solicitation is not for us. */
static void ipv6_usable(s8_t index)
{
	ip6_addr_t group;
	ip6_addr_set_solicitednode(&group,
				   netif_ip6_addr(&tap_netif, index)->addr[3]);
	netif_ip6_addr_set_state(&tap_netif, index, IP6_ADDR_PREFERRED);
	mld6_joingroup_netif(&tap_netif, &group);
}

/* IPv6: a link-local address and ADDR, usable at once. Duplicate address
 * detection is skipped: the Lab's link holds no one else, and a tentative
 * address would not answer the Lab's neighbour solicitation for a second. */
static void add_ipv6(const struct options *o)
{
	ip6_addr_t addr;
	s8_t index;
	if (!ip6addr_aton(o->addr, &addr))
		usage("bad IPv6 address");
	netif_add_noaddr(&tap_netif, NULL, tap_init, input_locked);
	netif_create_ip6_linklocal_address(&tap_netif, 1);
	ipv6_usable(0);
	if (netif_add_ip6_address(&tap_netif, &addr, &index) != ERR_OK)
		usage("cannot add the IPv6 address");
	ipv6_usable(index);
}

static void bring_up(const struct options *o)
{
	tap_open(o->tap);
	LOCK_TCPIP_CORE();
	if (o->ipv6)
		add_ipv6(o);
	else
		add_ipv4(o);
	netif_set_default(&tap_netif);
	netif_set_up(&tap_netif);
	netif_set_link_up(&tap_netif);
	UNLOCK_TCPIP_CORE();
	tap_start();
}

/* ---- the control socket: lwIP's own view of its connections ---------- */

/* lwIP's enum tcp_state is RFC 9293's list in its order. */
static const char *const state_names[] = {
	"CLOSED",      "LISTEN",     "SYN_SENT",   "SYN_RECEIVED",
	"ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
	"CLOSING",     "LAST_ACK",   "TIME_WAIT",
};

struct query {
	ip_addr_t laddr, raddr;
	u16_t lport, rport;
};

static int pcb_matches(const struct tcp_pcb *pcb, const struct query *q)
{
	return pcb->local_port == q->lport && pcb->remote_port == q->rport &&
	       ip_addr_cmp_zoneless(&pcb->local_ip, &q->laddr) &&
	       ip_addr_cmp_zoneless(&pcb->remote_ip, &q->raddr);
}

/* The state of q's pcb. The lists belong to the tcpip thread: the caller
 * holds the core lock. A pcb leaves both lists when it reaches CLOSED. */
static const char *pcb_state(const struct query *q)
{
	struct tcp_pcb *lists[] = { tcp_active_pcbs, tcp_tw_pcbs };
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		for (struct tcp_pcb *pcb = lists[i]; pcb; pcb = pcb->next)
			if (pcb_matches(pcb, q) &&
			    (size_t)pcb->state < sizeof(state_names) /
							 sizeof(state_names[0]))
				return state_names[pcb->state];
	return "CLOSED";
}

static int parse_port(const char *text, u16_t *port)
{
	char *end;
	long n = strtol(text, &end, 10);
	if (*text == '\0' || *end != '\0' || n < 0 || n > 65535)
		return -1;
	*port = (u16_t)n;
	return 0;
}

/* One request line answered into out (a line without its newline). */
static void control_answer(const char *line, char *out, size_t size)
{
	char verb[16], la[64], lp[8], ra[64], rp[8], extra[2];
	struct query q;
	int n = sscanf(line, "%15s %63s %7s %63s %7s %1s", verb, la, lp, ra, rp,
		       extra);
	if (n < 1 || strcmp(verb, "state") != 0) {
		snprintf(out, size,
			 "error unknown request (try: state LADDR "
			 "LPORT RADDR RPORT)");
		return;
	}
	if (n != 5 || !ipaddr_aton(la, &q.laddr) ||
	    !ipaddr_aton(ra, &q.raddr) || parse_port(lp, &q.lport) < 0 ||
	    parse_port(rp, &q.rport) < 0) {
		snprintf(out, size,
			 "error bad 4-tuple: state LADDR LPORT "
			 "RADDR RPORT");
		return;
	}
	LOCK_TCPIP_CORE();
	snprintf(out, size, "%s", pcb_state(&q));
	UNLOCK_TCPIP_CORE();
}

/* Lines from one client until it hangs up. */
static void control_client(int fd)
{
	FILE *in = fdopen(fd, "r");
	char *line = NULL;
	size_t cap = 0;
	if (!in) {
		close(fd);
		return;
	}
	while (getline(&line, &cap, in) >= 0) {
		char out[128];
		line[strcspn(line, "\r\n")] = '\0';
		control_answer(line, out, sizeof(out) - 1);
		strcat(out, "\n");
		/* fd is shared with in, which only reads */
		if (write(fd, out, strlen(out)) < 0)
			break;
	}
	free(line);
	fclose(in);
}

/* Clients one at a time: the Lab asks one question at a time. */
static void *control_loop(void *arg)
{
	int listener = (int)(intptr_t)arg;
	for (;;) {
		int fd = accept(listener, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("lwip-http: control accept");
			return NULL;
		}
		control_client(fd);
	}
}

/* The control socket listening at path; made before the stack answers ARP,
 * so it is there once the Lab is ready (connections wait in the backlog
 * until control_start serves them). */
static int control_listen(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;
	if (strlen(path) >= sizeof(sun.sun_path))
		usage("--control: the path is too long");
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(fd, 4) < 0) {
		perror("lwip-http: control socket");
		exit(1);
	}
	return fd;
}

/* A thread serving the control socket, once lwIP's core (and its lock) is. */
static void control_start(int fd)
{
	pthread_t t;
	if (pthread_create(&t, NULL, control_loop, (void *)(intptr_t)fd) != 0) {
		fprintf(stderr,
			"lwip-http: no thread for the control socket\n");
		exit(1);
	}
	pthread_detach(t);
}

/* Seconds a /hold connection stays open after the client's FIN, in
 * CLOSE_WAIT: long enough for a matrix batch's event, its answer window and
 * the follow-up probe (finprobe.stacks.HOLD says the same). */
#define HOLD_SECONDS 10

/* What a connection does after its answer, by the request's path. */
enum ending {
	END_NONE,  /* EOF or an error before a whole request: just close */
	END_CLOSE, /* "/" and any other path: close */
	END_SHUT,  /* "/shut": shutdown(SHUT_WR), read until the client's FIN */
	END_HOLD,  /* "/hold": read until the client's FIN, wait, close */
};

/* Whether the request so far (len bytes of buf) holds a whole header. */
static int request_done(const char *buf, size_t len)
{
	for (size_t i = 3; i < len; i++)
		if (!memcmp(buf + i - 3, "\r\n\r\n", 4))
			return 1;
	return 0;
}

/* The ending a whole request asks for, by the path of its request line
 * ("GET /shut HTTP/1.0"): the text between its first two spaces. */
static enum ending request_ending(const char *buf, size_t len)
{
	const char *line_end = memchr(buf, '\r', len);
	const char *path = memchr(buf, ' ', (size_t)(line_end - buf));
	const char *path_end;
	if (!path)
		return END_CLOSE;
	path++;
	path_end = memchr(path, ' ', (size_t)(line_end - path));
	if (!path_end)
		path_end = line_end;
	if (path_end - path == 5 && !memcmp(path, "/shut", 5))
		return END_SHUT;
	if (path_end - path == 5 && !memcmp(path, "/hold", 5))
		return END_HOLD;
	return END_CLOSE;
}

/* Read until the end of the request header; the ending it asks for. */
static enum ending read_request(int fd)
{
	char buf[4096];
	size_t len = 0;
	while (len < sizeof(buf)) {
		ssize_t n = lwip_recv(fd, buf + len, sizeof(buf) - len, 0);
		if (n <= 0)
			return END_NONE;
		len += (size_t)n;
		if (request_done(buf, len))
			return request_ending(buf, len);
	}
	return END_NONE; /* no HTTP of ours: over 4 KiB without an end */
}

/* Read and discard until EOF (the client's FIN) or an error; 1 at EOF. */
static int drain(int fd)
{
	char buf[1024];
	ssize_t n;
	while ((n = lwip_recv(fd, buf, sizeof(buf), 0)) > 0)
		continue;
	return n == 0;
}

/* HOLD_SECONDS with the socket open, or less if the connection fails (a
 * RST): lwIP reports that as POLLERR, whatever the events asked for. */
static void hold(int fd)
{
	struct pollfd p = { .fd = fd, .events = 0 };
	lwip_poll(&p, 1, HOLD_SECONDS * 1000);
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	enum ending end = read_request(fd);
	if (end == END_NONE) {
		lwip_close(fd);
		return NULL;
	}
	if (exit_after > 0 &&
	    atomic_fetch_add(&requests_read, 1) + 1 >= exit_after)
		_exit(3);
	if (lwip_send(fd, answer, sizeof(answer) - 1, 0) < 0) {
		perror("lwip-http: send");
		end = END_CLOSE;
	}
	if (end == END_SHUT && lwip_shutdown(fd, SHUT_WR) == 0)
		drain(fd);
	if (end == END_HOLD && drain(fd))
		hold(fd);
	lwip_close(fd);
	return NULL;
}

static int listener(const struct options *o)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int fd = lwip_socket(o->ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (o->ipv6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = lwip_htons((u16_t)o->port);
		len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = lwip_htons((u16_t)o->port);
		len = sizeof(*s4);
	}
	if (lwip_bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    lwip_listen(fd, 64) < 0)
		return -1;
	return fd;
}

int main(int argc, char **argv)
{
	struct options o = parse(argc, argv);
	exit_after = o.exit_after;
	/* an answer on the control socket to a finprobe that has gone must
	 * not end us with SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
#if !LWIP_IPV6
	if (o.ipv6) {
		fprintf(stderr,
			"lwip-http: this lwIP was built without IPv6\n");
		return 2;
	}
#endif
	int control = o.control ? control_listen(o.control) : -1;
	tcpip_init(NULL, NULL);
	if (control >= 0)
		control_start(control);
	/* Listening before the interface is up: once lwIP answers ARP (the
	 * Lab's readiness) a SYN finds the listener, not a RST. */
	int fd = listener(&o);
	if (fd < 0) {
		perror("lwip-http: listen");
		return 1;
	}
	bring_up(&o);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int c = lwip_accept(fd, NULL, NULL);
		pthread_t t;
		if (c < 0) {
			perror("lwip-http: accept");
			return 1;
		}
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)c) != 0) {
			lwip_close(c);
			continue;
		}
		pthread_detach(t);
	}
}
