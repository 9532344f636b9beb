"""packetdrill gtests/net/tcp/close/close-local-close-then-remote-fin.pkt:
the local process closes first, so it sends a FIN and takes our ACK; then it
takes our FIN and ACKs it (FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT)."""

import pytest


@pytest.mark.parametrize("run", range(10))
def test_local_close_then_remote_fin_ends_in_time_wait(lab, connecting, run):
    x, conn = connecting, connecting.conn
    # < S. 0:0(0) ack 1 win 32768 <mss 1000,nop,wscale 6,nop,nop,sackOK>
    conn.send(flags="SA", window=32768, options=(("mss", 1000), ("nop",), ("wscale", 6), ("nop",), ("nop",),
                                                 ("sackok",)))
    conn.expect("A", seq=x.kseq(1), ack=x.oseq(1))                  # > . 1:1(0) ack 1
    x.sock.setblocking(True)
    assert x.sock.send(b"d" * 1000) == 1000                         # write(3, ..., 1000) = 1000
    conn.expect("PA", seq=x.kseq(1), ack=x.oseq(1), payload=b"d" * 1000)  # > P. 1:1001(1000) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 1001 win 257
    x.sock.close()                                                  # close(3) = 0
    conn.expect("FA", seq=x.kseq(1001), ack=x.oseq(1))              # > F. 1001:1001(0) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 1002 win 257
    conn.send(flags="FA", window=257)                               # < F. 1:1(0) ack 1002 win 257
    conn.expect("A", seq=x.kseq(1002), ack=x.oseq(2))               # > . 1002:1002(0) ack 2
    lab.wait_peer_state(conn, "TIME_WAIT")
