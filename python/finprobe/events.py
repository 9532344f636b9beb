"""The states and events of the state x event matrix (API.md), in one place.

A cell of the matrix is a peer driven into one of STATES and sent one of
EVENTS. An event is named by what it is and where it falls in the peer's
sequence space, from four numbers of the peer's (``Numbers``):

  N  its RCV.NXT: the next sequence number it expects of us
  W  its receive window, as it last advertised it (finprobe asks for no
     window scaling, so the field is the window)
  S  its SND.NXT: just past the last sequence number it sent (its FIN
     included)
  U  its SND.UNA: the highest acknowledgment of ours it has had

``rst@N+W/2`` is a RST whose sequence number is N + W//2. Events other than
``ack@...`` and ``rstack@N,ack=S+1000`` acknowledge U, nothing new: they test
one thing at a time. The profiles (finprobe.profile) say what each cell
should draw; ``classify`` names the event a segment of any trace is, so the
same expectations judge a capture (finprobe.model.violations).
"""

import dataclasses

# The peer's states, as the matrix drives them. FIN_WAIT_2 is reached by
# the application's close() (an orphan); FIN_WAIT_2/shut by shutdown(SHUT_WR),
# the socket still held.
STATES = ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "FIN_WAIT_2/shut", "CLOSE_WAIT", "CLOSING",
          "LAST_ACK", "TIME_WAIT")
# The states in which the peer has had our FIN: fin-retx@N-1 there, fin@N elsewhere.
HAD_OUR_FIN = frozenset({"CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"})
DATA = b"finprobe-matrix\n" * 4           # the payload of data@ events: 64 bytes
SYN_OPTIONS = (("mss", 1460),)            # a SYN's, as a new connection's


@dataclasses.dataclass(frozen=True)
class Numbers:
    """The peer's sequence variables, as the segments both ways show them."""

    N: int
    W: int
    S: int
    U: int


@dataclasses.dataclass(frozen=True)
class Event:
    """One event: its name, the segment's flags, and its sequence and
    acknowledgment numbers as functions of the peer's Numbers."""

    name: str
    kind: str          # rst rstack syn ack fin fin-retx data
    flags: str
    seq: object        # Numbers -> int
    ack: object        # Numbers -> int, or None: no ACK flag, the field 0
    payload: bytes = b""

    def segment(self, n):
        """The fields of Connection.send for this event against numbers n."""
        fields = {"flags": self.flags, "seq": self.seq(n) % 2**32,
                  "ack": 0 if self.ack is None else self.ack(n) % 2**32}
        if self.kind == "syn":
            fields["options"] = SYN_OPTIONS
        return fields, self.payload

    def applies(self, state):
        """Whether this event is part of the state's row (fin@N before the
        peer has had our FIN, fin-retx@N-1 after)."""
        if self.kind == "fin":
            return state not in HAD_OUR_FIN
        if self.kind == "fin-retx":
            return state in HAD_OUR_FIN
        return True


def _ev(name, flags, seq, ack, payload=b""):
    kind = name.split("@")[0]
    return Event(name, kind, flags, seq, ack, payload)


