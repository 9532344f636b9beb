"""finprobe.replay.Script, the engine under fp.replay and under the tests it
writes: lines played against a Lab's kernel, groups of answers compared,
strict scripts failing with the difference and the ladder, arguments checked.
The captures and the end-to-end replays are in test_replay.py."""

import socket

import pytest

import finprobe as fp
from finprobe.replay import Script, steps_of, wait_listening

PORT = 8080


def handshake(s, options=(("mss", 1460),)):
    s.send("S", seq=0, options=list(options))
    s.expect("SA", seq=0, ack=1)
    s.send("A", seq=1, ack=1)


def test_a_script_of_a_close_that_the_kernel_answers_as_written_has_no_difference():
    with fp.Lab() as lab:
        server = lab.listen(PORT)
        with Script(lab, PORT, iss=1000) as s:
            handshake(s)
            s.send("FA", seq=1, ack=1)
            s.expect("A", seq=1, ack=2)
        assert s.differences == []
        assert s.trace[0].seq == 1000
        assert [seg.flags for seg in s.trace] == ["S", "SA", "A", "FA", "A"]
        server.close()


def test_a_strict_script_fails_naming_the_missing_fin_and_showing_the_ladder():
    with fp.Lab() as lab:
        lab.listen(PORT)   # accepts, never closes: no FIN comes
        with pytest.raises(fp.ExpectError) as info:
            with Script(lab, PORT, timeout=0.2) as s:
                handshake(s)
                s.send("FA", seq=1, ack=1)
                s.expect("A", seq=1, ack=2)
                s.expect("FA", seq=1, ack=2)
                s.send("A", seq=2, ack=2)
        text = str(info.value)
        assert "fin: the capture had" in text and "FA seq=1 ack=2" in text
        assert "did not come within the wait" in text
        assert "--[FA]" in text  # the ladder


def test_a_collecting_script_names_a_rst_to_its_syn_as_refused_and_sends_no_more():
    with fp.Lab() as lab:   # nothing listens
        with Script(lab, PORT, strict=False) as s:
            handshake(s)
            s.send("FA", seq=1, ack=1)
        [d] = s.differences
        assert d.kind == "rst" and "RA" in d.observed and "refused" in d.meaning
        assert s.stopped is not None
        assert [seg.flags for seg in s.trace if seg.direction == "out"] == ["S"]


def test_an_ack_folded_into_data_or_a_fin_sent_early_is_not_a_difference():
    # The capture's peer ACKed the request alone, then sent its data and FIN
    # apart; the kernel here folds them as it likes.
    with fp.Lab() as lab:
        server = lab.listen(PORT)
        with Script(lab, PORT, strict=False) as s:
            handshake(s)
            s.send("PA", seq=1, ack=1, payload=b"ping")
            s.expect("A", seq=1, ack=5)
            peer, _ = server.accept()
            peer.recv(4)
            peer.sendall(b"pong")
            peer.close()
            s.expect("PA", seq=1, ack=5, length=4)
            s.send("A", seq=5, ack=5)
            s.expect("FA", seq=5, ack=5)
            s.send("FA", seq=5)
            s.expect("A", seq=6, ack=6)
        assert s.differences == [], "\n".join(map(str, s.differences))


def test_less_data_than_the_capture_is_one_length_difference_with_both_totals():
    with fp.Lab() as lab:
        server = lab.listen(PORT)
        with Script(lab, PORT, strict=False, timeout=0.3) as s:
            handshake(s)
            peer, _ = server.accept()
            peer.sendall(b"abc")
            peer.close()
            s.expect("PA", seq=1, ack=1, length=10)
            s.send("A", seq=1)
            s.expect("FA", seq=11, ack=1)
            s.send("FA", seq=1)
            s.expect("A", seq=12, ack=2)
        kinds = [d.kind for d in s.differences]
        assert kinds == ["length"], "\n".join(map(str, s.differences))
        assert "10 bytes, then FIN" in s.differences[0].captured
        assert "3 bytes, then FIN" in s.differences[0].observed


def test_side_server_is_refused_for_a_target_or_a_stack_and_the_port_is_needed_for_a_lab():
    with fp.Lab() as lab:
        with pytest.raises(TypeError, match="port is needed"):
            Script(lab)
        with pytest.raises(ValueError, match="side"):
            Script(lab, PORT, side="both")
    with pytest.raises(TypeError, match="fp.Lab or an fp.Target"):
        Script("192.0.2.1", PORT)


def test_a_server_script_answers_a_kernel_client_and_sees_its_close():
    with fp.Lab() as lab:
        with Script(lab, PORT, side="server") as s:
            s.expect("S", seq=0)
            s.send("SA", seq=0, ack=1, options=[("mss", 1460)])
            s.expect("A", seq=1, ack=1)
            s.expect("PA", seq=1, ack=1, length=5)
            s.send("A", seq=1, ack=6)
            s.expect("FA", seq=6, ack=1)
            s.send("FA", seq=1, ack=7)
            s.expect("A", seq=7, ack=2)
        assert s.differences == []
        syn = s.trace[0]
        assert (syn.flags, syn.dst, syn.dport) == ("S", lab.local_addr, PORT)


def test_a_closed_script_refuses_more_lines():
    with fp.Lab() as lab:
        lab.listen(PORT)
        s = Script(lab, PORT)
        handshake(s)
        s.close()
        with pytest.raises(fp.Error, match="closed"):
            s.send("A", seq=1)


def test_steps_of_a_live_trace_rebase_to_each_sides_isn_and_leave_a_full_ack_unwritten():
    with fp.Lab() as lab:
        server = lab.listen(PORT)
        with lab.connect(PORT, iss=5000) as conn:
            peer, _ = server.accept()
            peer.sendall(b"hello")
            conn.expect("PA")
            conn.send(flags="A", ack=conn.irs + 3)   # acknowledges part: written
            conn.ack()                               # acknowledges all: left to the live peer
            steps = steps_of(list(conn.trace), conn.local)
            peer.close()
    assert [(s.kind, s.flags, s.seq, s.ack) for s in steps] == [
        ("send", "S", 0, None), ("expect", "SA", 0, 1), ("send", "A", 1, None),
        ("expect", "PA", 1, 1), ("send", "A", 1, 3), ("send", "A", 1, None)]
    assert steps[3].length == 5


def test_wait_listening_sees_a_kernel_listener_and_times_out_naming_the_port():
    with fp.Lab() as lab:
        sock = lab.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((lab.peer_addr, PORT))
        sock.listen()
        wait_listening(lab, PORT, timeout=1.0)
        with pytest.raises(fp.Error, match="nothing listens on port 8081"):
            wait_listening(lab, PORT + 1, timeout=0.1)
