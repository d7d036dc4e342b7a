"""Key server cooperation (COOP) as a sans-I/O engine: one primary makes the keys, the others hold a copy.

Cisco's cooperative key servers have no RFC, and this is not Cisco's wire format: it is this project's
own protocol, carried in ISAKMP framing so that it shares UDP 848 and the codec's header with GDOI
(docs/coop.md has the design, the state diagram and the reasons).  What happens, in order:

1. Framing.  Every COOP message is one ISAKMP header (RFC 2408 section 3.1) with the private-use
   exchange type ``ExchangeType.COOP`` (240) followed by one private-use payload ``PayloadType.COOP``
   (200)::

       HDR (icookie = sender's incarnation, rcookie = receiver's incarnation as the sender knows it)
       COOP payload: generic payload header | sequence number (8 bytes) | AES-256-GCM(body) | tag

   An *incarnation* is 8 random bytes a key server picks when it starts, so the cookies say "this run
   of A talks to this run of B", as ISAKMP cookies name an SA.
2. Protection.  The key is HKDF-SHA256 of the pre-shared key the two key servers share (their
   ``crypto isakmp key ... address PEER``) with the sender's incarnation as salt and both addresses
   (sender first) in the info, so each direction of each run has its own key.  The nonce is the
   sequence number, which the sender increments per message; the ISAKMP header, the generic payload
   header and the sequence number are authenticated as associated data.  A receiver keeps, per peer,
   the highest sequence seen under the peer's current incarnation and the incarnations it replaced,
   so a message is accepted once, and never from an earlier run of the peer.
3. Freshness.  A message counts (it keeps a peer alive, carries state) only if its rcookie is this
   key server's own incarnation: that proves it was made after this run started, so nothing recorded
   before a restart can be played back into it.  An authentic message that is not fresh only teaches
   the receiver the sender's incarnation, and is answered at once with an announcement, which makes
   the next message fresh.
4. Messages (the JSON body inside the encryption): ``announce`` (role, priority, the state version
   held) every ``announce_period_s`` to every peer; ``state`` (the groups' policy, TEKs, KEKs, signing
   keys, rekey sequence and members, from :meth:`~.ks.KeyServer` through the ``snapshot`` callback)
   from the primary to each secondary whose announced version is not the primary's; ``members`` from a
   secondary to the primary when a member registered with the secondary.
5. Roles (:class:`CoopState`, changed only through ``_set_state``).  A starting key server is
   ELECTING for one announce period.  If it hears a primary it follows it (SYNCING until the state
   arrives, then SECONDARY), whatever the priorities: a running primary is never pre-empted.  If
   no one is primary, the highest (priority, address) among the electing key servers becomes primary
   with the keys it made at start.  A secondary whose primary has been silent for ``dead_time_s``
   takes over when it ranks highest among the live secondaries, with the keys it holds, so members
   see no change.  Two primaries that meet (a partition healed) keep the higher-ranked one; the other
   sends it its state marked ``yield`` (the winner merges the members and rekeys everyone above both
   sequences) and becomes a secondary.

The key server engine drives this object: :meth:`CoopNode.open` checks one datagram without changing
anything and says what it asks of the key server (:class:`CoopEffect`); once the key server has done
that, :meth:`CoopNode.apply` commits it.  So a refused datagram changes nothing here either.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .codec import Header
from .config_model import Redundancy
from .constants import GENERIC_HEADER_LEN, ISAKMP_HEADER_LEN, ExchangeType, Flags, PayloadType
from .engine import Reject
from .events import CoopRoleChanged
from .statemachine import StateMachine
from .status import CoopPeerInfo, CoopStatus

INCARNATION_LEN = 8
SEQUENCE_LEN = 8
TAG_LEN = 16
NO_INCARNATION = b"\x00" * INCARNATION_LEN
KEY_INFO = b"dmvpn-lab COOP v1"
SYNC_DELAY_S = 0.2  # changes within this are sent as one state message (a burst of registrations)
PROMPT_GAP_S = 1.0  # at most one immediate answer per peer this often, so replays cannot make us chatter
MAX_UNREPORTED = 10_000  # members a secondary keeps to report while it knows no primary

Addr = tuple[str, int]
Snapshot = Callable[[float], dict[str, Any]]


class CoopState(enum.Enum):
    """Where this key server stands among its peers (docs/coop.md has the diagram)."""

    ELECTING = "no primary known: announcing, listening one announce period, then electing"
    SYNCING = "secondary: follows a primary and waits for its group state"
    SECONDARY = "secondary: holds the primary's group state; serves registrations, never rekeys"
    PRIMARY = "primary: the only key server that creates keys and sends rekeys"


class CoopEffect(enum.Enum):
    """What an accepted COOP message asks of the key server before :meth:`CoopNode.apply`."""

    NONE = "nothing"
    IMPORT_STATE = "replace the groups' keys, policy and members with the primary's"
    MERGE_STATE = "a primary yielded to us: merge its members and rekey everyone"
    ADD_MEMBERS = "a secondary registered members: add them"


@dataclass(frozen=True)
class CoopMessage:
    """One authenticated COOP datagram, opened but not yet applied."""

    peer: str
    incarnation: bytes
    sequence: int
    fresh: bool  # its rcookie is our incarnation: made after this run of ours began
    body: dict[str, Any]
    effect: CoopEffect

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))


@dataclass
class _Peer:
    address: str
    psk: bytes | None
    incarnation: bytes = NO_INCARNATION  # confirmed by a fresh message: the replay window is for it
    echo: bytes = NO_INCARNATION  # what we put in the rcookie to it (may be learnt from a stale message)
    retired: set[bytes] = field(default_factory=set)  # its earlier runs: never accepted again
    highest_sequence: int = 0
    send_sequence: int = 0
    last_heard: float | None = None  # the last fresh message
    silence_noted: bool = False  # its dead time has run out and was acted on: no timer for it until it speaks
    role: CoopState | None = None  # as it last announced
    priority: int = 0
    held_version: str | None = None
    state_sent_at: float | None = None
    prompted_at: float | None = None
    messages_in: int = 0
    messages_out: int = 0


def rank(priority: int, address: str) -> tuple[int, int]:
    """Election order: the higher priority wins, then the higher address (as IOS elects)."""
    return priority, int(ipaddress.IPv4Address(address))


class CoopNode(StateMachine[CoopState]):
    """One key server's side of COOP (module docstring; docs/coop.md)."""

    def __init__(
        self,
        config: Redundancy,
        local_address: str,
        psk_by_peer: dict[str, bytes],
        snapshot: Snapshot,
        *,
        random: Callable[[int], bytes] = os.urandom,
        now: float = 0.0,
    ) -> None:
        super().__init__(CoopState.ELECTING)
        if local_address in config.peers:
            raise ValueError(f"redundancy: {local_address} is this key server, not a peer")
        self.config = config
        self.local_address = local_address
        self._snapshot = snapshot
        self._random = random
        self._incarnation = random(INCARNATION_LEN)
        self._peers = {p: _Peer(p, psk_by_peer.get(p)) for p in config.peers}
        self._out: list[tuple[bytes, Addr]] = []
        self._port = 0  # set by the key server: peers listen where we do
        self._primary: str | None = None  # the peer we follow (never ourselves)
        self._version: str | None = None  # the state version we hold: "epoch:counter"
        self._epoch = ""
        self._counter = 0
        self._election_at = now + config.announce_period_s
        self._announce_at = now  # announce at once: peers learn our incarnation
        self._sync_at: float | None = None
        self._last_sync: float | None = None
        self._syncs_sent = 0
        self._syncs_received = 0
        self._unreported: list[dict[str, Any]] = []
        self._keys: dict[tuple[str, str, bytes], AESGCM] = {}
        self._events: list[CoopRoleChanged] = []

    # --- what the key server asks -------------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self.state is CoopState.PRIMARY

    @property
    def primary_address(self) -> str | None:
        return self.local_address if self.is_primary else self._primary

    def set_port(self, port: int) -> None:
        self._port = port

    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [self._announce_at]
        if self._sync_at is not None:
            times.append(self._sync_at)
        if self.state is CoopState.ELECTING:
            times.append(self._election_at)
        times += [
            p.last_heard + self.config.dead_time_s
            for p in self._peers.values()
            if p.last_heard is not None and not p.silence_noted
        ]
        return min(times)

    def handle_timer(self, now: float) -> None:
        for peer in self._peers.values():
            if peer.last_heard is not None and not self._alive(peer, now):
                peer.silence_noted = True
        if now >= self._announce_at:
            self._announce_at = now + self.config.announce_period_s
            for peer in self._peers.values():
                self._send(peer, self._announcement())
        self._evaluate(now)
        if self._sync_at is not None and now >= self._sync_at and self.is_primary:
            self._sync_at = None
            self._counter += 1
            self._version = f"{self._epoch}:{self._counter}"
            for peer in self._peers.values():
                if self._alive(peer, now) and peer.role is not CoopState.PRIMARY:
                    self._send_state(peer, now, yielding=False)

    def state_changed(self, now: float) -> None:
        """The primary's keys or members changed: send the state to the secondaries shortly."""
        if self.is_primary and self._sync_at is None:
            self._sync_at = now + SYNC_DELAY_S

    def report_members(self, records: list[dict[str, Any]], now: float) -> None:
        """A secondary registered members: the primary must know them to rekey them."""
        if self.is_primary:
            return
        primary = self._peers.get(self._primary) if self._primary is not None else None
        if primary is not None and self._alive(primary, now) and primary.echo != NO_INCARNATION:
            self._send(primary, {"kind": "members", "members": records})
            return
        self._unreported = (self._unreported + records)[-MAX_UNREPORTED:]

    # --- receiving ----------------------------------------------------------------------------------

    def open(self, header: Header, data: bytes, addr: Addr) -> CoopMessage:
        """Authenticate and decrypt one COOP datagram and say what it asks; changes nothing."""
        peer = self._peers.get(addr[0])
        if peer is None:
            raise Reject("unknown-peer", f"COOP message from {addr[0]}, which is not a configured redundancy peer")
        if peer.psk is None:
            raise Reject("no-psk", f"COOP message from {addr[0]}: no pre-shared key is configured for that peer")
        if header.next_payload != PayloadType.COOP:
            raise Reject("malformed", f"COOP message from {addr[0]} does not carry a COOP payload")
        body_at = ISAKMP_HEADER_LEN + GENERIC_HEADER_LEN
        if len(data) < body_at + SEQUENCE_LEN + TAG_LEN:
            raise Reject("malformed", f"COOP message from {addr[0]} is too short ({len(data)} bytes)")
        next_payload, _reserved, length = struct.unpack_from("!BBH", data, ISAKMP_HEADER_LEN)
        if next_payload != 0 or length != len(data) - ISAKMP_HEADER_LEN:
            raise Reject("malformed", f"COOP message from {addr[0]}: payload length {length} does not fit")
        sequence = int.from_bytes(data[body_at : body_at + SEQUENCE_LEN], "big")
        incarnation = header.icookie
        if incarnation == NO_INCARNATION:
            raise Reject("malformed", f"COOP message from {addr[0]} names no incarnation")
        if incarnation in peer.retired:
            raise Reject("replayed", f"COOP message from an earlier run of {addr[0]} (played back?)")
        if incarnation == peer.incarnation and sequence <= peer.highest_sequence:
            raise Reject(
                "replayed",
                f"COOP message from {addr[0]} with sequence {sequence}, not above {peer.highest_sequence}",
            )
        aad = data[: body_at + SEQUENCE_LEN]
        try:
            plain = self._aead(peer, addr[0], self.local_address, incarnation).decrypt(
                _nonce(sequence), data[body_at + SEQUENCE_LEN :], aad
            )
        except InvalidTag:
            raise Reject(
                "bad-hash",
                f"COOP message from {addr[0]} does not authenticate: altered, forged, or the peers' "
                "pre-shared keys differ",
            ) from None
        try:
            body = json.loads(plain)
        except ValueError:
            raise Reject("malformed", f"COOP message from {addr[0]}: the body is not JSON") from None
        if not isinstance(body, dict) or body.get("kind") not in ("announce", "state", "members"):
            raise Reject("malformed", f"COOP message from {addr[0]}: no known kind")
        fresh = header.rcookie == self._incarnation
        return CoopMessage(addr[0], incarnation, sequence, fresh, body, self._effect(peer, body, fresh))

    def _effect(self, peer: _Peer, body: dict[str, Any], fresh: bool) -> CoopEffect:
        if not fresh:
            return CoopEffect.NONE
        kind = body["kind"]
        if kind == "members" and self.is_primary:
            return CoopEffect.ADD_MEMBERS
        if kind != "state":
            return CoopEffect.NONE
        if body.get("yield") is True:
            return CoopEffect.MERGE_STATE if self.is_primary else CoopEffect.NONE
        if self.is_primary or body.get("version") == self._version:
            return CoopEffect.NONE
        if self._primary is None or self._primary == peer.address:
            return CoopEffect.IMPORT_STATE
        return CoopEffect.NONE

    def apply(self, message: CoopMessage, now: float) -> None:
        """Commit an opened message (after the key server did what its effect asked)."""
        peer = self._peers[message.peer]
        peer.messages_in += 1
        if message.incarnation == peer.incarnation:
            peer.highest_sequence = message.sequence
        if not message.fresh:
            # It cannot be trusted to be recent; it only tells us whom to address, and we answer so
            # that the peer learns our incarnation too.
            if message.incarnation != peer.incarnation:
                peer.echo = message.incarnation
            self._prompt(peer, now)
            return
        if message.incarnation != peer.incarnation:
            if peer.incarnation != NO_INCARNATION:
                peer.retired.add(peer.incarnation)
            peer.incarnation = message.incarnation
            peer.highest_sequence = message.sequence
            first = peer.echo != message.incarnation
            peer.echo = message.incarnation
            if first:
                self._prompt(peer, now)
        peer.last_heard = now
        peer.silence_noted = False
        body = message.body
        if message.kind == "announce":
            self._read_announcement(peer, body, now)
        elif message.effect is CoopEffect.IMPORT_STATE:
            peer.role = CoopState.PRIMARY  # only a primary sends state (its announcement may still be on its way)
            self._primary = peer.address
            self._version = str(body.get("version"))
            self._last_sync = now
            self._syncs_received += 1
            self._change(CoopState.SECONDARY, f"holds the group state of primary {peer.address}")
            self._flush_unreported(now)
        elif message.effect is CoopEffect.MERGE_STATE:
            peer.role = CoopState.SYNCING
            peer.held_version = None
            self.state_changed(now)
        self._evaluate(now)

    def _read_announcement(self, peer: _Peer, body: dict[str, Any], now: float) -> None:
        try:
            peer.role = CoopState[str(body.get("role"))]
        except KeyError:
            peer.role = None
        priority = body.get("priority")
        peer.priority = priority if isinstance(priority, int) else 0
        version = body.get("version")
        peer.held_version = version if isinstance(version, str) else None
        if self.is_primary and peer.role is CoopState.PRIMARY:
            if rank(peer.priority, peer.address) > rank(self.config.local_priority, self.local_address):
                self._yield_to(peer, now)
            else:
                self._prompt(peer, now)  # tell it at once that it must yield
        elif self.is_primary and peer.held_version != self._version:
            sent = peer.state_sent_at
            if sent is None or now - sent >= min(self.config.announce_period_s, 1.0):
                self._send_state(peer, now, yielding=False)
        elif not self.is_primary and peer.address == self._primary and peer.role is not CoopState.PRIMARY:
            self._primary = None  # it gave up the role (or restarted): elect again below

    # --- roles ----------------------------------------------------------------------------------------

    def _alive(self, peer: _Peer, now: float) -> bool:
        return peer.last_heard is not None and now - peer.last_heard < self.config.dead_time_s

    def _evaluate(self, now: float) -> None:
        """Follow a live primary, take over from a dead one, or elect one (docs/coop.md)."""
        if self.is_primary:
            return
        alive = [p for p in self._peers.values() if self._alive(p, now)]
        current = self._peers.get(self._primary) if self._primary is not None else None
        if current is not None and current in alive and current.role is CoopState.PRIMARY:
            return
        if current is not None:
            self._primary = None
            lost = f"primary {current.address} " + (
                "gave up the role" if current in alive else f"silent for {self.config.dead_time_s:g} s"
            )
        else:
            lost = "no primary"
        primaries = [p for p in alive if p.role is CoopState.PRIMARY]
        if primaries:
            self._follow(max(primaries, key=lambda p: rank(p.priority, p.address)), now)
            return
        me = rank(self.config.local_priority, self.local_address)
        synced = [p for p in alive if p.role is CoopState.SECONDARY]
        if self.state is CoopState.SECONDARY:
            # Failover: the best live secondary takes over with the keys every secondary holds.
            if all(rank(p.priority, p.address) < me for p in synced):
                self._become_primary(now, f"{lost}: taking over with the keys held")
            return
        if synced:
            return  # a secondary holds the group's keys: wait for it to take over
        if self.state is CoopState.SYNCING:
            self._change(CoopState.ELECTING, f"{lost} before its state arrived")
            self._election_at = now + self.config.announce_period_s
            return
        if now < self._election_at:
            return
        if all(rank(p.priority, p.address) < me for p in alive):
            self._become_primary(now, f"elected: no primary, highest of {len(alive) + 1} by priority and address")
        else:
            self._election_at = now + self.config.announce_period_s  # the better one claims it, or dies

    def _follow(self, peer: _Peer, now: float) -> None:
        self._primary = peer.address
        if peer.held_version is None or peer.held_version != self._version:
            self._version = None
            self._change(CoopState.SYNCING, f"following primary {peer.address}")
        self._prompt(peer, now)  # our announcement shows it what we hold, so it sends the state
        self._flush_unreported(now)

    def _become_primary(self, now: float, reason: str) -> None:
        self._epoch = self._random(4).hex()  # a new epoch: every secondary's held version is now stale
        self._counter = 1
        self._primary = None
        self._unreported.clear()  # our own members are in our own tables
        self._change(CoopState.PRIMARY, reason)
        self._version = f"{self._epoch}:{self._counter}"
        for peer in self._peers.values():
            self._send(peer, self._announcement())
        self._sync_at = now  # and the state to everyone following

    def _yield_to(self, peer: _Peer, now: float) -> None:
        """Two primaries met; the lower-ranked one hands its state (members, sequence) over."""
        self._send_state(peer, now, yielding=True)
        self._primary = peer.address
        self._version = None
        self._sync_at = None
        self._change(
            CoopState.SYNCING, f"met primary {peer.address}, which ranks higher (priority {peer.priority}): handed over"
        )
        self._prompt(peer, now)

    def _change(self, state: CoopState, reason: str) -> None:
        """Change role through the logging setter and tell the key server why (the daemon logs it)."""
        if state is not self.state:
            self._set_state(state)
            self._events.append(CoopRoleChanged(state.name, self.primary_address, reason))

    def take_events(self) -> list[CoopRoleChanged]:
        events, self._events = self._events, []
        return events

    def _flush_unreported(self, now: float) -> None:
        if self._unreported:
            records, self._unreported = self._unreported, []
            self.report_members(records, now)

    # --- sending --------------------------------------------------------------------------------------

    def _announcement(self) -> dict[str, Any]:
        return {
            "kind": "announce",
            "role": self.state.name,
            "priority": self.config.local_priority,
            "version": self._version,
        }

    def _prompt(self, peer: _Peer, now: float) -> None:
        if peer.prompted_at is None or now - peer.prompted_at >= PROMPT_GAP_S:
            peer.prompted_at = now
            self._send(peer, self._announcement())

    def _send_state(self, peer: _Peer, now: float, *, yielding: bool) -> None:
        body = {"kind": "state", "version": self._version, "yield": yielding, "groups": self._snapshot(now)}
        peer.state_sent_at = now
        self._syncs_sent += 1
        self._last_sync = now
        self._send(peer, body)

    def _send(self, peer: _Peer, body: dict[str, Any]) -> None:
        if peer.psk is None:
            return  # reported by the config check and in ``show``; nothing can be protected without it
        peer.send_sequence += 1
        plain = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        payload_len = GENERIC_HEADER_LEN + SEQUENCE_LEN + len(plain) + TAG_LEN
        header = Header(
            self._incarnation,
            peer.echo,
            PayloadType.COOP,
            ExchangeType.COOP,
            Flags.NONE,  # the payload's own header and sequence travel in clear (authenticated)
            0,
            ISAKMP_HEADER_LEN + payload_len,
        )
        clear = header.encode() + struct.pack("!BBH", 0, 0, payload_len) + peer.send_sequence.to_bytes(8, "big")
        sealed = self._aead(peer, self.local_address, peer.address, self._incarnation).encrypt(
            _nonce(peer.send_sequence), plain, clear
        )
        peer.messages_out += 1
        self._out.append((clear + sealed, (peer.address, self._port)))

    def _aead(self, peer: _Peer, sender: str, receiver: str, incarnation: bytes) -> AESGCM:
        cache_key = (sender, receiver, incarnation)
        aead = self._keys.get(cache_key)
        if aead is None:
            assert peer.psk is not None
            info = KEY_INFO + ipaddress.IPv4Address(sender).packed + ipaddress.IPv4Address(receiver).packed
            key = HKDF(hashes.SHA256(), 32, incarnation, info).derive(peer.psk)
            if len(self._keys) > 64:  # peers restarting many times: keep only recent keys
                self._keys.clear()
            aead = self._keys[cache_key] = AESGCM(key)
        return aead

    # --- status ---------------------------------------------------------------------------------------

    def status(self, now: float) -> CoopStatus:
        return CoopStatus(
            local_address=self.local_address,
            local_priority=self.config.local_priority,
            state=self.state.name,
            role=_role_name(self.state),
            primary=self.primary_address,
            version=self._version,
            last_sync_ago_s=None if self._last_sync is None else max(0, int(now - self._last_sync)),
            syncs_sent=self._syncs_sent,
            syncs_received=self._syncs_received,
            announce_period_s=self.config.announce_period_s,
            dead_time_s=self.config.dead_time_s,
            peers=tuple(
                CoopPeerInfo(
                    address=p.address,
                    role=_role_name(p.role) if p.role is not None else "Unknown",
                    priority=p.priority,
                    alive=self._alive(p, now),
                    last_heard_ago_s=None if p.last_heard is None else max(0, int(now - p.last_heard)),
                    version=p.held_version,
                    messages_in=p.messages_in,
                    messages_out=p.messages_out,
                    has_psk=p.psk is not None,
                )
                for p in self._peers.values()
            ),
        )

    def _describe(self) -> str:
        return f"COOP key server {self.local_address} (priority {self.config.local_priority})"


def _nonce(sequence: int) -> bytes:
    """AES-GCM's 12-byte nonce: the sequence number, unique under a key that is unique per run."""
    return b"\x00" * 4 + sequence.to_bytes(SEQUENCE_LEN, "big")


def _role_name(state: CoopState) -> str:
    """IOS's words in ``show crypto gdoi ks coop``."""
    return {
        CoopState.PRIMARY: "Primary",
        CoopState.SECONDARY: "Secondary",
        CoopState.SYNCING: "Secondary (syncing)",
        CoopState.ELECTING: "Electing",
    }[state]
