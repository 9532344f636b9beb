"""packetdrill gtests/net/tcp/shutdown/shutdown-rd-close.pkt: after
shutdown(SHUT_RD), read() returns 0 while writing and sending still work;
close() sends FIN, and our FIN is ACKed (FIN_WAIT_2, TIME_WAIT)."""

import socket

import pytest


@pytest.mark.parametrize("run", range(10))
def test_shutdown_rd_then_close_still_sends_and_closes_cleanly(lab, accepted, run):
    x, conn = accepted, accepted.conn
    x.sock.shutdown(socket.SHUT_RD)                                 # shutdown(4, SHUT_RD) = 0
    assert x.sock.recv(1000) == b""                                 # read(4, ..., 1000) = 0
    assert x.sock.send(b"w" * 1000) == 1000                         # write(4, ..., 1000) = 1000
    conn.expect("PA", seq=x.kseq(1), ack=x.oseq(1), payload=b"w" * 1000)  # > P. 1:1001(1000) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 1001 win 257
    x.sock.close()                                                  # close(4) = 0
    conn.expect("FA", seq=x.kseq(1001), ack=x.oseq(1))              # > F. 1001:1001(0) ack 1
    conn.send(flags="A", window=257)                                # < . 1:1(0) ack 1002 win 257
    conn.send(flags="FA", window=257)                               # < F. 1:1(0) ack 1002 win 257
    conn.expect("A", seq=x.kseq(1002), ack=x.oseq(2))               # > . 1002:1002(0) ack 2
    lab.wait_peer_state(conn, "TIME_WAIT")
