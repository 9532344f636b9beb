"""How long a Lab and what it started live: until lab.close() or the death
of the owning process, whatever the owner's descriptors 0-2 are and
whichever of its threads started a process."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import finprobe as fp

from labtools import alive, netns_inodes, run_script, wait_gone, wait_netns_gone

# In a script: the pid of lab's helper, the process in its namespace, and of
# that helper's parent (the zygote that forked it).
FIND_HELPER = """
def in_netns(pid, inode):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except OSError:
        return False

def helper_of(lab):
    inode = os.fstat(lab._core.netns_fd).st_ino
    helper, = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()
               and in_netns(pid, inode)]
    with open(f"/proc/{helper}/stat") as f:
        return helper, int(f.read().rsplit(")", 1)[1].split()[1])
"""

# The owner reports its lab helper's pid, its namespace and the helper's
# parent on the descriptor in argv[1] (its stdout may be closed), then waits
# to be killed.
OWNER_WITHOUT_FDS = """
    import os, sys, time, finprobe as fp
    exec(sys.argv[2])
    report = int(sys.argv[1])
    for fd in {closed}:
        os.close(fd)
    lab = fp.Lab()
    helper, parent = helper_of(lab)
    os.write(report, f"{{helper}} {{os.stat(f'/proc/{{helper}}/ns/net').st_ino}} {{parent}}\\n".encode())
    time.sleep(60)
