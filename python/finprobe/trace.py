"""fp.Trace: segments both ways, in order, and the pictures people read.

A Trace is a read-only sequence of ``fp.Segment`` (each with ``ts`` and
``direction``), with our endpoint's state after each segment where known and,
where someone supplied them, the peer's. It comes from a connection
(``conn.trace``), a whole Lab (``lab.capture()``) or a file (``fp.read_pcap``),
and goes to a pcap file (``to_pcap``), a text ladder (failure reports) or an
SVG/HTML ladder (notebooks).

Sources of traffic (Labs, Targets) call ``_source_opened`` when they start and
``_source_closing`` before they stop, so that a recorder (the pytest plugin's
``--finprobe-pcap``) can keep their capture after they are gone.
"""

import collections.abc
import html
import os
import time
import warnings
from xml.sax.saxutils import escape, quoteattr

from . import _args, _core, model

MOD = 1 << 32

# ---- sources of traffic and their recorders -------------------------------------

_recorders = []  # objects with opened(source) and closing(source)


def _source_opened(source):
    """A Lab or Target started: recorders may keep it. Its capture, off by
    default (it grows with every segment), runs while anyone records."""
    if _recorders:
        source._engine.capture_start()
    for recorder in list(_recorders):
        recorder.opened(source)


def capture_of(source, how):
    """The Trace of a Lab's or Target's capture; fp.Error if it keeps none."""
    rows = source._engine.capture()
    if rows is None:
        raise _core.Error(f"{source!r} keeps no capture: make it with {how}")
    return Trace.of_capture(rows)


def _source_closing(source):
    """A Lab or Target is about to close: recorders take its capture now."""
    for recorder in list(_recorders):
        try:
            recorder.closing(source)
        except Exception as exc:  # a recorder must not keep a Lab from closing
            warnings.warn(f"finprobe: a trace recorder failed on {source!r}: {exc!r}", RuntimeWarning)


# ---- the Trace ---------------------------------------------------------------------


