"""fp.probe: how does a TCP stack close its connections?

Each check drives one teardown sequence against the peer and compares what
the peer did with what the RFCs say. The peer is either the local Linux
kernel in a fresh Lab (host None: finprobe also holds the server's socket,
so it can make the peer close first and read its state through sock_diag),
or a remote server (``fp.Target``), whose side finprobe cannot steer: there
the checks that need the server to close first ask it to with an HTTP/1.0
request, and those that need its socket are "skipped", saying why.

Every fact a check reports is an ``Observation`` labelled by where it comes
from, and never passed off as another kind:

  "wire"    segments seen (ours and the peer's), their flags and numbers;
  "socket"  the peer's own socket, read through sock_diag (a Lab's kernel);
  "config"  a sysctl of the peer's, read or set;
  "model"   finprobe's RFC 9293 model of the peer run over the segments: an
            inference, given where the socket cannot be read, never evidence.

Verdicts come from the wire and socket observations alone: "pass" or "fail"
for a behaviour with a right answer, "info" for a measurement without one,
"skipped" (with ``reason``) for a check that could not run against this peer.

    report = fp.probe()
    for check in report.checks:
        print(check.verdict, check.name)
        for seen in check.observations:
            print("   ", seen.source, seen.text)
"""

import collections
import dataclasses
import json
import socket
import time

from . import _core
from .trace import Trace

LAB_PORT = 8080
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: finprobe\r\n\r\n"
VERDICTS = ("pass", "fail", "info", "skipped")
SOURCES = {
    "wire": "segments seen on the wire",
    "socket": "the peer's own socket, read through sock_diag",
    "config": "a sysctl of the peer's",
    "model": "finprobe's RFC 9293 model of the peer, inferred from the segments",
}
POLL_INTERVAL = 0.002          # s between two reads of the peer's socket
FIN_TIMEOUT = 2                # s: tcp_fin_timeout while fin_wait_2_timeout measures


class Observation(collections.namedtuple("Observation", "source text")):
    """One fact a check saw: ``source`` (a key of SOURCES) and ``text``."""

    __slots__ = ()

    def __str__(self):
        return f"{self.source}: {self.text}"


class _Unmet(Exception):
    """A check cannot go on: what it saw last, and from where."""

    def __init__(self, source, text):
        super().__init__(text)
        self.source, self.text = source, text


@dataclasses.dataclass
class Check:
    """One probed behaviour: what the RFC expects, what was seen and where
    from (``observations``), and the verdict drawn from them."""

    name: str
    reference: str
    expected: str
    observations: list = dataclasses.field(default_factory=list)
    verdict: str = None            # one of VERDICTS, set by the check
    reason: str = ""               # why, for "skipped"
    trace: object = None           # fp.Trace of the connection, when there was one
    peer_states: list = dataclasses.field(default_factory=list)  # read from its socket, in turn

    @property
    def observed(self):
        """The observations as one line, each with its source."""
        return "; ".join(str(o) for o in self.observations)

    def saw(self, source, text):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
        self.observations.append(Observation(source, text))

    def judge(self, ok):
        """pass or fail, from what the check has seen."""
        self.verdict = "pass" if ok else "fail"

    def skip(self, reason):
        self.verdict, self.reason = "skipped", reason

    def __repr__(self):
        return f"<Check {self.name}: {self.verdict}>"

    def as_dict(self):
        return {"name": self.name, "reference": self.reference, "expected": self.expected,
                "verdict": self.verdict, "reason": self.reason,
                "observations": [{"source": o.source, "text": o.text} for o in self.observations],
                "observed": self.observed, "peer_states": self.peer_states,
                "segments": [_segment_dict(s) for s in (self.trace or [])]}


@dataclasses.dataclass
class Report:
    """What ``fp.probe`` found: one Check a behaviour."""

    target: str
    checks: list

    def counts(self):
        return {v: sum(c.verdict == v for c in self.checks) for v in VERDICTS}

    def __repr__(self):
        c = self.counts()
        return (f"<Report {self.target}: {c['pass']} pass, {c['fail']} fail, {c['info']} info, "
                f"{c['skipped']} skipped>")

    def as_dict(self):
        return {"target": self.target, "counts": self.counts(), "sources": SOURCES,
                "checks": [c.as_dict() for c in self.checks]}

    def to_json(self):
        return json.dumps(self.as_dict(), indent=2)


# ---- the peers -------------------------------------------------------------------


