/*
 * server.c: libslirp (QEMU's user-mode network stack) as a finprobe peer.
 *
 * The TAP device finprobe made is slirp's "guest" Ethernet link: frames read
 * from it go to slirp_input(), frames slirp sends are written to it. slirp
 * answers ARP / neighbour solicitations for --addr (its vhost, MAC
 * 52:55:<IPv4 address>) and terminates TCP itself. For a guest connection to
 * vhost:PORT it opens a host socket to 127.0.0.1:PORT ([::1]:PORT with
 * --ipv6): tcp_input() (LISTEN) calls tcp_fconnect(), whose
 * sotranslate_out() maps every address of vnetwork/vprefix except the
 * nameserver to loopback (libslirp src/socket.c). So this process also runs
 * the HTTP server, on a kernel socket on loopback, in the same poll loop;
 * finprobe talks TCP with slirp, slirp with that socket. After GET /shut the
 * server shuts down its sending side and reads until EOF; after GET /hold it
 * reads until EOF and holds its socket HOLD_MS, which holds slirp's
 * connection in CLOSE_WAIT; any other path: answer, close.
 *
 * Usage: slirp-http --tap TAP --addr PEER --prefix LEN --gateway LOCAL
 *                   --port PORT [--ipv6]
 * Prints "ready" once the TAP is attached and the server listens; runs until
 * killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libslirp.h>

#define MAX_CLIENTS 1024
/*
 * ms a /hold connection stays open after the client's FIN (slirp then holds
 * finprobe's connection in CLOSE_WAIT): long enough for a matrix batch's
 * event, its answer window and the follow-up probe (finprobe.stacks.HOLD).
 */
#define HOLD_MS 10000
#define MAX_TIMERS 16
#define FRAME_MAX 65536

static const char response[] =
	"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";

struct options {
	const char *tap;
	const char *addr;
	const char *gateway;
	int prefix;
	int port;
	bool ipv6;
};

/* A slirp timer: slirp owns its meaning, we only keep the deadline. */
struct timer {
	bool used;
	bool armed;
	SlirpTimerId id;
	void *cb_opaque;
	int64_t expire_ms;
};

/* What a client of the HTTP server waits for. */
enum phase {
	REQUEST,    /* the end of its request */
	SHUT_DRAIN, /* after /shut, our FIN out: its FIN, reading */
	HOLD_DRAIN, /* after /hold: its FIN, reading */
	HELD,	    /* after /hold and its FIN: hold_until */
};

/*
 * One client of the HTTP server: how much of "\r\n\r\n" the bytes read so
 * far end with (0-4), so a request split over reads is still recognised, and
 * the request's first bytes, whose first line names the path.
 */
struct client {
	int fd;
	int matched;
	enum phase phase;
	char head[64];
	size_t head_len;
	int64_t hold_until_ms;
};

struct loop {
	Slirp *slirp;
	int tap_fd;
	int listen_fd;
	struct pollfd *fds;
	size_t nfds, cap;
	struct client clients[MAX_CLIENTS];
	size_t nclients;
	struct timer timers[MAX_TIMERS];
};

/* ---- helpers ------------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Bring a link up. Loopback is down in a fresh namespace, and slirp's host
 * sockets go to loopback; the TAP must be up for writes to it to work.
 */
static int link_up(const char *name)
{
	struct ifreq ifr = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (s < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		rc = -errno;
	} else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			rc = -errno;
	}
	close(s);
	return rc;
}

/*
 * Attach to the existing TAP device by name (IFF_TAP | IFF_NO_PI). TUNSETIFF
 * would make a new device for an unknown name, which nobody would be on the
 * other side of: refuse that instead.
 */
