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

static void test_malformed_packets_name_the_problem(void)
{
	struct fp_segment s = v4_segment(), p;
	uint8_t buf[100];
	char why[128];
	ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
	CHECK_EQ(fp_segment_parse(&p, buf, 10, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "truncated IPv4") != NULL);
	buf[0] = 0x43;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "IHL") != NULL);
	buf[0] = 0x45;
	buf[9] = 17;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "not TCP") != NULL);
	buf[9] = 6;
	buf[20 + 12] = 0x30;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "data offset") != NULL);
	buf[0] = 0x55;
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
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
	CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "runs past") != NULL);
}

/* RFC 1071's straightforward 16-bit loop, to hold the codec's wider one to. */
static uint16_t reference_checksum(const uint8_t *src, const uint8_t *dst, size_t alen,
				   const uint8_t *tcp, size_t len)
{
	uint32_t sum = 6 + (uint32_t)len;
	for (size_t i = 0; i < alen; i += 2)
		sum += (uint32_t)(src[i] << 8 | src[i + 1]) + (uint32_t)(dst[i] << 8 | dst[i + 1]);
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
		for (size_t len = 0; len < sizeof(data); len += len < 16 ? 1 : 97) {
			s.payload_len = len;
			ssize_t n = fp_segment_build(&s, buf, sizeof(buf));
			uint16_t got = (uint16_t)(buf[ip + 16] << 8 | buf[ip + 17]);
			buf[ip + 16] = buf[ip + 17] = 0;
			CHECK_EQ(got, reference_checksum(s.src, s.dst, alen, buf + ip, (size_t)n - ip));
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
		CHECK_EQ(fp_segment_parse(&p, buf, len, why, sizeof(why)), -EBADMSG);
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
		CHECK_EQ(fp_segment_parse(&p, buf, (size_t)n, why, sizeof(why)), -EBADMSG);
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
	s.options[0].kind = FP_OPT_MSS; /* something for the mutations to break */
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
		else if (rc == 0 && p.payload >= buf && p.payload + p.payload_len <= buf + len &&
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
