"""The xfrm applier's iproute2 commands, ACQUIRE parsing and counter parsing, without a kernel."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dmvpn_lab.gdoi.events import TekSA
from dmvpn_lab.gdoi.kernel_events import Acquire, NhrpBinding, parse_acquire, parse_nhrp_binding
from dmvpn_lab.gdoi.model import TekTransform, TrafficSelector
from dmvpn_lab.gdoi.xfrm import (
    XfrmApplier,
    XfrmError,
    XfrmExists,
    XfrmNotFound,
    algorithm_args,
    parse_state_counters,
    state_add,
)

OWN = "172.17.1.1"
GRE_ANY = TrafficSelector()


def tek(spi: int, transform: TekTransform = TekTransform.ESP_GCM256, *, installed_at: float = 0.0) -> TekSA:
    lengths = {
        TekTransform.ESP_3DES_MD5: (24, 16),
        TekTransform.ESP_AES128_SHA1: (16, 20),
        TekTransform.ESP_AES256_SHA1: (32, 20),
        TekTransform.ESP_AES128_SHA256: (16, 32),
        TekTransform.ESP_AES256_SHA256: (32, 32),
        TekTransform.ESP_GCM128: (20, 0),
        TekTransform.ESP_GCM256: (36, 0),
    }[transform]
    return TekSA(
        spi=spi,
        transform=transform,
        encryption_key=bytes([0xAA]) * lengths[0],
        integrity_key=bytes([0xBB]) * lengths[1],
        selectors=(GRE_ANY,),
        lifetime_s=3600,
        installed_at=installed_at,
    )


class FakeIp:
    """Records commands; answers like iproute2 would for the cases the applier handles."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.exists: set[str] = set()
        self.missing: set[str] = set()
        self.output = ""

    def __call__(self, args: Sequence[str]) -> str:
        line = " ".join(args)
        self.commands.append(line)
        if any(marker in line for marker in self.exists):
            raise XfrmExists(line)
        if any(marker in line for marker in self.missing):
            raise XfrmNotFound(line)
        return self.output

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


def short(line: str) -> str:
    """Drop algorithm and key material so the tests read like the recipe in docs/lab-facts.md."""
    for marker in (" aead ", " enc "):
        if marker in line:
            head, _, rest = line.partition(marker)
            return head + " <alg>" + rest[rest.index(" limit") :]
    return line


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (TekTransform.ESP_3DES_MD5, ["enc", "cbc(des3_ede)", "auth-trunc", "hmac(md5)", "96"]),
        (TekTransform.ESP_AES128_SHA1, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha1)", "96"]),
        (TekTransform.ESP_AES256_SHA1, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha1)", "96"]),
        (TekTransform.ESP_AES128_SHA256, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha256)", "128"]),
        (TekTransform.ESP_AES256_SHA256, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha256)", "128"]),
        (TekTransform.ESP_GCM128, ["aead", "rfc4106(gcm(aes))", "128"]),
        (TekTransform.ESP_GCM256, ["aead", "rfc4106(gcm(aes))", "128"]),
    ],
)
def test_algorithms_and_icv_lengths(transform: TekTransform, expected: list[str]) -> None:
    args = algorithm_args(tek(1, transform))
    assert [a for a in args if not a.startswith("0x")] == expected
    keys = [a for a in args if a.startswith("0x")]
    sa = tek(1, transform)
    assert keys[0] == "0x" + sa.encryption_key.hex()
    if sa.integrity_key:
        assert keys[1] == "0x" + sa.integrity_key.hex()


def test_wrong_key_length_is_refused() -> None:
    sa = tek(1, TekTransform.ESP_GCM256)
    bad = TekSA(sa.spi, sa.transform, sa.encryption_key[:-4], b"", sa.selectors, 3600, 0.0)
    with pytest.raises(XfrmError, match="needs 36"):
        algorithm_args(bad)


def test_inbound_state_is_the_wildcard_recipe() -> None:
    command = state_add(tek(0x42CE20E), src="0.0.0.0", dst=OWN, hard_lifetime_s=3630, inbound=True)
    assert short(" ".join(command)) == (
        f"xfrm state add src 0.0.0.0 dst {OWN} proto esp spi 0x042ce20e mode transport replay-window 0 "
        "flag wildrecv <alg> limit time-hard 3630"
    )


