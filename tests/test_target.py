"""fp.Target against real servers, over raw sockets, in network namespaces.

Two fresh namespaces joined by a veth pair, nothing else: fpt-srv-<id> runs
``python3 -m http.server`` and nginx on 192.0.2.1 / 2001:db8:1::1, and
fpt-cli-<id> holds finprobe's side, 192.0.2.2 / 2001:db8:1::2. Test bodies
run inside the client namespace: the ``client`` fixture moves this thread
there (setns) for the test and back afterwards, so a test reads as plain
send/expect code; afterwards it checks that the nftables rulesets of the
client namespace and of the host are exactly as before the test.

The servers' state cannot be read from here, so each close is checked by its
segments: flags, and sequence and acknowledgment numbers.

Needs root (namespaces, raw sockets, nftables) and nginx (nginx-light).
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

import finprobe as fp
from labtools import CLIENT4, CLIENT6, PORTS, SERVER4, SERVER6, inside, run, target_servers

CLOSED_PORT = 9
PYTHON = "/usr/bin/python3"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(fp.__file__)))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, raw sockets, nftables"),
    pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"),
                       reason="needs nginx (Debian package nginx-light)"),
]

@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The two namespaces and the servers; all gone when the module ends."""
    with target_servers(tmp_path_factory.mktemp("servers")) as net:
        yield net


@pytest.fixture
def client(net):
    """Inside the client namespace for the test; makes Targets, closes those
    left open, then checks both rulesets are as they were."""
    before = net.ruleset()
    made = []

    def target(host, port, **kwargs):
        t = fp.Target(host, port, **kwargs)
        made.append(t)
        return t

    try:
        with inside(net.cli):
            yield target
    finally:
        for t in made:
            t.close()
    assert net.ruleset() == before


# ---- helpers -------------------------------------------------------------------

def server_addr(family):
    return SERVER6 if family == 6 else SERVER4


def take(conn, timeout=2.0):
    """The server's next segment and the new in-order bytes it brings; data
    without FIN is acknowledged at once, as a client's stack would (a server
    holding back under Nagle waits for that ACK)."""
    expected = conn.rcv_nxt
    seg = conn.expect(timeout=timeout)
    assert "R" not in seg.flags, f"reset by the server: {seg!r}"
    if seg.payload and "F" not in seg.flags:
        conn.ack()
    return seg, seg.payload if seg.seq == expected else b""


def read_to_fin(conn):
    """The server's bytes up to its FIN, unacknowledged: (payload, FIN segment).
    A FIN past a gap (a segment before it lost, as a packet socket's queue
    may drop one on a busy machine) is not in order yet: our state stays
    ESTABLISHED and the server's retransmission fills the gap first."""
    data = b""
    while True:
        seg, new = take(conn)
        data += new
        if "F" in seg.flags and conn.state != "ESTABLISHED":
            return data, seg
        if "F" in seg.flags:
            conn.ack()                         # a duplicate ACK: what we still miss


def read_response(conn):
    """Bytes until one whole HTTP response with Content-Length is in."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            return data
        seg, new = take(conn)
        assert "F" not in seg.flags, f"the server closed before its response was whole: {seg!r}"
        data += new


def fin_seq(seg):
    """The sequence number of a segment's FIN."""
    return (seg.seq + len(seg.payload) + ("S" in seg.flags)) % 2**32


def rule_of(conn):
    """conn's guard rule as `nft list ruleset` shows it, less the counter's figures."""
    (la, lp), (ra, rp) = conn.local, conn.remote
    ip = "ip6" if ":" in la else "ip"
    return (f"{ip} saddr {la} {ip} daddr {ra} tcp sport {lp} tcp dport {rp} "
            f"tcp flags & rst == rst meta mark != 0x66700000 counter packets")


def dropped(net, conn):
    """How many of the kernel's RSTs conn's rule has dropped."""
    line = next(l for l in net.ruleset()[0].splitlines() if rule_of(conn) in l)
    return int(re.search(r"counter packets (\d+)", line).group(1))


# ---- the server closes first -------------------------------------------------

