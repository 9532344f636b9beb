"""fp.Segment and the codec behind it (c/src/segment.c, python/ext/segment_type.c).

The contract is shared/API.md's "Segments" section. Besides the examples,
three kinds of evidence:
  - round trips of random segments (seeded, IPv4 and IPv6, every option form);
  - scapy as an independent oracle, both ways: scapy reads what we build, we
    read what scapy builds, and the checksums agree;
  - random mutations of valid packets: parse or fp.ParseError, never a crash.
"""

import ipaddress
import random
import struct

import pytest

import finprobe as fp

scapy_all = pytest.importorskip("scapy.all")
from scapy.all import IP, IPv6, TCP, Raw, raw  # noqa: E402
from scapy.layers.inet import IPOption_NOP, IPOption_Router_Alert  # noqa: E402
from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop  # noqa: E402

V4 = ("192.0.2.2", "192.0.2.1")
V6 = ("2001:db8::2", "2001:db8::1")
FLAG_LETTERS = "FSRPAUEC"

# ---------------------------------------------------------------------------
# Our own reading of the option rules, written from RFC 9293 §3.1 and API.md,
# not from segment.c: the oracle for the random tests.

DECODED_BODY = {2: 2, 3: 1, 4: 0, 8: 8}  # mss, wscale, sackok, ts: body lengths
NAMES = {2: "mss", 3: "wscale", 4: "sackok", 5: "sack", 8: "ts"}


def canonical_option(kind, body):
    """The tuple Segment.parse gives for one option with this kind and body."""
    if kind == 0:
        return ("eol",)
    if kind == 1:
        return ("nop",)
    if DECODED_BODY.get(kind) == len(body):
        if kind == 2:
            return ("mss", struct.unpack("!H", body)[0])
        if kind == 3:
            return ("wscale", body[0])
        if kind == 4:
            return ("sackok",)
        return ("ts",) + struct.unpack("!II", body)
    if kind == 5 and len(body) >= 8 and len(body) % 8 == 0:
        edges = struct.unpack("!%dI" % (len(body) // 4), body)
        return ("sack", tuple(zip(edges[0::2], edges[1::2])))
    return (kind, body)


def option_wire_len(opt):
    name = opt[0]
    if name in ("eol", "nop"):
        return 1
    if isinstance(name, int):
        return 2 + len(opt[1])
    return {"mss": 4, "wscale": 3, "sackok": 2, "ts": 10}.get(name) or 2 + 8 * len(opt[1])


def random_u32(rng):
    """Numbers with a bias to the edges, where wrap-around bugs live."""
    if rng.random() < 0.3:
        return rng.choice((0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1))
    return rng.getrandbits(32)


# Kinds scapy decodes by name (its TCPOptions table) would come back from
# scapy under that name: the raw kinds we draw avoid them and ours.
SCAPY_NAMED_KINDS = {14, 15, 19, 25, 28, 29, 34}
RAW_KINDS = [k for k in range(6, 256) if k != 8 and k not in SCAPY_NAMED_KINDS]


def random_option(rng):
    pick = rng.randrange(9)
    if pick == 0:
        return ("mss", rng.choice((0, 536, 1460, 65535, rng.randrange(65536))))
    if pick == 1:
        return ("wscale", rng.randrange(256))
    if pick == 2:
        return ("sackok",)
    if pick == 3:
        return ("sack", tuple((random_u32(rng), random_u32(rng))
                              for _ in range(rng.randint(1, 4))))
    if pick == 4:
        return ("ts", random_u32(rng), random_u32(rng))
    if pick in (5, 6):
        return ("nop",)
    if pick == 7:  # a known kind with an odd length stays raw
        kind = rng.choice((2, 3, 4, 8, 5))
        body = rng.randbytes(rng.choice((1, 3, 4, 5)) if kind == 5 else
                             rng.choice([n for n in range(0, 9) if n != DECODED_BODY[kind]]))
        return (kind, body)
    return (rng.choice(RAW_KINDS), rng.randbytes(rng.randrange(0, 12)))


def random_options(rng, room=40):
    """A random option list that fits, with an EOL only where it is not padding
    (at a 4-byte boundary: see test_eol_* below)."""
    options, used = [], 0
    for _ in range(rng.randrange(8)):
        opt = random_option(rng)
        n = option_wire_len(opt)
        if used + n > room:
            break
        options.append(opt)
        used += n
    if used % 4 == 0 and used < room and rng.random() < 0.15:
        options.append(("eol",))
    return options


def random_fields(rng, v6=None):
    v6 = rng.random() < 0.5 if v6 is None else v6
    src, dst = V6 if v6 else V4
    if rng.random() < 0.3:  # in the canonical text Segment gives back
        src = str(ipaddress.ip_address(
            f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}" if v6
            else f"198.51.100.{rng.randrange(256)}"))
    return dict(
        src=src, dst=dst,
        sport=rng.choice((0, 65535, rng.randrange(65536))), dport=rng.randrange(65536),
        seq=random_u32(rng), ack=random_u32(rng),
        flags="".join(c for c in FLAG_LETTERS if rng.random() < 0.3),
        window=rng.choice((0, 65535, rng.randrange(65536))),
        urg=rng.choice((0, rng.randrange(65536))),
        options=random_options(rng),
        payload=rng.randbytes(rng.choice((0, 0, 1, 2, 3, rng.randrange(1500)))),
    )


def expected_options(options):
    return tuple(canonical_option(o[0], o[1]) if isinstance(o[0], int) else
                 (o[0], tuple(tuple(b) for b in o[1])) if o[0] == "sack" else tuple(o)
                 for o in options)


def assert_fields(seg, f):
    assert (seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.window, seg.urg) == (
        f["src"], f["dst"], f["sport"], f["dport"], f["seq"], f["ack"], f["window"], f["urg"])
    assert seg.flags == "".join(c for c in FLAG_LETTERS if c in f["flags"])
    assert seg.options == expected_options(f["options"])
    assert seg.payload == f["payload"]


# ---------------------------------------------------------------------------
# Construction, attributes, defaults

def test_defaults_are_those_of_the_api():
    s = fp.Segment()
    assert s.src is None and s.dst is None
    assert (s.sport, s.dport, s.seq, s.ack, s.window, s.urg) == (0, 0, 0, 0, 65535, 0)
    assert s.flags == "" and s.options == () and s.payload == b""
    assert s.seg_len == 0 and s.ts is None and s.direction is None


def test_positional_arguments_follow_the_api_order():
    s = fp.Segment("192.0.2.1", "192.0.2.2", 1, 2, 3, 4, "SA", 5, 6, [("mss", 1460)], b"xy")
    assert (s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags, s.window, s.urg) == (
        "192.0.2.1", "192.0.2.2", 1, 2, 3, 4, "SA", 5, 6)
    assert s.options == (("mss", 1460),) and s.payload == b"xy"
    assert s == fp.Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, seq=3, ack=4,
                           flags="SA", window=5, urg=6, options=[("mss", 1460)], payload=b"xy")