def test_first_tek_installs_policies_and_one_inbound_state() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    assert [short(c) for c in ip.take()] == [
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir out priority 2000 "
        "tmpl proto esp mode transport level required",
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir in priority 2000 "
        "tmpl proto esp mode transport level required",
        f"xfrm state add src 0.0.0.0 dst {OWN} proto esp spi 0x00000100 mode transport replay-window 0 "
        "flag wildrecv <alg> limit time-hard 3630",
    ]
    assert applier.current_spi == 0x100


def test_acquire_creates_outbound_state_with_the_acquires_own_addresses() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    ip.take()
    applier.handle_acquire(Acquire(src=OWN, dst="172.27.1.1", protocol="gre"), now=600.0)
    assert [short(c) for c in ip.take()] == [
        f"xfrm state add src {OWN} dst 172.27.1.1 proto esp spi 0x00000100 mode transport replay-window 0 "
        "<alg> limit time-hard 3030",
    ]
    assert applier.peers == {"172.27.1.1": 0x100}


def test_rekey_keeps_old_inbound_and_moves_outbound_at_once() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    applier.add_peer("172.27.1.1", now=0.0)
    applier.add_peer("172.37.1.1", now=0.0)
    ip.take()
    applier.install_tek(tek(0x200, installed_at=3500.0), now=3500.0)
    assert [short(c) for c in ip.take()] == [
        f"xfrm state add src 0.0.0.0 dst {OWN} proto esp spi 0x00000200 mode transport replay-window 0 "
        "flag wildrecv <alg> limit time-hard 3630",
        f"xfrm state add src {OWN} dst 172.27.1.1 proto esp spi 0x00000200 mode transport replay-window 0 "
        "<alg> limit time-hard 3630",
        f"xfrm state delete src {OWN} dst 172.27.1.1 proto esp spi 0x00000100",
        f"xfrm state add src {OWN} dst 172.37.1.1 proto esp spi 0x00000200 mode transport replay-window 0 "
        "<alg> limit time-hard 3630",
        f"xfrm state delete src {OWN} dst 172.37.1.1 proto esp spi 0x00000100",
    ]
    assert applier.current_spi == 0x200
    applier.remove_tek(0x100, 3600.0)  # the old TEK's lifetime ends: only its inbound state is left to remove
    assert ip.take() == [f"xfrm state delete src 0.0.0.0 dst {OWN} proto esp spi 0x00000100"]


def test_a_peer_learnt_again_without_a_source_keeps_the_acquires() -> None:
    # The ACQUIRE names the source the kernel chose; an NHRP binding seen later names none.
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    applier.handle_acquire(Acquire(src="10.9.9.9", dst="172.27.1.1", protocol="gre"), now=0.0)
    assert applier.add_peer("172.27.1.1", now=1.0) is False  # it has its state already
    ip.take()
    applier.install_tek(tek(0x200, installed_at=3500.0), now=3500.0)
    assert [short(c) for c in ip.take()][1:] == [
        "xfrm state add src 10.9.9.9 dst 172.27.1.1 proto esp spi 0x00000200 mode transport replay-window 0 "
        "<alg> limit time-hard 3630",
        "xfrm state delete src 10.9.9.9 dst 172.27.1.1 proto esp spi 0x00000100",
    ]


def test_expired_current_tek_removes_outbound_states_too() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    applier.add_peer("172.27.1.1", now=0.0)
    ip.take()
    applier.remove_tek(0x100, 3600.0)
    assert ip.take() == [
        f"xfrm state delete src 0.0.0.0 dst {OWN} proto esp spi 0x00000100",
        f"xfrm state delete src {OWN} dst 172.27.1.1 proto esp spi 0x00000100",
    ]
    assert applier.current_spi is None and applier.peers == {}


def test_existing_state_is_updated_and_missing_state_on_delete_is_fine() -> None:
    ip = FakeIp()
    ip.exists.add("state add")
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_tek(tek(0x100), now=0.0)
    assert any(c.startswith("xfrm state update src 0.0.0.0") for c in ip.commands)
    ip.exists.clear()
    ip.missing.add("state delete")
    applier.remove_tek(0x100, 3600.0)  # no exception


