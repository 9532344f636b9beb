"""fp.replay end to end (issue 12): real tcpdump captures made here
(replaytools) of python's http.server and nginx serving a kernel client, of
a stack recipe and of a tcp_rfc1337 exchange, replayed against the same
peer in a fresh Lab (no differences, ten times in a row), against a closed
port (the RST named) and against peers configured differently (the
difference named); the other side played (side="server"); captured timing
kept (speed=1.0); the generated pytest files green against their peer and
red once edited; wrong arguments refused by name."""

import functools
import os
import re
import subprocess

import pytest

import finprobe as fp

import replaytools as rt
from labtools import PACKAGE_DIR, PYTHON, SERVER4, descendants, inside, target_servers

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/nginx") or not os.path.exists("/usr/bin/tcpdump"),
                                reason="needs nginx (nginx-light) and tcpdump")

RECIPE_PORT = 8080


class Captures:
    """The module's captures, each made on first use, in its own directory."""

    def __init__(self, tmp):
        self.tmp = tmp

    @functools.lru_cache(maxsize=None)
    def kernel(self, server, keep_alive=False, ipv6=False, pause=0.0, **config):
        name = f"{server}-{'keepalive' if keep_alive else 'close'}-{'v6' if ipv6 else 'v4'}-{pause:g}"
        name += "".join(f"-{k}{v}" for k, v in sorted(config.items()))
        return rt.kernel_capture(self.tmp, name, server, keep_alive=keep_alive, ipv6=ipv6, pause=pause, **config)

    @functools.lru_cache(maxsize=None)
    def stack(self, recipe, rst_in_time_wait=False):
        return rt.stack_capture(self.tmp, f"{recipe}-{rst_in_time_wait}", recipe, port=RECIPE_PORT,
                                rst_in_time_wait=rst_in_time_wait)

    @functools.lru_cache(maxsize=None)
    def rfc1337(self, value):
        return rt.rfc1337_capture(self.tmp, f"rfc1337-{value}", value)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    return Captures(tmp_path_factory.mktemp("captures"))


@pytest.fixture(scope="module")
def recipes():
    """The stack recipes, built if missing; skipped only if they cannot be."""
    try:
        for name in fp.stacks.RECIPES:
            fp.stacks.binary(name)
    except fp.Error:
        root = os.path.dirname(PACKAGE_DIR)
        made = subprocess.run(["make", "-C", root, "-s", "stacks"], capture_output=True, text=True)
        try:
            for name in fp.stacks.RECIPES:
                fp.stacks.binary(name)
        except fp.Error:
            pytest.skip(f"the stack recipes cannot be built (make stacks): {made.stderr.strip()[-500:]}")
    return fp.stacks.RECIPES


def kinds(result):
    return [d.kind for d in result.differences]


def the(result, kind):
    """The one difference of kind; fails showing them all otherwise."""
    found = [d for d in result.differences if d.kind == kind]
    assert len(found) == 1, f"expected one {kind!r} difference:\n{result.text()}"
    return found[0]


def flags_of(text):
    """The flags of each segment a Difference's captured/observed text
    lists ("A seq=1 ack=44, FA seq=417 ack=44" -> ["A", "FA"]; "nothing" -> [])."""
    return re.findall(r"(?:^|, )([FSRPAUEC]+|-) seq=", text)


# ---- the captures themselves ------------------------------------------------------------


def fin_order(trace):
    """The ports of the segments carrying FIN, in order: who closed first."""
    return [s.sport for s in trace if "F" in s.flags]


def test_http_server_capture_holds_one_whole_exchange_the_server_closing_first(captures):
    trace = fp.read_pcap(captures.kernel("http.server"))
    assert trace.skipped == 0
    assert trace[0].flags == "S" and trace[0].dport == rt.PORTS["http.server"]
    assert fin_order(trace) == [rt.PORTS["http.server"], trace[0].sport]
    data = b"".join(s.payload for s in trace if s.sport == rt.PORTS["http.server"])
    assert data.startswith(b"HTTP/1.0 200 OK") and data.endswith(rt.BODY.encode())