def test_attribute_types():
    s = fp.Segment(*V6, 40000, 8080, 2**32 - 1, 7, "PA", payload=bytearray(b"hi"))
    for name in ("sport", "dport", "seq", "ack", "window", "urg", "seg_len"):
        assert type(getattr(s, name)) is int, name
    assert type(s.src) is str and type(s.flags) is str
    assert type(s.payload) is bytes and type(s.options) is tuple
    assert s.seq == 2**32 - 1


def test_flags_are_written_in_fsrpauec_order_whatever_the_input_order():
    assert fp.Segment(flags="AF").flags == "FA"
    assert fp.Segment(flags="AS").flags == "SA"
    assert fp.Segment(flags="CEUAPRSF").flags == "FSRPAUEC"


@pytest.mark.parametrize("flags,payload,seg_len", [
    ("", b"", 0), ("A", b"abc", 3), ("S", b"", 1), ("FA", b"", 1), ("SF", b"abc", 5)])
def test_seg_len_counts_payload_syn_and_fin(flags, payload, seg_len):
    assert fp.Segment(flags=flags, payload=payload).seg_len == seg_len


def test_ipv6_addresses_are_written_in_canonical_form():
    s = fp.Segment("2001:0db8:0000::0001", "2001:DB8::2")
    assert (s.src, s.dst) == ("2001:db8::1", "2001:db8::2")


def test_segments_are_immutable():
    s = fp.Segment(*V4)
    for name in ("seq", "flags", "payload", "options", "src"):
        with pytest.raises(AttributeError):
            setattr(s, name, getattr(s, name))


# ---------------------------------------------------------------------------
# repr

def test_repr_of_an_ipv4_segment():
    s = fp.Segment("192.0.2.2", "192.0.2.1", 40000, 8080, 1001, 5001, "FA")
    assert repr(s) == "<Segment 192.0.2.2:40000 > 192.0.2.1:8080 [FA] seq=1001 ack=5001 win=65535 len=0>"


def test_repr_of_an_ipv6_segment_brackets_the_addresses():
    s = fp.Segment(*V6, 40000, 8080, 2**32 - 1, 0, "SA", window=1024, payload=b"abc")
    assert repr(s) == ("<Segment [2001:db8::2]:40000 > [2001:db8::1]:8080 [SA] "
                       "seq=4294967295 ack=0 win=1024 len=3>")


