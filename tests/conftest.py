"""Load finprobe's pytest plugin (fixtures lab, finprobe_target; --finprobe-pcap)
from the tree, unless an installed finprobe already registers it (pytest11)."""

import importlib.util
import os
import sys
from importlib.metadata import entry_points

if importlib.util.find_spec("finprobe") is None:  # run without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import pytest  # noqa: E402

_installed = any(ep.value.split(":")[0] == "finprobe.pytest_plugin" for ep in entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["finprobe.pytest_plugin"]


@pytest.fixture
def engines():
    """Two engines joined by an in-memory link (no privileges, no kernel):
    OURS on the first faces THEIRS on the second (labtools)."""
    from finprobe import _core
    a, b = _core.Engine.pair()
    yield a, b
    a.close()
    b.close()
