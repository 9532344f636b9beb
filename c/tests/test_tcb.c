/*
 * test_tcb.c: RFC 9293's state machine in tcb.c, one behaviour a test.
 *
 * Fixtures put a TCB into a state by playing the segments that lead there
 * from CLOSED (tcb_in_established(), tcb_in_fin_wait_1() ...); a test then
 * reads like a packetdrill script: we send, the peer sends, and the state,
 * the reply and the sequence variables are checked. Our ISS is ISS, the
 * peer's IRS; each fixture clears the list of transitions it caused.
 */
#include <errno.h>

#include "check.h"
#include "finprobe.h"

#define ISS 1000u
#define IRS 5000u
#define MSL2 (60ull * 1000000000ull) /* 2MSL of 60 s */

static const uint8_t payload[1000];

/* ---- the transitions observer ------------------------------------------ */

static struct fp_transition seen[16];
static int n_seen;

static void observe(void *ctx, const struct fp_transition *t)
{
	(void)ctx;
	if (n_seen < (int)(sizeof(seen) / sizeof(seen[0])))
		seen[n_seen] = *t;
	n_seen++;
}

/* ---- segments, built by hand -------------------------------------------- */

static struct fp_segment seg(uint8_t flags, uint32_t seq, uint32_t ack,
			     size_t len)
{
	struct fp_segment s;

	memset(&s, 0, sizeof(s));
	s.family = 4;
	s.flags = flags;
	s.seq = seq;
	s.ack = ack;
	s.window = 65535;
	s.payload = len ? payload : NULL;
	s.payload_len = len;
	return s;
}

/* We send: seq, ack and window filled by the TCB, then recorded. */
static struct fp_segment we_send(struct fp_tcb *tcb, uint8_t flags, size_t len)
{
	struct fp_segment s = seg(flags, 0, 0, len);

	fp_tcb_fill(tcb, &s, 0);
	fp_tcb_on_send(tcb, &s, 0);
	return s;
}

/* The peer sends; returns what the RFC would answer. */
static enum fp_reply peer_sends(struct fp_tcb *tcb, uint8_t flags, uint32_t seq,
				uint32_t ack, size_t len, uint64_t now_ns)
{
	struct fp_segment s = seg(flags, seq, ack, len);

	return fp_tcb_on_segment(tcb, &s, now_ns);
}

/* ---- fixtures ----------------------------------------------------------- */

static struct fp_tcb tcb_with_iss(uint32_t iss)
{
	struct fp_tcb tcb;