def test_stop_removes_everything_it_added_including_bypass() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    ip_any = TekSA(0x300, TekTransform.ESP_GCM128, bytes(20), b"", (TrafficSelector(protocol=0),), 3600, 0.0)
    applier.install_tek(ip_any, now=0.0)
    added = ip.take()
    assert sum("udp dport 848" in c or "udp sport 848" in c for c in added) == 4  # GDOI stays in the clear
    applier.add_peer("10.0.0.9", now=1.0)
    ip.take()
    applier.stop()
    removed = ip.take()
    assert removed[:2] == [
        f"xfrm state delete src 0.0.0.0 dst {OWN} proto esp spi 0x00000300",
        f"xfrm state delete src {OWN} dst 10.0.0.9 proto esp spi 0x00000300",
    ]
    assert "xfrm policy delete src 0.0.0.0/0 dst 0.0.0.0/0 dir in" in removed
    assert "xfrm policy delete src 0.0.0.0/0 dst 0.0.0.0/0 dir out" in removed
    assert sum(c.startswith("xfrm policy delete") and "udp" in c for c in removed) == 4


def test_peer_added_before_registration_gets_its_state_with_the_first_tek() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.add_peer("172.27.1.1", now=0.0)
    assert ip.take() == []
    applier.install_tek(tek(0x100), now=0.0)
    assert any(f"src {OWN} dst 172.27.1.1" in c for c in ip.take())


ACQUIRE_LINE = (
    "acquire proto esp \\  sel src 172.17.1.1/32 dst 172.27.1.1/32 proto gre \\  policy src 0.0.0.0/0 "
    "dst 0.0.0.0/0 proto gre \\\tdir out priority 2000 ptype main \\\ttmpl src 0.0.0.0 dst 0.0.0.0\\"
    "\t\tproto esp reqid 0 mode transport\\"
)


def test_parse_acquire() -> None:
    assert parse_acquire(ACQUIRE_LINE) == Acquire(src="172.17.1.1", dst="172.27.1.1", protocol="gre")
    multi_line = "acquire proto esp \n  sel src 10.0.0.1/32 dst 10.0.0.2/32 proto 47 \n"
    assert parse_acquire(multi_line) == Acquire("10.0.0.1", "10.0.0.2", "47")
    assert parse_acquire("Deleted src 1.1.1.1 dst 2.2.2.2") is None
    assert parse_acquire("acquire proto esp sel src fe80::1/128 dst fe80::2/128") is None


def test_parse_nhrp_binding() -> None:
    # FRR 10's nhrpd tags its entries; FRR 8's does not.  Both bind a tunnel address to an NBMA address.
    assert parse_nhrp_binding("192.168.100.3 dev gre1 lladdr 172.37.1.1 REACHABLE proto nhrp \n") == NhrpBinding(
        "192.168.100.3", "gre1", "172.37.1.1"
    )
    assert parse_nhrp_binding("192.168.3.10 dev gre1 lladdr 172.37.1.1 STALE") == NhrpBinding(
        "192.168.3.10", "gre1", "172.37.1.1"
    )
    assert parse_nhrp_binding("192.168.2.10 dev eth2 lladdr 3a:05:68:3e:09:d5 REACHABLE") is None  # Ethernet
    assert parse_nhrp_binding("192.168.100.3 dev gre1 lladdr 172.37.1.1 FAILED") is None
    assert parse_nhrp_binding("192.168.100.3 dev gre1  INCOMPLETE") is None
    assert parse_nhrp_binding("Deleted 192.168.100.3 dev gre1 lladdr 172.37.1.1 STALE") is None
    assert parse_nhrp_binding("fe80::1 dev gre1 lladdr 172.37.1.1 REACHABLE") is None


STATE_LIST = """\
src 0.0.0.0 dst 172.17.1.1
\tproto esp spi 0x00000100 reqid 0 mode transport
\treplay-window 0 flag wildrecv
\taead rfc4106(gcm(aes)) 0xaaaa 128
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\t  limit: soft (INF)(packets), hard (INF)(packets)
\tlifetime current:
\t  1200(bytes), 12(packets)
\t  add 2024-01-01 00:00:00 use 2024-01-01 00:00:01
\tstats:
\t  replay-window 0 replay 0 failed 2
src 172.17.1.1 dst 172.27.1.1
\tproto esp spi 0x00000100 reqid 0 mode transport
\tlifetime current:
\t  300(bytes), 3(packets)
src 172.17.1.1 dst 172.37.1.1
\tproto esp spi 0x00000100 reqid 0 mode transport
\tlifetime current:
\t  500(bytes), 5(packets)
src 10.9.9.9 dst 10.9.9.8
\tproto esp spi 0x00000999 reqid 0 mode transport
\tlifetime current:
\t  1(bytes), 1(packets)
"""


