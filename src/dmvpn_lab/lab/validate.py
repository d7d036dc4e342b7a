"""``dmvpn-lab validate``: grade a running lab with the project's core checks.

Output is one fixed-width line per check, ``[PASS]`` or ``[FAIL]`` with a hint on failure, so a trainer
can grade a trainee's lab.  Exit codes: 0 every check passed, 1 at least one failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.converge import json_mismatch
from dmvpn_lab.lab.node import NodeCommandError, NodeShell


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    hint: str

    def line(self) -> str:
        tag = "[PASS]" if self.ok else "[FAIL]"
        text = f"{tag:<7} {self.name:<44} {self.detail}"
        if not self.ok:
            text += f"\n{'':<7} hint: {self.hint}"
        return text


@dataclass(frozen=True)
class Check:
    name: str
    problem: Callable[[NodeShell], str | None]  # None when the lab passes
    hint: str
    needs_gdoi: bool = False  # applies only to a lab with a key server (not the plain variant)
    needs_coop: bool = False  # applies only to a lab with cooperating key servers


def _gms_registered(shell: NodeShell) -> str | None:
    spis: dict[str, list[int]] = {}
    for gm in shell.topology.group_members():
        status = shell.gdoi_json(gm.name, "show", "crypto", "gdoi")
        problem = checks.gm_registered(status)
        if problem:
            return f"{gm.name}: {problem}"
        spis[gm.name] = sorted(int(t["spi"]) for t in status["teks"])
    if len({tuple(v) for v in spis.values()}) > 1:
        return f"GMs hold different TEK SPIs: {spis}"
    return None


def _no_per_peer_sa(shell: NodeShell) -> str | None:
    problems = checks.per_peer_sa_problems(shell)
    return "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "") or None


def _hub_nhrp(shell: NodeShell) -> str | None:
    hub = shell.topology.hub()
    return json_mismatch(checks.hub_nhrp_expected(shell), shell.vtysh_json(hub.name, "show ip nhrp cache json"))


def _routes(shell: NodeShell) -> str | None:
    for router in shell.topology.routers():
        problem = json_mismatch(
            checks.routes_expected(shell, router), shell.vtysh_json(router.name, "show ip route bgp json")
        )
        if problem:
            return f"{router.name}: {problem}"
    return None


def _spoke_to_spoke(shell: NodeShell) -> str | None:
    spokes = shell.topology.spokes()
    if len(spokes) < 2:
        return None
    src_host, dst_host = spokes[-1].labels["dmvpn-lab.host"], spokes[0].labels["dmvpn-lab.host"]
    dst = shell.topology.nodes[dst_host].labels["dmvpn-lab.address"]
    result = shell.run(src_host, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", dst], check=False)
    return None if result.returncode == 0 else f"{src_host} -> {dst}: {result.stdout.strip().splitlines()[-1:]}"


CHECKS: list[Check] = [
    Check(
        "COOP: one primary KS, secondaries in sync",
        checks.coop_problem,
        "`dmvpn-lab show KS crypto gdoi ks coop` on each key server: check `redundancy`, `peer address ipv4` "
        "and the pre-shared key of the peer on both",
        needs_gdoi=True,
        needs_coop=True,
    ),
    Check(
        "GDOI: every GM registered, same TEK",
        _gms_registered,
        "see `dmvpn-lab show NODE crypto gdoi` and the KS log; check the pre-shared key and the KS address",
        needs_gdoi=True,
    ),
    Check(
        "GDOI: one KS session per GM",
        checks.ks_sessions_problem,
        "`dmvpn-lab show ks crypto isakmp sa` should list one GDOI_IDLE line per GM (with COOP: at most one, "
        "on the key server the GM registered with)",
        needs_gdoi=True,
    ),
    Check(
        "xfrm: group SAs only, no phase 2, no IKE",
        _no_per_peer_sa,
        "`dmvpn-lab exec NODE -- ip xfrm state` / `ip xfrm policy` / `ss -lun`: every SPI must be the "
        "group's, every member needs its inbound group state and GRE policies, and no IKE daemon may run",
        needs_gdoi=True,
    ),
    Check(
        "NHRP: spokes registered at the hub",
        _hub_nhrp,
        "`dmvpn-lab vtysh hub -c 'show ip nhrp cache'`; check network-id, nhs and GDOI on the spoke",
    ),
    Check("BGP: every LAN routed everywhere", _routes, "`dmvpn-lab vtysh NODE -c 'show bgp summary'`"),
    Check(
        "data: spoke LAN to spoke LAN ping",
        _spoke_to_spoke,
        "check the hub's NHRP redirect (NFLOG rule) and the spokes' `ip nhrp shortcut`",
    ),
]


def run_checks(shell: NodeShell) -> list[Result]:
    key_servers = len(shell.topology.key_servers())
    results = []
    for check in CHECKS:
        if (check.needs_gdoi and not key_servers) or (check.needs_coop and key_servers < 2):
            continue
        try:
            problem = check.problem(shell)
        except (NodeCommandError, ValueError, KeyError) as exc:
            problem = str(exc).splitlines()[0]
        results.append(Result(check.name, problem is None, problem or "ok", check.hint))
    return results


def main(shell: NodeShell, *, as_json: bool = False) -> int:
    results = run_checks(shell)
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        for result in results:
            print(result.line())
        passed = sum(r.ok for r in results)
        print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if all(r.ok for r in results) else 1
