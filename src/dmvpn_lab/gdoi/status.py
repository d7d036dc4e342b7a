"""Status snapshots of the engines, as ``status(now)`` returns them and ``show crypto gdoi`` prints them.

Plain frozen records; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dmvpn_lab.gdoi.model import Phase1Cipher, RekeyTransport, TekTransform, TrafficSelector


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
    # Source address of the last accepted GROUPKEY-PUSH: with cooperating key servers, which one rekeys
    # (after a failover, not the one the member registered with).  None before the first rekey.
    last_rekey_from: str | None = None


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
class CoopPeerInfo:
    """One redundancy peer as this key server last heard it (``show crypto gdoi ks coop``)."""

    address: str
    role: str  # Primary, Secondary, Secondary (syncing), Electing, Unknown
    priority: int
    alive: bool  # heard within the dead time
    last_heard_ago_s: int | None
    version: str | None  # the group state version it says it holds
    messages_in: int
    messages_out: int
    has_psk: bool = True


@dataclass(frozen=True)
class CoopStatus:
    """This key server's place among its cooperative key servers."""

    local_address: str
    local_priority: int
    state: str  # CoopState name
    role: str  # as IOS words it: Primary, Secondary...
    primary: str | None
    version: str | None  # the group state version held (the primary's epoch:counter)
    last_sync_ago_s: int | None  # state last sent (primary) or received (secondary)
    syncs_sent: int
    syncs_received: int
    announce_period_s: float
    dead_time_s: float
    peers: tuple[CoopPeerInfo, ...] = ()


@dataclass(frozen=True)
class KsStatus:
    local_address: str
    groups: tuple[KsGroupStatus, ...]
    isakmp_sas: tuple[IsakmpSaInfo, ...]
    rejected: dict[str, int] = field(default_factory=dict)
    registration: RegistrationStats = field(default_factory=RegistrationStats)
    coop: CoopStatus | None = None  # None: no redundancy configured
