/*
 * test_engine.c: two finprobe endpoints over the in-memory link pair, so
 * the engine (demultiplexing, traces, listeners, the capture) and the TCB
 * run together without privileges.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "finprobe.h"

/* 2MSL of the tests' connections: long enough that no TIME_WAIT a test
 * checks runs out on a busy machine before the check. */
#define TIME_WAIT_NS (60 * 1000000000ULL)

struct world {
	struct fp_engine *a, *b; /* a: the client at .2, b: the server at .1 */
};

static struct world world_new(void)
{
	struct world w;
	struct fp_link *la, *lb;
	fp_link_pair_open(&la, &lb);
	fp_engine_new(&w.a, la);
	fp_engine_new(&w.b, lb);
	return w;
}

static void world_free(struct world *w)
{
	fp_engine_free(w->a);
	fp_engine_free(w->b);
}

static struct fp_tuple tuple(uint16_t lport, uint16_t rport, int swap)
{
	struct fp_tuple t;
	memset(&t, 0, sizeof(t));
	t.family = 4;
	inet_pton(AF_INET, swap ? "192.0.2.1" : "192.0.2.2", t.local);
	inet_pton(AF_INET, swap ? "192.0.2.2" : "192.0.2.1", t.remote);
	t.local_port = lport;
	t.remote_port = rport;
	return t;
}

static int send_flags(struct fp_conn *c, uint8_t flags)
{
	struct fp_segment s;
	memset(&s, 0, sizeof(s));
	s.flags = flags;
	return fp_conn_send(c, &s, 0);
}

/* Take the next segment (polling the engine once); its flags, or -1. */
static int take(struct fp_engine *e, struct fp_conn *c)
{
	struct fp_record rec;
	struct fp_segment seg;
	enum fp_reply reply;
	fp_engine_poll(e, 100);
	if (fp_conn_take(c, &rec, &seg, &reply) < 0)
		return -1;
	return seg.flags;
}

/* A client connection on a and the server's accepted connection on b. */
static void handshake(struct world *w, struct fp_conn **client,
		      struct fp_conn **server)
{
	struct fp_tuple t = tuple(40000, 80, 0);
	uint8_t server_addr[4];
	inet_pton(AF_INET, "192.0.2.1", server_addr);
	struct fp_listener *l = NULL;
	CHECK_EQ(fp_listener_new(&l, w->b, 4, server_addr, 80), 0);
	CHECK_EQ(fp_conn_new(client, w->a, &t, 1000, TIME_WAIT_NS), 0);
	send_flags(*client, FP_SYN);
	fp_engine_poll(w->b, 100);
	CHECK_EQ(fp_listener_accept(server, l, 5000, TIME_WAIT_NS), 0);
	CHECK_EQ(take(w->b, *server), FP_SYN);
	CHECK_EQ(fp_conn_tcb(*server)->state, FP_STATE_LISTEN);
	send_flags(*server, FP_SYN | FP_ACK);
	CHECK_EQ(take(w->a, *client), FP_SYN | FP_ACK);
	send_flags(*client, FP_ACK);
	CHECK_EQ(take(w->b, *server), FP_ACK);
	fp_listener_free(l);
}

static void test_established_handshake_through_listener(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_ESTABLISHED);
	CHECK_EQ(fp_conn_tcb(s)->state, FP_STATE_ESTABLISHED);
	CHECK_EQ(fp_conn_tcb(s)->irs, 1000);
	CHECK_EQ(fp_conn_tcb(c)->irs, 5000);
	CHECK_EQ(fp_trace_len(fp_conn_trace(c)), 3);
	world_free(&w);
}

