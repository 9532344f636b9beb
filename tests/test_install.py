"""The README's install works: `pip install .` into a venv over Debian's
packages gives a finprobe that imports from any directory, with its C
extension and its pytest plugin entry point.

Slow for a unit test (~15 s: a venv, then the C sources compiled), but in the
default run: it is the only test of setup.py and pyproject.toml. It builds a
copy of the working tree, so the tree's own build products (build/, the
in-place _core*.so) cannot stand in for what pip builds; and it runs without
PYTHONPATH, so the tree's python/finprobe cannot either.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # Debian's, whose dist-packages hold setuptools

# What `make` and earlier installs leave in the tree; a clean clone has none.
NOT_SOURCES = shutil.ignore_patterns("build", ".git", "*.so", "__pycache__", "*.egg-info",
                                     ".pytest_cache", "venv", ".venv")

CHECK = """
import sys
import finprobe, finprobe._core
s = finprobe.Segment('192.0.2.1', '192.0.2.2', 1, 2)
assert bytes(s)
assert finprobe.__file__.startswith(sys.prefix), finprobe.__file__
from importlib.metadata import entry_points, version
assert version('finprobe') == '0.1.0', version('finprobe')
plugins = {ep.name: ep.value for ep in entry_points(group='pytest11')}
assert plugins.get('finprobe') == 'finprobe.pytest_plugin', plugins
import finprobe.profile
assert finprobe.profile.names() == ['linux', 'rfc'], finprobe.profile.names()
assert finprobe.profile.load('linux').based_on == 'rfc'
print('ok')
"""


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    # Everything is local: no index, no cache, no version check.
    env.update(PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, env=clean_env(), **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"needs Debian's {PYTHON}")
def test_pip_install_gives_a_package_that_works_from_any_directory(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES, symlinks=True)
    venv = tmp_path / "v"
    run([PYTHON, "-m", "venv", "--system-site-packages", venv])
    run([venv / "bin" / "pip", "install", "--no-deps", "--no-build-isolation", "-q", src])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run([venv / "bin" / "python", "-c", CHECK], cwd=elsewhere).strip() == "ok"
