/*
 * engine.c: connections over one link.
 *
 * Inbound: fp_engine_poll -> fp_link_recv (a batch) -> fp_segment_parse ->
 * demultiplex by 4-tuple (hash table) -> the connection's trace, or the
 * listener's for a port no connection claims. Nothing moves the TCB until
 * fp_conn_take hands the segment over.
 * Outbound: fp_conn_send -> fp_tcb_fill -> fp_segment_build -> fp_link_send
 * -> fp_tcb_on_send -> the trace.
 *
 * A connection's trace (trace.c) keeps its packets both ways and its state
 * changes: it is the record and, through its untaken inbound records, the
 * receive queue. The connection holds a reference, so a caller that took
 * one keeps the trace after the connection and the engine are gone. The
 * engine's capture, once started, keeps every segment both ways, claimed
 * or not, for whole-lab pcap files; while it is off the engine keeps
 * nothing of a connection it no longer has.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "finprobe.h"
#include "trace_log.h"
#include "tuple.h"

#define BUCKETS 16384 /* power of two; 10,000 connections chain short */
#define RECV_BATCH 32
#define MAX_PACKET (60 + 60 + 65535)

struct fp_conn {
	struct fp_conn *next; /* in its hash bucket */
	struct fp_engine *engine;
	struct fp_tuple tuple;
	struct fp_tcb tcb;
	struct fp_trace *trace; /* one reference: the connection's */
};

struct fp_listener {
	struct fp_listener *next;
	struct fp_engine *engine;
	uint8_t family;
	uint8_t addr[16];
	uint16_t port;
	struct fp_trace *caught; /* SYNs and what followed, until accepted */
};

struct fp_engine {
	struct fp_link *link;
	struct fp_conn *buckets[BUCKETS];
	struct fp_listener *listeners;
	struct fp_engine_stats stats;
	struct fp_trace *capture; /* every segment both ways; NULL: off */
	uint8_t out[MAX_PACKET];
};

/* ---- the hash table ------------------------------------------------------------ */

static size_t tuple_hash(const struct fp_tuple *t)
{
	uint32_t h = 2166136261u ^ t->family; /* FNV-1a */
	for (size_t i = 0; i < addr_len(t->family); i++)
		h = (h ^ t->local[i] ^ (uint32_t)t->remote[i] << 8) * 16777619u;
	h = (h ^ t->local_port) * 16777619u;
	h = (h ^ t->remote_port) * 16777619u;
	return h & (BUCKETS - 1);
}

static struct fp_conn *lookup(const struct fp_engine *e,
			      const struct fp_tuple *t)
{
	for (struct fp_conn *c = e->buckets[tuple_hash(t)]; c; c = c->next)
		if (tuple_equal(&c->tuple, t))
			return c;
	return NULL;
}

/* The tuple a received segment belongs to, seen from our side. */
static void tuple_of_received(const struct fp_segment *seg, struct fp_tuple *t)
{
	memset(t, 0, sizeof(*t));
	t->family = seg->family;
	memcpy(t->local, seg->dst, 16);
	memcpy(t->remote, seg->src, 16);
	t->local_port = seg->dport;
	t->remote_port = seg->sport;
}

/* ---- engine -------------------------------------------------------------------- */

int fp_engine_new(struct fp_engine **out, struct fp_link *link)
{
	struct fp_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->link = link;
	*out = e;
	return 0;
}

void fp_engine_free(struct fp_engine *e)
{
	if (!e)
		return;
	for (size_t b = 0; b < BUCKETS; b++)
		while (e->buckets[b])
			fp_conn_free(e->buckets[b]);
	while (e->listeners)
		fp_listener_free(e->listeners);
	fp_trace_free(e->capture);
	fp_link_close(e->link);
	free(e);
}

int fp_engine_fd(const struct fp_engine *e)
{
	return fp_link_fd(e->link);
}

/* Heap the engine holds: itself, connections, listeners, traces, capture. */
static size_t bytes_held(const struct fp_engine *e)
{
	size_t n = sizeof(*e) + (e->capture ? fp_trace_bytes(e->capture) : 0);
	for (size_t b = 0; b < BUCKETS; b++)
		for (const struct fp_conn *c = e->buckets[b]; c; c = c->next)
			n += sizeof(*c) + fp_trace_bytes(c->trace);
	for (const struct fp_listener *l = e->listeners; l; l = l->next)
		n += sizeof(*l) + fp_trace_bytes(l->caught);
	return n;
}

void fp_engine_stats(const struct fp_engine *e, struct fp_engine_stats *stats)
{
	*stats = e->stats;
	stats->bytes_held = bytes_held(e);
}

int fp_engine_capture_start(struct fp_engine *e)
{
	return e->capture ? 0 : fp_trace_new(&e->capture);
}

void fp_engine_capture_stop(struct fp_engine *e)
{
	fp_trace_free(e->capture);
	e->capture = NULL;
}

struct fp_trace *fp_engine_capture(struct fp_engine *e)
{
	return e->capture;
}

/* Into the capture if it runs; best effort, as a capture is a convenience
 * and a full one must not fail a send. */
