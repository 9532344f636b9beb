"""fp.probe: how does a TCP stack close its connections?

Each check drives one teardown sequence against the peer and compares what
the peer did with what the RFCs say. The peer is one of three kinds (the
``Peer`` classes below), which differ in two things only: whether finprobe
holds the peer's socket (and so can read its state through sock_diag), and
how the peer is made to close first or after us.

  the local Linux kernel in a fresh Lab (host None): finprobe holds the
      server's socket; shutting it down makes the kernel close first,
      closing it makes it close after us;
  a remote server (``fp.Target``, host and port) and a user-space stack in a
      Lab (``stack=``): no socket; the port must serve HTTP (API.md, "The
      state x event matrix"): ``GET / HTTP/1.0`` makes the server answer and
      close first, and our FIN before any request makes it close after us.

Every check that packets alone can drive runs against every kind; only the
parts that read the peer's socket are left out where there is none, said in
the check's ``expected``. Whether a connection survived an event is told by
the wire where the socket cannot say: a follow-up segment (a keepalive probe)
gets an ACK from a live connection and a RST where there is none. Timed
behaviours are measured the same way on the wire (TBIT's method: many
connections put in the state together, each probed once at its own time);
the long ones only with ``slow=True``.

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
        print(check.verdict, check.name, check.value)
        for seen in check.observations:
            print("   ", seen.source, seen.text)

``fp.compare(["linux", "192.0.2.1:80", "lwip"])`` probes several peers and
puts the reports side by side (a row a check, a column a peer).
"""

import collections
import dataclasses
import html
import json
import shlex
import socket
import time

from . import _args, _core, stacks
from . import profile as _profile
from .trace import Trace

LAB_PORT = 8080
STACK_PORT = 8080              # the port a stack recipe serves HTTP on, in fp.compare
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: finprobe\r\n\r\n"
VERDICTS = ("pass", "fail", "info", "skipped")
SOURCES = {
    "wire": "segments seen on the wire",
    "socket": "the peer's own socket, read through sock_diag",
    "config": "a sysctl of the peer's",
    "model": "finprobe's RFC 9293 model of the peer, inferred from the segments",
    "process": "the peer's process (a stack Lab's command): how it ended, what it printed",
    "stack": "the stack's own word on its state, asked on its control socket",
}
CONNECT_TIMEOUT = 3.0          # s for the peer's SYN-ACK (fp.Target.connect's default)
POLL_INTERVAL = 0.002          # s between two reads of the peer's socket
FIN_TIMEOUT = 2                # s: tcp_fin_timeout while fin_wait_2_timeout measures a Lab
UNREAD_CHUNKS = 12             # segments of 1000 bytes pipelined after the request (more than
                               #   a server's first read: http.server buffers 8192 bytes)
# Timed behaviours, measured on the wire: (connections, horizon in s) for a
# quick run and for --slow (Linux keeps TIME_WAIT 60 s and an orphaned
# FIN_WAIT_2 tcp_fin_timeout = 60 s; lwIP 20 s).
LIFETIME_QUICK = (6, 3.0)
LIFETIME_SLOW = (30, 150.0)
# The peer's FIN retransmissions followed: (at most, horizon in s).
RETRANSMISSIONS_QUICK = (3, 6.0)
RETRANSMISSIONS_SLOW = (10, 240.0)


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


class _Undriven(Exception):
    """The peer could not be driven where the check needs it (an HTTP server
    that does not close after its answer): the check is skipped, saying why."""


@dataclasses.dataclass
class Check:
    """One probed behaviour: what the RFC expects, what was seen and where
    from (``observations``), the verdict drawn from them, and ``value``: the
    one short thing seen that a comparison table shows ("[A] ack=2", "gone")."""

    name: str
    reference: str
    expected: str
    observations: list = dataclasses.field(default_factory=list)
    verdict: str = None            # one of VERDICTS, set by the check
    reason: str = ""               # why, for "skipped"
    trace: object = None           # fp.Trace of the connection(s), when there was one
    peer_states: list = dataclasses.field(default_factory=list)  # read from it (socket or stack), in turn
    value: str = ""                # short: what was seen, for a table

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
                "verdict": self.verdict, "reason": self.reason, "value": self.value,
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
#
# A check asks its peer for connections (open: the first of the check, in a
# fresh setting where the kind has one; another: more beside it; reopen: a
# new one on an old 4-tuple, nothing sent) and for the peer's part of a
# close (close_first, close_after, close_unread). Only KernelPeer has a
# socket (holds_socket: its sock_diag facts, timers and counters, and its
# sysctls); the HTTP peers differ from each other only in where their
# connections come from. A peer's ``state_source`` says who tells its
# connections' states (peer.state(conn)): "socket" (the kernel's, sock_diag),
# "stack" (a stack Lab's command with a control socket, its own word), or
# None (nobody: the model's inference only).


class KernelPeer:
    """The local kernel in a fresh Lab for each check: finprobe holds the
    server's socket, so it can close it and read its state."""

    holds_socket = True
    state_source = "socket"

    def __init__(self, ipv6=False):
        from .lab import Lab
        self._make_lab = lambda: Lab(ipv6=ipv6)
        self.lab = self.server = None
        self.conns = []

    def describe(self):
        return "the local Linux kernel (a Lab)"

    def begin(self):
        """A fresh Lab with a kernel listener, for a check."""
        self.release()
        self.lab = self._make_lab()
        self.server = self.lab.listen(LAB_PORT)

    def open(self):
        """A fresh Lab; a connection to its listener and the kernel's socket."""
        self.begin()
        return self.another()

    def another(self):
        conn = self.lab.connect(LAB_PORT)
        self.conns.append(conn)
        sock, _ = self.server.accept()
        return conn, sock

    def reopen(self, sport, iss):
        conn = self.lab.open(LAB_PORT, sport=sport, iss=iss)
        self.conns.append(conn)
        return conn

    def state(self, conn):
        return self.lab.peer_state(conn).value

    # the peer's part of a close: its socket's calls

    def close_first(self, conn, sock, orphan=False):
        """The kernel's FIN, sent by shutting its socket down, or with
        ``orphan`` by closing it, as a server does (its FIN segment)."""
        if orphan:
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
        return conn.expect("FA")

    def close_after(self, conn, sock):
        """After our FIN (ACKed): the kernel closes its socket."""
        conn.expect("A", ack=conn.snd_nxt, timeout=2.0)
        sock.close()

    def close_unread(self, conn, sock):
        """The kernel's socket closed with 10 bytes of ours unread."""
        conn.write(b"never read")
        conn.expect("A")
        time.sleep(0.01)                       # let the data reach the socket's queue
        sock.close()
        return "10 bytes of ours unread, the peer's close()"

    def release(self):
        self.conns = []
        self.server = None
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def shutdown(self):
        self.release()


