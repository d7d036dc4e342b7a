"""Configuring cooperative key servers: IOS ``redundancy`` under ``server local`` and its YAML form."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmvpn_lab.gdoi.config import load_config
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig, Redundancy
from dmvpn_lab.gdoi.config_report import ConfigError, ConfigReport
from dmvpn_lab.gdoi.ios_config import parse_ios_config

IOS_KS = """\
crypto isakmp key 0 cisco address 2.2.2.2
crypto isakmp key 0 coopkey address 1.1.1.2
crypto isakmp key 0 coopkey address 1.1.1.3
crypto ipsec transform-set TS esp-aes 256 esp-sha256-hmac
crypto ipsec profile P
 set transform-set TS
crypto gdoi group G
 identity number 7
 server local
  redundancy
   local priority 100
   peer address ipv4 1.1.1.2
   peer address ipv4 1.1.1.3
{timers}  sa ipsec 1
   profile P
   match address ipv4 ACL
  address ipv4 1.1.1.1
ip access-list extended ACL
 permit gre any any
"""


def ios_ks(text: str) -> KeyServerConfig:
    report = ConfigReport("ks.ios", "ios")
    config = parse_ios_config(text, report)
    assert isinstance(config, KeyServerConfig)
    assert report.unsupported == []
    return config


def test_ios_redundancy_lines() -> None:
    config = ios_ks(IOS_KS.format(timers="   timers announce 5 dead 15\n"))
    assert config.redundancy == Redundancy(("1.1.1.2", "1.1.1.3"), 100, 5.0, 15.0)


def test_ios_redundancy_defaults() -> None:
    config = ios_ks(IOS_KS.format(timers="").replace("   local priority 100\n", ""))
    assert config.redundancy == Redundancy(("1.1.1.2", "1.1.1.3"), 1, 10.0, 30.0)


def test_ios_without_redundancy_is_a_stand_alone_key_server() -> None:
    text = IOS_KS.format(timers="")
    dropped = {"redundancy", "local priority 100", "peer address ipv4 1.1.1.2", "peer address ipv4 1.1.1.3"}
    text = "".join(line for line in text.splitlines(keepends=True) if line.strip() not in dropped)
    assert ios_ks(text).redundancy is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  redundancy\n", "", "belongs under `redundancy`"),
        ("crypto isakmp key 0 coopkey address 1.1.1.3\n", "", "1.1.1.3 has no pre-shared key"),
        ("peer address ipv4 1.1.1.3", "peer address ipv4 1.1.1.1", "is this key server itself"),
        ("local priority 100", "local priority 300", "outside"),
        ("  sa ipsec 1", "   timers announce 10 dead 15\n  sa ipsec 1", "under two announce periods"),
    ],
)
def test_ios_redundancy_errors(old: str, new: str, message: str) -> None:
    text = IOS_KS.format(timers="")
    assert old in text
    with pytest.raises(ConfigError, match=message):
        parse_ios_config(text.replace(old, new), ConfigReport("ks.ios", "ios"))


def test_ios_groups_must_agree_on_redundancy() -> None:
    second = """\
crypto gdoi group H
 identity number 8
 server local
  redundancy
   local priority 50
   peer address ipv4 1.1.1.2
   peer address ipv4 1.1.1.3
  sa ipsec 1
   profile P
   match address ipv4 ACL
  address ipv4 1.1.1.1
"""
    with pytest.raises(ConfigError, match="configure redundancy differently"):
        parse_ios_config(IOS_KS.format(timers="") + second, ConfigReport("ks.ios", "ios"))


def test_ios_group_member_lists_key_servers_in_order() -> None:
    text = """\
crypto isakmp key 0 cisco address 1.1.1.1
crypto isakmp key 0 cisco address 1.1.1.2
crypto gdoi group G
 identity number 7
 server address ipv4 1.1.1.2
 server address ipv4 1.1.1.1
"""
    config = parse_ios_config(text, ConfigReport("gm.ios", "ios"), local_address="11.11.11.11")
    assert isinstance(config, GroupMemberConfig)
    assert config.servers == ("1.1.1.2", "1.1.1.1")


YAML_KS = """\
role: ks
local_address: 1.1.1.1
psk:
  2.2.2.2: cisco
  1.1.1.2: coopkey
redundancy:
  local_priority: 100
  peers: [1.1.1.2]
  announce_period: 2
  dead_time: 6
groups:
  - name: G
    identity: 7
"""


def test_yaml_redundancy(tmp_path: Path) -> None:
    path = tmp_path / "ks.yaml"
    path.write_text(YAML_KS)
    config = load_config(path)
    assert isinstance(config, KeyServerConfig)
    assert config.redundancy == Redundancy(("1.1.1.2",), 100, 2.0, 6.0)


@pytest.mark.parametrize(
    ("old", "new", "message", "line"),
    [
        ("  peers: [1.1.1.2]", "  peers: [1.1.1.9]", "1.1.1.9 has no pre-shared key", 8),
        ("  dead_time: 6", "  dead_time: 3", "under two announce periods", 10),
        ("  local_priority: 100", "  local_priority: 0", "outside 1..255", 7),
        ("  dead_time: 6", "  dead_time: 6\n  preempt: true", "unknown key 'preempt'", 11),
        ("  peers: [1.1.1.2]", "  peers: []", "non-empty list", 8),
    ],
)
def test_yaml_redundancy_errors(tmp_path: Path, old: str, new: str, message: str, line: int) -> None:
    assert old in YAML_KS
    path = tmp_path / "ks.yaml"
    path.write_text(YAML_KS.replace(old, new))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert caught.value.line == line
