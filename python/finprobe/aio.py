"""fp.AsyncLab, fp.AsyncTarget, fp.AsyncConnection: the API's waits as
coroutines, for many connections at once (shared/API.md, "Many connections
at once: asyncio").

Each twin wraps its synchronous self (a Lab, a Target, a Connection): what
does not wait is the same plain call; ``connect``, ``accept``, ``expect``,
``expect_silence``, ``recv`` and ``wait_peer_state`` are coroutines on the
caller's event loop (a notebook's too).

A ``_Reactor`` for each Lab or Target watches its engine's descriptor with
``loop.add_reader``: when it is readable the engine takes what arrived
(``poll(0)``, never waiting) and the waits of the connections that now have
a segment queued are woken. A wait is a future and a loop timer shared with
the waits that end in the same millisecond, nothing else: no thread, and no
call on the loop that blocks. A woken wait takes
its segment with the synchronous code and a timeout of 0, which finds it
queued and so never polls: a poll outside the reactor would take other
connections' segments without waking their waits.
"""

import asyncio
import math
import time

from . import _args, _core
from .connection import DEFAULT_SYN_OPTIONS, Connection, _describe, _expectation
from .lab import PEER_POLL_INTERVAL, Lab
from .lab import _describe as _describe_tuple
from .state import as_state
from .target import Target

TICK = 0.001  # s: a wait's end is rounded up to it
EAGER_TURN = 32  # waits that found their segment at a look: then the loop has a turn