class Trace(collections.abc.Sequence):
    """Segments both ways, in order. ``states[i]`` is our state after ``self[i]``
    was sent or taken ("" for a received segment not taken yet, None unknown);
    ``peer_states[i]`` the peer's, where known (None otherwise).

    ``packets`` are the IP packets exactly as recorded (``to_pcap`` writes
    them; without them, segments are rebuilt); ``wall_clock`` says the stamps
    are wall-clock time (a file's) rather than CLOCK_MONOTONIC. Made from
    another Trace (``fp.Trace(t, t.states, peer_states=...)``), a Trace keeps
    its packets and stamps.
    """

    def __init__(self, segments=(), states=None, transitions=(), *, peer_states=None,
                 packets=None, wall_clock=False):
        stamps = None
        if isinstance(segments, Trace):
            packets = segments._packets if packets is None else packets
            wall_clock = wall_clock or segments.wall_clock
            stamps = segments._stamps
        self._segments = list(segments)
        for seg in self._segments:
            if not isinstance(seg, _core.Segment):
                raise TypeError(f"a Trace holds Segments, not {type(seg).__name__}")
        n = len(self._segments)
        self.states = _parallel("states", states, n)
        self.peer_states = _parallel("peer_states", peer_states, n)
        self._packets = _parallel("packets", packets, n)
        self._stamps = list(stamps) if stamps else [None] * n  # exact ns stamps of a file's packets
        self.transitions = list(transitions)
        self.wall_clock = bool(wall_clock)
        self.peer_modelled = False  # peer_states come from finprobe.model, not the peer
        self.skipped = 0  # packets of a file that were not TCP segments
        self.earlier = 0  # segments of the connection before these (a tail's)
        self._base = None  # (ISNs, first stamp) of a tail, from its connection's start
        self.us = None  # (addr, port) taken as ours in a capture's segments (no direction); None: the first sender

    @classmethod
    def of_connection(cls, conn, last=None):
        """A connection's trace; the peer's states are RFC 9293's model of it
        (finprobe.model), marked as such in the ladders. With ``last``, only
        the last segments (a failure report's): where there are more, only
        those are built, numbered from the connection's first segments, and
        without the model, which would need them all."""
        total = conn._trace_len
        if last is not None and total > last:
            return cls._of_connection_tail(conn, last, total)
        rows = conn._trace()
        segments = [r[0] for r in rows]
        trace = cls(segments, [r[1] for r in rows], conn.transitions(),
                    peer_states=model.peer_states(segments, [s.direction for s in segments]),
                    packets=[r[3] if len(r) > 3 else None for r in rows])
        trace.peer_modelled = True
        return trace

    @classmethod
    def _of_connection_tail(cls, conn, last, total):
        head = Trace([r[0] for r in conn._trace(0, 2)])  # the handshake: ISNs, the first stamp
        rows = conn._trace(-last)
        trace = cls([r[0] for r in rows], [r[1] for r in rows], conn.transitions(),
                    packets=[r[3] for r in rows])
        trace._base = (head._isns(head._sides()), head._segments[0].ts if len(head) else None)
        trace.earlier = total - len(rows)
        return trace

    @classmethod
    def of_capture(cls, rows, wall_clock=False):
        """A Trace of [(Segment, IP packet)] (an engine's capture) or of
        [(Segment, IP packet, ts in ns)] (a file)."""
        trace = cls([r[0] for r in rows], packets=[r[1] for r in rows], wall_clock=wall_clock)
        trace._stamps = [r[2] if len(r) > 2 else None for r in rows]
        return trace

    @classmethod
    def _of_file(cls, segments, packets, stamps):
        """A file's Trace over the lists given, taken as they are: read_pcap
        made them, of Segments, and a copy would double what a large file
        costs while it is read."""
        trace = cls(wall_clock=True)
        n = len(segments)
        trace._segments, trace._packets, trace._stamps = segments, packets, stamps
        trace.states, trace.peer_states = [None] * n, [None] * n
        return trace

    def __getitem__(self, index):
        if isinstance(index, slice):
            segments = self._segments[index]
            start = next((s.ts for s in segments if s.ts is not None), None)
            transitions = [t for t in self.transitions if start is not None and t[0] >= start]
            trace = Trace(segments, self.states[index], transitions,
                          peer_states=self.peer_states[index], packets=self._packets[index],
                          wall_clock=self.wall_clock)
            trace._stamps = self._stamps[index]
            return trace
        return self._segments[index]

    def __len__(self):
        return len(self._segments)

    def __repr__(self):
        sides = self._sides()
        outs = sides.count("out")
        return f"<Trace {len(self)} segments: {outs} out, {len(self) - outs} in>"

    def violations(self, profile="rfc", sysctls=None):
        """The peer's segments the profile (a name, a path or a Profile) does
        not allow where they were sent, as RFC 9293's model of the peer reads
        the trace: [finprobe.model.Violation]. ``sysctls``: the peer's
        settings where known ({name: value}), for when_sysctl rules."""
        return model.violations(self, profile, sysctls)

    # ---- pcap --------------------------------------------------------------------

    def to_pcap(self, path):
        """Write the trace to ``path`` as a pcap file (raw IP) that tcpdump, tshark
        and Wireshark read, stamped in wall-clock time, in the order of their
        stamps. Packets are written as recorded: a checksum the test forced
        wrong stays wrong."""
        now = time.monotonic()
        packets = []
        for seg, raw, ns in zip(self._segments, self._packets, self._stamps):
            if raw is None:
                raw = bytes(seg.replace(checksum=seg.checksum) if seg.checksum_ok is False else seg)
            packets.append((raw, ns if ns is not None else seg.ts if seg.ts is not None else now))
        # Wire order: a trace lists a received segment where finprobe picked
        # it up, which may follow a segment of ours that left after it.
        packets.sort(key=lambda p: p[1])
        _core.write_pcap(os.fspath(path), packets, 0 if self.wall_clock else None)

    # ---- sides, flows and relative numbers ---------------------------------------

    def _sides(self):
        """"out" or "in" for each segment. Without directions (a capture file),
        the first sender of each connection counts as us."""
        first, sides = {}, []
        for seg in self._segments:
            if seg.direction:
                sides.append(seg.direction)
                continue
            me = (seg.src, seg.sport)
            if self.us is not None:
                sides.append("out" if me == self.us else "in")
                continue
            first_sender = first.setdefault(_flow(seg), me)
            sides.append("out" if me == first_sender else "in")
        return sides

    def _isns(self, sides):
        """Each (connection, side)'s initial sequence number: its SYN's seq, or
        else its first segment's (a trace that starts mid-connection)."""
        first, syn = {}, {}
        for seg, side in zip(self._segments, sides):
            key = (_flow(seg), side)
            first.setdefault(key, seg.seq)
            if "S" in seg.flags:
                syn.setdefault(key, seg.seq)
        return {**first, **syn}

    def relative(self):
        """One dict a segment: direction, flags, seq and ack relative to each side's
        initial sequence number (per connection), len, ts relative to the first
        segment, our state, the peer's state, retransmission, the segment."""
        sides = self._sides()
        if self._base is not None:
            isn, t0 = self._base
        else:
            isn = self._isns(sides)
            t0 = next((s.ts for s in self._segments if s.ts is not None), None)
        seen, rows = set(), []
        for seg, side, state, peer in zip(self._segments, sides, self.states, self.peer_states):
            flow = _flow(seg)
            other = "in" if side == "out" else "out"
            key = (flow, side, seg.seq, seg.flags)
            retransmission = seg.seg_len > 0 and key in seen
            if seg.seg_len > 0:
                seen.add(key)
            rows.append({
                "direction": side,
                "flags": seg.flags,
                "seq": (seg.seq - isn.get((flow, side), seg.seq)) % MOD,
                "ack": (seg.ack - isn.get((flow, other), seg.ack)) % MOD if "A" in seg.flags else None,
                "len": len(seg.payload),
                "time": seg.ts - t0 if seg.ts is not None and t0 is not None else None,
                "state": state,
                "peer_state": peer,
                "retransmission": retransmission,
                "segment": seg,
            })
        return rows

    def _flows(self):
        return len({_flow(s) for s in self._segments})

    # ---- text ladder ---------------------------------------------------------------

    def ladder_text(self, last=None):
        """A text ladder: one line a segment, us on the left, the peer on the right."""
        rows = self.relative()
        ports = self._flows() > 1
        skipped = self.earlier
        if last is not None and len(rows) > last:
            skipped += len(rows) - last
            rows = rows[-last:]
        lines = ["  recent segments (relative seq/ack; our state after each"
                 + (", the peer's by RFC 9293's model):" if self.peer_modelled else "):")]
        if skipped:
            lines.append(f"    ... {skipped} earlier segments")
        for r in rows:
            label = _label(r, ports)
            arrow = f"us ---{label}--> peer" if r["direction"] == "out" else f"us <--{label}--- peer"
            when = f"{r['time']:+9.6f}" if r["time"] is not None else " " * 9
            state = r["state"] if r["state"] else ("(not taken yet)" if r["state"] == "" else "")
            notes = [n for n in ("retransmission" if r["retransmission"] else "",
                                 f"peer {r['peer_state']}" if r["peer_state"] else "") if n]
            lines.append(f"    {when}  {arrow:<58} {state}" + (f"  ({', '.join(notes)})" if notes else ""))
        if not rows:
            lines.append("    (none)")
        return "\n".join(lines)

    # ---- SVG and HTML ladders --------------------------------------------------------

    def _repr_svg_(self):
        return self.svg()

    def _repr_html_(self):
        return _html(self)

    def svg(self, max_rows=1000):
        """The ladder diagram as an SVG document: us on the left, the peer on the
        right, one arrow a segment in time order (evenly spaced rows, the time
        since the first segment beside each), each side's state as it changes;
        RSTs in red, retransmissions dashed orange. At most ``max_rows`` rows."""
        return _svg(self, max_rows)


