"""Memory: what a kept Segment costs, reading a large pcap file without
holding it all (fp.iter_pcap) or holding more than its segments
(fp.read_pcap), and a Lab that does not grow with the connections it has
closed. Measured with tracemalloc (the Python heap) and the engine's own
count of the heap it holds; nothing here is timed."""

import gc
import os
import struct
import sys
import tracemalloc

import pytest

import finprobe as fp

SMALL = bytes(fp.Segment("192.0.2.1", "192.0.2.2", 40000, 8080, 1000, 2000, "A"))


@pytest.fixture
def traced():
    """tracemalloc running for the test, stopped after it, also on failure."""
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def traced_now():
    return tracemalloc.get_traced_memory()[0]


# ---- a Segment kept ---------------------------------------------------------------------


def test_a_small_segment_kept_costs_at_most_400_bytes(traced):
    assert len(SMALL) == 40
    n = 100_000
    kept = []
    before = traced_now()
    kept.extend(fp.Segment.parse(SMALL) for _ in range(n))
    each = (traced_now() - before) / n
    assert each <= 400, f"a kept Segment of a 40-byte packet costs {each:.0f} bytes"
    # still whole: every attribute there and as parsed
    seg = kept[-1]
    assert (seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags) == \
        ("192.0.2.1", "192.0.2.2", 40000, 8080, 1000, 2000, "A")
    assert seg.options == () and seg.payload == b"" and bytes(seg) == SMALL


def test_a_kept_segment_costs_no_more_for_options_it_does_not_carry(traced):
    """A SYN's four options cost a few dozen bytes each, not the forty slots
    a segment could hold."""
    syn = bytes(fp.Segment("192.0.2.1", "192.0.2.2", 40000, 8080, 1000, 0, "S",
                           options=[("mss", 1460), ("sackok",), ("ts", 1, 0), ("nop",), ("wscale", 7)]))
    n = 20_000
    kept = []
    before = traced_now()
    kept.extend(fp.Segment.parse(syn) for _ in range(n))
    each = (traced_now() - before) / n
    assert each <= 400, f"a kept SYN with 5 options costs {each:.0f} bytes"
    assert kept[0].options == (("mss", 1460), ("sackok",), ("ts", 1, 0), ("nop",), ("wscale", 7))
    assert bytes(kept[0]) == syn


# ---- pcap files: streamed and read whole ---------------------------------------------------

SEGMENTS = 200_000


def packet(i):
    """The i-th packet of the big file: a connection's ACKs, every 100th with
    8 bytes of payload, seq and stamps all different."""
    payload = b"%08d" % i if i % 100 == 0 else b""
    return bytes(fp.Segment("192.0.2.1", "192.0.2.2", 40000 + i % 7, 8080, i, 7, "A" if payload == b"" else "PA",
                            payload=payload))


@pytest.fixture(scope="module")
def big_pcap(tmp_path_factory):
    """A pcap (raw IP, microsecond stamps) of SEGMENTS packets, written here
    with struct (its packets built by fp.Segment); and its packet bytes."""
    path = tmp_path_factory.mktemp("memory") / "big.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW
    total = 0
    with open(path, "wb") as f:
        f.write(header)
        for i in range(SEGMENTS):
            pkt = packet(i)
            f.write(struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000 * 1000, len(pkt), len(pkt)))
            f.write(pkt)
            total += len(pkt)
    return path, total


def test_iter_pcap_streams_a_large_file_in_little_memory(big_pcap, traced):
    path, _ = big_pcap
    count, last_seq, sports = 0, -1, set()
    tracemalloc.reset_peak()
    base = traced_now()
    for seg in fp.iter_pcap(path):
        assert seg.seq == count and seg.seq > last_seq
        last_seq = seg.seq
        sports.add(seg.sport)
        count += 1
    peak = tracemalloc.get_traced_memory()[1] - base
    assert count == SEGMENTS
    assert sports == {40000 + k for k in range(7)}
    assert peak < 5 * 1024 * 1024, f"iterating {SEGMENTS} segments peaked at {peak / 2**20:.1f} MiB"


