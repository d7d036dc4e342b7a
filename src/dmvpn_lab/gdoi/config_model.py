"""What an operator configures for a key server or a group member, as the readers produce it.

Plain frozen records (:mod:`~dmvpn_lab.gdoi.config` and :mod:`~dmvpn_lab.gdoi.ios_config` build them, the
engines and daemons read them); no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from .model import GDOI_PORT, DhGroup, Phase1Cipher, Phase1Hash, RekeyTransport, TekTransform, TrafficSelector

# ``crypto isakmp key K address 0.0.0.0 0.0.0.0`` (IOS's wildcard key) is kept under this address.  No
# real peer can have it: a daemon refuses to bind the unspecified address (config_values.check_local_address).
WILDCARD_PEER = "0.0.0.0"


def psk_for(psk_by_peer: Mapping[str, bytes], address: str) -> bytes | None:
    """The pre-shared key for ``address``: its own key if it has one, else the wildcard key, else None.

    Main Mode with pre-shared keys must pick the key by the peer's IP address before it can read the
    peer's identity (RFC 2409 section 5.4); as on IOS, a key for the exact address wins over the wildcard.
    """
    own = psk_by_peer.get(address)
    return own if own is not None else psk_by_peer.get(WILDCARD_PEER)


@dataclass(frozen=True)
class IsakmpPolicy:
    """One ``crypto isakmp policy N``: a phase 1 proposal.  Defaults are the strong ones."""

    priority: int = 10
    cipher: Phase1Cipher = Phase1Cipher.AES_CBC_256
    hash: Phase1Hash = Phase1Hash.SHA256
    group: DhGroup = DhGroup.ECP_256
    lifetime_s: int = 86400


@dataclass(frozen=True)
class AddressRule:
    """One line of a standard access list: ``permit|deny`` addresses under a wildcard mask."""

    permit: bool
    address: str = "0.0.0.0"
    wildcard: str = "255.255.255.255"  # ``any``; ``host A`` is wildcard 0.0.0.0

    def matches(self, address: str) -> bool:
        care = ~int(ipaddress.IPv4Address(self.wildcard)) & 0xFFFFFFFF
        return int(ipaddress.IPv4Address(address)) & care == int(ipaddress.IPv4Address(self.address)) & care


@dataclass(frozen=True)
class MemberAuthorization:
    """IOS ``authorization address ipv4 ACL``: the member addresses a group serves.

    As in an IOS access list the first matching line decides and an address no line matches is denied.
    """

    acl_name: str
    rules: tuple[AddressRule, ...]

    def permits(self, address: str) -> bool:
        return next((rule.permit for rule in self.rules if rule.matches(address)), False)


@dataclass(frozen=True)
class GroupPolicy:
    """What the KS of one group hands out (``crypto gdoi group`` with ``server local``)."""

    name: str
    identity: int
    transform: TekTransform = TekTransform.ESP_GCM256
    tek_lifetime_s: int = 3600  # IOS default
    kek_lifetime_s: int = 86400  # IOS default
    kek_cipher: Phase1Cipher = Phase1Cipher.AES_CBC_256
    selectors: tuple[TrafficSelector, ...] = (TrafficSelector(),)
    rekey_transport: RekeyTransport = RekeyTransport.UNICAST
    rekey_retransmit_interval_s: int = 60  # ``rekey retransmit 60 number 2``
    rekey_retransmit_count: int = 2
    rekey_multicast_address: str | None = None
    rsa_key_label: str = "GDOI_KEYS"
    rsa_modulus: int = 2048
    replay_time_window_s: int | None = None  # ``replay time window-size 5``
    rekey_ahead_s: int = 90  # a rekey is sent this long before the TEK expires
    authorization: MemberAuthorization | None = None  # None: any member with a pre-shared key


@dataclass(frozen=True)
class Redundancy:
    """IOS ``redundancy`` under ``server local``: this key server cooperates with ``peers`` (COOP).

    The primary is elected by ``local_priority``, then by the higher address (docs/coop.md).  The
    timers are this project's own settings: IOS keeps its COOP timers to itself.
    """

    peers: tuple[str, ...]  # ``peer address ipv4 A``, the other key servers of the group
    local_priority: int = 1  # ``local priority N`` (IOS: 1..255, default 1)
    announce_period_s: float = 10.0  # how often each key server says it is alive
    dead_time_s: float = 30.0  # a primary silent this long is replaced by a secondary


@dataclass(frozen=True)
class KeyServerConfig:
    local_address: str
    groups: tuple[GroupPolicy, ...]
    psk_by_peer: dict[str, bytes]  # ``crypto isakmp key 0 cisco address 2.2.2.2``; look up with psk_for
    isakmp_policies: tuple[IsakmpPolicy, ...] = (IsakmpPolicy(),)
    port: int = GDOI_PORT
    max_half_open: int = 1000  # registrations in progress at once before new ones are refused
    # strongSwan's ``block_threshold``: beyond this many registrations in progress from one address,
    # that address's Main Mode message 1s are answered without keeping state (see admission.py).
    max_half_open_per_peer: int = 5
    # Above this many registrations in progress, every message 1 is answered without keeping state.
    cookie_threshold: int = 10
    max_missed_acks: int | None = None  # None: retransmit_count + 1 rekeys unacknowledged drops the GM
    redundancy: Redundancy | None = None  # None: a stand-alone key server (no COOP)


@dataclass(frozen=True)
class GroupMemberConfig:
    local_address: str
    group_name: str
    identity: int
    servers: tuple[str, ...]  # ``server address ipv4 1.1.1.1``, in preference order
    psk_by_peer: dict[str, bytes]  # look up with psk_for (a wildcard key may stand for the server)
    isakmp_policies: tuple[IsakmpPolicy, ...] = (IsakmpPolicy(),)
    server_port: int = GDOI_PORT
    crypto_map: str = "DMVPN"  # only for display
    interface: str = "eth1"  # only for display
    registration_retry_s: float = 10.0
    # IOS ``crypto map M N gdoi fail-close`` + ``activate``: traffic matching these selectors must
    # never leave in clear, so the daemon demands ESP for it before the first registration (empty: off,
    # the IOS default "fail-open").
    fail_close_selectors: tuple[TrafficSelector, ...] = ()