PCAP_BATCH = 1024  # packets a read from a file: memory held while streaming


def read_pcap(path):
    """The TCP segments of a pcap or pcapng file (Ethernet, raw IP, Linux cooked
    SLL/SLL2) as a Trace: ts as stamped in the file (wall-clock seconds),
    direction None. ``trace.skipped`` counts the packets that were not TCP.
    The file is read a batch at a time into the Trace's own lists: what it
    holds is its Segments, their packets and stamps, never a second copy."""
    reader = _core.pcap_open(os.fspath(path))
    segments, packets, stamps = [], [], []
    while _core.pcap_read(reader, PCAP_BATCH, segments, packets, stamps):
        pass
    trace = Trace._of_file(segments, packets, stamps)
    trace.skipped = _core.pcap_skipped(reader)
    return trace


def iter_pcap(path):
    """The TCP segments of a pcap or pcapng file, as ``read_pcap`` reads them,
    one at a time: memory stays that of a batch whatever the file's size. The
    file is opened now (a missing one raises here); a damaged one raises
    fp.ParseError where the damage is reached."""
    reader = _core.pcap_open(os.fspath(path))
    return _segments_of(reader)


def _segments_of(reader):
    batch = []
    while _core.pcap_read(reader, PCAP_BATCH, batch, None, None):
        yield from batch
        batch.clear()


def _parallel(name, values, n):
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} must have one entry a segment ({n}), got {len(values)}")
    return values


def _label(r, ports):
    """"[FA] seq=1 ack=1 len=0", ports first when the trace has several connections."""
    text = f"[{r['flags']}] seq={r['seq']}"
    if r["ack"] is not None:
        text += f" ack={r['ack']}"
    text += f" len={r['len']}"
    if ports:
        seg = r["segment"]
        text = f"{seg.sport}>{seg.dport} {text}"
    return text