class HttpPeer:
    """A peer without a socket finprobe reads, serving HTTP: a request makes
    it answer and close first; our FIN before any request makes it close
    after us. Subclasses say where connections come from (_open)."""

    holds_socket = False
    state_source = None

    def __init__(self):
        self.conns = []

    def begin(self):
        self.release()

    def open(self):
        self.begin()
        return self.another()

    def another(self):
        """A new connection, kept before its handshake, so that a check
        whose SYN goes unanswered still has the segments it sent."""
        conn = self._open(None, None)
        self.conns.append(conn)
        conn._handshake(self.describe(), None, CONNECT_TIMEOUT)
        return conn, None

    def reopen(self, sport, iss):
        conn = self._open(sport, iss)
        self.conns.append(conn)
        return conn

    def close_first(self, conn, sock, orphan=False):
        """Ask for a page (HTTP/1.0: the server closes after answering; its
        socket is an orphan then, whatever ``orphan`` says), ACKing its data
        but not its FIN: its FIN segment."""
        conn.write(HTTP_REQUEST)
        fin = _next_fin(conn, ack_data=True)
        if fin is None:
            raise _Undriven("the server did not close within 3 s of an HTTP/1.0 request: "
                            "it cannot be made to close first")
        return fin

    def close_after(self, conn, sock):
        """Nothing to do: our FIN before a request makes the server close."""

    def close_unread(self, conn, sock):
        """A request, then more bytes than a server's first read takes,
        pipelined at once: what the server does not read is unread when it
        closes after answering."""
        conn.write(HTTP_REQUEST)
        for _ in range(UNREAD_CHUNKS):
            conn.write(b"x" * 1000)
        return f"an HTTP/1.0 request, then {UNREAD_CHUNKS * 1000} bytes pipelined after it, the server's close"

    def release(self):
        """End the last check's connections (their guard rules, their ports)."""
        for conn in self.conns:
            conn.close()
        self.conns = []


class TargetPeer(HttpPeer):
    """A remote server, through fp.Target."""

    def __init__(self, host, port):
        super().__init__()
        from .target import Target
        self.target = Target(host, port)
        self.name = _args.endpoint(self.target.addr, port) if host == self.target.addr else f"{host}:{port}"

    def describe(self):
        return self.name

    def _open(self, sport, iss):
        return self.target.open(sport=sport, iss=iss)

    def shutdown(self):
        self.release()
        self.target.close()


class StackPeer(HttpPeer):
    """A user-space TCP stack on a TAP device in a Lab (fp.Lab(stack=...)),
    one Lab for the whole probe (starting a stack takes longer than a
    check), started again for the next check if a check killed it."""

    def __init__(self, stack, env, port, ipv6=False):
        super().__init__()
        self.stack, self.env, self.ipv6 = list(stack), env, ipv6
        self.command = " ".join(shlex.quote(a) for a in stack)
        self.port = port
        self.lab = None
        self._start()

    def _start(self):
        from .lab import Lab
        self.lab = Lab(stack=self.stack, env=self.env, ipv6=self.ipv6)

    def describe(self):
        return f"the stack `{self.command}` (a Lab), port {self.port}"

    @property
    def state_source(self):
        """"stack" where its command holds {control} (the Lab asks the stack), else None."""
        return "stack" if self.lab.peer_state_source == "stack" else None

    def state(self, conn):
        """The stack's own state for conn; a stack that cannot say ends the
        check, said as the stack's (its death, if it died, is added by _run)."""
        try:
            return self.lab.peer_state(conn).value
        except _core.Error as e:
            raise _Unmet("stack", f"the stack did not tell its state: {e}") from None

    def begin(self):
        super().begin()
        if self.lab.stack.poll() is not None:  # the last check ended it
            self.lab.close()
            self._start()

    def death(self):
        """How the stack's process ended, with its last output; None while it runs."""
        code = self.lab.stack.poll()
        if code is None:
            return None
        return f"the stack exited with status {code}; its last output: {self.lab._stack_tail()!r}"

    def _open(self, sport, iss):
        return self.lab.open(self.port, sport=sport, iss=iss)

    def shutdown(self):
        self.release()
        self.lab.close()


# ---- reading the peer's socket ---------------------------------------------------


def _read_state(peer, conn, check):
    """The peer's state now (its socket's through sock_diag, or a telling
    stack's own word), kept in check.peer_states."""
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


def _whose(peer):
    """Whose state an observation of peer.state_source reports."""
    return "the peer's socket" if peer.state_source == "socket" else "the stack's connection"


def _told(peer, conn, check, what):
    """A telling stack's own state now, seen as "stack" beside the model's
    line (no verdict rests on it: a server's close after our FIN or its
    answer moves its state on its own time); None for any other peer."""
    if peer.state_source != "stack":
        return None
    state = _read_state(peer, conn, check)
    check.saw("stack", f"{_whose(peer)} in {state} {what}")
    return state


def _told_until(peer, conn, check, want, what):
    """As _told, the stack's state read until ``want`` (1 s at most), each state once."""
    if peer.state_source != "stack":
        return None
    seen = _states_until(peer, conn, check, want)
    check.saw("stack", f"{_whose(peer)} {what}, read until {want}: {' -> '.join(seen)}")
    return seen


def _model(check, conn, what):
    """Where the peer's socket cannot be read: the model's state, said as such."""
    state = conn.trace.peer_states[-1] if len(conn.trace) else None
    check.saw("model", f"the peer in {state or 'an unknown state'} {what}, as RFC 9293 reads these "
                       "segments (an inference: this peer's socket cannot be read)")


# ---- the wire's answers --------------------------------------------------------


