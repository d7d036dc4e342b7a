"""What "the lab has converged" means, written once for ``up``, the tests and ``validate``.

Each expectation is JSON an FRR or GDOI show command must contain; the roles and addresses come from
the topology's labels (``dmvpn-lab.role``, ``dmvpn-lab.nbma``, ``dmvpn-lab.tunnel-ip``, ``dmvpn-lab.lan``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmvpn_lab.lab.converge import wait_for_json
from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.topology import Node

# --- expectations ------------------------------------------------------------------------------------


def gm_registered(status: Any) -> str | None:
    """A GM's ``gdoi show crypto gdoi --json`` once GROUPKEY-PULL completed and a TEK is installed."""
    if not isinstance(status, dict) or not status.get("registered"):
        return "not registered with the key server"
    if not status.get("teks"):
        return "registered but holds no TEK"
    return None


def hub_nhrp_expected(shell: NodeShell) -> dict[str, Any]:
    """Every spoke in the hub's NHRP cache as a dynamic entry with its NBMA address."""
    return {
        "table": [
            {"type": "dynamic", "protocol": s.labels["dmvpn-lab.tunnel-ip"], "nbma": s.labels["dmvpn-lab.nbma"]}
            for s in shell.topology.spokes()
        ]
    }


def routes_expected(shell: NodeShell, router: Node) -> dict[str, Any]:
    """Every other router's LAN in this router's BGP routes (an NHRP shortcut may outrank it later)."""
    return {r.labels["dmvpn-lab.lan"]: [{"protocol": "bgp"}] for r in shell.topology.routers() if r.name != router.name}


