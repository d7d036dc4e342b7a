"""GDOI on the running lab: one group, one TEK, sessions only with the KS, no per-peer SAs anywhere."""

from __future__ import annotations

import sys

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.converge import wait_for_json

pytestmark = [pytest.mark.lab, pytest.mark.gdoi]


def test_every_gm_holds_the_same_tek_as_the_ks(lab):
    group = checks.group_spis(lab.shell)
    assert group, "the KS hands out no TEK"
    for gm in lab.topology.group_members():
        status = lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi")
        assert checks.gm_registered(status) is None, f"{gm.name}: {checks.gm_registered(status)}"
        held = {int(t["spi"]) for t in status["teks"]}
        assert held <= group and held, f"{gm.name} holds {held}, the KS hands out {group}"
        assert status["acl"] and status["acl"][0]["protocol"] == 47, f"{gm.name}: ACL {status['acl']}"


def test_ks_lists_one_gdoi_idle_session_per_gm_and_no_ipsec_sa(lab, request):
    ks = lab.topology.key_server()
    lab.save(
        request.node.name, "ks-show-crypto-isakmp-sa.txt", lab.shell.gdoi(ks.name, "show", "crypto", "isakmp", "sa")
    )
    assert checks.ks_sessions_problem(lab.shell) is None, checks.ks_sessions_problem(lab.shell)
    # "No SAs found" on the KS, read from its kernel rather than from the daemon's show output.
    assert checks.xfrm_states(lab.shell, ks.name) == [] and checks.xfrm_policy_count(lab.shell, ks.name) == 0


def test_no_per_peer_sa_in_any_kernel_and_no_ike_daemon(lab, request):
    problems = checks.per_peer_sa_problems(lab.shell)
    lab.save(request.node.name, "problems.json", problems)
    assert problems == [], "\n".join(problems)


def test_no_phase2_check_sees_a_planted_per_peer_sa_and_ike_daemon(lab, request):
    """Control: the check above must name a per-peer ESP state and an IKE socket planted in the lab."""
    spoke1, spoke2 = lab.topology.nodes["spoke1"], lab.topology.nodes["spoke2"]
    nbma1, nbma2 = spoke1.labels["dmvpn-lab.nbma"], spoke2.labels["dmvpn-lab.nbma"]
    planted = ["src", nbma1, "dst", nbma2, "proto", "esp", "spi", "0x00001234"]
    keys = ["enc", "cbc(aes)", "0x" + "11" * 16, "auth", "hmac(sha1)", "0x" + "22" * 20]
    lab.shell.run(spoke1.name, ["ip", "xfrm", "state", "add", *planted, "mode", "transport", *keys])
    ike_socket = "import socket, time; s = socket.socket(2, 2); s.bind(('', 500)); time.sleep(60)"
    listener = lab.shell.spawn(spoke2.name, [sys.executable, "-c", ike_socket], network_only=True)
    try:
        problems = wait_for_json(
            lambda: checks.per_peer_sa_problems(lab.shell),
            lambda found: None if any("IKE daemon" in p for p in found) else "the planted socket is not up yet",
            what="per-peer SA check with a planted state and IKE socket",
            timeout=30,
            interval=0.5,
        )
        lab.save(request.node.name, "problems.json", problems)
        assert any(p.startswith("spoke1:") and "0x1234" in p for p in problems), problems
        assert any(p.startswith("spoke2:") and ":500" in p for p in problems), problems
    finally:
        listener.kill()
        listener.wait()
        lab.shell.run(spoke1.name, ["ip", "xfrm", "state", "delete", *planted[:-2], "spi", "0x00001234"], check=False)
    assert checks.per_peer_sa_problems(lab.shell) == []


def test_gm_sessions_are_only_the_ks_and_rekey_sas(lab, request):
    ks_address = lab.topology.key_server().env["GDOI_LOCAL_ADDRESS"]
    for gm in lab.topology.group_members():
        sas = lab.shell.gdoi_json(gm.name, "show", "crypto", "isakmp", "sa")["ipv4"]
        lab.save(request.node.name, f"{gm.name}-isakmp.json", sas)
        own = gm.env["GDOI_LOCAL_ADDRESS"]
        idle = [sa for sa in sas if sa["state"] == "GDOI_IDLE"]
        assert [(sa["dst"], sa["src"]) for sa in idle] == [(ks_address, own)], f"{gm.name}: {sas}"
        others = [sa for sa in sas if sa["state"] != "GDOI_IDLE"]
        assert all(sa["state"] == "GDOI_REKEY" and sa["src"] == ks_address for sa in others), f"{gm.name}: {sas}"
        # The group SA's peer is anyone (IOS: current_peer 0.0.0.0): the kernel's inbound state has no source.
        own_nbma = gm.labels["dmvpn-lab.nbma"]
        inbound = [s for s in checks.xfrm_states(lab.shell, gm.name) if s.dst == own_nbma]
        assert inbound and {s.src for s in inbound} == {"0.0.0.0"}, f"{gm.name}: inbound states {inbound}"


def test_xfrm_holds_only_group_states_in_the_group_shape(lab, request):
    """One inbound state per TEK (src 0.0.0.0, dst own NBMA); outbound only toward NHRP peers."""
    group = checks.group_spis(lab.shell)
    nbma_of = {r.labels["dmvpn-lab.nbma"]: r.name for r in lab.topology.routers()}
    for router in lab.topology.routers():
        own = router.labels["dmvpn-lab.nbma"]
        states = checks.xfrm_states(lab.shell, router.name)
        lab.save(request.node.name, f"{router.name}-xfrm-state.txt", "\n".join(map(str, states)))
        held = {int(t["spi"]) for t in lab.shell.gdoi_json(router.name, "show", "crypto", "gdoi")["teks"]}
        assert held and held <= {s.spi for s in states if s.dst == own}, f"{router.name}: {held} not all inbound"
        assert all(s.proto == "esp" and s.spi in group for s in states), f"{router.name}: {states}"
        inbound = [s for s in states if s.dst == own]
        assert all(s.src == "0.0.0.0" for s in inbound), f"{router.name}: per-peer inbound state {inbound}"
        assert len({s.spi for s in inbound}) == len(inbound), f"{router.name}: duplicate inbound {inbound}"
        cache = lab.shell.vtysh_json(router.name, "show ip nhrp cache json")
        peers = {e["nbma"] for e in cache.get("table", []) if e.get("type") != "local"}
        outbound = {s.dst for s in states if s.dst != own}
        assert outbound <= peers, (
            f"{router.name}: outbound states toward {sorted(outbound - peers)} "
            f"({[nbma_of.get(a) for a in outbound - peers]}), which are not its NHRP peers {sorted(peers)}"
        )
        assert checks.xfrm_policy_count(lab.shell, router.name) >= 2, f"{router.name}: no GRE policies"
