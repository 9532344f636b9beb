/*
 * finprobe.h: the public C API of libfinprobe.
 *
 * finprobe owns one end of a TCP connection: it builds and parses segments
 * (segment), keeps RFC 9293's state machine for its endpoint (tcb), moves
 * frames through raw sockets (link), demultiplexes them to connections and
 * waits for them (engine), builds a lab around a Linux kernel peer (lab) and
 * reads the peer's sockets (diag).
 *
 * Conventions:
 *  - functions return 0 (or a length) on success and a negative errno on
 *    failure; objects that can fail keep a short message for the caller
 *    (fp_<object>_error());
 *  - the library never prints, exits or aborts on input;
 *  - every _new/_open has its _free/_close, and freeing NULL is a no-op.
 */
#ifndef FINPROBE_H
#define FINPROBE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FP_API __attribute__((visibility("default")))

/* ------------------------------------------------------------------ */
/* Segments: IPv4/IPv6 + TCP, options and checksums (segment.c)        */
/* ------------------------------------------------------------------ */

/* TCP flag bits, in header order; Segment.flags writes them as "FSRPAUEC". */
enum {
	FP_FIN = 0x01,
	FP_SYN = 0x02,
	FP_RST = 0x04,
	FP_PSH = 0x08,
	FP_ACK = 0x10,
	FP_URG = 0x20,
	FP_ECE = 0x40,
	FP_CWR = 0x80,
};

/* TCP option kinds that get a decoded form; any other kind stays raw. */
enum fp_option_kind {
	FP_OPT_EOL = 0,
	FP_OPT_NOP = 1,
	FP_OPT_MSS = 2,
	FP_OPT_WSCALE = 3,
	FP_OPT_SACKOK = 4,
	FP_OPT_SACK = 5,
	FP_OPT_TS = 8,
};

#define FP_MAX_OPTIONS 40     /* 40 option bytes hold at most 40 NOPs */
#define FP_MAX_OPTION_BODY 38 /* 40 bytes less kind and length */
#define FP_MAX_SACK_BLOCKS 4
#define FP_MAX_HEADERS (40 + 60) /* IPv6 header + largest TCP header */

/*
 * One option. A known kind with its standard length is decoded into v;
 * anything else (unknown kind, or a known kind with an odd length) is kept
 * as raw body bytes and has raw set, so parsing and building round-trip.
 * A raw EOL carries the bytes after it, to the end of the option area,
 * when they are no options (see segment.c on EOL and padding).
 */
struct fp_option {
	uint8_t kind;
	uint8_t raw; /* 1: body in v.body[0..len) is what goes on the wire */
	uint8_t len; /* body length (raw options) */
	union {
		uint16_t mss;
		uint8_t wscale;
		struct {
			uint32_t val, ecr;
		} ts;
		struct {
			uint8_t count;
			uint32_t edge[FP_MAX_SACK_BLOCKS][2]; /* left, right */
		} sack;
		uint8_t body[FP_MAX_OPTION_BODY + 1]; /* +1: a raw EOL's */
	} v;
};

/*
 * A segment: the IP header fields that matter to TCP, the TCP header, the
 * options and a payload. Addresses are in network byte order (4 bytes used
 * for IPv4); ports, numbers and window in host order.
 *
 * payload points at memory the segment does not own: into the parsed packet
 * after fp_segment_parse(), at the caller's buffer before fp_segment_build().
 */
struct fp_segment {
	uint8_t family; /* 4 or 6 */
	uint8_t ttl;	/* IPv4 TTL / IPv6 hop limit; 0 on build means 64 */
	uint8_t flags;	/* FP_FIN | FP_ACK ... */
	uint8_t n_options;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint16_t window, urg;
	struct fp_option options[FP_MAX_OPTIONS];
	const uint8_t *payload;
	size_t payload_len;

	/* Build: if force_checksum is set, this value goes on the wire as the
	 * TCP checksum, right or wrong. Parse: the checksum found, and whether
	 * it (and IPv4's header checksum) verified. */
	uint8_t force_checksum;
	uint8_t tcp_checksum_ok;
	uint8_t ip_checksum_ok;
	uint16_t checksum;
};

/* Bytes one option takes on the wire, kind and length included (0 for a
 * decoded option of a kind the codec does not know); a raw EOL, 1 + len. */
FP_API size_t fp_option_wire_len(const struct fp_option *option);

/* The option bytes fp_segment_build() writes for seg, padding included;
 * over 40 (or SIZE_MAX for n_options over FP_MAX_OPTIONS) means it refuses
 * them. */
FP_API size_t fp_segment_options_len(const struct fp_segment *seg);

/* Sequence space a segment uses: payload + SYN + FIN (RFC 9293 §3.4). */
FP_API uint32_t fp_segment_seg_len(const struct fp_segment *seg);