class LabPeer:
    """The local kernel in a fresh Lab for each check: finprobe holds the
    server's socket, so it can close it and read its state."""

    holds_socket = True

    def __init__(self):
        from .lab import Lab
        self._make_lab = Lab
        self.lab = self.conn = None

    def describe(self):
        return "the local Linux kernel (a Lab)"

    def open(self):
        """A fresh Lab, a connection to a kernel listener, and the kernel's socket."""
        self.close()
        self.lab = self._make_lab()
        server = self.lab.listen(LAB_PORT)
        self.conn = self.lab.connect(LAB_PORT)
        peer, _ = server.accept()
        return self.conn, peer

    def state(self, conn):
        return self.lab.peer_state(conn).value

    def close(self):
        self.conn = None
        if self.lab is not None:
            self.lab.close()
            self.lab = None


class TargetPeer:
    """A remote server: finprobe has only its own side."""

    holds_socket = False

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

    def close(self):
        """Release the last check's connection (its guard rule, its port)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def shutdown(self):
        self.target.close()


# ---- reading the peer's socket ---------------------------------------------------


def _read_state(peer, conn, check):
    """The peer's socket state now (sock_diag), kept in check.peer_states."""
    state = peer.state(conn)
    if not check.peer_states or check.peer_states[-1] != state:
        check.peer_states.append(state)
    return state


