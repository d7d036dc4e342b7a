"""The per-peer IPsec baseline (topologies/dmvpn-ipsec): the same DMVPN, keyed by IKEv2 per peer.

The opposite of the GDOI lab's promise: after a spoke-to-spoke flow there IS an IKE SA between the two
spokes, negotiated on the wire (IKE_SA_INIT, IKE_AUTH) before their first direct ESP packet.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import wait_for_json
from dmvpn_lab.lab.strongswan import swanctl_sas
from labtests.lib import Lab, bring_up

pytestmark = [pytest.mark.lab, pytest.mark.encryption]

TOPOLOGY = "topologies/dmvpn-ipsec"


@pytest.fixture(scope="module")
def ipsec_lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    yield from bring_up(pytestconfig, TOPOLOGY)


def _ike_peers(lab: Lab, node: str) -> dict[str, str]:
    """Established IKE SAs of ``node``: connection name -> remote address."""
    return {sa["conn"]: sa.get("remote", "") for sa in swanctl_sas(lab.shell, node) if sa["state"] == "ESTABLISHED"}


def test_spokes_hold_only_their_hub_tunnel_before_traffic(ipsec_lab: Lab) -> None:
    hub_nbma = ipsec_lab.node_label("hub", "nbma")
    for spoke in ipsec_lab.topology.spokes():
        peers = _ike_peers(ipsec_lab, spoke.name)
        assert peers == {"hub": hub_nbma}, f"{spoke.name}: IKE SAs {peers}, expected only the one with the hub"


def test_no_phase2_check_fails_on_per_peer_ipsec(ipsec_lab: Lab, request: pytest.FixtureRequest) -> None:
    """Control of the GDOI suite's "no per-peer SA" check: on this lab it must find IKE daemons and
    per-peer SPIs in the kernels."""
    problems = checks.per_peer_sa_problems(ipsec_lab.shell)
    ipsec_lab.save(request.node.name, "problems.json", problems)
    for router in ipsec_lab.topology.routers():
        mine = [p for p in problems if p.startswith(f"{router.name}:")]
        assert any("IKE daemon" in p for p in mine), f"{router.name}: IKE daemon not noticed: {problems}"
        assert any("no group SPI" in p for p in mine), f"{router.name}: per-peer SPIs not noticed: {problems}"


def test_spoke_to_spoke_flow_negotiates_a_per_peer_ike_sa(ipsec_lab: Lab, request: pytest.FixtureRequest) -> None:
    lab = ipsec_lab
    spoke3, spoke1 = "spoke3", "spoke1"
    nbma3, nbma1 = lab.node_label(spoke3, "nbma"), lab.node_label(spoke1, "nbma")
    assert spoke1 not in _ike_peers(lab, spoke3), "spoke3 already keyed toward spoke1 before any traffic"
    dst = lab.address_of_host(lab.host_of(spoke1))
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    with capture(lab.shell, "internet", "any", pcap, bpf="inbound"):
        # The first packets wait in the kernel while IKEv2 negotiates; some may be lost past its queue.
        lab.ping(lab.host_of(spoke3), dst, count=30, interval=0.05, max_lost=5)
        peers = wait_for_json(
            lambda: _ike_peers(lab, spoke3),
            {spoke1: nbma1},
            what=f"{spoke3}: swanctl --list-sas (IKE SA with {spoke1})",
            timeout=30,
            interval=0.5,
        )
        out = lab.ping(lab.host_of(spoke3), dst, count=10, interval=0.05)
    lab.save(request.node.name, "spoke3-sas.json", swanctl_sas(lab.shell, spoke3))
    assert " 0% packet loss" in out, out
    assert _ike_peers(lab, spoke1).get(spoke3) == nbma3, "spoke1 does not list the IKE SA with spoke3"
    assert peers[spoke1] == nbma1

    packets = read_packets(pcap, "ip")
    between = [p for p in packets if {p.src, p.dst} == {nbma3, nbma1}]
    ike = [p for p in between if "isakmp" in p.protocols]
    esp = [p for p in between if "esp" in p.protocols]
    clear = [p for p in between if "gre" in p.protocols and "esp" not in p.protocols]
    assert len(ike) >= 4, f"expected IKE_SA_INIT and IKE_AUTH between the spokes on the wire ({pcap})"
    assert esp, f"no direct ESP between spoke3 and spoke1 ({pcap})"
    assert not clear, f"cleartext GRE between the spokes: {clear[:3]}"
    assert ike[0].number < esp[0].number, "ESP flowed between the spokes before IKE negotiated it"


def test_underlay_carries_esp_and_no_cleartext_gre(ipsec_lab: Lab, request: pytest.FixtureRequest) -> None:
    lab = ipsec_lab
    nbmas = {r.labels["dmvpn-lab.nbma"] for r in lab.topology.routers()}
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    with capture(lab.shell, "internet", "any", pcap, bpf="inbound"):
        lab.ping(lab.host_of("hub"), lab.address_of_host(lab.host_of("spoke2")), count=10, interval=0.05)
        # A new spoke pair: the flow waits for its IKE SA (as above).
        lab.ping(lab.host_of("spoke2"), lab.address_of_host(lab.host_of("spoke3")), count=20, interval=0.05, max_lost=5)
    packets = [p for p in read_packets(pcap, "ip") if p.src in nbmas and p.dst in nbmas]
    esp = [p for p in packets if "esp" in p.protocols]
    clear = [p for p in packets if "esp" not in p.protocols and "isakmp" not in p.protocols]
    assert len(esp) >= 30, f"expected the pings as ESP on the underlay, saw {len(esp)} ({pcap})"
    assert not clear, f"cleartext between routers: {[(p.src, p.dst, p.protocols) for p in clear[:5]]}"
    assert len({p.esp_spi for p in esp}) > 2, "one SPI pair per peer expected, not a group SA"
