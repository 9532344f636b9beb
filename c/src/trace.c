/*
 * trace.c: stamped segments in pcap files, through libpcap.
 *
 * Writing: fp_trace_write_pcap takes records (IP packets with
 * CLOCK_MONOTONIC stamps, as an engine keeps them) and writes them exactly
 * as recorded, as LINKTYPE_RAW with nanosecond stamps moved to wall-clock
 * time by an offset (fp_trace_wall_offset_ns: CLOCK_REALTIME less
 * CLOCK_MONOTONIC). Nothing is altered: our segments are recorded as sent
 * (a checksum the test forced wrong stays wrong), and the link completes a
 * kernel's partial checksums before a received segment is recorded.
 *
 * Reading: fp_trace_read_pcap opens pcap or pcapng (libpcap tells them
 * apart) of Ethernet (VLAN tags skipped), raw IP, Linux cooked v1 and v2
 * (tcpdump -i any), strips the link header and keeps the TCP packets that
 * fp_segment_parse accepts, with their stamps, in a struct fp_trace.
 *
 * Call order: fp_trace_read_pcap -> fp_trace_len / fp_trace_get ->
 * fp_trace_free.
 */
#include <errno.h>
#include <pcap/pcap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "finprobe.h"
#include "grow.h"

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
	size_t off, len;
};

struct fp_trace {
	struct trace_entry *entries;
	size_t n, cap;
	uint8_t *arena;
	size_t used, room;
	size_t skipped;
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

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

/* ---- writing ----------------------------------------------------------------- */

static int write_records(pcap_dumper_t *d, const struct fp_record *recs, size_t n,
			 int64_t offset_ns, char *err, size_t err_len)
{
	for (size_t i = 0; i < n; i++) {
		int64_t wall = (int64_t)recs[i].ts_ns + offset_ns;
		if (wall < 0 || recs[i].len > SNAPLEN || (!recs[i].pkt && recs[i].len)) {
			set_error(err, err_len, "record %zu: %s", i,
				  wall < 0 ? "its time is before 1970" : "not a packet of at most 256 KiB");
			return -EINVAL;
		}
		struct pcap_pkthdr h = {0};
		h.ts.tv_sec = (time_t)(wall / 1000000000);
		h.ts.tv_usec = (suseconds_t)(wall % 1000000000); /* nanoseconds: see open_dead */
		h.caplen = h.len = (bpf_u_int32)recs[i].len;
		pcap_dump((u_char *)d, &h, recs[i].pkt);
	}
	return 0;
}

int fp_trace_write_pcap(const char *path, const struct fp_record *recs, size_t n,
			int64_t offset_ns, char *err, size_t err_len)
{
	if (!path || (n && !recs)) {
		set_error(err, err_len, "no path or no records");
		return -EINVAL;
	}
	pcap_t *p = pcap_open_dead_with_tstamp_precision(DLT_RAW, SNAPLEN, PCAP_TSTAMP_PRECISION_NANO);
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
	int rc = write_records(d, recs, n, offset_ns, err, err_len);
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

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static int trace_append(struct fp_trace *t, const uint8_t *pkt, size_t len, uint64_t ts_ns)
{
	if (fp_grow((void **)&t->entries, &t->cap, t->n + 1, sizeof(*t->entries)) ||
	    fp_grow((void **)&t->arena, &t->room, t->used + len, 1))
		return -ENOMEM;
	memcpy(t->arena + t->used, pkt, len);
	t->entries[t->n++] = (struct trace_entry){ts_ns, t->used, len};
	t->used += len;
	return 0;
}

/* The IP packet in an Ethernet frame, past any 802.1Q/802.1ad tags. */
static const uint8_t *ethernet_payload(const uint8_t *f, size_t len, size_t *ip_len)
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
static const uint8_t *cooked_payload(const uint8_t *f, size_t len, size_t hdr_len,
				     size_t proto_off, size_t *ip_len)
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
static const uint8_t *ip_of_frame(int dlt, const uint8_t *f, size_t len, size_t *ip_len)
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

static int read_all(pcap_t *p, struct fp_trace *t, char *err, size_t err_len)
{
	int dlt = pcap_datalink(p);
	struct pcap_pkthdr *h;
	const u_char *frame;
	int rc;
	while ((rc = pcap_next_ex(p, &h, &frame)) == 1) {
		size_t len;
		const uint8_t *ip = ip_of_frame(dlt, frame, h->caplen, &len);
		struct fp_segment seg;
		if (ip)
			len = ip_length(ip, len);
		if (!ip || fp_segment_parse(&seg, ip, len, NULL, 0) < 0) {
			t->skipped++;
			continue;
		}
		uint64_t ts = (uint64_t)h->ts.tv_sec * 1000000000u + (uint64_t)h->ts.tv_usec;
		if (trace_append(t, ip, len, ts) < 0) {
			set_error(err, err_len, "out of memory after %zu packets", t->n);
			return -ENOMEM;
		}
	}
	if (rc == PCAP_ERROR) { /* a truncated last record, a damaged block */
		set_error(err, err_len, "after %zu packets: %s", t->n, pcap_geterr(p));
		return -EBADMSG;
	}
	return 0;
}

int fp_trace_read_pcap(const char *path, struct fp_trace **out, char *err, size_t err_len)
{
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	FILE *f = path ? fopen(path, "rb") : NULL;
	if (!f) {
		int e = path ? errno : EINVAL;
		set_error(err, err_len, "%s: %s", path ? path : "(null)", strerror(e));
		return -e;
	}
	pcap_t *p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, errbuf);
	if (!p) {
		set_error(err, err_len, "%s: not a pcap or pcapng file: %s", path, errbuf);
		fclose(f); /* libpcap leaves it to us when it fails */
		return -EBADMSG;
	}
	int dlt = pcap_datalink(p);
	if (!dlt_supported(dlt)) {
		const char *name = pcap_datalink_val_to_name(dlt);
		set_error(err, err_len,
			  "%s: link type %d (%s) is not supported: Ethernet, raw IP or Linux cooked "
			  "capture expected",
			  path, dlt, name ? name : "unknown");
		pcap_close(p);
		return -EPROTONOSUPPORT;
	}
	struct fp_trace *t = calloc(1, sizeof(*t));
	int rc = t ? read_all(p, t, err, err_len) : -ENOMEM;
	pcap_close(p);
	if (rc < 0) {
		if (!t)
			set_error(err, err_len, "out of memory");
		fp_trace_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

size_t fp_trace_len(const struct fp_trace *t) { return t->n; }

size_t fp_trace_skipped(const struct fp_trace *t) { return t->skipped; }

int fp_trace_get(const struct fp_trace *t, size_t i, struct fp_record *rec)
{
	if (i >= t->n)
		return -ERANGE;
	const struct trace_entry *e = &t->entries[i];
	*rec = (struct fp_record){e->ts_ns, t->arena + e->off, e->len, 0, 0, 0};
	return 0;
}

void fp_trace_free(struct fp_trace *t)
{
	if (!t)
		return;
	free(t->entries);
	free(t->arena);
	free(t);
}
