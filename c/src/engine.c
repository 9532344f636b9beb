/*
 * engine.c: connections over one link.
 *
 * Inbound: fp_engine_poll -> fp_link_recv (a batch) -> fp_segment_parse ->
 * demultiplex by 4-tuple (hash table) -> the connection's log, or the
 * listener's for a port no connection claims. Nothing moves the TCB until
 * fp_conn_take hands the segment over.
 * Outbound: fp_conn_send -> fp_tcb_fill -> fp_segment_build -> fp_link_send
 * -> fp_tcb_on_send -> the log.
 *
 * A log keeps the packets of a connection both ways, in one growing arena:
 * it is the trace and, through its untaken inbound records, the receive
 * queue. The engine's own log, the capture, keeps every segment both ways,
 * claimed or not, for whole-lab pcap files. Arenas and record arrays grow
 * by doubling, so steady traffic does not allocate per segment.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "finprobe.h"
#include "grow.h"

#define BUCKETS 16384 /* power of two; 10,000 connections chain short */
#define RECV_BATCH 32
#define MAX_PACKET (60 + 60 + 65535)

struct log_entry {
	uint64_t ts_ns;
	size_t off, len;
	uint8_t direction, state_after, taken;
};

struct seglog {
	struct log_entry *entries;
	size_t n, cap;
	uint8_t *arena;
	size_t used, room;
	size_t first_untaken; /* no untaken inbound entry before this */
};

struct fp_conn {
	struct fp_conn *next; /* in its hash bucket */
	struct fp_engine *engine;
	struct fp_tuple tuple;
	struct fp_tcb tcb;
	struct seglog log;
	struct fp_transition *transitions;
	size_t n_transitions, cap_transitions;
};

struct fp_listener {
	struct fp_listener *next;
	struct fp_engine *engine;
	uint8_t family;
	uint8_t addr[16];
	uint16_t port;
	struct seglog log;
};

struct fp_engine {
	struct fp_link *link;
	struct fp_conn *buckets[BUCKETS];
	struct fp_listener *listeners;
	struct fp_engine_stats stats;
	struct seglog capture; /* every segment both ways */
	uint8_t out[MAX_PACKET];
};

/* ---- logs -------------------------------------------------------------------- */

static int log_append(struct seglog *log, const uint8_t *pkt, size_t len, uint64_t ts,
		      uint8_t direction, uint8_t state)
{
	if (fp_grow((void **)&log->entries, &log->cap, log->n + 1, sizeof(*log->entries)) ||
	    fp_grow((void **)&log->arena, &log->room, log->used + len, 1))
		return -ENOMEM;
	memcpy(log->arena + log->used, pkt, len);
	log->entries[log->n++] = (struct log_entry){ts, log->used, len, direction, state, 0};
	log->used += len;
	return 0;
}

static void log_free(struct seglog *log)
{
	free(log->entries);
	free(log->arena);
	memset(log, 0, sizeof(*log));
}

static void log_record(const struct seglog *log, size_t i, struct fp_record *rec)
{
	const struct log_entry *e = &log->entries[i];
	*rec = (struct fp_record){e->ts_ns, log->arena + e->off, e->len, e->direction,
				  e->state_after, e->taken};
}

/* The next untaken inbound entry, or log->n. */
static size_t log_next_untaken(struct seglog *log)
{
	size_t i = log->first_untaken;
	while (i < log->n && (log->entries[i].direction != FP_DIR_IN || log->entries[i].taken))
		i++;
	log->first_untaken = i;
	return i;
}

/* ---- tuples and the hash table ----------------------------------------------- */

static size_t addr_len(uint8_t family) { return family == 6 ? 16 : 4; }

static int tuple_equal(const struct fp_tuple *a, const struct fp_tuple *b)
{
	return a->family == b->family && a->local_port == b->local_port &&
	       a->remote_port == b->remote_port &&
	       !memcmp(a->local, b->local, addr_len(a->family)) &&
	       !memcmp(a->remote, b->remote, addr_len(a->family));
}

