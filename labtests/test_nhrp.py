"""NHRP as the seed shows it: registration at the hub, then resolution and a direct, encrypted shortcut."""

from __future__ import annotations

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import json_mismatch, wait_for_json
from labtests.lib import NEW_FLOW_LOSS
from labtests.wire import judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.nhrp]


def _by_name(lab, name):
    return lab.topology.nodes[name]


def test_hub_holds_every_spoke_as_dynamic_entry(lab, request):
    hub = lab.topology.hub()
    cache = lab.shell.vtysh_json(hub.name, "show ip nhrp cache json")
    lab.save(request.node.name, "hub-nhrp-cache.json", cache)
    lab.save(request.node.name, "hub-show-ip-nhrp.txt", lab.shell.vtysh(hub.name, "show ip nhrp cache"))
    assert json_mismatch(checks.hub_nhrp_expected(lab.shell), cache) is None, cache


def test_spoke3_to_spoke1_resolves_and_goes_direct_encrypted(lab, request):
    spoke3, spoke1, hub = _by_name(lab, "spoke3"), _by_name(lab, "spoke1"), lab.topology.hub()
    spoke1_tunnel, spoke1_nbma = spoke1.labels["dmvpn-lab.tunnel-ip"], spoke1.labels["dmvpn-lab.nbma"]
    spoke3_nbma, hub_nbma = spoke3.labels["dmvpn-lab.nbma"], hub.labels["dmvpn-lab.nbma"]
    for spoke in (spoke3, spoke1):
        lab.shell.vtysh(spoke.name, "clear ip nhrp shortcut")
        lab.shell.vtysh(spoke.name, "clear ip nhrp cache")
    # Before traffic: spoke3 knows only the hub (its NHS), as the seed's "static mapping" output shows.
    before = wait_for_json(
        lambda: lab.shell.vtysh_json(spoke3.name, "show ip nhrp cache json"),
        lambda c: None if {e["type"] for e in c.get("table", [])} - {"local"} == {"nhs"} else f"entries {c}",
        what=f"{spoke3.name}: show ip nhrp cache json (only the hub before traffic)",
        timeout=60,
    )
    lab.save(request.node.name, "spoke3-nhrp-before.json", before)

    dst = lab.address_of_host(lab.host_of(spoke1.name))
    pcap = lab.artifact(request.node.name, "spoke3-underlay.pcap")
    # Capture on the underlay port facing spoke3: every packet spoke3 sends, via the hub or direct.
    port = checks.underlay_ports(lab.shell)[spoke3.name]
    with capture(lab.shell, "internet", port, pcap) as cap:
        lab.ping(lab.host_of(spoke3.name), dst, count=10, interval=0.2, max_lost=NEW_FLOW_LOSS)
        cache = wait_for_json(
            lambda: lab.shell.vtysh_json(spoke3.name, "show ip nhrp cache json"),
            {"table": [{"protocol": spoke1_tunnel, "nbma": spoke1_nbma}]},
            what=f"{spoke3.name}: show ip nhrp cache json (spoke1 resolved)",
            timeout=60,
        )
        route = wait_for_json(
            lambda: lab.shell.vtysh_json(spoke3.name, "show ip route nhrp json"),
            {
                spoke1.labels["dmvpn-lab.lan"]: [
                    {"protocol": "nhrp", "selected": True, "nexthops": [{"ip": spoke1_tunnel}]}
                ]
            },
            what=f"{spoke3.name}: show ip route nhrp json (shortcut to spoke1's LAN)",
            timeout=60,
        )
        lab.ping(lab.host_of(spoke3.name), dst, count=20, interval=0.05)
    lab.save(request.node.name, "spoke3-nhrp-after.json", cache)
    lab.save(request.node.name, "spoke3-route-nhrp.json", route)

    traceroute = ["traceroute", "-n", "-q", "1", "-w", "2", dst]  # the harness's, in the host's namespace
    trace = lab.shell.run(lab.host_of(spoke3.name), traceroute, network_only=True).stdout
    lab.save(request.node.name, "traceroute.txt", trace)
    hops = [line.split()[1] for line in trace.splitlines()[1:] if len(line.split()) > 1]
    assert hops == [f"{spoke3.labels['dmvpn-lab.lan'].rsplit('.', 1)[0]}.1", spoke1_tunnel, dst], trace

    packets = read_packets(pcap, "ip")
    from_spoke3 = [p for p in packets if p.src == spoke3_nbma]
    direct = [p for p in from_spoke3 if p.dst == spoke1_nbma]
    assert direct, f"no packet went from spoke3 straight to spoke1 ({pcap})"
    assert all("esp" in p.protocols for p in direct), f"direct packets not ESP: {direct[:3]}"
    assert "esp" in direct[0].protocols, "the first direct packet was not encrypted"
    # Every frame on spoke3's port: group ESP, GDOI with the KS, ARP; no IKE between the spokes, nothing clear.
    verdict = judge_capture(cap, lab_policy(lab.shell))
    assert verdict.problems() == [], f"{pcap}: " + "\n".join(verdict.problems())
    # Once the first packet went direct, the flow stays direct: toward the hub only the odd control
    # packet (BGP keepalive, NHRP) may still go, against 20+ direct pings.
    after_shortcut = from_spoke3[from_spoke3.index(direct[0]) :]
    via_hub_late = [p for p in after_shortcut if p.dst == hub_nbma]
    assert len(direct) >= 20, f"only {len(direct)} packets went direct"
    assert len(via_hub_late) <= 3, f"after the shortcut the flow still crosses the hub: {via_hub_late}"
