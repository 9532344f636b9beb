"""finprobe's pytest plugin, run on inner test files through pytester: the lab
fixture, --finprobe-pcap (failed tests leave their traffic, setup and teardown
included; passing or silent ones leave nothing), the ladder in failure
reports, and finprobe_target skipped without --finprobe-target."""

import os
from importlib.metadata import entry_points

import pytest

import finprobe as fp
from finprobe.pytest_plugin import parse_target, safe_name

pytest_plugins = ["pytester"]

PYTHON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")

INNER = '''
import pytest
import finprobe as fp

def test_fails(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080)
    conn.fin()
    conn.expect("FA", timeout=0.2)       # the kernel only ACKs: ExpectError

def test_passes(lab):
    srv = lab.listen(8080)
    conn = lab.connect(8080)
    conn.fin()
    conn.expect("A")

def test_fails_without_traffic(lab):
    assert 1 == 2

def test_fails_in_its_own_lab():
    with fp.Lab() as mine:               # closed before the test ends
        mine.listen(80)
        mine.connect(80)
    assert False, "after the lab closed"

@pytest.mark.parametrize("name", ["a/b c"])
def test_param(lab, name):
    lab.listen(9090)
    lab.connect(9090)
    pytest.fail("parametrized")

def test_target(finprobe_target):
    pass
'''