	fp_tcb_init(&tcb, iss, MSL2);
	tcb.on_transition = observe;
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_syn_sent(void)
{
	struct fp_tcb tcb = tcb_with_iss(ISS);

	we_send(&tcb, FP_SYN, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_listen(void)
{
	struct fp_tcb tcb = tcb_with_iss(ISS);

	fp_tcb_listen(&tcb, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_syn_received(void)
{
	struct fp_tcb tcb = tcb_in_listen();

	peer_sends(&tcb, FP_SYN, IRS, 0, 0, 0);
	we_send(&tcb, FP_SYN | FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

/* Active open from iss, the peer's ISN irs: SYN, SYN-ACK, ACK. */
static struct fp_tcb tcb_established_from(uint32_t iss, uint32_t irs)
{
	struct fp_tcb tcb = tcb_with_iss(iss);

	we_send(&tcb, FP_SYN, 0);
	peer_sends(&tcb, FP_SYN | FP_ACK, irs, iss + 1, 0, 0);
	we_send(&tcb, FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_established(void)
{
	return tcb_established_from(ISS, IRS);
}

/* Our FIN is at ISS + 1. */
static struct fp_tcb tcb_in_fin_wait_1(void)
{
	struct fp_tcb tcb = tcb_in_established();

	we_send(&tcb, FP_FIN | FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_fin_wait_2(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 2, 0, 0);
	n_seen = 0;
	return tcb;
}

/* Entered at time 0: the 2MSL timer runs out at MSL2. */
static struct fp_tcb tcb_in_time_wait(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_2();

	peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 0);
	we_send(&tcb, FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

/* The peer's FIN is at IRS + 1. */
static struct fp_tcb tcb_in_close_wait(void)
{
	struct fp_tcb tcb = tcb_in_established();

	peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0);
	we_send(&tcb, FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_last_ack(void)
{
	struct fp_tcb tcb = tcb_in_close_wait();

	we_send(&tcb, FP_FIN | FP_ACK, 0);
	n_seen = 0;
	return tcb;
}

static struct fp_tcb tcb_in_closing(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0);
	n_seen = 0;
	return tcb;
}

/* ---- names -------------------------------------------------------------- */

static void test_state_names_round_trip(void)
{
	for (int i = 0; i < FP_STATE_COUNT; i++) {
		const char *name = fp_state_name((enum fp_state)i);
		enum fp_state back = FP_STATE_COUNT;

		CHECK_EQ(fp_state_from_name(name, &back), 0);
		CHECK_EQ(back, i);
	}
	CHECK_STR(fp_state_name(FP_STATE_FIN_WAIT_1), "FIN_WAIT_1");
	CHECK_STR(fp_state_name(FP_STATE_COUNT), "?");
	CHECK_EQ(fp_state_from_name("FIN-WAIT-1", &(enum fp_state){ 0 }),
		 -EINVAL);
	CHECK(!fp_state_synchronized(FP_STATE_SYN_RECEIVED));
	CHECK(fp_state_synchronized(FP_STATE_ESTABLISHED));
	CHECK(fp_state_synchronized(FP_STATE_TIME_WAIT));
}

/* ---- CLOSED, LISTEN, SYN-SENT, SYN-RECEIVED ----------------------------- */

static void test_closed_segment_gets_rst(void)
{
	struct fp_tcb tcb = tcb_with_iss(ISS);

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS, ISS, 10, 0), FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS, 0, 0, 0), FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(n_seen, 0);
}

static void test_closed_syn_sent_opens_actively(void)
{
	struct fp_tcb tcb = tcb_with_iss(ISS);
	struct fp_segment syn = we_send(&tcb, FP_SYN, 0);

	CHECK_EQ(syn.seq, ISS);
	CHECK_EQ(syn.ack, 0);
	CHECK_EQ(tcb.state, FP_STATE_SYN_SENT);
	CHECK_EQ(tcb.iss, ISS);
	CHECK_EQ(tcb.snd_una, ISS);
	CHECK_EQ(tcb.snd_nxt, ISS + 1);
	/* a retransmitted SYN repeats ISS and moves nothing */
	CHECK_EQ(we_send(&tcb, FP_SYN, 0).seq, ISS);
	CHECK_EQ(tcb.snd_nxt, ISS + 1);
}

static void test_syn_sent_syn_ack_establishes(void)
{
	struct fp_tcb tcb = tcb_in_syn_sent();

	CHECK_EQ(peer_sends(&tcb, FP_SYN | FP_ACK, IRS, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
	CHECK_EQ(tcb.irs, IRS);
	CHECK(tcb.irs_known);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	CHECK_EQ(tcb.snd_una, ISS + 1);
	CHECK_EQ(tcb.snd_wnd, 65535);
	CHECK(!tcb.passive);
}

static void test_syn_sent_bad_ack_gets_rst(void)
{
	struct fp_tcb tcb = tcb_in_syn_sent();

	CHECK_EQ(peer_sends(&tcb, FP_SYN | FP_ACK, IRS, ISS, 0, 0),
		 FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS, ISS + 2, 0, 0), FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_RST | FP_ACK, IRS, ISS + 2, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_SYN_SENT);
	CHECK(!tcb.irs_known);
}

static void test_syn_sent_rst_with_ack_of_syn_closes(void)
{
	struct fp_tcb tcb = tcb_in_syn_sent();

	/* without an ACK a RST cannot be told from a blind one: dropped */
	CHECK_EQ(peer_sends(&tcb, FP_RST, 0, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_SYN_SENT);
	CHECK_EQ(peer_sends(&tcb, FP_RST | FP_ACK, 0, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

static void test_syn_sent_syn_is_simultaneous_open(void)
{
	struct fp_tcb tcb = tcb_in_syn_sent();

	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS, 0, 0, 0), FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_SYN_RECEIVED);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	/* our SYN-ACK repeats ISS */
	CHECK_EQ(we_send(&tcb, FP_SYN | FP_ACK, 0).seq, ISS);
	CHECK_EQ(tcb.snd_nxt, ISS + 1);
	CHECK_EQ(peer_sends(&tcb, FP_SYN | FP_ACK, IRS, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_SYN_RECEIVED);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
}

static void test_listen_syn_waits_for_our_syn_ack(void)
{
	struct fp_tcb tcb = tcb_in_listen();
	struct fp_segment sa;

	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS, 0, 0, 0), FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_LISTEN);
	CHECK(tcb.irs_known);
	CHECK(tcb.passive);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	sa = we_send(&tcb, FP_SYN | FP_ACK, 0);
	CHECK_EQ(sa.seq, ISS);
	CHECK_EQ(sa.ack, IRS + 1);
	CHECK_EQ(tcb.state, FP_STATE_SYN_RECEIVED);
	CHECK_EQ(tcb.snd_nxt, ISS + 1);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
	CHECK_EQ(tcb.snd_una, ISS + 1);
}

static void test_listen_ack_gets_rst_and_rst_is_ignored(void)
{
	struct fp_tcb tcb = tcb_in_listen();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS, ISS + 1, 0, 0), FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_FIN, IRS, 0, 0, 0), FP_REPLY_NONE);
	we_send(&tcb, FP_RST | FP_ACK, 0);
	CHECK_EQ(tcb.state, FP_STATE_LISTEN);
	CHECK(!tcb.irs_known);
	CHECK_EQ(n_seen, 0);
}

/* RFC 9293 §3.10.2, SEND in LISTEN: "change the connection from passive
 * to active, select an ISS. Send a SYN segment ... Enter SYN-SENT". */
static void test_listen_our_syn_goes_to_syn_sent(void)
{
	struct fp_tcb tcb = tcb_in_listen();
	struct fp_segment syn = we_send(&tcb, FP_SYN, 0);

	CHECK_EQ(syn.seq, ISS);
	CHECK_EQ(tcb.state, FP_STATE_SYN_SENT);
	CHECK(!tcb.passive);
	CHECK_EQ(tcb.snd_una, ISS);
	CHECK_EQ(tcb.snd_nxt, ISS + 1);
	CHECK_EQ(n_seen, 1);
	CHECK(n_seen == 1 && strstr(seen[0].why, "§3.10.2") != NULL);
	CHECK_EQ(peer_sends(&tcb, FP_SYN | FP_ACK, IRS, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
}

static void test_syn_received_rst_returns_to_listen(void)
{
	struct fp_tcb tcb = tcb_in_syn_received();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_LISTEN);
	CHECK(!tcb.irs_known);
}

static void test_syn_received_bad_ack_gets_rst(void)
{
	struct fp_tcb tcb = tcb_in_syn_received();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 5, 0, 0),
		 FP_REPLY_RST);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS, 0, 0), FP_REPLY_RST);
	CHECK_EQ(tcb.state, FP_STATE_SYN_RECEIVED);
}

/* ---- ESTABLISHED: data, ACKs, RST and SYN ------------------------------- */

static void test_established_data_advances_rcv_nxt(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_ACK | FP_PSH, IRS + 1, ISS + 1, 100, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 101);
	/* overlapping retransmission: only the new part counts */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 51, ISS + 1, 100, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 151);
	CHECK_EQ(we_send(&tcb, FP_ACK, 0).ack, IRS + 151);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
}

static void test_established_out_of_window_data_gets_ack(void)
{
	struct fp_tcb tcb = tcb_in_established();

	/* all old */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS - 99, ISS + 1, 100, 0),
		 FP_REPLY_ACK);
	/* beyond the window */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1 + 65535, ISS + 1, 10, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	/* in the window after a gap: acknowledged, not kept */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 101, ISS + 1, 10, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
}

static void test_established_zero_window_takes_only_bare_acks(void)
{
	struct fp_tcb tcb = tcb_in_established();

	tcb.rcv_wnd = 0; /* the caller closed our window */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 10, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(we_send(&tcb, FP_ACK, 0).window, 0);
}

static void test_established_ack_advances_snd_una_and_window(void)
{
	struct fp_tcb tcb = tcb_in_established();
	struct fp_segment s;

	CHECK_EQ(we_send(&tcb, FP_ACK | FP_PSH, 300).seq, ISS + 1);
	CHECK_EQ(tcb.snd_nxt, ISS + 301);
	s = seg(FP_ACK, IRS + 1, ISS + 101, 0);
	s.window = 1000;
	CHECK_EQ(fp_tcb_on_segment(&tcb, &s, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.snd_una, ISS + 101);
	CHECK_EQ(tcb.snd_wnd, 1000);
	CHECK_EQ(tcb.snd_wl2, ISS + 101);
	/* a duplicate ACK is ignored, SND.UNA does not go back */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 50, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.snd_una, ISS + 101);
}

static void test_established_ack_of_unsent_data_gets_ack(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 2, 10, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.snd_una, ISS + 1);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1); /* dropped, text and all */
}

