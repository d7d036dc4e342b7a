"""IKEv1 phase 1: Main Mode with pre-shared keys (RFC 2409 section 5.4), and the ISAKMP SA it yields.

GDOI reuses IKEv1's phase 1 unchanged (RFC 6407 section 2): the group member initiates, the key
server responds, and the six Main Mode messages run as RFC 2409 section 5.4 draws them::

    Initiator (GM)                          Responder (KS)
    HDR, SA                        -->                              (1) proposals
                                   <--      HDR, SA                 (2) the chosen transform
    HDR, KE, Ni                    -->                              (3) Diffie-Hellman, nonce
                                   <--      HDR, KE, Nr             (4)
    HDR*, IDii, HASH_I             -->                              (5) encrypted from here on
                                   <--      HDR*, IDir, HASH_R      (6)

Choices this module makes, with their reasons:

* The SA payload's DOI is GDOI (2): RFC 6407 section 2.1.1 says the phase 1 SA payload carries the
  GDOI DOI value.  (Wireshark 4.0 then parses no proposals; the wire test rewrites an analysis copy.)
  Its situation is GDOI's 0; a responder also accepts the IPsec DOI's 1 (``ACCEPTED_SITUATIONS``).
* Messages 5 and 6 are the first encrypted ones, so a wrong pre-shared key shows there.  A wrong key
  decrypts to random bytes, which cannot start with a sane payload header: that is ``bad-hash``.  A
  message that decrypts to a sane start but then fails to decode is ``malformed``, naming the payload.
* With pre-shared keys the responder must pick the key before it can read message 5, so keys are
  looked up by the peer's IP address (RFC 2409 section 5.4).  An address with no key is refused at
  message 1 with the reason ``no-psk``.
* Proposal selection: the responder walks its own policies in priority order and takes the first
  offered transform that matches one exactly in cipher, hash and group; the lifetime becomes the
  smaller of the two.  Nothing weaker than what an operator configured is ever offered or accepted.
* The ID payload is ID_IPV4_ADDR of the sender's own address (protocol and port 0, RFC 2407 4.6.2).
* The responder's message 2 is a pure function of message 1 and the cookies (:func:`read_offer`,
  :func:`message2`), so a key server may answer message 1 without state and rebuild the exchange from
  the initiator's SA payload when message 3 arrives (:func:`offer_from_body`, :mod:`.admission`).
* Retransmission is the owning engine's job: these classes only turn a datagram into the next one.
  They change no state unless the incoming message is fully valid (a rejected datagram is a no-op).

:class:`IkeSa` is the result: keys, cookies and the CBC chaining state that phase 2 exchanges
(GROUPKEY-PULL and Informational) need, with ``seal``/``open`` implementing RFC 2409 section 5.5's
``HASH(1) = prf(SKEYID_a, M-ID | ...)`` protection that RFC 6407 section 3.2 reuses.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from .codec import (
    Attribute,
    Decoded,
    DecodeError,
    HashPayload,
    Header,
    IdPayload,
    KePayload,
    NoncePayload,
    Payload,
    ProposalPayload,
    SaPayload,
    TransformPayload,
    decode_payloads,
    encode_body,
    encode_message,
    encode_payloads,
    tlv_int,
)
from .config_model import IsakmpPolicy
from .constants import (
    GENERIC_HEADER_LEN,
    ISAKMP_HEADER_LEN,
    Doi,
    ExchangeType,
    Flags,
    IdType,
    IkeAttr,
    IkeAuthMethod,
    IkeEncryption,
    IkeHash,
    IkeTransformId,
    LifeType,
    PayloadType,
    ProtocolId,
    Situation,
)
from .crypto import (
    CryptoError,
    DhKeyPair,
    Phase1Keys,
    RandomFn,
    cbc_decrypt,
    cbc_encrypt,
    cipher_block_len,
    derive_phase1_psk,
    dh_generate,
    dh_shared,
    hash_i,
    hash_r,
    phase2_iv,
    prf,
)
from .model import DhGroup, Phase1Cipher, Phase1Hash
from .statemachine import StateMachine

NONCE_LEN = 32  # RFC 2409 section 5: nonces of 8 to 256 bytes
# GDOI's situation is 0 (RFC 6407 section 5.1) and that is what the member sends; a key server also
# takes the IPsec DOI's SIT_IDENTITY_ONLY (RFC 2407 section 4.2), which this project sent before.
ACCEPTED_SITUATIONS = (Situation.NONE, Situation.IDENTITY_ONLY)


class MainModeState(Enum):
    """Where a Main Mode stands: the message of RFC 2409 section 5.4 each side waits for next.

    The initiator walks START, WAIT_MSG2, WAIT_MSG4, WAIT_MSG6, ESTABLISHED; the responder (created
    when message 1 is answered) WAIT_MSG3, WAIT_MSG5, ESTABLISHED.  A refused message changes none.
    """

    START = "nothing sent yet"
    WAIT_MSG2 = "sent HDR, SA; waiting for the chosen transform"
    WAIT_MSG3 = "sent HDR, SA; waiting for KE, Ni"
    WAIT_MSG4 = "sent KE, Ni; waiting for KE, Nr"
    WAIT_MSG5 = "sent KE, Nr; waiting for IDii, HASH_I"
    WAIT_MSG6 = "sent IDii, HASH_I; waiting for IDir, HASH_R"
    ESTABLISHED = "the ISAKMP SA is up"


class Phase1Error(Exception):
    """A message was refused.  ``reason`` is the MessageRejected reason word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- Transforms <-> policies (RFC 2409 appendix A) --------------------------------------------------

