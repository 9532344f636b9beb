"""Checks of the caller's arguments, shared by the API's classes: each
raises TypeError or ValueError naming the argument, the value and what was
expected, and returns the value in the form the C side takes."""

import os
import random
import re
import tempfile
import threading


def port(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= 65535:
        raise ValueError(f"{name} must be in 1..65535, got {value}")
    return value


def seconds(name, value):
    """A duration as the C side takes it (float seconds, turned into uint64
    nanoseconds and added to the monotonic clock): at most
    threading.TIMEOUT_MAX, as threading.Event.wait takes, else OverflowError;
    what C could not count would become another duration."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # NaN too
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if value > threading.TIMEOUT_MAX:  # inf too: the extension's rule (args.c)
        raise OverflowError(f"{name} must be at most {int(threading.TIMEOUT_MAX)} seconds "
                            f"(threading.TIMEOUT_MAX), got {value!r}")
    return float(value)


def iss(value):
    """An initial sequence number: random when None (RFC 9293 §3.4.1 wants
    them unpredictable; tests that need one pass it)."""
    if value is None:
        return random.getrandbits(32)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise ValueError(f"iss must be an int in 0..2**32-1, got {value!r}")
    return value


def endpoint(addr, port):
    """"192.0.2.1:80", or "[2001:db8::1]:80" for IPv6."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def host_port(what, text):
    """"HOST:PORT" or "[IPv6]:PORT" -> (host, port); ValueError naming ``what``."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{what}: {text!r} is not HOST:PORT (IPv6: [addr]:port)")
    port_number = int(match.group(2) or match.group(4))
    if not 1 <= port_number <= 65535:
        raise ValueError(f"{what}: port {port_number} is not in 1..65535")
    return match.group(1) or match.group(3), port_number


def writable_directory(what, path):
    """``path`` as an absolute directory that files can be written into,
    made if missing: so that an option naming one fails before any work
    rather than after. ValueError naming ``what`` and the path otherwise."""
    full = os.path.abspath(os.fspath(path))
    if os.path.exists(full) and not os.path.isdir(full):
        raise ValueError(f"{what}: {path} exists and is not a directory")
    try:
        os.makedirs(full, exist_ok=True)
        with tempfile.TemporaryFile(dir=full):
            pass
    except OSError as e:
        raise ValueError(f"{what}: cannot write files into {path}: {e.strerror or e}") from None
    return full
