"""The extension in a careful user's hands: payloads from any buffer, caller
code that closes what a call holds, the collector running in the middle of
a call, and waits too long to count.

What could crash or hang runs in a child process (over Engine.pair(), the
in-memory link), so that a segfault or a deadlock fails its test instead of
ending the session. The child inherits the environment: under
`make pytest-asan` it runs the sanitized extension too."""

import array
import math
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import finprobe as fp
from finprobe.connection import Connection

from labtools import OURS, THEIRS

CHILD_PRELUDE = f"""
import finprobe as fp
from finprobe import _core
from finprobe.connection import Connection
a, b = _core.Engine.pair()
ours = a.open(*{OURS!r}, 1000, 60.0, cls=Connection)
theirs = b.open(*{THEIRS!r}, 5000, 60.0, cls=Connection)
"""


def run_child(body, timeout=60, **env):
    """Run body after CHILD_PRELUDE in a fresh interpreter; its stdout. A
    crash, an exception or a hang (timeout) fails the calling test."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fp.__file__)))
    child_env = dict(os.environ, PYTHONPATH=package_parent, **env)
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body)],
                              capture_output=True, text=True, timeout=timeout, env=child_env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung for {timeout} s (a deadlock?)")
    assert proc.returncode == 0, f"the child ended with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture
def pair(engines):
    """Two connections facing each other over the in-memory link."""
    a, b = engines
    with a.open(*OURS, 1000, 60.0, cls=Connection) as ours, \
            b.open(*THEIRS, 5000, 60.0, cls=Connection) as theirs:
        yield ours, theirs


# ---- 1. payloads from any buffer arrive intact --------------------------------

def _payloads():
    data = bytes(range(256)) * 4 + b"0123456789"  # 1034 bytes, none alike nearby
    return {
        "bytes": (data, data),
        "bytearray": (bytearray(data), data),
        "memoryview of bytes": (memoryview(data), data),
        "memoryview of bytearray": (memoryview(bytearray(data)), data),
        "array of bytes": (array.array("B", data), data),
        "array of shorts": (array.array("H", data), data),
        "strided memoryview": (memoryview(data)[::2], data[::2]),
        "list of ints": (list(data[:100]), data[:100]),
        "generator of ints": ((x for x in data[:100]), data[:100]),
    }


@pytest.mark.parametrize("name", list(_payloads()))
def test_send_returns_and_delivers_a_payload_from_any_buffer_intact(pair, name):
    ours, theirs = pair
    payload, expected = _payloads()[name]
    sent = ours.send(payload, flags="PA")
    received = theirs.recv(1.0)
    assert sent.payload == expected
    assert received is not None and received.payload == expected


def test_send_returns_its_payload_after_the_temporary_copy_is_freed():
    # malloc_debug fills freed and fresh memory with marker bytes: a payload
    # read after its owner was freed shows them instead of the data.
    out = run_child("""
        import array
        for payload in (bytearray(b"x" * 1010), memoryview(b"y" * 1010),
                        array.array("B", b"z" * 1010), memoryview(bytearray(b"q" * 2020))[::2]):
            sent = ours.send(payload, flags="PA")
            received = theirs.recv(1.0)
            print(sent.payload == bytes(payload), received.payload == bytes(payload))
    """, PYTHONMALLOC="malloc_debug")
    assert out.split() == ["True"] * 8


def test_send_refuses_text_as_a_payload(pair):
    ours, _ = pair
    with pytest.raises(TypeError, match="payload"):
        ours.send("text", flags="PA")


# ---- 2. caller code that closes what the call holds ---------------------------

CLOSERS = {
    "connection": "ours.close()",
    "engine": "a.close()",
}

# Arguments whose conversion runs caller code (a generator, __iter__,
# __index__), each given the statement that closes something.
SEND_CALLS = {
    "payload generator": """
        def payload():
            yield 1
            {close}
            yield 2
        ours.send(payload(), flags="PA")
    """,
    "payload item __index__": """
        class Byte:
            def __index__(self):
                {close}
                return 7
        ours.send([Byte(), Byte()], flags="PA")
    """,
    "options generator": """
        def options():
            {close}
            yield ("mss", 1460)
        ours.send(flags="S", options=options())
    """,
    "options __iter__ and __len__": """
        class Options:
            def __len__(self):
                {close}
                return 1
            def __iter__(self):
                {close}
                return iter([("mss", 1460)])
        ours.send(flags="S", options=Options())
    """,
}


@pytest.mark.parametrize("what", list(CLOSERS))
@pytest.mark.parametrize("call", list(SEND_CALLS))
def test_send_raises_closed_when_caller_code_closes_mid_send(call, what):
    body = textwrap.dedent(SEND_CALLS[call]).format(close=CLOSERS[what])
    out = run_child("try:\n" + textwrap.indent(body, "    ") + """