_ENC = {
    Phase1Cipher.AES_CBC_128: (IkeEncryption.AES_CBC, 128),
    Phase1Cipher.AES_CBC_256: (IkeEncryption.AES_CBC, 256),
    Phase1Cipher.TRIPLE_DES: (IkeEncryption.TRIPLE_DES_CBC, None),
}
_HASH = {Phase1Hash.SHA256: IkeHash.SHA2_256, Phase1Hash.SHA1: IkeHash.SHA, Phase1Hash.MD5: IkeHash.MD5}


@dataclass(frozen=True)
class Suite:
    """What a phase 1 transform pins down."""

    cipher: Phase1Cipher
    hash: Phase1Hash
    group: DhGroup
    lifetime_s: int


def transform_for(policy: IsakmpPolicy, number: int) -> TransformPayload:
    enc, keylen = _ENC[policy.cipher]
    attrs = [Attribute(IkeAttr.ENCRYPTION_ALGORITHM, enc)]
    if keylen is not None:
        attrs.append(Attribute(IkeAttr.KEY_LENGTH, keylen))
    attrs += [
        Attribute(IkeAttr.HASH_ALGORITHM, _HASH[policy.hash]),
        Attribute(IkeAttr.AUTHENTICATION_METHOD, IkeAuthMethod.PRE_SHARED_KEY),
        Attribute(IkeAttr.GROUP_DESCRIPTION, int(policy.group)),
        Attribute(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        tlv_int(IkeAttr.LIFE_DURATION, policy.lifetime_s),
    ]
    return TransformPayload(number, IkeTransformId.KEY_IKE, tuple(attrs))


def suite_of(transform: TransformPayload) -> Suite | None:
    """The suite a transform describes, or None when it has anything this engine does not do."""
    try:
        if transform.transform_id != IkeTransformId.KEY_IKE:
            return None
        got = {a.type: a for a in transform.attributes}
        auth = got.get(IkeAttr.AUTHENTICATION_METHOD)
        if auth is None or auth.as_int() != IkeAuthMethod.PRE_SHARED_KEY:
            return None
        enc_a, hash_a, group_a = (
            got.get(IkeAttr.ENCRYPTION_ALGORITHM),
            got.get(IkeAttr.HASH_ALGORITHM),
            got.get(IkeAttr.GROUP_DESCRIPTION),
        )
        if enc_a is None or hash_a is None or group_a is None:
            return None
        keylen_a = got.get(IkeAttr.KEY_LENGTH)
        keylen = keylen_a.as_int() if keylen_a is not None else None
        cipher = next((c for c, v in _ENC.items() if v == (enc_a.as_int(), keylen)), None)
        hash_alg = next((h for h, v in _HASH.items() if v == hash_a.as_int()), None)
        group = DhGroup(group_a.as_int()) if group_a.as_int() in {int(g) for g in DhGroup} else None
        if cipher is None or hash_alg is None or group is None:
            return None
        life = 86400
        life_type = got.get(IkeAttr.LIFE_TYPE)
        life_dur = got.get(IkeAttr.LIFE_DURATION)
        if life_type is not None and life_type.as_int() == LifeType.SECONDS and life_dur is not None:
            life = life_dur.as_int()
        return Suite(cipher, hash_alg, group, life)
    except DecodeError:
        return None


def _policies_in_order(policies: Sequence[IsakmpPolicy]) -> list[IsakmpPolicy]:
    return sorted(policies, key=lambda p: p.priority)


def _ipv4_id(address: str) -> IdPayload:
    return IdPayload(IdType.IPV4_ADDR, 0, 0, ipaddress.IPv4Address(address).packed)


def _only(decoded: Sequence[Decoded], ptype: type, what: str) -> Decoded:
    found = [d for d in decoded if isinstance(d.payload, ptype)]
    if len(found) != 1:
        raise Phase1Error("malformed", f"{what}: expected one {ptype.__name__}, found {len(found)}")
    return found[0]


def _ke_and_nonce(header: Header, data: bytes, what: str) -> tuple[KePayload, NoncePayload]:
    """The clear KE and nonce of main mode messages 3 and 4 (RFC 2409 section 5: nonces of 8..256 bytes)."""
    decoded = decode_payloads(header.next_payload, data[ISAKMP_HEADER_LEN:], gdoi_sa=False)
    ke = _only(decoded, KePayload, what).payload
    nonce = _only(decoded, NoncePayload, what).payload
    assert isinstance(ke, KePayload) and isinstance(nonce, NoncePayload)
    if not 8 <= len(nonce.data) <= 256:
        raise Phase1Error("malformed", "nonce length outside 8..256")
    return ke, nonce


def _open_main_mode(
    cipher: Phase1Cipher, key: bytes, iv: bytes, header: Header, ciphertext: bytes, what: str
) -> tuple[Decoded, ...]:
    """Decrypt and decode Main Mode message 5 or 6; tells a wrong key from a malformed message."""
    try:
        plain = cbc_decrypt(cipher, key, iv, ciphertext)
    except CryptoError as exc:
        raise Phase1Error("malformed", f"{what}: {exc}") from exc
    if not _sane_first_payload(plain):
        raise Phase1Error("bad-hash", f"{what} did not decrypt to payloads (wrong pre-shared key?)")
    try:
        return decode_payloads(header.next_payload, plain, gdoi_sa=False, padded=True)
    except DecodeError as exc:
        raise Phase1Error("malformed", f"{what}: {exc}") from exc


def _sane_first_payload(plain: bytes) -> bool:
    """A generic payload header (RFC 2408 section 3.2) with a zero RESERVED byte and a length that fits:
    random bytes from a wrong key pass this a few times in a million."""
    if len(plain) < GENERIC_HEADER_LEN:
        return False
    reserved, length = plain[1], int.from_bytes(plain[2:4], "big")
    return reserved == 0 and GENERIC_HEADER_LEN <= length <= len(plain)


# --- The established ISAKMP SA ------------------------------------------------------------------------


@dataclass
class IkeSa:
    """An ISAKMP SA after Main Mode, with the per-exchange CBC state of RFC 2409 appendix B."""

    icookie: bytes
    rcookie: bytes
    local: str
    peer: str
    suite: Suite
    keys: Phase1Keys
    last_block: bytes  # last CBC block of Main Mode message 6: seeds every phase 2 IV
    established_at: float
    initiator: bool
    ivs: dict[int, bytes] = field(default_factory=dict)  # M-ID -> current IV of that exchange

    @property
    def cookies(self) -> bytes:
        return self.icookie + self.rcookie

    def expires_at(self) -> float:
        return self.established_at + self.suite.lifetime_s

    def iv_for(self, message_id: int) -> bytes:
        """Current IV of exchange ``message_id`` (RFC 2409 appendix B for a new one)."""
        iv = self.ivs.get(message_id)
        if iv is None:
            iv = phase2_iv(self.suite.hash, self.suite.cipher, self.last_block, message_id)
        return iv

    def phase2_hash(self, message_id: int, prefix: bytes, after_hash: bytes) -> bytes:
        """``prf(SKEYID_a, M-ID | prefix | payloads after HASH)`` (RFC 2409 5.5, RFC 6407 3.2)."""
        return prf(self.suite.hash, self.keys.skeyid_a, message_id.to_bytes(4, "big") + prefix + after_hash)

    def seal(self, exchange: int, message_id: int, payloads: Sequence[Payload], prefix: bytes = b"") -> bytes:
        """Build ``HDR*, HASH, payloads...``, encrypt it and advance the exchange's IV."""
        _first, rest = encode_payloads(payloads)
        digest_ = self.phase2_hash(message_id, prefix, rest)
        _first, plain = encode_payloads([HashPayload(digest_), *payloads])
        iv = self.iv_for(message_id)
        ct = cbc_encrypt(self.suite.cipher, self.keys.enc_key, iv, plain)
        header = Header(
            self.icookie,
            self.rcookie,
            PayloadType.HASH,
            exchange,
            Flags.ENCRYPTION,
            message_id,
            ISAKMP_HEADER_LEN + len(ct),
        )
        self.ivs[message_id] = ct[-cipher_block_len(self.suite.cipher) :]
        return header.encode() + ct

    def open(self, header: Header, data: bytes, prefix: bytes = b"") -> tuple[tuple[Decoded, ...], bytes]:
        """Decrypt and authenticate a protected message.  Returns the payloads after HASH and the IV
        the exchange moves to; the caller commits it with ``ivs[mid] = iv`` once it accepts."""
        if not header.encrypted:
            raise Phase1Error("malformed", "phase 2 message is not encrypted")
        ct = data[ISAKMP_HEADER_LEN:]
        try:
            plain = cbc_decrypt(self.suite.cipher, self.keys.enc_key, self.iv_for(header.message_id), ct)
        except CryptoError as exc:
            raise Phase1Error("malformed", str(exc)) from exc
        try:
            decoded = decode_payloads(header.next_payload, plain, gdoi_sa=True, padded=True)
        except DecodeError as exc:
            raise Phase1Error("bad-hash", f"message did not decrypt to valid payloads ({exc})") from exc
        if not decoded or not isinstance(decoded[0].payload, HashPayload):
            raise Phase1Error("malformed", "protected message does not start with HASH")
        rest = b"".join(d.raw for d in decoded[1:])
        expect = self.phase2_hash(header.message_id, prefix, rest)
        if not hmac.compare_digest(expect, decoded[0].payload.data):
            raise Phase1Error("bad-hash", f"HASH of message ID {header.message_id:#010x} does not verify")
        return decoded[1:], ct[-cipher_block_len(self.suite.cipher) :]


# --- Main Mode initiator --------------------------------------------------------------------------------


def _sa_payload(policies: Sequence[IsakmpPolicy]) -> SaPayload:
    transforms = tuple(transform_for(p, i + 1) for i, p in enumerate(_policies_in_order(policies)))
    return SaPayload(Doi.GDOI, Situation.NONE, (ProposalPayload(1, ProtocolId.ISAKMP, b"", transforms),))


class MainModeInitiator(StateMachine[MainModeState]):
    """The GM side of Main Mode.  ``first_message()`` then ``handle()`` each reply."""

    def __init__(self, policies: Sequence[IsakmpPolicy], psk: bytes, local: str, peer: str, random: RandomFn) -> None:
        if not policies:
            raise ValueError("at least one ISAKMP policy is needed")
        super().__init__(MainModeState.START)
        self.policies = tuple(policies)
        self.psk = psk
        self.local = local
        self.peer = peer
        self.random = random
        self.icookie = random(8)
        self.rcookie = b"\x00" * 8
        self.sa = _sa_payload(policies)
        self.sai_b = encode_body(self.sa)
        self.suite: Suite | None = None
        self.dh: DhKeyPair | None = None
        self.ni = b""
        self.keys: Phase1Keys | None = None
        self.g_xr = b""
        self.iv = b""
        self.established: IkeSa | None = None

    def _describe(self) -> str:
        return f"Main Mode initiator {self.local} -> {self.peer}"

    def first_message(self) -> bytes:
        self._set_state(MainModeState.WAIT_MSG2)
        return encode_message(self.icookie, self.rcookie, ExchangeType.MAIN_MODE, 0, 0, [self.sa])

    def handle(self, header: Header, data: bytes, now: float) -> bytes | None:
        """Process message 2, 4 or 6; returns message 3 or 5, or None once established."""
        if header.icookie != self.icookie:
            raise Phase1Error("unknown-peer", "initiator cookie does not match")
        if self.state is MainModeState.WAIT_MSG2:
            return self._msg2(header, data)
        if self.rcookie != header.rcookie:
            raise Phase1Error("unknown-peer", "responder cookie does not match")
        if self.state is MainModeState.WAIT_MSG4:
            return self._msg4(header, data)
        if self.state is MainModeState.WAIT_MSG6:
            self._msg6(header, data, now)
            return None
        raise Phase1Error("unexpected", f"Main Mode message in state {self.state.name}")

    def _msg2(self, header: Header, data: bytes) -> bytes:
        if header.encrypted or header.rcookie == b"\x00" * 8:
            raise Phase1Error("malformed", "message 2 must be clear and carry a responder cookie")
        decoded = decode_payloads(header.next_payload, data[ISAKMP_HEADER_LEN:], gdoi_sa=False)
        sa = _only(decoded, SaPayload, "message 2").payload
        assert isinstance(sa, SaPayload)
        if len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
            raise Phase1Error("no-proposal", "responder must choose exactly one transform")
        suite = suite_of(sa.proposals[0].transforms[0])
        offered = [suite_of(t) for t in self.sa.proposals[0].transforms]
        if suite is None or not any(
            o is not None and (o.cipher, o.hash, o.group) == (suite.cipher, suite.hash, suite.group) for o in offered
        ):
            raise Phase1Error("no-proposal", "responder chose a transform that was not offered")
        dh = dh_generate(suite.group, self.random)
        ni = self.random(NONCE_LEN)
        self.rcookie, self.suite, self.dh, self.ni = header.rcookie, suite, dh, ni
        self._set_state(MainModeState.WAIT_MSG4)
        return encode_message(
            self.icookie, self.rcookie, ExchangeType.MAIN_MODE, 0, 0, [KePayload(dh.public), NoncePayload(ni)]
        )

    def _msg4(self, header: Header, data: bytes) -> bytes:
        assert self.suite is not None and self.dh is not None
        if header.encrypted:
            raise Phase1Error("malformed", "message 4 must be clear")
        ke, nr = _ke_and_nonce(header, data, "message 4")
        try:
            g_xy = dh_shared(self.dh, ke.data)
        except CryptoError as exc:
            raise Phase1Error("malformed", str(exc)) from exc
        keys = derive_phase1_psk(
            self.suite.hash,
            self.suite.cipher,
            self.psk,
            self.ni,
            nr.data,
            g_xy,
            self.icookie,
            self.rcookie,
            self.dh.public,
            ke.data,
        )
        idii = _ipv4_id(self.local)
        h = hash_i(
            self.suite.hash,
            keys.skeyid,
            self.dh.public,
            ke.data,
            self.icookie,
            self.rcookie,
            self.sai_b,
            encode_body(idii),
        )
        _f, plain = encode_payloads([idii, HashPayload(h)])
        ct = cbc_encrypt(self.suite.cipher, keys.enc_key, keys.initial_iv, plain)
        header5 = Header(
            self.icookie,
            self.rcookie,
            PayloadType.ID,
            ExchangeType.MAIN_MODE,
            Flags.ENCRYPTION,
            0,
            ISAKMP_HEADER_LEN + len(ct),
        )
        self.keys, self.g_xr = keys, ke.data
        self.iv = ct[-cipher_block_len(self.suite.cipher) :]
        self._set_state(MainModeState.WAIT_MSG6)
        return header5.encode() + ct

    def _msg6(self, header: Header, data: bytes, now: float) -> None:
        assert self.suite is not None and self.dh is not None and self.keys is not None
        if not header.encrypted:
            raise Phase1Error("malformed", "message 6 must be encrypted")
        ct = data[ISAKMP_HEADER_LEN:]
        decoded = _open_main_mode(self.suite.cipher, self.keys.enc_key, self.iv, header, ct, "message 6")
        idir = _only(decoded, IdPayload, "message 6")
        hsh = _only(decoded, HashPayload, "message 6").payload
        assert isinstance(hsh, HashPayload)
        expect = hash_r(
            self.suite.hash,
            self.keys.skeyid,
            self.dh.public,
            self.g_xr,
            self.icookie,
            self.rcookie,
            self.sai_b,
            idir.raw[4:],
        )
        if not hmac.compare_digest(expect, hsh.data):
            raise Phase1Error("bad-hash", "HASH_R does not verify (wrong pre-shared key?)")
        self.established = IkeSa(
            self.icookie,
            self.rcookie,
            self.local,
            self.peer,
            self.suite,
            self.keys,
            ct[-cipher_block_len(self.suite.cipher) :],
            now,
            True,
        )
        self._set_state(MainModeState.ESTABLISHED)


# --- Main Mode responder --------------------------------------------------------------------------------
#
# Message 1 is read into an :class:`Offer` by a pure function of the message and the responder's
# policies, and message 2 is a pure function of the offer and the two cookies.  So the key server can
# answer message 1 without keeping anything (its responder cookie then proves, in message 3, that the
# peer receives at its address) and rebuild the exchange when message 3 comes: all it needs is SAi_b,
# the initiator's SA payload body that HASH_I and HASH_R cover (RFC 2409 section 5), which no later
# message repeats.


@dataclass(frozen=True)
class Offer:
    """What message 1 pins down: SAi_b, and the transform this responder takes from it."""

    sai_b: bytes  # the SA payload body, without its generic header (RFC 2409 section 5)
    doi: int
    situation: int
    transform: TransformPayload  # returned unchanged in message 2 (RFC 2408 section 4.2)
    suite: Suite

    @functools.cached_property
    def digest(self) -> bytes:
        """What the responder cookie and the offer book name the offer by."""
        return hashlib.sha256(self.sai_b).digest()


def own_offer_body(policies: Sequence[IsakmpPolicy]) -> bytes:
    """SAi_b as :class:`MainModeInitiator` sends it for ``policies``: predictable without a message."""
    return encode_body(_sa_payload(policies))


def _choose(policies: Sequence[IsakmpPolicy], sa: SaPayload, sai_b: bytes) -> Offer:
    """The first policy (by priority) that an offered transform matches exactly; lifetime the smaller."""
    if sa.doi not in (Doi.GDOI, Doi.IPSEC):
        raise Phase1Error("malformed", f"phase 1 SA with DOI {sa.doi}")
    if sa.situation not in ACCEPTED_SITUATIONS:
        raise Phase1Error("no-proposal", f"phase 1 SA with situation {sa.situation:#x}")
    for pol in _policies_in_order(policies):
        for prop in sa.proposals:
            if prop.protocol_id != ProtocolId.ISAKMP:
                continue
            for tr in prop.transforms:
                s = suite_of(tr)
                if s is not None and (s.cipher, s.hash, s.group) == (pol.cipher, pol.hash, pol.group):
                    suite = Suite(s.cipher, s.hash, s.group, min(s.lifetime_s, pol.lifetime_s))
                    return Offer(sai_b, sa.doi, sa.situation, tr, suite)
    raise Phase1Error("no-proposal", "no offered transform matches a configured ISAKMP policy")


def read_offer(policies: Sequence[IsakmpPolicy], header: Header, data: bytes) -> Offer:
    """Message 1 (``HDR, SA``): the offer, or :class:`Phase1Error`."""
    if header.encrypted or header.rcookie != b"\x00" * 8 or header.message_id != 0:
        raise Phase1Error("malformed", "message 1 must be clear with a zero responder cookie and M-ID")
    decoded = decode_payloads(header.next_payload, data[ISAKMP_HEADER_LEN:], gdoi_sa=False)
    sa_d = _only(decoded, SaPayload, "message 1")
    assert isinstance(sa_d.payload, SaPayload)
    return _choose(policies, sa_d.payload, sa_d.raw[4:])


def offer_from_body(policies: Sequence[IsakmpPolicy], sai_b: bytes) -> Offer:
    """The offer again from a remembered SAi_b: the policies are fixed, so the choice is the same."""
    generic_header = struct.pack("!BBH", 0, 0, 4 + len(sai_b))
    (sa_d,) = decode_payloads(PayloadType.SA, generic_header + sai_b, gdoi_sa=False)
    assert isinstance(sa_d.payload, SaPayload)
    return _choose(policies, sa_d.payload, sai_b)


def message2(offer: Offer, icookie: bytes, rcookie: bytes) -> bytes:
    """``HDR, SA`` with the one chosen transform, as offered."""
    reply_sa = SaPayload(
        offer.doi, offer.situation, (ProposalPayload(1, ProtocolId.ISAKMP, b"", (offer.transform,)),)
    )
    return encode_message(icookie, rcookie, ExchangeType.MAIN_MODE, 0, 0, [reply_sa])


class MainModeResponder(StateMachine[MainModeState]):
    """The KS side of Main Mode from message 3 on: what message 1 settled, then :meth:`handle`."""

    def __init__(
        self,
        local: str,
        peer: str,
        psk: bytes,
        offer: Offer,
        icookie: bytes,
        rcookie: bytes,
        random: RandomFn,
    ) -> None:
        super().__init__(MainModeState.WAIT_MSG3)  # message 2 went out when message 1 was read
        self.local = local
        self.peer = peer
        self.psk = psk
        self.suite = offer.suite
        self.sai_b = offer.sai_b
        self.icookie = icookie
        self.rcookie = rcookie
        self.random = random
        self.dh: DhKeyPair | None = None
        self.keys: Phase1Keys | None = None
        self.g_xi = b""
        self.iv = b""
        self.established: IkeSa | None = None

    def _describe(self) -> str:
        return f"Main Mode responder {self.local} <- {self.peer}"

    def handle(self, header: Header, data: bytes, now: float) -> bytes:
        """Process message 3 or 5; returns message 4 or 6."""
        if header.icookie != self.icookie or header.rcookie != self.rcookie:
            raise Phase1Error("unknown-peer", "cookies do not match")
        if self.state is MainModeState.WAIT_MSG3:
            return self._msg3(header, data)
        if self.state is MainModeState.WAIT_MSG5:
            return self._msg5(header, data, now)
        raise Phase1Error("unexpected", f"Main Mode message in state {self.state.name}")

    def _msg3(self, header: Header, data: bytes) -> bytes:
        if header.encrypted:
            raise Phase1Error("malformed", "message 3 must be clear")
        ke, ni = _ke_and_nonce(header, data, "message 3")
        dh = dh_generate(self.suite.group, self.random)
        try:
            g_xy = dh_shared(dh, ke.data)
        except CryptoError as exc:
            raise Phase1Error("malformed", str(exc)) from exc
        nr = self.random(NONCE_LEN)
        keys = derive_phase1_psk(
            self.suite.hash,
            self.suite.cipher,
            self.psk,
            ni.data,
            nr,
            g_xy,
            self.icookie,
            self.rcookie,
            ke.data,
            dh.public,
        )
        self.dh, self.keys, self.g_xi, self.iv = dh, keys, ke.data, keys.initial_iv
        self._set_state(MainModeState.WAIT_MSG5)
        return encode_message(
            self.icookie, self.rcookie, ExchangeType.MAIN_MODE, 0, 0, [KePayload(dh.public), NoncePayload(nr)]
        )

    def _msg5(self, header: Header, data: bytes, now: float) -> bytes:
        assert self.keys is not None and self.dh is not None
        if not header.encrypted:
            raise Phase1Error("malformed", "message 5 must be encrypted")
        ct = data[ISAKMP_HEADER_LEN:]
        decoded = _open_main_mode(self.suite.cipher, self.keys.enc_key, self.iv, header, ct, "message 5")
        idii = _only(decoded, IdPayload, "message 5")
        hsh = _only(decoded, HashPayload, "message 5").payload
        assert isinstance(hsh, HashPayload)
        expect = hash_i(
            self.suite.hash,
            self.keys.skeyid,
            self.g_xi,
            self.dh.public,
            self.icookie,
            self.rcookie,
            self.sai_b,
            idii.raw[4:],
        )
        if not hmac.compare_digest(expect, hsh.data):
            raise Phase1Error("bad-hash", "HASH_I does not verify (wrong pre-shared key?)")
        idir = _ipv4_id(self.local)
        h = hash_r(
            self.suite.hash,
            self.keys.skeyid,
            self.g_xi,
            self.dh.public,
            self.icookie,
            self.rcookie,
            self.sai_b,
            encode_body(idir),
        )
        _f, plain6 = encode_payloads([idir, HashPayload(h)])
        iv6 = ct[-cipher_block_len(self.suite.cipher) :]
        ct6 = cbc_encrypt(self.suite.cipher, self.keys.enc_key, iv6, plain6)
        header6 = Header(
            self.icookie,
            self.rcookie,
            PayloadType.ID,
            ExchangeType.MAIN_MODE,
            Flags.ENCRYPTION,
            0,
            ISAKMP_HEADER_LEN + len(ct6),
        )
        self.established = IkeSa(
            self.icookie,
            self.rcookie,
            self.local,
            self.peer,
            self.suite,
            self.keys,
            ct6[-cipher_block_len(self.suite.cipher) :],
            now,
            False,
        )
        self._set_state(MainModeState.ESTABLISHED)
        return header6.encode() + ct6