/*
 * Serialize seg as an IP packet into buf (cap bytes) with correct checksums
 * (unless seg->force_checksum). Returns the packet length, -EINVAL if a field
 * cannot be encoded (family, options longer than 40 bytes, SACK count) or
 * -ENOSPC if cap is too small.
 */
FP_API ssize_t fp_segment_build(const struct fp_segment *seg, uint8_t *buf,
				size_t cap);

/*
 * Parse an IPv4 or IPv6 packet carrying TCP. On success returns 0 and seg
 * points into pkt (payload). A bad checksum is reported in seg, not an error.
 * On malformed input returns -EBADMSG and writes what is wrong into
 * why (why_len bytes, may be NULL).
 */
FP_API int fp_segment_parse(struct fp_segment *seg, const uint8_t *pkt,
			    size_t len, char *why, size_t why_len);

/*
 * Complete the TCP checksum of an IP packet in place (a kernel's offloaded
 * "checksum partial" packet carries only the pseudo-header sum). Returns 0,
 * or -EBADMSG if pkt is not a TCP packet parse would accept.
 */
FP_API int fp_segment_fill_checksum(uint8_t *pkt, size_t len);

/* Flags as letters of "FSRPAUEC" in that order into out (at least 9 bytes). */
FP_API void fp_flags_format(uint8_t flags, char *out);
/* Letters (any order, each at most once) to flag bits; -EINVAL on others. */
FP_API int fp_flags_parse(const char *text, uint8_t *flags);


/* ------------------------------------------------------------------ */
/* States and the TCB: RFC 9293's state machine, pure (tcb.c)          */
/* ------------------------------------------------------------------ */

/*
 * States in RFC 9293's order (§3.3.2). The order is used: a state at or
 * after ESTABLISHED is synchronized (fp_state_synchronized). fp_state_name()
 * gives the names of the Python API ("FIN_WAIT_1").
 */
enum fp_state {
	FP_STATE_CLOSED,
	FP_STATE_LISTEN,
	FP_STATE_SYN_SENT,
	FP_STATE_SYN_RECEIVED,
	FP_STATE_ESTABLISHED,
	FP_STATE_FIN_WAIT_1,
	FP_STATE_FIN_WAIT_2,
	FP_STATE_CLOSE_WAIT,
	FP_STATE_CLOSING,
	FP_STATE_LAST_ACK,
	FP_STATE_TIME_WAIT,
	FP_STATE_COUNT
};

FP_API const char *fp_state_name(enum fp_state state); /* "?" if out of range */
/* -EINVAL for an unknown name. */
FP_API int fp_state_from_name(const char *name, enum fp_state *state);
FP_API int fp_state_synchronized(enum fp_state state);

/* What RFC 9293 says the endpoint would send in answer to a segment it
 * received. finprobe never sends it by itself: the caller decides. */
enum fp_reply {
	FP_REPLY_NONE,
	FP_REPLY_ACK,		/* e.g. an unacceptable segment, a FIN */
	FP_REPLY_CHALLENGE_ACK, /* RFC 5961 §3.2, §4.2 */
	FP_REPLY_RST,		/* e.g. a segment for a CLOSED endpoint */
};

/* One state change, as handed to the TCB's observer. why is a static string
 * naming the rule, with its RFC section. */
struct fp_transition {
	uint64_t when_ns;
	uint8_t from, to; /* enum fp_state */
	const char *why;
};

typedef void (*fp_transition_fn)(void *ctx, const struct fp_transition *t);

/*
 * The transmission control block of our endpoint (RFC 9293 §3.3.1). Plain
 * struct: callers may read any field; only fp_tcb_* functions change them.
 */
struct fp_tcb {
	enum fp_state state;
	uint32_t iss, irs;
	uint32_t snd_una, snd_nxt, snd_wnd, snd_wl1, snd_wl2;
	uint32_t rcv_nxt, rcv_wnd;
	uint8_t irs_known;    /* a SYN from the peer has been seen */
	uint8_t fin_sent;     /* our FIN is at fin_seq */
	uint8_t fin_received; /* the peer's FIN has been accepted */
	uint8_t passive;      /* came through LISTEN (RST in SYN_RECEIVED) */
	uint32_t fin_seq;
	uint64_t time_wait_ns;	  /* 2MSL */
	uint64_t time_wait_until; /* deadline while in TIME_WAIT */
	fp_transition_fn on_transition;
	void *on_transition_ctx;
};

/* Fields of an outgoing segment the caller set itself; the rest are filled. */
enum {
	FP_FORCE_SEQ = 1,
	FP_FORCE_ACK = 2,
	FP_FORCE_WINDOW = 4,
};

/* A CLOSED TCB with a TIME_WAIT of time_wait_ns (2MSL), iss as given. */
FP_API void fp_tcb_init(struct fp_tcb *tcb, uint32_t iss,
			uint64_t time_wait_ns);
