"""Every stack recipe (finprobe.stacks, built by make stacks) as the peer of
a stack Lab, IPv4 and IPv6: it is ready, answers a GET and closes first
(our passive close), and closes after our FIN (our active close); GET /shut
leaves it in FIN_WAIT_2 with its socket held, GET /hold in CLOSE_WAIT after
our FIN (fp.stacks.PATHS). What the stacks do differently is the probe's
business; this is what all must do."""

import contextlib
import os
import resource
import signal
import subprocess
import time

import pytest

import finprobe as fp

from labtools import alive, recipe_params, run_script, wait_gone, wait_netns_gone

GET = b"GET / HTTP/1.0\r\n\r\n"
SHUT = b"GET /shut HTTP/1.0\r\n\r\n"
HOLD = b"GET /hold HTTP/1.0\r\n\r\n"
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
PORT = 8080


@pytest.fixture(params=recipe_params(fp.stacks.RECIPES))
def stack_lab(request):
    name, ipv6 = request.param
    with fp.Lab(**fp.stacks.lab_args(name, PORT, ipv6)) as lab:
        yield lab


@pytest.fixture(params=recipe_params(fp.stacks.RECIPES))
def told_lab(request):
    """A stack Lab and its recipe's name; a recipe of TELLS_STATE runs with
    its control socket (lab.peer_state)."""
    name, ipv6 = request.param
    tells = name in fp.stacks.TELLS_STATE
    with fp.Lab(**fp.stacks.lab_args(name, PORT, ipv6, control=tells)) as lab:
        yield lab, name


def server_sockets(lab):
    """The states (as ss writes them) of the slirp recipe's accepted HTTP
    sockets, its own (not orphans), on loopback behind slirp's relay."""
    out = lab.popen(["ss", "-Htanp", f"sport = :{PORT}"], stdout=subprocess.PIPE,
                    text=True).communicate(timeout=5)[0]
    return [line.split()[0] for line in out.splitlines()
            if '"slirp-http"' in line and not line.startswith("LISTEN")]


def answer_only(conn):
    """Take the peer's answer to our GET, ACKing its data; asserts no FIN
    comes with it. Returns the answer's bytes."""
    got = b""
    while len(got) < len(ANSWER):
        seg = conn.recv(timeout=3)
        assert seg is not None, f"the stack went silent:\n{conn.trace.ladder_text()}"
        assert not {"F", "R"} & set(seg.flags), f"not an answer alone:\n{conn.trace.ladder_text()}"
        got += seg.payload
        if seg.payload:
            conn.ack()
    return got


def answer_then_fin(conn):
    """Take the peer's answer to our GET and its FIN (ACKing the data as it
    comes, as a client would); returns the answer's bytes."""
    got = b""
    while True:
        seg = conn.recv(timeout=3)
        assert seg is not None, f"the stack went silent:\n{conn.trace.ladder_text()}"
        got += seg.payload
        if seg.payload or "F" in seg.flags:
            conn.ack()
        if "F" in seg.flags:
            return got


def test_a_stack_answers_and_closes_first(stack_lab):
    conn = stack_lab.connect(PORT)
    conn.write(GET)
    assert answer_then_fin(conn) == ANSWER
    assert conn.state == "CLOSE_WAIT"
    conn.fin()
    conn.expect("A", ack=conn.snd_nxt)
    assert conn.state == "CLOSED"


def test_a_stack_answers_a_request_in_one_full_sized_segment_and_lives_on(stack_lab):
    big = b"GET / HTTP/1.0\r\nX-Pad: " + b"x" * 1400 + b"\r\n\r\n"  # 1435 bytes, MSS 1460
    for request in (big, GET):
        conn = stack_lab.connect(PORT)
        conn.write(request)
        assert answer_then_fin(conn) == ANSWER
    assert stack_lab.stack.poll() is None


def test_a_stack_closes_after_our_fin(stack_lab):
    conn = stack_lab.connect(PORT)
    conn.fin()
    seg = conn.expect(timeout=3)
    if "F" not in seg.flags:  # its ACK alone first, then its FIN
        assert seg.flags == "A" and seg.ack == conn.snd_nxt
        assert conn.state == "FIN_WAIT_2"
        seg = conn.expect("FA", timeout=3)
    assert seg.ack == conn.snd_nxt
    conn.ack()
    assert conn.state == "TIME_WAIT"


def test_get_shut_sends_a_fin_and_keeps_the_socket_until_ours(told_lab):
    lab, name = told_lab
    tells = name in fp.stacks.TELLS_STATE
    conn = lab.connect(PORT)
    conn.write(SHUT)
    assert answer_then_fin(conn) == ANSWER
    if tells:
        lab.wait_peer_state(conn, "FIN_WAIT_2")
    conn.expect_silence(0.5)
    conn.write(b"more\n")  # its socket still reads: ACKed, not reset
    conn.expect("A", ack=conn.snd_nxt)
    if tells:
        assert lab.peer_state(conn) == "FIN_WAIT_2"
    if name == "slirp":  # slirp ACKs for its server: the server's socket is held
        assert server_sockets(lab) == ["FIN-WAIT-2"]
    conn.fin()
    conn.expect("A", ack=conn.snd_nxt)
    assert conn.state == "CLOSED"


