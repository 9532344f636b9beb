"""Arguments are taken as what they are or refused by name: no int that
means five zero bytes, no bool that means 1, no text cut at a NUL, no
number silently wrapped into range. Over Engine.pair(), the in-memory
link: nothing here needs privileges but the Guard's test."""

import array

import pytest

import finprobe as fp
from finprobe import _core
from finprobe.connection import Connection

from labtools import OURS, THEIRS


@pytest.fixture
def engine(engines):
    return engines[0]


@pytest.fixture
def conn(engine):
    with engine.open(*OURS, 1000, 60.0, cls=Connection) as c:
        yield c


# ---- expect: what the caller expects must be a value of the field's kind --------

@pytest.mark.parametrize("kwargs, error, words", [
    (dict(payload=5), TypeError, "payload must be bytes-like, not int"),
    (dict(payload="abc"), TypeError, "payload must be bytes-like, not str"),
    (dict(payload=[1, 2]), TypeError, "payload must be bytes-like, not list"),
    (dict(flags=18), TypeError, "flags must be a str"),
    (dict(flags="FFA"), ValueError, "flags"),
    (dict(flags="F\x00S"), ValueError, "flags"),
    (dict(seq=True), TypeError, "seq must be an int, not bool"),
    (dict(seq=-1), ValueError, "seq must be in 0..4294967295"),
    (dict(ack=2 ** 32), ValueError, "ack must be in 0..4294967295"),
    (dict(window=70000), ValueError, "window must be in 0..65535"),
    (dict(window=1.0), TypeError, "window must be an int, not float"),
])
def test_expect_refuses_an_expectation_no_segment_can_meet(conn, kwargs, error, words):
    with pytest.raises(error, match=words):
        conn.expect(timeout=0, **kwargs)


def test_expect_matches_a_payload_given_as_any_buffer(engines, conn):
    with engines[1].open(*THEIRS, 5000, 60.0, cls=Connection) as theirs:
        for payload in (b"hello", bytearray(b"hello"), memoryview(b"hello"),
                        array.array("B", b"hello"), memoryview(b"hheelllloo")[::2]):
            theirs.send(b"hello", flags="PA")
            assert conn.expect("PA", payload=payload, timeout=1.0).payload == b"hello"


# ---- send ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    (dict(seq=True), TypeError, "seq must be an int, not bool"),
    (dict(ack=False), TypeError, "ack must be an int, not bool"),
    (dict(window=True), TypeError, "window must be an int, not bool"),
    (dict(checksum=True), TypeError, "checksum must be an int, not bool"),
    (dict(seq=-1), ValueError, "seq must be in 0..4294967295"),
    (dict(flags="F\x00S"), ValueError, "flags"),
    (dict(options=[("mss\x00junk", 1460)]), ValueError, "unknown option"),
])
def test_send_refuses_what_is_not_the_field(conn, kwargs, error, words):
    with pytest.raises(error, match=words):
        conn.send(**kwargs)
    assert conn._trace() == [] and conn.snd_nxt == 1000


# ---- NUL characters: refused, not cut ----------------------------------------

@pytest.mark.parametrize("field", ["src", "dst"])
def test_segment_refuses_an_address_with_a_nul(field):
    with pytest.raises(ValueError, match=field):
        fp.Segment(**{field: "192.0.2.1\x00junk"})


def test_segment_refuses_flags_with_a_nul():
    with pytest.raises(ValueError, match="flags"):
        fp.Segment(flags="F\x00S")


def test_segment_refuses_an_option_name_with_a_nul():
    with pytest.raises(ValueError, match="unknown option"):
        fp.Segment(options=[("mss\x00", 1460)])


def test_open_refuses_an_address_with_a_nul(engine):
    with pytest.raises(ValueError, match="remote_addr"):
        engine.open("192.0.2.2", 1, "192.0.2.1\x00.7", 2, 0, 1.0)


# ---- the 4-tuple: one parser, each argument by name ----------------------------

@pytest.mark.parametrize("args, error, words", [
    (("192.0.2.2", 0, "192.0.2.1", 80), ValueError, "local_port must be in 1..65535, got 0"),
    (("192.0.2.2", 1, "192.0.2.1", 70000), ValueError, "remote_port must be in 1..65535, got 70000"),
    (("192.0.2.2", True, "192.0.2.1", 80), TypeError, "local_port must be an int, not bool"),
    (("192.0.2.2", 1, "192.0.2.1", 80.0), TypeError, "remote_port must be an int, not float"),
    (("192.0.2.2", 1, "2001:db8::1", 80), ValueError, "local_addr '192.0.2.2' and remote_addr "
                                                     "'2001:db8::1' are not of one IP version"),
    (("192.0.2", 1, "192.0.2.1", 80), ValueError, "local_addr: '192.0.2' is not an IPv4"),
    ((b"192.0.2.2", 1, "192.0.2.1", 80), TypeError, "local_addr must be an IP address as str"),
])
def test_engine_tuples_name_the_wrong_argument(engine, args, error, words):
    with pytest.raises(error, match=words):
        engine.has_tuple(*args)
    with pytest.raises(error, match=words):
        engine.open(*args, 0, 1.0)


@pytest.mark.parametrize("iss, error", [(2 ** 32, ValueError), (-1, ValueError),
                                        (True, TypeError), (1.0, TypeError)])
def test_open_refuses_an_iss_out_of_sequence_space(engine, iss, error):
    with pytest.raises(error, match="iss"):
        engine.open(*OURS, iss, 1.0)
    with pytest.raises(error, match="iss"):
        engine.listen("192.0.2.2", 80).accept(0.0, iss, 1.0)


def test_listen_names_its_port(engine):
    with pytest.raises(ValueError, match="port must be in 1..65535, got 0"):
        engine.listen("192.0.2.2", 0)
    with pytest.raises(TypeError, match="port must be an int, not bool"):
        engine.listen("192.0.2.2", True)


def test_guard_tuples_name_the_wrong_argument():
    try:
        guard = _core.Guard()
    except fp.PermissionError as e:
        pytest.skip(str(e))
    try:
        with pytest.raises(ValueError, match="local_port must be in 1..65535, got 0"):
            guard.add("192.0.2.2", 0, "192.0.2.1", 80)
        with pytest.raises(ValueError, match="not of one IP version"):
            guard.remove("192.0.2.2", 1, "2001:db8::1", 80)
        assert guard.rules == 0
    finally:
        guard.close()
