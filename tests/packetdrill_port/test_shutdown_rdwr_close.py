"""packetdrill gtests/net/tcp/shutdown/shutdown-rdwr-close.pkt:
shutdown(SHUT_RDWR) sends FIN; read() returns 0, write() fails with EPIPE;
after close(), our FIN is ACKed."""

import socket

import pytest


@pytest.mark.parametrize("run", range(10))
def test_shutdown_rdwr_then_close_acks_our_fin(accepted, run):
    x, conn = accepted, accepted.conn
    x.sock.shutdown(socket.SHUT_RDWR)                               # shutdown(4, SHUT_RDWR) = 0
    conn.expect("FA", seq=x.kseq(1), ack=x.oseq(1))                 # > F. 1:1(0) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 2 win 257
    assert x.sock.recv(1000) == b""                                 # read(4, ..., 1000) = 0
    with pytest.raises(BrokenPipeError):                            # write(4, ..., 1000) = -1 EPIPE
        x.sock.send(b"w" * 1000)
    x.sock.close()                                                  # close(4) = 0
    conn.send(flags="FA", window=257)                               # < F. 1:1(0) ack 2 win 257
    conn.expect("A", seq=x.kseq(2), ack=x.oseq(2))                  # > . 2:2(0) ack 2