def _states_until(peer, conn, check, want, timeout=1.0):
    """Read the peer's socket until it is in ``want`` (or ``timeout`` s pass):
    every state read, in turn, each once."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        state = _read_state(peer, conn, check)
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == want or time.monotonic() >= deadline:
            return seen
        time.sleep(POLL_INTERVAL)


def _wait_state(peer, conn, check, want, timeout=1.0):
    """As _states_until, but not reaching ``want`` ends the check (fail)."""
    seen = _states_until(peer, conn, check, want, timeout)
    if seen[-1] != want:
        raise _Unmet("socket", f"the peer's socket did not reach {want} within {timeout:g} s; "
                               f"read: {' -> '.join(seen)}")


def _model(check, conn, what):
    """Where the peer's socket cannot be read: the model's state, said as such."""
    state = conn.trace.peer_states[-1] if len(conn.trace) else None
    check.saw("model", f"the peer in {state or 'an unknown state'} {what}, as RFC 9293 reads these "
                       "segments (an inference: a remote peer's socket cannot be read)")


def _follow_up(conn, check):
    """Whether the connection still exists at the peer, told by the wire: a
    keepalive-style ACK one below SND.NXT gets an ACK from a live connection
    (RFC 9293 §3.10.7.4, first check) and a RST where there is none
    (§3.10.7.1). "alive", "gone" or None (no answer)."""
    seq = (conn.snd_nxt - 1) % 2**32
    conn.send(flags="A", seq=seq)
    answer = conn.recv(timeout=1.0)
    shown = f"a follow-up ACK at seq {_rel(seq, conn.iss)} (a keepalive probe)"
    if answer is None:
        check.saw("wire", f"{shown} got no answer within 1 s")
        return None
    if "R" in answer.flags:
        check.saw("wire", f"{shown} got [{answer.flags}]: the peer has no connection left")
        return "gone"
    check.saw("wire", f"{shown} got [{answer.flags}] ack={_rel(answer.ack, conn.iss)}: the connection is alive")
    return "alive"


# ---- the checks ------------------------------------------------------------------
#
# A check function takes the peer and the Check to fill: it records what it
# sees with check.saw(source, text) and ends with check.judge(ok) (ok computed
# from those observations), check.verdict = "info" for a measurement, or
# check.skip(reason). A failed expectation (fp.ExpectError: a segment that did
# not come as expected) is a "fail" with its message, seen on the wire.


def _peer_closes(conn, sock):
    """Make the peer send its FIN: shut the kernel socket down, or ask an HTTP
    server for a page (HTTP/1.0: it closes after answering), ACKing its data.
    Its FIN segment, or None when a server did not close."""
    if sock is not None:
        sock.shutdown(socket.SHUT_WR)
        return conn.expect("FA")
    conn.write(HTTP_REQUEST)
    while True:
        seg = conn.recv(timeout=3.0)
        if seg is None or "F" in seg.flags:
            return seg
        if seg.payload:
            conn.ack()


def check_active_close(peer, check):
    conn, sock = peer.open()
    fin = conn.fin()
    ack = conn.expect(timeout=2.0)
    acked = "A" in ack.flags and ack.ack == (fin.seq + 1) % 2**32
    check.saw("wire", f"our FIN at seq {_rel(fin.seq, conn.iss)} answered by [{ack.flags}] "
                      f"ack={_rel(ack.ack, conn.iss)}")
    if not peer.holds_socket:
        _model(check, conn, "after our FIN")
        return check.judge(acked)
    state = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {state} after it")
    check.judge(acked and state == "CLOSE_WAIT")


def check_passive_close(peer, check):
    conn, sock = peer.open()
    theirs = _peer_closes(conn, sock)
    if theirs is None:
        return check.skip("the server did not close within 3 s of an HTTP/1.0 request: "
                          "it cannot be made to close first")
    conn.ack()
    ours = conn.fin()
    ack = conn.expect(timeout=2.0)
    acked = "A" in ack.flags and ack.ack == (ours.seq + 1) % 2**32
    check.saw("wire", f"its FIN [{theirs.flags}] at seq {_rel(theirs.seq + len(theirs.payload), conn.irs)}, "
                      f"ACKed by us; our FIN at seq {_rel(ours.seq, conn.iss)} answered by [{ack.flags}] "
                      f"ack={_rel(ack.ack, conn.iss)}")
    if not peer.holds_socket:
        _model(check, conn, "after our FIN is ACKed")
        return check.judge(acked)
    seen = _states_until(peer, conn, check, "TIME_WAIT")
    info = peer.lab.peer_info(conn)
    check.saw("socket", f"read until TIME_WAIT: {' -> '.join(seen)}; {_timer(info)} when read once")
    check.judge(acked and seen[-1] == "TIME_WAIT" and info["timer"] == "timewait")


def check_fin_ack_skips_fin_wait_2(peer, check):
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    theirs = conn.expect("FA")
    before = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {before} after sending its FIN, before our segment")
    ours = conn.fin()
    acks_theirs = ours.ack == (theirs.seq + 1) % 2**32
    answer = conn.expect("A", timeout=2.0)
    acked = answer.ack == (ours.seq + 1) % 2**32
    check.saw("wire", f"our one segment [{ours.flags}] ack={_rel(ours.ack, conn.irs)} "
                      f"({'acks' if acks_theirs else 'does not ack'} its FIN) carries our FIN; "
                      f"its answer [{answer.flags}] ack={_rel(answer.ack, conn.iss)}"
                      f"{'' if acked else ' (not acking our FIN)'}")
    after = _states_until(peer, conn, check, "TIME_WAIT")
    check.saw("socket", f"read after its answer, until TIME_WAIT: {' -> '.join(after)}")
    check.judge(before == "FIN_WAIT_1" and acks_theirs and acked and after[-1] == "TIME_WAIT"
                and "FIN_WAIT_2" not in after)


def check_last_ack_retransmits_fin(peer, check):
    conn, sock = peer.open()
    ours = conn.fin()
    if sock is not None:
        conn.expect("A", ack=conn.snd_nxt, timeout=2.0)
        sock.close()
    first = _next_fin(conn)    # a remote server closes when it reads our EOF
    if first is None:
        if not peer.holds_socket:
            return check.skip("the server did not close within 3 s of our FIN: its LAST_ACK cannot be reached")
        check.saw("wire", "no FIN from the peer within 3 s of closing its socket")
        return check.judge(False)
    check.saw("wire", f"after our FIN at seq {_rel(ours.seq, conn.iss)}, its FIN [{first.flags}] "
                      f"at seq {_rel(first.seq, conn.irs)}, which we do not ACK")
    again = conn.recv(timeout=3.0)
    if again is None:
        check.saw("wire", "no retransmission within 3 s")
        return check.judge(False)
    same = "F" in again.flags and again.seq == first.seq
    check.saw("wire", f"[{again.flags}] seq={_rel(again.seq, conn.irs)} {again.ts - first.ts:.3f} s later"
                      f"{'' if same else ' (not its FIN again)'}")
    if not peer.holds_socket:
        _model(check, conn, "while it retransmits")
        conn.ack()
        return check.judge(same)
    info = peer.lab.peer_info(conn)
    _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {info['state'].value}, {info['retransmits']} "
                        f"retransmission(s) counted")
    conn.ack()
    check.judge(same and info["state"] == "LAST_ACK" and info["retransmits"] >= 1)


def _next_fin(conn, timeout=3.0):
    """The peer's next FIN (ACKs before it taken), or None."""
    while True:
        seg = conn.recv(timeout=timeout)
        if seg is None or "F" in seg.flags:
            return seg


