"""What "the lab has converged" means, written once for ``up``, the tests and ``validate``.

Each expectation is JSON an FRR or GDOI show command must contain; the roles and addresses come from
the topology's labels (``dmvpn-lab.role``, ``dmvpn-lab.nbma``, ``dmvpn-lab.tunnel-ip``, ``dmvpn-lab.lan``).

A lab has no key server (plain), one, or several cooperating (COOP, docs/coop.md).  What "the key
server" says (the TEKs handed out, the members and their ACKs) is read from the one that makes the keys:
the only one, or the COOP primary (:func:`primary_key_server`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmvpn_lab.lab.converge import wait_for_json, wait_until
from dmvpn_lab.lab.node import NodeCommandError, NodeShell
from dmvpn_lab.lab.topology import Node

# What reading a daemon's show output raises when the daemon is stopped, starting or answers oddly.
UNANSWERED = (NodeCommandError, ValueError, KeyError, TypeError)

# --- expectations ------------------------------------------------------------------------------------


def gm_registered(status: Any) -> str | None:
    """A GM's ``gdoi show crypto gdoi --json`` once GROUPKEY-PULL completed and a TEK is installed."""
    if not isinstance(status, dict) or not status.get("registered"):
        return "not registered with the key server"
    if not status.get("teks"):
        return "registered but holds no TEK"
    return None


def coop_settled(coop_status: Any) -> str | None:
    """One key server's ``gdoi show crypto gdoi ks coop --json`` once its COOP role is settled: primary,
    or a secondary that holds its primary's current group state.  A key server without redundancy is
    settled as soon as it answers."""
    if not isinstance(coop_status, dict) or "coop" not in coop_status:
        return "no COOP status in the answer"
    coop = coop_status["coop"]
    if coop is None:
        return None
    role = coop.get("role")
    if role == "Primary":
        return None
    if role != "Secondary":
        return f"COOP role {role!r}, neither Primary nor Secondary yet"
    primary = coop.get("primary")
    peer = next((p for p in coop.get("peers", []) if p.get("address") == primary), None)
    if peer is None or not peer.get("in_sync"):
        held = peer.get("version") if peer else None
        return f"secondary behind its primary {primary} (holds {coop.get('version')}, primary {held})"
    return None


def coop_roles_problem(statuses: dict[str, Any]) -> str | None:
    """Cooperating key servers (node name -> its ``ks coop`` JSON): every one settled, exactly one primary.

    Two primaries is a split group (each makes its own keys); none means no one rekeys.
    """
    for name, status in statuses.items():
        problem = coop_settled(status)
        if problem:
            return f"{name}: {problem}"
    roles = {name: (status["coop"] or {}).get("role", "no redundancy") for name, status in statuses.items()}
    primaries = [name for name, role in roles.items() if role == "Primary"]
    if len(primaries) != 1:
        return f"{len(primaries)} primary key servers, expected one: {roles}"
    return None


def coop_problem(shell: NodeShell) -> str | None:
    """With several key servers: exactly one primary and every other one a secondary in sync with it.
    None for a lab with one key server or none."""
    servers = shell.topology.key_servers()
    if len(servers) < 2:
        return None
    statuses = {ks.name: shell.gdoi_json(ks.name, "show", "crypto", "gdoi", "ks", "coop") for ks in servers}
    return coop_roles_problem(statuses)


def primary_key_server(shell: NodeShell) -> Node | None:
    """The key server that makes the group's keys: the lab's only one, or the COOP primary among those
    that answer.  None for a lab without a key server; ValueError when several exist and none of them
    answers as primary (an election in progress, or all stopped)."""
    servers = shell.topology.key_servers()
    if len(servers) <= 1:
        return servers[0] if servers else None
    roles: dict[str, str] = {}
    for ks in servers:
        try:
            coop = shell.gdoi_json(ks.name, "show", "crypto", "gdoi", "ks", "coop")["coop"]
        except UNANSWERED as exc:
            roles[ks.name] = f"not answering ({str(exc).splitlines()[0][:80]})"
            continue
        role = coop["role"] if coop else "no redundancy"
        if role == "Primary":
            return ks
        roles[ks.name] = role
    raise ValueError(f"no primary key server among {', '.join(s.name for s in servers)}: {roles}")


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
    """Wait for the key servers' roles (with COOP), GDOI registration, NHRP registration at the hub and
    BGP routes everywhere."""
    outputs: dict[str, Any] = {}
    servers = shell.topology.key_servers()
    if len(servers) > 1:

        def coop_check() -> str | None:
            try:
                return coop_problem(shell)
            except UNANSWERED as exc:  # a key server still starting
                return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

        names = ", ".join(ks.name for ks in servers)
        wait_until(coop_check, what=f"{names}: gdoi show crypto gdoi ks coop --json", timeout=timeout, interval=0.5)
        primary = primary_key_server(shell)
        progress(f"  key servers: {primary.name if primary else '?'} primary, the others secondaries in sync")
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