static void test_established_ack_too_old_gets_ack(void)
{
	struct fp_tcb tcb = tcb_in_established();

	/* RFC 5961 §5.2: below SND.UNA - SND.WND */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1 - 70000, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.snd_una, ISS + 1);
}

static void test_established_retransmission_keeps_snd_nxt(void)
{
	struct fp_tcb tcb = tcb_in_established();
	struct fp_segment s;

	we_send(&tcb, FP_ACK, 100);
	s = seg(FP_ACK, ISS + 1, IRS + 1, 50);
	fp_tcb_on_send(&tcb, &s, 0);
	CHECK_EQ(tcb.snd_nxt, ISS + 101);
	/* a crafted bare ACK ahead of SND.NXT uses no sequence space */
	s = seg(FP_ACK, ISS + 5000, IRS + 1, 0);
	fp_tcb_on_send(&tcb, &s, 0);
	CHECK_EQ(tcb.snd_nxt, ISS + 101);
}

static void test_established_rst_at_rcv_nxt_closes(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

static void test_established_rst_in_window_gets_challenge_ack(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 2, 0, 0, 0),
		 FP_REPLY_CHALLENGE_ACK);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
}

static void test_established_rst_out_of_window_is_dropped(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1 + 65535, 0, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_RST | FP_ACK, IRS, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
}