def test_nginx_keep_alive_capture_holds_one_whole_exchange_the_client_closing_first(captures):
    trace = fp.read_pcap(captures.kernel("nginx", keep_alive=True))
    assert trace[0].flags == "S" and trace[0].dport == rt.PORTS["nginx"]
    assert fin_order(trace) == [trace[0].sport, rt.PORTS["nginx"]]
    data = b"".join(s.payload for s in trace if s.sport == rt.PORTS["nginx"])
    assert data.startswith(b"HTTP/1.1 200 OK") and b"keep-alive" in data.lower()


@pytest.mark.parametrize("value,answer", [(0, "R"), (1, "A")])
def test_rfc1337_capture_ends_with_the_answer_to_an_ack_in_time_wait(captures, value, answer):
    trace = fp.read_pcap(captures.rfc1337(value))
    assert [s.flags for s in trace] == ["S", "SA", "A", "FA", "A", "FA", "A", "R", "A", answer]
    assert trace[-1].sport == 8081


# ---- the same peer: no differences --------------------------------------------------------


def assert_same(result, run=None):
    assert result.differences == [], f"run {run}: {result.text()}"
    assert "F" in "".join(s.flags for s in result.trace), result.text()


@pytest.mark.parametrize("server,keep_alive", [("http.server", False), ("nginx", False), ("nginx", True)],
                         ids=["http.server", "nginx-http1.0", "nginx-keepalive"])
def test_a_capture_replays_against_the_same_server_in_a_fresh_lab_without_differences_ten_times(
        captures, tmp_path, server, keep_alive):
    path = captures.kernel(server, keep_alive)
    for run in range(10):
        with fp.Lab() as lab, rt.SERVERS[server](lab, tmp_path):
            result = fp.replay(path, lab=lab)
        assert_same(result, run)
    assert len(result.captured) == len(fp.read_pcap(path))
    assert [s.flags for s in result.captured] == [s.flags for s in fp.read_pcap(path)]


def test_an_ipv6_capture_replays_against_the_same_server_without_differences(captures, tmp_path):
    path = captures.kernel("http.server", ipv6=True)
    assert ":" in fp.read_pcap(path)[0].src
    with fp.Lab(ipv6=True) as lab, rt.http_server(lab, tmp_path):
        result = fp.replay(path, lab=lab)
    assert_same(result)
    assert result.trace[0].dst == "2001:db8::1" and result.trace[0].src == "2001:db8::2"


