"""fp.replay: a captured connection played again against a live peer.

One side of a captured connection (a pcap file or an ``fp.Trace``) becomes a
script of steps, one a segment: ``send`` for each segment that side sent,
``expect`` for each the other side answered. A ``Script`` plays it against a
Lab's kernel, a stack Lab or a Target, numbers relative to each side's
initial sequence number, and compares what the live peer sent with what the
capture had, by groups: the peer's segments between two of ours.

What the RFCs let a peer vary is not a difference: an ACK folded into data
or sent alone, data split or merged otherwise, windows, timestamps, and the
bytes of the data (a server's Date header). What is compared, as counts
reached by the end of each group: SYN, FIN and FIN retransmissions, RSTs,
bytes of data, and how much of our stream the peer acknowledged. A count
the live peer reaches earlier than the captured one (a FIN folded into the
data it follows) is not a difference; one it has not reached when the wait
ends is, and so is one it passes by the end of the replay (an extra FIN
retransmission). A live RST where the capture had none ends the replay: the
peer has no connection left to answer the rest.

Each difference carries the RFC model's reading (finprobe.model, the peer's
state from the segments alone), said as the model's inference, never as
what the peer's socket said.
"""

import dataclasses
import datetime
import json
import os
import select
import socket
import time

from . import _args, _core, model
from .connection import _payload_bytes
from .lab import Lab
from .target import Target
from .trace import MOD, Trace, read_pcap

SETTLE = 0.25      # s: after the last step, how long extras (a FIN retransmission) are awaited
LISTEN_WAIT = 5.0  # s: how long a generated test waits for its Lab's server to listen
WRITE_WAIT = 1.0   # s: how long side="server"'s client application waits to hand the kernel its data

KINDS = ("syn", "fin", "fin-retransmission", "rst", "no-rst", "length", "ack")


# ---- the steps -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """One segment of the capture: ``send`` (the side we play sent it) or
    ``expect`` (the peer sent it). ``seq`` relative to the sender's ISN,
    ``ack`` to the receiver's; a send's ``ack`` None means "everything
    received" (the capture acknowledged all the peer had sent by then).
    ``gap``: seconds since the capture's previous segment."""

    kind: str
    flags: str
    seq: int
    ack: object = None
    payload: bytes = b""
    length: int = 0
    window: object = None
    options: tuple = ()
    gap: float = 0.0

    def line(self, gaps=True):
        """The step as one line of a generated test (``gaps``: with the time
        since the previous segment, which only a paced script uses)."""
        args = [repr(self.flags), f"seq={self.seq}"]
        if self.ack is not None:
            args.append(f"ack={self.ack}")
        if self.kind == "send":
            if self.payload:
                args.append(f"payload={self.payload!r}")
            if self.window is not None:
                args.append(f"window={self.window}")
            if self.options:
                args.append(f"options={list(self.options)!r}")
        elif self.length:
            args.append(f"length={self.length}")
        if self.gap and gaps:
            args.append(f"gap={self.gap:.6f}")
        return f"s.{self.kind}({', '.join(args)})"

    def __str__(self):
        return _show(self.flags, self.seq, self.ack, self.length or len(self.payload))


def _show(flags, seq, ack, length):
    text = f"{flags or '-'} seq={seq}"
    if ack is not None:
        text += f" ack={ack}"
    return text + (f" len={length}" if length else "")


def steps_of(segments, ours):
    """The script of a connection's segments (wire order): ``ours`` is the
    (addr, port) of the side we play."""
    isn = {}
    for seg in segments:
        if "S" in seg.flags:
            isn.setdefault((seg.src, seg.sport), seg.seq)
    for seg in segments:
        isn.setdefault((seg.src, seg.sport), seg.seq)
    steps, peer_end, last_ts = [], None, None
    for seg in segments:
        me = (seg.src, seg.sport)
        other = (seg.dst, seg.dport)
        seq = (seg.seq - isn[me]) % MOD
        ack = (seg.ack - isn[other]) % MOD if "A" in seg.flags and other in isn else None
        gap = seg.ts - last_ts if seg.ts is not None and last_ts is not None else 0.0
        last_ts = seg.ts if seg.ts is not None else last_ts
        if me == ours:
            if ack is not None and peer_end is not None and ack == peer_end:
                ack = None  # everything received: the live peer's amount, whatever it is
            steps.append(Step("send", seg.flags, seq, ack, bytes(seg.payload), 0, seg.window,
                              tuple(seg.options), max(gap, 0.0)))
        else:
            end = (seq + seg.seg_len) % MOD
            if peer_end is None or _after(end, peer_end):
                peer_end = end
            steps.append(Step("expect", seg.flags, seq, ack, b"", len(seg.payload), None, (), max(gap, 0.0)))
    return steps


def _after(a, b):
    return 0 < (a - b) % MOD < MOD // 2


# ---- what a group of the peer's segments reached ----------------------------------------


