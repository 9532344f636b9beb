/*
 * tuple.h: comparing 4-tuples (struct fp_tuple), the key of the engine's
 * table and of the guard's rules. Only the family's address bytes count:
 * the rest of the 16-byte arrays is not part of the tuple.
 */
#ifndef FP_TUPLE_H
#define FP_TUPLE_H

#include <stddef.h>
#include <string.h>

#include "finprobe.h"

/* Bytes of an address of family 4 or 6 (anything else is taken as 4). */
static inline size_t addr_len(uint8_t family)
{
	return family == 6 ? 16 : 4;
}

static inline int tuple_equal(const struct fp_tuple *a,
			      const struct fp_tuple *b)
{
	return a->family == b->family && a->local_port == b->local_port &&
	       a->remote_port == b->remote_port &&
	       !memcmp(a->local, b->local, addr_len(a->family)) &&
	       !memcmp(a->remote, b->remote, addr_len(a->family));
}

#endif /* FP_TUPLE_H */
