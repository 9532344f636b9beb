"""Threads sharing one Lab: each call gets its own answer, every thread
finishes, and connections made side by side never share a source port.
A regression hangs a thread, so the threads are daemons joined against one
deadline: the test fails instead of hanging the suite."""

import os
import signal
import subprocess
import threading
import time

import pytest

import finprobe as fp

from labtools import descendants

THREADS = 6
JOIN_TIMEOUT = 60.0
CONNECTS = 100  # per thread; all of them fit the backlog


def run_threads(work, n=THREADS):
    """work(i) on n threads at once; returns (threads still running at the
    deadline, exceptions raised)."""
    errors, start = [], threading.Barrier(n)

    def run(i):
        try:
            start.wait(10)
            work(i)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()], errors


def test_threads_asking_the_kernel_at_once_each_get_their_answer():
    with fp.Lab() as lab:
        lab.listen(8080)
        conns = [lab.connect(8080) for _ in range(THREADS)]
        for conn in conns[::2]:
            conn.fin()
            conn.expect("A")

        def ask(i):
            conn, want = conns[i], "ESTABLISHED" if i % 2 else "CLOSE_WAIT"
            for n in range(3000):
                assert lab.peer_state(conn) == want
                info = lab.peer_info(conn)
                assert info["state"] == want and info["retransmits"] == 0
                if n % 100 == 0:
                    assert lab.wait_peer_state(conn, want, timeout=5.0) == want
                    assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "60"

        stuck, errors = run_threads(ask)
        assert not stuck, f"{len(stuck)} of {THREADS} threads hung in peer_state/peer_info"
        assert not errors, errors


def test_threads_connecting_through_one_lab_get_distinct_source_ports():
    with fp.Lab() as lab:
        lab.listen(8080, backlog=1024)
        ports = [[] for _ in range(THREADS)]

        def connect(i):
            for _ in range(CONNECTS):
                conn = lab.connect(8080, timeout=5.0)
                ports[i].append(conn.local[1])
                assert lab.peer_state(conn) == "ESTABLISHED"

        stuck, errors = run_threads(connect)
        assert not stuck, f"{len(stuck)} of {THREADS} threads hung in connect"
        assert not errors, errors
        taken = [port for per_thread in ports for port in per_thread]
        assert len(taken) == THREADS * CONNECTS
        assert len(set(taken)) == len(taken), "two connections got the same source port"


def test_threads_making_sockets_in_one_lab_each_get_a_socket_of_the_lab():
    with fp.Lab(ipv6=True) as lab:
        made = [[] for _ in range(THREADS)]

        def make(i):
            for _ in range(100):
                sock = lab.socket()
                made[i].append(sock)
                sock.bind((lab.peer_addr, 0))  # only the lab has 2001:db8::1

        stuck, errors = run_threads(make)
        assert not stuck and not errors, (stuck, errors)
        fds = [sock.fileno() for per_thread in made for sock in per_thread]
        assert len(set(fds)) == THREADS * 100


def helper_of(lab):
    """The pid of lab's helper: our descendant in the lab's namespace."""
    inode = os.fstat(lab._core.netns_fd).st_ino
    helper, = [pid for pid in descendants(os.getpid()) if os.stat(f"/proc/{pid}/ns/net").st_ino == inode]
    return helper


class Interrupted(Exception):
    """What Ctrl-C raises in these tests: escaping where it should not, it
    fails the test instead of ending the session as KeyboardInterrupt would."""


@pytest.fixture
def ctrl_c_raises_interrupted():
    def interrupted(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGINT, interrupted)
    yield
    signal.signal(signal.SIGINT, old)


def signals_later(*steps):
    """A shell that sends, in turn, each (delay, signal, pid) of steps: from
    outside, so that it comes even if this process is stuck."""
    script = "; ".join(f"sleep {delay}; kill -{sig.name[3:]} {pid}" for delay, sig, pid in steps)
    return subprocess.Popen(["sh", "-c", script])


def test_ctrl_c_gets_through_a_call_the_helper_does_not_answer(ctrl_c_raises_interrupted):
    with fp.Lab() as lab:
        helper = helper_of(lab)
        os.kill(helper, signal.SIGSTOP)
        # the helper stays stopped for 5 s unless the test goes on
        sender = signals_later((0.3, signal.SIGINT, os.getpid()), (5, signal.SIGCONT, helper))
        try:
            start = time.monotonic()
            with pytest.raises(Interrupted):
                lab.sysctl("net.ipv4.tcp_fin_timeout")
            waited = time.monotonic() - start
        finally:
            os.kill(helper, signal.SIGCONT)
            sender.kill()
            sender.wait()
        assert waited < 4, f"the interrupt waited for the helper: {waited:.1f}s"
        # the late answer to the interrupted call is not taken for the next one's
        lab.sysctl("net.ipv4.tcp_fin_timeout", 30)
        assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "30"
        assert len(lab.socket().getsockname()) == 2


def test_ctrl_c_gets_through_a_wait_for_another_threads_call(ctrl_c_raises_interrupted):
    with fp.Lab() as lab:
        lab.listen(8080)
        conn = lab.connect(8080)
        helper = helper_of(lab)
        os.kill(helper, signal.SIGSTOP)
        sender = signals_later((0.5, signal.SIGINT, os.getpid()), (5, signal.SIGCONT, helper))
        answers = []
        worker = threading.Thread(target=lambda: answers.append(lab.sysctl("net.ipv4.tcp_fin_timeout")),
                                  daemon=True)
        try:
            worker.start()
            time.sleep(0.1)  # the worker waits for the stopped helper, holding the lab
            start = time.monotonic()
            with pytest.raises(Interrupted):
                lab.peer_state(conn)
            waited = time.monotonic() - start
        finally:
            os.kill(helper, signal.SIGCONT)
            sender.kill()
            sender.wait()
            worker.join(JOIN_TIMEOUT)
        assert waited < 4, f"the interrupt waited for the other thread: {waited:.1f}s"
        assert answers == ["60"]
        assert lab.peer_state(conn) == "ESTABLISHED"
