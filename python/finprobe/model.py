"""The peer's states as RFC 9293 has them, from the segments alone.

finprobe's own state machine (tcb.c, as ``_core.Tcb``) run from the peer's
side of a connection's trace: each segment the peer sent is its SEND, CLOSE
or ABORT; each of ours arrives at it. Where finprobe can ask the peer (a
Lab's kernel, through sock_diag) this is what its state should be; where it
cannot (a Target), it is the RFC's reading of what was on the wire. The
ladders write these states beside the peer's lane.

The same model judges the peer (``violations``): where a profile
(finprobe.profile) states what a state x event cell answers, each of the
peer's answers in a trace is held to it.
"""

import dataclasses

from . import _core, events
from . import profile as _profile


def peer_states(segments, sides):
    """One RFC 9293 state name a segment, the peer's after it; None for each
    when the connection's opening SYN is not in the trace (a capture started
    mid-connection cannot be placed).

    The model takes the segments in wire order, by their stamps: a trace
    lists a received segment where finprobe picked it up, which may be after
    a segment of ours that left later (two FINs crossing)."""
    order = sorted(range(len(segments)), key=lambda i: _stamp(segments[i]))
    if not segments or "S" not in segments[order[0]].flags:
        return [None] * len(segments)
    peer = _core.Tcb()
    if sides[order[0]] == "out":   # we opened: the peer was listening
        peer.listen(_stamp(segments[order[0]]))
    states = [None] * len(segments)
    for i in order:
        if sides[i] == "in":
            peer.on_send(segments[i])
        else:
            peer.on_segment(segments[i])
        states[i] = peer.state
    return states


def _stamp(seg):
    return seg.ts if seg.ts is not None else 0.0


# ---- violations: what the peer sent that a profile does not allow there ------------

ANSWER_WINDOW = 1.0   # s after our segment within which the peer's next one answers it
                      # (the matrix's ANSWER_WAIT: delayed ACKs are <= 0.5 s)
SYNCHRONIZED = frozenset({"ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING",
                          "LAST_ACK", "TIME_WAIT"})


@dataclasses.dataclass(frozen=True)
class Violation:
    """One peer segment (or one missing answer) the profile does not allow.

    ``index``: the peer's segment's place in the trace, or, where the peer
    sent nothing and the profile wanted an answer, the place of our segment
    that drew nothing; ``segment``: the peer's segment (None where it sent
    none); ``answers``: our segment it answers (None where it answers none);
    ``state``: the model's state of the peer when our segment arrived;
    ``event``: the event our segment is (finprobe.events), or None;
    ``expected``: the answer classes the profile allows; ``observed``: the
    class of what the peer sent; ``section``: what the profile follows;
    ``text``: one sentence, saying it is the model's reading."""

    index: int
    segment: object
    answers: object
    state: str
    event: str | None
    expected: tuple
    observed: str
    section: str
    text: str


def violations(trace, profile="rfc", sysctls=None):
    """The peer's segments in ``trace`` (a Trace: live, or read_pcap's) that
    ``profile`` (a name, a path or a Profile) does not allow where they were
    sent, as [Violation], in trace order.

    RFC 9293's model runs over each connection of the trace from the peer's
    side (as peer_states does). Before each of our segments it has the
    peer's state and its N W S U (RCV.NXT, its last advertised window,
    SND.NXT, SND.UNA); our segment is classified as an event
    (events.classify), and where the profile states an answer for (state,
    event), the peer's first segment after ours, before our next one and
    within ANSWER_WINDOW s, must be of a class it allows; nothing counts as
    "none". Its retransmissions are no answer, nor is its own new text or
    FIN (the application's SEND or CLOSE), except as the carrier of an ACK
    the profile asks for. The model cannot tell an
    orphaned FIN_WAIT_2 from one whose socket is held (FIN_WAIT_2/shut):
    what either row allows is allowed. Also listed: text or a FIN the peer
    sends beyond its own FIN. A connection whose SYN is not in the trace
    cannot be modelled: it has none. ``sysctls`` ({name: value}) are the
    peer's settings where known, for the profile's when_sysctl rules."""
    chosen = _profile.load(profile)
    segments = list(trace)
    sides = trace._sides() if hasattr(trace, "_sides") else [s.direction for s in segments]
    found = []
    for indices in _connections(segments):
        found.extend(_connection_violations(segments, sides, indices, chosen, sysctls))
    return sorted(found, key=lambda v: v.index)


