"""finprobe's pytest plugin (entry point ``finprobe`` in ``pytest11``).

Fixtures:
  ``lab``              a fresh ``fp.Lab`` per test, closed after it
                       (``@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)``
                       passes arguments to ``fp.Lab``). A default Lab (no
                       arguments, no --finprobe-stack) comes warm from a
                       LabPool: made in a thread while the test before ran,
                       and closed in a thread after the test;
  ``finprobe_target``  an ``fp.Target`` from ``--finprobe-target HOST:PORT``
                       (IPv6 as ``[addr]:port``); tests using it are skipped
                       without the option.

``--finprobe-pcap DIR`` writes the traffic of each failed test, every segment
of the Labs and Targets it used (setup and teardown included), to
``DIR/<node id>.pcap``, each character of the node id but letters, digits,
``.``, ``-`` and ``_`` turned into ``_``; a test without traffic leaves no file.
A name too long for a file (over 255 bytes with ".pcap") is cut and ends in a
hash of the whole node id, so it stays unique. DIR is made, and checked to be
writable, when the session starts: a usage error then, not an INTERNALERROR
after the first failure; a pcap that cannot be written all the same is said in
the test's report and the session goes on.

A failed ``expect`` raises ``fp.ExpectError``, an AssertionError whose message
holds the connection's recent segments as a text ladder: pytest shows it in
the failure report as it is.

Under pytest-xdist each worker has its own Labs (and LabPool); the
conformance suite's cells are dealt to the workers a row at a time
(deal_cells: CellScheduling in the controller, finprobe_matrix in each
worker), so each worker runs the matrix once, for its own rows.
"""

import collections
import concurrent.futures
import hashlib
import os
import re
import shlex
import threading
import time
import warnings
import weakref

import pytest

from . import _args
from . import trace as _trace

_RECORDER = "finprobe-pcap-recorder"
_POOL = pytest.StashKey()   # the session's LabPool, in config.stash
NAME_MAX = 255       # bytes in a file name (Linux, most file systems)
PCAP_SUFFIX = ".pcap"
# Default Labs kept warm, made at once by as many threads: a Lab is mostly the
# kernel's work in other processes, so two are made in about the time of one on
# two cores (bench/lab_fixture.py, a trivial test's share: 1.05 -> 0.90 ms).
# More spread the waits out but make no more Labs a second.
SPARES = 2


def pytest_addoption(parser):
    group = parser.getgroup("finprobe", "finprobe: TCP close-behaviour tests")
    group.addoption("--finprobe-target", metavar="HOST:PORT", default=None,
                    help="the remote target for the finprobe_target fixture; IPv6 as [addr]:port")
    group.addoption("--finprobe-stack", metavar="CMD", default=None,
                    help="make the lab fixture a Lab with this user-space TCP stack as its peer "
                         "(a command, split as a shell would; {tap} {peer_addr} {local_addr} {prefix} filled in)")
    group.addoption("--finprobe-pcap", metavar="DIR", default=None,
                    help="write each failed test's traffic (Labs and Targets) to DIR/<test id>.pcap")
    group.addoption("--finprobe-cold-labs", action="store_true", default=False,
                    help="make each lab fixture's Lab in its test, with no warm spare made in a "
                         "thread: for runs whose allocator is not fork-safe beside a thread "
                         "(GCC 12's ASan: a child forked while another thread allocates can hang)")
    group.addoption("--finprobe-port", metavar="PORT", type=int, default=None,
                    help="the port the --finprobe-stack serves HTTP on (the conformance suite's peer)")
    group.addoption("--finprobe-profile", metavar="rfc|linux|FILE", default="rfc",
                    help="the expectations the conformance suite judges cells by (default rfc)")
    group.addoption("--finprobe-ipv6", action="store_true", default=False,
                    help="the conformance suite's Lab (the kernel's or a stack's) over IPv6")
    group.addoption("--finprobe-sysctl", metavar="NAME=VALUE", action="append", default=[],
                    help="a sysctl set in the conformance suite's Lab kernel (repeatable)")


def pytest_configure(config):
    spec = config.getoption("finprobe_target")
    if spec is not None:
        parse_target(spec)  # a usage error now rather than in every test
    matrix_arguments(config, need_port=False)  # likewise; the port only where the matrix runs
    directory = config.getoption("finprobe_pcap")
    if directory:
        try:
            directory = _args.writable_directory("--finprobe-pcap", directory)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        recorder = PcapRecorder(directory)
        config.pluginmanager.register(recorder, _RECORDER)
        _trace._recorders.append(recorder)
    if not config.getoption("finprobe_cold_labs"):
        config.stash[_POOL] = LabPool()


