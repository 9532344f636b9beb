"""Suites under pytest-xdist, run in child pytest processes: the lab fixture
with -n 2, each worker with Labs of its own; the conformance suite with -n 2,
each worker running the matrix for the rows dealt to it alone, with the same
outcome a cell as without xdist; the same suites over execnet popen
gateways (--tx), with this tree's finprobe and plugin in each."""

import json
import os
import re
import subprocess

from finprobe import events
from finprobe.pytest_plugin import deal_cells

from labtools import PACKAGE_DIR, PYTHON

LAB_SUITE = '''
import json, os
import pytest
import finprobe as fp

@pytest.mark.parametrize("i", range(8))
def test_uses_a_lab(lab, i):
    server = lab.listen(8080)
    conn = lab.connect(8080)
    conn.fin()
    conn.expect("A")
    inode = os.fstat(lab._core.netns_fd).st_ino
    home = os.stat("/proc/self/ns/net").st_ino
    helper = [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
              if _in(p, inode) and _parent(_parent(p)) == os.getpid()]  # forked by our zygote
    with open(os.path.join(os.environ["RECORD_DIR"], f"{i}.json"), "w") as f:
        json.dump({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "pid": os.getpid(), "inode": inode,
                   "home": home, "helper": helper, "finprobe": fp.__file__}, f)

def _in(pid, inode):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except OSError:
        return False

def _parent(pid):
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
'''

# Writes each process's finprobe_matrix cells to $RECORD_DIR/<worker>.json.
MATRIX_OBSERVER = '''
import json, os
import pytest

_seen = {}

@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    outcome = yield
    if fixturedef.argname == "finprobe_matrix" and outcome.excinfo is None:
        _seen["matrix"] = outcome.get_result()

def pytest_sessionfinish(session):
    if "matrix" in _seen:
        name = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(os.environ["RECORD_DIR"], name + ".json"), "w") as f:
            json.dump([f"{c.state}-{c.event}" for c in _seen["matrix"].cells], f)
'''


