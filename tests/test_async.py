"""fp.AsyncLab, fp.AsyncTarget, fp.AsyncConnection against real kernels:
the API's waits as coroutines on one event loop, many connections at once,
one engine that no connection's wait blocks.

Each test runs its coroutine with asyncio.run (no plugin needed). The
kernel's side of a lifecycle is an asyncio server on the same loop, which
closes a connection when the test says so (after it has seen the kernel's
ACK of our FIN), so that no delayed ACK rides on the kernel's FIN."""

import asyncio
import os
import shutil
import socket
import time

import pytest

import finprobe as fp
from labtools import SERVER4, SERVER6, PORTS, inside, target_servers

try:  # the kernelspec fixture of the notebook tests, if Jupyter is here
    from test_notebook import kernel_python3  # noqa: F401
    import nbclient
    import nbformat
except pytest.skip.Exception:
    nbclient = None

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, raw sockets")

PORT = 8080


class KernelServer:
    """An asyncio server on lab.listen(port): each accepted connection is
    kept, by our source port, until ``close(conn)`` closes the kernel's end."""

    def __init__(self, lab, port=PORT):
        self._lab, self._port = lab, port
        self._accepted = {}

    def _slot(self, sport):
        return self._accepted.setdefault(sport, asyncio.get_running_loop().create_future())

    async def __aenter__(self):
        sock = self._lab.listen(self._port, backlog=1024)

        def accepted(reader, writer):
            self._slot(writer.get_extra_info("peername")[1]).set_result(writer)

        self._server = await asyncio.start_server(accepted, sock=sock, backlog=1024)
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()

    async def close(self, conn):
        writer = await asyncio.wait_for(self._slot(conn.local[1]), 5.0)
        writer.close()


async def lifecycle(lab, server):
    """connect, our FIN, its ACK, the kernel closes, its FIN, our ACK: we end
    in TIME_WAIT. Returns the connection."""
    conn = await lab.connect(PORT)
    conn.fin()
    await conn.expect("A")
    await server.close(conn)
    await conn.expect("FA")
    conn.ack()
    return conn


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_api_example_closes_actively_and_the_kernel_sees_close_wait(ipv6):
    async def main():
        async with fp.AsyncLab(ipv6=ipv6) as lab:
            lab.listen(PORT)
            conn = await lab.connect(PORT)
            assert isinstance(conn, fp.AsyncConnection) and conn.state == "ESTABLISHED"
            sent = conn.fin()
            assert sent.flags == "FA" and conn.state == "FIN_WAIT_1"
            ack = await conn.expect("A")
            assert ack.ack == sent.seq + 1 and conn.state == "FIN_WAIT_2"
            assert await lab.wait_peer_state(conn, "CLOSE_WAIT") == "CLOSE_WAIT"
            assert lab.peer_state(conn) == "CLOSE_WAIT"
            assert [s.flags for s in conn.trace] == ["S", "SA", "A", "FA", "A"]
    asyncio.run(main())


def test_thousand_concurrent_lifecycles_all_end_closed_on_both_sides():
    async def main():
        async with fp.AsyncLab() as lab, KernelServer(lab) as server:
            conns = await asyncio.gather(*(lifecycle(lab, server) for _ in range(1000)))
            assert len({c.local for c in conns}) == 1000
            assert {c.state for c in conns} == {fp.State.TIME_WAIT}
            assert {lab.peer_state(c) for c in conns} == {fp.State.CLOSED}
    asyncio.run(main())


def test_expect_timeout_raises_after_other_tasks_have_progressed():
    order = []

    async def silent(lab):
        conn = await lab.connect(PORT)
        start = time.monotonic()
        with pytest.raises(fp.ExpectError, match=r"got nothing within 0\.5s") as err:
            await conn.expect("FA", timeout=0.5)
        assert time.monotonic() - start >= 0.5  # not before its time
        assert "ESTABLISHED" in str(err.value)  # the recent trace comes with it
        order.append("timed out")

    async def busy(lab, server):
        for _ in range(20):
            await lifecycle(lab, server)
        order.append("20 lifecycles")

    async def main():
        async with fp.AsyncLab() as lab, KernelServer(lab) as server:
            await asyncio.gather(silent(lab), busy(lab, server))
    asyncio.run(main())
    assert order == ["20 lifecycles", "timed out"]


