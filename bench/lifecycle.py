"""Sequential lifecycles through the Python API against the bare C floor
(bench/floor.c), in the same Lab, in one run: the figures and the ratio.

One lifecycle, both sides alike: SYN -> SYN-ACK, ACK, FIN -> ACK, RST (so
the kernel keeps no socket), one at a time; every DRAIN_EVERY lifecycles
the listener's queue of reset children is accepted and closed. The Lab's
route carries ``quickack``, so the kernel answers our FIN at once rather
than after its delayed-ACK timer.

    make bench            (builds build/floor)
    PYTHONPATH=python /usr/bin/python3 bench/lifecycle.py [--count N] [--rounds R] [--profile]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

PORT = 8080
DRAIN_EVERY = 64
FLOOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "floor")
FLOOR_FIRST_PORT = 30000  # below the Lab's own source ports (40000..59999)


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000, help="lifecycles a run (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, the best kept (default 3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one Python run instead")
    args = parser.parse_args()
    if not os.access(FLOOR, os.X_OK):
        raise SystemExit("bench: build/floor is missing: make bench builds it")
    with fp.Lab() as lab:
        quickack(lab)
        server = lab.listen(PORT, backlog=4 * DRAIN_EVERY)
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
    best_floor, best_checked, best_ours = max(floor), max(checked), max(ours)
    print(f"lifecycle (SYN..ACK of our FIN, RST), sequential, best of {args.rounds} x {args.count}:")
    print(f"  C floor, the exchange only (bench/floor.c):         {best_floor:8.0f} per second")
    print(f"  C floor with lab.connect's port check (sock_diag):  {best_checked:8.0f} per second")
    print(f"  finprobe Python API (lab.connect .. close):         {best_ours:8.0f} per second")
    print(f"  ratio finprobe / floor: {best_ours / best_floor:.2f} of the exchange only, "
          f"{best_ours / best_checked:.2f} of the same work (at least 0.50, goal 0.67)")


if __name__ == "__main__":
    main()
