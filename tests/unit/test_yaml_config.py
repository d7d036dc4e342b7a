"""The YAML form of the configuration, format detection, and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmvpn_lab.gdoi.config import detect_format, load_config, load_config_with_report
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig
from dmvpn_lab.gdoi.config_report import ConfigError
from dmvpn_lab.gdoi.model import (
    DhGroup,
    Phase1Cipher,
    Phase1Hash,
    RekeyTransport,
    TekTransform,
    TrafficSelector,
)

KS_YAML = """\
role: ks
local_address: 1.1.1.1
port: 10848
max_missed_acks: 3
psk:
  2.2.2.2: cisco
  11.11.11.11: other
isakmp_policies:
  - priority: 20
    encryption: aes-128
    hash: sha1
    group: 14
  - priority: 10
groups:
  - name: GDOI_GROUP
    identity: 123
    transform: esp-aes 256 esp-sha256-hmac
    tek_lifetime: 1200
    replay_time_window: 5
    acl:
      - permit gre any any
      - {protocol: ip, source: 10.0.0.0/8, destination: 192.0.2.1}
    rekey:
      transport: multicast
      multicast_address: 239.192.1.1
      retransmit_interval: 10
      retransmit_count: 1
      rsa_key_label: K
      rsa_modulus: 1024
"""

GM_YAML = """\
# a group member
role: gm
local_address: 11.11.11.11
group: GDOI_GM
identity: 123
servers: [1.1.1.1, 1.1.1.2]
psk: {1.1.1.1: cisco}
interface: Serial1/0
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_key_server_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, KS_YAML))
    assert isinstance(config, KeyServerConfig)
    assert (config.local_address, config.port, config.max_missed_acks) == ("1.1.1.1", 10848, 3)
    assert config.psk_by_peer == {"2.2.2.2": b"cisco", "11.11.11.11": b"other"}
    assert [p.priority for p in config.isakmp_policies] == [10, 20]
    assert config.isakmp_policies[1].cipher is Phase1Cipher.AES_CBC_128
    assert config.isakmp_policies[1].hash is Phase1Hash.SHA1
    assert config.isakmp_policies[1].group is DhGroup.MODP_2048
    (group,) = config.groups
    assert group.transform is TekTransform.ESP_AES256_SHA256
    assert group.tek_lifetime_s == 1200 and group.replay_time_window_s == 5
    assert group.selectors == (TrafficSelector(), TrafficSelector(0, "10.0.0.0/8", "192.0.2.1/32"))
    assert group.rekey_transport is RekeyTransport.MULTICAST
    assert group.rekey_multicast_address == "239.192.1.1"
    assert (group.rsa_key_label, group.rsa_modulus) == ("K", 1024)
    assert (group.rekey_retransmit_interval_s, group.rekey_retransmit_count) == (10, 1)


def test_group_member_yaml_and_command_line_address(tmp_path: Path) -> None:
    path = write(tmp_path, GM_YAML)
    config = load_config(path)
    assert isinstance(config, GroupMemberConfig)
    assert config.servers == ("1.1.1.1", "1.1.1.2") and config.interface == "Serial1/0"
    assert load_config(path, local_address="10.9.9.9").local_address == "10.9.9.9"


def test_format_is_detected_by_content_not_name(tmp_path: Path) -> None:
    assert detect_format(KS_YAML) == "yaml"
    assert detect_format(GM_YAML) == "yaml"
    assert detect_format("crypto isakmp policy 10\n authentication pre-share\n") == "ios"
    assert detect_format("! comment\nhostname KS\n") == "ios"
    assert isinstance(load_config(write(tmp_path, GM_YAML, "gm.ios")), GroupMemberConfig)