static void test_established_four_way_close_both_ends(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	send_flags(c, FP_FIN | FP_ACK);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(take(w.b, s), FP_FIN | FP_ACK);
	CHECK_EQ(fp_conn_tcb(s)->state, FP_STATE_CLOSE_WAIT);
	send_flags(s, FP_ACK);
	CHECK_EQ(take(w.a, c), FP_ACK);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_FIN_WAIT_2);
	send_flags(s, FP_FIN | FP_ACK);
	CHECK_EQ(fp_conn_tcb(s)->state, FP_STATE_LAST_ACK);
	CHECK_EQ(take(w.a, c), FP_FIN | FP_ACK);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_TIME_WAIT);
	send_flags(c, FP_ACK);
	CHECK_EQ(take(w.b, s), FP_ACK);
	CHECK_EQ(fp_conn_tcb(s)->state, FP_STATE_CLOSED);
	const struct fp_transition *t;
	size_t n = fp_trace_transitions(fp_conn_trace(c), &t);
	/* SYN_SENT ESTABLISHED FIN_WAIT_1 FIN_WAIT_2 TIME_WAIT */
	CHECK_EQ(n, 5);
	CHECK_EQ(t[n - 1].to, FP_STATE_TIME_WAIT);
	world_free(&w);
}

static void test_received_segments_wait_until_taken(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	send_flags(s, FP_FIN | FP_ACK);
	fp_engine_poll(w.a, 100);
	CHECK_EQ(fp_conn_pending(c), 1);
	/* not taken yet */
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_ESTABLISHED);
	struct fp_record rec;
	struct fp_trace *tr = fp_conn_trace(c);
	CHECK_EQ(fp_trace_get(tr, fp_trace_len(tr) - 1, &rec), 0);
	CHECK_EQ(rec.direction, FP_DIR_IN);
	CHECK_EQ(rec.taken, 0);
	CHECK_EQ(take(w.a, c), FP_FIN | FP_ACK);
	CHECK_EQ(fp_conn_pending(c), 0);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_CLOSE_WAIT);
	world_free(&w);
}

static void test_engine_demultiplexes_by_four_tuple(void)
{
	struct world w = world_new();
	struct fp_tuple ta1 = tuple(40001, 80, 0), ta2 = tuple(40002, 80, 0);
	struct fp_tuple tb1 = tuple(80, 40001, 1), tb2 = tuple(80, 40002, 1);
	struct fp_conn *a1, *a2, *b1, *b2;
	CHECK_EQ(fp_conn_new(&a1, w.a, &ta1, 1, 1000), 0);
	CHECK_EQ(fp_conn_new(&a2, w.a, &ta2, 2, 1000), 0);
	CHECK_EQ(fp_conn_new(&b1, w.b, &tb1, 3, 1000), 0);
	CHECK_EQ(fp_conn_new(&b2, w.b, &tb2, 4, 1000), 0);
	send_flags(a2, FP_SYN);
	send_flags(a1, FP_SYN);
	fp_engine_poll(w.b, 100);
	CHECK_EQ(fp_conn_pending(b1), 1);
	CHECK_EQ(fp_conn_pending(b2), 1);
	struct fp_record rec;
	struct fp_segment seg;
	enum fp_reply reply;
	CHECK_EQ(fp_conn_take(b2, &rec, &seg, &reply), 0);
	CHECK_EQ(seg.seq, 2);
	CHECK_EQ(fp_conn_take(b1, &rec, &seg, &reply), 0);
	CHECK_EQ(seg.seq, 1);
	CHECK_EQ(fp_conn_take(b1, &rec, &seg, &reply), -EAGAIN);
	world_free(&w);
}

static void test_engine_counts_what_nobody_claims_and_refuses_duplicates(void)
{
	struct world w = world_new();
	struct fp_tuple t = tuple(40003, 80, 0);
	struct fp_conn *c, *dup = NULL;
	CHECK_EQ(fp_conn_new(&c, w.a, &t, 1, 1000), 0);
	CHECK_EQ(fp_conn_new(&dup, w.a, &t, 1, 1000), -EADDRINUSE);
	CHECK(dup == NULL);
	CHECK(fp_engine_has_tuple(w.a, &t));
	send_flags(c, FP_SYN);
	fp_engine_poll(w.b, 100);
	struct fp_engine_stats st;
	fp_engine_stats(w.b, &st);
	CHECK_EQ(st.received, 1);
	CHECK_EQ(st.unclaimed, 1);
	fp_conn_free(c);
	CHECK(!fp_engine_has_tuple(w.a, &t));
	world_free(&w);
}