def _keepalive(conn):
    """A keepalive probe: one byte at SND.NXT-1, already acknowledged, so
    never delivered. A live connection answers with an ACK (RFC 9293
    §3.10.7.4, first check: an unacceptable segment), one that is gone with a
    RST (§3.10.7.1). It carries a byte, not a bare ACK, because Linux limits
    its answers to bare out-of-window ACKs to one each 500 ms per socket
    (tcp_invalid_ratelimit), which a challenge ACK just before may have used."""
    seq = (conn.snd_nxt - 1) % 2**32
    return conn.send(b"\0", flags="A", seq=seq)


def _liveness(answer):
    """What an answer to a probe says: "alive" (an ACK), "gone" (a RST), None (nothing)."""
    if answer is None:
        return None
    return "gone" if "R" in answer.flags else "alive"


def _follow_up(conn, check, wait=1.0):
    """Whether the connection still exists at the peer, told by the wire (a
    keepalive probe): "alive", "gone" or None (no answer within ``wait`` s).
    Segments still queued before the probe was sent are passed over."""
    while conn.recv(timeout=0) is not None:
        pass
    probe = _keepalive(conn)
    answer = conn.recv(timeout=wait)
    shown = f"a follow-up keepalive probe (1 byte at seq {_rel(probe.seq, conn.iss)}, already ACKed)"
    alive = _liveness(answer)
    if alive is None:
        check.saw("wire", f"{shown} got no answer within {wait:g} s")
    elif alive == "gone":
        check.saw("wire", f"{shown} got [{answer.flags}]: the peer has no connection left")
    else:
        check.saw("wire", f"{shown} got [{answer.flags}] ack={_rel(answer.ack, conn.iss)}: "
                          "the connection is alive")
    return alive


def _next_fin(conn, timeout=3.0, ack_data=False):
    """The peer's next FIN, or None; the segments before it taken (their
    data ACKed with ``ack_data``, the FIN itself not). A RST instead ends
    the check: the peer did not close."""
    while True:
        seg = conn.recv(timeout=timeout)
        if seg is None or "F" in seg.flags:
            return seg
        if "R" in seg.flags:
            raise _Unmet("wire", f"the peer reset the connection ([{seg.flags}]) where it was to close it")
        if ack_data and seg.payload:
            conn.ack()


def _fin_seq(seg):
    """The sequence number of a segment's FIN."""
    return (seg.seq + len(seg.payload) + ("S" in seg.flags)) % 2**32


def _answer(seg, conn):
    """A segment of the peer's, short: [flags] ack=relative."""
    if seg is None:
        return "nothing"
    if "A" not in seg.flags:  # its ack field means nothing
        return f"[{seg.flags}]"
    return f"[{seg.flags}] ack={_rel(seg.ack, conn.iss)}"


# ---- the checks ------------------------------------------------------------------
#
# A check function takes the peer and the Check to fill: it records what it
# sees with check.saw(source, text) and ends with check.judge(ok) (ok computed
# from those observations), check.verdict = "info" for a measurement, or
# check.skip(reason); check.value is the short thing seen. A failed
# expectation (fp.ExpectError: a segment that did not come as expected) is a
# "fail" with its message, seen on the wire.


def _judge_by_state(peer, conn, check, ok, want, when):
    """Judge ``ok`` (from the wire) and, where the peer's socket is read, that
    it is in ``want`` now; elsewhere the model's reading and a telling stack's
    own word are said beside it, ``when``."""
    if not peer.holds_socket:
        _model(check, conn, when)
        _told(peer, conn, check, when)
        return check.judge(ok)
    state = _read_state(peer, conn, check)
    check.saw("socket", f"the peer's socket in {state} after it")
    return check.judge(ok and state == want)


def check_active_close(peer, check):
    conn, sock = peer.open()
    fin = conn.fin()
    ack = conn.expect(timeout=2.0)
    acked = "A" in ack.flags and ack.ack == (fin.seq + 1) % 2**32
    check.value = _answer(ack, conn)
    check.saw("wire", f"our FIN at seq {_rel(fin.seq, conn.iss)} answered by [{ack.flags}] "
                      f"ack={_rel(ack.ack, conn.iss)}")
    _judge_by_state(peer, conn, check, acked, "CLOSE_WAIT", "after our FIN")


def check_passive_close(peer, check):
    conn, sock = peer.open()
    theirs = peer.close_first(conn, sock)
    conn.ack()
    ours = conn.fin()
    ack = conn.expect(timeout=2.0)
    acked = "A" in ack.flags and ack.ack == (ours.seq + 1) % 2**32
    check.value = f"FIN, then {_answer(ack, conn)}"
    check.saw("wire", f"its FIN [{theirs.flags}] at seq {_rel(_fin_seq(theirs), conn.irs)}, "
                      f"ACKed by us; our FIN at seq {_rel(ours.seq, conn.iss)} answered by [{ack.flags}] "
                      f"ack={_rel(ack.ack, conn.iss)}")
    if not peer.holds_socket:
        _model(check, conn, "after our FIN is ACKed")
        _told_until(peer, conn, check, "TIME_WAIT", "after our FIN is ACKed")
        return check.judge(acked)
    seen = _states_until(peer, conn, check, "TIME_WAIT")
    info = peer.lab.peer_info(conn)
    check.saw("socket", f"read until TIME_WAIT: {' -> '.join(seen)}; {_timer(info)} when read once")
    check.judge(acked and seen[-1] == "TIME_WAIT" and info["timer"] == "timewait")


