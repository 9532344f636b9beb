/*
 * segment.c: the codec. IPv4/IPv6 + TCP + options + checksums, bytes in and
 * struct out (fp_segment_parse), struct in and bytes out (fp_segment_build).
 * Pure: no I/O, no allocation; a parsed segment points into the packet.
 *
 * Parse order: IP header (ip_parse) -> TCP header (tcp_parse) -> options
 * (options_parse) -> checksums. Build runs the same steps backwards.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "finprobe.h"

#define IPV4_HEADER 20
#define IPV6_HEADER 40
#define TCP_HEADER 20
#define MAX_OPTION_BYTES 40
#define IPPROTO_TCP_NUM 6

static const char flag_letters[] = "FSRPAUEC";

/* ---- checksums (RFC 1071) --------------------------------------------- */

/*
 * The one's-complement sum of p, added to sum, folded to 16 bits so callers
 * can keep adding small values. Summed 32 bits at a time into 64 (RFC 1071
 * §2(C): a wider accumulator, folded at the end, gives the same sum), which
 * quarters the loop for full-size payloads.
 */
static uint32_t sum_bytes(uint32_t sum, const uint8_t *p, size_t len)
{
	uint64_t acc = sum;
	for (; len >= 4; p += 4, len -= 4)
		acc += get32(p);
	if (len >= 2) {
		acc += get16(p);
		p += 2;
		len -= 2;
	}
	if (len)
		acc += (uint32_t)p[0] << 8;
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint32_t)acc;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* The TCP pseudo-header of RFC 9293 §3.1 (IPv4) and RFC 8200 §8.1 (IPv6). */
static uint32_t pseudo_header_sum(int family, const uint8_t *src,
				  const uint8_t *dst, size_t tcp_len)
{
	size_t alen = family == 4 ? 4 : 16;
	uint32_t sum = sum_bytes(0, src, alen);
	sum = sum_bytes(sum, dst, alen);
	sum += IPPROTO_TCP_NUM;
	sum += (uint32_t)(tcp_len & 0xffff) + (uint32_t)(tcp_len >> 16);
	return sum;
}

static uint16_t tcp_checksum(int family, const uint8_t *src, const uint8_t *dst,
			     const uint8_t *tcp, size_t tcp_len)
{
	uint32_t sum = pseudo_header_sum(family, src, dst, tcp_len);
	return fold(sum_bytes(sum, tcp, tcp_len));
}

/* ---- flags ------------------------------------------------------------- */

void fp_flags_format(uint8_t flags, char *out)
{
	char *o = out;
	for (int bit = 0; bit < 8; bit++)
		if (flags & (1u << bit))
			*o++ = flag_letters[bit];
	*o = '\0';
}

int fp_flags_parse(const char *text, uint8_t *flags)
{
	uint8_t bits = 0;
	for (const char *c = text; *c; c++) {
		const char *at = strchr(flag_letters, *c);
		if (!at || (bits & (1u << (at - flag_letters))))
			return -EINVAL;
		bits |= (uint8_t)(1u << (at - flag_letters));
	}
	*flags = bits;
	return 0;
}

uint32_t fp_segment_seg_len(const struct fp_segment *seg)
{
	return (uint32_t)seg->payload_len + !!(seg->flags & FP_SYN) +
	       !!(seg->flags & FP_FIN);
}

/* ---- parse -------------------------------------------------------------- */

struct parse_ctx {
	char *why;
	size_t why_len;
};

