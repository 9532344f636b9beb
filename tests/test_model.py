"""finprobe's RFC 9293 state machine as a model of the peer, checked against
what the kernel itself says of its socket after every step."""

import socket

import pytest

import finprobe as fp
from finprobe import _core, model
from labtools import established

OURS, PEERS = ("192.0.2.2", "192.0.2.1", 40000, 8080), ("192.0.2.1", "192.0.2.2", 8080, 40000)


def agree(lab, conn):
    """The model's state for the peer after the last segment is the kernel's."""
    modelled = conn.trace.peer_states[-1]
    lab.wait_peer_state(conn, modelled)
    return modelled


def test_model_follows_the_kernel_through_our_close(lab):
    conn, peer = established(lab)
    assert agree(lab, conn) == "ESTABLISHED"
    conn.fin()
    assert agree(lab, conn) == "CLOSE_WAIT"
    conn.expect("A")
    peer.close()
    conn.expect("FA")
    assert agree(lab, conn) == "LAST_ACK"
    conn.ack()
    assert agree(lab, conn) == "CLOSED"


def test_model_follows_the_kernel_through_its_close(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    assert agree(lab, conn) == "FIN_WAIT_1"
    conn.ack()
    assert agree(lab, conn) == "FIN_WAIT_2"
    conn.fin()
    assert agree(lab, conn) == "TIME_WAIT"


def test_model_follows_the_kernel_through_closing(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    lab.wait_peer_state(conn, "FIN_WAIT_1")
    conn.fin()
    conn.expect("FA")
    assert agree(lab, conn) == "CLOSING"
    conn.expect("A")
    conn.ack()
    assert agree(lab, conn) == "TIME_WAIT"


def test_model_follows_the_kernel_when_our_fin_comes_again_with_the_ack(lab):
    # Crossing FINs; then our FIN once more, now with the ACK of the
    # kernel's: wholly old, yet Linux takes its ACK and leaves CLOSING.
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    lab.wait_peer_state(conn, "FIN_WAIT_1")
    our_fin = conn.fin()
    conn.expect("FA")
    assert agree(lab, conn) == "CLOSING"
    conn.expect("A")
    conn.send(flags="FA", seq=our_fin.seq)
    assert agree(lab, conn) == "TIME_WAIT"


def test_model_takes_the_ack_on_a_fin_sent_again_out_of_closing():
    # The peer (the model) and we close at once; we send our FIN again with
    # the ACK of the peer's, as libslirp does: old, but its ACK counts.
    segs = [fp.Segment(*OURS, seq=100, flags="S"),
            fp.Segment(*PEERS, seq=500, ack=101, flags="SA"),
            fp.Segment(*OURS, seq=101, ack=501, flags="A"),
            fp.Segment(*PEERS, seq=501, ack=101, flags="FA"),
            fp.Segment(*OURS, seq=101, ack=501, flags="FA"),
            fp.Segment(*PEERS, seq=502, ack=102, flags="A"),
            fp.Segment(*OURS, seq=101, ack=502, flags="FA")]
    sides = ["out", "in", "out", "in", "out", "in", "out"]
    states = model.peer_states(segs, sides)
    assert states[3:] == ["FIN_WAIT_1", "CLOSING", "CLOSING", "TIME_WAIT"]


@pytest.mark.parametrize("offset, after", [(0, "CLOSED"), (10, "ESTABLISHED"), (10**8, "ESTABLISHED")])
def test_model_treats_rsts_as_the_kernel_does(lab, offset, after):
    conn, _ = established(lab)
    conn.send(flags="R", seq=(conn.snd_nxt + offset) % 2**32)
    assert agree(lab, conn) == after


def test_model_of_a_connection_the_kernel_opened(lab):
    lst = lab.listen_raw(7000)
    client = lab.socket()
    client.setblocking(False)
    client.connect_ex((lab.local_addr, 7000))
    conn = lst.accept()
    assert conn.trace.peer_states[:3] == ["SYN_SENT", "ESTABLISHED", "ESTABLISHED"]
    assert agree(lab, conn) == "ESTABLISHED"


def test_trace_without_its_syn_has_no_modelled_states(lab):
    conn, _ = established(lab)
    assert conn.trace[1:].peer_states[0] == "SYN_RECEIVED"   # sliced from a whole trace: kept
    mid = fp.Trace(list(conn.trace)[2:])
    assert mid.peer_states == [None]


def test_tcb_arguments_are_checked():
    with pytest.raises(ValueError, match="iss"):
        _core.Tcb(iss=-1)
    with pytest.raises(TypeError, match="Segment"):
        _core.Tcb().on_segment(b"not a segment")
    tcb = _core.Tcb(iss=100)
    tcb.on_send(fp.Segment("192.0.2.2", "192.0.2.1", 1, 2, seq=100, flags="S"))
    assert tcb.state == "SYN_SENT" and tcb.snd_nxt == 101
    assert tcb.on_segment(fp.Segment("192.0.2.1", "192.0.2.2", 2, 1, seq=7, ack=101, flags="SA")) == "ACK"
    assert tcb.state == "ESTABLISHED" and tcb.transitions[-1][1:3] == ("SYN_SENT", "ESTABLISHED")


BAD_SECONDS = [(-1.0, ValueError), (float("nan"), ValueError), (float("inf"), OverflowError),
               (1e11, OverflowError)]  # 1e11 s is 1e20 ns: past 2**64


@pytest.mark.parametrize("value, error", BAD_SECONDS)
def test_tcb_time_wait_out_of_range_is_refused_by_name(value, error):
    with pytest.raises(error, match="time_wait"):
        _core.Tcb(time_wait=value)


@pytest.mark.parametrize("value, error", BAD_SECONDS)
def test_tcb_times_out_of_range_are_refused_by_name(value, error):
    tcb = _core.Tcb(iss=100)
    syn = fp.Segment(*OURS, seq=100, flags="S")
    calls = [lambda: tcb.tick(value), lambda: tcb.listen(value),
             lambda: tcb.on_send(syn, value), lambda: tcb.on_segment(syn, value)]
    for call in calls:
        with pytest.raises(error, match="ts"):
            call()
    assert tcb.state == "CLOSED" and tcb.transitions == []


def test_tcb_time_wait_past_the_end_of_the_clock_waits_to_the_end():
    # 1e10 s of 2MSL from 1e10 s on: the deadline is past 2**64 ns, so
    # TIME_WAIT lasts to the clock's end instead of wrapping to an early one.
    tcb = _core.Tcb(iss=100, time_wait=1e10)
    t = 1e10
    tcb.on_send(fp.Segment(*OURS, seq=100, flags="S"), t)
    tcb.on_segment(fp.Segment(*PEERS, seq=500, ack=101, flags="SA"), t)
    tcb.on_send(fp.Segment(*OURS, seq=101, ack=501, flags="FA"), t)
    tcb.on_segment(fp.Segment(*PEERS, seq=501, ack=102, flags="FA"), t)
    assert tcb.state == "TIME_WAIT"
    tcb.tick(t + 10)
    assert tcb.state == "TIME_WAIT"
