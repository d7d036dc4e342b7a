"""A lab's state file: which runtime brought it up, when, and what it started.

``<state root>/<lab>/state.json`` (the state root is per sandbox kernel, see :func:`node.state_root`).
Both runtimes write it; the CLI reads it to act on the runtime a lab runs on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmvpn_lab.lab.node import state_root
from dmvpn_lab.lab.topology import Topology

RUNTIMES = ("netns", "containerlab")


def state_file(topology: Topology) -> Path:
    return state_root() / topology.name / "state.json"


def read_state(topology: Topology) -> dict[str, Any]:
    path = state_file(topology)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(topology: Topology, state: dict[str, Any]) -> None:
    path = state_file(topology)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    tmp.replace(path)


def recorded_runtime(topology: Topology) -> str | None:
    """The runtime that brought this lab up, as its state file says (None: no state)."""
    runtime = read_state(topology).get("runtime")
    return runtime if runtime in RUNTIMES else None