static void test_established_syn_gets_challenge_ack(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS + 10, 0, 0, 0),
		 FP_REPLY_CHALLENGE_ACK);
	/* RFC 5961 §4.2: irrespective of the sequence number */
	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS, 0, 0, 0),
		 FP_REPLY_CHALLENGE_ACK);
	CHECK_EQ(tcb.state, FP_STATE_ESTABLISHED);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
}

static void test_established_abort_closes(void)
{
	struct fp_tcb tcb = tcb_in_established();

	we_send(&tcb, FP_RST, 0);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_RST);
}

/* ---- active close ------------------------------------------------------- */

static void test_established_close_goes_to_fin_wait_1(void)
{
	struct fp_tcb tcb = tcb_in_established();
	struct fp_segment fin = we_send(&tcb, FP_FIN | FP_ACK, 0);

	CHECK_EQ(fin.seq, ISS + 1);
	CHECK_EQ(fin.ack, IRS + 1);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	CHECK(tcb.fin_sent);
	CHECK_EQ(tcb.fin_seq, ISS + 1);
	CHECK_EQ(tcb.snd_nxt, ISS + 2);
}

static void test_fin_wait_1_ack_of_fin_goes_to_fin_wait_2(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	/* an ACK short of our FIN changes nothing */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 2, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
}

