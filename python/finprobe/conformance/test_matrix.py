"""One test a cell of the state x event matrix (see finprobe.conformance)."""

import pytest

from finprobe import events

CELLS = [f"{state}-{event}" for state, event in events.cells()]


@pytest.mark.parametrize("cell", CELLS, ids=CELLS)
def test_cell(finprobe_matrix, cell):
    state, event = cell.split("-", 1)   # no state name holds a "-"
    result = finprobe_matrix.cell(state, event)
    if result.verdict == "skipped":
        pytest.skip(result.reason)
    if result.verdict == "info":
        pytest.skip(f"the profile {finprobe_matrix.profile} states no expectation for {state} x {event}")
    assert result.verdict == "pass", f"against {finprobe_matrix.peer}:\n{result.explain(finprobe_matrix.profile)}"