"""


def kill_if_alive(*pids):
    """End what a failed test left running (only pids the test made)."""
    for pid in pids:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("closed", [(0,), (0, 1, 2)], ids=["fd0_closed", "fds0to2_closed"])
def test_sigkill_of_an_owner_without_stdio_leaves_no_helper_nor_namespace(closed):
    read_end, write_end = os.pipe()
    script = run_script(OWNER_WITHOUT_FDS.format(closed=closed), write_end, FIND_HELPER,
                        pass_fds=[write_end], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    helper = parent = None
    try:
        with os.fdopen(read_end, "r") as report:
            line = report.readline()
        assert line, f"the owner died before reporting: {script.communicate(timeout=10)[1]}"
        helper, inode, parent = map(int, line.split())
        assert alive(helper) and inode in netns_inodes()
        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert wait_gone([helper]), f"the lab helper {helper} outlived its owner"
        assert wait_netns_gone(inode), "the lab's namespace outlived its owner"
        assert wait_gone([parent]), f"the helper's parent {parent} outlived the owner"
    finally:
        kill_if_alive(script.pid, helper, parent if parent != script.pid else None)
        script.communicate()


def popen_from_a_thread(lab, args):
    """lab.popen(args) from a worker thread that ends right after."""
    started = []
    worker = threading.Thread(target=lambda: started.append(lab.popen(args)))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and len(started) == 1
    return started[0]


def test_a_process_started_from_a_thread_lives_until_the_lab_closes():
    with fp.Lab() as lab:
        proc = popen_from_a_thread(lab, ["sleep", "30"])
        time.sleep(0.3)  # a death signal would have come at the thread's end
        assert proc.poll() is None, f"the child died with the thread that started it: {proc.returncode}"
        assert alive(proc.pid)
    assert wait_gone([proc.pid])
    assert proc.poll() is not None


def test_a_process_started_from_a_thread_dies_with_the_owner():
    script = run_script("""
        import os, threading, time, finprobe as fp
        lab = fp.Lab()
        started = []
        worker = threading.Thread(target=lambda: started.append(lab.popen(["sleep", "300"])))
        worker.start()
        worker.join()
        print(started[0].pid, os.stat(f"/proc/{started[0].pid}/ns/net").st_ino, flush=True)
        time.sleep(60)
    """)
    pid = None
    try:
        pid, inode = map(int, script.stdout.readline().split())
        time.sleep(0.1)  # the worker thread's end, and any death signal, are past
        assert alive(pid) and inode in netns_inodes()
        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert wait_gone([pid]), f"sleep {pid} outlived the owner of its lab"
        assert wait_netns_gone(inode)
    finally:
        kill_if_alive(script.pid, pid)
        script.communicate()


def test_a_lab_made_after_the_owner_grew_is_not_forked_from_the_owner():
    """fork() stalls every thread of a big process: a Lab's helper comes
    from a small process forked while the owner was small."""
    script = run_script("""
        import os, sys, finprobe as fp
        exec(sys.argv[1])
        fp.Lab().close()
        ballast = b"\\x01" * (300 << 20)  # touched: the bytes are written
        with fp.Lab() as lab:
            helper, parent = helper_of(lab)
            with open(f"/proc/{parent}/status") as f:
                rss = [int(line.split()[1]) for line in f if line.startswith("VmRSS:")][0] << 10
            lab.listen(80)
            conn = lab.connect(80)
            conn.fin()
            conn.expect("A")
        print(os.getpid(), parent, rss, len(ballast), flush=True)
    """, FIND_HELPER)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    owner, parent, rss, ballast = map(int, out.split())
    assert parent != owner, "the helper was forked from the 300 MiB owner"
    assert rss < ballast // 2, f"the helper's parent holds {rss >> 20} MiB: a copy of the grown owner"


@pytest.mark.parametrize("first_lab_from", ["main", "thread"])
def test_a_helper_holds_no_copy_of_the_heap_its_zygote_was_forked_with(first_lab_from):
    """Copying a big owner's page tables into each helper and freeing them
    at its exit cost as much as a namespace: a helper has the code, the
    libraries' data and its stack, not the owner's heap (64 MiB of Python
    objects here, already there when the zygote was forked, from the main
    thread or from another one as the lab fixture's pool does); and it still
    builds and serves its lab."""
    script = run_script("""
        import os, sys, threading, finprobe as fp
        exec(sys.argv[1])
        ballast = [bytes([i % 251]) * 4096 for i in range(64 << 8)]  # 64 MiB, written
        labs = []
        if sys.argv[2] == "thread":
            made = threading.Thread(target=lambda: labs.append(fp.Lab()))
            made.start()
            made.join()
        else:
            labs.append(fp.Lab())
        with labs[0] as lab:
            helper, zygote = helper_of(lab)
            with open(f"/proc/{helper}/smaps_rollup") as f:
                anon = [int(line.split()[1]) for line in f if line.startswith("Anonymous:")][0] << 10
            lab.listen(80)
            conn = lab.connect(80)
            conn.fin()
            conn.expect("A")
            assert lab.sysctl("net.ipv4.tcp_fin_timeout") == "60"
        print(anon, sum(map(len, ballast)), flush=True)
    """, FIND_HELPER, first_lab_from)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    anon, ballast = map(int, out.split())
    assert anon < ballast // 8, f"the helper holds {anon >> 20} MiB of anonymous memory: a copy of the owner's heap"


def test_labs_share_one_probe_namespace_each_with_a_fresh_kernel_namespace():
    """A Lab makes one namespace, its kernel's: finprobe's ends of the veths
    (the packet sockets) are all in the zygote's probe namespace, which is
    none of the labs' kernels' nor the owner's; each Lab sees only its own
    traffic; and a closed Lab's probe end leaves that namespace."""
    script = run_script("""
        import fcntl, json, os, subprocess, sys, time, finprobe as fp
        exec(sys.argv[1])
        SIOCGSKNS = 0x894C  # the namespace of a socket, as a descriptor

        def netns_of_socket(fd):
            ns = fcntl.ioctl(fd, SIOCGSKNS)
            try:
                return os.fstat(ns).st_ino
            finally:
                os.close(ns)

        def probe_links(zygote):
            out = subprocess.run(["nsenter", f"--net=/proc/{zygote}/ns/net", "ip", "-o", "link", "show"],
                                 capture_output=True, text=True, check=True).stdout
            return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

        with fp.Lab(capture=True) as one, fp.Lab(capture=True) as two:
            probes = [netns_of_socket(lab._core.packet_fd) for lab in (one, two)]
            kernels = [os.fstat(lab._core.netns_fd).st_ino for lab in (one, two)]
            zygote = helper_of(one)[1]
            during = probe_links(zygote)
            for lab in (one, two):
                lab.listen(80)
            conn = one.connect(80)
            conn.fin()
            conn.expect("A")
            assert not two.capture(), "one Lab saw the other's traffic"
        deadline = time.monotonic() + 10
        while probe_links(zygote) != ["lo"] and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({"probes": probes, "kernels": kernels, "own": os.stat("/proc/self/ns/net").st_ino,
                          "zygote": os.stat(f"/proc/{zygote}/ns/net").st_ino, "during": during,
                          "after": probe_links(zygote)}), flush=True)
    """, FIND_HELPER)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    r = json.loads(out)
    assert r["probes"][0] == r["probes"][1] == r["zygote"], f"each Lab made a probe namespace of its own: {r}"
    assert r["zygote"] != r["own"] and r["zygote"] not in r["kernels"]
    assert r["kernels"][0] != r["kernels"][1]
    assert len(r["during"]) == 3 and "lo" in r["during"], f"the probe namespace's links: {r['during']}"
    assert r["after"] == ["lo"], f"closed Labs' probe ends are still there: {r['after']}"


def test_a_killed_zygote_is_replaced_by_the_next_lab():
    script = run_script("""
        import os, signal, sys, time, finprobe as fp
        exec(sys.argv[1])
        with fp.Lab() as lab:
            helper, zygote = helper_of(lab)
        os.kill(zygote, signal.SIGKILL)
        os.waitpid(zygote, 0)  # ours: the zygote is the owner's child
        with fp.Lab() as lab:
            helper, parent = helper_of(lab)
            lab.listen(80)
            conn = lab.connect(80)
            conn.fin()
            conn.expect("A")
        print(zygote, parent, os.getpid(), flush=True)
    """, FIND_HELPER)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    zygote, parent, owner = map(int, out.split())
    assert parent not in (zygote, owner)


def test_a_forked_child_makes_labs_and_leaves_nothing_behind():
    """A child forked without exec shares its parent's zygote."""
    script = run_script("""
        import os, sys, finprobe as fp
        exec(sys.argv[1])
        fp.Lab().close()
        pid = os.fork()
        if pid == 0:
            try:
                with fp.Lab() as lab:
                    helper, parent = helper_of(lab)
                    lab.listen(80)
                    conn = lab.connect(80)
                    conn.fin()
                    conn.expect("A")
                    inode = os.fstat(lab._core.netns_fd).st_ino
                print(helper, inode, flush=True)
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    """, FIND_HELPER)
    out, err = script.communicate(timeout=60)
    assert script.returncode == 0 and out.strip(), err
    helper, inode = map(int, out.split())
    assert wait_gone([helper]) and wait_netns_gone(inode)
