"""The IOS ``crypto`` stanza parser, on the seed's configs (tests/fixtures) and on every command it knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmvpn_lab.gdoi.acl import parse_acl_entry
from dmvpn_lab.gdoi.config import load_config, load_config_with_report
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig, psk_for
from dmvpn_lab.gdoi.config_report import ConfigError, ConfigReport
from dmvpn_lab.gdoi.ios_config import normalise_interface, parse_ios_config
from dmvpn_lab.gdoi.model import (
    DhGroup,
    Phase1Cipher,
    Phase1Hash,
    RekeyTransport,
    TekTransform,
    TrafficSelector,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def parse(
    text: str, *, local_address: str | None = None
) -> tuple[KeyServerConfig | GroupMemberConfig, ConfigReport]:
    report = ConfigReport("test.ios", "ios")
    return parse_ios_config(text, report, local_address=local_address), report


def ks(text: str) -> tuple[KeyServerConfig, ConfigReport]:
    config, report = parse(text)
    assert isinstance(config, KeyServerConfig)
    return config, report


KS_BASE = """\
crypto isakmp key 0 cisco address 2.2.2.2
crypto ipsec transform-set TS {transform}
crypto ipsec profile P
 set transform-set TS
crypto gdoi group G
 identity number 7
 server local
  sa ipsec 1
  profile P
  match address ipv4 ACL
  address ipv4 1.1.1.1
ip access-list extended ACL
 permit gre any any
