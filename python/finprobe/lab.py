"""fp.Lab: a Linux kernel TCP stack as the peer, in a network namespace of its own.

The C side (``_core.Lab``) makes two fresh network namespaces joined by a
veth pair, through a helper process that hands back descriptors; the kernel
owns 192.0.2.1 / 2001:db8::1 in one, finprobe speaks as 192.0.2.2 /
2001:db8::2 from the other over AF_PACKET. Nothing is visible outside, and
the lab vanishes with the ``with`` block, an exception or the process.
"""

import itertools
import socket
import subprocess
import threading
import time
import weakref

from . import _args, _core
from . import trace as _trace
from .connection import DEFAULT_SYN_OPTIONS, Connection
from .state import State, as_state

FIRST_PORT, PORT_COUNT = 40000, 20000
PEER_POLL_INTERVAL = 0.002


class Lab:
    """A kernel TCP peer in a lab of its own; see shared/API.md, "The lab".

    Threads may share a Lab. Every resource is owned by an object from the
    moment it exists, so an exception at any point of the constructor
    (KeyboardInterrupt included) leaves nothing behind once the half-made
    Lab is dropped."""

    # What close() and __del__ read, for a Lab whose __init__ did not finish.
    _core = None
    _engine = None
    _connections = ()
    _processes = ()
    _sockets = ()

    def __init__(self, ipv6=False, *, time_wait=60.0, capture=False):
        if not isinstance(ipv6, bool):
            raise TypeError(f"ipv6 must be a bool, not {type(ipv6).__name__}")
        self.ipv6 = ipv6
        self.time_wait = _args.seconds("time_wait", time_wait)
        self.peer_addr = "2001:db8::1" if self.ipv6 else "192.0.2.1"
        self.local_addr = "2001:db8::2" if self.ipv6 else "192.0.2.2"
        self.family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        self._connections = weakref.WeakSet()
        self._processes = []
        self._sockets = []
        self._next_port = itertools.cycle(range(FIRST_PORT, FIRST_PORT + PORT_COUNT))
        self._port_lock = threading.Lock()
        self._core = _core.Lab()
        try:
            local_mac, peer_mac = self._core.macs
            self._engine = _core.Engine(self._core.packet_fd, local_mac, peer_mac, self._core)
            if capture:
                self._engine.capture_start()
            _trace._source_opened(self)
        except BaseException:
            self.close()
            raise

    # ---- lifetime ------------------------------------------------------------

    def close(self):
        """End the lab: connections, started processes, sockets, namespaces."""
        if self._core is None or self._core.closed:
            return
        for conn in list(self._connections):
            conn.close()
        for proc in list(self._processes):
            _stop(proc)
        for sock in list(self._sockets):
            sock.close()
        if self._engine is not None:
            _trace._source_closing(self)
            self._engine.close()
        self._core.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def __repr__(self):
        if self._core is None or self._core.closed:
            return "<Lab closed>"
        return f"<Lab peer {self.peer_addr}, us {self.local_addr}>"

    # ---- the kernel's side ---------------------------------------------------

    def socket(self, family=None, type=socket.SOCK_STREAM):
        """A socket.socket made inside the lab (family: the lab's by default)."""
        sock = self._core.socket(self.family if family is None else int(family), int(type), 0)
        self._sockets.append(sock)
        return sock

    def listen(self, port, backlog=128):
        """A kernel socket listening on (peer_addr, port) inside the lab."""
        _args.port("port", port)
        sock = self.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.peer_addr, port))
            sock.listen(backlog)
            return sock
        except BaseException:
            sock.close()
            raise

    def sysctl(self, name, value=None):
        """Read (-> str) or set a sysctl of the lab's namespace ("net.ipv4.tcp_fin_timeout");
        ValueError when the kernel refuses the value or the name is not the lab's."""
        if not isinstance(name, str):
            raise TypeError(f"sysctl name must be a str, not {type(name).__name__}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise TypeError(f"sysctl value must be a str or an int, not {type(value).__name__}")
        return self._core.sysctl(name, value)

    def popen(self, args, **kwargs):
        """subprocess.Popen running inside the lab, from any thread; it lives
        until the lab closes (or its owner dies) and is ended then."""
        if "preexec_fn" in kwargs:
            raise ValueError("popen: preexec_fn is finprobe's (it enters the lab)")
        if self._core is None or self._core.closed:
            raise _core.Error("the lab is closed")
        proc = subprocess.Popen(args, preexec_fn=self._core._enter, **kwargs)
        self._processes.append(proc)
        return proc

    def peer_info(self, conn):
        """What the kernel says of its socket for conn's 4-tuple (sock_diag):
        state, timer, expires, retransmits, ...; state "CLOSED" and timer None
        when it has none."""
        (laddr, lport), (raddr, rport) = self._tuple(conn)
        info = self._core.diag(raddr, rport, laddr, lport)
        if info is None:
            return {"state": State.CLOSED, "timer": None, "expires": None, "retransmits": 0}
        info["state"] = State(info["state"])
        return info

    def peer_state(self, conn):
        """The kernel's state for conn's 4-tuple ("CLOSED": no socket)."""
        return self.peer_info(conn)["state"]

    def wait_peer_state(self, conn, state, timeout=1.0):
        """Poll the kernel's state until it is ``state``; else fp.ExpectError
        naming the last state seen."""
        want = as_state(state)
        self._tuple(conn)
        deadline = time.monotonic() + _args.seconds("timeout", timeout)
        while True:
            seen = self.peer_state(conn)
            if seen == want:
                return seen
            if time.monotonic() >= deadline:
                raise _core.ExpectError(f"the kernel's socket for {_describe(conn)} did not reach "
                                        f"{want.value} within {timeout:g}s: last seen {seen.value}")
            time.sleep(PEER_POLL_INTERVAL)

    def capture(self):
        """fp.Trace of every segment finprobe sent or received in this lab, claimed
        by a connection or not, setup and teardown included (until close).
        Kept only by a ``Lab(capture=True)`` (or while pytest's
        ``--finprobe-pcap`` records): fp.Error otherwise."""
        self._engine.poll(0)
        return _trace.capture_of(self, "fp.Lab(capture=True)")

    # ---- finprobe's side -----------------------------------------------------

    def connect(self, port, *, sport=None, iss=None, options=None, timeout=1.0, time_wait=None):
        """Open a connection to the kernel's (peer_addr, port): SYN, SYN-ACK, ACK,
        done by finprobe. Returns a Connection in ESTABLISHED; a RST answer
        raises fp.ConnectionRefused."""
        _args.port("port", port)
        conn = self.open(port, sport=sport, iss=iss, time_wait=time_wait)
        try:
            conn._handshake(f"{self.peer_addr}:{port}", options, _args.seconds("timeout", timeout))
            return conn
        except BaseException:
            conn.close()
            raise

    def open(self, port, *, sport=None, iss=None, time_wait=None):
        """A Connection to (peer_addr, port) in CLOSED, nothing sent: for tests
        that craft their own handshake."""
        _args.port("port", port)
        if sport is not None:
            _args.port("sport", sport)
        iss = _args.iss(iss)
        time_wait = self.time_wait if time_wait is None else _args.seconds("time_wait", time_wait)
        # One thread at a time from picking a port to holding it: two threads
        # never get the same one.
        with self._port_lock:
            conn = self._engine.open(self.local_addr, self._pick_port(port) if sport is None else sport,
                                     self.peer_addr, port, iss, time_wait, cls=Connection)
            self._connections.add(conn)
        return conn

    def listen_raw(self, port):
        """finprobe listens on (local_addr, port); a kernel socket may connect to it.
        Take connections with ``accept``."""
        _args.port("port", port)
        return RawListener(self, self._engine.listen(self.local_addr, port), port)

    def _pick_port(self, remote_port):
        """Source ports in turn, as a kernel takes them, skipping any that a
        connection of ours or any kernel socket (TIME_WAIT included) still has.
        The caller holds _port_lock until the port is taken."""
        for _ in range(PORT_COUNT):
            port = next(self._next_port)
            if self._engine.has_tuple(self.local_addr, port, self.peer_addr, remote_port):
                continue
            if self._core.diag(self.peer_addr, remote_port, self.local_addr, port) is None:
                return port
        raise _core.Error(f"no free source port towards {self.peer_addr}:{remote_port}")

    def _tuple(self, conn):
        """conn's (local, remote), once it is known to be this Lab's."""
        if not isinstance(conn, _core.Connection):
            raise TypeError(f"expected a Connection, not {type(conn).__name__}")
        if conn not in self._connections:
            raise ValueError(f"{conn!r} is not this Lab's connection: ask the Lab it was made in")
        return conn.local, conn.remote


class RawListener:
    """SYNs to (lab.local_addr, port), turned into Connections by ``accept``."""

    def __init__(self, lab, core_listener, port):
        self._lab, self._core, self.port = lab, core_listener, port

    def accept(self, timeout=1.0, *, handshake=True, iss=None, options=None, time_wait=None):
        """The next connection from the kernel. With ``handshake`` finprobe answers
        the SYN with a SYN-ACK and takes the kernel's ACK (ESTABLISHED); without,
        the Connection comes back in LISTEN as soon as the SYN arrives, the SYN
        taken (irs and rcv_nxt known) and nothing sent."""
        lab = self._lab
        conn = self._core.accept(_args.seconds("timeout", timeout), _args.iss(iss),
                                 lab.time_wait if time_wait is None else _args.seconds("time_wait", time_wait),
                                 cls=Connection)
        if conn is None:
            raise _core.ExpectError(f"no SYN to {lab.local_addr}:{self.port} within {timeout:g}s")
        lab._connections.add(conn)
        try:
            conn.recv(0)  # the SYN: irs, rcv_nxt
            if handshake:
                conn.send(flags="SA", options=DEFAULT_SYN_OPTIONS if options is None else options)
                conn.expect("A", timeout=timeout)
            return conn
        except BaseException:
            conn.close()
            raise

    def __repr__(self):
        return f"<RawListener {self._lab.local_addr}:{self.port}>"


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _describe(conn):
    (la, lp), (ra, rp) = conn.local, conn.remote
    return f"{ra}:{rp} <- {la}:{lp}"


