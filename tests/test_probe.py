"""The close-behaviour probe against the local kernel, through the API and the CLI."""

import json
import os
import re
import subprocess

import pytest

import finprobe as fp
from finprobe.probe import FIN_TIMEOUT

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


SOURCES = {"wire", "socket", "config", "model", "process", "stack"}
MEASUREMENTS = {"syn_into_time_wait", "fin_wait_2_timeout", "time_wait_duration"}  # no right answer: "info"


@pytest.fixture(scope="module")
def lab_report():
    """One probe of the local kernel, shared by the tests that read it."""
    return fp.probe()


def test_probe_of_the_local_kernel_passes_every_rfc_check(lab_report):
    names = [c.name for c in lab_report.checks]
    assert names[:3] == ["active_close", "passive_close", "fin_ack_skips_fin_wait_2"]
    assert len(names) == len(set(names)) >= 10 and MEASUREMENTS <= set(names)
    for check in lab_report.checks:
        assert check.reference.startswith("RFC"), check
        # every check with a right answer passes; all of them run in a Lab
        assert check.verdict == ("info" if check.name in MEASUREMENTS else "pass"), (check.name, check.observed)
        assert check.observations and not check.reason
        assert check.trace is not None and len(check.trace) >= 3
        assert check.trace[0].flags == "S"
    assert lab_report.counts() == {"pass": len(names) - len(MEASUREMENTS), "fail": 0,
                                   "info": len(MEASUREMENTS), "skipped": 0}
    by_name = {c.name: c for c in lab_report.checks}
    assert "CLOSING" in by_name["simultaneous_close"].peer_states
    assert any(o.source == "wire" and o.text.endswith("got [SA]") for o in by_name["syn_into_time_wait"].observations)


def test_every_observation_of_a_lab_probe_is_labelled_and_the_model_only_lists_violations(lab_report):
    """The socket is read: the model's states are not given in its place; what
    the model says is only where the peer's segments break the rfc profile."""
    for check in lab_report.checks:
        sources = [o.source for o in check.observations]
        assert set(sources) <= {"wire", "socket", "config", "model"}, check
        assert all(o.text.startswith("the model reads") for o in check.observations if o.source == "model")
        assert "wire" in sources or check.name == "fin_wait_2_timeout", check
        if check.name == "time_wait_duration":             # measured on the wire alone
            continue
        assert "socket" in sources, check                 # a Lab's checks all read the kernel's socket
        assert check.peer_states, check                    # ... and keep what they read
        assert all(str(o) == f"{o.source}: {o.text}" for o in check.observations)


def test_fin_ack_skips_fin_wait_2_is_judged_on_the_states_read_from_the_socket(lab_report):
    check = next(c for c in lab_report.checks if c.name == "fin_ack_skips_fin_wait_2")
    assert check.peer_states == ["FIN_WAIT_1", "TIME_WAIT"]
    first, wire, after = check.observations
    assert first.source == "socket" and "FIN_WAIT_1" in first.text and "before our segment" in first.text
    assert wire.source == "wire" and "[FA]" in wire.text and "acks its FIN" in wire.text
    assert after.source == "socket" and after.text.endswith(": TIME_WAIT")


def test_fin_wait_2_timeout_measures_how_long_the_socket_was_kept(lab_report):
    check = next(c for c in lab_report.checks if c.name == "fin_wait_2_timeout")
    config, timer, kept = check.observations
    assert config.source == "config"
    set_to = int(re.search(r"set to (\d+)", config.text).group(1))
    assert "net.ipv4.tcp_fin_timeout = 60" in config.text and set_to == FIN_TIMEOUT
    assert timer.source == "socket" and "when first read" in timer.text
    assert kept.source == "socket"
    seconds = float(re.search(r"kept (\d+\.\d+) s", kept.text).group(1))
    assert set_to - 0.1 <= seconds < set_to + 5           # measured: not the timer's one reading
    assert check.peer_states == ["FIN_WAIT_2", "CLOSED"]


