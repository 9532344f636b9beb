"""fp.probe: how does a TCP stack close its connections?

Each check drives one teardown sequence against the peer and compares what
the peer did with what the RFCs say. The peer is either the local Linux
kernel in a fresh Lab (host None: finprobe also controls the server's socket,
so it can make the peer close first and read its state through sock_diag),
or a remote server (``fp.Target``), whose side finprobe cannot steer: there
the checks that need the server to close first ask it to with an HTTP/1.0
request, and say "info" when it does not.

    report = fp.probe()
    for check in report.checks:
        print(check.verdict, check.name, check.observed)
"""

import dataclasses
import json
import socket
import time

from . import _core
from .trace import Trace

LAB_PORT = 8080
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: finprobe\r\n\r\n"


@dataclasses.dataclass
class Check:
    """One probed behaviour: what the RFC expects, what the peer did."""

    name: str
    reference: str
    expected: str
    observed: str = ""
    verdict: str = "info"          # "pass" | "fail" | "info"
    trace: object = None           # fp.Trace of the connection, when there was one
    peer_states: list = dataclasses.field(default_factory=list)

    def __repr__(self):
        return f"<Check {self.name}: {self.verdict}>"

    def as_dict(self):
        return {"name": self.name, "reference": self.reference, "expected": self.expected,
                "observed": self.observed, "verdict": self.verdict, "peer_states": self.peer_states,
                "segments": [_segment_dict(s) for s in (self.trace or [])]}


@dataclasses.dataclass
class Report:
    """What ``fp.probe`` found: one Check a behaviour."""

    target: str
    checks: list

    def counts(self):
        return {v: sum(c.verdict == v for c in self.checks) for v in ("pass", "fail", "info")}

    def __repr__(self):
        c = self.counts()
        return f"<Report {self.target}: {c['pass']} pass, {c['fail']} fail, {c['info']} info>"

    def as_dict(self):
        return {"target": self.target, "counts": self.counts(), "checks": [c.as_dict() for c in self.checks]}

    def to_json(self):
        return json.dumps(self.as_dict(), indent=2)


# ---- the peers -------------------------------------------------------------------


class LabPeer:
    """The local kernel in a fresh Lab for each check: finprobe holds the
    server's socket, so it can close it and read its state."""

    steerable = True

    def __init__(self):
        from .lab import Lab
        self._make_lab = Lab
        self.lab = None

    def describe(self):
        return "the local Linux kernel (a Lab)"

    def open(self):
        """A fresh Lab, a connection to a kernel listener, and the kernel's socket."""
        self.close()
        self.lab = self._make_lab()
        server = self.lab.listen(LAB_PORT)
        conn = self.lab.connect(LAB_PORT)
        peer, _ = server.accept()
        return conn, peer

    def state(self, conn):
        return self.lab.peer_state(conn).value

    def close(self):
        if self.lab is not None:
            self.lab.close()
            self.lab = None