def _peer_in_time_wait(peer, check):
    """A connection the kernel closed first, through to its TIME_WAIT (read
    from its socket); our FIN, and the kernel's ACK of it."""
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    conn.expect("FA")
    our_fin = conn.fin()
    ack = conn.expect("A", ack=conn.snd_nxt)
    _wait_state(peer, conn, check, "TIME_WAIT")
    check.saw("socket", "the peer's socket in TIME_WAIT (it closed first, then took our FIN)")
    return conn, our_fin, ack


def check_time_wait_reacks_fin(peer, check):
    conn, our_fin, first = _peer_in_time_wait(peer, check)
    conn.send(flags="FA", seq=our_fin.seq)     # as if the kernel's ACK had been lost
    again = conn.recv(timeout=1.0)
    if again is None:
        check.saw("wire", "no answer to our retransmitted FIN within 1 s")
        return check.judge(False)
    same = again.flags == "A" and again.ack == first.ack
    check.saw("wire", f"our FIN again at seq {_rel(our_fin.seq, conn.iss)} answered by [{again.flags}] "
                      f"ack={_rel(again.ack, conn.iss)} (its first ACK: ack={_rel(first.ack, conn.iss)})")
    state = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {state} after it")
    check.judge(same and state == "TIME_WAIT")


def check_simultaneous_close(peer, check):
    conn, sock = peer.open()
    sock.shutdown(socket.SHUT_WR)
    _wait_state(peer, conn, check, "FIN_WAIT_1")
    check.saw("socket", "the peer's socket in FIN_WAIT_1 (its FIN sent) before our FIN")
    ours = conn.fin()                          # crosses the kernel's FIN: does not ack it
    theirs = conn.expect("FA")
    crossed = theirs.ack == ours.seq           # its FIN left before ours arrived
    ack = conn.expect("A", ack=conn.snd_nxt)
    check.saw("wire", f"its FIN ack={_rel(theirs.ack, conn.iss)} "
                      f"({'crossing' if crossed else 'acking'} our FIN at seq {_rel(ours.seq, conn.iss)}), "
                      f"then [{ack.flags}] ack={_rel(ack.ack, conn.iss)}")
    seen = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {seen} after acking our FIN, before our ACK of its FIN")
    conn.ack()
    after = _states_until(peer, conn, check, "TIME_WAIT")
    check.saw("socket", f"after our ACK: {' -> '.join(after)}")
    check.judge(crossed and seen == "CLOSING" and after[-1] == "TIME_WAIT")


def _rst(peer, check, offset, wait):
    """Send a RST ``offset`` past SND.NXT: the peer's answer within ``wait``
    s, and its socket's state where it can be read (else None)."""
    conn, _ = peer.open()
    conn.send(flags="R", seq=(conn.snd_nxt + offset) % 2**32)
    answer = conn.recv(timeout=wait)
    where = "at RCV.NXT" if offset == 0 else f"{offset} past RCV.NXT"
    check.saw("wire", f"our RST {where} got "
                      + (f"nothing within {wait:g} s" if answer is None
                         else f"[{answer.flags}] ack={_rel(answer.ack, conn.iss)}"))
    state = None
    if peer.holds_socket:
        state = _read_state(peer, conn, check)
        check.saw("socket", f"the peer's socket {'gone' if state == 'CLOSED' else 'in ' + state} after it")
    return conn, answer, state


def check_rst_exact(peer, check):
    conn, answer, state = _rst(peer, check, 0, 0.3)
    gone = state == "CLOSED" if peer.holds_socket else _follow_up(conn, check) == "gone"
    check.judge(answer is None and gone)


def check_rst_in_window(peer, check):
    conn, answer, state = _rst(peer, check, 10, 0.5)
    challenge = answer is not None and answer.flags == "A" and answer.ack == conn.snd_nxt
    check.judge(challenge and (state == "ESTABLISHED" or not peer.holds_socket))


def check_rst_out_of_window(peer, check):
    conn, answer, state = _rst(peer, check, 10**8, 0.3)
    alive = state == "ESTABLISHED" if peer.holds_socket else _follow_up(conn, check) == "alive"
    check.judge(answer is None and alive)


