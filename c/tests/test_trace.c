/*
 * test_trace.c: the record log and pcap files through trace.c. Records
 * appended and read back, copied, shared by reference across threads;
 * traces written and read back byte for byte with their stamps; frames of
 * every supported link type (written here with libpcap itself) stripped to
 * their IP packets; non-TCP skipped; errors named.
 */
#include <errno.h>
#include <pcap/pcap.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "finprobe.h"

static char dir[] = "/tmp/test_trace.XXXXXX";

static ssize_t build(uint8_t *buf, size_t cap, uint8_t family, uint8_t flags,
		     uint32_t seq, const char *payload)
{
	struct fp_segment s = { 0 };
	s.family = family;
	s.src[0] = family == 4 ? 192 : 0x20;
	s.dst[0] = family == 4 ? 192 : 0x20;
	s.src[15] = s.src[3] = 2;
	s.dst[15] = s.dst[3] = 1;
	s.sport = 40000;
	s.dport = 80;
	s.seq = seq;
	s.ack = 7;
	s.flags = flags;
	s.window = 1000;
	s.payload = (const uint8_t *)payload;
	s.payload_len = strlen(payload);
	return fp_segment_build(&s, buf, cap);
}

static void path_of(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

/* A trace of an IPv4 SYN out and an IPv6 segment in, its checksum wrong. */
static struct fp_trace *two_records(void)
{
	uint8_t a[200], b[200];
	ssize_t la = build(a, sizeof(a), 4, FP_SYN, 100, "");
	ssize_t lb = build(b, sizeof(b), 6, FP_PSH | FP_ACK, 101, "hello");
	b[lb - 1] ^= 0xff; /* a checksum now wrong: written as recorded */
	struct fp_trace *t = NULL;
	CHECK_EQ(fp_trace_new(&t), 0);
	CHECK_EQ(fp_trace_append(t, a, (size_t)la, 1000000123u, FP_DIR_OUT,
				 FP_STATE_SYN_SENT),
		 0);
	CHECK_EQ(fp_trace_append(t, b, (size_t)lb, 2000000456u, FP_DIR_IN,
				 FP_STATE_ESTABLISHED),
		 0);
	return t;
}

static void test_append_then_get_gives_each_record(void)
{
	struct fp_trace *t = two_records();
	struct fp_record r;
	struct fp_segment seg;
	CHECK_EQ(fp_trace_len(t), 2);
	CHECK_EQ(fp_trace_get(t, 1, &r), 0);
	CHECK_EQ(r.ts_ns, 2000000456u);
	CHECK_EQ(r.direction, FP_DIR_IN);
	CHECK_EQ(r.state_after, FP_STATE_ESTABLISHED);
	CHECK_EQ(r.taken, 0);
	CHECK_EQ(fp_segment_parse(&seg, r.pkt, r.len, NULL, 0), 0);
	CHECK_EQ(seg.payload_len, 5);
	CHECK_EQ(fp_trace_get(t, 2, &r), -ERANGE);
	const struct fp_transition *list;
	CHECK_EQ(fp_trace_transitions(t, &list), 0);
	CHECK_EQ(fp_trace_skipped(t), 0);
	fp_trace_free(t);
}

static void test_append_refuses_what_is_not_a_record(void)
{
	struct fp_trace *t = two_records();
	uint8_t byte = 0;
	CHECK_EQ(fp_trace_append(t, NULL, 10, 0, 0, 0), -EINVAL);
	CHECK_EQ(fp_trace_append(t, &byte, 1, 0, 3, 0), -EINVAL);
	CHECK_EQ(fp_trace_append(t, &byte, 1, 0, 0, FP_STATE_COUNT), -EINVAL);
	CHECK_EQ(fp_trace_append(NULL, &byte, 1, 0, 0, 0), -EINVAL);
	CHECK_EQ(fp_trace_len(t), 2); /* unchanged */
	CHECK_EQ(fp_trace_new(NULL), -EINVAL);
	fp_trace_free(t);
}

static void test_write_read_round_trip_keeps_bytes_and_stamps(void)
{
	struct fp_trace *w = two_records();
	char path[128], err[256] = "";
	path_of(path, sizeof(path), "round.pcap");
	CHECK_EQ(fp_trace_write_pcap(path, w, 1700000000000000000LL, err,
				     sizeof(err)),
		 0);
	struct fp_trace *t = NULL;
	CHECK_EQ(fp_trace_read_pcap(path, &t, err, sizeof(err)), 0);
	if (!t) {
		fp_trace_free(w);
		return;
	}
	CHECK_EQ(fp_trace_len(t), 2);
	CHECK_EQ(fp_trace_skipped(t), 0);
	struct fp_record r, want;
	for (size_t i = 0; i < 2; i++) {
		CHECK_EQ(fp_trace_get(t, i, &r), 0);
		CHECK_EQ(fp_trace_get(w, i, &want), 0);
		CHECK_EQ(r.len, want.len);
		CHECK(r.len == want.len && memcmp(r.pkt, want.pkt, r.len) == 0);
		CHECK_EQ(r.ts_ns, want.ts_ns + 1700000000000000000ULL);
		CHECK_EQ(r.direction, 0); /* not in the format */
	}
	CHECK_EQ(fp_trace_get(t, 2, &r), -ERANGE);
	fp_trace_free(t);
	fp_trace_free(w);
	fp_trace_free(NULL);
}

/* The reader gives what fp_trace_read_pcap keeps, one at a time, then 0;
 * and names a missing file as it does. */
static void test_reader_gives_the_packets_one_at_a_time(void)
{
	struct fp_trace *w = two_records();
	struct fp_trace_reader *r = NULL;
	char path[128], err[256] = "";
	path_of(path, sizeof(path), "reader.pcap");
	CHECK_EQ(fp_trace_write_pcap(path, w, 0, err, sizeof(err)), 0);
	CHECK_EQ(fp_trace_reader_open(path, &r, err, sizeof(err)), 0);
	struct fp_record got, want;
	for (size_t i = 0; r && i < 2; i++) {
		CHECK_EQ(fp_trace_reader_next(r, &got, err, sizeof(err)), 1);
		CHECK_EQ(fp_trace_get(w, i, &want), 0);
		CHECK(got.len == want.len &&
		      memcmp(got.pkt, want.pkt, got.len) == 0);
		CHECK_EQ(got.ts_ns, want.ts_ns);
	}
	if (r) {
		CHECK_EQ(fp_trace_reader_next(r, &got, err, sizeof(err)), 0);
		CHECK_EQ(fp_trace_reader_skipped(r), 0);
	}
	fp_trace_reader_close(r);
	fp_trace_reader_close(NULL);
	path_of(path, sizeof(path), "missing.pcap");
	r = NULL;
	CHECK_EQ(fp_trace_reader_open(path, &r, err, sizeof(err)), -ENOENT);
	CHECK(r == NULL && strstr(err, "missing.pcap") != NULL);
	fp_trace_free(w);
}

/* A copy of a file's trace writes the same file. */
static void test_copy_of_a_read_trace_writes_it_again(void)
{
	struct fp_trace *w = two_records(), *r = NULL, *c = NULL, *again = NULL;
	char path[128], err[256] = "";
	path_of(path, sizeof(path), "copy.pcap");
	CHECK_EQ(fp_trace_write_pcap(path, w, 0, err, sizeof(err)), 0);
	CHECK_EQ(fp_trace_read_pcap(path, &r, err, sizeof(err)), 0);
	if (r)
		CHECK_EQ(fp_trace_copy(r, 1, 2, &c), 0);
	if (c) {
		CHECK_EQ(fp_trace_write_pcap(path, c, 0, err, sizeof(err)), 0);
		CHECK_EQ(fp_trace_read_pcap(path, &again, err, sizeof(err)), 0);
	}
	if (again) {
		struct fp_record a, b;
		CHECK_EQ(fp_trace_len(again), 1);
		fp_trace_get(again, 0, &a);
		fp_trace_get(w, 1, &b);
		CHECK(a.len == b.len && memcmp(a.pkt, b.pkt, a.len) == 0);
		CHECK_EQ(a.ts_ns, b.ts_ns);
	}
	fp_trace_free(again);
	fp_trace_free(c);
	fp_trace_free(r);
	fp_trace_free(w);
}

/* Threads take and drop references at once; the last drop frees (ASan:
 * no leak, no use after free, no double free). */
static void *ref_and_drop(void *arg)
{
	struct fp_trace *t = arg;
	for (int i = 0; i < 20000; i++) {
		struct fp_trace *mine = fp_trace_ref(t);
		struct fp_record r;
		CHECK_EQ(fp_trace_get(mine, 0, &r), 0);
		fp_trace_free(mine);
	}
	fp_trace_free(t); /* the reference main took for this thread */
	return NULL;
}

static void test_references_from_threads_free_once(void)
{
	struct fp_trace *t = two_records();
	pthread_t threads[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&threads[i], NULL, ref_and_drop,
			       fp_trace_ref(t));
	fp_trace_free(t); /* main's own: the threads' keep it */
	for (int i = 0; i < 4; i++)
		pthread_join(threads[i], NULL);
	CHECK(fp_trace_ref(NULL) == NULL);
}

/* Write frames of link type dlt with libpcap, as another tool would. */
static void write_frames(const char *path, int dlt,
			 const uint8_t *const *frames, const size_t *lens,
			 int n)
{
	pcap_t *p = pcap_open_dead(dlt, 65535);
	pcap_dumper_t *d = pcap_dump_open(p, path);
	CHECK(d != NULL);
	for (int i = 0; d && i < n; i++) {
		struct pcap_pkthdr h = { { 1700000000, 250000 },
					 (bpf_u_int32)lens[i],
					 (bpf_u_int32)lens[i] };
		pcap_dump((u_char *)d, &h, frames[i]);
	}
	if (d)
		pcap_dump_close(d);
	pcap_close(p);
}

/* Read path: one TCP packet equal to ip (padding cut), `skipped` others. */
static void check_one_packet(const char *path, const uint8_t *ip, size_t len,
			     size_t skipped)
{
	struct fp_trace *t = NULL;
	char err[256] = "";
	CHECK_EQ(fp_trace_read_pcap(path, &t, err, sizeof(err)), 0);
	if (!t) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	struct fp_record r;
	CHECK_EQ(fp_trace_len(t), 1);
	CHECK_EQ(fp_trace_skipped(t), skipped);
	if (fp_trace_get(t, 0, &r) == 0) {
		CHECK_EQ(r.len, len);
		CHECK(r.len == len && memcmp(r.pkt, ip, len) == 0);
		/* microsecond file */
		CHECK_EQ(r.ts_ns, 1700000000000000000ULL + 250000000ULL);
	}
	fp_trace_free(t);
}

static void test_ethernet_with_vlan_tag_and_padding(void)
{
	uint8_t ip[100], frame[200] = { 0 }, arp[60] = { 0 };
	ssize_t n = build(ip, sizeof(ip), 4, FP_ACK, 5, "");
	/* dst, src MACs, 802.1Q tag, IPv4; padded to 64 bytes as on the wire */
	uint8_t head[] = { 2, 0, 0, 0,	  0,	1,    2,    0,	  0,
			   0, 0, 2, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00 };
	memcpy(frame, head, sizeof(head));
	memcpy(frame + sizeof(head), ip, (size_t)n);
	arp[12] = 0x08;
	arp[13] = 0x06;
	const uint8_t *frames[] = { arp, frame };
	size_t lens[] = { sizeof(arp), sizeof(head) + (size_t)n + 6 };
	char path[128];
	path_of(path, sizeof(path), "eth.pcap");
	write_frames(path, DLT_EN10MB, frames, lens, 2);
	check_one_packet(path, ip, (size_t)n, 1);
}

static void test_linux_cooked_v1_and_v2(void)
{
	uint8_t ip[100], sll[200] = { 0 }, sll2[200] = { 0 };
	ssize_t n = build(ip, sizeof(ip), 6, FP_FIN | FP_ACK, 9, "");
	sll[14] = 0x86; /* protocol at 14 of a 16-byte header */
	sll[15] = 0xdd;
	memcpy(sll + 16, ip, (size_t)n);
	sll2[0] = 0x86; /* protocol at 0 of a 20-byte header */
	sll2[1] = 0xdd;
	memcpy(sll2 + 20, ip, (size_t)n);
	char path[128];
	const uint8_t *f1[] = { sll }, *f2[] = { sll2 };
	size_t l1[] = { 16 + (size_t)n }, l2[] = { 20 + (size_t)n };
	path_of(path, sizeof(path), "sll.pcap");
	write_frames(path, DLT_LINUX_SLL, f1, l1, 1);
	check_one_packet(path, ip, (size_t)n, 0);
	path_of(path, sizeof(path), "sll2.pcap");
	write_frames(path, DLT_LINUX_SLL2, f2, l2, 1);
	check_one_packet(path, ip, (size_t)n, 0);
}

static void test_raw_ipv4_link_type_skips_udp(void)
{
	uint8_t ip[100], udp[28] = { 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17 };
	ssize_t n = build(ip, sizeof(ip), 4, FP_RST, 1, "");
	const uint8_t *frames[] = { udp, ip };
	size_t lens[] = { sizeof(udp), (size_t)n };
	char path[128];
	path_of(path, sizeof(path), "ipv4.pcap");
	write_frames(path, DLT_IPV4, frames, lens, 2);
	check_one_packet(path, ip, (size_t)n, 1);
}

static void test_errors_are_named(void)
{
	struct fp_trace *t = NULL;
	char path[128], err[256] = "";
	path_of(path, sizeof(path), "missing.pcap");
	CHECK_EQ(fp_trace_read_pcap(path, &t, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "missing.pcap") != NULL);

	path_of(path, sizeof(path), "junk.pcap");
	FILE *f = fopen(path, "w");
	fputs("this is not a capture file at all", f);
	fclose(f);
	CHECK_EQ(fp_trace_read_pcap(path, &t, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "not a pcap") != NULL);

	uint8_t frame[20] = { 0 };
	const uint8_t *frames[] = { frame };
	size_t lens[] = { sizeof(frame) };
	path_of(path, sizeof(path), "usb.pcap");
	write_frames(path, DLT_USB_LINUX, frames, lens, 1);
	CHECK_EQ(fp_trace_read_pcap(path, &t, err, sizeof(err)),
		 -EPROTONOSUPPORT);
	CHECK(strstr(err, "not supported") != NULL);
	CHECK(t == NULL);

	struct fp_trace *w = NULL;
	CHECK_EQ(fp_trace_new(&w), 0);
	CHECK_EQ(fp_trace_write_pcap("/nonexistent-dir/x.pcap", w, 0, err,
				     sizeof(err)),
		 -ENOENT);
	CHECK_EQ(fp_trace_write_pcap(path, NULL, 0, err, sizeof(err)), -EINVAL);
	uint8_t ip[60];
	CHECK_EQ(fp_trace_append(
			 w, ip, (size_t)build(ip, sizeof(ip), 4, FP_ACK, 1, ""),
			 5, 0, 0),
		 0);
	path_of(path, sizeof(path), "bad.pcap");
	/* before 1970 */
	CHECK_EQ(fp_trace_write_pcap(path, w, -10, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "before 1970") != NULL);
	fp_trace_free(w);
}

static void test_wall_offset_is_realtime_less_monotonic(void)
{
	struct timespec rt, mono;
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	int64_t expect = ((int64_t)rt.tv_sec - mono.tv_sec) * 1000000000LL +
			 (rt.tv_nsec - mono.tv_nsec);
	int64_t got = fp_trace_wall_offset_ns();
	CHECK(llabs(got - expect) < 1000000); /* within 1 ms */
}

static void remove_dir(void)
{
	static const char *names[] = { "round.pcap", "eth.pcap",  "sll.pcap",
				       "sll2.pcap",  "ipv4.pcap", "junk.pcap",
				       "usb.pcap",   "bad.pcap",  "copy.pcap" };
	char path[128];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		path_of(path, sizeof(path), names[i]);
		unlink(path);
	}
	rmdir(dir);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_append_then_get_gives_each_record);
	RUN(test_append_refuses_what_is_not_a_record);
	RUN(test_write_read_round_trip_keeps_bytes_and_stamps);
	RUN(test_copy_of_a_read_trace_writes_it_again);
	RUN(test_reader_gives_the_packets_one_at_a_time);
	RUN(test_references_from_threads_free_once);
	RUN(test_ethernet_with_vlan_tag_and_padding);
	RUN(test_linux_cooked_v1_and_v2);
	RUN(test_raw_ipv4_link_type_skips_udp);
	RUN(test_errors_are_named);
	RUN(test_wall_offset_is_realtime_less_monotonic);
	remove_dir();
	return check_summary("test_trace");
}
