"""The source port lab.open / lab.connect pick with sport=None: in turn, and
never one a kernel socket still holds for the 4-tuple, whatever the socket's
family. A dual-stack AF_INET6 socket (bound to ::) holds an IPv4 connection
with v4-mapped addresses (::ffff:a.b.c.d), and its TIME_WAIT does too: our
SYN from such a port would land in the kernel's TIME_WAIT, not make a new
connection."""

import socket

import pytest

import finprobe as fp

PORT = 8080


def kernel_listener(lab, v4_mapped):
    """A kernel listener on PORT taking IPv4: a plain AF_INET socket, or an
    AF_INET6 one bound to :: (dual-stack), whose connections are v4-mapped."""
    if not v4_mapped:
        return lab.listen(PORT)
    sock = lab.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", PORT))
    sock.listen(8)
    return sock


def kernel_time_wait(lab, server, sport):
    """A kernel socket in TIME_WAIT for (peer_addr:PORT, local_addr:sport):
    the kernel closes first, we answer its FIN and close ours; our own
    connection is then closed, so only the kernel's socket holds the port."""
    conn = lab.connect(PORT, sport=sport)
    peer, _ = server.accept()
    peer.close()
    conn.expect("FA")
    conn.ack()
    conn.fin()
    conn.expect("A")
    assert lab.peer_state(conn) == "TIME_WAIT"
    conn.close()


@pytest.mark.parametrize("ipv6, v4_mapped", [(False, False), (False, True), (True, False)],
                         ids=["ipv4", "v4_mapped_ipv6", "ipv6"])
def test_a_picked_port_skips_one_a_kernel_socket_holds_in_time_wait(ipv6, v4_mapped):
    with fp.Lab(ipv6=ipv6) as lab:
        server = kernel_listener(lab, v4_mapped)
        first = lab.open(PORT)  # where the Lab's turn stands
        taken = first.local[1]
        first.close()
        kernel_time_wait(lab, server, taken + 1)  # the next port in turn
        conn = lab.open(PORT)
        assert conn.local[1] == taken + 2, "the port the kernel holds in TIME_WAIT was not skipped"


@pytest.mark.parametrize("v4_mapped", [False, True], ids=["ipv4", "v4_mapped_ipv6"])
def test_a_listener_alone_does_not_make_a_port_look_taken(v4_mapped):
    with fp.Lab() as lab:
        kernel_listener(lab, v4_mapped)
        taken = [lab.open(PORT).local[1] for _ in range(3)]
        assert taken == [taken[0], taken[0] + 1, taken[0] + 2]


@pytest.mark.parametrize("v4_mapped", [False, True], ids=["ipv4", "v4_mapped_ipv6"])
def test_peer_state_reads_the_kernel_socket_of_either_family(v4_mapped):
    with fp.Lab() as lab:
        server = kernel_listener(lab, v4_mapped)
        conn = lab.connect(PORT)
        peer, _ = server.accept()
        assert peer.family == (socket.AF_INET6 if v4_mapped else socket.AF_INET)
        assert lab.peer_state(conn) == "ESTABLISHED"
        peer.close()
        conn.expect("FA")
        assert lab.peer_state(conn) == "FIN_WAIT_1"


def test_ports_are_taken_in_turn_past_ones_our_connections_hold():
    with fp.Lab() as lab:
        first = lab.open(PORT)
        taken = first.local[1]
        held = lab.open(PORT, sport=taken + 1)  # ours, made with the port given
        assert lab.open(PORT).local[1] == taken + 2
        held.close()
        first.close()


def test_when_no_port_is_free_the_pick_says_so_and_opens_nothing():
    with fp.Lab() as lab:
        before = len(lab._connections)
        # the C pick over an empty range: what lab.open meets when every port is held
        assert lab._core.open_picked(lab._engine, lab.local_addr, lab.peer_addr, PORT,
                                     40000, 0, 1, 60.0) is None
        assert len(lab._connections) == before


@pytest.mark.parametrize("args, error, words", [
    ((None, "192.0.2.2", "192.0.2.1", PORT, 40000, 10, 1, 60.0), TypeError, "engine"),
    (("engine", "192.0.2.2", "192.0.2.1", 0, 40000, 10, 1, 60.0), ValueError, "port"),
    (("engine", "192.0.2.2", "192.0.2.1", PORT, 60000, 10000, 1, 60.0), ValueError, "count"),
    (("engine", "192.0.2.2", "192.0.2.1", PORT, 40000, 10, -1, 60.0), ValueError, "iss"),
    (("engine", "192.0.2.2", "2001:db8::1", PORT, 40000, 10, 1, 60.0), ValueError, "remote_addr"),
    (("engine", "192.0.2.2", "192.0.2.1", PORT, 40000, 10, 1, -1.0), ValueError, "time_wait"),
])
def test_the_c_pick_names_a_bad_argument(args, error, words):
    with fp.Lab() as lab:
        args = tuple(lab._engine if a == "engine" else a for a in args)
        with pytest.raises(error, match=words):
            lab._core.open_picked(*args)


def test_the_c_pick_of_a_closed_lab_says_it_is_closed():
    lab = fp.Lab()
    engine = lab._engine
    lab.close()
    with pytest.raises(fp.Error, match="closed"):
        lab._core.open_picked(engine, lab.local_addr, lab.peer_addr, PORT, 40000, 10, 1, 60.0)
