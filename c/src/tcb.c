/*
 * tcb.c: our endpoint's transmission control block and RFC 9293's state
 * machine for it. Pure: no I/O, no clock, no allocation, no printing; time
 * comes in as now_ns arguments, so the same code can replay a pcap.
 *
 * Call order: fp_tcb_init() once (and fp_tcb_listen() for a passive OPEN).
 * For each segment we send: fp_tcb_fill() fills what the caller did not
 * force, the segment is built and sent, then fp_tcb_on_send() records what
 * it means (OPEN, SEND, CLOSE or ABORT, RFC 9293 §3.10.1-§3.10.5). For each
 * segment from the peer: fp_tcb_on_segment() (SEGMENT ARRIVES, §3.10.7),
 * which returns what the RFC would answer; finprobe never answers by itself.
 * fp_tcb_tick() whenever time passes (the TIME-WAIT timeout, §3.10.8).
 *
 * The file follows the RFC's order: the name table, the user calls as
 * expressed by sent segments, then SEGMENT ARRIVES state by state (CLOSED,
 * LISTEN, SYN-SENT, TIME-WAIT, then the numbered checks of "Otherwise").
 * Every state change goes through tcb_set_state().
 *
 * Where it departs from the RFC's letter it says so, there and here:
 *  - RFC 5961 narrows the RST and SYN checks (challenge ACKs).
 *  - The ACK of a wholly old segment is processed when it acknowledges
 *    new data (old_segment_acks_new_data()), as BSD and Linux do; by the
 *    letter of §3.10.7.4's first check it is dropped unread, and a peer
 *    that answers crossing FINs with its FIN again plus the ACK of ours
 *    (libslirp) would leave us in CLOSING for good.
 *  - TIME-WAIT ignores RSTs (RFC 1337 §3, fix F1: "TIME-WAIT
 *    assassination"), where §3.10.7.4 would close; Linux does so with
 *    net.ipv4.tcp_rfc1337=1 (time_wait_input()).
 */
#include <errno.h>
#include <string.h>

#include "finprobe.h"
#include "seq.h"

/* ---- states ------------------------------------------------------------- */

/* Indexed by enum fp_state; the names of the Python API. */
static const char *const state_names[FP_STATE_COUNT] = {
	[FP_STATE_CLOSED] = "CLOSED",
	[FP_STATE_LISTEN] = "LISTEN",
	[FP_STATE_SYN_SENT] = "SYN_SENT",
	[FP_STATE_SYN_RECEIVED] = "SYN_RECEIVED",
	[FP_STATE_ESTABLISHED] = "ESTABLISHED",
	[FP_STATE_FIN_WAIT_1] = "FIN_WAIT_1",
	[FP_STATE_FIN_WAIT_2] = "FIN_WAIT_2",
	[FP_STATE_CLOSE_WAIT] = "CLOSE_WAIT",
	[FP_STATE_CLOSING] = "CLOSING",
	[FP_STATE_LAST_ACK] = "LAST_ACK",
	[FP_STATE_TIME_WAIT] = "TIME_WAIT",
};

const char *fp_state_name(enum fp_state state)
{
	return (unsigned)state < FP_STATE_COUNT ? state_names[state] : "?";
}

