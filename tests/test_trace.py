"""Traces for people: pcap files that tcpdump, tshark and Wireshark read (and
captures of theirs that finprobe reads), the Lab-wide capture, and the ladder
diagrams (text, SVG, HTML)."""

import contextlib
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import finprobe as fp

SVG = "{http://www.w3.org/2000/svg}"
FLAG_BITS = {c: 1 << i for i, c in enumerate("FSRPAUEC")}

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
needs_tcpdump = pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump is not installed")


def exchange(lab, port=8080):
    """Handshake, data both ways, a close from each side, and one segment of
    ours with a checksum forced wrong. Returns our Connection."""
    srv = lab.listen(port)
    conn = lab.connect(port)
    peer, _ = srv.accept()
    conn.write(b"hello")
    conn.expect("A")
    assert peer.recv(100) == b"hello"
    peer.sendall(b"world!")
    conn.expect("PA", payload=b"world!")
    conn.ack()
    conn.fin()
    conn.expect("A")
    peer.close()
    conn.expect("FA")
    conn.ack()
    conn.send(b"x", flags="PA", seq=conn.snd_nxt - 1, checksum=0x1234)  # a bad one, kept bad
    return conn


def flag_bits(letters):
    return sum(FLAG_BITS[c] for c in letters)


def tshark_fields(path, *fields):
    args = ["tshark", "-r", str(path), "-T", "fields", "-o", "tcp.check_checksum:TRUE"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines()]


# ---- pcap files: written ------------------------------------------------------------


@needs_tshark
@pytest.mark.parametrize("lab", [{"ipv6": False}, {"ipv6": True}], indirect=True, ids=["ipv4", "ipv6"])
def test_tshark_reads_our_pcap_as_the_same_segments(lab, tmp_path):
    conn = exchange(lab)
    trace = conn.trace
    trace.to_pcap(tmp_path / "conn.pcap")
    rows = tshark_fields(tmp_path / "conn.pcap", "tcp.srcport", "tcp.seq_raw", "tcp.ack_raw",
                         "tcp.flags", "tcp.len", "tcp.checksum.status", "ip.src", "ipv6.src")
    assert len(rows) == len(trace) == 12
    for seg, (sport, seq, ack, flags, length, status, src4, src6) in zip(trace, rows):
        assert (int(sport), int(seq), int(ack), int(flags, 16), int(length)) == \
            (seg.sport, seg.seq, seg.ack, flag_bits(seg.flags), len(seg.payload))
        assert (src6 if lab.ipv6 else src4) == seg.src
        forced = seg.checksum == 0x1234 and seg.direction == "out" and seg.payload == b"x"
        assert status == ("0" if forced else "1"), f"checksum status of {seg!r}"


@needs_tshark
def test_pcap_is_stamped_in_wall_clock_time(lab, tmp_path):
    conn = exchange(lab)
    offset = time.time() - time.monotonic()
    conn.trace.to_pcap(tmp_path / "conn.pcap")
    stamps = [float(r[0]) for r in tshark_fields(tmp_path / "conn.pcap", "frame.time_epoch")]
    for seg, stamp in zip(conn.trace, stamps):
        assert abs(stamp - (seg.ts + offset)) < 0.005
    # the gaps between segments are kept (to tshark's float printing)
    first = conn.trace[0].ts
    for seg, stamp in zip(conn.trace, stamps):
        assert abs((stamp - stamps[0]) - (seg.ts - first)) < 2e-6
    # exactly, to the nanosecond
    ns = fp.read_pcap(tmp_path / "conn.pcap")._stamps
    assert [n - ns[0] for n in ns] == [round(s.ts * 1e9) - round(first * 1e9) for s in conn.trace]


