"""packetdrill gtests/net/tcp/shutdown/shutdown-rd-wr-close.pkt:
shutdown(SHUT_RD), then data still received, ACKed and read; a write sent;
shutdown(SHUT_WR) sends FIN and writing fails with EPIPE; after close(),
our FIN is ACKed."""

import socket

import pytest


@pytest.mark.parametrize("run", range(10))
def test_shutdown_rd_then_wr_then_close_receives_sends_and_acks_our_fin(accepted, run):
    x, conn = accepted, accepted.conn
    x.sock.shutdown(socket.SHUT_RD)                                 # shutdown(4, SHUT_RD) = 0
    assert x.sock.recv(1000) == b""                                 # read(4, ..., 1000) = 0
    conn.send(b"r" * 1000, flags="A", window=257)                   # < . 1:1001(1000) ack 1 win 257
    conn.expect("A", seq=x.kseq(1), ack=x.oseq(1001))               # > . 1:1(0) ack 1001
    assert x.sock.recv(1000) == b"r" * 1000                         # read(4, ..., 1000) = 1000
    assert x.sock.send(b"w" * 1000) == 1000                         # write(4, ..., 1000) = 1000
    conn.expect("PA", seq=x.kseq(1), ack=x.oseq(1001), payload=b"w" * 1000)  # > P. 1:1001(1000) ack 1001
    conn.send(flags="A", window=257)                                # < . 1001:1001(0) ack 1001 win 257
    x.sock.shutdown(socket.SHUT_WR)                                 # shutdown(4, SHUT_WR) = 0
    conn.expect("FA", seq=x.kseq(1001), ack=x.oseq(1001))           # > F. 1001:1001(0) ack 1001
    conn.send(flags="A", window=257)                                # < . 1001:1001(0) ack 1002 win 257
    with pytest.raises(BrokenPipeError):                            # write(4, ..., 1000) = -1 EPIPE
        x.sock.send(b"w" * 1000)
    x.sock.close()                                                  # close(4) = 0
    conn.send(flags="FA", window=257)                               # < F. 1001:1001(0) ack 1002 win 257
    conn.expect("A", seq=x.kseq(1002), ack=x.oseq(1002))            # > . 1002:1002(0) ack 1002
