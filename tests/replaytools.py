"""Real captures for the replay tests: tcpdump files of real exchanges made
inside a Lab, each made when a test asks for it (in its tmp_path), never
checked in.

- ``kernel_capture``: python's http.server or nginx serving a kernel client
  in the same Lab (the client is a /usr/bin/python3 one-liner started with
  lab.popen), recorded by ``tcpdump -i any`` in the Lab's namespace. The
  server closes first (HTTP/1.0: the answer, then its FIN) or last (an
  HTTP/1.1 keep-alive request to nginx: the client reads Content-Length
  bytes and closes first).
- ``stack_capture``: finprobe's GET / against a stack recipe, then the close.
- ``rfc1337_capture``: finprobe against the Lab's kernel where tcp_rfc1337
  matters: the server closes first (TIME_WAIT), the client's last ACK, a RST
  from the client, then a bare ACK on the same 4-tuple.

The same servers run in a fresh Lab for the replay (``http_server``,
``nginx``): a fixed small directory, so that an answer's length is the same
every time.
"""

import contextlib
import os
import selectors
import signal
import subprocess
import time

import finprobe as fp
from labtools import NGINX_CONF

PYTHON = "/usr/bin/python3"
FILE = "file.html"
BODY = "<p>finprobe replay</p>\n" * 8  # 184 bytes: one segment on any link
PORTS = {"http.server": 8000, "nginx": 8080}
START_TIMEOUT = 5.0   # seconds for a server or tcpdump to be ready
CLIENT_TIMEOUT = 5.0  # seconds for the kernel client's whole exchange
SETTLE_TIMEOUT = 3.0  # seconds for a capture file to hold the whole exchange
SNAPLEN = 4096        # bytes kept of a packet: every segment here is smaller
RING_KIB = 16384      # tcpdump's ring (-B): 4096 frames of SNAPLEN


def www(tmp):
    """The servers' directory under tmp, holding FILE (BODY); made once."""
    root = os.path.join(os.fspath(tmp), "www")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, FILE), "w") as f:
        f.write(BODY)
    return root


# ---- processes in a Lab ------------------------------------------------------------


def stop(proc, sig=signal.SIGTERM, timeout=5.0):
    """End proc (sig, then SIGKILL after timeout) and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening(lab, port):
    """Whether a socket of the Lab's kernel listens on port. Not lab.popen:
    a Lab records what it started for the tests fp.replay writes, and ss is
    no part of the peer."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], preexec_fn=lab._core._enter,
                         capture_output=True, text=True, timeout=START_TIMEOUT).stdout
    return bool(out.strip())


def _wait_listening(lab, port, proc, what, log=None):
    deadline = time.monotonic() + START_TIMEOUT
    while not listening(lab, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            told = open(log).read() if log and os.path.exists(log) else ""
            raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT:g}s "
                               f"(exit {proc.returncode}): {told[-2000:]}")
        time.sleep(0.02)


@contextlib.contextmanager
def http_server(lab, tmp, port=PORTS["http.server"]):
    """``python3 -m http.server`` on (lab.peer_addr, port) serving www(tmp),
    listening when entered, ended when left."""
    log = os.path.join(os.fspath(tmp), f"http.server-{port}.log")
    with open(log, "a") as out:
        proc = lab.popen([PYTHON, "-m", "http.server", str(port), "--bind", lab.peer_addr,
                          "-d", www(tmp)], stdout=out, stderr=out)
    try:
        _wait_listening(lab, port, proc, "http.server", log)
        yield proc
    finally:
        stop(proc)




@contextlib.contextmanager
def nginx(lab, tmp, port=PORTS["nginx"], keepalive="30s"):
    """nginx on (lab.peer_addr, port) serving www(tmp), listening when
    entered, ended when left. ``keepalive="0"`` makes it close after every
    answer, HTTP/1.1 keep-alive requests included (it closes first)."""
    tmp = os.fspath(tmp)
    listen = f"[{lab.peer_addr}]" if ":" in lab.peer_addr else lab.peer_addr
    conf = os.path.join(tmp, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=port, keepalive=keepalive, listens=f"listen {listen}:{port};",
                                  root=www(tmp)))
    log = os.path.join(tmp, f"nginx-{port}.log")
    with open(os.path.join(tmp, f"nginx-{port}.out"), "a") as out:
        proc = lab.popen(["nginx", "-p", tmp, "-e", log, "-c", conf], stdout=out, stderr=out)
    try:
        _wait_listening(lab, port, proc, "nginx", log)
        yield proc
    finally:
        stop(proc)


