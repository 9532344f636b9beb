"""How long a Lab and what it started live: until lab.close() or the death
of the owning process, whatever the owner's descriptors 0-2 are and
whichever of its threads started a process."""

import os
import signal
import subprocess
import threading
import time

import pytest

import finprobe as fp

from labtools import alive, netns_inodes, run_script, wait_gone, wait_netns_gone

# The owner reports its lab helper's pid and namespace on the descriptor in
# argv[1] (its stdout may be closed), then waits to be killed.
OWNER_WITHOUT_FDS = """
    import os, sys, time, finprobe as fp
    report = int(sys.argv[1])
    for fd in {closed}:
        os.close(fd)
    lab = fp.Lab()
    helper, = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
               and open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
    os.write(report, f"{{helper}} {{os.stat(f'/proc/{{helper}}/ns/net').st_ino}}\\n".encode())
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
    script = run_script(OWNER_WITHOUT_FDS.format(closed=closed), write_end, pass_fds=[write_end],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    helper = None
    try:
        with os.fdopen(read_end, "r") as report:
            line = report.readline()
        assert line, f"the owner died before reporting: {script.communicate(timeout=10)[1]}"
        helper, inode = map(int, line.split())
        assert alive(helper) and inode in netns_inodes()
        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert wait_gone([helper]), f"the lab helper {helper} outlived its owner"
        assert wait_netns_gone(inode), "the lab's namespace outlived its owner"
    finally:
        kill_if_alive(script.pid, helper)
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