def pytest_unconfigure(config):
    pool = config.stash.get(_POOL, None)
    if pool is not None:
        pool.close()  # the spare, and every Lab still closing: after Ctrl-C and failures too
    recorder = config.pluginmanager.get_plugin(_RECORDER)
    if recorder is not None:
        if recorder in _trace._recorders:
            _trace._recorders.remove(recorder)
        config.pluginmanager.unregister(recorder)


def parse_target(spec):
    """"HOST:PORT" or "[IPv6]:PORT" -> (host, port); pytest.UsageError otherwise."""
    try:
        return _args.host_port("--finprobe-target", spec)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture
def lab(request):
    """A fresh fp.Lab for the test, closed after it; with --finprobe-stack,
    one whose peer is that user-space stack. A default one is the pool's
    warm spare, and is closed in the background (LabPool)."""
    from .lab import Lab
    kwargs = lab_arguments(request)
    pool = request.config.stash.get(_POOL, None)
    if kwargs or pool is None:
        the_lab = Lab(**kwargs)
        try:
            yield the_lab
        finally:
            the_lab.close()
        return
    the_lab = pool.take()
    try:
        yield the_lab
    finally:
        pool.give_back(the_lab)


def lab_arguments(request_or_item):
    """fp.Lab's arguments for the lab fixture of a test (its parameters,
    --finprobe-stack); {} for the default Lab, the one the pool keeps."""
    callspec = getattr(request_or_item, "callspec", None)
    if hasattr(request_or_item, "param"):
        param = request_or_item.param
    else:
        param = callspec.params.get("lab") if callspec is not None else None
    kwargs = dict(param or {})
    stack = request_or_item.config.getoption("finprobe_stack")
    if stack is not None and "stack" not in kwargs:
        kwargs["stack"] = shlex.split(stack)
    return kwargs


def _uses_default_lab(item):
    return "lab" in getattr(item, "fixturenames", ()) and not lab_arguments(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The pool works only beside tests that use the lab fixture: before any
    other, its spare is made and every used Lab closed, so that a test
    counting its process's descriptors, children or namespaces sees none of
    the pool's work in progress."""
    pool = item.config.stash.get(_POOL, None)
    if pool is not None and "lab" not in getattr(item, "fixturenames", ()):
        pool.settle()


class LabPool:
    """The lab fixture's default Labs, so that a test waits neither for its
    Lab to be made nor for it to be removed (each takes a millisecond, more
    than a short test): SPARES spares are kept, each made in a thread of
    its own as soon as one was taken (while the test runs), and a used Lab
    is closed in another thread after its test. Every Lab is used once: a spare is a
    fresh Lab, never one a test had. Only the default Lab (no arguments)
    is kept; a test with arguments makes its own.

    close() (pytest_unconfigure: the end of the session, after Ctrl-C or an
    internal error too) closes the spare and waits for every close; the
    threads are the executors' own, which the interpreter also joins at
    exit, and a Lab's helper ends the lab should this process die."""

    def __init__(self):
        self._lock = threading.RLock()  # a done callback may run in the thread holding it
        self._spares = collections.deque()  # Futures of default Labs, not handed out, oldest first
        self._closing = set()    # Futures of Labs being closed
        self._failed = []        # what a background close raised, said at the end
        self._closed = False
        self._maker = concurrent.futures.ThreadPoolExecutor(SPARES, thread_name_prefix="finprobe-lab-maker")
        self._closer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="finprobe-lab-closer")

    def warm(self):
        """Start making spares, up to SPARES made or being made."""
        from .lab import Lab
        with self._lock:
            while len(self._spares) < SPARES and not self._closed:
                self._spares.append(self._maker.submit(Lab))

    def take(self):
        """A fresh default Lab: the spare (waiting for it if it is still
        being made), the next one started at once. Where the spare could
        not be made, one is made here, so the test shows why."""
        from .lab import Lab
        with self._lock:
            spare = self._spares.popleft() if self._spares else None
        self.warm()
        if spare is None:
            return Lab()
        try:
            return spare.result()
        except Exception:
            return Lab()
        except BaseException:  # Ctrl-C while waiting: the Lab is closed once made
            spare.add_done_callback(_close_made)
            raise

    def give_back(self, lab):
        """Close a used Lab, in the background. While --finprobe-pcap
        records, here: the recorder takes its capture for this test."""
        if _trace._recorders:
            lab.close()
            return
        with self._lock:
            if not self._closed:
                done = self._closer.submit(lab.close)
                self._closing.add(done)
                done.add_done_callback(self._closed_one)
                return
        lab.close()

    def _closed_one(self, done):
        with self._lock:
            self._closing.discard(done)
            if not done.cancelled() and done.exception() is not None:
                self._failed.append(done.exception())

    def settle(self):
        """Wait until no Lab is being made or closed."""
        with self._lock:
            pending = list(self._closing) + list(self._spares)
        concurrent.futures.wait(pending)

    def close(self):
        """The spare closed, every Lab given back closed; no thread left."""
        with self._lock:
            self._closed = True
            spares, self._spares = list(self._spares), collections.deque()
        for spare in spares:
            spare.add_done_callback(_close_made)
        self._maker.shutdown(wait=True)
        self._closer.shutdown(wait=True)
        for exc in self._failed:
            warnings.warn(f"finprobe: closing a lab fixture's Lab failed: {exc!r}", RuntimeWarning)
        self._failed.clear()