def check_fin_ack_skips_fin_wait_2(peer, check):
    conn, sock = peer.open()
    theirs = peer.close_first(conn, sock)      # taken, not ACKed: the peer is in FIN_WAIT_1
    if peer.holds_socket:
        before = _read_state(peer, conn, check)
        check.saw("socket", f"the peer's socket in {before} after sending its FIN, before our segment")
    else:
        _told(peer, conn, check, "after sending its FIN, before our segment")
    ours = conn.fin()
    acks_theirs = ours.ack == (_fin_seq(theirs) + 1) % 2**32
    answer = conn.expect("A", timeout=2.0)
    acked = answer.ack == (ours.seq + 1) % 2**32
    check.value = _answer(answer, conn)
    check.saw("wire", f"our one segment [{ours.flags}] ack={_rel(ours.ack, conn.irs)} "
                      f"({'acks' if acks_theirs else 'does not ack'} its FIN) carries our FIN; "
                      f"its answer [{answer.flags}] ack={_rel(answer.ack, conn.iss)}"
                      f"{'' if acked else ' (not acking our FIN)'}")
    if not peer.holds_socket:
        _model(check, conn, "after its ACK of our FIN")
        _told_until(peer, conn, check, "TIME_WAIT", "after its answer")
        return check.judge(acks_theirs and acked)
    after = _states_until(peer, conn, check, "TIME_WAIT")
    check.saw("socket", f"read after its answer, until TIME_WAIT: {' -> '.join(after)}")
    check.judge(before == "FIN_WAIT_1" and acks_theirs and acked and after[-1] == "TIME_WAIT"
                and "FIN_WAIT_2" not in after)


def check_last_ack_retransmits_fin(peer, check, slow=False):
    conn, sock = peer.open()
    ours = conn.fin()
    peer.close_after(conn, sock)
    first = _next_fin(conn)
    if first is None:
        if not peer.holds_socket:
            raise _Undriven("the server did not close within 3 s of our FIN: its LAST_ACK cannot be reached")
        check.saw("wire", "no FIN from the peer within 3 s of closing its socket")
        return check.judge(False)
    check.saw("wire", f"after our FIN at seq {_rel(ours.seq, conn.iss)}, its FIN [{first.flags}] "
                      f"at seq {_rel(_fin_seq(first), conn.irs)}, which we do not ACK")
    most, horizon = RETRANSMISSIONS_SLOW if slow else RETRANSMISSIONS_QUICK
    again, other, quiet = _retransmissions(conn, first, most, horizon)
    if not again:
        check.saw("wire", f"no retransmission within {horizon:g} s")
        check.value = "none"
        return check.judge(False)
    gaps, last = [], first.ts
    for seg in again:
        gaps.append(seg.ts - last)
        last = seg.ts
    # Silence after fewer than ``most``, in a long (slow) run, for more than
    # twice the last gap (a backoff that doubles would have sent again):
    # the peer gave up (RFC 1122 §4.2.3.5, R2), which is allowed.
    gave_up = slow and other is None and len(again) < most and quiet > 2.5 * gaps[-1]
    check.value = "after " + " ".join(f"{g:.2f}" for g in gaps) + " s" + (", then gave up" if gave_up else "")
    check.saw("wire", f"its FIN again {len(again)} time(s), each after "
                      + ", ".join(f"{g:.3f}" for g in gaps) + " s (from the one before; followed "
                      f"for {most} retransmissions at most, or {horizon:g} s)"
                      + (f"; then [{other.flags}]" if other is not None else "")
                      + (f"; none more within {quiet:.0f} s: it gave up" if gave_up else ""))
    info = None
    if peer.holds_socket:
        info = peer.lab.peer_info(conn)
        _read_state(peer, conn, check)
        check.saw("socket", f"the peer's socket in {info['state'].value}, {info['retransmits']} "
                            f"retransmission(s) counted")
    else:
        _model(check, conn, "while it retransmits")
        _told(peer, conn, check, "while it retransmits")
    # Our final ACK ends its LAST_ACK: the connection is gone (a stack
    # that went back to FIN_WAIT_1 on retransmitting is still there).
    conn.send(flags="A", seq=(ours.seq + 1) % 2**32, ack=(_fin_seq(first) + 1) % 2**32)
    gone = _follow_up(conn, check) == "gone"
    check.value += "" if gone else "; alive after our ACK"
    ok = gone and other is None
    if info is not None:
        ok = ok and (info["state"] == "LAST_ACK" and info["retransmits"] >= 1
                     or gave_up and info["state"] == "CLOSED")
    check.judge(ok)


def _retransmissions(conn, first, most, horizon):
    """The peer's FIN retransmitted (same sequence number) up to ``most``
    times within ``horizon`` s of ``first``; the first other segment, which
    ends the wait (None when there was none); and how long the peer was
    silent after its last FIN. The wait also ends after three times the last
    gap of silence (a backoff that doubles would have sent again by then)."""
    again, end, last, gap = [], first.ts + horizon, first, horizon
    while len(again) < most:
        now = time.monotonic()
        seg = conn.recv(timeout=max(0.0, min(end, last.ts + 3 * gap) - now))
        if seg is None:
            return again, None, time.monotonic() - last.ts
        if "F" not in seg.flags or seg.seq != first.seq:
            return again, seg, seg.ts - last.ts
        again.append(seg)
        last, gap = seg, seg.ts - last.ts
    return again, None, 0.0


def _to_time_wait(peer, check, conn=None, sock=None):
    """A connection that the peer closed first, through to its TIME_WAIT:
    its FIN, our ACK, our FIN and its ACK (read from its socket where there
    is one). Our FIN and its ACK of it."""
    if conn is None:
        conn, sock = peer.open()
    peer.close_first(conn, sock)
    conn.ack()
    our_fin = conn.fin()
    ack = conn.expect("A", ack=conn.snd_nxt, timeout=2.0)
    if peer.holds_socket and check is not None:
        _wait_state(peer, conn, check, "TIME_WAIT")
        check.saw("socket", "the peer's socket in TIME_WAIT (it closed first, then took our FIN)")
    elif check is not None:
        _told_until(peer, conn, check, "TIME_WAIT", "after it closed first, then took our FIN")
    return conn, our_fin, ack


def check_time_wait_reacks_fin(peer, check):
    conn, our_fin, first = _to_time_wait(peer, check)
    conn.send(flags="FA", seq=our_fin.seq)     # as if its ACK had been lost
    again = conn.recv(timeout=1.0)
    if again is None:
        check.saw("wire", "no answer to our retransmitted FIN within 1 s")
        check.value = "nothing"
        return check.judge(False)
    same = again.flags == "A" and again.ack == first.ack
    check.value = _answer(again, conn)
    check.saw("wire", f"after it ACKed our FIN, our FIN again at seq {_rel(our_fin.seq, conn.iss)} answered by "
                      f"[{again.flags}] ack={_rel(again.ack, conn.iss)} (its first ACK: ack={_rel(first.ack, conn.iss)})")
    _judge_by_state(peer, conn, check, same, "TIME_WAIT", "after re-ACKing our FIN")


