/*
 * guard.c: RST suppression for remote targets, through libnftables.
 *
 * finprobe speaks for a 4-tuple from raw sockets; the local kernel has no
 * socket for it and answers the peer's segments with RST. A guard drops
 * exactly those RSTs, with one rule per tuple in an output chain of a table
 * of its own:
 *
 *   table inet finprobe_<pid>_<n> {
 *       flags owner
 *       chain out {
 *           type filter hook output priority 0; policy accept;
 *           ip saddr L ip daddr R tcp sport l tcp dport r
 *               tcp flags & rst == rst meta mark != FP_RAW_MARK counter drop
 *       }
 *   }
 *
 * The owner flag binds the table to the netlink socket that made it: the
 * kernel deletes the table when that socket closes, so the death of the
 * process, SIGKILL included, takes it away. That socket is the nft
 * context's: libnftables opens it in nft_ctx_new() and keeps it until
 * nft_ctx_free() (1.0.6; checked: only the owning socket may add to an owned
 * table, and every command after the first does). So a guard keeps one
 * context for its whole life, and marks that socket close-on-exec, lest a
 * program the process runs keep the table alive after it.
 *
 * The table exists only while it holds a rule: the first fp_guard_add makes
 * table, chain and rule in one transaction, the last fp_guard_remove deletes
 * the table, so the ruleset is then exactly as before. Rules are removed by
 * the handle the kernel gave them (learnt from the echo of the add).
 * finprobe's raw sockets mark what they send (FP_RAW_MARK), so the rule
 * lets the RSTs a test sends itself through. The counter shows, in `nft
 * list ruleset`, how many of the kernel's RSTs the rule stopped.
 *
 * Call order: fp_guard_new -> fp_guard_add / fp_guard_remove -> fp_guard_free.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "finprobe.h"
#include "tuple.h"

#define FD_SCAN_MAX 4096 /* descriptors above this are not checked */

struct guard_rule {
	struct fp_tuple tuple;
	uint64_t handle;
};

struct fp_guard {
	struct nft_ctx *nft;
	pid_t pid; /* the process the table belongs to */
	char table[48];
	struct guard_rule *rules;
	size_t n, cap;
	char error[256];
};

static atomic_uint guard_counter;

static void set_error(struct fp_guard *g, const char *fmt, const char *detail)
{
	snprintf(g->error, sizeof(g->error), fmt, detail);
}

/* ---- the nft context's netlink socket ------------------------------------- */

/* The descriptors open now, as a bitmap of FD_SCAN_MAX bits. */
static void open_fds(uint8_t *bits)
{
	memset(bits, 0, FD_SCAN_MAX / 8);
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name);
		if (fd > 0 && fd < FD_SCAN_MAX && fd != dirfd(d))
			bits[fd / 8] |= (uint8_t)(1u << (fd % 8));
	}
	closedir(d);
}

static int is_nfnetlink(int fd)
{
	int domain = 0, protocol = 0;
	socklen_t len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return 0;
	len = sizeof(int);
	return domain == AF_NETLINK &&
	       getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 &&
	       protocol == NETLINK_NETFILTER;
}

/* libnftables opens its socket without O_CLOEXEC and does not show it: find
 * the netfilter netlink sockets that nft_ctx_new() opened (new since
 * `before`) and mark them. */
static void cloexec_new_sockets(const uint8_t *before)
{
	uint8_t after[FD_SCAN_MAX / 8];
	open_fds(after);
	for (int fd = 0; fd < FD_SCAN_MAX; fd++) {
		uint8_t bit = (uint8_t)(1u << (fd % 8));
		if ((after[fd / 8] & bit) && !(before[fd / 8] & bit) &&
		    is_nfnetlink(fd))
			fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
	}
}

/* nft_ctx_new() exits the process when it cannot open its netlink socket:
 * try one first, and fail politely instead. */
