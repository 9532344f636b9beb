/* test_segment.c: the codec (segment.c) and sequence arithmetic (seq.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "finprobe.h"
#include "seq.h"

static struct fp_segment v4_segment(void)
{
	struct fp_segment s;
	memset(&s, 0, sizeof(s));
	s.family = 4;
	inet_pton(AF_INET, "192.0.2.2", s.src);
	inet_pton(AF_INET, "192.0.2.1", s.dst);
	s.sport = 40000;
	s.dport = 8080;
	s.seq = 1001;
	s.ack = 5001;
	s.flags = FP_FIN | FP_ACK;
	s.window = 65535;
	return s;
}

static void test_build_parse_round_trip_v4(void)
{
	struct fp_segment s = v4_segment(), p;
	static const uint8_t data[] = "hello";
	s.payload = data;
	s.payload_len = 5;
	uint8_t buf[1500];
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(n, 20 + 20 + 5);
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, NULL, 0), 0);
	CHECK_EQ(p.family, 4);
	CHECK(memcmp(p.src, s.src, 4) == 0 && memcmp(p.dst, s.dst, 4) == 0);
	CHECK_EQ(p.sport, 40000);
	CHECK_EQ(p.seq, 1001);
	CHECK_EQ(p.ack, 5001);
	CHECK_EQ(p.flags, FP_FIN | FP_ACK);
	CHECK_EQ(p.payload_len, 5);
	CHECK(memcmp(p.payload, "hello", 5) == 0);
	CHECK(p.tcp_checksum_ok);
	CHECK(p.ip_checksum_ok);
	CHECK_EQ(fp_segment_seg_len(&p), 6);
}

static void test_build_parse_round_trip_v6_with_options(void)
{
	struct fp_segment s = v4_segment(), p;
	s.family = 6;
	inet_pton(AF_INET6, "2001:db8::2", s.src);
	inet_pton(AF_INET6, "2001:db8::1", s.dst);
	s.flags = FP_SYN;
	s.n_options = 4;
	s.options[0].kind = FP_OPT_MSS;
	s.options[0].v.mss = 1460;
	s.options[1].kind = FP_OPT_SACKOK;
	s.options[2].kind = FP_OPT_TS;
	s.options[2].v.ts.val = 7;
	s.options[2].v.ts.ecr = 0xdeadbeef;
	s.options[3].kind = FP_OPT_WSCALE;
	s.options[3].v.wscale = 7;
	uint8_t buf[1500];
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(n, 40 + 20 + 20); /* 4 + 2 + 10 + 3 = 19, padded to 20 */
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, NULL, 0), 0);
	CHECK_EQ(p.family, 6);
	CHECK_EQ(p.n_options, 4);
	CHECK_EQ(p.options[0].v.mss, 1460);
	CHECK_EQ(p.options[2].v.ts.ecr, 0xdeadbeef);
	CHECK_EQ(p.options[3].v.wscale, 7);
	CHECK(memcmp(p.options, s.options, 4 * sizeof(s.options[0])) == 0);
	CHECK(memcmp(p.src, s.src, 16) == 0 && memcmp(p.dst, s.dst, 16) == 0);
	CHECK(p.tcp_checksum_ok);
}

static void test_forced_checksum_is_sent_and_reported_bad(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	s.force_checksum = 1;
	s.checksum = 0x1234;
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, NULL, 0), 0);
	CHECK_EQ(p.checksum, 0x1234);
	CHECK(!p.tcp_checksum_ok);
	CHECK_EQ(fp_segment_fill_checksum(buf, (size_t)n), 0);
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, NULL, 0), 0);
	CHECK(p.tcp_checksum_ok);
}

static void test_unknown_and_odd_options_stay_raw(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	s.n_options = 2;
	s.options[0].kind = 30;
	s.options[0].raw = 1;
	s.options[0].len = 3;
	memcpy(s.options[0].v.body, "abc", 3);
	s.options[1].kind = FP_OPT_MSS; /* MSS with a 3-byte body: odd, raw */
	s.options[1].raw = 1;
	s.options[1].len = 1;
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, NULL, 0), 0);
	CHECK_EQ(p.n_options, 2);
	CHECK_EQ(p.options[0].raw, 1);
	CHECK_EQ(p.options[0].len, 3);
	CHECK(memcmp(p.options[0].v.body, "abc", 3) == 0);
	CHECK_EQ(p.options[1].kind, FP_OPT_MSS);
	CHECK_EQ(p.options[1].raw, 1);
}

