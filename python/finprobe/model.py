"""The peer's states as RFC 9293 has them, from the segments alone.

finprobe's own state machine (tcb.c, as ``_core.Tcb``) run from the peer's
side of a connection's trace: each segment the peer sent is its SEND, CLOSE
or ABORT; each of ours arrives at it. Where finprobe can ask the peer (a
Lab's kernel, through sock_diag) this is what its state should be; where it
cannot (a Target), it is the RFC's reading of what was on the wire. The
ladders write these states beside the peer's lane.
"""

from . import _core


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