def test_repr_of_a_parsed_segment_is_the_same():
    s = fp.Segment(*V4, 1, 2, 3, 4, "PA", payload=b"hello", options=[("ts", 1, 2)])
    assert repr(fp.Segment.parse(bytes(s))) == repr(s)


# ---------------------------------------------------------------------------
# Equality, hash, replace

def test_equal_segments_have_equal_hashes():
    a = fp.Segment(*V4, 1, 2, 3, 4, "A", options=[("nop",), ("ts", 5, 6)], payload=b"x")
    b = fp.Segment(*V4, 1, 2, 3, 4, "A", options=(("nop",), ("ts", 5, 6)), payload=bytearray(b"x"))
    assert a == b and not a != b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize("change", [
    dict(src="192.0.2.9"), dict(dst="192.0.2.9"), dict(src=V6[0], dst=V6[1]), dict(sport=9),
    dict(dport=9), dict(seq=9), dict(ack=9), dict(flags="R"), dict(window=9), dict(urg=9),
    dict(options=[("nop",)]), dict(options=[("mss", 1)]), dict(payload=b"y")])
def test_segments_differing_in_a_field_are_unequal(change):
    a = fp.Segment(*V4, 1, 2, 3, 4, "A", options=[("mss", 2)], payload=b"x")
    assert a != a.replace(**change)
    assert not a == a.replace(**change)


def test_segment_does_not_equal_other_types():
    s = fp.Segment(*V4)
    assert s != bytes(s) and s != None and s != "seg"  # noqa: E711
    with pytest.raises(TypeError):
        s < s


def test_a_parsed_segment_equals_the_one_built_ttl_and_checksum_aside():
    s = fp.Segment(*V4, 1, 2, 3, 4, "A", checksum=0x1234, ttl=3)
    p = fp.Segment.parse(bytes(s))
    assert p == s and hash(p) == hash(s)
    assert p.checksum == 0x1234 and p.checksum_ok is False and p.ttl == 3


def test_replace_changes_only_the_fields_given():
    s = fp.Segment(*V4, 1, 2, 3, 4, "A", 100, 0, [("mss", 1460)], b"data")
    r = s.replace(flags="FA", seq=2**32 - 1)
    assert (r.flags, r.seq) == ("FA", 2**32 - 1)
    assert (r.src, r.dst, r.sport, r.dport, r.ack, r.window, r.options, r.payload) == (
        s.src, s.dst, s.sport, s.dport, s.ack, s.window, s.options, s.payload)
    assert (s.flags, s.seq) == ("A", 3)  # the original is untouched
    assert s.replace() == s and s.replace() is not s


def test_replace_of_a_parsed_segment_is_not_on_the_wire():
    p = fp.Segment.parse(bytes(fp.Segment(*V6, 1, 2, payload=b"x")))
    r = p.replace(payload=b"yz")
    assert r.ts is None and r.direction is None
    assert r.seg_len == 2 and r.src == V6[0]


def test_replace_keeps_a_forced_checksum_and_none_clears_it():
    s = fp.Segment(*V4, 1, 2, checksum=0xbeef)
    assert fp.Segment.parse(bytes(s.replace(seq=7))).checksum == 0xbeef
    assert fp.Segment.parse(bytes(s.replace(checksum=None))).checksum_ok is True


def test_replace_checks_its_arguments_as_the_constructor_does():
    s = fp.Segment(*V4)
    with pytest.raises(ValueError, match="sport"):
        s.replace(sport=70000)
    with pytest.raises(ValueError, match="src"):
        s.replace(src=V6[0])
    with pytest.raises(TypeError, match="bogus"):
        s.replace(bogus=1)
    with pytest.raises(TypeError):
        s.replace(5)


# ---------------------------------------------------------------------------
# Round trips

def test_random_segments_round_trip():
    rng = random.Random(20240601)
    for _ in range(3000):
        f = random_fields(rng)
        s = fp.Segment(**f)
        assert_fields(s, f)
        wire = bytes(s)
        p = fp.Segment.parse(wire)
        assert p == s, (f, s.options, p.options)
        assert_fields(p, f)
        assert p.checksum_ok is True
        assert p.seg_len == s.seg_len
        assert bytes(p) == wire


def test_wire_layout_of_a_known_segment():
    s = fp.Segment("192.0.2.2", "192.0.2.1", 40000, 8080, 1001, 5001, "FA")
    assert bytes(s).hex() == (
        "45000028" "00004000" "4006b6cc" "c0000202" "c0000201"  # IPv4: DF, TTL 64, TCP
        "9c401f90" "000003e9" "00001389" "5011ffff" "588d0000")  # FIN+ACK, checksum 0x588d