static int malformed(struct parse_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int malformed(struct parse_ctx *ctx, const char *fmt, ...)
{
	if (ctx->why && ctx->why_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ctx->why, ctx->why_len, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* Where the TCP header starts and how long the TCP part is. */
struct ip_view {
	size_t tcp_off, tcp_len;
};

static int ipv4_parse(struct fp_segment *seg, const uint8_t *pkt, size_t len,
		      struct ip_view *v, struct parse_ctx *ctx)
{
	if (len < IPV4_HEADER)
		return malformed(ctx, "truncated IPv4 header: %zu of 20 bytes",
				 len);
	size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
	if (ihl < IPV4_HEADER)
		return malformed(
			ctx, "bad IPv4 header length (IHL) %zu, below 20", ihl);
	size_t total = get16(pkt + 2);
	if (total > len)
		return malformed(
			ctx,
			"truncated IPv4 packet: total length %zu, %zu bytes given",
			total, len);
	if (total < ihl)
		return malformed(
			ctx,
			"bad IPv4 header length (IHL) %zu, beyond the total length %zu",
			ihl, total);
	if (pkt[9] != IPPROTO_TCP_NUM)
		return malformed(ctx, "not TCP: IPv4 protocol %u", pkt[9]);
	if (get16(pkt + 6) & 0x3fff)
		return malformed(
			ctx,
			"IPv4 fragment (offset or more-fragments set): not reassembled");
	seg->family = 4;
	seg->ttl = pkt[8];
	memcpy(seg->src, pkt + 12, 4);
	memcpy(seg->dst, pkt + 16, 4);
	seg->ip_checksum_ok = fold(sum_bytes(0, pkt, ihl)) == 0;
	v->tcp_off = ihl;
	v->tcp_len = total - ihl;
	return 0;
}

/* IPv6 extension headers that only need skipping (RFC 8200 §4). */
static int ipv6_skippable(uint8_t next)
{
	/* hop-by-hop, routing, dest */
	return next == 0 || next == 43 || next == 60;
}

static int ipv6_parse(struct fp_segment *seg, const uint8_t *pkt, size_t len,
		      struct ip_view *v, struct parse_ctx *ctx)
{
	if (len < IPV6_HEADER)
		return malformed(ctx, "truncated IPv6 header: %zu of 40 bytes",
				 len);
	size_t end = IPV6_HEADER + get16(pkt + 4);
	if (end > len)
		return malformed(
			ctx,
			"truncated IPv6 packet: payload length %u, %zu bytes given",
			get16(pkt + 4), len);
	uint8_t next = pkt[6];
	size_t off = IPV6_HEADER;
	while (ipv6_skippable(next)) {
		if (off + 8 > end)
			return malformed(ctx,
					 "truncated IPv6 extension header %u",
					 next);
		size_t ext_len = ((size_t)pkt[off + 1] + 1) * 8;
		next = pkt[off];
		off += ext_len;
		if (off > end)
			return malformed(
				ctx,
				"IPv6 extension header runs past the packet");
	}
	if (next != IPPROTO_TCP_NUM)
		return malformed(ctx, "not TCP: IPv6 next header %u", next);
	seg->family = 6;
	seg->ttl = pkt[7];
	memcpy(seg->src, pkt + 8, 16);
	memcpy(seg->dst, pkt + 24, 16);
	seg->ip_checksum_ok = 1; /* IPv6 has no header checksum */
	v->tcp_off = off;
	v->tcp_len = end - off;
	return 0;
}

static int ip_parse(struct fp_segment *seg, const uint8_t *pkt, size_t len,
		    struct ip_view *v, struct parse_ctx *ctx)
{
	if (len == 0)
		return malformed(ctx, "empty packet");
	switch (pkt[0] >> 4) {
	case 4:
		return ipv4_parse(seg, pkt, len, v, ctx);
	case 6:
		return ipv6_parse(seg, pkt, len, v, ctx);
	default:
		return malformed(ctx, "IP version %u, expected 4 or 6",
				 pkt[0] >> 4);
	}
}

/* Standard option lengths (kind and length bytes included); 0: no decoding. */
static size_t decoded_length(uint8_t kind, size_t len)
{
	switch (kind) {
	case FP_OPT_MSS:
		return 4;
	case FP_OPT_WSCALE:
		return 3;
	case FP_OPT_SACKOK:
		return 2;
	case FP_OPT_TS:
		return 10;
	case FP_OPT_SACK:
		return len >= 10 && (len - 2) % 8 == 0 ? len : 0;
	default:
		return 0;
	}
}

static void option_decode(struct fp_option *o, const uint8_t *p, size_t len)
{
	o->kind = p[0];
	if (decoded_length(p[0], len) != len) {
		o->raw = 1;
		o->len = (uint8_t)(len - 2);
		memcpy(o->v.body, p + 2, len - 2);
		return;
	}
	switch (o->kind) {
	case FP_OPT_MSS:
		o->v.mss = get16(p + 2);
		break;
	case FP_OPT_WSCALE:
		o->v.wscale = p[2];
		break;
	case FP_OPT_TS:
		o->v.ts.val = get32(p + 2);
		o->v.ts.ecr = get32(p + 6);
		break;
	case FP_OPT_SACK:
		o->v.sack.count = (uint8_t)((len - 2) / 8);
		for (int i = 0; i < o->v.sack.count; i++) {
			o->v.sack.edge[i][0] = get32(p + 2 + 8 * i);
			o->v.sack.edge[i][1] = get32(p + 6 + 8 * i);
		}
		break;
	}
}

/*
 * Options and their bytes map one to one, both ways: every option area that
 * parses builds again to the same bytes, and every option list that fits
 * parses back equal. Three rules make it so:
 *  - Options are read on past an EOL (RFC 9293 §3.1: EOL ends the list; a
 *    receiver ignores the rest, but the rest is on the wire all the same):
 *    [("eol",), ("mss", 1460)] comes back as given.
 *  - When the bytes after an EOL do not read as options, the first EOL
 *    keeps all of them raw (kind 0, raw, body = every byte after it): junk
 *    a sender left after its EOL is reproduced byte for byte.
 *  - Zeros ending the area are padding up to the last 4-byte boundary, and
 *    each further word of zeros is one EOL. So a list ending in n EOLs
 *    gets, after the zero padding of what precedes them, n words of zeros:
 *    [("wscale", 7), ("eol",)] is 03 03 07 00 00 00 00 00, told apart from
 *    [("wscale", 7)], 03 03 07 00. At a boundary that is the usual single
 *    word: [("mss", 1460), ("eol",)] ends in 00 00 00 00.
 */

/* One option at p[i..len) into o: its length on the wire, or 0 if it does
 * not decode (why, in ctx). */
static size_t option_at(struct fp_option *o, const uint8_t *p, size_t i,
			size_t len, struct parse_ctx *ctx)
{
	memset(o, 0, sizeof(*o));
	o->kind = p[i];
	if (p[i] == FP_OPT_EOL || p[i] == FP_OPT_NOP)
		return 1;
	if (i + 1 >= len) {
		malformed(ctx,
			  "TCP option kind %u at offset %zu has no length byte",
			  p[i], i);
		return 0;
	}
	size_t olen = p[i + 1];
	/* would not advance: every option but EOL and NOP has kind and length */
	if (olen < 2) {
		malformed(
			ctx,
			"TCP option kind %u at offset %zu has a bad length %zu, below 2",
			p[i], i, olen);
		return 0;
	}
	if (i + olen > len) {
		malformed(
			ctx,
			"TCP option kind %u with length %zu runs past the %zu option bytes",
			p[i], olen, len);
		return 0;
	}
	option_decode(o, p + i, olen);
	return olen;
}

/* The EOL at options[k] keeps the bytes after it, which are no options. */
static void keep_after_eol(struct fp_segment *seg, int k, const uint8_t *after,
			   size_t len)
{
	struct fp_option *o = &seg->options[k];
	memset(o, 0, sizeof(*o));
	o->kind = FP_OPT_EOL;
	o->raw = 1;
	o->len = (uint8_t)len;
	memcpy(o->v.body, after, len);
	seg->n_options = (uint8_t)(k + 1);
}

/* Plain EOLs ending the list: each zero byte read was one. */
static int trailing_eols(const struct fp_segment *seg)
{
	int n = 0;
	while (n < seg->n_options &&
	       seg->options[seg->n_options - 1 - n].kind == FP_OPT_EOL &&
	       !seg->options[seg->n_options - 1 - n].raw)
		n++;
	return n;
}

static int options_parse(struct fp_segment *seg, const uint8_t *p, size_t len,
			 struct parse_ctx *ctx)
{
	struct parse_ctx quiet = { NULL, 0 };
	size_t i = 0, eol_at = len; /* the first EOL's offset */
	int eol_slot = 0;
	seg->n_options = 0;
	while (i < len) {
		/* past an EOL, bytes that are no options are no error */
		size_t olen = option_at(&seg->options[seg->n_options], p, i,
					len, eol_at < len ? &quiet : ctx);
		if (olen == 0 && eol_at == len)
			return -EBADMSG;
		if (olen == 0) {
			keep_after_eol(seg, eol_slot, p + eol_at + 1,
				       len - eol_at - 1);
			return 0;
		}
		if (p[i] == FP_OPT_EOL && eol_at == len) {
			eol_at = i;
			eol_slot = seg->n_options;
		}
		seg->n_options++;
		i += olen;
	}
	int zeros = trailing_eols(seg); /* padding, then a word an EOL */
	seg->n_options = (uint8_t)(seg->n_options - zeros + zeros / 4);
	return 0;
}

static int tcp_parse(struct fp_segment *seg, const uint8_t *tcp, size_t len,
		     struct parse_ctx *ctx)
{
	if (len < TCP_HEADER)
		return malformed(ctx, "truncated TCP header: %zu of 20 bytes",
				 len);
	size_t doff = (size_t)(tcp[12] >> 4) * 4;
	if (doff < TCP_HEADER || doff > len)
		return malformed(
			ctx,
			"bad TCP data offset %zu (header must be 20..%zu bytes)",
			doff, len < 60 ? len : 60);
	seg->sport = get16(tcp);
	seg->dport = get16(tcp + 2);
	seg->seq = get32(tcp + 4);
	seg->ack = get32(tcp + 8);
	seg->flags = tcp[13];
	seg->window = get16(tcp + 14);
	seg->checksum = get16(tcp + 16);
	seg->urg = get16(tcp + 18);
	seg->payload = tcp + doff;
	seg->payload_len = len - doff;
	return options_parse(seg, tcp + TCP_HEADER, doff - TCP_HEADER, ctx);
}

int fp_segment_parse(struct fp_segment *seg, const uint8_t *pkt, size_t len,
		     char *why, size_t why_len)
{
	struct parse_ctx ctx = { why, why_len };
	struct ip_view v;
	memset(seg, 0, offsetof(struct fp_segment, options));
	int err = ip_parse(seg, pkt, len, &v, &ctx);
	if (err)
		return err;
	const uint8_t *tcp = pkt + v.tcp_off;
	err = tcp_parse(seg, tcp, v.tcp_len, &ctx);
	if (err)
		return err;
	seg->force_checksum = 0;
	seg->tcp_checksum_ok = tcp_checksum(seg->family, seg->src, seg->dst,
					    tcp, v.tcp_len) == 0;
	return 0;
}

int fp_segment_fill_checksum(uint8_t *pkt, size_t len)
{
	struct fp_segment seg;
	struct ip_view v;
	struct parse_ctx ctx = { NULL, 0 };
	if (ip_parse(&seg, pkt, len, &v, &ctx) || v.tcp_len < TCP_HEADER)
		return -EBADMSG;
	uint8_t *tcp = pkt + v.tcp_off;
	put16(tcp + 16, 0);
	put16(tcp + 16,
	      tcp_checksum(seg.family, seg.src, seg.dst, tcp, v.tcp_len));
	return 0;
}

/* ---- build -------------------------------------------------------------- */

size_t fp_option_wire_len(const struct fp_option *o)
{
	if (o->kind == FP_OPT_EOL && o->raw)
		/* the bytes after it have no length byte */
		return 1 + (size_t)o->len;
	if (o->kind == FP_OPT_EOL || o->kind == FP_OPT_NOP)
		return 1;
	if (o->raw)
		return 2 + (size_t)o->len;
	if (o->kind == FP_OPT_SACK)
		return 2 + 8 * (size_t)o->v.sack.count;
	return decoded_length(o->kind, 0);
}

static ssize_t option_encode(const struct fp_option *o, uint8_t *p, size_t room)
{
	size_t len = fp_option_wire_len(o);
	if (len == 0 || len > room ||
	    (o->kind == FP_OPT_SACK && !o->raw &&
	     (o->v.sack.count == 0 || o->v.sack.count > FP_MAX_SACK_BLOCKS)))
		return -EINVAL;
	p[0] = o->kind;
	if (o->kind == FP_OPT_EOL && o->raw) {
		memcpy(p + 1, o->v.body, o->len);
		return (ssize_t)len;
	}
	if (len == 1)
		return 1;
	p[1] = (uint8_t)len;
	if (o->raw) {
		memcpy(p + 2, o->v.body, o->len);
		return (ssize_t)len;
	}
	switch (o->kind) {
	case FP_OPT_MSS:
		put16(p + 2, o->v.mss);
		break;
	case FP_OPT_WSCALE:
		p[2] = o->v.wscale;
		break;
	case FP_OPT_TS:
		put32(p + 2, o->v.ts.val);
		put32(p + 6, o->v.ts.ecr);
		break;
	case FP_OPT_SACK:
		for (int i = 0; i < o->v.sack.count; i++) {
			put32(p + 2 + 8 * i, o->v.sack.edge[i][0]);
			put32(p + 6 + 8 * i, o->v.sack.edge[i][1]);
		}
		break;
	}
	return (ssize_t)len;
}

/* What precedes the trailing EOLs, zero-padded to a boundary, then a word
 * of zeros for each of them (see options_parse()). */
size_t fp_segment_options_len(const struct fp_segment *seg)
{
	size_t n = 0;
	if (seg->n_options > FP_MAX_OPTIONS)
		return SIZE_MAX;
	int eols = trailing_eols(seg);
	for (int i = 0; i < seg->n_options - eols; i++)
		n += fp_option_wire_len(&seg->options[i]);
	return ((n + 3) & ~(size_t)3) + 4 * (size_t)eols;
}

/* Options into p, zero-padded; returns fp_segment_options_len(). */
static ssize_t options_build(const struct fp_segment *seg, uint8_t *p)
{
	size_t n = 0, total = fp_segment_options_len(seg);
	if (total > MAX_OPTION_BYTES)
		return -EINVAL;
	memset(p, 0, MAX_OPTION_BYTES);
	for (int i = 0; i < seg->n_options - trailing_eols(seg); i++) {
		ssize_t len = option_encode(&seg->options[i], p + n,
					    MAX_OPTION_BYTES - n);
		if (len < 0)
			return len;
		n += (size_t)len;
	}
	return (ssize_t)total;
}

static void ipv4_build(const struct fp_segment *seg, uint8_t *ip, size_t total)
{
	memset(ip, 0, IPV4_HEADER);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)total);
	put16(ip + 6, 0x4000); /* DF, as TCP stacks send */
	ip[8] = seg->ttl ? seg->ttl : 64;
	ip[9] = IPPROTO_TCP_NUM;
	memcpy(ip + 12, seg->src, 4);
	memcpy(ip + 16, seg->dst, 4);
	put16(ip + 10, fold(sum_bytes(0, ip, IPV4_HEADER)));
}

static void ipv6_build(const struct fp_segment *seg, uint8_t *ip,
		       size_t tcp_len)
{
	memset(ip, 0, IPV6_HEADER);
	ip[0] = 0x60;
	put16(ip + 4, (uint16_t)tcp_len);
	ip[6] = IPPROTO_TCP_NUM;
	ip[7] = seg->ttl ? seg->ttl : 64;
	memcpy(ip + 8, seg->src, 16);
	memcpy(ip + 24, seg->dst, 16);
}

static void tcp_build(const struct fp_segment *seg, uint8_t *tcp,
		      const uint8_t *opts, size_t opt_len)
{
	put16(tcp, seg->sport);
	put16(tcp + 2, seg->dport);
	put32(tcp + 4, seg->seq);
	put32(tcp + 8, seg->ack);
	tcp[12] = (uint8_t)(((TCP_HEADER + opt_len) / 4) << 4);
	tcp[13] = seg->flags;
	put16(tcp + 14, seg->window);
	put16(tcp + 16, 0);
	put16(tcp + 18, seg->urg);
	memcpy(tcp + TCP_HEADER, opts, opt_len);
	if (seg->payload_len)
		memcpy(tcp + TCP_HEADER + opt_len, seg->payload,
		       seg->payload_len);
}

ssize_t fp_segment_build(const struct fp_segment *seg, uint8_t *buf, size_t cap)
{
	uint8_t opts[MAX_OPTION_BYTES];
	if (seg->family != 4 && seg->family != 6)
		return -EINVAL;
	ssize_t opt_len = options_build(seg, opts);
	if (opt_len < 0)
		return opt_len;
	size_t ip_len = seg->family == 4 ? IPV4_HEADER : IPV6_HEADER;
	size_t tcp_len = TCP_HEADER + (size_t)opt_len + seg->payload_len;
	size_t total = ip_len + tcp_len;
	if (total > 0xffff + (seg->family == 6 ? IPV6_HEADER : 0))
		return -EMSGSIZE;
	if (total > cap)
		return -ENOSPC;
	if (seg->family == 4)
		ipv4_build(seg, buf, total);
	else
		ipv6_build(seg, buf, tcp_len);
	uint8_t *tcp = buf + ip_len;
	tcp_build(seg, tcp, opts, (size_t)opt_len);
	uint16_t sum = seg->force_checksum
			       ? seg->checksum
			       : tcp_checksum(seg->family, seg->src, seg->dst,
					      tcp, tcp_len);
	put16(tcp + 16, sum);
	return (ssize_t)total;
}
