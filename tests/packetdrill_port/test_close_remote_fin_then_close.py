"""packetdrill gtests/net/tcp/close/close-remote-fin-then-close.pkt: the
remote side sends FIN, then the local process closes (CLOSE_WAIT, LAST_ACK);
once our ACK ends it, any further segment is answered by RST."""

import pytest


@pytest.mark.parametrize("run", range(10))
def test_remote_fin_then_close_goes_through_last_ack_and_resets_after(lab, accepted, run):
    x, conn = accepted, accepted.conn
    conn.send(flags="FA", window=257)                               # < F. 1:1(0) ack 1 win 257
    conn.expect("A", seq=x.kseq(1), ack=x.oseq(2))                  # > . 1:1(0) ack 2
    assert lab.peer_state(conn) == "CLOSE_WAIT"
    assert x.sock.recv(1000) == b""                                 # read(4, ..., 1000) = 0
    x.sock.close()                                                  # close(4) = 0
    conn.expect("FA", seq=x.kseq(1), ack=x.oseq(2))                 # > F. 1:1(0) ack 2
    assert lab.peer_state(conn) == "LAST_ACK"
    conn.send(flags="A", window=257)                                # < . 2:2(0) ack 2 win 257
    lab.wait_peer_state(conn, "CLOSED")
    conn.send(flags="A", seq=x.oseq(2), ack=x.kseq(2), window=257)  # < . 2:2(0) ack 2 win 257
    conn.expect("R", seq=x.kseq(2))                                 # > R 2:2(0)
