"""A user-space TCP stack as the peer (fp.Lab(stack=...)), against the lwIP
recipe (stacks/lwip, built by make stacks): readiness by ARP / neighbour
solicitation, whole closes both ways, the kernel silent on the TAP, the
stack's process group ended with the Lab and with its owner, readiness
failures that show the command's output."""

import os
import signal
import subprocess
import time

import pytest

import finprobe as fp

from labtools import alive, netns_inodes, run_script, wait_gone, wait_netns_gone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 8080
GET = b"GET / HTTP/1.0\r\n\r\n"
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
LWIP_MAC = bytes.fromhex("0212345678ab")  # the unix port's tapif


def lwip_command(ipv6=False):
    return fp.stacks.command("lwip", PORT, ipv6)


@pytest.fixture(scope="module", autouse=True)
def lwip_binary():
    """The recipe's path, built if missing (make stacks); skipped only if it cannot be."""
    try:
        return fp.stacks.binary("lwip")
    except fp.Error:
        made = subprocess.run(["make", "-C", ROOT, "-s", "stacks"], capture_output=True, text=True)
    try:
        return fp.stacks.binary("lwip")
    except fp.Error:
        pytest.skip(f"the lwIP recipe cannot be built (make stacks): {made.stderr.strip()[-500:]}")


both_families = pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])


@both_families
def test_lwip_answers_arp_or_ns_and_is_ready_within_two_seconds(ipv6):
    start = time.monotonic()
    with fp.Lab(ipv6, stack=lwip_command(ipv6)) as lab:
        ready = time.monotonic() - start
        assert lab._peer_mac == LWIP_MAC, "the stack's MAC was not learnt from its answer"
        assert lab.stack.poll() is None
    assert ready < 2.0, f"a stack Lab took {ready:.2f}s to be ready"


def get_and_answer(conn):
    """Our GET, its ACK of it and its answer (lwIP may carry both in one)."""
    conn.write(GET)
    got = b""
    while len(got) < len(ANSWER):
        seg = conn.recv(timeout=2)
        assert seg is not None and "A" in seg.flags and "F" not in seg.flags, conn.trace.ladder_text()
        got += seg.payload
    assert got == ANSWER


@both_families
def test_lwip_closes_first_after_its_answer_four_way(ipv6):
    with fp.Lab(ipv6, stack=lwip_command(ipv6)) as lab:
        conn = lab.connect(PORT)
        get_and_answer(conn)
        conn.expect("FA", timeout=2)  # it closes after answering
        assert conn.state == "CLOSE_WAIT"
        conn.ack()
        conn.fin()
        assert conn.state == "LAST_ACK"
        conn.expect("A", timeout=2)
        assert conn.state == "CLOSED"


@both_families
def test_lwip_closes_after_our_fin_before_any_request(ipv6):
    with fp.Lab(ipv6, stack=lwip_command(ipv6)) as lab:
        conn = lab.connect(PORT)
        conn.fin()
        seg = conn.expect(timeout=2)
        if seg.flags == "A":  # its ACK, then its FIN
            assert conn.state == "FIN_WAIT_2"
            seg = conn.expect("FA", timeout=2)
        assert "F" in seg.flags
        conn.ack()
        assert conn.state == "TIME_WAIT"


def test_the_kernel_sends_nothing_on_the_tap():
    """Every frame on the TAP, seen by tcpdump beside the stack, is the
    stack's: the kernel, with no address there and IPv6 off, is silent.
    (Ours bypass the qdisc, where tcpdump would see them.)"""
    with fp.Lab(stack=lwip_command(), capture=True) as lab:
        pcap = os.path.join("/tmp", f"fp-tap-{os.getpid()}.pcap")
        dump = lab.popen(["tcpdump", "-i", lab._core.tap, "--immediate-mode", "-U", "-n", "-w", pcap],
                         stderr=subprocess.PIPE, text=True)
        try:
            assert "listening on" in dump.stderr.readline()
            conn = lab.connect(PORT)
            get_and_answer(conn)
            conn.expect("FA", timeout=2)
            conn.ack()
            conn.fin()
            conn.expect("A", timeout=2)
            time.sleep(0.5)  # what the kernel would send late (RS, MLD)
        finally:
            dump.terminate()
            dump.wait(5)
        from scapy.all import Ether, rdpcap
        frames = rdpcap(pcap)
        os.unlink(pcap)
        ends = {lab._core.macs[0], LWIP_MAC}
        strangers = [f.summary() for f in frames if bytes.fromhex(f[Ether].src.replace(":", "")) not in ends]
        assert frames and not strangers, f"frames on the TAP from neither end: {strangers}"
        inbound = [s for s in lab.capture() if s.direction == "in"]
        assert inbound and all(s.dport == conn.local[1] and s.sport == PORT for s in inbound)


def test_popen_runs_beside_the_stack():
    with fp.Lab(stack=lwip_command()) as lab:
        out = lab.popen(["ip", "-o", "link", "show"], stdout=subprocess.PIPE,
                        text=True).communicate(timeout=5)[0]
        names = sorted(line.split(":")[1].strip() for line in out.splitlines())
        assert names == ["fptap0", "lo"]


