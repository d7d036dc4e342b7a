"""The data the GDOI engine, its configuration readers, its daemons and its show commands share.

Everything here is plain data: configuration (what an operator writes), events (what the engine tells
its adapters) and status snapshots (what ``show crypto gdoi`` prints).  No module in this file does I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

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


# --- Configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IsakmpPolicy:
    """One ``crypto isakmp policy N``: a phase 1 proposal.  Defaults are the strong ones."""

    priority: int = 10
    cipher: Phase1Cipher = Phase1Cipher.AES_CBC_256
    hash: Phase1Hash = Phase1Hash.SHA256
    group: DhGroup = DhGroup.ECP_256
    lifetime_s: int = 86400


@dataclass(frozen=True)
class TrafficSelector:
    """One ``permit`` line of the ACL the KS downloads (``permit gre any any``).

    ``protocol`` is an IP protocol number (47 for GRE, 0 for ``ip``); networks are CIDR strings,
    ``0.0.0.0/0`` for ``any``.
    """

    protocol: int = 47
    source: str = "0.0.0.0/0"
    destination: str = "0.0.0.0/0"

    def acl_text(self) -> str:
        """The line as IOS shows it under ``ACL Downloaded From KS``."""
        proto = {47: "gre", 0: "ip", 6: "tcp", 17: "udp", 1: "icmp"}.get(self.protocol, str(self.protocol))
        return f"access-list  permit {proto} {_acl_addr(self.source)} {_acl_addr(self.destination)}"


def _acl_addr(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == 0:
        return "any"
    if net.prefixlen == 32:
        return f"host {net.network_address}"
    return f"{net.network_address} {net.hostmask}"


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
class KeyServerConfig:
    local_address: str
    groups: tuple[GroupPolicy, ...]
    psk_by_peer: dict[str, bytes]  # ``crypto isakmp key 0 cisco address 2.2.2.2``
    isakmp_policies: tuple[IsakmpPolicy, ...] = (IsakmpPolicy(),)
    port: int = GDOI_PORT
    max_half_open: int = 1000  # registrations in progress at once before new ones are refused
    # strongSwan's ``block_threshold``: beyond this many registrations in progress from one address,
    # that address's Main Mode message 1s are answered without keeping state (see admission.py).
    max_half_open_per_peer: int = 5
    # Above this many registrations in progress, every message 1 is answered without keeping state.
    cookie_threshold: int = 10
    max_missed_acks: int | None = None  # None: retransmit_count + 1 rekeys unacknowledged drops the GM


@dataclass(frozen=True)
class GroupMemberConfig:
    local_address: str
    group_name: str
    identity: int
    servers: tuple[str, ...]  # ``server address ipv4 1.1.1.1``, in preference order
    psk_by_peer: dict[str, bytes]
    isakmp_policies: tuple[IsakmpPolicy, ...] = (IsakmpPolicy(),)
    server_port: int = GDOI_PORT
    crypto_map: str = "DMVPN"  # only for display
    interface: str = "eth1"  # only for display
    registration_retry_s: float = 10.0
    # IOS ``crypto map M N gdoi fail-close`` + ``activate``: traffic matching these selectors must
    # never leave in clear, so the daemon demands ESP for it before the first registration (empty: off,
    # the IOS default "fail-open").
    fail_close_selectors: tuple[TrafficSelector, ...] = ()


# --- Keys the engine hands to the kernel applier --------------------------------------------------


@dataclass(frozen=True)
class TekSA:
    """A traffic-encryption SA as it goes into the kernel (all members share it)."""

    spi: int
    transform: TekTransform
    encryption_key: bytes  # for GCM: key followed by the 4-byte salt (RFC 4106 section 8.1)
    integrity_key: bytes  # empty for GCM
    selectors: tuple[TrafficSelector, ...]
    lifetime_s: int
    installed_at: float  # engine clock when the GM got it
    replay_time_window_s: int | None = None

    def expires_at(self) -> float:
        return self.installed_at + self.lifetime_s


# --- Events from the engines to their adapters ----------------------------------------------------


@dataclass(frozen=True)
class Phase1Established:
    """An IKE SA came up.  ``icookie``/``enc_key`` are what Wireshark's IKEv1 table needs (keylog)."""

    peer: str
    icookie: bytes
    rcookie: bytes
    encryption_key: bytes


@dataclass(frozen=True)
class Registered:
    """GM: GROUPKEY-PULL finished; the TEKs to install follow as TekInstalled events."""

    server: str
    group_name: str


@dataclass(frozen=True)
class TekInstalled:
    """GM: a TEK to install now (registration or rekey).  The old one stays until TekExpired."""

    sa: TekSA


@dataclass(frozen=True)
class TekExpired:
    """GM: remove the state with this SPI (its lifetime ran out)."""

    spi: int


@dataclass(frozen=True)
class TekDeleted:
    """GM: remove the state with this SPI now: a rekey's Delete payload named it (RFC 6407 section 4)."""

    spi: int