/* ---- options: every list comes back, every option area rebuilds -------- */

/* seg with options o[0..n) built, parsed and built again: the options come
 * back equal and the bytes are the same. Returns the option bytes' length,
 * -1 if any of that failed. */
static int options_round_trip(const struct fp_option *o, int n)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t a[100], b[100];
	s.n_options = (uint8_t)n;
	memcpy(s.options, o, (size_t)n * sizeof(*o));
	ssize_t na = fp_segment_build(&s, a, sizeof(a));
	if (na < 0 || fp_segment_parse(&p, a, (size_t)na, NULL, 0) != 0 ||
	    p.n_options != n ||
	    memcmp(p.options, o, (size_t)n * sizeof(*o)) != 0)
		return -1;
	ssize_t nb = fp_segment_build(&p, b, sizeof(b));
	if (nb != na || memcmp(a, b, (size_t)na) != 0)
		return -1;
	return (int)na - 40;
}

static struct fp_option opt(uint8_t kind)
{
	struct fp_option o;
	memset(&o, 0, sizeof(o));
	o.kind = kind;
	if (kind == FP_OPT_WSCALE)
		o.v.wscale = 7;
	if (kind == FP_OPT_MSS)
		o.v.mss = 1460;
	return o;
}

static void test_eol_in_the_final_padding_round_trips(void)
{
	struct fp_option ws_eol[] = { opt(FP_OPT_WSCALE), opt(FP_OPT_EOL) };
	struct fp_option nop_eol[] = { opt(FP_OPT_NOP), opt(FP_OPT_EOL) };
	struct fp_option eols[] = { opt(FP_OPT_NOP), opt(FP_OPT_EOL),
				    opt(FP_OPT_EOL) };

	/* without the EOL the padding is its own: one word each */
	CHECK_EQ(options_round_trip(ws_eol, 1), 4);
	CHECK_EQ(options_round_trip(nop_eol, 1), 4);
	/* an EOL of the caller's in the padding takes a word of zeros more,
	 * or it could not be told from the padding */
	CHECK_EQ(options_round_trip(ws_eol, 2), 8);
	CHECK_EQ(options_round_trip(nop_eol, 2), 8);
	CHECK_EQ(options_round_trip(eols, 3), 12);
	/* at a word boundary the EOL and its padding are one word, as ever */
	struct fp_option mss_eol[] = { opt(FP_OPT_MSS), opt(FP_OPT_EOL) };
	CHECK_EQ(options_round_trip(mss_eol, 2), 8);
}

static void test_options_after_an_eol_round_trip(void)
{
	struct fp_option after[] = { opt(FP_OPT_EOL), opt(FP_OPT_MSS) };
	struct fp_option between[] = { opt(FP_OPT_NOP), opt(FP_OPT_EOL),
				       opt(FP_OPT_NOP), opt(FP_OPT_WSCALE) };

	CHECK_EQ(options_round_trip(after, 2), 8);
	CHECK_EQ(options_round_trip(between, 4), 8);
}

/* An option area of the given bytes after a plain header, parsed. */
static int parse_option_area(struct fp_segment *p, uint8_t *buf,
			     const uint8_t *area, size_t len)
{
	struct fp_segment s = v4_segment();
	s.n_options = 0;
	ssize_t n = fp_segment_build(&s, buf, 100);
	buf[3] = (uint8_t)(n + len);
	buf[32] = (uint8_t)(((20 + len) / 4) << 4);
	memcpy(buf + 40, area, len);
	fp_segment_fill_checksum(buf, (size_t)n + len);
	return fp_segment_parse(p, buf, (size_t)n + len, NULL, 0);
}

