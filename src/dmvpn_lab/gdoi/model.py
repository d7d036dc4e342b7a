"""What the GDOI engines, their configuration readers, daemons and show commands all speak of.

The records themselves live by kind: configuration (what an operator writes) in
:mod:`~dmvpn_lab.gdoi.config_model`, events (what an engine tells its adapters) in
:mod:`~dmvpn_lab.gdoi.events`, status snapshots (what ``show crypto gdoi`` prints) in
:mod:`~dmvpn_lab.gdoi.status`.  Here are the constants and the values all three use: the algorithm
names and the traffic selector.  Nothing here does I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

GDOI_PORT = 848  # RFC 6407 section 2: GDOI uses UDP port 848.
MAX_HALF_OPEN_LIMIT = 10000  # the largest max_half_open accepted: each entry can hold a few KB


# --- Algorithms an operator may choose ------------------------------------------------------------


class Phase1Cipher(enum.Enum):
    """IKEv1 phase 1 encryption (RFC 2409 appendix A, RFC 3602)."""

    AES_CBC_128 = "aes-128"
    AES_CBC_256 = "aes-256"
    TRIPLE_DES = "3des"  # legacy: only when configured


class Phase1Hash(enum.Enum):
    """IKEv1 phase 1 hash / PRF (RFC 2409 appendix A, RFC 4868)."""

    SHA256 = "sha256"
    SHA1 = "sha1"
    MD5 = "md5"  # legacy: only when configured


class DhGroup(enum.IntEnum):
    """Diffie-Hellman groups by their IANA number (RFC 2409, RFC 3526, RFC 5903)."""

    MODP_1024 = 2
    MODP_2048 = 14
    ECP_256 = 19


class TekTransform(enum.Enum):
    """ESP transforms the KS can hand out for the TEK, named as IOS ``crypto ipsec transform-set`` writes
    them (a cipher, its key size unless 128, an integrity transform).

    Every combination of these ciphers and integrity transforms that IOS accepts and Linux xfrm can run
    is here; ``groupsa.TRANSFORMS`` reads the words to find the wire numbers and key sizes.
    """

    ESP_3DES_MD5 = "esp-3des esp-md5-hmac"
    ESP_3DES_SHA1 = "esp-3des esp-sha-hmac"
    ESP_3DES_SHA256 = "esp-3des esp-sha256-hmac"
    ESP_3DES_SHA384 = "esp-3des esp-sha384-hmac"
    ESP_3DES_SHA512 = "esp-3des esp-sha512-hmac"
    ESP_AES128_MD5 = "esp-aes esp-md5-hmac"
    ESP_AES128_SHA1 = "esp-aes esp-sha-hmac"
    ESP_AES128_SHA256 = "esp-aes esp-sha256-hmac"
    ESP_AES128_SHA384 = "esp-aes esp-sha384-hmac"
    ESP_AES128_SHA512 = "esp-aes esp-sha512-hmac"
    ESP_AES192_MD5 = "esp-aes 192 esp-md5-hmac"
    ESP_AES192_SHA1 = "esp-aes 192 esp-sha-hmac"
    ESP_AES192_SHA256 = "esp-aes 192 esp-sha256-hmac"
    ESP_AES192_SHA384 = "esp-aes 192 esp-sha384-hmac"
    ESP_AES192_SHA512 = "esp-aes 192 esp-sha512-hmac"
    ESP_AES256_MD5 = "esp-aes 256 esp-md5-hmac"
    ESP_AES256_SHA1 = "esp-aes 256 esp-sha-hmac"
    ESP_AES256_SHA256 = "esp-aes 256 esp-sha256-hmac"
    ESP_AES256_SHA384 = "esp-aes 256 esp-sha384-hmac"
    ESP_AES256_SHA512 = "esp-aes 256 esp-sha512-hmac"
    ESP_GCM128 = "esp-gcm"
    ESP_GCM192 = "esp-gcm 192"
    ESP_GCM256 = "esp-gcm 256"


class RekeyTransport(enum.Enum):
    UNICAST = "unicast"
    MULTICAST = "multicast"


# --- Traffic selectors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficSelector:
    """One line of the ACL the KS downloads: ``permit gre any any`` (protect) or a ``deny`` (leave in clear).

    ``protocol`` is an IP protocol number (47 for GRE, 0 for ``ip``); networks are CIDR strings,
    ``0.0.0.0/0`` for ``any``.  ``permit`` False is an IOS ``deny`` line: members send and accept that
    traffic in clear even where a ``permit`` line also covers it.
    """

    protocol: int = 47
    source: str = "0.0.0.0/0"
    destination: str = "0.0.0.0/0"
    permit: bool = True

    def acl_text(self) -> str:
        """The line as IOS shows it under ``ACL Downloaded From KS``."""
        proto = {47: "gre", 0: "ip", 6: "tcp", 17: "udp", 1: "icmp"}.get(self.protocol, str(self.protocol))
        action = "permit" if self.permit else "deny"
        return f"access-list  {action} {proto} {_acl_addr(self.source)} {_acl_addr(self.destination)}"


def _acl_addr(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == 0:
        return "any"
    if net.prefixlen == 32:
        return f"host {net.network_address}"
    return f"{net.network_address} {net.hostmask}"