static void test_many_connections_share_one_engine(void)
{
	struct world w = world_new();
	enum { N = 10000 };
	static struct fp_conn *conns[N];
	for (int i = 0; i < N; i++) {
		struct fp_tuple t = tuple((uint16_t)(1024 + i), 80, 1);
		CHECK_EQ(fp_conn_new(&conns[i], w.b, &t, (uint32_t)i, 1000), 0);
	}
	struct fp_tuple probe = tuple(80, 1024 + 4321, 0);
	struct fp_conn *sender;
	CHECK_EQ(fp_conn_new(&sender, w.a, &probe, 7, 1000), 0);
	send_flags(sender, FP_SYN);
	fp_engine_poll(w.b, 100);
	CHECK_EQ(fp_conn_pending(conns[4321]), 1);
	CHECK_EQ(fp_conn_pending(conns[4320]), 0);
	world_free(&w);
}

/* Take the next segment of c without waiting (the pair link delivers at
 * once); its flags, or -1. */
static int take_now(struct fp_engine *e, struct fp_conn *c)
{
	struct fp_record rec;
	struct fp_segment seg;
	enum fp_reply reply;
	fp_engine_poll(e, 0);
	if (fp_conn_take(c, &rec, &seg, &reply) < 0)
		return -1;
	return seg.flags;
}

/* The client c closes first; each end takes every segment. */
static void four_way_close(struct world *w, struct fp_conn *c,
			   struct fp_conn *s)
{
	send_flags(c, FP_FIN | FP_ACK);
	CHECK_EQ(take_now(w->b, s), FP_FIN | FP_ACK);
	send_flags(s, FP_ACK);
	CHECK_EQ(take_now(w->a, c), FP_ACK);
	send_flags(s, FP_FIN | FP_ACK);
	CHECK_EQ(take_now(w->a, c), FP_FIN | FP_ACK);
	send_flags(c, FP_ACK);
	CHECK_EQ(take_now(w->b, s), FP_ACK);
}

/* Records of a and b equal field by field and byte by byte. */
static void check_same_records(const struct fp_trace *a, size_t a_start,
			       const struct fp_trace *b, size_t b_start,
			       size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct fp_record ra, rb;
		CHECK_EQ(fp_trace_get(a, a_start + i, &ra), 0);
		CHECK_EQ(fp_trace_get(b, b_start + i, &rb), 0);
		CHECK_EQ(ra.ts_ns, rb.ts_ns);
		CHECK_EQ(ra.len, rb.len);
		CHECK(ra.len == rb.len && memcmp(ra.pkt, rb.pkt, ra.len) == 0);
		CHECK_EQ(ra.direction, rb.direction);
		CHECK_EQ(ra.state_after, rb.state_after);
		CHECK_EQ(ra.taken, rb.taken);
	}
}

/* Direction, flags and state after of every record of t, in order. */
static void check_ladder(const struct fp_trace *t, const uint8_t (*want)[3],
			 size_t n)
{
	CHECK_EQ(fp_trace_len(t), n);
	for (size_t i = 0; i < n && i < fp_trace_len(t); i++) {
		struct fp_record rec;
		struct fp_segment seg;
		CHECK_EQ(fp_trace_get(t, i, &rec), 0);
		CHECK_EQ(fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0), 0);
		CHECK_EQ(rec.direction, want[i][0]);
		CHECK_EQ(seg.flags, want[i][1]);
		CHECK_EQ(rec.state_after, want[i][2]);
	}
}

static void check_transitions(const struct fp_trace *t, const uint8_t *to,
			      size_t n)
{
	const struct fp_transition *list;
	CHECK_EQ(fp_trace_transitions(t, &list), n);
	for (size_t i = 0; i < n && i < fp_trace_transitions(t, &list); i++) {
		CHECK_EQ(list[i].to, to[i]);
		CHECK(list[i].why != NULL && list[i].why[0] != '\0');
		if (i > 0)
			CHECK_EQ(list[i].from, to[i - 1]);
	}
}