def test_options_fill_exactly_forty_bytes():
    s = fp.Segment(*V4, options=[("ts", 1, 2)] * 4)
    wire = bytes(s)
    assert len(wire) == 20 + 60 and wire[32] >> 4 == 15
    assert fp.Segment.parse(wire) == s


def test_payload_limits_of_one_ip_packet():
    bytes(fp.Segment(*V4, payload=bytes(65535 - 40)))
    bytes(fp.Segment(*V6, payload=bytes(65535 - 20)))
    with pytest.raises(ValueError, match="payload"):
        bytes(fp.Segment(*V4, payload=bytes(65535 - 39)))
    with pytest.raises(ValueError, match="payload"):
        bytes(fp.Segment(*V6, payload=bytes(65535 - 19)))


def test_bytes_needs_addresses():
    with pytest.raises(ValueError, match="src and dst"):
        bytes(fp.Segment())


def test_ttl_goes_on_the_wire():
    assert bytes(fp.Segment(*V4, ttl=5))[8] == 5
    assert bytes(fp.Segment(*V6, ttl=7))[7] == 7
    assert bytes(fp.Segment(*V4))[8] == 64


def test_parse_takes_any_bytes_like_object():
    wire = bytes(fp.Segment(*V4, 1, 2, payload=b"abc"))
    for data in (bytearray(wire), memoryview(wire), memoryview(b"\0" + wire)[1:]):
        assert fp.Segment.parse(data).payload == b"abc"


def test_parse_ignores_bytes_after_the_ip_packet():
    wire = bytes(fp.Segment(*V4, 1, 2, payload=b"abc"))
    assert fp.Segment.parse(wire + bytes(6)).payload == b"abc"  # Ethernet padding


# ---------------------------------------------------------------------------
# Options: the forms of API.md, raw kinds, EOL and padding

def test_every_option_form_round_trips():
    options = [("mss", 1460), ("wscale", 14), ("sackok",), ("nop",),
               ("sack", ((1, 2), (2**32 - 1, 0))), ("eol",)]
    s = fp.Segment(*V4, options=options)
    assert s.options == (("mss", 1460), ("wscale", 14), ("sackok",), ("nop",),
                         ("sack", ((1, 2), (2**32 - 1, 0))), ("eol",))
    assert fp.Segment.parse(bytes(s)).options == s.options
    ts = fp.Segment(*V6, options=[("ts", 2**32 - 1, 0), (30, b"abc"), (254, b"")])
    assert fp.Segment.parse(bytes(ts)).options == (("ts", 2**32 - 1, 0), (30, b"abc"), (254, b""))


def test_sack_blocks_may_be_given_as_lists():
    s = fp.Segment(options=[("sack", [(1, 2), (3, 4)])])
    assert s.options == (("sack", ((1, 2), (3, 4))),)


def test_a_raw_option_of_a_known_kind_and_length_is_the_decoded_option():
    raw_mss = fp.Segment(*V4, options=[(2, b"\x05\xb4")])
    assert raw_mss.options == (("mss", 1460),)
    assert raw_mss == fp.Segment(*V4, options=[("mss", 1460)])
    assert fp.Segment(options=[(8, bytes(range(8)))]).options == (("ts", 0x00010203, 0x04050607),)
    assert fp.Segment(options=[(5, bytes(8))]).options == (("sack", ((0, 0),)),)


def test_known_kinds_with_odd_lengths_stay_raw_and_round_trip():
    options = [(2, b"\x05"), (3, b""), (4, b"x"), (5, b""), (5, b"abcd"), (8, b"1234")]
    s = fp.Segment(*V4, options=options)
    assert s.options == tuple(options)
    assert fp.Segment.parse(bytes(s)) == s


def test_eol_after_the_options_at_a_word_boundary_round_trips():
    # EOL at offset 4: not padding (padding never starts at a boundary).
    for options in ([("mss", 1460), ("eol",)], [("eol",)], [("nop",)] * 4 + [("eol",)],
                    [("ts", 1, 2), ("nop",), ("nop",), ("eol",)]):
        s = fp.Segment(*V4, options=options)
        p = fp.Segment.parse(bytes(s))
        assert p.options == tuple(options) and p == s


def test_zero_padding_is_not_reported_as_eol():
    for options in ([("nop",)], [("mss", 1460), ("wscale", 7)], [("sackok",)], [("ts", 1, 2)]):
        wire = bytes(fp.Segment(*V4, options=options))
        assert (wire[32] >> 4) * 4 - 20 == (sum(map(option_wire_len, options)) + 3) // 4 * 4
        assert fp.Segment.parse(wire).options == tuple(options)


