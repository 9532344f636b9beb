"""Helpers the Lab tests share: a connection in ESTABLISHED, and the
processes, namespaces and descriptors a Lab may leave behind."""

import os
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
