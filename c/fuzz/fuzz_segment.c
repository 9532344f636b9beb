/*
 * fuzz_segment.c: libFuzzer target for the codec. Any bytes either parse or
 * are refused; what parses builds again, and the build parses back to the
 * same fields (the round trip the Python API promises).
 */
#include <stdlib.h>
#include <string.h>

#include "finprobe.h"

static void same_or_abort(const struct fp_segment *a, const struct fp_segment *b)
{
	if (a->family != b->family || a->sport != b->sport || a->dport != b->dport ||
	    a->seq != b->seq || a->ack != b->ack || a->flags != b->flags ||
	    a->window != b->window || a->urg != b->urg || a->payload_len != b->payload_len ||
	    memcmp(a->payload, b->payload, a->payload_len) != 0 || !b->tcp_checksum_ok)
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
	if (n < 0)
		return 0; /* e.g. options that decoded wider than they came */
	if (fp_segment_parse(&again, out, (size_t)n, NULL, 0) < 0)
		abort();
	same_or_abort(&seg, &again);
	return 0;
}
