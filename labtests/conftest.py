"""The lab the suites run against: brought up once per session (or reused if already running)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from labtests.lib import Lab, bring_up


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The GDOI lab (``--topology``, default topologies/dmvpn-gdoi)."""
    yield from bring_up(pytestconfig, pytestconfig.getoption("--topology"))


@pytest.fixture(scope="session")
def plain_lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The same DMVPN without GDOI: the positive control of the wire checks."""
    yield from bring_up(pytestconfig, "topologies/dmvpn-plain")


# Fixtures that hold a running lab, in this file and in the suites that bring up labs of their own.
LAB_FIXTURES = ("lab", "plain_lab", "fast_lab", "nhrp_lab", "ipsec_lab", "coop_lab")


@pytest.fixture(autouse=True)
def _daemons_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before each lab test: every daemon the lab started still runs, or the test fails naming it."""
    for name in LAB_FIXTURES:
        if name in request.fixturenames:
            dead = request.getfixturevalue(name).runtime.dead_daemons()
            if dead:
                pytest.fail("a daemon of the lab died:\n" + "\n\n".join(dead), pytrace=False)
    yield
    # Run the finalizers of what the test left (pyshark captures, event loops, processes) now, not at
    # a random later moment: CPython 3.11 fails an ast.parse in progress with "AST constructor
    # recursion depth mismatch" when a finalizer runs inside it (seen once, as pytest imported a plugin).
    gc.collect()


# The suites share one lab; run them from gentle to disruptive so a negative test cannot disturb others.
SUITE_ORDER = (
    "test_smoke",
    "test_gdoi",
    "test_nhrp",
    "test_encryption",
    "test_encryption_control",
    "test_validate",
    "test_rekey",
    "test_rekey_timers",
    "test_negative",
    "test_nhrp_lifecycle",
    "test_coop",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""  # type: ignore[attr-defined]
        return SUITE_ORDER.index(module) if module in SUITE_ORDER else len(SUITE_ORDER)

    items.sort(key=rank)
