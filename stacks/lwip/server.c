/*
 * stacks/lwip/server.c: an HTTP server on lwIP 2.1.3 (Debian's liblwip, the
 * unix port), the peer of a finprobe stack Lab.
 *
 *   lwip-http --tap TAP --addr PEER --prefix N --gateway LOCAL --port P [--ipv6]
 *
 * lwIP runs in its own threads (tcpip_init: the core; tapif_init: a thread
 * reading the TAP). The port's tapif attaches to the existing TAP named by
 * PRECONFIGURED_TAPIF (else it would make tap0 and run ifconfig), with the
 * port's fixed MAC 02:12:34:56:78:ab. lwIP answers ARP / neighbour
 * solicitation for PEER itself. Each connection gets a thread: read until
 * "\r\n\r\n", answer, close; EOF before that: close.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lwip/init.h>
#include <lwip/mld6.h>
#include <lwip/netif.h>
#include <lwip/sockets.h>
#include <lwip/tcpip.h>
#include <netif/tapif.h>

static const char answer[] =
	"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";

struct options {
	const char *tap, *addr, *gateway;
	int prefix, port, ipv6;
};

static void usage(const char *why)
{
	fprintf(stderr,
		"lwip-http: %s\nusage: lwip-http --tap TAP --addr ADDR --prefix N "
		"--gateway ADDR --port PORT [--ipv6]\n",
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
		else
			usage("unknown option");
	}
	if (!o.tap || !o.addr || !o.gateway || o.prefix < 0 || o.port <= 0 ||
	    o.port > 65535)
		usage("--tap, --addr, --prefix, --gateway and --port are needed");
	return o;
}

static struct netif tap_netif;

/* IPv4: address, netmask from the prefix, gateway. */
static void add_ipv4(const struct options *o)
{
	ip4_addr_t addr, mask, gw;
	if (!ip4addr_aton(o->addr, &addr) || !ip4addr_aton(o->gateway, &gw) ||
	    o->prefix > 32)
		usage("bad IPv4 address or prefix");
	ip4_addr_set_u32(&mask,
			 o->prefix ? lwip_htonl(~0u << (32 - o->prefix)) : 0);
	netif_add(&tap_netif, &addr, &mask, &gw, NULL, tapif_init, tcpip_input);
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
	netif_add_noaddr(&tap_netif, NULL, tapif_init, tcpip_input);
	netif_create_ip6_linklocal_address(&tap_netif, 1);
	ipv6_usable(0);
	if (netif_add_ip6_address(&tap_netif, &addr, &index) != ERR_OK)
		usage("cannot add the IPv6 address");
	ipv6_usable(index);
}

static void bring_up(const struct options *o)
{
	/* tapif_init reads it: attach to the Lab's TAP, run no ifconfig */
	setenv("PRECONFIGURED_TAPIF", o->tap, 1);
	tcpip_init(NULL, NULL);
	LOCK_TCPIP_CORE();
	if (o->ipv6)
		add_ipv6(o);
	else
		add_ipv4(o);
	netif_set_default(&tap_netif);
	netif_set_up(&tap_netif);
	netif_set_link_up(&tap_netif);
	UNLOCK_TCPIP_CORE();
}

/* Whether the request so far (len bytes of buf) holds a whole header. */
static int request_done(const char *buf, size_t len)
{
	for (size_t i = 3; i < len; i++)
		if (!memcmp(buf + i - 3, "\r\n\r\n", 4))
			return 1;
	return 0;
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	size_t len = 0;
	while (len < sizeof(buf)) {
		ssize_t n = lwip_recv(fd, buf + len, sizeof(buf) - len, 0);
		if (n <= 0)
			break; /* EOF (the client's FIN) or error: just close */
		len += (size_t)n;
		if (request_done(buf, len)) {
			if (lwip_send(fd, answer, sizeof(answer) - 1, 0) < 0)
				perror("lwip-http: send");
			break;
		}
	}
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
#if !LWIP_IPV6
	if (o.ipv6) {
		fprintf(stderr,
			"lwip-http: this lwIP was built without IPv6\n");
		return 2;
	}
#endif
	bring_up(&o);
	int fd = listener(&o);
	if (fd < 0) {
		perror("lwip-http: listen");
		return 1;
	}
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
