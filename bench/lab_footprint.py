"""Bring-up time to convergence and memory per node of a lab.

    python bench/lab_footprint.py [--topology topologies/dmvpn-gdoi]

Runs the lab in the sandbox kernel when this kernel lacks GRE/ESP; prints a table and writes
results/bench-lab.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from dmvpn_lab.lab import preflight, sandbox
from dmvpn_lab.lab.netns import NetnsRuntime
from dmvpn_lab.lab.topology import load_topology


def rss_kib(namespace: str) -> tuple[int, int]:
    """Resident memory (KiB) and process count of everything running in ``namespace``."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total, len(pids)


def measure(topology_path: str) -> dict[str, object]:
    topology = load_topology(topology_path)
    runtime = NetnsRuntime(topology, progress=lambda _line: None)
    started = time.monotonic()
    runtime.up()
    up_seconds = time.monotonic() - started
    nodes = {}
    for name in topology.nodes:
        rss, count = rss_kib(topology.namespace(name))
        nodes[name] = {"rss_mib": round(rss / 1024, 1), "processes": count}
    runtime.down()
    return {
        "lab": topology.name,
        "kernel": platform.release(),
        "sandbox": preflight.in_sandbox(),
        "up_to_converged_s": round(up_seconds, 1),
        "nodes": nodes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="topologies/dmvpn-gdoi")
    parser.add_argument("--out", default="results/bench-lab.json")
    args = parser.parse_args()
    if not preflight.in_sandbox() and preflight.kernel_missing_modules():
        return sandbox.run([sys.executable, *sys.argv])
    result = measure(args.topology)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(
        f"{result['lab']}: up to converged {result['up_to_converged_s']} s "
        f"(kernel {result['kernel']}{', sandbox' if result['sandbox'] else ''})"
    )
    print(f"{'node':<10} {'RSS MiB':>8} {'procs':>6}")
    for name, entry in result["nodes"].items():  # type: ignore[union-attr]
        print(f"{name:<10} {entry['rss_mib']:>8} {entry['processes']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
