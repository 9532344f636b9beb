"""fp.Lab: a Linux kernel TCP stack as the peer, in a network namespace of its own.

The C side (``_core.Lab``) makes two fresh network namespaces joined by a
veth pair, through a helper process that hands back descriptors; the kernel
owns 192.0.2.1 / 2001:db8::1 in one, finprobe speaks as 192.0.2.2 /
2001:db8::2 from the other over AF_PACKET. Nothing is visible outside, and
the lab vanishes with the ``with`` block, an exception or the process.

With ``stack=`` the peer is a user-space TCP/IP stack instead: the C side
makes one namespace with a TAP device and no address, the stack's command
runs there in a process group of its own, and finprobe speaks to it over
AF_PACKET on the TAP, answering ARP / neighbour solicitation for its own
address and nothing else. A stack whose command holds ``{control}`` tells
its connections' states on a Unix socket at that path (a line protocol,
see Lab.peer_state): its own view, labelled ``peer_state_source == "stack"``.
"""

import collections
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from random import getrandbits

from . import _args, _core
from . import trace as _trace
from .connection import DEFAULT_SYN_OPTIONS, Connection
from .state import State, as_state

FIRST_PORT, PORT_COUNT = 40000, 20000
PEER_POLL_INTERVAL = 0.002
PREFIX = {False: 24, True: 64}
RESOLVE_SLICE = 0.1  # seconds between looks at whether the stack still runs
STOP_GRACE = 0.5     # seconds between SIGTERM and SIGKILL of the stack's group
OUTPUT_LINES = 20    # of the stack's output, in a readiness failure
CONTROL_TIMEOUT = 2.0  # seconds a stack has to answer on its control socket
CONTROL_FILE = "control"
STATES = frozenset(s.value for s in State)