static size_t tuple_hash(const struct fp_tuple *t)
{
	uint32_t h = 2166136261u ^ t->family; /* FNV-1a */
	for (size_t i = 0; i < addr_len(t->family); i++)
		h = (h ^ t->local[i] ^ (uint32_t)t->remote[i] << 8) * 16777619u;
	h = (h ^ t->local_port) * 16777619u;
	h = (h ^ t->remote_port) * 16777619u;
	return h & (BUCKETS - 1);
}

static struct fp_conn *lookup(const struct fp_engine *e, const struct fp_tuple *t)
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
	log_free(&e->capture);
	fp_link_close(e->link);
	free(e);
}

int fp_engine_fd(const struct fp_engine *e) { return fp_link_fd(e->link); }

void fp_engine_stats(const struct fp_engine *e, struct fp_engine_stats *stats)
{
	*stats = e->stats;
}

size_t fp_engine_capture_len(const struct fp_engine *e) { return e->capture.n; }

int fp_engine_capture_get(const struct fp_engine *e, size_t i, struct fp_record *rec)
{
	if (i >= e->capture.n)
		return -ERANGE;
	log_record(&e->capture, i, rec);
	return 0;
}

int fp_engine_has_tuple(const struct fp_engine *e, const struct fp_tuple *t)
{
	return lookup(e, t) != NULL;
}

static struct fp_listener *listener_for(const struct fp_engine *e, const struct fp_tuple *t)
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
	log_append(&e->capture, f->pkt, f->len, f->ts_ns, FP_DIR_IN, 0); /* best effort */
	tuple_of_received(&seg, &t);
	struct fp_conn *c = lookup(e, &t);
	struct fp_listener *l = c ? NULL : listener_for(e, &t);
	struct seglog *log = c ? &c->log : l ? &l->log : NULL;
	uint8_t state = c ? (uint8_t)c->tcb.state : FP_STATE_LISTEN;
	if (!log || log_append(log, f->pkt, f->len, f->ts_ns, FP_DIR_IN, state) < 0)
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
	struct pollfd p = {fp_link_fd(e->link), POLLIN, 0};
	int ready = poll(&p, 1, timeout_ms);
	if (ready < 0)
		return -errno;
	return receive_all(e);
}

/* ---- connections ------------------------------------------------------------- */

static void record_transition(void *ctx, const struct fp_transition *t)
{
	struct fp_conn *c = ctx;
	if (fp_grow((void **)&c->transitions, &c->cap_transitions, c->n_transitions + 1,
		 sizeof(*c->transitions)) == 0)
		c->transitions[c->n_transitions++] = *t;
}

static void conn_insert(struct fp_engine *e, struct fp_conn *c)
{
	size_t b = tuple_hash(&c->tuple);
	c->next = e->buckets[b];
	e->buckets[b] = c;
}

struct fp_conn *fp_conn_new(struct fp_engine *e, const struct fp_tuple *t, uint32_t iss,
			    uint64_t time_wait_ns)
{
	if (lookup(e, t)) {
		errno = EADDRINUSE;
		return NULL;
	}
	struct fp_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->engine = e;
	c->tuple = *t;
	fp_tcb_init(&c->tcb, iss, time_wait_ns);
	c->tcb.on_transition = record_transition;
	c->tcb.on_transition_ctx = c;
	conn_insert(e, c);
	return c;
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
	log_free(&c->log);
	free(c->transitions);
	free(c);
}

struct fp_tcb *fp_conn_tcb(struct fp_conn *c) { return &c->tcb; }

const struct fp_tuple *fp_conn_tuple(const struct fp_conn *c) { return &c->tuple; }

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
	log_append(&e->capture, e->out, (size_t)len, now, FP_DIR_OUT, 0); /* best effort */
	return log_append(&c->log, e->out, (size_t)len, now, FP_DIR_OUT, (uint8_t)c->tcb.state);
}

int fp_conn_take(struct fp_conn *c, struct fp_record *rec, struct fp_segment *seg,
		 enum fp_reply *reply)
{
	size_t i = log_next_untaken(&c->log);
	if (i == c->log.n)
		return -EAGAIN;
	struct log_entry *entry = &c->log.entries[i];
	log_record(&c->log, i, rec);
	if (fp_segment_parse(seg, rec->pkt, rec->len, NULL, 0) < 0)
		return -EBADMSG; /* cannot happen: parsed once on arrival */
	fp_tcb_tick(&c->tcb, entry->ts_ns);
	*reply = fp_tcb_on_segment(&c->tcb, seg, entry->ts_ns);
	entry->taken = 1;
	entry->state_after = (uint8_t)c->tcb.state;
	rec->taken = 1;
	rec->state_after = entry->state_after;
	return 0;
}

