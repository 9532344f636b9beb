"""The probe against user-space stacks (stack Labs of the recipes in
finprobe.stacks): every check runs, each verdict comes with its segments,
and a stack that a check kills is said to have died, from its process,
and started again for the next check. A stack with a control socket has
its own word on its states reported ("stack") beside the model's."""

import pytest

import finprobe as fp
from finprobe.probe import CHECKS, VERDICTS

from test_probe_remote import BACKED, by_name

PORT = 8080
MEASUREMENTS = {"syn_into_time_wait", "fin_wait_2_timeout", "time_wait_duration"}  # no right answer
STATES = {state.value for state in fp.State}


def said_by(check, source):
    return [seen.text for seen in check.observations if seen.source == source]


@pytest.fixture(scope="module")
def stack_reports():
    """One probe of each recipe, shared by the tests that read them."""
    return {name: fp.probe(stack=fp.stacks.command(name, PORT), port=PORT) for name in fp.stacks.RECIPES}


@pytest.mark.parametrize("name", fp.stacks.RECIPES)
def test_the_probe_runs_every_check_against_a_stack(stack_reports, name):
    report = stack_reports[name]
    assert len(report.checks) == 13
    for check in report.checks:
        assert check.verdict in VERDICTS and check.verdict != "skipped", (check.name, check.reason)
        assert check.trace is not None and len(check.trace), check.name
        sources = {seen.source for seen in check.observations}
        assert "wire" in sources and "socket" not in sources, (check.name, sources)


def test_a_stack_a_check_kills_is_said_dead_from_its_process_and_started_again():
    # The lwIP recipe with --exit-after 1 exits (status 3) on reading the
    # first request: passive_close's GET / kills it mid-connection.
    command = fp.stacks.command("lwip", PORT) + ["--exit-after", "1"]
    report = fp.probe(stack=command, port=PORT, checks=["passive_close", "rst_exact"])
    killed, after = report.checks
    assert killed.name == "passive_close" and killed.verdict == "fail"
    died = [seen.text for seen in killed.observations if seen.source == "process"]
    assert died and "the stack exited with status 3" in died[0], killed.observations
    assert after.name == "rst_exact" and after.verdict == "pass"      # on a stack started again
    assert not [seen for seen in after.observations if seen.source == "process"]


def test_stacks_compared_side_by_side():
    comparison = fp.compare(["lwip", "gvisor", "slirp"], checks=["rst_in_window"])
    table = comparison.table()
    header = table.splitlines()[0]
    assert all(name in header for name in ("lwip", "gvisor", "slirp"))
    row = next(line for line in table.splitlines() if line.startswith("rst_in_window"))
    assert row.count("PASS") == 1 and row.count("FAIL") == 2, table  # lwIP challenges, the others reset
    assert "<table" in comparison._repr_html_()


def test_a_stack_with_a_control_socket_has_its_own_states_reported_beside_the_model():
    report = fp.probe(stack=fp.stacks.command("gvisor", PORT, control=True), port=PORT,
                      checks=["active_close", "passive_close"])
    assert [check.name for check in report.checks] == ["active_close", "passive_close"]
    for check in report.checks:
        told = said_by(check, "stack")
        assert told and said_by(check, "model"), check.observations
        assert all(any(state in text for state in STATES) for text in told), told
        assert not said_by(check, "socket"), check.observations
        assert check.peer_states and set(check.peer_states) <= STATES, check.peer_states
    # gVisor's own word after our FIN is ACKed: its connection in TIME_WAIT
    assert said_by(report.checks[1], "stack")[-1].endswith("TIME_WAIT")


def test_a_stack_without_a_control_socket_has_no_stack_observations():
    report = fp.probe(stack=fp.stacks.command("slirp", PORT), port=PORT,
                      checks=["active_close", "passive_close"])
    for check in report.checks:
        assert not said_by(check, "stack") and not check.peer_states, check.observations
        assert said_by(check, "model"), check.observations


def test_the_comparison_carries_the_own_states_of_stacks_that_tell_them():
    comparison = fp.compare(["gvisor", "slirp"], checks=["active_close"])
    gvisor, slirp = comparison.reports
    assert said_by(gvisor.checks[0], "stack"), gvisor.checks[0].observations
    assert not said_by(slirp.checks[0], "stack"), slirp.checks[0].observations


@pytest.mark.parametrize("name", fp.stacks.RECIPES)
@pytest.mark.parametrize("check", [s.name for s in CHECKS])
def test_each_pass_and_measurement_against_a_stack_is_backed_by_its_trace(stack_reports, name, check):
    found = by_name(stack_reports[name])[check]
    if found.verdict != "pass" and check not in MEASUREMENTS:  # the segments a pass needs back a pass
        pytest.skip(f"{name}'s {check} is {found.verdict}: {found.value}")
    BACKED[check](found.trace, found)