static void test_trace_outlives_conn_free_whole(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	four_way_close(&w, c, s);
	struct fp_trace *kept = fp_trace_ref(fp_conn_trace(c)), *before = NULL;
	CHECK_EQ(fp_trace_copy(kept, 0, fp_trace_len(kept), &before), 0);
	fp_conn_free(c);
	/* The engine goes on: a new connection on the same 4-tuple sends. */
	struct fp_tuple t = tuple(40000, 80, 0);
	struct fp_conn *again;
	CHECK_EQ(fp_conn_new(&again, w.a, &t, 9, 1000), 0);
	send_flags(again, FP_SYN);
	static const uint8_t ladder[][3] = {
		{ FP_DIR_OUT, FP_SYN, FP_STATE_SYN_SENT },
		{ FP_DIR_IN, FP_SYN | FP_ACK, FP_STATE_ESTABLISHED },
		{ FP_DIR_OUT, FP_ACK, FP_STATE_ESTABLISHED },
		{ FP_DIR_OUT, FP_FIN | FP_ACK, FP_STATE_FIN_WAIT_1 },
		{ FP_DIR_IN, FP_ACK, FP_STATE_FIN_WAIT_2 },
		{ FP_DIR_IN, FP_FIN | FP_ACK, FP_STATE_TIME_WAIT },
		{ FP_DIR_OUT, FP_ACK, FP_STATE_TIME_WAIT },
	};
	check_ladder(kept, ladder, 7);
	check_same_records(kept, 0, before, 0, 7);
	static const uint8_t to[] = { FP_STATE_SYN_SENT, FP_STATE_ESTABLISHED,
				      FP_STATE_FIN_WAIT_1, FP_STATE_FIN_WAIT_2,
				      FP_STATE_TIME_WAIT };
	check_transitions(kept, to, 5);
	/* a trace of its own */
	CHECK_EQ(fp_trace_len(fp_conn_trace(again)), 1);
	world_free(&w);
	check_ladder(kept, ladder, 7); /* and after the engine too */
	fp_trace_free(before);
	fp_trace_free(kept);
}

static void test_trace_outlives_engine_free_whole(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	four_way_close(&w, c, s);
	struct fp_trace *kept = fp_trace_ref(fp_conn_trace(s)), *before = NULL;
	CHECK_EQ(fp_trace_copy(kept, 0, fp_trace_len(kept), &before), 0);
	world_free(&w); /* frees s with its engine */
	static const uint8_t ladder[][3] = {
		{ FP_DIR_IN, FP_SYN, FP_STATE_LISTEN },
		{ FP_DIR_OUT, FP_SYN | FP_ACK, FP_STATE_SYN_RECEIVED },
		{ FP_DIR_IN, FP_ACK, FP_STATE_ESTABLISHED },
		{ FP_DIR_IN, FP_FIN | FP_ACK, FP_STATE_CLOSE_WAIT },
		{ FP_DIR_OUT, FP_ACK, FP_STATE_CLOSE_WAIT },
		{ FP_DIR_OUT, FP_FIN | FP_ACK, FP_STATE_LAST_ACK },
		{ FP_DIR_IN, FP_ACK, FP_STATE_CLOSED },
	};
	check_ladder(kept, ladder, 7);
	check_same_records(kept, 0, before, 0, 7);
	static const uint8_t to[] = {
		FP_STATE_LISTEN,      FP_STATE_SYN_RECEIVED,
		FP_STATE_ESTABLISHED, FP_STATE_CLOSE_WAIT,
		FP_STATE_LAST_ACK,    FP_STATE_CLOSED
	};
	check_transitions(kept, to, 6);
	fp_trace_free(before);
	fp_trace_free(kept);
}