static int tap_open(const char *name)
{
	struct ifreq ifr = { 0 };
	int fd;

	if (if_nametoindex(name) == 0)
		return -ENODEV;
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* The HTTP server's listening socket on loopback, where slirp relays to. */
static int http_listen(bool ipv6, int port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int one = 1;
	int fd = socket(ipv6 ? AF_INET6 : AF_INET,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (ipv6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* a backlog above stacks.CONCURRENCY: a burst of connections waits here while
	 * the poll loop is slow to accept on a busy machine */
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 1024) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* ---- the poll set, shared by slirp's sockets and ours -------------------- */

static int pollset_add(struct loop *lp, int fd, short events)
{
	if (lp->nfds == lp->cap) {
		size_t cap = lp->cap ? lp->cap * 2 : 64;
		struct pollfd *fds = realloc(lp->fds, cap * sizeof(*fds));

		if (!fds) {
			fprintf(stderr, "slirp-http: out of memory\n");
			exit(1);
		}
		lp->fds = fds;
		lp->cap = cap;
	}
	lp->fds[lp->nfds] = (struct pollfd){ .fd = fd, .events = events };
	return (int)lp->nfds++;
}

static int slirp_add_poll(int fd, int events, void *opaque)
{
	short ev = 0;

	if (events & SLIRP_POLL_IN)
		ev |= POLLIN;
	if (events & SLIRP_POLL_OUT)
		ev |= POLLOUT;
	if (events & SLIRP_POLL_PRI)
		ev |= POLLPRI;
	return pollset_add(opaque, fd, ev);
}

static int slirp_get_revents(int idx, void *opaque)
{
	struct loop *lp = opaque;
	short rev = lp->fds[idx].revents;
	int events = 0;

	if (rev & POLLIN)
		events |= SLIRP_POLL_IN;
	if (rev & POLLOUT)
		events |= SLIRP_POLL_OUT;
	if (rev & POLLPRI)
		events |= SLIRP_POLL_PRI;
	if (rev & POLLERR)
		events |= SLIRP_POLL_ERR;
	if (rev & POLLHUP)
		events |= SLIRP_POLL_HUP;
	return events;
}

/* ---- slirp's callbacks --------------------------------------------------- */

/* A frame for the guest (finprobe): onto the TAP. Dropping is allowed. */
static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	struct loop *lp = opaque;
	ssize_t n = write(lp->tap_fd, buf, len);

	if (n < 0 && errno != EAGAIN)
		fprintf(stderr, "slirp-http: write to tap: %s\n",
			strerror(errno));
	return n < 0 ? (ssize_t)len : n;
}

static void cb_guest_error(const char *msg, void *opaque)
{
	(void)opaque;
	fprintf(stderr, "slirp-http: guest error: %s\n", msg);
}

static int64_t cb_clock_get_ns(void *opaque)
{
	(void)opaque;
	return now_ns();
}

static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	struct loop *lp = opaque;

	for (int i = 0; i < MAX_TIMERS; i++) {
		struct timer *t = &lp->timers[i];

		if (!t->used) {
			*t = (struct timer){ .used = true,
					     .id = id,
					     .cb_opaque = cb_opaque };
			return t;
		}
	}
	fprintf(stderr, "slirp-http: out of timers\n");
	exit(1);
}

static void cb_timer_free(void *timer, void *opaque)
{
	(void)opaque;
	*(struct timer *)timer = (struct timer){ 0 };
}

/* expire_time is in ms of the clock cb_clock_get_ns() reads. */
static void cb_timer_mod(void *timer, int64_t expire_time, void *opaque)
{
	struct timer *t = timer;

	(void)opaque;
	t->armed = true;
	t->expire_ms = expire_time;
}

/* Our loop polls slirp's fds afresh every round: nothing to register. */
static void cb_register_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void cb_unregister_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void cb_notify(void *opaque)
{
	(void)opaque;
}

static const SlirpCb callbacks = {
	.send_packet = cb_send_packet,
	.guest_error = cb_guest_error,
	.clock_get_ns = cb_clock_get_ns,
	.timer_free = cb_timer_free,
	.timer_mod = cb_timer_mod,
	.register_poll_fd = cb_register_poll_fd,
	.unregister_poll_fd = cb_unregister_poll_fd,
	.notify = cb_notify,
	.timer_new_opaque = cb_timer_new_opaque,
};

/* ms until the next armed timer, capped at cap_ms. */
static uint32_t timers_timeout(struct loop *lp, uint32_t cap_ms)
{
	int64_t now = now_ns() / 1000000;
	uint32_t timeout = cap_ms;

	for (int i = 0; i < MAX_TIMERS; i++) {
		struct timer *t = &lp->timers[i];
		int64_t left;

		if (!t->used || !t->armed)
			continue;
		left = t->expire_ms - now;
		if (left < 0)
			left = 0;
		if ((uint64_t)left < timeout)
			timeout = (uint32_t)left;
	}
	return timeout;
}

static void timers_run(struct loop *lp)
{
	int64_t now = now_ns() / 1000000;

	for (int i = 0; i < MAX_TIMERS; i++) {
		struct timer *t = &lp->timers[i];

		if (t->used && t->armed && t->expire_ms <= now) {
			t->armed = false; /* slirp re-arms it if it wants */
			slirp_handle_timer(lp->slirp, t->id, t->cb_opaque);
		}
	}
}

/* ---- slirp configuration ------------------------------------------------- */

/*
 * vnetwork/vprefix are the Lab's subnet and vhost is --addr, so slirp
 * answers for the Lab's peer address and relays to loopback. DNS, DHCP and
 * emulation are off; the nameserver is left at 0.0.0.0 / :: (outside the
 * subnet) so that no Lab address is taken for DNS.
 */
static int slirp_configure(const struct options *o, SlirpConfig *cfg)
{
	*cfg = (SlirpConfig){ .version = 4,
			      .disable_dns = true,
			      .disable_dhcp = true };
	if (o->ipv6) {
		struct in6_addr a;

		if (inet_pton(AF_INET6, o->addr, &a) != 1 || o->prefix < 1 ||
		    o->prefix > 126)
			return -EINVAL;
		cfg->in6_enabled = true;
		cfg->vhost6 = a;
		for (int i = 0; i < 16; i++) {
			int bits = o->prefix - 8 * i;

			if (bits <= 0)
				a.s6_addr[i] = 0;
			else if (bits < 8)
				a.s6_addr[i] &= (uint8_t)(0xff00 >> bits);
		}
		cfg->vprefix_addr6 = a;
		cfg->vprefix_len = (uint8_t)o->prefix;
		/* IPv4 off; a /32 of 0.0.0.0 that no ARP request names. */
		cfg->vnetmask.s_addr = htonl(0xffffffff);
	} else {
		struct in_addr a, gw;
		uint32_t mask;

		if (inet_pton(AF_INET, o->addr, &a) != 1 ||
		    inet_pton(AF_INET, o->gateway, &gw) != 1 || o->prefix < 1 ||
		    o->prefix > 30)
			return -EINVAL;
		mask = htonl(0xffffffffu << (32 - o->prefix));
		cfg->in_enabled = true;
		cfg->vhost = a;
		cfg->vnetmask.s_addr = mask;
		cfg->vnetwork.s_addr = a.s_addr & mask;
		/* DHCP is off; the guest's own address is the harmless one. */
		cfg->vdhcp_start = gw;
	}
	return 0;
}

/* ---- the HTTP server ----------------------------------------------------- */

static void http_accept(struct loop *lp)
{
	for (;;) {
		int fd = accept4(lp->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				fprintf(stderr, "slirp-http: accept: %s\n",
					strerror(errno));
			return;
		}
		if (lp->nclients == MAX_CLIENTS) {
			fprintf(stderr, "slirp-http: too many clients\n");
			close(fd);
			continue;
		}
		lp->clients[lp->nclients++] = (struct client){ .fd = fd };
	}
}

/* Advance the "\r\n\r\n" match by one byte. */
static int crlfcrlf_step(int matched, char c)
{
	if (c == '\r')
		return matched == 2 ? 3 : 1;
	if (c == '\n' && (matched == 1 || matched == 3))
		return matched + 1;
	return 0;
}

/*
 * Whether the request's first line (in c->head) names path: the text
 * between its first two spaces, both within head ("GET /shut HTTP/1.0").
 */
static bool request_path_is(const struct client *c, const char *path)
{
	const char *start = memchr(c->head, ' ', c->head_len);
	size_t len = strlen(path);

	if (!start)
		return false;
	start++;
	if ((size_t)(c->head + c->head_len - start) <= len)
		return false;
	return !memcmp(start, path, len) &&
	       (start[len] == ' ' || start[len] == '\r');
}

/*
 * Read what has arrived, but only up to the end of the request: bytes sent
 * after it stay unread in the socket, as a server that never reads them
 * (close with unread data). Then answer, and by the path: "/shut":
 * shutdown(SHUT_WR) and read until the client's FIN; "/hold": read until
 * the client's FIN, then hold the socket; any other: done. Returns true
 * when the client is done with.
 */
static bool http_serve(struct client *c)
{
	char buf[4096];
	ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_PEEK);
	ssize_t take;

	if (n < 0)
		return errno != EAGAIN && errno != EINTR;
	if (n == 0)
		return true; /* EOF (the client's FIN) before a request */
	for (take = 0; take < n && c->matched < 4; take++) {
		c->matched = crlfcrlf_step(c->matched, buf[take]);
		if (c->head_len < sizeof(c->head))
			c->head[c->head_len++] = buf[take];
	}
	if (recv(c->fd, buf, (size_t)take, 0) < 0)
		return true;
	if (c->matched < 4)
		return false;
	if (send(c->fd, response, sizeof(response) - 1, MSG_NOSIGNAL) < 0) {
		fprintf(stderr, "slirp-http: send: %s\n", strerror(errno));
		return true;
	}
	if (request_path_is(c, "/shut")) {
		c->phase = SHUT_DRAIN;
		return shutdown(c->fd, SHUT_WR) < 0;
	}
	if (request_path_is(c, "/hold")) {
		c->phase = HOLD_DRAIN;
		return false;
	}
	return true;
}