def test_an_eol_in_the_final_padding_round_trips():
    # An EOL where the padding would be gets a word of zeros of its own, so
    # that it is told from the padding: both lists come back as given.
    for options in ([("wscale", 7), ("eol",)], [("nop",), ("eol",)],
                    [("nop",), ("eol",), ("eol",)], [("mss", 1460), ("wscale", 7), ("eol",)]):
        s = fp.Segment(*V4, options=options)
        wire = bytes(s)
        p = fp.Segment.parse(wire)
        assert p.options == tuple(options) and p == s and bytes(p) == wire
        without = fp.Segment(*V4, options=options[:-1])
        assert fp.Segment.parse(bytes(without)).options == tuple(options[:-1])
        assert bytes(without) != wire
    assert bytes(fp.Segment(*V4, options=[("wscale", 7), ("eol",)]))[40:] == bytes.fromhex("0303070000000000")
    with pytest.raises(ValueError, match=r"options: 44 bytes .*\(an EOL ending the list takes a word"):
        fp.Segment(options=[("nop",)] * 37 + [("eol",)])


def test_options_after_an_eol_round_trip():
    for options in ([("eol",), ("mss", 1460)], [("nop",), ("eol",), ("nop",), ("wscale", 7)],
                    [("eol",), ("eol",), ("sackok",)], [("eol",), (30, b"ab"), ("eol",)]):
        s = fp.Segment(*V4, options=options)
        p = fp.Segment.parse(bytes(s))
        assert p.options == tuple(options) and bytes(p) == bytes(s)


def test_bytes_after_an_eol_that_are_no_options_are_kept_raw():
    wire = bytearray(bytes(fp.Segment(*V4, options=[(30, b"xx")])))
    wire[40:44] = b"\x01\x00\xff\xff"  # NOP, EOL, then junk the sender left
    p = fp.Segment.parse(bytes(wire))
    assert p.options == (("nop",), (0, b"\xff\xff"))
    assert bytes(p)[:36] == wire[:36] and bytes(p)[38:] == wire[38:]  # checksum aside
    again = fp.Segment(*V4, options=p.options)
    assert again.options == p.options and bytes(again)[40:44] == b"\x01\x00\xff\xff"


def test_a_raw_eol_is_kept_as_parse_would_read_it():
    # As (2, b"\x05\xb4") is ("mss", 1460): bytes after an EOL that read as
    # options are those options, and the padding after junk is part of it.
    assert fp.Segment(options=[(0, b"\x02\x04\x05\xb4\0\0\0")]).options == (("eol",), ("mss", 1460))
    assert fp.Segment(options=[(0, b"\xff")]).options == ((0, b"\xff\0\0"),)
    assert fp.Segment(options=[(0, b"\xff" * 39)]).options == ((0, b"\xff" * 39),)
    with pytest.raises(ValueError, match="options"):
        fp.Segment(options=[(1, b"x")])


def built_option_len(options):
    """The option bytes a list takes, from the rule of segment.c written
    again: what precedes the trailing EOLs, zero-padded to a word, then a
    word of zeros for each trailing EOL."""
    eols = 0
    while eols < len(options) and options[-1 - eols] == ("eol",):
        eols += 1
    head = sum(map(option_wire_len, options[:len(options) - eols]))
    return (head + 3) // 4 * 4 + 4 * eols


def test_random_option_lists_with_eols_anywhere_round_trip():
    rng = random.Random(14)
    tried = 0
    for _ in range(3000):
        options = [("eol",) if rng.random() < 0.3 else random_option(rng)
                   for _ in range(rng.randrange(1, 10))]
        if built_option_len(options) > 40:
            continue
        tried += 1
        s = fp.Segment(*rng.choice((V4, V6)), options=options)
        assert s.options == expected_options(options)
        wire = bytes(s)
        p = fp.Segment.parse(wire)
        assert p == s and bytes(p) == wire, options
    assert tried > 1000


# ---------------------------------------------------------------------------
# Checksums

def test_forced_checksum_goes_on_the_wire_and_parses_as_bad():
    s = fp.Segment(*V4, 1, 2, 3, 4, "A", checksum=0x1234)
    good = bytes(s.replace(checksum=None))
    wire = bytes(s)
    assert wire[36:38] == b"\x12\x34" and good[36:38] != b"\x12\x34"
    assert wire[:36] == good[:36] and wire[38:] == good[38:]
    p = fp.Segment.parse(wire)
    assert p.checksum == 0x1234 and p.checksum_ok is False
    assert IP(wire)[TCP].chksum == 0x1234


def test_checksum_ok_is_none_for_a_segment_never_parsed():
    assert fp.Segment(*V4).checksum_ok is None
    assert fp.Segment.parse(bytes(fp.Segment(*V6))).checksum_ok is True


def test_a_bad_ipv4_header_checksum_is_reported_too():
    wire = bytearray(bytes(fp.Segment(*V4, 1, 2)))
    wire[10] ^= 0xff
    assert fp.Segment.parse(bytes(wire)).checksum_ok is False