static void test_bytes_after_an_eol_that_are_no_options_are_kept(void)
{
	static const uint8_t junk[8] = { 1, 0, 0xff, 0xff, 2, 9, 0, 0 };
	uint8_t buf[100], again[100];
	struct fp_segment p;

	CHECK_EQ(parse_option_area(&p, buf, junk, sizeof(junk)), 0);
	CHECK_EQ(p.n_options, 2);
	CHECK_EQ(p.options[0].kind, FP_OPT_NOP);
	CHECK_EQ(p.options[1].kind, FP_OPT_EOL);
	CHECK_EQ(p.options[1].raw, 1);
	CHECK_EQ(p.options[1].len, 6);
	CHECK(memcmp(p.options[1].v.body, junk + 2, 6) == 0);
	CHECK_EQ(fp_option_wire_len(&p.options[1]), 7);
	CHECK_EQ(fp_segment_build(&p, again, sizeof(again)), 48);
	CHECK(memcmp(again + 40, junk, sizeof(junk)) == 0);

	/* an EOL first, then 39 bytes that are no options */
	uint8_t most[40] = { 0, 0xff };
	CHECK_EQ(parse_option_area(&p, buf, most, sizeof(most)), 0);
	CHECK_EQ(p.n_options, 1);
	CHECK_EQ(p.options[0].len, 39);
	CHECK_EQ(fp_segment_build(&p, again, sizeof(again)), 80);
	CHECK(memcmp(again + 40, most, sizeof(most)) == 0);
}

/* Option areas of random bytes from an alphabet rich in EOL, NOP and
 * lengths: each one that parses builds again to its very bytes and parses
 * to the same options; one that does not names no EOL before the fault. */
static void test_every_option_area_that_parses_rebuilds_to_its_bytes(void)
{
	static const uint8_t alphabet[] = { 0, 0, 0, 1,	 1,    2,   3,
					    4, 5, 8, 10, 0xfe, 0xff };
	uint8_t area[40], buf[100], again[100];
	struct fp_segment p, q;
	int parsed = 0, with_eol = 0, same = 0;
	srand(3);
	for (int i = 0; i < 100000; i++) {
		size_t len = 4 * (size_t)(1 + rand() % 10);
		for (size_t k = 0; k < len; k++)
			area[k] = alphabet[rand() % sizeof(alphabet)];
		if (parse_option_area(&p, buf, area, len) != 0)
			continue;
		parsed++;
		with_eol += memchr(area, 0, len) != NULL;
		ssize_t n = fp_segment_build(&p, again, sizeof(again));
		same += n == (ssize_t)(40 + len) &&
			memcmp(again + 40, area, len) == 0 &&
			fp_segment_parse(&q, again, (size_t)n, NULL, 0) == 0 &&
			q.n_options == p.n_options &&
			memcmp(q.options, p.options,
			       p.n_options * sizeof(p.options[0])) == 0;
	}
	CHECK_EQ(same, parsed);
	CHECK(parsed > 10000);
	CHECK(with_eol > 5000);
}

/* Random option lists with EOLs anywhere: each that fits comes back. */
static void test_every_option_list_that_fits_comes_back(void)
{
	static const uint8_t kinds[] = {
		FP_OPT_EOL,    FP_OPT_EOL,    FP_OPT_NOP, FP_OPT_MSS,
		FP_OPT_WSCALE, FP_OPT_SACKOK, 30
	};
	struct fp_option o[12];
	int tried = 0, back = 0, eol_inside = 0;
	srand(4);
	for (int i = 0; i < 50000; i++) {
		int n = 1 + rand() % 12;
		for (int k = 0; k < n; k++) {
			o[k] = opt(kinds[rand() % sizeof(kinds)]);
			if (o[k].kind == 30) {
				o[k].raw = 1;
				o[k].len = (uint8_t)(rand() % 4);
				memset(o[k].v.body, 0xab, o[k].len);
			}
		}
		struct fp_segment s = v4_segment();
		s.n_options = (uint8_t)n;
		memcpy(s.options, o, (size_t)n * sizeof(o[0]));
		if (fp_segment_options_len(&s) > 40)
			continue;
		tried++;
		back += options_round_trip(o, n) >= 0;
		for (int k = 0; k + 1 < n; k++)
			eol_inside += o[k].kind == FP_OPT_EOL &&
				      o[k + 1].kind != FP_OPT_EOL;
	}
	CHECK_EQ(back, tried);
	CHECK(tried > 20000);
	CHECK(eol_inside > 5000);
}

