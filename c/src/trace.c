/*
 * trace.c: the one record log, and pcap files through libpcap.
 *
 * A trace is stamped IP packets in order, each with its direction, our
 * state after it and whether it was taken, plus the state changes of the
 * connection that wrote it. One type serves a connection's trace (which is
 * also its receive queue: see trace_log.h), a listener's catch, the
 * engine's capture and a file read. Records sit in an array of entries,
 * their bytes in one arena; both grow by doubling (fp_grow), so steady
 * traffic does not allocate per segment.
 *
 * A trace is reference counted (atomically): the connection that writes it
 * holds one reference, a caller that wants it afterwards takes another
 * (fp_trace_ref), so a trace outlives its connection and its engine.
 *
 * Writing: fp_trace_write_pcap takes a trace of IP packets with
 * CLOCK_MONOTONIC stamps and writes them exactly as recorded, as
 * LINKTYPE_RAW with nanosecond stamps moved to wall-clock time by an offset
 * (fp_trace_wall_offset_ns: CLOCK_REALTIME less CLOCK_MONOTONIC). Nothing
 * is altered: our segments are recorded as sent (a checksum the test forced
 * wrong stays wrong), and the link completes a kernel's partial checksums
 * before a received segment is recorded.
 *
 * Reading: fp_trace_read_pcap opens pcap or pcapng (libpcap tells them
 * apart) of Ethernet (VLAN tags skipped), raw IP, Linux cooked v1 and v2
 * (tcpdump -i any), strips the link header and keeps the TCP packets that
 * fp_segment_parse accepts, with their stamps, in a trace; or, one packet
 * at a time and holding none, through a reader (fp_trace_reader_open ->
 * fp_trace_reader_next ... -> fp_trace_reader_close).
 *
 * Call order: fp_trace_new or fp_trace_read_pcap -> fp_trace_append ...
 * -> fp_trace_len / fp_trace_get / fp_trace_copy / fp_trace_write_pcap ->
 * fp_trace_free (by each holder of a reference).
 */
#include <errno.h>
#include <pcap/pcap.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "clock.h"
#include "finprobe.h"
#include "grow.h"
#include "trace_log.h"

#define SNAPLEN 262144 /* above any IP packet: nothing is cut */

/* Link types by their file numbers too, where libpcap's DLT_ names differ. */
#define LINKTYPE_RAW 101
#define LINKTYPE_IPV4 228
#define LINKTYPE_IPV6 229
#define LINKTYPE_LINUX_SLL 113
#define LINKTYPE_LINUX_SLL2 276

#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_IPV6 0x86dd

struct trace_entry {
	uint64_t ts_ns;
	size_t off, len; /* the packet's bytes in the arena */
	uint8_t direction, state_after, taken;
};

struct fp_trace {
	atomic_size_t refs;
	struct trace_entry *entries;
	size_t n, cap;
	uint8_t *arena;
	size_t used, room;
	size_t first_untaken; /* no untaken inbound entry before this */
	struct fp_transition *transitions;
	size_t n_transitions, cap_transitions;
	size_t skipped; /* packets of a file that were not TCP */
};