class _Tally:
    """Counts the peer has reached: SYNs, FINs (first and again), RSTs, the
    end of its data, the most of our stream it acknowledged."""

    def __init__(self):
        self.syn = self.fin = self.fin_again = self.rst = 0
        self.data_end = 1   # relative: the byte after its SYN
        self.acked = None   # relative to our ISN
        self._fin_seq = None

    def add(self, flags, seq, ack, length):
        if "S" in flags:
            self.syn += 1
        if "R" in flags:
            self.rst += 1
        end = (seq + length) % MOD
        if length and _after(end, self.data_end):
            self.data_end = end
        if "F" in flags:
            if self._fin_seq is None:
                self.fin, self._fin_seq = 1, seq + length
            else:
                self.fin_again += 1
        if ack is not None and "R" not in flags and (self.acked is None or _after(ack, self.acked)):
            self.acked = ack

    def short_of(self, want, shift=0):
        """What ``want`` (the capture's tally) has reached that this has not.
        ``shift``: how much longer this peer's data was found to be (a
        length difference already said). Data is judged while this peer's
        stream is open (too little by now), and once both sent FIN (another
        total): a peer that has closed sends no more to wait for."""
        short = []
        if self.syn < want.syn:
            short.append("syn")
        if self.fin < want.fin:
            short.append("fin")
        elif self.fin_again < want.fin_again:
            short.append("fin-retransmission")
        if self.rst < want.rst:
            short.append("no-rst")
        expected_end = (want.data_end + shift) % MOD
        if not self.fin and _after(expected_end, self.data_end):
            short.append("length")
        elif self.fin and want.fin and self.data_end != expected_end:
            short.append("length")
        if want.acked is not None and (self.acked is None or _after(want.acked, self.acked)):
            short.append("ack")
        return short

    def beyond(self, final, shift=0):
        """What this has passed that the capture's ``final`` tally never reached."""
        extra = []
        if self.syn > final.syn:
            extra.append("syn")
        if self.fin > final.fin:
            extra.append("fin")
        elif self.fin_again > final.fin_again:
            extra.append("fin-retransmission")
        if _after(self.data_end, (final.data_end + shift) % MOD):
            extra.append("length")
        return extra


@dataclasses.dataclass(frozen=True)
class Difference:
    """Where the live peer's answers differ from the capture's.

    ``step``: the index (in the script) of the last step played before it;
    ``captured`` and ``observed``: the segments each had there (relative
    numbers; what the capture had by then, what the live peer sent);
    ``meaning``: the RFC model's reading of it (finprobe.model: the peer's
    state from the segments alone, an inference, not the peer's word)."""

    step: int
    kind: str
    captured: str
    observed: str
    meaning: str

    def to_json(self):
        return dataclasses.asdict(self)

    def __str__(self):
        return (f"after step {self.step}: {self.kind}: the capture had {self.captured}; "
                f"the peer sent {self.observed}\n    {self.meaning}")


_WHAT = {
    "syn": "a SYN", "fin": "a FIN", "fin-retransmission": "a FIN retransmission",
    "no-rst": "a RST", "length": "data", "ack": "an acknowledgment of our data",
}


def _meaning(kind, missing, captured_state, live_state, refused=False, first=False, total=False):
    """The model's reading of one difference, said as the model's."""
    states = (f"The RFC 9293 model, from the segments alone, reads the peer as {live_state or 'unknown'} "
              f"here; the captured peer as {captured_state or 'unknown'}.")
    if kind == "rst" and refused:
        gloss = ("A RST answered our SYN where the capture had a SYN-ACK: the peer refused the "
                 "connection (nothing listening on the port), so the replay stops here.")
        states = ""
    elif kind == "rst":
        gloss = ("A RST where the capture had none: the peer has no connection for this 4-tuple "
                 "any more, so the replay stops here.")
    elif kind == "fin" and first:
        gloss = ("The peer closed first: its FIN came before ours, where the captured peer's had not "
                 "(it closed last, or not at all). The close is the other one: TIME_WAIT is the peer's.")
    elif kind == "length" and total:
        gloss = ("The peer sent another amount of data before its FIN than the captured peer (the "
                 "bytes may vary; their amount is compared).")
    elif missing:
        gloss = f"{_WHAT[kind]} the capture had by here did not come within the wait."
        if kind == "fin-retransmission":
            gloss += " The peer did not retransmit its FIN as the captured peer did."
    else:
        gloss = f"{_WHAT[kind]} the capture never had."
    return f"{gloss[0].upper()}{gloss[1:]} {states}"


# ---- playing a script ----------------------------------------------------------------------