/* Passive OPEN (RFC 9293 §3.10.1): CLOSED -> LISTEN. */
FP_API void fp_tcb_listen(struct fp_tcb *tcb, uint64_t now_ns);
/* Fill what the caller did not force: seq = SND.NXT (ISS for a SYN),
 * ack = RCV.NXT (and the ACK flag's value is left to the caller),
 * window = RCV.WND. */
FP_API void fp_tcb_fill(const struct fp_tcb *tcb, struct fp_segment *seg,
			unsigned forced);
/* Record that seg was sent: OPEN, SEND, CLOSE and ABORT of RFC 9293 §3.10.1-
 * 3.10.5 as the segment on the wire expresses them (SYN, data, FIN, RST). */
FP_API void fp_tcb_on_send(struct fp_tcb *tcb, const struct fp_segment *seg,
			   uint64_t now_ns);
/* SEGMENT ARRIVES (RFC 9293 §3.10.7, RFC 5961): move the state for a
 * segment from the peer; returns what the RFC would answer. */
FP_API enum fp_reply fp_tcb_on_segment(struct fp_tcb *tcb,
				       const struct fp_segment *seg,
				       uint64_t now_ns);
/* Timers (RFC 9293 §3.10.8): the TIME_WAIT timeout. */
FP_API void fp_tcb_tick(struct fp_tcb *tcb, uint64_t now_ns);

/* ------------------------------------------------------------------ */
/* The lab: a kernel peer in a network namespace of its own (lab.c)    */
/* ------------------------------------------------------------------ */

/*
 * A lab is a fresh network namespace joined by a veth pair to a probe
 * namespace. The kernel's namespace holds loopback and "lab0" (192.0.2.1/24,
 * 2001:db8::1/64, MAC FP_LAB_PEER_MAC) with permanent neighbour entries for
 * finprobe's addresses 192.0.2.2 and 2001:db8::2 (MAC FP_LAB_LOCAL_MAC). The
 * probe namespace holds finprobe's end, up, without addresses or IPv6, so
 * nothing but finprobe speaks there: "probe0" in a fresh one, or, as root,
 * "fp<n>" in the one namespace of the caller's labs, which its zygote holds.
 *
 * A helper process (forked by fp_lab_open) owns the namespaces, through a user
 * namespace when the caller lacks CAP_SYS_ADMIN, and hands back descriptors
 * over a socketpair (SCM_RIGHTS). It exits when the socketpair closes, so the
 * death of the caller, SIGKILL included, takes the whole lab with it.
 */
#define FP_LAB_PEER_MAC                                                        \
	{                                                                      \
		0x02, 0x66, 0x70, 0x00, 0x00, 0x01                             \
	}
#define FP_LAB_LOCAL_MAC                                                       \
	{                                                                      \
		0x02, 0x66, 0x70, 0x00, 0x00, 0x02                             \
	}

/*
 * A stack lab (fp_lab_open_stack) has one namespace: loopback and the TAP
 * device FP_LAB_TAP (IFF_TAP | IFF_NO_PI, persistent, up), with no address
 * and IPv6 disabled, so its kernel says nothing there; the packet socket is
 * bound to it. A user-space stack started in the namespace (fp_lab_enter)
 * attaches to the TAP by name and is the peer; the namespace and the TAP
 * go when the helper and every process in it are gone.
 */
#define FP_LAB_TAP "fptap0"

struct fp_lab;

/* Make a lab. Returns 0 and *out, or a negative errno with a message in err
 * (-EPERM when neither root nor user namespaces allow it). The caller frees
 * *out with fp_lab_close(). */
FP_API int fp_lab_open(struct fp_lab **out, char *err, size_t err_len);
/* Make a stack lab (above); returns as fp_lab_open. */
FP_API int fp_lab_open_stack(struct fp_lab **out, char *err, size_t err_len);
/* End the helper, close every descriptor: the namespaces and the veth go.
 * The packet socket's close, which waits for the kernel (synchronize_net),
 * finishes on a short-lived thread a moment after this returns. */
FP_API void fp_lab_close(struct fp_lab *lab);
/* The message of the last failure of a call on lab. */
FP_API const char *fp_lab_error(const struct fp_lab *lab);

/* An AF_PACKET socket (SOCK_RAW, ETH_P_ALL) bound to probe0, made in the
 * probe namespace (a stack lab's: to FP_LAB_TAP); owned by the lab, valid
 * until fp_lab_close(). */
FP_API int fp_lab_packet_fd(const struct fp_lab *lab);
/* The kernel namespace (for setns in a child process), owned by the lab. */
FP_API int fp_lab_netns_fd(const struct fp_lab *lab);
/* The user namespace the lab lives in, or -1 when the caller was root. */
FP_API int fp_lab_userns_fd(const struct fp_lab *lab);
/* In a child the caller forked, before exec (system calls only, safe after
 * fork in a threaded process): hand the child to the helper, which kills it
 * (SIGKILL) when the lab ends, by fp_lab_close() or the caller's death,
 * whichever thread forked it; a child that leads its own process group
 * (setpgid(0, 0) or setsid() before this call) has its whole group killed.
 * Then join the lab's user (if any) and network namespaces. Returns 0, or a
 * negative errno (-EPIPE: the lab has ended). */
