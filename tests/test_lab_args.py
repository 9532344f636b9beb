"""A Lab's arguments: wrong ones raise an exception naming them, and what
is accepted is done as asked."""

import threading

import pytest

import finprobe as fp

from labtools import established

@pytest.mark.parametrize("time_wait", [1e11, threading.TIMEOUT_MAX * 2])
def test_a_time_wait_beyond_the_clock_is_refused(time_wait):
    with pytest.raises(OverflowError, match="time_wait"):
        fp.Lab(time_wait=time_wait)
    with fp.Lab() as lab:
        with pytest.raises(OverflowError, match="time_wait"):
            lab.open(8080, time_wait=time_wait)


@pytest.mark.parametrize("time_wait", [float("nan"), float("inf"), -1.0])
def test_a_time_wait_that_is_no_duration_is_refused(time_wait):
    with pytest.raises(ValueError, match="time_wait"):
        fp.Lab(time_wait=time_wait)


def test_the_longest_time_wait_is_kept_as_asked():
    with fp.Lab(time_wait=threading.TIMEOUT_MAX) as lab:
        conn, peer = established(lab)
        conn.fin()
        conn.expect("A")
        peer.close()
        conn.expect("FA")
        conn.ack()
        assert conn.state == "TIME_WAIT"
        assert conn.time_wait_left > threading.TIMEOUT_MAX - 60
        conn.expect_silence(0.05)
        assert conn.state == "TIME_WAIT"
