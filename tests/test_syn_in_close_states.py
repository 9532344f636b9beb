"""SYNs that hit a 4-tuple the kernel is still closing.

What Linux does (measured here, and what these tests hold it to):
- TIME_WAIT, SYN with a sequence number above the old connection's: the
  old connection is recycled and the SYN answered by a SYN-ACK (RFC 1122
  §4.2.2.13, RFC 6191), the socket becomes a new request (SYN_RECEIVED).
- TIME_WAIT, SYN with a lower sequence number: a duplicate ACK of the old
  connection; the socket stays in TIME_WAIT.
- LAST_ACK: a challenge ACK (RFC 5961 §4.2); the socket stays in LAST_ACK
  and goes on retransmitting its FIN.
"""

import socket


def kernel_in_time_wait(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080)
    peer, _ = srv.accept()
    peer.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    conn.fin()
    conn.expect("A")
    lab.wait_peer_state(conn, "TIME_WAIT")
    return conn, srv


def test_syn_with_higher_seq_into_time_wait_opens_a_new_connection(lab):
    old, srv = kernel_in_time_wait(lab)
    sport, iss = old.local[1], (old.snd_nxt + 100000) % 2**32
    old.close()
    new = lab.open(8080, sport=sport, iss=iss)
    new.send(flags="S", options=[("mss", 1460)])
    new.expect("SA", ack=new.snd_nxt)
    assert lab.peer_state(new) == "SYN_RECEIVED"
    new.ack()
    lab.wait_peer_state(new, "ESTABLISHED")


def test_syn_with_lower_seq_into_time_wait_gets_an_ack_of_the_old_connection(lab):
    old, _ = kernel_in_time_wait(lab)
    old_rcv, old_snd = old.rcv_nxt, old.snd_nxt
    sport, iss = old.local[1], (old.iss - 100000) % 2**32
    old.close()
    new = lab.open(8080, sport=sport, iss=iss)
    new.send(flags="S", options=[("mss", 1460)])
    new.expect("A", seq=old_rcv, ack=old_snd)
    assert lab.peer_state(new) == "TIME_WAIT"


def test_syn_into_last_ack_gets_a_challenge_ack(lab):
    srv = lab.listen(8080)
    old = lab.connect(8080)
    peer, _ = srv.accept()
    old.fin()
    old.expect("A")
    peer.close()
    fin = old.expect("FA")
    assert lab.peer_state(old) == "LAST_ACK"
    sport = old.local[1]
    old.close()
    new = lab.open(8080, sport=sport, iss=(fin.ack + 100000) % 2**32)
    new.send(flags="S", options=[("mss", 1460)])
    new.expect("A", seq=(fin.seq + 1) % 2**32, ack=fin.ack)
    assert lab.peer_state(new) == "LAST_ACK"
    new.expect("FA", seq=fin.seq, timeout=2.0)  # still retransmitting its FIN
