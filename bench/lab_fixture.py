"""What the pytest ``lab`` fixture costs a test of its own time: 200 trivial
tests using ``lab`` against 200 without, in child pytest runs; each test's
setup + teardown time (pytest's own report durations) and the run's wall time.

    PYTHONPATH=python /usr/bin/python3 bench/lab_fixture.py [-n WORKERS]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TESTS = 200
PYTHON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")

CONFTEST = '''
import json, os
pytest_plugins = ["finprobe.pytest_plugin"]
_own = {}

def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        _own[report.nodeid] = _own.get(report.nodeid, 0.0) + report.duration

def pytest_sessionfinish(session):
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["BENCH_OUT"], name + ".json"), "w") as f:
        json.dump(_own, f)
'''

WITH_LAB = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(lab, i):
    assert lab.peer_addr == "192.0.2.1"
'''

WITHOUT_LAB = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
'''


def run(body, workers):
    """(wall seconds, [setup + teardown seconds of each test])"""
    with tempfile.TemporaryDirectory(prefix="finprobe-bench-") as d:
        with open(os.path.join(d, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(d, "test_trivial.py"), "w") as f:
            f.write(body.format(n=TESTS))
        out = os.path.join(d, "out")
        os.mkdir(out)
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR, BENCH_OUT=out)
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", d]
        if workers:
            args += ["-n", str(workers)]
        t = time.perf_counter()
        done = subprocess.run(args, cwd=d, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if done.returncode != 0:
            sys.exit(f"the child pytest failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        own = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name)) as f:
                own.update(json.load(f))
        return wall, list(own.values())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", dest="workers", default=None, help="pytest-xdist workers (-n)")
    workers = parser.parse_args().workers
    base_wall, base = run(WITHOUT_LAB, workers)
    lab_wall, labs = run(WITH_LAB, workers)
    ms = 1000
    print(f"{TESTS} trivial tests{' -n ' + workers if workers else ''}: "
          f"wall {lab_wall:.2f} s with lab, {base_wall:.2f} s without")
    print(f"  setup+teardown a test: median {statistics.median(labs) * ms:.3f} ms with lab, "
          f"{statistics.median(base) * ms:.3f} ms without; "
          f"mean {statistics.mean(labs) * ms:.3f} / {statistics.mean(base) * ms:.3f} ms")
    print(f"  the lab fixture's own cost a test: median {(statistics.median(labs) - statistics.median(base)) * ms:.3f} ms, "
          f"mean {(statistics.mean(labs) - statistics.mean(base)) * ms:.3f} ms, "
          f"by wall time {(lab_wall - base_wall) / TESTS * ms:.3f} ms")


if __name__ == "__main__":
    main()