static void test_active_close_full(void)
{
	struct fp_tcb tcb = tcb_in_established();

	we_send(&tcb, FP_FIN | FP_ACK, 0);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 2, 0, 1),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 2),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.rcv_nxt, IRS + 2);
	CHECK(tcb.fin_received);
	CHECK_EQ(tcb.time_wait_until, 2 + MSL2);
	we_send(&tcb, FP_ACK, 0);
	fp_tcb_tick(&tcb, 1 + MSL2);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	fp_tcb_tick(&tcb, 2 + MSL2);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(n_seen, 4);
	CHECK_EQ(seen[3].from, FP_STATE_TIME_WAIT);
	CHECK_EQ(seen[3].to, FP_STATE_CLOSED);
	CHECK_STR(seen[3].why, "2MSL timeout (RFC 9293 §3.10.8)");
}

static void test_fin_wait_1_fin_with_ack_of_our_fin_skips_fin_wait_2(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 7),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, 7 + MSL2);
	CHECK_EQ(n_seen, 1);
	CHECK_EQ(seen[0].from, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(seen[0].to, FP_STATE_TIME_WAIT);
}

static void test_fin_wait_1_fin_after_gap_is_not_accepted(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 11, ISS + 2, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
	CHECK(!tcb.fin_received);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1);
	/* the missing data with the FIN: everything accepted */
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 10, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 12);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
}

static void test_fin_wait_2_rst(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_2();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1 + 65535, 0, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 100, 0, 0, 0),
		 FP_REPLY_CHALLENGE_ACK);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

static void test_fin_wait_2_data_advances_rcv_nxt(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_2();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 2, 20, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, IRS + 21);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
}

/* ---- simultaneous close ------------------------------------------------- */

static void test_fin_wait_1_fin_goes_to_closing_then_time_wait(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_CLOSING);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 2, 0, 5),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, 5 + MSL2);
}

static void test_closing_ack_short_of_our_fin_is_ignored(void)
{
	struct fp_tcb tcb = tcb_in_closing();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSING);
	/* the peer's FIN again: old, acknowledged */
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_CLOSING);
}

/* Crossing FINs answered by the peer's FIN again with the ACK of ours (as
 * libslirp does): the segment is wholly old, yet its ACK counts. */
static void test_closing_old_fin_with_ack_of_our_fin_enters_time_wait(void)
{
	struct fp_tcb tcb = tcb_in_closing();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 5),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.snd_una, ISS + 2);
	CHECK_EQ(tcb.rcv_nxt, IRS + 2);
	CHECK_EQ(tcb.time_wait_until, 5 + MSL2);
	CHECK_EQ(n_seen, 1);
	CHECK(strstr(seen[0].why, "old segment") != NULL);
}

static void
test_fin_wait_1_old_data_with_ack_of_our_fin_goes_to_fin_wait_2(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS - 99, ISS + 2, 100, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_2);
	CHECK_EQ(tcb.snd_una, ISS + 2);
	CHECK_EQ(tcb.rcv_nxt, IRS + 1); /* the old text is not taken again */
}

/* Only the ACK of an old segment counts, and only when it acknowledges
 * something new: an old RST or SYN, an old ACK of nothing new or of
 * what was never sent, and a segment beyond the window change nothing. */