def check_close_with_unread_data(peer, check):
    conn, sock = peer.open()
    conn.write(b"never read")
    conn.expect("A")
    time.sleep(0.01)                           # let the data reach the socket's queue
    sock.close()
    answer = conn.recv(timeout=1.0)
    check.saw("wire", "10 bytes of ours unread, the peer's close() sent "
                      + ("nothing within 1 s" if answer is None else f"[{answer.flags}]"))
    state = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket {'gone' if state == 'CLOSED' else 'in ' + state} after it")
    check.judge(answer is not None and "R" in answer.flags and "F" not in answer.flags and state == "CLOSED")


def check_syn_into_time_wait(peer, check):
    conn, _, _ = _peer_in_time_wait(peer, check)
    sport, iss = conn.local[1], (conn.snd_nxt + 100000) % 2**32
    old = conn.trace
    conn.close()
    new = peer.lab.open(LAB_PORT, sport=sport, iss=iss)
    new.send(flags="S", options=[("mss", 1460)])
    answer = new.recv(timeout=1.0)
    fresh = new.trace
    check.trace = Trace(list(old) + list(fresh), old.states + fresh.states)
    check.saw("wire", "a new SYN on its 4-tuple, 100000 above our old SND.NXT, got "
                      + ("nothing within 1 s" if answer is None else f"[{answer.flags}]"))
    state = _read_state(peer, conn=new, check=check)
    check.saw("socket", f"the peer's socket for the 4-tuple in {state} after it")
    check.verdict = "info"


def check_fin_wait_2_timeout(peer, check):
    conn, sock = peer.open()
    name = "net.ipv4.tcp_fin_timeout"
    default = peer.lab.sysctl(name)
    peer.lab.sysctl(name, FIN_TIMEOUT)
    check.saw("config", f"{name} = {default} in a fresh Lab; set to {peer.lab.sysctl(name)} for this measurement")
    sock.close()
    conn.expect("FA")
    ack = conn.ack()
    _wait_state(peer, conn, check, "FIN_WAIT_2")
    info = peer.lab.peer_info(conn)
    check.saw("socket", f"the orphaned socket in FIN_WAIT_2, {_timer(info)} when first read")
    after = _states_until(peer, conn, check, "CLOSED", timeout=FIN_TIMEOUT + 5)
    kept = time.monotonic() - ack.ts
    if after[-1] != "CLOSED":
        check.saw("socket", f"still in {after[-1]} {kept:.1f} s after our ACK of its FIN (no longer waited)")
    else:
        check.saw("socket", f"the orphaned FIN_WAIT_2 kept {kept:.2f} s from our ACK of its FIN "
                            f"until its socket was gone (polled {POLL_INTERVAL * 1000:g} ms apart)")
    check.verdict = "info"


# name, reference, what is expected (on the wire, or of the peer's socket
# where the check needs it), what more is expected of the peer's socket
# where it can be read, the function, and why the check needs the peer's
# socket (None: it runs against any peer).
Spec = collections.namedtuple("Spec", "name reference expected of_socket run needs_socket")