class Script:
    """A script played against a live peer: ``send`` and ``expect`` lines,
    numbers relative to each side's initial sequence number.

    ``peer``: an ``fp.Lab`` (its kernel or its stack) or an ``fp.Target``;
    ``port``: the peer's port (a Target's own by default); ``side``: "client"
    (we open the connection) or "server" (the Lab's kernel connects to us, a
    socket of ours in the Lab doing what the captured client's application
    did: its data, its close). Expects do not wait one by one: the peer's
    segments between two sends are a group, awaited (up to ``timeout`` plus
    the captured time the group took) at the next send or at the end, and
    compared with the capture's (see the module's doc for what counts).

    ``strict`` (a generated test): the first group that differs raises
    fp.ExpectError listing the differences and the ladder. Otherwise the
    differences are collected in ``differences``.

        with Script(lab, 8000) as s:
            s.send("S", seq=0, options=[("mss", 1460)])
            s.expect("SA", seq=0, ack=1)
            s.send("A", seq=1, ack=1)
    """

    def __init__(self, peer, port=None, *, side="client", iss=None, strict=True, speed=None,
                 timeout=1.0):
        if not isinstance(peer, (Lab, Target)):
            raise TypeError(f"peer must be an fp.Lab or an fp.Target, not {type(peer).__name__}")
        if side not in ("client", "server"):
            raise ValueError(f"side must be \"client\" or \"server\", not {side!r}")
        if side == "server" and (isinstance(peer, Target) or peer.stack is not None):
            raise ValueError("side=\"server\" needs a Lab's kernel as the client: "
                             f"{peer!r} only serves")
        if isinstance(peer, Target):
            port = peer.port if port is None else _args.port("port", port)
        elif port is None:
            raise TypeError("port is needed: the Lab's port to replay against")
        else:
            _args.port("port", port)
        self.peer, self.port, self.side = peer, port, side
        self.iss = None if iss is None else _args.iss(iss)
        self.strict = bool(strict)
        self.speed = _speed(speed)
        self.timeout = _args.seconds("timeout", timeout)
        self.steps, self.differences = [], []
        self.stopped = None       # why the replay stopped early, or None
        self.conn = None
        self._want, self._have = _Tally(), _Tally()
        self._group = []          # indexes of the expect steps since the last send
        self._group_time = 0.0    # captured seconds the group took
        self._group_ends = []     # the live trace's length at each group's end
        self._app = self._listener = None
        self._shift = 0           # the live peer's data minus the capture's, once said
        self._said = set()        # shortfalls said and not made up since: not said, nor awaited, again
        self._last_sent = -1      # the index of the last send step played
        self._our_fin = False     # our first FIN is sent
        self._trace = None        # the live trace, kept when the connection is released
        self._ts_recent = 0
        self._captured_t = 0.0    # the capture's time of the latest step, from its first
        self._start = None        # (monotonic, captured time) of the first send
        self._closed = False

    # ---- the lines ----------------------------------------------------------------

    def send(self, flags, *, seq, ack=None, payload=b"", window=None, options=(), gap=0.0):
        """Send a segment: ``seq`` relative to our ISN, ``ack`` to the peer's
        (None: everything received); ``options`` as the capture had them (a
        timestamp's echo is the live peer's latest; SACK blocks rebased)."""
        payload = _payload_bytes(payload)
        if window is not None:
            _number("window", window, 65535)
        if not isinstance(options, (list, tuple)):
            raise TypeError(f"options must be a list of option tuples, not {type(options).__name__}")
        self._record(_step("send", flags, seq, ack, payload, 0, window, tuple(options), gap))
        if self.stopped is not None:
            return None
        self._end_group(closing="F" in flags and not self._our_fin)
        self._our_fin = self._our_fin or "F" in flags
        if self.stopped is not None:
            return None
        self._pace()
        conn = self._connection_for_send(flags)
        self._last_sent = len(self.steps) - 1
        kwargs = {"flags": flags, "seq": (conn.iss + seq) % MOD}
        if "A" in flags:
            kwargs["ack"] = self._live_ack(conn, ack)
        if window is not None:
            kwargs["window"] = window
        if options or "S" in flags:
            kwargs["options"] = [self._live_option(conn, o) for o in options]
        return conn.send(payload, **kwargs)

    def expect(self, flags, *, seq, ack=None, length=0, gap=0.0):
        """The peer sent this in the capture: awaited with its group."""
        _number("length", length, MOD - 1)
        index = self._record(_step("expect", flags, seq, ack, b"", length, None, (), gap))
        self._group.append(index)
        self._group_time += gap
        self._want.add(flags, seq, ack, length)
        if self.side == "server":
            self._app_act(flags, length)

    def close(self):
        """End the script: await the last group, then extras for a moment;
        in strict mode raise fp.ExpectError on a difference. Releases the
        connection (its trace stays readable as ``trace``)."""
        if self._closed:
            return
        try:
            if self.stopped is None:
                self._end_group(final=True)
        finally:
            self._closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            self._release()

    def __repr__(self):
        return (f"<Script {self.side} of {len(self.steps)} steps against {self.peer!r} port {self.port}: "
                f"{len(self.differences)} differences>")

    @property
    def trace(self):
        """The live connection's fp.Trace (empty before the first segment)."""
        self._keep_trace()
        return self._trace if self._trace is not None else Trace()

    # ---- the live connection ---------------------------------------------------------

    def _record(self, step):
        if self._closed:
            raise _core.Error(f"{self!r} is closed")
        self.steps.append(step)
        self._captured_t += step.gap
        return len(self.steps) - 1

    def _connection_for_send(self, flags):
        if self.conn is not None:
            return self.conn
        if self.side == "server":
            raise _core.Error("the script sends before the client's SYN: a server's script starts "
                              "with expect(\"S\", ...)")
        if isinstance(self.peer, Target):
            self.conn = self.peer.open(iss=self.iss)
        else:
            self.conn = self.peer.open(self.port, iss=self.iss)
        return self.conn

    def _live_ack(self, conn, ack):
        """The acknowledgment to send: the captured one rebased, unless the
        live peer has not sent that far (or sent another amount): then what
        we have received."""
        if ack is None:
            return conn.rcv_nxt
        live = (conn.irs + ack) % MOD
        if self._shift or self._have.data_end != self._want.data_end or _after(live, conn.rcv_nxt):
            return conn.rcv_nxt
        return live

    def _live_option(self, conn, option):
        if option[0] == "ts":
            return ("ts", option[1], self._ts_recent if option[2] else 0)
        if option[0] == "sack":
            return ("sack", tuple(((conn.irs + a) % MOD, (conn.irs + b) % MOD) for a, b in option[1]))
        return option

    def _pace(self):
        """With a speed, send when the capture did, its time scaled, counted
        from the first send; never earlier than the answers allow."""
        now = time.monotonic()
        if self._start is None:
            self._start = (now, self._captured_t)
            return
        if self.speed is not None:
            due = self._start[0] + (self._captured_t - self._start[1]) / self.speed
            if due > now:
                time.sleep(due - now)

    # ---- groups ------------------------------------------------------------------------

    def _end_group(self, final=False, closing=False):
        """Await the peer's segments up to where the capture had them, then
        compare."""
        step = self._last_sent
        if self.conn is None and self.side == "server" and self._want.syn:
            try:
                self._accept()
            except _core.ExpectError:   # no SYN from the client: said as a difference
                pass
        if self.conn is not None:
            wait = self.timeout + 1.5 * self._group_time if self._group else 0.0
            self._take_until(time.monotonic() + wait, lambda: set(self._awaited()) <= self._said)
            if final:
                self._take_until(time.monotonic() + SETTLE, lambda: False)
        elif self._group:
            self._differ(step, self._have.short_of(self._want), missing=True)
            self.stopped = f"no connection: the peer sent nothing by step {step}"
        if self.conn is not None:
            self._compare(step, final, closing)
        self._group, self._group_time = [], 0.0

    def _take_until(self, deadline, enough):
        conn = self.conn
        while not enough() and not self._have.rst:
            seg = conn.recv(max(0.0, deadline - time.monotonic()))
            if seg is None:
                return
            self._took(conn, seg)
        while not self._have.rst:   # what has already come, without waiting
            seg = conn.recv(0)
            if seg is None:
                return
            self._took(conn, seg)

    def _took(self, conn, seg):
        for option in seg.options:
            if option[0] == "ts":
                self._ts_recent = option[1]
        ack = (seg.ack - conn.iss) % MOD if "A" in seg.flags else None
        self._have.add(seg.flags, (seg.seq - conn.irs) % MOD, ack, len(seg.payload))
        if self._app is not None:
            self._app.drain()

    def _compare(self, step, final, closing):
        self._group_ends.append(self.conn._trace_len)
        if self._have.rst > self._want.rst:
            self._differ(step, ["rst"], missing=False)
            self.stopped = f"the peer sent a RST after step {step}, where the capture had none"
            return
        if closing:
            self._closing_order(step)
        short = self._short()
        self._said &= set(short)  # a shortfall made up may be said again if it recurs
        self._differ(step, [k for k in short if k not in self._said], missing=True)
        self._said |= set(short)
        if final:
            extra = self._have.beyond(self._want, self._shift)
            if any(d.kind == "fin" for d in self.differences):
                # the peer's FIN already differs: its retransmissions follow from that
                extra = [k for k in extra if k != "fin-retransmission"]
            self._differ(step, extra, missing=False)

    def _closing_order(self, step):
        """Before our first FIN: a peer that has sent its FIN where the
        captured one had not closed first, where the captured one closed
        after us (or not at all). Its FIN came early, which is no shortfall,
        but the close is the other one (the active one: TIME_WAIT is the
        peer's). The converse is a FIN missing."""
        if self._have.fin and not self._want.fin:
            self._differ(step, ["fin"], missing=False, first=True)

    def _short(self):
        return self._have.short_of(self._want, self._shift)

    def _awaited(self):
        """The shortfalls more waiting could make up: not another total of
        data once both peers sent FIN."""
        closed = self._have.fin and self._want.fin
        return [k for k in self._short() if not (k == "length" and closed)]

    def _differ(self, step, kinds, missing, first=False):
        if not kinds:
            return
        captured, observed = self._group_text(step)
        if first:   # the live FIN came in an earlier group: name it
            observed = ", ".join(self._live_text(seg) for seg in self._live_in() if "F" in seg.flags)
            captured += " (no FIN before ours)"
        live_state, captured_state = self._model_states(step)
        have, want = self._have, self._want
        total = bool(have.fin and want.fin)   # a length difference is of the whole data
        if "length" in kinds:  # said once: later groups compare past the difference
            self._shift = (have.data_end - want.data_end) % MOD
            if self._shift >= MOD // 2:
                self._shift -= MOD
            captured += f" (data by here: {(want.data_end - 1) % MOD} bytes{', then FIN' if want.fin else ''})"
            observed += f" (data by here: {(have.data_end - 1) % MOD} bytes{', then FIN' if have.fin else ''})"
        refused = self._have.syn == 0 and self.side == "client"
        found = [Difference(step, kind, captured, observed,
                            _meaning(kind, missing, captured_state, live_state, refused, first,
                                     total).strip())
                 for kind in kinds]
        self.differences.extend(found)
        if self.strict:
            self._keep_trace()
            lines = "\n  ".join(str(d) for d in found)
            ladder = self._trace.ladder_text() if self._trace is not None else ""
            raise _core.ExpectError(f"the peer's answers differ from the capture's:\n  {lines}\n{ladder}")

    def _group_text(self, step):
        """What the capture had in the group ending after ``step`` and what
        the live peer sent since the previous group."""
        captured = [str(self.steps[i]) for i in self._group] or ["nothing"]
        start = self._group_ends[-2] if len(self._group_ends) > 1 else 0
        observed = [self._live_text(seg) for seg in self._live_in(start)]
        return ", ".join(captured), ", ".join(observed) or "nothing"

    def _live_in(self, start=0):
        """The live peer's segments, from the live trace's ``start``."""
        if self.conn is None:
            return []
        return [row[0] for row in self.conn._trace(start) if row[0].direction == "in"]

    def _live_text(self, seg):
        conn = self.conn
        ack = (seg.ack - conn.iss) % MOD if "A" in seg.flags else None
        return _show(seg.flags, (seg.seq - conn.irs) % MOD, ack, len(seg.payload))

    def _model_states(self, step):
        """The model's peer state after this group, live and captured."""
        live = None
        if self.conn is not None:
            segs = [r[0] for r in self.conn._trace()]
            states = model.peer_states(segs, [s.direction for s in segs])
            live = states[-1] if states else None
        captured = _model_of_steps(self.steps[:step + 1])
        return live, captured

    def _keep_trace(self):
        if self.conn is not None and not self.conn.closed:
            self._trace = self.conn.trace

    def _release(self):
        self._keep_trace()
        if self.conn is not None:
            self.conn.close()
        if self._app is not None:
            self._app.close()
        self._listener = None

    # ---- side="server": the Lab's kernel is the client ---------------------------------

    def _app_act(self, flags, length):
        """The captured client's application: connect before its SYN is
        awaited; its data and its close are done when the step is read,
        so that the kernel sends them."""
        if self._app is None:
            self._listener = self.peer.listen_raw(self.port)
            self._app = _ClientApp(self.peer, self.port)
        if length:
            self._app.write(length)
        if "R" in flags:
            self._app.abort()
        elif "F" in flags:
            self._app.finish()

    def _accept(self):
        self.conn = self._listener.accept(self.timeout + 1.5 * self._group_time, handshake=False,
                                          iss=self.iss)
        self._took(self.conn, self.conn.trace[-1])
        self._app.drain()