def test_counters_are_summed_per_spi_and_direction() -> None:
    counters = parse_state_counters(STATE_LIST, OWN)
    ours = counters[0x100]
    assert (ours.in_packets, ours.in_bytes, ours.in_errors) == (12, 1200, 2)
    assert (ours.out_packets, ours.out_bytes, ours.out_states) == (8, 800, 2)
    ip = FakeIp()
    ip.output = STATE_LIST
    applier = XfrmApplier(OWN, runner=ip)
    assert applier.counters() == {}  # nothing installed: no kernel call
    applier.install_tek(tek(0x100), now=0.0)
    assert set(applier.counters()) == {0x100}  # only our SPIs
    assert ip.commands[-1] == "-s xfrm state list"


# --- Fail-close ------------------------------------------------------------------------------------

POLICY_OUT = (
    "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir out priority 2000 "
    "tmpl proto esp mode transport level required"
)
POLICY_IN = POLICY_OUT.replace("dir out", "dir in")


def test_fail_close_policies_go_in_before_any_tek_and_only_once() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_policies((GRE_ANY,))
    assert ip.take() == [POLICY_OUT, POLICY_IN]  # ESP required, no state: GRE is held, never clear
    applier.install_policies((GRE_ANY,))
    assert ip.take() == []
    applier.install_tek(tek(0x100), now=0.0)  # the KS downloads the same ACL: no policy twice
    assert [short(c) for c in ip.take()] == [
        f"xfrm state add src 0.0.0.0 dst {OWN} proto esp spi 0x00000100 mode transport replay-window 0 "
        "flag wildrecv <alg> limit time-hard 3630",
    ]


def test_acquire_before_registration_is_answered_when_the_first_tek_arrives() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_policies((GRE_ANY,))
    ip.take()
    applier.handle_acquire(Acquire(src=OWN, dst="172.27.1.1", protocol="gre"), now=1.0)
    applier.handle_acquire(Acquire(src=OWN, dst="172.37.1.1", protocol="gre"), now=2.0)
    assert ip.take() == [] and applier.peers == {}  # nothing to install yet: the packets stay held
    applier.install_tek(tek(0x100, installed_at=40.0), now=40.0)
    assert [short(c) for c in ip.take()][1:] == [
        f"xfrm state add src {OWN} dst 172.27.1.1 proto esp spi 0x00000100 mode transport replay-window 0 "
        "<alg> limit time-hard 3630",
        f"xfrm state add src {OWN} dst 172.37.1.1 proto esp spi 0x00000100 mode transport replay-window 0 "
        "<alg> limit time-hard 3630",
    ]
    assert applier.peers == {"172.27.1.1": 0x100, "172.37.1.1": 0x100}


def test_fail_close_on_ip_selectors_keeps_gdoi_itself_in_the_clear() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_policies((TrafficSelector(protocol=0, destination="10.0.0.0/8"),))
    added = ip.take()
    assert sum("udp dport 848" in c or "udp sport 848" in c for c in added) == 4
    assert added[-2:] == [
        "xfrm policy update src 0.0.0.0/0 dst 10.0.0.0/8 dir out priority 2000 "
        "tmpl proto esp mode transport level required",
        "xfrm policy update src 10.0.0.0/8 dst 0.0.0.0/0 dir in priority 2000 "
        "tmpl proto esp mode transport level required",
    ]
    applier.stop()
    assert sum(c.startswith("xfrm policy delete") for c in ip.take()) == 6


def test_stop_keeps_fail_close_policies_but_removes_states():
    from dmvpn_lab.gdoi.model import TrafficSelector
    from dmvpn_lab.gdoi.xfrm import XfrmApplier

    commands: list[list[str]] = []
    applier = XfrmApplier("172.27.1.1", runner=lambda args: commands.append(list(args)) or "")
    gre = TrafficSelector()
    applier.install_policies([gre])
    commands.clear()
    applier.stop(keep=[gre])
    assert not any(c[:3] == ["xfrm", "policy", "delete"] for c in commands), commands
    commands.clear()
    applier.install_policies([gre])
    applier.stop()
    assert sum(c[:3] == ["xfrm", "policy", "delete"] for c in commands) == 2, commands


