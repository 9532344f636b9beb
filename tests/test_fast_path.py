"""The C fast paths of a lifecycle (_core.Connection._connect, _expect,
_send_flags, send's flags-only call) keep every behaviour of the Python
path they replace: the failure reports, the argument errors, timeouts and
signals during their waits, the segments they send."""

import signal
import time

import pytest

import finprobe as fp
from labtools import established

SILENT_PORT = 9  # the lab's kernel drops SYNs to it (silent_port)


class Interrupted(Exception):
    """What the test's signal handler raises inside a wait."""


def silent_port(lab):
    """An nftables rule in the lab's kernel namespace dropping what comes to
    SILENT_PORT: a SYN there gets no answer at all (it goes with the lab)."""
    for rule in (["add", "table", "inet", "fastpath"],
                 ["add", "chain", "inet", "fastpath", "input", "{ type filter hook input priority 0 ; }"],
                 ["add", "rule", "inet", "fastpath", "input", "tcp", "dport", str(SILENT_PORT), "drop"]):
        assert lab.popen(["nft"] + rule).wait() == 0, rule


def interrupted_after(seconds, wait):
    """Run wait() with a signal (SIGALRM, whose handler raises) coming after
    seconds: the exception it raised, or None if wait() returned."""
    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            wait()
        except Interrupted as e:
            return e
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return None


# ---- the handshake in one call ------------------------------------------------

def test_connect_sends_syn_with_mss_then_acks_the_syn_ack(lab):
    lab.listen(8080)
    conn = lab.connect(8080)
    syn, syn_ack, ack = (row[0] for row in conn._trace())
    assert (syn.flags, syn.direction, syn.seq) == ("S", "out", conn.iss)
    assert syn.options == (("mss", 1460),)
    assert syn.payload == b"" and syn.window == 65535
    assert (syn_ack.flags, syn_ack.direction) == ("SA", "in")
    assert (ack.flags, ack.direction, ack.seq, ack.ack) == ("A", "out", conn.iss + 1, conn.irs + 1)
    assert conn.state == "ESTABLISHED"


def test_connect_to_a_closed_port_is_refused_naming_the_rst(lab):
    with pytest.raises(fp.ConnectionRefused, match=r"192\.0\.2\.1:8081 refused the connection: "
                                                   r"our SYN was answered by a RST, <Segment"):
        lab.connect(8081)


def test_connect_without_answer_honours_its_timeout(lab):
    silent_port(lab)
    t = time.monotonic()
    with pytest.raises(fp.ExpectError, match=r"no answer to our SYN to 192\.0\.2\.1:9 within 0\.3s"):
        lab.connect(SILENT_PORT, timeout=0.3)
    assert time.monotonic() - t >= 0.3


def test_a_signal_gets_through_the_handshake_wait(lab):
    silent_port(lab)
    t = time.monotonic()
    assert interrupted_after(0.2, lambda: lab.connect(SILENT_PORT, timeout=30)) is not None
    assert time.monotonic() - t < 29  # the wait ended with the signal, not its timeout


def test_connect_with_options_given_still_sends_them(lab):
    lab.listen(8080)
    conn = lab.connect(8080, options=[("mss", 1000), ("wscale", 7)])
    assert conn._trace(0, 1)[0][0].options == (("mss", 1000), ("wscale", 7))
    assert conn.state == "ESTABLISHED"


# ---- expect matched in C --------------------------------------------------------

def test_expect_that_matches_returns_the_segment_and_moves_our_state(lab):
    conn, peer = established(lab)
    conn.fin()
    seg = conn.expect("A", ack=conn.snd_nxt, seq=conn.rcv_nxt, window=None)
    assert isinstance(seg, fp.Segment)
    assert (seg.flags, seg.direction, seg.ack) == ("A", "in", conn.snd_nxt)
    assert conn.state == "FIN_WAIT_2"
    peer.send(b"hello")
    seg = conn.expect("PA", payload=memoryview(bytearray(b"hello")))
    assert seg.payload == b"hello"


def test_expect_of_an_empty_payload_matches_a_bare_ack(lab):
    conn, peer = established(lab)
    conn.fin()
    assert conn.expect("A", payload=b"").payload == b""