class _ClientApp:
    """A kernel socket in the Lab that connects to us and does what the
    captured client's application did: writes (bytes of the captured
    length: the content is not the capture's concern here), closes, aborts;
    it reads whatever comes, as an application does, so that a close sends
    FIN rather than RST."""

    def __init__(self, lab, port):
        self.sock = lab.socket()
        self.sock.setblocking(False)
        try:
            self.sock.connect((lab.local_addr, port))
        except BlockingIOError:
            pass
        self.pending = b""
        self.done = False

    def write(self, length):
        self.pending += b"x" * length
        self.drain()

    def drain(self):
        """Read what has come; hand the kernel what is still to write, for at
        most WRITE_WAIT s (its buffer takes a capture's worth at once unless
        our side stopped reading)."""
        if self.done:
            return
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        except OSError:      # reset: nothing more to read or write
            self.pending = b""
        deadline = time.monotonic() + WRITE_WAIT
        while self.pending and time.monotonic() < deadline:
            try:
                self.pending = self.pending[self.sock.send(self.pending):]
            except BlockingIOError:
                select.select([], [self.sock], [], 0.05)
            except OSError:
                self.pending = b""

    def finish(self):
        self.drain()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:   # already reset: the capture's FIN cannot follow
            pass

    def abort(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()
        self.done = True

    def close(self):
        if not self.done:
            self.done = True
            self.sock.close()


def _model_of_steps(steps):
    """The model's state for the captured peer after these steps: the steps
    made segments again, at arbitrary ISNs (the model reads relative
    numbers), a send's "everything received" the peer's end so far."""
    ours_isn, peer_isn = 1 << 20, 1 << 24
    segs, sides, peer_end = [], [], 0
    for step in steps:
        ours = step.kind == "send"
        length = len(step.payload) if ours else step.length
        if ours:
            ack = peer_end if step.ack is None else step.ack
            seq, ack = ours_isn + step.seq, peer_isn + ack
        else:
            seq, ack = peer_isn + step.seq, ours_isn + (step.ack or 0)
            end = step.seq + length + ("S" in step.flags) + ("F" in step.flags)
            peer_end = max(peer_end, end)
        segs.append(_core.Segment(src="192.0.2.2", dst="192.0.2.1", sport=1, dport=2, seq=seq % MOD,
                                  ack=ack % MOD, flags=step.flags, payload=b"x" * length))
        sides.append("out" if ours else "in")
    states = model.peer_states(segs, sides)
    return states[-1] if states else None


def _step(kind, flags, seq, ack, payload, length, window, options, gap):
    """A Step of a script line's arguments, each checked: a line no segment
    can match is a mistake in the test, said at once."""
    if not isinstance(flags, str):
        raise TypeError(f"flags must be a str of \"FSRPAUEC\" letters, not {type(flags).__name__}")
    if any(c not in "FSRPAUEC" for c in flags) or len(set(flags)) != len(flags):
        raise ValueError(f"flags: {flags!r} is not a set of the letters F S R P A U E C (each at most once)")
    _number("seq", seq, MOD - 1)
    if ack is not None:
        _number("ack", ack, MOD - 1)
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 <= gap < float("inf"):
        raise (TypeError if not isinstance(gap, (int, float)) or isinstance(gap, bool) else ValueError)(
            f"gap must be seconds >= 0, got {gap!r}")
    return Step(kind, flags, seq, ack, payload, length, window, options, float(gap))


def _number(name, value, top):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be in 0..{top}, got {value}")


def _speed(speed):
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise TypeError(f"speed must be None or a number, not {type(speed).__name__}")
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"speed must be a positive number (1.0 = the captured timing), got {speed!r}")
    return float(speed)


