"""Ctrl-C (KeyboardInterrupt) at any point of making a Lab or a listener:
nothing is left behind once the half-made objects are dropped (no
descriptor, so no socket or namespace of a lab, and no helper), and
nothing is printed."""

import gc
import os
import random
import signal
import sys

import finprobe as fp

from labtools import descendants, open_fds

ROUNDS = 300
SPAN = 0.004  # s: a Lab() and a listen() take about 2 ms here


def test_keyboard_interrupt_while_making_a_lab_leaks_nothing(monkeypatch, capfd):
    unraisable = []  # as text: the objects would keep what they reference alive
    monkeypatch.setattr(sys, "unraisablehook",
                        lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}"))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    rng = random.Random(10)
    fp.Lab().close()  # a process's first Lab starts its zygote, which stays: its socket is no leak
    fds_before = open_fds()
    children_before = set(descendants(os.getpid()))  # other tests' processes are not ours to judge
    old = signal.signal(signal.SIGALRM, interrupt)
    interrupted = 0
    try:
        for _ in range(ROUNDS):
            lab = None
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-5, SPAN))
                try:
                    lab = fp.Lab(ipv6=rng.random() < 0.5)
                    lab.listen(80)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupted += 1
            if lab is not None:
                lab.close()
            del lab
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    gc.collect()
    assert interrupted >= ROUNDS // 4, "the interrupts came too late to test anything"
    leaked = {fd: what for fd, what in open_fds().items() if fds_before.get(fd) != what}
    assert not leaked, f"descriptors left after {interrupted} interrupted labs: {leaked}"
    assert not set(descendants(os.getpid())) - children_before, "a lab helper outlived its Lab"
    assert not unraisable, unraisable
    assert capfd.readouterr().err == ""