class _Reactor:
    """One engine watched by one event loop. ``wait`` parks a coroutine
    until its connection has a segment queued (or, for None, until anything
    arrives) or its timeout passes. The reader is added at the first wait and
    removed by ``close`` (and when another loop takes over from a finished
    one, as successive ``asyncio.run`` calls do)."""

    def __init__(self, engine):
        self._engine = engine
        self._loop = None
        self._fd = -1
        self._waiting = {}  # future -> core Connection, or None: woken by any arrival
        self._deadlines = {}  # tick -> the futures whose wait ends then
        self._closed = False
        self._eager = 0  # waits answered at a look since the loop last had a turn

    def _watch(self):
        """The running loop, watching the engine's descriptor from now on."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return loop
        if self._closed:
            raise _core.Error("the lab or target is closed")
        if self._loop is not None and self._loop.is_running():
            raise _core.Error("this lab or target is in use by another running event loop; "
                              "use each AsyncLab or AsyncTarget from one loop")
        self._unwatch()
        fd = self._engine.fileno()  # fp.Error once closed
        loop.add_reader(fd, self._readable)
        self._loop, self._fd = loop, fd
        return loop

    def _unwatch(self):
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)

    def _readable(self):
        try:
            self._engine.poll(0)
        except _core.Error:  # closed under us: the waits see it when they look
            self._unwatch()
        self.wake()

    def poll(self):
        """Take what has arrived now, without waiting, and wake whom it concerns."""
        if not self._closed:
            try:
                self._engine.poll(0)
            except _core.Error:
                pass
        self.wake()

    def wake(self):
        """Wake every wait whose connection has a segment queued (or is
        closed: it will say so), and every wait for any arrival."""
        ready = []
        for fut, conn in self._waiting.items():
            try:
                if conn is None or conn.pending:
                    ready.append(fut)
            except _core.Error:
                ready.append(fut)
        for fut in ready:
            del self._waiting[fut]
            if not fut.done():
                fut.set_result(True)

    async def wait(self, conn, timeout):
        """True once conn (a core Connection) has a segment queued, or, for
        None, once anything arrived; False when timeout seconds passed
        first (after a last look that does not wait, as the synchronous
        waits end). A cancelled wait leaves nothing behind."""
        if conn is not None and not self._waiting:
            # The answer to what we just sent is most often in already (the
            # peer's stack ran in our send): while no other wait is parked a
            # look costs less than a turn of the loop. (With others parked,
            # looking at once was slower: the reader takes their answers in
            # batches.) A task whose looks all find something would never give
            # the loop a turn: every EAGER_TURN of them yield once.
            self.poll()
            if _has_segment(conn):
                self._eager += 1
                if self._eager >= EAGER_TURN:
                    self._eager = 0
                    await asyncio.sleep(0)
                return True
        loop = self._watch()
        fut = loop.create_future()
        self._waiting[fut] = conn
        tick, ending = self._ending(loop, timeout)
        ending.add(fut)
        try:
            if await fut:
                return True
        finally:
            ending.discard(fut)
            if not ending:
                self._unschedule(tick, ending)
            self._waiting.pop(fut, None)
        self.poll()
        return conn is not None and _has_segment(conn)

    def _ending(self, loop, timeout):
        """(tick, the set of futures whose wait ends then): the first tick at
        or after timeout from now, with a loop timer for it. Waits begun
        together share one timer, cancelled when the last of them ends
        otherwise: a timer each, made and cancelled at every wait, was a
        quarter of the time of many lifecycles in flight."""
        tick = math.ceil((loop.time() + timeout) / TICK)
        entry = self._deadlines.get(tick)
        if entry is None:
            entry = self._deadlines[tick] = (set(), loop.call_at(tick * TICK, self._expire, tick))
        return tick, entry[0]

    def _unschedule(self, tick, ending):
        """The timer of tick cancelled, if it is still the one of ``ending``
        (once it fired, a wait begun since may have made tick's anew)."""
        entry = self._deadlines.get(tick)
        if entry is not None and entry[0] is ending:
            del self._deadlines[tick]
            entry[1].cancel()

    def _expire(self, tick):
        ending, _ = self._deadlines.pop(tick, ((), None))
        for fut in ending:
            if not fut.done():
                fut.set_result(False)

    def close(self):
        """Stop watching; waits still parked wake and find their connection closed."""
        self._closed = True
        self._unwatch()
        for _, timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        for fut in self._waiting:
            if not fut.done():
                fut.set_result(True)
        self._waiting.clear()


def _has_segment(conn):
    try:
        return conn.pending > 0
    except _core.Error:
        return True  # closed: taking says so


class _ClosedOnExit:
    """with and async with: close() on the way out (a plain call)."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()


class AsyncConnection(_ClosedOnExit):
    """fp.Connection's asyncio twin: the same names with the same meaning;
    ``expect``, ``expect_silence`` and ``recv`` are coroutines, sends and
    everything else plain calls on the wrapped Connection."""

    __slots__ = ("_conn", "_reactor", "__weakref__")

    def __init__(self, conn, reactor):
        self._conn = conn
        self._reactor = reactor

    # ---- what waits ----------------------------------------------------------

    async def recv(self, timeout=1.0):
        """The next segment from the peer within ``timeout`` seconds, or None."""
        timeout = _args.seconds("timeout", timeout)
        conn = self._conn
        if conn.pending or await self._reactor.wait(conn, timeout):
            return conn._take(0)
        return None

    async def expect(self, flags=None, *, seq=None, ack=None, payload=None, window=None, timeout=1.0):
        """Take the next segment from the peer and check it, as Connection.expect:
        ``fp.ExpectError`` if none comes within ``timeout`` or it does not match."""
        timeout = _args.seconds("timeout", timeout)
        conn = self._conn
        if not conn.pending:
            want = _expectation(flags, seq, ack, payload, window)  # a wrong one is said at once
            if not await self._reactor.wait(conn, timeout):
                raise _core.ExpectError(conn._report(f"expected {_describe(want)}, "
                                                     f"got nothing within {timeout:g}s"))
        return conn.expect(flags, seq=seq, ack=ack, payload=payload, window=window, timeout=0)

    async def expect_silence(self, timeout):
        """Raise ``fp.ExpectError`` if the peer sends anything within ``timeout`` s."""
        timeout = _args.seconds("timeout", timeout)
        conn = self._conn
        if conn.pending or await self._reactor.wait(conn, timeout):
            seg = conn._take(0)
            raise _core.ExpectError(conn._report(f"expected silence for {timeout:g}s, got {seg!r}"))

    # ---- plain calls ---------------------------------------------------------

    @property
    def state(self):
        return self._conn.state

    def send(self, payload=b"", **fields):
        return self._conn.send(payload, **fields)

    def write(self, data):
        return self._conn.write(data)

    def fin(self):
        return self._conn.fin()

    def ack(self):
        return self._conn.ack()

    def rst(self):
        return self._conn.rst()

    @property
    def trace(self):
        return self._conn.trace

    def close(self):
        self._conn.close()

    def __getattr__(self, name):
        """Every other name of Connection (local, remote, iss, snd_nxt, closed ...)."""
        if name in _SYNC_WAITS or name in AsyncConnection.__slots__:
            raise AttributeError(name)  # a slot unset: no recursion
        return getattr(self._conn, name)

    def __dir__(self):
        return sorted(set(dir(type(self))) | {n for n in dir(self._conn) if n not in _SYNC_WAITS})

    def __repr__(self):
        return "<Async" + repr(self._conn)[1:]


_SYNC_WAITS = frozenset({"_take", "_handshake"})


async def _handshake(reactor, conn, where, options, timeout):
    """SYN, the peer's answer awaited, then Connection's own ending (our ACK,
    or its error); conn closed if anything fails, cancellation included."""
    try:
        conn.send(flags="S", options=DEFAULT_SYN_OPTIONS if options is None else options)
        answered = conn.pending or await reactor.wait(conn, timeout)
        conn._handshake_answered(where, conn._take(0) if answered else None, timeout)
        return AsyncConnection(conn, reactor)
    except BaseException:
        conn.close()
        raise


def _unwrap(conn):
    return conn._conn if isinstance(conn, AsyncConnection) else conn


class _Twin(_ClosedOnExit):
    """What AsyncLab and AsyncTarget share: the wrapped object's names,
    its closing (the reader goes first, while the descriptor is open), the
    context managers."""

    _reactor = None
    _sync = None

    def __getattr__(self, name):
        if name.startswith("__") or self._sync is None:
            raise AttributeError(name)
        return getattr(self._sync, name)

    def __dir__(self):
        return sorted(set(dir(type(self))) | set(dir(self._sync)))

    def open(self, *args, **kwargs):
        """As the synchronous ``open``: a connection in CLOSED, nothing sent."""
        return AsyncConnection(self._sync.open(*args, **kwargs), self._reactor)

    def capture(self):
        captured = self._sync.capture()
        self._reactor.wake()  # the capture polled: others' segments may have come
        return captured

    def close(self):
        """Stop watching the engine, then close as the synchronous twin does.
        A plain call, from the loop or outside it."""
        if self._reactor is not None:
            self._reactor.close()
        if self._sync is not None:
            self._sync.close()

    def __del__(self):
        self.close()

    def __repr__(self):
        return "<Async" + repr(self._sync)[1:]


class AsyncLab(_Twin):
    """fp.Lab's asyncio twin, made with the same arguments (the Lab is made
    at once, as fp.Lab is: a few milliseconds). ``connect``,
    ``wait_peer_state`` and a raw listener's ``accept`` are coroutines; the
    rest (``listen``, ``socket``, ``sysctl``, ``popen``, ``peer_state``,
    ``peer_info``, ``open``, ``capture``, ``close`` ...) plain calls."""

    def __init__(self, ipv6=False, **kwargs):
        self._sync = Lab(ipv6, **kwargs)
        self._reactor = _Reactor(self._sync._engine)

    async def connect(self, port, *, sport=None, iss=None, options=None, timeout=1.0, time_wait=None):
        """Open a connection to the kernel's (peer_addr, port), as Lab.connect:
        an AsyncConnection in ESTABLISHED."""
        _args.port("port", port)
        timeout = _args.seconds("timeout", timeout)
        conn = self._sync.open(port, sport=sport, iss=iss, time_wait=time_wait)
        return await _handshake(self._reactor, conn, f"{self._sync.peer_addr}:{port}", options, timeout)

    def listen_raw(self, port):
        """finprobe listens on (local_addr, port); ``await accept()`` takes connections."""
        return AsyncRawListener(self, self._sync.listen_raw(port))

    def peer_state(self, conn):
        return self._sync.peer_state(_unwrap(conn))

    def peer_info(self, conn):
        return self._sync.peer_info(_unwrap(conn))

    async def wait_peer_state(self, conn, state, timeout=1.0):
        """Poll the peer's state (asyncio.sleep between looks) until it is
        ``state``; else fp.ExpectError naming the last state seen."""
        lab, conn = self._sync, _unwrap(conn)
        if lab.peer_state_source is None:
            lab._kernel_only("wait_peer_state")
        want = as_state(state)
        lab._tuple(conn)
        deadline = time.monotonic() + _args.seconds("timeout", timeout)
        while True:
            seen = await self._peer_state(conn)
            if seen == want:
                return seen
            if time.monotonic() >= deadline:
                whose = "the kernel's socket" if lab.stack is None else "the stack's connection"
                raise _core.ExpectError(f"{whose} for {_describe_tuple(conn)} did not reach "
                                        f"{want.value} within {timeout:g}s: last seen {seen.value}")
            await asyncio.sleep(PEER_POLL_INTERVAL)

    async def _peer_state(self, conn):
        """sock_diag answers at once; a stack's control socket may take up
        to its timeout, so it is asked from the loop's executor."""
        if self._sync.peer_state_source == "stack":
            return await asyncio.get_running_loop().run_in_executor(None, self._sync.peer_state, conn)
        return self._sync.peer_state(conn)


