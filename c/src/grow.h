/*
 * grow.h: arrays that grow by doubling, so that appending one element at a
 * time costs amortized O(1) and steady traffic does not allocate per item.
 */
#ifndef FP_GROW_H
#define FP_GROW_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Make *mem (of *cap elements of size bytes) hold at least need elements.
 * Returns 0, or -ENOMEM with *mem and *cap unchanged. */
static inline int fp_grow(void **mem, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	if (need > SIZE_MAX / 2 / size) /* doubling would wrap */
		return -ENOMEM;
	size_t n = *cap ? *cap : 8;
	while (n < need)
		n *= 2;
	void *p = realloc(*mem, n * size);
	if (!p)
		return -ENOMEM;
	*mem = p;
	*cap = n;
	return 0;
}

#endif /* FP_GROW_H */