def _close_made(future):
    """A made Lab no test will have, closed (a failed make left none)."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


@pytest.fixture
def finprobe_target(request):
    """An fp.Target for --finprobe-target HOST:PORT; skips the test without it."""
    spec = request.config.getoption("finprobe_target")
    if spec is None:
        pytest.skip("no remote target: give --finprobe-target HOST:PORT")
    host, port = parse_target(spec)
    from .target import Target  # written apart from the rest; imported when needed
    target = Target(host, port)
    _trace._source_opened(target)
    try:
        yield target
    finally:
        _trace._source_closing(target)
        close = getattr(target, "close", None)
        if close is not None:
            close()


def pytest_collection_finish(session):
    """A conformance run (test_cell items selected) checks its options whole,
    the stack's port included, before any test. A session with tests of the
    default lab starts the pool's spare now, for the first of them."""
    pool = session.config.stash.get(_POOL, None)
    if pool is not None and any(_uses_default_lab(item) for item in session.items):
        pool.warm()
    if any(getattr(item, "originalname", None) == "test_cell" and "finprobe_matrix" in item.fixturenames
           for item in session.items):
        matrix_arguments(session.config)


def matrix_arguments(config, states=None, events=None, need_port=True):
    """fp.matrix's arguments from the conformance options; pytest.UsageError
    for a wrong combination or a profile that does not load."""
    from . import profile
    target, stack = config.getoption("finprobe_target"), config.getoption("finprobe_stack")
    port, sysctl = config.getoption("finprobe_port"), config.getoption("finprobe_sysctl")
    kwargs = {"profile": config.getoption("finprobe_profile"), "ipv6": config.getoption("finprobe_ipv6"),
              "states": states, "events": events}
    try:
        profile.load(kwargs["profile"])
        if target is not None and stack is not None:
            raise ValueError("give --finprobe-target or --finprobe-stack, not both")
        if stack is not None:
            if port is None and not need_port:
                return None
            if port is None:
                raise ValueError("--finprobe-stack needs --finprobe-port for the conformance suite: "
                                 "the port the stack serves HTTP on")
            _args.port("--finprobe-port", port)
            return dict(kwargs, stack=shlex.split(stack), port=port)
        if port is not None:
            raise ValueError("--finprobe-port goes with --finprobe-stack")
        if target is not None:
            if sysctl:
                raise ValueError("--finprobe-sysctl sets a Lab kernel's settings: not with --finprobe-target")
            host, port = _args.host_port("--finprobe-target", target)
            return dict(kwargs, host=host, port=port)
        sysctls = {}
        for item in sysctl:
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise ValueError(f"--finprobe-sysctl: {item!r} is not NAME=VALUE")
            sysctls[name] = value
        return dict(kwargs, sysctls=sysctls)
    except (ValueError, TypeError) as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def finprobe_matrix(request):
    """The state x event matrix (fp.Matrix) of the peer the options name (the
    local kernel in a Lab by default), run once a session for the cells of
    the selected ``test_cell`` tests (finprobe.conformance). Under
    pytest-xdist, once a worker for the rows dealt to it (deal_cells); a
    cell of another row, should one come, runs then with every selected
    cell not yet run."""
    from .matrix import matrix
    items = [item for item in request.session.items if _is_cell_item(item)]
    chosen = [item.callspec.params["cell"] for item in items]
    mine = _dealt_to_me(request.config, [item.nodeid for item in request.session.items])
    first = [item.callspec.params["cell"] for item in items if item.nodeid in mine] if mine is not None else []
    arguments = matrix_arguments(request.config)
    result = matrix(**dict(arguments, **_rows_and_columns(first or chosen)))
    if not first:   # outside xdist; or dealt nothing, yet sent a cell: all at once, as then
        return result
    return WorkerMatrix.of(result, arguments, [c for c in chosen if c not in set(first)])


