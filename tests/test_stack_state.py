"""A stack's own view of its connections (lab.peer_state in a stack Lab whose
command holds {control}), for the recipes that can tell (lwIP, gVisor),
IPv4 and IPv6: along a close each way the stack's state is read and held
against what the wire shows; peer_state_source labels whose view it is; a
stack that cannot tell, or does not answer, gives fp.Error."""

import os
import socket
import sys
import time

import pytest

import finprobe as fp

from labtools import recipe_params

GET = b"GET / HTTP/1.0\r\n\r\n"
PORT = 8080
TELLING = sorted(fp.stacks.TELLS_STATE)


@pytest.fixture(params=recipe_params(TELLING))
def telling_lab(request):
    name, ipv6 = request.param
    with fp.Lab(**fp.stacks.lab_args(name, PORT, ipv6, control=True)) as lab:
        lab.recipe = name
        yield lab


def ladder(conn):
    return conn.trace.ladder_text()


def its_fins(conn):
    return [s for s in conn.trace if s.direction == "in" and "F" in s.flags]


def test_the_stack_tells_established_after_the_handshake(telling_lab):
    lab = telling_lab
    assert lab.peer_state_source == "stack"
    conn = lab.connect(PORT)
    assert conn.state == "ESTABLISHED"
    # Our ACK is on its way when connect returns: until the stack has taken
    # it, it is still in SYN_RECEIVED.
    assert lab.peer_state(conn) in ("SYN_RECEIVED", "ESTABLISHED")
    lab.wait_peer_state(conn, "ESTABLISHED", timeout=1)
    info = lab.peer_info(conn)
    assert info["state"] == "ESTABLISHED" and info["timer"] is None


def test_the_stack_tells_closed_for_a_4_tuple_it_does_not_have(telling_lab):
    """Nothing sent: the stack has no connection, though a listener matches
    the port (gVisor's demuxer would hand back the listener)."""
    conn = telling_lab.open(PORT)
    assert telling_lab.peer_state(conn) == "CLOSED"


def test_the_stacks_view_along_our_active_close(telling_lab):
    """Our FIN before a request: the stack ACKs it (CLOSE_WAIT), closes
    (LAST_ACK, its FIN on the wire), and our ACK of its FIN ends it (CLOSED)."""
    lab = telling_lab
    conn = lab.connect(PORT)
    conn.fin()
    seg = conn.expect(timeout=2)  # its ACK of our FIN, maybe with its own FIN
    seen = lab.peer_state(conn)
    assert seen in ("CLOSE_WAIT", "LAST_ACK"), ladder(conn)
    if "F" not in seg.flags:
        conn.expect("FA", timeout=2)
    # Its FIN is out and we have not ACKed it: LAST_ACK. gVisor's state
    # goes to FIN_WAIT_1 once it retransmits that FIN (0.2 s): only then.
    seen = lab.peer_state(conn)
    if lab.recipe == "gvisor" and seen == "FIN_WAIT_1":
        conn.recv(timeout=0)
        assert len(its_fins(conn)) > 1, ladder(conn)
    else:
        assert seen == "LAST_ACK", ladder(conn)
    conn.ack()
    assert conn.state == "TIME_WAIT"
    if len(its_fins(conn)) == 1:
        lab.wait_peer_state(conn, "CLOSED", timeout=2)


def test_gvisor_tells_fin_wait_1_after_retransmitting_its_fin_from_last_ack():
    """What the wire model cannot see (issue 9's table): gVisor's own state
    goes LAST_ACK -> FIN_WAIT_1 when it retransmits its FIN, so our final
    ACK then leaves it in FIN_WAIT_2, not CLOSED."""
    with fp.Lab(**fp.stacks.lab_args("gvisor", PORT, control=True)) as lab:
        conn = lab.connect(PORT)
        conn.fin()
        if "F" not in conn.expect(timeout=2).flags:
            conn.expect("FA", timeout=2)
        assert lab.peer_state(conn) in ("LAST_ACK", "FIN_WAIT_1")
        conn.expect("FA", timeout=2)  # the retransmission
        assert lab.peer_state(conn) == "FIN_WAIT_1", ladder(conn)
        conn.ack()
        lab.wait_peer_state(conn, "FIN_WAIT_2", timeout=1)