def check_simultaneous_close(peer, check):
    conn, sock = peer.open()
    theirs = peer.close_first(conn, sock)
    if peer.holds_socket:
        _wait_state(peer, conn, check, "FIN_WAIT_1")
        check.saw("socket", "the peer's socket in FIN_WAIT_1 (its FIN sent) before our FIN")
    else:
        _told(peer, conn, check, "(its FIN sent) before our FIN")
    # Crossing FINs, crafted: its FIN has arrived, ours does not acknowledge
    # it, as if ours had left before its FIN came.
    their_fin = _fin_seq(theirs)
    ours = conn.send(flags="FA", ack=their_fin)
    answer = conn.expect(timeout=2.0)
    acked = "A" in answer.flags and answer.ack == (ours.seq + 1) % 2**32
    again = "F" in answer.flags
    check.value = _answer(answer, conn) + (" (its FIN again)" if again else "")
    check.saw("wire", f"its FIN at seq {_rel(their_fin, conn.irs)} arrived; our FIN at seq "
                      f"{_rel(ours.seq, conn.iss)} with ack={_rel(ours.ack, conn.irs)} (not acking it) "
                      f"answered by [{answer.flags}] seq={_rel(answer.seq, conn.irs)} ack={_rel(answer.ack, conn.iss)}"
                      + (": its FIN again, now acking ours" if again else ""))
    if peer.holds_socket:
        seen = _read_state(peer, conn, check)
        check.saw("socket", f"the peer's socket in {seen} after acking our FIN, before our ACK of its FIN")
    else:
        _told(peer, conn, check, "after acking our FIN, before our ACK of its FIN")
    conn.send(flags="A", seq=(ours.seq + 1) % 2**32, ack=(their_fin + 1) % 2**32)
    if not peer.holds_socket:
        _model(check, conn, "after our ACK of its FIN")
        _told_until(peer, conn, check, "TIME_WAIT", "after our ACK of its FIN")
        return check.judge(acked)
    after = _states_until(peer, conn, check, "TIME_WAIT")
    check.saw("socket", f"after our ACK: {' -> '.join(after)}")
    check.judge(acked and seen == "CLOSING" and after[-1] == "TIME_WAIT")


def _rst(peer, check, offset, wait):
    """Send a RST ``offset`` past SND.NXT: the peer's answer within ``wait``
    s, its socket's state where it can be read (else None), and whether the
    connection is alive after it (a follow-up keepalive probe)."""
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
    else:
        _told(peer, conn, check, "after it")
    alive = _follow_up(conn, check)
    check.value = f"{_answer(answer, conn) if answer else 'silence'}, then {alive or 'no answer'}"
    return conn, answer, state, alive


def check_rst_exact(peer, check):
    conn, answer, state, alive = _rst(peer, check, 0, 0.3)
    check.judge(answer is None and alive == "gone" and state in (None, "CLOSED"))


def check_rst_in_window(peer, check):
    conn, answer, state, alive = _rst(peer, check, 10, 0.5)
    challenge = answer is not None and answer.flags == "A" and answer.ack == conn.snd_nxt
    check.judge(challenge and alive == "alive" and state in (None, "ESTABLISHED"))


def check_rst_out_of_window(peer, check):
    conn, answer, state, alive = _rst(peer, check, 10**8, 0.3)
    check.judge(answer is None and alive == "alive" and state in (None, "ESTABLISHED"))


def check_close_with_unread_data(peer, check):
    conn, sock = peer.open()
    what = peer.close_unread(conn, sock)
    seen, reset = _until_rst(conn)
    flags = " ".join(f"[{s.flags}]" for s in seen if s.flags != "A" or s.payload) or "nothing"
    fin_first = any("F" in s.flags for s in seen)
    check.saw("wire", f"{what} sent " + ("nothing within 2 s" if not seen else
                                          f"{flags}{'' if reset else ' and no RST within 2 s'}"))
    check.value = "RST" if reset and not fin_first else ("FIN, then RST" if reset else "FIN, no RST" if fin_first else "nothing")
    state = None
    if peer.holds_socket:
        state = _read_state(peer, conn, check)
        check.saw("socket", f"the peer's socket {'gone' if state == 'CLOSED' else 'in ' + state} after it")
    elif peer.state_source == "stack" and peer.death() is None:  # a stack this close killed cannot tell (its death is told by _run)
        _told(peer, conn, check, "after it")
    alive = _follow_up(conn, check)
    if peer.holds_socket:
        return check.judge(reset and not fin_first and state == "CLOSED" and alive == "gone")
    if not reset and fin_first:
        # A server may read and drop what a client sends after its request
        # before it closes (nginx's lingering close): then nothing was left
        # unread, and the wire cannot tell that from a stack that ignores it.
        check.saw("wire", "a FIN and no RST: either the server drained the pipelined bytes before "
                          "closing (as nginx's lingering close does) or its stack closed with data unread "
                          "without RST; the wire cannot tell which")
        check.verdict = "info"
        return
    check.judge(reset and alive == "gone")


def _until_rst(conn, wait=2.0):
    """The peer's segments until its RST or ``wait`` s of silence (data
    ACKed as it comes): (segments, whether a RST came)."""
    seen = []
    while True:
        seg = conn.recv(timeout=wait)
        if seg is None:
            return seen, False
        seen.append(seg)
        if "R" in seg.flags:
            return seen, True
        if seg.payload or "F" in seg.flags:
            conn.ack()


def check_syn_into_time_wait(peer, check):
    conn, _, _ = _to_time_wait(peer, check)
    sport, iss = conn.local[1], (conn.snd_nxt + 100000) % 2**32
    old = conn.trace
    conn.close()
    new = peer.reopen(sport, iss)
    new.send(flags="S", options=[("mss", 1460)])
    answer = new.recv(timeout=1.0)
    check.value = "nothing" if answer is None else f"[{answer.flags}]"
    check.saw("wire", "a new SYN on its 4-tuple, 100000 above our old SND.NXT, got "
                      + ("nothing within 1 s" if answer is None else f"[{answer.flags}]"))
    if peer.holds_socket:
        state = _read_state(peer, conn=new, check=check)
        check.saw("socket", f"the peer's socket for the 4-tuple in {state} after it")
    else:
        _told(peer, new, check, "for the 4-tuple after it")
    if answer is not None and answer.flags == "SA":
        new.send(flags="R", seq=(iss + 1) % 2**32)  # leave no half-open connection behind
    fresh = new.trace
    check.trace = Trace(list(old) + list(fresh), old.states + fresh.states)
    check.verdict = "info"