FP_API int fp_lab_enter(const struct fp_lab *lab);
/* A new socket(family, type, protocol) in the kernel namespace; the caller
 * owns the returned descriptor. Negative errno on failure: socket()'s in
 * the lab, -EINTR when a signal came before the answer (call again: the
 * descriptor that may come late is dropped), -ETIMEDOUT, -EPIPE or -EPROTO
 * when the helper is silent, gone or garbled. */
FP_API int fp_lab_socket(struct fp_lab *lab, int family, int type,
			 int protocol);
/* Read (value NULL) or write a sysctl of the kernel namespace, name as
 * "net.ipv4.tcp_fin_timeout". Only net.* names: the helper may be real root
 * and anything else would be the host's. Reads put the value, without its
 * newline, into out. Returns 0, or:
 *   -EDOM          name is not net.* (or holds a '/'); nothing was sent
 *   -ENAMETOOLONG  name longer than 95 bytes
 *   -E2BIG         value longer than 511 bytes
 *   -ENOSPC        the value read does not fit out (or out is NULL)
 *   -ENOENT        no such setting in the lab
 *   -EISDIR        name is a group of settings ("net.ipv4")
 *   -EINVAL        the kernel refused the value written
 *   -EINTR, -ETIMEDOUT, -EPIPE, -EPROTO  as for fp_lab_socket
 *   another negative errno of open, read or write in the lab (-EACCES ...)
 * A lab serves one call at a time: callers sharing it serialize. */
FP_API int fp_lab_sysctl(struct fp_lab *lab, const char *name,
			 const char *value, char *out, size_t out_len);

/* ------------------------------------------------------------------ */
/* The peer's sockets through sock_diag (diag.c)                       */
/* ------------------------------------------------------------------ */

enum fp_diag_timer {
	FP_TIMER_NONE,
	FP_TIMER_RETRANS,
	FP_TIMER_KEEPALIVE,
	FP_TIMER_TIMEWAIT,
	FP_TIMER_PERSIST,
};

/* What the kernel says of one of its TCP sockets. */
struct fp_diag_info {
	enum fp_state state; /* Linux's state in RFC names */
	enum fp_diag_timer timer;
	uint32_t expires_ms;	 /* left on that timer */
	uint32_t retransmits;	 /* idiag_retrans: retransmissions pending */
	uint32_t rqueue, wqueue; /* bytes unread / unsent (or unacked) */
	uint8_t has_tcp_info;	 /* the fields below are valid */
	uint8_t backoff;
	uint32_t rto_us;
	uint32_t total_retrans;
	uint32_t snd_cwnd;
};

/* Linux's socket state (TCP_ESTABLISHED ...) in RFC 9293's names: the one
 * place the two numberings meet. TCP_NEW_SYN_RECV is SYN_RECEIVED;
 * FP_STATE_COUNT (named "?") for a number Linux does not have. */
FP_API enum fp_state fp_diag_state_from_linux(int linux_state);

/*
 * Look up the kernel's TCP socket for one 4-tuple, seen from the kernel:
 * local (its address and port) and remote; family AF_INET or AF_INET6.
 * nl_fd is a NETLINK_SOCK_DIAG socket of the kernel's namespace. TIME_WAIT,
 * orphaned FIN_WAIT_2 and request sockets are included; an IPv4 4-tuple is
 * found whether an AF_INET socket holds it or an AF_INET6 one as v4-mapped
 * (a dual-stack server's). One exact request, not a dump. Returns 0 and
 * *info (info NULL: only whether the socket exists is asked), -ENOENT when
 * the kernel has no such socket (a listener on the port is not a match),
 * -EINVAL for a bad family or NULL address, -EINTR when a signal
 * came before the answer (call again), -ETIMEDOUT after 5 s without one, or
 * a negative errno. One call at a time on nl_fd: callers sharing it
 * serialize.
 */
FP_API int fp_diag_lookup(int nl_fd, int family, const uint8_t *local_addr,
			  uint16_t local_port, const uint8_t *remote_addr,
			  uint16_t remote_port, struct fp_diag_info *info);

/* ------------------------------------------------------------------ */
/* Links: where IP packets go in and out (link.c)                      */
/* ------------------------------------------------------------------ */

/* A received packet: IP header first, stamped with CLOCK_MONOTONIC. */
struct fp_frame {
	uint8_t *pkt;
	size_t len;
	uint64_t ts_ns;
};

struct fp_link;