def test_get_hold_answers_and_stays_in_close_wait_after_our_fin(told_lab):
    lab, name = told_lab
    tells = name in fp.stacks.TELLS_STATE
    conn = lab.connect(PORT)
    conn.write(HOLD)
    assert answer_only(conn) == ANSWER
    conn.expect_silence(0.5)
    conn.fin()
    conn.expect("A", ack=conn.snd_nxt)
    conn.expect_silence(1.0)  # its FIN waits fp.stacks.HOLD seconds
    assert conn.state == "FIN_WAIT_2"
    if tells:
        assert lab.peer_state(conn) == "CLOSE_WAIT"
    if name == "slirp":
        assert server_sockets(lab) == ["CLOSE-WAIT"]


@pytest.mark.parametrize("params", recipe_params(fp.stacks.RECIPES))
def test_a_stack_answers_a_burst_of_requests_on_as_many_connections_as_its_concurrency(params):
    name, ipv6 = params
    with fp.Lab(**fp.stacks.lab_args(name, PORT, ipv6)) as lab:
        conns = [lab.connect(PORT) for _ in range(fp.stacks.CONCURRENCY[name])]
        for conn in conns:
            conn.write(GET)
        for conn in conns:
            assert answer_then_fin(conn) == ANSWER


@contextlib.contextmanager
def soft_fd_limit(n):
    """This process's soft RLIMIT_NOFILE at n (what it starts inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slirp_holds_more_connections_than_a_soft_limit_of_1024_descriptors_allows_at_two_each():
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 2000:
        pytest.skip("the hard descriptor limit is itself under 2000")
    with soft_fd_limit(1024):
        lab = fp.Lab(**fp.stacks.lab_args("slirp", PORT))
    with lab:
        conns = [lab.connect(PORT) for _ in range(600)]
        conns[-1].write(GET)
        assert answer_then_fin(conns[-1]) == ANSWER


@pytest.mark.parametrize("params", recipe_params(fp.stacks.RECIPES))
def test_a_stack_lab_is_ready_within_two_seconds_and_its_process_goes_with_it(params):
    name, ipv6 = params
    start = time.monotonic()
    with fp.Lab(**fp.stacks.lab_args(name, PORT, ipv6)) as lab:
        ready = time.monotonic() - start
        pid = lab.stack.pid
        assert alive(pid)
    assert ready < 2.0, f"{name} took {ready:.2f} s to answer for {lab.peer_addr}"
    assert wait_gone([pid]), f"{name}'s process outlived its Lab"


@pytest.mark.parametrize("name", fp.stacks.RECIPES)
def test_a_stack_dies_with_the_labs_owner(name):
    script = run_script(f"""
        import os, time, finprobe as fp
        lab = fp.Lab(**fp.stacks.lab_args({name!r}, {PORT}))
        print(lab.stack.pid, os.stat(f"/proc/{{lab.stack.pid}}/ns/net").st_ino, flush=True)
        time.sleep(60)
    """)
    pid = None
    try:
        line = script.stdout.readline()
        assert line, script.communicate(timeout=10)[1]
        pid, inode = map(int, line.split())
        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert wait_gone([pid]), f"{name} outlived the Lab's owner"
        assert wait_netns_gone(inode)
    finally:
        for p in (script.pid, pid):
            if p and alive(p):
                os.kill(p, signal.SIGKILL)
        script.communicate()


@pytest.mark.parametrize("name", fp.stacks.RECIPES)
def test_a_stack_dies_when_a_signal_to_its_owners_group_ends_the_owner_and_the_labs_helper(name):
    """`timeout` (and a shell's Ctrl-C) signals a whole process group: the
    Lab's owner and its helper die together; the stack must not outlive them."""
    script = run_script(f"""
        import os, signal, time, finprobe as fp
        lab = fp.Lab(**fp.stacks.lab_args({name!r}, {PORT}))
        print(lab.stack.pid, os.stat(f"/proc/{{lab.stack.pid}}/ns/net").st_ino, flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(60)
    """, start_new_session=True)                # its own group, as `timeout` makes
    pid = None
    try:
        line = script.stdout.readline()
        assert line, script.communicate(timeout=10)[1]
        pid, inode = map(int, line.split())
        os.killpg(script.pid, signal.SIGTERM)   # the owner and the helper, as `timeout` does
        script.wait(10)
        assert wait_gone([pid]), f"{name} outlived its Lab's owner and helper"
        assert wait_netns_gone(inode)
    finally:
        for p in (script.pid, pid):
            if p and alive(p):
                os.kill(p, signal.SIGKILL)
        script.communicate()
