"""The Lab itself: what it is made of, what it runs, and that it leaves
nothing behind, as root, as a non-root user, after an exception and after
SIGKILL."""

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import threading
import time

import pytest

import finprobe as fp

from labtools import PACKAGE_DIR, PYTHON, netns_inodes, run_script, wait_gone, wait_netns_gone


def host_interfaces():
    return set(os.listdir("/sys/class/net"))


LAB_WITH_A_SERVER = """
    import os, sys, time, finprobe as fp
    lab = fp.Lab()
    proc = lab.popen(["sleep", "300"])
    print(proc.pid, os.stat(f"/proc/{proc.pid}/ns/net").st_ino, flush=True)
"""


def test_lab_has_only_loopback_and_its_link(lab):
    out = lab.popen(["ip", "-o", "addr", "show"], stdout=subprocess.PIPE, text=True).communicate()[0]
    assert "192.0.2.1/24" in out and "2001:db8::1/64" in out
    links = lab.popen(["ip", "-o", "link", "show"], stdout=subprocess.PIPE, text=True).communicate()[0]
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == ["lab0", "lo"]


def test_lab_leaves_nothing_on_the_host():
    before_ifaces, before_ns = host_interfaces(), netns_inodes()
    with fp.Lab() as lab:
        proc = lab.popen(["sleep", "300"])
        inode = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        assert inode not in before_ns
    assert wait_gone([proc.pid])
    assert host_interfaces() == before_ifaces
    assert wait_netns_gone(inode)


def test_popen_runs_a_real_server_inside_the_lab(lab):
    server = lab.popen([PYTHON, "-m", "http.server", "--bind", lab.peer_addr, "8000"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while True:
        probe = lab.socket()
        if probe.connect_ex((lab.peer_addr, 8000)) == 0:
            probe.close()
            break
        probe.close()
        time.sleep(0.01)
        assert time.monotonic() < deadline, "http.server did not start"
    conn = lab.connect(8000)
    conn.write(b"GET / HTTP/1.0\r\n\r\n")
    while True:
        seg = conn.expect(timeout=2.0)
        if seg.payload:
            conn.ack()
        if "F" in seg.flags:
            break
    assert conn.state == "CLOSE_WAIT"
    conn.fin()
    conn.expect("A")
    assert conn.state == "CLOSED"
    assert server.poll() is None


def test_sysctl_reads_and_writes_the_labs_own_namespace(lab):
    assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "60"
    lab.sysctl("net.ipv4.tcp_fin_timeout", 7)
    assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "7"
    with pytest.raises(ValueError, match="no_such_setting"):
        lab.sysctl("net.ipv4.no_such_setting")
    with pytest.raises(ValueError, match="not a net"):
        lab.sysctl("kernel.hostname", "x")


def test_host_sysctl_is_untouched_by_a_lab():
    with open("/proc/sys/net/ipv4/tcp_fin_timeout") as f:
        before = f.read()
    with fp.Lab() as lab:
        lab.sysctl("net.ipv4.tcp_fin_timeout", 3)
    with open("/proc/sys/net/ipv4/tcp_fin_timeout") as f:
        assert f.read() == before


def test_an_exception_in_the_with_block_leaves_nothing_behind():
    script = run_script(LAB_WITH_A_SERVER + "\n    with lab:\n        raise RuntimeError('test failed')\n")
    out, err = script.communicate(timeout=10)
    assert "RuntimeError" in err
    pid, inode = map(int, out.split())
    assert wait_gone([pid])
    assert wait_netns_gone(inode)


def test_sigkill_of_the_process_leaves_nothing_behind():
    script = run_script(LAB_WITH_A_SERVER + "\n    time.sleep(60)\n")
    pid, inode = map(int, script.stdout.readline().split())
    assert inode in netns_inodes()
    script.send_signal(signal.SIGKILL)
    script.communicate()
    assert wait_gone([pid])
    assert wait_netns_gone(inode)


def test_ctrl_c_interrupts_a_wait():
    script = run_script("""
        import finprobe as fp, signal, time
        # a terminal's Ctrl-C, whatever this process inherited (a shell
        # starts background jobs with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with fp.Lab() as lab:
            srv = lab.listen(80)
            conn = lab.connect(80)
            print("waiting", flush=True)
            t = time.monotonic()
            try:
                conn.recv(timeout=30)
            except KeyboardInterrupt:
                print("interrupted after", round(time.monotonic() - t, 1), flush=True)
    """)
    assert script.stdout.readline().strip() == "waiting"
    time.sleep(0.3)
    script.send_signal(signal.SIGINT)
    try:  # the claim is timed inside the script; exiting may be slow on a busy machine
        out, err = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert out.startswith("interrupted after"), err
    assert float(out.split()[-1]) < 5


def test_lab_works_from_a_threaded_process():
    errors, states = [], []

    def close_once():
        try:
            with fp.Lab() as lab:
                srv = lab.listen(80)
                conn = lab.connect(80)
                conn.fin()
                conn.expect("A")
                states.append(lab.peer_state(conn))
        except Exception as e:  # reported below
            errors.append(e)

    busy = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(4)]
    for t in busy:
        t.start()
    worker = threading.Thread(target=close_once)
    worker.start()
    worker.join()
    for t in busy:
        t.join()
    assert not errors and states == ["CLOSE_WAIT"]


def test_lab_as_a_non_root_user():
    if open("/proc/sys/user/max_user_namespaces").read().strip() == "0":
        pytest.skip("user namespaces are disabled on this machine")
    # A copy of the package nobody can read, wherever the checkout lives.
    where = tempfile.mkdtemp(prefix="finprobe-nonroot-")
    try:
        os.chmod(where, 0o755)
        shutil.copytree(os.path.join(PACKAGE_DIR, "finprobe"), os.path.join(where, "finprobe"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(where):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        body = textwrap.dedent("""
            import os, socket, finprobe as fp
            assert os.getuid() != 0
            with fp.Lab() as lab:
                srv = lab.listen(8080)
                conn = lab.connect(8080)
                peer, _ = srv.accept()
                conn.fin()
                conn.expect("A")
                assert lab.peer_state(conn) == "CLOSE_WAIT"
                peer.close()
                conn.expect("FA")
                conn.ack()
                lab.wait_peer_state(conn, "CLOSED")
                print("ok", conn.state.value)
        """)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               PYTHON, "-c", body], capture_output=True, text=True, timeout=30,
                              cwd=where, env={"PYTHONPATH": where, "PATH": os.environ.get("PATH", "")})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["ok", "TIME_WAIT"]
    finally:
        shutil.rmtree(where)