def _connections(segments):
    """The indices of each connection's segments (by 4-tuple), in wire order."""
    flows = {}
    for i, seg in enumerate(segments):
        a, b = (str(seg.src), seg.sport), (str(seg.dst), seg.dport)
        flows.setdefault((a, b) if a <= b else (b, a), []).append(i)
    return [sorted(ix, key=lambda i: _stamp(segments[i])) for ix in flows.values()]


def _connection_violations(segments, sides, order, chosen, sysctls):
    if not order or "S" not in segments[order[0]].flags:
        return []
    peer = _core.Tcb()
    if sides[order[0]] == "out":
        peer.listen(_stamp(segments[order[0]]))
    found, window, fin_end = [], 0, None
    for at, i in enumerate(order):
        seg = segments[i]
        if sides[i] == "in":
            beyond = _beyond_own_fin(seg, fin_end)
            if beyond:
                found.append(beyond(i, peer.state))
            if "S" in seg.flags:
                fin_end = None          # a new incarnation (a SYN-ACK from TIME_WAIT)
            elif "F" in seg.flags and fin_end is None:
                fin_end = (seg.seq + seg.seg_len) % 2**32
            window = seg.window
            peer.on_send(seg)
            continue
        state = peer.state
        numbers = events.Numbers(N=peer.rcv_nxt, W=window, S=peer.snd_nxt, U=peer.snd_una)
        peer.on_segment(seg)
        if state not in SYNCHRONIZED:
            continue
        event = events.classify(seg, numbers)
        rows = ("FIN_WAIT_2", "FIN_WAIT_2/shut") if state == "FIN_WAIT_2" else (state,)
        wanted = [e for e in (chosen.expect(r, event, sysctls) for r in rows) if e is not None] if event else []
        if not wanted:
            continue
        allowed = tuple(dict.fromkeys(a for e in wanted for a in e.answer))
        j = _answer(segments, sides, order, at, numbers.S, allowed)
        answer = segments[j] if j is not None else None
        observed = _profile.answer_class(answer)
        if observed in allowed or (observed in ("DATA", "FIN") and "ACK" in allowed):
            continue                              # an ACK may ride on its data or FIN
        found.append(_violation(j if j is not None else i, answer, seg, state, event, allowed,
                                observed, wanted[0].section, chosen.name))
    return found


def _answer(segments, sides, order, at, s, allowed):
    """The index of the peer's answer to our segment order[at], or None: its
    first segment after ours, before our next, within ANSWER_WINDOW s, that
    is not a retransmission (text or a FIN ending at or before S). A segment
    with new text or a FIN is the peer's own SEND or CLOSE: it answers only
    as the carrier of an ACK the profile asks for, else it is passed over."""
    ours = segments[order[at]]
    for i in order[at + 1:]:
        seg = segments[i]
        if sides[i] != "in":
            return None
        if ours.ts is not None and seg.ts is not None and seg.ts - ours.ts > ANSWER_WINDOW:
            return None
        end = (seg.seq + seg.seg_len) % 2**32
        sends = (seg.payload or "F" in seg.flags) and not seg.flags.count("R") and "S" not in seg.flags
        if sends and events.seq_offset(end, s) <= 0:
            continue                              # sent again by its timer
        if sends and not ("ACK" in allowed and "A" in seg.flags):
            continue                              # its own SEND or CLOSE
        return i
    return None


def _violation(index, answer, ours, state, event, allowed, observed, section, name):
    said = "nothing" if answer is None else f"[{answer.flags}] ({observed})"
    text = (f"the model reads the peer in {state} when our [{ours.flags}] came, a {event}; "
            f"profile {name} expects {' or '.join(allowed)} ({section}); the peer sent {said}")
    return Violation(index, answer, ours, state, event, allowed, observed, section, text)


def _beyond_own_fin(seg, fin_end):
    """A maker of the Violation for text or a FIN the peer sends after its
    own FIN (fin_end: just past it), or None."""
    if fin_end is None or not (seg.payload or "F" in seg.flags) or "R" in seg.flags:
        return None
    end = (seg.seq + seg.seg_len) % 2**32
    if events.seq_offset(end, fin_end) <= 0:
        return None                     # its FIN, or its text before it, sent again
    section = "RFC 9293 §3.10.4 (CLOSE), §3.10.2 (SEND in FIN-WAIT or CLOSING)"

    def make(index, state):
        what = "text" if seg.payload else "a FIN"
        text = (f"the model reads the peer in {state}: it sends {what} beyond its own FIN "
                f"(after its CLOSE it has no more to send; {section})")
        return Violation(index, seg, None, state, None, ("none",), _profile.answer_class(seg),
                         section, text)
    return make
