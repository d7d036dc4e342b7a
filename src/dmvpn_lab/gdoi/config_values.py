"""Values every configuration reader checks the same way: addresses, numbers, RSA key limits, group identities.

Why a module of its own: the YAML and IOS readers and the key store (:mod:`~dmvpn_lab.gdoi.keys`) share
these rules; keeping them here lets each import them without importing another reader.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping

from dmvpn_lab.gdoi.config_report import ConfigError

RSA_MODULUS_MIN = 1024
RSA_MODULUS_MAX = 4096


def parse_ipv4(text: str, *, line: int | None = None, what: str = "address") -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an IPv4 address", line=line) from None


def check_rsa_modulus(bits: int, *, line: int | None = None) -> int:
    if not RSA_MODULUS_MIN <= bits <= RSA_MODULUS_MAX:
        raise ConfigError(
            f"RSA modulus {bits} is outside {RSA_MODULUS_MIN}..{RSA_MODULUS_MAX} bits",
            line=line,
            hint="use 2048",
        )
    return bits


RSA_KEY_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_rsa_key_label(label: str) -> str:
    """The key server keeps the key in ``<key-dir>/<label>.pem``, so a label must be a safe file name."""
    if not RSA_KEY_LABEL.match(label):
        raise ConfigError(
            f"RSA key label {label!r} is not usable as a file name",
            hint="letters, digits, _ . - (up to 64, starting with a letter or digit)",
        )
    return label


def identity_taken(name: str, identity: int, group_by_identity: Mapping[int, str]) -> str:
    """Members ask for a group by its identity alone (RFC 6407 section 3.2), so two groups cannot share one."""
    return f"group {name}: identity {identity} is already used by group {group_by_identity[identity]}"


def check_local_address(address: str, role: str) -> str:
    """The address a daemon binds must be one unicast address: it is the source of every message and the
    ID members and key servers know each other by.  (A subnet's directed broadcast depends on the
    netmask: the daemon asks the kernel about it when it binds.)"""
    ip = ipaddress.IPv4Address(address)
    kinds = [
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_multicast, "a multicast address"),
        (ip == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
        (ip.is_reserved, "a reserved address"),
    ]
    kind = next((text for hit, text in kinds if hit), None)
    if kind is not None:
        daemon = "key server" if role == "ks" else "group member"
        raise ConfigError(
            f"local address {address} is {kind}; a {daemon} binds one unicast address of this host",
            hint="set local_address (or --local-address) to an address on an interface, e.g. a loopback",
        )
    return address


def is_number(word: str) -> bool:
    """Plain decimal digits: ``str.isdigit()`` also accepts ``²`` and other digits ``int()`` refuses."""
    return word.isascii() and word.isdigit()


def number_in_range(word: str, what: str, low: int = 0, high: int = 2**32 - 1) -> int:
    """``word`` as a number in ``low..high``; the error names ``what`` it was meant to be."""
    if not is_number(word):
        raise ConfigError(f"{what} must be a number, not {word!r}")
    value = int(word)
    if not low <= value <= high:
        raise ConfigError(f"{what} {value} is outside {low}..{high}")
    return value


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``choices``, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