def test_after_a_rekey_outbound_moves_only_when_switched():
    """Inbound first everywhere, then outbound: a rekeyed member keeps sending with the old SPI until told."""
    from dmvpn_lab.gdoi.events import TekSA
    from dmvpn_lab.gdoi.model import TekTransform, TrafficSelector
    from dmvpn_lab.gdoi.xfrm import XfrmApplier

    def tek(spi: int) -> TekSA:
        return TekSA(spi, TekTransform.ESP_GCM128, bytes(20), b"", (TrafficSelector(),), 3600, 0.0)

    commands: list[list[str]] = []
    applier = XfrmApplier("172.27.1.1", runner=lambda args: commands.append(list(args)) or "")
    applier.install_tek(tek(0x100), 0.0)
    applier.add_peer("172.47.1.1", 0.0)
    assert applier.peers == {"172.47.1.1": 0x100}
    applier.install_tek(tek(0x200), 10.0, send=False)
    assert applier.current_spi == 0x100 and applier.peers == {"172.47.1.1": 0x100}
    applier.switch_outbound(0x200, 15.0)
    assert applier.current_spi == 0x200 and applier.peers == {"172.47.1.1": 0x200}
    applier.remove_tek(0x100, 3600.0)
    assert applier.peers == {"172.47.1.1": 0x200}


def test_expiry_of_the_sending_tek_moves_outbound_to_the_newer_one():
    from dmvpn_lab.gdoi.events import TekSA
    from dmvpn_lab.gdoi.model import TekTransform, TrafficSelector
    from dmvpn_lab.gdoi.xfrm import XfrmApplier

    def tek(spi: int) -> TekSA:
        return TekSA(spi, TekTransform.ESP_GCM128, bytes(20), b"", (TrafficSelector(),), 3600, 0.0)

    applier = XfrmApplier("172.27.1.1", runner=lambda args: "")
    applier.install_tek(tek(0x100), 0.0)
    applier.add_peer("172.47.1.1", 0.0)
    applier.install_tek(tek(0x200), 10.0, send=False)
    applier.remove_tek(0x100, 3600.0)
    assert applier.current_spi == 0x200 and applier.peers == {"172.47.1.1": 0x200}


# --- ACL deny lines: traffic left in clear --------------------------------------------------------

DENY_LAN_TO_LAN = TrafficSelector(protocol=47, source="192.168.1.0/24", destination="192.168.2.0/24", permit=False)


def test_deny_line_gets_clear_text_policies_that_outrank_the_protect_policies() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    sa = TekSA(0x400, TekTransform.ESP_GCM128, bytes(20), b"", (DENY_LAN_TO_LAN, GRE_ANY), 3600, 0.0)
    applier.install_tek(sa, now=0.0)
    policies = [c for c in ip.take() if c.startswith("xfrm policy")]
    assert policies == [
        # both directions, the inbound one mirrored like a permit line's; no template: no ESP demanded
        "xfrm policy update src 192.168.1.0/24 dst 192.168.2.0/24 proto 47 dir out action allow priority 1500",
        "xfrm policy update src 192.168.2.0/24 dst 192.168.1.0/24 proto 47 dir in action allow priority 1500",
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir out priority 2000 "
        "tmpl proto esp mode transport level required",
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir in priority 2000 "
        "tmpl proto esp mode transport level required",
    ]
    # xfrm picks the lowest priority number among matching policies: the deny wins where both match
    clear_priority = int(policies[0].rsplit(" ", 1)[1])
    protect_priority = int(policies[2].split(" priority ")[1].split()[0])
    assert clear_priority < protect_priority
    applier.stop()
    assert sorted(c for c in ip.take() if c.startswith("xfrm policy delete")) == [
        "xfrm policy delete src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir in",
        "xfrm policy delete src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir out",
        "xfrm policy delete src 192.168.1.0/24 dst 192.168.2.0/24 proto 47 dir out",
        "xfrm policy delete src 192.168.2.0/24 dst 192.168.1.0/24 proto 47 dir in",
    ]


def test_a_deny_line_alone_does_not_add_the_gdoi_bypass() -> None:
    ip = FakeIp()
    applier = XfrmApplier(OWN, runner=ip)
    applier.install_policies((TrafficSelector(protocol=0, permit=False), GRE_ANY))
    assert not any("848" in c for c in ip.take())  # nothing demands ESP for UDP, so 848 needs no bypass