@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("server", ["http.server", "nginx"])
def test_http10_server_closes_and_we_see_it_to_the_end(client, net, server, family):
    with client(server_addr(family), PORTS[server]) as t:
        conn = t.connect()
        assert conn.state == "ESTABLISHED"
        rule = rule_of(conn)
        assert dropped(net, conn) >= 1  # the kernel's RST to the SYN-ACK, at least
        conn.write(b"GET / HTTP/1.0\r\nHost: target\r\n\r\n")
        data, fin = read_to_fin(conn)
        assert data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n")[0]
        assert conn.state == "CLOSE_WAIT"
        ack = conn.ack()
        assert ack.ack == (fin_seq(fin) + 1) % 2**32  # its FIN acknowledged
        ours = conn.fin()
        assert conn.state == "LAST_ACK"
        conn.expect("A", seq=ack.ack, ack=(ours.seq + 1) % 2**32)
        assert conn.state == "CLOSED"
        conn.expect_silence(0.3)
        conn.close()
        assert rule not in net.ruleset()[0] and "finprobe_" not in net.ruleset()[0]


# ---- we close first ------------------------------------------------------------

@pytest.mark.parametrize("server", ["nginx", "http.server"])
def test_our_fin_first_on_a_keepalive_connection(client, server):
    with client(SERVER4, PORTS[server]) as t:
        conn = t.connect()
        conn.write(b"GET / HTTP/1.1\r\nHost: target\r\nConnection: keep-alive\r\n\r\n")
        assert b" 200 " in read_response(conn).split(b"\r\n")[0]
        conn.expect_silence(0.2)  # kept alive: the server does not close
        ours = conn.fin()
        assert conn.state == "FIN_WAIT_1"
        our_fin_acked = their_fin = None
        while our_fin_acked is None or their_fin is None:
            seg = conn.expect(timeout=2)
            assert "R" not in seg.flags, f"reset by the server: {seg!r}"
            if "A" in seg.flags and seg.ack == (ours.seq + 1) % 2**32:
                our_fin_acked = seg
            if "F" in seg.flags:
                their_fin = seg
        assert conn.state == "TIME_WAIT"
        conn.ack()
        assert conn.trace[-1].ack == (fin_seq(their_fin) + 1) % 2**32
        conn.expect_silence(0.5)  # its FIN is acknowledged: no retransmission


# ---- the final ACK withheld ----------------------------------------------------

@pytest.mark.parametrize("server", ["http.server", "nginx"])
def test_server_retransmits_its_fin_when_our_final_ack_is_withheld(client, server):
    with client(SERVER4, PORTS[server]) as t:
        conn = t.connect()
        conn.write(b"GET / HTTP/1.0\r\nHost: target\r\n\r\n")
        _, fin = read_to_fin(conn)
        conn.send(flags="A", ack=fin_seq(fin))  # the data acknowledged, not the FIN
        again = conn.expect(timeout=3)
        assert "F" in again.flags and again.seq == fin_seq(fin) and not again.payload
        assert again.ts - fin.ts > 0.15  # after a retransmission timeout (200 ms at least)
        conn.ack()
        conn.fin()
        conn.expect("A")
        assert conn.state == "CLOSED"


# ---- refused, and what a connection holds ---------------------------------------

@pytest.mark.parametrize("family", [4, 6])
def test_closed_port_refuses_with_rst(client, net, family):
    before = net.ruleset()
    with client(server_addr(family), CLOSED_PORT) as t:
        with pytest.raises(fp.ConnectionRefused, match=r"RST.*\[RA\]") as info:
            t.connect()
        assert isinstance(info.value, ConnectionRefusedError)
        assert net.ruleset() == before  # the failed connection's rule is gone at once


def test_two_connections_share_the_table_until_the_last_closes(client, net):
    with client(SERVER4, PORTS["nginx"]) as t:
        a, b = t.connect(), t.connect()
        assert a.local[1] != b.local[1]
        rule_a, rule_b = rule_of(a), rule_of(b)
        assert net.ruleset()[0].count("table inet finprobe_") == 1
        a.rst()
        a.close()
        rules = net.ruleset()[0]
        assert rule_a not in rules and rule_b in rules
        b.rst()
        b.close()
        assert "finprobe_" not in net.ruleset()[0]
        assert t.connect().state == "ESTABLISHED"  # the table again, made afresh