/*
 * Read and discard what has arrived. At EOF (the client's FIN) a /shut
 * client is done with and a /hold one is held HOLD_MS; an error ends
 * either. Returns true when the client is done with.
 */
static bool http_drain(struct client *c)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(c->fd, buf, sizeof(buf), 0)) > 0)
		continue;
	if (n < 0)
		return errno != EAGAIN && errno != EINTR;
	if (c->phase == SHUT_DRAIN)
		return true;
	c->phase = HELD;
	c->hold_until_ms = now_ns() / 1000000 + HOLD_MS;
	return false;
}

/*
 * One round for a client, with its poll entry's revents (0: none this
 * round); returns true when it is done with. A held client polls for no
 * event: POLLHUP or POLLERR (its socket reset) ends it, else its time.
 */
static bool http_client(struct client *c, short revents)
{
	switch (c->phase) {
	case REQUEST:
		return revents && http_serve(c);
	case SHUT_DRAIN:
	case HOLD_DRAIN:
		return revents && http_drain(c);
	case HELD:
		return revents || now_ns() / 1000000 >= c->hold_until_ms;
	}
	return true;
}

/* ms until the first held client's time is up, capped at cap_ms. */
static uint32_t clients_timeout(struct loop *lp, uint32_t cap_ms)
{
	int64_t now = now_ns() / 1000000;
	uint32_t timeout = cap_ms;

	for (size_t i = 0; i < lp->nclients; i++) {
		int64_t left = lp->clients[i].hold_until_ms - now;

		if (lp->clients[i].phase != HELD)
			continue;
		if (left < 0)
			left = 0;
		if ((uint64_t)left < timeout)
			timeout = (uint32_t)left;
	}
	return timeout;
}

