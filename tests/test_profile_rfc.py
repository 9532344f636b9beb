"""The rfc profile proved on finprobe's own state machine (tcb.c): for every
cell of the matrix, two finprobe endpoints over the in-memory link, one
playing the peer, driven into the cell's state by the segments a peer would
send; the other sends the event; the peer takes it, and its state after and
what RFC 9293 says it answers (Connection._reply) must be what the rfc
profile expects.
"""

import types

import pytest

from finprobe import events, profile
from finprobe.connection import Connection
from labtools import OURS, THEIRS

PEER_DATA = 1000                  # bytes the peer sends first, which we ACK (as the matrix's kernel peer)
REPLY_CLASS = {"": "none", "ACK": "ACK", "CHALLENGE_ACK": "ACK", "RST": "RST"}


CELLS = [pytest.param(state, event, id=f"{state}-{event}") for state, event in events.cells()]


@pytest.fixture
def pair(engines):
    """(ours, the peer): an ESTABLISHED connection between two finprobe
    endpoints, the peer (THEIRS) having passively opened, then sent
    PEER_DATA bytes we ACKed."""
    a, b = engines
    listener = b.listen(THEIRS[0], THEIRS[1])
    with a.open(*OURS, 1000, 60.0, cls=Connection) as ours:
        ours.send(flags="S", options=(("mss", 1460),))
        with listener.accept(1.0, 5000, 60.0, cls=Connection) as peer:
            peer.expect("S")
            peer.send(flags="SA", options=(("mss", 1460),))
            ours.expect("SA")
            ours.ack()
            peer.expect("A")
            peer.write(b"p" * PEER_DATA)
            ours.expect("PA")
            ours.ack()
            peer.expect("A")
            assert peer.state == "ESTABLISHED" and peer.snd_una == peer.snd_nxt
            yield ours, peer


def _peer_closes(ours, peer):
    """The peer's FIN, taken by us, not ACKed."""
    peer.fin()
    ours.expect("FA")


def _we_close(ours, peer):
    """Our FIN, which the peer takes and ACKs."""
    ours.fin()
    peer.expect("FA")
    peer.ack()
    ours.expect("A")


def drive(state, ours, peer):
    """The segments a peer in `state` has exchanged, as RFC 9293's close goes."""
    if state == "FIN_WAIT_1":
        _peer_closes(ours, peer)
    elif state in ("FIN_WAIT_2", "FIN_WAIT_2/shut"):   # the same state to the RFC
        _peer_closes(ours, peer)
        ours.ack()
        peer.expect("A")
    elif state == "CLOSE_WAIT":
        _we_close(ours, peer)
    elif state == "CLOSING":
        _peer_closes(ours, peer)
        ours.send(flags="FA", ack=(ours.rcv_nxt - 1) % 2**32)   # crossing: its FIN not ACKed
        peer.expect("FA")
        peer.ack()
        ours.expect("A")
    elif state == "LAST_ACK":
        _we_close(ours, peer)
        _peer_closes(ours, peer)
    elif state == "TIME_WAIT":
        _peer_closes(ours, peer)
        ours.fin()                                       # ACKs its FIN, carries ours
        peer.expect("FA")
        peer.ack()
        ours.expect("A")
    assert peer.state == profile.plain_state(state), f"the peer was driven into {peer.state}, not {state}"


@pytest.mark.parametrize("state, event", CELLS)
def test_finprobe_answers_each_cell_as_the_rfc_profile_says(pair, state, event):
    ours, peer = pair
    drive(state, ours, peer)
    numbers = events.Numbers(N=peer.rcv_nxt, W=peer.rcv_wnd, S=peer.snd_nxt, U=peer.snd_una)
    fields, payload = events.BY_NAME[event].segment(numbers)
    sent = ours.send(payload, **fields)
    # classify() names it back, except an ack@S with nothing outstanding,
    # which is every ordinary ACK of a trace and deliberately no event
    plain_ack = event == "ack@S" and numbers.S == numbers.U
    assert events.classify(sent, numbers) == (None if plain_ack else event)
    taken = peer.recv(1.0)
    assert taken is not None and taken.flags == sent.flags and taken.seq == sent.seq
    answer = REPLY_CLASS[peer._reply]
    cell = types.SimpleNamespace(
        state=state, event=event,
        answer=None if answer == "none" else types.SimpleNamespace(flags=_FLAGS[answer], payload=b""),
        state_after=peer.state.value, alive=peer.state != "CLOSED")
    verdict, mismatches = profile.load("rfc").judge(cell)
    assert verdict == "pass", (f"{state} x {event}: tcb.c answers {peer._reply or 'nothing'} and goes to "
                               f"{peer.state}:\n  " + "\n  ".join(mismatches))


_FLAGS = {"ACK": "A", "RST": "R"}
