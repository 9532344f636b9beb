"""Several peers' state x event matrices side by side (finprobe.compare_view):
the text table, the HTML and the SVG each show every peer and every cell,
coloured by its verdict, with the rows where the peers disagree marked; a
peer that cannot run has its error in its column. Real runs: the Lab's
kernel (default and tcp_rfc1337=1, which differ in TIME_WAIT) and a stack
recipe."""

import html.parser
import json
import xml.etree.ElementTree as ET

import pytest

import finprobe as fp
from finprobe import _core, profile
from finprobe.compare_view import COLOURS, MatrixComparison, compare_matrices
from finprobe.matrix import Matrix, matrix

SVG = "{http://www.w3.org/2000/svg}"
RFC1337 = {"net.ipv4.tcp_rfc1337": 1}


@pytest.fixture(scope="module")
def kernels():
    """The whole IPv4 matrix of the Lab's kernel, by default and with
    tcp_rfc1337=1 (a RST in TIME_WAIT ignored, RFC 1337 §3's fix)."""
    return matrix(), matrix(sysctls=RFC1337)


def flags_of(cell):
    return cell.answer.flags if cell.answer is not None else "-"


def row_lines(table):
    """{(state, event): line} of a comparison's text table."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    rows, state = {}, None
    for line in lines[start:]:
        if not line:
            break
        if not line.startswith(" "):
            state = line
            continue
        event = line[4:].split()[0]
        rows[(state, event)] = line
    return rows


def test_the_table_names_every_peer_and_shows_every_cell(kernels):
    default, rfc1337 = kernels
    table = MatrixComparison([default, rfc1337]).table()
    header = table.splitlines()[1]
    assert "linux" in header and "linux tcp_rfc1337=1" in header, header
    rows = row_lines(table)
    assert set(rows) == {(c.state, c.event) for c in default.cells}
    for cell in default.cells:
        other = rfc1337.cell(cell.state, cell.event)
        line = rows[(cell.state, cell.event)]
        shown = [f"{c.verdict if c.verdict != 'fail' else 'FAIL'} {flags_of(c)} {c.state_after}"
                 for c in (cell, other)]
        assert line.find(shown[0]) >= 0 and line.find(shown[1], line.find(shown[0]) + 1) > 0, (shown, line)
    assert max(len(line) for line in table.splitlines()) <= 160


def test_rows_where_the_peers_disagree_are_marked_and_only_those(kernels):
    default, rfc1337 = kernels
    comparison = MatrixComparison([default, rfc1337])
    rows = row_lines(comparison.table())
    differ = set()
    for cell in default.cells:
        other = rfc1337.cell(cell.state, cell.event)
        if (flags_of(cell), cell.state_after) != (flags_of(other), other.state_after):
            differ.add((cell.state, cell.event))
    # RFC 1337's fix keeps TIME_WAIT against a RST; by default Linux ends it
    assert default.cell("TIME_WAIT", "rst@N").state_after == "CLOSED"
    assert rfc1337.cell("TIME_WAIT", "rst@N").state_after == "TIME_WAIT"
    assert ("TIME_WAIT", "rst@N") in differ
    assert {pair for pair, line in rows.items() if line[2] == "≠"} == differ
    assert set(comparison.disagreements()) == differ


def test_a_cell_that_differs_from_most_peers_is_starred(kernels):
    default, rfc1337 = kernels
    comparison = MatrixComparison([default, default, rfc1337])
    assert comparison.peers == ["linux", "linux#2", "linux tcp_rfc1337=1"]
    line = row_lines(comparison.table())[("TIME_WAIT", "rst@N")]
    assert line.count("*") == 1 and line.rstrip().endswith("TIME_WAIT *"), line
    row = next(r for r in comparison.rows() if (r.state, r.event) == ("TIME_WAIT", "rst@N"))
    assert [e.odd for e in row.entries] == [False, False, True]


class Cells(html.parser.HTMLParser):
    """The peers' cells of a comparison's HTML: (state, event, attributes)."""

    def __init__(self):
        super().__init__()
        self.row, self.cells, self.open = {}, [], []

    VOID = {"meta", "br", "hr", "img", "link", "input"}      # HTML's elements without an end tag

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.open.append(tag)
        if tag == "tr":
            self.row = attrs
        if tag == "td" and "data-peer" in attrs:
            self.cells.append((self.row.get("data-state"), self.row.get("data-event"), attrs))

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open[-3:], tag)
        self.open.pop()


def parse_html(text):
    parser = Cells()
    parser.feed(text)
    parser.close()
    assert not parser.open, parser.open
    return parser.cells


def test_the_html_parses_and_colours_each_cell_by_its_verdict(kernels, tmp_path):
    default, rfc1337 = kernels
    comparison = MatrixComparison([default, rfc1337])
    cells = parse_html(comparison._repr_html_())
    assert len(cells) == 2 * len(default.cells)
    by_peer = {"linux": default, "linux tcp_rfc1337=1": rfc1337}
    for state, event, attrs in cells:
        cell = by_peer[attrs["data-peer"]].cell(state, event)
        assert attrs["data-verdict"] == cell.verdict
        assert f"background:{COLOURS[cell.verdict]}" in attrs["style"]
        assert "expects" in attrs["title"] or "no expectation" in attrs["title"], attrs["title"]
        assert f"seen: [{flags_of(cell)}]" in attrs["title"] or cell.answer is None
    page = tmp_path / "matrix.html"
    comparison.to_html(page)
    assert len(parse_html(page.read_text())) == 2 * len(default.cells)


def test_one_matrix_renders_as_html_through_html_table(kernels):
    default, _ = kernels
    cells = parse_html(default._repr_html_())
    assert len(cells) == len(default.cells)
    assert {attrs["data-peer"] for _, _, attrs in cells} == {"linux"}


def boxes(svg_text):
    """{(state, event): [(peer, verdict, fill)]} of a comparison's SVG."""
    root = ET.fromstring(svg_text)
    found = {}
    for group in root.iter(f"{SVG}g"):
        key = (group.get("data-state"), group.get("data-event"))
        found[key] = [(r.get("data-peer"), r.get("data-verdict"), r.get("fill"))
                      for r in group.iter(f"{SVG}rect") if r.get("data-peer") is not None]
    return root, found