def _is_cell_item(item):
    return (getattr(item, "originalname", None) == "test_cell" and getattr(item, "callspec", None) is not None
            and "cell" in item.callspec.params)


def _rows_and_columns(cells):
    """fp.matrix's states and events for cells "STATE-EVENT" (None: all)."""
    states = sorted({c.split("-", 1)[0] for c in cells}) or None
    events = sorted({c.split("-", 1)[1] for c in cells}) or None
    return {"states": states, "events": events}


def cell_of(nodeid):
    """"STATE-EVENT" of a conformance test's node id (test_cell[STATE-EVENT]), else None."""
    found = re.search(r"::test_cell\[(.+)\]$", nodeid)
    return found.group(1) if found else None


def deal_cells(nodeids, workers):
    """{worker index: [indices into nodeids]}: the conformance cells among
    the node ids dealt to ``workers`` workers a row (a state) at a time, each
    row in order to the worker with the fewest cells so far. The xdist
    controller (CellScheduling) and each worker (finprobe_matrix) reckon it
    alike from the same collection, so a worker knows its cells before its
    first test and runs the matrix once, for its rows: a row's cells share
    their drive and their waits."""
    rows = {}
    for index, nodeid in enumerate(nodeids):
        cell = cell_of(nodeid)
        if cell is not None:
            rows.setdefault(cell.split("-", 1)[0], []).append(index)
    dealt = {k: [] for k in range(workers)}
    for indices in rows.values():
        fewest = min(dealt, key=lambda k: (len(dealt[k]), k))
        dealt[fewest].extend(indices)
    return {k: v for k, v in dealt.items() if v}


def worker_index(workerid):
    """3 for xdist's "gw3"; None for another name."""
    found = re.fullmatch(r"gw(\d+)", workerid or "")
    return int(found.group(1)) if found else None


def _dealt_to_me(config, nodeids):
    """The node ids of the cells dealt to this xdist worker (a set, maybe
    empty), or None outside xdist or where the controller deals none (its
    --dist is not load)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or not workerinput.get("finprobe_deals_cells"):
        return None
    index = worker_index(workerinput.get("workerid"))
    if index is None:
        return None
    return {nodeids[i] for i in deal_cells(nodeids, int(workerinput["workercount"])).get(index, [])}


class WorkerMatrix:
    """An xdist worker's fp.Matrix: its dealt rows, run at once; cell() of
    a cell it has not (another row, dealt elsewhere, but sent here: the
    worker that had it died, or a plugin scheduled otherwise) first runs
    every selected cell not yet run, in one go."""

    @classmethod
    def of(cls, result, arguments, rest):
        mixed = type("WorkerMatrix", (cls, type(result)), {})
        made = mixed(**{f: getattr(result, f) for f in result.__dataclass_fields__})
        made._arguments, made._rest, made._lock = arguments, list(rest), threading.Lock()
        return made

    def cell(self, state, event):
        from .matrix import matrix
        with self._lock:
            have = {(c.state, c.event) for c in self.cells}
            if (state, event) not in have and self._rest:
                rest, self._rest = self._rest, []
                more = matrix(**dict(self._arguments, **_rows_and_columns(rest)))
                self.cells.extend(c for c in more.cells if (c.state, c.event) not in have)
                self.seconds += more.seconds
        return super().cell(state, event)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller, for each worker: whether it deals the conformance
    cells (CellScheduling, under --dist load)."""
    node.workerinput["finprobe_deals_cells"] = node.config.getvalue("dist") == "load"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist load, the conformance cells dealt by deal_cells (CellScheduling)."""
    if config.getvalue("dist") == "load":
        return _cell_scheduling()(config, log)
    return None


def _cell_scheduling():
    """xdist's LoadScheduling, except that the conformance cells go to the
    workers deal_cells names, all at the start; the other tests are shared
    out as LoadScheduling does. Made where xdist is (it is optional)."""
    from xdist.scheduler import LoadScheduling

    class CellScheduling(LoadScheduling):
        def schedule(self):
            if self.collection is not None or not self.collection_is_completed:
                return super().schedule()
            collection = list(self.node2collection.values())[0]
            nodes = {worker_index(node.gateway.id): node for node in self.nodes}
            dealt = deal_cells(collection, self.numnodes)
            if not dealt or not set(dealt) <= set(nodes):
                return super().schedule()   # no cells, or workers not named gw0..: as xdist does
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")   # as LoadScheduling does
                return None
            self.collection = collection
            for index, indices in dealt.items():
                self.node2pending[nodes[index]].extend(indices)
                nodes[index].send_runtest_some(indices)
            taken = {i for indices in dealt.values() for i in indices}
            self.pending[:] = [i for i in range(len(collection)) if i not in taken]
            for node in self.nodes:
                self.check_schedule(node)   # the rest shared out; a node with nothing to do shuts down

    return CellScheduling


def safe_name(nodeid):
    """The node id with every character but letters, digits, '.', '-', '_' as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", nodeid)


