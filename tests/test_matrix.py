"""fp.matrix against the Lab's kernel: every cell driven, answered and read;
the same twice; the events where their names put them; the command line."""

import json
import os
import subprocess

import pytest

import finprobe as fp
from finprobe import events

from labtools import PACKAGE_DIR, PYTHON

SETTINGS = {"default": {}, "rfc1337": {"net.ipv4.tcp_rfc1337": "1"}}


def observed(m):
    """What a matrix saw, cell by cell: the answer's flags, the state after, alive."""
    return {(c.state, c.event): (c.answer.flags if c.answer is not None else None, c.state_after, c.alive)
            for c in m.cells}


@pytest.fixture(scope="module", params=[(ipv6, name) for ipv6 in (False, True) for name in SETTINGS],
                ids=lambda p: f"{'ipv6' if p[0] else 'ipv4'}-{p[1]}")
def two_runs(request):
    ipv6, name = request.param
    return [fp.matrix(ipv6=ipv6, sysctls=SETTINGS[name], profile="linux") for _ in range(2)]


def test_every_cell_of_the_kernel_matrix_is_driven_and_read_from_its_socket(two_runs):
    m = two_runs[0]
    assert [(c.state, c.event) for c in m.cells] == events.cells()
    for c in m.cells:
        assert c.verdict != "skipped", c.explain()
        assert c.state_before == c.state.split("/")[0], c.explain()
        assert c.state_source == "socket" and c.alive_source == "socket"
        assert c.state_after is not None and c.alive is not None


def test_the_kernel_matrix_is_the_same_in_two_runs(two_runs):
    first, second = (observed(m) for m in two_runs)
    differ = {cell: (first[cell], second[cell]) for cell in first if first[cell] != second[cell]}
    assert not differ


def test_the_linux_profile_agrees_with_the_kernel_cell_by_cell(two_runs):
    """Its answers, and the states sock_diag reads after each event."""
    failed = [c.explain("linux") for c in two_runs[0].cells if c.verdict != "pass"]
    assert not failed, "\n\n".join(failed)


def test_each_event_is_sent_where_its_name_puts_it(two_runs):
    """classify() names each sent segment as the event it was meant to be, against the
    peer's numbers when it was sent; but ack@S where the peer has nothing unacknowledged
    (S = U) is a plain duplicate ACK, ordinary traffic, which it leaves unnamed."""
    def meant(c):
        return None if c.event == "ack@S" and c.numbers.S == c.numbers.U else c.event
    wrong = [(c.name, events.classify(c.sent, c.numbers)) for c in two_runs[0].cells
             if events.classify(c.sent, c.numbers) != meant(c)]
    assert not wrong
    assert any(meant(c) == "ack@S" for c in two_runs[0].cells)


def test_each_cell_is_a_connection_of_its_own(two_runs):
    tuples = [(c.trace[0].sport, c.trace[0].dport) for c in two_runs[0].cells]
    assert len(set(tuples)) == len(tuples)


def test_rfc1337_keeps_time_wait_through_a_rst_at_rcv_nxt(two_runs):
    """The one sysctl the issue names: the kernel's TIME_WAIT ignores a RST with it, not without."""
    m = two_runs[0]
    after = m.cell("TIME_WAIT", "rst@N").state_after
    assert after == ("TIME_WAIT" if m.sysctls else "CLOSED")


@pytest.mark.parametrize("kwargs, error, words", [
    ({"states": ["NOPE"]}, ValueError, "unknown states ['NOPE']"),
    ({"events": ["rst@N+2"]}, ValueError, "unknown events ['rst@N+2']"),
    ({"states": "TIME_WAIT"}, TypeError, "states must be a list"),
    ({"sysctls": {"net.ipv4.no_such_thing": 1}}, ValueError, "net.ipv4.no_such_thing"),
    ({"sysctls": [("net.ipv4.tcp_rfc1337", 1)]}, TypeError, "sysctls must be a dict"),
    ({"host": "192.0.2.1", "port": 80, "sysctls": {"net.ipv4.tcp_rfc1337": 1}}, ValueError, "sysctls="),
    ({"concurrency": 0}, ValueError, "concurrency"),
    ({"profile": "no-such-profile"}, ValueError, "no-such-profile"),
    ({"ipv6": "yes"}, TypeError, "ipv6 must be a bool"),
])
def test_matrix_refuses_bad_arguments_naming_them(kwargs, error, words):
    with pytest.raises(error, match=None) as raised:
        fp.matrix(**kwargs)
    assert words in str(raised.value)


def run_cli(*args, timeout=120):
    return subprocess.run([PYTHON, "-m", "finprobe", "matrix", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": PACKAGE_DIR})


def test_cli_json_holds_the_documented_shape_alone_on_stdout():
    done = run_cli("--state", "TIME_WAIT", "--event", "rst@N", "--event", "syn@N+10^6", "--json",
                   "--profile", "linux")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"peer", "family", "profile", "cells"} <= set(out) and out["family"] == "ipv4"
    assert [(c["state"], c["event"]) for c in out["cells"]] == [("TIME_WAIT", "rst@N"),
                                                               ("TIME_WAIT", "syn@N+10^6")]
    for c in out["cells"]:
        assert {"state", "event", "answer", "state_after", "alive", "expected", "verdict"} <= set(c)
        assert set(c["expected"]) >= {"rfc", "linux"}
    rst, syn = out["cells"]
    assert rst["answer"] is None and rst["state_after"] == "CLOSED" and rst["alive"] is False
    # Linux takes a SYN above RCV.NXT into TIME_WAIT as a new connection: its SYN-ACK
    # acknowledges the SYN, whose sequence number is N + 10**6 (relative to our ISN).
    assert syn["answer"]["flags"] == "SA" and syn["state_after"] == "SYN_RECEIVED"
    assert syn["answer"]["ack_rel"] == (rst["sent"]["seq_rel"] + 10**6 + 1) % 2**32
    assert "matrix" in done.stderr


def test_cli_sysctl_changes_the_kernel_it_runs_against():
    done = run_cli("--state", "TIME_WAIT", "--event", "rst@N", "--json", "--sysctl", "net.ipv4.tcp_rfc1337=1")
    assert json.loads(done.stdout)["cells"][0]["state_after"] == "TIME_WAIT"


@pytest.mark.parametrize("args, words", [
    (["--sysctl", "tcp_rfc1337"], "is not NAME=VALUE"),
    (["192.0.2.1:80", "--sysctl", "net.ipv4.tcp_rfc1337=1"], "--sysctl"),
    (["--stack", "x"], "--stack needs --port"),
    (["--profile", "/nonexistent/profile.toml"], "profile.toml"),
    (["--state", "NOPE"], "unknown states"),
])
def test_cli_refuses_a_wrong_command_line_before_running(args, words):
    done = run_cli(*args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