static int netlink_available(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/* ---- commands --------------------------------------------------------------- */

/* The first line of what nft said, for a message. */
static void first_line(const char *text, char *out, size_t len)
{
	snprintf(out, len, "%s", text ? text : "");
	out[strcspn(out, "\n")] = '\0';
}

/* Run cmd; on failure keep nft's message and guess the errno from it
 * (libnftables reports only text). */
static int run(struct fp_guard *g, const char *cmd)
{
	if (nft_run_cmd_from_buffer(g->nft, cmd) == 0)
		return 0;
	const char *text = nft_ctx_get_error_buffer(g->nft);
	char line[200];
	first_line(text && strstr(text, "Error: ") ? strstr(text, "Error: ") + 7
						   : text,
		   line, sizeof(line));
	set_error(g, "nftables: %s", line[0] ? line : "command failed");
	if (text && strstr(text, "Operation not permitted")) {
		set_error(g, "nftables: %s (CAP_NET_ADMIN is needed)", line);
		return -EPERM;
	}
	if (text && strstr(text, "No such file or directory"))
		return -ENOENT;
	return -EIO;
}

/* The handle in the echo of "add rule ...": "... # handle 7". */
static int rule_handle(struct fp_guard *g, uint64_t *handle)
{
	const char *out = nft_ctx_get_output_buffer(g->nft);
	const char *line = out ? strstr(out, "add rule ") : NULL;
	const char *end = line ? strchrnul(line, '\n') : NULL;
	const char *h = line ? strstr(line, "# handle ") : NULL;
	*handle = h && h < end ? strtoull(h + 9, NULL, 10) : 0;
	if (*handle)
		return 0;
	set_error(g, "nftables did not echo the rule's handle: %s",
		  out ? out : "(no output)");
	return -EIO;
}

/* "ip saddr L ip daddr R tcp sport l tcp dport r" for a tuple. */
static int match_text(const struct fp_tuple *t, char *out, size_t len)
{
	char local[INET6_ADDRSTRLEN], remote[INET6_ADDRSTRLEN];
	int af = t->family == 6 ? AF_INET6 : AF_INET;
	const char *ip = t->family == 6 ? "ip6" : "ip";
	if ((t->family != 4 && t->family != 6) ||
	    !inet_ntop(af, t->local, local, sizeof(local)) ||
	    !inet_ntop(af, t->remote, remote, sizeof(remote)))
		return -EINVAL;
	snprintf(out, len, "%s saddr %s %s daddr %s tcp sport %u tcp dport %u",
		 ip, local, ip, remote, t->local_port, t->remote_port);
	return 0;
}

static struct guard_rule *find(struct fp_guard *g, const struct fp_tuple *t)
{
	for (size_t i = 0; i < g->n; i++)
		if (tuple_equal(&g->rules[i].tuple, t))
			return &g->rules[i];
	return NULL;
}

static int same_process(struct fp_guard *g)
{
	if (getpid() == g->pid)
		return 0;
	snprintf(g->error, sizeof(g->error), "the guard belongs to process %d",
		 (int)g->pid);
	return -ECHILD;
}

/* ---- the public face ------------------------------------------------------- */

int fp_guard_new(struct fp_guard **out, char *err, size_t err_len)
{
	uint8_t before[FD_SCAN_MAX / 8];
	int rc = netlink_available();
	if (rc) {
		snprintf(err, err_len,
			 "cannot open a netfilter netlink socket: %s",
			 strerror(-rc));
		return rc;
	}
	struct fp_guard *g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	open_fds(before);
	g->nft = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!g->nft || nft_ctx_buffer_output(g->nft) ||
	    nft_ctx_buffer_error(g->nft)) {
		nft_ctx_free(g->nft);
		free(g);
		snprintf(err, err_len, "cannot make an nftables context");
		return -ENOMEM;
	}
	cloexec_new_sockets(before);
	nft_ctx_output_set_flags(g->nft,
				 NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_ECHO);
	g->pid = getpid();
	snprintf(g->table, sizeof(g->table), "finprobe_%d_%u", (int)g->pid,
		 atomic_fetch_add(&guard_counter, 1));
	*out = g;
	return 0;
}

void fp_guard_free(struct fp_guard *g)
{
	if (!g)
		return;
	if (g->n && same_process(g) == 0) {
		char cmd[96];
		snprintf(cmd, sizeof(cmd), "delete table inet %s\n", g->table);
		run(g, cmd); /* else closing the socket deletes it */
	}
	nft_ctx_free(g->nft);
	free(g->rules);
	free(g);
}

int fp_guard_add(struct fp_guard *g, const struct fp_tuple *t)
{
	char match[160], cmd[512];
	int rc = same_process(g);
	if (rc)
		return rc;
	if (match_text(t, match, sizeof(match)) < 0) {
		set_error(g, "%s", "not an IPv4 or IPv6 tuple");
		return -EINVAL;
	}
	if (find(g, t)) {
		set_error(g, "a rule for %s exists already", match);
		return -EEXIST;
	}
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		struct guard_rule *rules =
			realloc(g->rules, cap * sizeof(*rules));
		if (!rules) {
			set_error(g, "%s", "out of memory");
			return -ENOMEM;
		}
		g->rules = rules;
		g->cap = cap;
	}
	int n = 0;
	if (g->n == 0)
		n = snprintf(
			cmd, sizeof(cmd),
			"add table inet %s { flags owner; }\n"
			"add chain inet %s out { type filter hook output priority 0; policy accept; }\n",
			g->table, g->table);
	snprintf(
		cmd + n, sizeof(cmd) - (size_t)n,
		"add rule inet %s out %s tcp flags & rst == rst meta mark != 0x%08x counter drop\n",
		g->table, match, FP_RAW_MARK);
	uint64_t handle = 0;
	rc = run(g, cmd);
	if (rc == 0 && (rc = rule_handle(g, &handle)) < 0 && g->n == 0) {
		snprintf(cmd, sizeof(cmd), "delete table inet %s\n", g->table);
		run(g, cmd);
	}
	if (rc)
		return rc;
	g->rules[g->n++] = (struct guard_rule){ *t, handle };
	return 0;
}

int fp_guard_remove(struct fp_guard *g, const struct fp_tuple *t)
{
	char cmd[160];
	int rc = same_process(g);
	if (rc)
		return rc;
	struct guard_rule *r = find(g, t);
	if (!r) {
		set_error(g, "%s", "no rule for this tuple");
		return -ENOENT;
	}
	if (g->n == 1)
		snprintf(cmd, sizeof(cmd), "delete table inet %s\n", g->table);
	else
		snprintf(cmd, sizeof(cmd),
			 "delete rule inet %s out handle %" PRIu64 "\n",
			 g->table, r->handle);
	rc = run(g, cmd);
	if (rc)
		return rc;
	*r = g->rules[--g->n];
	return 0;
}

size_t fp_guard_count(const struct fp_guard *g)
{
	return g->n;
}

const char *fp_guard_table(const struct fp_guard *g)
{
	return g->table;
}

const char *fp_guard_error(const struct fp_guard *g)
{
	return g->error;
}