static void test_malformed_packets_name_the_problem(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	char why[128];
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(fp_segment_parse(&p, buf, 10, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "truncated IPv4") != NULL);
	buf[0] = 0x43;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "IHL") != NULL);
	buf[0] = 0x45;
	buf[9] = 17;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "not TCP") != NULL);
	buf[9] = 6;
	buf[20 + 12] = 0x30;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "data offset") != NULL);
	buf[0] = 0x55;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "version 5") != NULL);
}

static void test_option_running_past_header_is_malformed(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	char why[128];
	s.n_options = 1;
	s.options[0].kind = FP_OPT_MSS;
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	buf[20 + 21] = 9; /* MSS claims 9 bytes in a 4-byte option area */
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "runs past") != NULL);
}

/* RFC 1071's straightforward 16-bit loop, to hold the codec's wider one to. */
static uint16_t reference_checksum(const uint8_t *src, const uint8_t *dst,
				   size_t alen, const uint8_t *tcp, size_t len)
{
	uint32_t sum = 6 + (uint32_t)len;
	for (size_t i = 0; i < alen; i += 2)
		sum += (uint32_t)(src[i] << 8 | src[i + 1]) +
		       (uint32_t)(dst[i] << 8 | dst[i + 1]);
	for (size_t i = 0; i < len; i++)
		sum += i % 2 ? tcp[i] : (uint32_t)tcp[i] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void test_checksum_matches_the_reference_for_every_length(void)
{
	static uint8_t data[1500], buf[1600];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 0xf3);
	for (int family = 4; family <= 6; family += 2) {
		struct fp_segment s = v4_segment();
		size_t ip = family == 4 ? 20 : 40, alen = family == 4 ? 4 : 16;
		if (family == 6) {
			s.family = 6;
			inet_pton(AF_INET6, "2001:db8::ffff:2", s.src);
			inet_pton(AF_INET6, "2001:db8::ffff:1", s.dst);
		}
		s.payload = data;
		for (size_t len = 0; len < sizeof(data);
		     len += len < 16 ? 1 : 97) {
			s.payload_len = len;
			ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
			uint16_t got =
				(uint16_t)(buf[ip + 16] << 8 | buf[ip + 17]);
			buf[ip + 16] = buf[ip + 17] = 0;
			CHECK_EQ(got,
				 reference_checksum(s.src, s.dst, alen,
						    buf + ip, (size_t)n - ip));
		}
	}
}

static void test_every_truncation_says_truncated(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	char why[128];
	s.payload = (const uint8_t *)"abcdef";
	s.payload_len = 6;
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	for (size_t len = 1; len < (size_t)n; len++) {
		CHECK_EQ(fp_segment_parse(&p, buf, len, why, sizeof(why)),
			 -EBADMSG);
		CHECK(strstr(why, "truncated") != NULL);
	}
	CHECK_EQ(fp_segment_parse(&p, buf, 0, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "empty") != NULL);
}

static void test_option_length_below_two_is_malformed(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	char why[128];
	s.n_options = 1;
	s.options[0].kind = FP_OPT_MSS;
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	for (uint8_t len = 0; len < 2; len++) {
		buf[20 + 21] = len; /* would loop on the same option forever */
		CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)),
			 -EBADMSG);
		CHECK(strstr(why, "bad length") != NULL);
	}
}

/* Whatever the bytes, parse either refuses them with -EBADMSG and a reason
 * or gives a segment that lies inside them; both happen among the
 * mutations. A crash or an out-of-bounds read would stop the run (ASan in
 * ctest-asan). */
