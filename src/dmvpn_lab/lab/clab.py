"""The containerlab runtime: Docker containers deployed by ``containerlab`` from the same topology.

The images (``images/``) run each node's ``setup.sh``, the GDOI sidecar and FRR at start; this module
deploys, destroys and waits for convergence through the same :class:`NodeShell` checks as the netns
runtime.  containerlab's machine-readable ``inspect -f json`` is parsed, never its table.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.topology import Topology


class ContainerlabError(RuntimeError):
    pass


@dataclass
class ContainerlabRuntime:
    topology: Topology
    progress: Callable[[str], None] = print

    @property
    def shell(self) -> NodeShell:
        return NodeShell(self.topology, "containerlab")

    def _clab(self, *args: str, timeout: float = 900) -> str:
        argv = ["containerlab", *args, "-t", str(self.topology.path)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ContainerlabError(f"`{' '.join(argv)}` failed:\n{result.stderr.strip()[-3000:]}")
        return result.stdout

    def up(self, *, converge_timeout: float = 240.0) -> dict[str, Any]:
        started = time.monotonic()
        self.progress(f"containerlab deploy {self.topology.path.name} (pulls images on first use)")
        self._clab("deploy", "--reconfigure")
        self.progress("waiting for convergence (GDOI registration, NHRP registration, BGP routes)")
        outputs = checks.wait_converged(self.shell, timeout=converge_timeout, progress=self.progress)
        self.progress(f"lab {self.topology.name} is up and converged in {time.monotonic() - started:.1f}s")
        return outputs

    def down(self) -> None:
        self.progress(f"containerlab destroy {self.topology.name}")
        self._clab("destroy", "--cleanup")

    def dead_daemons(self) -> list[str]:
        """Nodes whose container is not running (inside one, a supervisor restarts a dead daemon)."""
        running = set(self.existing_namespaces())
        return [
            f"{name}: container {self.topology.namespace(name)} is not running (see `docker logs` of it)"
            for name in self.topology.nodes
            if self.topology.namespace(name) not in running
        ]

    def existing_namespaces(self) -> list[str]:
        try:
            out = self._clab("inspect", "-f", "json", timeout=60)
        except (ContainerlabError, FileNotFoundError):
            return []
        data = json.loads(out or "{}")
        containers = data.get("containers", []) if isinstance(data, dict) else []
        if isinstance(data, dict) and not containers:  # containerlab >= 0.60 groups by lab name
            containers = [c for group in data.values() if isinstance(group, list) for c in group]
        return [str(c.get("name")) for c in containers if c.get("state") == "running"]
