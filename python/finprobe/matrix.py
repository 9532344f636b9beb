"""fp.matrix: each close state of the peer against each event (API.md).

A cell is a fresh connection driven until the peer is in the cell's state,
one segment sent (the event, finprobe.events), and what followed: the
peer's answer on the wire, its state after (where it can be read), and
whether the connection is still alive. What the profiles (finprobe.profile)
expect of the cell is kept beside it, and the verdict is computed from
what was observed against the chosen profile.

Cells run in batches, all of a batch at once, each on its own 4-tuple:
every cell of a batch is driven (the peer answers each step within
microseconds to milliseconds), every event is sent, and then one wait of
ANSWER_WAIT serves the whole batch, where a sequential run would wait once a
cell. A Lab's kernel takes the whole matrix as one batch; a stack takes as
many connections at once as its pools allow (stacks.CONCURRENCY).

The peer is driven as fp.probe drives it (finprobe.probe's peers): where
finprobe holds the peer's socket (a Lab's kernel) the socket's calls close
it, after it has sent PEER_DATA bytes we ACK; elsewhere the port serves
HTTP: ``GET /`` makes the server answer and close first, our FIN before a
request makes it close after us, and finprobe's stack recipes also serve
``GET /shut`` (shutdown, the socket kept) and ``GET /hold`` (no close until
stacks.HOLD s after our FIN), for FIN_WAIT_2/shut and CLOSE_WAIT.

What each fact comes from is kept with it: ``state_source`` says who told
``state_after`` ("socket": sock_diag; "stack": a stack's own word; None: not
read), ``alive_source`` who told ``alive`` (the same, or "wire": a follow-up
keepalive probe's answer).
"""

import dataclasses
import json
import socket
import time

from . import _args, _core, events, stacks
from . import profile as _profile
from .events import Numbers
from .probe import (HTTP_REQUEST, LAB_PORT, VERDICTS, StackPeer, TargetPeer, _command, _liveness,
                    _next_fin, _Undriven, _Unmet, _fin_seq, _rel)
from .state import State

ANSWER_WAIT = 1.0        # s after a batch's last event for its answers (delayed ACKs are <= 0.5 s)
FOLLOW_WAIT = 1.0        # s for the answers to a batch's follow-up probes
PEER_DATA = 3000         # bytes a Lab's kernel sends first, which we ACK (API.md)
DRIVE_TIMEOUT = 2.0      # s for each answer while driving a cell
STATE_TIMEOUT = 1.0      # s for a peer's socket to reach the cell's state
HTTP_BATCH = 16          # connections at once against a server whose limits are unknown
REQUEST = {"close": HTTP_REQUEST,                  # fp.probe's: answer, then close
           "shut": b"GET /shut HTTP/1.0\r\nHost: finprobe\r\n\r\n",
           "hold": b"GET /hold HTTP/1.0\r\nHost: finprobe\r\n\r\n"}