static void capture(struct fp_engine *e, const uint8_t *pkt, size_t len,
		    uint64_t ts, uint8_t direction)
{
	if (e->capture)
		fp_trace_append(e->capture, pkt, len, ts, direction, 0);
}

int fp_engine_has_tuple(const struct fp_engine *e, const struct fp_tuple *t)
{
	return lookup(e, t) != NULL;
}

static struct fp_listener *listener_for(const struct fp_engine *e,
					const struct fp_tuple *t)
{
	for (struct fp_listener *l = e->listeners; l; l = l->next)
		if (l->family == t->family && l->port == t->local_port &&
		    !memcmp(l->addr, t->local, addr_len(t->family)))
			return l;
	return NULL;
}

static void demultiplex(struct fp_engine *e, const struct fp_frame *f)
{
	struct fp_segment seg;
	struct fp_tuple t;
	e->stats.received++;
	if (f->len == 0) {
		e->stats.truncated++;
		return;
	}
	if (fp_segment_parse(&seg, f->pkt, f->len, NULL, 0) < 0) {
		e->stats.malformed++;
		return;
	}
	capture(e, f->pkt, f->len, f->ts_ns, FP_DIR_IN);
	tuple_of_received(&seg, &t);
	struct fp_conn *c = lookup(e, &t);
	struct fp_listener *l = c ? NULL : listener_for(e, &t);
	struct fp_trace *trace = c ? c->trace : l ? l->caught : NULL;
	uint8_t state = c ? (uint8_t)c->tcb.state : FP_STATE_LISTEN;
	if (!trace || fp_trace_append(trace, f->pkt, f->len, f->ts_ns,
				      FP_DIR_IN, state) < 0)
		e->stats.unclaimed++;
}

static int receive_all(struct fp_engine *e)
{
	struct fp_frame frames[RECV_BATCH];
	int total = 0, n;
	do {
		n = fp_link_recv(e->link, frames, RECV_BATCH);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			demultiplex(e, &frames[i]);
		total += n;
	} while (n == RECV_BATCH);
	return total;
}

int fp_engine_poll(struct fp_engine *e, int timeout_ms)
{
	struct pollfd p = { fp_link_fd(e->link), POLLIN, 0 };
	int ready = poll(&p, 1, timeout_ms);
	if (ready < 0)
		return -errno;
	return receive_all(e);
}

/* ---- connections ------------------------------------------------------------- */

/* The TCB's observer: state changes go with the trace, so they outlive the
 * connection as its records do. */
static void record_transition(void *ctx, const struct fp_transition *t)
{
	struct fp_conn *c = ctx;
	/* best effort, as the TCB cannot fail */
	fp_trace_add_transition(c->trace, t);
}

static void conn_insert(struct fp_engine *e, struct fp_conn *c)
{
	size_t b = tuple_hash(&c->tuple);
	c->next = e->buckets[b];
	e->buckets[b] = c;
}

