"""packetdrill gtests/net/tcp/shutdown/shutdown-wr-close.pkt: shutdown(SHUT_WR)
sends FIN; writing fails with EPIPE, receiving and reading still work
(FIN_WAIT_2); after close(), our FIN is ACKed."""

import socket

import pytest


@pytest.mark.parametrize("run", range(10))
def test_shutdown_wr_then_close_still_receives_and_acks_our_fin(accepted, run):
    x, conn = accepted, accepted.conn
    x.sock.shutdown(socket.SHUT_WR)                                 # shutdown(4, SHUT_WR) = 0
    conn.expect("FA", seq=x.kseq(1), ack=x.oseq(1))                 # > F. 1:1(0) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 2 win 257
    with pytest.raises(BrokenPipeError):                            # write(4, ..., 1000) = -1 EPIPE
        x.sock.send(b"w" * 1000)
    conn.send(b"r" * 1000, flags="A", window=257)                   # < . 1:1001(1000) ack 2 win 257
    conn.expect("A", seq=x.kseq(2), ack=x.oseq(1001))               # > . 2:2(0) ack 1001
    assert x.sock.recv(1000) == b"r" * 1000                         # read(4, ..., 1000) = 1000
    x.sock.close()                                                  # close(4) = 0
    conn.send(flags="FA", window=257)                               # < F. 1001:1001(0) ack 2 win 257
    conn.expect("A", seq=x.kseq(2), ack=x.oseq(1002))               # > . 2:2(0) ack 1002