/* ---- the loop ------------------------------------------------------------ */

static void tap_drain(struct loop *lp)
{
	static uint8_t frame[FRAME_MAX];

	for (;;) {
		ssize_t n = read(lp->tap_fd, frame, sizeof(frame));

		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				fprintf(stderr, "slirp-http: read tap: %s\n",
					strerror(errno));
			return;
		}
		slirp_input(lp->slirp, frame, (int)n);
	}
}

static void loop_once(struct loop *lp)
{
	size_t first_client;
	uint32_t timeout = UINT32_MAX;
	int n;

	lp->nfds = 0;
	pollset_add(lp, lp->tap_fd, POLLIN);
	pollset_add(lp, lp->listen_fd, POLLIN);
	first_client = lp->nfds;
	for (size_t i = 0; i < lp->nclients; i++)
		pollset_add(lp, lp->clients[i].fd,
			    lp->clients[i].phase == HELD ? 0 : POLLIN);
	slirp_pollfds_fill(lp->slirp, &timeout, slirp_add_poll, lp);
	timeout = clients_timeout(lp, timers_timeout(lp, timeout));

	n = poll(lp->fds, lp->nfds, timeout == UINT32_MAX ? -1 : (int)timeout);
	if (n < 0 && errno != EINTR)
		fprintf(stderr, "slirp-http: poll: %s\n", strerror(errno));
	slirp_pollfds_poll(lp->slirp, n < 0, slirp_get_revents, lp);
	if (n > 0 && lp->fds[0].revents)
		tap_drain(lp);
	/* Clients before accepting: their pollfd indices are this round's. */
	for (size_t i = lp->nclients; i-- > 0;) {
		short revents = n > 0 ? lp->fds[first_client + i].revents : 0;

		if (http_client(&lp->clients[i], revents)) {
			close(lp->clients[i].fd);
			lp->clients[i] = lp->clients[--lp->nclients];
		}
	}
	if (n > 0 && lp->fds[1].revents)
		http_accept(lp);
	timers_run(lp);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: slirp-http --tap TAP --addr PEER_ADDR "
			"--prefix PREFIX --gateway LOCAL_ADDR --port PORT "
			"[--ipv6]\n");
	exit(2);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "tap", required_argument, NULL, 't' },
		{ "addr", required_argument, NULL, 'a' },
		{ "prefix", required_argument, NULL, 'p' },
		{ "gateway", required_argument, NULL, 'g' },
		{ "port", required_argument, NULL, 'P' },
		{ "ipv6", no_argument, NULL, '6' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct options){ .prefix = -1, .port = -1 };
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			o->tap = optarg;
			break;
		case 'a':
			o->addr = optarg;
			break;
		case 'p':
			o->prefix = atoi(optarg);
			break;
		case 'g':
			o->gateway = optarg;
			break;
		case 'P':
			o->port = atoi(optarg);
			break;
		case '6':
			o->ipv6 = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || !o->tap || !o->addr || !o->gateway ||
	    o->prefix < 0 || o->port < 1 || o->port > 65535)
		usage();
}

