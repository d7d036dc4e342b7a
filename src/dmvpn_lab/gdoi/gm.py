"""The GDOI group member as a sans-I/O engine: RFC 6407 sections 3 and 4 from the member's side.

The member's life, in protocol order:

1. Registration: IKEv1 Main Mode to ``servers[0]`` (:mod:`.phase1`, the member initiates), then
   GROUPKEY-PULL (RFC 6407 section 3.2, :mod:`.pull`) under that SA: ``HASH(1), Ni, ID`` where the
   ID is the group identity as ID_KEY_ID; the key server answers with ``HASH(2), Nr, SA`` (the KEK
   and TEK policy), the member accepts with ``HASH(3)`` and receives ``HASH(4), SEQ, KD`` (the keys,
   and the sequence number rekeys must exceed).  Every message is retransmitted by timer; after the last retry the
   attempt fails (``RegistrationFailed``) and the next server in the list is tried after
   ``registration_retry_s``.
2. Rekeys: a GROUPKEY-PUSH (RFC 6407 section 4) arrives encrypted under the KEK (its SPI is in the
   cookies; the IV came with the key, or, from older key servers, in front of the ciphertext).  The
   member decrypts it, verifies the SIG over ``"rekey" | HDR | SEQ | [D] | SA | KD`` with the key
   server's public key from the KD of the PULL (SIG_ALGORITHM_KEY, section 5.5.2; the header's length
   field is read three ways, see :func:`_verify_push_signature`), refuses a sequence number not above
   the last one (``replayed``), installs the new TEKs at once (``TekInstalled``) and keeps the older
   ones until their own lifetimes end (``TekExpired``), so traffic flows across the rollover.  A push
   that brings a new KEK moves the member to it.  Delete payloads remove the TEKs they name at once
   (``TekDeleted``) and the KEKs they name; with its current KEK deleted the member registers again.
   A push is applied whole or not at all: a KEK SPI the member holds keeps its algorithm and keys.
3. Acknowledgements (RFC 8263): when the SA KEK asks for them, each accepted push is answered with
   ``HDR*, HASH, SEQ, ID`` (exchange GDOI_REKEY_ACK, KEK SPI as cookies, encrypted under the KEK),
   ``HASH = prf(SKEYID_a, M-ID | Ni_b | Nr_b | SEQ | ID)`` from the registration.  A retransmitted
   push (same bytes as the last accepted one) is acknowledged again without being applied twice.
4. Re-registration: when the newest TEK nears its end and no rekey came ("GM Reregisters in"), or
   the KEK is about to expire, the member registers again on its own.

The member's place in this life is :class:`GmState` (``MAIN_MODE`` and ``GROUPKEY_PULL`` while it
registers, then ``REGISTERED``, ``RETRY_WAIT`` after a failed attempt), changed only through the
logging setter of :class:`~.statemachine.StateMachine`; docs/engine-api.md draws it.

Every rejected datagram yields exactly one :class:`MessageRejected`, bumps ``rejected[reason]`` and
changes nothing else (:class:`~.engine.Engine` rolls back); no exception escapes
:meth:`GroupMember.receive_datagram`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import rsa

from .codec import (
    Decoded,
    DeletePayload,
    GdoiSaPayload,
    HashPayload,
    Header,
    IdPayload,
    KdPayload,
    NotifyPayload,
    Payload,
    SeqPayload,
    SigPayload,
    decode_payloads,
    encode_payloads,
)
from .config_model import GroupMemberConfig, psk_for
from .constants import (
    ISAKMP_HEADER_LEN,
    KEK_SPI_LEN,
    Doi,
    ExchangeType,
    Flags,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    SaTekProtocol,
)
from .crypto import (
    KekKey,
    cipher_key_len,
    rekey_signed_bytes,
    rekey_signed_length,
    rsa_public_from_der,
    rsa_verify,
)
from .engine import Engine, Reject, at_most_one, one
from .events import (
    Phase1Established,
    Registered,
    RegistrationFailed,
    RekeyReceived,
    TekDeleted,
    TekExpired,
    TekInstalled,
    TekSA,
)
from .groupsa import (
    SIG_HASH_IOS_NAMES,
    KekAnnouncement,
    KekKeys,
    TekAnnouncement,
    read_kd,
    read_sa,
)
from .model import RekeyTransport
from .phase1 import IkeSa, MainModeInitiator, MainModeState
from .pull import PullInitiator
from .statemachine import StateMachine
from .status import GmStatus, IsakmpSaInfo, KekInfo, TekInfo

RETRANSMIT_INTERVAL_S = 5.0  # registration messages are sent again after this long without an answer
MAX_RETRANSMITS = 3
Addr = tuple[str, int]


class GmState(Enum):
    """The member's registration lifecycle (RFC 6407 section 3), logged and shown in ``show crypto gdoi``.

    ``status().registered`` says whether the member holds a registration's keys: a member that
    registers again keeps them through MAIN_MODE and GROUPKEY_PULL, and through RETRY_WAIT if that fails.
    """

    IDLE = "not started, or stopped"
    MAIN_MODE = "registering: IKEv1 Main Mode with the key server (phase 1)"
    GROUPKEY_PULL = "registering: GROUPKEY-PULL under the new ISAKMP SA (RFC 6407 section 3.2)"
    REGISTERED = "registered: rekeys arrive as GROUPKEY-PUSH (RFC 6407 section 4)"
    RETRY_WAIT = "the registration failed: the next key server is tried after registration_retry_s"


@dataclass
class _Kek:
    ann: KekAnnouncement
    key: KekKey
    public_key: rsa.RSAPublicKey
    expires_at: float
    conn_id: int


@dataclass
class _Registration:
    """What an acknowledgement needs from the registration (RFC 8263): keys and nonces."""

    ike: IkeSa
    ni_b: bytes
    nr_b: bytes
    server: str
    conn_id: int


class GroupMember(Engine, StateMachine[GmState]):
    """The group member engine (see the module docstring and docs/engine-api.md)."""

    def __init__(self, config: GroupMemberConfig, *, random: Callable[[int], bytes] = os.urandom) -> None:
        if not config.servers:
            raise ValueError("a group member needs at least one key server")
        Engine.__init__(self)
        StateMachine.__init__(self, GmState.IDLE)
        self.config = config
        self._random = random
        self._server_idx = 0
        self._started = False
        # registration in progress: the exchange of the current state (MAIN_MODE, GROUPKEY_PULL)
        self._p1: MainModeInitiator | None = None
        self._pull: PullInitiator | None = None
        self._last_out: bytes | None = None
        self._last_in: bytes | None = None
        self._retx_at: float | None = None
        self._retx_left = 0
        self._retry_at: float | None = None
        # registered state
        self._reg: _Registration | None = None
        self._kek: _Kek | None = None
        self._old_keks: list[_Kek] = []
        self._teks: dict[int, TekSA] = {}
        self._last_seq = 0
        self._last_push: bytes | None = None  # digest of the last accepted push, to re-ACK retransmissions
        self._send_acks = True
        self._acks_requested = False
        self._reregister_at: float | None = None
        self._rekeys_cumulative = 0
        self._rekeys_after_registration = 0
        self._acks_sent = 0
        self._last_rekey_at: float | None = None
        self._last_rekey_from: str | None = None
        self._next_conn_id = 1001

    # --- public API ---------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._started = True
        self._begin_registration(now)

    def get_timer(self) -> float | None:
        times = [t for t in (self._retx_at, self._retry_at, self._reregister_at) if t is not None]
        times.extend(t.expires_at() for t in self._teks.values())
        times.extend(k.expires_at for k in self._old_keks)
        if self._kek is not None:
            times.append(self._kek.expires_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for spi in [s for s, t in self._teks.items() if t.expires_at() <= now]:
            del self._teks[spi]
            self._events.append(TekExpired(spi))
        self._old_keks = [k for k in self._old_keks if k.expires_at > now]
        if self._kek is not None and self._kek.expires_at <= now:
            self._kek = None
        if self._retx_at is not None and now >= self._retx_at:
            if self._retx_left > 0 and self._last_out is not None:
                self._retx_left -= 1
                self._retx_at = now + RETRANSMIT_INTERVAL_S
                self._out.append((self._last_out, self._server_addr()))
            else:
                self._fail_registration(now, self._why_no_answer())
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._begin_registration(now)
        if self._reregister_at is not None and now >= self._reregister_at:
            self._reregister_at = None
            if not self._registering():
                self._begin_registration(now)

    def set_send_acks(self, enabled: bool) -> None:
        self._send_acks = enabled

    def stop(self, now: float) -> None:
        for spi in list(self._teks):
            self._events.append(TekExpired(spi))
        self._teks.clear()
        self._p1 = self._pull = None
        self._last_out = self._last_in = None
        self._retx_at = self._retry_at = self._reregister_at = None
        self._reg = self._kek = None
        self._old_keks = []
        self._started = False
        self._set_state(GmState.IDLE)

    def status(self, now: float) -> GmStatus:
        kek_info = None
        sas: list[IsakmpSaInfo] = []
        local = self.config.local_address
        if self._reg is not None:
            sas.append(IsakmpSaInfo(self._reg.server, local, "GDOI_IDLE", self._reg.conn_id))
        keks = [k for k in [self._kek, *self._old_keks] if k is not None]
        server = self._reg.server if self._reg is not None else self.config.servers[self._server_idx]
        for k in keks:
            sas.append(IsakmpSaInfo(local, server, "GDOI_REKEY", k.conn_id))
        if self._kek is not None:
            ann = self._kek.ann
            multicast = ipaddress.IPv4Address(ann.destination).is_multicast
            kek_info = KekInfo(
                RekeyTransport.MULTICAST if multicast else RekeyTransport.UNICAST,
                max(0, int(self._kek.expires_at - now)),
                ann.cipher,
                cipher_key_len(ann.cipher) * 8,
                SIG_HASH_IOS_NAMES[ann.sig_hash],
                ann.sig_key_bits,
                ann.spi,
                # RFC 6407 section 5.3: the SA KEK's DST ID is where rekeys come from; a multicast
                # address there is the group to join, 0.0.0.0 means unicast rekeys.
                ann.destination if multicast else None,
                ann.port if multicast else None,
            )
        teks = sorted(self._teks.values(), key=lambda t: t.installed_at)
        selectors = teks[-1].selectors if teks else ()
        return GmStatus(
            group_name=self.config.group_name,
            identity=self.config.identity,
            active_server=self._reg.server if self._reg is not None else None,
            servers=self.config.servers,
            registered=self._reg is not None,
            reregister_in_s=(
                max(0, int(self._reregister_at - now))
                if self._reregister_at is not None and self._reg is not None
                else None
            ),
            last_rekey_at=self._last_rekey_at,
            rekeys_cumulative=self._rekeys_cumulative,
            rekeys_after_registration=self._rekeys_after_registration,
            rekey_acks_sent=self._acks_sent,
            selectors=selectors,
            kek=kek_info,
            teks=tuple(
                TekInfo(t.spi, t.transform, max(0, int(t.expires_at() - now)), t.replay_time_window_s)
                for t in teks
            ),
            isakmp_sas=tuple(sorted(sas, key=lambda s: -s.conn_id)),
            rejected=dict(self._rejected),
            state=self.state.name,
            last_rekey_from=self._last_rekey_from,
        )

    # --- registration ---------------------------------------------------------------------------------

    def _describe(self) -> str:
        config = self.config
        return f"group member {config.local_address} (group {config.group_name}, key server {self._server()})"

    def _registering(self) -> bool:
        return self.state in (GmState.MAIN_MODE, GmState.GROUPKEY_PULL)

    def _server(self) -> str:
        return self.config.servers[self._server_idx]

    def _server_addr(self) -> Addr:
        return (self._server(), self.config.server_port)

    def _conn_id(self) -> int:
        self._next_conn_id += 1
        return self._next_conn_id - 1

    def _begin_registration(self, now: float) -> None:
        server = self._server()
        psk = psk_for(self.config.psk_by_peer, server)
        if psk is None:
            self._events.append(RegistrationFailed(server, f"no pre-shared key configured for {server}"))
            self._next_server(now)
            return
        self._p1 = MainModeInitiator(
            self.config.isakmp_policies, psk, self.config.local_address, server, self._random
        )
        self._pull = None
        self._set_state(GmState.MAIN_MODE)
        self._send_registration(self._p1.first_message(), now)

    def _send_registration(self, data: bytes, now: float) -> None:
        self._out.append((data, self._server_addr()))
        self._last_out = data
        self._retx_at = now + RETRANSMIT_INTERVAL_S
        self._retx_left = MAX_RETRANSMITS

    def _stop_retransmit(self) -> None:
        self._last_out = None
        self._retx_at = None

    def _next_server(self, now: float) -> None:
        self._server_idx = (self._server_idx + 1) % len(self.config.servers)
        self._retry_at = now + self.config.registration_retry_s
        self._set_state(GmState.RETRY_WAIT)

    def _why_no_answer(self) -> str:
        """What the key server's silence most likely means, from the message it left unanswered.

        A key server never answers what it cannot accept (RFC 2409 section 5.4 defines no error reply
        for a failed HASH, and an unauthenticated notification would be a gift to attackers), so the
        member has only the stage at which the answers stopped to go on.
        """
        server = self._server()
        local = self.config.local_address
        p1 = self._p1
        if p1 is not None and p1.state is MainModeState.WAIT_MSG6:
            # Messages 5 and 6 are the first encrypted under the key derived from the pre-shared key: a
            # key server that answered 2 and 4 but not 5 could not decrypt or verify it.
            return (
                f"no answer to Main Mode message 5 (IDii, HASH_I): most likely a wrong pre-shared key; "
                f"check that `crypto isakmp key K address {server}` here holds the same key as the "
                f"key server's `crypto isakmp key K address {local}`"
            )
        if p1 is not None and p1.state is MainModeState.WAIT_MSG2:
            return (
                f"no answer to Main Mode message 1: the key server is unreachable or not running on "
                f"{server} port {self.config.server_port}, or it has no pre-shared key for {local} "
                f"(its `crypto isakmp key K address {local}`), or none of its ISAKMP policies matches ours"
            )
        stage = "Main Mode" if p1 is not None else "GROUPKEY-PULL"
        return f"no answer from the key server during {stage}"

    def _fail_registration(self, now: float, reason: str) -> None:
        server = self._server()
        self._p1 = None
        self._pull = None
        self._stop_retransmit()
        self._events.append(RegistrationFailed(server, reason))
        self._next_server(now)

    # --- receiving ------------------------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        header = Header.decode(data)
        if header.exchange == ExchangeType.GROUPKEY_PUSH:
            self._push(header, data, addr, now)
            return
        if data == self._last_in and self._last_in is not None:
            return  # the key server repeated its last answer: ours is already on its way
        if addr[0] != self._server() or (not self._registering() and header.exchange != ExchangeType.INFORMATIONAL):
            raise Reject("unknown-peer", f"unexpected exchange {header.exchange} from {addr[0]}")
        if header.exchange == ExchangeType.MAIN_MODE:
            self._main_mode(header, data, now)
        elif header.exchange == ExchangeType.GROUPKEY_PULL:
            self._pull_message(header, data, now)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            self._informational(header, data, now)
        else:
            raise Reject(
                "unsupported-exchange", f"exchange type {header.exchange} is not handled by a member"
            )
        self._last_in = data

    def _main_mode(self, header: Header, data: bytes, now: float) -> None:
        p1 = self._p1
        if p1 is None:
            raise Reject("unknown-peer", "no Main Mode in progress")
        reply = p1.handle(header, data, now)
        if reply is not None:
            self._send_registration(reply, now)
            return
        ike = p1.established
        assert ike is not None
        self._p1 = None
        self._events.append(Phase1Established(ike.peer, ike.icookie, ike.rcookie, ike.keys.enc_key))
        self._pull = PullInitiator(ike, self.config.identity, self._random)
        self._set_state(GmState.GROUPKEY_PULL)
        self._send_registration(self._pull.first_message(), now)

    def _pull_message(self, header: Header, data: bytes, now: float) -> None:
        pull = self._pull
        if pull is None or not pull.belongs(header):
            raise Reject("unknown-peer", "GROUPKEY-PULL message for no exchange in progress")
        reply = pull.handle(header, data)
        if reply is not None:
            self._send_registration(reply, now)
            return
        download = pull.download
        assert download is not None
        # accepted: commit
        self._pull = None
        self._stop_retransmit()
        self._retry_at = None
        self._reg = _Registration(pull.ike, pull.ni_b, pull.nr_b, self._server(), self._conn_id())
        self._set_state(GmState.REGISTERED)
        self._install_kek(download.kek, download.kek_key, download.public_key, now)
        self._last_seq = download.sequence
        self._last_push = None
        self._rekeys_after_registration = 0
        self._events.append(Registered(self._server(), self.config.group_name))
        self._install_teks(download.teks, download.tek_keys, now)

    def _informational(self, header: Header, data: bytes, now: float) -> None:
        ike = self._pull.ike if self._pull is not None else (self._reg.ike if self._reg is not None else None)
        if ike is None or header.spi != ike.cookies:
            raise Reject("unknown-peer", "Informational exchange under no known ISAKMP SA")
        payloads, _iv = ike.open(header, data, b"")
        notes = [d.payload for d in payloads if isinstance(d.payload, NotifyPayload)]
        if notes and self._pull is not None:
            try:
                name = NotifyType(notes[0].notify_type).name.replace("_", "-")
            except ValueError:
                name = str(notes[0].notify_type)
            self._fail_registration(now, f"refused by the key server: {name}")

    # --- rekeys -----------------------------------------------------------------------------------------

    def _push(self, header: Header, data: bytes, addr: Addr, now: float) -> None:
        kek = self._held_kek(header.spi)
        if kek is None:
            raise Reject("unknown-spi", "GROUPKEY-PUSH under a KEK this member does not hold")
        if not header.encrypted or header.message_id != 0:
            raise Reject("malformed", "GROUPKEY-PUSH must be encrypted with message ID 0")
        plain = kek.key.open(data[ISAKMP_HEADER_LEN:])
        decoded = decode_payloads(header.next_payload, plain, gdoi_sa=True, padded=True)
        if not decoded or not isinstance(decoded[-1].payload, SigPayload):
            raise Reject("malformed", "GROUPKEY-PUSH does not end with SIG")
        signed = _verify_push_signature(kek, data[:ISAKMP_HEADER_LEN], decoded)
        body = decoded[:-1]
        seq = one(body, SeqPayload, "GROUPKEY-PUSH").seq
        digest = hashlib.sha256(signed).digest()
        if seq == self._last_seq and digest == self._last_push:
            if self._acks_requested:
                self._send_ack(kek, seq, addr[0])  # the key server did not hear our acknowledgement
            return
        if seq <= self._last_seq:
            raise Reject("replayed", f"GROUPKEY-PUSH sequence {seq} is not above {self._last_seq}")
        # RFC 6407 section 4: HDR*, SEQ, [D,] SA, KD, [CERT,] SIG.  A push that only deletes SAs
        # carries no SA and no KD.
        deletes = [d.payload for d in body if isinstance(d.payload, DeletePayload)]
        sa = at_most_one(body, GdoiSaPayload, "GROUPKEY-PUSH")
        kd = at_most_one(body, KdPayload, "GROUPKEY-PUSH") or KdPayload(())
        if sa is None and not deletes:
            raise Reject("malformed", "GROUPKEY-PUSH carries neither SA nor Delete")
        new_kek, teks = read_sa(sa) if sa is not None else (None, [])
        tek_keys, kek_keys = read_kd(kd, teks, new_kek)
        dead_teks, dead_keks = _read_deletes(deletes)
        if (new_kek is not None and new_kek.spi in dead_keks) or dead_teks & {t.spi for t in teks}:
            raise Reject("bad-policy", "GROUPKEY-PUSH deletes an SA it announces")
        held = self._held_kek(new_kek.spi) if new_kek is not None else None
        public_key = None
        if new_kek is not None and held is not None:
            _check_refresh(held, new_kek, kek_keys)
        elif new_kek is not None:
            if kek_keys is None:
                raise Reject("bad-policy", "a new KEK was announced without a valid key")
            public_key = rsa_public_from_der(kek_keys.public_key_der)
        # Accepted.  Everything that can fail was checked above, so the push changes all or nothing.
        self._last_seq = seq
        self._last_push = digest
        self._rekeys_cumulative += 1
        self._rekeys_after_registration += 1
        self._last_rekey_at = now
        self._last_rekey_from = addr[0]
        if new_kek is not None and public_key is not None and kek_keys is not None:
            self._install_kek(new_kek, kek_keys.key, public_key, now)
        elif new_kek is not None and held is not None:
            held.ann = new_kek  # same KEK, refreshed policy (lifetime, ACK request)
            held.expires_at = now + new_kek.lifetime_s
        self._acks_requested = bool(self._kek and self._kek.ann.ack_requested)
        acknowledge = self._acks_requested
        self._events.append(RekeyReceived(addr[0], seq))
        for spi in sorted(dead_teks & set(self._teks)):
            del self._teks[spi]
            self._events.append(TekDeleted(spi))
        self._install_teks(teks, tek_keys, now)
        self._delete_keks(dead_keks, now)
        if acknowledge:
            self._send_ack(kek, seq, addr[0])

    def _delete_keks(self, spis: set[bytes], now: float) -> None:
        """Forget deleted KEKs; without a current one no rekey can be read, so register again now."""
        self._old_keks = [k for k in self._old_keks if k.ann.spi not in spis]
        if self._kek is not None and self._kek.ann.spi in spis:
            self._kek = None
            self._acks_requested = False
            self._reregister_at = now

    def _held_kek(self, spi: bytes) -> _Kek | None:
        return next((k for k in [self._kek, *self._old_keks] if k is not None and k.ann.spi == spi), None)

    def _send_ack(self, kek: _Kek, seq: int, sender: str) -> None:
        """RFC 8263: HDR*, HASH, SEQ, ID under the KEK that protected the push, to the key server this
        member registered with (whoever delivered the push may be anyone: a push is not bound to its
        source address, and an ACK sent there would let a replayer aim our traffic at a third party).
        The one exception is another of the configured key servers: with cooperative key servers the
        primary rekeys members that registered with a secondary, and it is the primary that counts ACKs."""
        if not self._send_acks or self._reg is None:
            return
        reg = self._reg
        to = sender if sender in self.config.servers else reg.server
        ident = IdPayload(IdType.IPV4_ADDR, 0, 0, ipaddress.IPv4Address(self.config.local_address).packed)
        rest_payloads: list[Payload] = [SeqPayload(seq), ident]
        _f, rest = encode_payloads(rest_payloads)
        digest = reg.ike.phase2_hash(0, reg.ni_b + reg.nr_b, rest)
        _f, plain = encode_payloads([HashPayload(digest), *rest_payloads])
        body = kek.key.seal(plain, self._random)
        header = Header(
            kek.ann.spi[:8],
            kek.ann.spi[8:],
            PayloadType.HASH,
            ExchangeType.GDOI_REKEY_ACK,
            Flags.ENCRYPTION,
            0,
            ISAKMP_HEADER_LEN + len(body),
        )
        self._out.append((header.encode() + body, (to, self.config.server_port)))
        self._acks_sent += 1

    # --- installing keys ----------------------------------------------------------------------------

    def _install_kek(
        self, ann: KekAnnouncement, key: KekKey, public_key: rsa.RSAPublicKey, now: float
    ) -> None:
        if self._kek is not None and self._kek.ann.spi != ann.spi:
            self._old_keks.append(self._kek)
        elif self._kek is not None:
            self._kek.ann, self._kek.key, self._kek.public_key = ann, key, public_key
            self._kek.expires_at = now + ann.lifetime_s
            self._acks_requested = ann.ack_requested
            self._schedule_reregister(now)
            return
        self._kek = _Kek(ann, key, public_key, now + ann.lifetime_s, self._conn_id())
        self._acks_requested = ann.ack_requested
        self._schedule_reregister(now)

    def _install_teks(
        self,
        teks: tuple[TekAnnouncement, ...] | list[TekAnnouncement],
        keys: dict[int, tuple[bytes, bytes]],
        now: float,
    ) -> None:
        for ann in teks:
            if ann.spi in self._teks:
                continue
            enc, integ = keys[ann.spi]
            sa = TekSA(
                ann.spi,
                ann.transform,
                enc,
                integ,
                ann.selectors,
                ann.lifetime_s,
                now,
                ann.replay_time_window_s,
            )
            self._teks[ann.spi] = sa
            self._events.append(TekInstalled(sa))
        self._schedule_reregister(now)

    def _schedule_reregister(self, now: float) -> None:
        """Register again shortly before the newest TEK (or the KEK) ends if no rekey replaces it."""
        deadlines = []
        if self._teks:
            newest = max(self._teks.values(), key=lambda t: t.expires_at())
            margin = max(5.0, min(30.0, 0.05 * newest.lifetime_s))
            deadlines.append(newest.expires_at() - margin)
        if self._kek is not None:
            deadlines.append(self._kek.expires_at - max(5.0, min(30.0, 0.05 * self._kek.ann.lifetime_s)))
        self._reregister_at = max(now, min(deadlines)) if deadlines else None


def _check_refresh(held: _Kek, ann: KekAnnouncement, keys: KekKeys | None) -> None:
    """A push may refresh the policy of a KEK the member holds, but never its algorithm or keys:
    RFC 6407 section 5.3 gives a new KEK a new SPI, and a member that took another cipher for the same
    SPI could read no later push."""
    if ann.cipher is not held.ann.cipher:
        raise Reject("bad-policy", f"KEK SPI {ann.spi.hex()} re-announced with another algorithm")
    if keys is not None and (
        keys.key != held.key
        or rsa_public_from_der(keys.public_key_der).public_numbers() != held.public_key.public_numbers()
    ):
        raise Reject("bad-policy", f"KEK SPI {ann.spi.hex()} re-announced with other keys")


def _verify_push_signature(kek: _Kek, header: bytes, decoded: tuple[Decoded, ...]) -> bytes:
    """Check the SIG of a GROUPKEY-PUSH; returns the bytes it covers.

    RFC 6407 section 4 (and RFC 3547 section 4 before it) signs "rekey", the header and the payloads
    before SIG of the message before encryption.  Stacks read the header's length field in it
    differently, so each reading is tried: the message before encryption (what the key server here
    signs), the length as sent (older key servers of this project), the message without its SIG.
    """
    payloads = b"".join(d.raw for d in decoded[:-1])
    sig = decoded[-1]
    assert isinstance(sig.payload, SigPayload)
    readings = (
        rekey_signed_length(payloads, len(sig.raw)),
        int.from_bytes(header[ISAKMP_HEADER_LEN - 4 :], "big"),
        ISAKMP_HEADER_LEN + len(payloads),
    )
    for length in dict.fromkeys(readings):  # two readings can agree: verify each length once
        signed = rekey_signed_bytes(header, payloads, length)
        if rsa_verify(kek.public_key, kek.ann.sig_hash, sig.payload.data, signed):
            return signed
    raise Reject("bad-signature", "GROUPKEY-PUSH signature does not verify with the key server's key")


def _read_deletes(deletes: list[DeletePayload]) -> tuple[set[int], set[bytes]]:
    """TEK and KEK SPIs named by Delete payloads (RFC 2408 section 3.15) in a GROUPKEY-PUSH.

    A TEK SPI is 4 bytes, a KEK SPI is the 16-byte cookie pair (RFC 6407 section 5.3); the size tells
    them apart.  The Protocol-ID of a TEK delete is GDOI_PROTO_IPSEC_ESP (RFC 6407 section 5.4) or,
    from RFC 3547-era stacks, the IPsec DOI's PROTO_IPSEC_ESP (RFC 2407 section 4.4.1); both are read.
    SPIs this member does not hold are ignored, as RFC 2408 section 3.15 lets a receiver do.
    """
    teks: set[int] = set()
    keks: set[bytes] = set()
    for delete in deletes:
        if delete.doi != Doi.GDOI:
            raise Reject("bad-policy", f"Delete payload of DOI {delete.doi} in a GROUPKEY-PUSH")
        if delete.spi_size == 4 and delete.protocol_id in (SaTekProtocol.IPSEC_ESP, ProtocolId.IPSEC_ESP):
            teks.update(int.from_bytes(spi, "big") for spi in delete.spis)
        elif delete.spi_size == KEK_SPI_LEN:
            keks.update(delete.spis)
        else:
            raise Reject(
                "bad-policy",
                f"Delete payload of protocol {delete.protocol_id} with {delete.spi_size}-byte SPIs",
            )
    return teks, keks

