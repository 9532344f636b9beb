"""fp.matrix against each user-space stack recipe in a stack Lab: every
row driven with HTTP alone (GET /, /shut, /hold; our FIN first), at most a
handful of cells skipped, each fact from where it can be had."""

import functools

import pytest

import finprobe as fp
from finprobe import events

from labtools import recipe_params

PORT = 8080
HANDFUL = 5


TELLING = sorted(fp.stacks.TELLS_STATE)
SILENT = [name for name in fp.stacks.RECIPES if name not in fp.stacks.TELLS_STATE]


@functools.lru_cache(maxsize=None)
def matrix_of(name, ipv6):
    """One matrix a recipe and family for the module's tests (about 1-2 s each)."""
    command = fp.stacks.command(name, PORT, ipv6=ipv6, control=name in fp.stacks.TELLS_STATE)
    return fp.matrix(stack=command, port=PORT, ipv6=ipv6)


def setup_module():
    matrix_of.cache_clear()


def teardown_module():
    matrix_of.cache_clear()                    # the traces go with the module


@pytest.fixture
def recipe_matrix(request):
    name, ipv6 = request.param
    return name, matrix_of(name, ipv6)


@pytest.mark.parametrize("recipe_matrix", recipe_params(fp.stacks.RECIPES), indirect=True)
def test_the_matrix_of_a_recipe_skips_at_most_a_handful_of_cells(recipe_matrix):
    name, m = recipe_matrix
    assert m.name == name and [(c.state, c.event) for c in m.cells] == events.cells()
    skipped = [f"{c.name}: {c.reason}" for c in m.cells if c.verdict == "skipped"]
    assert len(skipped) <= HANDFUL, "\n".join(skipped)
    for c in m.cells:
        assert c.verdict in ("pass", "fail", "skipped") and (c.verdict != "fail" or c.mismatches), c


@pytest.mark.parametrize("recipe_matrix", recipe_params(TELLING), indirect=True)
def test_a_telling_recipe_is_driven_into_each_state_by_its_own_word(recipe_matrix):
    """lwIP and gVisor say their connections' states: each cell's state was
    read before the event and after it, and alive follows from it."""
    name, m = recipe_matrix
    for c in m.cells:
        if c.verdict == "skipped":
            continue
        assert c.state_source == "stack" and c.alive_source == "stack", c
        assert c.state_before == c.state.split("/")[0], c.explain()
        assert c.alive == (c.state_after not in ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED")), c


@pytest.mark.parametrize("recipe_matrix", recipe_params(SILENT), indirect=True)
def test_a_recipe_without_a_control_socket_is_told_alive_by_the_wire(recipe_matrix):
    name, m = recipe_matrix
    told = [c for c in m.cells if c.verdict != "skipped"]
    for c in told:
        assert c.state_source is None and c.state_after is None and c.state_before is None, c
        assert c.alive_source in ("wire", None), c
        if c.alive_source == "wire" and c.follow_up is not None:
            assert c.alive == ("R" not in c.follow_up.flags), c.explain()
    assert sum(c.alive_source == "wire" for c in told) >= len(told) - HANDFUL


@pytest.mark.parametrize("recipe_matrix", recipe_params(fp.stacks.RECIPES), indirect=True)
def test_the_rows_a_held_socket_makes_are_reached_through_the_recipes_paths(recipe_matrix):
    """CLOSE_WAIT after GET /hold and our FIN; FIN_WAIT_2/shut after GET /shut:
    the request is in each cell's trace, and the peer sent no FIN after ours
    in CLOSE_WAIT before the event."""
    name, m = recipe_matrix
    for c in m.cells:
        if c.state not in ("CLOSE_WAIT", "FIN_WAIT_2/shut") or c.verdict == "skipped":
            continue
        path = b"/hold" if c.state == "CLOSE_WAIT" else b"/shut"
        assert any(s.direction == "out" and s.payload.startswith(b"GET " + path) for s in c.trace), c.name
        if c.state == "CLOSE_WAIT":
            assert not any(s.direction == "in" and "F" in s.flags and s.ts < c.sent.ts for s in c.trace), \
                c.explain()