def test_the_svg_parses_and_has_one_box_a_peer_a_cell(kernels, tmp_path):
    default, rfc1337 = kernels
    comparison = MatrixComparison([default, rfc1337])
    root, found = boxes(comparison.svg())
    assert set(found) == {(c.state, c.event) for c in default.cells}
    for (state, event), shown in found.items():
        assert [peer for peer, _, _ in shown] == ["linux", "linux tcp_rfc1337=1"]
        for (_, verdict, fill), m in zip(shown, (default, rfc1337)):
            assert verdict == m.cell(state, event).verdict and fill == COLOURS[verdict]
    assert int(root.get("width")) <= 1024            # a README's width
    marked = {(g.get("data-state"), g.get("data-event")) for g in root.iter(f"{SVG}g")
              if any(r.get("data-disagree") for r in g.iter(f"{SVG}rect"))}
    assert marked == set(comparison.disagreements()) and ("TIME_WAIT", "rst@N") in marked
    path = tmp_path / "matrix.svg"
    comparison.to_svg(path)
    ET.parse(path)


def test_the_svg_escapes_the_names_it_shows(kernels):
    default, rfc1337 = kernels
    names = ['<linux & "co">', "tw'1337"]
    root, found = boxes(MatrixComparison([default, rfc1337], names=names).svg())
    assert all([peer for peer, _, _ in shown] == names for shown in found.values())
    assert any(names[0] in (t.text or "") for t in root.iter(f"{SVG}text"))


