"""The wire verdict used by the encryption suite: it must flag cleartext, foreign SPIs and IKE."""

from __future__ import annotations

from labtests.wire import judge

from dmvpn_lab.lab.capture import PacketSummary

NBMAS = {"172.17.1.1", "172.27.1.1"}


def pkt(n, src, dst, *layers, spi=None):
    return PacketSummary(n, src, dst, ("sll", "ip", *layers), spi, None)


def test_group_esp_and_gdoi_pass():
    v = judge(
        [pkt(1, "172.17.1.1", "172.27.1.1", "esp", spi=7), pkt(2, "11.11.11.11", "1.1.1.1", "udp", "isakmp")],
        NBMAS,
        {"1.1.1.1"},
        {7},
    )
    assert v.problems() == [] and v.esp == 1 and v.gdoi == 1


def test_cleartext_gre_foreign_spi_and_ike_are_flagged():
    v = judge(
        [
            pkt(1, "172.17.1.1", "172.27.1.1", "gre", "ip", "icmp"),
            pkt(2, "172.17.1.1", "172.27.1.1", "esp", spi=9),
            pkt(3, "172.27.1.1", "172.17.1.1", "udp", "isakmp"),
        ],
        NBMAS,
        {"1.1.1.1"},
        {7},
    )
    problems = " ".join(v.problems())
    assert "cleartext" in problems and "non-group SPI" in problems and "IKE" in problems


def test_traffic_not_between_routers_is_ignored():
    assert judge([pkt(1, "172.17.1.254", "172.17.1.1", "icmp")], NBMAS, set(), set()).problems() == []
