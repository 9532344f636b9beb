"""The peer model lists what a profile does not allow (finprobe.model.violations),
against the Lab's kernel, live and through a pcap file; and a bad profile
file is refused naming its problem."""

import textwrap

import pytest

import finprobe as fp
from finprobe import model, profile
from finprobe.connection import Connection
from labtools import OURS, THEIRS, established


def rst_in_window(conn):
    """A RST at RCV.NXT + W/2 of the kernel's: in its window, not at RCV.NXT."""
    return conn.send(flags="R", seq=(conn.snd_nxt + conn.snd_wnd // 2) % 2**32, ack=0)


def orphaned_fin_wait_2(lab):
    """Our connection with the kernel's socket closed by its application and
    its FIN ACKed: an orphaned FIN_WAIT_2."""
    conn, peer = established(lab)
    peer.close()
    conn.expect("FA")
    conn.ack()
    lab.wait_peer_state(conn, "FIN_WAIT_2")
    return conn


def test_a_challenge_ack_to_an_in_window_rst_is_clean_under_rfc(lab):
    conn, _ = established(lab)
    rst_in_window(conn)
    conn.expect("A", ack=conn.snd_nxt)                 # RFC 5961 §3.2's challenge ACK
    assert conn.trace.violations("rfc") == []
    assert conn.trace.violations("linux") == []


def test_an_orphaned_fin_wait_2_reset_without_a_challenge_ack_breaks_rfc_not_linux(lab):
    conn = orphaned_fin_wait_2(lab)
    rst = rst_in_window(conn)
    conn.expect_silence(0.3)
    lab.wait_peer_state(conn, "CLOSED")
    found = conn.trace.violations("rfc")
    assert len(found) == 1, found
    v = found[0]
    assert (v.state, v.event, v.expected, v.observed) == ("FIN_WAIT_2", "rst@N+W/2", ("ACK",), "none")
    assert v.section == "RFC 5961 §3.2" and v.segment is None and v.answers.seq == rst.seq
    assert conn.trace[v.index].seq == rst.seq and "R" in conn.trace[v.index].flags
    assert v.text.startswith("the model reads the peer in FIN_WAIT_2") and "RFC 5961 §3.2" in v.text
    assert conn.trace.violations("linux") == []


def test_violations_read_the_same_from_a_pcap_file(lab, tmp_path):
    conn = orphaned_fin_wait_2(lab)
    rst_in_window(conn)
    conn.expect_silence(0.3)
    conn.trace.to_pcap(tmp_path / "fw2.pcap")
    read = fp.read_pcap(tmp_path / "fw2.pcap")
    live, filed = conn.trace.violations("rfc"), read.violations("rfc")
    assert [(v.index, v.state, v.event, v.observed, v.section) for v in filed] == \
           [(v.index, v.state, v.event, v.observed, v.section) for v in live]
    assert len(filed) == 1 and read.violations("linux") == []


def test_a_kernel_answering_as_linux_does_is_clean_under_linux_not_rfc(lab):
    # A RST at exactly RCV.NXT + W: outside RFC 5961's window, inside Linux's
    conn, _ = established(lab)
    conn.send(flags="R", seq=(conn.snd_nxt + conn.snd_wnd) % 2**32, ack=0)
    conn.expect("A")
    (v,) = conn.trace.violations("rfc")
    assert (v.event, v.expected, v.observed) == ("rst@N+W", ("none",), "ACK")
    assert conn.trace[v.index] is not None and v.segment.flags == "A"
    assert conn.trace.violations("linux") == []


def test_text_beyond_the_peers_own_fin_is_listed(engines):
    # Two finprobe endpoints: the "peer" (THEIRS) sends its FIN, then text after it
    a, b = engines
    listener = b.listen(THEIRS[0], THEIRS[1])
    with a.open(*OURS, 1000, 60.0, cls=Connection) as ours:
        ours.send(flags="S", options=(("mss", 1460),))
        with listener.accept(1.0, 5000, 60.0, cls=Connection) as peer:
            peer.expect("S")
            peer.send(flags="SA", options=(("mss", 1460),))
            ours.expect("SA")
            ours.ack()
            peer.expect("A")
            peer.fin()
            ours.expect("FA")
            ours.ack()
            bad = peer.send(b"late", flags="PA", seq=peer.snd_nxt)
            ours.expect("PA")
            found = ours.trace.violations("rfc")
    assert [(v.segment.seq, v.event, v.observed) for v in found] == [(bad.seq, None, "DATA")]
    assert "beyond its own FIN" in found[0].text


def test_a_trace_without_its_syn_has_no_violations(lab):
    conn, _ = established(lab)
    rst_in_window(conn)
    conn.expect("A")
    assert model.violations(conn.trace[3:], "rfc") == []


# ---- bad profile files -------------------------------------------------------------

GOOD_RULE = """
[[rule]]
states = ["ESTABLISHED"]
events = ["rst@N"]
answer = ["none"]
section = "RFC 5961 §3.2"
"""


@pytest.mark.parametrize("text, words", [
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE.replace('"ESTABLISHED"', '"ESTABLISHD"'),
     r"rule 1: unknown state 'ESTABLISHD'"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE.replace('"rst@N"', '"rst@N+2"'),
     r"rule 1: unknown event 'rst@N\+2'"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE.replace('["none"]', '["CHALLENGE_ACK"]'),
     r"rule 1: unknown answer class 'CHALLENGE_ACK'"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE + GOOD_RULE.replace('section = "RFC 5961 §3.2"', ""),
     r"rule 2: missing section"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE.replace('answer = ["none"]', ""),
     r"rule 1: missing answer"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE.replace('answer', 'answers'),
     r"rule 1: unknown key\(s\) \['answers'\]"),
    ('name = "x"\ndescription = "d"\n' + GOOD_RULE + 'when_sysctl = "net.ipv4.tcp_rfc1337=1"\n',
     r"rule 1: when_sysctl must be a table"),
    ('name = "x"\n' + GOOD_RULE, r"missing description"),
    ('name = "x"\ndescription = "d"\nbased_on = "nosuch.toml"\n', r"nosuch.toml: cannot read"),
    ('name = "x\n', r"not TOML"),
])
def test_a_bad_profile_file_is_refused_naming_the_file_and_the_problem(tmp_path, text, words):
    path = tmp_path / "mine.toml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ValueError, match=words) as err:
        profile.load(path)
    assert "mine.toml" in str(err.value) or "nosuch.toml" in str(err.value)
    with pytest.raises(ValueError, match=words):
        model.violations(fp.Trace(), str(path))


def test_an_unknown_profile_name_lists_the_built_in_ones():
    with pytest.raises(ValueError, match=r"no built-in profile 'bsd' \(built-in: linux, rfc"):
        profile.load("bsd")


def test_a_users_profile_based_on_rfc_states_only_its_departures(tmp_path):
    path = tmp_path / "mystack.toml"
    path.write_text(textwrap.dedent("""\
        name = "mystack"
        description = "a stack that resets on any RST in the window"
        based_on = "rfc"
        [[rule]]
        states = ["*"]
        events = ["rst@N+W/2"]
        answer = "none"
        state_after = "CLOSED"
        section = "mystack's tcp_in.c"
        note = "no RFC 5961"
        """))
    mine = profile.load(path)
    assert mine.based_on == "rfc" and len(mine.cells) == len(profile.load("rfc").cells)
    assert set(mine.departures()) == {(s, "rst@N+W/2") for s in fp.events.STATES}
    exp = mine.expect("ESTABLISHED", "rst@N+W/2")
    assert (exp.answer, exp.state_after, exp.alive, exp.departs) == (("none",), "CLOSED", False, True)
    assert mine.expect("ESTABLISHED", "rst@N") == profile.load("rfc").expect("ESTABLISHED", "rst@N")


def test_a_when_sysctl_rule_holds_only_where_the_run_set_that_sysctl():
    linux = profile.load("linux")
    default = linux.expect("TIME_WAIT", "rst@N")
    set_ = linux.expect("TIME_WAIT", "rst@N", {"net.ipv4.tcp_rfc1337": "1"})
    assert (default.state_after, default.departs) == ("CLOSED", True)      # TIME_WAIT assassination
    assert (set_.state_after, set_.departs) == ("TIME_WAIT", False)        # as RFC 1337 says
    assert linux.expect("TIME_WAIT", "rst@N", {"net.ipv4.tcp_rfc1337": 0}) == default
    assert set(linux.departures()) - set(linux.departures({"net.ipv4.tcp_rfc1337": 1})) == \
        {("TIME_WAIT", e) for e in ("rst@N", "rstack@N", "rstack@N,ack=S+1000")}