EVENTS = (
    _ev("rst@N", "R", lambda n: n.N, None),
    _ev("rst@N-1", "R", lambda n: n.N - 1, None),
    _ev("rst@N+W/2", "R", lambda n: n.N + n.W // 2, None),
    _ev("rst@N+W-1", "R", lambda n: n.N + n.W - 1, None),
    _ev("rst@N+W", "R", lambda n: n.N + n.W, None),
    _ev("rst@N+W+1", "R", lambda n: n.N + n.W + 1, None),
    _ev("rst@N-1000", "R", lambda n: n.N - 1000, None),
    _ev("rst@N+W+1000", "R", lambda n: n.N + n.W + 1000, None),
    _ev("rstack@N", "RA", lambda n: n.N, lambda n: n.U),
    _ev("rstack@N+W/2", "RA", lambda n: n.N + n.W // 2, lambda n: n.U),
    _ev("rstack@N,ack=S+1000", "RA", lambda n: n.N, lambda n: n.S + 1000),
    _ev("syn@N", "S", lambda n: n.N, None),
    _ev("syn@N+W/2", "S", lambda n: n.N + n.W // 2, None),
    _ev("syn@N-1000", "S", lambda n: n.N - 1000, None),
    _ev("syn@N+10^6", "S", lambda n: n.N + 10**6, None),
    _ev("ack@S", "A", lambda n: n.N, lambda n: n.S),
    _ev("ack@U-1000", "A", lambda n: n.N, lambda n: n.U - 1000),
    _ev("ack@U-100000", "A", lambda n: n.N, lambda n: n.U - 100000),
    _ev("ack@S+1000", "A", lambda n: n.N, lambda n: n.S + 1000),
    _ev("fin@N", "FA", lambda n: n.N, lambda n: n.U),
    _ev("fin-retx@N-1", "FA", lambda n: n.N - 1, lambda n: n.U),
    _ev("data@N", "PA", lambda n: n.N, lambda n: n.U, DATA),
    _ev("data@N+W+1000", "PA", lambda n: n.N + n.W + 1000, lambda n: n.U, DATA),
)
BY_NAME = {e.name: e for e in EVENTS}


def cells(states=None, events=None):
    """The (state, event name) pairs of a matrix, row by row, in the order
    above; ``states``/``events`` limit it (ValueError naming an unknown one)."""
    states = _pick("states", states, STATES)
    events = _pick("events", events, [e.name for e in EVENTS])
    return [(s, e) for s in states for e in events if BY_NAME[e].applies(s)]


def _pick(what, chosen, known):
    if chosen is None:
        return list(known)
    if isinstance(chosen, str):
        raise TypeError(f"{what} must be a list of names, not a str")
    chosen = list(chosen)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(known)}")
    return [k for k in known if k in chosen]


# ---- naming the event a segment is ---------------------------------------------


def seq_offset(value, base):
    """value - base as a signed 32-bit distance."""
    d = (value - base) % 2**32
    return d - 2**32 if d >= 2**31 else d


def _seq_place(kind, off, w):
    """The event of ``kind`` whose sequence number falls where ``off`` (from
    N) does, by the regions the matrix samples."""
    if off == 0:
        return "@N"
    if kind == "syn":
        if off < 0:
            return "@N-1000"
        return "@N+W/2" if off < w else "@N+10^6"
    if kind == "rst":
        if off == -1:
            return "@N-1"
        if off < 0:
            return "@N-1000"
        for name, at in (("@N+W-1", w - 1), ("@N+W", w), ("@N+W+1", w + 1)):
            if off == at:
                return name
        return "@N+W/2" if off < w else "@N+W+1000"
    if kind == "rstack":
        return "@N+W/2" if 0 < off < w else None
    if kind == "data":
        return "@N+W+1000" if off >= w else None
    return None


def classify(seg, n):
    """The name of the event ``seg`` (a segment to the peer) is, against the
    peer's Numbers n; None when it is none of the matrix's (in-order data
    with its ACK of nothing new is ordinary traffic, for one)."""
    flags = seg.flags
    off = seq_offset(seg.seq, n.N)
    acks = "A" in flags
    if "R" in flags:
        if acks and seq_offset(seg.ack, n.S) > 0:
            return "rstack@N,ack=S+1000" if off == 0 else None
        kind = "rstack" if acks else "rst"
        place = _seq_place(kind, off, n.W)
        return kind + place if place else None
    if "S" in flags:
        return None if acks else "syn" + _seq_place("syn", off, n.W)
    if not acks:
        return None
    if "F" in flags:
        if off == 0:
            return "fin@N"
        return "fin-retx@N-1" if off == -1 and not seg.payload else None
    if seg.payload:
        if off == 0:
            return "data@N"
        place = _seq_place("data", off, n.W)
        return "data" + place if place else None
    ack = seq_offset(seg.ack, n.U)
    if off != 0:
        return None
    if seq_offset(seg.ack, n.S) > 0:
        return "ack@S+1000"
    if seg.ack == n.S % 2**32 and n.S != n.U:
        return "ack@S"
    if ack <= -100000:
        return "ack@U-100000"
    if ack < 0:
        return "ack@U-1000"
    return None