"""


# --- The seed -------------------------------------------------------------------------------------


def test_seed_key_server_config_parses_to_the_documented_policy() -> None:
    config, report = load_config_with_report(FIXTURES / "ks-seed.ios")
    assert isinstance(config, KeyServerConfig)
    assert report.role == "ks" and report.unsupported == []
    assert config.local_address == "1.1.1.1"
    assert config.psk_by_peer == {
        "2.2.2.2": b"cisco",
        "11.11.11.11": b"cisco",
        "12.12.12.12": b"cisco",
        "13.13.13.13": b"cisco",
    }
    (group,) = config.groups
    assert (group.name, group.identity) == ("GDOI_GROUP", 123)
    assert group.transform is TekTransform.ESP_3DES_MD5
    assert group.selectors == (TrafficSelector(47, "0.0.0.0/0", "0.0.0.0/0"),)
    assert group.rekey_transport is RekeyTransport.UNICAST
    assert (group.rekey_retransmit_interval_s, group.rekey_retransmit_count) == (60, 2)
    assert (group.rsa_key_label, group.rsa_modulus) == ("GDOI_KEYS", 1024)
    assert group.replay_time_window_s == 5
    assert (group.tek_lifetime_s, group.kek_lifetime_s) == (3600, 86400)
    (policy,) = config.isakmp_policies
    assert policy.priority == 10


def test_seed_typo_edp_3des_is_refused_with_line_number_and_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / "ks-seed-typo.ios")
    error = caught.value
    assert error.line == 13
    assert str(error).startswith(f"{FIXTURES / 'ks-seed-typo.ios'}:13: ")
    assert "edp-3des" in str(error) and "did you mean 'esp-3des'" in str(error)
    _, report = load_config_with_report(FIXTURES / "ks-seed-typo.ios")
    (entry,) = report.unsupported
    assert (entry.line, entry.action) == (13, "refused")
    assert entry.text == "crypto ipsec transform-set GDOI_TS edp-3des esp-md5-hmac"


def test_seed_group_member_config_needs_the_local_address_from_the_command_line() -> None:
    with pytest.raises(ConfigError, match="Loopback0") as caught:
        load_config(FIXTURES / "gm-seed.ios")
    assert "--local-address" in str(caught.value)
    config, report = load_config_with_report(FIXTURES / "gm-seed.ios", local_address="11.11.11.11")
    assert isinstance(config, GroupMemberConfig)
    assert report.role == "gm" and report.unsupported == []
    assert config.local_address == "11.11.11.11"
    assert (config.group_name, config.identity, config.servers) == ("GDOI_GM", 123, ("1.1.1.1",))
    assert config.psk_by_peer == {"1.1.1.1": b"cisco"}
    assert (config.crypto_map, config.interface) == ("DMVPN", "Serial1/0")
    assert report.lines_outside_crypto == 2  # `interface serial 1/0` and its `....`


# --- Every supported command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("esp-3des esp-md5-hmac", TekTransform.ESP_3DES_MD5),
        ("esp-aes esp-sha-hmac", TekTransform.ESP_AES128_SHA1),
        ("esp-aes 128 esp-sha-hmac", TekTransform.ESP_AES128_SHA1),
        ("esp-aes 256 esp-sha-hmac", TekTransform.ESP_AES256_SHA1),
        ("esp-aes esp-sha256-hmac", TekTransform.ESP_AES128_SHA256),
        ("esp-aes 256 esp-sha256-hmac", TekTransform.ESP_AES256_SHA256),
        ("esp-gcm", TekTransform.ESP_GCM128),
        ("esp-gcm 256", TekTransform.ESP_GCM256),
        # The other combinations IOS accepts and Linux xfrm runs.
        ("esp-3des esp-sha-hmac", TekTransform.ESP_3DES_SHA1),
        ("esp-3des esp-sha512-hmac", TekTransform.ESP_3DES_SHA512),
        ("esp-aes 128 esp-md5-hmac", TekTransform.ESP_AES128_MD5),
        ("esp-aes 192 esp-sha384-hmac", TekTransform.ESP_AES192_SHA384),
        ("esp-gcm 192", TekTransform.ESP_GCM192),
    ],
)
def test_supported_transform_sets(words: str, expected: TekTransform) -> None:
    config, report = ks(KS_BASE.format(transform=words))
    assert config.groups[0].transform is expected
    assert report.refused == []


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        ("esp-des esp-md5-hmac", "not supported"),
        ("esp-aes 512 esp-sha-hmac", "512"),
        ("esp-gcm 256 esp-sha-hmac", "own integrity"),
        ("esp-3des", "needs an integrity"),
        ("esp-3des 192 esp-sha-hmac", "takes no key size"),
        ("esp-aes", "needs an integrity"),
        ("esp-sha-hmac", "no ESP cipher"),
        ("esp-aes esp-shaa-hmac", "did you mean 'esp-sha-hmac'"),
    ],
)
def test_unsupported_transform_sets_are_refused(words: str, reason: str) -> None:
    _, report = ks(KS_BASE.format(transform=words))
    (entry,) = report.refused
    assert entry.line == 2 and reason in entry.reason


def test_isakmp_policy_options() -> None:
    text = KS_BASE.format(transform="esp-gcm 256") + (
        "crypto isakmp policy 20\n encryption aes 128\n hash sha\n group 14\n lifetime 3600\n"
        "crypto isakmp policy 10\n authentication pre-share\n encryption 3des\n hash md5\n group 2\n"
        "crypto isakmp policy 30\n encryption aes 256\n hash sha256\n group 19\n"
    )
    config, report = ks(text)
    assert report.unsupported == []
    assert [p.priority for p in config.isakmp_policies] == [10, 20, 30]
    first, second, third = config.isakmp_policies
    assert (first.cipher, first.hash, first.group) == (
        Phase1Cipher.TRIPLE_DES,
        Phase1Hash.MD5,
        DhGroup.MODP_1024,
    )
    assert (second.cipher, second.hash, second.group, second.lifetime_s) == (
        Phase1Cipher.AES_CBC_128,
        Phase1Hash.SHA1,
        DhGroup.MODP_2048,
        3600,
    )
    assert (third.cipher, third.hash, third.group) == (
        Phase1Cipher.AES_CBC_256,
        Phase1Hash.SHA256,
        DhGroup.ECP_256,
    )


@pytest.mark.parametrize(
    "line", [" authentication rsa-sig", " encryption des", " hash sha512", " group 5", " encryption aes 192"]
)
def test_unsupported_isakmp_policy_lines_are_refused(line: str) -> None:
    text = KS_BASE.format(transform="esp-gcm") + "crypto isakmp policy 10\n" + line + "\n"
    _, report = ks(text)
    (entry,) = report.refused
    assert entry.line == 15 and entry.text == line.strip()


def test_key_server_options_under_server_local() -> None:
    text = """\
