"""The state x event matrix as a pytest suite: one test a cell.

    pytest --pyargs finprobe.conformance                       # the local kernel, in a Lab
    pytest --pyargs finprobe.conformance --finprobe-profile linux
    pytest --pyargs finprobe.conformance --finprobe-sysctl net.ipv4.tcp_rfc1337=1
    pytest --pyargs finprobe.conformance --finprobe-stack "CMD ..." --finprobe-port 8080
    pytest --pyargs finprobe.conformance --finprobe-target 198.51.100.7:80
    pytest --pyargs finprobe.conformance -k "TIME_WAIT and syn"

From a source tree rather than an installed finprobe, add ``-p
finprobe.pytest_plugin`` (an installed one registers the plugin through its
pytest11 entry point).

Tests are named ``test_cell[STATE-EVENT]``. The selected cells run together,
once a session (once a worker under pytest-xdist), through the
``finprobe_matrix`` fixture (finprobe.pytest_plugin); each test then judges
its cell by the profile: a failure shows what was sent, what the profile
expects and what was observed (and where from), with the cell's ladder. A
cell that cannot be driven against the peer is skipped with the reason, and
so is a cell the profile states nothing about.
"""
