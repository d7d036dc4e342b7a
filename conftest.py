"""pytest set-up shared by the unit tests (tests/) and the lab suites (labtests/).

Where this kernel cannot carry the lab (no ip_gre/esp4/xfrm_user, as on the project's own machines),
the pytest run is started again inside the sandbox kernel, so `pytest` and `make test` behave the same on
every machine.  A run of everything (no paths given) is split instead: the unit tests on this host and
groups of lab suites in sandbox kernels of their own, at once (labtests/parallel.py says why).
Set DMVPN_LAB_NO_SANDBOX=1 to run here anyway (lab tests then fail, loudly).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dmvpn-lab")
    group.addoption(
        "--topology",
        default=os.environ.get("DMVPN_LAB_TOPOLOGY", "topologies/dmvpn-gdoi"),
        help="topology the lab suites run against",
    )
    group.addoption(
        "--runtime",
        default=os.environ.get("DMVPN_LAB_RUNTIME", "netns"),
        choices=["netns", "containerlab"],
        help="how the lab runs",
    )
    group.addoption(
        "--keep-lab",
        action="store_true",
        help="leave the lab running after the tests (inspect it with dmvpn-lab status)",
    )
    group.addoption(
        "--results",
        default=os.environ.get("DMVPN_LAB_RESULTS", "results"),
        help="folder for pcaps, show outputs and logs of each test",
    )


def _wants_lab(config: pytest.Config) -> bool:
    markexpr = config.option.markexpr or ""
    return "not lab" not in markexpr


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    from labtests import parallel

    from dmvpn_lab.lab import preflight, sandbox

    if preflight.in_sandbox() or os.environ.get("DMVPN_LAB_NO_SANDBOX") == "1" or not _wants_lab(config):
        return None
    if not preflight.kernel_missing_modules():
        return None
    # containerlab also needs a Docker engine: one on this host will do, else the sandbox runs its own.
    docker = config.option.runtime == "containerlab"
    if docker and preflight.docker_engine_answers():
        return None
    ok, how = sandbox.available()
    if not ok:
        raise pytest.UsageError(f"this kernel lacks GRE/ESP and the sandbox kernel is missing: {how}")
    rootdir = Path(config.rootpath)
    if not os.environ.get("DMVPN_LAB_SHARD") and parallel.covers_everything(config.args, rootdir):
        results = Path(config.getoption("--results")).resolve()
        return parallel.run(list(config.invocation_params.args), results, rootdir)
    args = [sys.executable, "-m", "pytest", *config.invocation_params.args]
    return sandbox.run(args, cwd=config.invocation_params.dir, docker=docker)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "incremental: later steps skip once one step failed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test about one runtime's own machinery (``runtime("netns")``) is left out of the other's run.

    Left out, not skipped: the other runtime has no such machinery (containerlab's cleanup is
    containerlab's), and README.md lists each one with the reason.
    """
    runtime = config.option.runtime
    kept, left_out = [], []
    for item in items:
        marker = item.get_closest_marker("runtime")
        (left_out if marker is not None and runtime not in marker.args else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # FRR topotest style: once a step of an incremental class fails, the rest skip instead of piling up.
    if "incremental" in item.keywords and call.excinfo is not None and call.when == "call":
        parent = item.parent
        if parent is not None:
            parent._previousfailed = item  # type: ignore[attr-defined]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "incremental" in item.keywords and item.parent is not None:
        previous = getattr(item.parent, "_previousfailed", None)
        if previous is not None:
            pytest.skip(f"an earlier step failed: {previous.name}")


@pytest.fixture(autouse=True)
def _isolated_daemon_logger() -> Iterator[None]:
    """Undo what a test's `gdoi ks|gm` run did to the daemons' logger (configure_logging gives it a
    handler on that test's captured stderr): otherwise the engines' state transitions of every later
    test would be logged into a closed stream."""
    logger = logging.getLogger("dmvpn_lab.gdoi")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


# --- time per suite: each lab module, and each folder of unit tests --------------------------------------

_suite_seconds: dict[str, float] = {}


def _suite_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return path if path.startswith("labtests/") else path.rsplit("/", 1)[0] + "/"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    suite = _suite_of(report.nodeid)
    _suite_seconds[suite] = _suite_seconds.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from labtests import parallel

    results = Path(config.getoption("--results"))
    shard = os.environ.get("DMVPN_LAB_SHARD")
    if shard:  # one group of a parallel run: its counts, for the run's totals
        results.mkdir(parents=True, exist_ok=True)
        counts = {key: len(terminalreporter.stats.get(key, [])) for key in parallel.OUTCOMES}
        parallel.outcome_file(results, shard).write_text(json.dumps(counts) + "\n")
    if not _suite_seconds:
        return
    # A lab is brought up in the setup of the first test that uses it and taken down in the teardown
    # of the last one, so those seconds count to the suites where that happens.
    terminalreporter.section("time per suite (setup, tests, teardown)")
    for suite, seconds in _suite_seconds.items():
        terminalreporter.write_line(f"{seconds:8.1f} s  {suite}")
    results.mkdir(parents=True, exist_ok=True)
    rounded = {suite: round(seconds, 1) for suite, seconds in _suite_seconds.items()}
    parallel.suite_times_file(results, shard).write_text(json.dumps(rounded, indent=1) + "\n")