@dataclasses.dataclass
class Cell:
    """One state x event: what was sent, what came back, and the verdict
    against the matrix's profile (``mismatches`` says why a "fail")."""

    state: str
    event: str
    sent: object = None            # the event's Segment
    answer: object = None          # the peer's first Segment after it (its retransmissions aside), or None
    answers: list = dataclasses.field(default_factory=list)   # every one within ANSWER_WAIT
    state_before: str = None       # the peer's state read just before the event, where it can be read
    state_after: str = None        # ... read ANSWER_WAIT after it
    state_source: str = None       # who told the states: "socket", "stack" or None (not read)
    alive: bool = None             # the connection still exists after the event (None: unknown)
    alive_source: str = None       # "socket", "stack" or "wire" (a follow-up keepalive probe)
    follow_up: object = None       # that probe's answer (Segment or None), where one was sent
    numbers: Numbers = None        # the peer's N W S U when the event was sent
    expected: dict = dataclasses.field(default_factory=dict)  # profile name -> expectation (as_dict)
    verdict: str = None
    mismatches: list = dataclasses.field(default_factory=list)
    reason: str = ""               # why a cell was skipped
    violations: list = dataclasses.field(default_factory=list)  # the model's (finprobe.model), by the profile
    profile: str = None            # the profile the verdict follows
    carried: bool = False          # the answer is the peer's data or FIN sent again, with a new ACK
    trace: object = None           # fp.Trace of the cell's connection
    conn: object = dataclasses.field(default=None, repr=False)
    handle: object = dataclasses.field(default=None, repr=False)  # the peer's socket, where held

    @property
    def answer_class(self):
        """The answer's class (finprobe.profile.answer_class): an ACK where the
        answer only carries a new acknowledgment on data or a FIN sent again."""
        return "ACK" if self.carried else _profile.answer_class(self.answer)

    @property
    def name(self):
        """"STATE-EVENT", the conformance test's id."""
        return f"{self.state}-{self.event}"

    def __repr__(self):
        return f"<Cell {self.name}: {self.verdict} {self.short()}>"

    def short(self):
        """What was seen, short: "[A] ESTABLISHED" (the answer's flags, the state after)."""
        if self.verdict == "skipped":
            return "skipped"
        answer = f"[{self.answer.flags}]" if self.answer is not None else "-"
        after = self.state_after or {True: "alive", False: "gone", None: "?"}[self.alive]
        return f"{answer} {after}"

    def explain(self, profile=None):
        """What was sent, what the profile expected, what was observed and
        where from, and the cell's ladder: a failure report's text."""
        profile = profile or self.profile
        lines = [f"{self.state} x {self.event}: {self.verdict}"]
        if self.sent is not None:
            lines.append(f"  sent:      [{self.sent.flags}] {_numbers_text(self)}")
        expected = self.expected.get(profile)
        if expected is None:
            lines.append(f"  expected:  nothing: the profile {profile} states no expectation here")
        else:
            lines.append(f"  expected ({profile}, {expected['section']}): answer {' or '.join(expected['answer'])}"
                         + (f", state after {expected['state_after']}" if expected.get("state_after") else "")
                         + ("" if expected.get("alive") is None else f", alive {expected['alive']}"))
            if expected.get("note"):
                lines.append(f"    ({expected['note']})")
        if self.verdict == "skipped":
            lines.append(f"  skipped:   {self.reason}")
        else:
            answer = "nothing" if self.answer is None else f"[{self.answer.flags}] {_answer_numbers(self)}"
            lines.append(f"  observed (wire): answer {answer}")
            if self.state_source is not None:
                lines.append(f"  observed ({self.state_source}): state after {self.state_after}")
            if self.alive_source is not None:
                lines.append(f"  observed ({self.alive_source}): alive {self.alive}")
        lines += [f"  mismatch:  {m}" for m in self.mismatches]
        lines += [f"  model:     {v.text}" for v in self.violations]
        if self.trace is not None and len(self.trace):
            lines += ["", self.trace.ladder_text()]
        return "\n".join(lines)

    def answer_dict(self):
        """The answer as the JSON has it: flags, seq_rel (to the peer's ISN), ack_rel (to ours)."""
        return _segment_dict(self.answer, self.conn_irs, self.conn_iss)

    conn_iss = 0
    conn_irs = 0

    def as_dict(self):
        return {"state": self.state, "event": self.event, "answer": self.answer_dict(),
                "state_after": self.state_after if self.state_source == "socket" else None,
                "stack_state_after": self.state_after if self.state_source == "stack" else None,
                "alive": self.alive, "alive_source": self.alive_source,
                "expected": self.expected, "verdict": self.verdict, "mismatches": self.mismatches,
                "reason": self.reason, "model_violations": [v.text for v in self.violations],
                "sent": _segment_dict(self.sent, self.conn_iss, self.conn_irs)}


def _numbers_text(cell):
    n = cell.numbers
    ack = f" ack={_rel(cell.sent.ack, cell.conn_irs)}" if "A" in cell.sent.flags else ""
    return (f"seq={_rel(cell.sent.seq, cell.conn_iss)}{ack} len={len(cell.sent.payload)} "
            f"(the peer's N={_rel(n.N, cell.conn_iss)} W={n.W} S={_rel(n.S, cell.conn_irs)} "
            f"U={_rel(n.U, cell.conn_irs)}, relative)")