class TargetPeer:
    """A remote server: finprobe has only its own side."""

    steerable = False

    def __init__(self, host, port):
        from .target import Target
        self.target = Target(host, port)
        self.host, self.port = host, port
        self.conn = None

    def describe(self):
        return f"{self.host}:{self.port}"

    def open(self):
        self.close()
        self.conn = self.target.connect()
        return self.conn, None

    def state(self, conn):
        return None

    def close(self):
        """Release the last check's connection (its guard rule, its port)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def shutdown(self):
        self.target.close()


# ---- the checks ------------------------------------------------------------------
#
# A check function takes the peer and the Check to fill, and returns nothing;
# a failed expectation (fp.ExpectError) is a "fail" with its message.


def _peer_closes(conn, sock):
    """Make the peer send its FIN: shut the kernel socket down, or ask an HTTP
    server for a page (HTTP/1.0: it closes after answering), ACKing its data.
    Whether the peer's FIN is then on its way (the kernel's) or taken (a
    server's)."""
    if sock is not None:
        sock.shutdown(socket.SHUT_WR)
        return True
    conn.write(HTTP_REQUEST)
    while True:
        seg = conn.recv(timeout=3.0)
        if seg is None:
            return False
        if "F" in seg.flags:
            return True
        if seg.payload:
            conn.ack()


def check_active_close(peer, check):
    conn, sock = peer.open()
    fin = conn.fin()
    ack = conn.expect(timeout=2.0)
    _record(peer, check, conn)
    acked = "A" in ack.flags and ack.ack == (fin.seq + 1) % 2**32
    check.observed = f"[{ack.flags}] ack={_rel(ack.ack, conn.iss)} after our FIN at {_rel(fin.seq, conn.iss)}"
    if peer.steerable:
        check.observed += f"; peer state {peer.state(conn)}"
    check.verdict = "pass" if acked and (not peer.steerable or peer.state(conn) == "CLOSE_WAIT") else "fail"


def check_passive_close(peer, check):
    conn, sock = peer.open()
    if not _peer_closes(conn, sock):
        check.observed = "the peer did not close"
        return
    if sock is not None:
        conn.expect("FA")
    conn.ack()
    conn.fin()
    conn.expect("A", ack=conn.snd_nxt, timeout=2.0)
    if not peer.steerable:
        _record(peer, check, conn)
        check.observed, check.verdict = "its FIN, then the ACK of ours", "pass"
        return
    peer.lab.wait_peer_state(conn, "TIME_WAIT")
    info = peer.lab.peer_info(conn)
    _record(peer, check, conn)
    check.observed = f"peer in {info['state'].value}, {info['timer']} timer {info['expires']:.0f} s"
    check.verdict = "pass" if info["timer"] == "timewait" else "fail"


def check_fin_ack_skips_fin_wait_2(peer, check):
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    conn.fin()
    conn.expect("A", timeout=2.0)
    _record(peer, check, conn)
    state = peer.lab.wait_peer_state(conn, "TIME_WAIT").value
    check.observed = f"peer went from FIN_WAIT_1 to {state}"
    check.verdict = "pass"


def check_last_ack_retransmits_fin(peer, check):
    conn, sock = peer.open()
    conn.fin()
    if sock is not None:
        conn.expect("A", timeout=2.0)
        sock.close()
    first = _next_fin(conn)    # a remote server closes when it reads our EOF
    if first is None:
        check.observed = "the peer did not close after our FIN"
        return
    again = conn.recv(timeout=3.0)
    _record(peer, check, conn)
    if again is None:
        check.observed, check.verdict = "no retransmission within 3 s", "fail"
        return
    check.observed = f"[{again.flags}] again after {again.ts - first.ts:.3f} s"
    check.verdict = "pass" if "F" in again.flags and again.seq == first.seq else "fail"
    conn.ack()


def _next_fin(conn, timeout=3.0):
    """The peer's next FIN (ACKs before it taken), or None."""
    while True:
        seg = conn.recv(timeout=timeout)
        if seg is None or "F" in seg.flags:
            return seg


def _peer_in_time_wait(peer):
    """A connection the kernel closed first, through to its TIME_WAIT; and our FIN."""
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    our_fin = conn.fin()
    conn.expect("A")
    peer.lab.wait_peer_state(conn, "TIME_WAIT")
    return conn, our_fin


def check_time_wait_reacks_fin(peer, check):
    conn, our_fin = _peer_in_time_wait(peer)
    first = conn.trace[-1]
    conn.send(flags="FA", seq=our_fin.seq)     # as if the kernel's ACK had been lost
    again = conn.recv(timeout=1.0)
    _record(peer, check, conn)
    if again is None:
        check.observed, check.verdict = "no answer to the retransmitted FIN", "fail"
        return
    check.observed = f"[{again.flags}] ack={_rel(again.ack, conn.iss)}; peer {peer.state(conn)}"
    check.verdict = "pass" if again.flags == "A" and again.ack == first.ack else "fail"


def check_simultaneous_close(peer, check):
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    peer.lab.wait_peer_state(conn, "FIN_WAIT_1")
    conn.fin()                                 # crosses the kernel's FIN: does not ack it
    conn.expect("FA")
    conn.expect("A", ack=conn.snd_nxt)
    seen = peer.state(conn)
    conn.ack()
    _record(peer, check, conn)
    check.observed = f"peer in {seen} after crossing FINs, we in {conn.state.value}"
    check.verdict = "pass" if seen == "CLOSING" else "fail"


def _rst(peer, check, offset, wait):
    """Send a RST ``offset`` past SND.NXT; the peer's answer within ``wait`` s
    and its state. Writes what was seen into check.observed."""
    conn, _ = peer.open()
    conn.send(flags="R", seq=(conn.snd_nxt + offset) % 2**32)
    answer = conn.recv(timeout=wait)
    _record(peer, check, conn)
    state = peer.state(conn)
    seen = "silence" if answer is None else f"[{answer.flags}] ack={_rel(answer.ack, conn.iss)}"
    check.observed = seen + (f"; peer {state}" if state else "")
    return conn, answer, state


def check_rst_exact(peer, check):
    _, answer, state = _rst(peer, check, 0, 0.3)
    check.verdict = "pass" if answer is None and state in (None, "CLOSED") else "fail"


def check_rst_in_window(peer, check):
    conn, answer, state = _rst(peer, check, 10, 0.5)
    challenge = answer is not None and answer.flags == "A" and answer.ack == conn.snd_nxt
    check.verdict = "pass" if challenge and state in (None, "ESTABLISHED") else "fail"


def check_rst_out_of_window(peer, check):
    _, answer, state = _rst(peer, check, 10**8, 0.3)
    check.verdict = "pass" if answer is None and state in (None, "ESTABLISHED") else "fail"


def check_close_with_unread_data(peer, check):
    conn, sock = peer.open()
    conn.write(b"never read")
    conn.expect("A")
    time.sleep(0.01)                           # let the data reach the socket's queue
    sock.close()
    answer = conn.recv(timeout=1.0)
    _record(peer, check, conn)
    check.observed = "nothing" if answer is None else f"[{answer.flags}]"
    check.verdict = "pass" if answer is not None and "R" in answer.flags else "fail"


def check_syn_into_time_wait(peer, check):
    conn, _ = _peer_in_time_wait(peer)
    sport, iss = conn.local[1], (conn.snd_nxt + 100000) % 2**32
    old = conn.trace
    conn.close()
    new = peer.lab.open(LAB_PORT, sport=sport, iss=iss)
    new.send(flags="S", options=[("mss", 1460)])
    answer = new.recv(timeout=1.0)
    fresh = new.trace
    check.trace = Trace(list(old) + list(fresh), old.states + fresh.states)
    check.observed = "nothing" if answer is None else f"[{answer.flags}]; peer {peer.state(new)}"


def check_fin_wait_2_timeout(peer, check):
    conn, sock = peer.open()
    timeout = peer.lab.sysctl("net.ipv4.tcp_fin_timeout")
    sock.close()
    conn.expect("FA")
    conn.ack()
    peer.lab.wait_peer_state(conn, "FIN_WAIT_2")
    info = peer.lab.peer_info(conn)
    _record(peer, check, conn)
    check.observed = f"orphaned FIN_WAIT_2 kept {info['expires']:.0f} s (tcp_fin_timeout {timeout})"


# name, reference, expected, function, whether finprobe must hold the peer's
# socket (the local kernel in a Lab) to make it close or read its state.
CHECKS = [
    ("active_close", "RFC 9293 §3.6", "our FIN is ACKed; the peer enters CLOSE_WAIT", check_active_close, False),
    ("passive_close", "RFC 9293 §3.6", "the peer's FIN, then TIME_WAIT with a 2MSL timer after our FIN is ACKed",
     check_passive_close, False),
    ("fin_ack_skips_fin_wait_2", "RFC 9293 §3.10.7.4 (FIN-WAIT-1, eighth)",
     "a FIN that also ACKs the peer's FIN takes it from FIN_WAIT_1 to TIME_WAIT", check_fin_ack_skips_fin_wait_2,
     True),
    ("last_ack_retransmits_fin", "RFC 9293 §3.8.1, §3.10.8",
     "without our final ACK the peer retransmits its FIN from LAST_ACK", check_last_ack_retransmits_fin, False),
    ("time_wait_reacks_fin", "RFC 9293 §3.10.7.4 (TIME-WAIT, eighth)",
     "a retransmitted FIN in TIME_WAIT is ACKed again", check_time_wait_reacks_fin, True),
    ("simultaneous_close", "RFC 9293 §3.6, Figure 13", "crossing FINs take the peer through CLOSING",
     check_simultaneous_close, True),
    ("rst_exact", "RFC 5961 §3.2", "a RST at RCV.NXT resets the connection silently", check_rst_exact, False),
    ("rst_in_window", "RFC 5961 §3.2", "a RST in the window but not at RCV.NXT gets a challenge ACK",
     check_rst_in_window, False),
    ("rst_out_of_window", "RFC 9293 §3.10.7.4 (first)", "a RST outside the window is dropped silently",
     check_rst_out_of_window, False),
    ("close_with_unread_data", "RFC 1122 §4.2.2.13", "closing with unread data sends RST, not FIN",
     check_close_with_unread_data, True),
    ("syn_into_time_wait", "RFC 6191, RFC 9293 §3.10.7.4", "what a new SYN into TIME_WAIT gets (no single answer)",
     check_syn_into_time_wait, True),
    ("fin_wait_2_timeout", "RFC 9293 §3.6 (no limit); Linux tcp_fin_timeout",
     "how long an orphaned FIN_WAIT_2 lives", check_fin_wait_2_timeout, True),
]


def probe(host=None, port=None, *, checks=None, on_check=None):
    """Probe how a TCP stack closes connections; returns a Report.

    ``host`` None probes the local Linux kernel in a Lab; otherwise ``host``
    and ``port`` name a server reached through ``fp.Target``. ``checks``
    limits the run to those names; ``on_check(check)`` is called as each ends.
    """
    if (host is None) != (port is None):
        raise ValueError("probe: give both host and port, or neither (the local kernel in a Lab)")
    names = [c[0] for c in CHECKS]
    if checks is not None:
        unknown = sorted(set(checks) - set(names))
        if unknown:
            raise ValueError(f"probe: unknown checks {unknown}; known: {names}")
    peer = LabPeer() if host is None else TargetPeer(host, port)
    report = Report(peer.describe(), [])
    try:
        for name, reference, expected, run, steers in CHECKS:
            if checks is not None and name not in checks:
                continue
            check = Check(name, reference, expected)
            try:
                if steers and not peer.steerable:
                    check.observed = "needs a peer whose socket finprobe holds (the local kernel in a Lab)"
                else:
                    run(peer, check)
            except _core.ExpectError as e:
                check.verdict, check.observed = "fail", str(e).splitlines()[0]
            finally:
                peer.close()
            report.checks.append(check)
            if on_check is not None:
                on_check(check)
    finally:
        peer.close()
        if hasattr(peer, "shutdown"):
            peer.shutdown()
    return report


def _record(peer, check, conn):
    check.trace = conn.trace
    if peer.steerable:
        state = peer.state(conn)
        if not check.peer_states or check.peer_states[-1] != state:
            check.peer_states.append(state)


def _rel(number, base):
    return (number - base) % 2**32


def _segment_dict(seg):
    return {"direction": seg.direction, "ts": seg.ts, "flags": seg.flags, "seq": seg.seq, "ack": seg.ack,
            "window": seg.window, "len": len(seg.payload)}
