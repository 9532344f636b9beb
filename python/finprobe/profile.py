"""Profiles: what a reference says each cell of the state x event matrix answers.

A profile is data, not code: a TOML file a person reads and extends. The
built-in ones live beside this module in ``profiles/<name>.toml`` (``rfc``:
RFC 9293, RFC 5961 and RFC 1337 as written; ``linux``: Linux as measured,
stating only where it departs from ``rfc``, and with rules marked
``when_sysctl`` what changes where a run set net.ipv4.tcp_rfc1337=1). A
user describes their own stack by writing such a file and passing its path
wherever a profile name is taken (``load("mystack.toml")``, ``fp.matrix(profile=...)``,
``trace.violations(profile=...)``).

The format (rfc.toml opens with the same description)::

    name = "mystack"                     # required
    description = "what it describes"    # required
    based_on = "rfc"                     # optional: a built-in name or a path
                                         #   (relative to this file)

    [[rule]]
    states = ["TIME_WAIT"]               # state names of events.STATES, or ["*"]
    events = ["rst@N", "rstack@N"]       # event names of events.EVENTS, or ["*"]
    answer = ["none"]                    # one or more answer classes, any of them allowed:
                                         #   none RST SYN_ACK SYN FIN DATA ACK
    state_after = "same"                 # optional: a state name, "same" (the cell's
                                         #   own state), or omitted: the profile says nothing
    alive = true                         # optional: omitted, it follows state_after
                                         #   (false for CLOSED); omitted with it, nothing
    section = "RFC 1337 §3 (F1)"         # required: what the rule follows
    note = "why"                         # optional: for a departure, from what and why
    when_sysctl = {"net.ipv4.tcp_rfc1337" = 1}
                                         # optional: the rule holds only in a run that
                                         #   set these sysctls to these values (matrix
                                         #   --sysctl); otherwise it is skipped

Rules are read in order; a later rule replaces the whole expectation of
every cell it names (its states x its events, where the event applies to
the state: fin@N before the peer has had our FIN, fin-retx@N-1 after). The
rules of ``based_on`` come first, so a profile based on another states only
its departures. A cell no rule names has no expectation: its verdict is
"info". ``FIN_WAIT_2/shut`` is a matrix state (the socket held after
shutdown); ``state_after`` names what the peer's socket says, where
"FIN_WAIT_2/shut" is plain FIN_WAIT_2 ("same" does this for you).

A bad file raises ValueError naming the file, the rule (its number, from 1)
and the problem.
"""

import dataclasses
import os
import tomllib

from . import events as _events

ANSWERS = ("none", "RST", "SYN_ACK", "SYN", "FIN", "DATA", "ACK")
STATE_NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
               "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