def _flow(seg):
    """The connection a segment belongs to, the same both ways."""
    a, b = (str(seg.src), seg.sport), (str(seg.dst), seg.dport)  # src None: not on the wire
    return (a, b) if a <= b else (b, a)


# ---- drawing -----------------------------------------------------------------------

ROW = 26              # px a segment: fixed, so 5 and 500 segments read alike
HEAD = 58             # lane titles and the initial state
FOOT = 40             # the legend
WIDTH = 820
X_TIME = 78           # right edge of the time column
X_US, X_PEER = 270, 640
CHAR = 6.6            # px a character of 11px monospace
COLORS = {"out": "#1f5fbf", "in": "#2e7d32", "rst": "#c62828", "retx": "#e65100"}
FONT = "font-family=\"DejaVu Sans Mono,Menlo,Consolas,monospace\" font-size=\"11\""


def _t(value):
    return escape(str(value))


def _state_box(x, y, text, anchor):
    """A state written beside a lane, in a rounded box; anchor "end" (left of
    our lane) or "start" (right of the peer's)."""
    w = len(text) * CHAR + 10
    left = x - w if anchor == "end" else x
    return (f'<rect x="{left:.1f}" y="{y - 11}" width="{w:.1f}" height="16" rx="4" '
            f'fill="#fff8e1" stroke="#c9a227" stroke-width="0.8"/>'
            f'<text class="fp-state fp-{"us" if anchor == "end" else "peer"}" x="{left + 5:.1f}" y="{y + 1}" '
            f'fill="#5d4300" font-weight="bold">{_t(text)}</text>')


def _endpoint(trace, side):
    for seg, s in zip(trace, trace._sides()):
        if s == side:
            return seg.src, seg.sport
        if seg.dst is not None:
            return seg.dst, seg.dport
    return None, None


def _svg(trace, max_rows):
    rows = trace.relative()
    total = len(rows)
    rows = rows[:max_rows]
    ports = trace._flows() > 1
    height = HEAD + ROW * max(len(rows), 1) + FOOT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" class="finprobe-ladder" {FONT}>',
           "<defs>"]
    for name, color in COLORS.items():
        out.append(f'<marker id="fp-head-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="11" '
                   f'markerHeight="11" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>')
    out.append("</defs>")
    out.append(f'<rect width="{WIDTH}" height="{height}" fill="white"/>')
    out.extend(f'<rect x="0" y="{HEAD + i * ROW}" width="{WIDTH}" height="{ROW}" fill="#f4f6f8"/>'
               for i in range(1, len(rows), 2))  # under the lanes, so these run unbroken
    out.extend(_lanes(trace, ports, height))
    our_last, peer_last = _initial_states(trace)
    if our_last:
        out.append(_state_box(X_US - 8, HEAD - 6, our_last, "end"))
    for i, r in enumerate(rows):
        y = HEAD + i * ROW
        out.append(_arrow(r, y, ports))
        if r["state"] and r["state"] != our_last:
            out.append(_state_box(X_US - 8, y + 17, str(r["state"]), "end"))
            our_last = r["state"]
        if r["peer_state"] and r["peer_state"] != peer_last:
            out.append(_state_box(X_PEER + 8, y + 17, str(r["peer_state"]), "start"))
            peer_last = r["peer_state"]
    if not rows:
        out.append(f'<text x="{(X_US + X_PEER) // 2}" y="{HEAD + 16}" text-anchor="middle" fill="#777">(no segments)</text>')
    out.extend(_legend(height, total, len(rows)))
    out.append("</svg>")
    return "\n".join(out)


def _initial_states(trace):
    """Our state before the first segment (from the transitions), the peer's unknown."""
    first = trace.transitions[0] if trace.transitions else None
    return (first[1] if first and len(first) > 2 else None), None


def _lanes(trace, ports, height):
    us_addr, us_port = _endpoint(trace, "out")
    peer_addr, peer_port = _endpoint(trace, "in")

    def title(addr, port):
        if addr is None:
            return ""
        return addr if ports else _args.endpoint(addr, port)

    bottom = height - FOOT + 4
    return [
        f'<text x="{X_TIME}" y="20" text-anchor="end" fill="#555">time (s)</text>',
        f'<text x="{X_US}" y="18" text-anchor="middle" font-weight="bold" font-size="13">us</text>',
        f'<text x="{X_US}" y="33" text-anchor="middle" fill="#555">{_t(title(us_addr, us_port))}</text>',
        f'<text x="{X_PEER}" y="18" text-anchor="middle" font-weight="bold" font-size="13">peer</text>',
        f'<text x="{X_PEER}" y="33" text-anchor="middle" fill="#555">{_t(title(peer_addr, peer_port))}</text>',
        f'<line x1="{X_US}" y1="40" x2="{X_US}" y2="{bottom}" stroke="#444" stroke-width="2"/>',
        f'<line x1="{X_PEER}" y1="40" x2="{X_PEER}" y2="{bottom}" stroke="#444" stroke-width="2"/>',
    ] + ([f'<text x="{X_PEER + 8}" y="52" fill="#777" font-size="10">'
          f'states: RFC 9293 model</text>'] if trace.peer_modelled else [])


