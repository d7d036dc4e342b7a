"""Encryption on the wire: between routers the underlay carries ESP with the group SPI and nothing else.

The capture runs on the underlay router (every router-to-router packet crosses it) while the LAN hosts
ping and run a TCP transfer hub-to-spoke and spoke-to-spoke, BGP sessions are reset (updates flow) and
NHRP resolves a fresh shortcut.  The same check on the plain variant must find cleartext GRE: that is
the proof the check can fail.
"""

from __future__ import annotations

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import Capture, capture
from dmvpn_lab.lab.converge import wait_for_json
from labtests.wire import inject, judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.encryption]


def _traffic(lab, pcap) -> Capture:
    """Drive every kind of traffic the seed says is protected, while capturing on the underlay."""
    spokes = checks.spokes(lab.shell)
    hub = checks.hub(lab.shell)
    with capture(lab.shell, "internet", "any", pcap) as cap:
        for spoke in spokes:  # fresh resolution: forget shortcuts first
            lab.shell.vtysh(spoke.name, "clear ip nhrp shortcut")
        lab.shell.vtysh(hub.name, "clear bgp *")  # sessions re-open: OPEN/UPDATE cross the tunnel
        for router in checks.routers(lab.shell):
            wait_for_json(
                lambda r=router: lab.shell.vtysh_json(r.name, "show ip route bgp json"),
                checks.routes_expected(lab.shell, router),
                what=f"{router.name}: routes after clear",
                timeout=90,
            )
        lab.ping(lab.host_of(hub.name), lab.address_of_host(lab.host_of(spokes[0].name)), count=5)
        lab.ping(lab.host_of(spokes[-1].name), lab.address_of_host(lab.host_of(spokes[0].name)), count=10)
        _tcp_transfer(lab, lab.host_of(hub.name), lab.host_of(spokes[1].name))
        _tcp_transfer(lab, lab.host_of(spokes[-1].name), lab.host_of(spokes[0].name))
    return cap


def _tcp_transfer(lab, client: str, server: str) -> None:
    address = lab.address_of_host(server)
    daemon = lab.shell.spawn(server, ["iperf3", "-s", "-1", "-p", "5201"])
    try:
        wait_for_json(
            lambda: lab.shell.run(server, ["ss", "-ltnH", "sport", "= :5201"]).stdout.strip() != "",
            True,
            what=f"{server}: iperf3 listening",
            timeout=20,
            interval=0.2,
        )
        out = lab.shell.run(client, ["iperf3", "-c", address, "-p", "5201", "-n", "2M", "-J"], timeout=120).stdout
        assert '"bytes"' in out, out[-500:]
    finally:
        daemon.kill()
        daemon.wait()


def test_underlay_carries_only_group_esp(lab, request):
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    verdict = judge_capture(_traffic(lab, pcap), lab_policy(lab.shell))
    lab.save(request.node.name, "verdict.txt", verdict.summary() + "\n" + "\n".join(verdict.problems()))
    assert verdict.esp > 50, f"expected plenty of ESP on the underlay, saw {verdict.esp} ({pcap})"
    assert verdict.problems() == [], f"{pcap}: " + "\n".join(verdict.problems())


def test_positive_control_plain_dmvpn_fails_the_same_check(plain_lab, request):
    pcap = plain_lab.artifact(request.node.name, "underlay.pcap")
    verdict = judge_capture(_traffic(plain_lab, pcap), lab_policy(plain_lab.shell))
    lab_problems = verdict.problems()
    plain_lab.save(request.node.name, "verdict.txt", "\n".join(lab_problems))
    assert verdict.esp == 0
    assert any("cleartext" in p for p in lab_problems), "the wire check did not notice cleartext GRE"
    kinds = {"/".join(p.protocols[2:4]) for p in verdict.cleartext}
    assert any(k.startswith("gre") for k in kinds), kinds


def test_verdict_flags_every_kind_of_leak_injected_on_the_underlay(lab, request):
    """Control of the wire verdict on the GDOI lab itself: each fault below, sent from the underlay router
    among genuine traffic, must be named by the verdict (cleartext GRE between the GMs' loopbacks, a LAN
    packet outside the tunnel, IKE between two spokes' loopbacks, an IPv6 frame)."""
    spoke1, spoke2, spoke3 = (lab.topology.nodes[n] for n in ("spoke1", "spoke2", "spoke3"))
    lo1, lo2, lo3 = (s.env["GDOI_LOCAL_ADDRESS"] for s in (spoke1, spoke2, spoke3))
    lan2, lan3 = (lab.address_of_host(lab.host_of(s.name)) for s in (spoke1, spoke2))
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    with capture(lab.shell, "internet", "any", pcap) as cap:
        lab.ping(lab.host_of(spoke3.name), lan2, count=5)
        inject(
            lab.shell,
            "internet",
            f"send(IP(src='{lo1}', dst='{lo2}')/GRE(key_present=1, key=123)/IP(src='{lan2}', dst='{lan3}')/ICMP())",
            f"send(IP(src='{lan2}', dst='{lan3}')/ICMP())",
            f"send(IP(src='{lo2}', dst='{lo3}')/UDP(sport=500, dport=500)/Raw(bytes(28)))",
            "sendp(Ether(dst='ff:ff:ff:ff:ff:ff')/IPv6(dst='ff02::1')/ICMPv6EchoRequest(), iface='eth1')",
        )
    verdict = judge_capture(cap, lab_policy(lab.shell))
    lab.save(request.node.name, "verdict.txt", verdict.summary() + "\n" + "\n".join(verdict.problems()))
    clear = {(p.src, p.dst, "gre" in p.protocols) for p in verdict.cleartext}
    assert (lo1, lo2, True) in clear, f"cleartext GRE between loopbacks not flagged: {verdict.problems()}"
    assert (lan2, lan3, False) in clear, f"LAN packet on the underlay not flagged: {verdict.problems()}"
    assert any((p.src, p.dst) == (lo2, lo3) for p in verdict.ike), f"IKE not flagged: {verdict.problems()}"
    assert any("ipv6" in p.protocols for p in verdict.not_ipv4), f"IPv6 not flagged: {verdict.problems()}"
    assert verdict.esp > 0, "the genuine traffic around the faults was not ESP"