static void set_error(char *err, size_t err_len, const char *fmt, ...)
{
	if (!err || !err_len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

int64_t fp_trace_wall_offset_ns(void)
{
	/* Read monotonic on both sides of realtime: the midpoint's error is
	 * half the gap, a few tens of nanoseconds. */
	uint64_t m1 = clock_ns(CLOCK_MONOTONIC);
	uint64_t r = clock_ns(CLOCK_REALTIME);
	uint64_t m2 = clock_ns(CLOCK_MONOTONIC);
	return (int64_t)(r - (m1 + (m2 - m1) / 2));
}

/* ---- the log ------------------------------------------------------------------- */

int fp_trace_new(struct fp_trace **out)
{
	if (!out)
		return -EINVAL;
	struct fp_trace *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	atomic_init(&t->refs, 1);
	*out = t;
	return 0;
}

struct fp_trace *fp_trace_ref(struct fp_trace *t)
{
	if (t)
		atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

void fp_trace_free(struct fp_trace *t)
{
	/* The last holder frees; acq_rel orders every other holder's reads
	 * before the memory goes. */
	if (!t ||
	    atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(t->entries);
	free(t->arena);
	free(t->transitions);
	free(t);
}

int fp_trace_append(struct fp_trace *t, const uint8_t *pkt, size_t len,
		    uint64_t ts_ns, uint8_t direction, uint8_t state_after)
{
	if (!t || (!pkt && len) || direction > FP_DIR_OUT ||
	    state_after >= FP_STATE_COUNT)
		return -EINVAL;
	if (len > SIZE_MAX - t->used ||
	    fp_grow((void **)&t->entries, &t->cap, t->n + 1,
		    sizeof(*t->entries)) ||
	    fp_grow((void **)&t->arena, &t->room, t->used + len, 1))
		return -ENOMEM;
	if (len)
		memcpy(t->arena + t->used, pkt, len);
	t->entries[t->n++] = (struct trace_entry){ ts_ns,     t->used,	   len,
						   direction, state_after, 0 };
	t->used += len;
	return 0;
}

size_t fp_trace_len(const struct fp_trace *t)
{
	return t->n;
}

size_t fp_trace_skipped(const struct fp_trace *t)
{
	return t->skipped;
}

int fp_trace_get(const struct fp_trace *t, size_t i, struct fp_record *rec)
{
	if (i >= t->n)
		return -ERANGE;
	const struct trace_entry *e = &t->entries[i];
	*rec = (struct fp_record){ e->ts_ns,	 t->arena + e->off, e->len,
				   e->direction, e->state_after,    e->taken };
	return 0;
}

size_t fp_trace_transitions(const struct fp_trace *t,
			    const struct fp_transition **list)
{
	*list = t->transitions;
	return t->n_transitions;
}

/* The arena bytes records [start, stop) take: they are contiguous. */
static size_t span_bytes(const struct fp_trace *t, size_t start, size_t stop)
{
	if (start == stop)
		return 0;
	const struct trace_entry *last = &t->entries[stop - 1];
	return last->off + last->len - t->entries[start].off;
}

int fp_trace_copy(const struct fp_trace *t, size_t start, size_t stop,
		  struct fp_trace **out)
{
	if (!t || !out)
		return -EINVAL;
	if (start > stop || stop > t->n)
		return -ERANGE;
	struct fp_trace *c;
	if (fp_trace_new(&c) < 0)
		return -ENOMEM;
	size_t n = stop - start, bytes = span_bytes(t, start, stop),
	       base = n ? t->entries[start].off : 0;
	if (fp_grow((void **)&c->entries, &c->cap, n, sizeof(*c->entries)) ||
	    fp_grow((void **)&c->arena, &c->room, bytes, 1) ||
	    fp_grow((void **)&c->transitions, &c->cap_transitions,
		    t->n_transitions, sizeof(*c->transitions))) {
		fp_trace_free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		c->entries[i] = t->entries[start + i];
		c->entries[i].off -= base;
	}
	if (bytes)
		memcpy(c->arena, t->arena + base, bytes);
	if (t->n_transitions)
		memcpy(c->transitions, t->transitions,
		       t->n_transitions * sizeof(*c->transitions));
	c->n = n;
	c->used = bytes;
	c->n_transitions = t->n_transitions;
	c->skipped = t->skipped;
	*out = c;
	return 0;
}

/* ---- the engine's side (trace_log.h) ------------------------------------------ */

size_t fp_trace_next_untaken(struct fp_trace *t)
{
	size_t i = t->first_untaken;
	while (i < t->n &&
	       (t->entries[i].direction != FP_DIR_IN || t->entries[i].taken))
		i++;
	t->first_untaken = i;
	return i;
}

size_t fp_trace_pending(struct fp_trace *t)
{
	size_t n = 0;
	for (size_t i = fp_trace_next_untaken(t); i < t->n; i++)
		n += t->entries[i].direction == FP_DIR_IN &&
		     !t->entries[i].taken;
	return n;
}

void fp_trace_mark_taken(struct fp_trace *t, size_t i, uint8_t state_after)
{
	t->entries[i].taken = 1;
	t->entries[i].state_after = state_after;
}

int fp_trace_add_transition(struct fp_trace *t, const struct fp_transition *tr)
{
	if (fp_grow((void **)&t->transitions, &t->cap_transitions,
		    t->n_transitions + 1, sizeof(*t->transitions)))
		return -ENOMEM;
	t->transitions[t->n_transitions++] = *tr;
	return 0;
}

void fp_trace_clear(struct fp_trace *t)
{
	t->n = t->used = t->first_untaken = t->n_transitions = 0;
}

size_t fp_trace_bytes(const struct fp_trace *t)
{
	return sizeof(*t) + t->cap * sizeof(*t->entries) + t->room +
	       t->cap_transitions * sizeof(*t->transitions);
}

/* ---- writing ----------------------------------------------------------------- */

static int write_records(pcap_dumper_t *d, const struct fp_trace *t,
			 int64_t offset_ns, char *err, size_t err_len)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct trace_entry *e = &t->entries[i];
		int64_t wall = (int64_t)e->ts_ns + offset_ns;
		if (wall < 0 || e->len > SNAPLEN) {
			set_error(err, err_len, "record %zu: %s", i,
				  wall < 0 ? "its time is before 1970"
					   : "not a packet of at most 256 KiB");
			return -EINVAL;
		}
		struct pcap_pkthdr h = { 0 };
		h.ts.tv_sec = (time_t)(wall / 1000000000);
		/* nanoseconds: see open_dead */
		h.ts.tv_usec = (suseconds_t)(wall % 1000000000);
		h.caplen = h.len = (bpf_u_int32)e->len;
		pcap_dump((u_char *)d, &h, t->arena + e->off);
	}
	return 0;
}

int fp_trace_write_pcap(const char *path, const struct fp_trace *t,
			int64_t offset_ns, char *err, size_t err_len)
{
	if (!path || !t) {
		set_error(err, err_len, "no path or no trace");
		return -EINVAL;
	}
	pcap_t *p = pcap_open_dead_with_tstamp_precision(
		DLT_RAW, SNAPLEN, PCAP_TSTAMP_PRECISION_NANO);
	if (!p) {
		set_error(err, err_len, "libpcap: out of memory");
		return -ENOMEM;
	}
	FILE *f = fopen(path, "wb");
	if (!f) {
		int e = errno;
		set_error(err, err_len, "%s: %s", path, strerror(e));
		pcap_close(p);
		return -e;
	}
	pcap_dumper_t *d = pcap_dump_fopen(p, f);
	if (!d) {
		set_error(err, err_len, "%s: %s", path, pcap_geterr(p));
		fclose(f);
		pcap_close(p);
		return -EIO;
	}
	int rc = write_records(d, t, offset_ns, err, err_len);
	errno = 0;
	if (pcap_dump_flush(d) < 0 || ferror(pcap_dump_file(d))) {
		int e = errno ? errno : EIO;
		if (rc == 0)
			set_error(err, err_len, "%s: %s", path, strerror(e));
		rc = rc ? rc : -e;
	}
	pcap_dump_close(d);
	pcap_close(p);
	return rc;
}

/* ---- reading ----------------------------------------------------------------- */

/* The IP packet in an Ethernet frame, past any 802.1Q/802.1ad tags. */
static const uint8_t *ethernet_payload(const uint8_t *f, size_t len,
				       size_t *ip_len)
{
	size_t off = 12;
	while (off + 2 <= len) {
		uint16_t type = get16(f + off);
		if (type == 0x8100 || type == 0x88a8 || type == 0x9100) {
			off += 4;
			continue;
		}
		if (type != ETHERTYPE_IPV4 && type != ETHERTYPE_IPV6)
			return NULL;
		*ip_len = len - off - 2;
		return f + off + 2;
	}
	return NULL;
}

/* Linux cooked capture: protocol (an ethertype) at proto_off, header hdr_len. */
static const uint8_t *cooked_payload(const uint8_t *f, size_t len,
				     size_t hdr_len, size_t proto_off,
				     size_t *ip_len)
{
	if (len < hdr_len)
		return NULL;
	uint16_t type = get16(f + proto_off);
	if (type != ETHERTYPE_IPV4 && type != ETHERTYPE_IPV6)
		return NULL;
	*ip_len = len - hdr_len;
	return f + hdr_len;
}

/* The IP packet inside a frame of link type dlt, or NULL if there is none. */
static const uint8_t *ip_of_frame(int dlt, const uint8_t *f, size_t len,
				  size_t *ip_len)
{
	switch (dlt) {
	case DLT_EN10MB:
		return ethernet_payload(f, len, ip_len);
	case DLT_RAW:
	case LINKTYPE_RAW:
	case LINKTYPE_IPV4:
	case LINKTYPE_IPV6:
		*ip_len = len;
		return f;
	case LINKTYPE_LINUX_SLL:
		return cooked_payload(f, len, 16, 14, ip_len);
	case LINKTYPE_LINUX_SLL2:
		return cooked_payload(f, len, 20, 0, ip_len);
	default:
		return NULL;
	}
}

static int dlt_supported(int dlt)
{
	switch (dlt) {
	case DLT_EN10MB:
	case DLT_RAW:
	case LINKTYPE_RAW:
	case LINKTYPE_IPV4:
	case LINKTYPE_IPV6:
	case LINKTYPE_LINUX_SLL:
	case LINKTYPE_LINUX_SLL2:
		return 1;
	default:
		return 0;
	}
}

/* Cut Ethernet padding: the IP packet ends where its header says. */
static size_t ip_length(const uint8_t *ip, size_t len)
{
	size_t want = len;
	if (len >= 20 && ip[0] >> 4 == 4)
		want = get16(ip + 2);
	else if (len >= 40 && ip[0] >> 4 == 6)
		want = 40 + (size_t)get16(ip + 4);
	return want < len ? want : len;
}

/* A file being read, one packet at a time. */
struct fp_trace_reader {
	pcap_t *pcap;
	int dlt;
	size_t kept, skipped;
};

int fp_trace_reader_open(const char *path, struct fp_trace_reader **out,
			 char *err, size_t err_len)
{
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	FILE *f = path && out ? fopen(path, "rb") : NULL;
	if (!f) {
		int e = path && out ? errno : EINVAL;
		set_error(err, err_len, "%s: %s", path ? path : "(null)",
			  strerror(e));
		return -e;
	}
	pcap_t *p = pcap_fopen_offline_with_tstamp_precision(
		f, PCAP_TSTAMP_PRECISION_NANO, errbuf);
	if (!p) {
		set_error(err, err_len, "%s: not a pcap or pcapng file: %s",
			  path, errbuf);
		fclose(f); /* libpcap leaves it to us when it fails */
		return -EBADMSG;
	}
	int dlt = pcap_datalink(p);
	if (!dlt_supported(dlt)) {
		const char *name = pcap_datalink_val_to_name(dlt);
		set_error(
			err, err_len,
			"%s: link type %d (%s) is not supported: Ethernet, raw IP or Linux cooked "
			"capture expected",
			path, dlt, name ? name : "unknown");
		pcap_close(p);
		return -EPROTONOSUPPORT;
	}
	struct fp_trace_reader *r = calloc(1, sizeof(*r));
	if (!r) {
		set_error(err, err_len, "out of memory");
		pcap_close(p);
		return -ENOMEM;
	}
	r->pcap = p;
	r->dlt = dlt;
	*out = r;
	return 0;
}

int fp_trace_reader_next(struct fp_trace_reader *r, struct fp_record *rec,
			 char *err, size_t err_len)
{
	struct pcap_pkthdr *h;
	const u_char *frame;
	int rc;
	while ((rc = pcap_next_ex(r->pcap, &h, &frame)) == 1) {
		size_t len;
		const uint8_t *ip = ip_of_frame(r->dlt, frame, h->caplen, &len);
		struct fp_segment seg;
		if (ip)
			len = ip_length(ip, len);
		if (!ip || fp_segment_parse(&seg, ip, len, NULL, 0) < 0) {
			r->skipped++;
			continue;
		}
		/* nanosecond precision asked for: tv_usec holds ns */
		uint64_t ts = (uint64_t)h->ts.tv_sec * 1000000000u +
			      (uint64_t)h->ts.tv_usec;
		*rec = (struct fp_record){ ts, ip, len, 0, 0, 0 };
		r->kept++;
		return 1;
	}
	if (rc == PCAP_ERROR) { /* a truncated last record, a damaged block */
		set_error(err, err_len, "after %zu packets: %s", r->kept,
			  pcap_geterr(r->pcap));
		return -EBADMSG;
	}
	return 0;
}

size_t fp_trace_reader_skipped(const struct fp_trace_reader *r)
{
	return r->skipped;
}

void fp_trace_reader_close(struct fp_trace_reader *r)
{
	if (!r)
		return;
	pcap_close(r->pcap);
	free(r);
}

static int read_all(struct fp_trace_reader *r, struct fp_trace *t, char *err,
		    size_t err_len)
{
	struct fp_record rec;
	int rc;
	while ((rc = fp_trace_reader_next(r, &rec, err, err_len)) == 1)
		if (fp_trace_append(t, rec.pkt, rec.len, rec.ts_ns, 0, 0) < 0) {
			set_error(err, err_len,
				  "out of memory after %zu packets", t->n);
			return -ENOMEM;
		}
	t->skipped = r->skipped;
	return rc;
}

int fp_trace_read_pcap(const char *path, struct fp_trace **out, char *err,
		       size_t err_len)
{
	struct fp_trace_reader *r;
	int rc = fp_trace_reader_open(path, &r, err, err_len);
	if (rc < 0)
		return rc;
	struct fp_trace *t = NULL;
	rc = fp_trace_new(&t) < 0 ? -ENOMEM : read_all(r, t, err, err_len);
	fp_trace_reader_close(r);
	if (rc < 0) {
		if (!t)
			set_error(err, err_len, "out of memory");
		fp_trace_free(t);
		return rc;
	}
	*out = t;
	return 0;
}
