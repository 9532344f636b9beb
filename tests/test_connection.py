"""The Connection API as a test uses it: reprs, errors that name the
problem, waits, and what a closed connection or lab says."""

import time

import pytest

import finprobe as fp
from labtools import established


def test_connection_repr_and_state(lab):
    conn, _ = established(lab)
    assert repr(conn) == f"<Connection 192.0.2.2:{conn.local[1]} > 192.0.2.1:8080 ESTABLISHED>"
    assert conn.state is fp.State.ESTABLISHED and conn.state == "ESTABLISHED"
    assert conn.local == ("192.0.2.2", conn.local[1]) and conn.remote == ("192.0.2.1", 8080)


def test_expect_mismatch_shows_expected_got_and_the_ladder(lab):
    conn, peer = established(lab)
    conn.fin()
    with pytest.raises(fp.ExpectError) as failure:
        conn.expect("FA", ack=conn.snd_nxt)
    text = str(failure.value)
    assert "expected a segment with flags=[FA]" in text
    assert "flags: expected [FA], got [A]" in text
    assert "us ---[FA] seq=1 ack=1 len=0--> peer" in text
    assert "us <--[A] seq=1 ack=2 len=0--- peer" in text
    assert isinstance(failure.value, AssertionError)


def test_expect_timeout_says_nothing_came(lab):
    conn, _ = established(lab)
    start = time.monotonic()
    with pytest.raises(fp.ExpectError, match=r"got nothing within 0.2s"):
        conn.expect("A", timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 1.0


def test_recv_zero_returns_what_has_already_arrived(lab):
    conn, _ = established(lab)
    conn.fin()
    time.sleep(0.05)
    seg = conn.recv(0)
    assert seg is not None and seg.flags == "A" and seg.direction == "in"
    assert conn.recv(0) is None


def test_received_segments_move_our_state_only_when_taken(lab):
    conn, peer = established(lab)
    peer.close()
    lab.wait_peer_state(conn, "FIN_WAIT_1")
    time.sleep(0.02)
    assert conn.state == "ESTABLISHED"
    conn.expect("FA")
    assert conn.state == "CLOSE_WAIT"


@pytest.mark.parametrize("call, error, words", [
    (lambda c: c.send(flags="X"), ValueError, "flags"),
    (lambda c: c.send(seq="1"), TypeError, "seq"),
    (lambda c: c.send(window=70000), ValueError, "window"),
    (lambda c: c.send(options=[("mss",)]), ValueError, "mss"),
    (lambda c: c.expect(flags="Z"), ValueError, "flags"),
    (lambda c: c.expect(timeout=-1), ValueError, "timeout"),
    (lambda c: c.recv(timeout="soon"), TypeError, "timeout"),
])
def test_bad_arguments_name_themselves(lab, call, error, words):
    conn, _ = established(lab)
    with pytest.raises(error, match=words):
        call(conn)


def test_a_closed_connection_says_so(lab):
    with established(lab)[0] as conn:
        pass
    assert repr(conn) == "<Connection closed>"
    with pytest.raises(fp.Error, match="closed"):
        conn.fin()
    conn.close()  # twice is fine


def test_connections_of_a_closed_lab_are_closed():
    with fp.Lab() as lab:
        conn, _ = established(lab)
    with pytest.raises(fp.Error, match="closed"):
        conn.state
    with pytest.raises(fp.Error, match="closed"):
        lab.connect(8080)


def test_two_connections_cannot_share_a_four_tuple(lab):
    conn, _ = established(lab)
    with pytest.raises(ValueError, match="already open"):
        lab.open(8080, sport=conn.local[1])


def test_a_segment_the_link_refuses_raises_and_leaves_our_state(lab):
    conn, _ = established(lab)
    before = conn.snd_nxt
    with pytest.raises(OSError, match="Message too long, 3000 bytes"):
        conn.write(b"x" * 3000)                # over the lab link's 1500-byte MTU
    assert conn.snd_nxt == before and [s.flags for s in conn.trace] == ["S", "SA", "A"]