def test_a_capture_of_a_remote_server_replays_against_it_as_a_target_without_differences(tmp_path):
    """nginx in a namespace of its own serving a kernel client in another,
    captured there; replayed from the client's namespace over raw sockets."""
    with target_servers(tmp_path) as net:
        rt.www(tmp_path)  # FILE beside the servers' index.html
        path = tmp_path / "remote.pcap"
        with rt.tcpdump(functools.partial(net.popen, net.srv), path, 8080):
            client = net.popen(net.cli, [PYTHON, "-c", rt.CLIENT, SERVER4, "8080", "1", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = client.communicate(timeout=10)
            assert client.returncode == 0 and out.startswith("HTTP/1.1 200"), out + err
            captured = rt.read_when(path, rt.finished)
        assert rt.finished(captured), captured.ladder_text()
        with inside(net.cli):
            with fp.Target(SERVER4, 8080) as target:
                for run in range(3):
                    result = fp.replay(path, target=target)
                    assert result.differences == [], f"run {run}: {result.text()}"
    assert result.trace[0].dst == SERVER4 and result.trace[0].dport == 8080


def test_the_rfc1337_capture_replays_against_a_kernel_set_alike_without_differences(captures, tmp_path):
    for value in (0, 1):
        with fp.Lab() as lab, rt.closing_server(lab):
            lab.sysctl("net.ipv4.tcp_rfc1337", value)
            result = fp.replay(captures.rfc1337(value), lab=lab)
        assert result.differences == [], f"tcp_rfc1337={value}: {result.text()}"


def test_a_stack_capture_replays_against_the_same_recipe_without_differences(captures, recipes):
    for recipe in recipes:
        path = captures.stack(recipe, rst_in_time_wait=True)
        for run in range(3):
            with fp.Lab(**fp.stacks.lab_args(recipe, RECIPE_PORT)) as lab:
                result = fp.replay(path, lab=lab)
            assert result.differences == [], f"{recipe} run {run}: {result.text()}"


def test_one_connection_of_a_trace_holding_two_is_picked_by_its_endpoints_in_either_order(captures, tmp_path):
    first = fp.read_pcap(captures.kernel("http.server"))
    second = fp.read_pcap(captures.kernel("nginx", keep_alive=True))
    both = fp.Trace(list(first) + list(second))
    client = (second[0].src, second[0].sport)
    server = (second[0].dst, second[0].dport)
    with fp.Lab() as lab, rt.nginx(lab, tmp_path):
        result = fp.replay(both, lab=lab, connection=(server, client))
    assert result.differences == [], result.text()
    assert [(s.sport, s.flags) for s in result.captured] == [(s.sport, s.flags) for s in second]
    assert result.trace[0].dport == rt.PORTS["nginx"]


# ---- another peer: the difference named ---------------------------------------------------


def test_a_replay_against_a_closed_port_names_the_rst(captures):
    with fp.Lab() as lab:                      # nothing listens
        result = fp.replay(captures.kernel("http.server"), lab=lab)
    assert result.differences, result.text()
    first = result.differences[0]
    assert first.kind == "rst", result.text()
    assert flags_of(first.captured) == ["SA"] and "R" in flags_of(first.observed)[0], first
    assert first.meaning
    assert "rst" in result.text() and "R" in result.text()
    assert len(result.differences) == 1 and result.stopped, "the replay went on past the RST"


def test_a_replay_without_a_peer_makes_a_lab_and_closes_it(captures):
    before = set(descendants(os.getpid()))
    result = fp.replay(captures.kernel("http.server"))
    assert result.trace[0].flags == "S" and result.trace[1].flags == "SA", result.text()
    assert set(descendants(os.getpid())) <= before, "the Lab fp.replay made outlived it"


def test_a_kernel_with_rfc1337_off_answering_with_rst_where_it_had_acked_is_named(captures):
    with fp.Lab() as lab, rt.closing_server(lab):
        lab.sysctl("net.ipv4.tcp_rfc1337", 0)
        result = fp.replay(captures.rfc1337(1), lab=lab)
    diff = the(result, "rst")
    assert flags_of(diff.captured) == ["A"] and flags_of(diff.observed) == ["R"], diff


def test_a_difference_names_the_last_step_sent_before_it(captures):
    with fp.Lab() as lab:                       # nothing listens: our SYN is answered by RST
        refused = fp.replay(captures.kernel("http.server"), lab=lab)
    with fp.Lab() as lab, rt.closing_server(lab):
        lab.sysctl("net.ipv4.tcp_rfc1337", 0)
        reset = fp.replay(captures.rfc1337(1), lab=lab)   # the RST answers our last ACK
    assert [(d.kind, d.step) for d in refused.differences] == [("rst", 0)], refused.text()
    last_sent = max(i for i, s in enumerate(reset.steps) if s.kind == "send")
    assert [(d.kind, d.step) for d in reset.differences] == [("rst", last_sent)], reset.text()


def test_a_kernel_with_rfc1337_on_acking_where_it_had_reset_is_named(captures):
    with fp.Lab() as lab, rt.closing_server(lab):
        lab.sysctl("net.ipv4.tcp_rfc1337", 1)
        result = fp.replay(captures.rfc1337(0), lab=lab)
    diff = the(result, "no-rst")
    assert flags_of(diff.captured) == ["R"] and "A" in flags_of(diff.observed), diff


def test_a_server_closing_first_where_the_captured_one_closed_last_is_named(captures, tmp_path):
    path = captures.kernel("nginx", keep_alive=True)          # nginx kept the connection: we closed first
    with fp.Lab() as lab, rt.nginx(lab, tmp_path, keepalive="0"):  # this one closes after its answer
        result = fp.replay(path, lab=lab)
    diff = the(result, "fin")
    assert "F" not in "".join(flags_of(diff.captured)) and "F" in "".join(flags_of(diff.observed)), diff
    # each said once: nginx's answer is 5 bytes shorter without keep-alive
    assert sorted(kinds(result)) == ["fin", "length"], result.text()


def test_a_server_closing_last_where_the_captured_one_closed_first_is_named(captures, tmp_path):
    path = captures.kernel("nginx", keep_alive=True, keepalive="0")   # nginx closed first
    with fp.Lab() as lab, rt.nginx(lab, tmp_path):                    # this one keeps it
        result = fp.replay(path, lab=lab)
    assert "fin" in kinds(result), result.text()
    # each said once, and no FIN retransmission of the live peer's late FIN
    # (which the capture's last ACK never acknowledged) passed off as another
    assert sorted(kinds(result)) == ["fin", "length"], result.text()


def test_a_recipe_answering_an_ack_in_time_wait_with_rst_where_the_captured_one_acked_is_named(
        captures, recipes):
    path = captures.stack("gvisor", rst_in_time_wait=True)   # gVisor's TIME_WAIT ACKs it
    with fp.Lab(**fp.stacks.lab_args("slirp", RECIPE_PORT)) as lab:  # slirp's RST ended TIME_WAIT
        result = fp.replay(path, lab=lab)
    diff = the(result, "rst")
    assert flags_of(diff.captured) == ["A"] and flags_of(diff.observed) == ["R"], diff


def test_a_recipe_with_another_answer_length_is_named(captures, recipes, tmp_path):
    path = captures.kernel("http.server", port=RECIPE_PORT)   # the kernel's http.server: 370 bytes
    with fp.Lab(**fp.stacks.lab_args("lwip", RECIPE_PORT)) as lab:   # lwIP's recipe: 44 bytes
        result = fp.replay(path, lab=lab)
    assert "length" in kinds(result), result.text()


# ---- the other side ------------------------------------------------------------------------


@pytest.mark.parametrize("server,keep_alive", [("http.server", False), ("nginx", True)],
                         ids=["server-closes-first", "client-closes-first"])
def test_the_server_side_replays_against_a_kernel_client_without_differences(captures, server, keep_alive):
    path = captures.kernel(server, keep_alive)
    for run in range(3):
        result = fp.replay(path, side="server")
        assert result.differences == [], f"run {run}: {result.text()}"
    syn = result.trace[0]
    assert syn.flags == "S" and syn.direction == "in", result.trace.ladder_text()
    fins = [s.direction for s in result.trace if "F" in s.flags]
    assert fins == (["out", "in"] if not keep_alive else ["in", "out"]), result.trace.ladder_text()


# ---- timing ----------------------------------------------------------------------------------


def gaps(trace):
    """Seconds between our sends: the pauses the client made."""
    ours = [s.ts for s in trace if s.direction == "out"] if trace[0].direction else None
    return [b - a for a, b in zip(ours, ours[1:])]


def test_speed_one_keeps_the_captured_gaps(captures, tmp_path):
    pause = 0.3
    path = captures.kernel("nginx", keep_alive=True, pause=pause)
    captured = fp.read_pcap(path)
    client = captured[0].sport
    sent = [s.ts for s in captured if s.sport == client]
    with fp.Lab() as lab, rt.nginx(lab, tmp_path):
        result = fp.replay(path, lab=lab, speed=1.0)
    assert result.differences == [], result.text()
    ours = [s.ts for s in result.trace if s.direction == "out"]
    assert len(ours) == len(sent), result.text()
    for i, (live, then) in enumerate(zip(zip(ours, ours[1:]), zip(sent, sent[1:]))):
        assert live[1] - live[0] >= (then[1] - then[0]) - 0.02, f"gap {i} shorter than captured"
    assert ours[-1] - ours[0] >= 2 * pause - 0.02


def test_speed_none_does_not_wait_the_captured_gaps(captures, tmp_path):
    pause = 0.5
    path = captures.kernel("nginx", keep_alive=True, pause=pause)
    with fp.Lab() as lab, rt.nginx(lab, tmp_path):
        result = fp.replay(path, lab=lab)
    assert result.differences == [], result.text()
    ours = [s.ts for s in result.trace if s.direction == "out"]
    assert ours[-1] - ours[0] < pause, "speed=None waited a captured pause"


# ---- the generated tests ---------------------------------------------------------------------


def run_pytest(path):
    """pytest on the file alone, in a process of its own, with this tree's finprobe."""
    return subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(path),
                          env={**os.environ, "PYTHONPATH": PACKAGE_DIR})


def replayed(captures, tmp_path, peer):
    """A replay without differences of one capture against its own peer."""
    if peer == "http.server":
        with fp.Lab() as lab, rt.http_server(lab, tmp_path):
            return fp.replay(captures.kernel("http.server"), lab=lab)
    if peer == "nginx-keepalive":
        with fp.Lab() as lab, rt.nginx(lab, tmp_path):
            return fp.replay(captures.kernel("nginx", keep_alive=True), lab=lab)
    if peer == "rfc1337":
        with fp.Lab() as lab, rt.closing_server(lab):
            lab.sysctl("net.ipv4.tcp_rfc1337", 1)
            return fp.replay(captures.rfc1337(1), lab=lab)
    if peer == "server-side":
        return fp.replay(captures.kernel("http.server"), side="server")
    with fp.Lab(**fp.stacks.lab_args(peer, RECIPE_PORT)) as lab:
        return fp.replay(captures.stack(peer, rst_in_time_wait=True), lab=lab)


@pytest.mark.parametrize("peer", ["http.server", "nginx-keepalive", "rfc1337", "server-side", "gvisor"])
def test_a_generated_test_runs_green_against_its_peer_and_red_once_a_line_expects_otherwise(
        captures, tmp_path, peer, request):
    if peer == "gvisor":
        request.getfixturevalue("recipes")
    result = replayed(captures, tmp_path, peer)
    assert result.differences == [], result.text()
    path = result.to_pytest(tmp_path / "test_generated.py")
    text = open(path).read()
    lines = [l.strip() for l in text.splitlines() if l.strip().startswith(("s.send(", "s.expect("))]
    assert len(lines) == len(result.trace), text   # one line a segment the peer and we sent
    green = run_pytest(path)
    assert green.returncode == 0, f"{text}\n{green.stdout}{green.stderr}"
    assert "1 passed" in green.stdout
    # the last answer that acknowledges edited to acknowledge 1000 bytes more of
    # ours than we ever sent (a flag edit would not do for side="server",
    # where the client's lines are also what its application does)
    edited = text.splitlines()
    last = max(i for i, l in enumerate(edited) if l.strip().startswith("s.expect(") and "ack=" in l)
    edited[last] = re.sub(r"ack=(\d+)", lambda m: f"ack={int(m.group(1)) + 1000}", edited[last])
    with open(path, "w") as f:
        f.write("\n".join(edited) + "\n")
    red = run_pytest(path)
    assert red.returncode == 1 and "1 failed" in red.stdout, f"{red.stdout}{red.stderr}"
    assert "ExpectError" in red.stdout and "ack: the capture had" in red.stdout, red.stdout


# ---- wrong arguments -------------------------------------------------------------------------


def test_both_lab_and_target_are_refused(captures):
    with fp.Lab() as lab:
        with pytest.raises((TypeError, ValueError), match="lab.*target|target.*lab"):
            fp.replay(captures.kernel("http.server"), lab=lab, target=object())


@pytest.mark.parametrize("side", ["both", "", "CLIENT", 1, None])
def test_a_bad_side_is_refused_by_name(captures, side):
    with pytest.raises((TypeError, ValueError), match="side"):
        fp.replay(captures.kernel("http.server"), side=side)


@pytest.mark.parametrize("speed", [0, -1.0, float("nan"), float("inf"), "fast", True])
def test_a_bad_speed_is_refused_by_name(captures, speed):
    with pytest.raises((TypeError, ValueError), match="speed"):
        fp.replay(captures.kernel("http.server"), speed=speed)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises((fp.Error, OSError, ValueError), match="missing.pcap"):
        fp.replay(tmp_path / "missing.pcap")


def test_a_capture_without_tcp_is_refused(tmp_path):
    udp = fp.Segment(src="192.0.2.2", dst="192.0.2.1", sport=1, dport=2, flags="S")
    path = tmp_path / "udp.pcap"
    raw = bytearray(bytes(udp))
    raw[9] = 17  # IPv4 protocol: UDP
    raw[10:12] = b"\0\0"
    from finprobe import _core
    _core.write_pcap(str(path), [(bytes(raw), 0)], 0)
    assert len(fp.read_pcap(path)) == 0
    with pytest.raises((fp.Error, ValueError), match="TCP|tcp"):
        fp.replay(path)


def test_a_connection_not_in_the_capture_is_refused(captures):
    with pytest.raises(ValueError, match="connection"):
        fp.replay(captures.kernel("http.server"), connection=(("192.0.2.9", 1), ("192.0.2.1", 8000)))


def test_a_trace_or_path_of_another_type_is_refused():
    with pytest.raises(TypeError, match="trace"):
        fp.replay(42)
