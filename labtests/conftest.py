"""The lab the suites run against: brought up once per session (or reused if already running)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dmvpn_lab.lab import checks, preflight
from dmvpn_lab.lab.cli import runtime_for
from dmvpn_lab.lab.node import NodeShell, state_root
from dmvpn_lab.lab.topology import Topology, load_topology


@dataclass
class Lab:
    topology: Topology
    shell: NodeShell
    runtime: Any
    results: Path

    def node_label(self, node: str, label: str) -> str:
        return self.topology.nodes[node].labels[f"dmvpn-lab.{label}"]

    def host_of(self, router: str) -> str:
        return self.node_label(router, "host")

    def address_of_host(self, host: str) -> str:
        return self.node_label(host, "address")

    def ping(self, src_node: str, dst: str, *, count: int = 3, interval: float = 0.2) -> str:
        result = self.shell.run(
            src_node,
            ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", dst],
            check=False,
            timeout=60 + count * 3,
        )
        assert result.returncode == 0, f"[{src_node}] ping {dst} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def save(self, test: str, name: str, content: str | dict[str, Any] | list[Any]) -> Path:
        folder = self.results / _slug(test)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))
        return path

    def artifact(self, test: str, name: str) -> Path:
        folder = self.results / _slug(test)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


def _bring_up(config: pytest.Config, path: str) -> Iterator[Lab]:
    runtime_name = config.getoption("--runtime")
    if runtime_name == "netns":
        missing = preflight.kernel_missing_modules()
        if missing:
            pytest.fail(
                f"this kernel lacks {' '.join(missing)} and the run is not in the sandbox kernel: "
                "run `make test` (or plain `pytest` without DMVPN_LAB_NO_SANDBOX=1)",
                pytrace=False,
            )
        preflight.require(preflight.netns_checks(need_kernel=False))
    topology = load_topology(path)
    runtime = runtime_for(topology, runtime_name)
    shell = NodeShell(topology, runtime_name)
    results = Path(config.getoption("--results")) / topology.name
    results.mkdir(parents=True, exist_ok=True)
    reused = bool(runtime.existing_namespaces())
    if reused:
        checks.wait_converged(shell, timeout=120, progress=lambda _line: None)
    else:
        runtime.up(converge_timeout=240)
    lab = Lab(topology, shell, runtime, results)
    try:
        yield lab
    finally:
        logs = state_root() / topology.name
        if logs.exists():
            shutil.copytree(logs, results / "logs", dirs_exist_ok=True, ignore=shutil.ignore_patterns("keys", "*.sock"))
        if not reused and not config.getoption("--keep-lab"):
            runtime.down()


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The GDOI lab (``--topology``, default topologies/dmvpn-gdoi)."""
    yield from _bring_up(pytestconfig, pytestconfig.getoption("--topology"))


@pytest.fixture(scope="session")
def plain_lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The same DMVPN without GDOI: the positive control of the wire checks."""
    yield from _bring_up(pytestconfig, "topologies/dmvpn-plain")


# The suites share one lab; run them from gentle to disruptive so a negative test cannot disturb others.
SUITE_ORDER = (
    "test_smoke",
    "test_gdoi",
    "test_nhrp",
    "test_encryption",
    "test_validate",
    "test_rekey",
    "test_rekey_timers",
    "test_negative",
    "test_nhrp_lifecycle",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""  # type: ignore[attr-defined]
        return SUITE_ORDER.index(module) if module in SUITE_ORDER else len(SUITE_ORDER)

    items.sort(key=rank)