def test_cancelled_expect_leaves_no_wait_and_the_connection_goes_on():
    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT)
            conn = await lab.connect(PORT)
            task = asyncio.create_task(conn.expect("A", timeout=30))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lab._reactor._waiting == {} and lab._reactor._deadlines == {}
            conn.fin()
            await conn.expect("A")
            assert conn.state == "FIN_WAIT_2"
    asyncio.run(main())


def test_cancelled_connect_closes_its_connection():
    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT)
            # the kernel's SYN-ACK goes nowhere: the handshake waits
            lab.popen(["ip", "route", "add", "blackhole", f"{lab.local_addr}/32"]).wait()
            task = asyncio.create_task(lab.connect(PORT, timeout=30))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lab._reactor._waiting == {} and lab._reactor._deadlines == {}
            assert [c for c in lab._connections if not c.closed] == []
    asyncio.run(main())


def test_closing_the_lab_removes_its_reader_from_the_loop():
    async def main():
        lab = fp.AsyncLab()
        fd = lab._engine.fileno()
        lab.listen(PORT)
        conn = await lab.connect(PORT)
        waiting = asyncio.create_task(conn.expect("FA", timeout=30))
        await asyncio.sleep(0.05)
        lab.close()
        with pytest.raises(fp.Error, match="closed"):
            await waiting  # woken at close: its connection is gone
        assert not asyncio.get_running_loop().remove_reader(fd)
    asyncio.run(main())


def test_the_loop_keeps_ticking_through_500_lifecycles():
    gaps = []

    async def ticker(done):
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def main():
        async with fp.AsyncLab() as lab, KernelServer(lab) as server:
            done = asyncio.Event()
            tick = asyncio.create_task(ticker(done))
            await asyncio.sleep(0.02)
            # 500 lifecycles, 50 at a time, with a wait for silence in each
            # batch: every wait is long against a tick
            for _ in range(10):
                conns = await asyncio.gather(*(lifecycle(lab, server) for _ in range(50)))
                await asyncio.gather(*(c.expect_silence(0.05) for c in conns))
            done.set()
            await tick
    asyncio.run(main())
    assert len(gaps) > 10 and max(gaps) < 0.2


def quickack(lab):
    """The kernel ACKs at once on the lab's route (no delayed ACK of our FIN)."""
    assert lab.popen(["ip", "route", "change", "192.0.2.0/24", "dev", "lab0", "proto", "kernel",
                      "scope", "link", "src", lab.peer_addr, "quickack", "1"]).wait() == 0


def test_a_task_whose_answers_are_always_in_still_lets_others_run():
    """One task alone, its every answer in by the time it looks (quickack):
    it gives the loop turns all the same."""
    turns = []

    async def ticker(done):
        while not done.is_set():
            turns.append(None)
            await asyncio.sleep(0)

    async def one_at_a_time(lab):
        for _ in range(500):
            conn = await lab.connect(PORT)
            conn.fin()
            await conn.expect("A")
            conn.rst()
            conn.close()
        return len(turns)

    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT, backlog=1024)
            quickack(lab)
            done = asyncio.Event()
            tick = asyncio.create_task(ticker(done))
            await asyncio.sleep(0)
            before = len(turns)
            during = await one_at_a_time(lab) - before
            done.set()
            await tick
            return during
    assert asyncio.run(main()) >= 10


def test_recv_and_expect_silence_wait_without_taking_what_is_not_there():
    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT)
            conn = await lab.connect(PORT)
            assert await conn.recv(timeout=0.05) is None
            await conn.expect_silence(0.05)
            conn.fin()
            with pytest.raises(fp.ExpectError, match=r"expected silence for 0\.2s, got .*\[A\]"):
                await conn.expect_silence(0.2)
            assert conn.state == "FIN_WAIT_2"  # the ACK was taken
            conn.send(b"x", flags="PA", seq=conn.snd_nxt - 1)  # below the window: a duplicate ACK
            seg = await conn.recv()
            assert seg is not None and seg.flags == "A"
    asyncio.run(main())


def test_wrong_expectations_are_said_before_any_wait():
    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT)
            conn = await lab.connect(PORT)
            start = time.monotonic()
            with pytest.raises(ValueError, match="flags"):
                await conn.expect("AX", timeout=30)
            with pytest.raises(TypeError, match="timeout"):
                await conn.expect("A", timeout="1")
            assert time.monotonic() - start < 10
            with pytest.raises(AttributeError):
                conn._take
    asyncio.run(main())