def group_members(pgid):
    """Live processes of the process group pgid."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(pid))
    return found


# A stack with a worker in its process group: the shell's "sleep" outlives
# the shell's exec only in the group.
def stack_with_worker(ipv6=False):
    cmd = " ".join(f"'{a}'" for a in lwip_command(ipv6))
    return ["sh", "-c", f"sleep 300 & exec {cmd}"]


def test_the_stack_process_group_is_gone_after_close():
    with fp.Lab(stack=stack_with_worker()) as lab:
        pgid = lab.stack.pid
        members = group_members(pgid)
        assert len(members) == 2, members  # the stack and its sleeping worker
    assert wait_gone(members), f"{members} outlived lab.close()"
    assert lab.stack.returncode is not None


def test_the_stack_process_group_dies_with_the_lab_owner():
    script = run_script(f"""
        import os, time, finprobe as fp
        lab = fp.Lab(stack={stack_with_worker()!r})
        print(lab.stack.pid, os.stat(f"/proc/{{lab.stack.pid}}/ns/net").st_ino, flush=True)
        time.sleep(60)
    """)
    members = []
    try:
        line = script.stdout.readline()
        assert line, script.communicate(timeout=10)[1]
        pgid, inode = map(int, line.split())
        members = group_members(pgid)
        assert len(members) == 2 and inode in netns_inodes()
        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert wait_gone(members), f"the stack's group {members} outlived the Lab's owner"
        assert wait_netns_gone(inode)
    finally:
        for pid in [script.pid] + members:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        script.communicate()


def test_a_stack_that_never_answers_raises_with_its_output_within_ready_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(fp.Error) as info:
        fp.Lab(stack=["sh", "-c", f"echo $$ > {pidfile}; echo starting on {{tap}}; "
                                  "echo no ARP today >&2; exec sleep 30"], ready_timeout=0.5)
    took = time.monotonic() - start
    message = str(info.value)
    assert "did not answer ARP for 192.0.2.1 within 0.5s" in message
    assert "starting on fptap0" in message and "no ARP today" in message
    assert took < 0.5 + 1.5, f"the readiness failure took {took:.2f}s"
    assert wait_gone([int(pidfile.read_text())]), "the silent stack outlived its failed Lab"


def test_a_stack_that_exits_before_answering_raises_with_its_status_and_output(lwip_binary):
    with pytest.raises(fp.Error) as info:
        fp.Lab(stack=[lwip_binary, "--tap", "{tap}"], ready_timeout=5.0)
    message = str(info.value)
    assert "exited with status 2" in message and "usage: lwip-http" in message


def test_only_the_last_lines_of_output_are_shown():
    with pytest.raises(fp.Error) as info:
        fp.Lab(stack=["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 3"])
    message = str(info.value)
    assert "line 100" in message and "line 81" in message and "line 80\n" not in message


def test_kernel_socket_calls_raise_on_a_stack_lab():
    with fp.Lab(stack=lwip_command()) as lab:
        conn = lab.connect(PORT)
        for call in (lambda: lab.listen(9000), lambda: lab.socket(), lambda: lab.peer_state(conn),
                     lambda: lab.peer_info(conn), lambda: lab.wait_peer_state(conn, "ESTABLISHED")):
            with pytest.raises(fp.Error, match="user-space stack lwip-http, not the kernel"):
                call()


def test_repr_names_the_stack():
    with fp.Lab(stack=lwip_command()) as lab:
        assert repr(lab) == f"<Lab peer 192.0.2.1 (stack lwip-http, pid {lab.stack.pid}), us 192.0.2.2>"
    assert repr(lab) == "<Lab closed>"


def test_placeholders_are_filled_in_arguments_and_env(tmp_path):
    out = tmp_path / "seen"
    cmd = f'echo "$@ $FP_TAP $FP_BRACES" > {out}; exec "$0" "$@"'
    with fp.Lab(stack=["sh", "-c", cmd] + lwip_command(),
                env={"FP_TAP": "{tap}/{prefix}", "FP_BRACES": '{"json": 1}'}):
        pass
    seen = out.read_text().split()
    assert seen[:10] == ["--tap", "fptap0", "--addr", "192.0.2.1", "--prefix", "24",
                         "--gateway", "192.0.2.2", "--port", str(PORT)]
    assert seen[10:] == ["fptap0/24", '{"json":', "1}"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"stack": "lwip-http --tap {tap}"}, TypeError, "stack must be a list of str"),
    ({"stack": []}, ValueError, "stack must name a command"),
    ({"stack": ["x", 1]}, TypeError, "stack must be a list of str, but holds 1"),
    ({"stack": ["x"], "env": {"A": 1}}, TypeError, "env must be a dict of str to str"),
    ({"stack": ["x"], "env": [("A", "B")]}, TypeError, "env must be a dict"),
    ({"env": {"A": "B"}}, ValueError, "env is for the stack's command"),
    ({"stack": ["x"], "ready_timeout": -1}, ValueError, "ready_timeout must be a number of seconds >= 0"),
    ({"stack": ["x"], "ready_timeout": float("nan")}, ValueError, "ready_timeout"),
    ({"stack": ["x"], "ready_timeout": float("inf")}, OverflowError, "ready_timeout"),
    ({"stack": ["x"], "ready_timeout": "5"}, TypeError, "ready_timeout must be a number"),
])
def test_bad_stack_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        fp.Lab(**kwargs)


def test_an_unprivileged_user_gets_a_stack_lab_or_is_told_about_dev_net_tun():
    """Rootless as the kernel Lab is, where /dev/net/tun is open to all (as
    distributions ship it); where it is not, fp.PermissionError says so."""
    tun_open = os.stat("/dev/net/tun").st_mode & 0o006 == 0o006
    script = run_script(f"""
        import finprobe as fp
        try:
            with fp.Lab(stack={lwip_command()!r}) as lab:
                conn = lab.connect({PORT})
                conn.write({GET!r})
                print("answer", conn.recv(2).payload == {ANSWER!r})
        except fp.PermissionError as e:
            print("refused", e)
    """, user=65534, group=65534, extra_groups=[])
    out, err = script.communicate(timeout=30)
    if tun_open:
        assert out.strip() == "answer True", err
    else:
        assert out.startswith("refused") and "read-write access to /dev/net/tun" in out, out + err
