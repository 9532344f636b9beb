/*
 * seq.h: sequence numbers modulo 2^32 (RFC 9293 §3.4).
 *
 * Sequence numbers wrap, so "a before b" means b - a, taken as a signed
 * 32-bit difference, is positive. Every comparison of two sequence numbers
 * in finprobe goes through these; a bare < breaks at the wrap.
 */
#ifndef FP_SEQ_H
#define FP_SEQ_H

#include <stdint.h>

static inline int seq_lt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}
static inline int seq_leq(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}
static inline int seq_gt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}
static inline int seq_geq(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) >= 0;
}

/* lo <= x <= hi, walking forward from lo (the RFC's "=<" ranges). */
static inline int seq_between(uint32_t lo, uint32_t x, uint32_t hi)
{
	return x - lo <= hi - lo;
}

/* lo <= x < lo + len: x falls inside a window of len octets. */
static inline int seq_in_window(uint32_t x, uint32_t lo, uint32_t len)
{
	return x - lo < len;
}

static inline uint32_t seq_max(uint32_t a, uint32_t b)
{
	return seq_gt(a, b) ? a : b;
}

#endif /* FP_SEQ_H */
