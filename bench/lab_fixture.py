"""What the pytest ``lab`` fixture costs a test of its own time: 200 trivial
tests using ``lab``, and 200 short close cases (a handshake, our FIN, its
ACK), against 200 trivial tests without, in child pytest runs: each test's
setup + teardown time (pytest's own report durations; the lab fixture's share
is the difference to the tests without) and each run's wall time.

    PYTHONPATH=python /usr/bin/python3 bench/lab_fixture.py [-n WORKERS] [--python DIR]

(--python: the directory holding the finprobe package to measure, another
tree's ``python`` say, for a before-and-after.)
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

CLOSE_CASE = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_close_case(lab, i):
    lab.listen(8080)
    conn = lab.connect(8080)
    conn.fin()
    conn.expect("A")
'''

WITHOUT_LAB = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
'''


def run(body, workers, python_dir):
    """(wall seconds, [setup + teardown seconds of each test])"""
    with tempfile.TemporaryDirectory(prefix="finprobe-bench-") as d:
        with open(os.path.join(d, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(d, "test_trivial.py"), "w") as f:
            f.write(body.format(n=TESTS))
        out = os.path.join(d, "out")
        os.mkdir(out)
        env = dict(os.environ, PYTHONPATH=python_dir, BENCH_OUT=out)
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
    parser.add_argument("--python", dest="python_dir", default=PYTHON_DIR,
                        help="the directory holding the finprobe package (default: this tree's)")
    args = parser.parse_args()
    workers = args.workers
    ms = 1000
    base_wall, base = run(WITHOUT_LAB, workers, args.python_dir)
    print(f"{TESTS} tests{' -n ' + workers if workers else ''}; setup+teardown a test (median, mean) "
          f"and the lab fixture's share of it (less the same without lab)")
    print(f"  without lab:            {statistics.median(base) * ms:7.3f} ms {statistics.mean(base) * ms:7.3f} ms"
          f"                          wall {base_wall:.2f} s")
    for name, body in (("trivial, with lab", WITH_LAB), ("a close case, with lab", CLOSE_CASE)):
        wall, own = run(body, workers, args.python_dir)
        median, mean = statistics.median(own), statistics.mean(own)
        print(f"  {name + ':':23} {median * ms:7.3f} ms {mean * ms:7.3f} ms  lab's share "
              f"{(median - statistics.median(base)) * ms:6.3f} ms {(mean - statistics.mean(base)) * ms:6.3f} ms"
              f"  wall {wall:.2f} s")


if __name__ == "__main__":
    main()