def _answer_numbers(cell):
    a = cell.answer
    ack = f" ack={_rel(a.ack, cell.conn_iss)}" if "A" in a.flags else ""
    return f"seq={_rel(a.seq, cell.conn_irs)}{ack} len={len(a.payload)}"


def _segment_dict(seg, seq_base, ack_base):
    """flags, seq and ack relative to the sender's and the receiver's ISNs
    (ack_rel None where the ACK flag is off: the field means nothing), length."""
    if seg is None:
        return None
    return {"flags": seg.flags, "seq_rel": _rel(seg.seq, seq_base),
            "ack_rel": _rel(seg.ack, ack_base) if "A" in seg.flags else None, "len": len(seg.payload)}


@dataclasses.dataclass
class Matrix:
    """fp.matrix's result: ``cells`` in row order (a row a state), the peer,
    the family, the profile the verdicts follow and the sysctls set."""

    peer: str
    family: str
    profile: str
    cells: list
    name: str = ""                 # short, for a table's column: linux, a recipe's or binary's name, HOST:PORT
    sysctls: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0           # wall time of the run

    def cell(self, state, event):
        """The cell of ``state`` and ``event``; KeyError if the matrix has none."""
        for c in self.cells:
            if c.state == state and c.event == event:
                return c
        raise KeyError(f"no cell {state} x {event} in this matrix")

    def counts(self):
        return {v: sum(c.verdict == v for c in self.cells) for v in VERDICTS}

    def __repr__(self):
        c = self.counts()
        return (f"<Matrix {self.peer} ({self.family}, profile {self.profile}): {len(self.cells)} cells, "
                f"{c['pass']} pass, {c['fail']} fail, {c['info']} info, {c['skipped']} skipped>")

    def as_dict(self):
        return {"peer": self.peer, "family": self.family, "profile": self.profile,
                "sysctls": self.sysctls, "seconds": round(self.seconds, 3), "counts": self.counts(),
                "cells": [c.as_dict() for c in self.cells]}

    def to_json(self):
        return json.dumps(self.as_dict(), indent=2)

    def table(self):
        """Text: a block a state, a line an event: verdict, what was seen, what the profile expects."""
        lines = [repr(self)]
        for state in dict.fromkeys(c.state for c in self.cells):
            lines.append(f"\n{state}")
            for c in (c for c in self.cells if c.state == state):
                mark = {"pass": "PASS", "fail": "FAIL", "info": "INFO", "skipped": "SKIP"}[c.verdict]
                why = c.reason if c.verdict == "skipped" else "; ".join(c.mismatches)
                lines.append(f"  {mark}  {c.event:22s} {c.short():28s} {why}".rstrip())
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def _repr_html_(self):
        from . import compare_view
        return compare_view.html_table([self], self.profile)

    def to_html(self, path):
        """Write the matrix as an HTML page (compare_view's table, one peer)."""
        from . import compare_view
        compare_view.MatrixComparison([self]).to_html(path)

    def to_svg(self, path):
        """Write the matrix as an SVG grid (compare_view's, one peer)."""
        from . import compare_view
        compare_view.MatrixComparison([self]).to_svg(path)


# ---- the peers ----------------------------------------------------------------------


