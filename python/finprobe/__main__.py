"""python -m finprobe probe [HOST:PORT | --stack "CMD ..." --port PORT] [--json] [--pcap DIR] [--slow]
python -m finprobe probe --compare PEER [PEER ...] [--html FILE] [--json] [--slow]
python -m finprobe matrix [HOST:PORT | --stack "CMD ..." --port PORT] [--ipv6] [--sysctl NAME=VALUE ...]
                          [--profile rfc|linux|FILE] [--json] [--html FILE] [--svg FILE]
python -m finprobe matrix --compare PEER [PEER ...] [--html FILE] [--svg FILE] [--json]
python -m finprobe replay FILE.pcap [HOST:PORT | --stack "CMD ..." --port PORT] [--side client|server]
                          [--sysctl NAME=VALUE ...] [--speed X] [--pytest FILE] [--json]

Probe how a TCP stack closes its connections: the local Linux kernel in a
Lab by default, a server at HOST:PORT (IPv6 as [addr]:port), or a user-space
stack started by CMD in a Lab, serving HTTP on PORT. --compare probes several
peers (linux, HOST:PORT, or a stack recipe's name: lwip, gvisor, slirp) and
prints one table, a row a check, a column a peer; lwip and gvisor are given
their control sockets there, so their own states are reported ("stack")
beside finprobe's model of them ("model").

matrix drives the peer into each close state and sends each event of the
state x event matrix (API.md), one fresh connection a cell, and judges the
answers by a profile of expectations (rfc, linux, or a profile file).

replay plays one side of a captured connection (the first SYN's sender by
default) against a live peer, the local kernel in a Lab by default (a socket
of its listening on the captured port), and lists where the peer's answers
differ from the capture's; --pytest writes the replay as a test file. Exit
status: 0 the same, 1 differences, 2 an error.
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
    _peer_options(p, "the local kernel in a Lab",
                  "a user-space TCP stack's command (one string, split as a shell would; {tap} {peer_addr} "
                  "{local_addr} {prefix} filled in; with {control}, a control socket on which it tells its "
                  "states, reported as 'stack'), serving HTTP on --port",
                  "the port the --stack serves HTTP on")
    p.add_argument("--compare", nargs="+", metavar="PEER",
                   help="probe each PEER (linux, HOST:PORT or a stack recipe's name) and print one table")
    p.add_argument("--html", metavar="FILE", help="with --compare: also write the table as HTML to FILE")
    p.add_argument("--slow", action="store_true",
                   help="follow timed behaviours (TIME_WAIT, FIN_WAIT_2, FIN retransmissions) for minutes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--pcap", metavar="DIR", help="write each check's segments to DIR/<check>.pcap")
    p.add_argument("--check", action="append", help="run only this check (repeatable)")
    _add_matrix_parser(sub)
    _add_replay_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "matrix":
        return run_matrix(parser, args)
    if args.command == "replay":
        return run_replay(parser, args)
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


def _peer_options(parser, default, stack_help, port_help, sysctl=False):
    """The options naming the peer, the same for every command."""
    parser.add_argument("target", nargs="?", help=f"HOST:PORT of a server; default: {default}")
    parser.add_argument("--stack", metavar="CMD", help=stack_help)
    parser.add_argument("--port", type=int, help=port_help)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the --stack's command (repeatable)")
    parser.add_argument("--ipv6", action="store_true", help="a Lab (the kernel's or a stack's) over IPv6")
    if sysctl:
        parser.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                            help="set a sysctl in the Lab's kernel first, e.g. net.ipv4.tcp_rfc1337=1 (repeatable)")


def _add_matrix_parser(sub):
    m = sub.add_parser("matrix", help="each close state of a TCP stack against each event")
    _peer_options(m, "the local kernel in a Lab",
                  "a user-space TCP stack's command (as for probe), serving HTTP on --port",
                  "the port the --stack serves HTTP on", sysctl=True)
    m.add_argument("--profile", default="rfc", metavar="rfc|linux|FILE",
                   help="the expectations the verdicts follow: a built-in profile or a profile file")
    m.add_argument("--state", action="append", metavar="STATE", help="only this state's row (repeatable)")
    m.add_argument("--event", action="append", metavar="EVENT", help="only this event (repeatable)")
    m.add_argument("--compare", nargs="+", metavar="PEER",
                   help="run the matrix against each PEER (linux, HOST:PORT or a stack recipe's name) "
                        "and print one table")
    m.add_argument("--json", action="store_true", help="print the matrix as JSON (stdout holds it alone)")
    m.add_argument("--html", metavar="FILE", help="also write the matrix as an HTML table to FILE")
    m.add_argument("--svg", metavar="FILE", help="also write the matrix as an SVG grid to FILE")


def _matrix_kwargs(args):
    """fp.matrix's arguments from the command line; ValueError for a wrong combination."""
    kwargs = {"ipv6": args.ipv6, "profile": args.profile, "states": args.state, "events": args.event}
    sysctls = dict(_pairs("--sysctl", args.sysctl))
    if args.compare:
        if args.target or args.stack or args.port is not None or args.env or sysctls:
            raise ValueError("--compare names its peers itself: no HOST:PORT, --stack, --port, --env or --sysctl")
        for peer in args.compare:
            peer_arguments(peer)
        return kwargs
    env = dict(_pairs("--env", args.env))
    if args.stack is not None:
        if args.target:
            raise ValueError("give HOST:PORT or --stack, not both")
        if args.port is None:
            raise ValueError("--stack needs --port, the port the stack serves HTTP on")
        _args.port("--port", args.port)
        return dict(kwargs, stack=shlex.split(args.stack), port=args.port, env=env or None)
    if args.port is not None or env:
        raise ValueError("--port and --env go with --stack")
    if args.target:
        if sysctls:
            raise ValueError("--sysctl sets a Lab kernel's settings: not with HOST:PORT")
        host, port = _args.host_port("target", args.target)
        return dict(kwargs, host=host, port=port)
    return dict(kwargs, sysctls=sysctls)


