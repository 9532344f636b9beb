"""fp.matrix against remote servers (http.server and nginx on Linux, in a
namespace of their own, through fp.Target): driven with HTTP only, told
alive by the wire, and answering as the Lab's kernel does, cell by cell."""

import os
import shutil

import pytest

import finprobe as fp

from labtools import PORTS, SERVER4, inside, target_servers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, raw sockets, nftables"),
    pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"),
                       reason="needs nginx (Debian package nginx-light)"),
]
HELD = {"CLOSE_WAIT", "FIN_WAIT_2/shut"}     # need a server that holds its socket (the recipes' paths)


@pytest.fixture(scope="module")
def matrices(tmp_path_factory):
    with target_servers(tmp_path_factory.mktemp("servers")) as net:
        with inside(net.cli):
            remote = {server: fp.matrix(SERVER4, port, profile="linux", concurrency=32)
                      for server, port in PORTS.items()}
    return remote, fp.matrix(profile="linux")


@pytest.mark.parametrize("server", list(PORTS))
def test_a_remote_servers_rows_that_need_a_held_socket_are_skipped_saying_why(matrices, server):
    m = matrices[0][server]
    assert m.peer == f"{SERVER4}:{PORTS[server]}"
    for cell in m.cells:
        if cell.state in HELD:
            assert cell.verdict == "skipped" and "GET /" in cell.reason, cell
        else:
            assert cell.verdict != "skipped", cell.explain()


@pytest.mark.parametrize("server", list(PORTS))
def test_a_remote_servers_state_is_not_read_and_alive_comes_from_the_wire(matrices, server):
    for cell in matrices[0][server].cells:
        if cell.verdict == "skipped":
            continue
        assert cell.state_source is None and cell.state_after is None and cell.state_before is None
        assert cell.alive_source in ("wire", None)
        if cell.alive_source == "wire" and cell.follow_up is not None:
            assert cell.alive == ("R" not in cell.follow_up.flags)


@pytest.mark.parametrize("server", list(PORTS))
def test_a_linux_server_answers_each_cell_as_the_labs_kernel_does(matrices, server):
    """The same kernel behind HTTP: the same answer flags, and alive on the
    wire where the Lab's socket says alive or gone."""
    remote, lab = matrices
    differ = []
    for cell in remote[server].cells:
        if cell.verdict == "skipped" or differs_by_its_drive(cell):
            continue
        there = lab.cell(cell.state, cell.event)
        flags = (cell.answer and cell.answer.flags, there.answer and there.answer.flags)
        if flags[0] != flags[1] or (cell.alive is not None and cell.alive != there.alive):
            differ.append(f"{cell.name}: remote {flags[0]} alive {cell.alive}; lab {flags[1]} "
                          f"alive {there.alive} ({there.state_after})")
    assert not differ, "\n".join(differ)


def differs_by_its_drive(cell):
    """Cells where an HTTP server's drive makes a Linux peer differ from the
    Lab's held socket, as it should: an HTTP server closes as soon as it
    reads our FIN (its FIN answers fin@N); and an ACK of bytes it never sent
    draws a challenge ACK (tcp_ack bounds RFC 5961's window by bytes_acked),
    which ack@U-1000 is where its answer was under 1000 bytes, and the Lab's
    kernel sends PEER_DATA = 3000 first."""
    sent = (cell.numbers.U - cell.conn_irs - 1) % 2**32
    return cell.name == "ESTABLISHED-fin@N" or (cell.event == "ack@U-1000" and sent < 1000)
