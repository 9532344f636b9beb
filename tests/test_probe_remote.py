"""The close-behaviour probe against peers whose socket finprobe does not hold:
nginx and ``python3 -m http.server`` in a namespace of their own, reached
through fp.Target (labtools.target_servers), and the comparison of such a
server with the local kernel.

Each check's verdict is checked against its trace: the segments that the
observations cite are found in it, and they say what the verdict says.

Needs root (namespaces, raw sockets, nftables) and nginx (nginx-light).
"""

import os
import re
import shutil
import subprocess

import pytest

import finprobe as fp
from finprobe.probe import CHECKS, LIFETIME_QUICK
from labtools import CLIENT6, PACKAGE_DIR, PORTS, PYTHON, SERVER4, SERVER6, inside, target_servers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, raw sockets, nftables"),
    pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"),
                       reason="needs nginx (Debian package nginx-light)"),
]

MOD = 2**32
MEASUREMENTS = {"syn_into_time_wait", "fin_wait_2_timeout", "time_wait_duration"}
RST_CHECKS = ("rst_exact", "rst_in_window", "rst_out_of_window", "close_with_unread_data")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with target_servers(tmp_path_factory.mktemp("servers")) as net:
        yield net


@pytest.fixture(scope="module")
def reports(net):
    """One probe of each server, run from the client namespace."""
    with inside(net.cli):
        return {server: fp.probe(SERVER4, port) for server, port in PORTS.items()}


def by_name(report):
    return {c.name: c for c in report.checks}


# ---- what runs --------------------------------------------------------------------

@pytest.mark.parametrize("server", list(PORTS))
def test_probe_of_a_remote_server_runs_at_least_ten_checks(reports, server):
    report = reports[server]
    assert report.target == f"{SERVER4}:{PORTS[server]}"
    assert [c.name for c in report.checks] == [s.name for s in CHECKS]
    ran = [c for c in report.checks if c.verdict != "skipped"]
    assert len(ran) >= 10, report.checks
    for check in ran:
        assert check.observations and check.value, check
        assert check.trace is not None and len(check.trace) >= 4, check
        assert check.trace[0].flags == "S" and check.trace[0].direction == "out"


@pytest.mark.parametrize("server", list(PORTS))
def test_a_linux_server_passes_every_check_with_a_right_answer(reports, server):
    for check in reports[server].checks:
        want = "info" if check.name in MEASUREMENTS else "pass"
        assert check.verdict == want, (check.name, check.observed)


@pytest.mark.parametrize("server", list(PORTS))
def test_nothing_of_the_servers_socket_is_claimed(reports, server):
    for check in reports[server].checks:
        assert not check.peer_states, check
        for seen in check.observations:
            assert seen.source in ("wire", "model"), (check.name, seen)
            if seen.source == "model":
                assert "an inference" in seen.text
    passive = by_name(reports[server])["passive_close"]
    assert "not checked: that the peer's socket is in TIME_WAIT" in passive.expected


# ---- each verdict backed by its trace -----------------------------------------------

def index_of(trace, test, start=0):
    """The index of the first segment from ``start`` on that passes ``test``."""
    return next(i for i in range(start, len(trace)) if test(trace[i]))


def ins(direction):
    return lambda s: s.direction == direction


def fin_seq(seg):
    return (seg.seq + len(seg.payload) + ("S" in seg.flags)) % MOD


def is_fin(direction):
    return lambda s: s.direction == direction and "F" in s.flags


def is_keepalive(seg):
    """Our follow-up probe: one byte, ACK only."""
    return seg.direction == "out" and seg.flags == "A" and len(seg.payload) == 1


def backed_active_close(trace, check):
    ours = index_of(trace, is_fin("out"))
    answer = trace[index_of(trace, ins("in"), ours + 1)]
    assert "A" in answer.flags and answer.ack == (trace[ours].seq + 1) % MOD
    assert check.value.startswith(f"[{answer.flags}]")


def backed_passive_close(trace, check):
    theirs = index_of(trace, is_fin("in"))
    acked = index_of(trace, lambda s: s.direction == "out" and s.flags == "A"
                     and s.ack == (fin_seq(trace[theirs]) + 1) % MOD, theirs + 1)
    ours = index_of(trace, is_fin("out"), acked + 1)
    answer = trace[index_of(trace, ins("in"), ours + 1)]
    assert answer.ack == (trace[ours].seq + 1) % MOD


