"""Wire checks shared by the suites: what may cross the underlay between the routers."""

from __future__ import annotations

from dataclasses import dataclass, field

from dmvpn_lab.lab.capture import PacketSummary

GDOI_PORT = 848


@dataclass
class WireVerdict:
    esp: int = 0
    gdoi: int = 0
    cleartext: list[PacketSummary] = field(default_factory=list)
    foreign_spi: list[PacketSummary] = field(default_factory=list)
    ike: list[PacketSummary] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.cleartext:
            out.append(
                f"{len(self.cleartext)} cleartext packets between routers, e.g. "
                + "; ".join(f"#{p.number} {p.src}->{p.dst} {'/'.join(p.protocols[2:])}" for p in self.cleartext[:5])
            )
        if self.foreign_spi:
            out.append(
                f"{len(self.foreign_spi)} ESP packets with a non-group SPI, e.g. "
                + "; ".join(f"#{p.number} spi 0x{p.esp_spi:x}" for p in self.foreign_spi[:5])
            )
        if self.ike:
            out.append(f"{len(self.ike)} IKE packets between routers (per-peer negotiation)")
        return out


def judge(
    packets: list[PacketSummary], router_nbmas: set[str], gdoi_addresses: set[str], group_spis: set[int]
) -> WireVerdict:
    """Every packet between routers' NBMA addresses must be ESP with a group SPI; GDOI (UDP 848)
    may only run between a GM address and the KS."""
    verdict = WireVerdict()
    for p in packets:
        if "udp" in p.protocols and "isakmp" in p.protocols and (p.src in gdoi_addresses or p.dst in gdoi_addresses):
            verdict.gdoi += 1
            if p.src in router_nbmas and p.dst in router_nbmas:
                verdict.ike.append(p)
            continue
        if not (p.src in router_nbmas and p.dst in router_nbmas):
            continue
        if "esp" in p.protocols:
            verdict.esp += 1
            if p.esp_spi not in group_spis:
                verdict.foreign_spi.append(p)
        elif "isakmp" in p.protocols:
            verdict.ike.append(p)
        else:
            verdict.cleartext.append(p)
    return verdict