def test_source_port_is_reserved_while_the_connection_is_open(client):
    with client(SERVER4, PORTS["nginx"]) as t:
        conn = t.connect()
        (src, sport) = conn.local
        with socket.socket() as s, pytest.raises(OSError) as info:
            s.bind((src, sport))
        assert info.value.errno == 98  # EADDRINUSE
        conn.rst()
        conn.close()
        with socket.socket() as s:
            s.bind((src, sport))  # released


@contextlib.contextmanager
def ephemeral_range(net, first, last):
    """The client namespace's net.ipv4.ip_local_port_range, for a while."""
    key = "net.ipv4.ip_local_port_range"
    before = run("ip", "netns", "exec", net.cli, "sysctl", "-n", key).split()
    run("ip", "netns", "exec", net.cli, "sysctl", "-qw", f"{key}={first} {last}")
    try:
        yield
    finally:
        run("ip", "netns", "exec", net.cli, "sysctl", "-qw", f"{key}={before[0]} {before[1]}")


def test_source_ports_are_taken_in_turn_wrapping_in_the_range_and_skipping_ports_in_use(client, net):
    first, last = 41000, 41003
    after = lambda port: first if port == last else port + 1
    with ephemeral_range(net, first, last), client(SERVER4, PORTS["nginx"]) as t:
        conns = [t.connect()]
        p = conns[0].local[1]
        assert first <= p <= last
        with socket.socket() as busy:
            busy.bind((CLIENT4, after(p)))          # a kernel socket holds the next port
            conns.append(t.connect())
        assert conns[1].local[1] == after(after(p))  # skipped
        conns[0].rst()
        conns[0].close()                            # p is free again, but not next in turn
        conns.append(t.connect())
        assert conns[2].local[1] == after(after(after(p)))
        conns.append(t.connect())                   # wraps round to p, free since its close
        conns.append(t.connect())                   # the port the kernel socket held, free now
        assert [c.local[1] for c in conns[3:]] == [p, after(p)]
        with pytest.raises(fp.Error, match=f"no free source port.*{first}-{last}"):
            t.connect()                             # all four held by live connections
        for conn in conns[1:]:
            conn.rst()                              # nginx keeps none of these 4-tuples


def test_threads_opening_at_once_get_every_port_of_the_range_once(client, net):
    first, last = 41010, 41017
    with ephemeral_range(net, first, last), client(SERVER4, PORTS["nginx"]) as t:
        start = threading.Barrier(last - first + 1)
        conns = []

        def open_one():
            start.wait()
            conns.append(t.open())              # reserves its port; sends nothing

        threads = [threading.Thread(target=open_one) for _ in range(last - first + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(c.local[1] for c in conns) == list(range(first, last + 1))


def test_given_sport_src_and_iface_are_used(client):
    with client(SERVER6, PORTS["nginx"], src=CLIENT6, iface="fpt-c") as t:
        assert (t.src, t.iface) == (CLIENT6, "fpt-c")
        conn = t.connect(sport=47001, iss=1000)
        assert conn.local == (CLIENT6, 47001) and conn.iss == 1000
        conn.rst()


def test_no_route_names_the_address(client):
    with pytest.raises(fp.Error, match="198.51.100.7"):
        client("198.51.100.7", 80)


# ---- the process dies ------------------------------------------------------------

CHILD = """
import sys, time
import finprobe as fp
t = fp.Target(sys.argv[1], int(sys.argv[2]))
conn = t.connect()
print(conn.local[1], flush=True)
time.sleep(60)
"""


def test_sigkill_mid_connection_leaves_no_table(net):
    before = net.ruleset()
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
    child = net.popen(net.cli, [PYTHON, "-c", CHILD, SERVER4, str(PORTS["nginx"])],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        sport = child.stdout.readline().strip()
        assert sport, child.stderr.read()
        during = net.ruleset()[0]
        assert f"table inet finprobe_{child.pid}_" in during and f"tcp sport {sport} " in during
        child.kill()
        child.wait()
        deadline = time.monotonic() + 2
        while net.ruleset() != before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert net.ruleset() == before
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()