def backed_fin_ack_skips_fin_wait_2(trace, check):
    theirs = index_of(trace, is_fin("in"))
    ours = index_of(trace, is_fin("out"), theirs + 1)
    # its FIN is ACKed first by the segment that carries ours (an ACK of its
    # data alone may come between, sent before its FIN was taken)
    assert trace[ours].flags == "FA" and trace[ours].ack == (fin_seq(trace[theirs]) + 1) % MOD
    assert all(s.ack != trace[ours].ack for s in trace[theirs + 1:ours] if s.direction == "out")
    answer = trace[index_of(trace, ins("in"), ours + 1)]
    assert answer.flags == "A" and answer.ack == (trace[ours].seq + 1) % MOD


def backed_last_ack_retransmits_fin(trace, check):
    ours = index_of(trace, is_fin("out"))
    first = index_of(trace, is_fin("in"), ours)
    again = [s for s in trace[first + 1:] if s.direction == "in" and "F" in s.flags and s.seq == trace[first].seq]
    gaps = [float(g) for g in re.findall(r"\d+\.\d+", check.value)]
    assert len(again) == len(gaps) >= 1
    stamps = [trace[first].ts] + [s.ts for s in again]
    assert [round(b - a, 2) for a, b in zip(stamps, stamps[1:])] == gaps
    final = index_of(trace, lambda s: s.direction == "out" and s.flags == "A"
                     and s.ack == (fin_seq(trace[first]) + 1) % MOD, first)
    probe = index_of(trace, is_keepalive, final + 1)
    assert "R" in trace[index_of(trace, ins("in"), probe + 1)].flags  # gone after our final ACK


def backed_time_wait_reacks_fin(trace, check):
    fins = [i for i, s in enumerate(trace) if s.direction == "out" and "F" in s.flags]
    assert len(fins) == 2 and trace[fins[0]].seq == trace[fins[1]].seq
    answers = [trace[index_of(trace, ins("in"), i + 1)] for i in fins]
    assert [a.flags for a in answers] == ["A", "A"]
    assert answers[0].ack == answers[1].ack == (trace[fins[0]].seq + 1) % MOD


def backed_simultaneous_close(trace, check):
    theirs = index_of(trace, is_fin("in"))
    ours = index_of(trace, is_fin("out"), theirs + 1)
    assert trace[ours].ack == fin_seq(trace[theirs])      # crossing: does not ACK its FIN
    answer = trace[index_of(trace, ins("in"), ours + 1)]
    assert "A" in answer.flags and answer.ack == (trace[ours].seq + 1) % MOD


def rst_and_follow_up(trace, direction="out"):
    """(the index of the RST, ours or the peer's, the peer's segments between it
    and the follow-up probe, the probe's answer)."""
    rst = index_of(trace, lambda s: s.direction == direction and "R" in s.flags)
    probe = index_of(trace, is_keepalive, rst + 1)
    between = [s for s in trace[rst + 1:probe] if s.direction == "in"]
    return rst, between, trace[index_of(trace, ins("in"), probe + 1)]


def backed_rst_exact(trace, check):
    _, between, answer = rst_and_follow_up(trace)
    assert not between and "R" in answer.flags
    assert check.observations[-1].text.endswith("the peer has no connection left")


def backed_rst_in_window(trace, check):
    rst, between, answer = rst_and_follow_up(trace)
    assert [s.flags for s in between] == ["A"] and between[0].ack == trace[rst].seq - 10
    assert answer.flags == "A"
    assert check.observations[-1].text.endswith("the connection is alive")


def backed_rst_out_of_window(trace, check):
    _, between, answer = rst_and_follow_up(trace)
    assert not between and answer.flags == "A"


def backed_close_with_unread_data(trace, check):
    theirs = index_of(trace, lambda s: s.direction == "in" and "R" in s.flags)
    pipelined = [s for s in trace[:theirs] if s.direction == "out" and len(s.payload) == 1000]
    assert len(pipelined) == 12
    probe = index_of(trace, is_keepalive, theirs + 1)
    assert "R" in trace[index_of(trace, ins("in"), probe + 1)].flags


def backed_syn_into_time_wait(trace, check):
    syns = [i for i, s in enumerate(trace) if s.direction == "out" and s.flags == "S"]
    assert len(syns) == 2 and trace[syns[0]].sport == trace[syns[1]].sport
    assert (trace[syns[1]].seq - trace[syns[0]].seq) % MOD > 100000
    answer = trace[index_of(trace, ins("in"), syns[1] + 1)]
    assert check.value == f"[{answer.flags}]"