def check_fin_wait_2_timeout(peer, check, slow=False):
    if peer.holds_socket and not slow:
        return _fin_wait_2_of_a_lab(peer, check)

    def into_fin_wait_2(conn, sock):
        """The peer closes first (its socket orphaned); we ACK its FIN and
        send none: FIN_WAIT_2."""
        peer.close_first(conn, sock, orphan=True)
        return conn.ack()


    _lifetime(peer, check, "FIN_WAIT_2", into_fin_wait_2, _keepalive, slow)
    if peer.holds_socket:  # slow: measured as for any peer, the kernel's setting left as it is
        name = "net.ipv4.tcp_fin_timeout"
        check.saw("config", f"{name} = {peer.lab.sysctl(name)} (the default, not changed)")


def _fin_wait_2_of_a_lab(peer, check):
    """A Lab's kernel: tcp_fin_timeout set low, the orphaned socket read
    until it is gone."""
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
        check.value = f"> {kept:.1f} s"
    else:
        check.saw("socket", f"the orphaned FIN_WAIT_2 kept {kept:.2f} s from our ACK of its FIN "
                            f"until its socket was gone (polled {POLL_INTERVAL * 1000:g} ms apart)")
        check.value = f"{kept:.1f} s (fin_timeout {FIN_TIMEOUT})"
    check.verdict = "info"


def check_time_wait_duration(peer, check, slow=False):

    def into_time_wait(conn, sock):
        _, _, ack = _to_time_wait(peer, None, conn, sock)
        return ack

    def probe(conn):
        """Our FIN again: re-ACKed in TIME_WAIT, a RST once it is gone."""
        fin = next(s for s in reversed(conn.trace) if s.direction == "out" and "F" in s.flags)
        return conn.send(flags="FA", seq=fin.seq)

    _lifetime(peer, check, "TIME_WAIT", into_time_wait, probe, slow)


def _lifetime(peer, check, state, into, probe, slow):
    """How long the peer keeps a connection in ``state``, measured on the
    wire as TBIT does: n connections driven into it together (``into``
    returns the segment that enters it), then each probed once (``probe``
    sends one segment), at staggered times up to the horizon: an answer
    that is not a RST says the connection is still there, a RST that it is
    gone. One probe a connection, because a probe may restart the peer's
    timer (Linux restarts TIME_WAIT's on any ACK)."""
    n, horizon = LIFETIME_SLOW if slow else LIFETIME_QUICK
    entered = []
    peer.begin()
    for _ in range(n):
        conn, sock = peer.another()
        entered.append((conn, into(conn, sock).ts))
    check.saw("wire", f"{n} connections put in {state} together (within "
                      f"{entered[-1][1] - entered[0][1]:.2f} s), each probed once, "
                      f"the i-th {horizon:g}*i/{n} s after it entered {state}")
    results = []
    for i, (conn, start) in enumerate(entered, 1):
        time.sleep(max(0.0, start + horizon * i / n - time.monotonic()))
        while conn.recv(timeout=0) is not None:
            pass
        sent = probe(conn)
        answer = conn.recv(timeout=0.3)
        results.append((sent.ts - start, _liveness(answer) or "alive", _answer(answer, conn)))
    check.saw("wire", "; ".join(f"at {t:.2f} s {shown if shown != 'nothing' else 'silence'} ({alive})"
                                for t, alive, shown in results))
    there = [t for t, alive, _ in results if alive == "alive"]
    gone = [t for t, alive, _ in results if alive == "gone"]
    if not gone:
        check.value = f"> {max(there):.1f} s" + ("" if slow else " (--slow: longer)")
        check.saw("wire", f"still in {state} (answering) {max(there):.2f} s after entering it: a lower bound"
                          + ("" if slow else f"; slow=True (--slow) follows it for {LIFETIME_SLOW[1]:g} s"))
    elif not there or min(gone) < max(there):
        first = min(gone)
        check.value = f"< {first:.1f} s" if not there else f"? (gone at {first:.1f} s, there later)"
        check.saw("wire", f"gone by {first:.2f} s" + ("" if not there else
                                                      f", yet answering at {max(there):.2f} s: no single lifetime"))
    else:
        check.value = f"{max(there):.1f}-{min(gone):.1f} s"
        check.saw("wire", f"{state} kept between {max(there):.2f} and {min(gone):.2f} s")
    check.trace = _joined([c.trace for c, _ in entered])
    check.verdict = "info"