size_t fp_conn_pending(const struct fp_conn *c)
{
	size_t n = 0;
	for (size_t i = c->log.first_untaken; i < c->log.n; i++)
		n += c->log.entries[i].direction == FP_DIR_IN && !c->log.entries[i].taken;
	return n;
}

size_t fp_conn_trace_len(const struct fp_conn *c) { return c->log.n; }

int fp_conn_trace_get(const struct fp_conn *c, size_t i, struct fp_record *rec)
{
	if (i >= c->log.n)
		return -ERANGE;
	log_record(&c->log, i, rec);
	return 0;
}

size_t fp_conn_transitions(const struct fp_conn *c, const struct fp_transition **list)
{
	*list = c->transitions;
	return c->n_transitions;
}

/* ---- listeners --------------------------------------------------------------- */

struct fp_listener *fp_listener_new(struct fp_engine *e, uint8_t family, const uint8_t *addr,
				    uint16_t port)
{
	struct fp_listener *l = calloc(1, sizeof(*l));
	if (!l) {
		errno = ENOMEM;
		return NULL;
	}
	l->engine = e;
	l->family = family;
	memcpy(l->addr, addr, addr_len(family));
	l->port = port;
	l->next = e->listeners;
	e->listeners = l;
	return l;
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
	log_free(&l->log);
	free(l);
}

/* The oldest untaken SYN (without ACK) the listener caught, or log.n. */
static size_t listener_next_syn(const struct fp_listener *l, struct fp_segment *seg)
{
	for (size_t i = l->log.first_untaken; i < l->log.n; i++) {
		const struct log_entry *e = &l->log.entries[i];
		if (e->taken || fp_segment_parse(seg, l->log.arena + e->off, e->len, NULL, 0) < 0)
			continue;
		if ((seg->flags & (FP_SYN | FP_ACK)) == FP_SYN)
			return i;
	}
	return l->log.n;
}

int fp_listener_peek(const struct fp_listener *l, struct fp_tuple *t)
{
	struct fp_segment seg;
	if (listener_next_syn(l, &seg) == l->log.n)
		return -EAGAIN;
	tuple_of_received(&seg, t);
	return 0;
}

/* Move every caught segment of tuple t to the new connection, in order. */
static int listener_hand_over(struct fp_listener *l, const struct fp_tuple *t, struct fp_conn *c)
{
	struct fp_segment seg;
	struct fp_tuple mine;
	for (size_t i = l->log.first_untaken; i < l->log.n; i++) {
		struct log_entry *e = &l->log.entries[i];
		if (e->taken || fp_segment_parse(&seg, l->log.arena + e->off, e->len, NULL, 0) < 0)
			continue;
		tuple_of_received(&seg, &mine);
		if (!tuple_equal(&mine, t))
			continue;
		if (log_append(&c->log, l->log.arena + e->off, e->len, e->ts_ns, FP_DIR_IN,
			       FP_STATE_LISTEN) < 0)
			return -ENOMEM;
		e->taken = 1;
	}
	log_next_untaken(&l->log);
	if (l->log.first_untaken == l->log.n) { /* all handed over: start afresh */
		l->log.n = l->log.used = l->log.first_untaken = 0;
	}
	return 0;
}

struct fp_conn *fp_listener_accept(struct fp_listener *l, uint32_t iss, uint64_t time_wait_ns)
{
	struct fp_tuple t;
	if (fp_listener_peek(l, &t) < 0) {
		errno = EAGAIN;
		return NULL;
	}
	struct fp_conn *c = fp_conn_new(l->engine, &t, iss, time_wait_ns);
	if (!c)
		return NULL;
	fp_tcb_listen(&c->tcb, fp_now_ns());
	if (listener_hand_over(l, &t, c) < 0) {
		fp_conn_free(c);
		errno = ENOMEM;
		return NULL;
	}
	return c;
}