def test_our_pcap_reads_back_byte_for_byte(lab, tmp_path):
    conn = exchange(lab)
    trace = conn.trace
    trace.to_pcap(tmp_path / "conn.pcap")
    again = fp.read_pcap(tmp_path / "conn.pcap")
    assert len(again) == len(trace) and again.skipped == 0
    assert again._packets == trace._packets
    assert [bytes(s) if s.checksum_ok else None for s in again] == \
        [bytes(s) if s.checksum_ok else None for s in trace]
    assert [s.checksum_ok for s in again] == [True] * 11 + [False]
    assert all(s.direction is None for s in again)
    # written again (wall-clock stamps stay as they are), read again: the same file
    again.to_pcap(tmp_path / "again.pcap")
    assert (tmp_path / "again.pcap").read_bytes() == (tmp_path / "conn.pcap").read_bytes()
    # relative numbers and sides come out the same without directions
    keys = ("direction", "flags", "seq", "ack", "len")
    assert [{k: r[k] for k in keys} for r in again.relative()] == \
        [{k: r[k] for k in keys} for r in trace.relative()]


def test_trace_of_plain_segments_writes_them_rebuilt(tmp_path):
    segs = [fp.Segment("192.0.2.2", "192.0.2.1", 1000, 80, 1, 0, "S"),
            fp.Segment("192.0.2.2", "192.0.2.1", 1000, 80, 2, 5, "A", checksum=0xbeef)]
    fp.Trace(segs).to_pcap(tmp_path / "plain.pcap")
    back = fp.read_pcap(tmp_path / "plain.pcap")
    assert [(s.seq, s.flags, s.checksum_ok) for s in back] == [(1, "S", True), (2, "A", False)]
    assert back[1].checksum == 0xbeef


def test_to_pcap_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        fp.Trace().to_pcap(tmp_path / "no-such-dir" / "x.pcap")


# ---- pcap files: read -----------------------------------------------------------------