class KernelRig:
    """The Lab's kernel: one Lab for the whole matrix (with the sysctls set),
    one listener; finprobe holds each connection's server socket."""

    holds_socket = True
    state_source = "socket"
    name = "linux"

    def __init__(self, ipv6, sysctls):
        from .lab import Lab
        self.lab = Lab(ipv6=ipv6)
        self.conns = []
        try:
            for name, value in sysctls.items():
                try:
                    self.lab.sysctl(name, value)
                except (_core.Error, OSError) as e:
                    raise ValueError(f"sysctl {name}={value}: {e}") from None
            self.server = self.lab.listen(LAB_PORT, backlog=1024)
        except BaseException:
            self.lab.close()
            raise
        self.batch = None          # the whole matrix at once

    def describe(self):
        return "the local Linux kernel (a Lab)"

    def another(self):
        """A connection to the listener, the kernel's socket, PEER_DATA bytes from it ACKed."""
        conn = self.lab.connect(LAB_PORT)
        self.conns.append(conn)
        sock, _ = self.server.accept()
        sock.sendall(b"x" * PEER_DATA)
        got = 0
        while got < PEER_DATA:
            seg = conn.expect(timeout=DRIVE_TIMEOUT)
            got += len(seg.payload)
        conn.ack()
        return conn, sock

    def state(self, conn):
        return self.lab.peer_state(conn).value

    def close_first(self, conn, sock, how):
        """The kernel's FIN: its socket closed ("close", an orphan) or shut down ("shut")."""
        if how == "shut":
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.close()
        return _fin_of_peer(conn)

    def hold(self, conn, sock):
        """Nothing to do: the socket stays open until we close it."""

    def keep_open(self, conn, sock):
        """Nothing to do: the socket closes only when we close it."""

    def close_after(self, conn, sock):
        sock.close()

    def death(self):
        return None

    def release(self):
        for conn in self.conns:
            conn.close()
        self.conns = []

    def shutdown(self):
        self.release()
        self.lab.close()


class HttpRig:
    """A peer serving HTTP (a stack in a Lab, a Target): fp.probe's peer for
    connections, states and deaths; the requests below make it close."""

    holds_socket = False

    def __init__(self, peer, batch, recipe_paths, name):
        self.peer, self.batch, self.recipe_paths, self.name = peer, batch, recipe_paths, name

    @property
    def state_source(self):
        return self.peer.state_source

    def describe(self):
        return self.peer.describe()

    def another(self):
        return self.peer.another()

    def state(self, conn):
        return self.peer.state(conn)

    def death(self):
        """How a stack's process ended (None while it runs, and for a Target)."""
        return self.peer.death() if isinstance(self.peer, StackPeer) else None

    def release(self):
        """The batch's connections closed; a stack that died started again."""
        self.peer.begin()

    def shutdown(self):
        self.peer.shutdown()

    def close_first(self, conn, sock, how):
        """Ask for a page (GET /shut for "shut"), ACK its data, not its FIN: its FIN."""
        if how == "shut" and not self.recipe_paths:
            raise _Undriven("FIN_WAIT_2 with the socket held needs a server that shuts its socket down "
                            "on GET /shut and keeps it, as finprobe's stack recipes do; this peer is not "
                            "known to")
        conn.write(REQUEST[how])
        fin = _next_fin(conn, timeout=DRIVE_TIMEOUT, ack_data=True)
        if fin is None:
            raise _Undriven(f"the server did not close within {DRIVE_TIMEOUT:g} s of "
                            f"{REQUEST[how].split(b' H')[0].decode()}")
        return fin

    def hold(self, conn, sock):
        """GET /hold: the answer, ACKed; the server keeps the connection until stacks.HOLD s
        after our FIN, so that it stays in CLOSE_WAIT."""
        if not self.recipe_paths:
            raise _Undriven("CLOSE_WAIT cannot be held against a server that closes as soon as it reads "
                            "our FIN; finprobe's stack recipes hold it on GET /hold, this peer is not "
                            "known to")
        conn.write(REQUEST["hold"])
        _read_answer(conn)

    def keep_open(self, conn, sock):
        """Where the server serves GET /hold (a recipe), that: an answer, and
        no close on our FIN for stacks.HOLD s, so that a fin@N finds it in
        CLOSE_WAIT, not closing at once as a server does on EOF. Elsewhere
        nothing: the connection stays idle."""
        if self.recipe_paths:
            self.hold(conn, sock)

    def close_after(self, conn, sock):
        """Nothing: our FIN before any request makes the server close."""


