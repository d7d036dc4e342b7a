"""Per-group authorization (IOS ``authorization address ipv4 ACL``).

With two groups configured, a member with a pre-shared key must get only the keys of a group whose
authorization list permits its address; every refused GROUPKEY-PULL is counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import KS_ADDR, PSK, Network, group_policy, rsa_key, seeded_random
from test_ios_config import KS_BASE

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.cli import main
from dmvpn_lab.gdoi.config import load_config
from dmvpn_lab.gdoi.config_model import AddressRule, GroupMemberConfig, KeyServerConfig, MemberAuthorization
from dmvpn_lab.gdoi.config_report import ConfigError, ConfigReport
from dmvpn_lab.gdoi.events import MemberRegistered, Registered, RegistrationFailed
from dmvpn_lab.gdoi.gm import GroupMember
from dmvpn_lab.gdoi.ios_config import parse_ios_config
from dmvpn_lab.gdoi.ks import KeyServer

A, B = "127.0.0.11", "127.0.0.12"


def test_address_rules_match_like_an_ios_standard_access_list() -> None:
    auth = MemberAuthorization(
        "GMS",
        (
            AddressRule(False, "10.1.1.7", "0.0.0.0"),
            AddressRule(True, "10.1.0.0", "0.0.255.255"),
            AddressRule(True, "10.2.0.1", "0.0.255.0"),  # wildcards need not be contiguous
        ),
    )
    assert auth.permits("10.1.200.3") and auth.permits("10.2.77.1")
    assert not auth.permits("10.1.1.7")  # the first matching line decides
    assert not auth.permits("10.2.77.2") and not auth.permits("192.0.2.1")  # implicit deny
    assert MemberAuthorization("ANY", (AddressRule(True),)).permits("198.51.100.9")


def two_groups() -> Network:
    """Group OPEN (identity 1) serves anyone with a key; group CLOSED (identity 2) only B."""
    closed = MemberAuthorization("ONLY_B", (AddressRule(True, B, "0.0.0.0"),))
    groups = (
        group_policy(name="OPEN", identity=1),
        group_policy(name="CLOSED", identity=2, authorization=closed),
    )
    conf = KeyServerConfig(KS_ADDR, groups, {A: PSK, B: PSK})
    net = Network()
    net.add(KS_ADDR, KeyServer(conf, {"GDOI_KEYS": rsa_key()}, random=seeded_random(1)))
    for i, (address, identity) in enumerate([(A, 2), (B, 2)]):
        gm = GroupMember(
            GroupMemberConfig(address, "G", identity, (KS_ADDR,), {KS_ADDR: PSK}), random=seeded_random(50 + i)
        )
        net.add(address, gm)
        gm.start(0.0)
    return net


def test_an_unauthorized_member_gets_no_keys_and_each_refusal_is_counted() -> None:
    net = two_groups()
    net.run_until(60)
    assert [e.address for e in net.of_type(KS_ADDR, MemberRegistered)] == [B]  # type: ignore[attr-defined]
    assert not net.of_type(A, Registered)
    failures = [e.reason for e in net.of_type(A, RegistrationFailed)]  # type: ignore[attr-defined]
    assert failures and "AUTHENTICATION-FAILED" in failures[0]
    status = net.ks().status(net.now)
    refused = status.rejected["unauthorized"]
    assert refused == len(failures) >= 2  # the member retries, and every try is counted
    by_group = {g.group_name: g.unauthorized_pulls for g in status.groups}
    assert by_group == {"OPEN": 0, "CLOSED": refused}
    view = show.KsView(status=status, now=net.now, policies=net.ks().config.groups)
    assert f"    Unauthorized pulls       : {refused}" in show.format_gdoi_ks(view)
    assert show.gdoi_ks_json(view)["groups"][1]["unauthorized_pulls"] == refused
    assert show.view_from_json(show.view_to_json(view)) == view


IOS_KS = (
    KS_BASE.format(transform="esp-gcm 256").replace(
        "  address ipv4 1.1.1.1\n", "  address ipv4 1.1.1.1\n  authorization address ipv4 {acl}\n"
    )
    + "{lists}\n"
)


@pytest.mark.parametrize(
    ("acl", "lists"),
    [
        ("GM_LIST", "ip access-list standard GM_LIST\n remark spokes\n deny host 10.0.0.9\n permit 10.0.0.0 0.0.0.255"),
        ("10", "access-list 10 deny 10.0.0.9\naccess-list 10 permit 10.0.0.0 0.0.0.255"),
        ("GMX", "ip access-list extended GMX\n permit ip 10.0.0.0 0.0.0.255 any\n permit ip host 10.0.0.9 any"),
    ],
)
def test_ios_authorization_address_ipv4(acl: str, lists: str) -> None:
    report = ConfigReport("ks.ios", "ios")
    config = parse_ios_config(IOS_KS.format(acl=acl, lists=lists), report)
    assert isinstance(config, KeyServerConfig) and not report.refused
    (group,) = config.groups
    assert group.authorization is not None and group.authorization.acl_name == acl
    assert group.authorization.permits("10.0.0.20") and not group.authorization.permits("10.0.1.20")
    extended = acl == "GMX"  # an extended list has only permits: its sources count
    assert group.authorization.permits("10.0.0.9") is extended


def test_ios_authorization_errors() -> None:
    with pytest.raises(ConfigError, match="'NOPE' is not defined"):
        parse_ios_config(IOS_KS.format(acl="NOPE", lists=""), ConfigReport("ks.ios", "ios"))
    text = IOS_KS.format(
        acl="L", lists="ip access-list standard L\n permit 10.0.0.0 0.0.0.255 log\naccess-list 9 permit any log"
    )
    report = ConfigReport("ks.ios", "ios")
    parse_ios_config(text, report)
    first, second = report.refused
    assert "qualifiers '10.0.0.0 0.0.0.255 log' are not supported" in first.reason
    assert "qualifiers 'any log' are not supported" in second.reason
    no_auth = parse_ios_config(
        IOS_KS.replace("  authorization address ipv4 {acl}\n", "").format(lists=""), ConfigReport("k", "ios")
    )
    assert isinstance(no_auth, KeyServerConfig) and no_auth.groups[0].authorization is None
    as_selectors = IOS_KS.replace("match address ipv4 ACL", "match address ipv4 L").format(
        acl="L", lists="ip access-list standard L\n permit any"
    )
    with pytest.raises(ConfigError, match="standard list"):
        parse_ios_config(as_selectors, ConfigReport("ks.ios", "ios"))


YAML_KS = """\
role: ks
local_address: 1.1.1.1
psk: {{2.2.2.2: cisco}}
groups:
  - name: G
    identity: 7
    authorization: {items}
"""


def test_yaml_authorization(tmp_path: Path) -> None:
    path = tmp_path / "ks.yaml"
    path.write_text(YAML_KS.format(items="[deny host 10.0.0.9, permit 10.0.0.0 0.0.0.255, 192.0.2.0/24, 198.51.100.7]"))
    config = load_config(path)
    assert isinstance(config, KeyServerConfig)
    auth = config.groups[0].authorization
    assert auth is not None
    assert [auth.permits(a) for a in ("10.0.0.9", "10.0.0.1", "192.0.2.200", "198.51.100.7", "198.51.100.8")] == [
        False,
        True,
        True,
        True,
        False,
    ]
    for bad, message in (
        ("[]", "non-empty list"),
        ("[permit bogus]", "not an IPv4 address"),
        ("[nonsense]", "neither"),
    ):
        path.write_text(YAML_KS.format(items=bad))
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_check_config_names_the_authorization_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ks.ios"
    path.write_text(IOS_KS.format(acl="10", lists="access-list 10 permit 10.0.0.0 0.0.0.255"))
    assert main(["check-config", str(path)]) == 0
    assert "1 pre-shared key(s), members authorized by 10\n" in capsys.readouterr().out
