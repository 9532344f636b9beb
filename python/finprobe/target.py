"""fp.Target: a remote TCP stack as the peer, over raw sockets.

finprobe speaks from this host's own address through raw IP sockets and
captures the target's answers on the outgoing interface
(``_core.Engine.raw``); the kernel routes and resolves neighbours. Two things
keep the local kernel, which has no socket for finprobe's connections, out of
the way, each for exactly one connection and only while it is open:

- its source port is reserved by a kernel TCP socket bound to it (not
  listening), so the kernel's own connections cannot take that port;
  unless the caller names one, ports are taken in turn from the kernel's
  ephemeral range, as the kernel's own connect() does, skipping any that
  this binding shows in use (a socket of the kernel's, a connection of ours);
- an nftables rule (``_core.Guard``) drops the RSTs the kernel would send in
  answer to the target's segments, in a table of finprobe's own that goes
  with the last rule, and with the process (owner flag), SIGKILL included.
"""

import errno
import os
import random
import socket
import sys
import threading
import weakref

from . import _args, _core
from . import trace as _trace
from .connection import Connection

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"


class Target:
    """A remote TCP endpoint that finprobe connects to; see shared/API.md,
    "Remote targets, over raw sockets"."""

    def __init__(self, host, port, *, iface=None, src=None, time_wait=60.0, capture=False):
        _args.port("port", port)
        if iface is not None and not isinstance(iface, str):
            raise TypeError(f"iface must be an interface name as str, not {type(iface).__name__}")
        if src is not None and not isinstance(src, str):
            raise TypeError(f"src must be an IP address as str, not {type(src).__name__}")
        self.host, self.port = host, port
        self.time_wait = _args.seconds("time_wait", time_wait)
        self.addr = _resolve(host, port, src)
        self.family = socket.AF_INET6 if ":" in self.addr else socket.AF_INET
        _require_capabilities()
        self._closed = True
        self._engine, self.src, ifindex = _core.Engine.raw(self.addr, port, src=src,
                                                           ifindex=_ifindex(iface))
        self.iface = socket.if_indextoname(ifindex)
        try:
            if capture:
                self._engine.capture_start()
            self._guard = _core.Guard()
        except BaseException:
            self._engine.close()
            raise
        self._holds = set()
        self._closed = False
        _trace._source_opened(self)

    # ---- lifetime ------------------------------------------------------------

    def close(self):
        """Close every connection (their rules and ports go), the table, the sockets."""
        if self._closed:
            return
        self._closed = True
        try:
            for hold in list(self._holds):
                hold.close()
            _trace._source_closing(self)
        finally:
            self._guard.close()
            self._engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"from {self.src} on {self.iface}"
        return f"<Target {_args.endpoint(self.addr, self.port)} {state}>"

    def capture(self):
        """fp.Trace of every segment finprobe sent to or received from the target,
        claimed by a connection or not, setup and teardown included (until close)."""
        self._engine.poll(0)
        return _trace.capture_of(self, "fp.Target(..., capture=True)")

    # ---- connections ---------------------------------------------------------

    def connect(self, *, sport=None, iss=None, options=None, timeout=3.0, time_wait=None):
        """Open a connection to the target: SYN, SYN-ACK, ACK, done by finprobe.
        Returns a Connection in ESTABLISHED; a RST answer raises
        fp.ConnectionRefused, no answer within ``timeout`` fp.ExpectError."""
        timeout = _args.seconds("timeout", timeout)
        conn = self.open(sport=sport, iss=iss, time_wait=time_wait)
        try:
            conn._handshake(_args.endpoint(self.addr, self.port), options, timeout)
            return conn
        except BaseException:
            conn.close()
            raise

    def open(self, *, sport=None, iss=None, time_wait=None):
        """A Connection to the target in CLOSED, nothing sent, its source port
        reserved and the kernel's RSTs for it suppressed: for tests that craft
        their own handshake."""
        if self._closed:
            raise _core.Error(f"{self!r}: the target is closed")
        if sport is not None:
            _args.port("sport", sport)
        time_wait = self.time_wait if time_wait is None else _args.seconds("time_wait", time_wait)
        iss = _args.iss(iss)
        hold = _Hold(self, self._reserve(sport))
        try:
            tuple_ = (self.src, hold.sock.getsockname()[1], self.addr, self.port)
            self._guard.add(*tuple_)
            hold.rule = tuple_
            conn = self._engine.open(*tuple_, iss, time_wait, cls=Connection)
        except BaseException:
            hold.release()
            raise
        hold.attach(conn)
        return conn

    def _reserve(self, sport):
        """A kernel TCP socket bound to (src, sport), or to the next free port
        in turn: while it is open no connection of the kernel's takes the port."""
        if sport is None:
            return self._reserve_next()
        sock = _bound(self.family, self.src, sport)
        if isinstance(sock, OSError):
            if sock.errno == errno.EADDRINUSE:
                raise _core.Error(f"sport {sport} is in use on {self.src}, by a socket of the "
                                  "kernel's or a connection of ours")
            if sock.errno == errno.EACCES:
                raise _core.PermissionError(f"sport {sport} is a privileged port: binding it needs "
                                            "CAP_NET_BIND_SERVICE")
            raise sock
        return sock

    def _reserve_next(self):
        """The next port in turn towards this target that binds: one a port,
        round the ephemeral range once at most."""
        first, last = _ephemeral_range()
        reserved = _reserved_ports()
        for port in _TURNS.ports((self.src, self.addr, self.port), first, last):
            if port in reserved:
                continue
            sock = _bound(self.family, self.src, port)
            if not isinstance(sock, OSError):
                return sock
            if sock.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise sock
        raise _core.Error(f"no free source port on {self.src} towards {_args.endpoint(self.addr, self.port)} "
                          f"in the ephemeral range {first}-{last} (net.ipv4.ip_local_port_range): "
                          "all are held by connections of ours, sockets of the kernel's or reserved")