# ---------------------------------------------------------------------------
# scapy as an independent oracle

def _scapy_bound_ports():
    return {v for fields, _ in TCP.payload_guess for k, v in fields.items()
            if k in ("sport", "dport")}


SCAPY_BOUND_PORTS = _scapy_bound_ports()  # scapy would dissect these payloads


def scapy_fields(rng, v6):
    f = random_fields(rng, v6)
    while f["sport"] in SCAPY_BOUND_PORTS or f["dport"] in SCAPY_BOUND_PORTS:
        f["sport"], f["dport"] = rng.randrange(65536), rng.randrange(65536)
    return f


def to_scapy_option(opt):
    name = opt[0]
    if isinstance(name, int):
        return (name, opt[1])
    return {"mss": lambda: ("MSS", opt[1]), "wscale": lambda: ("WScale", opt[1]),
            "sackok": lambda: ("SAckOK", b""), "nop": lambda: ("NOP", None),
            "eol": lambda: ("EOL", None), "ts": lambda: ("Timestamp", (opt[1], opt[2])),
            "sack": lambda: ("SAck", tuple(e for block in opt[1] for e in block))}[name]()


SCAPY_KINDS = {"EOL": 0, "NOP": 1, "MSS": 2, "WScale": 3, "SAckOK": 4, "SAck": 5, "Timestamp": 8}


def from_scapy_options(options):
    """scapy's parsed options in our form. scapy reads the padding after the
    last option as ("EOL", None); an EOL off a 4-byte boundary is padding."""
    out, offset = [], 0
    for name, value in options:
        kind = SCAPY_KINDS.get(name, name)
        if kind == 0:
            if offset % 4 == 0:
                out.append(("eol",))
            break
        if kind == 1:
            out.append(("nop",))
            offset += 1
            continue
        if isinstance(value, bytes):
            body = value
        elif kind == 2:
            body = struct.pack("!H", value)
        elif kind == 3:
            body = bytes([value])
        elif kind == 8:
            body = struct.pack("!II", *value)
        elif kind == 5:
            value = value if isinstance(value, tuple) else (value,)
            body = struct.pack("!%dI" % len(value), *value)
        else:
            raise AssertionError(f"unexpected scapy option {name!r}")
        out.append(canonical_option(kind, body))
        offset += 2 + len(body)
    return tuple(out)


def test_scapy_reads_what_we_build():
    rng = random.Random(7)
    for i in range(400):
        f = scapy_fields(rng, v6=i % 2 == 1)
        wire = bytes(fp.Segment(**f))
        pkt = IPv6(wire) if i % 2 else IP(wire)
        tcp = pkt[TCP]
        assert (pkt.src, pkt.dst, tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.window, tcp.urgptr) == (
            f["src"], f["dst"], f["sport"], f["dport"], f["seq"], f["ack"], f["window"], f["urg"])
        assert str(tcp.flags) == fp.Segment(flags=f["flags"]).flags
        assert from_scapy_options(tcp.options) == expected_options(f["options"])
        assert raw(tcp.payload) == f["payload"]
        if i % 2:
            assert pkt.hlim == 64 and pkt.plen == len(wire) - 40
        else:
            assert pkt.ttl == 64 and str(pkt.flags) == "DF" and pkt.len == len(wire)
        # scapy recomputes both checksums: they must be ours. (scapy reads a
        # one-edge SAck as an int it cannot write back: give it a tuple.)
        tcp.options = [(n, (v,)) if n == "SAck" and isinstance(v, int) else (n, v)
                       for n, v in tcp.options]
        ours_tcp = tcp.chksum
        del tcp.chksum
        if not i % 2:
            ours_ip = pkt.chksum
            del pkt.chksum
        rebuilt = raw(pkt)
        again = IPv6(rebuilt) if i % 2 else IP(rebuilt)
        assert again[TCP].chksum == ours_tcp
        if not i % 2:
            assert again.chksum == ours_ip
        assert rebuilt == wire


def scapy_packet(f, rng, v6):
    tcp = TCP(sport=f["sport"], dport=f["dport"], seq=f["seq"], ack=f["ack"],
              flags=fp.Segment(flags=f["flags"]).flags, window=f["window"], urgptr=f["urg"],
              options=[to_scapy_option(o) for o in f["options"]])
    if v6:
        ip = IPv6(src=f["src"], dst=f["dst"], hlim=rng.randrange(256))
        for ext in rng.sample([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt], rng.randrange(3)):
            ip = ip / ext()
    else:
        ip = IP(src=f["src"], dst=f["dst"], ttl=rng.randrange(256), id=rng.randrange(65536),
                options=rng.choice([[], [IPOption_Router_Alert()], [IPOption_NOP()] * 4]))
    return ip / tcp / Raw(f["payload"]) if f["payload"] else ip / tcp