_HEADER_KEYS = {"name", "description", "based_on", "rule"}
_RULE_KEYS = {"states", "events", "answer", "state_after", "alive", "section", "note", "when_sysctl"}
_cache = {}


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What a profile says one cell draws. ``answer``: the answer classes
    allowed (any one of them); ``state_after``: the peer's state after, or
    None where the profile says nothing; ``alive``: whether the connection
    still exists after, or None; ``section``: what it follows; ``note``: why
    (for a departure, from what); ``departs``: differs from the profile it
    is based on."""

    answer: tuple
    state_after: str | None
    alive: bool | None
    section: str
    note: str = ""
    departs: bool = False

    def as_dict(self):
        """The expectation as plain data (the matrix's --json)."""
        return {"answer": list(self.answer), "state_after": self.state_after, "alive": self.alive,
                "section": self.section, "note": self.note, "departs": self.departs}

    def same_as(self, other):
        """Whether other says the same of the wire and the state."""
        return (other is not None and set(self.answer) == set(other.answer)
                and self.state_after == other.state_after and self.alive == other.alive)


def answer_class(seg):
    """The class of an answer: None -> "none"; RST; SYN_ACK; SYN; FIN; DATA
    (payload); ACK. The one place a segment is put in a class."""
    if seg is None:
        return "none"
    flags = seg.flags
    if "R" in flags:
        return "RST"
    if "S" in flags:
        return "SYN_ACK" if "A" in flags else "SYN"
    if "F" in flags:
        return "FIN"
    if seg.payload:
        return "DATA"
    if "A" in flags:
        return "ACK"
    return "none"


def plain_state(state):
    """The TCP state a matrix state is ("FIN_WAIT_2/shut" is FIN_WAIT_2)."""
    return state.split("/")[0]


class Profile:
    """A loaded profile: ``name``, ``description``, ``based_on`` (a name or
    None), ``cells`` ({(state, event): Expectation}, with the kernel's
    default settings) and ``path``. ``expect``, ``judge`` and ``cells_for``
    take the sysctls a run set ({name: value}), for rules with when_sysctl."""

    def __init__(self, name, description, base, layers, path=None):
        self.name = name
        self.description = description
        self.base = base
        self.based_on = base.name if base is not None else None
        self.layers = layers          # [(when_sysctl dict or None, {(state, event): Expectation})]
        self.path = path
        self._resolved = {}

    @property
    def cells(self):
        return self.cells_for(None)

    def cells_for(self, sysctls=None):
        """{(state, event): Expectation} where the run set ``sysctls``, in
        matrix order, each marked ``departs`` where based_on says otherwise."""
        key = frozenset(_sysctl_items(sysctls))
        if key not in self._resolved:
            settings = dict(key)
            cells = {}
            for when, layer in self.layers:
                if when is None or all(settings.get(k) == v for k, v in when.items()):
                    cells.update(layer)
            if self.base is not None:
                base = self.base.cells_for(settings)
                cells = {k: dataclasses.replace(e, departs=not e.same_as(base.get(k)))
                         for k, e in cells.items()}
            order = {c: i for i, c in enumerate(_events.cells())}
            self._resolved[key] = dict(sorted(cells.items(), key=lambda kv: order[kv[0]]))
        return self._resolved[key]

    def expect(self, state, event, sysctls=None):
        """The Expectation of the cell (state, event name), or None."""
        return self.cells_for(sysctls).get((state, event))

    def judge(self, cell, sysctls=None):
        """(verdict, mismatches) of an observed cell (attributes state, event,
        answer: Segment or None, state_after, alive; answer_class where the
        cell classes its answer itself, as a matrix Cell does): "pass" when every field
        the profile states agrees with what was observed, "fail" with one line
        a mismatch otherwise, "info" when the profile has no expectation."""
        exp = self.expect(cell.state, cell.event, sysctls)
        if exp is None:
            return "info", []
        wrong = []
        got = getattr(cell, "answer_class", None) or answer_class(cell.answer)  # a matrix cell knows best
        if got not in exp.answer:
            wrong.append(f"answer: expected {' or '.join(exp.answer)} ({exp.section}), observed {got}")
        after = getattr(cell, "state_after", None)
        if exp.state_after is not None and after is not None and str(after) != exp.state_after:
            wrong.append(f"state_after: expected {exp.state_after} ({exp.section}), observed {after}")
        alive = getattr(cell, "alive", None)
        if exp.alive is not None and alive is not None and bool(alive) != exp.alive:
            wrong.append(f"alive: expected {str(exp.alive).lower()} ({exp.section}), "
                         f"observed {str(bool(alive)).lower()}")
        return ("fail" if wrong else "pass"), wrong

    def departures(self, sysctls=None):
        """The cells whose expectation departs from ``based_on``'s, in matrix order."""
        return {k: e for k, e in self.cells_for(sysctls).items() if e.departs}

    def __repr__(self):
        base = f" based on {self.based_on}" if self.based_on else ""
        return f"<Profile {self.name}{base}: {len(self.cells)} cells, {len(self.departures())} departures>"


def _sysctl_items(sysctls):
    """(name, value) pairs as rules compare them: names with dots, values as str."""
    if not sysctls:
        return []
    if not isinstance(sysctls, dict):
        raise TypeError(f"sysctls must be a dict of name: value, not {type(sysctls).__name__}")
    return [(str(k).replace("/", "."), str(v).strip()) for k, v in sysctls.items()]


def names():
    """The built-in profiles' names."""
    return sorted(f[:-5] for f in os.listdir(_DIR) if f.endswith(".toml"))


def load(profile):
    """A Profile from a built-in name ("rfc", "linux") or the path of a .toml
    file; a Profile is returned as it is. Built-ins are read once."""
    if isinstance(profile, Profile):
        return profile
    if not isinstance(profile, (str, os.PathLike)):
        raise TypeError(f"profile must be a name or a path, not {type(profile).__name__}")
    text = os.fspath(profile)
    if os.sep not in text and not text.endswith(".toml"):
        if text not in names():
            raise ValueError(f"profile: no built-in profile {text!r} (built-in: {', '.join(names())}; "
                             "or give the path of a .toml file)")
        if text not in _cache:
            _cache[text] = _load_file(os.path.join(_DIR, text + ".toml"), ())
        return _cache[text]
    return _load_file(os.path.abspath(text), ())


# ---- reading a file ----------------------------------------------------------------


def _load_file(path, seen):
    if path in seen:
        raise ValueError(f"{path}: based_on makes a loop ({' -> '.join(seen + (path,))})")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the profile: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not TOML: {exc}") from None
    bad = _Bad(path)
    unknown = set(data) - _HEADER_KEYS
    if unknown:
        bad(f"unknown key(s) {sorted(unknown)}; a profile has {sorted(_HEADER_KEYS)}")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key]:
            bad(f"missing {key} (a string)")
    base = None
    based_on = data.get("based_on")
    if based_on is not None:
        if not isinstance(based_on, str):
            bad("based_on must be a profile name or a path")
        if based_on in names() and not based_on.endswith(".toml"):
            base = load(based_on)
        else:
            base = _load_file(os.path.join(os.path.dirname(path), based_on), seen + (path,))
    rules = data.get("rule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        bad("rule must be an array of tables ([[rule]])")
    layers = list(base.layers) if base is not None else []
    for number, rule in enumerate(rules, 1):
        where = bad.rule(number)
        layers.append((_when(rule, where), dict(_rule_cells(rule, where))))
    return Profile(data["name"], data["description"], base, layers, path)


def _when(rule, bad):
    """A rule's when_sysctl as {name: value as str}, or None."""
    when = rule.get("when_sysctl")
    if when is None:
        return None
    if not isinstance(when, dict) or not when or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in when.values()):
        bad("when_sysctl must be a table of sysctl = value, e.g. {\"net.ipv4.tcp_rfc1337\" = 1}")
    return dict(_sysctl_items(when))


