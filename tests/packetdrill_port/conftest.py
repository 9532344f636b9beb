"""Seven of packetdrill's close scripts (google/packetdrill, gtests/net/tcp/close
and gtests/net/tcp/shutdown), ported to finprobe, each run ten times: 70 cases.

packetdrill plays the remote end against the local kernel; here finprobe
plays it against the Lab's kernel. A script's ``<`` lines are ours
(conn.send), its ``>`` lines the kernel's (conn.expect), its system calls are
made on the kernel's socket (lab.socket, lab.listen). Sequence numbers are
written relative, as packetdrill's: ``kseq(n)`` is the kernel's ISN + n,
``oseq(n)`` ours. packetdrill's pacing (``+.01``) is left out: finprobe waits
for each answer instead. The scripts' defaults.sh sets tcp_rmem, which gives
the kernel's SYN-ACK wscale 8 there; here the option is checked present.
"""

import errno

import pytest

PORT = 8080
# packetdrill's  < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
SYN_OPTIONS = (("mss", 1000), ("sackok",), ("nop",), ("nop",), ("nop",), ("wscale", 7))


class Exchange:
    """One connection between finprobe (conn) and a kernel socket (sock)."""

    def __init__(self, conn, sock):
        self.conn, self.sock = conn, sock

    def kseq(self, n):
        """The kernel's sequence number n (relative to its ISN)."""
        return (self.conn.irs + n) % 2**32

    def oseq(self, n):
        """Our sequence number n (relative to our ISN)."""
        return (self.conn.iss + n) % 2**32


@pytest.fixture
def accepted(lab):
    """packetdrill's server prologue: socket, SO_REUSEADDR, bind, listen(1);
    our SYN, the kernel's SYN-ACK, our ACK; accept(). -> Exchange."""
    listener = lab.listen(PORT, backlog=1)
    conn = lab.open(PORT)
    conn.send(flags="S", window=32792, options=SYN_OPTIONS)       # < S 0:0(0) win 32792 <...>
    synack = conn.expect("SA", ack=(conn.iss + 1) % 2**32)       # > S. 0:0(0) ack 1 <mss 1460,...>
    names = [o[0] for o in synack.options]
    assert ("mss", 1460) in synack.options and "sackok" in names and "wscale" in names, synack
    conn.send(flags="A", window=257)                              # < . 1:1(0) ack 1 win 257
    sock, _ = listener.accept()                                   # accept(3, ..., ...) = 4
    return Exchange(conn, sock)


@pytest.fixture
def connecting(lab):
    """packetdrill's client prologue: a non-blocking socket's connect() to
    us, its SYN taken (> S 0:0(0)), nothing answered yet. -> Exchange."""
    listener = lab.listen_raw(PORT)
    sock = lab.socket()
    sock.setblocking(False)
    assert sock.connect_ex((lab.local_addr, PORT)) == errno.EINPROGRESS
    conn = listener.accept(handshake=False)
    return Exchange(conn, sock)