def pcap_name(nodeid):
    """The pcap file name of a test: ``safe_name(nodeid) + ".pcap"``, or, where
    that is longer than a file name may be, its start, "-" and a hash of the
    whole node id (two long ids alike up to the cut still get two files)."""
    name = safe_name(nodeid)
    if len(name) + len(PCAP_SUFFIX) <= NAME_MAX:
        return name + PCAP_SUFFIX
    digest = hashlib.sha256(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:NAME_MAX - len(PCAP_SUFFIX) - len(digest) - 1]}-{digest}{PCAP_SUFFIX}"


def _capture(source):
    """A Lab's or Target's capture() (for an object without one, its engine's)."""
    if hasattr(source, "capture"):
        return source.capture()
    return _trace.Trace.of_capture(source._engine.capture())


class _TestTraffic:
    """What one test's sources sent and received, from the start of its setup."""

    def __init__(self, sources):
        self.start = time.monotonic()
        self.sources = list(sources)   # alive when the test began
        self.snapshots = {}            # id(source) -> its Trace, taken as it closed
        self.failed = []               # failed reports of this test

    def add(self, source):
        if not any(s is source for s in self.sources):
            self.sources.append(source)

    def keep(self, source, trace):
        self.add(source)  # held here, so its id stays its own
        self.snapshots[id(source)] = trace

    def traces(self):
        for source in self.sources:
            if id(source) in self.snapshots:
                yield self.snapshots[id(source)]
                continue
            try:
                yield _capture(source)
            except Exception:  # closed without a snapshot, or no capture at all
                continue

    def merged(self):
        """One Trace of every source's segments since the test began, by time."""
        rows = []
        for trace in self.traces():
            for seg, raw in zip(trace, trace._packets):
                if seg.ts is not None and seg.ts >= self.start:
                    rows.append((seg.ts, seg, raw))
        rows.sort(key=lambda r: r[0])
        return _trace.Trace([r[1] for r in rows], packets=[r[2] for r in rows])


class PcapRecorder:
    """--finprobe-pcap: keeps the traffic of the running test, writes it if it failed."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.live = weakref.WeakSet()  # every Lab or Target not yet closed
        self.current = None
        self.lock = threading.Lock()   # the lab fixture's spare opens in a thread of its own

    # -- called by sources (finprobe.trace._source_opened / _source_closing)

    def opened(self, source):
        with self.lock:
            self.live.add(source)
            if self.current is not None:
                self.current.add(source)

    def closing(self, source):
        with self.lock:
            self.live.discard(source)
            current = self.current
        if current is not None:
            trace = _capture(source)
            with self.lock:
                current.keep(source, trace)

    # -- pytest hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        with self.lock:
            self.current = _TestTraffic(self.live)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        traffic = self.current
        if traffic is None:
            return
        if report.failed:
            traffic.failed.append(report)
        if call.when == "teardown":
            self.current = None
            if traffic.failed:
                self._write(item, traffic)

    def _write(self, item, traffic):
        trace = traffic.merged()
        if not len(trace):
            return
        path = os.path.join(self.directory, pcap_name(item.nodeid))
        try:
            os.makedirs(self.directory, exist_ok=True)  # removed since the start?
            trace.to_pcap(path)
            said = f"{len(trace)} segments of this test's traffic in {path}"
        except (OSError, ValueError) as e:  # the session goes on; the report says why
            said = f"--finprobe-pcap: could not write {len(trace)} segments of this test's traffic to {path}: {e}"
        for report in traffic.failed:
            report.sections.append(("finprobe", said))