crypto key generate rsa general-keys label KS_KEY modulus 4096
crypto ipsec security-association lifetime seconds 1800
crypto ipsec transform-set TS esp-aes 256 esp-sha256-hmac
crypto ipsec profile P
 set transform-set TS
crypto gdoi group G1
 identity number 1
 server local
  rekey algorithm aes 128
  rekey transport multicast
  rekey address ipv4 REKEY_ACL
  rekey lifetime seconds 7200
  rekey authentication mypubkey rsa KS_KEY
  rekey retransmit 10 number 3
  sa ipsec 1
   profile P
   match address ipv4 ACL
   replay time window-size 10
  address ipv4 10.0.0.1
ip access-list extended ACL
 10 permit gre host 192.0.2.1 10.0.0.0 0.0.255.255
 permit ip any any
 remark the rest
ip access-list extended REKEY_ACL
 permit udp host 10.0.0.1 host 239.192.1.1
"""
    config, report = ks(text)
    assert report.unsupported == []
    (group,) = config.groups
    assert group.kek_cipher is Phase1Cipher.AES_CBC_128
    assert group.rekey_transport is RekeyTransport.MULTICAST
    assert group.rekey_multicast_address == "239.192.1.1"
    assert (group.kek_lifetime_s, group.tek_lifetime_s) == (7200, 1800)
    assert (group.rsa_key_label, group.rsa_modulus) == ("KS_KEY", 4096)
    assert (group.rekey_retransmit_interval_s, group.rekey_retransmit_count) == (10, 3)
    assert group.replay_time_window_s == 10
    assert group.selectors == (
        TrafficSelector(47, "192.0.2.1/32", "10.0.0.0/16"),
        TrafficSelector(0, "0.0.0.0/0", "0.0.0.0/0"),
    )
    assert config.local_address == "10.0.0.1"


def test_profile_lifetime_wins_over_the_global_one() -> None:
    text = KS_BASE.format(transform="esp-gcm").replace(
        " set transform-set TS\n", " set transform-set TS\n set security-association lifetime seconds 900\n"
    )
    config, _ = ks("crypto ipsec security-association lifetime seconds 1800\n" + text)
    assert config.groups[0].tek_lifetime_s == 900


def test_group_member_with_several_servers_and_numbered_acl_elsewhere() -> None:
    text = """\
crypto isakmp key cisco address 1.1.1.1
crypto isakmp key 0 other address 1.1.1.2
crypto gdoi group GM
 identity number 5
 server address ipv4 1.1.1.1
 server address ipv4 1.1.1.2
 client registration interface Loopback0
crypto map MAP 10 gdoi
 set group GM
interface GigabitEthernet0/1
 ip address 10.0.0.1 255.255.255.0
 crypto map MAP
router ospf 1
 network 10.0.0.0 0.0.0.255 area 0