def backed_lifetime(trace, check):
    """n connections, each probed once (its last segment of ours); each
    probe's answer as the observation says: a RST gone, else there."""
    n, _ = LIFETIME_QUICK
    conns = {}
    for seg in trace:
        conns.setdefault(seg.sport if seg.direction == "out" else seg.dport, []).append(seg)
    said = check.observations[1].text.split("; ")
    assert len(conns) == len(said) == n
    for segs, text in zip(conns.values(), said):
        probe = max(i for i, s in enumerate(segs) if s.direction == "out")
        if check.name == "fin_wait_2_timeout":
            assert is_keepalive(segs[probe])
        else:  # our FIN again
            assert "F" in segs[probe].flags and sum(s.direction == "out" and "F" in s.flags for s in segs) == 2
        answers = [s for s in segs[probe + 1:] if s.direction == "in"]
        there = not answers or "R" not in answers[0].flags
        assert text.endswith("(alive)" if there else "(gone)"), text


BACKED = {name[len("backed_"):]: f for name, f in globals().items() if name.startswith("backed_")}
BACKED["fin_wait_2_timeout"] = BACKED["time_wait_duration"] = BACKED.pop("lifetime")


@pytest.mark.parametrize("server", list(PORTS))
@pytest.mark.parametrize("name", [s.name for s in CHECKS])
def test_each_verdict_is_backed_by_the_segments_of_its_trace(reports, server, name):
    check = by_name(reports[server])[name]
    assert check.verdict != "skipped", check.reason
    BACKED[name](check.trace, check)


@pytest.mark.parametrize("server", list(PORTS))
def test_each_rst_check_ends_with_a_follow_up_probe_and_its_answer(reports, server):
    for name in RST_CHECKS:
        check = by_name(reports[server])[name]
        _, _, answer = rst_and_follow_up(check.trace, "in" if name == "close_with_unread_data" else "out")
        told = "gone" if "R" in answer.flags else "alive"
        assert check.value.endswith(told) or name == "close_with_unread_data", (name, check.value)
        last = [o for o in check.observations if o.source != "model"][-1]   # the model's violations follow
        assert last.source == "wire" and last.text.startswith("a follow-up keepalive probe"), last


# ---- the comparison --------------------------------------------------------------

def test_comparison_of_two_reports_is_one_table_and_html(reports):
    both = fp.Comparison(list(PORTS), [reports[s] for s in PORTS])
    lines = both.table().splitlines()
    assert lines[0].split() == ["check", *PORTS]
    assert [line.split()[0] for line in lines[2:]] == [s.name for s in CHECKS]
    row = next(line for line in lines if line.startswith("rst_in_window"))
    assert row.count("PASS [A] ack=1, then alive") == 2
    page = both._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") == len(CHECKS) + 1
    assert all(f"<th style=\"text-align:left;padding:2px 8px\">{s}</th>" in page for s in PORTS)


def test_cli_compares_linux_with_a_remote_nginx(net, tmp_path):
    page = tmp_path / "table.html"
    checks = ["active_close", "rst_in_window", "close_with_unread_data"]
    proc = subprocess.run(
        ["ip", "netns", "exec", net.cli, PYTHON, "-m", "finprobe", "probe", "--compare", "linux",
         f"{SERVER4}:{PORTS['nginx']}", "--html", str(page), *[a for c in checks for a in ("--check", c)]],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": PACKAGE_DIR})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["check", "linux", f"{SERVER4}:{PORTS['nginx']}"]
    rows = {line.split()[0]: line for line in lines[2:2 + len(checks)]}
    assert list(rows) == checks
    assert rows["rst_in_window"].count("PASS [A] ack=1, then alive") == 2
    assert rows["active_close"].split()[1:3] == ["PASS", "[A]"]   # the kernel's ACK; nginx closes at once
    html = page.read_text()
    assert html.count("<tr>") == len(checks) + 1 and "linux" in html and f"{SERVER4}:{PORTS['nginx']}" in html
    assert "linux: <Report" in proc.stderr and f"{SERVER4}:{PORTS['nginx']}: <Report" in proc.stderr


def test_probe_of_a_remote_server_over_ipv6(net):
    names = ["passive_close", "rst_in_window", "close_with_unread_data"]
    with inside(net.cli):
        report = fp.probe(SERVER6, PORTS["nginx"], checks=names)
    assert report.target == f"[{SERVER6}]:{PORTS['nginx']}"
    assert [(c.name, c.verdict) for c in report.checks] == [(n, "pass") for n in names]
    assert all(s.src in (SERVER6, CLIENT6) for c in report.checks for s in c.trace)