def _joined(traces):
    segments, states = [], []
    for trace in traces:
        segments += list(trace)
        states += trace.states
    return Trace(segments, states)


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
         "one segment of ours that ACKs the peer's FIN (it in FIN_WAIT_1) and carries ours is ACKed",
         "its socket goes from FIN_WAIT_1 straight to TIME_WAIT (no FIN_WAIT_2 read)",
         check_fin_ack_skips_fin_wait_2, None),
    Spec("last_ack_retransmits_fin", "RFC 9293 §3.8.1, §3.10.8",
         "without our final ACK the peer retransmits its FIN (the schedule measured); our ACK then "
         "ends the connection", "its socket is in LAST_ACK meanwhile", check_last_ack_retransmits_fin, None),
    Spec("time_wait_reacks_fin", "RFC 9293 §3.10.7.4 (TIME-WAIT, eighth)",
         "a retransmitted FIN to the peer in TIME_WAIT (it closed first) is ACKed again",
         "its socket stays in TIME_WAIT", check_time_wait_reacks_fin, None),
    Spec("simultaneous_close", "RFC 9293 §3.6, Figure 13",
         "crossing FINs (ours not acking the peer's): the peer ACKs ours",
         "its socket goes through CLOSING to TIME_WAIT", check_simultaneous_close, None),
    Spec("rst_exact", "RFC 5961 §3.2", "a RST at RCV.NXT resets the connection silently: a follow-up "
         "probe gets RST", "its socket is gone", check_rst_exact, None),
    Spec("rst_in_window", "RFC 5961 §3.2", "a RST in the window but not at RCV.NXT gets a challenge ACK, "
         "and the connection survives (a follow-up probe gets ACK)",
         "the peer's socket stays ESTABLISHED", check_rst_in_window, None),
    Spec("rst_out_of_window", "RFC 9293 §3.10.7.4 (first)",
         "a RST outside the window is dropped silently, the connection alive (a follow-up probe gets ACK)",
         "its socket stays ESTABLISHED", check_rst_out_of_window, None),
    Spec("close_with_unread_data", "RFC 1122 §4.2.2.13",
         "closing a socket with data unread sends RST, not FIN; a follow-up probe gets RST",
         "its socket is gone", check_close_with_unread_data, None),
    Spec("syn_into_time_wait", "RFC 6191, RFC 9293 §3.10.7.4",
         "what a new SYN into the peer's TIME_WAIT gets (no single answer)", None,
         check_syn_into_time_wait, None),
    Spec("fin_wait_2_timeout", "RFC 9293 §3.6 (no limit); Linux tcp_fin_timeout",
         f"how long an orphaned FIN_WAIT_2 lives (a Lab: measured with tcp_fin_timeout set to "
         f"{FIN_TIMEOUT} s; elsewhere on the wire)", None, check_fin_wait_2_timeout, None),
    Spec("time_wait_duration", "RFC 9293 §3.6 (2 MSL)",
         "how long the peer keeps TIME_WAIT after closing first, measured on the wire", None,
         check_time_wait_duration, None),
]
TIMED = {"last_ack_retransmits_fin", "fin_wait_2_timeout", "time_wait_duration"}  # take slow=


def _expected(spec, peer):
    """What a check claims to test against this peer: the socket part only
    where the socket can be read, else said to be left unchecked."""
    if spec.of_socket is None:
        return spec.expected
    if peer.holds_socket:
        return f"{spec.expected}; {spec.of_socket}"
    if peer.state_source == "stack":
        return (f"{spec.expected} (not checked: that {spec.of_socket}; the stack's own states are "
                "reported beside the model's)")
    return f"{spec.expected} (not checked: that {spec.of_socket}, as this peer's socket cannot be read)"


def probe(host=None, port=None, *, stack=None, env=None, ipv6=False, slow=False, checks=None,
          on_check=None, profile="rfc"):
    """Probe how a TCP stack closes connections; returns a Report.

    ``host`` None and no ``stack``: the local Linux kernel in a Lab.
    ``host`` and ``port``: a server reached through ``fp.Target``.
    ``stack`` (a command as a list of str, or one str split as a shell
    would) and ``port``: a user-space stack in a Lab (``fp.Lab(stack=, env=,
    ipv6=)``) serving HTTP on ``port``. ``slow`` follows timed behaviours
    for minutes rather than seconds. ``checks`` limits the run to those
    names; ``on_check(check)`` is called as each ends. ``profile`` (a
    finprobe.profile name or file) is what the RFC model's reading of each
    check's segments is held to: the peer's segments it does not allow are
    listed in the check as "model" observations (finprobe.model.violations),
    beside the verdict, which they do not change.
    """
    chosen = _profile.load(profile)
    if not isinstance(ipv6, bool):
        raise TypeError(f"ipv6 must be a bool, not {type(ipv6).__name__}")
    if stack is not None:
        if host is not None:
            raise ValueError("probe: give host or stack, not both")
        if port is None:
            raise ValueError("probe: stack= needs port=, the port the stack serves HTTP on")
        stack = _command("stack", stack)
        _args.port("port", port)
    elif (host is None) != (port is None):
        raise ValueError("probe: give both host and port, or neither (the local kernel in a Lab)")
    elif env is not None:
        raise ValueError("probe: env= is for a stack's command (stack=)")
    names = [spec.name for spec in CHECKS]
    if checks is not None:
        if isinstance(checks, str):
            raise TypeError("checks must be a list of check names, not a str")
        unknown = sorted(set(checks) - set(names))
        if unknown:
            raise ValueError(f"probe: unknown checks {unknown}; known: {names}")
    if stack is not None:
        peer = StackPeer(stack, env, port, ipv6)
    elif host is None:
        peer = KernelPeer(ipv6)
    else:
        peer = TargetPeer(host, port)
    report = Report(peer.describe(), [])
    try:
        for spec in CHECKS:
            if checks is not None and spec.name not in checks:
                continue
            report.checks.append(_run(spec, peer, slow))
            _violations(report.checks[-1], chosen)
            if on_check is not None:
                on_check(report.checks[-1])
    finally:
        peer.shutdown()
    return report


def _command(name, value):
    """A command as a list of str: a list or tuple of str, or a str split as a shell would."""
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(a, str) for a in value):
        raise TypeError(f"{name} must be a command: a non-empty list of str, or a str")
    return list(value)


def _run(spec, peer, slow):
    check = Check(spec.name, spec.reference, _expected(spec, peer))
    if spec.needs_socket and not peer.holds_socket:
        check.skip(f"needs the peer's own socket, which finprobe holds only for a Lab's kernel: "
                   f"it {spec.needs_socket}")
        return check
    try:
        if spec.name in TIMED:
            spec.run(peer, check, slow=slow)
        else:
            spec.run(peer, check)
    except _core.ExpectError as e:
        check.saw("wire", str(e).splitlines()[0])
        check.verdict = "fail"
    except _Unmet as e:
        check.saw(e.source, e.text)
        check.verdict = "fail"
    except _Undriven as e:
        check.skip(str(e))
    except OSError as e:  # the link refused a segment: the peer's end is gone
        check.saw("wire", f"our segment could not be sent: {e.strerror or e}")
        check.verdict = "fail"
    finally:
        death = getattr(peer, "death", lambda: None)()
        if death:
            check.saw("process", death)
            check.verdict = "fail"
            check.value = "the stack died"
        if check.trace is None and peer.conns:
            check.trace = _joined([c.trace for c in peer.conns]) if len(peer.conns) > 1 else peer.conns[0].trace
        peer.release()
    if check.verdict not in VERDICTS:
        raise AssertionError(f"finprobe: check {spec.name} ended without a verdict")
    return check