def test_expect_with_wrong_flags_shows_the_same_report(lab):
    conn, peer = established(lab)
    conn.fin()
    with pytest.raises(fp.ExpectError) as info:
        conn.expect("FA", ack=conn.snd_nxt)
    got = [row for row in conn._trace() if row[0].direction == "in"][-1][0]
    text = str(info.value)
    assert text.startswith(f"expected a segment with flags=[FA] ack={conn.snd_nxt}, got {got!r}\n"
                           f"  flags: expected [FA], got [A]\n")
    assert "ack:" not in text  # only the fields that differ are listed
    assert conn.state == "FIN_WAIT_2"  # the segment was taken all the same


def test_expect_with_wrong_payload_and_seq_lists_both(lab):
    conn, peer = established(lab)
    peer.send(b"abc")
    with pytest.raises(fp.ExpectError) as info:
        conn.expect("PA", seq=conn.rcv_nxt + 1, payload=b"abd")
    text = str(info.value)
    assert f"  seq: expected {conn.rcv_nxt + 1 - 3}, got {conn.rcv_nxt - 3}" in text
    assert "  payload: expected b'abd', got b'abc'" in text
    assert "flags:" not in text


def test_expect_of_nothing_honours_its_timeout(lab):
    conn, peer = established(lab)
    t = time.monotonic()
    with pytest.raises(fp.ExpectError, match=r"expected a segment with flags=\[A\], got nothing within 0\.25s"):
        conn.expect("A", timeout=0.25)
    assert time.monotonic() - t >= 0.25


def test_a_signal_gets_through_the_expect_wait(lab):
    conn, peer = established(lab)
    t = time.monotonic()
    assert interrupted_after(0.2, lambda: conn.expect("A", timeout=30)) is not None
    assert time.monotonic() - t < 29
    peer.send(b"x")  # the connection still works after the interrupted wait
    assert conn.expect("PA", payload=b"x").payload == b"x"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"flags": 16}, TypeError, 'flags must be a str of "FSRPAUEC" letters, not int'),
    ({"flags": "AA"}, ValueError, r"flags: 'AA' is not a set of the letters F S R P A U E C \(each at most once\)"),
    ({"flags": "a"}, ValueError, "flags: 'a' is not a set"),
    ({"flags": "A\0"}, ValueError, r"flags: 'A\\x00' is not a set"),
    ({"seq": True}, TypeError, "seq must be an int, not bool"),
    ({"ack": 1.0}, TypeError, "ack must be an int, not float"),
    ({"seq": -1}, ValueError, r"seq must be in 0\.\.4294967295, got -1"),
    ({"window": 65536}, ValueError, r"window must be in 0\.\.65535, got 65536"),
    ({"payload": "x"}, TypeError, "payload must be bytes-like, not str"),
    ({"payload": 5}, TypeError, "payload must be bytes-like, not int"),
    ({"payload": [1, 2]}, TypeError, "payload must be bytes-like, not list"),
    ({"timeout": -1}, ValueError, "timeout"),
])
def test_expect_refuses_bad_arguments_before_taking_anything(lab, kwargs, error, message):
    conn, peer = established(lab)
    peer.send(b"x")
    while conn.pending == 0:
        lab._engine.poll(0.01)
    with pytest.raises(error, match=message):
        conn.expect(**kwargs)
    assert conn.pending == 1  # nothing taken


def test_expect_on_a_closed_connection_says_closed(lab):
    conn, peer = established(lab)
    conn.close()
    with pytest.raises(fp.Error, match="the connection is closed"):
        conn.expect("A", timeout=0)


# ---- sends without a template ---------------------------------------------------

def test_flag_shorthands_send_what_send_would(lab):
    conn, peer = established(lab)
    a = conn.ack()
    b = conn.send(flags="A")
    assert (a.flags, a.seq, a.ack, a.window, a.options, a.payload, a.direction) == \
           (b.flags, b.seq, b.ack, b.window, b.options, b.payload, b.direction)
    fin = conn.fin()
    assert (fin.flags, fin.seq, fin.ack) == ("FA", b.seq, conn.rcv_nxt)
    assert conn.state == "FIN_WAIT_1"
    rst = conn.rst()
    assert (rst.flags, rst.seq) == ("R", fin.seq + 1)


def test_send_with_flags_as_an_int_still_goes_through_the_template(lab):
    conn, peer = established(lab)
    assert conn.send(flags=0x10).flags == "A"
    with pytest.raises(ValueError, match="flags: 'AA' is not a set"):
        conn.send(flags="AA")