def test_we_read_what_scapy_builds():
    rng = random.Random(11)
    for i in range(400):
        v6 = i % 2 == 1
        f = scapy_fields(rng, v6)
        pkt = scapy_packet(f, rng, v6)
        wire = raw(pkt)
        s = fp.Segment.parse(wire)
        assert_fields(s, f)
        assert s.checksum_ok is True
        assert s.checksum == (IPv6 if v6 else IP)(wire)[TCP].chksum
        assert s.ttl == (pkt.hlim if v6 else pkt.ttl)


# ---------------------------------------------------------------------------
# Malformed packets

def _v4(**kw):
    return bytearray(bytes(fp.Segment(*V4, 1, 2, 3, 4, "A", options=[("mss", 1460)], **kw)))


def _v6(**kw):
    return bytearray(bytes(fp.Segment(*V6, 1, 2, 3, 4, "A", options=[("mss", 1460)], **kw)))


def _set(data, offset, value):
    data[offset] = value
    return bytes(data)


MALFORMED = {
    "empty": (b"", "empty"),
    "one byte": (b"\x45", "truncated"),
    "truncated IPv4 header": (bytes(_v4())[:19], "truncated IPv4 header"),
    "truncated IPv4 packet": (bytes(_v4(payload=b"abc"))[:30], "truncated IPv4"),
    "truncated IPv6 header": (bytes(_v6())[:39], "truncated IPv6 header"),
    "truncated IPv6 packet": (bytes(_v6())[:50], "truncated IPv6"),
    "truncated TCP header": (bytes(_v4()[:2] + b"\x00\x1e" + _v4()[4:30]), "truncated TCP header"),
    "IHL below 5": (_set(_v4(), 0, 0x43), "IHL"),
    "IHL beyond the packet": (_set(_v4(), 0, 0x4f), "IHL"),
    "data offset below 5": (_set(_v4(), 32, 0x40), "data offset"),
    "data offset beyond the packet": (_set(_v4(), 32, 0xf0), "data offset"),
    "option running past the header": (_set(_v4(), 41, 9), "runs past"),
    "option without its length": (bytes(_v4()[:40] + b"\x01\x01\x01\x02"), "length"),
    "zero-length option": (_set(_v4(), 41, 0), "length"),
    "UDP over IPv4": (_set(_v4(), 9, 17), "not TCP"),
    "UDP over IPv6": (_set(_v6(), 6, 17), "not TCP"),
    "IP version 5": (_set(_v4(), 0, 0x55), "version 5"),
    "IP version 0": (_set(_v4(), 0, 0x05), "version 0"),
    "IPv4 fragment": (_set(_v4(), 6, 0x20), "fragment"),
    "truncated IPv6 extension header": (
        bytes(_v6()[:4]) + b"\x00\x04\x00\x40" + bytes(_v6()[8:40]) + b"\x06\x00\x00\x00",
        "extension header"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_packets_raise_parse_error_naming_the_problem(name):
    data, words = MALFORMED[name]
    with pytest.raises(fp.ParseError, match=words) as info:
        fp.Segment.parse(data)
    assert isinstance(info.value, ValueError) and isinstance(info.value, fp.Error)


def test_every_truncation_of_a_packet_is_a_parse_error_saying_so():
    for wire in (bytes(_v4(payload=b"abcdef")), bytes(_v6(payload=b"abcdef"))):
        for n in range(len(wire)):
            with pytest.raises(fp.ParseError, match="truncated|empty"):
                fp.Segment.parse(wire[:n])


@pytest.mark.parametrize("data", ["4500", 17, None, 1.5, ["E"]])
def test_parse_takes_bytes_not_str_or_other_objects(data):
    with pytest.raises(TypeError):
        fp.Segment.parse(data)


def mutate(rng, wire):
    data = bytearray(wire)
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(5)
        if what == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif what == 1 and data:  # a header byte set at random: lengths, kinds
            i = rng.randrange(min(len(data), 64))
            data[i] = rng.randrange(256)
        elif what == 2:  # truncation
            del data[rng.randrange(len(data) + 1):]
        elif what == 3:  # trailing junk
            data += rng.randbytes(rng.randrange(1, 16))
        elif data:  # a 16-bit length field set at random
            i = rng.choice((2, 4)) if len(data) > 5 else 0
            data[i:i + 2] = rng.randbytes(2)
    return bytes(data)


def test_random_mutations_parse_or_raise_parse_error():
    rng = random.Random(99)
    seeds = [bytes(fp.Segment(**random_fields(rng))) for _ in range(60)]
    outcomes = {"parsed": 0, "error": 0}
    for _ in range(20000):
        data = mutate(rng, rng.choice(seeds))
        try:
            s = fp.Segment.parse(data)
        except fp.ParseError as e:
            assert str(e)
            outcomes["error"] += 1
            continue
        outcomes["parsed"] += 1
        repr(s), s.options, s.flags, s.seg_len, s.src, s.payload, hash(s)
        again = fp.Segment.parse(bytes(s))
        assert again == s and bytes(again) == bytes(s)
    assert min(outcomes.values()) > 2000, outcomes


# ---------------------------------------------------------------------------
# Bad constructor arguments name the argument

BAD_ARGUMENTS = [
    (dict(sport=70000), ValueError, "sport"),
    (dict(sport=-1), ValueError, "sport"),
    (dict(sport="80"), TypeError, "sport"),
    (dict(sport=80.0), TypeError, "sport"),
    (dict(sport=True), TypeError, "sport"),
    (dict(dport=65536), ValueError, "dport"),
    (dict(seq=2**32), ValueError, "seq"),
    (dict(seq=2**64), ValueError, "seq"),
    (dict(ack=-1), ValueError, "ack"),
    (dict(window=65536), ValueError, "window"),
    (dict(urg=1 << 16), ValueError, "urg"),
    (dict(flags="X"), ValueError, "flags"),
    (dict(flags="AA"), ValueError, "flags"),
    (dict(flags="fa"), ValueError, "flags"),
    (dict(flags=256), ValueError, "flags"),
    (dict(flags=["A"]), TypeError, "flags"),
    (dict(options=[("mss",)]), ValueError, "options"),
    (dict(options=[("mss", 70000)]), ValueError, "options"),
    (dict(options=[("mss", "1460")]), TypeError, "options"),
    (dict(options=[("wscale", 256)]), ValueError, "options"),
    (dict(options=[("ts", 1)]), ValueError, "options"),
    (dict(options=[("ts", 1, 2**32)]), ValueError, "options"),
    (dict(options=[("sackok", 1)]), ValueError, "options"),
    (dict(options=[("sack", ())]), ValueError, "options"),
    (dict(options=[("sack", ((1, 2),) * 5)]), ValueError, "options"),
    (dict(options=[("sack", ((1, 2, 3),))]), ValueError, "options"),
    (dict(options=[("sack", ((1, -2),))]), ValueError, "options"),
    (dict(options=[("bogus",)]), ValueError, "options"),
    (dict(options=[()]), TypeError, "options"),
    (dict(options=[["mss", 1460]]), TypeError, "options"),
    (dict(options="mss"), TypeError, "options"),
    (dict(options=5), TypeError, "options"),
    (dict(options=[(256, b"")]), ValueError, "options"),
    (dict(options=[(30, "text")]), ValueError, "options"),
    (dict(options=[(30, b"x" * 39)]), ValueError, "options"),
    (dict(options=[(1, b"x")]), ValueError, "options"),
    (dict(options=[(0, bytes(40))]), ValueError, "options"),
    (dict(options=[(1, b"")]), ValueError, "options"),
    (dict(options=[("nop",)] * 41), ValueError, "options"),
    (dict(options=[("ts", 1, 2)] * 4 + [("nop",)]), ValueError, "options"),
    (dict(src="not an ip"), ValueError, "src"),
    (dict(dst="192.0.2"), ValueError, "dst"),
    (dict(src=3221225985), TypeError, "src"),
    (dict(src=b"192.0.2.1"), TypeError, "src"),
    (dict(src="192.0.2.1", dst="2001:db8::1"), ValueError, "src"),
    (dict(src="2001:db8::1", dst="192.0.2.1"), ValueError, "dst"),
    (dict(payload="text"), TypeError, "payload"),
    (dict(payload=5), TypeError, "payload"),
    (dict(payload=None), TypeError, "payload"),
    (dict(checksum=0x10000), ValueError, "checksum"),
    (dict(ttl=256), ValueError, "ttl"),
    (dict(nonsense=1), TypeError, "nonsense"),
]


@pytest.mark.parametrize("kwargs,error,name", BAD_ARGUMENTS,
                         ids=[repr(k)[:50] for k, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        fp.Segment(**kwargs)


def test_too_many_positional_arguments():
    with pytest.raises(TypeError):
        fp.Segment(*V4, 1, 2, 3, 4, "A", 5, 0, (), b"", 0x1234)  # checksum is keyword-only


def test_a_missing_address_reads_none_and_cannot_be_built():
    seg = fp.Segment("192.0.2.1")
    assert seg.src == "192.0.2.1" and seg.dst is None
    assert "> ?:0" in repr(seg)
    with pytest.raises(ValueError, match="dst address"):
        bytes(seg)
    assert bytes(seg.replace(dst="192.0.2.2"))
