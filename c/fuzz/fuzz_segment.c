/*
 * fuzz_segment.c: libFuzzer target for the codec. Any bytes either parse or
 * are refused; what parses builds again, the build parses back to the same
 * fields and options, and the option bytes it writes are the very bytes
 * that were parsed (the round trip the Python API promises, both ways).
 */
#include <stdlib.h>
#include <string.h>

#include "finprobe.h"

static void same_or_abort(const struct fp_segment *a,
			  const struct fp_segment *b)
{
	if (a->family != b->family || a->sport != b->sport ||
	    a->dport != b->dport || a->seq != b->seq || a->ack != b->ack ||
	    a->flags != b->flags || a->window != b->window ||
	    a->urg != b->urg || a->payload_len != b->payload_len ||
	    memcmp(a->payload, b->payload, a->payload_len) != 0 ||
	    !b->tcp_checksum_ok || a->n_options != b->n_options ||
	    memcmp(a->options, b->options,
		   a->n_options * sizeof(a->options[0])) != 0)
		abort();
}

/* The option bytes of the parsed input: just before its payload, as long as
 * the rebuilt ones, under a data offset that says so; else abort. */
static void same_option_bytes_or_abort(const uint8_t *data,
				       const struct fp_segment *seg,
				       const uint8_t *out, size_t n)
{
	size_t opt_len = fp_segment_options_len(seg);
	size_t at = (size_t)(seg->payload - data);
	if (at < 20 + opt_len)
		abort();
	const uint8_t *tcp = data + at - opt_len - 20;
	if ((size_t)(tcp[12] >> 4) * 4 != 20 + opt_len ||
	    memcmp(tcp + 20, out + n - seg->payload_len - opt_len, opt_len) !=
		    0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static uint8_t out[60 + 60 + 65536];
	struct fp_segment seg, again;
	if (fp_segment_parse(&seg, data, len, NULL, 0) < 0)
		return 0;
	seg.force_checksum = 0;
	ssize_t n = fp_segment_build(&seg, out, sizeof(out));
	/* what parsed always fits: a shorter IP header, the same TCP */
	if (n < 0)
		abort();
	if (fp_segment_parse(&again, out, (size_t)n, NULL, 0) < 0)
		abort();
	same_or_abort(&seg, &again);
	same_option_bytes_or_abort(data, &seg, out, (size_t)n);
	return 0;
}
