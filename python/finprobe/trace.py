"""fp.Trace: the segments of a connection, both ways, in order.

A Trace is a read-only sequence of ``fp.Segment`` (each with ``ts`` and
``direction``), with our endpoint's state after each segment where known,
and the pictures people read: a text ladder (failure reports) and, for
notebooks, SVG and HTML ladders.
"""

import collections.abc

from . import _core

MOD = 1 << 32


class Trace(collections.abc.Sequence):
    """Segments both ways, in order. ``states[i]`` is our state after ``self[i]``
    was sent or taken ("" for a received segment not taken yet, None unknown)."""

    def __init__(self, segments=(), states=None, transitions=()):
        self._segments = list(segments)
        for seg in self._segments:
            if not isinstance(seg, _core.Segment):
                raise TypeError(f"a Trace holds Segments, not {type(seg).__name__}")
        self.states = list(states) if states is not None else [None] * len(self._segments)
        self.transitions = list(transitions)

    @classmethod
    def of_connection(cls, conn):
        rows = conn._trace()
        return cls([r[0] for r in rows], [r[1] for r in rows], conn.transitions())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Trace(self._segments[index], self.states[index])
        return self._segments[index]

    def __len__(self):
        return len(self._segments)

    def __repr__(self):
        ins = sum(1 for s in self._segments if s.direction == "in")
        outs = sum(1 for s in self._segments if s.direction == "out")
        return f"<Trace {len(self)} segments: {outs} out, {ins} in>"

    # ---- relative sequence numbers ---------------------------------------

    def _side(self, seg):
        """"out" or "in"; without directions (a capture file), the first
        segment's sender counts as us."""
        if seg.direction:
            return seg.direction
        first = self._segments[0]
        return "out" if (seg.src, seg.sport) == (first.src, first.sport) else "in"

    def _isns(self):
        """Each side's initial sequence number: its SYN's seq, or else its first
        segment's (a trace that starts mid-connection)."""
        first, syn = {}, {}
        for seg in self._segments:
            side = self._side(seg)
            first.setdefault(side, seg.seq)
            if "S" in seg.flags:
                syn.setdefault(side, seg.seq)
        return {**first, **syn}

    def relative(self):
        """One dict a segment: direction, flags, seq and ack relative to each side's
        initial sequence number, len, ts relative to the first segment, state."""
        isn = self._isns()
        t0 = next((s.ts for s in self._segments if s.ts is not None), None)
        rows = []
        for seg, state in zip(self._segments, self.states):
            side = self._side(seg)
            other = "in" if side == "out" else "out"
            rows.append({
                "direction": side,
                "flags": seg.flags,
                "seq": (seg.seq - isn.get(side, seg.seq)) % MOD,
                "ack": (seg.ack - isn.get(other, seg.ack)) % MOD if "A" in seg.flags else None,
                "len": len(seg.payload),
                "time": seg.ts - t0 if seg.ts is not None and t0 is not None else None,
                "state": state,
                "segment": seg,
            })
        return rows

    # ---- text ladder -------------------------------------------------------

    def ladder_text(self, last=None):
        """A text ladder: one line a segment, us on the left, the peer on the right."""
        rows = self.relative()
        skipped = 0
        if last is not None and len(rows) > last:
            skipped = len(rows) - last
            rows = rows[-last:]
        lines = ["  recent segments (relative seq/ack; our state after each):"]
        if skipped:
            lines.append(f"    ... {skipped} earlier segments")
        for r in rows:
            label = f"[{r['flags']}] seq={r['seq']}" + (f" ack={r['ack']}" if r["ack"] is not None else "") + f" len={r['len']}"
            arrow = f"us ---{label}--> peer" if r["direction"] == "out" else f"us <--{label}--- peer"
            when = f"{r['time']:+9.6f}" if r["time"] is not None else " " * 9
            state = r["state"] if r["state"] else ("(not taken yet)" if r["state"] == "" else "")
            lines.append(f"    {when}  {arrow:<58} {state}")
        if not rows:
            lines.append("    (none)")
        return "\n".join(lines)

