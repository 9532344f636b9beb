"""Codec throughput: finprobe against scapy on the same segments.

    PYTHONPATH=python /usr/bin/python3 bench/codec.py [--count N] [--repeat R]

Two measurements, each in segments per second and as a ratio:

  build  from the fields (addresses, ports, numbers, flags, options,
         payload) to wire bytes with checksums:
           bytes(fp.Segment(...))  against  raw(IP(...)/TCP(...)/payload)
  parse  from wire bytes to every field read back:
           fp.Segment.parse(b)     against  IP(b) / IPv6(b), fields read

Both libraries get the same N varied segments (IPv4 and IPv6, flags, SYN
options, SACK blocks, timestamps, payloads from 0 to 1460 bytes), generated
with a fixed seed; each figure is the best of R timed passes
(time.perf_counter), after a warm-up pass. finprobe's passes loop over the
segments several times so that a pass lasts long enough to time.
"""
import argparse
import random
import sys
import time

import finprobe as fp

from scapy.all import IP, IPv6, TCP, Raw, conf, raw  # noqa: E402

conf.verb = 0

# Our option tuples and scapy's names for the same options.
PAYLOAD_SIZES = (0, 0, 0, 1, 64, 536, 1200, 1460)
FLAGS = ("S", "SA", "A", "PA", "FA", "R", "RA", "A", "PA")


def random_options(rng):
    shape = rng.randrange(4)
    if shape == 0:
        return []
    if shape == 1:  # a SYN's options, as Linux sends them
        return [("mss", rng.choice((536, 1460, 8960))), ("sackok",),
                ("ts", rng.getrandbits(32), 0), ("nop",), ("wscale", rng.randrange(15))]
    if shape == 2:  # timestamps on an established connection
        return [("nop",), ("nop",), ("ts", rng.getrandbits(32), rng.getrandbits(32))]
    blocks = []
    for _ in range(rng.randint(1, 3)):
        left = rng.getrandbits(32)
        blocks.append((left, (left + rng.randrange(1, 65536)) % 2**32))
    return [("nop",), ("nop",), ("ts", rng.getrandbits(32), rng.getrandbits(32)),
            ("nop",), ("nop",), ("sack", tuple(blocks))]


def to_scapy_options(options):
    out = []
    for opt in options:
        name = opt[0]
        if name == "mss":
            out.append(("MSS", opt[1]))
        elif name == "wscale":
            out.append(("WScale", opt[1]))
        elif name == "sackok":
            out.append(("SAckOK", b""))
        elif name == "ts":
            out.append(("Timestamp", (opt[1], opt[2])))
        elif name == "nop":
            out.append(("NOP", None))
        elif name == "sack":
            out.append(("SAck", tuple(edge for block in opt[1] for edge in block)))
        else:
            raise ValueError(opt)
    return out


def make_segments(count, seed=1):
    rng = random.Random(seed)
    segments = []
    for i in range(count):
        v6 = i % 4 == 3
        src, dst = ("2001:db8::2", "2001:db8::1") if v6 else ("192.0.2.2", "192.0.2.1")
        options = random_options(rng)
        payload = rng.randbytes(rng.choice(PAYLOAD_SIZES))
        segments.append(dict(src=src, dst=dst, sport=rng.randrange(1024, 65536), dport=8080,
                             seq=rng.getrandbits(32), ack=rng.getrandbits(32),
                             flags=rng.choice(FLAGS), window=rng.randrange(65536),
                             options=options, payload=payload, v6=v6,
                             scapy_options=to_scapy_options(options)))
    return segments


def build_finprobe(segments):
    Segment = fp.Segment
    # Positional arguments: the way a hot loop would call it.
    fields = [(s["src"], s["dst"], s["sport"], s["dport"], s["seq"], s["ack"], s["flags"],
               s["window"], 0, s["options"], s["payload"]) for s in segments]

    def run():
        for f in fields:
            bytes(Segment(*f))
    return run


def build_scapy(segments):
    def run():
        for s in segments:
            ip = IPv6(src=s["src"], dst=s["dst"]) if s["v6"] else IP(src=s["src"], dst=s["dst"])
            raw(ip / TCP(sport=s["sport"], dport=s["dport"], seq=s["seq"], ack=s["ack"],
                         flags=s["flags"], window=s["window"], options=s["scapy_options"])
                / Raw(s["payload"]))
    return run


def parse_finprobe(wire):
    parse = fp.Segment.parse

    def run():
        for b in wire:
            s = parse(b)
            (s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags, s.window,
             s.options, s.payload)
    return run


def parse_scapy(wire):
    def run():
        for b in wire:
            p = IPv6(b) if b[0] >> 4 == 6 else IP(b)
            t = p[TCP]
            (p.src, p.dst, t.sport, t.dport, t.seq, t.ack, t.flags, t.window,
             t.options, bytes(t.payload))
    return run


def best_rate(run, n_segments, repeat, loops=1):
    run()  # warm-up: first-call caches on both sides
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            run()
        best = min(best, time.perf_counter() - start)
    return n_segments * loops / best


def check_same_bytes(segments):
    """Both libraries must be building the same packets, or the race is unfair.
    IPv4 headers differ (scapy: id=1, no DF), so compare the TCP parts."""
    for s in segments[:200]:
        ours = fp.Segment.parse(bytes(fp.Segment(
            s["src"], s["dst"], s["sport"], s["dport"], s["seq"], s["ack"], s["flags"],
            s["window"], 0, s["options"], s["payload"])))
        ip = IPv6(src=s["src"], dst=s["dst"]) if s["v6"] else IP(src=s["src"], dst=s["dst"])
        theirs = fp.Segment.parse(raw(ip / TCP(
            sport=s["sport"], dport=s["dport"], seq=s["seq"], ack=s["ack"], flags=s["flags"],
            window=s["window"], options=s["scapy_options"]) / Raw(s["payload"])))
        assert ours == theirs and ours.checksum == theirs.checksum, (ours, theirs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="segments (default 2000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes, best kept (default 5)")
    args = ap.parse_args(argv)

    segments = make_segments(args.count)
    check_same_bytes(segments)
    wire = [bytes(fp.Segment(s["src"], s["dst"], s["sport"], s["dport"], s["seq"], s["ack"],
                             s["flags"], s["window"], 0, s["options"], s["payload"]))
            for s in segments]
    mean_len = sum(map(len, wire)) / len(wire)
    print(f"{len(segments)} segments, mean {mean_len:.0f} bytes on the wire, "
          f"best of {args.repeat} passes, Python {sys.version.split()[0]}")

    results = {}
    for name, ours, theirs in (("build", build_finprobe(segments), build_scapy(segments)),
                               ("parse", parse_finprobe(wire), parse_scapy(wire))):
        rate_fp = best_rate(ours, len(segments), args.repeat, loops=20)
        rate_scapy = best_rate(theirs, len(segments), args.repeat)
        results[name] = rate_fp / rate_scapy
        print(f"{name}: finprobe {rate_fp:.2e}/s, scapy {rate_scapy:.2e}/s, "
              f"ratio {rate_fp / rate_scapy:.0f}x")
    return results


if __name__ == "__main__":
    main()