def wait_converged(
    shell: NodeShell, *, timeout: float = 180.0, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Wait for GDOI registration, NHRP registration at the hub and BGP routes everywhere."""
    outputs: dict[str, Any] = {}
    for gm in shell.topology.group_members():
        outputs[f"{gm.name}/gdoi"] = wait_for_json(
            lambda gm=gm: shell.gdoi_json(gm.name, "show", "crypto", "gdoi"),  # type: ignore[misc]
            gm_registered,
            what=f"{gm.name}: gdoi show crypto gdoi --json",
            timeout=timeout,
        )
        progress(f"  {gm.name}: registered with the key server")
    the_hub = shell.topology.hub()
    outputs["hub/nhrp"] = wait_for_json(
        lambda: shell.vtysh_json(the_hub.name, "show ip nhrp cache json"),
        hub_nhrp_expected(shell),
        what=f"{the_hub.name}: show ip nhrp cache json",
        timeout=timeout,
    )
    progress(f"  {the_hub.name}: {len(shell.topology.spokes())} spokes registered over NHRP")
    for router in shell.topology.routers():
        outputs[f"{router.name}/routes"] = wait_for_json(
            lambda router=router: shell.vtysh_json(router.name, "show ip route bgp json"),  # type: ignore[misc]
            routes_expected(shell, router),
            what=f"{router.name}: show ip route bgp json",
            timeout=timeout,
        )
    progress("  BGP: every router has a route to every LAN")
    return outputs


# --- kernel state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XfrmState:
    src: str
    dst: str
    proto: str
    spi: int


def xfrm_states(shell: NodeShell, node: str) -> list[XfrmState]:
    """The node's xfrm states (``ip xfrm state``: a ``src A dst B`` line, then ``proto esp spi 0x..``)."""
    states: list[XfrmState] = []
    src = dst = ""
    for line in shell.run(node, ["ip", "xfrm", "state"]).stdout.splitlines():
        words = line.split()
        if line.startswith("src ") and len(words) >= 4:
            src, dst = words[1], words[3]
        elif words[:1] == ["proto"] and "spi" in words:
            states.append(XfrmState(src, dst, words[1], int(words[words.index("spi") + 1], 16)))
    return states


def xfrm_policy_count(shell: NodeShell, node: str) -> int:
    out = shell.run(node, ["ip", "xfrm", "policy"]).stdout
    return sum(1 for line in out.splitlines() if line.startswith("src "))


def ks_teks(shell: NodeShell) -> list[dict[str, Any]]:
    """The TEKs the key server currently hands out (``gdoi show crypto gdoi --json``), all groups."""
    ks = shell.topology.key_server()
    if ks is None:
        return []
    status = shell.gdoi_json(ks.name, "show", "crypto", "gdoi")
    return [t for g in status.get("groups", []) for t in g.get("teks", [])]


def group_spis(shell: NodeShell) -> set[int]:
    """Every TEK SPI the key server currently hands out."""
    return {int(t["spi"]) for t in ks_teks(shell)}


def ks_members(shell: NodeShell) -> dict[str, dict[str, Any]]:
    """The key server's members by address (``gdoi show crypto gdoi ks members --json``)."""
    ks = shell.topology.key_server()
    if ks is None:
        return {}
    members = shell.gdoi_json(ks.name, "show", "crypto", "gdoi", "ks", "members")["members"]
    return {m["address"]: m for m in members}


def underlay_ports(shell: NodeShell) -> dict[str, str]:
    """Node name -> the underlay router's interface facing it (for captures of one node's traffic)."""
    underlay = [n.name for n in shell.topology.nodes.values() if n.role == "underlay"]
    ports = {}
    for link in shell.topology.links:
        for here, there in ((link.a, link.b), (link.b, link.a)):
            if here.node in underlay:
                ports[there.node] = here.interface
    return ports


def ks_sessions_problem(shell: NodeShell) -> str | None:
    """The KS must hold exactly one GDOI_IDLE phase-1 session per GM."""
    ks = shell.topology.key_server()
    if ks is None:
        return "no key server in this lab"
    sas = shell.gdoi_json(ks.name, "show", "crypto", "isakmp", "sa")["ipv4"]
    idle = sorted(sa["src"] for sa in sas if sa["state"] == "GDOI_IDLE")
    want = sorted(gm.env["GDOI_LOCAL_ADDRESS"] for gm in shell.topology.group_members())
    if idle != want:
        return f"GDOI_IDLE sessions from {idle}, expected one from each of {want}"
    return None


IKE_PORTS = (500, 4500)


def ike_listeners(shell: NodeShell, node: str) -> list[str]:
    """UDP sockets bound to IKE's ports in ``node`` (``ss -Hlun``): an IKE daemon that could key per peer."""
    found = []
    for line in shell.run(node, ["ss", "-Hlun"]).stdout.splitlines():
        words = line.split()
        local = words[3] if len(words) >= 4 else ""
        port = local.rsplit(":", 1)[-1]
        if port.isdigit() and int(port) in IKE_PORTS:
            found.append(local)
    return found


def per_peer_sa_problems(shell: NodeShell) -> list[str]:
    """Everything that contradicts "no per-peer IKE phase 2", read from the kernels and sockets of every
    router and the key server, never from this project's own show output:

    * an IKE daemon listening anywhere (no IKE SA can exist between routers without one);
    * an xfrm state whose SPI is not a group SPI the KS hands out, or an inbound state bound to one peer;
    * kernel IPsec state on the key server, which has no data plane;
    * a member missing what must be there: an inbound ``src 0.0.0.0`` state for every TEK it holds, and
      the GRE policies both ways (an empty state list proves nothing).
    """
    problems: list[str] = []
    group = group_spis(shell)
    if not group:
        problems.append("the key server hands out no TEK (is there one?)")
    ks = shell.topology.key_server()
    states_of = {
        node.name: xfrm_states(shell, node.name) for node in [*shell.topology.routers(), *([ks] if ks else [])]
    }
    for name, states in states_of.items():
        problems += [f"{name}: an IKE daemon listens on {where}" for where in ike_listeners(shell, name)]
        foreign = [s for s in states if s.proto != "esp" or s.spi not in group]
        if foreign:
            shown = ", ".join(f"{s.src}->{s.dst} spi 0x{s.spi:x}" for s in foreign[:4])
            problems.append(f"{name}: {len(foreign)} xfrm states with no group SPI ({shown})")
    if ks is not None and (states_of[ks.name] or xfrm_policy_count(shell, ks.name)):
        problems.append(f"{ks.name}: the key server holds kernel IPsec state")
    for gm in (r for r in shell.topology.routers() if r.gdoi_role == "gm"):
        own = gm.labels["dmvpn-lab.nbma"]
        states = states_of[gm.name]
        held = {int(t["spi"]) for t in shell.gdoi_json(gm.name, "show", "crypto", "gdoi").get("teks", [])}
        inbound = {s.spi for s in states if s.dst == own and s.src == "0.0.0.0"}
        if not held:
            problems.append(f"{gm.name}: holds no TEK")
        if held - inbound:
            problems.append(f"{gm.name}: no inbound group state for SPI(s) {sorted(map(hex, held - inbound))}")
        bound = [s for s in states if s.dst == own and s.src != "0.0.0.0"]
        if bound:
            problems.append(f"{gm.name}: inbound states bound to one peer: {[s.src for s in bound]}")
        if xfrm_policy_count(shell, gm.name) < 2:
            problems.append(f"{gm.name}: GRE is not required to be ESP-protected both ways (ip xfrm policy)")
    return problems
