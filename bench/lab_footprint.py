"""Bring-up time to convergence and memory per node of a lab, on each runtime in the same run.

    python bench/lab_footprint.py [--topology topologies/dmvpn-gdoi] [--runtimes netns containerlab]

Runs in the sandbox kernel when this kernel lacks GRE/ESP (with the Docker Engine when containerlab is
asked for and no engine answers here); prints a table and writes results/bench-lab.json.  The images
are made ready before containerlab's clock starts: the row compares bringing a lab up, not building.
Memory is the resident memory of every process in the node's network namespace (on containerlab that
includes the container's tini and supervisord).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from dmvpn_lab.lab import images, preflight, sandbox
from dmvpn_lab.lab.runtime import runtime_for
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


def measure(topology_path: str, runtime_name: str) -> dict[str, object]:
    topology = load_topology(topology_path)
    runtime = runtime_for(topology, runtime_name, progress=lambda _line: None)
    if runtime_name == "containerlab":
        images.ensure_images(lambda line: print(f"  {line}", flush=True))
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
        "runtime": runtime_name,
        "kernel": platform.release(),
        "sandbox": preflight.in_sandbox(),
        "up_to_converged_s": round(up_seconds, 1),
        "nodes": nodes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="topologies/dmvpn-gdoi")
    parser.add_argument("--runtimes", nargs="+", choices=["netns", "containerlab"], default=["netns", "containerlab"])
    parser.add_argument("--out", default="results/bench-lab.json")
    args = parser.parse_args()
    docker = "containerlab" in args.runtimes
    if not preflight.in_sandbox() and preflight.kernel_missing_modules():
        return sandbox.run([sys.executable, *sys.argv], docker=docker and not preflight.docker_engine_answers())
    results = [measure(args.topology, name) for name in args.runtimes]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    first = results[0]
    print(f"{first['lab']} (kernel {first['kernel']}{', sandbox' if first['sandbox'] else ''})")
    print(f"{'runtime':<14} {'up to converged':>16} {'router MiB':>11} {'KS MiB':>7} {'all nodes MiB':>14}")
    for result in results:
        nodes: dict[str, dict[str, float]] = result["nodes"]  # type: ignore[assignment]
        routers = [v["rss_mib"] for k, v in nodes.items() if k == "hub" or k.startswith("spoke")]
        ks = [v["rss_mib"] for k, v in nodes.items() if k.startswith("ks")]
        print(
            f"{result['runtime']!s:<14} {result['up_to_converged_s']!s:>14} s {sum(routers) / len(routers):>11.1f}"
            f" {sum(ks) / max(len(ks), 1):>7.1f} {sum(v['rss_mib'] for v in nodes.values()):>14.1f}"
        )
    print(f"{'node':<10} " + " ".join(f"{r['runtime']!s:>14}" for r in results) + "  (RSS MiB / processes)")
    for name in first["nodes"]:  # type: ignore[attr-defined]
        cells = [f"{r['nodes'][name]['rss_mib']:>8} / {r['nodes'][name]['processes']:>3}" for r in results]  # type: ignore[index]
        print(f"{name:<10} " + " ".join(f"{c:>14}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
