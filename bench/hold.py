"""10,000 connections held ESTABLISHED at once in one process (one Lab, its
kernel's accept queue holding the other ends), and what each costs us:
Python objects (tracemalloc) and the C heap (glibc's mallinfo2), measured
in the same process before and after.

    PYTHONPATH=python /usr/bin/python3 bench/hold.py [COUNT]
"""

import ctypes
import gc
import sys
import time
import tracemalloc

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

COUNT = 10_000


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _Mallinfo2


def c_heap():
    """Bytes the C heap has handed out (glibc), mmap'd blocks included."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


def held(count):
    with fp.Lab() as lab:
        lab.sysctl("net.core.somaxconn", 65535)
        lab.listen(8080, backlog=65535)       # the kernel's ends wait in its accept queue
        gc.collect()
        tracemalloc.start()
        py0, c0 = tracemalloc.get_traced_memory()[0], c_heap()
        started = time.perf_counter()
        conns = [lab.connect(8080) for _ in range(count)]
        took = time.perf_counter() - started
        gc.collect()
        py, c = tracemalloc.get_traced_memory()[0] - py0, c_heap() - c0
        tracemalloc.stop()
        states = {str(conn.state) for conn in conns}
        sample = [lab.peer_state(conns[i]) for i in range(0, count, max(1, count // 20))]
        for conn in conns:
            conn.close()
    return took, py, c, states, sample


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else COUNT
    took, py, c, states, sample = held(count)
    print(f"{count} connections held ESTABLISHED in one process (made in {took:.2f} s, "
          f"{count / took:.0f}/s; ours {sorted(states)}, the kernel's, sampled, {sorted(set(map(str, sample)))})")
    print(f"  per connection: {py / count:.0f} B of Python objects + {c / count:.0f} B of C heap "
          f"= {(py + c) / count:.0f} B (goal < 2048, at most 4096)")


if __name__ == "__main__":
    main()
