"""How long a Lab takes to make and remove, and a full open-and-close through
the Python API, against the kernel doing the same in the same Lab.

    PYTHONPATH=python /usr/bin/python3 bench/lab.py
"""

import socket
import statistics
import sys
import time

sys.path.insert(0, "python")
import finprobe as fp  # noqa: E402

LABS, CLOSES = 50, 300


def median_ms(samples):
    return statistics.median(samples) * 1000


def lab_lifetime():
    samples = []
    for _ in range(LABS):
        t = time.perf_counter()
        fp.Lab().close()
        samples.append(time.perf_counter() - t)
    return samples


def finprobe_open_and_close(lab, server):
    t = time.perf_counter()
    conn = lab.connect(8080)
    peer, _ = server.accept()
    conn.fin()
    conn.expect("A")
    peer.close()
    conn.expect("FA")
    conn.ack()
    elapsed = time.perf_counter() - t
    segs = list(conn.trace)
    conn.close()
    # The kernel's own share: from each segment of ours to the answer it
    # stamped on arrival (its ACK of our FIN is delayed by milliseconds).
    waiting = sum(b.ts - a.ts for a, b in zip(segs, segs[1:]) if a.direction == "out" and b.direction == "in")
    return elapsed, waiting


def kernel_open_and_close(lab, server):
    t = time.perf_counter()
    client = lab.socket()
    client.connect((lab.peer_addr, 8080))
    peer, _ = server.accept()
    client.shutdown(socket.SHUT_WR)
    peer.recv(1)
    peer.close()
    client.recv(1)
    client.close()
    return time.perf_counter() - t


def main():
    labs = lab_lifetime()
    print(f"Lab make+remove: median {median_ms(labs):.2f} ms, p90 {median_ms(sorted(labs)[int(LABS * .9):]):.2f} ms "
          f"over {LABS}")
    with fp.Lab() as lab:
        lab.sysctl("net.ipv4.tcp_tw_reuse", 1)
        server = lab.listen(8080, backlog=1024)
        runs = [finprobe_open_and_close(lab, server) for _ in range(CLOSES)]
        ours = [r[0] for r in runs]
        kernel_share = [r[1] for r in runs]
        kernel = [kernel_open_and_close(lab, server) for _ in range(CLOSES)]
    print(f"open-and-close, finprobe (SYN..final ACK, 7 segments): median {median_ms(ours):.3f} ms "
          f"= {1 / statistics.median(ours):.0f} per second")
    print(f"  of which the kernel took (our segment -> its answer): median {median_ms(kernel_share):.3f} ms; "
          f"finprobe's own: median {median_ms([a - b for a, b in zip(ours, kernel_share)]):.3f} ms")
    print(f"open-and-close, kernel client in the same lab:        median {median_ms(kernel):.3f} ms")
    print(f"ratio finprobe / kernel: {statistics.median(ours) / statistics.median(kernel):.1f}x")


if __name__ == "__main__":
    main()