static void test_fin_wait_1_old_segment_ack_counts_only_when_new(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_1();

	CHECK_EQ(peer_sends(&tcb, FP_RST | FP_ACK, IRS - 1, ISS + 2, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_SYN | FP_ACK, IRS - 1, ISS + 2, 0, 0),
		 FP_REPLY_CHALLENGE_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS - 1, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS - 1, ISS + 3, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 1 + 65535, ISS + 2, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(tcb.snd_una, ISS + 1);
	CHECK_EQ(n_seen, 0);
}

/* ---- passive close ------------------------------------------------------ */

static void test_close_wait_close_then_last_ack_ack_closes(void)
{
	struct fp_tcb tcb = tcb_in_established();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_CLOSE_WAIT);
	CHECK_EQ(tcb.rcv_nxt, IRS + 2);
	CHECK_EQ(we_send(&tcb, FP_FIN | FP_ACK, 0).ack, IRS + 2);
	CHECK_EQ(tcb.state, FP_STATE_LAST_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 1, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_LAST_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 2, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(n_seen, 3);
}

static void test_close_wait_fin_retransmission_gets_ack(void)
{
	struct fp_tcb tcb = tcb_in_close_wait();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 1, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_CLOSE_WAIT);
	CHECK_EQ(tcb.rcv_nxt, IRS + 2);
}

static void test_last_ack_rst_at_rcv_nxt_closes(void)
{
	struct fp_tcb tcb = tcb_in_last_ack();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 2, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

static void test_last_ack_old_fin_with_ack_of_our_fin_closes(void)
{
	struct fp_tcb tcb = tcb_in_last_ack();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(n_seen, 1);
}

/* ---- TIME-WAIT ---------------------------------------------------------- */

static void test_time_wait_fin_retransmission_restarts_timer(void)
{
	struct fp_tcb tcb = tcb_in_time_wait();

	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, 1000),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, 1000 + MSL2);
	fp_tcb_tick(&tcb, MSL2);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	fp_tcb_tick(&tcb, 1000 + MSL2);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
	CHECK_EQ(n_seen, 1);
}

/* A FIN without ACK is no retransmission of the peer's FIN to restart
 * 2MSL for: the fifth check drops a segment with the ACK bit off before
 * the FIN is looked at (Linux restarts only on an ACK too). Being old, it
 * draws the first check's ACK, as Linux sends. */
static void test_time_wait_fin_without_ack_keeps_the_timer(void)
{
	struct fp_tcb tcb = tcb_in_time_wait();

	CHECK_EQ(peer_sends(&tcb, FP_FIN, IRS + 1, 0, 0, 1000), FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, MSL2);
	CHECK_EQ(tcb.rcv_nxt, IRS + 2);
	fp_tcb_tick(&tcb, MSL2);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

static void test_time_wait_syn_gets_challenge_ack_and_bare_ack_nothing(void)
{
	struct fp_tcb tcb = tcb_in_time_wait();

	CHECK_EQ(peer_sends(&tcb, FP_SYN, IRS + 100000, 0, 0, 10),
		 FP_REPLY_CHALLENGE_ACK);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, IRS + 2, ISS + 2, 0, 10),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, MSL2);
}

/* RFC 1337 (F1): no RST ends TIME-WAIT, at RCV.NXT or in the window, nor
 * draws a challenge ACK; the 2MSL timer still does. */
static void test_time_wait_ignores_rsts(void)
{
	struct fp_tcb tcb = tcb_in_time_wait();

	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 2, 0, 0, 10), FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_RST | FP_ACK, IRS + 2, ISS + 2, 0, 10),
		 FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_RST, IRS + 1000, 0, 0, 10), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.time_wait_until, MSL2);
	CHECK_EQ(n_seen, 0);
	fp_tcb_tick(&tcb, MSL2);
	CHECK_EQ(tcb.state, FP_STATE_CLOSED);
}

/* A 2MSL too long to add to the clock waits "for ever" (the end of the
 * clock), not a wrapped few seconds. */
