#!/usr/bin/python3
"""Make docs/matrix.svg, the README's picture: the state x event matrix of
Linux, lwIP, gVisor and slirp side by side (finprobe.compare_view).

    sudo PYTHONPATH=python /usr/bin/python3 scripts/matrix_svg.py [--peers linux lwip ...]
        [--profile rfc] [--out docs/matrix.svg] [--html FILE]

Needs root (Labs), the build (make all stacks). Prints the text table and
each peer's wall time to stderr as it goes.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from finprobe.compare_view import compare_matrices  # noqa: E402

PEERS = ["linux", "lwip", "gvisor", "slirp"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", nargs="+", default=PEERS, metavar="PEER")
    p.add_argument("--profile", default="rfc")
    p.add_argument("--out", default=os.path.join("docs", "matrix.svg"))
    p.add_argument("--html", metavar="FILE", help="also the grid and the table as an HTML page")
    args = p.parse_args()
    started = time.monotonic()

    def progress(peer, result):
        took = getattr(result, "seconds", None)
        print(f"{peer}: {result!r}" + (f" in {took:.1f} s" if took is not None else ""), file=sys.stderr)

    comparison = compare_matrices(args.peers, profile=args.profile, on_matrix=progress)
    print(comparison.table())
    comparison.to_svg(args.out)
    if args.html:
        comparison.to_html(args.html)
    print(f"wrote {args.out} in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