# A server that closes each connection as soon as it has accepted it: it
# closes first, before any data, and ends in TIME_WAIT.
CLOSER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    s.accept()[0].close()
"""


@contextlib.contextmanager
def closing_server(lab, tmp=None, port=8081):
    """CLOSER on (lab.peer_addr, port), listening when entered, ended when left."""
    proc = lab.popen([PYTHON, "-c", CLOSER, lab.peer_addr, str(port)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(lab, port, proc, "the closing server")
        yield proc
    finally:
        stop(proc)


SERVERS = {"http.server": http_server, "nginx": nginx, "closer": closing_server}


# ---- tcpdump -------------------------------------------------------------------------


@contextlib.contextmanager
def tcpdump(lab, path, port, iface="any"):
    """tcpdump in the Lab's namespace (or run by ``lab``, a callable taking
    popen's arguments) writing ``tcp port PORT`` on iface to path: capturing when entered; on leaving, stopped by SIGINT (which
    writes what it holds) and reaped. RuntimeError if it does not start.

    In immediate mode libpcap's ring holds its buffer over the snapshot
    length in frames: tcpdump's defaults (2 MiB, 262144) make 8, and a
    busy machine's tcpdump, a little late, lost the 9th and 10th segments
    ("2 packets dropped by kernel"). SNAPLEN and RING_KIB make thousands."""
    popen = lab.popen if hasattr(lab, "popen") else lab
    proc = popen(["tcpdump", "-i", iface, "-U", "--immediate-mode", "-n", "-s", str(SNAPLEN),
                      "-B", str(RING_KIB), "-w", os.fspath(path), f"tcp port {port}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_tcpdump(proc)
        yield path
    finally:
        stop(proc, signal.SIGINT)
        proc.stderr.close()


def _wait_tcpdump(proc):
    """Until tcpdump says "listening on" (its socket is bound: what arrives
    from now on is recorded); its stderr read without blocking past the deadline."""
    told, deadline = b"", time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while b"listening on" not in told:
            left = deadline - time.monotonic()
            chunk = os.read(proc.stderr.fileno(), 4096) if left > 0 and sel.select(left) else b""
            if not chunk:
                raise RuntimeError(f"tcpdump did not start within {START_TIMEOUT:g}s: "
                                   f"{told.decode(errors='replace')}")
            told += chunk


def read_when(path, done, timeout=SETTLE_TIMEOUT):
    """fp.read_pcap(path) once done(trace) holds: tcpdump writes each packet
    as it comes (-U), and the last ones may still be on their way. A file
    read mid-write (a partial record) counts as not done yet. The last
    trace read, done or not, when timeout passes."""
    deadline, trace = time.monotonic() + timeout, None
    while True:
        try:
            trace = fp.read_pcap(path)
            if done(trace):
                return trace
        except (fp.Error, OSError):
            pass
        if time.monotonic() > deadline:
            return trace
        time.sleep(0.02)


def finished(trace):
    """Whether trace's (one) connection has ended: a RST, or each side's FIN
    sent and acknowledged by the other."""
    if any("R" in s.flags for s in trace):
        return True
    fins = {}  # sender (addr, port) -> seq just past its FIN
    for s in trace:
        if "F" in s.flags:
            fins[(s.src, s.sport)] = (s.seq + s.seg_len) % (1 << 32)
    if len(fins) < 2:
        return False
    acked = {(s.dst, s.dport) for s in trace
             if "A" in s.flags and fins.get((s.dst, s.dport)) == s.ack}
    return acked == set(fins)


# ---- the kernel client ---------------------------------------------------------------

# HTTP/1.0: the server answers and closes first; the client reads to EOF,
# then closes. HTTP/1.1 keep-alive: the client reads the header and
# Content-Length bytes, then closes first (nginx closes after it).
CLIENT = r"""
import socket, sys, time
addr, port, keep_alive, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
s = socket.create_connection((addr, port), timeout=5)
time.sleep(pause)
if keep_alive:
    s.sendall(b"GET /FILE HTTP/1.1\r\nHost: finprobe\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536) or sys.exit("EOF before the header's end")
    head, body = got.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(65536) or sys.exit("EOF before Content-Length bytes")
else:
    s.sendall(b"GET /FILE HTTP/1.0\r\n\r\n")
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
time.sleep(pause)
s.close()
print(head.split(b"\r\n")[0].decode(), len(body))
""".replace("FILE", FILE)


def kernel_client(lab, port, keep_alive=False, pause=0.0):
    """Run the kernel client in the Lab against (lab.peer_addr, port),
    pausing ``pause`` seconds after the handshake and again before its
    close; returns its status line; RuntimeError if it failed or got
    another body."""
    proc = lab.popen([PYTHON, "-c", CLIENT, lab.peer_addr, str(port), "1" if keep_alive else "0", str(pause)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=CLIENT_TIMEOUT + 2 * pause)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"the kernel client took more than {CLIENT_TIMEOUT:g}s") from None
    status, _, length = out.strip().rpartition(" ")
    if proc.returncode != 0 or not length.isdigit() or int(length) != len(BODY):
        raise RuntimeError(f"the kernel client failed (exit {proc.returncode}): {out}{err}")
    return status


# ---- the captures --------------------------------------------------------------------


def kernel_capture(tmp, name, server="http.server", *, keep_alive=False, pause=0.0, ipv6=False, port=None,
                   **config):
    """A real exchange, captured to tmp/<name>.pcap: server ("http.server" or
    "nginx", with **config for nginx) serving the kernel client in a Lab of
    its own (keep_alive: an HTTP/1.1 keep-alive request, the client closing
    first; pause: the client's pauses). Returns the path; the Lab is gone
    when it returns."""
    port = PORTS[server] if port is None else port
    path = os.path.join(os.fspath(tmp), f"{name}.pcap")
    with fp.Lab(ipv6=ipv6) as lab, SERVERS[server](lab, tmp, port, **config):
        with tcpdump(lab, path, port):
            kernel_client(lab, port, keep_alive, pause)
            trace = read_when(path, finished)
    return _checked(path, trace)


def stack_capture(tmp, name, recipe="lwip", *, ipv6=False, port=8080, rst_in_time_wait=False):
    """finprobe's GET / against stack recipe ``recipe`` and the close (the
    stack closes first; we ACK its FIN, then send ours; it ends in
    TIME_WAIT), captured to tmp/<name>.pcap. With rst_in_time_wait, then
    our RST and a bare ACK below SND.NXT, as in rfc1337_capture: the
    recipes differ there (lwip ignores both, gvisor answers the ACK with an
    ACK, slirp's RST ended TIME_WAIT and it answers with RST). Returns the path.

    The capture is the Lab's own (capture=True), written by Trace.to_pcap:
    tcpdump on the Lab's TAP sees only the stack's half, as finprobe's frames
    leave by PACKET_QDISC_BYPASS, past the kernel's packet taps."""
    path = os.path.join(os.fspath(tmp), f"{name}.pcap")
    with fp.Lab(**fp.stacks.lab_args(recipe, port, ipv6), capture=True) as lab:
        conn = lab.connect(port, timeout=2)
        conn.write(b"GET / HTTP/1.0\r\n\r\n")
        while "F" not in conn.expect(timeout=2).flags:
            pass
        conn.ack()
        conn.fin()
        conn.expect("A", timeout=2)
        if rst_in_time_wait:
            conn.rst()
            conn.send(flags="A", seq=(conn.snd_nxt - 1) % (1 << 32))
            conn.recv(timeout=0.5)  # its answer, if it has one
        lab.capture().to_pcap(path)
    return _checked(path, fp.read_pcap(path))


def rfc1337_capture(tmp, name, rfc1337, *, ipv6=False, port=8081):
    """finprobe as the client of closing_server in a Lab with tcp_rfc1337
    set to rfc1337 (0 or 1), recorded by tcpdump: the server closes first,
    we ACK its FIN and send ours, its last ACK leaves it in TIME_WAIT; then
    our RST (seq = our SND.NXT) and a bare ACK one below it, on the same
    4-tuple. With 0 the RST ends TIME_WAIT and the ACK is answered by RST;
    with 1 TIME_WAIT ignores the RST and answers the out-of-window ACK with
    an ACK (an ACK at SND.NXT itself it would take silently). Returns the path."""
    path = os.path.join(os.fspath(tmp), f"{name}.pcap")
    with fp.Lab(ipv6=ipv6) as lab, closing_server(lab, tmp, port):
        lab.sysctl("net.ipv4.tcp_rfc1337", rfc1337)
        with tcpdump(lab, path, port):
            conn = lab.connect(port)
            conn.expect("FA")
            conn.ack()
            conn.fin()
            conn.expect("A")
            lab.wait_peer_state(conn, "TIME_WAIT")
            conn.rst()
            conn.send(flags="A", seq=(conn.snd_nxt - 1) % (1 << 32))
            answer = conn.expect("R" if rfc1337 == 0 else "A")
            trace = read_when(path, lambda t: len(t) == 10 and t[-1].flags == answer.flags)
    return _checked(path, trace)


def _checked(path, trace):
    """path, once the file holds one whole connection."""
    if trace is None or not finished(trace) or len({(s.sport, s.dport) for s in trace}) != 2:
        raise RuntimeError(f"the capture {path} is not one whole connection:\n"
                           f"{trace.ladder_text() if trace is not None else '(unreadable)'}")
    return path
