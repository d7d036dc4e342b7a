"""The IOS access-list grammar: extended ``permit``/``deny`` lines into traffic selectors, standard lines into rules.

Why a module of its own: an IOS config's ``ip access-list`` stanzas and a YAML config's ``acl`` and
``authorization`` lists are read with the same grammar, so both readers import it from here.
"""

from __future__ import annotations

import ipaddress

from dmvpn_lab.gdoi.config_model import AddressRule
from dmvpn_lab.gdoi.config_report import ConfigError, Refused
from dmvpn_lab.gdoi.config_values import did_you_mean, is_number, number_in_range, parse_ipv4
from dmvpn_lab.gdoi.model import TrafficSelector

PROTOCOL_NUMBERS = {
    "ip": 0,
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ahp": 51,
    "eigrp": 88,
    "ospf": 89,
    "pim": 103,
}


def _acl_address(words: list[str], index: int) -> tuple[str, int]:
    """One ACL address at ``words[index]``: ``any`` | ``host A`` | ``A wildcard``.  Returns (cidr, next)."""
    if index >= len(words):
        raise ConfigError("ACL entry ends before its addresses")
    word = words[index].lower()
    if word == "any":
        return "0.0.0.0/0", index + 1
    if word == "host":
        if index + 1 >= len(words):
            raise ConfigError("`host` needs an address")
        return f"{parse_ipv4(words[index + 1])}/32", index + 2
    if index + 1 >= len(words):
        raise ConfigError(f"address {words[index]} needs a wildcard mask (or use `host {words[index]}`)")
    address = parse_ipv4(words[index])
    wildcard = parse_ipv4(words[index + 1], what="wildcard")
    try:
        net = ipaddress.IPv4Network(f"{address}/{wildcard}", strict=False)
    except ValueError:
        raise Refused(f"wildcard {wildcard} is not contiguous; xfrm selectors need a prefix") from None
    return str(net), index + 2


def parse_acl_entry(words: list[str]) -> TrafficSelector:
    """``permit gre any any`` or ``deny ...`` (words, optional leading sequence number) -> :class:`TrafficSelector`.

    Whether a ``deny`` means anything is for the caller to say: it is a clear-text exception in a group's
    ACL and has no sense in a list of what fail-close holds closed.
    """
    if words and is_number(words[0]):
        words = words[1:]
    if not words:
        raise ConfigError("empty ACL entry")
    action = words[0].lower()
    if action not in ("permit", "deny"):
        raise ConfigError(f"ACL entries start with permit or deny, not {words[0]!r}")
    if len(words) < 2:
        raise ConfigError(f"`{action}` needs a protocol")
    proto_word = words[1].lower()
    if is_number(proto_word):
        protocol = number_in_range(proto_word, "protocol", 0, 255)
    elif proto_word in PROTOCOL_NUMBERS:
        protocol = PROTOCOL_NUMBERS[proto_word]
    else:
        raise Refused(
            f"protocol {words[1]!r} is not supported{did_you_mean(proto_word, list(PROTOCOL_NUMBERS))}"
        )
    source, index = _acl_address(words, 2)
    destination, index = _acl_address(words, index)
    if index != len(words):
        raise Refused(f"ACL qualifiers {' '.join(words[index:])!r} are not supported (ports, log, ...)")
    return TrafficSelector(protocol=protocol, source=source, destination=destination, permit=action == "permit")


def is_standard_acl_number(word: str) -> bool:
    """IOS numbers standard IP access lists 1-99 and 1300-1999."""
    return word.isascii() and word.isdigit() and (1 <= int(word) <= 99 or 1300 <= int(word) <= 1999)


def parse_standard_entry(words: list[str]) -> AddressRule:
    """``permit|deny any | host A | A [wildcard]`` (a standard access-list line) -> :class:`AddressRule`."""
    if not words or words[0].lower() not in ("permit", "deny"):
        raise ConfigError("standard access-list entries are `permit|deny any|host A|A [wildcard]`")
    permit = words[0].lower() == "permit"
    rest = [w.lower() for w in words[1:]]
    if "log" in rest or (rest[:1] == ["any"] and len(rest) > 1):
        raise Refused(f"standard access-list qualifiers {' '.join(words[1:])!r} are not supported (log, ...)")
    if rest == ["any"]:
        return AddressRule(permit)
    if len(rest) == 2 and rest[0] == "host":
        return AddressRule(permit, parse_ipv4(rest[1]), "0.0.0.0")
    if len(rest) in (1, 2) and rest[0] != "host":
        wildcard = parse_ipv4(rest[1], what="wildcard") if len(rest) == 2 else "0.0.0.0"
        return AddressRule(permit, parse_ipv4(rest[0]), wildcard)
    raise Refused(f"standard access-list qualifiers {' '.join(words[1:])!r} are not supported (log, ...)")