def _read_answer(conn):
    """An HTTP answer, whole (its Content-Length), its data ACKed; a FIN in it ends the cell."""
    data, deadline = b"", time.monotonic() + DRIVE_TIMEOUT
    while True:
        seg = conn.recv(timeout=max(0.0, deadline - time.monotonic()))
        if seg is None:
            raise _Undriven(f"no whole answer to GET /hold within {DRIVE_TIMEOUT:g} s")
        if "F" in seg.flags or "R" in seg.flags:
            raise _Undriven(f"the server sent [{seg.flags}] after GET /hold: it does not hold the "
                            "connection")
        if seg.payload:
            data += seg.payload
            conn.ack()
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = _content_length(head)
            if length is None or len(body) >= length:
                return


def _content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _fin_of_peer(conn):
    """The peer's FIN, its data before it taken (not ACKed: the kernel sent it all before)."""
    fin = _next_fin(conn, timeout=DRIVE_TIMEOUT)
    if fin is None:
        raise _Unmet("wire", f"the peer sent no FIN within {DRIVE_TIMEOUT:g} s of its close")
    return fin


def _ack_of_our_fin(conn):
    """Take segments until the peer ACKs our FIN (SND.NXT); a FIN among them returned."""
    fin = None
    while True:
        seg = conn.expect(timeout=DRIVE_TIMEOUT)
        if "R" in seg.flags:
            raise _Unmet("wire", f"the peer reset the connection ([{seg.flags}]) while it was driven")
        if "F" in seg.flags:
            fin = seg
        if "A" in seg.flags and seg.ack == conn.snd_nxt:
            return fin


# ---- driving a cell into its state ------------------------------------------------------
#
# One function a state, each as the RFC's close sequence goes (§3.6): the
# peer's close or ours, the FINs ACKed or not. ``rig`` supplies the peer's
# part (close_first, close_after, hold).


def _established(rig, conn, sock):
    rig.keep_open(conn, sock)


def _fin_wait_1(rig, conn, sock):
    rig.close_first(conn, sock, "close")           # its FIN, not ACKed


def _fin_wait_2(rig, conn, sock, how="close"):
    rig.close_first(conn, sock, how)
    conn.ack()                                     # its FIN ACKed


def _fin_wait_2_shut(rig, conn, sock):
    _fin_wait_2(rig, conn, sock, "shut")


def _close_wait(rig, conn, sock):
    rig.hold(conn, sock)
    conn.fin()
    if _ack_of_our_fin(conn) is not None:
        raise _Undriven("the peer sent its FIN with its ACK of ours: it closed at once, CLOSE_WAIT was "
                        "not held")


def _closing(rig, conn, sock):
    fin = rig.close_first(conn, sock, "close")
    conn.send(flags="FA", ack=_fin_seq(fin))       # our FIN, its FIN not ACKed: crossing
    _ack_of_our_fin(conn)


def _last_ack(rig, conn, sock):
    conn.fin()
    fin = _ack_of_our_fin(conn)
    rig.close_after(conn, sock)
    while fin is None:                             # its FIN, not ACKed
        fin = _fin_of_peer(conn)


def _time_wait(rig, conn, sock):
    rig.close_first(conn, sock, "close")
    conn.fin()                                     # ACKs its FIN, carries ours
    _ack_of_our_fin(conn)


DRIVE = {"ESTABLISHED": _established, "FIN_WAIT_1": _fin_wait_1, "FIN_WAIT_2": _fin_wait_2,
         "FIN_WAIT_2/shut": _fin_wait_2_shut, "CLOSE_WAIT": _close_wait, "CLOSING": _closing,
         "LAST_ACK": _last_ack, "TIME_WAIT": _time_wait}


def _base_state(state):
    """The state name a peer reports for a row ("FIN_WAIT_2/shut" is FIN_WAIT_2)."""
    return state.split("/")[0]


# ---- the run ---------------------------------------------------------------------------