/*
 * Descriptors up to the hard limit: a connection takes two (slirp's host
 * socket and the server's) until the server closes, and slirp keeps its
 * own until its TIME_WAIT ends; under the usual soft limit of 1024 the
 * 511th connection held at once found no SYN-ACK (seen).
 */
static void fds_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void die(const char *what, int err)
{
	fprintf(stderr, "slirp-http: %s: %s\n", what, strerror(-err));
	exit(1);
}

int main(int argc, char **argv)
{
	static struct loop lp;
	struct options o;
	SlirpConfig cfg;
	int rc;

	/* libslirp writes to its host sockets with plain send(): a host
	 * socket its server has closed would end us with SIGPIPE (seen: a
	 * probe's close with unread data killed the recipe, status -13) */
	signal(SIGPIPE, SIG_IGN);
	fds_raise();
	parse_args(argc, argv, &o);
	if (slirp_configure(&o, &cfg) < 0) {
		fprintf(stderr, "slirp-http: bad --addr/--gateway/--prefix\n");
		usage();
	}
	if ((rc = link_up("lo")) < 0)
		die("bringing up lo", rc);
	if ((rc = lp.tap_fd = tap_open(o.tap)) < 0)
		die(o.tap, rc);
	if ((rc = link_up(o.tap)) < 0)
		die("bringing up the tap", rc);
	if ((rc = lp.listen_fd = http_listen(o.ipv6, o.port)) < 0)
		die("listening on loopback", rc);
	lp.slirp = slirp_new(&cfg, &callbacks, &lp);
	if (!lp.slirp) {
		fprintf(stderr, "slirp-http: slirp_new failed\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		loop_once(&lp);
}
