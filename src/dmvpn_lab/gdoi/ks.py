"""The GDOI key server (GCKS) as a sans-I/O engine: RFC 6407 sections 3 and 4, RFC 8263.

Bytes and ``now`` go in (:meth:`KeyServer.receive_datagram`, :meth:`KeyServer.handle_timer`);
datagrams, a timer deadline and events come out.  What happens, in protocol order:

1. Phase 1 (RFC 2409 Main Mode, :mod:`.phase1`): a group member opens an ISAKMP SA with a
   pre-shared key chosen by its address.  Registrations in progress ("half-open": Main Mode or a
   GROUPKEY-PULL not yet finished) are bounded by ``max_half_open`` in all and by
   ``max_half_open_per_peer`` per address, and time out.  Because any sender can forge a member's
   address, message 1 never makes the key server keep more than that: above ``cookie_threshold``
   registrations in progress, or with the address at its own limit, message 1 is answered statelessly
   (:mod:`.admission`) and state is kept only when message 3 returns the responder cookie, which proves
   the peer receives at that address.  A message 1 over ``MAX_FIRST_MESSAGE_LEN`` is refused.
   An established ISAKMP SA lives only while it is used for registration: ``REGISTRATION_SA_IDLE_S``
   after its last GROUPKEY-PULL message (or its birth), at most ``MAX_ISAKMP_SAS_PER_PEER`` per address.
2. GROUPKEY-PULL (RFC 6407 section 3.2, :mod:`.pull`), protected by that SA, new random message ID::

       GM: HDR*, HASH(1), Ni, ID          HASH(1) = prf(SKEYID_a, M-ID | Ni | ID)
       KS: HDR*, HASH(2), Nr, SA          HASH(2) = prf(SKEYID_a, M-ID | Ni_b | Nr | SA)
       GM: HDR*, HASH(3)                  HASH(3) = prf(SKEYID_a, M-ID | Ni_b | Nr_b)
       KS: HDR*, HASH(4), SEQ, KD         HASH(4) = prf(SKEYID_a, M-ID | Ni_b | Nr_b | SEQ | KD)

   The ID is the group identity (ID_KEY_ID); one that names no group configured here is refused
   (``wrong-group``) and the member is told so in an Informational exchange with an
   INVALID-ID-INFORMATION notify (RFC 2408 section 3.14.1).  A group with an ``authorization``
   (IOS ``authorization address ipv4 ACL``) refuses members its access list does not permit
   (``unauthorized``, told with an AUTHENTICATION-FAILED notify), as IOS's GDOI-1-UNAUTHORIZED_IPADDR.
3. GROUPKEY-PUSH (RFC 6407 section 4): ``HDR*, SEQ, SA, KD, SIG`` with the KEK SPI as the cookies
   and message ID 0, signed (PKCS#1 v1.5 over ``"rekey" | HDR | SEQ | SA | KD``, the header of the
   message before encryption: its length counts the SIG, not the padding), then encrypted under the
   KEK with the IV that the KD gave members in front of the key (section 5.5.2.1).  A new TEK is made
   ``rekey_ahead_s`` before the newest one expires; the old TEK stays in every SA until it expires.
   Unicast rekeys go to every registered member and are retransmitted every
   ``rekey_retransmit_interval_s``, ``rekey_retransmit_count`` times, to members that have not
   acknowledged; multicast rekeys go to ``rekey_multicast_address`` (no acknowledgements).
4. Acknowledgements (RFC 8263): the SA KEK carries KEK_ACK_REQUESTED; a member answers each push
   with ``HDR*, HASH, SEQ, ID`` (exchange GDOI_REKEY_ACK, KEK SPI as cookies, encrypted under the KEK),
   ``HASH = prf(SKEYID_a, M-ID | Ni_b | Nr_b | SEQ | ID)`` with the keys and nonces of that member's
   registration, so only that member can produce it.  A member that misses ``max_missed_acks``
   (default ``rekey_retransmit_count + 1``) consecutive rekeys is dropped and gets no more rekeys.

5. Key server cooperation (``redundancy``, :mod:`.coop`, docs/coop.md): with peers configured, only
   the elected primary makes keys and rekeys; it sends its groups' policy, TEKs, KEKs, signing keys,
   sequence and members to the secondaries (:meth:`KeyServer._coop_snapshot`), which take them over
   whole (:meth:`KeyServer._coop_import`) and still answer registrations with them.  A member that
   registers with a secondary is reported to the primary, so the primary's rekeys reach it.

Every rejected datagram yields exactly one :class:`MessageRejected`, bumps ``rejected[reason]`` and
changes nothing else (:class:`~.engine.Engine` rolls back); no exception escapes
:meth:`KeyServer.receive_datagram`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .admission import CookieJar, OfferBook
from .codec import (
    HashPayload,
    Header,
    IdPayload,
    NotifyPayload,
    Payload,
    SeqPayload,
    SigPayload,
    decode_payloads,
    encode_payloads,
)
from .config_model import GroupPolicy, KeyServerConfig, psk_for
from .constants import (
    GENERIC_HEADER_LEN,
    ISAKMP_HEADER_LEN,
    Doi,
    ExchangeType,
    Flags,
    IdType,
    NotifyType,
    ProtocolId,
)
from .coop import CoopEffect, CoopNode
from .crypto import (
    KekKey,
    cipher_block_len,
    cipher_key_len,
    prf,
    rekey_signed_bytes,
    rekey_signed_length,
    rsa_public_der,
    rsa_sign,
)
from .engine import Deadlines, Engine, Reject, one
from .events import MemberDropped, MemberRegistered, Phase1Established, RekeySent
from .groupsa import SIG_HASH_IOS_NAMES, TRANSFORMS, KekPolicy, TekPolicy, kd_payload, sa_payload
from .model import (
    MAX_HALF_OPEN_LIMIT,
    Phase1Cipher,
    Phase1Hash,
    RekeyTransport,
    TekTransform,
    TrafficSelector,
)
from .phase1 import (
    NONCE_LEN,
    IkeSa,
    MainModeResponder,
    MainModeState,
    Offer,
    message2,
    offer_from_body,
    own_offer_body,
    read_offer,
)
from .pull import PullResponder, PullState, read_request
from .status import IsakmpSaInfo, KekInfo, KsGroupStatus, KsStatus, MemberInfo, RegistrationStats, TekInfo

HALF_OPEN_TIMEOUT_S = 30.0  # a registration not finished within this is forgotten
FINISHED_PULL_KEEP_S = 30.0  # answer retransmitted HASH(3) with the same message 4 this long
# Message 1 is the one message whose content (SAi_b) the key server must keep and echo before the peer
# has proven anything; an IOS or lab member's message 1 is well under 1 KB.
MAX_FIRST_MESSAGE_LEN = 4096
# GDOI needs the registration SA only for GROUPKEY-PULL (rekeys travel under the KEK, and ACKs are
# checked with the member's SKEYID_a kept in its member record), so an SA unused this long goes.
REGISTRATION_SA_IDLE_S = 30.0
MAX_ISAKMP_SAS_PER_PEER = 2  # a member's current registration and the one it is replacing
ZERO_COOKIE = b"\x00" * 8
Addr = tuple[str, int]


@dataclass
class _Tek:
    spi: int
    transform: TekTransform
    encryption_key: bytes
    integrity_key: bytes
    created_at: float
    lifetime_s: int

    def expires_at(self) -> float:
        return self.created_at + self.lifetime_s


@dataclass
class _Kek:
    spi: bytes
    key: KekKey
    created_at: float
    lifetime_s: int

    def expires_at(self) -> float:
        return self.created_at + self.lifetime_s


@dataclass
class _Member:
    address: str
    port: int
    group_name: str
    registered_at: float
    conn_id: int
    prf_hash: Phase1Hash
    skeyid_a: bytes
    ni_b: bytes
    nr_b: bytes
    rekeys_sent: int = 0
    rekey_acks: int = 0
    missed_acks: int = 0
    last_ack_sequence: int = 0


@dataclass
class _PendingRekey:
    sequence: int
    datagram: bytes
    next_at: float
    retransmits_left: int
    unacked: set[str]
    multicast: bool


@dataclass
class _Group:
    policy: GroupPolicy
    signing_key: rsa.RSAPrivateKey
    kek: _Kek
    prev_kek: _Kek | None
    teks: list[_Tek]
    sequence: int = 0
    members: dict[str, _Member] = field(default_factory=dict)
    pending: _PendingRekey | None = None


@dataclass
class _Phase1:
    """A Main Mode in progress: only what the next messages need (message 2 is rebuilt on demand)."""

    responder: MainModeResponder  # holds SAi_b, the suite and the cookies; DH and keys after message 3
    addr: Addr
    started_at: float
    offer_digest: bytes
    last_in: bytes = b""  # SHA-256 of the last message 3 or 5 answered, to spot its retransmission
    last_out: bytes = b""  # our answer to it


@dataclass
class _Ike:
    sa: IkeSa
    addr: Addr
    conn_id: int
    last_in: bytes  # SHA-256 of message 5
    last_out: bytes  # message 6, sent again if message 5 comes again
    last_used: float
    pulls_open: int = 0


@dataclass
class _Pull:
    """A GROUPKEY-PULL this key server answers: the exchange, and what retransmissions and timers need."""

    exchange: PullResponder
    group: str
    peer: str
    started_at: float
    last_in: bytes  # SHA-256 of the last message answered
    last_out: bytes

    @property
    def done(self) -> bool:
        return self.exchange.state is PullState.DONE


class KeyServer(Engine):
    """The key server engine (see the module docstring and docs/engine-api.md)."""

    def __init__(
        self,
        config: KeyServerConfig,
        signing_keys: dict[str, rsa.RSAPrivateKey],
        *,
        random: Callable[[int], bytes] = os.urandom,
        now: float = 0.0,
    ) -> None:
        _check_limits(config)
        # Neither of these can exceed the table they guard; a smaller max_half_open lowers them too.
        config = dataclasses.replace(
            config,
            max_half_open_per_peer=min(config.max_half_open_per_peer, config.max_half_open),
            cookie_threshold=min(config.cookie_threshold, config.max_half_open),
        )
        super().__init__()
        self.config = config
        self._random = random
        self._groups: dict[str, _Group] = {}
        self._phase1: dict[tuple[str, bytes], _Phase1] = {}
        self._ikes: dict[bytes, _Ike] = {}
        self._pulls: dict[tuple[bytes, int], _Pull] = {}
        # Indexes kept in step with the three tables above, so no message or timer scans them all.
        self._phase1_deadlines = Deadlines(self._phase1, _phase1_deadline)
        self._pull_deadlines = Deadlines(self._pulls, _pull_deadline)
        self._ike_deadlines = Deadlines(self._ikes, _ike_deadline)
        self._ikes_by_ip: dict[str, set[bytes]] = {}  # ISAKMP SA cookies by the member's address
        self._pulls_open = 0  # GROUPKEY-PULLs in _pulls that are not done (half-open)
        self._half_open_by_ip: Counter[str] = Counter()  # Main Modes and open PULLs by peer address
        self._awaiting_msg3: dict[tuple[str, bytes], None] = {}  # unproven Main Modes, oldest first
        self._half_open_peak = 0
        self._stateless: Counter[str] = Counter()  # message 1s answered without state, by why
        self._unauthorized: Counter[str] = Counter()  # by group name
        self._cookies = CookieJar(random(32))
        self._offers = OfferBook(own_offer_body(config.isakmp_policies))
        self._next_conn_id = 1001
        for policy in config.groups:
            key = signing_keys.get(policy.rsa_key_label)
            if key is None:
                raise ValueError(f"group {policy.name}: no RSA key labelled {policy.rsa_key_label!r}")
            if policy.name in self._groups:
                raise ValueError(f"group {policy.name} configured twice")
            self._groups[policy.name] = _Group(
                policy, key, self._new_kek(policy, now), None, [self._new_tek(policy, now, set())]
            )
        self._coop: CoopNode | None = None
        if config.redundancy is not None:
            self._coop = CoopNode(
                config.redundancy, config.local_address, config.psk_by_peer, self._coop_snapshot, random=random, now=now
            )
            self._coop.set_port(config.port)

    # --- public API ---------------------------------------------------------------------------------

    @property
    def makes_keys(self) -> bool:
        """A stand-alone key server, or the COOP primary: the only kind that creates keys and rekeys."""
        return self._coop is None or self._coop.is_primary

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        if self._coop is not None:
            self._out.extend(self._coop.take_datagrams())
        return super().datagrams_to_send(now)

    def get_timer(self) -> float | None:
        times: list[float] = []
        for deadlines in (self._phase1_deadlines, self._pull_deadlines, self._ike_deadlines):
            when = deadlines.next()
            if when is not None:
                times.append(when)
        if self._coop is not None:
            coop_at = self._coop.get_timer()
            if coop_at is not None:
                times.append(coop_at)
        for group in self._groups.values():  # a handful of groups: scanning them is cheap
            if self.makes_keys:  # a secondary's rekey time passes unheeded: it must not spin the timer
                times.append(self._next_rekey_at(group))
            # A secondary keeps its newest TEK past its end until a primary replaces it: not a deadline.
            times.extend(t.expires_at() for t in (group.teks if self.makes_keys else group.teks[:-1]))
            if group.prev_kek is not None:
                times.append(group.prev_kek.expires_at())
            if group.pending is not None:
                times.append(group.pending.next_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._expire(now)
        if self._coop is not None:
            self._coop.handle_timer(now)
            self._events.extend(self._coop.take_events())
        for group in self._groups.values():
            group.teks = [t for t in group.teks if t.expires_at() > now] or group.teks[-1:]
            if group.prev_kek is not None and group.prev_kek.expires_at() <= now:
                group.prev_kek = None
            pending = group.pending
            if pending is not None and now >= pending.next_at:
                if pending.retransmits_left > 0:
                    pending.retransmits_left -= 1
                    pending.next_at = now + group.policy.rekey_retransmit_interval_s
                    self._transmit(group, pending)
                else:
                    self._finish_rekey(group, now)
            if self.makes_keys and now >= self._next_rekey_at(group):
                self._rekey(group, now)

    def force_rekey(self, now: float, group_name: str | None = None) -> None:
        if not self.makes_keys:
            primary = self._coop.primary_address if self._coop is not None else None
            raise ValueError(
                f"this key server is a COOP secondary; only the primary ({primary or 'none elected yet'}) rekeys"
            )
        for name, group in self._groups.items():
            if group_name is None or name == group_name:
                self._rekey(group, now)
        if group_name is not None and group_name not in self._groups:
            raise KeyError(f"no group named {group_name}")

    def status(self, now: float) -> KsStatus:
        groups = []
        sas = self._isakmp_sa_lines()
        live = {ike.conn_id for ike in self._ikes.values()}
        for group in self._groups.values():
            pol = group.policy
            members = tuple(
                MemberInfo(
                    m.address,
                    m.group_name,
                    m.registered_at,
                    m.rekeys_sent,
                    m.rekey_acks,
                    m.missed_acks,
                    m.last_ack_sequence,
                )
                for m in group.members.values()
            )
            for m in group.members.values():
                if m.conn_id not in live:  # IOS lists a registered member as GDOI_IDLE
                    sas.append(IsakmpSaInfo(self.config.local_address, m.address, "GDOI_IDLE", m.conn_id))
            groups.append(
                KsGroupStatus(
                    pol.name,
                    pol.identity,
                    self._kek_info(group, now),
                    tuple(
                        TekInfo(
                            t.spi, t.transform, max(0, int(t.expires_at() - now)), pol.replay_time_window_s
                        )
                        for t in group.teks
                        if t.expires_at() > now
                    ),
                    group.sequence,
                    members,
                    pol.selectors,
                    self._unauthorized[pol.name],
                )
            )
        sas.sort(key=lambda s: -s.conn_id)
        return KsStatus(
            self.config.local_address,
            tuple(groups),
            tuple(sas),
            dict(self._rejected),
            self._registration_stats(),
            self._coop.status(now) if self._coop is not None else None,
        )

    def _isakmp_sa_lines(self) -> list[IsakmpSaInfo]:
        """Main Modes in progress (conn-id 0, as IOS shows them) and established ISAKMP SAs."""
        local = self.config.local_address
        lines = [
            IsakmpSaInfo(local, p1.addr[0], _ios_main_mode_state(p1.responder.state), 0)
            for p1 in self._phase1.values()
        ]
        lines += [
            IsakmpSaInfo(local, ike.addr[0], "GDOI_BUSY" if ike.pulls_open else "GDOI_IDLE", ike.conn_id)
            for ike in self._ikes.values()
        ]
        return lines

    def _registration_stats(self) -> RegistrationStats:
        held = sum(len(p.responder.sai_b) + len(p.last_out) for p in self._phase1.values())
        held += sum(len(ike.last_out) for ike in self._ikes.values())
        held += sum(len(pull.last_out) for pull in self._pulls.values())
        return RegistrationStats(
            self._half_open(),
            self._half_open_peak,
            self.config.max_half_open,
            self.config.max_half_open_per_peer,
            self.config.cookie_threshold,
            dict(self._stateless),
            len(self._ikes),
            self._offers.count(),
            held + self._offers.size_bytes(),
        )

    # --- keys ---------------------------------------------------------------------------------------

    def _new_tek(self, policy: GroupPolicy, now: float, used: set[int]) -> _Tek:
        spec = TRANSFORMS[policy.transform]
        while True:
            spi = int.from_bytes(self._random(4), "big")
            if spi >= 256 and spi not in used:  # RFC 4303 section 2.1: SPIs 1-255 are reserved
                break
        return _Tek(
            spi,
            policy.transform,
            self._random(spec.enc_key_len),
            self._random(spec.int_key_len),
            now,
            policy.tek_lifetime_s,
        )

    def _new_kek(self, policy: GroupPolicy, now: float) -> _Kek:
        cipher = policy.kek_cipher
        return _Kek(
            self._random(16),
            # RFC 6407 section 5.5.2.1: the IV members need for CBC comes with the key.
            KekKey(cipher, self._random(cipher_key_len(cipher)), self._random(cipher_block_len(cipher))),
            now,
            policy.kek_lifetime_s,
        )

    @staticmethod
    def _sig_hash(policy: GroupPolicy) -> str:
        # The legacy 3DES KEK of the IOS seed configuration signs with SHA-1 (IOS shows HMAC_AUTH_SHA);
        # every other configuration signs with SHA-256.
        return "sha1" if policy.kek_cipher is Phase1Cipher.TRIPLE_DES else "sha256"

    def _kek_policy(self, group: _Group, now: float) -> KekPolicy:
        pol = group.policy
        multicast = pol.rekey_transport is RekeyTransport.MULTICAST
        dest = pol.rekey_multicast_address if multicast and pol.rekey_multicast_address else "0.0.0.0"
        return KekPolicy(
            group.kek.spi,
            group.kek.key,
            max(0, int(group.kek.expires_at() - now)),
            self._sig_hash(pol),
            group.signing_key.key_size,
            rsa_public_der(group.signing_key.public_key()),
            self.config.local_address,
            dest,
            ack_requested=not multicast,
            port=self.config.port,
        )

    def _tek_policies(self, group: _Group, now: float) -> tuple[TekPolicy, ...]:
        pol = group.policy
        return tuple(
            TekPolicy(
                t.spi,
                t.transform,
                t.encryption_key,
                t.integrity_key,
                pol.selectors,
                max(1, int(t.expires_at() - now)),
                pol.replay_time_window_s,
            )
            for t in group.teks
            if t.expires_at() > now
        )

    def _kek_info(self, group: _Group, now: float) -> KekInfo:
        pol = group.policy
        return KekInfo(
            pol.rekey_transport,
            max(0, int(group.kek.expires_at() - now)),
            group.kek.key.cipher,
            cipher_key_len(group.kek.key.cipher) * 8,
            SIG_HASH_IOS_NAMES[self._sig_hash(pol)],
            group.signing_key.key_size,
            group.kek.spi,
            pol.rekey_multicast_address if pol.rekey_transport is RekeyTransport.MULTICAST else None,
        )

    @staticmethod
    def _ahead(lifetime: int, ahead: int) -> float:
        return float(min(ahead, lifetime / 2))

    def _next_rekey_at(self, group: _Group) -> float:
        pol = group.policy
        newest = group.teks[-1]
        tek_at = newest.created_at + newest.lifetime_s - self._ahead(newest.lifetime_s, pol.rekey_ahead_s)
        kek_at = (
            group.kek.created_at + group.kek.lifetime_s - self._ahead(group.kek.lifetime_s, pol.rekey_ahead_s)
        )
        return min(tek_at, kek_at)

    # --- rekey (GROUPKEY-PUSH) ------------------------------------------------------------------------

    def _rekey(self, group: _Group, now: float) -> None:
        pol = group.policy
        if group.pending is not None:
            self._finish_rekey(group, now)
        group.teks = [t for t in group.teks if t.expires_at() > now]
        group.teks.append(self._new_tek(pol, now, {t.spi for t in group.teks}))
        protect = group.kek
        kek_ahead = self._ahead(group.kek.lifetime_s, pol.rekey_ahead_s)
        if now >= group.kek.created_at + group.kek.lifetime_s - kek_ahead:
            group.prev_kek = group.kek
            group.kek = self._new_kek(pol, now)
        group.sequence += 1
        datagram = self._build_push(group, protect, now)
        multicast = pol.rekey_transport is RekeyTransport.MULTICAST
        pending = _PendingRekey(
            group.sequence,
            datagram,
            now + pol.rekey_retransmit_interval_s,
            pol.rekey_retransmit_count,
            set(group.members),
            multicast,
        )
        group.pending = pending
        for m in group.members.values():
            m.rekeys_sent += 1
        self._transmit(group, pending)
        self._events.append(RekeySent(pol.name, group.sequence, len(group.members)))
        if self._coop is not None:
            self._coop.state_changed(now)

    def _transmit(self, group: _Group, pending: _PendingRekey) -> None:
        pol = group.policy
        if pending.multicast and pol.rekey_multicast_address:
            self._out.append((pending.datagram, (pol.rekey_multicast_address, self.config.port)))
            return
        for address in sorted(pending.unacked):
            m = group.members.get(address)
            if m is not None:
                self._out.append((pending.datagram, (m.address, m.port)))

    def _finish_rekey(self, group: _Group, now: float) -> None:
        """The acknowledgement window of the pending rekey closed: count misses, drop members."""
        pending = group.pending
        group.pending = None
        if pending is None or pending.multicast:
            return
        limit = self.config.max_missed_acks or group.policy.rekey_retransmit_count + 1
        for address in sorted(pending.unacked):
            m = group.members.get(address)
            if m is None:
                continue
            m.missed_acks += 1
            if m.missed_acks >= limit:
                del group.members[address]
                if self._coop is not None:
                    self._coop.state_changed(now)
                self._events.append(
                    MemberDropped(
                        address, f"missed the acknowledgement of {m.missed_acks} consecutive rekeys"
                    )
                )

    def _build_push(
        self, group: _Group, protect: _Kek, now: float, signing_key: rsa.RSAPrivateKey | None = None
    ) -> bytes:
        """GROUPKEY-PUSH: HDR*, SEQ, SA, KD, SIG (RFC 6407 section 4); signed with the group's key
        unless ``signing_key`` is given (a COOP hand-over signs with the key its members know)."""
        signing_key = signing_key or group.signing_key
        kek = self._kek_policy(group, now)
        teks = self._tek_policies(group, now)
        payloads: list[Payload] = [SeqPayload(group.sequence), sa_payload(kek, teks), kd_payload(kek, teks)]
        sig_len = (signing_key.key_size + 7) // 8
        first, body = encode_payloads([*payloads, SigPayload(b"\x00" * sig_len)])  # chains KD to SIG
        signed_part = body[: len(body) - GENERIC_HEADER_LEN - sig_len]
        header = Header(
            protect.spi[:8], protect.spi[8:], first, ExchangeType.GROUPKEY_PUSH, Flags.ENCRYPTION, 0, 0
        )
        # Signed as the message stands before encryption: its length counts the SIG but no padding.
        length = rekey_signed_length(signed_part, GENERIC_HEADER_LEN + sig_len)
        signed = rekey_signed_bytes(header.encode(), signed_part, length)
        sig = rsa_sign(signing_key, self._sig_hash(group.policy), signed)
        _first, sig_payload = encode_payloads([SigPayload(sig)])
        ciphertext = protect.key.seal(signed_part + sig_payload, self._random)
        return replace(header, length=ISAKMP_HEADER_LEN + len(ciphertext)).encode() + ciphertext

    # --- receiving ----------------------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        header = Header.decode(data)
        if header.exchange == ExchangeType.MAIN_MODE:
            self._main_mode(header, data, addr, now)
        elif header.exchange == ExchangeType.GROUPKEY_PULL:
            self._pull(header, data, addr, now)
        elif header.exchange == ExchangeType.GDOI_REKEY_ACK:
            self._ack(header, data, addr, now)
        elif header.exchange == ExchangeType.COOP and self._coop is not None:
            self._coop_message(header, data, addr, now)
        else:
            raise Reject(
                "unsupported-exchange", f"exchange type {header.exchange} is not handled by a key server"
            )

    def _half_open(self) -> int:
        return len(self._phase1) + self._pulls_open

    def _main_mode(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        if header.rcookie == ZERO_COOKIE:
            self._main_mode_first(header, data, addr, now)
            return
        ip = addr[0]
        key = (ip, header.icookie)
        digest = hashlib.sha256(data).digest()
        p1 = self._phase1.get(key)
        if p1 is None or p1.responder.rcookie != header.rcookie:
            done = self._ikes.get(header.spi)
            if done is not None and done.addr[0] == ip and digest == done.last_in:
                self._out.append((done.last_out, addr))  # our message 6 was lost: say it again
                return
            self._resume(header, data, addr, now, conflict=p1 is not None)
            return
        if digest == p1.last_in:
            self._out.append((p1.last_out, addr))
            return
        reply = p1.responder.handle(header, data, now)
        p1.last_in, p1.last_out = digest, reply
        self._awaiting_msg3.pop(key, None)
        self._out.append((reply, addr))
        sa = p1.responder.established
        if sa is not None:
            self._drop_phase1(key)  # its heap entry goes stale and is skipped
            self._offers.prove(ip, p1.offer_digest, p1.responder.sai_b)
            self._add_ike(sa, addr, digest, reply, now)
            self._events.append(Phase1Established(ip, sa.icookie, sa.rcookie, sa.keys.enc_key))

    def _main_mode_first(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        """Message 1: answer with message 2; keep state only if neither the table nor the peer is full."""
        ip = addr[0]
        if len(data) > MAX_FIRST_MESSAGE_LEN:
            raise Reject("oversized", f"Main Mode message 1 of {len(data)} bytes (at most {MAX_FIRST_MESSAGE_LEN})")
        psk = psk_for(self.config.psk_by_peer, ip)
        if psk is None:
            raise Reject("no-psk", f"no pre-shared key is configured for {ip}; registration refused")
        offer = read_offer(self.config.isakmp_policies, header, data)
        key = (ip, header.icookie)
        p1 = self._phase1.get(key)
        if p1 is not None:
            if p1.offer_digest != offer.digest:
                raise Reject("unexpected", "a different message 1 for a Main Mode in progress")
            self._out.append((message2(offer, header.icookie, p1.responder.rcookie), addr))
            return
        rcookie = self._cookies.make(addr, header.icookie, offer.digest, now)
        self._expire(now)
        self._offers.remember(ip, offer.digest, offer.sai_b)
        if self._half_open() >= self.config.cookie_threshold:
            self._stateless["table-busy"] += 1
        elif self._half_open_by_ip[ip] >= self.config.max_half_open_per_peer:
            self._stateless["peer-at-limit"] += 1
        else:
            responder = MainModeResponder(
                self.config.local_address, ip, psk, offer, header.icookie, rcookie, self._random
            )
            self._add_phase1(key, _Phase1(responder, addr, now, offer.digest))
            self._awaiting_msg3[key] = None
        self._out.append((message2(offer, header.icookie, rcookie), addr))

    def _resume(self, header: Header, data: bytes, addr: Addr, now: float, *, conflict: bool) -> None:
        """Message 3 under a cookie answered statelessly: rebuild the exchange from cookie and offer."""
        ip = addr[0]
        if header.encrypted or conflict:
            raise Reject("unknown-peer", "no Main Mode in progress for these cookies")
        psk = psk_for(self.config.psk_by_peer, ip)
        if psk is None:
            raise Reject("no-psk", f"no pre-shared key is configured for {ip}; registration refused")
        bodies = dict(self._offers.candidates(ip))
        digest = self._cookies.check(addr, header.icookie, header.rcookie, list(bodies), now)
        if digest is None:
            raise Reject(
                "bad-cookie", "message 3 under a responder cookie this key server did not give that peer lately"
            )
        offer: Offer = offer_from_body(self.config.isakmp_policies, bodies[digest])
        self._expire(now)
        victim = self._room_for_proven(ip)
        responder = MainModeResponder(
            self.config.local_address, ip, psk, offer, header.icookie, header.rcookie, self._random
        )
        reply = responder.handle(header, data, now)  # raises before anything changes
        if victim is not None:
            self._drop_phase1(victim)
        key = (ip, header.icookie)
        self._add_phase1(key, _Phase1(responder, addr, now, digest, hashlib.sha256(data).digest(), reply))
        self._out.append((reply, addr))

    def _room_for_proven(self, ip: str) -> tuple[str, bytes] | None:
        """A peer that proved its address may push out an unproven Main Mode (its address's first)."""
        if self._half_open_by_ip[ip] >= self.config.max_half_open_per_peer:
            victim = next((k for k in self._awaiting_msg3 if k[0] == ip), None)
            if victim is None:
                raise Reject(
                    "peer-half-open-limit",
                    f"{ip} has {self._half_open_by_ip[ip]} registrations in progress already",
                )
            return victim
        if self._half_open() >= self.config.max_half_open:
            victim = next(iter(self._awaiting_msg3), None)
            if victim is None:
                raise Reject("half-open-limit", f"{self._half_open()} registrations already in progress")
            return victim
        return None

    def _add_phase1(self, key: tuple[str, bytes], p1: _Phase1) -> None:
        self._phase1[key] = p1
        self._phase1_deadlines.push(key, p1)
        self._count_half_open(key[0], +1)

    def _drop_phase1(self, key: tuple[str, bytes]) -> None:
        del self._phase1[key]
        self._awaiting_msg3.pop(key, None)
        self._count_half_open(key[0], -1)

    def _count_half_open(self, ip: str, delta: int) -> None:
        self._half_open_by_ip[ip] += delta
        if self._half_open_by_ip[ip] <= 0:
            del self._half_open_by_ip[ip]
        self._half_open_peak = max(self._half_open_peak, self._half_open())

    def _group_by_identity(self, identity: int) -> _Group | None:
        return next((g for g in self._groups.values() if g.policy.identity == identity), None)

    def _pull(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        ip = addr[0]
        ike = self._ikes.get(header.spi)
        if ike is None or ike.addr[0] != ip:
            raise Reject("unknown-peer", "GROUPKEY-PULL under no ISAKMP SA known for this peer")
        if header.message_id == 0:
            raise Reject("malformed", "GROUPKEY-PULL with message ID 0")
        key = (header.spi, header.message_id)
        pull = self._pulls.get(key)
        if pull is not None and hashlib.sha256(data).digest() == pull.last_in:
            self._out.append((pull.last_out, addr))
            return
        if pull is None:
            self._pull_first(header, data, addr, now, ike, key)
            return
        group = self._groups[pull.group]
        reply = pull.exchange.handle(header, data, group.sequence)
        ike.pulls_open -= 1
        self._touch(ike, now)
        pull.last_in, pull.last_out, pull.started_at = hashlib.sha256(data).digest(), reply, now
        self._pulls_open -= 1
        self._count_half_open(ip, -1)
        self._pull_deadlines.push(key, pull)  # now kept FINISHED_PULL_KEEP_S for retransmitted HASH(3)
        self._out.append((reply, addr))
        self._register(group, addr, now, ike, pull)

    def _pull_first(
        self, header: Header, data: bytes, addr: Addr, now: float, ike: _Ike, key: tuple[bytes, int]
    ) -> None:
        sa = ike.sa
        self._expire(now)
        victim = self._room_for_proven(addr[0])  # an ISAKMP SA is proof enough
        request = read_request(sa, header, data)
        group = self._group_by_identity(request.group_identity)
        if group is None:
            raise Reject(
                "wrong-group",
                f"{addr[0]} asked for group identity {request.group_identity}, which is not served here",
                self._notify(sa, addr, NotifyType.INVALID_ID_INFORMATION),
            )
        exchange = PullResponder(sa, request)
        authorization = group.policy.authorization
        if authorization is not None and not authorization.permits(addr[0]):
            self._unauthorized[group.policy.name] += 1  # kept although the datagram is refused: a tally
            raise Reject(
                "unauthorized",
                f"{addr[0]} is not permitted by access list {authorization.acl_name} of group "
                f"{group.policy.name} (authorization address ipv4)",
                self._notify(sa, addr, NotifyType.AUTHENTICATION_FAILED),
            )
        if victim is not None:
            self._drop_phase1(victim)
        nr = self._random(NONCE_LEN)
        reply = exchange.answer(nr, self._kek_policy(group, now), self._tek_policies(group, now))
        pull = self._pulls[key] = _Pull(
            exchange, group.policy.name, addr[0], now, hashlib.sha256(data).digest(), reply
        )
        self._pulls_open += 1
        self._count_half_open(addr[0], +1)
        ike.pulls_open += 1
        self._touch(ike, now)
        self._pull_deadlines.push(key, pull)
        self._out.append((reply, addr))

    def _notify(self, sa: IkeSa, addr: Addr, notify_type: NotifyType) -> tuple[bytes, Addr]:
        """An Informational exchange carrying one error notify (RFC 2409 section 5.7)."""
        mid = int.from_bytes(self._random(4), "big") or 1
        msg = sa.seal(
            ExchangeType.INFORMATIONAL,
            mid,
            [NotifyPayload(Doi.GDOI, ProtocolId.ISAKMP, notify_type, sa.cookies)],
        )
        sa.ivs.pop(mid, None)
        return msg, addr

    def _register(self, group: _Group, addr: Addr, now: float, ike: _Ike, pull: _Pull) -> None:
        ip = addr[0]
        sa = ike.sa
        group.members[ip] = _Member(
            ip,
            addr[1],
            group.policy.name,
            now,
            ike.conn_id,
            sa.suite.hash,
            sa.keys.skeyid_a,
            pull.exchange.ni_b,
            pull.exchange.nr_b,
            last_ack_sequence=group.sequence,
        )
        if group.pending is not None:
            group.pending.unacked.discard(ip)  # the PULL just gave it the current keys
        for cookies in [c for c in self._ikes_by_ip.get(ip, ()) if c != sa.cookies]:
            self._forget_ike(cookies)  # one ISAKMP SA per member, as "show crypto isakmp sa" lists them
        self._events.append(MemberRegistered(ip, group.policy.name))
        if self._coop is not None:
            if self._coop.is_primary:
                self._coop.state_changed(now)
            else:  # the primary sends the rekeys: it must know (and be able to check the ACKs of) this member
                self._coop.report_members([_member_doc(group.members[ip], now)], now)

    def _ack(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        """RFC 8263 GROUPKEY-PUSH acknowledgement: HDR*, HASH, SEQ, ID under the KEK."""
        found = None
        for group in self._groups.values():
            for kek in (group.kek, group.prev_kek):
                if kek is not None and kek.spi == header.spi:
                    found = (group, kek)
        if found is None:
            raise Reject("unknown-spi", "acknowledgement for a KEK SPI this key server does not have")
        group, kek = found
        if not header.encrypted:
            raise Reject("malformed", "acknowledgement is not encrypted")
        plain = kek.key.open(data[ISAKMP_HEADER_LEN:])
        decoded = decode_payloads(header.next_payload, plain, gdoi_sa=True, padded=True)
        first = decoded[0].payload if decoded else None
        if not isinstance(first, HashPayload):
            raise Reject("malformed", "acknowledgement does not start with HASH")
        member = group.members.get(addr[0])
        if member is None:
            raise Reject(
                "unknown-peer",
                f"acknowledgement from {addr[0]}, which is not a member of {group.policy.name}",
            )
        rest = b"".join(d.raw for d in decoded[1:])
        expect = prf(
            member.prf_hash,
            member.skeyid_a,
            header.message_id.to_bytes(4, "big") + member.ni_b + member.nr_b + rest,
        )
        if not hmac.compare_digest(expect, first.data):
            raise Reject("bad-hash", "acknowledgement HASH does not verify")
        seq = one(decoded[1:], SeqPayload, "acknowledgement").seq
        ident = one(decoded[1:], IdPayload, "acknowledgement")
        if ident.id_type != IdType.IPV4_ADDR or ident.data != ipaddress.IPv4Address(addr[0]).packed:
            raise Reject("malformed", "acknowledgement ID does not name the sender")
        if seq > group.sequence or seq <= member.last_ack_sequence:
            raise Reject(
                "replayed",
                f"acknowledgement of sequence {seq} (last acknowledged "
                f"{member.last_ack_sequence}, current {group.sequence})",
            )
        member.rekey_acks += 1
        member.last_ack_sequence = seq
        member.missed_acks = 0
        if group.pending is not None and group.pending.sequence <= seq:
            group.pending.unacked.discard(addr[0])

    # --- key server cooperation (docs/coop.md) ---------------------------------------------------------

    def _coop_message(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        """A COOP datagram: the COOP engine checks it; what it asks of the groups is done here first,
        so a refusal on either side leaves everything as it was."""
        coop = self._coop
        assert coop is not None
        message = coop.open(header, data, addr)
        groups = message.body.get("groups")
        if message.effect is CoopEffect.IMPORT_STATE:
            imported = self._read_groups(groups, now, addr[0])
            self._keep_fresh_members(imported, now)
            self._groups = imported
        elif message.effect is CoopEffect.MERGE_STATE:
            self._coop_merge(self._read_groups(groups, now, addr[0]), now)
        elif message.effect is CoopEffect.ADD_MEMBERS:
            records = message.body.get("members")
            if not isinstance(records, list):
                raise Reject("malformed", f"COOP members report from {addr[0]} carries no list")
            members = [self._read_member(r, now, addr[0]) for r in records]
            for member in members:
                group = self._groups[member.group_name]
                known = group.members.get(member.address)
                if known is None or known.registered_at < member.registered_at:
                    group.members[member.address] = member
            coop.state_changed(now)
        coop.apply(message, now)
        self._events.extend(coop.take_events())

    def _keep_fresh_members(self, imported: dict[str, _Group], now: float) -> None:
        """Members that just registered here may be missing from a state the primary made before our
        report reached it (or the report was lost): keep them, and report them again."""
        coop = self._coop
        assert coop is not None
        recent = max(10.0, 2 * coop.config.announce_period_s)
        missing = [
            member
            for name, group in self._groups.items()
            for address, member in group.members.items()
            if member.conn_id and now - member.registered_at < recent and address not in imported[name].members
        ]
        for member in missing:
            imported[member.group_name].members[member.address] = member
        if missing:
            coop.report_members([_member_doc(m, now) for m in missing], now)

    def _coop_snapshot(self, now: float) -> dict[str, Any]:
        """The groups as a secondary must hold them: policy, signing key, KEKs, TEKs, sequence, members.
        Times travel as ages, since each key server's clock has its own origin."""
        return {
            name: {
                "identity": g.policy.identity,
                "policy": _policy_doc(g.policy),
                "signing_key": g.signing_key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).hex(),
                "sequence": g.sequence,
                "kek": _kek_doc(g.kek, now),
                "prev_kek": None if g.prev_kek is None else _kek_doc(g.prev_kek, now),
                "teks": [_tek_doc(t, now) for t in g.teks],
                "members": [_member_doc(m, now) for m in g.members.values()],
            }
            for name, g in self._groups.items()
        }

    def _read_groups(self, doc: object, now: float, sender: str) -> dict[str, _Group]:
        """A peer's groups, checked whole before anything is replaced (a bad document changes nothing)."""
        if not isinstance(doc, dict) or set(doc) != set(self._groups):
            raise Reject(
                "bad-policy",
                f"COOP state from {sender} names groups {sorted(doc) if isinstance(doc, dict) else doc!r:.80}, "
                f"this key server serves {sorted(self._groups)}: the key servers' configurations differ",
            )
        groups: dict[str, _Group] = {}
        try:
            for name, entry in doc.items():
                local = self._groups[name]
                if entry["identity"] != local.policy.identity:
                    raise Reject("bad-policy", f"COOP state from {sender}: group {name} has another identity")
                key = serialization.load_der_private_key(bytes.fromhex(entry["signing_key"]), None)
                if not isinstance(key, rsa.RSAPrivateKey):
                    raise Reject("bad-policy", f"COOP state from {sender}: group {name}'s signing key is not RSA")
                teks = [_tek_from_doc(t, now) for t in entry["teks"]]
                if not teks:
                    raise Reject("bad-policy", f"COOP state from {sender}: group {name} has no TEK")
                members = [self._read_member(m, now, sender) for m in entry["members"]]
                groups[name] = _Group(
                    _policy_from_doc(local.policy, entry["policy"]),
                    key,
                    _kek_from_doc(entry["kek"], now),
                    None if entry["prev_kek"] is None else _kek_from_doc(entry["prev_kek"], now),
                    teks,
                    int(entry["sequence"]),
                    {m.address: m for m in members if m.group_name == name},
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Reject("malformed", f"COOP state from {sender}: {type(exc).__name__}: {exc!s:.120}") from None
        return groups

    def _read_member(self, record: object, now: float, sender: str) -> _Member:
        try:
            assert isinstance(record, dict)
            member = _Member(
                str(ipaddress.IPv4Address(record["address"])),
                int(record["port"]),
                str(record["group"]),
                now - float(record["age"]),
                0,  # no ISAKMP SA of ours carried its registration
                Phase1Hash(record["prf_hash"]),
                bytes.fromhex(record["skeyid_a"]),
                bytes.fromhex(record["ni_b"]),
                bytes.fromhex(record["nr_b"]),
                int(record["rekeys_sent"]),
                int(record["rekey_acks"]),
                int(record["missed_acks"]),
                int(record["last_ack_sequence"]),
            )
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise Reject("malformed", f"COOP member record from {sender}: {type(exc).__name__}: {exc!s:.80}") from None
        if member.group_name not in self._groups:
            raise Reject("bad-policy", f"COOP member record from {sender} for unknown group {member.group_name}")
        return member

    def _coop_merge(self, theirs: dict[str, _Group], now: float) -> None:
        """Another primary yielded to this one (a partition healed): one group again.

        Its members join ours; the next rekey goes above both sequences, so every member takes it.
        Members that registered with the other side may hold its KEK rather than ours: they get one
        extra push under that KEK, signed with the key they know, that hands them our KEK and TEKs.
        """
        for name, group in self._groups.items():
            other = theirs[name]
            newcomers = [m for a, m in other.members.items() if a not in group.members]
            for member in newcomers:
                group.members[member.address] = member
            group.sequence = max(group.sequence, other.sequence)
            self._rekey(group, now)
            if other.kek.spi != group.kek.spi and newcomers:
                handover = self._build_push(group, other.kek, now, signing_key=other.signing_key)
                for member in newcomers:
                    self._out.append((handover, (member.address, member.port)))

    # --- housekeeping --------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Forget half-open registrations, finished PULLs and ISAKMP SAs whose time is up."""
        for key, _p1 in self._phase1_deadlines.expire(now):
            self._awaiting_msg3.pop(key, None)
            self._count_half_open(key[0], -1)
        for (cookies, _mid), pull in self._pull_deadlines.expire(now):
            if not pull.done:
                self._pulls_open -= 1
                ike = self._ikes.get(cookies)
                if ike is not None:
                    ike.pulls_open -= 1
                self._count_half_open(pull.peer, -1)
        for cookies, ike in self._ike_deadlines.expire(now):
            self._unindex_ike(cookies, ike)

    def _add_ike(self, sa: IkeSa, addr: Addr, last_in: bytes, last_out: bytes, now: float) -> None:
        cookies = sa.cookies
        if cookies in self._ikes:  # random cookies do not repeat, but the index must never go stale
            self._forget_ike(cookies)
        same_peer = self._ikes_by_ip.get(addr[0], set())
        while len(same_peer) >= MAX_ISAKMP_SAS_PER_PEER:  # the newest is the one the peer uses
            self._forget_ike(min(same_peer, key=lambda c: self._ikes[c].conn_id))
            same_peer = self._ikes_by_ip.get(addr[0], set())
        ike = _Ike(sa, addr, self._next_conn_id, last_in, last_out, now)
        self._next_conn_id += 1
        self._ikes[cookies] = ike
        self._ikes_by_ip.setdefault(addr[0], set()).add(cookies)
        self._ike_deadlines.push(cookies, ike)

    def _touch(self, ike: _Ike, now: float) -> None:
        """The SA was just used for registration: its idle time starts again."""
        ike.last_used = now
        self._ike_deadlines.push(ike.sa.cookies, ike)

    def _forget_ike(self, cookies: bytes) -> None:
        self._unindex_ike(cookies, self._ikes.pop(cookies))

    def _unindex_ike(self, cookies: bytes, ike: _Ike) -> None:
        same_ip = self._ikes_by_ip.get(ike.addr[0])
        if same_ip is not None:
            same_ip.discard(cookies)
            if not same_ip:
                del self._ikes_by_ip[ike.addr[0]]


def _policy_doc(policy: GroupPolicy) -> dict[str, Any]:
    """What members see of a group's policy; the authorization list and key label stay local."""
    return {
        "transform": policy.transform.value,
        "tek_lifetime_s": policy.tek_lifetime_s,
        "kek_lifetime_s": policy.kek_lifetime_s,
        "kek_cipher": policy.kek_cipher.value,
        "selectors": [[s.protocol, s.source, s.destination] for s in policy.selectors],
        "rekey_transport": policy.rekey_transport.value,
        "rekey_retransmit_interval_s": policy.rekey_retransmit_interval_s,
        "rekey_retransmit_count": policy.rekey_retransmit_count,
        "rekey_multicast_address": policy.rekey_multicast_address,
        "replay_time_window_s": policy.replay_time_window_s,
        "rekey_ahead_s": policy.rekey_ahead_s,
    }


def _policy_from_doc(local: GroupPolicy, doc: dict[str, Any]) -> GroupPolicy:
    return replace(
        local,
        transform=TekTransform(doc["transform"]),
        tek_lifetime_s=int(doc["tek_lifetime_s"]),
        kek_lifetime_s=int(doc["kek_lifetime_s"]),
        kek_cipher=Phase1Cipher(doc["kek_cipher"]),
        selectors=tuple(TrafficSelector(int(p), str(src), str(dst)) for p, src, dst in doc["selectors"]),
        rekey_transport=RekeyTransport(doc["rekey_transport"]),
        rekey_retransmit_interval_s=int(doc["rekey_retransmit_interval_s"]),
        rekey_retransmit_count=int(doc["rekey_retransmit_count"]),
        rekey_multicast_address=doc["rekey_multicast_address"],
        replay_time_window_s=doc["replay_time_window_s"],
        rekey_ahead_s=int(doc["rekey_ahead_s"]),
    )


def _kek_doc(kek: _Kek, now: float) -> dict[str, Any]:
    return {
        "spi": kek.spi.hex(),
        "cipher": kek.key.cipher.value,
        "key": kek.key.key.hex(),
        "iv": None if kek.key.iv is None else kek.key.iv.hex(),
        "age": now - kek.created_at,
        "lifetime_s": kek.lifetime_s,
    }


def _kek_from_doc(doc: dict[str, Any], now: float) -> _Kek:
    spi = bytes.fromhex(doc["spi"])
    if len(spi) != 16:
        raise ValueError("a KEK SPI is 16 bytes")
    iv = doc["iv"]
    key = KekKey(Phase1Cipher(doc["cipher"]), bytes.fromhex(doc["key"]), None if iv is None else bytes.fromhex(iv))
    return _Kek(spi, key, now - float(doc["age"]), int(doc["lifetime_s"]))


def _tek_doc(tek: _Tek, now: float) -> dict[str, Any]:
    return {
        "spi": tek.spi,
        "transform": tek.transform.value,
        "encryption_key": tek.encryption_key.hex(),
        "integrity_key": tek.integrity_key.hex(),
        "age": now - tek.created_at,
        "lifetime_s": tek.lifetime_s,
    }


def _tek_from_doc(doc: dict[str, Any], now: float) -> _Tek:
    return _Tek(
        int(doc["spi"]),
        TekTransform(doc["transform"]),
        bytes.fromhex(doc["encryption_key"]),
        bytes.fromhex(doc["integrity_key"]),
        now - float(doc["age"]),
        int(doc["lifetime_s"]),
    )


def _member_doc(member: _Member, now: float) -> dict[str, Any]:
    """A member as another key server needs it: where to rekey it and how to check its ACKs."""
    return {
        "address": member.address,
        "port": member.port,
        "group": member.group_name,
        "age": now - member.registered_at,
        "prf_hash": member.prf_hash.value,
        "skeyid_a": member.skeyid_a.hex(),
        "ni_b": member.ni_b.hex(),
        "nr_b": member.nr_b.hex(),
        "rekeys_sent": member.rekeys_sent,
        "rekey_acks": member.rekey_acks,
        "missed_acks": member.missed_acks,
        "last_ack_sequence": member.last_ack_sequence,
    }


def _ios_main_mode_state(state: MainModeState) -> str:
    """IOS's ``show crypto isakmp sa`` name: MM_SA_SETUP until KE, Ni arrive, MM_KEY_EXCH after."""
    return "MM_SA_SETUP" if state is MainModeState.WAIT_MSG3 else "MM_KEY_EXCH"


def _phase1_deadline(p1: _Phase1) -> float:
    return p1.started_at + HALF_OPEN_TIMEOUT_S


def _pull_deadline(pull: _Pull) -> float:
    return pull.started_at + (FINISHED_PULL_KEEP_S if pull.done else HALF_OPEN_TIMEOUT_S)


def _ike_deadline(ike: _Ike) -> float:
    return min(ike.sa.expires_at(), ike.last_used + REGISTRATION_SA_IDLE_S)


def _check_limits(config: KeyServerConfig) -> None:
    """The registration limits must make sense together (the config readers say where; this says what)."""
    if not 1 <= config.max_half_open <= MAX_HALF_OPEN_LIMIT:
        raise ValueError(f"max_half_open {config.max_half_open} is outside 1..{MAX_HALF_OPEN_LIMIT}")
    if config.max_half_open_per_peer < 1:
        raise ValueError(f"max_half_open_per_peer {config.max_half_open_per_peer} is below 1")
    if config.cookie_threshold < 0:
        raise ValueError(f"cookie_threshold {config.cookie_threshold} is below 0")