# ---- fp.replay ------------------------------------------------------------------------


def replay(trace_or_path, *, lab=None, target=None, side="client", speed=None, connection=None,
           port=None, timeout=1.0):
    """Play one side of a captured connection against a live peer.

    ``trace_or_path``: an fp.Trace or a pcap/pcapng file. ``connection``: which
    of its connections, as ((addr, port), (addr, port)) in either order; the
    first by default. ``side``: "client" plays the side that sent the first
    SYN against a server (``lab``: its kernel or its stack; ``target``: a
    remote server; neither: a fresh Lab whose kernel listens on the port);
    "server" plays the other side, the Lab's kernel being the client.
    ``port``: the peer's port (the captured server's by default).
    ``speed``: None, as fast as the answers allow; a number, the captured
    time between segments divided by it (1.0: as captured). ``timeout``: how
    long past the captured time a group of answers is awaited.

    Returns a ``ReplayResult``: ``differences`` (empty when the peer answered
    as in the capture), the two traces, the script, ``to_pytest(path)``."""
    if lab is not None and target is not None:
        raise ValueError("give lab or target, not both")
    if lab is not None and not isinstance(lab, Lab):
        raise TypeError(f"lab must be an fp.Lab, not {type(lab).__name__}")
    if target is not None and not isinstance(target, Target):
        raise TypeError(f"target must be an fp.Target, not {type(target).__name__}")
    if side not in ("client", "server"):
        raise ValueError(f"side must be \"client\" or \"server\", not {side!r}")
    speed = _speed(speed)
    timeout = _args.seconds("timeout", timeout)
    source, trace = _load(trace_or_path)
    picked = pick_connection(trace, connection)
    client, server = picked.client, picked.server
    ours = client if side == "client" else server
    if port is None:
        port = target.port if target is not None else server[1]
    else:
        _args.port("port", port)
    steps = steps_of(picked.segments, ours)
    own = lab is None and target is None
    peer = target if target is not None else lab if lab is not None else Lab(ipv6=":" in server[0])
    try:
        if own and side == "client":
            peer.listen(port)
        with Script(peer, port, side=side, iss=picked.isn(ours), strict=False, speed=speed,
                    timeout=timeout) as script:
            for step in steps:
                if step.kind == "send":
                    script.send(step.flags, seq=step.seq, ack=step.ack, payload=step.payload,
                                window=step.window, options=step.options, gap=step.gap)
                else:
                    script.expect(step.flags, seq=step.seq, ack=step.ack, length=step.length, gap=step.gap)
        return ReplayResult(source, picked, side, script, _peer_code(peer, own and side == "client", port),
                            repr(peer), speed)
    finally:
        if own:
            peer.close()