def test_iter_pcap_gives_the_segments_read_pcap_does(big_pcap, tmp_path):
    """The same segments, stamps and all, on a small file with data, options and both families."""
    segs = [fp.Segment("192.0.2.1", "192.0.2.2", 1, 2, 3, 0, "S", options=[("mss", 1460), ("wscale", 7)]),
            fp.Segment("2001:db8::1", "2001:db8::2", 3, 4, 5, 6, "PA", payload=b"hello"),
            fp.Segment("192.0.2.2", "192.0.2.1", 2, 1, 9, 4, "FA")]
    path = tmp_path / "small.pcap"
    fp.Trace(segs).to_pcap(path)
    whole = fp.read_pcap(path)
    streamed = list(fp.iter_pcap(path))
    assert streamed == list(whole) == segs
    assert [s.ts for s in streamed] == [s.ts for s in whole]
    assert all(s.ts is not None and s.direction is None for s in streamed)


def test_iter_pcap_names_a_missing_file_when_called(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.pcap"):
        fp.iter_pcap(tmp_path / "none.pcap")


def test_iter_pcap_raises_parse_error_where_a_file_is_cut(big_pcap, tmp_path):
    """The segments before the damage come; then fp.ParseError, as read_pcap's."""
    path, _ = big_pcap
    cut = tmp_path / "cut.pcap"
    whole = 24 + sum(16 + len(packet(i)) for i in range(3000))  # the file header, 3000 records
    cut.write_bytes(path.read_bytes()[:whole + 30])  # and half of the next
    got = []
    with pytest.raises(fp.ParseError, match="after 3000 packets"):
        for seg in fp.iter_pcap(cut):
            got.append(seg.seq)
    assert got == list(range(3000))
    with pytest.raises(fp.ParseError, match="after 3000 packets"):
        fp.read_pcap(cut)


def test_read_pcap_of_a_large_file_holds_little_more_than_its_packets(big_pcap, traced):
    path, packet_bytes = big_pcap
    tracemalloc.reset_peak()
    base = traced_now()
    trace = fp.read_pcap(path)
    held, peak = traced_now() - base, tracemalloc.get_traced_memory()[1] - base
    assert len(trace) == SEGMENTS and trace.skipped == 0
    assert trace[12345].seq == 12345 and trace[100].payload == b"%08d" % 100
    bound = SEGMENTS * 400 + packet_bytes
    assert held <= bound, f"the Trace holds {held / SEGMENTS:.0f} bytes a segment (packets: {packet_bytes / SEGMENTS:.0f})"
    assert peak <= bound * 1.25, f"reading peaked at {peak / SEGMENTS:.0f} bytes a segment"


# ---- a Lab's closed connections -------------------------------------------------------------

LIFECYCLES = 5_000


def test_a_lab_does_not_grow_with_closed_connections(lab, traced):
    server = lab.listen(8080, backlog=1024)

    def lifecycle():
        conn = lab.connect(8080)
        peer, _ = server.accept()
        conn.fin()
        conn.expect("A")
        peer.close()
        conn.expect("FA")
        conn.ack()
        conn.close()

    for _ in range(200):  # warm: caches, free lists, the engine's first buffers
        lifecycle()
    gc.collect()
    python0, c0 = traced_now(), lab._engine.stats()["bytes_held"]
    for _ in range(LIFECYCLES):
        lifecycle()
    gc.collect()
    python1, c1 = traced_now(), lab._engine.stats()["bytes_held"]
    per_thousand = (python1 - python0) * 1000 / LIFECYCLES
    assert per_thousand < 32 * 1024, f"the Python side grew {per_thousand:.0f} bytes per 1000 lifecycles"
    c_per_thousand = (c1 - c0) * 1000 / LIFECYCLES
    assert c_per_thousand < 32 * 1024, f"the engine grew {c_per_thousand:.0f} bytes per 1000 lifecycles"


def test_ten_thousand_connections_held_at_once_cost_us_under_2_kib_each():
    """bench/hold.py's measure as a behaviour: 10,000 connections ESTABLISHED
    at once in one process (their other ends in the Lab kernel's accept
    queue), Python objects and C heap together under 2 KiB a connection."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    try:
        import hold
    finally:
        sys.path.pop(0)
    count = 10_000
    _, py, c, states, sample = hold.held(count)
    assert states == {"ESTABLISHED"} and set(map(str, sample)) == {"ESTABLISHED"}
    assert (py + c) / count < 2048, f"{py / count:.0f} B of Python objects + {c / count:.0f} B of C heap"
