"""The probe against user-space stacks (stack Labs of the recipes in
finprobe.stacks): every check runs, each verdict comes with its segments,
and a stack that a check kills is said to have died, from its process,
and started again for the next check."""

import pytest

import finprobe as fp
from finprobe.probe import VERDICTS

PORT = 8080


@pytest.mark.parametrize("name", fp.stacks.RECIPES)
def test_the_probe_runs_every_check_against_a_stack(name):
    report = fp.probe(stack=fp.stacks.command(name, PORT), port=PORT)
    assert len(report.checks) == 13
    for check in report.checks:
        assert check.verdict in VERDICTS and check.verdict != "skipped", (check.name, check.reason)
        assert check.trace is not None and len(check.trace), check.name
        sources = {seen.source for seen in check.observations}
        assert "wire" in sources and "socket" not in sources, (check.name, sources)


def test_a_stack_a_check_kills_is_said_dead_from_its_process_and_started_again():
    # lwIP 2.1.3 (Debian's) aborts, "malloc(): corrupted top size", when a
    # connection closes with 12 kB of ours unread
    report = fp.probe(stack=fp.stacks.command("lwip", PORT), port=PORT,
                      checks=["close_with_unread_data", "syn_into_time_wait"])
    unread, syn = report.checks
    assert unread.name == "close_with_unread_data" and unread.verdict == "fail"
    died = [seen.text for seen in unread.observations if seen.source == "process"]
    assert died and "the stack exited with status" in died[0], unread.observations
    assert syn.name == "syn_into_time_wait" and syn.verdict in ("pass", "info")
    assert not [seen for seen in syn.observations if seen.source == "process"]


def test_stacks_compared_side_by_side():
    comparison = fp.compare(["lwip", "gvisor", "slirp"], checks=["rst_in_window"])
    table = comparison.table()
    header = table.splitlines()[0]
    assert all(name in header for name in ("lwip", "gvisor", "slirp"))
    row = next(line for line in table.splitlines() if line.startswith("rst_in_window"))
    assert row.count("PASS") == 1 and row.count("FAIL") == 2, table  # lwIP challenges, the others reset
    assert "<table" in comparison._repr_html_()