int fp_conn_new(struct fp_conn **out, struct fp_engine *e,
		const struct fp_tuple *t, uint32_t iss, uint64_t time_wait_ns)
{
	if (!out || !e || !t || (t->family != 4 && t->family != 6))
		return -EINVAL;
	if (lookup(e, t))
		return -EADDRINUSE;
	struct fp_conn *c = calloc(1, sizeof(*c));
	if (!c || fp_trace_new(&c->trace) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->engine = e;
	c->tuple = *t;
	fp_tcb_init(&c->tcb, iss, time_wait_ns);
	c->tcb.on_transition = record_transition;
	c->tcb.on_transition_ctx = c;
	conn_insert(e, c);
	*out = c;
	return 0;
}

void fp_conn_free(struct fp_conn *c)
{
	if (!c)
		return;
	struct fp_conn **p = &c->engine->buckets[tuple_hash(&c->tuple)];
	while (*p && *p != c)
		p = &(*p)->next;
	if (*p)
		*p = c->next;
	fp_trace_free(c->trace);
	free(c);
}

struct fp_tcb *fp_conn_tcb(struct fp_conn *c)
{
	return &c->tcb;
}

const struct fp_tuple *fp_conn_tuple(const struct fp_conn *c)
{
	return &c->tuple;
}

struct fp_trace *fp_conn_trace(struct fp_conn *c)
{
	return c->trace;
}

int fp_conn_send(struct fp_conn *c, struct fp_segment *seg, unsigned forced)
{
	struct fp_engine *e = c->engine;
	uint64_t now = fp_now_ns();
	seg->family = c->tuple.family;
	memcpy(seg->src, c->tuple.local, 16);
	memcpy(seg->dst, c->tuple.remote, 16);
	seg->sport = c->tuple.local_port;
	seg->dport = c->tuple.remote_port;
	fp_tcb_tick(&c->tcb, now);
	fp_tcb_fill(&c->tcb, seg, forced);
	ssize_t len = fp_segment_build(seg, e->out, sizeof(e->out));
	if (len < 0)
		return (int)len;
	int err = fp_link_send(e->link, e->out, (size_t)len);
	if (err)
		return err;
	fp_tcb_on_send(&c->tcb, seg, now);
	capture(e, e->out, (size_t)len, now, FP_DIR_OUT);
	return fp_trace_append(c->trace, e->out, (size_t)len, now, FP_DIR_OUT,
			       (uint8_t)c->tcb.state);
}

int fp_conn_take(struct fp_conn *c, struct fp_record *rec,
		 struct fp_segment *seg, enum fp_reply *reply)
{
	size_t i = fp_trace_next_untaken(c->trace);
	if (fp_trace_get(c->trace, i, rec) < 0)
		return -EAGAIN;
	if (fp_segment_parse(seg, rec->pkt, rec->len, NULL, 0) < 0)
		return -EBADMSG; /* cannot happen: parsed once on arrival */
	fp_tcb_tick(&c->tcb, rec->ts_ns);
	*reply = fp_tcb_on_segment(&c->tcb, seg, rec->ts_ns);
	rec->taken = 1;
	rec->state_after = (uint8_t)c->tcb.state;
	fp_trace_mark_taken(c->trace, i, rec->state_after);
	return 0;
}

size_t fp_conn_pending(const struct fp_conn *c)
{
	return fp_trace_pending(c->trace);
}

/* ---- listeners --------------------------------------------------------------- */

int fp_listener_new(struct fp_listener **out, struct fp_engine *e,
		    uint8_t family, const uint8_t *addr, uint16_t port)
{
	if (!out || !e || !addr || (family != 4 && family != 6))
		return -EINVAL;
	struct fp_listener *l = calloc(1, sizeof(*l));
	if (!l || fp_trace_new(&l->caught) < 0) {
		free(l);
		return -ENOMEM;
	}
	l->engine = e;
	l->family = family;
	memcpy(l->addr, addr, addr_len(family));
	l->port = port;
	l->next = e->listeners;
	e->listeners = l;
	*out = l;
	return 0;
}

void fp_listener_free(struct fp_listener *l)
{
	if (!l)
		return;
	struct fp_listener **p = &l->engine->listeners;
	while (*p && *p != l)
		p = &(*p)->next;
	if (*p)
		*p = l->next;
	fp_trace_free(l->caught);
	free(l);
}

/* Caught record i parsed into *seg, unless it was handed over already. */
static int caught_waiting(const struct fp_listener *l, size_t i,
			  struct fp_record *rec, struct fp_segment *seg)
{
	return fp_trace_get(l->caught, i, rec) == 0 && !rec->taken &&
	       fp_segment_parse(seg, rec->pkt, rec->len, NULL, 0) == 0;
}

/* The oldest untaken SYN (without ACK) the listener caught, or the trace's
 * length. */
static size_t listener_next_syn(const struct fp_listener *l,
				struct fp_segment *seg)
{
	struct fp_record rec;
	size_t n = fp_trace_len(l->caught);
	for (size_t i = fp_trace_next_untaken(l->caught); i < n; i++)
		if (caught_waiting(l, i, &rec, seg) &&
		    (seg->flags & (FP_SYN | FP_ACK)) == FP_SYN)
			return i;
	return n;
}

int fp_listener_peek(const struct fp_listener *l, struct fp_tuple *t)
{
	struct fp_segment seg;
	if (listener_next_syn(l, &seg) == fp_trace_len(l->caught))
		return -EAGAIN;
	tuple_of_received(&seg, t);
	return 0;
}

/* Move every caught segment of tuple t to the new connection, in order. */
static int listener_hand_over(struct fp_listener *l, const struct fp_tuple *t,
			      struct fp_conn *c)
{
	struct fp_record rec;
	struct fp_segment seg;
	struct fp_tuple mine;
	size_t n = fp_trace_len(l->caught);
	for (size_t i = fp_trace_next_untaken(l->caught); i < n; i++) {
		if (!caught_waiting(l, i, &rec, &seg))
			continue;
		tuple_of_received(&seg, &mine);
		if (!tuple_equal(&mine, t))
			continue;
		if (fp_trace_append(c->trace, rec.pkt, rec.len, rec.ts_ns,
				    FP_DIR_IN, FP_STATE_LISTEN) < 0)
			return -ENOMEM;
		fp_trace_mark_taken(l->caught, i, FP_STATE_LISTEN);
	}
	/* all handed over: start afresh */
	if (fp_trace_next_untaken(l->caught) == n)
		fp_trace_clear(l->caught);
	return 0;
}

int fp_listener_accept(struct fp_conn **out, struct fp_listener *l,
		       uint32_t iss, uint64_t time_wait_ns)
{
	struct fp_tuple t;
	struct fp_conn *c;
	if (!out || !l)
		return -EINVAL;
	if (fp_listener_peek(l, &t) < 0)
		return -EAGAIN;
	int rc = fp_conn_new(&c, l->engine, &t, iss, time_wait_ns);
	if (rc < 0)
		return rc;
	fp_tcb_listen(&c->tcb, fp_now_ns());
	if (listener_hand_over(l, &t, c) < 0) {
		fp_conn_free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}