def _pairs(option, items):
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"{option}: {item!r} is not NAME=VALUE")
        yield name, value


def run_matrix(parser, args):
    """Run the matrix (or one a peer, side by side) and print it."""
    from . import profile
    from .matrix import matrix
    try:
        kwargs = _matrix_kwargs(args)
        profile.load(args.profile)                 # a bad profile file: a usage error, now
        for option in ("html", "svg"):
            path = getattr(args, option)
            if path:
                setattr(args, option, os.path.abspath(path))
                _args.writable_directory(f"--{option}", os.path.dirname(getattr(args, option)))
    except (ValueError, TypeError) as e:
        parser.error(str(e))

    def progress(cell):
        if cell.verdict == "fail":
            print(f"finprobe: FAIL {cell.name}: {'; '.join(cell.mismatches)}", file=sys.stderr)

    try:
        if args.compare:
            from . import compare_view

            def done(peer, result):
                print(f"finprobe: {peer}: {result!r}", file=sys.stderr)
            shown = compare_view.compare_matrices(args.compare, on_matrix=done, **kwargs)
        else:
            print(f"finprobe: the state x event matrix of {_describe(args)}", file=sys.stderr)
            shown = matrix(**kwargs, on_cell=progress)
    except ValueError as e:         # a setting the Lab's kernel refuses, found as it is made
        parser.error(str(e))
    except _core.Error as e:
        print(f"finprobe: {e}", file=sys.stderr)
        return 2
    if args.html:
        shown.to_html(args.html)
    if args.svg:
        shown.to_svg(args.svg)
    if args.json:
        import json
        print(json.dumps(shown.as_dict(), indent=2))
    elif args.compare:
        print(shown.table(colour=sys.stdout.isatty()))
    else:
        print(shown.table())
    if args.compare:
        return 1 if any(not hasattr(m, "cells") for m in shown.matrices) else 0
    print(f"finprobe: {shown!r} in {shown.seconds:.1f} s", file=sys.stderr)
    return 1 if shown.counts()["fail"] else 0


