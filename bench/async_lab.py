"""Lifecycles through fp.AsyncLab, many in flight on one event loop, two kinds:

- full: connect (SYN, SYN-ACK, ACK), our FIN, its ACK, the kernel's FIN once
  its server has read our EOF and closed, our ACK (7 segments);
- short, the exchange of the issue's C baseline: connect, our FIN, its ACK,
  then our RST so that the kernel forgets the socket at once (6 segments).

The kernel's server is a small epoll loop in a process of its own inside
the lab, and the lab's route has quickack, so that the kernel's ACK of our
FIN is not delayed.

    PYTHONPATH=python /usr/bin/python3 bench/async_lab.py [LIFECYCLES [IN_FLIGHT]]
"""

import asyncio
import subprocess
import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

LIFECYCLES, IN_FLIGHT, FULL_PORT, SHORT_PORT = 20_000, 1024, 8080, 8081

# Accepts on both ports; closes a connection of FULL_PORT once it reads EOF,
# one of SHORT_PORT once it is reset.
SERVER = """
import select, socket, sys
addr, full, short = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ep = select.epoll()
listeners, peers = {}, {}
for port in (full, short):
    srv = socket.socket(socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(4096)
    srv.setblocking(False)
    ep.register(srv, select.EPOLLIN)
    listeners[srv.fileno()] = (srv, select.EPOLLIN if port == full else 0)
print("ready", flush=True)
while True:
    for fd, _ in ep.poll():
        if fd in listeners:
            srv, events = listeners[fd]
            while True:
                try:
                    s, _ = srv.accept()
                except BlockingIOError:
                    break
                peers[s.fileno()] = s
                ep.register(s, events)
        else:
            s = peers.pop(fd)
            ep.unregister(s)
            s.close()
"""


async def full_lifecycle(lab):
    """SYN .. our final ACK, 7 segments"""
    conn = await lab.connect(FULL_PORT, timeout=5.0)
    conn.fin()
    # the kernel's server closes as soon as it reads our EOF: its FIN may
    # come before its ACK of ours, which then follows
    if "F" not in (await conn.expect(timeout=5.0)).flags:
        await conn.expect("FA", timeout=5.0)
    conn.ack()
    conn.close()


async def short_lifecycle(lab):
    """SYN, SYN-ACK, ACK, FIN, ACK, RST"""
    conn = await lab.connect(SHORT_PORT, timeout=5.0)
    conn.fin()
    await conn.expect("A", timeout=5.0)
    conn.rst()
    conn.close()


async def run(lab, lifecycle, total, in_flight):
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
        server = lab.popen([sys.executable, "-c", SERVER, lab.peer_addr, str(FULL_PORT), str(SHORT_PORT)],
                           stdout=subprocess.PIPE, text=True)
        server.stdout.readline()
        for kind, how in (("full", full_lifecycle), ("short", short_lifecycle)):
            elapsed = asyncio.run(run(lab, how, total, in_flight))
            print(f"AsyncLab {kind} lifecycles ({how.__doc__}): {total}, {in_flight} in flight: "
                  f"{elapsed:.2f} s = {total / elapsed:.0f}/s")


if __name__ == "__main__":
    main()
