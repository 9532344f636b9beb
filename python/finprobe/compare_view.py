"""Several peers' state x event matrices side by side (fp.compare of fp.Matrix).

A MatrixComparison puts the matrices of several peers (fp.matrix's results)
into one table: a row a (state, event), a column a peer, beside the
profile's expected answer. Each cell shows what was seen, short (the
answer's flags and the state after, or "alive"/"gone" where only the wire
told: "A ESTABLISHED", "- CLOSED", "RA gone"), coloured by its verdict
against the profile. Where the peers disagree with each other, the row is
marked ("≠") and the cells that differ from most peers too ("*"): the
peers are compared by what all of them show (the answer's flags, whether
the connection lives on, the state after where it was read), not by the
profile, so a disagreement is visible even where no profile has a word.

Renderings: ``table()`` (text, ~150 columns for four peers), HTML for
notebooks (``_repr_html_``, each cell's tooltip saying what was expected,
the section, the mismatches or the reason for a skip), ``svg()`` (a
compact grid for a README: a row a state, a column an event, each grid
cell one small box a peer) and ``as_dict()``.

``compare_matrices`` runs fp.matrix against each peer named as fp.compare
names peers; a peer that cannot run has its error in its column.
"""

import collections
import dataclasses
import html

from . import _core, events, stacks
from .probe import STACK_PORT, peer_arguments

COLOURS = {"pass": "#b9e3b9", "fail": "#f2a7a7", "info": "#c8d5e3", "skipped": "#e3e3e3",
           "error": "#c4c4c4", "": "#ffffff"}
MARKS = {"pass": "pass", "fail": "FAIL", "info": "info", "skipped": "skip", "error": "ERR", "": ""}
# Answer classes (as the profiles name them) in the grid's few letters.
CLASS_CODES = {"none": "-", "ACK": "A", "RST": "R", "SYN_ACK": "SA", "SYN": "S", "FIN": "F",
               "DATA": "D"}
DISAGREE = "≠"                 # a row whose peers disagree
ODD = "*"                      # a cell that differs from most peers of its row
GONE = "×"                     # in the grid: the connection is gone after the event
ODD_COLOUR = "#c05a00"         # the grid's marks of disagreement
ODD_TEXT = f' font-weight="bold" fill="{ODD_COLOUR}"'


@dataclasses.dataclass
class Entry:
    """One peer's cell of a row: its verdict (against the comparison's
    profile), what was seen, short, and whether it differs from most peers.
    ``cell`` is the matrix's Cell (None where the peer's matrix has none or
    the peer could not run: ``error`` says why)."""

    verdict: str
    seen: str
    cell: object = None
    mismatches: list = dataclasses.field(default_factory=list)
    error: str = None
    odd: bool = False


@dataclasses.dataclass
class Row:
    state: str
    event: str
    expected: dict               # the profile's expectation (its as_dict), or None
    entries: list                # an Entry a peer
    agree: bool = True


