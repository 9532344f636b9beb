"""A Lab's arguments: wrong ones raise an exception naming them, and what
is accepted is done as asked."""

import threading

import pytest

import finprobe as fp

from labtools import close_to_time_wait, established

FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"


@pytest.mark.parametrize("ipv6", ["no", 1, None])
def test_ipv6_must_be_a_bool(ipv6):
    with pytest.raises(TypeError, match="ipv6 must be a bool"):
        fp.Lab(ipv6=ipv6)


def test_a_connection_of_another_lab_is_refused():
    with fp.Lab() as lab_a, fp.Lab() as lab_b:
        lab_a.listen(8080)
        lab_b.listen(8080)  # the same 4-tuple exists in lab_b's kernel...
        conn_a = lab_a.connect(8080)
        lab_b.connect(8080, sport=conn_a.local[1])  # ...in another state once conn_a closes
        conn_a.fin()
        conn_a.expect("A")
        for ask in (lab_b.peer_state, lab_b.peer_info, lambda conn: lab_b.wait_peer_state(conn, "CLOSE_WAIT")):
            with pytest.raises(ValueError, match="not this Lab's connection"):
                ask(conn_a)
        assert lab_a.peer_state(conn_a) == "CLOSE_WAIT"


def test_sysctl_says_the_kernel_refused_a_value(lab):
    with pytest.raises(ValueError, match="kernel refused the value 'abc'"):
        lab.sysctl(FIN_TIMEOUT, "abc")
    assert lab.sysctl(FIN_TIMEOUT) == "60"
    with pytest.raises(ValueError, match="not a net"):
        lab.sysctl("kernel.hostname", "x")
    with pytest.raises(ValueError, match="group of settings"):
        lab.sysctl("net.ipv4")


def test_sysctl_refuses_a_nul_character_instead_of_cutting_there(lab):
    with pytest.raises(ValueError, match="value '9\\\\x0012' holds a NUL"):
        lab.sysctl(FIN_TIMEOUT, "9\x0012")
    with pytest.raises(ValueError, match="name .* holds a NUL"):
        lab.sysctl(FIN_TIMEOUT + "\x00.x", "9")
    assert lab.sysctl(FIN_TIMEOUT) == "60"
    lab.sysctl(FIN_TIMEOUT, 9)
    assert lab.sysctl(FIN_TIMEOUT) == "9"


@pytest.mark.parametrize("time_wait", [1e11, threading.TIMEOUT_MAX * 2, float("inf")])
def test_a_time_wait_beyond_the_clock_is_refused(time_wait):
    with pytest.raises(OverflowError, match="time_wait"):
        fp.Lab(time_wait=time_wait)
    with fp.Lab() as lab:
        with pytest.raises(OverflowError, match="time_wait"):
            lab.open(8080, time_wait=time_wait)


@pytest.mark.parametrize("time_wait", [float("nan"), -1.0])
def test_a_time_wait_that_is_no_duration_is_refused(time_wait):
    with pytest.raises(ValueError, match="time_wait"):
        fp.Lab(time_wait=time_wait)


def test_the_longest_time_wait_is_kept_as_asked():
    with fp.Lab(time_wait=threading.TIMEOUT_MAX) as lab:
        conn, peer = established(lab)
        close_to_time_wait(conn, peer)
        assert conn.time_wait_left > threading.TIMEOUT_MAX - 60
        conn.expect_silence(0.05)
        assert conn.state == "TIME_WAIT"