/*
 * The backends behind one small ops table:
 *  - packet: an AF_PACKET socket on an Ethernet device (the lab's probe0);
 *    fd is not owned, frames go out with src_mac -> dst_mac;
 *  - pair: two in-memory links joined to each other, for unit tests of two
 *    finprobe endpoints without privileges or sockets.
 * Each returns 0 and *out, or a negative errno.
 */
FP_API int fp_link_packet_open(struct fp_link **out, int fd,
			       const uint8_t src_mac[6],
			       const uint8_t dst_mac[6]);
FP_API int fp_link_pair_open(struct fp_link **a, struct fp_link **b);
/*
 * A packet link on a stack lab's TAP, where no kernel resolves addresses:
 * from now on it lets ARP and ICMPv6 through its filter, answers ARP
 * who-has (family 4) or neighbour solicitation (6) for local (4 or 16
 * bytes, finprobe's address) by itself, and hands on only TCP. Returns 0,
 * -EINVAL for another backend or family, or setsockopt's negative errno.
 */
FP_API int fp_link_packet_answer(struct fp_link *link, uint8_t family,
				 const uint8_t *local);
/*
 * After fp_link_packet_answer: ask who has peer (ARP; IPv6: neighbour
 * solicitation) every 50 ms until it answers, within timeout_ms; its MAC
 * goes to mac and becomes the destination of what the link sends. TCP
 * frames that arrive meanwhile are dropped. Returns 0, -ETIMEDOUT,
 * -EINVAL (not answering, negative timeout) or a socket's negative errno.
 */
FP_API int fp_link_packet_resolve(struct fp_link *link, const uint8_t *peer,
				  int timeout_ms, uint8_t mac[6]);
/*
 * raw: towards a remote target (family 4 or 6, remote and remote_port).
 * Sends through a raw IP socket (IPPROTO_RAW, header included), so the
 * kernel routes and resolves neighbours; receives on the outgoing interface
 * through AF_PACKET (SOCK_DGRAM: IP packets, no link header) with a kernel
 * BPF filter passing only TCP from (remote, remote_port) to local.
 * local (16 bytes) and *ifindex are in/out: all-zero local and *ifindex 0
 * are filled from the routing table (RTM_GETROUTE), given ones are checked
 * by it. Both sockets are the link's; what it sends carries the packet mark
 * FP_RAW_MARK (see the guard).
 * Returns 0 and *out, or a negative errno: -EPERM without CAP_NET_RAW,
 * -ENETUNREACH or -EHOSTUNREACH when no route leads to remote,
 * -EADDRNOTAVAIL when a given local is not an address of this host,
 * -ENODEV when *ifindex names no interface.
 */
FP_API int fp_link_raw_open(struct fp_link **out, uint8_t family,
			    const uint8_t *remote, uint16_t remote_port,
			    uint8_t local[16], int *ifindex);
FP_API void fp_link_close(struct fp_link *link);
/* Send one IP packet. Returns 0 or a negative errno. */
FP_API int fp_link_send(struct fp_link *link, const uint8_t *pkt, size_t len);
/* Receive up to max packets without waiting. The frames' memory belongs to
 * the link and stays valid until the next call. Returns the count (0: none
 * waiting) or a negative errno. */
FP_API int fp_link_recv(struct fp_link *link, struct fp_frame *frames, int max);
/* A descriptor that polls readable when fp_link_recv has something. */
FP_API int fp_link_fd(const struct fp_link *link);

/* ------------------------------------------------------------------ */
/* Traces: the one record log, and pcap files (trace.c)                */
/* ------------------------------------------------------------------ */

/*
 * A trace: stamped IP packets in order, each with its direction, our state
 * after it and whether it was taken, plus the state changes of the
 * connection that wrote it. A connection's trace, a listener's, the
 * engine's capture and a file read are all one.
 *
 * Lifetime: reference counted. fp_trace_new and fp_trace_read_pcap give
 * the caller one reference; fp_trace_ref takes another; fp_trace_free drops
 * one, and the last frees. A connection holds one on its own trace, so a
 * caller that took one reads the trace, whole, after fp_conn_free and
 * fp_engine_free.
 *
 * Threads: references may be taken and dropped from any thread. A trace
 * has one writer (the connection, listener or engine that made it, or the
 * caller of fp_trace_new); while the writer may still append, read it under
 * the writer's serialization (the caller's engine lock). Once the writer is
 * gone (fp_conn_free, fp_engine_free, fp_engine_capture_stop) the trace no
 * longer changes and any thread may read it.
 */
struct fp_trace;

enum fp_direction { FP_DIR_IN = 1, FP_DIR_OUT = 2 };

/* One segment of a trace. pkt is the IP packet, owned by the trace and
 * valid until the next append to it (for a connection's: its next
 * fp_engine_poll() or fp_conn_send()) or its last fp_trace_free(). */
