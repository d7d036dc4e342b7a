"""Encryption on the wire: between routers the underlay carries ESP with the group SPI and nothing else.

The capture runs on the underlay router (every router-to-router packet crosses it) while the LAN hosts
ping and run a TCP transfer hub-to-spoke and spoke-to-spoke, BGP sessions are reset (updates flow) and
NHRP resolves a fresh shortcut.  The same check on the plain variant must find cleartext GRE: that is
the proof the check can fail.
"""

from __future__ import annotations

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import wait_for_json
from labtests.wire import judge

pytestmark = [pytest.mark.lab, pytest.mark.encryption]


def _traffic(lab, pcap):
    """Drive every kind of traffic the seed says is protected, while capturing on the underlay."""
    spokes = checks.spokes(lab.shell)
    hub = checks.hub(lab.shell)
    with capture(lab.shell, "internet", "any", pcap):
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


def _verdict(lab, pcap):
    packets = read_packets(pcap, display_filter="ip")
    nbmas = {r.labels["dmvpn-lab.nbma"] for r in checks.routers(lab.shell)}
    ks = checks.key_server(lab.shell)
    gdoi_addresses = {ks.env["GDOI_LOCAL_ADDRESS"]} if ks else set()
    spis = checks.group_spis(lab.shell) if ks else set()
    return judge(packets, nbmas, gdoi_addresses, spis)


def test_underlay_carries_only_group_esp(lab, request):
    pcap = lab.artifact(request.node.name, "underlay.pcap")
    _traffic(lab, pcap)
    verdict = _verdict(lab, pcap)
    lab.save(
        request.node.name, "verdict.txt", f"esp={verdict.esp} gdoi={verdict.gdoi}\n" + "\n".join(verdict.problems())
    )
    assert verdict.esp > 50, f"expected plenty of ESP on the underlay, saw {verdict.esp} ({pcap})"
    assert verdict.problems() == [], f"{pcap}: " + "\n".join(verdict.problems())


def test_positive_control_plain_dmvpn_fails_the_same_check(plain_lab, request):
    pcap = plain_lab.artifact(request.node.name, "underlay.pcap")
    _traffic(plain_lab, pcap)
    verdict = _verdict(plain_lab, pcap)
    lab_problems = verdict.problems()
    plain_lab.save(request.node.name, "verdict.txt", "\n".join(lab_problems))
    assert verdict.esp == 0
    assert any("cleartext" in p for p in lab_problems), "the wire check did not notice cleartext GRE"
    kinds = {"/".join(p.protocols[2:4]) for p in verdict.cleartext}
    assert any(k.startswith("gre") for k in kinds), kinds
