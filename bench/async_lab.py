"""Full lifecycles through fp.AsyncLab, many in flight on one event loop:
connect (SYN, SYN-ACK, ACK), our FIN, its ACK, the kernel's FIN once its
server has read our EOF and closed, our ACK (7 segments). The kernel's
server is a small epoll loop in a process of its own inside the lab, and
the lab's route has quickack so that the kernel's ACK of our FIN is not
delayed (nor merged with its FIN).

    PYTHONPATH=python /usr/bin/python3 bench/async_lab.py [LIFECYCLES [IN_FLIGHT]]
"""

import asyncio
import subprocess
import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

LIFECYCLES, IN_FLIGHT, PORT = 20_000, 1024, 8080

# Accepts, and closes each connection once it reads EOF.
SERVER = """
import select, socket, sys
srv = socket.socket(socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(4096)
srv.setblocking(False)
ep = select.epoll()
ep.register(srv, select.EPOLLIN)
peers = {}
print("ready", flush=True)
while True:
    for fd, _ in ep.poll():
        if fd == srv.fileno():
            while True:
                try:
                    s, _ = srv.accept()
                except BlockingIOError:
                    break
                s.setblocking(False)
                peers[s.fileno()] = s
                ep.register(s, select.EPOLLIN)
        else:
            s = peers.pop(fd)
            ep.unregister(s)
            s.close()
"""


async def lifecycle(lab):
    conn = await lab.connect(PORT, timeout=5.0)
    conn.fin()
    await conn.expect("A", timeout=5.0)
    await conn.expect("FA", timeout=5.0)
    conn.ack()
    conn.close()


async def run(lab, total, in_flight):
    left = iter(range(total))

    async def worker():
        for _ in left:
            await lifecycle(lab)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - t


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else LIFECYCLES
    in_flight = int(sys.argv[2]) if len(sys.argv) > 2 else IN_FLIGHT
    with fp.AsyncLab() as lab:
        lab.popen(["ip", "route", "change", "192.0.2.0/24", "dev", "lab0", "proto", "kernel", "scope", "link",
                   "src", lab.peer_addr, "quickack", "1"]).wait()
        server = lab.popen([sys.executable, "-c", SERVER, lab.peer_addr, str(PORT)],
                           stdout=subprocess.PIPE, text=True)
        server.stdout.readline()
        elapsed = asyncio.run(run(lab, total, in_flight))
    print(f"AsyncLab: {total} lifecycles (SYN..final ACK, 7 segments), {in_flight} in flight: "
          f"{elapsed:.2f} s = {total / elapsed:.0f} lifecycles/s")


if __name__ == "__main__":
    main()