static void test_capture_keeps_nothing_until_started_and_everything_after(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	CHECK(fp_engine_capture(w.a) == NULL);
	handshake(&w, &c, &s);
	CHECK(fp_engine_capture(w.a) == NULL); /* three segments went by */
	CHECK(fp_engine_capture(w.b) == NULL);
	CHECK_EQ(fp_engine_capture_start(w.a), 0);
	struct fp_trace *cap = fp_engine_capture(w.a);
	CHECK(cap != NULL);
	if (!cap) {
		world_free(&w);
		return;
	}
	CHECK_EQ(fp_trace_len(cap), 0);
	four_way_close(&w, c, s);
	/* One that no connection of a claims is captured too. */
	struct fp_tuple stray = tuple(80, 41000, 1);
	struct fp_conn *from_b;
	CHECK_EQ(fp_conn_new(&from_b, w.b, &stray, 1, 1000), 0);
	send_flags(from_b, FP_SYN);
	fp_engine_poll(w.a, 0);
	CHECK_EQ(fp_engine_capture_start(w.a), 0); /* running: goes on */
	CHECK(fp_engine_capture(w.a) == cap);
	CHECK_EQ(fp_trace_len(cap), 5);
	for (size_t i = 0; i < 4; i++) {
		struct fp_record rc, rt;
		fp_trace_get(cap, i, &rc);
		fp_trace_get(fp_conn_trace(c), 3 + i, &rt);
		CHECK(rc.len == rt.len && memcmp(rc.pkt, rt.pkt, rc.len) == 0);
		CHECK_EQ(rc.ts_ns, rt.ts_ns);
		CHECK_EQ(rc.direction, rt.direction);
		CHECK_EQ(rc.state_after, 0);
	}
	struct fp_record last;
	struct fp_segment seg;
	fp_trace_get(cap, 4, &last);
	CHECK_EQ(fp_segment_parse(&seg, last.pkt, last.len, NULL, 0), 0);
	CHECK_EQ(seg.dport, 41000);
	struct fp_trace *kept = fp_trace_ref(cap);
	fp_engine_capture_stop(w.a);
	CHECK(fp_engine_capture(w.a) == NULL);
	send_flags(c, FP_ACK);
	CHECK_EQ(fp_trace_len(kept), 5); /* stopped: nothing more */
	world_free(&w);
	CHECK_EQ(fp_trace_len(kept), 5);
	fp_trace_free(kept);
}

/* One lifecycle without waits: open, handshake through the listener, a
 * little data, the four-way close, free both ends. */
static void lifecycle(struct world *w, struct fp_listener *l, uint16_t port)
{
	struct fp_tuple t = tuple(port, 80, 0);
	struct fp_conn *c, *s;
	CHECK_EQ(fp_conn_new(&c, w->a, &t, 1000, TIME_WAIT_NS), 0);
	send_flags(c, FP_SYN);
	fp_engine_poll(w->b, 0);
	CHECK_EQ(fp_listener_accept(&s, l, 5000, TIME_WAIT_NS), 0);
	CHECK_EQ(take_now(w->b, s), FP_SYN);
	send_flags(s, FP_SYN | FP_ACK);
	CHECK_EQ(take_now(w->a, c), FP_SYN | FP_ACK);
	send_flags(c, FP_ACK);
	CHECK_EQ(take_now(w->b, s), FP_ACK);
	four_way_close(w, c, s);
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_TIME_WAIT);
	fp_conn_free(c);
	fp_conn_free(s);
}

static uint64_t held(const struct world *w)
{
	struct fp_engine_stats a, b;
	fp_engine_stats(w->a, &a);
	fp_engine_stats(w->b, &b);
	return a.bytes_held + b.bytes_held;
}

static void test_engine_holds_nothing_per_lifecycle_without_capture(void)
{
	struct world w = world_new();
	struct fp_listener *l;
	uint8_t server_addr[4];
	inet_pton(AF_INET, "192.0.2.1", server_addr);
	CHECK_EQ(fp_listener_new(&l, w.b, 4, server_addr, 80), 0);
	/* the listener's arrays reach their size */
	for (int i = 0; i < 100; i++)
		lifecycle(&w, l, (uint16_t)(1024 + i));
	uint64_t before = held(&w);
	for (int i = 0; i < 10000; i++)
		lifecycle(&w, l, (uint16_t)(1024 + i));
	CHECK_EQ(held(&w), before);
	/* The count sees what a capture keeps. */
	fp_engine_capture_start(w.a);
	for (int i = 0; i < 100; i++)
		lifecycle(&w, l, (uint16_t)(1024 + i));
	CHECK(held(&w) > before + 100 * 10 * 40);
	fp_listener_free(l);
	world_free(&w);
}