@pytest.mark.parametrize(
    ("old", "new", "message", "line"),
    [
        ("    identity: 123\n", "    identity: 123\n    colour: red\n", "unknown key 'colour'", 17),
        ("transform: esp-aes 256 esp-sha256-hmac", "transform: esp-des", "'esp-des' is not supported", 17),
        ("  2.2.2.2: cisco", "  2.2.2: cisco", "not an IPv4 address", 6),
        ("      rsa_modulus: 1024", "      rsa_modulus: 512", "outside 1024..4096", 29),
        ("    group: 14", "    group: 5", "DH group 5", 12),
        ("      multicast_address: 239.192.1.1\n", "", "needs `multicast_address`", 23),
        # deny lines are valid in a group's ACL now (traffic left in clear); a malformed one is still located
        ("      - permit gre any any", "      - deny gre any any log", "qualifiers 'log' are not supported", 21),
    ],
)
def test_errors_name_the_line(tmp_path: Path, old: str, new: str, message: str, line: int) -> None:
    assert old in KS_YAML
    path = write(tmp_path, KS_YAML.replace(old, new))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="role must be"):
        load_config(write(tmp_path, "role: router\nlocal_address: 1.1.1.1\n"))
    with pytest.raises(ConfigError, match="local_address is missing"):
        load_config(write(tmp_path, "role: gm\ngroup: G\nidentity: 1\nservers: [1.1.1.1]\n"))
    with pytest.raises(ConfigError, match="needs `servers`"):
        load_config(write(tmp_path, "role: gm\nlocal_address: 1.1.1.1\ngroup: G\nidentity: 1\n"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("false", ()),
        ("true", (TrafficSelector(),)),
        ("{acl: [permit gre host 10.0.0.1 any]}", (TrafficSelector(47, "10.0.0.1/32", "0.0.0.0/0"),)),
        ("{}", (TrafficSelector(),)),
    ],
)
def test_group_member_fail_close(tmp_path: Path, value: str | None, expected: tuple[TrafficSelector, ...]) -> None:
    text = GM_YAML if value is None else GM_YAML + f"fail_close: {value}\n"
    config = load_config(write(tmp_path, text))
    assert isinstance(config, GroupMemberConfig)
    assert config.fail_close_selectors == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes please", "expected true, false or a mapping"),
        ("{acl: [deny gre any any]}", "deny"),
        ("{acls: []}", "unknown key 'acls'"),
    ],
)
def test_group_member_fail_close_errors(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, GM_YAML + f"fail_close: {value}\n"))
    assert ":9:" in str(caught.value)


def test_replay_window_and_missing_keys_are_warned_about_with_their_lines(tmp_path: Path) -> None:
    _, report = load_config_with_report(write(tmp_path, KS_YAML))
    (replay,) = report.warnings
    assert (replay.line, replay.text) == (19, "replay_time_window: 5") and "not enforced" in replay.reason
    _, report = load_config_with_report(write(tmp_path, GM_YAML))
    (missing,) = report.warnings  # servers 1.1.1.1 and 1.1.1.2, a key for the first only
    assert missing.text == "no pre-shared key for key server 1.1.1.2"
    _, report = load_config_with_report(write(tmp_path, GM_YAML.replace("{1.1.1.1: cisco}", "{0.0.0.0: cisco}")))
    assert report.warnings == []  # the wildcard key covers both servers


def test_deny_lines_in_a_yaml_group_acl_are_clear_text_selectors(tmp_path: Path) -> None:
    text = KS_YAML.replace(
        "      - permit gre any any\n", "      - deny gre host 10.0.0.1 any\n      - permit gre any any\n"
    )
    config = load_config(write(tmp_path, text))
    assert isinstance(config, KeyServerConfig)
    assert config.groups[0].selectors[:2] == (
        TrafficSelector(47, "10.0.0.1/32", "0.0.0.0/0", permit=False),
        TrafficSelector(47, "0.0.0.0/0", "0.0.0.0/0"),
    )


def test_a_yaml_group_acl_of_deny_lines_only_is_an_error_at_the_first_deny(tmp_path: Path) -> None:
    text = KS_YAML.replace(
        "      - permit gre any any\n      - {protocol: ip, source: 10.0.0.0/8, destination: 192.0.2.1}\n",
        "      - deny gre any any\n",
    )
    with pytest.raises(ConfigError, match="only deny entries") as caught:
        load_config(write(tmp_path, text))
    assert caught.value.line == 21
