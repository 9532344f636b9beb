/*
 * test_lab.c: the lab (lab.c) and sock_diag (diag.c) against the running
 * kernel. Needs root, or user namespaces. Each test opens a lab of its
 * own; test_close_leaves_nothing and test_killed_caller_ends_helper check
 * that none outlives its owner. The last test prints the time an
 * open+close takes (no pass/fail).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>

#include "check.h"
#include "finprobe.h"

static const uint8_t peer_mac[6] = FP_LAB_PEER_MAC;
static const uint8_t local_mac[6] = FP_LAB_LOCAL_MAC;
static const uint8_t lab_ip4[4] = { 192, 0, 2, 1 };
static const uint8_t local_ip4[4] = { 192, 0, 2, 2 };
static const uint8_t lab_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t any6[16];

static struct fp_lab *open_lab(void)
{
	struct fp_lab *lab = NULL;
	char err[256] = "";
	int rc = fp_lab_open(&lab, err, sizeof(err));

	if (rc < 0)
		fprintf(stderr, "fp_lab_open: %d: %s\n", rc, err);
	CHECK_EQ(rc, 0);
	return lab;
}

/* addr:port as a sockaddr of family; returns its length. */
static socklen_t socket_address(struct sockaddr_storage *ss, int family,
				const uint8_t *addr, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, addr, 4);
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	memcpy(&s6->sin6_addr, addr, 16);
	return sizeof(*s6);
}

/* A TCP socket of the lab bound to addr:port, listening. */
static int lab_listener(struct fp_lab *lab, int family, const uint8_t *addr,
			uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = socket_address(&ss, family, addr, port);
	int fd = fp_lab_socket(lab, family, SOCK_STREAM, 0);

	CHECK(fd >= 0);
	if (fd < 0)
		return -1;
	CHECK_EQ(bind(fd, (struct sockaddr *)&ss, len), 0);
	CHECK_EQ(listen(fd, 8), 0);
	return fd;
}

/* A non-blocking connect from the lab to finprobe's side: the kernel
 * sends a SYN out of lab0 and retransmits it. Returns the socket. */
static int lab_connect(struct fp_lab *lab, int family, const uint8_t *dst,
		       uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = socket_address(&ss, family, dst, port);
	int fd = fp_lab_socket(lab, family, SOCK_STREAM | SOCK_NONBLOCK, 0);

	CHECK(fd >= 0);
	if (fd < 0)
		return -1;
	CHECK(connect(fd, (struct sockaddr *)&ss, len) < 0 &&
	      errno == EINPROGRESS);
	return fd;
}

static uint16_t local_port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	getsockname(fd, (struct sockaddr *)&ss, &len);
	return ntohs(ss.ss_family == AF_INET
			     ? ((struct sockaddr_in *)&ss)->sin_port
			     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Sum of 16-bit words, for checksums that must come out as 0xffff. */
static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* Both checksums of an IPv4 TCP packet verify: nothing was offloaded. */
static int ipv4_tcp_checksums_ok(const uint8_t *ip, size_t len)
{
	size_t ihl = (size_t)(ip[0] & 15) * 4;
	uint32_t sum = sum16(ip + 12, 8, 0) + 6 + (uint32_t)(len - ihl);

	return fold(sum16(ip, ihl, 0)) == 0xffff &&
	       fold(sum16(ip + ihl, len - ihl, sum)) == 0xffff;
}

/* The next IPv4 TCP frame to port on the packet socket, within 2 s.
 * Other frames (lab0's IPv6 chatter) are skipped. Returns its length. */
static ssize_t wait_tcp_frame(int pfd, uint16_t port, uint8_t *frame,
			      size_t cap)
{
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	ssize_t n;

	while (poll(&p, 1, 2000) == 1) {
		n = recv(pfd, frame, cap, 0);
		if (n >= 14 + 20 + 20 && frame[12] == 0x08 &&
		    frame[13] == 0x00 && frame[14 + 9] == 6 &&
		    (frame[14 + (frame[14] & 15) * 4 + 2] << 8 |
		     frame[14 + (frame[14] & 15) * 4 + 3]) == port)
			return n;
	}
	return -1;
}

static void test_open_gives_descriptors(void)
{
	struct fp_lab *lab = open_lab();
	struct stat a, b;

	if (!lab)
		return;
	CHECK(fp_lab_packet_fd(lab) >= 0);
	CHECK(fp_lab_netns_fd(lab) >= 0);
	if (geteuid() == 0)
		CHECK_EQ(fp_lab_userns_fd(lab), -1);
	else
		CHECK(fp_lab_userns_fd(lab) >= 0);
	/* a namespace of its own, not ours */
	CHECK_EQ(fstat(fp_lab_netns_fd(lab), &a), 0);
	CHECK_EQ(stat("/proc/self/ns/net", &b), 0);
	CHECK(a.st_ino != b.st_ino);
	fp_lab_close(lab);
	fp_lab_close(NULL);
}

static void test_listeners_bind_lab_addresses(void)
{
	struct fp_lab *lab = open_lab();
	int fd4, fd6;

	if (!lab)
		return;
	fd4 = lab_listener(lab, AF_INET, lab_ip4, 80);
	fd6 = lab_listener(lab, AF_INET6, lab_ip6, 80);
	close(fd4);
	close(fd6);
	CHECK_EQ(fp_lab_socket(lab, 12345, SOCK_STREAM, 0), -EAFNOSUPPORT);
	CHECK(strstr(fp_lab_error(lab), "socket(12345") != NULL);
	fp_lab_close(lab);
}

#define FIN_TIMEOUT "net.ipv4.tcp_fin_timeout"

/* A lab sysctl's value, or "" after a failure. */
static const char *sysctl_get(struct fp_lab *lab, const char *name)
{
	static char v[64];

	if (fp_lab_sysctl(lab, name, NULL, v, sizeof(v)) < 0)
		v[0] = '\0';
	return v;
}

static void test_sysctl_read_write_unknown(void)
{
	struct fp_lab *lab = open_lab();
	char v[64];

	if (!lab)
		return;
	CHECK_STR(sysctl_get(lab, FIN_TIMEOUT), "60");
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, "5", NULL, 0), 0);
	CHECK_STR(sysctl_get(lab, FIN_TIMEOUT), "5");
	CHECK_EQ(fp_lab_sysctl(lab, "net.ipv4.no_such", NULL, v, 64), -ENOENT);
	CHECK(strstr(fp_lab_error(lab), "net.ipv4.no_such") != NULL);
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, NULL, v, 1), -ENOSPC);
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, NULL, NULL, 0), -ENOSPC);
	/* the lab's own settings, as the helper made them */
	CHECK_STR(sysctl_get(lab, "net.ipv6.conf.lab0.accept_dad"), "0");
	fp_lab_close(lab);
}

