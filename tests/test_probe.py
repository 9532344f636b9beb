"""The close-behaviour probe against the local kernel, through the API and the CLI."""

import json
import os
import subprocess

import pytest

import finprobe as fp

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def test_probe_of_the_local_kernel_passes_every_rfc_check():
    report = fp.probe()
    names = [c.name for c in report.checks]
    assert names[:3] == ["active_close", "passive_close", "fin_ack_skips_fin_wait_2"]
    assert len(names) == len(set(names)) >= 10
    for check in report.checks:
        assert check.reference.startswith("RFC"), check
        assert check.verdict in ("pass", "info"), (check.name, check.observed)
        assert check.observed
        assert check.trace is not None and len(check.trace) >= 3
        assert check.trace[0].flags == "S"
    by_name = {c.name: c for c in report.checks}
    assert "CLOSING" in by_name["simultaneous_close"].observed
    assert by_name["syn_into_time_wait"].observed.startswith("[SA]")


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
    assert "peer states seen: CLOSE_WAIT" in proc.stdout


def test_cli_json_report():
    proc = run_cli("--json", "--check", "rst_in_window")
    report = json.loads(proc.stdout)
    (check,) = report["checks"]
    assert check["name"] == "rst_in_window" and check["verdict"] == "pass"
    assert [s["flags"] for s in check["segments"]] == ["S", "SA", "A", "R", "A"]


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
    assert [s.flags for s in fp.read_pcap(directory / "rst_exact.pcap")] == ["S", "SA", "A", "R"]
