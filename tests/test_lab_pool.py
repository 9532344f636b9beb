"""The lab fixture's LabPool, run on inner test files in child pytest
processes: a spare default Lab made while a test runs, each test a fresh Lab
of its own, tests with Lab arguments their own kind, and nothing left of any
Lab (the spare, those still closing) when the session ends, by passing,
failing or Ctrl-C."""

import json
import os
import subprocess

from finprobe.pytest_plugin import SPARES

from labtools import PACKAGE_DIR, PYTHON, wait_gone, wait_netns_gone

# Each inner test records this process's Lab helpers (children in another
# network namespace) and its own Lab's namespace, to $RECORD_DIR.
RECORDER = '''
import json, os, time

def helpers():
    """{pid: netns inode} of this process's grandchildren (forked by its
    zygote) in other namespaces: Lab helpers."""
    home = os.stat("/proc/self/ns/net").st_ino
    parents, found = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(pid)] = (int(fields[1]), inode)
    for pid, (parent, inode) in parents.items():
        if parents.get(parent, (0,))[0] == os.getpid() and inode != home:
            found[pid] = inode
    return found

def record(name, lab, **more):
    with open(os.path.join(os.environ["RECORD_DIR"], name + ".json"), "w") as f:
        json.dump(dict(more, inode=os.fstat(lab._core.netns_fd).st_ino, helpers=helpers()), f)

_had = set()  # the helpers of the Labs tests had: closing ones may still run

def wait_for_spare(lab, n=1, timeout=5.0):
    """Until this process has n Lab helpers for Labs no test had yet: the
    spares (or the timeout)."""
    inode = os.fstat(lab._core.netns_fd).st_ino
    _had.update(pid for pid, ns in helpers().items() if ns == inode)
    deadline = time.monotonic() + timeout
    while len(set(helpers()) - _had) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return helpers()

def wait_for_helpers(n, timeout=5.0):
    """Until this process has n Lab helpers (or the timeout): the spare's comes
    in the background."""
    deadline = time.monotonic() + timeout
    while len(helpers()) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return helpers()
'''


def run_inner(tmp_path, body, *args):
    """pytest on body (a test file) with this tree's finprobe; the records."""
    (tmp_path / "recorder.py").write_text(RECORDER)
    (tmp_path / "test_inner.py").write_text(body)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["finprobe.pytest_plugin"]\n')
    records = tmp_path / "records"
    records.mkdir()
    done = subprocess.run([PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": PACKAGE_DIR + os.pathsep + str(tmp_path),
                               "RECORD_DIR": str(records)})
    found = {}
    for name in os.listdir(records):
        with open(records / name) as f:
            found[name[:-5]] = json.load(f)
    return done, found


SPARE = '''
from finprobe.pytest_plugin import SPARES
from recorder import record, wait_for_helpers

def test_first(lab):
    record("first", lab, seen=wait_for_helpers(1 + SPARES))
'''


def test_spare_default_labs_are_made_while_a_test_runs_each_fresh(tmp_path):
    done, records = run_inner(tmp_path, SPARE)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = records["first"]["seen"]
    # its own Lab's helper and each spare's (made at once), each in a
    # namespace of its own
    assert len(seen) == 1 + SPARES, f"{seen} while the test ran: not {SPARES} spares"
    assert records["first"]["inode"] in seen.values() and len(set(seen.values())) == 1 + SPARES


COLD = '''
import threading
from recorder import record, wait_for_helpers

def test_first(lab):
    record("first", lab, seen=wait_for_helpers(2, timeout=0.5),
           threads=[t.name for t in threading.enumerate()])
'''


def test_cold_labs_are_made_in_the_test_with_no_spare_nor_thread(tmp_path):
    """--finprobe-cold-labs (what make pytest-asan uses): no Lab made beside
    the test, no thread of the pool's."""
    done, records = run_inner(tmp_path, COLD, "--finprobe-cold-labs")
    assert done.returncode == 0, done.stdout + done.stderr
    first = records["first"]
    assert list(first["seen"].values()) == [first["inode"]], first["seen"]
    assert not [t for t in first["threads"] if t.startswith("finprobe-lab")], first["threads"]


FRESH = '''
import pytest
from recorder import record

@pytest.mark.parametrize("i", range(6))
def test_fresh(lab, i):
    assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "60", "a Lab a test before had"
    lab.sysctl("net.ipv4.tcp_fin_timeout", 7)
    server = lab.listen(8080)
    lab.connect(8080)
    record(f"fresh{i}", lab)

@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_with_arguments(lab):
    assert lab.ipv6 and lab.peer_addr == "2001:db8::1"
    record("ipv6", lab)
'''


def test_each_test_gets_a_fresh_lab_and_one_with_arguments_its_own_kind(tmp_path):
    done, records = run_inner(tmp_path, FRESH)
    assert done.returncode == 0, done.stdout + done.stderr
    # A Lab is its namespace and its helper together: a closed Lab's namespace
    # inode may be given to a later one (the kernel reuses the numbers), never
    # while the helper that holds it lives. (The sysctl each test set and the
    # next did not see says the same: never a Lab a test before had.)
    def helper(r):        # the live helper holding the Lab's namespace
        return [pid for pid, inode in r["helpers"].items() if inode == r["inode"]]
    labs = [(records[name]["inode"], tuple(helper(records[name])))
            for name in [f"fresh{i}" for i in range(6)] + ["ipv6"]]
    assert all(len(lab[1]) == 1 for lab in labs), records
    assert len(set(labs)) == 7


ENDINGS = '''
import os, signal
import pytest
from finprobe.pytest_plugin import SPARES
from recorder import record, wait_for_spare

@pytest.mark.parametrize("i", range(3))
def test_passes(lab, i):
    record(f"passes{i}", lab, seen=wait_for_spare(lab))

def test_ends(lab):
    record("ends", lab, seen=wait_for_spare(lab, n=SPARES))
    how = os.environ["HOW"]
    if how == "fail":
        assert False, "this test fails"
    if how == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C
'''


def session_leaves_nothing(tmp_path, how):
    os.environ["HOW"] = how
    try:
        done, records = run_inner(tmp_path, ENDINGS)
    finally:
        del os.environ["HOW"]
    assert "ends" in records, done.stdout + done.stderr
    helpers = {int(pid): inode for r in records.values() for pid, inode in r["seen"].items()}
    assert len(helpers) >= 4 + SPARES, helpers   # four tests' Labs and every spare at the end
    assert wait_gone(list(helpers)), "a Lab helper outlived the session"
    for inode in set(helpers.values()):
        assert wait_netns_gone(inode), "a Lab's namespace outlived the session"
    return done


def test_a_passing_session_leaves_no_lab_behind(tmp_path):
    assert session_leaves_nothing(tmp_path, "pass").returncode == 0


def test_a_failing_session_leaves_no_lab_behind(tmp_path):
    assert session_leaves_nothing(tmp_path, "fail").returncode == 1


def test_a_session_ended_by_ctrl_c_leaves_no_lab_behind(tmp_path):
    done = session_leaves_nothing(tmp_path, "interrupt")
    assert done.returncode == 2 and "KeyboardInterrupt" in done.stdout, done.stdout