/* Each refusal has its own code: -EINVAL is only the kernel's refusal of a
 * value, never a name finprobe would not send. */
static void test_sysctl_refusals_have_distinct_codes(void)
{
	struct fp_lab *lab = open_lab();
	char v[64], long_name[200], long_value[600];

	if (!lab)
		return;
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, "x", NULL, 0), -EINVAL);
	CHECK(strstr(fp_lab_error(lab), "writing sysctl") != NULL);
	CHECK_EQ(fp_lab_sysctl(lab, "kernel.hostname", NULL, v, 64), -EDOM);
	CHECK_EQ(fp_lab_sysctl(lab, "kernel.hostname", "x", NULL, 0), -EDOM);
	CHECK_EQ(fp_lab_sysctl(lab, NULL, NULL, v, 64), -EDOM);
	CHECK_EQ(fp_lab_sysctl(lab, "net.ipv4", NULL, v, 64), -EISDIR);
	CHECK_EQ(fp_lab_sysctl(lab, "net.ipv4", "1", NULL, 0), -EISDIR);
	memset(long_name, 'a', sizeof(long_name));
	memcpy(long_name, "net.", 4);
	long_name[sizeof(long_name) - 1] = '\0';
	CHECK_EQ(fp_lab_sysctl(lab, long_name, NULL, v, 64), -ENAMETOOLONG);
	memset(long_value, '1', sizeof(long_value));
	long_value[sizeof(long_value) - 1] = '\0';
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, long_value, NULL, 0), -E2BIG);
	CHECK_STR(sysctl_get(lab, FIN_TIMEOUT), "60");
	fp_lab_close(lab);
}

/* A child forked by a thread that then ends, entered into the lab. */
struct forker {
	struct fp_lab *lab;
	pid_t child;
};

static void *fork_entered_child(void *arg)
{
	struct forker *f = arg;

	f->child = fork();
	if (f->child == 0) {
		if (fp_lab_enter(f->lab) == 0)
			execlp("sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	return NULL;
}

/* 1 when pid ended (reaped) within ms, with its status in *status. */
static int reaped_within(pid_t pid, int ms, int *status)
{
	for (int i = 0; i < ms; i++) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return 1;
		usleep(1000);
	}
	return 0;
}

/* PR_SET_PDEATHSIG would kill the child with the thread that forked it;
 * the helper keeps it until the lab ends, then kills it. */
static void test_entered_child_outlives_its_thread_not_the_lab(void)
{
	struct forker f = { .lab = open_lab(), .child = -1 };
	char path[64];
	struct stat a, b;
	pthread_t thread;
	int status = 0, reaped;

	if (!f.lab)
		return;
	CHECK_EQ(pthread_create(&thread, NULL, fork_entered_child, &f), 0);
	pthread_join(thread, NULL);
	CHECK(f.child > 0);
	if (f.child <= 0) {
		fp_lab_close(f.lab);
		return;
	}
	CHECK(!reaped_within(f.child, 200, &status)); /* the thread is gone */
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)f.child);
	CHECK_EQ(fstat(fp_lab_netns_fd(f.lab), &a), 0);
	CHECK_EQ(stat(path, &b), 0);
	CHECK_EQ(a.st_ino, b.st_ino);
	fp_lab_close(f.lab);
	reaped = reaped_within(f.child, 3000, &status);
	if (!reaped) {
		kill(f.child, SIGKILL); /* leave nothing behind */
		waitpid(f.child, &status, 0);
	}
	CHECK(reaped);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* Offloads off on lab0, read back with the legacy ethtool "get"s. */