def test_a_peer_that_cannot_run_shows_its_error_in_its_column(monkeypatch, tmp_path):
    monkeypatch.setenv("FINPROBE_STACKS", str(tmp_path))      # no recipe built there
    ended = []
    comparison = compare_matrices(["linux", "lwip"], states=["TIME_WAIT"], events=["rst@N", "syn@N"],
                                  on_matrix=lambda peer, result: ended.append((peer, result)))
    assert [peer for peer, _ in ended] == ["linux", "lwip"]
    linux, lwip = comparison.matrices
    assert isinstance(linux, Matrix) and len(linux.cells) == 2
    assert isinstance(lwip, _core.Error) and "not built" in str(lwip)
    table = comparison.table()
    for line in row_lines(table).values():
        assert line.rstrip().endswith("ERR"), line
    assert f"lwip: could not run: {str(lwip).splitlines()[0]}" in table
    cells = parse_html(comparison._repr_html_())
    assert [attrs["data-verdict"] for _, _, attrs in cells if attrs["data-peer"] == "lwip"] == ["error"] * 2
    assert all("not built" in attrs["title"] for _, _, attrs in cells if attrs["data-peer"] == "lwip")
    _, found = boxes(comparison.svg())
    assert all(shown[1][:2] == ("lwip", "error") for shown in found.values())
    assert json.loads(json.dumps(comparison.as_dict()))["counts"]["lwip"] == {"error": str(lwip).splitlines()[0]}


def test_peer_names_are_checked_before_any_run():
    with pytest.raises(ValueError, match="nosuchstack"):
        compare_matrices(["linux", "nosuchstack"], on_matrix=pytest.fail)
    with pytest.raises(TypeError, match="peers"):
        compare_matrices("linux")


def test_fp_compare_of_matrices_returns_a_matrix_comparison(kernels):
    default, rfc1337 = kernels
    comparison = fp.compare([default, rfc1337])
    assert isinstance(comparison, MatrixComparison)
    assert comparison.peers == ["linux", "linux tcp_rfc1337=1"]
    assert comparison.matrices == [default, rfc1337]
    with pytest.raises(TypeError, match="must be a str"):
        fp.compare(["linux", default])


def test_matrices_of_different_profiles_need_the_one_to_colour_by(kernels):
    default, _ = kernels
    by_linux = matrix(states=["TIME_WAIT"], events=["rst@N", "syn@N"], profile="linux")
    with pytest.raises(ValueError, match="profile"):
        MatrixComparison([default, by_linux])
    comparison = MatrixComparison([default, by_linux], profile="rfc")
    judge = profile.load("rfc").judge
    for row in comparison.rows():
        cell = row.entries[1].cell
        if cell is not None:
            assert row.entries[1].verdict == judge(cell)[0]
            assert row.expected == cell.expected["rfc"] or row.expected == default.cell(
                row.state, row.event).expected["rfc"]


def test_linux_beside_lwip_shows_each_peers_own_states():
    comparison = compare_matrices(["linux", "lwip"], states=["ESTABLISHED", "TIME_WAIT"])
    linux, lwip = comparison.matrices
    assert isinstance(linux, Matrix) and isinstance(lwip, Matrix), comparison.matrices
    assert comparison.peers == ["linux", "lwip"]
    rows = row_lines(comparison.table())
    assert set(rows) == {(c.state, c.event) for c in linux.cells} == {(c.state, c.event) for c in lwip.cells}
    driven = [c for c in lwip.cells if c.verdict != "skipped"]
    assert len(driven) >= len(lwip.cells) - 2, [(c.name, c.reason) for c in lwip.cells]
    for cell in driven:
        assert cell.state_source == "stack" and cell.state_after, cell   # its control socket's word
        line = rows[(cell.state, cell.event)]
        assert line.rstrip().endswith(f"{flags_of(cell)} {cell.state_after}") or line.rstrip().endswith(
            f"{flags_of(cell)} {cell.state_after} *"), line
    json.dumps(comparison.as_dict())


def test_stacks_compared_over_ipv6_run_over_ipv6():
    comparison = compare_matrices(["lwip"], ipv6=True, states=["ESTABLISHED"], events=["rst@N-1", "data@N"])
    (lwip,) = comparison.matrices
    assert isinstance(lwip, Matrix) and lwip.family == "ipv6"
    assert comparison.peers == ["lwip"]
    assert [c.verdict for c in lwip.cells if c.verdict == "skipped"] == [], [c.reason for c in lwip.cells]
    assert all(c.alive for c in lwip.cells), lwip.cells
