"""python -m finprobe probe [HOST:PORT | --stack "CMD ..." --port PORT] [--json] [--pcap DIR] [--slow]
python -m finprobe probe --compare PEER [PEER ...] [--html FILE] [--json] [--slow]

Probe how a TCP stack closes its connections: the local Linux kernel in a
Lab by default, a server at HOST:PORT (IPv6 as [addr]:port), or a user-space
stack started by CMD in a Lab, serving HTTP on PORT. --compare probes several
peers (linux, HOST:PORT, or a stack recipe's name: lwip, gvisor, slirp) and
prints one table, a row a check, a column a peer; lwip and gvisor are given
their control sockets there, so their own states are reported ("stack")
beside finprobe's model of them ("model").
"""

import argparse
import os
import shlex
import sys

from . import _args, _core
from .probe import SOURCES, compare, peer_arguments, probe

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "info": "INFO", "skipped": "SKIP"}


def print_sources(out):
    """The legend of the labels each observation carries."""
    out.write("each fact is labelled by its source:\n")
    for source, meaning in SOURCES.items():
        out.write(f"  {source + ':':9s}{meaning}\n")


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
    p.add_argument("--stack", metavar="CMD", help="a user-space TCP stack's command (one string, split as "
                   "a shell would; {tap} {peer_addr} {local_addr} {prefix} filled in; with {control}, a control "
                   "socket on which it tells its states, reported as 'stack'), serving HTTP on --port")
    p.add_argument("--port", type=int, help="the port the --stack serves HTTP on")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the --stack's command (repeatable)")
    p.add_argument("--ipv6", action="store_true", help="a Lab (the kernel's or a stack's) over IPv6")
    p.add_argument("--compare", nargs="+", metavar="PEER",
                   help="probe each PEER (linux, HOST:PORT or a stack recipe's name) and print one table")
    p.add_argument("--html", metavar="FILE", help="with --compare: also write the table as HTML to FILE")
    p.add_argument("--slow", action="store_true",
                   help="follow timed behaviours (TIME_WAIT, FIN_WAIT_2, FIN retransmissions) for minutes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--pcap", metavar="DIR", help="write each check's segments to DIR/<check>.pcap")
    p.add_argument("--check", action="append", help="run only this check (repeatable)")
    args = parser.parse_args(argv)
    try:
        kwargs = _peer_kwargs(args)
        if args.pcap:  # now, not after the whole run
            args.pcap = _args.writable_directory("--pcap", args.pcap)
        if args.html:
            args.html = os.path.abspath(args.html)
            _args.writable_directory("--html", os.path.dirname(args.html))
    except ValueError as e:
        parser.error(str(e))
    if args.compare:
        return run_compare(args)
    live = None if args.json else (lambda check: print_check(check, sys.stdout))
    if not args.json:
        print(f"finprobe: probing {_describe(args)}")
        print_sources(sys.stdout)
    else:
        print(f"finprobe: probing {_describe(args)}", file=sys.stderr)
    try:
        report = probe(**kwargs, slow=args.slow, checks=args.check, on_check=live)
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


def _peer_kwargs(args):
    """fp.probe's arguments from the command line; ValueError for a wrong combination."""
    if args.compare:
        if args.target or args.stack or args.port is not None or args.env or args.pcap:
            raise ValueError("--compare names its peers itself: no HOST:PORT, --stack, --port, --env or --pcap")
        for peer in args.compare:
            peer_arguments(peer)  # every name checked before any probe
        return None
    if args.html:
        raise ValueError("--html writes a comparison's table: use it with --compare")
    env = {}
    for item in args.env:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"--env: {item!r} is not NAME=VALUE")
        env[name] = value
    if args.stack is not None:
        if args.target:
            raise ValueError("give HOST:PORT or --stack, not both")
        if args.port is None:
            raise ValueError("--stack needs --port, the port the stack serves HTTP on")
        _args.port("--port", args.port)
        return {"stack": shlex.split(args.stack), "port": args.port, "env": env or None, "ipv6": args.ipv6}
    if args.port is not None or env:
        raise ValueError("--port and --env go with --stack")
    if args.target:
        host, port = _args.host_port("target", args.target)
        return {"host": host, "port": port}
    return {"ipv6": args.ipv6}


def _describe(args):
    if args.stack:
        return f"the stack `{args.stack}` in a Lab, port {args.port}"
    return args.target or "the local Linux kernel in a Lab"


def run_compare(args):
    """Probe each peer, then print the table (and write it as HTML)."""
    def progress(peer, report):
        print(f"finprobe: {peer}: {report!r}", file=sys.stderr)

    try:
        comparison = compare(args.compare, slow=args.slow, checks=args.check, on_report=progress)
    except _core.Error as e:
        print(f"finprobe: {e}", file=sys.stderr)
        return 2
    if args.html:
        comparison.to_html(args.html)
    if args.json:
        import json
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        print(comparison.table())
        if args.html:
            print(f"\nwritten to {args.html}")
    return 1 if any(not hasattr(r, "checks") for r in comparison.reports) else 0


if __name__ == "__main__":
    sys.exit(main())