static void test_lab0_offloads_off(void)
{
	static const uint32_t gets[] = { ETHTOOL_GTXCSUM, ETHTOOL_GTSO,
					 ETHTOOL_GGSO };
	struct fp_lab *lab = open_lab();
	struct ethtool_value ev;
	struct ifreq ifr;
	int fd;

	if (!lab)
		return;
	fd = fp_lab_socket(lab, AF_INET, SOCK_DGRAM, 0);
	for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
		memset(&ifr, 0, sizeof(ifr));
		strcpy(ifr.ifr_name, "lab0");
		ev.cmd = gets[i];
		ev.data = 1;
		ifr.ifr_data = (void *)&ev;
		CHECK_EQ(ioctl(fd, SIOCETHTOOL, &ifr), 0);
		CHECK_EQ(ev.data, 0);
	}
	close(fd);
	fp_lab_close(lab);
}

static void test_syn_reaches_packet_socket(void)
{
	struct fp_lab *lab = open_lab();
	uint8_t f[2048];
	const uint8_t *tcp;
	ssize_t n;
	int fd;

	if (!lab)
		return;
	fd = lab_connect(lab, AF_INET, local_ip4, 4242);
	n = wait_tcp_frame(fp_lab_packet_fd(lab), 4242, f, sizeof(f));
	CHECK(n > 0);
	if (n > 0) {
		tcp = f + 14 + (f[14] & 15) * 4;
		CHECK(memcmp(f, local_mac, 6) == 0);
		CHECK(memcmp(f + 6, peer_mac, 6) == 0);
		CHECK(memcmp(f + 14 + 12, lab_ip4, 4) == 0);
		CHECK(memcmp(f + 14 + 16, local_ip4, 4) == 0);
		CHECK_EQ(tcp[13] & (FP_SYN | FP_ACK), FP_SYN);
		CHECK(ipv4_tcp_checksums_ok(f + 14, (size_t)n - 14));
		CHECK(n <= 1514);
	}
	close(fd);
	fp_lab_close(lab);
}

static void test_diag_finds_syn_sent(void)
{
	struct fp_lab *lab = open_lab();
	struct fp_diag_info info;
	int fd, nl;

	if (!lab)
		return;
	nl = fp_lab_socket(lab, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
			   NETLINK_SOCK_DIAG);
	CHECK(nl >= 0);
	fd = lab_connect(lab, AF_INET, local_ip4, 4242);
	memset(&info, 0xa5, sizeof(info));
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4242, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_SYN_SENT);
	CHECK_EQ(info.timer, FP_TIMER_RETRANS);
	CHECK(info.expires_ms > 0 && info.expires_ms <= 1000);
	CHECK_EQ(info.has_tcp_info, 1);
	CHECK_EQ(info.rto_us, 1000000); /* RFC 6298's initial RTO */
	CHECK_EQ(info.snd_cwnd, 10);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4243, &info),
		 -ENOENT);
	/* twice more: each call leaves the netlink socket clean */
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4242, &info),
		 0);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET6, lab_ip6, local_port_of(fd), any6,
				4242, &info),
		 -ENOENT);
	CHECK_EQ(fp_diag_lookup(nl, AF_UNIX, lab_ip4, 1, local_ip4, 2, &info),
		 -EINVAL);
	/* info NULL: only whether the socket exists (a port pick's question) */
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4242, NULL),
		 0);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4243, NULL),
		 -ENOENT);
	close(fd);
	close(nl);
	fp_lab_close(lab);
}

/* An IPv4 connection of a dual-stack AF_INET6 socket is found by its
 * IPv4 4-tuple. */
static void test_diag_finds_v4_mapped(void)
{
	static const uint8_t mapped[16] = { /* ::ffff:192.0.2.2 */
					    [10] = 0xff,
					    [11] = 0xff,
					    [12] = 192,
					    [14] = 2,
					    [15] = 2
	};
	struct fp_lab *lab = open_lab();
	struct fp_diag_info info;
	int fd, nl;

	if (!lab)
		return;
	nl = fp_lab_socket(lab, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
			   NETLINK_SOCK_DIAG);
	fd = lab_connect(lab, AF_INET6, mapped, 4244);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, local_port_of(fd),
				local_ip4, 4244, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_SYN_SENT);
	close(fd);
	close(nl);
	fp_lab_close(lab);
}