static void test_time_wait_huge_2msl_does_not_wrap(void)
{
	struct fp_tcb tcb = tcb_in_fin_wait_2();
	uint64_t now = 1000000000000000000ull; /* about 31 years of uptime */

	tcb.time_wait_ns = UINT64_MAX - 5;
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0, now),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK(tcb.time_wait_until == UINT64_MAX);
	fp_tcb_tick(&tcb, now + 10 * 1000000000ull);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	/* the retransmitted FIN restarts the timer the same way */
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, IRS + 1, ISS + 2, 0,
			    now + 20 * 1000000000ull),
		 FP_REPLY_ACK);
	CHECK(tcb.time_wait_until == UINT64_MAX);
	fp_tcb_tick(&tcb, UINT64_MAX - 1);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
}

/* ---- the wrap at 2^32 --------------------------------------------------- */

static void test_fin_wait_1_close_across_wrap(void)
{
	/* data takes both ends to 0xffffffff: both FINs sit on the last
	 * number before 2^32 and are acknowledged with 0 */
	uint32_t iss = 0xfffffff0u, irs = 0xffffffe0u;
	struct fp_tcb tcb = tcb_established_from(iss, irs);

	CHECK_EQ(we_send(&tcb, FP_ACK, 14).seq, iss + 1);
	CHECK_EQ(peer_sends(&tcb, FP_ACK, irs + 1, 0xffffffffu, 30, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.rcv_nxt, 0xffffffffu);
	CHECK_EQ(we_send(&tcb, FP_FIN | FP_ACK, 0).seq, 0xffffffffu);
	CHECK_EQ(tcb.snd_nxt, 0);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	/* an ACK short of our FIN, from before the wrap, changes nothing */
	CHECK_EQ(peer_sends(&tcb, FP_ACK, 0xffffffffu, 0xffffffffu, 0, 0),
		 FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_FIN_WAIT_1);
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, 0xffffffffu, 0, 0, 0),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(tcb.snd_una, 0);
	CHECK_EQ(tcb.rcv_nxt, 0);
	/* window tests and the FIN retransmission across the wrap */
	CHECK_EQ(peer_sends(&tcb, FP_RST, 65535, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(peer_sends(&tcb, FP_RST, 0xfffffff0u, 0, 0, 0), FP_REPLY_NONE);
	CHECK_EQ(tcb.state, FP_STATE_TIME_WAIT);
	CHECK_EQ(peer_sends(&tcb, FP_FIN | FP_ACK, 0xffffffffu, 0, 0, 9),
		 FP_REPLY_ACK);
	CHECK_EQ(tcb.time_wait_until, 9 + MSL2);
}

/* ---- the observer and fill ---------------------------------------------- */

static void test_transitions_observed_once_per_change(void)
{
	struct fp_tcb tcb = tcb_with_iss(ISS);

	we_send(&tcb, FP_SYN, 0);
	we_send(&tcb, FP_SYN, 0); /* a retransmission: no change */
	peer_sends(&tcb, FP_SYN | FP_ACK, IRS, ISS + 1, 0, 10);
	peer_sends(&tcb, FP_ACK, IRS + 1, ISS + 1, 0, 20); /* no change */
	CHECK_EQ(n_seen, 2);
	CHECK_EQ(seen[0].from, FP_STATE_CLOSED);
	CHECK_EQ(seen[0].to, FP_STATE_SYN_SENT);
	CHECK_EQ(seen[1].from, FP_STATE_SYN_SENT);
	CHECK_EQ(seen[1].to, FP_STATE_ESTABLISHED);
	CHECK_EQ(seen[1].when_ns, 10);
	CHECK(strstr(seen[1].why, "RFC 9293 §3.10.7.3") != NULL);
}

static void test_fill_leaves_forced_fields(void)
{
	struct fp_tcb tcb = tcb_in_established();
	struct fp_segment s = seg(FP_ACK, 7, 8, 0);

	s.window = 9;
	fp_tcb_fill(&tcb, &s, FP_FORCE_SEQ | FP_FORCE_ACK | FP_FORCE_WINDOW);
	CHECK_EQ(s.seq, 7);
	CHECK_EQ(s.ack, 8);
	CHECK_EQ(s.window, 9);
	fp_tcb_fill(&tcb, &s, FP_FORCE_ACK);
	CHECK_EQ(s.seq, ISS + 1);
	CHECK_EQ(s.ack, 8);
	CHECK_EQ(s.window, 65535);
}

int main(void)
{
	RUN(test_state_names_round_trip);
	RUN(test_closed_segment_gets_rst);
	RUN(test_closed_syn_sent_opens_actively);
	RUN(test_syn_sent_syn_ack_establishes);
	RUN(test_syn_sent_bad_ack_gets_rst);
	RUN(test_syn_sent_rst_with_ack_of_syn_closes);
	RUN(test_syn_sent_syn_is_simultaneous_open);
	RUN(test_listen_syn_waits_for_our_syn_ack);
	RUN(test_listen_ack_gets_rst_and_rst_is_ignored);
	RUN(test_listen_our_syn_goes_to_syn_sent);
	RUN(test_syn_received_rst_returns_to_listen);
	RUN(test_syn_received_bad_ack_gets_rst);
	RUN(test_established_data_advances_rcv_nxt);
	RUN(test_established_out_of_window_data_gets_ack);
	RUN(test_established_zero_window_takes_only_bare_acks);
	RUN(test_established_ack_advances_snd_una_and_window);
	RUN(test_established_ack_of_unsent_data_gets_ack);
	RUN(test_established_ack_too_old_gets_ack);
	RUN(test_established_retransmission_keeps_snd_nxt);
	RUN(test_established_rst_at_rcv_nxt_closes);
	RUN(test_established_rst_in_window_gets_challenge_ack);
	RUN(test_established_rst_out_of_window_is_dropped);
	RUN(test_established_syn_gets_challenge_ack);
	RUN(test_established_abort_closes);
	RUN(test_established_close_goes_to_fin_wait_1);
	RUN(test_fin_wait_1_ack_of_fin_goes_to_fin_wait_2);
	RUN(test_active_close_full);
	RUN(test_fin_wait_1_fin_with_ack_of_our_fin_skips_fin_wait_2);
	RUN(test_fin_wait_1_fin_after_gap_is_not_accepted);
	RUN(test_fin_wait_2_rst);
	RUN(test_fin_wait_2_data_advances_rcv_nxt);
	RUN(test_fin_wait_1_fin_goes_to_closing_then_time_wait);
	RUN(test_closing_ack_short_of_our_fin_is_ignored);
	RUN(test_closing_old_fin_with_ack_of_our_fin_enters_time_wait);
	RUN(test_fin_wait_1_old_data_with_ack_of_our_fin_goes_to_fin_wait_2);
	RUN(test_fin_wait_1_old_segment_ack_counts_only_when_new);
	RUN(test_close_wait_close_then_last_ack_ack_closes);
	RUN(test_close_wait_fin_retransmission_gets_ack);
	RUN(test_last_ack_rst_at_rcv_nxt_closes);
	RUN(test_last_ack_old_fin_with_ack_of_our_fin_closes);
	RUN(test_time_wait_fin_retransmission_restarts_timer);
	RUN(test_time_wait_fin_without_ack_keeps_the_timer);
	RUN(test_time_wait_syn_gets_challenge_ack_and_bare_ack_nothing);
	RUN(test_time_wait_ignores_rsts);
	RUN(test_time_wait_huge_2msl_does_not_wrap);
	RUN(test_fin_wait_1_close_across_wrap);
	RUN(test_transitions_observed_once_per_change);
	RUN(test_fill_leaves_forced_fields);
	return check_summary("test_tcb");
}
