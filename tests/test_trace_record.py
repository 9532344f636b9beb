"""A trace is a record, not a resource (API.md, Traces): readable, whole,
after its connection and its Lab are closed. The capture is kept only when
asked for, and a failed expect builds only the rows its report shows."""

import pytest

import finprobe as fp
from finprobe import _core
from finprobe.connection import Connection

from labtools import OURS, THEIRS, close_to_time_wait, established



def four_way_close(lab):
    """Our active close against the kernel: (our Connection, what its trace
    said while open, as (flags, seq, ack, direction, state) rows, and its
    transitions)."""
    conn, peer = established(lab)
    conn.write(b"hello")
    conn.expect("A")
    assert peer.recv(10) == b"hello"  # unread data would make its close a RST
    close_to_time_wait(conn, peer)
    return conn, rows(conn.trace), conn.transitions()


def rows(trace):
    return [(s.flags, s.seq, s.ack, s.direction, state) for s, state in zip(trace, trace.states)]


def test_the_trace_is_whole_after_the_connection_is_closed(lab):
    conn, before, transitions = four_way_close(lab)
    conn.close()
    assert conn.closed
    assert rows(conn.trace) == before
    assert conn.transitions() == transitions
    assert [t[2] for t in transitions][-1] == "TIME_WAIT"
    assert "TIME_WAIT" in conn.trace.ladder_text()


def test_the_trace_is_whole_after_the_lab_is_closed():
    with fp.Lab() as lab:
        conn, before, transitions = four_way_close(lab)
    assert conn.closed  # the Lab closed it
    assert rows(conn.trace) == before
    assert conn.transitions() == transitions
    assert conn.trace._repr_svg_().startswith("<svg")


def test_the_trace_outlives_its_engine_object():
    a, b = _core.Engine.pair()
    ours = a.open(*OURS, 1000, 60.0, cls=Connection)
    theirs = b.open(*THEIRS, 5000, 60.0, cls=Connection)
    ours.send(flags="S")
    theirs.recv(0)
    a.close()
    b.close()
    del a, b
    assert [s.flags for s in ours.trace] == ["S"]
    assert [s.flags for s in theirs.trace] == ["S"]


def test_a_lab_keeps_no_capture_unless_asked(lab):
    conn, _, _ = four_way_close(lab)
    with pytest.raises(fp.Error, match=r"capture=True"):
        lab.capture()
    assert lab._engine.capture() is None


def test_a_lab_made_with_capture_keeps_every_segment():
    with fp.Lab(capture=True) as lab:
        conn, before, _ = four_way_close(lab)
        captured = [(s.flags, s.seq, s.ack, s.direction) for s in lab.capture()]
    assert captured == [r[:4] for r in before]


class CountingConnection(Connection):
    """Counts the trace rows the C side builds for it."""

    built = 0

    def _trace(self, *args):
        rows = super()._trace(*args)
        type(self).built += len(rows)
        return rows


def test_a_failed_expect_on_a_long_connection_builds_only_the_rows_it_shows():
    a, b = _core.Engine.pair()
    try:
        listener = b.listen(*THEIRS[:2])
        ours = a.open(*OURS, 1000, 60.0, cls=CountingConnection)
        ours.send(flags="S")
        theirs = listener.accept(1.0, 5000, 60.0, cls=Connection)
        theirs.expect("S")
        theirs.send(flags="SA")
        ours.expect("SA")
        ours.ack()
        theirs.expect("A")
        for i in range(3000):
            theirs.write(b"x")
            ours.expect("PA")
        CountingConnection.built = 0
        with pytest.raises(fp.ExpectError) as failure:
            ours.expect("F", timeout=0)
        report = str(failure.value)
        assert CountingConnection.built <= 2 + 20  # the handshake's first rows, the last 20
        assert f"... {3 + 3000 - 20} earlier segments" in report
        # numbered from the connection's start: the last data byte is the 3000th
        assert "seq=3000 ack=1 len=1" in report.splitlines()[-1]
        assert report.splitlines()[-1].endswith("ESTABLISHED")
        assert len(ours.trace) == 3003  # the whole trace is still there for who asks
    finally:
        a.close()
        b.close()
