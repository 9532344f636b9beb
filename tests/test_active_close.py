"""We close first: FIN_WAIT_1, FIN_WAIT_2 or CLOSING, TIME_WAIT; the kernel's
CLOSE_WAIT and LAST_ACK seen through sock_diag."""

import socket

import finprobe as fp
from labtools import close_to_time_wait, established


def test_we_close_first_through_fin_wait_2_and_time_wait(lab):
    conn, peer = established(lab)
    conn.fin()
    assert conn.state == "FIN_WAIT_1"
    conn.expect("A", ack=conn.snd_nxt)
    assert conn.state == "FIN_WAIT_2"
    assert lab.peer_state(conn) == "CLOSE_WAIT"
    peer.close()
    conn.expect("FA", ack=conn.snd_nxt)
    assert conn.state == "TIME_WAIT"
    assert lab.peer_state(conn) == "LAST_ACK"
    conn.ack()
    lab.wait_peer_state(conn, "CLOSED")
    assert conn.state == "TIME_WAIT"
    assert 59 < conn.time_wait_left <= 60


def test_time_wait_is_configurable(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080, time_wait=0.2)
    peer, _ = srv.accept()
    close_to_time_wait(conn, peer)
    conn.expect_silence(0.3)
    assert conn.state == "CLOSED"
    assert [t[2] for t in conn.transitions()][-2:] == ["TIME_WAIT", "CLOSED"]


def test_last_ack_lost_kernel_retransmits_its_fin_then_closes(lab):
    conn, peer = established(lab)
    conn.fin()
    conn.expect("A")
    peer.close()
    first = conn.expect("FA")
    # Our ACK is "lost": we send nothing. The kernel retransmits from LAST_ACK.
    again = conn.expect("FA", seq=first.seq, timeout=2.0)
    assert again.ts - first.ts > 0.15
    assert lab.peer_state(conn) == "LAST_ACK"
    assert lab.peer_info(conn)["retransmits"] >= 1
    assert conn.state == "TIME_WAIT"          # the retransmitted FIN restarts our 2MSL
    conn.ack()
    lab.wait_peer_state(conn, "CLOSED")


def test_simultaneous_close_goes_through_closing(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)             # the kernel's FIN is on the wire ...
    lab.wait_peer_state(conn, "FIN_WAIT_1")
    conn.fin()                                # ... and ours crosses it: it does not ack the kernel's FIN
    assert conn.state == "FIN_WAIT_1"
    conn.expect("FA")                         # the kernel's FIN, not acking ours
    assert conn.state == "CLOSING"
    conn.expect("A", ack=conn.snd_nxt)        # the kernel acks our FIN from CLOSING
    assert conn.state == "TIME_WAIT"
    assert lab.peer_state(conn) == "CLOSING"
    conn.ack()
    lab.wait_peer_state(conn, "TIME_WAIT")


def test_half_close_kernel_keeps_sending_in_close_wait(lab):
    conn, peer = established(lab)
    conn.fin()
    conn.expect("A")
    assert lab.peer_state(conn) == "CLOSE_WAIT"
    peer.sendall(b"still talking")
    data = conn.expect("PA", payload=b"still talking")
    assert lab.peer_state(conn) == "CLOSE_WAIT"
    assert conn.state == "FIN_WAIT_2"
    assert conn.rcv_nxt == (data.seq + len(data.payload)) % 2**32
    conn.ack()
    peer.close()
    conn.expect("FA", seq=(data.seq + len(data.payload)) % 2**32)
    conn.ack()
    lab.wait_peer_state(conn, "CLOSED")


def test_sequence_numbers_wrap_past_2_32_during_a_close(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080, iss=2**32 - 3)
    peer, _ = srv.accept()
    conn.write(b"wrap")                      # seq 2**32-2 .. 1
    conn.expect("A", ack=2)
    assert peer.recv(10) == b"wrap"
    fin = conn.fin()
    assert fin.seq == 2
    conn.expect("A", ack=3)
    assert conn.state == "FIN_WAIT_2"
    peer.close()
    conn.expect("FA", ack=3)
    conn.ack()
    lab.wait_peer_state(conn, "CLOSED")


def test_ipv6_active_close():
    with fp.Lab(ipv6=True) as lab:
        conn, peer = established(lab)
        assert conn.local[0] == "2001:db8::2"
        conn.fin()
        conn.expect("A")
        assert lab.peer_state(conn) == "CLOSE_WAIT"
        peer.close()
        conn.expect("FA")
        conn.ack()
        lab.wait_peer_state(conn, "CLOSED")
        assert conn.state == "TIME_WAIT"