class AsyncRawListener:
    """RawListener's twin: ``await accept()``."""

    def __init__(self, lab, listener):
        self._lab, self._listener = lab, listener
        self.port = listener.port

    async def accept(self, timeout=1.0, *, handshake=True, iss=None, options=None, time_wait=None):
        """The next connection from the kernel, as RawListener.accept: with
        ``handshake`` ESTABLISHED, without it in LISTEN with the SYN taken."""
        lab, reactor = self._lab._sync, self._lab._reactor
        timeout = _args.seconds("timeout", timeout)
        iss = _args.iss(iss)
        time_wait = lab.time_wait if time_wait is None else _args.seconds("time_wait", time_wait)
        deadline = time.monotonic() + timeout
        while True:
            conn = self._listener._core.accept(0, iss, time_wait, cls=Connection)
            reactor.wake()  # accept(0) polled when no SYN waited
            if conn is not None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise _core.ExpectError(f"no SYN to {lab.local_addr}:{self.port} within {timeout:g}s")
            await reactor.wait(None, left)
        lab._connections.add(conn)
        try:
            conn.recv(0)  # the SYN, handed over with the connection: irs, rcv_nxt
            aconn = AsyncConnection(conn, reactor)
            if handshake:
                conn.send(flags="SA", options=DEFAULT_SYN_OPTIONS if options is None else options)
                await aconn.expect("A", timeout=timeout)
            return aconn
        except BaseException:
            conn.close()
            raise

    def __repr__(self):
        return "<Async" + repr(self._listener)[1:]


class AsyncTarget(_Twin):
    """fp.Target's asyncio twin, made with the same arguments; ``connect``
    is a coroutine, the rest plain calls."""

    def __init__(self, host, port, **kwargs):
        self._sync = Target(host, port, **kwargs)
        self._reactor = _Reactor(self._sync._engine)

    async def connect(self, *, sport=None, iss=None, options=None, timeout=3.0, time_wait=None):
        """Open a connection to the target, as Target.connect: an
        AsyncConnection in ESTABLISHED."""
        timeout = _args.seconds("timeout", timeout)
        conn = self._sync.open(sport=sport, iss=iss, time_wait=time_wait)
        where = _args.endpoint(self._sync.addr, self._sync.port)
        return await _handshake(self._reactor, conn, where, options, timeout)
