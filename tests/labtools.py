"""Helpers the Lab tests share: a connection in ESTABLISHED, and the
processes, namespaces and descriptors a Lab may leave behind."""

import contextlib
import ctypes
import os
import secrets
import subprocess
import textwrap
import time

PYTHON = "/usr/bin/python3"
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


# A 4-tuple over Engine.pair() (the engines fixture), seen from each end.
OURS = ("192.0.2.2", 40000, "192.0.2.1", 8080)
THEIRS = ("192.0.2.1", 8080, "192.0.2.2", 40000)


def established(lab, port=8080):
    """A connection of ours in ESTABLISHED with a kernel socket of the lab:
    (our Connection, the kernel's accepted socket)."""
    server = lab.listen(port)
    conn = lab.connect(port)
    peer, _ = server.accept()
    return conn, peer


def close_to_time_wait(conn, peer):
    """Our active close of an ESTABLISHED conn against the kernel socket
    peer: FIN, its ACK, its FIN, our ACK; asserts we are in TIME_WAIT."""
    conn.fin()
    conn.expect("A")
    peer.close()
    conn.expect("FA")
    conn.ack()
    assert conn.state == "TIME_WAIT"


def netns_inodes():
    """The network namespaces any process on the machine is in."""
    inodes = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            pass
    return inodes


def alive(pid):
    """Whether pid runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=3.0):
    """Whether every pid has ended within timeout seconds."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not any(alive(p) for p in pids)


def wait_netns_gone(inode, timeout=3.0):
    """Whether no process is in the namespace inode within timeout seconds."""
    deadline = time.monotonic() + timeout
    while inode in netns_inodes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return inode not in netns_inodes()


def children(pid):
    """The live child processes of pid."""
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{child}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(child))
    return found


def descendants(pid):
    """The live children of pid, and theirs: a Lab's helper is its owner's
    grandchild, forked by the owner's zygote."""
    found = children(pid)
    for child in list(found):
        found += children(child)
    return found


def open_fds():
    """This process's descriptors, each with what it points to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory's own descriptor, gone
            pass
    return fds


def run_script(body, *args, **kwargs):
    """A Python process running body (argv[1:]: args) with this tree's finprobe."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(body), *map(str, args)], text=True,
                            env={**os.environ, "PYTHONPATH": PACKAGE_DIR}, **kwargs)


# ---- two namespaces with real servers, for fp.Target ----------------------------
#
# Two fresh namespaces joined by a veth pair, nothing else: fpt-srv-<id> runs
# ``python3 -m http.server`` and nginx on SERVER4 / SERVER6, fpt-cli-<id>
# holds finprobe's side, CLIENT4 / CLIENT6. A test runs inside the client
# namespace with ``inside(net.cli)``.

SERVER4, CLIENT4 = "192.0.2.1", "192.0.2.2"
SERVER6, CLIENT6 = "2001:db8:1::1", "2001:db8:1::2"
PORTS = {"http.server": 8000, "nginx": 8080}

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(netns):
    """Run this thread in the named network namespace, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(there)
        os.close(home)


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Net:
    def __init__(self):
        tag = secrets.token_hex(3)
        self.srv, self.cli = f"fpt-srv-{tag}", f"fpt-cli-{tag}"

    def make(self):
        run("ip", "netns", "add", self.srv)
        run("ip", "netns", "add", self.cli)
        run("ip", "link", "add", "fpt-c", "netns", self.cli, "type", "veth",
            "peer", "name", "fpt-s", "netns", self.srv)
        for ns, dev, v4, v6 in ((self.cli, "fpt-c", CLIENT4, CLIENT6),
                                (self.srv, "fpt-s", SERVER4, SERVER6)):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")

    def remove(self):
        for ns in (self.cli, self.srv):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def ruleset(self):
        """The client namespace's nftables ruleset, and the host's."""
        return run("ip", "netns", "exec", self.cli, "nft", "list", "ruleset"), run("nft", "list", "ruleset")

    def popen(self, netns, args, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", netns, *args], **kwargs)


# nginx in the foreground, one process, nothing outside tmp; {listens}: its
# "listen ADDR:PORT;" lines. Shared with replaytools.
NGINX_CONF = """\
daemon off;
master_process off;
pid {tmp}/nginx-{port}.pid;
error_log {tmp}/nginx-{port}.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type text/html;
    keepalive_timeout {keepalive};
    lingering_close off;   # close at once: bytes a client sent unread are reset, not drained
    server {{
        {listens}
        root {root};
    }}
}}
"""


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(net, port):
    out = run("ip", "netns", "exec", net.srv, "ss", "-ltnH", f"sport = :{port}")
    return bool(out.strip())



@contextlib.contextmanager
def target_servers(tmp):
    """The two namespaces with http.server and nginx listening (files in
    the directory tmp); all gone afterwards, also on failure."""
    net, procs = Net(), []
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("<p>finprobe</p>\n" * 8)
    port = PORTS["nginx"]
    error_log = tmp / f"nginx-{port}.log"   # NGINX_CONF's
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(
        tmp=tmp, port=port, keepalive="30s", root=tmp / "www",
        listens=f"listen {SERVER4}:{port}; listen [{SERVER6}]:{port};"))
    try:
        net.make()
        with open(tmp / "servers.log", "w") as logs:
            procs.append(net.popen(net.srv, [PYTHON, "-m", "http.server", str(PORTS["http.server"]),
                                             "-b", "::", "-p", "HTTP/1.1", "-d", str(tmp / "www")],
                                   stdout=logs, stderr=logs))
            procs.append(net.popen(net.srv, ["nginx", "-p", str(tmp), "-e", str(error_log),
                                             "-c", str(tmp / "nginx.conf")], stdout=logs, stderr=logs))
        deadline = time.monotonic() + 5
        while not all(_listening(net, p) for p in PORTS.values()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"servers did not start: {(tmp / 'servers.log').read_text()}"
                                   f"{error_log.read_text() if error_log.exists() else ''}")
            time.sleep(0.05)
        yield net
    finally:
        for proc in procs:
            _stop(proc)
        net.remove()


def recipe_params(names):
    """pytest params (recipe name, ipv6) for each stack recipe of names, each
    family, with ids such as "lwip-ipv6"."""
    import pytest
    return [pytest.param((name, ipv6), id=f"{name}-{'ipv6' if ipv6 else 'ipv4'}")
            for name in names for ipv6 in (False, True)]