def run_pytest(tmp_path, *args, cwd=None):
    """A child pytest with this tree's finprobe (-p finprobe.pytest_plugin
    stands for the pytest11 entry point of an installed one); the records
    its tests left in tmp_path/records."""
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    (tmp_path / "matrix_observer.py").write_text(MATRIX_OBSERVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}  # run by a worker ourselves
    done = subprocess.run([PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "finprobe.pytest_plugin", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd or tmp_path,
                          env={**env, "PYTHONPATH": PACKAGE_DIR + os.pathsep + str(tmp_path),
                               "RECORD_DIR": str(records)})
    found = {}
    for name in os.listdir(records):
        with open(records / name) as f:
            found[name[:-5]] = json.load(f)
        os.unlink(records / name)
    return done, found


def outcomes(done):
    """{"passed": n, "failed": n, ...} from pytest's last line."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                                   done.stdout.splitlines()[-1])}


def cell_outcomes(done):
    """{cell: "PASSED" / "FAILED" / "SKIPPED"} from a -v run, with or without xdist."""
    found = {}
    for line in done.stdout.splitlines():
        cell = re.search(r"::test_cell\[(.+?)\]", line)
        word = re.search(r"\b(PASSED|FAILED|SKIPPED|ERROR)\b", line)
        if cell and word:
            found[cell.group(1)] = word.group(1)
    return found


def assert_each_worker_its_own_labs(records, workers):
    assert sorted(records) == [str(i) for i in range(8)]
    assert {r["worker"] for r in records.values()} == workers, records
    # a Lab is its namespace and its helper: a closed Lab's inode number may be reused
    assert len({(r["inode"], tuple(r["helper"])) for r in records.values()}) == 8, "two tests shared a Lab"
    for r in records.values():
        assert r["inode"] != r["home"]
        assert len(r["helper"]) == 1, f"the Lab's helper is not a grandchild of its worker (forked by its zygote): {r}"
        assert r["finprobe"].startswith(PACKAGE_DIR), f"a worker imported another finprobe: {r['finprobe']}"
    by_worker = {}
    for r in records.values():
        by_worker.setdefault(r["worker"], set()).add(r["pid"])
    assert all(len(pids) == 1 for pids in by_worker.values())
    assert len({p for pids in by_worker.values() for p in pids}) == len(workers)


def test_a_lab_suite_passes_under_n_2_each_worker_with_labs_of_its_own(tmp_path):
    (tmp_path / "test_labs.py").write_text(LAB_SUITE)
    done, records = run_pytest(tmp_path, "-q", "-n", "2", "test_labs.py")
    assert outcomes(done) == {"passed": 8}, done.stdout + done.stderr
    assert_each_worker_its_own_labs(records, {"gw0", "gw1"})


def test_a_lab_suite_runs_over_popen_gateways_with_this_trees_finprobe(tmp_path):
    (tmp_path / "test_labs.py").write_text(LAB_SUITE)
    done, records = run_pytest(tmp_path, "-q", "--tx", f"2*popen//python={PYTHON}", "--dist", "load",
                               "test_labs.py")
    assert outcomes(done) == {"passed": 8}, done.stdout + done.stderr
    assert_each_worker_its_own_labs(records, {"gw0", "gw1"})


def conformance(tmp_path, *args):
    return run_pytest(tmp_path, "-p", "matrix_observer", "--pyargs", "finprobe.conformance", "-v", *args, cwd="/")


def test_the_conformance_suite_under_n_2_gives_each_cell_the_outcome_it_has_without(tmp_path):
    alone, alone_records = conformance(tmp_path)
    split, split_records = conformance(tmp_path, "-n", "2")
    cells = [f"{s}-{e}" for s, e in events.cells()]
    assert sorted(cell_outcomes(alone)) == sorted(cells), alone.stdout[-3000:]
    assert cell_outcomes(split) == cell_outcomes(alone), split.stdout[-3000:]
    assert "FAILED" in cell_outcomes(alone).values() and "PASSED" in cell_outcomes(alone).values()
    assert sorted(alone_records["main"]) == sorted(cells)
    # each worker ran the matrix once, for its own rows: between them every cell, none twice
    assert sorted(split_records) == ["gw0", "gw1"], split_records.keys()
    ran = split_records["gw0"] + split_records["gw1"]
    assert sorted(ran) == sorted(cells), "a cell ran on both workers, or on none"
    rows = [{c.split("-", 1)[0] for c in split_records[w]} for w in ("gw0", "gw1")]
    assert rows[0] and rows[1] and not rows[0] & rows[1]


def test_the_conformance_suite_runs_over_popen_gateways_each_worker_its_own_rows(tmp_path):
    done, records = conformance(tmp_path, "--finprobe-profile", "linux", "--tx", f"2*popen//python={PYTHON}",
                                "--dist", "load")
    assert outcomes(done) == {"passed": len(events.cells())}, done.stdout[-3000:]
    assert sorted(records) == ["gw0", "gw1"]
    assert 0 < len(records["gw0"]) < len(events.cells()) and 0 < len(records["gw1"]) < len(events.cells())


def test_cells_are_dealt_a_row_at_a_time_to_the_worker_with_fewest():
    ids = [f"x/conformance/test_matrix.py::test_cell[{s}-{e}]" for s in ("A", "B", "C") for e in ("e1", "e2")]
    ids += ["x/test_other.py::test_other", "x/conformance/test_matrix.py::test_cell[D-e1]"]
    assert deal_cells(ids, 2) == {0: [0, 1, 4, 5], 1: [2, 3, 7]}
    assert deal_cells(ids, 1) == {0: [0, 1, 2, 3, 4, 5, 7]}
    assert deal_cells(["x/test_other.py::test_other"], 2) == {}


# Another plugin's scheduler wins: cells reach workers they were not dealt to.
PLAIN_LOAD = '''
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScheduling
    return LoadScheduling(config, log)
'''


def test_a_cell_reaching_a_worker_it_was_not_dealt_to_still_gets_its_outcome(tmp_path):
    (tmp_path / "plain_load.py").write_text(PLAIN_LOAD)
    alone, _ = conformance(tmp_path, "-k", "ESTABLISHED or TIME_WAIT or LAST_ACK")
    split, records = conformance(tmp_path, "-p", "plain_load", "-n", "2", "-k", "ESTABLISHED or TIME_WAIT or LAST_ACK")
    assert len(cell_outcomes(alone)) == 66, alone.stdout[-3000:]
    assert cell_outcomes(split) == cell_outcomes(alone), split.stdout[-3000:]
