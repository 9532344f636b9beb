"""RSTs into an established connection, as RFC 9293 §3.10.7.4 and RFC 5961 §3
say Linux must treat them: exact -> reset, in window -> challenge ACK,
outside the window -> ignored."""

import finprobe as fp
from labtools import established



def test_rst_at_the_expected_sequence_number_resets(lab):
    conn, _ = established(lab)
    conn.rst()
    assert conn.state == "CLOSED"
    conn.expect_silence(0.2)
    assert lab.peer_state(conn) == "CLOSED"


def test_inexact_rst_in_window_gets_a_challenge_ack(lab):
    conn, _ = established(lab)
    conn.send(flags="R", seq=(conn.snd_nxt + 10) % 2**32)
    conn.expect("A", seq=conn.rcv_nxt, ack=conn.snd_nxt)   # RFC 5961 §3.2
    assert lab.peer_state(conn) == "ESTABLISHED"


def test_out_of_window_rst_is_ignored(lab):
    conn, _ = established(lab)
    conn.send(flags="R", seq=(conn.snd_nxt + 10**8) % 2**32)
    conn.expect_silence(0.3)
    assert lab.peer_state(conn) == "ESTABLISHED"


def test_rst_in_fin_wait_2_of_the_kernel_resets_it(lab):
    conn, peer = established(lab)
    peer.shutdown(1)
    conn.expect("FA")
    conn.ack()
    lab.wait_peer_state(conn, "FIN_WAIT_2")
    conn.rst()
    lab.wait_peer_state(conn, "CLOSED")


def test_segments_still_reach_a_connection_after_our_rst(lab):
    conn, _ = established(lab)
    conn.rst()
    assert conn.state == "CLOSED"
    data = conn.send(b"after reset", flags="PA", seq=conn.snd_nxt)
    rst = conn.expect("R")                     # the kernel has no socket any more
    assert rst.seq == data.ack                 # RFC 9293 §3.10.7.1: <SEQ=SEG.ACK><CTL=RST>
    assert isinstance(rst, fp.Segment) and conn.state == "CLOSED"
