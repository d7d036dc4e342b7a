"""The lab CLI's hints name the lab's own nodes, so they work when pasted."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmvpn_lab.lab import generate
from dmvpn_lab.lab.cli import DEFAULT_TOPOLOGY, _next_steps
from dmvpn_lab.lab.generate import LabSpec, Protection
from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.topology import load_topology

REPO = Path(__file__).resolve().parents[2]


def test_next_steps_for_the_seed_lab_use_its_hosts() -> None:
    topology = load_topology(str(REPO / DEFAULT_TOPOLOGY))
    hint = _next_steps(argparse.Namespace(topology=DEFAULT_TOPOLOGY), NodeShell(topology, "netns"))
    assert hint == (
        "next: dmvpn-lab status | dmvpn-lab show spoke1 crypto gdoi | "
        "dmvpn-lab exec host4 -- ping -c3 192.168.2.10 | dmvpn-lab down"
    )


def test_next_steps_for_another_lab_pass_its_topology_and_hosts(tmp_path: Path) -> None:
    folder = generate.write(LabSpec(2, Protection.GDOI, "two-spokes"), tmp_path)
    hint = _next_steps(argparse.Namespace(topology=str(folder)), NodeShell(load_topology(str(folder)), "netns"))
    lab = f"dmvpn-lab -t {folder}"
    assert hint == (
        f"next: {lab} status | {lab} show spoke1 crypto gdoi | {lab} exec host3 -- ping -c3 192.168.2.10 | {lab} down"
    )