def _load(trace_or_path):
    if isinstance(trace_or_path, Trace):
        return "a Trace", trace_or_path
    if isinstance(trace_or_path, (str, bytes, os.PathLike)):
        path = os.fsdecode(os.fspath(trace_or_path))
        if not os.path.exists(path):
            raise ValueError(f"no capture file {path!r}")
        return path, read_pcap(path)
    raise TypeError(f"trace_or_path must be an fp.Trace or a pcap file's path, not {type(trace_or_path).__name__}")


@dataclasses.dataclass
class Picked:
    """One connection of a capture: its segments in wire order, its client
    (the first SYN's sender) and server, as (addr, port)."""

    segments: list
    client: tuple
    server: tuple

    def isn(self, side):
        return next(s.seq for s in self.segments if (s.src, s.sport) == side)


def pick_connection(trace, connection=None):
    """The capture's connection ``connection`` (two (addr, port) in either
    order), or its first; ValueError naming those it has otherwise."""
    flows = {}
    for i, seg in enumerate(trace):
        flows.setdefault(frozenset({(seg.src, seg.sport), (seg.dst, seg.dport)}), []).append(i)
    if not flows:
        raise ValueError(f"the capture has no TCP segment ({trace.skipped} packets that are not TCP)"
                         if getattr(trace, "skipped", 0) else "the capture has no TCP segment")
    if connection is None:
        key = next(iter(flows))
    else:
        key = _connection_key(connection)
        if key not in flows:
            known = ", ".join(" <> ".join(_args.endpoint(*e) for e in sorted(k)) for k in list(flows)[:5])
            raise ValueError(f"connection {connection!r} is not in the capture; it has {known}"
                             + (" ..." if len(flows) > 5 else ""))
    indexes = flows[key]
    segments = [trace[i] for i in sorted(indexes, key=lambda i: (_stamp(trace[i]), i))]
    syn = next((s for s in segments if s.flags.replace("E", "").replace("C", "") == "S"), None)
    if syn is None:
        raise ValueError("the capture does not have this connection's opening SYN: replay plays a "
                         "connection from its handshake")
    segments = segments[segments.index(syn):]
    return Picked(segments, (syn.src, syn.sport), (syn.dst, syn.dport))


