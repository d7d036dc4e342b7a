"""GROUPKEY-PULL (RFC 6407 section 3): registration under the ISAKMP SA, both ends, as in :mod:`.phase1`.

After Main Mode the member asks the key server for the group's policy and keys in a phase 2 exchange
of its own (RFC 6407 section 3.2), every message protected by the ISAKMP SA as RFC 2409 section 5.5
protects Quick Mode, under a new random message ID::

    Initiator (GM)                      Responder (KS)
    HDR*, HASH(1), Ni, ID      -->                                  (1) the group identity
                               <--  HDR*, HASH(2), Nr, SA           (2) the group's policy
    HDR*, HASH(3)              -->                                  (3) acceptance
                               <--  HDR*, HASH(4), SEQ, KD          (4) the keys

    HASH(1) = prf(SKEYID_a, M-ID | Ni | ID)
    HASH(2) = prf(SKEYID_a, M-ID | Ni_b | Nr | SA)
    HASH(3) = prf(SKEYID_a, M-ID | Ni_b | Nr_b)
    HASH(4) = prf(SKEYID_a, M-ID | Ni_b | Nr_b | SEQ | KD)

The ID is the group identity as ID_KEY_ID (section 3.2); the SA carries the KEK and TEK policy
(section 5), the KD their keys and the key server's signature key (section 5.5), the SEQ the number
later GROUPKEY-PUSH messages must exceed (section 5.6).

As with Main Mode, the classes only turn a datagram into the next one, each with an enum state
changed through one logging setter; retransmission, admission and the group's policy are the
engines' job.  A message that is refused changes nothing: the exchange's IV moves only once a message
is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import rsa

from .codec import GdoiSaPayload, Header, IdPayload, KdPayload, NoncePayload, SeqPayload
from .constants import ExchangeType, IdType
from .crypto import KekKey, RandomFn, rsa_public_from_der
from .engine import Reject, one
from .groupsa import KekAnnouncement, KekPolicy, TekAnnouncement, TekPolicy, kd_payload, read_kd, read_sa, sa_payload
from .phase1 import NONCE_LEN, IkeSa
from .statemachine import StateMachine


class PullState(Enum):
    """Where a GROUPKEY-PULL stands: the message of RFC 6407 section 3.2 each side waits for next.

    The initiator walks START, WAIT_MSG2, WAIT_MSG4, DONE; the responder (created once message 1 is
    read) START, WAIT_MSG3, DONE.
    """

    START = "nothing sent yet"
    WAIT_MSG2 = "sent HASH(1), Ni, ID; waiting for HASH(2), Nr, SA"
    WAIT_MSG3 = "sent HASH(2), Nr, SA; waiting for HASH(3)"
    WAIT_MSG4 = "sent HASH(3); waiting for HASH(4), SEQ, KD"
    DONE = "the keys are downloaded"


# --- Initiator (the group member) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """What a finished PULL gives the member: policy and keys (messages 2 and 4)."""

    sequence: int  # rekeys must carry a higher SEQ (RFC 6407 section 5.6)
    kek: KekAnnouncement
    kek_key: KekKey
    public_key: rsa.RSAPublicKey  # verifies GROUPKEY-PUSH signatures (section 5.5.2)
    teks: tuple[TekAnnouncement, ...]
    tek_keys: dict[int, tuple[bytes, bytes]]


class PullInitiator(StateMachine[PullState]):
    """The GM side: ``first_message()``, then ``handle()`` each reply; ``download`` once DONE."""

    def __init__(self, ike: IkeSa, group_identity: int, random: RandomFn) -> None:
        super().__init__(PullState.START)
        self.ike = ike
        self.group_identity = group_identity
        self.message_id = 0
        while self.message_id == 0:  # message ID 0 belongs to phase 1 (RFC 2408 section 3.1)
            self.message_id = int.from_bytes(random(4), "big")
        self.ni_b = random(NONCE_LEN)
        self.nr_b = b""
        self._kek: KekAnnouncement | None = None
        self._teks: tuple[TekAnnouncement, ...] = ()
        self.download: Download | None = None

    def _describe(self) -> str:
        return f"GROUPKEY-PULL initiator {self.ike.local} -> {self.ike.peer}"

    def belongs(self, header: Header) -> bool:
        """Whether a message is of this exchange: same ISAKMP SA, same message ID."""
        return header.spi == self.ike.cookies and header.message_id == self.message_id

    def first_message(self) -> bytes:
        """Message 1: ``HDR*, HASH(1), Ni, ID`` with the group identity as ID_KEY_ID."""
        ident = IdPayload(IdType.KEY_ID, 0, 0, self.group_identity.to_bytes(4, "big"))
        message = self.ike.seal(ExchangeType.GROUPKEY_PULL, self.message_id, [NoncePayload(self.ni_b), ident])
        self._set_state(PullState.WAIT_MSG2)
        return message

    def handle(self, header: Header, data: bytes) -> bytes | None:
        """Process message 2 or 4; returns message 3, or None once the keys are downloaded."""
        if self.state is PullState.WAIT_MSG2:
            return self._message2(header, data)
        if self.state is PullState.WAIT_MSG4:
            self._message4(header, data)
            return None
        raise Reject("unexpected", f"GROUPKEY-PULL message in state {self.state.name}")

    def _message2(self, header: Header, data: bytes) -> bytes:
        """``HASH(2), Nr, SA``: the policy.  A member cannot work without a KEK and a TEK."""
        payloads, iv = self.ike.open(header, data, self.ni_b)
        nr = one(payloads, NoncePayload, "GROUPKEY-PULL message 2")
        sa = one(payloads, GdoiSaPayload, "GROUPKEY-PULL message 2")
        kek, teks = read_sa(sa)
        if kek is None or not teks:
            raise Reject("bad-policy", "the key server sent no KEK or no TEK policy")
        self.ike.ivs[self.message_id] = iv
        self.nr_b, self._kek, self._teks = nr.data, kek, tuple(teks)
        reply = self.ike.seal(ExchangeType.GROUPKEY_PULL, self.message_id, [], self.ni_b + self.nr_b)
        self._set_state(PullState.WAIT_MSG4)
        return reply

    def _message4(self, header: Header, data: bytes) -> None:
        """``HASH(4), SEQ, KD``: the keys of the policy that message 2 announced."""
        payloads, iv = self.ike.open(header, data, self.ni_b + self.nr_b)
        seq = one(payloads, SeqPayload, "GROUPKEY-PULL message 4")
        kd = one(payloads, KdPayload, "GROUPKEY-PULL message 4")
        tek_keys, kek_keys = read_kd(kd, self._teks, self._kek)
        if kek_keys is None or self._kek is None:
            raise Reject("bad-policy", "the key download carries no KEK")
        public_key = rsa_public_from_der(kek_keys.public_key_der)
        self.ike.ivs[self.message_id] = iv
        self.download = Download(seq.seq, self._kek, kek_keys.key, public_key, self._teks, tek_keys)
        self._set_state(PullState.DONE)


# --- Responder (the key server) -----------------------------------------------------------------------


@dataclass(frozen=True)
class PullRequest:
    """Message 1 read: the member's nonce, the group it asks for, and the IV the exchange moves to."""

    message_id: int
    ni_b: bytes
    group_identity: int
    iv: bytes