except fp.Error as e:
    print("raised:", e)
else:
    print("sent")
""")
    assert out.strip() == "raised: the connection is closed"


def test_send_raises_closed_when_a_payload_generator_closes_the_lab():
    out = run_child("""
        lab = fp.Lab()
        conn = lab.open(9)
        def payload():
            yield 1
            lab.close()
            yield 2
        try:
            conn.send(payload(), flags="PA")
        except fp.Error as e:
            print("raised:", e)
    """)
    assert out.strip() == "raised: the connection is closed"


# Calls whose numbers went through __float__ or __index__ of the caller's
# objects: now they are refused as what they are, whatever they would do.
OTHER_CALLS = {
    "take timeout": "ours._take(Number())",
    "recv timeout": "ours.recv(Number())",
    "expect timeout": "ours.expect(timeout=Number())",
    "open time_wait": "a.open('192.0.2.2', 40001, '192.0.2.1', 8080, 1, Number())",
    "open iss": "a.open('192.0.2.2', 40001, '192.0.2.1', 8080, Number(), 1.0)",
    "open port": "a.open('192.0.2.2', Number(), '192.0.2.1', 8080, 1, 1.0)",
    "poll timeout": "a.poll(Number())",
    "accept timeout": "a.listen('192.0.2.2', 80).accept(Number(), 1, 1.0)",
    "accept time_wait": "a.listen('192.0.2.2', 80).accept(0.0, 1, Number())",
}


@pytest.mark.parametrize("what", list(CLOSERS))
@pytest.mark.parametrize("call", list(OTHER_CALLS))
def test_numbers_from_caller_objects_are_refused_before_anything_is_closed(call, what):
    out = run_child(f"""
        class Number:
            def __float__(self):
                {CLOSERS[what]}
                return 0.5
            def __index__(self):
                {CLOSERS[what]}
                return 1
        try:
            {OTHER_CALLS[call]}
        except TypeError as e:
            print("TypeError:", e)
        print("closed" if ours.closed else "open")
    """)
    assert out.startswith("TypeError:") and out.split()[-1] == "open"


def test_a_connection_of_a_closed_engine_says_closed(engines):
    engine, _ = engines
    conn = engine.open(*OURS, 1, 1.0)
    engine.close()
    assert conn.closed
    with pytest.raises(fp.Error, match="closed"):
        conn.send(flags="A")


def test_send_from_threads_while_another_closes_does_not_crash():
    out = run_child("""
        import threading
        def sender():
            try:
                while True:
                    ours.send(b"x" * 100, flags="PA")
            except fp.Error:
                pass
        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        import time; time.sleep(0.2)
        a.close()
        for t in threads:
            t.join(10)
        print("alive" if any(t.is_alive() for t in threads) else "done")
    """)
    assert out.strip() == "done"


# ---- 3. the collector during calls that hold the engine's mutex ---------------

def test_collecting_cyclic_connections_during_calls_does_not_deadlock():
    # Each connection is in a cycle of its own, so only the collector frees
    # it, and with a threshold of 1 it runs at almost every allocation:
    # inside _trace, _take and capture, which made Python objects while
    # holding the mutex the freed connection's release takes.
    out = run_child("""
        import gc
        for i in range(50):
            ours.send(b"x", flags="PA")
        gc.set_threshold(1)
        for i in range(1500):
            c = a.open("192.0.2.2", 20000 + i, "192.0.2.1", 8080, 1, 1.0)
            c.selfref = c
            del c
            theirs.send(b"y", flags="PA")
            assert ours._take(1.0) is not None
            ours._trace()
            ours.transitions()
            a.capture()
            ours.snd_nxt
        gc.set_threshold(700)
        print("done")
    """, timeout=120)
    assert out.strip() == "done"


def test_collecting_cyclic_connections_from_threads_does_not_deadlock():
    out = run_child("""
        import gc, threading
        gc.set_threshold(1)
        def churn(base):
            for i in range(300):
                c = a.open("192.0.2.2", base + i, "192.0.2.1", 8080, 1, 1.0)
                c.selfref = c
                del c
                ours._trace()
                a.capture()
                ours._take(0.001)
        threads = [threading.Thread(target=churn, args=(20000 + 1000 * k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("done")
    """, timeout=120)
    assert out.strip() == "done"


# ---- 7. waits too long to count -----------------------------------------------

TOO_LONG = [1e11, 2e10, threading.TIMEOUT_MAX * 2, math.inf, 10 ** 30]


@pytest.mark.parametrize("seconds", TOO_LONG)
def test_recv_refuses_a_timeout_longer_than_a_wait_can_be(pair, seconds):
    ours, _ = pair
    with pytest.raises(OverflowError, match="timeout"):
        ours.recv(timeout=seconds)


def test_expect_silence_refuses_a_timeout_longer_than_a_wait_can_be(pair):
    ours, theirs = pair
    with pytest.raises(OverflowError, match="timeout"):
        ours.expect_silence(2e10)
    with pytest.raises(OverflowError, match="timeout"):
        ours.expect("A", timeout=1e11)


def test_a_time_wait_or_accept_timeout_too_long_is_refused(engines):
    a, _ = engines
    with pytest.raises(OverflowError, match="time_wait"):
        a.open(*OURS, 1, 1e11)
    listener = a.listen("192.0.2.2", 80)
    with pytest.raises(OverflowError, match="timeout"):
        listener.accept(1e11, 1, 1.0)
    with pytest.raises(OverflowError, match="time_wait"):
        listener.accept(0.0, 1, 1e11)


def test_engine_poll_refuses_a_timeout_too_long():
    # The old (int)(timeout * 1000) made poll(2) wait forever: in a child.
    out = run_child("""
        try:
            a.poll(1e11)
        except OverflowError as e:
            print("OverflowError:", e)
    """, timeout=30)
    assert out.startswith("OverflowError:") and "timeout" in out


@pytest.mark.parametrize("seconds, error", [(-1, ValueError), (math.nan, ValueError),
                                            ("1", TypeError), (True, TypeError)])
def test_waits_refuse_what_is_not_a_duration(pair, seconds, error):
    ours, _ = pair
    with pytest.raises(error, match="timeout"):
        ours.recv(timeout=seconds)
    with pytest.raises(error, match="timeout"):
        ours._take(seconds)


@pytest.mark.parametrize("seconds", [1e9, threading.TIMEOUT_MAX])
def test_recv_with_a_long_timeout_waits_for_what_comes(pair, seconds):
    ours, theirs = pair
    later = threading.Timer(0.3, lambda: theirs.send(b"late", flags="PA"))
    later.start()
    try:
        seg = ours.recv(timeout=seconds)
    finally:
        later.join()
    assert seg is not None and seg.payload == b"late"


def test_engine_poll_with_a_timeout_returns_once_something_came(engines, pair):
    ours, theirs = pair
    later = threading.Timer(0.3, lambda: theirs.send(b"late", flags="PA"))
    later.start()
    try:
        engines[0].poll(1e6)
    finally:
        later.join()
    assert ours.pending == 1