def _connection_key(connection):
    try:
        a, b = connection
        key = frozenset({(str(a[0]), _args.port("connection", a[1])),
                         (str(b[0]), _args.port("connection", b[1]))})
    except (TypeError, ValueError) as e:
        raise type(e)(f"connection must be ((addr, port), (addr, port)): {e}") from None
    return key


def _stamp(seg):
    return seg.ts if seg.ts is not None else 0.0


# ---- the result -------------------------------------------------------------------------


class ReplayResult:
    """What fp.replay saw: ``differences`` ([Difference], empty when the
    peer answered as the captured one did), ``captured`` and ``trace`` (the
    captured connection and the live one, fp.Trace), ``steps`` (the script),
    ``stopped`` (why the replay ended early, or None); ``text()``,
    ``to_json()``, two ladders side by side in a notebook, ``to_pytest``."""

    def __init__(self, source, picked, side, script, peer_code, peer, speed):
        self.source, self.side, self.peer, self.speed = source, side, peer, speed
        self.client, self.server = picked.client, picked.server
        self.captured = Trace(picked.segments)
        self.captured.us = picked.client if side == "client" else picked.server
        self.trace = script.trace
        self.steps = list(script.steps)
        self.differences = list(script.differences)
        self.stopped = script.stopped
        self.port, self.iss, self.timeout = script.port, script.iss, script.timeout
        self._peer_code = peer_code
        # What a generated test plays: our segments as sent, the peer's as it
        # answered here (so the test passes against this peer), in wire order.
        live = sorted(self.trace, key=lambda seg: seg.ts if seg.ts is not None else 0.0)
        ours = next(((seg.src, seg.sport) for seg in live if seg.direction == "out"), None)
        self.live_steps = steps_of(live, ours) if ours is not None else []

    def __bool__(self):
        return not self.differences

    def __repr__(self):
        return (f"<ReplayResult {self.source} as the {self.side} against {self.peer}: "
                f"{_count(len(self.differences), 'difference') if self.differences else 'no differences'}>")

    def _connection_text(self):
        return f"{_args.endpoint(*self.client)} > {_args.endpoint(*self.server)}"

    def text(self):
        """The differences, then the two ladders (captured, live)."""
        sent = sum(s.kind == "send" for s in self.steps)
        lines = [f"replay of {self.source}: {self._connection_text()}, played as the {self.side} "
                 f"against {self.peer}",
                 f"sent {_count(sent, 'segment')}; the capture had {_count(len(self.steps) - sent, 'answer')}, "
                 f"the peer sent {_count(sum(s.direction == 'in' for s in self.trace), 'answer')}"]
        if not self.differences:
            lines.append("no differences: the peer answered as the captured one did")
        else:
            lines.append(f"{_count(len(self.differences), 'difference')} (what the wire showed; "
                         "'meaning' is the RFC model's inference):")
            for d in self.differences:
                line = self.steps[d.step].line() if 0 <= d.step < len(self.steps) else "-"
                lines.append(f"  after step {d.step} ({line}):")
                lines.append(f"    {d.kind}: captured {d.captured}; observed {d.observed}")
                lines.append(f"    meaning: {d.meaning}")
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        lines += ["", "captured:", self.captured.ladder_text(), "", "live:", self.trace.ladder_text()]
        return "\n".join(lines)

    __str__ = text

    def to_json(self):
        """A JSON-able dict: the connection, the side, the peer, the steps,
        the differences, both traces' segments in relative numbers."""
        return {
            "capture": self.source,
            "connection": {"client": _args.endpoint(*self.client), "server": _args.endpoint(*self.server)},
            "side": self.side,
            "peer": self.peer,
            "speed": self.speed,
            "same": not self.differences,
            "differences": [d.to_json() for d in self.differences],
            "stopped": self.stopped,
            "steps": [{"kind": s.kind, "flags": s.flags, "seq_rel": s.seq, "ack_rel": s.ack,
                       "len": s.length or len(s.payload)} for s in self.steps],
            "captured": _rows(self.captured),
            "live": _rows(self.trace),
        }

    def _repr_html_(self):
        from html import escape
        diffs = "".join(f"<li><b>{escape(d.kind)}</b> after step {d.step}: captured "
                        f"<code>{escape(d.captured)}</code>, observed <code>{escape(d.observed)}</code>"
                        f"<br><i>{escape(d.meaning)}</i></li>" for d in self.differences)
        head = (f"<p>replay of <code>{escape(str(self.source))}</code> ({escape(self._connection_text())}) "
                f"as the {self.side} against <code>{escape(self.peer)}</code>: "
                + (f"{len(self.differences)} differences</p><ul>{diffs}</ul>" if diffs else
                   "no differences</p>"))
        return (f"<div>{head}<table><tr><th>captured</th><th>live</th></tr><tr>"
                f"<td style='vertical-align:top'>{self.captured.svg()}</td>"
                f"<td style='vertical-align:top'>{self.trace.svg()}</td></tr></table></div>")

    def to_pytest(self, path):
        """Write a pytest file replaying this script against the same peer:
        one line a segment, relative numbers, for a person to read and edit.
        Returns the path."""
        path = os.fspath(path)
        name = "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(str(self.source)))[0])
        setup, peer_var = self._peer_code
        body = [f"    {line}" for line in setup]
        args = [peer_var]
        if peer_var != "target":
            args.append(str(self.port))
        args += [f"side={self.side!r}", f"iss={self.iss}"]
        if self.speed is not None:
            args.append(f"speed={self.speed}")
        if self.timeout != 1.0:
            args.append(f"timeout={self.timeout}")
        body.append(f"        with Script({', '.join(args)}) as s:")
        body += [f"            {step.line(gaps=self.speed is not None)}" for step in self.live_steps]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        said = "".join(f"\n  - after step {d.step}, {d.kind}: the capture had {d.captured}; this peer "
                       f"sent {d.observed}" for d in self.differences)
        if said:
            said = ("\n\nThe expects are this peer's answers in the replay, so that the test passes "
                    f"against it; where they differed from the capture's:{said}")
        text = (f'''"""A replay of {self.source}: {self._connection_text()}, played as the {self.side}
against {self.peer}.{said}

Generated by finprobe (fp.replay(...).to_pytest) on {stamp}. One line a segment:
s.send for ours, s.expect for the peer's, numbers relative to each side's initial
sequence number (a send without ack= acknowledges everything received). The peer's
segments between two sends are awaited together and compared as fp.replay compares
them: what the RFCs let a peer vary (ACKs folded or not, segmentation, windows,
timestamps, the data's bytes) is not a difference. Edit freely.
"""

import finprobe as fp
from finprobe.replay import Script, wait_listening


def test_replay_{name or "capture"}():
''' + "\n".join(body) + "\n")
        with open(path, "w") as f:
            f.write(text)
        return path


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rows(trace):
    return [{"direction": r["direction"], "flags": r["flags"], "seq_rel": r["seq"], "ack_rel": r["ack"],
             "len": r["len"], "time": r["time"]} for r in trace.relative()]


