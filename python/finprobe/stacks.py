"""Recipes: small HTTP servers on user-space TCP stacks, the peers of stack Labs.

Each recipe (``stacks/<name>/`` in the source tree, built by ``make stacks``
into ``build/stacks/<name>-http``) attaches to the TAP device a stack Lab
makes, answers ARP / neighbour solicitation for the Lab's peer address and
serves HTTP on one port: ``GET / HTTP/1.0`` is answered and the connection
closed; our FIN before a request closes it too. They all take the same
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