class MatrixComparison:
    """Several peers' matrices as one table. ``matrices``: fp.Matrix
    objects, or in a peer's place the exception that kept it from running;
    ``names``: a column name a peer (default: from each matrix's peer,
    "linux", a recipe's name, HOST:PORT); ``profile``: what the cells are
    coloured by (default: the matrices' own; another profile's name judges
    each cell again)."""

    def __init__(self, matrices, names=None, profile=None):
        from .matrix import Matrix
        if isinstance(matrices, (str, bytes)) or not hasattr(matrices, "__iter__"):
            raise TypeError(f"matrices must be a list of fp.Matrix, not {type(matrices).__name__}")
        self.matrices = list(matrices)
        if not self.matrices:
            raise ValueError("matrices must not be empty")
        for i, m in enumerate(self.matrices):
            if not isinstance(m, (Matrix, BaseException)):
                raise TypeError(f"matrices[{i}] must be an fp.Matrix (or the error of a peer that could "
                                f"not run), not {type(m).__name__}")
        self.peers = _names(self.matrices, names)
        self.profile = _profile_of(self.matrices, profile)
        self._judge = self._judge_of()
        self._by_pair = [{(c.state, c.event): c for c in m.cells} if isinstance(m, Matrix) else None
                         for m in self.matrices]
        self._rows = None

    # ---- the model the renderings share ----

    def _judge_of(self):
        """The profile's judge where some matrix followed another profile, else None."""
        if all(not isinstance(m, _Matrix()) or m.profile == self.profile for m in self.matrices):
            return None
        from . import profile as _profile
        return _profile.load(self.profile).judge

    def rows(self):
        """A Row a (state, event) that any matrix has, in the matrix's order."""
        if self._rows is None:
            self._rows = [self._row(state, event) for state, event in _pairs(self.matrices)]
        return self._rows

    def _row(self, state, event):
        entries, expected = [], None
        for m, by_pair in zip(self.matrices, self._by_pair):
            if by_pair is None:
                entries.append(Entry("error", "error", error=_error_text(m)))
                continue
            cell = by_pair.get((state, event))
            if cell is None:
                entries.append(Entry("", ""))
                continue
            if expected is None:
                expected = (cell.expected or {}).get(self.profile)
            verdict, mismatches = self._verdict(cell)
            entries.append(Entry(verdict, seen(cell), cell, mismatches))
        row = Row(state, event, expected, entries)
        _mark_disagreement(row)
        return row

    def _verdict(self, cell):
        if self._judge is None or cell.verdict == "skipped":
            return cell.verdict, list(cell.mismatches)
        verdict, mismatches = self._judge(cell)
        return verdict, list(mismatches)

    def counts(self):
        """Verdicts a peer: {peer: {"pass": n, ...}}, {"error": message} for a peer that did not run."""
        out = {}
        for i, (peer, m) in enumerate(zip(self.peers, self.matrices)):
            if not isinstance(m, _Matrix()):
                out[peer] = {"error": _error_text(m)}
                continue
            tally = collections.Counter(row.entries[i].verdict for row in self.rows() if row.entries[i].cell)
            out[peer] = {v: tally.get(v, 0) for v in ("pass", "fail", "info", "skipped")}
        return out

    def disagreements(self):
        """The (state, event) of each row whose peers disagree."""
        return [(r.state, r.event) for r in self.rows() if not r.agree]

    def __repr__(self):
        return (f"<MatrixComparison of {', '.join(self.peers)} (profile {self.profile}): "
                f"{len(self.rows())} cells, {len(self.disagreements())} disagreeing>")

    # ---- text ----

    def table(self, width=24, colour=False):
        """One text table: a block a state, a line an event; the profile's
        expected answer, then a column a peer ("verdict seen", "*" where it
        differs from most peers); "≠" before an event where the peers
        disagree. ``colour``: ANSI backgrounds by verdict (for a terminal)."""
        event_w = max([len("state / event")] + [len(r.event) + 4 for r in self.rows()])
        expect_w = max(12, min(22, max([len(_expected_text(r.expected)) for r in self.rows()] + [0])))
        head = f"{self.profile} expects"
        lines = [repr(self), "  ".join(
            [f"{'state / event':{event_w}s}", _fit(head, expect_w).ljust(expect_w)]
            + [_fit(p, width).ljust(width) for p in self.peers]).rstrip()]
        lines.append("  ".join(["-" * event_w, "-" * expect_w] + ["-" * width] * len(self.peers)))
        state = None
        for row in self.rows():
            if row.state != state:
                state = row.state
                lines.append(state)
            mark = DISAGREE if not row.agree else " "
            shown = [_paint(_fit(_entry_text(e), width).ljust(width), e.verdict, colour) for e in row.entries]
            lines.append("  ".join([f"  {mark} {row.event}".ljust(event_w),
                                    _fit(_expected_text(row.expected), expect_w).ljust(expect_w)]
                                   + shown).rstrip())
        lines.append("")
        lines.append(f"{DISAGREE} the peers disagree (answer, alive or state after); {ODD} differs from "
                     f"most peers; colours and verdicts by profile {self.profile}")
        for peer, counts in self.counts().items():
            if "error" in counts:
                lines.append(f"{peer}: could not run: {counts['error']}")
            else:
                lines.append(f"{peer}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    # ---- HTML ----

    def _repr_html_(self):
        esc = html.escape
        cols = 3 + len(self.peers)
        out = ['<div class="finprobe-matrix-comparison">',
               f"<p>profile <b>{esc(self.profile)}</b>: "
               + "; ".join(f"<b>{esc(p)}</b> {esc(_counts_text(c))}" for p, c in self.counts().items())
               + "</p>",
               '<table style="border-collapse:collapse;font-size:90%">',
               '<thead><tr><th style="text-align:left;padding:1px 6px">state</th>'
               '<th style="text-align:left;padding:1px 6px">event</th>'
               f'<th style="text-align:left;padding:1px 6px">{esc(self.profile)} expects</th>']
        out += [f'<th style="text-align:left;padding:1px 6px">{esc(p)}</th>' for p in self.peers]
        out.append("</tr></thead><tbody>")
        state = None
        for row in self.rows():
            if row.state != state:
                state = row.state
                out.append(f'<tr><th colspan="{cols}" style="text-align:left;padding:6px 6px 1px;'
                           f'border-bottom:1px solid #888">{esc(state)}</th></tr>')
            out.append(f'<tr data-state="{esc(row.state)}" data-event="{esc(row.event)}" '
                       f'data-agree="{str(row.agree).lower()}">')
            out.append(f'<td style="padding:1px 6px;color:#666">{esc(row.state)}</td>')
            mark = f'<b title="the peers disagree">{DISAGREE}</b> ' if not row.agree else ""
            out.append(f'<td style="padding:1px 6px">{mark}<code>{esc(row.event)}</code></td>')
            out.append(f'<td style="padding:1px 6px" title="{esc(_expected_tip(row.expected, self.profile))}">'
                       f"{esc(_expected_text(row.expected))}</td>")
            for peer, entry in zip(self.peers, row.entries):
                outline = "outline:2px solid #b35900;outline-offset:-2px;" if entry.odd else ""
                out.append(f'<td data-peer="{esc(peer)}" data-verdict="{esc(entry.verdict)}" '
                           f'style="padding:1px 6px;{outline}background:{COLOURS[entry.verdict]}" '
                           f'title="{esc(_tip(entry, row, self.profile))}">'
                           f"{esc(entry.seen)}{' ' + ODD if entry.odd else ''}</td>")
            out.append("</tr>")
        out.append("</tbody></table>")
        out.append(f"<p>{DISAGREE} the peers disagree (answer, alive or state after); outlined, {ODD}: "
                   "differs from most peers. "
                   + " ".join(f'<span style="background:{COLOURS[v]};padding:0 4px">{v}</span>'
                              for v in ("pass", "fail", "info", "skipped", "error"))
                   + "</p>")
        errors = [(p, c["error"]) for p, c in self.counts().items() if "error" in c]
        out += [f"<p><b>{esc(p)}</b>: could not run: {esc(e)}</p>" for p, e in errors]
        out.append("</div>")
        return "\n".join(out)

    def to_html(self, path):
        """Write a small HTML page: the grid (svg()) above the table."""
        with open(path, "w", encoding="utf-8") as f:
            f.write('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>finprobe matrices: '
                    f"{html.escape(', '.join(self.peers))}</title></head><body>\n"
                    f"{self.svg()}\n{self._repr_html_()}\n</body></html>\n")

    # ---- SVG ----

    def svg(self):
        """The grid as an SVG document (str): a row a state, a column an
        event; in each grid cell a strip with the profile's expected answer,
        then a strip a peer, coloured by verdict, with the answer's flags
        ("×": the connection is gone after it); a bar on the left where the
        peers disagree, the odd ones' text orange. About 1000 px wide for the
        whole matrix."""
        return _Grid(self).render()

    def to_svg(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg())

    # ---- JSON ----

    def as_dict(self):
        return {"peers": self.peers, "profile": self.profile, "counts": self.counts(),
                "matrices": [m.as_dict() if isinstance(m, _Matrix()) else {"error": _error_text(m)}
                             for m in self.matrices],
                "rows": [{"state": r.state, "event": r.event, "expected": r.expected, "agree": r.agree,
                          "cells": [{"peer": p, "verdict": e.verdict, "seen": e.seen, "odd": e.odd,
                                     "mismatches": e.mismatches,
                                     "reason": e.error or (e.cell.reason if e.cell is not None else "")}
                                    for p, e in zip(self.peers, r.entries)]}
                         for r in self.rows()]}


def html_table(matrices, profile):
    """The HTML table of ``matrices`` (one or several), coloured by ``profile``."""
    return MatrixComparison(matrices, profile=profile)._repr_html_()


# ---- running the matrices ------------------------------------------------------------


def compare_matrices(peers, *, ipv6=False, profile="rfc", states=None, events=None, on_matrix=None):
    """fp.matrix against each peer in turn, named as fp.compare names them
    ("linux", "HOST:PORT", a stack recipe's name: see probe.peer_arguments;
    a recipe that tells its states gets its control socket), side by side:
    a MatrixComparison. ``states``/``events`` limit each matrix. A peer that
    cannot run at all (fp.Error: a recipe not built, a Lab that cannot be
    made) gets its error in its column; the others still run.
    ``on_matrix(peer, matrix_or_error)`` is called as each ends."""
    from .matrix import matrix
    if isinstance(peers, str) or not peers:
        raise TypeError("peers must be a non-empty list of peer names")
    peers = list(peers)
    for spec in peers:                 # every name checked before any run
        if spec not in stacks.RECIPES:
            peer_arguments(spec)
    if not isinstance(ipv6, bool):
        raise TypeError(f"ipv6 must be a bool, not {type(ipv6).__name__}")
    results = []
    for spec in peers:
        try:
            result = matrix(**_arguments(spec, ipv6), ipv6=ipv6, profile=profile, states=states,
                            events=events)
        except _core.Error as e:
            result = e
        results.append(result)
        if on_matrix is not None:
            on_matrix(spec, result)
    return MatrixComparison(results, names=peers)


def _arguments(spec, ipv6):
    """fp.matrix's keyword arguments for a peer's name: a recipe's command
    for the family asked (stacks.command; fp.Error where it is not built),
    else probe.peer_arguments'."""
    if spec in stacks.RECIPES:
        return {"stack": stacks.command(spec, STACK_PORT, ipv6=ipv6, control=spec in stacks.TELLS_STATE),
                "port": STACK_PORT}
    return peer_arguments(spec)


# ---- helpers ---------------------------------------------------------------------------


def _Matrix():
    from .matrix import Matrix
    return Matrix


def seen(cell):
    """What a cell saw, short: the answer's flags ("-": none) and the state
    after, or "alive"/"gone" where only the wire told; "skipped"."""
    if cell.verdict == "skipped":
        return "skipped"
    flags = cell.answer.flags if cell.answer is not None else "-"
    after = cell.state_after or {True: "alive", False: "gone", None: "?"}[cell.alive]
    return f"{flags} {after}"


def _entry_text(entry):
    if entry.verdict in ("", "error"):
        return MARKS[entry.verdict]
    if entry.verdict == "skipped":
        return "skip"
    return f"{MARKS[entry.verdict]} {entry.seen}{' ' + ODD if entry.odd else ''}"


def _mark_disagreement(row):
    """The peers' cells compared by what each shows: the answer's flags,
    alive, and the state after among those that read it. A part is compared
    only between the cells that have it; a row where any part differs
    disagrees, and a cell differing from a part's most common value (where
    one value is the most common) is odd."""
    live = [e for e in row.entries if e.cell is not None and e.verdict != "skipped"]
    parts = (lambda c: c.answer.flags if c.answer is not None else "-",
             lambda c: c.alive,
             lambda c: c.state_after)
    for part in parts:
        values = [(e, part(e.cell)) for e in live if part(e.cell) is not None]
        if len({v for _, v in values}) < 2:
            continue
        row.agree = False
        ranked = collections.Counter(v for _, v in values).most_common(2)
        if ranked[0][1] == ranked[1][1]:
            continue                   # no most common value: none is the odd one
        for e, v in values:
            if v != ranked[0][0]:
                e.odd = True


def _pairs(matrices):
    """Every (state, event) of the matrices, in events.cells' order."""
    have = {(c.state, c.event) for m in matrices if isinstance(m, _Matrix()) for c in m.cells}
    return [p for p in events.cells() if p in have]


def _names(matrices, names):
    if names is None:
        names = [_name_of(m) for m in matrices]
        seen_ = collections.Counter()
        out = []
        for n in names:                # the same peer twice: linux, linux#2
            seen_[n] += 1
            out.append(n if seen_[n] == 1 else f"{n}#{seen_[n]}")
        return out
    if isinstance(names, str):
        raise TypeError("names must be a list of str, not a str")
    names = list(names)
    if len(names) != len(matrices) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be {len(matrices)} str, a name a matrix; got {names!r}")
    return names


def _name_of(m):
    """A short column name: the matrix's own (linux, a recipe's name,
    HOST:PORT), with its family and the sysctls it set."""
    if not isinstance(m, _Matrix()):
        return "error"
    name = m.name + (" ipv6" if m.family == "ipv6" else "")
    return name + "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in m.sysctls.items())


def _profile_of(matrices, profile):
    if profile is not None:
        if not isinstance(profile, str):
            raise TypeError(f"profile must be a profile's name, not {type(profile).__name__}")
        return profile
    used = list(dict.fromkeys(m.profile for m in matrices if isinstance(m, _Matrix())))
    if len(used) > 1:
        raise ValueError(f"the matrices follow different profiles {used}: name the one to colour by "
                         "(profile=)")
    return used[0] if used else "rfc"


def _error_text(error):
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _fit(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


def _paint(text, verdict, colour):
    if not colour:
        return text
    code = {"pass": "42", "fail": "41", "info": "44", "skipped": "100", "error": "100"}.get(verdict)
    return f"\x1b[{code};97m{text}\x1b[0m" if code else text


def _answers_of(expected):
    answers = expected.get("answer") if expected else None
    if answers is None:
        return []
    return [answers] if isinstance(answers, str) else list(answers)


def _one_or_more(value):
    if value is None:
        return ""
    return value if isinstance(value, str) else "|".join(str(v) for v in value)


def _expected_text(expected):
    """The expectation short: its answer classes and its state after (or alive/gone)."""
    if not expected:
        return ""
    answers = "|".join(_answers_of(expected)) or "?"
    after = _one_or_more(expected.get("state_after"))
    if not after and expected.get("alive") is not None:
        after = "alive" if expected["alive"] else "gone"
    return f"{answers} {after}".strip()


def _expected_tip(expected, profile):
    if not expected:
        return f"the profile {profile} has no expectation for this cell"
    parts = [f"{profile} expects: {_expected_text(expected)}"]
    if expected.get("alive") is not None:
        parts.append("the connection " + ("lives on" if expected["alive"] else "is gone"))
    for key, label in (("section", "section"), ("note", "note"), ("departs", "departs from rfc")):
        if expected.get(key):
            parts.append(f"{label}: {expected[key]}")
    return "\n".join(parts)


def _tip(entry, row, profile):
    """A cell's tooltip: what was expected and why, then what was seen or why nothing was."""
    if entry.error is not None:
        return f"the peer could not run: {entry.error}"
    if entry.cell is None:
        return "not run against this peer"
    cell = entry.cell
    lines = [_expected_tip(row.expected, profile)]
    if entry.verdict == "skipped":
        lines.append(f"skipped: {cell.reason}")
        return "\n".join(lines)
    answers = ", ".join(f"[{s.flags}]" + (f" {len(s.payload)} bytes" if s.payload else "")
                        for s in cell.answers) or "none"
    lines.append(f"seen: {answers}")
    if cell.state_after:
        lines.append(f"state after: {cell.state_after} (from the {cell.state_source})")
    if cell.alive is not None:
        lines.append(f"alive: {cell.alive} (from the {cell.alive_source})")
    if entry.mismatches:
        lines.append("mismatches: " + "; ".join(entry.mismatches))
    elif cell.reason:
        lines.append(cell.reason)
    if entry.odd:
        lines.append("differs from most peers")
    return "\n".join(lines)


def _counts_text(counts):
    if "error" in counts:
        return f"could not run: {counts['error']}"
    return ", ".join(f"{n} {v}" for v, n in counts.items())


# ---- the SVG grid ------------------------------------------------------------------------


class _Grid:
    """Layout of the SVG: a label column, a column an event of the
    matrices, a row a state; each grid cell a stack of strips (the profile's
    expectation, then a strip a peer); the legend below."""

    LABEL_W = 112           # px: the state names
    COL_W = 36              # px: a grid cell's width
    STRIP_H = 11            # px: a peer's strip
    GAP = 4                 # px between grid cells
    HEAD_H = 150            # px: the title and the event names (rotated: ~0.87 px high a px long)
    RIGHT = 60              # px right of the grid: the last event names lean into it
    FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"

    def __init__(self, comparison):
        self.c = comparison
        rows = comparison.rows()
        self.states = list(dict.fromkeys(r.state for r in rows))
        self.events = [e.name for e in events.EVENTS if any(r.event == e.name for r in rows)]
        self.by_pair = {(r.state, r.event): r for r in rows}
        self.strips = 1 + len(comparison.peers)
        self.cell_h = self.strips * self.STRIP_H
        self.out = []

    def x_of(self, col):
        return 8 + self.LABEL_W + col * self.COL_W

    def y_of(self, line):
        return self.HEAD_H + line * (self.cell_h + self.GAP)

    def render(self):
        width = max(self.x_of(len(self.events)) + self.RIGHT, self.legend_x() + 340)
        grid_bottom = self.y_of(len(self.states))
        legend_h = 28 + self.strips * 13 + 24
        height = grid_bottom + legend_h
        esc = html.escape
        self.out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                    f'viewBox="0 0 {width} {height}" font-family="{self.FONT}">',
                    f"<title>finprobe: {esc(', '.join(self.c.peers))}, state × event, "
                    f"profile {esc(self.c.profile)}</title>",
                    f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
                    f'<text x="8" y="18" font-size="14" font-weight="bold">{esc(", ".join(self.c.peers))}'
                    f": the peer's close states × events, coloured by profile {esc(self.c.profile)}</text>"]
        self.head()
        for line, state in enumerate(self.states):
            y = self.y_of(line)
            self.out.append(f'<text x="8" y="{y + self.cell_h / 2 + 4:.1f}" font-size="11">{esc(state)}</text>')
            for col, event in enumerate(self.events):
                row = self.by_pair.get((state, event))
                if row is not None:
                    self.grid_cell(row, self.x_of(col), y)
        self.legend(grid_bottom + 10)
        self.out.append("</svg>")
        return "\n".join(self.out) + "\n"

    def head(self):
        for col, event in enumerate(self.events):
            x = self.x_of(col) + self.COL_W / 2 + 3
            y = self.HEAD_H - 6
            self.out.append(f'<text transform="translate({x:.1f},{y}) rotate(-60)" font-size="10">'
                            f"{html.escape(event)}</text>")

    def grid_cell(self, row, x, y):
        esc = html.escape
        w = self.COL_W - 2
        self.out.append(f'<g data-state="{esc(row.state)}" data-event="{esc(row.event)}" '
                        f'data-agree="{str(row.agree).lower()}">')
        exp = row.expected
        self.strip(x, y, w, "#ffffff", _expected_code(exp), False,
                   _expected_tip(exp, self.c.profile), 'data-expected="1"', stroke="#999999")
        for i, (peer, entry) in enumerate(zip(self.c.peers, row.entries)):
            self.strip(x, y + (i + 1) * self.STRIP_H, w, COLOURS[entry.verdict], _seen_code(entry),
                       entry.odd,
                       f"{peer}: {entry.seen or entry.verdict}\n{_tip(entry, row, self.c.profile)}",
                       f'data-peer="{esc(peer)}" data-verdict="{esc(entry.verdict)}"')
        if not row.agree:              # a bar, not an outline: most cells of unlike stacks disagree somewhere
            self.out.append(f'<rect x="{x}" y="{y}" width="3" height="{self.cell_h}" fill="{ODD_COLOUR}" '
                            'data-disagree="1"><title>the peers disagree</title></rect>')
        self.out.append("</g>")

    def strip(self, x, y, w, fill, text, odd, tip, attrs, stroke="#ffffff"):
        esc = html.escape
        self.out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{self.STRIP_H}" fill="{fill}" '
                        f'stroke="{stroke}" stroke-width="0.5" {attrs}><title>{esc(tip)}</title></rect>')
        if text:
            self.out.append(f'<text x="{x + w / 2:.1f}" y="{y + self.STRIP_H - 2.5:.1f}" font-size="9" '
                            f'text-anchor="middle"{ODD_TEXT if odd else ""}>{esc(text)}</text>')

    def legend_x(self):
        """Where the legend's colours start: under the grid's right part, right of the peers' names."""
        return max(self.x_of(len(self.events)) - 330, 420)

    def legend(self, y):
        esc = html.escape
        x = 8
        self.out.append(f'<text x="{x}" y="{y + 10}" font-size="11">each grid cell, top to bottom:</text>')
        counts = self.c.counts()
        labels = [f"{self.c.profile} expects (answer classes; - none)"] + [
            f"{p}: {_counts_text(counts[p])}" for p in self.c.peers]
        for i, label in enumerate(labels):
            sy = y + 16 + i * 13
            fill = "#ffffff" if i == 0 else "#dddddd"
            self.out.append(f'<rect x="{x}" y="{sy}" width="{self.COL_W - 2}" height="{self.STRIP_H}" '
                            f'fill="{fill}" stroke="#999999" stroke-width="0.5"/>')
            self.out.append(f'<text x="{x + self.COL_W + 4}" y="{sy + 9}" font-size="10">{esc(label)}</text>')
        lx = self.legend_x()
        self.out.append(f'<text x="{lx}" y="{y + 10}" font-size="11">colour: verdict by profile '
                        f"{esc(self.c.profile)}</text>")
        for i, verdict in enumerate(("pass", "fail", "info", "skipped", "error")):
            sy = y + 16 + i * 13
            self.out.append(f'<rect x="{lx}" y="{sy}" width="{self.COL_W - 2}" height="{self.STRIP_H}" '
                            f'fill="{COLOURS[verdict]}"/>')
            self.out.append(f'<text x="{lx + self.COL_W + 4}" y="{sy + 9}" font-size="10">{verdict}</text>')
        tx = lx + 110
        notes = ["text: the answer's flags (- none)", f"{GONE}: the connection is gone after it",
                 "bar on the left: the peers disagree", "orange text: differs from most peers"]
        for i, note in enumerate(notes):
            self.out.append(f'<text x="{tx}" y="{y + 25 + i * 13}" font-size="10">{esc(note)}</text>')


def _seen_code(entry):
    """A peer's strip text: the answer's flags, "×" if the connection is gone."""
    cell = entry.cell
    if cell is None or entry.verdict == "skipped":
        return ""
    flags = cell.answer.flags if cell.answer is not None else "-"
    return flags + (GONE if cell.alive is False else "")


def _expected_code(expected):
    if not expected:
        return ""
    code = "|".join(CLASS_CODES.get(a, a) for a in _answers_of(expected))
    return code + (GONE if expected.get("alive") is False else "")