static void test_random_mutations_parse_or_are_refused(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t good[100], buf[100];
	char why[128];
	int parsed = 0, refused = 0, wild = 0;
	s.n_options = 1;
	/* something for the mutations to break */
	s.options[0].kind = FP_OPT_MSS;
	s.payload = (const uint8_t *)"abcdefgh";
	s.payload_len = 8;
	ssize_t n = fp_segment_build(&s, good, sizeof(good));
	srand(1);
	for (int i = 0; i < 200000; i++) {
		memcpy(buf, good, (size_t)n);
		for (int k = 0; k < 3; k++)
			buf[rand() % n] = (uint8_t)rand();
		size_t len = (size_t)(rand() % (n + 1));
		why[0] = '\0';
		int rc = fp_segment_parse(&p, buf, len, why, sizeof(why));
		if (rc == -EBADMSG && why[0])
			refused++;
		else if (rc == 0 && p.payload >= buf &&
			 p.payload + p.payload_len <= buf + len &&
			 p.n_options <= FP_MAX_OPTIONS)
			parsed++;
		else
			wild++;
	}
	CHECK_EQ(wild, 0);
	CHECK(parsed > 1000);
	CHECK(refused > 1000);
}

static void test_build_rejects_what_cannot_be_encoded(void)
{
	struct fp_segment s = v4_segment();
	uint8_t buf[100];
	s.family = 5;
	CHECK_EQ(fp_segment_build(&s, buf, sizeof(buf)), -EINVAL);
	s.family = 4;
	CHECK_EQ(fp_segment_build(&s, buf, 30), -ENOSPC);
	s.n_options = 11;
	for (int i = 0; i < 11; i++)
		s.options[i].kind = FP_OPT_MSS; /* 44 bytes > 40 */
	CHECK_EQ(fp_segment_build(&s, buf, sizeof(buf)), -EINVAL);
}

static void test_flags_letters(void)
{
	char out[9];
	uint8_t f;
	fp_flags_format(FP_FIN | FP_ACK, out);
	CHECK_STR(out, "FA");
	fp_flags_format(0xff, out);
	CHECK_STR(out, "FSRPAUEC");
	CHECK_EQ(fp_flags_parse("AS", &f), 0);
	CHECK_EQ(f, FP_SYN | FP_ACK);
	CHECK_EQ(fp_flags_parse("X", &f), -EINVAL);
	CHECK_EQ(fp_flags_parse("AA", &f), -EINVAL);
}

static void test_seq_comparisons_wrap(void)
{
	CHECK(seq_lt(0xfffffff0u, 0x10));
	CHECK(seq_gt(0x10, 0xfffffff0u));
	CHECK(seq_leq(5, 5) && seq_geq(5, 5));
	CHECK(seq_between(0xfffffff0u, 0, 0x10));
	CHECK(!seq_between(0xfffffff0u, 0x11, 0x10));
	CHECK(seq_in_window(3, 0xfffffffeu, 10));
	CHECK(!seq_in_window(8, 0xfffffffeu, 10));
	CHECK_EQ(seq_max(0xffffffffu, 1), 1);
}

int main(void)
{
	RUN(test_build_parse_round_trip_v4);
	RUN(test_build_parse_round_trip_v6_with_options);
	RUN(test_forced_checksum_is_sent_and_reported_bad);
	RUN(test_unknown_and_odd_options_stay_raw);
	RUN(test_eol_in_the_final_padding_round_trips);
	RUN(test_options_after_an_eol_round_trip);
	RUN(test_bytes_after_an_eol_that_are_no_options_are_kept);
	RUN(test_every_option_area_that_parses_rebuilds_to_its_bytes);
	RUN(test_every_option_list_that_fits_comes_back);
	RUN(test_malformed_packets_name_the_problem);
	RUN(test_option_running_past_header_is_malformed);
	RUN(test_option_length_below_two_is_malformed);
	RUN(test_every_truncation_says_truncated);
	RUN(test_checksum_matches_the_reference_for_every_length);
	RUN(test_random_mutations_parse_or_are_refused);
	RUN(test_build_rejects_what_cannot_be_encoded);
	RUN(test_flags_letters);
	RUN(test_seq_comparisons_wrap);
	return check_summary("test_segment");
}