struct fp_record {
	uint64_t ts_ns;
	const uint8_t *pkt;
	size_t len;
	uint8_t direction;   /* enum fp_direction; 0 for a file's */
	uint8_t state_after; /* our state once it was sent or taken */
	uint8_t taken;	     /* in: handed to the caller already */
};

/* An empty trace. Returns 0 and *out (one reference, the caller's), -EINVAL
 * for a NULL out, or -ENOMEM. */
FP_API int fp_trace_new(struct fp_trace **out);
/* Take a reference: trace stays valid until a matching fp_trace_free().
 * Returns trace (NULL for NULL). */
FP_API struct fp_trace *fp_trace_ref(struct fp_trace *trace);
/* Drop a reference; the last one frees the trace. NULL is a no-op. */
FP_API void fp_trace_free(struct fp_trace *trace);
/*
 * Append a copy of pkt (len bytes) stamped ts_ns, with direction (0 or an
 * enum fp_direction) and state_after (an enum fp_state), not taken. Returns
 * 0, -EINVAL for a NULL trace, a NULL pkt with len, or a direction or state
 * out of range, or -ENOMEM (the trace is then unchanged).
 */
FP_API int fp_trace_append(struct fp_trace *trace, const uint8_t *pkt,
			   size_t len, uint64_t ts_ns, uint8_t direction,
			   uint8_t state_after);
/* Records in the trace. */
FP_API size_t fp_trace_len(const struct fp_trace *trace);
/* Record i into *rec (pkt points into the trace, see struct fp_record).
 * Returns 0, or -ERANGE past the end. */
FP_API int fp_trace_get(const struct fp_trace *trace, size_t i,
			struct fp_record *rec);
/* The state changes of the connection that wrote the trace, oldest first,
 * into *list (owned by the trace, valid until its next change or its last
 * fp_trace_free(); why is a static string). Returns their count (0 for a
 * trace that no connection wrote). */
FP_API size_t fp_trace_transitions(const struct fp_trace *trace,
				   const struct fp_transition **list);
/*
 * A snapshot: a new trace holding copies of records [start, stop) (bytes,
 * stamps, directions, states, taken) and every transition, which no longer
 * changes with trace. Take it under the writer's serialization; read it
 * anywhere. Returns 0 and *out (the caller's reference), -EINVAL for a NULL
 * argument, -ERANGE unless start <= stop <= fp_trace_len(), or -ENOMEM.
 */
FP_API int fp_trace_copy(const struct fp_trace *trace, size_t start,
			 size_t stop, struct fp_trace **out);

/* CLOCK_REALTIME less CLOCK_MONOTONIC now, in ns: added to a record's
 * monotonic stamp, it gives wall-clock time. */
FP_API int64_t fp_trace_wall_offset_ns(void);

/*
 * Write every record of trace (pkt, len and ts_ns; direction and states
 * are not in the format) to path as a pcap file, LINKTYPE_RAW, nanosecond
 * stamps ts_ns + offset_ns (fp_trace_wall_offset_ns() for monotonic
 * records, 0 for wall-clock ones). Packets go out byte for byte as
 * recorded. Returns 0, or a negative errno with a message in err (err_len
 * bytes, may be NULL): the file's errno when it cannot be written, -EINVAL
 * for a NULL path or trace or a record that cannot be stored (stamp before
 * 1970, packet over 256 KiB).
 */
FP_API int fp_trace_write_pcap(const char *path, const struct fp_trace *trace,
			       int64_t offset_ns, char *err, size_t err_len);

/*
 * Read a pcap or pcapng file of Ethernet (VLAN tags skipped), raw IP
 * (LINKTYPE_RAW, IPV4, IPV6) or Linux cooked capture (SLL, SLL2: tcpdump
 * -i any). Keeps the TCP packets fp_segment_parse accepts, link header and
 * padding removed, stamped with the file's time in ns (direction and states
 * 0); other packets are skipped and counted. Returns 0 and *out (the
 * caller's reference, dropped with fp_trace_free()), or a negative errno
 * with a message in err: the file's errno when it cannot be opened,
 * -EBADMSG for a file libpcap cannot read (not a capture, damaged),
 * -EPROTONOSUPPORT for another link type.
 */
FP_API int fp_trace_read_pcap(const char *path, struct fp_trace **out,
			      char *err, size_t err_len);
/* Packets a file held that were not TCP fp_segment_parse accepts (0 for a
 * trace not read from a file). */
FP_API size_t fp_trace_skipped(const struct fp_trace *trace);

/*
 * The same file read one packet at a time, holding none of them: for files
 * larger than memory. Open as fp_trace_read_pcap (the same errors); *out is
 * the caller's, closed with fp_trace_reader_close().
 */
struct fp_trace_reader;
FP_API int fp_trace_reader_open(const char *path, struct fp_trace_reader **out,
				char *err, size_t err_len);
