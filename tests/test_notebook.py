"""examples/four_way_close.ipynb runs from top to bottom in a Jupyter kernel
(this interpreter, finprobe from this tree) and shows its ladders as SVG."""

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_DIR = os.path.join(ROOT, "python")
NOTEBOOK = os.path.join(ROOT, "examples", "four_way_close.ipynb")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def kernel_python3(tmp_path, monkeypatch):
    """A kernelspec named "python3" that runs this interpreter (not whatever
    python3 comes first on PATH) with this tree's finprobe importable."""
    pythonpath = os.pathsep.join(p for p in (PYTHON_DIR, os.environ.get("PYTHONPATH", "")) if p)
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (finprobe tests)",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    return "python3"


def test_four_way_close_notebook_runs_and_draws_ladders(kernel_python3, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_python3, timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # CellExecutionError if any cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    svgs = [o.data["image/svg+xml"] for o in outputs if "image/svg+xml" in o.get("data", {})]
    assert len(svgs) == 3
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag == SVG + "svg"
        assert len([g for g in root.iter(SVG + "g") if "fp-seg" in g.get("class", "")]) >= 7
    words = ["\n".join("".join(t.itertext()) for t in ET.fromstring(svg).iter(SVG + "text")) for svg in svgs]
    # we close first: our states down our lane, the kernel's beside its own
    for state in ("FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSED"):
        assert state in words[0], state
    # the kernel closes first: it ends in TIME_WAIT, we in CLOSED
    assert "TIME_WAIT" in words[1] and "LAST_ACK" in words[1]
    # the lost ACK: the kernel's FIN again, marked, from LAST_ACK
    assert "(retransmission)" in words[2] and "LAST_ACK" in words[2]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 3 and all("<svg" in h for h in html)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "retransmitted after" in text and "us <--[FA] seq=1 ack=2 len=0--- peer" in text


MATRIX_NOTEBOOK = os.path.join(os.path.dirname(NOTEBOOK), "close_matrix.ipynb")


def test_close_matrix_notebook_runs_and_shows_the_rows_side_by_side(kernel_python3, tmp_path):
    nb = nbformat.read(MATRIX_NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_python3, timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [[o for o in c.outputs] for c in nb.cells if c.cell_type == "code"]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    one, both = (next(o.data["text/html"] for o in cell if "text/html" in o.get("data", {}))
                 for cell in outputs[:2])
    assert "TIME_WAIT" in one and "rst@N" in one
    assert "tcp_rfc1337=1" in both and "≠" in both          # the kernels differ on rst@N
    text = "".join(o.get("text", "") for o in outputs[2] if o.output_type == "stream")
    assert "TIME_WAIT x rst@N: fail" in text and "RFC 1337" in text
    assert "image/svg+xml" in outputs[3][0].data             # the cell's ladder


REPLAY_NOTEBOOK = os.path.join(os.path.dirname(NOTEBOOK), "replay.ipynb")


@pytest.mark.skipif(not os.path.exists("/usr/bin/tcpdump"), reason="needs tcpdump")
def test_replay_notebook_captures_replays_and_shows_the_two_ladders_side_by_side(kernel_python3, tmp_path):
    nb = nbformat.read(REPLAY_NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_python3, timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    cells = [c.outputs for c in nb.cells if c.cell_type == "code"]
    assert not [o for cell in cells for o in cell if o.output_type == "error"]
    text = ["".join(o.get("text", "") for o in cell if o.output_type == "stream") for cell in cells]
    # the capture: the whole exchange, the server's FIN first
    assert "[S] seq=0" in text[1] and "[FA]" in text[1] and "<--[A]" in text[1]
    assert "no differences" in text[2] and "differences: []" in text[2]
    assert text[3].startswith("rst: captured SA") and "meaning: " in text[3]
    html = next(o.data["text/html"] for o in cells[4] if "text/html" in o.get("data", {}))
    assert html.count("<svg") == 2 and "captured" in html and "live" in html and "rst" in html
    ladders = [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", html, re.S)]
    segs = [len([g for g in root.iter(SVG + "g") if "fp-seg" in g.get("class", "")]) for root in ladders]
    assert segs[0] == len(text[1].strip().splitlines()) - 1 and segs[1] == 2   # captured; SYN and RST
    assert "s.send('S', seq=0" in text[5] and "1 passed" in text[5]      # the generated test, green
