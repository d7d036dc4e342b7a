"""strongSwan for the per-peer IPsec baseline (topologies/dmvpn-ipsec): where its files sit in a node,
how swanctl reaches a node's own charon, and what ``swanctl --list-sas`` says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.topology import Topology

# Where the generated strongSwan files land in a node (containerlab binds them; the netns runtime reads
# them from there).  The strongswan.conf part is a drop-in that /etc/strongswan.conf includes.
SWANCTL_CONF_PATH = "/etc/swanctl/swanctl.conf"
STRONGSWAN_CONF_PATH = "/etc/strongswan.d/dmvpn-lab.conf"
CHARON_PATHS = ("/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon", "/usr/libexec/strongswan/charon")


def ipsec_run_dir(topology: Topology, node: str) -> Path:
    """The host folder that is ``/run`` for the node's charon (pid file, vici socket)."""
    return Path("/run/dmvpn-lab") / topology.name / node / "ipsec"


def swanctl_uri(topology: Topology, node: str) -> list[str]:
    """swanctl arguments that reach the node's own charon."""
    return ["--uri", f"unix://{ipsec_run_dir(topology, node) / 'charon.vici'}"]


_IKE_SA_LINE = re.compile(r"^(\S+): #(\d+), (\w+), IKEv(\d)")
_CHILD_SA_LINE = re.compile(r"^\s+(\S+): #(\d+), reqid (\d+), (\w+), (\w+)")
_ENDPOINT_LINE = re.compile(r"^\s+(local|remote)\s+'[^']*' @ ([0-9.]+)\[")
_SPI_LINE = re.compile(r"^\s+(in|out)\s+([0-9a-f]{8})")


def parse_swanctl_sas(text: str) -> list[dict[str, Any]]:
    """``swanctl --list-sas`` text as a list of IKE SAs, each with its CHILD_SAs and SPIs."""
    sas: list[dict[str, Any]] = []
    for line in text.splitlines():
        if m := _IKE_SA_LINE.match(line):
            sas.append({"conn": m[1], "id": int(m[2]), "state": m[3], "version": int(m[4]), "children": []})
        elif sas and (m := _CHILD_SA_LINE.match(line)):
            sas[-1]["children"].append({"name": m[1], "id": int(m[2]), "state": m[4], "mode": m[5], "spis": {}})
        elif sas and (m := _ENDPOINT_LINE.match(line)):
            sas[-1][m[1]] = m[2]
        elif sas and sas[-1]["children"] and (m := _SPI_LINE.match(line)):
            sas[-1]["children"][-1]["spis"][m[1]] = int(m[2], 16)
    return sas


def swanctl_sas(shell: NodeShell, node: str) -> list[dict[str, Any]]:
    """The node's IKE SAs as strongSwan lists them (see ``parse_swanctl_sas``)."""
    out = shell.run(node, ["swanctl", "--list-sas", *swanctl_uri(shell.topology, node)], timeout=30).stdout
    return parse_swanctl_sas(out)