def _arrow(r, y, ports):
    seg = r["segment"]
    kind = "rst" if "R" in r["flags"] else "retx" if r["retransmission"] else r["direction"]
    color = COLORS[kind]
    x1, x2 = (X_US, X_PEER) if r["direction"] == "out" else (X_PEER, X_US)
    label = _label(r, ports)
    notes = []
    if kind == "rst":
        notes.append("RST")
    if r["retransmission"]:
        notes.append("retransmission")
    if seg.checksum_ok is False:
        notes.append("bad checksum")
    when = f"{r['time']:+.6f}" if r["time"] is not None else ""
    dash = ' stroke-dasharray="6 3"' if r["retransmission"] else ""
    width = 2.2 if kind == "rst" else 1.5
    tip = f"{seg!r}\nwindow={seg.window} options={seg.options!r}"
    if r["state"]:
        tip += f"\nour state after: {r['state']}"
    parts = [f'<g class="fp-seg fp-{kind}"><title>{_t(tip)}</title>',
             f'<text x="{X_TIME}" y="{y + 17}" text-anchor="end" fill="#666">{_t(when)}</text>',
             f'<line x1="{x1}" y1="{y + 13}" x2="{x2}" y2="{y + 21}" stroke="{color}" '
             f'stroke-width="{width}"{dash} marker-end="url(#fp-head-{kind})"/>',
             f'<text x="{(X_US + X_PEER) / 2:.0f}" y="{y + 11}" text-anchor="middle" fill="{color}"'
             f'{" font-weight=" + quoteattr("bold") if kind == "rst" else ""}>{_t(label)}'
             + (f' <tspan font-style="italic">({_t(", ".join(notes))})</tspan>' if notes else "")
             + "</text></g>"]
    return "".join(parts)


def _legend(height, total, shown):
    y = height - FOOT + 24
    items = [("out", "ours"), ("in", "the peer's"), ("rst", "RST"), ("retx", "retransmission")]
    out, x = [], 20
    for kind, text in items:
        dash = ' stroke-dasharray="6 3"' if kind == "retx" else ""
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 28}" y2="{y - 4}" stroke="{COLORS[kind]}" '
                   f'stroke-width="1.5"{dash} marker-end="url(#fp-head-{kind})"/>'
                   f'<text x="{x + 34}" y="{y}" fill="#444">{text}</text>')
        x += 34 + len(text) * CHAR + 24
    note = "relative seq/ack; evenly spaced rows"
    if shown < total:
        note = f"first {shown} of {total} segments; " + note
    out.append(f'<text x="{WIDTH - 10}" y="{y}" text-anchor="end" fill="#777">{_t(note)}</text>')
    return out


def _html(trace):
    rows = trace.relative()
    peer = any(r["peer_state"] for r in rows)
    head = ["#", "time", "dir", "flags", "seq", "ack", "len", "win", "our state"] + (["peer state"] if peer else [])
    cells = []
    for i, r in enumerate(rows):
        seg = r["segment"]
        values = [i, f"{r['time']:+.6f}" if r["time"] is not None else "",
                  "&#8594;" if r["direction"] == "out" else "&#8592;", html.escape(r["flags"]),
                  r["seq"], "" if r["ack"] is None else r["ack"], r["len"], seg.window,
                  html.escape(str(r["state"] or ""))]
        if peer:
            values.append(html.escape(str(r["peer_state"] or "")))
        style = ' style="color:#c62828"' if "R" in r["flags"] else ' style="color:#e65100"' if r["retransmission"] else ""
        cells.append(f"<tr{style}>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>")
    table = ("<table style=\"font-family:monospace;font-size:11px;border-collapse:collapse\">"
             "<thead><tr>" + "".join(f"<th style=\"text-align:left;padding-right:10px\">{h}</th>" for h in head)
             + "</tr></thead><tbody>" + "".join(cells) + "</tbody></table>")
    return (f'<div class="finprobe-trace">{trace.svg()}'
            f"<details><summary>{html.escape(repr(trace))}: table</summary>{table}</details></div>")