static void test_diag_finds_listeners(void)
{
	struct fp_lab *lab = open_lab();
	struct fp_diag_info info;
	int fd4, fd6, nl;

	if (!lab)
		return;
	nl = fp_lab_socket(lab, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
			   NETLINK_SOCK_DIAG);
	fd4 = lab_listener(lab, AF_INET, lab_ip4, 8080);
	fd6 = lab_listener(lab, AF_INET6, lab_ip6, 8080);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET, lab_ip4, 8080, any6, 0, &info), 0);
	CHECK_EQ(info.state, FP_STATE_LISTEN);
	CHECK_EQ(info.timer, FP_TIMER_NONE);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET6, lab_ip6, 8080, any6, 0, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_LISTEN);
	CHECK_EQ(fp_diag_lookup(nl, AF_INET6, lab_ip6, 8081, any6, 0, &info),
		 -ENOENT);
	close(fd4);
	close(fd6);
	close(nl);
	fp_lab_close(lab);
}

/* Poll the kernel until the socket reaches want (loopback is quick but
 * not synchronous); returns the last lookup's result. */
static int wait_state(int nl, const uint8_t *local, uint16_t lport,
		      const uint8_t *remote, uint16_t rport, enum fp_state want,
		      struct fp_diag_info *info)
{
	int rc = -ENOENT;

	for (int i = 0; i < 200; i++) {
		rc = fp_diag_lookup(nl, AF_INET, local, lport, remote, rport,
				    info);
		if (rc == 0 && info->state == want)
			break;
		usleep(5000);
	}
	return rc;
}

/* A connection inside the lab, over lo, closed from the client side:
 * the orphaned client becomes a timewait socket whose idiag_state is
 * tw_substate, FIN_WAIT2 and then TIME_WAIT. */
