"""Recipes: small HTTP servers on user-space TCP stacks, the peers of stack Labs.

Each recipe (``stacks/<name>/`` in the source tree, built by ``make stacks``
into ``build/stacks/<name>-http``) attaches to the TAP device a stack Lab
makes, answers ARP / neighbour solicitation for the Lab's peer address and
serves HTTP on one port. That is the recipe contract, the same for every
recipe (``PATHS``):

- ``GET / HTTP/1.0`` (any path but the two below) is answered and the
  connection closed: the stack closes first (FIN_WAIT_1, FIN_WAIT_2, CLOSING,
  TIME_WAIT). Our FIN before a request closes it too: the stack closes after
  us (CLOSE_WAIT briefly, LAST_ACK).
- ``GET /shut HTTP/1.0`` is answered, then the server shuts down its sending
  side (shutdown(SHUT_WR): its FIN goes out) and keeps the socket, reading
  and discarding, until our FIN or an error: FIN_WAIT_2 with the socket held.
- ``GET /hold HTTP/1.0`` is answered and the socket kept, read; at our FIN
  the server waits ``HOLD`` seconds before it closes: CLOSE_WAIT that long.
  A RST ends the wait at once (lwip, gvisor; slirp's server, behind slirp's
  relay, cannot see it and keeps its socket the whole ``HOLD``).

A request may arrive in pieces: the path is read from the request line once
the header's "\r\n\r\n" is in. ``CONCURRENCY`` is how many connections
one may keep open against each recipe at once. They all take the same
arguments, so one place turns a name into ``fp.Lab(stack=...)``'s command::

    with fp.Lab(**fp.stacks.lab_args("lwip", port=8080)) as lab:
        conn = lab.connect(8080)

Recipes in ``TELLS_STATE`` also tell their connections' states on a control
socket (``command(..., control=True)``: ``lab.peer_state`` is then the
stack's own view). libslirp's is not among them yet: its API (libslirp.h)
has no per-connection state, only slirp_connection_info, a text table for
humans (QEMU's "info usernet") that a recipe would have to parse.

``FINPROBE_STACKS`` (a directory) overrides where the binaries are looked for.
"""

import os

from . import _core

RECIPES = ("lwip", "gvisor", "slirp")
TELLS_STATE = frozenset({"lwip", "gvisor"})  # take --control PATH

# Seconds a /hold connection stays in CLOSE_WAIT after our FIN: long enough
# for a matrix batch's event, its answer window and the follow-up probe.
HOLD = 10.0

# Each request path the recipes serve, and how the connection then ends.
PATHS = {
    "/": "answer and close: the stack closes first (TIME_WAIT after our FIN)",
    "/shut": "answer, shutdown(SHUT_WR), read until our FIN: FIN_WAIT_2 with the socket held",
    "/hold": f"answer, read until our FIN, close {HOLD:g} s later: CLOSE_WAIT that long",
}

# Connections one may keep open against each recipe at once (then open,
# hold and send to in one burst), about half of what was measured to work.
# Bounds seen: the Lab's TAP queues 1000 frames toward the stack, so a
# burst of requests on 600 connections (their ACKs included) overflowed it
# against lwip (its TAP reader runs the core under one lock), 800 against
# gvisor and slirp; finprobe's send then fails with ENOBUFS. Held quietly,
# each recipe kept 1000 connections in ESTABLISHED, in TIME_WAIT (after
# GET /) and in CLOSE_WAIT (after GET /hold) and still answered a new one;
# slirp takes two descriptors a connection (one in its TIME_WAIT) and so
# raises its soft RLIMIT_NOFILE to the hard limit. lwIP's own bound is its
# accept mailbox: 128 connections (the unix port's SYS_MBOX_SIZE; the
# listen backlog is not compiled in), past which it resets a new one while
# the server's accept thread lags, as it did on a busy machine with 200.
CONCURRENCY = {"lwip": 100, "gvisor": 300, "slirp": 250}

_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary(name):
    """The path of recipe ``name``'s binary; fp.Error if it is not built."""
    if name not in RECIPES:
        raise ValueError(f"no stack recipe {name!r}: there are {', '.join(RECIPES)}")
    where = os.environ.get("FINPROBE_STACKS") or os.path.join(_TREE, "build", "stacks")
    path = os.path.join(where, f"{name}-http")
    if not os.access(path, os.X_OK):
        raise _core.Error(f"the {name} recipe is not built: no {path} (make stacks)")
    return path


def command(name, port=8080, ipv6=False, control=False):
    """The command of a stack Lab running recipe ``name`` on ``port``, with
    the Lab's placeholders ({tap}, {peer_addr}, {prefix}, {local_addr});
    with ``control`` also ``--control {control}``, for a recipe in
    TELLS_STATE (fp.Error for one that cannot tell)."""
    if not isinstance(control, bool):
        raise TypeError(f"control must be a bool, not {type(control).__name__}")
    path = binary(name)
    if control and name not in TELLS_STATE:
        raise _core.Error(f"the {name} recipe cannot tell its connections' states: "
                          f"only {', '.join(sorted(TELLS_STATE))} can (control=True)")
    return ([path, "--tap", "{tap}", "--addr", "{peer_addr}", "--prefix", "{prefix}",
             "--gateway", "{local_addr}", "--port", str(port)] + (["--ipv6"] if ipv6 else [])
            + (["--control", "{control}"] if control else []))


def lab_args(name, port=8080, ipv6=False, control=False):
    """Keyword arguments of ``fp.Lab`` for a Lab whose peer is recipe ``name``."""
    return {"ipv6": ipv6, "stack": command(name, port, ipv6, control)}