def test_probe_runs_only_the_checks_asked_for():
    report = fp.probe(checks=["rst_exact", "rst_out_of_window"])
    assert [c.name for c in report.checks] == ["rst_exact", "rst_out_of_window"]
    with pytest.raises(ValueError, match="no_such_check"):
        fp.probe(checks=["no_such_check"])
    with pytest.raises(ValueError, match="host and port"):
        fp.probe("192.0.2.1")


def run_cli(*args):
    return subprocess.run(["/usr/bin/python3", "-m", "finprobe", "probe", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": PACKAGE_DIR})


def test_cli_prints_segments_states_and_verdicts():
    proc = run_cli("--check", "active_close", "--check", "passive_close")
    assert proc.returncode == 0, proc.stderr
    assert "PASS  active_close" in proc.stdout and "PASS  passive_close" in proc.stdout
    assert "us ---[FA]" in proc.stdout and "FIN_WAIT_2" in proc.stdout
    assert "2 passed, 0 failed, 0 info, 0 skipped" in proc.stdout


def test_cli_prints_the_source_beside_each_observation():
    proc = run_cli("--check", "active_close", "--check", "fin_wait_2_timeout")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "      wire:     our FIN at seq 1 answered by [A] ack=2" in lines
    assert "      socket:   the peer's socket in CLOSE_WAIT after it" in lines
    assert any(line.startswith("      config:   net.ipv4.tcp_fin_timeout = ") for line in lines)
    assert any(line.startswith("      socket:   the orphaned FIN_WAIT_2 kept ") for line in lines)
    for source in ("wire", "socket", "config", "model"):  # the legend
        assert any(line.startswith(f"  {source}:") for line in lines), source


def test_cli_json_report():
    proc = run_cli("--json", "--check", "rst_in_window")
    report = json.loads(proc.stdout)
    assert set(report["sources"]) == SOURCES
    assert report["counts"] == {"pass": 1, "fail": 0, "info": 0, "skipped": 0}
    (check,) = report["checks"]
    assert check["name"] == "rst_in_window" and check["verdict"] == "pass" and check["reason"] == ""
    # the challenge ACK, then our follow-up keepalive probe (1 byte) and its ACK
    assert [s["flags"] for s in check["segments"]] == ["S", "SA", "A", "R", "A", "A", "A"]
    assert [s["len"] for s in check["segments"][-2:]] == [1, 0]
    assert check["observations"] == [
        {"source": "wire", "text": "our RST 10 past RCV.NXT got [A] ack=1"},
        {"source": "socket", "text": "the peer's socket in ESTABLISHED after it"},
        {"source": "wire", "text": "a follow-up keepalive probe (1 byte at seq 0, already ACKed) got [A] ack=1: "
                                   "the connection is alive"}]
    assert check["peer_states"] == ["ESTABLISHED"]


def test_cli_rejects_a_malformed_target():
    proc = run_cli("no-port-here")
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr


def test_cli_refuses_a_pcap_path_that_cannot_be_a_directory_before_probing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for bad in (afile, afile / "sub"):
        proc = run_cli("--pcap", str(bad), "--check", "rst_exact")
        assert proc.returncode == 2, proc.stdout
        assert "--pcap" in proc.stderr and str(bad) in proc.stderr
        assert "rst_exact" not in proc.stdout and "probing" not in proc.stdout  # nothing ran


def test_cli_writes_each_checks_segments_into_the_pcap_dir_made_for_it(tmp_path):
    directory = tmp_path / "made" / "here"
    proc = run_cli("--pcap", str(directory), "--check", "rst_exact")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(directory) == ["rst_exact.pcap"]
    # our RST, then the follow-up probe, answered by the kernel's RST: the connection is gone
    assert [s.flags for s in fp.read_pcap(directory / "rst_exact.pcap")] == ["S", "SA", "A", "R", "A", "R"]


def test_time_wait_of_the_local_kernel_is_measured_on_the_wire_by_probes_of_many_connections(lab_report):
    check = next(c for c in lab_report.checks if c.name == "time_wait_duration")
    assert [o.source for o in check.observations] == ["wire", "wire", "wire"]
    probes = check.observations[1].text.split("; ")
    assert len(probes) == 6 and all(p.endswith("[A] ack=2 (alive)") for p in probes)  # 60 s: all within
    assert check.value.startswith("> ") and "--slow" in check.value        # a lower bound, said so
    assert sum(s.flags == "S" for s in check.trace) == 6


def test_probe_refuses_peer_arguments_that_do_not_go_together():
    with pytest.raises(ValueError, match="port"):
        fp.probe(stack=["./stack"])
    with pytest.raises(ValueError, match="host or stack"):
        fp.probe("192.0.2.1", 80, stack=["./stack"])
    with pytest.raises(ValueError, match="env"):
        fp.probe(env={"A": "1"})
    with pytest.raises(TypeError, match="stack"):
        fp.probe(stack=[1, 2], port=80)
    with pytest.raises(TypeError, match="ipv6"):
        fp.probe(ipv6="yes")


def test_comparison_peers_are_linux_host_port_or_a_recipe_name():
    from finprobe.probe import peer_arguments, stack_command
    assert peer_arguments("linux") == {}
    assert peer_arguments("192.0.2.1:80") == {"host": "192.0.2.1", "port": 80}
    assert peer_arguments("[2001:db8::1]:80") == {"host": "2001:db8::1", "port": 80}
    with pytest.raises(ValueError, match=r"no stack recipe 'nosuchstack': there are lwip, gvisor, slirp"):
        stack_command("nosuchstack")
    ran = []
    with pytest.raises(ValueError, match="nosuchstack"):  # every name checked before any probe
        fp.compare(["linux", "nosuchstack"], on_report=lambda *a: ran.append(a))
    assert ran == []


def test_cli_refuses_peer_options_that_do_not_go_together():
    for args, says in ((["--stack", "./stack"], "--port"), (["--html", "x.html"], "--compare"),
                       (["192.0.2.1:80", "--stack", "./stack", "--port", "80"], "not both"),
                       (["--compare", "linux", "nosuchstack"], "nosuchstack"),
                       (["--compare", "linux", "--stack", "./stack"], "--compare")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr)
        assert "probing" not in proc.stdout


def test_cli_compare_json_holds_the_table_and_the_reports(tmp_path):
    proc = run_cli("--compare", "linux", "--check", "rst_exact", "--json", "--html", str(tmp_path / "t.html"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["peers"] == ["linux"] and out["reports"][0]["counts"]["pass"] == 1
    assert out["table"] == [{"check": "rst_exact", "cells": [{"verdict": "pass", "value": "silence, then gone"}]}]
    assert "<td" in (tmp_path / "t.html").read_text()


def test_the_model_lists_what_the_profile_does_not_allow_in_a_probe():
    """Linux takes a SYN above RCV.NXT into TIME_WAIT as a new connection
    (SYN-ACK), where RFC 5961 §4.2 asks for a challenge ACK: a violation of rfc,
    none of linux."""
    by_profile = {name: fp.probe(checks=["syn_into_time_wait"], profile=name).checks[0]
                  for name in ("rfc", "linux")}
    said = [o.text for o in by_profile["rfc"].observations if o.source == "model"]
    assert len(said) == 1 and "syn@N+10^6" in said[0] and "RFC 5961 §4.2" in said[0], said
    assert "the peer sent [SA]" in said[0] and "an inference" in said[0]
    assert not [o for o in by_profile["linux"].observations if o.source == "model"]
    assert by_profile["rfc"].verdict == by_profile["linux"].verdict == "info"   # the verdict is the wire's
