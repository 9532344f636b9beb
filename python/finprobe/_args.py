"""Checks of the caller's arguments, shared by the API's classes: each
raises TypeError or ValueError naming the argument, the value and what was
expected, and returns the value in the form the C side takes."""

import random


def port(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= 65535:
        raise ValueError(f"{name} must be in 1..65535, got {value}")
    return value


def seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def iss(value):
    """An initial sequence number: random when None (RFC 9293 §3.4.1 wants
    them unpredictable; tests that need one pass it)."""
    if value is None:
        return random.getrandbits(32)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise ValueError(f"iss must be an int in 0..2**32-1, got {value!r}")
    return value