def _peer_code(peer, listened, port):
    """The lines of a generated test that make the peer again (the first a
    ``with``, the rest inside it), and its name there. ``listened``: replay
    made the Lab and listened on the port itself."""
    if isinstance(peer, Target):
        return [f"with fp.Target({peer.host!r}, {peer.port}) as target:"], "target"
    stack, env = getattr(peer, "_stack_spec", (None, None))
    args = [f"ipv6={peer.ipv6}"]
    if stack is not None:
        args.append(f"stack={list(stack)!r}")
        if env:
            args.append(f"env={dict(env)!r}")
    lines = [f"with fp.Lab({', '.join(args)}) as lab:"]
    started = False
    for what in getattr(peer, "_setup", ()):
        if what[0] == "listen":
            lines.append(f"    lab.listen({what[1]}, backlog={what[2]})")
        elif what[0] == "sysctl":
            lines.append(f"    lab.sysctl({what[1]!r}, {what[2]!r})")
        elif what[0] == "popen":
            kwargs = "".join(f", {k}={v!r}" for k, v in what[2].items())
            lines.append(f"    lab.popen({list(what[1])!r}{kwargs})")
            started = True
    if listened:
        lines.append(f"    lab.listen({port})")
    if started:
        lines.append(f"    wait_listening(lab, {port})")
    return lines, "lab"


def wait_listening(lab, port, timeout=LISTEN_WAIT):
    """Wait until a socket of the Lab's kernel listens on ``port`` (a server
    the test started with lab.popen); fp.Error after ``timeout`` s."""
    import subprocess
    _args.port("port", port)
    want = f":{port:04X} "
    deadline = time.monotonic() + _args.seconds("timeout", timeout)
    while True:
        # Not lab.popen: a generated test would write this wait as a step of its setup.
        out = subprocess.run(["cat", "/proc/net/tcp", "/proc/net/tcp6"], preexec_fn=lab._core._enter,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5).stdout.decode()
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and (fields[1] + " ").endswith(want) and fields[3] == "0A":
                return
        if time.monotonic() >= deadline:
            raise _core.Error(f"nothing listens on port {port} in {lab!r} after {timeout:g} s")
        time.sleep(0.02)