"""
    config, report = parse(text, local_address="10.0.0.1")
    assert isinstance(config, GroupMemberConfig)
    assert config.servers == ("1.1.1.1", "1.1.1.2")
    assert config.psk_by_peer == {"1.1.1.1": b"cisco", "1.1.1.2": b"other"}
    assert (config.crypto_map, config.interface) == ("MAP", "GigabitEthernet0/1")
    assert [(e.line, e.action) for e in report.unsupported] == [(7, "ignored")]
    assert report.lines_outside_crypto == 4


# --- Unsupported lines and errors -----------------------------------------------------------------


def test_unsupported_lines_are_reported_with_numbers_and_actions() -> None:
    text = KS_BASE.format(transform="esp-gcm 256") + (
        "crypto isakmp keepalive 10\n"  # 14: ignored
        "crypto pki trustpoint TP\n"  # 15: ignored
        " enrollment terminal\n"  # 16: quietly part of the ignored stanza
        "crypto ipsec transform-set TS2 esp-gcm\n"  # 17
        " mode tunnel\n"  # 18: ignored
        "crypto isakmp key 6 SECRET address 3.3.3.3\n"  # 19: refused
        "crypto map OLD 10 ipsec-isakmp\n"  # 20: refused
        "ip access-list extended OTHER\n"  # 21
        " deny ip any any\n"  # 22: refused
        " permit tcp any any eq 22\n"  # 23: refused (ports)
    )
    _, report = ks(text)
    got = [(e.line, e.action) for e in report.unsupported]
    assert got == [
        (14, "ignored"),
        (15, "ignored"),
        (18, "ignored"),
        (19, "refused"),
        (20, "refused"),
        (22, "refused"),
        (23, "refused"),
    ]
    rendered = report.render()
    assert rendered[0].startswith("[IGNORED ] test.ios:14: crypto isakmp keepalive 10")
    assert "4 refused, 3 ignored" in rendered[-1]


def test_unknown_server_local_option_is_refused_and_client_option_ignored() -> None:
    text = KS_BASE.replace("  address ipv4 1.1.1.1\n", "  address ipv4 1.1.1.1\n  gdoi-magic on\n").format(
        transform="esp-gcm"
    )
    _, report = ks(text)
    assert [(e.line, e.action) for e in report.unsupported] == [(12, "refused")]


def test_inline_comments_are_dropped_but_keys_keep_their_characters() -> None:
    config, _ = ks(KS_BASE.format(transform="esp-gcm ! comment").replace("cisco", "ci!sco"))
    assert config.psk_by_peer == {"2.2.2.2": b"ci!sco"}


@pytest.mark.parametrize(
    ("replace", "by", "message", "line"),
    [
        ("  match address ipv4 ACL\n", "  match address ipv4 NOPE\n", "'NOPE' is not defined", 10),
        ("  profile P\n", "  profile Q\n", "profile 'Q' is not defined", 9),
        (" identity number 7\n", "", "no `identity number N`", 5),
        ("  address ipv4 1.1.1.1\n", "", "no `address ipv4 A`", 7),
        (
            "crypto isakmp key 0 cisco address 2.2.2.2\n",
            "crypto isakmp key 0 cisco address 2.2.2\n",
            "IPv4",
            1,
        ),
        ("  sa ipsec 1\n", "", "belongs under `sa ipsec N`", 8),
    ],
)
def test_configuration_errors_name_the_line(replace: str, by: str, message: str, line: int) -> None:
    text = KS_BASE.format(transform="esp-gcm").replace(replace, by)
    with pytest.raises(ConfigError, match=message) as caught:
        ks(text)
    assert caught.value.line == line


def test_a_file_with_both_roles_or_none_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no `crypto gdoi group`"):
        parse("interface Tunnel10\n ip address 10.0.0.1 255.255.255.0\n")
    both = (
        KS_BASE.format(transform="esp-gcm")
        + "crypto gdoi group GM\n identity number 1\n server address ipv4 1.1.1.1\n"
    )
    with pytest.raises(ConfigError, match="one daemon is either"):
        parse(both)


def test_rsa_modulus_out_of_range_is_refused() -> None:
    _, report = ks(
        "crypto key generate rsa general-keys label K modulus 512\n" + KS_BASE.format(transform="esp-gcm")
    )
    assert [(e.line, e.action) for e in report.unsupported] == [(1, "refused")]


def test_acl_entries() -> None:
    assert parse_acl_entry(["permit", "gre", "any", "any"]) == TrafficSelector()
    assert parse_acl_entry(["20", "permit", "47", "host", "1.2.3.4", "any"]) == TrafficSelector(
        47, "1.2.3.4/32", "0.0.0.0/0"
    )
    assert parse_acl_entry(["permit", "ip", "10.0.0.0", "0.255.255.255", "any"]) == TrafficSelector(
        0, "10.0.0.0/8", "0.0.0.0/0"
    )
    with pytest.raises(ConfigError, match="wildcard"):
        parse_acl_entry(["permit", "ip", "10.0.0.0", "any"])


def test_interface_names_are_shown_as_ios_shows_them() -> None:
    assert normalise_interface("serial 1/0") == "Serial1/0"
    assert normalise_interface("Loopback0") == "Loopback0"


# --- Fail-close on a GM ---------------------------------------------------------------------------

GM_FAIL_CLOSE = """\
crypto isakmp key cisco address 1.1.1.1
crypto gdoi group GM
 identity number 5
 server address ipv4 1.1.1.1
crypto map MAP 10 gdoi
 set group GM
crypto map MAP 5 gdoi fail-close
{beneath}ip access-list extended FC
 deny ip host 10.0.0.9 any
 permit gre any host 10.0.0.2