int fp_state_from_name(const char *name, enum fp_state *state)
{
	for (unsigned i = 0; name && i < FP_STATE_COUNT; i++) {
		if (strcmp(name, state_names[i]) == 0) {
			*state = (enum fp_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* RFC 9293 §3.5.2 counts SYN-RECEIVED among the non-synchronized states;
 * the enum puts every synchronized state at or after ESTABLISHED. */
int fp_state_synchronized(enum fp_state state)
{
	return state >= FP_STATE_ESTABLISHED && state < FP_STATE_COUNT;
}

/* ---- helpers ------------------------------------------------------------ */

/* a + b, or UINT64_MAX where the sum would wrap: a deadline too far to
 * count is "never", not a few seconds after the wrap. */
static uint64_t sat_add_u64(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* The 2MSL timer runs from now, whether TIME-WAIT was just entered or a
 * retransmitted FIN restarts it (RFC 9293 §3.10.7.4, fifth and eighth). */
static void restart_time_wait(struct fp_tcb *tcb, uint64_t now_ns)
{
	tcb->time_wait_until = sat_add_u64(now_ns, tcb->time_wait_ns);
}

/* The one place the state changes, so that the observer sees every change
 * exactly once; why names the rule and its RFC section. */
static void tcb_set_state(struct fp_tcb *tcb, enum fp_state to, const char *why,
			  uint64_t now_ns)
{
	struct fp_transition t = {
		.when_ns = now_ns,
		.from = (uint8_t)tcb->state,
		.to = (uint8_t)to,
		.why = why,
	};

	if (to == tcb->state)
		return;
	tcb->state = to;
	if (to == FP_STATE_TIME_WAIT)
		restart_time_wait(tcb, now_ns);
	if (tcb->on_transition)
		tcb->on_transition(tcb->on_transition_ctx, &t);
}

/* An OPEN on a CLOSED TCB starts a new connection: forget the last one's
 * peer, FINs and timer, keep the settings (2MSL, window, observer). */
static void tcb_new_connection(struct fp_tcb *tcb, uint32_t iss)
{
	struct fp_tcb old = *tcb;

	fp_tcb_init(tcb, iss, old.time_wait_ns);
	tcb->rcv_wnd = old.rcv_wnd;
	tcb->on_transition = old.on_transition;
	tcb->on_transition_ctx = old.on_transition_ctx;
}

/* The first octet of text: "the SYN is considered to occur before the
 * first actual data octet of the segment" (RFC 9293 §3.4). */
static uint32_t text_start(const struct fp_segment *seg)
{
	return seg->seq + !!(seg->flags & FP_SYN);
}

static int our_fin_acked(const struct fp_tcb *tcb)
{
	return tcb->fin_sent && seq_gt(tcb->snd_una, tcb->fin_seq);
}

/* The peer's FIN in seg is accepted by the eighth check when nothing before
 * it is missing: the text starts at or before RCV.NXT, so the seventh check
 * takes RCV.NXT up to the FIN. True before and after the seventh check. */
static int fin_in_sequence(const struct fp_tcb *tcb,
			   const struct fp_segment *seg)
{
	uint32_t fin = text_start(seg) + (uint32_t)seg->payload_len;

	return (seg->flags & FP_FIN) && !tcb->fin_received &&
	       seq_leq(text_start(seg), tcb->rcv_nxt) &&
	       seq_geq(fin, tcb->rcv_nxt);
}

/* A SYN-RECEIVED that came from LISTEN goes back there and forgets the
 * peer's SYN (RFC 9293 §3.10.7.4, second and fourth). */
static void return_to_listen(struct fp_tcb *tcb, const char *why,
			     uint64_t now_ns)
{
	tcb->irs_known = 0;
	tcb_set_state(tcb, FP_STATE_LISTEN, why, now_ns);
}

/* ---- user calls, as the segments we send express them ------------------- */

void fp_tcb_init(struct fp_tcb *tcb, uint32_t iss, uint64_t time_wait_ns)
{
	memset(tcb, 0, sizeof(*tcb));
	tcb->state = FP_STATE_CLOSED;
	tcb->iss = iss;
	tcb->snd_una = iss;
	tcb->snd_nxt = iss;
	tcb->rcv_wnd = 65535;
	tcb->time_wait_ns = time_wait_ns;
}

/* RFC 9293 §3.10.1, OPEN call, passive. In any other state than CLOSED the
 * RFC answers "connection already exists": nothing changes. */
void fp_tcb_listen(struct fp_tcb *tcb, uint64_t now_ns)
{
	if (tcb->state != FP_STATE_CLOSED)
		return;
	tcb_new_connection(tcb, tcb->iss);
	tcb->passive = 1;
	tcb_set_state(tcb, FP_STATE_LISTEN, "passive OPEN (RFC 9293 §3.10.1)",
		      now_ns);
}

/* Our SYN always carries ISS while the handshake is not over, so that a
 * retransmitted SYN or SYN-ACK repeats it; later SYNs are the caller's
 * experiments and go at SND.NXT like anything else. */
static int carries_our_syn(const struct fp_tcb *tcb,
			   const struct fp_segment *seg)
{
	return (seg->flags & FP_SYN) && tcb->state <= FP_STATE_SYN_RECEIVED;
}

void fp_tcb_fill(const struct fp_tcb *tcb, struct fp_segment *seg,
		 unsigned forced)
{
	if (!(forced & FP_FORCE_SEQ))
		seg->seq = carries_our_syn(tcb, seg) ? tcb->iss : tcb->snd_nxt;
	if (!(forced & FP_FORCE_ACK))
		seg->ack = tcb->irs_known ? tcb->rcv_nxt : 0;
	if (!(forced & FP_FORCE_WINDOW))
		seg->window = tcb->rcv_wnd > 0xffff ? 0xffff
						    : (uint16_t)tcb->rcv_wnd;
}

/* Our SYN from CLOSED (RFC 9293 §3.10.1, active OPEN) or from LISTEN
 * (§3.10.2, SEND in LISTEN: "change the connection from passive to active,
 * select an ISS. Send a SYN segment, set SND.UNA to ISS, SND.NXT to ISS+1.
 * Enter SYN-SENT state."): a new active connection whose ISS is the SYN's
 * sequence number. A SYN the LISTEN had recorded is forgotten with the
 * passive OPEN; sent again, it meets our SYN as a simultaneous open. */
static void send_active_syn(struct fp_tcb *tcb, const struct fp_segment *seg,
			    uint64_t now_ns)
{
	enum fp_state from = tcb->state;

	tcb_new_connection(tcb, seg->seq);
	tcb->snd_nxt = seg->seq + 1;
	tcb_set_state(tcb, FP_STATE_SYN_SENT,
		      from == FP_STATE_LISTEN
			      ? "SEND in LISTEN: we sent SYN, passive to "
				"active (RFC 9293 §3.10.2)"
			      : "active OPEN: we sent SYN (RFC 9293 §3.10.1)",
		      now_ns);
}

/* Our SYN-ACK answers the SYN a LISTEN has seen (§3.10.7.2, third: "ISS
 * should be selected and a SYN segment sent ... SND.NXT is set to ISS+1
 * and SND.UNA to ISS. The connection state should be changed to
 * SYN-RECEIVED"). Other SYNs only advance SND.NXT, in fp_tcb_on_send(). */
static void send_syn(struct fp_tcb *tcb, const struct fp_segment *seg,
		     uint64_t now_ns)
{
	int ack = seg->flags & FP_ACK;

	if (!ack &&
	    (tcb->state == FP_STATE_CLOSED || tcb->state == FP_STATE_LISTEN)) {
		send_active_syn(tcb, seg, now_ns);
	} else if (ack && tcb->state == FP_STATE_LISTEN && tcb->irs_known) {
		tcb->iss = seg->seq;
		tcb->snd_una = seg->seq;
		tcb->snd_nxt = seg->seq + 1;
		tcb_set_state(tcb, FP_STATE_SYN_RECEIVED,
			      "we sent SYN-ACK to the peer's SYN "
			      "(RFC 9293 §3.10.7.2)",
			      now_ns);
	}
}

/* RFC 9293 §3.10.2, SEND call: SND.NXT moves past what we sent, never back,
 * so retransmissions and crafted old segments leave it where it is. */
static void send_advance(struct fp_tcb *tcb, const struct fp_segment *seg)
{
	uint32_t len = fp_segment_seg_len(seg);

	if (len > 0 && seq_gt(seg->seq + len, tcb->snd_nxt))
		tcb->snd_nxt = seg->seq + len;
}

/* RFC 9293 §3.10.4, CLOSE call: our FIN. Where the RFC's CLOSE would not
 * send one, a FIN is the caller's experiment: recorded, no state change. */
static void send_fin(struct fp_tcb *tcb, const struct fp_segment *seg,
		     uint64_t now_ns)
{
	tcb->fin_sent = 1;
	tcb->fin_seq = text_start(seg) + (uint32_t)seg->payload_len;

	switch (tcb->state) {
	case FP_STATE_SYN_RECEIVED:
	case FP_STATE_ESTABLISHED:
		tcb_set_state(tcb, FP_STATE_FIN_WAIT_1,
			      "CLOSE: we sent FIN (RFC 9293 §3.10.4)", now_ns);
		break;
	case FP_STATE_CLOSE_WAIT:
		tcb_set_state(tcb, FP_STATE_LAST_ACK,
			      "CLOSE in CLOSE-WAIT: we sent FIN "
			      "(RFC 9293 §3.10.4)",
			      now_ns);
		break;
	default:
		break;
	}
}

/* RFC 9293 §3.10.5, ABORT call: our RST ends the connection. A RST from
 * LISTEN answers a bad segment (§3.10.7.2) and is no ABORT: LISTEN stays. */
static void send_rst(struct fp_tcb *tcb, uint64_t now_ns)
{
	if (tcb->state == FP_STATE_CLOSED || tcb->state == FP_STATE_LISTEN)
		return;
	tcb_set_state(tcb, FP_STATE_CLOSED,
		      "ABORT: we sent RST (RFC 9293 §3.10.5)", now_ns);
}

/* A bare ACK changes nothing: TIME-WAIT is entered on receiving the FIN
 * (§3.10.7.4, eighth), not on acknowledging it. */
void fp_tcb_on_send(struct fp_tcb *tcb, const struct fp_segment *seg,
		    uint64_t now_ns)
{
	if (seg->flags & FP_RST) {
		send_rst(tcb, now_ns);
		return;
	}
	if (seg->flags & FP_SYN)
		send_syn(tcb, seg, now_ns);
	send_advance(tcb, seg);
	if (seg->flags & FP_FIN)
		send_fin(tcb, seg, now_ns);
}

/* ---- SEGMENT ARRIVES: CLOSED, LISTEN, SYN-SENT -------------------------- */

/* RFC 9293 §3.10.7.1, CLOSED: "An incoming segment containing a RST is
 * discarded. An incoming segment not containing a RST causes a RST to be
 * sent in response." */
static enum fp_reply closed_input(const struct fp_segment *seg)
{
	return (seg->flags & FP_RST) ? FP_REPLY_NONE : FP_REPLY_RST;
}

/* RFC 9293 §3.10.7.2, LISTEN: first RST (ignored), second ACK ("any
 * acknowledgment is bad" -> RST), third SYN (the security check is
 * skipped). The SYN is recorded but LISTEN stays until the caller sends
 * our SYN-ACK (send_syn), because finprobe answers nothing by itself; the
 * reply FP_REPLY_ACK stands for that SYN-ACK. Anything else is dropped. */
static enum fp_reply listen_input(struct fp_tcb *tcb,
				  const struct fp_segment *seg)
{
	if (seg->flags & FP_RST)
		return FP_REPLY_NONE;
	if (seg->flags & FP_ACK)
		return FP_REPLY_RST;
	if (!(seg->flags & FP_SYN))
		return FP_REPLY_NONE;
	tcb->irs = seg->seq;
	tcb->rcv_nxt = seg->seq + 1;
	tcb->irs_known = 1;
	tcb->passive = 1;
	tcb->snd_wnd = seg->window;
	return FP_REPLY_ACK;
}

/* RFC 9293 §3.10.7.3, SYN-SENT, first: check the ACK bit. "If SEG.ACK =<
 * ISS or SEG.ACK > SND.NXT, send a reset (unless the RST bit is set, if so
 * drop the segment and return)". */
static int syn_sent_ack_acceptable(const struct fp_tcb *tcb,
				   const struct fp_segment *seg)
{
	return seq_gt(seg->ack, tcb->iss) && seq_leq(seg->ack, tcb->snd_nxt);
}

static enum fp_reply process_text_and_fin(struct fp_tcb *tcb,
					  const struct fp_segment *seg,
					  uint64_t now_ns, enum fp_reply reply);

/* RFC 9293 §3.10.7.3, SYN-SENT, fourth: check the SYN bit. Our SYN
 * acknowledged: ESTABLISHED, and "if there are other controls or text in
 * the segment, continue processing at the sixth step". Not acknowledged:
 * simultaneous open, SYN-RECEIVED; the SYN-ACK the RFC sends is reported
 * as FP_REPLY_ACK, and text that the RFC would queue is not kept. */
static enum fp_reply syn_sent_syn(struct fp_tcb *tcb,
				  const struct fp_segment *seg, uint64_t now_ns)
{
	tcb->irs = seg->seq;
	tcb->rcv_nxt = seg->seq + 1;
	tcb->irs_known = 1;
	tcb->snd_wnd = seg->window;
	tcb->snd_wl1 = seg->seq;
	if (seg->flags & FP_ACK) {
		tcb->snd_una = seg->ack;
		tcb->snd_wl2 = seg->ack;
	}
	if (seq_gt(tcb->snd_una, tcb->iss)) {
		tcb_set_state(tcb, FP_STATE_ESTABLISHED,
			      "SYN-ACK acknowledges our SYN "
			      "(RFC 9293 §3.10.7.3)",
			      now_ns);
		return process_text_and_fin(tcb, seg, now_ns, FP_REPLY_ACK);
	}
	tcb->passive = 0;
	tcb_set_state(tcb, FP_STATE_SYN_RECEIVED,
		      "simultaneous open: SYN in SYN-SENT "
		      "(RFC 9293 §3.10.7.3)",
		      now_ns);
	return FP_REPLY_ACK;
}

static enum fp_reply syn_sent_input(struct fp_tcb *tcb,
				    const struct fp_segment *seg,
				    uint64_t now_ns)
{
	int rst = seg->flags & FP_RST;

	/* first: check the ACK bit */
	if ((seg->flags & FP_ACK) && !syn_sent_ack_acceptable(tcb, seg))
		return rst ? FP_REPLY_NONE : FP_REPLY_RST;
	/* second: check the RST bit; "otherwise (no ACK), drop" */
	if (rst) {
		if (seg->flags & FP_ACK)
			tcb_set_state(tcb, FP_STATE_CLOSED,
				      "connection refused: RST acknowledging "
				      "our SYN (RFC 9293 §3.10.7.3)",
				      now_ns);
		return FP_REPLY_NONE;
	}
	/* third: security and compartment, not modelled by finprobe */
	/* fourth: check the SYN bit */
	if (seg->flags & FP_SYN)
		return syn_sent_syn(tcb, seg, now_ns);
	/* fifth: "if neither of the SYN or RST bits is set, then drop" */
	return FP_REPLY_NONE;
}

/* ---- SEGMENT ARRIVES, otherwise: the numbered checks (§3.10.7.4) -------- */

/* Each check either hands the segment on to the next one or ends its
 * processing, leaving in *reply what the RFC sends. */
enum step { STEP_STOP, STEP_NEXT };

/* The acceptability table of RFC 9293 §3.10.7.4, first. */
static int segment_acceptable(const struct fp_tcb *tcb,
			      const struct fp_segment *seg)
{
	uint32_t len = fp_segment_seg_len(seg);

	if (tcb->rcv_wnd == 0)
		return len == 0 && seg->seq == tcb->rcv_nxt;
	if (len == 0)
		return seq_in_window(seg->seq, tcb->rcv_nxt, tcb->rcv_wnd);
	return seq_in_window(seg->seq, tcb->rcv_nxt, tcb->rcv_wnd) ||
	       seq_in_window(seg->seq + len - 1, tcb->rcv_nxt, tcb->rcv_wnd);
}

/* RFC 9293 §3.10.7.4, first: check sequence number. An unacceptable
 * segment draws an ACK unless it is a RST (RFC 5961 §3.2: a RST out of
 * window is dropped silently); a SYN in a synchronized state draws a
 * challenge ACK "irrespective of the sequence number" (RFC 5961 §4.2). */
static enum step check_sequence(const struct fp_tcb *tcb,
				const struct fp_segment *seg,
				enum fp_reply *reply)
{
	if (segment_acceptable(tcb, seg))
		return STEP_NEXT;
	if (seg->flags & FP_RST)
		*reply = FP_REPLY_NONE;
	else if ((seg->flags & FP_SYN) && fp_state_synchronized(tcb->state))
		*reply = FP_REPLY_CHALLENGE_ACK;
	else
		*reply = FP_REPLY_ACK;
	return STEP_STOP;
}

/* RFC 9293 §3.10.7.4, second: check the RST bit, as RFC 5961 §3.2 narrows
 * it: only a RST at exactly RCV.NXT resets; one elsewhere in the window
 * draws a challenge ACK and changes nothing. */
static enum step check_rst(struct fp_tcb *tcb, const struct fp_segment *seg,
			   uint64_t now_ns, enum fp_reply *reply)
{
	if (!(seg->flags & FP_RST))
		return STEP_NEXT;
	if (seg->seq != tcb->rcv_nxt) {
		*reply = FP_REPLY_CHALLENGE_ACK;
		return STEP_STOP;
	}
	if (tcb->state == FP_STATE_SYN_RECEIVED && tcb->passive)
		return_to_listen(tcb,
				 "RST in SYN-RECEIVED of a passive OPEN "
				 "(RFC 9293 §3.10.7.4)",
				 now_ns);
	else
		tcb_set_state(tcb, FP_STATE_CLOSED,
			      "RST at RCV.NXT (RFC 9293 §3.10.7.4, "
			      "RFC 5961 §3.2)",
			      now_ns);
	return STEP_STOP;
}

/* RFC 9293 §3.10.7.4, fourth: check the SYN bit. SYN-RECEIVED of a passive
 * OPEN returns to LISTEN; the synchronized states answer with a challenge
 * ACK (RFC 5961 §4.2) and change nothing. */
static enum step check_syn(struct fp_tcb *tcb, const struct fp_segment *seg,
			   uint64_t now_ns, enum fp_reply *reply)
{
	if (!(seg->flags & FP_SYN))
		return STEP_NEXT;
	if (tcb->state == FP_STATE_SYN_RECEIVED && tcb->passive)
		return_to_listen(tcb,
				 "SYN in SYN-RECEIVED of a passive OPEN "
				 "(RFC 9293 §3.10.7.4)",
				 now_ns);
	else
		*reply = FP_REPLY_CHALLENGE_ACK;
	return STEP_STOP;
}

/* SYN-RECEIVED: "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED
 * state and continue processing with the variables below set to: SND.WND
 * <- SEG.WND, SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK. If the segment
 * acknowledgment is not acceptable, form a reset segment". */
static enum step syn_received_ack(struct fp_tcb *tcb,
				  const struct fp_segment *seg, uint64_t now_ns,
				  enum fp_reply *reply)
{
	if (!seq_lt(tcb->snd_una, seg->ack) ||
	    !seq_leq(seg->ack, tcb->snd_nxt)) {
		*reply = FP_REPLY_RST;
		return STEP_STOP;
	}
	tcb->snd_wnd = seg->window;
	tcb->snd_wl1 = seg->seq;
	tcb->snd_wl2 = seg->ack;
	tcb_set_state(tcb, FP_STATE_ESTABLISHED,
		      "ACK of our SYN in SYN-RECEIVED (RFC 9293 §3.10.7.4)",
		      now_ns);
	return STEP_NEXT;
}

/* RFC 5961 §5.2: an ACK is acceptable only if (SND.UNA - MAX.SND.WND) =<
 * SEG.ACK; the TCB keeps no MAX.SND.WND, so the current SND.WND stands in
 * (stricter when the peer's window shrank). */
static int ack_too_old(const struct fp_tcb *tcb, const struct fp_segment *seg)
{
	return seq_lt(seg->ack, tcb->snd_una - tcb->snd_wnd);
}

/* "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If
 * (SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK))" */
static void update_send_window(struct fp_tcb *tcb, const struct fp_segment *seg)
{
	if (!seq_between(tcb->snd_una, seg->ack, tcb->snd_nxt))
		return;
	if (seq_lt(tcb->snd_wl1, seg->seq) ||
	    (tcb->snd_wl1 == seg->seq && seq_leq(tcb->snd_wl2, seg->ack))) {
		tcb->snd_wnd = seg->window;
		tcb->snd_wl1 = seg->seq;
		tcb->snd_wl2 = seg->ack;
	}
}

/* The ESTABLISHED processing the later states share: an ACK too old (RFC
 * 5961 §5.2) or of something not yet sent is answered with an ACK and
 * dropped; otherwise SND.UNA advances and the send window is updated.
 * Duplicates (SEG.ACK =< SND.UNA) "can be ignored". */
static enum step established_ack(struct fp_tcb *tcb,
				 const struct fp_segment *seg,
				 enum fp_reply *reply)
{
	if (ack_too_old(tcb, seg) || seq_gt(seg->ack, tcb->snd_nxt)) {
		*reply = FP_REPLY_ACK;
		return STEP_STOP;
	}
	if (seq_gt(seg->ack, tcb->snd_una))
		tcb->snd_una = seg->ack;
	update_send_window(tcb, seg);
	return STEP_NEXT;
}

/* The why of a state change that an old segment's ACK made: see
 * old_segment_acks_new_data(). */
static const char old_ack_why[] =
	"ACK of our FIN on an old segment (as BSD and Linux do; "
	"RFC 9293 §3.10.7.4's first check would drop it)";

/* The fifth check's state changes on the ACK of our FIN; old says the ACK
 * came on an old segment (old_segment_acks_new_data()), which the record
 * says instead of the RFC's rule. */
static enum step ack_of_our_fin(struct fp_tcb *tcb,
				const struct fp_segment *seg, uint64_t now_ns,
				int old)
{
	switch (tcb->state) {
	case FP_STATE_FIN_WAIT_1:
		/* "if the FIN segment is now acknowledged, then enter
		 * FIN-WAIT-2". When this segment also brings the peer's FIN,
		 * the eighth check goes straight to TIME-WAIT ("if our FIN
		 * has been ACKed (perhaps in this segment)"): no FIN-WAIT-2. */
		if (our_fin_acked(tcb) && !fin_in_sequence(tcb, seg))
			tcb_set_state(
				tcb, FP_STATE_FIN_WAIT_2,
				old ? old_ack_why
				    : "our FIN acknowledged (RFC 9293 §3.10.7.4)",
				now_ns);
		break;
	case FP_STATE_CLOSING:
		/* "if the ACK acknowledges our FIN, then enter the TIME-WAIT
		 * state; otherwise, ignore the segment" */
		if (!our_fin_acked(tcb))
			return STEP_STOP;
		tcb_set_state(tcb, FP_STATE_TIME_WAIT,
			      old ? old_ack_why
				  : "our FIN acknowledged in CLOSING "
				    "(RFC 9293 §3.10.7.4)",
			      now_ns);
		break;
	case FP_STATE_LAST_ACK:
		/* "If our FIN is now acknowledged, delete the TCB, enter the
		 * CLOSED state, and return." */
		if (!our_fin_acked(tcb))
			break;
		tcb_set_state(tcb, FP_STATE_CLOSED,
			      old ? old_ack_why
				  : "our FIN acknowledged in LAST-ACK "
				    "(RFC 9293 §3.10.7.4)",
			      now_ns);
		return STEP_STOP;
	default:
		/* ESTABLISHED, FIN-WAIT-2, CLOSE-WAIT: nothing more;
		 * TIME-WAIT: a retransmitted FIN is handled in
		 * time_wait_input(). */
		break;
	}
	return STEP_NEXT;
}

/* RFC 9293 §3.10.7.4, fifth: check the ACK field */
static enum step check_ack(struct fp_tcb *tcb, const struct fp_segment *seg,
			   uint64_t now_ns, enum fp_reply *reply)
{
	if (!(seg->flags & FP_ACK))
		return STEP_STOP; /* "if the ACK bit is off, drop" */
	if (tcb->state == FP_STATE_SYN_RECEIVED &&
	    syn_received_ack(tcb, seg, now_ns, reply) == STEP_STOP)
		return STEP_STOP;
	if (established_ack(tcb, seg, reply) == STEP_STOP)
		return STEP_STOP;
	return ack_of_our_fin(tcb, seg, now_ns, 0);
}

/*
 * A departure from the letter of RFC 9293 §3.10.7.4, first check: there an
 * unacceptable segment is answered with an ACK and dropped, its ACK field
 * never read. BSD (tcp_input() trims the duplicate text and goes on to the
 * ACK) and Linux (tcp_sequence() refuses only a segment ending before
 * RCV.NXT as last advertised, then tcp_ack() runs) both honour the ACK of
 * a wholly old segment. It matters when the peer answers crossing FINs by
 * sending its FIN again with the ACK of ours (libslirp does): by the letter
 * that ACK is lost and CLOSING never ends. So an old segment (it ends at or
 * before RCV.NXT), neither RST nor SYN, whose ACK acknowledges something
 * new (SND.UNA < SEG.ACK =< SND.NXT) in a synchronized state has its ACK
 * processed as the fifth check would; the reply stays the first check's
 * ACK, and its text and FIN stay ignored.
 */
static int old_segment_acks_new_data(const struct fp_tcb *tcb,
				     const struct fp_segment *seg)
{
	uint32_t end = seg->seq + fp_segment_seg_len(seg);

	return (seg->flags & (FP_ACK | FP_RST | FP_SYN)) == FP_ACK &&
	       fp_state_synchronized(tcb->state) &&
	       seq_leq(end, tcb->rcv_nxt) && seq_lt(tcb->snd_una, seg->ack) &&
	       seq_leq(seg->ack, tcb->snd_nxt);
}

static void process_old_ack(struct fp_tcb *tcb, const struct fp_segment *seg,
			    uint64_t now_ns)
{
	enum fp_reply ignored = FP_REPLY_NONE;

	if (established_ack(tcb, seg, &ignored) == STEP_NEXT)
		ack_of_our_fin(tcb, seg, now_ns, 1);
}

/* RFC 9293 §3.10.7.4, seventh: process the segment text. finprobe keeps
 * no reassembly queue: text from RCV.NXT on (overlap included) advances
 * RCV.NXT, text further on is not kept, and either way is acknowledged.
 * After the peer's FIN, "ignore the segment text". */
static void process_text(struct fp_tcb *tcb, const struct fp_segment *seg,
			 enum fp_reply *reply)
{
	uint32_t start = text_start(seg);
	uint32_t end = start + (uint32_t)seg->payload_len;

	if (seg->payload_len == 0)
		return;
	switch (tcb->state) {
	case FP_STATE_ESTABLISHED:
	case FP_STATE_FIN_WAIT_1:
	case FP_STATE_FIN_WAIT_2:
		if (seq_leq(start, tcb->rcv_nxt) && seq_gt(end, tcb->rcv_nxt))
			tcb->rcv_nxt = end;
		*reply = FP_REPLY_ACK;
		break;
	default:
		break;
	}
}

/* RFC 9293 §3.10.7.4, eighth: check the FIN bit. Only a FIN with nothing
 * missing before it counts; it advances RCV.NXT and is acknowledged. A
 * FIN after a gap is not kept, and like text after a gap it is
 * acknowledged, which tells the peer what is missing. */
static void check_fin(struct fp_tcb *tcb, const struct fp_segment *seg,
		      uint64_t now_ns, enum fp_reply *reply)
{
	if (!(seg->flags & FP_FIN) || tcb->fin_received)
		return;
	*reply = FP_REPLY_ACK;
	if (!fin_in_sequence(tcb, seg))
		return;
	tcb->rcv_nxt += 1;
	tcb->fin_received = 1;

	switch (tcb->state) {
	case FP_STATE_SYN_RECEIVED:
	case FP_STATE_ESTABLISHED:
		tcb_set_state(tcb, FP_STATE_CLOSE_WAIT,
			      "peer's FIN received (RFC 9293 §3.10.7.4)",
			      now_ns);
		break;
	case FP_STATE_FIN_WAIT_1:
		if (our_fin_acked(tcb))
			tcb_set_state(tcb, FP_STATE_TIME_WAIT,
				      "peer's FIN with our FIN acknowledged "
				      "(RFC 9293 §3.10.7.4)",
				      now_ns);
		else
			tcb_set_state(tcb, FP_STATE_CLOSING,
				      "simultaneous close: peer's FIN before "
				      "the ACK of ours (RFC 9293 §3.10.7.4)",
				      now_ns);
		break;
	case FP_STATE_FIN_WAIT_2:
		tcb_set_state(tcb, FP_STATE_TIME_WAIT,
			      "peer's FIN in FIN-WAIT-2 (RFC 9293 §3.10.7.4)",
			      now_ns);
		break;
	default:
		/* CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer's FIN
		 * came already, fin_in_sequence() is false here. */
		break;
	}
}

/* The sixth to eighth checks, shared with SYN-SENT's "continue processing
 * at the sixth step". */
static enum fp_reply process_text_and_fin(struct fp_tcb *tcb,
					  const struct fp_segment *seg,
					  uint64_t now_ns, enum fp_reply reply)
{
	/* sixth: check the URG bit. The TCB keeps no RCV.UP: nothing to do. */
	process_text(tcb, seg, &reply);
	check_fin(tcb, seg, now_ns, &reply);
	return reply;
}

/* RFC 9293 §3.10.7.4, "Otherwise": SYN-RECEIVED and the synchronized
 * states, check by check in the RFC's order. */
static enum fp_reply otherwise_input(struct fp_tcb *tcb,
				     const struct fp_segment *seg,
				     uint64_t now_ns)
{
	enum fp_reply reply = FP_REPLY_NONE;

	if (check_sequence(tcb, seg, &reply) == STEP_STOP) {
		if (old_segment_acks_new_data(tcb, seg))
			process_old_ack(tcb, seg, now_ns);
		return reply;
	}
	if (check_rst(tcb, seg, now_ns, &reply) == STEP_STOP)
		return reply;
	/* third: check security; finprobe does not model compartments */
	if (check_syn(tcb, seg, now_ns, &reply) == STEP_STOP)
		return reply;
	if (check_ack(tcb, seg, now_ns, &reply) == STEP_STOP)
		return reply;
	return process_text_and_fin(tcb, seg, now_ns, reply);
}

/* The peer's FIN again: it ends just before RCV.NXT, at the FIN we
 * accepted, carries no SYN or RST, and has the ACK bit on, without which
 * the fifth check would drop it before the FIN is looked at. */
static int is_fin_retransmission(const struct fp_tcb *tcb,
				 const struct fp_segment *seg)
{
	uint32_t fin = seg->seq + (uint32_t)seg->payload_len;

	return (seg->flags & (FP_FIN | FP_SYN | FP_RST | FP_ACK)) ==
		       (FP_FIN | FP_ACK) &&
	       fin + 1 == tcb->rcv_nxt;
}

/* RFC 9293 §3.10.7.4 in TIME-WAIT: "The only thing that can arrive in this
 * state is a retransmission of the remote FIN. Acknowledge it, and restart
 * the 2 MSL timeout." That FIN lies before RCV.NXT, so the first check
 * alone would ACK it as old and never reach the timer; it is recognized
 * first (Linux restarts the timer too, and as here only when the ACK bit
 * is on: tcp_timewait_state_process()). Anything else takes the checks of
 * the synchronized states: a RST at RCV.NXT closes, a SYN draws a
 * challenge ACK, an old FIN without ACK draws the first check's ACK and
 * leaves the timer alone. */
/* RFC 1337 §3, F1: a RST in TIME-WAIT is ignored, whatever its sequence
 * number, so that an old duplicate RST cannot end TIME-WAIT early and let
 * an old connection's segments into a new one (hazards H1-H3). */
static enum fp_reply time_wait_input(struct fp_tcb *tcb,
				     const struct fp_segment *seg,
				     uint64_t now_ns)
{
	if (seg->flags & FP_RST)
		return FP_REPLY_NONE;
	if (is_fin_retransmission(tcb, seg)) {
		restart_time_wait(tcb, now_ns);
		return FP_REPLY_ACK;
	}
	return otherwise_input(tcb, seg, now_ns);
}

enum fp_reply fp_tcb_on_segment(struct fp_tcb *tcb,
				const struct fp_segment *seg, uint64_t now_ns)
{
	switch (tcb->state) {
	case FP_STATE_CLOSED:
		return closed_input(seg);
	case FP_STATE_LISTEN:
		return listen_input(tcb, seg);
	case FP_STATE_SYN_SENT:
		return syn_sent_input(tcb, seg, now_ns);
	case FP_STATE_TIME_WAIT:
		return time_wait_input(tcb, seg, now_ns);
	default:
		return otherwise_input(tcb, seg, now_ns);
	}
}

/* ---- timeouts ----------------------------------------------------------- */

/* RFC 9293 §3.10.8: "If the time-wait timeout expires on a connection,
 * delete the TCB, enter the CLOSED state, and return." */
void fp_tcb_tick(struct fp_tcb *tcb, uint64_t now_ns)
{
	if (tcb->state == FP_STATE_TIME_WAIT && now_ns >= tcb->time_wait_until)
		tcb_set_state(tcb, FP_STATE_CLOSED,
			      "2MSL timeout (RFC 9293 §3.10.8)", now_ns);
}