/* The next TCP packet as fp_trace_read_pcap keeps it: 1 and *rec, whose pkt
 * is valid until the next call or the close; 0 at the end of the file;
 * -EBADMSG with a message in err for a damaged file. */
FP_API int fp_trace_reader_next(struct fp_trace_reader *reader,
				struct fp_record *rec, char *err,
				size_t err_len);
/* Packets passed over so far that were not TCP fp_segment_parse accepts. */
FP_API size_t fp_trace_reader_skipped(const struct fp_trace_reader *reader);
/* Close the file and free reader (NULL is fine). */
FP_API void fp_trace_reader_close(struct fp_trace_reader *reader);

/* ------------------------------------------------------------------ */
/* The engine: connections over one link (engine.c)                    */
/* ------------------------------------------------------------------ */

/*
 * The engine receives from its link, demultiplexes each segment by 4-tuple
 * to a connection (or, for a SYN to an unclaimed port, a listener), stamps
 * it and keeps it in that connection's trace. Received segments wait there
 * until fp_conn_take() hands them over, which is when the TCB moves: a
 * test reasons about exactly what it has taken.
 *
 * Calls on one engine and its connections must not run concurrently.
 */
struct fp_engine;
struct fp_conn;
struct fp_listener;

/* Counters of what the engine saw that no connection took, and the heap it
 * holds (itself, its connections and listeners, their traces and the
 * capture, by capacity; not the link's buffers, not traces that only a
 * caller's reference keeps). */
struct fp_engine_stats {
	uint64_t received, unclaimed, malformed, truncated;
	uint64_t bytes_held;
};

/* A new engine over link, which it owns from now on (closed by _free).
 * Returns 0 and *out, or -ENOMEM (link is then left to the caller). */
FP_API int fp_engine_new(struct fp_engine **out, struct fp_link *link);
/* Free the connections and listeners left (their traces live on where a
 * caller holds a reference), the capture's reference, the link. NULL is a
 * no-op. */
FP_API void fp_engine_free(struct fp_engine *engine);
FP_API int fp_engine_fd(const struct fp_engine *engine);
/* Receive and demultiplex what the link has, waiting up to timeout_ms
 * (0: no wait, -1: forever) for the first packet. Returns the number of
 * packets handled or a negative errno (-EINTR when a signal came). */
FP_API int fp_engine_poll(struct fp_engine *engine, int timeout_ms);
FP_API void fp_engine_stats(const struct fp_engine *engine,
			    struct fp_engine_stats *stats);
FP_API uint64_t fp_now_ns(void); /* CLOCK_MONOTONIC */

/* Identify a connection: family 4 or 6, addresses in network order. */
struct fp_tuple {
	uint8_t family;
	uint8_t local[16], remote[16];
	uint16_t local_port, remote_port;
};

/* A connection for tuple, TCB CLOSED with iss and a TIME_WAIT of
 * time_wait_ns, with an empty trace. Returns 0 and *out (freed with
 * fp_conn_free(), or with the engine), -EINVAL for a NULL argument or a
 * family not 4 or 6, -EADDRINUSE when a connection of this engine already
 * has the tuple, -ENOMEM. */
FP_API int fp_conn_new(struct fp_conn **out, struct fp_engine *engine,
		       const struct fp_tuple *tuple, uint32_t iss,
		       uint64_t time_wait_ns);
/* Forget the connection: its tuple's segments go unclaimed from now on. Its
 * trace goes with it unless a caller holds a reference. NULL is a no-op. */
FP_API void fp_conn_free(struct fp_conn *conn);
FP_API struct fp_tcb *fp_conn_tcb(struct fp_conn *conn);
FP_API const struct fp_tuple *fp_conn_tuple(const struct fp_conn *conn);
/* The connection's trace: segments both ways in order, and its state
 * changes (fp_trace_transitions). Borrowed: valid while the connection is;
 * fp_trace_ref() it to keep it afterwards. The engine writes it. */
FP_API struct fp_trace *fp_conn_trace(struct fp_conn *conn);
/* Whether the engine has a connection for tuple. */
FP_API int fp_engine_has_tuple(const struct fp_engine *engine,
			       const struct fp_tuple *tuple);
/*
 * Send seg on the connection: addresses and ports come from its tuple, the
 * fields not in forced (FP_FORCE_*) from the TCB, then the TCB records the
 * send (fp_tcb_on_send) and the trace the segment. seg is updated to what
 * went out. Returns 0 or a negative errno (-EINVAL: cannot be built; the
 * link's errno; -ENOMEM: sent, but not recorded in the trace).
 */
FP_API int fp_conn_send(struct fp_conn *conn, struct fp_segment *seg,
			unsigned forced);
/* Take the next received segment: the TCB processes it. Returns 0 with
 * *rec and *seg (pointing into the trace), or -EAGAIN when none waits.
 * *reply says what RFC 9293 would answer (finprobe does not). */
