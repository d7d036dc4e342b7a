"""What a runtime is, and which one a lab runs on.

Two runtimes read the same containerlab topology: ``netns`` (:mod:`~dmvpn_lab.lab.netns`, the embedded
default, no Docker) and ``containerlab`` (:mod:`~dmvpn_lab.lab.clab`, Docker containers deployed by
containerlab).  Both implement :class:`Runtime`; the CLI, the test fixtures and the benchmarks use
nothing else.  The runtime that brought a lab up is written in the lab's state file
(:mod:`~dmvpn_lab.lab.labstate`), so ``down``, ``status`` and the fixtures act on that one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from dmvpn_lab.lab.clab import ContainerlabRuntime
from dmvpn_lab.lab.labstate import RUNTIMES, recorded_runtime
from dmvpn_lab.lab.netns import NetnsRuntime
from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.topology import Topology

Progress = Callable[[str], None]


class Runtime(Protocol):
    """The lifecycle of one lab, whatever runs it."""

    topology: Topology

    @property
    def shell(self) -> NodeShell: ...

    def up(self, *, converge_timeout: float = ...) -> dict[str, Any]:
        """Bring every node up and wait until the lab has converged; returns the converged outputs."""
        ...

    def down(self) -> None:
        """Remove everything this runtime made for the lab."""
        ...

    def existing_namespaces(self) -> list[str]:
        """The lab's node namespaces (``clab-<lab>-<node>``) that exist now."""
        ...

    def dead_daemons(self) -> list[str]:
        """One line per daemon of the lab that is no longer running, with where to look."""
        ...

    def stop_gdoi(self, name: str) -> None:
        """Stop the node's GDOI daemon (a member removes its kernel state) and wait until it is gone."""
        ...

    def start_gdoi(self, name: str, config: Path | None = None) -> None:
        """Start the node's GDOI daemon, with ``config`` (a file of the harness) instead of the topology's."""
        ...

    def restart_gdoi(self, name: str, config: Path | None = None) -> None: ...

    def daemon_log(self, node: str, daemon: str) -> str:
        """The log of one of the node's FRR daemons (``nhrpd``, ...) so far; empty if it has none."""
        ...

    def collect_logs(self, folder: Path) -> None:
        """Copy every daemon's log of the lab into ``folder`` (one sub-folder per node)."""
        ...


def runtime_for(topology: Topology, name: str | None = None, progress: Progress | None = None) -> Runtime:
    """The runtime ``name``; without one, the lab's recorded runtime, else ``netns``."""
    chosen = name or recorded_runtime(topology) or "netns"
    report = progress or (lambda line: print(line, flush=True))
    if chosen == "containerlab":
        return ContainerlabRuntime(topology, progress=report)
    if chosen != "netns":
        raise ValueError(f"unknown runtime {chosen!r} (choose one of {', '.join(RUNTIMES)})")
    return NetnsRuntime(topology, progress=report)
