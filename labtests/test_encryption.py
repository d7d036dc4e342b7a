"""Encryption on the wire: between routers the underlay carries ESP with the group SPI and nothing else.

The capture runs on the underlay router (every router-to-router packet crosses it) while the LAN hosts
ping and run a TCP transfer hub-to-spoke and spoke-to-spoke, BGP sessions are reset (updates flow) and
NHRP resolves a fresh shortcut.  Controls: faults planted on the wire here must each be named, and the
same check on the plain variant must find cleartext GRE (test_encryption_control.py).
"""

from __future__ import annotations

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture
from labtests.lib import NEW_FLOW_LOSS, drive_protected_traffic
from labtests.wire import inject, judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.encryption]


def test_underlay_carries_only_group_esp(lab, request):
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    verdict = judge_capture(drive_protected_traffic(lab, pcap), lab_policy(lab.shell))
    lab.save(request.node.name, "verdict.txt", verdict.summary() + "\n" + "\n".join(verdict.problems()))
    assert verdict.esp > 50, f"expected plenty of ESP on the underlay, saw {verdict.esp} ({pcap})"
    assert verdict.problems() == [], f"{pcap}: " + "\n".join(verdict.problems())


def test_verdict_flags_every_kind_of_leak_injected_on_the_underlay(lab, request):
    """Control of the wire verdict on the GDOI lab itself: each fault below, sent from the underlay router
    among genuine traffic, must be named by the verdict (cleartext GRE between the GMs' loopbacks, a LAN
    packet outside the tunnel, IKE between two spokes' loopbacks, an IPv6 frame)."""
    spoke1, spoke2, spoke3 = (lab.topology.nodes[n] for n in ("spoke1", "spoke2", "spoke3"))
    lo1, lo2, lo3 = (s.env["GDOI_LOCAL_ADDRESS"] for s in (spoke1, spoke2, spoke3))
    lan2, lan3 = (lab.address_of_host(lab.host_of(s.name)) for s in (spoke1, spoke2))
    port2 = checks.underlay_ports(lab.shell)[spoke2.name]
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    with capture(lab.shell, "internet", "any", pcap) as cap:
        lab.ping(lab.host_of(spoke3.name), lan2, count=5, max_lost=NEW_FLOW_LOSS)
        inject(
            lab.shell,
            "internet",
            f"send(IP(src='{lo1}', dst='{lo2}')/GRE(key_present=1, key=123)/IP(src='{lan2}', dst='{lan3}')/ICMP())",
            # The underlay has no route to the LANs: put the frame on the port toward spoke2 directly.
            f"sendp(Ether(dst='ff:ff:ff:ff:ff:ff')/IP(src='{lan2}', dst='{lan3}')/ICMP(), iface='{port2}')",
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
