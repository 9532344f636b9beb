"""Opening connections both ways against the kernel in a Lab."""

import socket

import pytest

import finprobe as fp


def test_connect_completes_the_three_way_handshake(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080)
    assert conn.state == "ESTABLISHED"
    assert [s.flags for s in conn.trace] == ["S", "SA", "A"]
    assert conn.trace[0].options == (("mss", 1460),)
    assert conn.snd_nxt == (conn.iss + 1) % 2**32
    assert conn.rcv_nxt == (conn.irs + 1) % 2**32
    peer, _ = srv.accept()
    assert peer.getpeername() == (lab.local_addr, conn.local[1])
    assert lab.peer_state(conn) == "ESTABLISHED"


def test_connect_to_a_closed_port_is_refused_naming_the_rst(lab):
    with pytest.raises(fp.ConnectionRefused, match=r"\[RA\]"):
        lab.connect(9)


def test_accept_answers_a_kernel_client(lab):
    lst = lab.listen_raw(7000)
    client = lab.socket()
    client.setblocking(False)
    client.connect_ex((lab.local_addr, 7000))
    conn = lst.accept(iss=1000)
    assert conn.state == "ESTABLISHED"
    assert [s.flags for s in conn.trace] == ["S", "SA", "A"]
    assert conn.trace[1].seq == 1000
    assert lab.peer_state(conn) == "ESTABLISHED"


def test_accept_without_handshake_leaves_the_syn_answer_to_the_test(lab):
    lst = lab.listen_raw(7001)
    client = lab.socket()
    client.setblocking(False)
    client.connect_ex((lab.local_addr, 7001))
    conn = lst.accept(handshake=False)
    assert conn.state == "LISTEN"
    assert conn.rcv_nxt == (conn.irs + 1) % 2**32
    assert lab.peer_state(conn) == "SYN_SENT"
    conn.send(flags="SA", seq=5000, options=[("mss", 1000)])
    assert conn.state == "SYN_RECEIVED"
    conn.expect("A", ack=5001)
    assert conn.state == "ESTABLISHED"
    lab.wait_peer_state(conn, "ESTABLISHED")


def test_a_sequence_of_connects_takes_source_ports_in_turn(lab):
    srv = lab.listen(8080)
    ports = [lab.connect(8080).local[1] for _ in range(3)]
    assert ports[1] == ports[0] + 1 and ports[2] == ports[1] + 1
    srv.close()


def test_lab_socket_lives_in_the_lab_and_binds_the_kernels_address(lab):
    sock = lab.socket(type=socket.SOCK_DGRAM)
    sock.bind((lab.peer_addr, 0))              # only the lab's namespace holds peer_addr
    assert sock.getsockname()[0] == lab.peer_addr
    sock.close()
