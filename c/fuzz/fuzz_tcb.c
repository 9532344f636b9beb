/*
 * fuzz_tcb.c: libFuzzer target for the state machine. The input is a
 * script: each 16-byte step is one segment sent or received (direction,
 * flags, sequence and acknowledgment numbers as offsets from the TCB's own,
 * payload length, time). Whatever the script, the TCB stays in a valid
 * state, every change is reported once, and nothing crashes.
 */
#include <stdlib.h>
#include <string.h>

#include "finprobe.h"

#define STEP 16

static unsigned changes;

static void count(void *ctx, const struct fp_transition *t)
{
	(void)ctx;
	if (t->from == t->to || t->to >= FP_STATE_COUNT)
		abort();
	changes++;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static const uint8_t text[1024];
	struct fp_tcb tcb;
	uint64_t now = 0;
	if (len < 5)
		return 0;
	fp_tcb_init(&tcb, get32(data), 1000000);
	tcb.on_transition = count;
	if (data[4] & 1)
		fp_tcb_listen(&tcb, 0);
	for (size_t off = 5; off + STEP <= len; off += STEP) {
		const uint8_t *s = data + off;
		struct fp_segment seg;
		memset(&seg, 0, offsetof(struct fp_segment, options));
		seg.family = 4;
		seg.flags = s[1];
		seg.seq = (s[0] & 2 ? tcb.rcv_nxt : tcb.snd_nxt) +
			  get32(s + 2) % 4096 - 2048;
		seg.ack = (s[0] & 2 ? tcb.snd_nxt : tcb.rcv_nxt) +
			  get32(s + 6) % 4096 - 2048;
		if (s[0] & 4)
			seg.seq = get32(s + 2); /* anywhere in sequence space */
		seg.window = (uint16_t)(s[10] << 8 | s[11]);
		seg.payload = text;
		seg.payload_len = s[12] % sizeof(text);
		now += (uint64_t)s[13] * 10000;
		fp_tcb_tick(&tcb, now);
		unsigned before = changes;
		enum fp_state from = tcb.state;
		if (s[0] & 1) {
			fp_tcb_fill(&tcb, &seg, s[14] & 7);
			fp_tcb_on_send(&tcb, &seg, now);
		} else {
			enum fp_reply reply =
				fp_tcb_on_segment(&tcb, &seg, now);
			if (reply > FP_REPLY_RST)
				abort();
		}
		if (tcb.state >= FP_STATE_COUNT ||
		    (tcb.state != from) != (changes != before))
			abort();
	}
	return 0;
}
