"""python -m finprobe replay FILE.pcap [HOST:PORT | --stack "CMD ..." --port PORT]
[--side client|server] [--json]: exit 0 when the peer answered as
captured, 1 on differences, 2 on a wrong command line; --json prints JSON
alone on stdout. Against real captures (replaytools)."""

import json
import os
import shlex
import subprocess

import pytest

import finprobe as fp

import replaytools as rt
from labtools import PACKAGE_DIR, PYTHON

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/tcpdump"), reason="needs tcpdump")

PORT = 8080


def replay(*args, timeout=60):
    return subprocess.run([PYTHON, "-m", "finprobe", "replay", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": PACKAGE_DIR})


def stack(recipe):
    return shlex.join(fp.stacks.command(recipe, PORT))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("captures")


@pytest.fixture(scope="module")
def kernel_capture(tmp):
    """http.server serving a kernel client: it closes first."""
    return rt.kernel_capture(tmp, "http.server", "http.server")


@pytest.fixture(scope="module")
def stack_capture(tmp):
    """finprobe against the lwIP recipe, a RST and an ACK in TIME_WAIT at the end."""
    try:
        fp.stacks.binary("lwip")
        fp.stacks.binary("slirp")
    except fp.Error as exc:
        pytest.skip(str(exc))
    return rt.stack_capture(tmp, "lwip", "lwip", port=PORT, rst_in_time_wait=True)


def test_cli_exits_0_when_the_stack_answers_as_captured(stack_capture):
    done = replay(stack_capture, "--stack", stack("lwip"), "--port", PORT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip()


def test_cli_exits_1_and_names_the_difference_when_another_stack_answers(stack_capture):
    done = replay(stack_capture, "--stack", stack("slirp"), "--port", PORT)   # slirp answers with RST
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rst" in done.stdout


def test_cli_exits_1_when_the_default_lab_has_no_server_behind_its_socket(kernel_capture):
    """The default peer is the kernel in a Lab, a socket of its listening on
    the captured port and no application: our request is ACKed, never answered."""
    done = replay(kernel_capture)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "length:" in done.stdout and "fin:" in done.stdout


def test_cli_plays_the_server_side_against_a_kernel_client(kernel_capture):
    done = replay(kernel_capture, "--side", "server")
    assert done.returncode == 0, done.stdout + done.stderr


def test_cli_json_is_alone_on_stdout_and_holds_the_differences(kernel_capture):
    done = replay(kernel_capture, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)           # nothing but the JSON
    assert isinstance(doc, dict)
    diffs = doc["differences"]
    assert diffs and {d["kind"] for d in diffs} <= set(fp.replay.__globals__["KINDS"])
    assert doc["side"] == "client" and doc["same"] is False
    assert [s["flags"] for s in doc["captured"]] == [s.flags for s in fp.read_pcap(kernel_capture)]
    for d in diffs:
        assert set(d) >= {"step", "kind", "captured", "observed", "meaning"}, d
        assert isinstance(d["step"], int) and all(isinstance(d[k], str) for k in
                                                   ("kind", "captured", "observed", "meaning"))


def test_cli_json_of_a_replay_without_differences(stack_capture):
    done = replay(stack_capture, "--stack", stack("lwip"), "--port", PORT, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["differences"] == []


@pytest.mark.parametrize("args,words", [
    ([], "FILE|file|pcap"),                                            # no capture
    (["{capture}", "--side", "both"], "side"),
    (["{capture}", "192.0.2.1:8000", "--stack", "sleep 1", "--port", "1"], "stack"),
    (["{capture}", "not-a-target"], "HOST:PORT|target"),
    (["{capture}", "--stack", "sleep 1"], "port"),                    # a stack's port is not the capture's
    (["{capture}", "--speed", "0"], "speed"),
    (["{capture}", "--stack", "sleep 1", "--port", "0"], "port"),
    (["{missing}"], "missing.pcap"),
])
def test_cli_refuses_a_wrong_command_line_with_exit_2(kernel_capture, tmp, args, words):
    args = [a.format(capture=kernel_capture, missing=tmp / "missing.pcap") for a in args]
    done = replay(*args, timeout=20)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" or not done.stdout.strip().startswith("{")
    import re
    assert re.search(words, done.stderr), done.stderr


def test_cli_pytest_writes_a_test_that_passes_against_the_stack_it_replayed(stack_capture, tmp_path):
    written = tmp_path / "test_written.py"
    done = replay(stack_capture, "--stack", stack("lwip"), "--port", PORT, "--pytest", written)
    assert done.returncode == 0, done.stdout + done.stderr
    run = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(written)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": PACKAGE_DIR})
    assert run.returncode == 0 and "1 passed" in run.stdout, written.read_text() + run.stdout + run.stderr


def test_cli_sysctl_is_set_in_the_lab_and_written_into_the_generated_test(kernel_capture, tmp_path):
    written = tmp_path / "test_written.py"
    done = replay(kernel_capture, "--sysctl", "net.ipv4.tcp_rfc1337=1", "--pytest", written)
    assert done.returncode == 1, done.stdout + done.stderr   # no application behind the socket
    text = written.read_text()
    assert "lab.sysctl('net.ipv4.tcp_rfc1337', '1')" in text and "lab.listen(8000" in text, text
    bad = replay(kernel_capture, "--sysctl", "net.ipv4.no_such_setting=1")
    assert bad.returncode == 2 and "no_such_setting" in bad.stderr, bad.stdout + bad.stderr
