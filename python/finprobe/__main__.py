"""python -m finprobe probe [HOST:PORT] [--json] [--pcap DIR]

Probe how a TCP stack closes its connections: the local Linux kernel in a
Lab by default, or a server at HOST:PORT (IPv6 as [addr]:port).
"""

import argparse
import os
import sys

from . import _args, _core
from .probe import SOURCES, probe

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "info": "INFO", "skipped": "SKIP"}


def print_sources(out):
    """The legend of the labels each observation carries."""
    out.write("each fact is labelled by its source:\n")
    for source, meaning in SOURCES.items():
        out.write(f"  {source + ':':8s}{meaning}\n")


def print_check(check, out):
    out.write(f"\n{VERDICT_MARK[check.verdict]}  {check.name}  ({check.reference})\n")
    out.write(f"      expected: {check.expected}\n")
    if check.verdict == "skipped":
        out.write(f"      skipped:  {check.reason}\n")
    for seen in check.observations:
        out.write(f"      {seen.source + ':':10s}{seen.text}\n")
    if check.trace is not None and len(check.trace):
        out.write(_indent(check.trace.ladder_text(), "    ") + "\n")
        changes = [f"{a}->{b}" for _, a, b, _ in getattr(check.trace, "transitions", [])]
        if changes:
            out.write(f"      our states: {' '.join(changes)}\n")


def _indent(text, prefix):
    return "\n".join(prefix + line for line in text.splitlines())


def write_pcaps(report, directory):
    for check in report.checks:
        if check.trace is not None and len(check.trace) and hasattr(check.trace, "to_pcap"):
            check.trace.to_pcap(os.path.join(directory, f"{check.name}.pcap"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m finprobe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="report how a TCP stack closes connections")
    p.add_argument("target", nargs="?", help="HOST:PORT of a server; default: the local kernel in a Lab")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--pcap", metavar="DIR", help="write each check's segments to DIR/<check>.pcap")
    p.add_argument("--check", action="append", help="run only this check (repeatable)")
    args = parser.parse_args(argv)
    try:
        host, port = _args.host_port("target", args.target) if args.target else (None, None)
        if args.pcap:  # now, not after the whole run
            args.pcap = _args.writable_directory("--pcap", args.pcap)
    except ValueError as e:
        parser.error(str(e))
    live = None if args.json else (lambda check: print_check(check, sys.stdout))
    if not args.json:
        print(f"finprobe: probing {'the local Linux kernel in a Lab' if host is None else args.target}")
        print_sources(sys.stdout)
    try:
        report = probe(host, port, checks=args.check, on_check=live)
    except _core.Error as e:
        print(f"finprobe: {e}", file=sys.stderr)
        return 2
    if args.pcap:
        write_pcaps(report, args.pcap)
    if args.json:
        print(report.to_json())
    else:
        counts = report.counts()
        print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['info']} info, "
              f"{counts['skipped']} skipped")
    return 1 if report.counts()["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
