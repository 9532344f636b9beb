"""pytest --pyargs finprobe.conformance: the matrix as one test a cell,
against the Lab's kernel or a stack, judged by a profile."""

import os
import re
import subprocess

import finprobe as fp
from finprobe import events

from labtools import PACKAGE_DIR, PYTHON


def run_suite(*args, timeout=300):
    """The conformance suite in a child pytest, from a directory of its own
    (no conftest of the tests' on the way). finprobe is not installed here:
    ``-p finprobe.pytest_plugin`` stands for the pytest11 entry point that
    registers the plugin (and its options) where it is."""
    return subprocess.run([PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "finprobe.pytest_plugin",
                           "--pyargs", "finprobe.conformance",
                           "-rs", *args], capture_output=True, text=True, timeout=timeout, cwd="/",
                          env={**os.environ, "PYTHONPATH": PACKAGE_DIR})


def outcomes(done):
    """{"passed": n, "failed": n, ...} from pytest's last line."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)",
                                                   done.stdout.splitlines()[-1])}


def test_the_suite_has_one_test_a_cell_named_state_event():
    done = run_suite("--collect-only", "-q")
    ids = re.findall(r"test_cell\[(.*)\]", done.stdout)
    assert ids == [f"{s}-{e}" for s, e in events.cells()]


def test_every_cell_passes_against_the_kernel_under_the_linux_profile():
    done = run_suite("--finprobe-profile", "linux")
    assert outcomes(done) == {"passed": len(events.cells())}, done.stdout[-3000:]


def test_a_cell_linux_departs_in_fails_under_rfc_showing_expected_observed_and_the_ladder():
    """An orphaned FIN_WAIT_2 is a timewait socket to Linux: an in-window RST
    resets it, where RFC 5961 asks for a challenge ACK."""
    done = run_suite("-k", "FIN_WAIT_2-rst and W-1")   # -k takes no "@"
    assert outcomes(done) == {"failed": 1, "deselected": len(events.cells()) - 1}, done.stdout[-3000:]
    report = done.stdout
    assert "FIN_WAIT_2 x rst@N+W-1: fail" in report
    assert "expected (rfc, RFC 5961" in report
    assert "observed (wire): answer nothing" in report
    assert "observed (socket): state after CLOSED" in report
    assert re.search(r"\[R\]", report)                      # the ladder's RST line


def test_a_profile_that_does_not_load_is_a_usage_error():
    done = run_suite("--finprobe-profile", "/nonexistent.toml")
    assert done.returncode == 4 and "nonexistent.toml" in done.stderr


def test_the_suite_runs_against_a_stack_recipe_with_its_port():
    command = " ".join(fp.stacks.command("gvisor", 8080, control=True))
    done = run_suite("--finprobe-stack", command, "--finprobe-port", "8080", "-k", "TIME_WAIT")
    counts = outcomes(done)
    row = sum(1 for s, _ in events.cells() if s == "TIME_WAIT")
    assert counts.get("passed", 0) + counts.get("failed", 0) + counts.get("skipped", 0) == row, done.stdout[-3000:]
    assert counts.get("skipped", 0) <= 2 and "error" not in counts, done.stdout[-3000:]
    for failure in re.findall(r"AssertionError: against (.*)", done.stdout):
        assert "the stack" in failure           # judged against the stack, not the kernel


def test_a_stack_without_its_port_is_a_usage_error():
    done = run_suite("--finprobe-stack", "/bin/true")
    assert done.returncode == 4 and "--finprobe-port" in done.stderr