@dataclass(frozen=True)
class RekeyReceived:
    server: str
    sequence: int


@dataclass(frozen=True)
class RegistrationFailed:
    server: str
    reason: str


@dataclass(frozen=True)
class MemberRegistered:
    """KS: a GM completed GROUPKEY-PULL."""

    address: str
    group_name: str


@dataclass(frozen=True)
class MemberDropped:
    """KS: a GM missed too many rekey ACKs and was removed (RFC 8263 section 4)."""

    address: str
    reason: str


@dataclass(frozen=True)
class RekeySent:
    """KS: a GROUPKEY-PUSH went out to this many members."""

    group_name: str
    sequence: int
    members: int


@dataclass(frozen=True)
class MessageRejected:
    """Either side: an incoming datagram was refused and changed nothing.

    ``reason`` is a short machine word (``malformed``, ``bad-hash``, ``bad-signature``, ``replayed``,
    ``unknown-peer``, ``no-psk``, ``wrong-group``, ``half-open-limit``, ``no-proposal``, ``oversized``,
    ``bad-cookie``, ``peer-half-open-limit``, ``unauthorized``, ...) counted in
    the status snapshot; ``detail`` is the human sentence for the log.
    """

    peer: str
    reason: str
    detail: str


Event = (
    Phase1Established
    | Registered
    | TekInstalled
    | TekExpired
    | TekDeleted
    | RekeyReceived
    | RegistrationFailed
    | MemberRegistered
    | MemberDropped
    | RekeySent
    | MessageRejected
)


# --- Status snapshots for the show commands -------------------------------------------------------


@dataclass(frozen=True)
class IsakmpSaInfo:
    """One line of ``show crypto isakmp sa``."""

    dst: str
    src: str
    state: str  # GDOI_IDLE, GDOI_REKEY, MM_NO_STATE, ...
    conn_id: int
    status: str = "ACTIVE"


@dataclass(frozen=True)
class KekInfo:
    transport: RekeyTransport
    lifetime_remaining_s: int
    cipher: Phase1Cipher
    key_size_bits: int
    sig_hash: str  # e.g. HMAC_AUTH_SHA (as IOS names it)
    sig_key_bits: int
    spi: bytes  # 16 bytes: the ISAKMP cookies of the rekey SA
    # RFC 6407 section 5.3: the SA KEK's destination ID names the group rekeys are sent to; None for
    # unicast rekeys (the KS puts 0.0.0.0 there).
    multicast_address: str | None = None
    multicast_port: int | None = None  # the SA KEK's destination port: where multicast rekeys arrive


@dataclass(frozen=True)
class TekInfo:
    spi: int
    transform: TekTransform
    lifetime_remaining_s: int
    replay_time_window_s: int | None


@dataclass(frozen=True)
class MemberInfo:
    """One GM as the KS sees it (``show crypto gdoi ks members``)."""

    address: str
    group_name: str
    registered_at: float
    rekeys_sent: int
    rekey_acks: int
    missed_acks: int
    last_ack_sequence: int


@dataclass(frozen=True)
class GmStatus:
    group_name: str
    identity: int
    active_server: str | None
    servers: tuple[str, ...]
    registered: bool
    reregister_in_s: int | None
    last_rekey_at: float | None
    rekeys_cumulative: int
    rekeys_after_registration: int
    rekey_acks_sent: int
    selectors: tuple[TrafficSelector, ...]
    kek: KekInfo | None
    teks: tuple[TekInfo, ...]
    isakmp_sas: tuple[IsakmpSaInfo, ...]
    rejected: dict[str, int] = field(default_factory=dict)
    state: str = ""  # the member's registration state (gm.GmState name); "" when not reported


@dataclass(frozen=True)
class RegistrationStats:
    """The key server's registration state against its limits (``show crypto gdoi``, KS)."""

    half_open: int = 0
    half_open_peak: int = 0
    max_half_open: int = 0
    max_half_open_per_peer: int = 0
    cookie_threshold: int = 0
    stateless_replies: dict[str, int] = field(default_factory=dict)  # why state was not kept -> count
    isakmp_sas: int = 0
    remembered_offers: int = 0
    state_bytes: int = 0  # bytes of peer-chosen data held (SA bodies, messages kept for retransmission)


@dataclass(frozen=True)
class KsGroupStatus:
    group_name: str
    identity: int
    kek: KekInfo
    teks: tuple[TekInfo, ...]
    rekey_sequence: int
    members: tuple[MemberInfo, ...]
    selectors: tuple[TrafficSelector, ...]
    unauthorized_pulls: int = 0  # GROUPKEY-PULLs refused by ``authorization address ipv4``


@dataclass(frozen=True)
class KsStatus:
    local_address: str
    groups: tuple[KsGroupStatus, ...]
    isakmp_sas: tuple[IsakmpSaInfo, ...]
    rejected: dict[str, int] = field(default_factory=dict)
    registration: RegistrationStats = field(default_factory=RegistrationStats)
