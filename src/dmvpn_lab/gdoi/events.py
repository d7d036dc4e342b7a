"""What the engines tell their adapters: one frozen record per thing that happened, and the TEKs they hand over.

An adapter drains them with ``next_event()`` (docs/engine-api.md); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmvpn_lab.gdoi.model import TekTransform, TrafficSelector

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
class CoopRoleChanged:
    """KS with redundancy: this key server's COOP role changed (docs/coop.md), and why."""

    state: str  # coop.CoopState name: ELECTING, SYNCING, SECONDARY, PRIMARY
    primary: str | None  # the primary it now knows (itself when PRIMARY)
    reason: str


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
    | CoopRoleChanged
    | MessageRejected
)
