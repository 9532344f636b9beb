"""Load finprobe's pytest plugin (the finprobe_matrix fixture, the
--finprobe-* options) where finprobe is used from a source tree rather than
installed (an installed finprobe registers it through pytest11)."""

from importlib.metadata import entry_points

_installed = any(ep.value.split(":")[0] == "finprobe.pytest_plugin" for ep in entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["finprobe.pytest_plugin"]