@pytest.fixture
def runner(pytester, monkeypatch):
    """Runs pytest in a subprocess with finprobe from this tree."""
    monkeypatch.setenv("PYTHONPATH", PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    installed = any(ep.value.split(":")[0] == "finprobe.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "finprobe.pytest_plugin"]

    def run(*args):
        return pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", *args, timeout=120)
    return run


@pytest.fixture
def inner(pytester, runner):
    """Run the inner tests (INNER) in a subprocess with finprobe from this tree."""
    pytester.makepyfile(test_inner=INNER)
    return runner


def test_failed_tests_leave_their_traffic_and_others_nothing(inner, pytester):
    result = inner("--finprobe-pcap", "pcaps", "-rs")
    result.assert_outcomes(passed=1, failed=4, skipped=1)
    files = sorted(os.listdir(pytester.path / "pcaps"))
    assert files == ["test_inner.py__test_fails.pcap", "test_inner.py__test_fails_in_its_own_lab.pcap",
                     "test_inner.py__test_param_a_b_c_.pcap"]
    trace = fp.read_pcap(pytester.path / "pcaps" / "test_inner.py__test_fails.pcap")
    flags = [s.flags for s in trace]
    assert flags[:5] == ["S", "SA", "A", "FA", "A"]
    # teardown included: closing the lab's listener resets the connection
    assert "RA" in flags[5:] or "R" in flags[5:]
    assert all(s.dport == 8080 or s.sport == 8080 for s in trace)
    own = fp.read_pcap(pytester.path / "pcaps" / "test_inner.py__test_fails_in_its_own_lab.pcap")
    assert [s.flags for s in own][:3] == ["S", "SA", "A"]
    result.stdout.fnmatch_lines(["*- finprobe -*", "*segments of this test's traffic in *test_fails.pcap"])


def test_failure_report_shows_the_ladder(inner):
    result = inner("-k", "test_fails and not own and not without")
    result.assert_outcomes(failed=1, deselected=5)
    result.stdout.fnmatch_lines([
        "E * finprobe.ExpectError: expected a segment with flags=[[]FA[]], got <Segment * [[]A[]] *",
        "E * recent segments (relative seq/ack; our state after each*",
        "E * us ---[[]S[]] seq=0 len=0--> peer * SYN_SENT  (peer *)",
        "E * us <--[[]SA[]] seq=0 ack=1 len=0--- peer * ESTABLISHED  (peer *)",
        "E * us ---[[]FA[]] seq=1 ack=1 len=0--> peer * FIN_WAIT_1  (peer *)",
        "E * us <--[[]A[]] seq=1 ack=2 len=0--- peer * FIN_WAIT_2  (peer *)",
    ])


def test_without_the_pcap_option_nothing_is_written(inner, pytester):
    result = inner()
    result.assert_outcomes(passed=1, failed=4, skipped=1)
    assert not (pytester.path / "pcaps").exists()
    assert "segments of this test's traffic" not in result.stdout.str()


def test_finprobe_target_is_skipped_without_the_option(inner):
    result = inner("-rs", "-k", "test_target")
    result.assert_outcomes(skipped=1, deselected=5)
    result.stdout.fnmatch_lines(["SKIPPED * no remote target: give --finprobe-target HOST:PORT"])


def test_a_malformed_target_is_a_usage_error(inner):
    result = inner("--finprobe-target", "2001:db8::1:80", "-k", "test_target")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--finprobe-target: '2001:db8::1:80' is not HOST:PORT (IPv6: [[]addr[]]:port)*"])


def test_parse_target():
    assert parse_target("192.0.2.7:80") == ("192.0.2.7", 80)
    assert parse_target("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_target("example.org:8080") == ("example.org", 8080)
    for bad in ("192.0.2.7", "2001:db8::1:80", "[2001:db8::1]", "host:0", "host:70000", "host:x"):
        with pytest.raises(pytest.UsageError):
            parse_target(bad)


def test_safe_name_keeps_letters_digits_dot_dash_underscore():
    assert safe_name("tests/test_x.py::test_y[a-b_c.d/é 1]") == "tests_test_x.py__test_y_a-b_c.d___1_"


# Two failing tests whose ids are longer than a file name may be (255 bytes)
# and differ only at their ends, then a test that must still run.
LONG_IDS = '''
import pytest

@pytest.mark.parametrize("name", ["n" * 300 + "1", "n" * 300 + "2"])
def test_long(lab, name):
    lab.listen(8080)
    lab.connect(8080)
    pytest.fail("long id")

def test_after_the_long_ones(lab):
    lab.listen(8080)
    assert lab.connect(8080).state == "ESTABLISHED"
'''


def test_failed_tests_with_overlong_ids_get_short_unique_pcaps_and_the_session_goes_on(runner, pytester):
    pytester.makepyfile(test_long=LONG_IDS)
    result = runner("--finprobe-pcap", "pcaps")
    result.assert_outcomes(passed=1, failed=2)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    files = sorted(os.listdir(pytester.path / "pcaps"))
    assert len(files) == 2 and files[0] != files[1]
    for name in files:
        assert len(name.encode()) <= 255 and name.endswith(".pcap")
        assert name.startswith("test_long.py__test_long_nnnn")
        trace = fp.read_pcap(pytester.path / "pcaps" / name)
        assert [s.flags for s in trace][:3] == ["S", "SA", "A"]
    result.stdout.fnmatch_lines(["*segments of this test's traffic in *pcaps/test_long.py__test_long_nnn*.pcap"])


@pytest.mark.parametrize("make, spec", [
    (lambda root: (root / "afile").write_text(""), "afile"),
    (lambda root: (root / "afile").write_text(""), "afile/sub"),
], ids=["a file", "under a file"])
def test_a_pcap_dir_that_cannot_be_a_directory_is_a_usage_error_at_the_start(inner, pytester, make, spec):
    make(pytester.path)
    result = inner("--finprobe-pcap", spec)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--finprobe-pcap*{spec}*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "test_inner.py" not in result.stdout.str()  # no test ran


def test_safe_pcap_names_of_long_ids_are_short_and_unique():
    from finprobe.pytest_plugin import pcap_name
    a, b = "t.py::test[" + "x" * 400 + "1]", "t.py::test[" + "x" * 400 + "2]"
    assert len(pcap_name(a).encode()) <= 255 and len(pcap_name(b).encode()) <= 255
    assert pcap_name(a) != pcap_name(b)
    assert pcap_name(a).startswith(safe_name(a)[:100]) and pcap_name(a).endswith(".pcap")
    assert pcap_name("t.py::test_y") == "t.py__test_y.pcap"  # short ones as API.md says


SPOILS_THE_DIR = '''
import os, shutil

def test_spoils_the_pcap_dir_then_fails(lab):
    lab.listen(8080)
    lab.connect(8080)
    shutil.rmtree("pcaps", ignore_errors=True)  # made at the start, or not
    open("pcaps", "w").close()          # a file where the directory was
    assert False, "failed after spoiling the directory"

def test_after_the_spoiled_dir(lab):
    lab.listen(8080)
    assert lab.connect(8080).state == "ESTABLISHED"
'''


def test_a_pcap_that_cannot_be_written_is_said_in_the_report_and_the_session_goes_on(runner, pytester):
    pytester.makepyfile(test_spoil=SPOILS_THE_DIR)
    result = runner("--finprobe-pcap", "pcaps")
    result.assert_outcomes(passed=1, failed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*--finprobe-pcap: could not write * segments of this test's traffic to *pcaps*"])


STACK_INNER = '''
def test_through_the_stack(lab):
    assert lab.stack is not None and lab.stack.poll() is None
    conn = lab.connect(8080)
    conn.fin()
    conn.expect(timeout=3)
'''


def test_finprobe_stack_makes_the_lab_fixture_a_stack_lab(pytester, runner):
    pytester.makepyfile(test_stack_inner=STACK_INNER)
    command = " ".join(fp.stacks.command("lwip", 8080))
    result = runner("--finprobe-stack", command)
    result.assert_outcomes(passed=1)