static void test_trace_copy_is_identical_and_detached(void)
{
	struct world w = world_new();
	struct fp_conn *c, *s;
	handshake(&w, &c, &s);
	struct fp_trace *t = fp_conn_trace(c), *all = NULL, *mid = NULL,
			*none = NULL;
	CHECK_EQ(fp_trace_copy(t, 0, 3, &all), 0);
	CHECK_EQ(fp_trace_copy(t, 1, 3, &mid), 0);
	CHECK_EQ(fp_trace_copy(t, 3, 3, &none), 0);
	four_way_close(&w, c, s); /* the original grows; copies do not */
	CHECK_EQ(fp_trace_len(t), 7);
	CHECK_EQ(fp_trace_len(all), 3);
	check_same_records(all, 0, t, 0, 3);
	CHECK_EQ(fp_trace_len(mid), 2);
	check_same_records(mid, 0, t, 1, 2);
	CHECK_EQ(fp_trace_len(none), 0);
	const struct fp_transition *ta, *tn;
	/* SYN_SENT, ESTABLISHED at copy time */
	CHECK_EQ(fp_trace_transitions(all, &ta), 2);
	CHECK_EQ(fp_trace_transitions(none, &tn), 2);
	CHECK_EQ(fp_trace_transitions(t, &ta), 5);
	struct fp_trace *bad = NULL;
	CHECK_EQ(fp_trace_copy(t, 2, 1, &bad), -ERANGE);
	CHECK_EQ(fp_trace_copy(t, 0, 8, &bad), -ERANGE);
	CHECK(bad == NULL);
	fp_trace_free(all);
	fp_trace_free(mid);
	fp_trace_free(none);
	world_free(&w);
}

static void test_conn_and_listener_errors_are_negative_errno(void)
{
	struct world w = world_new();
	struct fp_tuple t = tuple(40010, 80, 0), bad_family = t;
	bad_family.family = 5;
	struct fp_conn *c = NULL, *s = NULL;
	struct fp_listener *l = NULL;
	uint8_t server_addr[4];
	inet_pton(AF_INET, "192.0.2.1", server_addr);
	CHECK_EQ(fp_conn_new(&c, w.a, &bad_family, 1, 1000), -EINVAL);
	CHECK_EQ(fp_listener_new(&l, w.b, 5, server_addr, 80), -EINVAL);
	CHECK(c == NULL && l == NULL);
	CHECK_EQ(fp_listener_new(&l, w.b, 4, server_addr, 80), 0);
	CHECK_EQ(fp_listener_accept(&s, l, 1, 1000), -EAGAIN);
	CHECK_EQ(fp_conn_new(&c, w.a, &t, 1, 1000), 0);
	send_flags(c, FP_SYN);
	fp_engine_poll(w.b, 100);
	struct fp_tuple seen, mine = tuple(80, 40010, 1);
	CHECK_EQ(fp_listener_peek(l, &seen), 0);
	struct fp_conn *taken_already;
	CHECK_EQ(fp_conn_new(&taken_already, w.b, &seen, 2, 1000), 0);
	CHECK_EQ(fp_listener_accept(&s, l, 1, 1000), -EADDRINUSE);
	CHECK(s == NULL);
	CHECK(memcmp(&seen, &mine, sizeof(seen)) == 0);
	fp_listener_free(l);
	world_free(&w);
}

int main(void)
{
	RUN(test_established_handshake_through_listener);
	RUN(test_established_four_way_close_both_ends);
	RUN(test_received_segments_wait_until_taken);
	RUN(test_engine_demultiplexes_by_four_tuple);
	RUN(test_engine_counts_what_nobody_claims_and_refuses_duplicates);
	RUN(test_many_connections_share_one_engine);
	RUN(test_trace_outlives_conn_free_whole);
	RUN(test_trace_outlives_engine_free_whole);
	RUN(test_capture_keeps_nothing_until_started_and_everything_after);
	RUN(test_engine_holds_nothing_per_lifecycle_without_capture);
	RUN(test_trace_copy_is_identical_and_detached);
	RUN(test_conn_and_listener_errors_are_negative_errno);
	return check_summary("test_engine");
}