def test_a_mismatch_is_reported_as_connection_expect_reports_it():
    async def main():
        async with fp.AsyncLab() as lab:
            lab.listen(PORT)
            conn = await lab.connect(PORT)
            conn.fin()
            with pytest.raises(fp.ExpectError, match=r"flags: expected \[FA\], got \[A\]"):
                await conn.expect("FA")
    asyncio.run(main())


def test_refused_connect_raises_connection_refused_and_closes():
    async def main():
        async with fp.AsyncLab() as lab:
            with pytest.raises(fp.ConnectionRefused, match="RST"):
                await lab.connect(9)
            assert [c for c in lab._connections if not c.closed] == []
    asyncio.run(main())


def test_raw_listener_accepts_a_kernel_client():
    async def main():
        async with fp.AsyncLab() as lab:
            listener = lab.listen_raw(9000)
            client = lab.socket()
            client.setblocking(False)
            assert client.connect_ex((lab.local_addr, 9000)) == 115  # EINPROGRESS
            conn = await listener.accept()
            assert conn.state == "ESTABLISHED" and conn.remote[0] == lab.peer_addr
            assert await lab.wait_peer_state(conn, "ESTABLISHED") == "ESTABLISHED"
            with pytest.raises(fp.ExpectError, match="no SYN"):
                await listener.accept(timeout=0.1)
    asyncio.run(main())


def test_waits_run_inside_an_already_running_loop_from_sync_code():
    """A notebook's cell runs inside a loop that is running already: the lab
    made outside the loop, its waits awaited in it."""
    lab = fp.AsyncLab()
    try:
        lab.listen(PORT)
        loop = asyncio.new_event_loop()

        async def cell():
            conn = await lab.connect(PORT)
            conn.fin()
            return await conn.expect("A")
        try:
            assert loop.run_until_complete(cell()).flags == "A"
        finally:
            loop.close()
        # a second loop takes over from the closed one
        assert asyncio.run(cell()).flags == "A"
    finally:
        lab.close()


NOTEBOOK_CELLS = [
    "import asyncio\nimport finprobe as fp\nlab = fp.AsyncLab()\nsrv = lab.listen(8080)",
    # top-level await, on the kernel's own running loop
    "conn = await lab.connect(8080)\nconn.fin()\nseg = await conn.expect('A')\n"
    "print('one:', seg.flags, conn.state.value, lab.peer_state(conn).value)",
    "async def close_one():\n"
    "    c = await lab.connect(8080)\n"
    "    c.fin()\n"
    "    await c.expect('A')\n"
    "    return c.state.value\n"
    "print('many:', sorted(set(await asyncio.gather(*(close_one() for _ in range(100))))))\n"
    "lab.close()",
]


@pytest.mark.skipif(nbclient is None, reason="needs nbclient, nbformat and ipykernel")
def test_notebook_cells_await_at_top_level(kernel_python3, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    client = nbclient.NotebookClient(nb, kernel_name=kernel_python3, timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # CellExecutionError if any cell fails
    text = "".join(o.get("text", "") for c in nb.cells for o in c.outputs if o.output_type == "stream")
    assert "one: A FIN_WAIT_2 CLOSE_WAIT" in text
    assert "many: ['FIN_WAIT_2']" in text


# ---- a remote target: kernel servers in a namespace of their own --------------

@pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"),
                    reason="needs nginx (Debian package nginx-light)")
@pytest.mark.parametrize("family", [4, 6])
def test_async_target_fetches_from_nginx_on_ten_connections_at_once(tmp_path, family):
    async def fetch(target):
        conn = await target.connect()
        conn.write(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            seg = await conn.expect(timeout=3.0)
            assert "R" not in seg.flags
            data += seg.payload
            if "F" in seg.flags:
                break
            if seg.payload:
                conn.ack()
        conn.fin()
        await conn.expect("A")
        assert conn.state == "CLOSED"
        conn.close()
        return data

    async def main():
        async with fp.AsyncTarget(SERVER6 if family == 6 else SERVER4, PORTS["nginx"]) as target:
            return await asyncio.gather(*(fetch(target) for _ in range(10)))

    with target_servers(tmp_path) as net, inside(net.cli):
        pages = asyncio.run(main())
    assert len(pages) == 10 and all(b"200 OK" in p and b"<p>finprobe</p>" in p for p in pages)