class _Bad:
    """Raises ValueError naming the file (and the rule) and the problem."""

    def __init__(self, path, where=""):
        self.path, self.where = path, where

    def __call__(self, problem):
        raise ValueError(f"{self.path}{self.where}: {problem}")

    def rule(self, number):
        return _Bad(self.path, f", rule {number}")


def _names(rule, key, known, bad):
    value = rule.get(key)
    if value is None:
        bad(f"missing {key} (a list of names, or [\"*\"])")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        bad(f"{key} must be a non-empty list of names")
    if "*" in value:
        return list(known)
    unknown = [v for v in value if v not in known]
    if unknown:
        bad(f"unknown {key[:-1]} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return value


def _rule_cells(rule, bad):
    """[((state, event), Expectation)] of one rule."""
    unknown = set(rule) - _RULE_KEYS
    if unknown:
        bad(f"unknown key(s) {sorted(unknown)}; a rule has {sorted(_RULE_KEYS)}")
    states = _names(rule, "states", _events.STATES, bad)
    events = _names(rule, "events", [e.name for e in _events.EVENTS], bad)
    answer = rule.get("answer")
    if answer is None:
        bad(f"missing answer (one or a list of {', '.join(ANSWERS)})")
    answer = [answer] if isinstance(answer, str) else answer
    if not isinstance(answer, list) or not answer:
        bad("answer must be a class or a non-empty list of them")
    wrong = [a for a in answer if a not in ANSWERS]
    if wrong:
        bad(f"unknown answer class {', '.join(map(repr, wrong))}; known: {', '.join(ANSWERS)}")
    after = rule.get("state_after")
    if after is not None and after != "same" and after not in STATE_NAMES:
        bad(f"unknown state_after {after!r}; a TCP state ({', '.join(STATE_NAMES)}) or \"same\"")
    alive = rule.get("alive")
    if alive is not None and not isinstance(alive, bool):
        bad("alive must be true or false")
    section = rule.get("section")
    if not isinstance(section, str) or not section:
        bad("missing section (the RFC section or the source the rule follows)")
    note = rule.get("note", "")
    if not isinstance(note, str):
        bad("note must be a string")
    out = []
    for state in states:
        for event in events:
            if not _events.BY_NAME[event].applies(state):
                continue
            s_after = plain_state(state) if after == "same" else after
            a = alive if alive is not None else (None if s_after is None else s_after != "CLOSED")
            out.append(((state, event), Expectation(tuple(answer), s_after, a, section, note)))
    return out
