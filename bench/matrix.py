"""The state x event matrix against the Lab's kernel: its wall time, the
cells run in one batch, against the same cells one at a time (the baseline:
a sequential run, each cell waiting its own answer window), in one process.

    PYTHONPATH=python /usr/bin/python3 bench/matrix.py

The sequential baseline runs one row (22 cells) and is scaled to the whole
matrix: the full sequential run would take minutes and says nothing more.
"""

import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402
from finprobe import events  # noqa: E402

ROW = "ESTABLISHED"


def timed(**kwargs):
    t = time.perf_counter()
    result = fp.matrix(**kwargs)
    return time.perf_counter() - t, result


def main():
    cells = len(events.cells())
    for ipv6 in (False, True):
        family = "IPv6" if ipv6 else "IPv4"
        batched, m = timed(ipv6=ipv6)
        print(f"{family} matrix, {cells} cells at once: {batched:.2f} s wall "
              f"(Lab made and removed included), {m.counts()}")
    row, m = timed(states=[ROW], concurrency=1)
    per_cell = row / len(m.cells)
    print(f"IPv4, one row ({len(m.cells)} cells) one cell at a time: {row:.2f} s = {per_cell:.3f} s a cell; "
          f"the whole matrix so: ~{per_cell * cells:.0f} s")
    print(f"ratio sequential / batched (IPv4): {per_cell * cells / batched:.0f}x")


if __name__ == "__main__":
    main()
