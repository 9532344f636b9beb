"""fp.Connection: our end of a TCP connection, as a test drives it.

The C side (``_core.Connection``) keeps the TCB, sends, receives and records;
this class adds what a test reads and writes: ``state`` as an ``fp.State``,
``expect`` with its failure report, the shorthands ``fin``/``ack``/``rst``/
``write``, the trace and the context manager.
"""

from . import _args, _core
from .state import State
from .trace import Trace

DEFAULT_SYN_OPTIONS = (("mss", 1460),)  # _core.Connection._connect sends these too
REPORT_ROWS = 20  # segments a failed expect shows

_UNSET = object()


class Connection(_core.Connection):
    """One end of a TCP connection that finprobe owns.

    ``send`` fills what is not forced from our state (seq = SND.NXT, ack =
    RCV.NXT); received segments wait until ``expect``, ``expect_silence`` or
    ``recv`` takes them, and only then move our state. finprobe never answers
    the peer on its own.
    """

    @property
    def state(self):
        """Our endpoint's state (RFC 9293), after what has been taken."""
        return State(self._state_name)

    def write(self, data):
        """Send ``data`` with PSH+ACK."""
        return self.send(data, flags="PA")

    def fin(self):
        """Send FIN+ACK: the CLOSE call."""
        return self._send_flags("FA")

    def ack(self):
        """Send a bare ACK of everything received (RCV.NXT)."""
        return self._send_flags("A")

    def rst(self):
        """Send RST at SND.NXT: the ABORT call."""
        return self._send_flags("R")

    def recv(self, timeout=1.0):
        """The next segment from the peer within ``timeout`` seconds, or None.

        ``timeout``, here and in every wait: seconds, an int or a float >= 0
        and at most ``threading.TIMEOUT_MAX`` (about 292 years); otherwise
        TypeError, ValueError or OverflowError (as threading.Event.wait), so
        that no wait is cut short by an overflow.
        """
        return self._take(timeout)

    def expect(self, flags=None, *, seq=None, ack=None, payload=None, window=None, timeout=1.0):
        """Take the next segment from the peer and check it.

        It must arrive within ``timeout`` seconds and match every field given
        (``flags`` as an exact set of letters, e.g. "FA"); otherwise
        ``fp.ExpectError`` shows what was expected, what came, and the recent
        trace. Returns the segment.

        Each field given must be one a segment can have: ``flags`` a str,
        ``seq``/``ack`` ints in 0..2**32-1, ``window`` an int in 0..65535,
        ``payload`` bytes-like (bytes, bytearray, memoryview ...); otherwise
        TypeError or ValueError naming it. ``timeout`` as for ``recv``.
        """
        # Checked, waited for and matched in C: a Segment only when it matched.
        got = self._expect(flags, seq, ack, payload, window, timeout)
        if got is not None and got.__class__ is not tuple:
            return got
        want = _expectation(flags, seq, ack, payload, window)
        if got is None:
            raise _core.ExpectError(self._report(f"expected {_describe(want)}, got nothing within {timeout:g}s"))
        seg = got[0]
        wrong = [f"{name}: expected {_show(name, value)}, got {_show(name, _field(seg, name))}"
                 for name, value in want.items() if not _matches(name, value, seg)]
        if wrong:
            raise _core.ExpectError(self._report(f"expected {_describe(want)}, got {seg!r}\n  " + "\n  ".join(wrong)))

    def expect_silence(self, timeout):
        """Raise ``fp.ExpectError`` if the peer sends anything within ``timeout`` s
        (as for ``recv``: one too long to wait raises OverflowError; it never
        passes at once)."""
        seg = self._take(timeout)
        if seg is not None:
            raise _core.ExpectError(self._report(f"expected silence for {timeout:g}s, got {seg!r}"))

    def close(self):
        """Release the connection (its queue, its trace, what holds its 4-tuple);
        sends nothing."""
        _core.Connection.close(self)
        for release in self.__dict__.pop("_releases", ()):
            release()

    def _on_close(self, release):
        """Call ``release()`` once this connection is closed."""
        self.__dict__.setdefault("_releases", []).append(release)

    def _handshake(self, where, options, timeout):
        """SYN, the peer's SYN-ACK, our ACK: ESTABLISHED. A RST answer raises
        fp.ConnectionRefused naming it; silence, fp.ExpectError."""
        if options is None:
            # SYN, answer and ACK in one C call (True), or the answer it stopped at.
            answer = self._connect(timeout)
            if answer is True:
                return
        else:
            self.send(flags="S", options=options)
            answer = self._take(timeout)
        self._handshake_answered(where, answer, timeout)

    def _handshake_answered(self, where, answer, timeout):
        """The rest of the handshake once the answer to our SYN is taken (None:
        none within timeout): our ACK, or the error. Shared with fp.aio."""
        if answer is None:
            raise _core.ExpectError(self._report(f"no answer to our SYN to {where} within {timeout:g}s"))
        if "R" in answer.flags:
            raise _core.ConnectionRefused(f"{where} refused the connection: our SYN was answered by "
                                          f"a RST, {answer!r}")
        if "S" not in answer.flags or "A" not in answer.flags:
            raise _core.ExpectError(self._report(f"expected a SYN-ACK to our SYN, got {answer!r}"))
        self.ack()

    @property
    def trace(self):
        """Every segment both ways, in order, with ``ts`` and ``direction``."""
        return Trace.of_connection(self)

    def _report(self, message):
        return f"{message}\n{Trace.of_connection(self, last=REPORT_ROWS).ladder_text()}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<Connection closed>"
        return f"<Connection {_args.endpoint(*self.local)} > {_args.endpoint(*self.remote)} {self.state.value}>"


def _expectation(flags, seq, ack, payload, window):
    """The fields expected, each checked to be one a segment can have: an
    expectation no segment can meet is a mistake in the test, said at once
    rather than as a mismatch after the timeout."""
    want = {}
    if flags is not None:
        if not isinstance(flags, str):
            raise TypeError(f"flags must be a str of \"FSRPAUEC\" letters, not {type(flags).__name__}")
        if any(c not in "FSRPAUEC" for c in flags) or len(set(flags)) != len(flags):
            raise ValueError(f"flags: {flags!r} is not a set of the letters F S R P A U E C "
                             "(each at most once)")
        want["flags"] = frozenset(flags)
    for name, value, top in (("seq", seq, 2 ** 32 - 1), ("ack", ack, 2 ** 32 - 1),
                             ("window", window, 65535)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be in 0..{top}, got {value}")
            want[name] = value
    if payload is not None:
        want["payload"] = _payload_bytes(payload)
    return want


def _payload_bytes(payload):
    """The bytes of a bytes-like payload; not of an int (bytes(5) is five
    zero bytes), a str or an iterable of ints."""
    if isinstance(payload, str):
        raise TypeError("payload must be bytes-like, not str")
    try:
        view = memoryview(payload)
    except TypeError:
        raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}") from None
    with view:
        return view.tobytes()


def _field(seg, name):
    return frozenset(seg.flags) if name == "flags" else getattr(seg, name)


def _matches(name, value, seg):
    return _field(seg, name) == value


def _show(name, value):
    if name == "flags":
        return "[" + "".join(c for c in "FSRPAUEC" if c in value) + "]"
    return repr(value)


def _describe(want):
    if not want:
        return "a segment"
    return "a segment with " + " ".join(f"{k}={_show(k, v)}" for k, v in want.items())