CHECKS = [
    Spec("active_close", "RFC 9293 §3.6", "our FIN is ACKed", "the peer's socket enters CLOSE_WAIT",
         check_active_close, None),
    Spec("passive_close", "RFC 9293 §3.6", "the peer's FIN, then its ACK of ours",
         "the peer's socket is in TIME_WAIT, its timer running", check_passive_close, None),
    Spec("fin_ack_skips_fin_wait_2", "RFC 9293 §3.10.7.4 (FIN-WAIT-1, eighth)",
         "one segment of ours that ACKs the peer's FIN and carries ours takes its socket from FIN_WAIT_1 "
         "straight to TIME_WAIT (no FIN_WAIT_2 read)", None, check_fin_ack_skips_fin_wait_2,
         "reads the peer's socket state before and after our FIN+ACK"),
    Spec("last_ack_retransmits_fin", "RFC 9293 §3.8.1, §3.10.8",
         "without our final ACK the peer retransmits its FIN", "its socket is in LAST_ACK meanwhile",
         check_last_ack_retransmits_fin, None),
    Spec("time_wait_reacks_fin", "RFC 9293 §3.10.7.4 (TIME-WAIT, eighth)",
         "a retransmitted FIN to the peer's socket in TIME_WAIT is ACKed again, and it stays there", None,
         check_time_wait_reacks_fin, "must know the peer's socket is in TIME_WAIT"),
    Spec("simultaneous_close", "RFC 9293 §3.6, Figure 13",
         "crossing FINs take the peer's socket through CLOSING to TIME_WAIT", None,
         check_simultaneous_close, "closes the peer's socket at a chosen moment and reads CLOSING from it"),
    Spec("rst_exact", "RFC 5961 §3.2", "a RST at RCV.NXT resets the connection silently", None,
         check_rst_exact, None),
    Spec("rst_in_window", "RFC 5961 §3.2", "a RST in the window but not at RCV.NXT gets a challenge ACK",
         "the peer's socket stays ESTABLISHED", check_rst_in_window, None),
    Spec("rst_out_of_window", "RFC 9293 §3.10.7.4 (first)",
         "a RST outside the window is dropped silently, the connection alive", None,
         check_rst_out_of_window, None),
    Spec("close_with_unread_data", "RFC 1122 §4.2.2.13",
         "closing a socket with unread data sends RST, not FIN, and the socket is gone", None,
         check_close_with_unread_data, "closes the peer's socket with our data unread"),
    Spec("syn_into_time_wait", "RFC 6191, RFC 9293 §3.10.7.4",
         "what a new SYN into the peer's TIME_WAIT gets (no single answer)", None,
         check_syn_into_time_wait, "must know the peer's socket is in TIME_WAIT, and reads it after the SYN"),
    Spec("fin_wait_2_timeout", "RFC 9293 §3.6 (no limit); Linux tcp_fin_timeout",
         f"how long an orphaned FIN_WAIT_2 lives, measured with tcp_fin_timeout set to {FIN_TIMEOUT} s", None,
         check_fin_wait_2_timeout, "orphans the peer's socket, sets one of its sysctls and reads its socket"),
]


def _expected(spec, peer):
    """What a check claims to test against this peer: the socket part only
    where the socket can be read, else said to be left unchecked."""
    if spec.of_socket is None:
        return spec.expected
    if peer.holds_socket:
        return f"{spec.expected}; {spec.of_socket}"
    return f"{spec.expected} (not checked: that {spec.of_socket}, as a remote peer's socket cannot be read)"


def probe(host=None, port=None, *, checks=None, on_check=None):
    """Probe how a TCP stack closes connections; returns a Report.

    ``host`` None probes the local Linux kernel in a Lab; otherwise ``host``
    and ``port`` name a server reached through ``fp.Target``. ``checks``
    limits the run to those names; ``on_check(check)`` is called as each ends.
    """
    if (host is None) != (port is None):
        raise ValueError("probe: give both host and port, or neither (the local kernel in a Lab)")
    names = [spec.name for spec in CHECKS]
    if checks is not None:
        unknown = sorted(set(checks) - set(names))
        if unknown:
            raise ValueError(f"probe: unknown checks {unknown}; known: {names}")
    peer = LabPeer() if host is None else TargetPeer(host, port)
    report = Report(peer.describe(), [])
    try:
        for spec in CHECKS:
            if checks is not None and spec.name not in checks:
                continue
            report.checks.append(_run(spec, peer))
            if on_check is not None:
                on_check(report.checks[-1])
    finally:
        peer.close()
        if hasattr(peer, "shutdown"):
            peer.shutdown()
    return report


def _run(spec, peer):
    check = Check(spec.name, spec.reference, _expected(spec, peer))
    if spec.needs_socket and not peer.holds_socket:
        check.skip(f"needs the peer's own socket, which finprobe holds only for a Lab's kernel: "
                   f"it {spec.needs_socket}")
        return check
    try:
        spec.run(peer, check)
    except _core.ExpectError as e:
        check.saw("wire", str(e).splitlines()[0])
        check.verdict = "fail"
    except _Unmet as e:
        check.saw(e.source, e.text)
        check.verdict = "fail"
    finally:
        if check.trace is None and peer.conn is not None:
            check.trace = peer.conn.trace
        peer.close()
    if check.verdict not in VERDICTS:
        raise AssertionError(f"finprobe: check {spec.name} ended without a verdict")
    return check


def _timer(info):
    """A socket's timer as sock_diag gave it, for an observation."""
    if info["timer"] is None:
        return "no timer running"
    return f"its {info['timer']} timer at {info['expires']:.1f} s left"


def _rel(number, base):
    return (number - base) % 2**32


def _segment_dict(seg):
    return {"direction": seg.direction, "ts": seg.ts, "flags": seg.flags, "seq": seg.seq, "ack": seg.ack,
            "window": seg.window, "len": len(seg.payload)}