def test_the_stacks_view_along_its_active_close(telling_lab):
    """A GET: the stack answers and closes first. Once we ACK its FIN it is in
    FIN_WAIT_2; our FIN and its ACK leave it in TIME_WAIT."""
    lab = telling_lab
    conn = lab.connect(PORT)
    conn.write(GET)
    while True:
        seg = conn.recv(timeout=3)
        assert seg is not None, ladder(conn)
        if seg.payload or "F" in seg.flags:
            conn.ack()
        if "F" in seg.flags:
            break
    assert conn.state == "CLOSE_WAIT"
    lab.wait_peer_state(conn, "FIN_WAIT_2", timeout=1)
    conn.fin()
    conn.expect("A", timeout=2)
    assert conn.state == "CLOSED"
    assert lab.peer_state(conn) == "TIME_WAIT", ladder(conn)


def test_a_recipe_answers_error_to_a_malformed_request(telling_lab):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(telling_lab._control_path())
        for bad in (b"status\n", b"state 192.0.2.1 8080\n", b"state x 1 y 2\n",
                    b"state 192.0.2.1 70000 192.0.2.2 1\n"):
            sock.sendall(bad)
            reply = sock.makefile("rb").readline()
            assert reply.startswith(b"error "), (bad, reply)


def test_peer_state_source_says_whose_view():
    with fp.Lab() as lab:
        assert lab.peer_state_source == "socket"
    with fp.Lab(**fp.stacks.lab_args("lwip", PORT)) as lab:
        assert lab.peer_state_source is None
    with fp.Lab(**fp.stacks.lab_args("lwip", PORT, control=True)) as lab:
        assert lab.peer_state_source == "stack"


def test_a_stack_lab_without_control_cannot_tell_peer_state():
    with fp.Lab(**fp.stacks.lab_args("lwip", PORT)) as lab:
        conn = lab.connect(PORT)
        for ask in (lab.peer_state, lab.peer_info, lambda c: lab.wait_peer_state(c, "CLOSED")):
            with pytest.raises(fp.Error, match="user-space stack"):
                ask(conn)


def test_control_true_for_a_recipe_that_cannot_tell_is_an_error():
    with pytest.raises(fp.Error, match="cannot tell"):
        fp.stacks.command("slirp", control=True)
    assert fp.stacks.command("lwip", control=True)[-2:] == ["--control", "{control}"]


def test_a_stack_that_does_not_listen_on_control_gives_error():
    """{control} in the environment only: lwIP never listens there."""
    with fp.Lab(stack=fp.stacks.command("lwip", PORT), env={"UNUSED": "{control}"}) as lab:
        assert lab.peer_state_source == "stack"
        conn = lab.connect(PORT)
        with pytest.raises(fp.Error, match="did not answer on its control socket"):
            lab.peer_state(conn)


SILENT = ("import socket, sys, time\n"
          "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
          "c = s.accept()[0]; time.sleep(60)\n")


def test_a_stack_that_never_answers_gives_error_within_the_timeout():
    """Something listens on {control} and takes the question, but says nothing."""
    lwip = fp.stacks.command("lwip", PORT)
    script = 'p="$0" s="$1" c="$2"; shift 2; "$p" -c "$s" "$c" & exec "$@"'
    stack = ["/bin/sh", "-c", script, sys.executable, SILENT, "{control}"] + lwip
    with fp.Lab(stack=stack) as lab:
        conn = lab.connect(PORT)
        for _ in range(100):
            if os.path.exists(lab._control_path()):
                break
            time.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(fp.Error, match="did not answer in time"):
            lab.peer_state(conn)
        assert time.monotonic() - start < 10


def test_the_control_directory_goes_with_the_lab():
    with fp.Lab(**fp.stacks.lab_args("lwip", PORT, control=True)) as lab:
        path = lab._control_path()
        conn = lab.connect(PORT)
        lab.wait_peer_state(conn, "ESTABLISHED", timeout=1)
        assert os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))
