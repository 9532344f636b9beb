"""packetdrill gtests/net/tcp/close/close-on-syn-sent.pkt: close() of a
socket in SYN_SENT sends no RST; the SYN-ACK that comes after is answered
by RST."""

import pytest

NO_RST_WAIT = 0.02  # s: a RST of close() would leave at once (packetdrill looks 0.1 s later)


@pytest.mark.parametrize("run", range(10))
def test_close_in_syn_sent_sends_no_rst_and_resets_the_late_syn_ack(connecting, run):
    x, conn = connecting, connecting.conn
    x.sock.close()                                                  # close(3) = 0
    conn.expect_silence(NO_RST_WAIT)                                # no RST after close()
    # < S. 0:0(0) ack 1 win 32000 <mss 1460,nop,wscale 7>
    conn.send(flags="SA", window=32000, options=(("mss", 1460), ("nop",), ("wscale", 7)))
    conn.expect("R", seq=x.kseq(1))                                 # > R 1:1(0)
