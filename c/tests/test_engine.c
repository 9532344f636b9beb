/*
 * test_engine.c: two finprobe endpoints over the in-memory link pair, so
 * the engine (demultiplexing, logs, listeners) and the TCB run together
 * without privileges.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "finprobe.h"

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
static void handshake(struct world *w, struct fp_conn **client, struct fp_conn **server)
{
	struct fp_tuple t = tuple(40000, 80, 0);
	uint8_t server_addr[4];
	inet_pton(AF_INET, "192.0.2.1", server_addr);
	struct fp_listener *l = fp_listener_new(w->b, 4, server_addr, 80);
	*client = fp_conn_new(w->a, &t, 1000, 1000000);
	send_flags(*client, FP_SYN);
	fp_engine_poll(w->b, 100);
	*server = fp_listener_accept(l, 5000, 1000000);
	CHECK(*server != NULL);
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
	CHECK_EQ(fp_conn_trace_len(c), 3);
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
	size_t n = fp_conn_transitions(c, &t);
	CHECK_EQ(n, 5); /* SYN_SENT ESTABLISHED FIN_WAIT_1 FIN_WAIT_2 TIME_WAIT */
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
	CHECK_EQ(fp_conn_tcb(c)->state, FP_STATE_ESTABLISHED); /* not taken yet */
	struct fp_record rec;
	fp_conn_trace_get(c, fp_conn_trace_len(c) - 1, &rec);
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
	struct fp_conn *a1 = fp_conn_new(w.a, &ta1, 1, 1000), *a2 = fp_conn_new(w.a, &ta2, 2, 1000);
	struct fp_conn *b1 = fp_conn_new(w.b, &tb1, 3, 1000), *b2 = fp_conn_new(w.b, &tb2, 4, 1000);
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
	struct fp_conn *c = fp_conn_new(w.a, &t, 1, 1000);
	CHECK(fp_conn_new(w.a, &t, 1, 1000) == NULL && errno == EADDRINUSE);
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
		conns[i] = fp_conn_new(w.b, &t, (uint32_t)i, 1000);
		CHECK(conns[i] != NULL);
	}
	struct fp_tuple probe = tuple(80, 1024 + 4321, 0);
	struct fp_conn *sender = fp_conn_new(w.a, &probe, 7, 1000);
	send_flags(sender, FP_SYN);
	fp_engine_poll(w.b, 100);
	CHECK_EQ(fp_conn_pending(conns[4321]), 1);
	CHECK_EQ(fp_conn_pending(conns[4320]), 0);
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
	return check_summary("test_engine");
}