"""


def gm(text: str) -> tuple[GroupMemberConfig, ConfigReport]:
    config, report = parse(text, local_address="10.0.0.1")
    assert isinstance(config, GroupMemberConfig)
    return config, report


def test_fail_close_holds_the_acl_permit_lines_and_ignores_its_exceptions() -> None:
    config, report = gm(GM_FAIL_CLOSE.format(beneath=" match address FC\n activate\n"))
    assert config.fail_close_selectors == (TrafficSelector(47, "0.0.0.0/0", "10.0.0.2/32"),)
    assert [(e.line, e.action) for e in report.unsupported] == [(11, "ignored")]
    assert "clear" in report.unsupported[0].reason


def test_fail_close_without_match_address_or_with_only_exceptions_holds_gre() -> None:
    config, _ = gm(GM_FAIL_CLOSE.format(beneath=" activate\n"))
    assert config.fail_close_selectors == (TrafficSelector(),)
    only_denies = GM_FAIL_CLOSE.replace(" permit gre any host 10.0.0.2\n", "")
    config, report = gm(only_denies.format(beneath=" match address FC\n activate\n"))
    assert config.fail_close_selectors == (TrafficSelector(),)
    assert [e.action for e in report.unsupported] == ["ignored"]


def test_fail_close_is_off_until_activated_and_deny_elsewhere_is_still_refused() -> None:
    text = GM_FAIL_CLOSE.format(beneath=" match address FC\n") + "ip access-list extended OTHER\n deny ip any any\n"
    config, report = gm(text)
    assert config.fail_close_selectors == ()
    # FC is still the fail-close ACL (its exception is ignored); OTHER's deny is refused as before
    assert [(e.line, e.action) for e in report.unsupported] == [(7, "ignored"), (10, "ignored"), (13, "refused")]
    assert "activate" in report.unsupported[0].reason


def test_fail_close_errors() -> None:
    with pytest.raises(ConfigError, match="'NOPE' is not defined") as caught:
        gm(GM_FAIL_CLOSE.format(beneath=" match address NOPE\n activate\n"))
    assert caught.value.line == 8
    _, report = gm(GM_FAIL_CLOSE.format(beneath=" activate\n set peer 1.2.3.4\n"))
    assert ("refused", 9) in [(e.action, e.line) for e in report.unsupported]


# --- What IOS prints and defaults to --------------------------------------------------------------


def test_the_seed_key_server_gets_ios_default_3des_kek_and_the_seeds_kek_policy() -> None:
    config, _ = load_config_with_report(FIXTURES / "ks-seed.ios")
    assert isinstance(config, KeyServerConfig)
    # No `rekey algorithm`: IOS encrypts rekeys with 3DES, which the seed shows as 3DES / 192.
    assert config.groups[0].kek_cipher is Phase1Cipher.TRIPLE_DES


@pytest.mark.parametrize(
    ("words", "cipher"),
    [("aes 256", Phase1Cipher.AES_CBC_256), ("aes 128", Phase1Cipher.AES_CBC_128), ("3des", Phase1Cipher.TRIPLE_DES)],
)
def test_rekey_algorithm_when_present_overrides_the_ios_default(words: str, cipher: Phase1Cipher) -> None:
    text = KS_BASE.replace("  sa ipsec 1\n", f"  rekey algorithm {words}\n  sa ipsec 1\n").format(transform="esp-gcm")
    config, report = ks(text)
    assert config.groups[0].kek_cipher is cipher and report.unsupported == []


@pytest.mark.parametrize(("keyword"), ["encryption", "encr"])
def test_isakmp_policy_encryption_as_typed_or_as_ios_prints_it(keyword: str) -> None:
    policy = f"crypto isakmp policy 10\n {keyword} aes 256\n hash sha256\n authentication pre-share\n group 14\n"
    config, report = ks(policy + KS_BASE.format(transform="esp-gcm"))
    (parsed,) = config.isakmp_policies
    assert (parsed.cipher, parsed.hash) == (Phase1Cipher.AES_CBC_256, Phase1Hash.SHA256)
    assert parsed.group is DhGroup.MODP_2048
    assert report.unsupported == []


@pytest.mark.parametrize("address", ["0.0.0.0 0.0.0.0", "0.0.0.0"])
def test_wildcard_isakmp_key_stands_for_any_peer_without_its_own(address: str) -> None:
    text = f"crypto isakmp key 0 wild address {address}\n" + KS_BASE.format(transform="esp-gcm")
    config, report = ks(text)
    assert report.unsupported == []
    assert psk_for(config.psk_by_peer, "2.2.2.2") == b"cisco"  # its own key wins over the wildcard
    assert psk_for(config.psk_by_peer, "192.0.2.77") == b"wild"


def test_keys_for_a_subnet_are_still_refused_with_the_wildcard_as_hint() -> None:
    text = "crypto isakmp key 0 k address 10.0.0.0 255.0.0.0\n" + KS_BASE.format(transform="esp-gcm")
    _, report = ks(text)
    (entry,) = report.refused
    assert entry.line == 1 and "0.0.0.0 0.0.0.0" in entry.reason


def test_without_a_key_no_peer_has_one() -> None:
    assert psk_for({}, "2.2.2.2") is None
    assert psk_for({"2.2.2.2": b"k"}, "2.2.2.3") is None


# --- check-config warnings ------------------------------------------------------------------------


def test_replay_window_loads_but_check_config_warns_it_is_not_enforced() -> None:
    config, report = load_config_with_report(FIXTURES / "ks-seed.ios")
    assert isinstance(config, KeyServerConfig) and config.groups[0].replay_time_window_s == 5
    (warning,) = report.warnings
    assert warning.text == "replay time window-size 5"
    assert warning.line == 28
    assert "not enforced" in warning.reason and "Linux has no time-based anti-replay" in warning.reason
    rendered = report.render()
    assert rendered[0].startswith(f"[WARNING ] {FIXTURES / 'ks-seed.ios'}:28: replay time window-size 5  -- ")
    assert "1 warning(s)" in rendered[-1]


def test_key_server_without_any_pre_shared_key_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "ks.ios"
    path.write_text(KS_BASE.format(transform="esp-gcm").replace("crypto isakmp key 0 cisco address 2.2.2.2\n", ""))
    _, report = load_config_with_report(path)
    (warning,) = report.warnings
    assert (warning.line, warning.text) == (None, "no pre-shared key")
    assert "no member can register" in warning.reason and "0.0.0.0 0.0.0.0" in warning.reason
    assert report.render()[0].startswith(f"[WARNING ] {path}: no pre-shared key  -- ")


GM_TWO_SERVERS = """\
crypto isakmp key 0 cisco address {key_address}
crypto gdoi group G
 identity number 5
 server address ipv4 1.1.1.1
 server address ipv4 1.1.1.2