def matrix(host=None, port=None, *, stack=None, env=None, ipv6=False, sysctls=None, states=None,
           events=None, profile="rfc", concurrency=None, on_cell=None):
    """Each close state of the peer against each event: an fp.Matrix.

    The peer as fp.probe's: None (the local kernel in a Lab, with
    ``sysctls`` {name: value} set in it), ``host`` and ``port`` (a server,
    through fp.Target), or ``stack`` and ``port`` (a user-space stack in a
    Lab). ``states`` and ``events`` limit the run (finprobe.events names);
    ``profile`` ("rfc", "linux" or a path to a profile file) is what the
    verdicts follow. ``concurrency``: connections at once (default: all for a
    Lab's kernel, stacks.CONCURRENCY for a recipe, HTTP_BATCH otherwise).
    ``on_cell(cell)`` is called as each cell ends.
    """
    if not isinstance(ipv6, bool):
        raise TypeError(f"ipv6 must be a bool, not {type(ipv6).__name__}")
    sysctls = _sysctls(sysctls)
    if sysctls and (host is not None or stack is not None):
        raise ValueError("matrix: sysctls= are set in a Lab's kernel: not with host= or stack=")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
    chosen = _profile.load(profile)
    todo = events_cells(states, events)
    rig = _rig(host, port, stack, env, ipv6, sysctls, concurrency)
    family = "ipv6" if (ipv6 or (host is not None and ":" in rig.peer.target.addr)) else "ipv4"
    result = Matrix(rig.describe(), family, chosen.name, [], sysctls=dict(sysctls), name=rig.name)
    started = time.monotonic()
    try:
        size = concurrency or rig.batch or len(todo)
        for at in range(0, len(todo), size):
            for cell in _run_batch(rig, todo[at:at + size]):
                _judge(cell, chosen, sysctls)
                result.cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    finally:
        rig.shutdown()
    result.seconds = time.monotonic() - started
    return result


def events_cells(states, events_):
    return events.cells(states, events_)


