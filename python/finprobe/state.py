"""fp.State: RFC 9293's connection states, as str values ("TIME_WAIT")."""

import enum


class State(str, enum.Enum):
    """A TCP connection state, named as in RFC 9293 §3.3.2 with underscores.

    A ``str`` enum, so ``conn.state == "TIME_WAIT"`` holds. The same names serve
    our endpoint and a Linux peer's socket ("no socket" is ``CLOSED``).
    """

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    def __str__(self):
        return self.value

    __repr__ = __str__


def as_state(value, name="state"):
    """``value`` (a State or its name) as a State; ValueError naming it otherwise."""
    try:
        return State(value)
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise ValueError(f"{name}: {value!r} is not a TCP state (one of {names})") from None
