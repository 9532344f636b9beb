"""The kernel closes first: its FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT (and the
timer behind it), its FIN retransmissions, the orphan FIN_WAIT_2 timeout."""

import socket
import time

import finprobe as fp
from labtools import established



def test_kernel_closes_first_through_fin_wait_2_and_time_wait(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    assert lab.peer_state(conn) == "FIN_WAIT_1"
    conn.expect("FA")
    assert conn.state == "CLOSE_WAIT"
    conn.ack()
    lab.wait_peer_state(conn, "FIN_WAIT_2")
    conn.fin()
    assert conn.state == "LAST_ACK"
    conn.expect("A", ack=conn.snd_nxt)
    assert conn.state == "CLOSED"
    lab.wait_peer_state(conn, "TIME_WAIT")
    info = lab.peer_info(conn)
    assert info["timer"] == "timewait"
    assert 55 < info["expires"] <= 60


def states_read_until(lab, conn, final, timeout=1.0):
    """Every state of the kernel's socket read, in turn, until ``final``."""
    seen, deadline = [], time.monotonic() + timeout
    while not seen or seen[-1] != final:
        assert time.monotonic() < deadline, f"the kernel's socket did not reach {final}: read {seen}"
        state = lab.peer_state(conn)
        if not seen or seen[-1] != state:
            seen.append(state)
    return seen


def test_fin_with_the_ack_of_the_kernels_fin_skips_fin_wait_2(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    theirs = conn.expect("FA")
    assert lab.peer_state(conn) == "FIN_WAIT_1"
    ours = conn.fin()                          # one segment: acks the kernel's FIN and carries ours
    assert ours.flags == "FA" and ours.ack == (theirs.seq + 1) % 2**32
    conn.expect("A", ack=conn.snd_nxt)
    assert conn.state == "CLOSED"
    # FIN_WAIT_1 before that one segment, TIME_WAIT from the first read after it
    assert states_read_until(lab, conn, "TIME_WAIT") == ["TIME_WAIT"]


def test_an_ack_then_a_fin_take_the_kernel_through_fin_wait_2(lab):
    """The same reads see FIN_WAIT_2 where there is one to see."""
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    conn.ack()
    assert states_read_until(lab, conn, "FIN_WAIT_2")[-1] == "FIN_WAIT_2"
    conn.fin()
    conn.expect("A", ack=conn.snd_nxt)
    assert states_read_until(lab, conn, "TIME_WAIT") == ["TIME_WAIT"]


def test_withheld_ack_kernel_retransmits_fin_with_exponential_backoff(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    fins = [conn.expect("FA")]
    for _ in range(3):
        fins.append(conn.expect("FA", seq=fins[0].seq, timeout=3.0))
    gaps = [b.ts - a.ts for a, b in zip(fins, fins[1:])]
    assert gaps[0] > 0.15                      # Linux's minimum RTO is 200 ms
    assert 1.6 < gaps[1] / gaps[0] < 2.4 and 1.6 < gaps[2] / gaps[1] < 2.4
    assert lab.peer_state(conn) == "FIN_WAIT_1"
    assert lab.peer_info(conn)["retransmits"] >= 3
    conn.ack()
    lab.wait_peer_state(conn, "FIN_WAIT_2")


def test_time_wait_re_acks_a_retransmitted_fin(lab):
    conn, peer = established(lab)
    peer.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    our_fin = conn.fin()
    first = conn.expect("A")
    lab.wait_peer_state(conn, "TIME_WAIT")
    conn.send(flags="FA", seq=our_fin.seq)     # as if the kernel's ACK was lost
    again = conn.expect("A", ack=first.ack)
    assert again.seq == first.seq
    assert lab.peer_state(conn) == "TIME_WAIT"


def test_orphan_fin_wait_2_times_out_with_a_short_tcp_fin_timeout(lab):
    lab.sysctl("net.ipv4.tcp_fin_timeout", 1)
    assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "1"
    conn, peer = established(lab)
    peer.close()                               # orphaned: no process holds it
    conn.expect("FA")
    conn.ack()
    lab.wait_peer_state(conn, "FIN_WAIT_2")
    assert lab.peer_info(conn)["timer"] == "timewait"   # Linux keeps it as a timewait socket
    lab.wait_peer_state(conn, "CLOSED", timeout=3.0)
    conn.write(b"too late")                    # nothing left on the kernel's side: RST
    conn.expect("R")


def test_close_with_unread_data_sends_rst(lab):
    conn, peer = established(lab)
    conn.write(b"never read")
    conn.expect("A")
    time.sleep(0.01)
    peer.close()
    rst = conn.expect("RA")
    assert rst.seq == conn.rcv_nxt
    assert lab.peer_state(conn) == "CLOSED"
    assert conn.state == "CLOSED"


def test_ipv6_passive_close():
    with fp.Lab(ipv6=True) as lab:
        conn, peer = established(lab)
        peer.shutdown(socket.SHUT_WR)
        conn.expect("FA")
        conn.ack()
        lab.wait_peer_state(conn, "FIN_WAIT_2")
        conn.fin()
        conn.expect("A")
        lab.wait_peer_state(conn, "TIME_WAIT")