FP_API int fp_conn_take(struct fp_conn *conn, struct fp_record *rec,
			struct fp_segment *seg, enum fp_reply *reply);
/* Received segments not taken yet. */
FP_API size_t fp_conn_pending(const struct fp_conn *conn);

/* Catch SYNs to (family, addr, port) that no connection claims. Returns 0
 * and *out (freed with fp_listener_free(), or with the engine), -EINVAL for
 * a NULL argument or a family not 4 or 6, or -ENOMEM. */
FP_API int fp_listener_new(struct fp_listener **out, struct fp_engine *engine,
			   uint8_t family, const uint8_t *addr, uint16_t port);
/* Stop catching; what it caught and did not hand over goes. NULL: no-op. */
FP_API void fp_listener_free(struct fp_listener *listener);
/* The oldest waiting SYN's 4-tuple, or -EAGAIN. */
FP_API int fp_listener_peek(const struct fp_listener *listener,
			    struct fp_tuple *tuple);
/* A connection for the oldest waiting SYN: TCB in LISTEN, and every segment
 * of that 4-tuple the listener caught moved to its trace, waiting to be
 * taken. Returns 0 and *out (as from fp_conn_new), -EAGAIN when no SYN
 * waits, -EADDRINUSE when a connection has the SYN's 4-tuple already, or
 * -ENOMEM. */
FP_API int fp_listener_accept(struct fp_conn **out,
			      struct fp_listener *listener, uint32_t iss,
			      uint64_t time_wait_ns);

/*
 * The engine's capture, off until started: every segment the engine
 * receives (parsed, whether or not a connection or listener claims it) and
 * every one it sends, in order; records' direction is set, state_after and
 * taken are 0. While off nothing is kept, so an engine holds nothing for a
 * connection once it is freed.
 *
 * _start returns 0 (also when the capture runs already: it goes on) or
 * -ENOMEM. _stop drops the engine's reference: the capture ends, and lives
 * on only where a caller took a reference. fp_engine_capture gives the
 * capture, borrowed (fp_trace_ref to keep it past _stop or fp_engine_free),
 * or NULL while off; the engine writes it.
 */
FP_API int fp_engine_capture_start(struct fp_engine *engine);
FP_API void fp_engine_capture_stop(struct fp_engine *engine);
FP_API struct fp_trace *fp_engine_capture(struct fp_engine *engine);

/* ------------------------------------------------------------------ */
/* The guard: RST suppression for remote targets (guard.c)            */
/* ------------------------------------------------------------------ */

/*
 * While finprobe speaks for a 4-tuple from raw sockets, the local kernel has
 * no socket for it and would answer the peer with RSTs. A guard drops
 * exactly those: one nftables rule per tuple (TCP, RST set, from local to
 * remote, packet mark not FP_RAW_MARK, which finprobe's own RSTs carry),
 * in an output chain of a table of its own ("inet
 * finprobe_<pid>_<n>", fp_guard_table()). The table exists only while it
 * holds a rule, so the ruleset is then exactly as before; it carries the
 * owner flag, so the kernel removes it when the process dies (SIGKILL
 * included). Nothing else of the ruleset is read or touched.
 *
 * A guard belongs to the process that made it (not to a forked child) and
 * is not thread-safe. Needs CAP_NET_ADMIN in the network namespace.
 */
struct fp_guard;

/* The packet mark (SO_MARK) of the raw backend's sending socket: what tells
 * finprobe's RSTs from the kernel's on the way out. */
#define FP_RAW_MARK 0x66700000u

/* A guard with no table yet. Returns 0 and *out, or a negative errno with a
 * message in err (err_len bytes). The caller frees it with fp_guard_free(). */
FP_API int fp_guard_new(struct fp_guard **out, char *err, size_t err_len);
/* Delete the table if it exists, close the nftables context. */
FP_API void fp_guard_free(struct fp_guard *guard);
/* Drop the kernel's RSTs from tuple's local end to its remote end (the
 * table made first if needed). Returns 0, -EEXIST if the tuple has a rule
 * already, -EPERM without CAP_NET_ADMIN, or another negative errno. */
FP_API int fp_guard_add(struct fp_guard *guard, const struct fp_tuple *tuple);
/* Remove the tuple's rule (by its handle), the table with the last one.
 * Returns 0, -ENOENT if the tuple has no rule, or a negative errno. */
FP_API int fp_guard_remove(struct fp_guard *guard,
			   const struct fp_tuple *tuple);
/* Rules the guard holds (0: no table). */
FP_API size_t fp_guard_count(const struct fp_guard *guard);
/* The table's name, without family ("finprobe_1234_0"); owned by guard. */
FP_API const char *fp_guard_table(const struct fp_guard *guard);
/* The message of the last failure of a call on guard ("" if none). */
FP_API const char *fp_guard_error(const struct fp_guard *guard);

#ifdef __cplusplus
}
#endif
#endif /* FINPROBE_H */