crypto map M 10 gdoi
 set group G
"""


def test_group_member_without_a_key_for_a_key_server_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "gm.ios"
    path.write_text(GM_TWO_SERVERS.format(key_address="1.1.1.1"))
    _, report = load_config_with_report(path, local_address="10.0.0.1")
    (warning,) = report.warnings
    assert warning.text == "no pre-shared key for key server 1.1.1.2"
    assert "crypto isakmp key K address 1.1.1.2" in warning.reason
    path.write_text(GM_TWO_SERVERS.format(key_address="0.0.0.0 0.0.0.0"))  # the wildcard covers both
    _, report = load_config_with_report(path, local_address="10.0.0.1")
    assert report.warnings == []


# --- deny lines in a group's ACL -----------------------------------------------------------------

KS_WITH_DENIES = KS_BASE.replace(
    " permit gre any any\n",
    " deny gre 192.168.1.0 0.0.0.255 192.168.2.0 0.0.0.255\n deny ip host 10.9.9.9 any\n permit gre any any\n",
)


def test_deny_lines_in_the_group_acl_are_clear_text_selectors_in_order() -> None:
    config, report = ks(KS_WITH_DENIES.format(transform="esp-gcm"))
    assert report.unsupported == [] and report.warnings == []
    assert config.groups[0].selectors == (
        TrafficSelector(47, "192.168.1.0/24", "192.168.2.0/24", permit=False),
        TrafficSelector(0, "10.9.9.9/32", "0.0.0.0/0", permit=False),
        TrafficSelector(47, "0.0.0.0/0", "0.0.0.0/0"),
    )
    assert [s.acl_text() for s in config.groups[0].selectors][1] == "access-list  deny ip host 10.9.9.9 any"


def test_deny_below_an_overlapping_permit_is_warned_about_since_ios_would_encrypt_it() -> None:
    below = KS_BASE.replace(" permit gre any any\n", " permit gre any any\n deny gre host 10.0.0.1 any\n")
    config, report = ks(below.format(transform="esp-gcm"))
    assert [s.permit for s in config.groups[0].selectors] == [True, False]
    (warning,) = report.warnings
    assert warning.line == 14 and "first match" in warning.reason and "put deny lines first" in warning.reason
    apart = KS_BASE.replace(" permit gre any any\n", " permit gre any any\n deny udp host 10.0.0.1 any\n")
    _, report = ks(apart.format(transform="esp-gcm"))
    assert report.warnings == []  # no packet matches both lines: the order changes nothing


def test_deny_line_the_grammar_refuses_is_refused_in_a_group_acl() -> None:
    text = KS_BASE.replace(" permit gre any any\n", " deny udp any any eq 848\n permit gre any any\n")
    _, report = ks(text.format(transform="esp-gcm"))
    (entry,) = report.refused
    assert entry.line == 13 and "qualifiers" in entry.reason


def test_a_group_acl_of_deny_lines_only_is_an_error() -> None:
    text = KS_BASE.replace(" permit gre any any\n", " deny gre any any\n")
    with pytest.raises(ConfigError, match="has no permit entries") as caught:
        ks(text.format(transform="esp-gcm"))
    assert "deny lines alone protect nothing" in str(caught.value)


# --- A GM's address from `crypto map M local-address IF` -------------------------------------------

SEED_GM_TEXT = (FIXTURES / "gm-seed.ios").read_text()


def test_seed_gm_with_its_loopback_in_the_paste_takes_the_address_from_it() -> None:
    text = SEED_GM_TEXT + "interface Loopback0\n ip address 11.11.11.11 255.255.255.255\n"
    config, report = parse(text)
    assert isinstance(config, GroupMemberConfig) and config.local_address == "11.11.11.11"
    assert report.unsupported == [] and report.warnings == []


def test_seed_gm_pasted_verbatim_asks_the_node_for_loopback0() -> None:
    asked: list[str] = []

    def node(name: str) -> str | None:
        asked.append(name)
        return "11.11.11.11"

    report = ConfigReport("test.ios", "ios")
    config = parse_ios_config(SEED_GM_TEXT, report, interface_address=node)
    assert isinstance(config, GroupMemberConfig) and config.local_address == "11.11.11.11"
    assert asked == ["Loopback0"]
    # --local-address still wins, and the node is not asked
    config = parse_ios_config(SEED_GM_TEXT, report, local_address="10.0.0.1", interface_address=node)
    assert isinstance(config, GroupMemberConfig) and config.local_address == "10.0.0.1" and asked == ["Loopback0"]


def test_without_local_address_the_interface_carrying_the_map_is_the_source() -> None:
    text = SEED_GM_TEXT.replace("crypto map DMVPN local-address Loopback0\n", "").replace(
        " ....\n", " ip address 172.27.1.1 255.255.255.0\n"
    )
    config, _ = parse(text)
    assert isinstance(config, GroupMemberConfig) and config.local_address == "172.27.1.1"


def test_nothing_to_resolve_is_a_clear_error_saying_what_to_do() -> None:
    report = ConfigReport("test.ios", "ios")
    with pytest.raises(ConfigError) as caught:
        parse_ios_config(SEED_GM_TEXT, report, interface_address=lambda name: None)
    message = str(caught.value)
    assert "not in the file or on this node (crypto map DMVPN sources from interface Loopback0)" in message
    assert "add `interface Loopback0` with ` ip address A M`" in message
    assert "loopback (lo) an address outside 127.0.0.0/8" in message and "--local-address" in message


def test_check_config_warns_where_the_gm_address_will_come_from() -> None:
    _, report = load_config_with_report(FIXTURES / "gm-seed.ios", checking=True)
    (warning,) = report.warnings
    assert warning.text == "the GDOI address is not in the file (crypto map DMVPN sources from interface Loopback0)"