@contextlib.contextmanager
def tcpdump(lab, path, *args):
    """tcpdump writing to path inside the lab, from ready to stopped; yields the
    link type it announced."""
    proc = lab.popen(["tcpdump", "-Z", "root", "-U", "--immediate-mode", "-n", "-w", str(path), *args, "tcp"],
                     stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "listening on" not in line:
            line = proc.stderr.readline()
            assert line, f"tcpdump ended before it listened: exit {proc.wait()}"
        yield re.search(r"link-type (\S+)", line).group(1)
        time.sleep(0.05)  # the last segments through the capture ring
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@needs_tcpdump
@pytest.mark.parametrize("args,linktype", [
    (("-i", "any"), "LINUX_SLL2"),
    (("-i", "any", "-y", "LINUX_SLL"), "LINUX_SLL"),
    (("-i", "lab0"), "EN10MB"),
], ids=["any-sll2", "any-sll", "lab0-ethernet"])
def test_read_pcap_of_a_tcpdump_capture(lab, tmp_path, args, linktype):
    path = tmp_path / "td.pcap"
    with tcpdump(lab, path, *args) as announced:
        conn = exchange(lab)
    assert announced == linktype
    got = fp.read_pcap(path)
    ours = conn.trace
    fields = lambda s: (s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags, s.window, s.payload)
    assert [fields(s) for s in got] == [fields(s) for s in ours]
    # the file's stamps are wall-clock; the gaps are the same within capture jitter
    assert got.wall_clock and abs((got[-1].ts - got[0].ts) - (ours[-1].ts - ours[0].ts)) < 0.01
    assert [s.checksum_ok for s in got] == [True] * 11 + [False]


@needs_tshark
def test_read_pcapng(lab, tmp_path):
    conn = exchange(lab)
    conn.trace.to_pcap(tmp_path / "conn.pcap")
    subprocess.run(["tshark", "-r", str(tmp_path / "conn.pcap"), "-F", "pcapng", "-w", str(tmp_path / "conn.pcapng")],
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "conn.pcapng").read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    got = fp.read_pcap(tmp_path / "conn.pcapng")
    assert got._packets == conn.trace._packets
    assert [round(s.ts, 6) for s in got] == [round(s.ts, 6) for s in fp.read_pcap(tmp_path / "conn.pcap")]


def test_read_pcap_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fp.read_pcap(tmp_path / "missing.pcap")
    (tmp_path / "junk.pcap").write_bytes(b"GET / HTTP/1.1\r\n" * 4)
    with pytest.raises(fp.ParseError, match="not a pcap"):
        fp.read_pcap(tmp_path / "junk.pcap")
    with pytest.raises(TypeError):
        fp.read_pcap(42)


# ---- the Lab's capture ------------------------------------------------------------------


@pytest.mark.parametrize("lab", [{"capture": True}], indirect=True)
def test_lab_capture_holds_every_segment_claimed_or_not(lab):
    conn = exchange(lab)
    # a kernel socket's SYN to a port finprobe does not listen on: nobody claims it
    stray = lab.socket()
    stray.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        stray.connect((lab.local_addr, 4242))
    deadline = time.monotonic() + 2
    while not any(s.dport == 4242 for s in lab.capture()) and time.monotonic() < deadline:
        time.sleep(0.01)
    capture = lab.capture()
    assert isinstance(capture, fp.Trace)
    mine = [s for s in capture if s.dport == 4242]
    assert mine and mine[0].flags == "S" and mine[0].direction == "in"
    ours = [(s.seq, s.ack, s.flags, s.direction) for s in conn.trace]
    assert [(s.seq, s.ack, s.flags, s.direction) for s in capture if 8080 in (s.sport, s.dport)] == ours
    # one Trace of two connections: relative numbers per connection, ports on the ladder
    rows = capture.relative()
    assert rows[0]["seq"] == 0 and next(r for r in rows if r["segment"].dport == 4242)["seq"] == 0
    assert "4242" in capture.ladder_text() and "4242" in capture.svg()


def test_lab_capture_after_close_raises(tmp_path):
    lab = fp.Lab()
    lab.close()
    with pytest.raises(fp.Error, match="closed"):
        lab.capture()


# ---- ladders ------------------------------------------------------------------------------


def svg_tree(trace):
    root = ET.fromstring(trace._repr_svg_())  # well-formed XML, or this raises
    assert root.tag == SVG + "svg"
    return root


def arrows(root):
    return [g for g in root.iter(SVG + "g") if "fp-seg" in g.get("class", "")]


def texts(root):
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def test_svg_has_one_arrow_a_segment_and_our_states(lab):
    conn = exchange(lab)
    trace = conn.trace
    root = svg_tree(trace)
    segs = arrows(root)
    assert len(segs) == len(trace)
    assert all(len(list(g.iter(SVG + "line"))) == 1 for g in segs)
    # our lane on the left: out arrows start there, in arrows end there
    for g, seg in zip(segs, trace):
        line = next(g.iter(SVG + "line"))
        x1, x2 = float(line.get("x1")), float(line.get("x2"))
        assert (x1 < x2) == (seg.direction == "out")
    words = texts(root)
    ours = [t.text for t in root.iter(SVG + "text") if "fp-us" in (t.get("class") or "")]
    for state in ("SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"):
        assert ours.count(state) == 1, state  # written where it changes
    peers = [t.text for t in root.iter(SVG + "text") if "fp-peer" in (t.get("class") or "")]
    assert peers[:3] == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED"]  # the RFC 9293 model's
    assert "states: RFC 9293 model" in words
    labels = [t for t in words if t.startswith("[")]
    assert labels[0] == "[S] seq=0 len=0"
    assert "[PA] seq=1 ack=1 len=5" in labels and "[FA] seq=6 ack=7 len=0" in labels
    assert any("bad checksum" in t for t in labels)
    assert "192.0.2.2:" in " ".join(words) and "192.0.2.1:8080" in words


def test_svg_marks_rst_and_retransmissions(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080)
    first = conn.write(b"data")
    conn.expect("A")
    conn.send(b"data", flags="PA", seq=first.seq)  # again: a retransmission
    conn.expect("A")
    conn.rst()
    srv.close()
    root = svg_tree(conn.trace)
    kinds = [g.get("class").split()[1] for g in arrows(root)]
    assert kinds == ["fp-out", "fp-in", "fp-out", "fp-out", "fp-in", "fp-retx", "fp-in", "fp-rst"]
    words = texts(root)
    assert any("(retransmission)" in t for t in words) and any("(RST)" in t for t in words)
    assert [r["retransmission"] for r in conn.trace.relative()].count(True) == 1


def test_peer_states_go_beside_the_peer_lane_and_text_is_escaped():
    segs = [fp.Segment("192.0.2.2", "192.0.2.1", 1000, 80, 1, 0, "S"),
            fp.Segment("192.0.2.1", "192.0.2.2", 80, 1000, 9, 2, "SA")]
    trace = fp.Trace(segs, ["SYN_SENT", "<ESTABLISHED & co>"], peer_states=["SYN_RECEIVED", None])
    root = svg_tree(trace)
    words = texts(root)
    assert "SYN_RECEIVED" in words and "<ESTABLISHED & co>" in words
    state = next(t for t in root.iter(SVG + "text") if t.text == "SYN_RECEIVED")
    assert state.get("class") == "fp-state fp-peer" and float(state.get("x")) > 600  # right of its lane
    html = trace._repr_html_()
    assert "&lt;ESTABLISHED &amp; co&gt;" in html and "<ESTABLISHED" not in html
    with pytest.raises(ValueError, match="peer_states"):
        fp.Trace(segs, peer_states=["LISTEN"])


def test_svg_rows_have_a_fixed_height_at_5_and_200_segments():
    def trace_of(n):
        return fp.Trace([fp.Segment("192.0.2.2", "192.0.2.1", 1000, 80, i, 0, "A", payload=b"x")
                         for i in range(n)])
    small, large = svg_tree(trace_of(5)), svg_tree(trace_of(200))
    assert len(arrows(small)) == 5 and len(arrows(large)) == 200
    h5, h200 = float(small.get("height")), float(large.get("height"))
    assert h200 - h5 == 195 * (h5 - float(svg_tree(trace_of(4)).get("height")))
    assert small.get("width") == large.get("width")
    capped = ET.fromstring(trace_of(30).svg(max_rows=10))
    assert len(arrows(capped)) == 10 and any("first 10 of 30" in t for t in texts(capped))
    assert len(arrows(svg_tree(fp.Trace()))) == 0


@pytest.mark.skipif(not shutil.which("rsvg-convert"), reason="rsvg-convert (librsvg2-bin) is not installed")
def test_svg_renders_to_png(lab, tmp_path):
    (tmp_path / "ladder.svg").write_text(exchange(lab).trace._repr_svg_())
    subprocess.run(["rsvg-convert", str(tmp_path / "ladder.svg"), "-o", str(tmp_path / "ladder.png")],
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_holds_the_svg_and_a_table_row_a_segment(lab):
    trace = exchange(lab).trace
    html = trace._repr_html_()
    assert html.count("<svg") == 1 and html.count("<tr") == len(trace) + 1
    ET.fromstring(html)  # the whole fragment is well-formed too


def test_reprs_stay_short(lab):
    trace = exchange(lab).trace
    assert repr(trace) == "<Trace 12 segments: 7 out, 5 in>"
    assert all(len(repr(s)) < 120 for s in trace)
    assert "\n" not in repr(trace)


def test_ladder_text_writes_flags_as_segment_flags(lab):
    conn = exchange(lab)
    text = conn.trace.ladder_text()
    assert "us ---[FA] seq=6 ack=7 len=0--> peer" in text
    assert "us <--[FA] seq=7 ack=7 len=0--- peer" in text
    assert "[AF]" not in text and "[F.]" not in text
    assert "... 2 earlier segments" in conn.trace.ladder_text(last=10)


def test_slices_and_copies_keep_packets_and_the_state_at_their_start(lab):
    trace = exchange(lab).trace
    tail = trace[-4:]
    assert len(tail) == 4 and tail._packets == trace._packets[-4:]
    # the state drawn above the first row is ours before it (FIN_WAIT_1), not CLOSED
    states = [t.text for t in svg_tree(tail).iter(SVG + "text") if t.get("class") == "fp-state fp-us"]
    assert states == ["FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    copy = fp.Trace(trace, trace.states, trace.transitions, peer_states=["LISTEN"] * len(trace))
    assert copy._packets == trace._packets and copy.peer_states[0] == "LISTEN"