def read_request(ike: IkeSa, header: Header, data: bytes) -> PullRequest:
    """Message 1 (``HDR*, HASH(1), Ni, ID``); the key server then decides whether to serve the group."""
    payloads, iv = ike.open(header, data, b"")
    nonce = one(payloads, NoncePayload, "GROUPKEY-PULL message 1")
    ident = one(payloads, IdPayload, "GROUPKEY-PULL message 1")
    if ident.id_type != IdType.KEY_ID or not 1 <= len(ident.data) <= 4:
        raise Reject("wrong-group", f"group ID of type {ident.id_type} is not a group number")
    return PullRequest(header.message_id, nonce.data, int.from_bytes(ident.data, "big"), iv)


class PullResponder(StateMachine[PullState]):
    """The KS side from message 1 on: ``answer()`` sends message 2, ``handle()`` message 4."""

    def __init__(self, ike: IkeSa, request: PullRequest) -> None:
        # Checked after the key server named the group: a member asking for another group hears so first.
        if not 8 <= len(request.ni_b) <= 256:
            raise Reject("malformed", "nonce length outside 8..256")
        super().__init__(PullState.START)
        self.ike = ike
        self.message_id = request.message_id
        self.ni_b = request.ni_b
        self.nr_b = b""
        self._iv = request.iv
        self._kek: KekPolicy | None = None
        self._teks: tuple[TekPolicy, ...] = ()

    def _describe(self) -> str:
        return f"GROUPKEY-PULL responder {self.ike.local} <- {self.ike.peer}"

    def answer(self, nr: bytes, kek: KekPolicy, teks: Sequence[TekPolicy]) -> bytes:
        """Message 2: ``HDR*, HASH(2), Nr, SA`` with the group's policy; message 1 is accepted now."""
        self.ike.ivs[self.message_id] = self._iv
        self.nr_b, self._kek, self._teks = nr, kek, tuple(teks)
        reply = self.ike.seal(
            ExchangeType.GROUPKEY_PULL, self.message_id, [NoncePayload(nr), sa_payload(kek, teks)], self.ni_b
        )
        self._set_state(PullState.WAIT_MSG3)
        return reply

    def handle(self, header: Header, data: bytes, sequence: int) -> bytes:
        """Message 3 (``HASH(3)`` alone) in, message 4 (``HDR*, HASH(4), SEQ, KD``) out."""
        if self.state is not PullState.WAIT_MSG3:
            raise Reject("unexpected", "GROUPKEY-PULL message after the exchange finished")
        payloads, iv = self.ike.open(header, data, self.ni_b + self.nr_b)
        if payloads:
            raise Reject("malformed", "GROUPKEY-PULL message 3 carries more than HASH(3)")
        self.ike.ivs[self.message_id] = iv
        reply = self.ike.seal(
            ExchangeType.GROUPKEY_PULL,
            self.message_id,
            [SeqPayload(sequence), kd_payload(self._kek, self._teks)],
            self.ni_b + self.nr_b,
        )
        self._set_state(PullState.DONE)
        return reply