def ks_teks(shell: NodeShell, ks: Node | None = None) -> list[dict[str, Any]]:
    """The TEKs a key server currently hands out (``gdoi show crypto gdoi --json``), all groups; by
    default the one that makes the keys (:func:`primary_key_server`)."""
    ks = ks or primary_key_server(shell)
    if ks is None:
        return []
    status = shell.gdoi_json(ks.name, "show", "crypto", "gdoi")
    return [t for g in status.get("groups", []) for t in g.get("teks", [])]


def group_spis(shell: NodeShell) -> set[int]:
    """Every TEK SPI the key server that makes the keys currently hands out."""
    return {int(t["spi"]) for t in ks_teks(shell)}


def ks_members(shell: NodeShell, ks: Node | None = None) -> dict[str, dict[str, Any]]:
    """A key server's members by address (``gdoi show crypto gdoi ks members --json``); by default the
    one that makes the keys, which also counts every member's rekey ACKs (docs/coop.md)."""
    ks = ks or primary_key_server(shell)
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
    """The KS must hold exactly one GDOI_IDLE phase-1 session per GM.

    With cooperating key servers a member's session is on the key server it registered with, and
    only there: no member may hold sessions on two of them, nor two on one.  A member may hold none: a
    key server that was stopped or restarted lost the sessions of the members that registered with it,
    and they carry on with the keys the group's rekeys bring them, never registering again until their
    TEK nears its end (as with IOS).  A stopped key server is skipped.
    """
    servers = shell.topology.key_servers()
    if not servers:
        return "no key server in this lab"
    want = sorted(gm.env["GDOI_LOCAL_ADDRESS"] for gm in shell.topology.group_members())
    if len(servers) == 1:
        sas = shell.gdoi_json(servers[0].name, "show", "crypto", "isakmp", "sa")["ipv4"]
        idle = sorted(sa["src"] for sa in sas if sa["state"] == "GDOI_IDLE")
        if idle != want:
            return f"GDOI_IDLE sessions from {idle}, expected one from each of {want}"
        return None
    idle_on: dict[str, list[str]] = {}
    for ks in servers:
        try:
            sas = shell.gdoi_json(ks.name, "show", "crypto", "isakmp", "sa")["ipv4"]
        except UNANSWERED:
            continue
        idle_on[ks.name] = sorted(sa["src"] for sa in sas if sa["state"] == "GDOI_IDLE")
    if not idle_on:
        return f"no key server answers ({', '.join(ks.name for ks in servers)})"
    every = [address for sessions in idle_on.values() for address in sessions]
    wrong = sorted({a for a in every if a not in want or every.count(a) > 1})
    if wrong:
        return f"GDOI_IDLE sessions {idle_on}: more than one per member, or not from a member: {wrong}"
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
    router and key server, never from this project's own show output:

    * an IKE daemon listening anywhere (no IKE SA can exist between routers without one);
    * an xfrm state whose SPI is not a group SPI the KS hands out, or an inbound state bound to one peer;
    * kernel IPsec state on a key server, which has no data plane;
    * a member missing what must be there: an inbound ``src 0.0.0.0`` state for every TEK it holds, and
      the GRE policies both ways (an empty state list proves nothing).
    """
    problems: list[str] = []
    group = group_spis(shell)
    if not group:
        problems.append("the key server hands out no TEK (is there one?)")
    key_servers = shell.topology.key_servers()
    states_of = {node.name: xfrm_states(shell, node.name) for node in [*shell.topology.routers(), *key_servers]}
    for name, states in states_of.items():
        problems += [f"{name}: an IKE daemon listens on {where}" for where in ike_listeners(shell, name)]
        foreign = [s for s in states if s.proto != "esp" or s.spi not in group]
        if foreign:
            shown = ", ".join(f"{s.src}->{s.dst} spi 0x{s.spi:x}" for s in foreign[:4])
            problems.append(f"{name}: {len(foreign)} xfrm states with no group SPI ({shown})")
    for ks in key_servers:
        if states_of[ks.name] or xfrm_policy_count(shell, ks.name):
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
