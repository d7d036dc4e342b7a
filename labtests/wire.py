"""The wire verdict: every frame the underlay carries is judged, and each one must be one of

* ESP whose SPI is a group SPI the key server handed out;
* GDOI (ISAKMP on UDP 848) between a key server and a group member's GDOI address;
* COOP (this project's ISAKMP-framed messages on UDP 848, docs/coop.md) between two key servers;
* a frame on the explicit allow list below, each entry with the reason the lab needs it.

Everything else is a finding: cleartext IP between any two addresses (routers' NBMA addresses, the GMs'
loopbacks, a LAN address leaking onto the underlay), IKE or ISAKMP between any two parties but the KS
and a GM or two KSs, ESP with a foreign SPI, IPv6 or any other frame.  A capture that dropped packets is a finding
too: a verdict over what happened to be kept proves nothing.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from dmvpn_lab.gdoi.model import GDOI_PORT
from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import Capture, PacketSummary, read_packets
from dmvpn_lab.lab.node import NodeShell

IKE_PORTS = frozenset({500, 4500})

# Frames the underlay may carry besides ESP and GDOI, and why the lab needs each.
ALLOWED = {
    "arp": "IPv4 neighbour resolution on the underlay links; carries no lab data",
}


@dataclass(frozen=True)
class WirePolicy:
    """Who may talk on the underlay: the group's SPIs, the KSs' and the GMs' GDOI addresses."""

    group_spis: frozenset[int]
    ks_addresses: frozenset[str]
    gm_addresses: frozenset[str]


@dataclass
class WireVerdict:
    esp: int = 0
    gdoi: int = 0
    allowed: dict[str, int] = field(default_factory=dict)
    cleartext: list[PacketSummary] = field(default_factory=list)
    foreign_spi: list[PacketSummary] = field(default_factory=list)
    ike: list[PacketSummary] = field(default_factory=list)
    not_ipv4: list[PacketSummary] = field(default_factory=list)
    dropped: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.cleartext:
            out.append(f"{len(self.cleartext)} cleartext IP packets on the underlay, e.g. {_examples(self.cleartext)}")
        if self.foreign_spi:
            out.append(
                f"{len(self.foreign_spi)} ESP packets with a non-group SPI, e.g. "
                + "; ".join(f"#{p.number} {p.src}->{p.dst} spi 0x{p.esp_spi or 0:x}" for p in self.foreign_spi[:5])
            )
        if self.ike:
            out.append(
                f"{len(self.ike)} IKE/ISAKMP packets not between the KS and a GM (per-peer negotiation), "
                f"e.g. {_examples(self.ike)}"
            )
        if self.not_ipv4:
            out.append(f"{len(self.not_ipv4)} frames neither IPv4 nor allowed, e.g. {_examples(self.not_ipv4)}")
        if self.dropped:
            out.append(f"the capture dropped {self.dropped} packets: the verdict cannot vouch for them")
        return out

    def summary(self) -> str:
        allowed = " ".join(f"{k}={n}" for k, n in sorted(self.allowed.items()))
        return f"esp={self.esp} gdoi={self.gdoi} allowed[{allowed}] dropped={self.dropped}"


def _examples(packets: list[PacketSummary]) -> str:
    return "; ".join(f"#{p.number} {p.src}->{p.dst} {'/'.join(p.protocols[1:])}" for p in packets[:5])


def _is_gdoi_between_ks_and_gm(p: PacketSummary, policy: WirePolicy) -> bool:
    """GDOI between a KS and a member, or COOP between two cooperating KSs (both on the GDOI port)."""
    pair = {p.src, p.dst}
    between_key_servers = len(pair) == 2 and pair <= policy.ks_addresses
    # A key server whose daemon is down answers the other's COOP messages with ICMP port unreachable,
    # quoting them (decoded as ISAKMP, the quoted UDP not shown as a layer of its own).
    if between_key_servers and "icmp" in p.protocols and "isakmp" in p.protocols:
        return True
    if p.ports is None or GDOI_PORT not in p.ports:
        return False
    if between_key_servers:
        return True
    # A multicast rekey (RFC 6407 section 4) goes from the KS to a group address.
    return bool(pair & policy.ks_addresses) and bool(pair & policy.gm_addresses or _is_multicast(p.dst))


def _is_multicast(address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address).is_multicast
    except ValueError:
        return False


def judge(packets: Iterable[PacketSummary], policy: WirePolicy, *, dropped: int = 0) -> WireVerdict:
    """Judge every frame of an underlay capture read with ``read_packets(pcap, "")``."""
    verdict = WireVerdict(dropped=dropped)
    for p in packets:
        if "ip" not in p.protocols:
            kind = next((k for k in ALLOWED if k in p.protocols), None)
            if kind is None:
                verdict.not_ipv4.append(p)
            else:
                verdict.allowed[kind] = verdict.allowed.get(kind, 0) + 1
        elif "esp" in p.protocols:
            verdict.esp += 1
            if p.esp_spi not in policy.group_spis:
                verdict.foreign_spi.append(p)
        elif _is_gdoi_between_ks_and_gm(p, policy):
            verdict.gdoi += 1
        elif "isakmp" in p.protocols or (p.ports is not None and IKE_PORTS & set(p.ports)):
            verdict.ike.append(p)
        else:
            verdict.cleartext.append(p)
    return verdict


def lab_policy(shell: NodeShell, *, group_spis: Iterable[int] | None = None) -> WirePolicy:
    """The lab's policy: the group's current SPIs (or the ones given), every KS's address (cooperating
    key servers talk to each other and any of them may register or rekey a member) and the GMs'."""
    return WirePolicy(
        group_spis=frozenset(checks.group_spis(shell) if group_spis is None else group_spis),
        ks_addresses=frozenset(ks.env["GDOI_LOCAL_ADDRESS"] for ks in shell.topology.key_servers()),
        gm_addresses=frozenset(gm.env["GDOI_LOCAL_ADDRESS"] for gm in shell.topology.group_members()),
    )


def judge_capture(cap: Capture, policy: WirePolicy) -> WireVerdict:
    """Judge every frame of a finished capture (taken without a capture filter), drops included."""
    _captured, dropped = cap.counts()
    return judge(read_packets(cap.pcap, ""), policy, dropped=dropped)


def inject(shell: NodeShell, node: str, *sends: str) -> None:
    """Send hand-made frames from ``node`` with scapy (each argument one ``send(...)``/``sendp(...)``
    call): the faults the controls plant among genuine traffic."""
    script = "from scapy.all import *\nconf.verb = 0\n" + "\n".join(sends) + "\n"
    shell.run(node, [sys.executable, "-c", script], network_only=True)


def assert_one_switch(spis: list[int | None], old: set[int], new: int, pcap: object) -> None:
    """``spis`` is a run of old SPIs, then a run of the new one: the flow moved once and never back."""
    assert spis, f"no ESP of the flow on the wire ({pcap})"
    switch = next((i for i, spi in enumerate(spis) if spi == new), None)
    assert switch is not None, f"new SPI 0x{new:x} never carried the flow ({pcap})"
    assert switch >= 10 and set(spis[:switch]) <= old, (
        f"the old SPI did not carry the flow before the switch: {[hex(s or 0) for s in spis[:switch][:10]]}"
    )
    after = set(spis[switch:])
    assert after == {new} and len(spis) - switch >= 10, f"after the switch the flow used {[hex(s or 0) for s in after]}"