def _sysctls(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"sysctls must be a dict of name: value, not {type(value).__name__}")
    for name, v in value.items():
        if not isinstance(name, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
            raise TypeError(f"sysctls: {name!r}: {v!r} is not a str name with a str or int value")
    return dict(value)


def _rig(host, port, stack, env, ipv6, sysctls, concurrency):
    if stack is not None:
        if host is not None:
            raise ValueError("matrix: give host or stack, not both")
        if port is None:
            raise ValueError("matrix: stack= needs port=, the port the stack serves HTTP on")
        _args.port("port", port)
        stack = _command("stack", stack)
        recipe = _recipe_of(stack)
        batch = getattr(stacks, "CONCURRENCY", {}).get(recipe, HTTP_BATCH)
        name = recipe or stack[0].rsplit("/", 1)[-1]
        return HttpRig(StackPeer(stack, env, port, ipv6), batch, recipe is not None, name)
    if (host is None) != (port is None):
        raise ValueError("matrix: give both host and port, or neither (the local kernel in a Lab)")
    if env is not None:
        raise ValueError("matrix: env= is for a stack's command (stack=)")
    if host is None:
        return KernelRig(ipv6, sysctls)
    peer = TargetPeer(host, port)
    return HttpRig(peer, HTTP_BATCH, False, peer.describe())


def _run_batch(rig, pairs):
    """Every cell of the batch driven, sent its event, answered, read: in
    phases, so that the waits are the batch's, not each cell's."""
    cells = [Cell(state, event) for state, event in pairs]
    for cell in cells:
        _drive(rig, cell)
    live = [c for c in cells if c.verdict is None]
    for cell in live:
        _send_event(cell)
    if live:
        time.sleep(ANSWER_WAIT)
    for cell in live:
        _collect(cell)
    for cell in live:
        _after(rig, cell)
    _follow_ups(rig, [c for c in live if c.alive is None and c.verdict is None])
    death = rig.death()
    for cell in cells:
        if cell.conn is not None:
            cell.trace = cell.conn.trace
        if death and cell.verdict is None:
            cell.verdict, cell.reason = "skipped", f"the peer died during the batch: {death}"
    rig.release()
    return cells


def _drive(rig, cell):
    """Open the cell's connection and drive the peer into its state; a cell
    that cannot be driven is skipped, saying why."""
    try:
        cell.conn, cell.handle = _open(rig)
        cell.conn_iss, cell.conn_irs = cell.conn.iss, cell.conn.irs   # before an event's SYN resets ours
        DRIVE[cell.state](rig, cell.conn, cell.handle)
        if rig.state_source is not None:
            cell.state_source = rig.state_source
            cell.state_before = _wait_state(rig, cell.conn, _base_state(cell.state))
            if cell.state_before != _base_state(cell.state):
                raise _Undriven(f"the peer's {_whose(rig)} read {cell.state_before}, not "
                                f"{_base_state(cell.state)}, after the drive")
    except _Undriven as e:
        _skip(cell, str(e))
    except (_core.ExpectError, _core.ConnectionRefused, _Unmet) as e:
        _skip(cell, f"could not be driven into {cell.state}: {str(e).splitlines()[0]}")
    except OSError as e:
        _skip(cell, f"could not be driven into {cell.state}: {e.strerror or e}")
    except _core.Error as e:
        _skip(cell, f"could not be driven into {cell.state}: {e}")


def _open(rig):
    """A connection to the peer; a SYN it did not answer is tried once more
    on a new connection, as a client retransmits its SYN (a server with a
    short accept queue, as http.server's 5, drops SYNs when many come at once)."""
    try:
        return rig.another()
    except _core.ConnectionRefused:
        raise
    except _core.ExpectError:
        return rig.another()


def _skip(cell, reason):
    cell.verdict, cell.reason = "skipped", reason


def _whose(rig):
    return "socket" if rig.state_source == "socket" else "stack (its own word)"


def _wait_state(rig, conn, want):
    deadline = time.monotonic() + STATE_TIMEOUT
    while True:
        state = rig.state(conn)
        if state == want or time.monotonic() >= deadline:
            return state
        time.sleep(0.002)


def numbers_of(conn):
    """The peer's N W S U from the segments both ways (see finprobe.events)."""
    trace = conn._trace()
    n_, w, s, u = conn.snd_nxt, 0, None, None
    for row in trace:
        seg = row[0]
        if seg.direction == "in":
            end = (seg.seq + seg.seg_len) % 2**32
            if s is None or events.seq_offset(end, s) > 0:
                s = end
            w = seg.window
        elif "A" in seg.flags:
            u = seg.ack
    return Numbers(n_, w, s if s is not None else conn.rcv_nxt, u if u is not None else conn.rcv_nxt)


def _send_event(cell):
    """Pass over what still waits (its retransmissions), then send the event.
    Anything new among it (a FIN, data, a RST) means the peer left the state
    on its own before the event: the cell is skipped, saying so."""
    conn = cell.conn
    before = numbers_of(conn)
    while True:
        seg = conn.recv(timeout=0)
        if seg is None:
            break
        if _is_new(seg, before.S):
            return _skip(cell, f"the peer sent [{seg.flags}] before the event: it left {cell.state} on its own")
    cell.numbers = numbers_of(conn)
    fields, payload = events.BY_NAME[cell.event].segment(cell.numbers)
    try:
        cell.sent = conn.send(payload, **fields)
    except OSError as e:
        _skip(cell, f"the event could not be sent: {e.strerror or e}")


def _peer_acked(conn, event):
    """The highest acknowledgment the peer had sent before the event, or None."""
    acked = None
    for row in conn._trace():
        seg = row[0]
        if seg.direction == "in" and "A" in seg.flags and (seg.ts or 0) <= (event.ts or 0):
            if acked is None or events.seq_offset(seg.ack, acked) > 0:
                acked = seg.ack
    return acked


def _acks_more(seg, acked):
    return "A" in seg.flags and acked is not None and events.seq_offset(seg.ack, acked) > 0


def _is_new(seg, s):
    """Whether a segment of the peer's says something it had not: a RST, or
    data or a FIN beyond S (else its timer sent it again)."""
    end = (seg.seq + seg.seg_len) % 2**32
    return "R" in seg.flags or (seg.seg_len > 0 and events.seq_offset(end, s) > 0)


def _collect(cell):
    """The peer's segments since the event; its answer is the first that is
    not a retransmission of data or a FIN it had sent before the event (one
    that acknowledges more than the peer had before is an answer: its ACK
    rides on the retransmission)."""
    if cell.verdict is not None:
        return
    conn, s = cell.conn, cell.numbers.S
    acked = _peer_acked(conn, cell.sent)
    while True:
        seg = conn.recv(timeout=0)
        if seg is None:
            break
        again = seg.seg_len and "S" not in seg.flags and not _is_new(seg, s)
        if again and not _acks_more(seg, acked):
            continue                               # sent again by its timer, not an answer
        if again and not cell.answers:
            cell.carried = True                    # an ACK on a retransmission: the ACK answers
        cell.answers.append(seg)
    cell.answer = cell.answers[0] if cell.answers else None


def _after(rig, cell):
    """The peer's state now, where it can be read; alive from it."""
    if cell.verdict is not None or rig.state_source is None:
        return
    try:
        cell.state_after = rig.state(cell.conn)
    except (_core.Error, _Unmet) as e:
        cell.state_after = None
        cell.reason = f"the state could not be read after the event: {e}"
        return
    cell.alive = cell.state_after in SAME_CONNECTION
    cell.alive_source = rig.state_source


# A state of the cell's own connection: SYN_RECEIVED after a SYN is a new one.
SAME_CONNECTION = frozenset(s.value for s in State if s not in (State.CLOSED, State.LISTEN,
                                                                 State.SYN_SENT, State.SYN_RECEIVED))


def _follow_ups(rig, cells):
    """Where the state cannot be read: a keepalive probe each (finprobe.probe),
    one wait for all; ACK: alive, RST: gone, nothing: unknown."""
    sent = []
    for cell in cells:
        if any("R" in a.flags or a.flags == "SA" for a in cell.answers):
            # A RST ended it; a SYN-ACK took our SYN for a new connection: it says so itself.
            cell.alive, cell.alive_source = False, "wire"
            continue
        while cell.conn.recv(timeout=0) is not None:
            pass
        try:
            _keepalive(cell.conn, cell.numbers)
            sent.append(cell)
        except OSError:
            pass
    if sent:
        time.sleep(FOLLOW_WAIT)
    for cell in sent:
        cell.follow_up = cell.conn.recv(timeout=0)
        alive = _liveness(cell.follow_up)
        cell.alive = None if alive is None else alive == "alive"
        cell.alive_source = "wire" if alive is not None else None


def _keepalive(conn, n):
    """A keepalive probe (finprobe.probe's) at the numbers of the event, not
    our TCB's: an event (a SYN, a FIN) moved SND.NXT, the peer's RCV.NXT did not."""
    return conn.send(b"\0", flags="A", seq=(n.N - 1) % 2**32, ack=n.U)


def _judge(cell, chosen, sysctls):
    """Every profile's expectation kept; the verdict by the chosen one. The
    sysctls set select a profile's when_sysctl rules."""
    cell.profile = chosen.name
    for name in _profile.names() + ([chosen.name] if chosen.name not in _profile.names() else []):
        prof = chosen if name == chosen.name else _profile.load(name)
        expectation = prof.expect(cell.state, cell.event, sysctls)
        cell.expected[name] = expectation.as_dict() if expectation is not None else None
    if cell.verdict == "skipped":
        return
    cell.verdict, cell.mismatches = chosen.judge(cell, sysctls)
    if cell.trace is not None:
        cell.violations = cell.trace.violations(chosen, sysctls)


def _recipe_of(command):
    """The stack recipe a command runs (its binary is build/stacks/<name>-http), or None."""
    binary = command[0].rsplit("/", 1)[-1]
    return next((name for name in stacks.RECIPES if binary == f"{name}-http"), None)
