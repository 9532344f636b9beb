/*
 * records.c: a connection's trace or an engine's capture, copied out of the
 * engine while its mutex is held. The engine's records live only until its
 * next poll or send, and the Python objects made of them must be made with
 * the mutex released (core.h), so they are copied first: one pass for the
 * sizes, one allocation, one pass to copy. Plain C memory: nothing here
 * may run the collector.
 */
#include "engine.h"

#include <stdlib.h>

int records_copy(struct records *out, record_get_fn get, const void *what, size_t n)
{
	size_t total = 0;
	struct fp_record rec;
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n; i++)
		if (get(what, i, &rec) == 0)
			total += rec.len;
	out->recs = malloc((n ? n : 1) * sizeof(*out->recs));
	out->bytes = malloc(total ? total : 1);
	if (!out->recs || !out->bytes) {
		records_free(out);
		return -ENOMEM;
	}
	size_t used = 0;
	for (size_t i = 0; i < n; i++) {
		if (get(what, i, &rec) < 0 || rec.len > total - used)
			continue;
		memcpy(out->bytes + used, rec.pkt, rec.len);
		rec.pkt = out->bytes + used;
		used += rec.len;
		out->recs[out->n++] = rec;
	}
	return 0;
}

void records_free(struct records *r)
{
	free(r->recs);
	free(r->bytes);
	memset(r, 0, sizeof(*r));
}
