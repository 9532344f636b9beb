"""finprobe: test how TCP stacks close connections.

The C core owns one end of a TCP connection: it injects segments through raw
sockets, observes the peer's answers and keeps its own RFC 9293 state machine.
See README.md and the public API in shared/API.md.

    import finprobe as fp
    with fp.Lab() as lab:
        srv = lab.listen(8080)
        conn = lab.connect(8080)
        conn.fin()
        conn.expect("A")
"""

from . import _core, stacks
from .aio import AsyncConnection, AsyncLab, AsyncTarget
from ._core import ConnectionRefused, Error, ExpectError, ParseError, PermissionError, Segment
from .connection import Connection
from .compare_view import MatrixComparison
from .lab import Lab
from .matrix import Cell, Matrix, matrix
from .probe import Check, Comparison, Report, compare, probe
from .replay import ReplayResult, replay
from .state import State
from .target import Target
from .trace import Trace, iter_pcap, read_pcap

__all__ = [
    "AsyncConnection", "AsyncLab", "AsyncTarget", "Connection", "ConnectionRefused", "Error", "ExpectError",
    "Lab", "ParseError", "PermissionError", "Segment", "State", "Target", "Trace", "iter_pcap", "read_pcap",
    "probe", "Check", "Report",
    "compare", "Comparison", "stacks", "matrix", "Matrix", "Cell", "MatrixComparison", "replay", "ReplayResult",
]