class _Turns:
    """Source ports taken in turn, as the kernel's connect() takes them: for
    each (src, dst, dport) the port after the last one handed out, wrapping
    in the range; the first from a random place, so that two processes (or
    two runs against a server still holding TIME_WAITs) do not start alike.
    Shared by the process's Targets and safe for threads: each port is handed
    out once a turn; whether it is free, binding it says."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last = {}

    def ports(self, key, first, last):
        size = last - first + 1
        for _ in range(size):
            with self._lock:
                prev = self._last.get(key)
                if prev is None or not first <= prev <= last:
                    port = random.randint(first, last)
                else:
                    port = first + (prev + 1 - first) % size
                self._last[key] = port
            yield port


_TURNS = _Turns()


def _bound(family, addr, port):
    """A TCP socket bound to (addr, port), or the OSError binding it gave."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((addr, port))
        return sock
    except OSError as e:
        sock.close()
        return e


def _ephemeral_range():
    """(first, last) of this network namespace's net.ipv4.ip_local_port_range
    (for IPv6 too); Linux's default where it cannot be read."""
    try:
        with open(PORT_RANGE) as f:
            first, last = (int(n) for n in f.read().split())
        if 1 <= first <= last <= 65535:
            return first, last
    except (OSError, ValueError):
        pass
    return 32768, 60999


def _reserved_ports():
    """The ports net.ipv4.ip_local_reserved_ports keeps out of the kernel's
    own picks ("8080,9000-9010"): ours skip them too."""
    try:
        with open(RESERVED_PORTS) as f:
            text = f.read().strip()
    except OSError:
        return frozenset()
    ports = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        try:
            ports.update(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return ports


class _Hold:
    """What one of a Target's connections holds while it is open: the socket
    reserving its source port and its guard rule. The connection's close()
    releases them, and so does its end if it is never closed."""

    def __init__(self, target, sock):
        self.target, self.sock, self.rule = target, sock, None
        self._conn = self._finalizer = None

    def attach(self, conn):
        self._conn = weakref.ref(conn)
        self._finalizer = weakref.finalize(conn, self.release)
        conn._on_close(self._finalizer)
        self.target._holds.add(self)

    def close(self):
        conn = self._conn() if self._conn else None
        if conn is not None:
            conn.close()
        self._finalizer()

    def release(self):
        rule, self.rule = self.rule, None
        try:
            if rule is not None and not self.target._guard.closed:
                self.target._guard.remove(*rule)
        finally:
            self.sock.close()
            self.target._holds.discard(self)


def _resolve(host, port, src):
    """host as an address: itself if it is one, else its first address (of
    src's family when src is given)."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        pass
    family = socket.AF_UNSPEC if src is None else (socket.AF_INET6 if ":" in src else socket.AF_INET)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _core.Error(f"cannot resolve host {host!r}: {e.strerror}") from None
    return infos[0][4][0]


def _ifindex(iface):
    if iface is None:
        return 0
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise ValueError(f"iface: no interface named {iface!r}") from None


def _require_capabilities():
    """fp.PermissionError naming what is missing of CAP_NET_RAW (raw sockets)
    and CAP_NET_ADMIN (the nftables rule), and how to grant it."""
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return  # cannot tell: the sockets and nftables will say
    missing = [name for bit, name in ((CAP_NET_RAW, "CAP_NET_RAW"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"))
               if not caps >> bit & 1]
    if missing:
        binary = os.path.realpath(sys.executable)
        raise _core.PermissionError(
            f"fp.Target needs CAP_NET_RAW (raw sockets) and CAP_NET_ADMIN (the nftables rule that "
            f"keeps the local kernel from answering with RST); this process lacks "
            f"{' and '.join(missing)}. Run as root, or grant them to the interpreter: "
            f"sudo setcap cap_net_raw,cap_net_admin+ep {binary}")