class Lab:
    """A kernel TCP peer in a lab of its own; see shared/API.md, "The lab".
    With ``stack=`` (a command) the peer is a user-space TCP/IP stack on a
    TAP device instead ("A user-space TCP stack as the peer"): ``{tap}``,
    ``{peer_addr}``, ``{local_addr}`` and ``{prefix}`` are filled in its
    arguments and in ``env`` (added to the environment); ready when it
    answers ARP / neighbour solicitation within ``ready_timeout``.

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
    stack = None          # subprocess.Popen of a stack Lab's stack
    _stack_output = None  # its stdout and stderr, a temporary file
    _control_dir = None   # a private directory holding its control socket's path
    _control = None       # our connected socket.socket to it, made on first use

    def __init__(self, ipv6=False, *, stack=None, env=None, ready_timeout=5.0,
                 time_wait=60.0, capture=False):
        if not isinstance(ipv6, bool):
            raise TypeError(f"ipv6 must be a bool, not {type(ipv6).__name__}")
        self.ipv6 = ipv6
        self.time_wait = _args.seconds("time_wait", time_wait)
        self.ready_timeout = _args.seconds("ready_timeout", ready_timeout)
        _check_stack(stack, env)
        self.peer_addr = "2001:db8::1" if self.ipv6 else "192.0.2.1"
        self.local_addr = "2001:db8::2" if self.ipv6 else "192.0.2.2"
        self.prefix = PREFIX[self.ipv6]
        self.family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        self._connections = weakref.WeakSet()
        self._processes = []
        self._sockets = []
        # How this Lab was set up, for a test fp.replay writes (to_pytest):
        # the stack's command as given, and each listen, sysctl set and popen.
        self._stack_spec = (stack, env)
        self._setup = []
        self._port_lock = threading.Lock()
        self._core = _core.Lab(stack=stack is not None)
        try:
            local_mac, peer_mac = self._core.macs
            if stack is not None:
                self._start_stack(stack, env)
                peer_mac = self._wait_ready(local_mac)
            self._peer_mac = peer_mac
            self._engine = _core.Engine(self._core.packet_fd, local_mac, peer_mac, self._core,
                                        answer=self.local_addr if stack is not None else None)
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
        self._stop_stack()
        self._close_control()
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
        if self.stack is not None:
            return (f"<Lab peer {self.peer_addr} (stack {self._stack_name()}, pid {self.stack.pid}), "
                    f"us {self.local_addr}>")
        return f"<Lab peer {self.peer_addr}, us {self.local_addr}>"

    # ---- a user-space stack as the peer -------------------------------------

    def _fill(self, text):
        """{tap}, {peer_addr}, {local_addr}, {prefix} and {control} filled in;
        other braces stay as they are (no str.format: a command may hold JSON)."""
        for key, value in (("{tap}", self._core.tap), ("{peer_addr}", self.peer_addr),
                           ("{local_addr}", self.local_addr), ("{prefix}", str(self.prefix)),
                           ("{control}", self._control_path())):
            text = text.replace(key, value)
        return text

    def _control_path(self):
        """The control socket's path, in a directory only we (root) may enter,
        so no one else can stand in for the stack; "" without one."""
        if self._control_dir is None:
            return ""
        return os.path.join(self._control_dir, CONTROL_FILE)

    def _start_stack(self, stack, env):
        """The stack's command in the lab, leading a process group of its own
        (which the lab's helper kills if we die), its output in a file."""
        if any("{control}" in a for a in itertools.chain(stack, (env or {}).values())):
            self._control_lock = threading.Lock()
            self._control_dir = tempfile.mkdtemp(prefix="finprobe-stack-")
        environ = dict(os.environ)
        environ.update({k: self._fill(v) for k, v in (env or {}).items()})
        self._stack_output = tempfile.TemporaryFile()
        self.stack = subprocess.Popen([self._fill(a) for a in stack], env=environ,
                                      stdin=subprocess.DEVNULL, stdout=self._stack_output,
                                      stderr=subprocess.STDOUT, process_group=0,
                                      preexec_fn=self._core._enter)

    def _wait_ready(self, local_mac):
        """The stack's MAC once it answers ARP / neighbour solicitation for
        peer_addr; fp.Error with its last output if it does not within
        ready_timeout, or exits first."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            mac = _core.Engine.resolve(self._core.packet_fd, local_mac, self.local_addr,
                                       self.peer_addr, min(left, RESOLVE_SLICE))
            if mac is not None:
                return mac
            code = self.stack.poll()
            if code is not None:
                raise _core.Error(f"the stack {self._stack_name()} exited with status {code} before "
                                  f"answering for {self.peer_addr}; its last output:\n{self._stack_tail()}")
            if left == 0.0:
                raise _core.Error(f"the stack {self._stack_name()} did not answer "
                                  f"{'neighbour solicitation' if self.ipv6 else 'ARP'} for {self.peer_addr} "
                                  f"within {self.ready_timeout:g}s; its last output:\n{self._stack_tail()}")

    def _stack_name(self):
        return os.path.basename(self.stack.args[0])

    def _stack_tail(self):
        """The last OUTPUT_LINES lines the stack wrote, or a note that it wrote none."""
        out = self._stack_output
        out.flush()
        out.seek(0)
        tail = collections.deque(out, maxlen=OUTPUT_LINES)
        return b"".join(tail).decode(errors="replace").rstrip() or "(nothing)"

    def _stop_stack(self):
        """SIGTERM to the stack's process group, SIGKILL after a short grace.
        The group outlives its leader (a worker may remain): it is signalled
        even when the leader is gone already."""
        proc = self.stack
        if proc is None or self._stack_output.closed:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        self._stack_output.close()

    def _close_control(self):
        """Our control connection closed and the private directory removed
        (after the stack: it no longer listens there), once no thread is
        asking it."""
        if self._control_dir is None:
            return
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    def _ask_stack(self, line):
        """One request line to the stack's control socket, its answer line
        (without the newline); fp.Error if it does not answer within
        CONTROL_TIMEOUT or answers "error ...". One question at a time:
        threads may share the Lab."""
        name = self._stack_name()
        with self._control_lock:
            if self._control_dir is None:
                raise _core.Error("the lab is closed")
            try:
                if self._control is None:
                    self._control = self._connect_control()
                self._control.sendall(line.encode() + b"\n")
                answer = self._read_line(self._control)
            except (OSError, EOFError) as e:
                if self._control is not None:
                    self._control.close()
                    self._control = None
                why = "did not answer in time" if isinstance(e, TimeoutError) else str(e) or "hung up"
                raise _core.Error(f"the stack {name} did not answer on its control socket "
                                  f"{self._control_path()} within {CONTROL_TIMEOUT:g}s: {why}") from None
        if answer.startswith("error"):
            raise _core.Error(f"the stack {name} refused {line!r}: {answer[5:].strip()}")
        return answer

    def _connect_control(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONTROL_TIMEOUT)
            sock.connect(self._control_path())
            return sock
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _read_line(sock):
        """Bytes up to a newline, within the socket's timeout as a whole."""
        deadline = time.monotonic() + CONTROL_TIMEOUT
        got = b""
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no whole line")
            sock.settimeout(left)
            chunk = sock.recv(256)
            if not chunk:
                raise EOFError("it hung up")
            got += chunk
        return got.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _stack_state(self, conn):
        """The stack's own state for conn (its 4-tuple as the stack sees it)."""
        (laddr, lport), (raddr, rport) = self._tuple(conn)
        answer = self._ask_stack(f"state {raddr} {rport} {laddr} {lport}")
        if answer not in STATES:
            raise _core.Error(f"the stack {self._stack_name()} answered {answer!r}, "
                              f"not a state name, for {_describe(conn)}")
        return State(answer)

    @property
    def peer_state_source(self):
        """Whose view lab.peer_state gives: "socket" (the kernel's sockets,
        sock_diag), "stack" (the stack's own, on its control socket), or None
        (a stack Lab without ``{control}``: there is none)."""
        if self.stack is None:
            return "socket"
        return "stack" if self._control_dir is not None else None

    def _kernel_only(self, what):
        if self.stack is not None:
            raise _core.Error(f"lab.{what} needs the kernel's sockets, but this Lab's peer is the "
                              f"user-space stack {self._stack_name()}, not the kernel")

    # ---- the kernel's side ---------------------------------------------------

    def socket(self, family=None, type=socket.SOCK_STREAM):
        """A socket.socket made inside the lab (family: the lab's by default)."""
        self._kernel_only("socket")
        sock = self._core.socket(self.family if family is None else int(family), int(type), 0)
        self._sockets.append(sock)
        return sock

    def listen(self, port, backlog=128):
        """A kernel socket listening on (peer_addr, port) inside the lab."""
        self._kernel_only("listen")
        _args.port("port", port)
        sock = self.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.peer_addr, port))
            sock.listen(backlog)
            self._setup.append(("listen", port, backlog))
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
        result = self._core.sysctl(name, value)
        if value is not None:
            self._setup.append(("sysctl", name, value))
        return result

    def popen(self, args, **kwargs):
        """subprocess.Popen running inside the lab, from any thread; it lives
        until the lab closes (or its owner dies) and is ended then."""
        if "preexec_fn" in kwargs:
            raise ValueError("popen: preexec_fn is finprobe's (it enters the lab)")
        if self._core is None or self._core.closed:
            raise _core.Error("the lab is closed")
        proc = subprocess.Popen(args, preexec_fn=self._core._enter, **kwargs)
        self._processes.append(proc)
        if not isinstance(args, (str, bytes)):
            self._setup.append(("popen", list(args), {k: kwargs[k] for k in ("cwd", "env") if k in kwargs}))
        return proc

    def peer_info(self, conn):
        """What the kernel says of its socket for conn's 4-tuple (sock_diag):
        state, timer, expires, retransmits, ...; state "CLOSED" and timer None
        when it has none. A stack that tells its states (``{control}``) gives
        the state only: timer, expires and retransmits are None."""
        if self.stack is not None and self._control_dir is not None:
            return {"state": self._stack_state(conn), "timer": None, "expires": None,
                    "retransmits": None}
        self._kernel_only("peer_info")
        (laddr, lport), (raddr, rport) = self._tuple(conn)
        info = self._core.diag(raddr, rport, laddr, lport)
        if info is None:
            return {"state": State.CLOSED, "timer": None, "expires": None, "retransmits": 0}
        info["state"] = State(info["state"])
        return info

    def peer_state(self, conn):
        """The kernel's state for conn's 4-tuple ("CLOSED": no socket). In a
        stack Lab whose command holds ``{control}``, the stack's own: it is
        asked "state LADDR LPORT RADDR RPORT" (the 4-tuple as it sees it) and
        answers a state name ("CLOSED": no such connection) or "error TEXT";
        fp.Error if it does not within CONTROL_TIMEOUT."""
        if self.stack is not None and self._control_dir is not None:
            return self._stack_state(conn)
        self._kernel_only("peer_state")
        return self.peer_info(conn)["state"]

    def wait_peer_state(self, conn, state, timeout=1.0):
        """Poll the kernel's (or the telling stack's) state until it is
        ``state``; else fp.ExpectError naming the last state seen."""
        if self.peer_state_source is None:
            self._kernel_only("wait_peer_state")
        want = as_state(state)
        self._tuple(conn)
        deadline = time.monotonic() + _args.seconds("timeout", timeout)
        while True:
            seen = self.peer_state(conn)
            if seen == want:
                return seen
            if time.monotonic() >= deadline:
                whose = "the kernel's socket" if self.stack is None else "the stack's connection"
                raise _core.ExpectError(f"{whose} for {_describe(conn)} did not reach "
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
        timeout = _args.seconds("timeout", timeout)
        conn = self._open(port, sport, iss, time_wait)
        try:
            if options is None:
                # SYN, answer and ACK in one C call (True), or the answer it
                # stopped at: Connection._handshake's fast path, without
                # building the text its errors name unless there is one.
                answer = conn._connect(timeout)
                if answer is not True:
                    conn._handshake_answered(f"{self.peer_addr}:{port}", answer, timeout)
            else:
                conn._handshake(f"{self.peer_addr}:{port}", options, timeout)
            return conn
        except BaseException:
            conn.close()
            raise

    def open(self, port, *, sport=None, iss=None, time_wait=None):
        """A Connection to (peer_addr, port) in CLOSED, nothing sent: for tests
        that craft their own handshake."""
        return self._open(port, sport, iss, time_wait)

    def _open(self, port, sport, iss, time_wait):
        """open's work, for connect too: each argument checked once, the port
        picked and the connection made in few calls: lab.open was a third of
        a sequential lifecycle's time (bench/lifecycle.py)."""
        _args.port("port", port)
        if sport is not None:
            _args.port("sport", sport)
        iss = getrandbits(32) if iss is None else _args.iss(iss)
        time_wait = self.time_wait if time_wait is None else _args.seconds("time_wait", time_wait)
        # One thread at a time from picking a port to holding it: two threads
        # never get the same one. sport=None takes source ports in turn, as a
        # kernel does, skipping any that a connection of ours or any kernel
        # socket (of either family, TIME_WAIT included) still has; _core.Lab
        # keeps the turn.
        with self._port_lock:
            if sport is None:
                conn = self._core.open_picked(self._engine, self.local_addr, self.peer_addr, port,
                                              FIRST_PORT, PORT_COUNT, iss, time_wait, Connection)
                if conn is None:
                    raise _core.Error(f"no free source port towards {self.peer_addr}:{port}")
            else:
                conn = self._engine.open(self.local_addr, sport, self.peer_addr, port, iss, time_wait, Connection)
            self._connections.add(conn)
        return conn

    def listen_raw(self, port):
        """finprobe listens on (local_addr, port); a kernel socket may connect to it.
        Take connections with ``accept``."""
        _args.port("port", port)
        return RawListener(self, self._engine.listen(self.local_addr, port), port)

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


def _check_stack(stack, env):
    """stack: None or a command (a list or tuple of str); env: None or a dict
    of str to str, added to the environment."""
    if stack is None:
        if env is not None:
            raise ValueError("env is for the stack's command: give stack= too")
        return
    if not isinstance(stack, (list, tuple)):
        raise TypeError(f"stack must be a list of str (a command), not {type(stack).__name__}")
    if not stack:
        raise ValueError("stack must name a command, got an empty list")
    for arg in stack:
        if not isinstance(arg, str):
            raise TypeError(f"stack must be a list of str, but holds {arg!r}")
    if env is None:
        return
    if not isinstance(env, dict):
        raise TypeError(f"env must be a dict of str to str, not {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"env must be a dict of str to str, but holds {key!r}: {value!r}")


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone


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


