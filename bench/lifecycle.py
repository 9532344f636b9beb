"""Lifecycles through the Python API against bare C (no library), in the
same Lab, in one run: the figures and the ratios.

- sequential: lab.connect .. close one at a time, against bench/floor.c;
- many in flight (IN_FLIGHT): fp.AsyncLab, where the package has it,
  against bench/limit.c (sendmmsg batches, a table by source port).

One lifecycle, both sides alike: SYN -> SYN-ACK, ACK, FIN -> ACK, RST (so
the kernel keeps no socket), one at a time; every DRAIN_EVERY lifecycles
the listener's queue of reset children is accepted and closed. The Lab's
route carries ``quickack``, so the kernel answers our FIN at once rather
than after its delayed-ACK timer.

    make bench            (builds build/floor, build/limit)
    PYTHONPATH=python /usr/bin/python3 bench/lifecycle.py [--count N] [--rounds R] [--profile]
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

PORT = 8080
DRAIN_EVERY = 64
BUILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build")
FLOOR, LIMIT = os.path.join(BUILD, "floor"), os.path.join(BUILD, "limit")
FLOOR_FIRST_PORT = 30000  # below the Lab's own source ports (40000..59999)
LIMIT_FIRST_PORT = 20000  # limit.c takes 16 x IN_FLIGHT ports from here
IN_FLIGHT, MANY = 1024, 20000
BACKLOG = 4096  # IN_FLIGHT reset children and more wait for a drain


def quickack(lab):
    """The kernel's route to us with quickack: no delayed ACKs."""
    cmd = ["ip", "route", "change", "192.0.2.0/24", "dev", "lab0", "proto", "kernel", "scope", "link",
           "src", lab.peer_addr, "quickack", "1"]
    if lab.popen(cmd).wait() != 0:
        raise SystemExit("bench: ip route change ... quickack 1 failed in the lab")


def drain(server):
    """Accept and close the listener's reset children (the harness's work,
    not the API's: the C floor does the same)."""
    while True:
        try:
            fd, _ = server._accept()
        except BlockingIOError:
            return
        os.close(fd)


def python_run(lab, server, count):
    """count lifecycles through the public API; lifecycles per second."""
    t = time.perf_counter()
    for i in range(count):
        conn = lab.connect(PORT)
        conn.fin()
        conn.expect("A")
        conn.rst()
        conn.close()
        if i % DRAIN_EVERY == DRAIN_EVERY - 1:
            drain(server)
    elapsed = time.perf_counter() - t
    drain(server)
    return count / elapsed


def floor_run(lab, server, count, check=False):
    """count lifecycles by build/floor over the Lab's own packet socket;
    with check, each after lab.connect's sock_diag look at its source port."""
    local_mac, peer_mac = lab._core.macs
    fd = lab._core.packet_fd
    proc = lab.popen([FLOOR, str(fd), str(server.fileno()), local_mac.hex(), peer_mac.hex(), str(count),
                      str(FLOOR_FIRST_PORT)] + (["check"] if check else []), pass_fds=(fd, server.fileno()), stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench: build/floor failed ({proc.returncode}): {out}")
    drain(server)
    return float(out.split("=")[1].split()[0])


def limit_run(lab, server, count, in_flight):
    """count lifecycles by build/limit, in_flight at once."""
    local_mac, peer_mac = lab._core.macs
    fd = lab._core.packet_fd
    proc = lab.popen([LIMIT, str(fd), str(server.fileno()), local_mac.hex(), peer_mac.hex(), str(count),
                      str(in_flight), str(LIMIT_FIRST_PORT)], pass_fds=(fd, server.fileno()),
                     stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench: build/limit failed ({proc.returncode}): {out}")
    drain(server)
    return float(out.split("=")[1].split()[0])


def async_run(count, in_flight):
    """count lifecycles through fp.AsyncLab, in_flight at once, in a Lab of
    its own set up alike (quickack, a listener drained as above)."""
    async def lifecycle(lab):
        conn = await lab.connect(PORT, timeout=5.0)
        conn.fin()
        await conn.expect("A", timeout=5.0)
        conn.rst()
        conn.close()

    async def run(lab, server):
        left = iter(range(count))
        done = 0

        async def worker():
            nonlocal done
            for _ in left:
                await lifecycle(lab)
                done += 1
                if done % DRAIN_EVERY == 0:
                    drain(server)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return count / (time.perf_counter() - t)

    with fp.AsyncLab() as lab:
        quickack(lab)
        server = lab.listen(PORT, backlog=BACKLOG)
        server.setblocking(False)
        return asyncio.run(run(lab, server))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000, help="lifecycles a run (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, the best kept (default 3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one Python run instead")
    args = parser.parse_args()
    if not (os.access(FLOOR, os.X_OK) and os.access(LIMIT, os.X_OK)):
        raise SystemExit("bench: build/floor or build/limit is missing: make bench builds them")
    with fp.Lab() as lab:
        quickack(lab)
        server = lab.listen(PORT, backlog=BACKLOG)
        server.setblocking(False)
        python_run(lab, server, 500)  # warm: caches, the kernel's tables
        if args.profile:
            import cProfile
            import pstats
            cProfile.runctx("python_run(lab, server, args.count)", globals(), locals(), "/tmp/lifecycle.prof")
            pstats.Stats("/tmp/lifecycle.prof").sort_stats("tottime").print_stats(25)
            return
        floor, checked, ours = [], [], []
        for _ in range(args.rounds):  # interleaved: a busy neighbour slows all alike
            floor.append(floor_run(lab, server, args.count))
            checked.append(floor_run(lab, server, args.count, check=True))
            ours.append(python_run(lab, server, args.count))
        limit = max(limit_run(lab, server, MANY, IN_FLIGHT) for _ in range(args.rounds))
    many = max(async_run(MANY, IN_FLIGHT) for _ in range(args.rounds)) if hasattr(fp, "AsyncLab") else None
    best_floor, best_checked, best_ours = max(floor), max(checked), max(ours)
    print(f"lifecycle (SYN..ACK of our FIN, RST), sequential, best of {args.rounds} x {args.count}:")
    print(f"  C floor, the exchange only (bench/floor.c):         {best_floor:8.0f} per second")
    print(f"  C floor with lab.connect's port check (sock_diag):  {best_checked:8.0f} per second")
    print(f"  finprobe Python API (lab.connect .. close):         {best_ours:8.0f} per second")
    print(f"  ratio finprobe / floor: {best_ours / best_floor:.2f} of the exchange only, "
          f"{best_ours / best_checked:.2f} of the same work (at least 0.50, goal 0.67)")
    print(f"lifecycles, {IN_FLIGHT} in flight, best of {args.rounds} x {MANY}:")
    print(f"  C limit (bench/limit.c, sendmmsg batches, no library): {limit:8.0f} per second")
    if many is None:
        print("  fp.AsyncLab: not in this package")
    else:
        print(f"  fp.AsyncLab (connect .. close on one event loop):     {many:8.0f} per second")
        print(f"  ratio AsyncLab / limit: {many / limit:.2f} (at least 0.30, goal 0.80)")


if __name__ == "__main__":
    main()
