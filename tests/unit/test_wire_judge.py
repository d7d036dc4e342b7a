"""The wire verdict judges every frame on the underlay; each fault class below must be named."""

from __future__ import annotations

from labtests.wire import WirePolicy, judge

from dmvpn_lab.lab.capture import PacketSummary

POLICY = WirePolicy(
    group_spis=frozenset({7}),
    ks_addresses=frozenset({"1.1.1.1"}),
    gm_addresses=frozenset({"2.2.2.2", "11.11.11.11", "12.12.12.12"}),
)


def pkt(n, src, dst, *layers, spi=None, ports=None):
    return PacketSummary(n, src, dst, ("sll", *layers), spi, None, ports)


def test_group_esp_gdoi_with_the_ks_and_arp_pass():
    v = judge(
        [
            pkt(1, "172.17.1.1", "172.27.1.1", "ip", "esp", spi=7),
            pkt(2, "11.11.11.11", "1.1.1.1", "ip", "udp", "isakmp", ports=(848, 848)),
            pkt(3, "1.1.1.1", "239.192.1.1", "ip", "udp", "isakmp", ports=(848, 848)),  # multicast rekey
            pkt(4, "172.27.1.254", "172.27.1.1", "arp"),
        ],
        POLICY,
    )
    assert v.problems() == [] and v.esp == 1 and v.gdoi == 2 and v.allowed == {"arp": 1}


def test_cleartext_gre_between_loopbacks_is_flagged():
    v = judge([pkt(1, "11.11.11.11", "12.12.12.12", "ip", "gre", "ip", "icmp")], POLICY)
    assert len(v.cleartext) == 1 and "cleartext" in " ".join(v.problems())


def test_lan_packet_on_the_underlay_is_flagged():
    v = judge([pkt(1, "192.168.2.10", "192.168.3.10", "ip", "icmp")], POLICY)
    assert len(v.cleartext) == 1


def test_ike_between_loopbacks_and_gdoi_between_two_members_are_flagged():
    v = judge(
        [
            pkt(1, "11.11.11.11", "12.12.12.12", "ip", "udp", "isakmp", ports=(500, 500)),
            pkt(2, "11.11.11.11", "12.12.12.12", "ip", "udp", ports=(4500, 4500)),
            pkt(3, "11.11.11.11", "12.12.12.12", "ip", "udp", "isakmp", ports=(848, 848)),
        ],
        POLICY,
    )
    assert len(v.ike) == 3 and "IKE" in " ".join(v.problems())


def test_foreign_spi_ipv6_and_other_frames_are_flagged():
    v = judge(
        [
            pkt(1, "172.17.1.1", "172.27.1.1", "ip", "esp", spi=9),
            pkt(2, "fe80::1", "ff02::16", "ipv6", "icmpv6"),
            pkt(3, "", "", "lldp"),
        ],
        POLICY,
    )
    problems = " ".join(v.problems())
    assert len(v.foreign_spi) == 1 and len(v.not_ipv4) == 2
    assert "non-group SPI" in problems and "neither IPv4 nor allowed" in problems


def test_a_capture_that_dropped_packets_fails():
    v = judge([pkt(1, "172.17.1.1", "172.27.1.1", "ip", "esp", spi=7)], POLICY, dropped=3)
    assert v.problems() == ["the capture dropped 3 packets: the verdict cannot vouch for them"]


def test_an_empty_policy_flags_everything_encrypted_or_not():
    # The plain lab has no KS: any ESP or GDOI would be foreign there.
    v = judge(
        [pkt(1, "172.17.1.1", "172.27.1.1", "ip", "esp", spi=7), pkt(2, "172.17.1.1", "172.27.1.1", "ip", "gre")],
        WirePolicy(frozenset(), frozenset(), frozenset()),
    )
    assert len(v.foreign_spi) == 1 and len(v.cleartext) == 1


def test_coop_between_key_servers_and_a_stopped_ones_icmp_pass_but_icmp_quoting_isakmp_elsewhere_does_not():
    two_key_servers = WirePolicy(
        group_spis=frozenset({7}),
        ks_addresses=frozenset({"1.1.1.1", "1.1.2.1"}),
        gm_addresses=POLICY.gm_addresses,
    )
    v = judge(
        [
            pkt(1, "1.1.2.1", "1.1.1.1", "ip", "udp", "isakmp", ports=(848, 848)),  # COOP announcement
            pkt(2, "1.1.1.1", "1.1.2.1", "ip", "icmp", "isakmp"),  # port unreachable from the stopped KS
        ],
        two_key_servers,
    )
    assert v.problems() == [] and v.gdoi == 2
    v = judge([pkt(1, "11.11.11.11", "12.12.12.12", "ip", "icmp", "isakmp")], two_key_servers)
    assert len(v.ike) == 1