def _add_replay_parser(sub):
    r = sub.add_parser("replay", help="play a captured connection against a live peer and list the differences")
    r.add_argument("file", metavar="FILE.pcap", help="the capture (pcap or pcapng)")
    _peer_options(r, "the local kernel in a Lab, a socket of its listening on the captured port",
                  "a user-space TCP stack's command (as for probe), listening on --port",
                  "the peer's port (default: the captured server's)", sysctl=True)
    r.add_argument("--side", choices=("client", "server"), default="client",
                   help="the side finprobe plays: client (the first SYN's sender, default) or server")
    r.add_argument("--connection", metavar="ADDR:PORT,ADDR:PORT",
                   help="which connection of the capture (default: the first)")
    r.add_argument("--speed", type=float, help="play the captured timing divided by X (default: as fast as "
                   "the answers allow)")
    r.add_argument("--pytest", metavar="FILE", help="also write the replay as a pytest file")
    r.add_argument("--json", action="store_true", help="print the result as JSON (stdout holds it alone)")


def run_replay(parser, args):
    """Replay the capture against the peer the arguments name."""
    from .lab import Lab
    from .replay import pick_connection, replay
    from .target import Target
    from .trace import read_pcap
    try:
        if args.target and args.stack:
            raise ValueError("give HOST:PORT or --stack, not both")
        if args.env and not args.stack:
            raise ValueError("--env goes with --stack")
        if args.target and (args.sysctl or args.ipv6):
            raise ValueError("--sysctl and --ipv6 are the Lab's: not with HOST:PORT")
        sysctls = list(_pairs("--sysctl", args.sysctl))
        connection = _connection_arg(args.connection)
        if args.port is not None:
            _args.port("--port", args.port)
        if args.stack and args.port is None:
            raise ValueError("--stack needs --port, the port the stack listens on")
        if not os.path.exists(args.file):
            raise ValueError(f"no capture file {args.file!r}")
        if args.pytest:
            args.pytest = os.path.abspath(args.pytest)
            _args.writable_directory("--pytest", os.path.dirname(args.pytest))
    except ValueError as e:
        parser.error(str(e))
    out = sys.stderr
    peer = None
    try:
        trace = read_pcap(args.file)
        picked = pick_connection(trace, connection)
        if args.target:
            host, port = _args.host_port("target", args.target)
            peer = Target(host, port)
        else:
            env = dict(_pairs("--env", args.env)) or None
            peer = Lab(ipv6=args.ipv6, stack=shlex.split(args.stack) if args.stack else None, env=env)
            for name, value in sysctls:
                peer.sysctl(name, value)
            if not args.stack and args.side == "client":
                peer.listen(args.port or picked.server[1])
        print(f"finprobe: replaying {args.file} against {peer!r}", file=out)
        kwargs = {"target": peer} if args.target else {"lab": peer}
        result = replay(trace, side=args.side, speed=args.speed, connection=connection,
                        port=args.port, **kwargs)
        result.source = args.file
    except (ValueError, TypeError) as e:
        print(f"finprobe: {e}", file=out)
        return 2
    except _core.Error as e:
        print(f"finprobe: {e}", file=out)
        return 2
    finally:
        if peer is not None:
            peer.close()
    if args.pytest:
        result.to_pytest(args.pytest)
        print(f"finprobe: wrote {args.pytest}", file=out)
    if args.json:
        import json
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.text())
    return 1 if result.differences else 0


def _connection_arg(text):
    """--connection ADDR:PORT,ADDR:PORT -> ((addr, port), (addr, port)), or None."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--connection: expected ADDR:PORT,ADDR:PORT, got {text!r}")
    return tuple(_args.host_port("--connection", p.strip()) for p in parts)


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
    env = dict(_pairs("--env", args.env))
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