static void test_diag_follows_close_to_time_wait(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(9000) };
	struct fp_lab *lab = open_lab();
	struct fp_diag_info info;
	int nl, srv, cli, acc;
	uint16_t cport;

	if (!lab)
		return;
	nl = fp_lab_socket(lab, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
			   NETLINK_SOCK_DIAG);
	srv = lab_listener(lab, AF_INET, lab_ip4, 9000);
	cli = fp_lab_socket(lab, AF_INET, SOCK_STREAM, 0);
	memcpy(&sa.sin_addr, lab_ip4, 4);
	CHECK_EQ(connect(cli, (struct sockaddr *)&sa, sizeof(sa)), 0);
	acc = accept(srv, NULL, NULL);
	CHECK(acc >= 0);
	cport = local_port_of(cli);
	CHECK_EQ(wait_state(nl, lab_ip4, cport, lab_ip4, 9000,
			    FP_STATE_ESTABLISHED, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_ESTABLISHED);
	CHECK_EQ(info.has_tcp_info, 1);
	close(cli);
	CHECK_EQ(wait_state(nl, lab_ip4, cport, lab_ip4, 9000,
			    FP_STATE_FIN_WAIT_2, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_FIN_WAIT_2);
	CHECK_EQ(info.timer, FP_TIMER_TIMEWAIT);
	CHECK_EQ(info.has_tcp_info, 0);
	CHECK_EQ(wait_state(nl, lab_ip4, 9000, lab_ip4, cport,
			    FP_STATE_CLOSE_WAIT, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_CLOSE_WAIT);
	close(acc);
	CHECK_EQ(wait_state(nl, lab_ip4, cport, lab_ip4, 9000,
			    FP_STATE_TIME_WAIT, &info),
		 0);
	CHECK_EQ(info.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(info.timer, FP_TIMER_TIMEWAIT);
	CHECK(info.expires_ms > 0 && info.expires_ms <= 60000);
	close(srv);
	close(nl);
	fp_lab_close(lab);
}

static void test_diag_state_from_linux(void)
{
	static const enum fp_state want[] = {
		FP_STATE_COUNT,	       FP_STATE_ESTABLISHED,
		FP_STATE_SYN_SENT,     FP_STATE_SYN_RECEIVED,
		FP_STATE_FIN_WAIT_1,   FP_STATE_FIN_WAIT_2,
		FP_STATE_TIME_WAIT,    FP_STATE_CLOSED,
		FP_STATE_CLOSE_WAIT,   FP_STATE_LAST_ACK,
		FP_STATE_LISTEN,       FP_STATE_CLOSING,
		FP_STATE_SYN_RECEIVED, FP_STATE_CLOSED,
		FP_STATE_COUNT,
	};

	for (int s = 0; s < (int)(sizeof(want) / sizeof(want[0])); s++)
		CHECK_EQ(fp_diag_state_from_linux(s), want[s]);
	CHECK_EQ(fp_diag_state_from_linux(-1), FP_STATE_COUNT);
}

/* The probe namespace's kernel sends nothing on probe0 (no IPv6, no
 * addresses): every frame the packet socket sees comes in. */
static void test_probe_side_is_silent(void)
{
	struct fp_lab *lab = open_lab();
	struct pollfd p;
	struct sockaddr_ll sll;
	socklen_t len;
	uint8_t f[2048];
	int outgoing = 0;

	if (!lab)
		return;
	p.fd = fp_lab_packet_fd(lab);
	p.events = POLLIN;
	while (poll(&p, 1, 300) == 1) {
		len = sizeof(sll);
		if (recvfrom(p.fd, f, sizeof(f), 0, (struct sockaddr *)&sll,
			     &len) > 0)
			outgoing += sll.sll_pkttype == PACKET_OUTGOING;
	}
	CHECK_EQ(outgoing, 0);
	fp_lab_close(lab);
}

/* The names in /sys/class/net, one string, to compare before and after. */
static void list_dir(const char *path, char *out, size_t cap)
{
	DIR *d = opendir(path);
	struct dirent *e;

	out[0] = '\0';
	if (!d)
		return;
	while ((e = readdir(d)))
		if (strlen(out) + strlen(e->d_name) + 2 < cap) {
			strcat(out, e->d_name);
			strcat(out, " ");
		}
	closedir(d);
}

/* Open descriptors, once those closing in the background (a closed
 * lab's packet socket) are gone: the count holds still for 30 ms. */
static int settled_fd_count(void)
{
	char names[4096];
	int n = -1, last;

	for (int i = 0; i < 50; i++) {
		last = n;
		n = 0;
		list_dir("/proc/self/fd", names, sizeof(names));
		for (char *p = names; (p = strchr(p, ' ')); p++)
			n++;
		if (n == last)
			break;
		usleep(30000);
	}
	return n;
}

/* The first process whose parent is ppid, from /proc; 0 if none. */
static pid_t child_of(pid_t ppid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	char path[300], line[512], *p;
	pid_t found = 0;
	FILE *f;

	while (d && !found && (e = readdir(d))) {
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		/* "pid (comm) state ppid ...": comm may hold spaces */
		if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')')) &&
		    atoi(p + 4) == ppid)
			found = atoi(line);
		fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* Whether our zygote (our only child here) runs a helper, looking for up
 * to a second for expect: an ended helper leaves /proc a moment after its
 * lab closed. */
static int helpers_running(int expect)
{
	pid_t zygote = child_of(getpid());
	int running = 0;

	for (int i = 0; i < 100; i++) {
		running = zygote > 0 && child_of(zygote) > 0;
		if (running == expect)
			break;
		usleep(10000);
	}
	return running;
}

static void test_close_leaves_nothing(void)
{
	char links[1024], netns[1024], links_after[1024], netns_after[1024];
	struct fp_lab *lab, *other;
	int fds = settled_fd_count(), fd;

	list_dir("/sys/class/net", links, sizeof(links));
	list_dir("/var/run/netns", netns, sizeof(netns));
	lab = open_lab();
	other = open_lab();
	if (!lab || !other)
		return;
	CHECK(helpers_running(1)); /* forked by our zygote, not by us */
	/* one lab's helper must not hold the other's descriptors */
	fp_lab_close(lab);
	fd = fp_lab_socket(other, AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	close(fd);
	fp_lab_close(other);
	CHECK(!helpers_running(0));
	list_dir("/sys/class/net", links_after, sizeof(links_after));
	list_dir("/var/run/netns", netns_after, sizeof(netns_after));
	CHECK_STR(links_after, links);
	CHECK_STR(netns_after, netns);
	CHECK(strstr(links_after, "lab0") == NULL);
	CHECK(strstr(links_after, "probe0") == NULL);
	CHECK_EQ(settled_fd_count(), fds);
}

/* A helper whose caller is SIGKILLed goes too, and so does the caller's
 * zygote. We are the subreaper of the caller's orphans, so the zygote is
 * ours to wait for; the helper is the zygote's child. */
static void test_killed_caller_ends_helper(void)
{
	struct fp_lab *lab = NULL;
	int pipefd[2], status = -1, pidfd = -1;
	pid_t caller, zygote, helper = 0;
	char c = 0;

	CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	CHECK_EQ(pipe(pipefd), 0);
	caller = fork();
	if (caller == 0) {
		fp_lab_open(&lab, NULL, 0);
		if (write(pipefd[1], "x", 1) < 0)
			_exit(1);
		pause();
		_exit(0);
	}
	close(pipefd[1]);
	CHECK_EQ(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	zygote = child_of(caller);
	CHECK(zygote > 0);
	if (zygote > 0)
		helper = child_of(zygote);
	CHECK(helper > 0);
	if (helper > 0)
		pidfd = (int)syscall(SYS_pidfd_open, helper, 0U);
	CHECK(pidfd >= 0);
	kill(caller, SIGKILL);
	CHECK_EQ(waitpid(caller, NULL, 0), caller);
	if (pidfd >= 0) {
		/* EOF on the socketpair: the helper exits by itself, at once */
		struct pollfd p = { .fd = pidfd, .events = POLLIN };

		CHECK_EQ(poll(&p, 1, 5000), 1);
		close(pidfd);
	}
	if (zygote > 0) {
		/* EOF on the zygote socket: it exits by itself too */
		alarm(5);
		CHECK_EQ(waitpid(zygote, &status, 0), zygote);
		alarm(0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	prctl(PR_SET_CHILD_SUBREAPER, 0);
}

static int read_int_file(const char *path, int missing)
{
	FILE *f = fopen(path, "r");
	int v = missing;

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = missing;
		fclose(f);
	}
	return v;
}

/* In a child that gave up root: the lab goes through a user namespace. */
static void run_unprivileged(void)
{
	struct fp_lab *lab;
	int fd;

	if (geteuid() == 0) {
		CHECK_EQ(setgroups(0, NULL), 0);
		CHECK_EQ(setresgid(65534, 65534, 65534), 0);
		CHECK_EQ(setresuid(65534, 65534, 65534), 0);
		/* Changing uid made us undumpable, which makes
		 * /proc/self/uid_map root's. A user who logged in as 65534
		 * is dumpable: be that user. */
		prctl(PR_SET_DUMPABLE, 1);
	}
	lab = open_lab();
	if (!lab)
		return;
	CHECK(fp_lab_userns_fd(lab) >= 0);
	CHECK(fp_lab_packet_fd(lab) >= 0);
	fd = lab_listener(lab, AF_INET, lab_ip4, 80);
	close(fd);
	CHECK_EQ(fp_lab_sysctl(lab, FIN_TIMEOUT, "7", NULL, 0), 0);
	CHECK_STR(sysctl_get(lab, FIN_TIMEOUT), "7");
	fp_lab_close(lab);
}

/* Debian's switch, the namespace limit, Ubuntu's AppArmor restriction. */
static int user_namespaces_off(void)
{
	return read_int_file("/proc/sys/kernel/unprivileged_userns_clone", 1) ==
		       0 ||
	       read_int_file("/proc/sys/user/max_user_namespaces", 1) == 0 ||
	       read_int_file("/proc/sys/kernel/"
			     "apparmor_restrict_unprivileged_userns",
			     0) == 1;
}

static void test_unprivileged_user_gets_a_lab(void)
{
	pid_t pid;
	int status = -1;

	if (user_namespaces_off()) {
		SKIP("user namespaces are off");
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		run_unprivileged();
		_exit(check_failed_here);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A process that made a lab as root and then gave root up gets a lab of
 * the user it became: its zygote, forked with root's rights, is not used. */
static void test_a_lab_after_giving_up_root_is_the_users(void)
{
	pid_t pid;
	int status = -1;

	if (user_namespaces_off() || geteuid() != 0) {
		SKIP("user namespaces are off, or not root");
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct fp_lab *lab = open_lab();

		if (lab)
			CHECK(fp_lab_userns_fd(lab) < 0);
		fp_lab_close(lab);
		run_unprivileged();
		_exit(check_failed_here);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Without rights: chrooted (user namespaces refused) and not root. The
 * error is -EPERM and the message names the step. */
static void test_no_rights_gives_eperm(void)
{
	char dir[] = "/tmp/test_lab.XXXXXX", err[256] = "";
	struct fp_lab *lab = NULL;
	pid_t pid;
	int status = -1;

	if (geteuid() != 0) {
		SKIP("needs root to set up");
		return;
	}
	CHECK(mkdtemp(dir) != NULL);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		if (chroot(dir) < 0 || chdir("/") < 0 ||
		    setgroups(0, NULL) < 0 ||
		    setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		CHECK_EQ(fp_lab_open(&lab, err, sizeof(err)), -EPERM);
		CHECK(lab == NULL);
		CHECK(strstr(err, "making a user namespace") != NULL);
		_exit(check_failed_here);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	rmdir(dir);
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Not a pass/fail: the figure a suite making one lab a test pays. */
static void test_open_close_time(void)
{
	enum { CYCLES = 50 };
	double ms[CYCLES], t;
	struct fp_lab *lab;

	for (int i = 0; i < CYCLES; i++) {
		t = now_ms();
		lab = open_lab();
		fp_lab_close(lab);
		ms[i] = now_ms() - t;
	}
	qsort(ms, CYCLES, sizeof(ms[0]), compare_double);
	printf("test_lab: open+close over %d cycles: median %.2f ms, min %.2f, "
	       "max %.2f\n",
	       CYCLES, ms[CYCLES / 2], ms[0], ms[CYCLES - 1]);
}

/* ---- a stack lab: the link answers for us and resolves the stack -------- */

/* A fake stack in a child of the test: it attaches to the lab's TAP, answers
 * finprobe's ARP / NS for 192.0.2.1 / 2001:db8::1 with STACK_MAC, then asks
 * for finprobe's address itself and checks the answer field by field. */
#define STACK_MAC                                                              \
	{                                                                      \
		0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee                             \
	}
static const uint8_t stack_mac[6] = STACK_MAC;
static const uint8_t local_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };

static int tap_attach(void)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	int fd = open("/dev/net/tun", O_RDWR);

	memcpy(ifr.ifr_name, FP_LAB_TAP, sizeof(FP_LAB_TAP));
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0)
		return -1;
	return fd;
}

static void put_eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, stack_mac, 6);
	f[12] = (uint8_t)(type >> 8);
	f[13] = (uint8_t)type;
}

/* op 1 (who-has tpa) or 2 (to tha/tpa) from the stack as 192.0.2.1. */
static void arp_frame(uint8_t *f, int op, const uint8_t *tha,
		      const uint8_t *tpa)
{
	static const uint8_t head[8] = { 0, 1, 8, 0, 6, 4, 0 };
	put_eth(f, op == 1 ? (const uint8_t *)"\xff\xff\xff\xff\xff\xff" : tha,
		0x0806);
	memcpy(f + 14, head, 8);
	f[21] = (uint8_t)op;
	memcpy(f + 22, stack_mac, 6);
	memcpy(f + 28, lab_ip4, 4);
	memcpy(f + 32, op == 1 ? (const uint8_t *)"\0\0\0\0\0\0" : tha, 6);
	memcpy(f + 38, tpa, 4);
}

/* The ICMPv6 checksum of an IPv6 packet p whose payload is len bytes:
 * 0 when the packet's own checksum is right. */
static uint16_t icmp6_sum(const uint8_t *p, size_t len)
{
	uint32_t sum = (uint32_t)len + 58;

	for (size_t i = 8; i < 40; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	for (size_t i = 0; i < len; i += 2)
		sum += (uint32_t)(p[40 + i] << 8 |
				  (i + 1 < len ? p[40 + i + 1] : 0));
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* An NS (135) for target or an NA (136) to dst, from 2001:db8::1. */
static void nd_frame(uint8_t *f, int type, const uint8_t *eth_dst,
		     const uint8_t *dst, const uint8_t *target)
{
	uint8_t *p = f + 14, *icmp = p + 40;
	uint16_t sum;

	memset(p, 0, 72);
	put_eth(f, eth_dst, 0x86dd);
	p[0] = 0x60;
	p[5] = 32;
	p[6] = 58;
	p[7] = 255;
	memcpy(p + 8, lab_ip6, 16);
	memcpy(p + 24, dst, 16);
	icmp[0] = (uint8_t)type;
	icmp[4] = type == 136 ? 0x60 : 0;
	memcpy(icmp + 8, target, 16);
	icmp[24] = type == 135 ? 1 : 2;
	icmp[25] = 1;
	memcpy(icmp + 26, stack_mac, 6);
	sum = icmp6_sum(p, 32);
	icmp[2] = (uint8_t)(sum >> 8);
	icmp[3] = (uint8_t)sum;
}

/* Answer finprobe's question; then ask ours until finprobe's answer, in
 * family's protocol, is right: exit 0, else 1 (after 5 s, or at once for a
 * wrong answer, with what was wrong). */
static _Noreturn void fake_stack(int tap, int family)
{
	uint8_t in[2048], out[128];
	int answered = 0;
	uint8_t group[16] = { 0xff, 2, [11] = 1, 0xff, [15] = 2 };
	const uint8_t group_mac[6] = { 0x33, 0x33, 0xff, 0, 0, 2 };

	for (int round = 0; round < 100; round++) {
		struct pollfd p = { tap, POLLIN, 0 };
		if (answered) {
			if (family == 4)
				arp_frame(out, 1, NULL, local_ip4);
			else
				nd_frame(out, 135, group_mac, group, local_ip6);
			if (write(tap, out, family == 4 ? 42 : 86) < 0)
				_exit(1);
		}
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = read(tap, in, sizeof(in));
		uint8_t *a = in + 14;
		if (family == 4 && n >= 42 && in[12] == 8 && in[13] == 6) {
			if (a[7] == 1 && !memcmp(a + 24, lab_ip4, 4) &&
			    !memcmp(in + 6, local_mac, 6)) {
				arp_frame(out, 2, a + 8, a + 14);
				answered = write(tap, out, 42) == 42;
			} else if (a[7] == 2) {
				_exit(!(memcmp(in, stack_mac, 6) == 0 &&
					memcmp(a + 8, local_mac, 6) == 0 &&
					memcmp(a + 14, local_ip4, 4) == 0 &&
					memcmp(a + 18, stack_mac, 6) == 0 &&
					memcmp(a + 24, lab_ip4, 4) == 0));
			}
		}
		if (family == 6 && n >= 86 && in[12] == 0x86 && a[6] == 58) {
			uint8_t *icmp = a + 40;
			if (icmp[0] == 135 && !memcmp(icmp + 8, lab_ip6, 16)) {
				if (icmp6_sum(a, 32) != 0 || a[7] != 255)
					_exit(2);
				nd_frame(out, 136, in + 6, a + 8, lab_ip6);
				answered = write(tap, out, 86) == 86;
			} else if (icmp[0] == 136) {
				_exit(!(icmp6_sum(a, 32) == 0 && a[7] == 255 &&
					memcmp(in, stack_mac, 6) == 0 &&
					memcmp(a + 8, local_ip6, 16) == 0 &&
					memcmp(a + 24, lab_ip6, 16) == 0 &&
					memcmp(icmp + 8, local_ip6, 16) == 0 &&
					icmp[4] == 0x60 && icmp[24] == 2 &&
					memcmp(icmp + 26, local_mac, 6) == 0));
			}
		}
	}
	_exit(3);
}

static void stack_link_answers_and_resolves(int family)
{
	struct fp_lab *lab = NULL;
	struct fp_link *link = NULL;
	struct fp_frame frames[8];
	char err[256] = "";
	uint8_t mac[6] = { 0 };
	int status = -1, tcp = 0;
	pid_t child;

	CHECK_EQ(fp_lab_open_stack(&lab, err, sizeof(err)), 0);
	if (!lab)
		return;
	child = fork();
	if (child == 0) {
		int tap = fp_lab_enter(lab) == 0 ? tap_attach() : -1;
		if (tap < 0)
			_exit(4);
		fake_stack(tap, family);
	}
	CHECK_EQ(fp_link_packet_open(&link, fp_lab_packet_fd(lab), local_mac,
				     mac),
		 0);
	CHECK_EQ(fp_link_packet_answer(link, (uint8_t)family,
				       family == 4 ? local_ip4 : local_ip6),
		 0);
	CHECK_EQ(fp_link_packet_resolve(link, family == 4 ? lab_ip4 : lab_ip6,
					5000, mac),
		 0);
	CHECK(memcmp(mac, stack_mac, 6) == 0);
	/* the stack's question is answered inside fp_link_recv, and is not
	 * handed on: it is no TCP segment */
	for (int i = 0; i < 500 && waitpid(child, &status, WNOHANG) == 0; i++) {
		struct pollfd p = { fp_link_fd(link), POLLIN, 0 };
		poll(&p, 1, 10);
		tcp += fp_link_recv(link, frames, 8);
	}
	if (status == -1) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
	}
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);
	CHECK_EQ(tcp, 0);
	fp_link_close(link);
	fp_lab_close(lab);
}

static void test_stack_link_answers_arp_and_resolves_the_stack(void)
{
	stack_link_answers_and_resolves(4);
}

static void test_stack_link_answers_ns_and_resolves_the_stack(void)
{
	stack_link_answers_and_resolves(6);
}

static void test_stack_link_resolve_times_out_without_a_stack(void)
{
	struct fp_lab *lab = NULL;
	struct fp_link *link = NULL;
	char err[256] = "";
	uint8_t mac[6] = { 0 };

	CHECK_EQ(fp_lab_open_stack(&lab, err, sizeof(err)), 0);
	if (!lab)
		return;
	CHECK_EQ(fp_link_packet_open(&link, fp_lab_packet_fd(lab), local_mac,
				     mac),
		 0);
	CHECK_EQ(fp_link_packet_resolve(link, lab_ip4, 100, mac), -EINVAL);
	CHECK_EQ(fp_link_packet_answer(link, 5, local_ip4), -EINVAL);
	CHECK_EQ(fp_link_packet_answer(link, 4, local_ip4), 0);
	CHECK_EQ(fp_link_packet_resolve(link, lab_ip4, 100, mac), -ETIMEDOUT);
	fp_link_close(link);
	fp_lab_close(lab);
}

int main(void)
{
	RUN(test_diag_state_from_linux);
	RUN(test_open_gives_descriptors);
	RUN(test_listeners_bind_lab_addresses);
	RUN(test_sysctl_read_write_unknown);
	RUN(test_sysctl_refusals_have_distinct_codes);
	RUN(test_entered_child_outlives_its_thread_not_the_lab);
	RUN(test_lab0_offloads_off);
	RUN(test_syn_reaches_packet_socket);
	RUN(test_diag_finds_syn_sent);
	RUN(test_diag_finds_v4_mapped);
	RUN(test_diag_finds_listeners);
	RUN(test_diag_follows_close_to_time_wait);
	RUN(test_probe_side_is_silent);
	RUN(test_close_leaves_nothing);
	RUN(test_killed_caller_ends_helper);
	RUN(test_unprivileged_user_gets_a_lab);
	RUN(test_a_lab_after_giving_up_root_is_the_users);
	RUN(test_no_rights_gives_eperm);
	RUN(test_stack_link_answers_arp_and_resolves_the_stack);
	RUN(test_stack_link_answers_ns_and_resolves_the_stack);
	RUN(test_stack_link_resolve_times_out_without_a_stack);
	RUN(test_open_close_time);
	return check_summary("test_lab");
}