def _violations(check, chosen):
    """What the model, over the check's segments, says the peer sent that the
    profile does not allow there: each a "model" observation."""
    if check.trace is None or not len(check.trace):
        return
    for violation in check.trace.violations(chosen):
        check.saw("model", f"{violation.text} (an inference from segment {violation.index + 1} of the check's "
                            "trace)")


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


# ---- the comparison --------------------------------------------------------------


def stack_command(name, port=STACK_PORT):
    """The command of the stack recipe ``name`` (finprobe.stacks), as
    fp.Lab(stack=) takes it, with its control socket for a recipe in
    stacks.TELLS_STATE (so its report carries the stack's own states);
    ValueError where there is none."""
    try:
        return stacks.command(name, port, control=name in stacks.TELLS_STATE)
    except (ValueError, _core.Error) as e:
        raise ValueError(f"{e}; a peer is linux, HOST:PORT or a recipe's name") from None


def peer_arguments(spec):
    """A peer as the comparison names it -> fp.probe's keyword arguments:
    "linux" (the local kernel in a Lab), "HOST:PORT" ("[addr]:port" for
    IPv6), or a stack recipe's name (stack_command)."""
    if not isinstance(spec, str):
        raise TypeError(f"a peer must be a str (linux, HOST:PORT or a recipe's name), not {type(spec).__name__}")
    if spec == "linux":
        return {}
    if ":" in spec:
        host, port = _args.host_port("peer", spec)
        return {"host": host, "port": port}
    return {"stack": stack_command(spec), "port": STACK_PORT}


class Comparison:
    """Reports of several peers side by side: ``table()`` (text), HTML for
    notebooks (``_repr_html_``), ``to_html(path)``, ``as_dict()``. A peer
    whose probe could not run at all has its error in place of a report."""

    def __init__(self, peers, reports):
        self.peers, self.reports = list(peers), list(reports)

    def names(self):
        """The checks, in the probe's order (those of any report)."""
        seen = []
        for report in self.reports:
            if isinstance(report, Report):
                seen += [c.name for c in report.checks if c.name not in seen]
        return [s.name for s in CHECKS if s.name in seen]

    def cell(self, peer_index, name):
        """(verdict, value) of one check for one peer: ("error", message) for a
        peer that could not be probed, ("", "") for a check not run."""
        report = self.reports[peer_index]
        if not isinstance(report, Report):
            return "error", str(report).splitlines()[0] if str(report) else type(report).__name__
        check = next((c for c in report.checks if c.name == name), None)
        if check is None:
            return "", ""
        return check.verdict, check.value or (check.reason if check.verdict == "skipped" else "")

    def rows(self):
        return [(name, [self.cell(i, name) for i in range(len(self.peers))]) for name in self.names()]

    def table(self, width=34):
        """One text table: a row a check, a column a peer, "VERDICT value" in each cell."""
        def fit(text):
            return text if len(text) <= width else text[:width - 1] + "…"
        first = max([len("check")] + [len(n) for n in self.names()])
        header = ["check".ljust(first)] + [fit(p).ljust(width) for p in self.peers]
        lines = ["  ".join(header).rstrip(), "  ".join(["-" * first] + ["-" * width] * len(self.peers))]
        for name, cells in self.rows():
            shown = [fit(f"{v.upper() if v != 'skipped' else 'SKIP'} {value}".strip()).ljust(width)
                     for v, value in cells]
            lines.append("  ".join([name.ljust(first)] + shown).rstrip())
        for peer, report in zip(self.peers, self.reports):
            if not isinstance(report, Report):
                lines.append(f"{peer}: could not be probed: {report}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"<Comparison of {', '.join(self.peers)}>"

    def _repr_html_(self):
        esc = html.escape
        colour = {"pass": "#d9f2d9", "fail": "#f8d0d0", "info": "#e0e8f8", "skipped": "#eeeeee",
                  "error": "#f8d0d0", "": "#ffffff"}
        out = ['<table class="finprobe-comparison" style="border-collapse:collapse">',
               "<thead><tr><th style=\"text-align:left;padding:2px 8px\">check</th>"]
        out += [f'<th style="text-align:left;padding:2px 8px">{esc(p)}</th>' for p in self.peers]
        out.append("</tr></thead><tbody>")
        for name, cells in self.rows():
            out.append(f'<tr><td style="padding:2px 8px"><code>{esc(name)}</code></td>')
            for verdict, value in cells:
                out.append(f'<td style="padding:2px 8px;background:{colour.get(verdict, "#ffffff")}">'
                           f"<b>{esc(verdict)}</b> {esc(value)}</td>")
            out.append("</tr>")
        out.append("</tbody></table>")
        return "\n".join(out)

    def to_html(self, path):
        """Write the table as a small HTML page."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>finprobe comparison"
                    f"</title></head><body>\n{self._repr_html_()}\n</body></html>\n")

    def as_dict(self):
        return {"peers": self.peers,
                "reports": [r.as_dict() if isinstance(r, Report) else {"error": str(r)} for r in self.reports],
                "table": [{"check": name, "cells": [{"verdict": v, "value": value} for v, value in cells]}
                          for name, cells in self.rows()]}


def compare(peers, *, slow=False, checks=None, on_report=None):
    """Probe each peer in turn ("linux", "HOST:PORT" or a stack recipe's
    name, see ``peer_arguments``) and put the reports side by side: a
    Comparison. A peer that cannot be probed at all (fp.Error) gets its
    error in its column; the others still run. ``on_report(peer, report)``
    is called as each ends. Given fp.Matrix objects instead of names, their
    side-by-side view: a compare_view.MatrixComparison."""
    if isinstance(peers, (list, tuple)) and peers and not any(isinstance(p, str) for p in peers):
        from .compare_view import MatrixComparison
        return MatrixComparison(peers)
    if isinstance(peers, str) or not peers:
        raise TypeError("peers must be a non-empty list of peer names")
    arguments = [peer_arguments(p) for p in peers]  # every name checked before any probe
    reports = []
    for spec, kwargs in zip(peers, arguments):
        try:
            report = probe(**kwargs, slow=slow, checks=checks)
        except _core.Error as e:
            report = e
        reports.append(report)
        if on_report is not None:
            on_report(spec, report)
    return Comparison(peers, reports)
