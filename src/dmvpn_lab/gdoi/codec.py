"""Bytes <-> frozen dataclasses for every ISAKMP/GDOI structure the engine sends or receives.

A guided tour of the wire format, payload by payload:

* The ISAKMP header (RFC 2408 section 3.1): initiator and responder cookies (8 bytes each), the type
  of the first payload, version 1.0, exchange type, flags, message ID and the total length.
* Every payload starts with the generic header (RFC 2408 section 3.2): next payload, a reserved byte,
  payload length (header included).  Payloads form a chain through their "next payload" fields.
* Data attributes (RFC 2408 section 3.3) are either TV (the AF bit set, a 16-bit value) or TLV.
* In IKEv1 phase 1 (Main Mode) the SA payload holds Proposal and Transform substructures
  (RFC 2408 sections 3.4-3.6).  RFC 6407 section 2.1.1 says the phase 1 SA payload carries the GDOI
  DOI value (2), and this engine follows the RFC; only the layout of that SA is the IKE one.
* In GDOI phase 2 (GROUPKEY-PULL, GROUPKEY-PUSH) the SA payload has the RFC 6407 section 5.1 layout:
  DOI, Situation, "SA Attribute Next Payload" (16 bits), RESERVED2 (16 bits), and then SA KEK
  (section 5.3), SA TEK (section 5.4) and GAP (section 5.7) payloads whose lengths are counted inside
  the SA payload's own length.
* KD (section 5.5) carries key packets (TEK or KEK) with their key attributes; SEQ (section 5.6) is a
  32-bit counter.

The codec knows no cryptography: encryption, hashes and signatures are the engines' business.  Which
SA layout applies depends on the exchange, so decoders take ``gdoi_sa``.

Decoding never raises anything but :class:`DecodeError` (a ``ValueError``), whose message names the
structure and the byte offset.  Every length is checked against what remains, nested lengths are
bounded by their parents, counts of payloads/attributes/proposals/key packets are bounded, and
messages larger than :data:`MAX_MESSAGE_LEN` are refused before anything is parsed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .constants import (
    GENERIC_HEADER_LEN,
    ISAKMP_HEADER_LEN,
    ISAKMP_VERSION,
    KEK_SPI_LEN,
    Doi,
    PayloadType,
    SaTekProtocol,
)

MAX_MESSAGE_LEN = 65535  # UDP payload bound; the ISAKMP length field is 32 bits but nothing sane is larger
MAX_PAYLOADS = 64
MAX_ATTRIBUTES = 128
MAX_PROPOSALS = 16
MAX_TRANSFORMS = 32
MAX_SA_ATTRIBUTE_PAYLOADS = 32
MAX_KEY_PACKETS = 32
MAX_SPIS = 64


class DecodeError(ValueError):
    """The bytes are not a well-formed ISAKMP/GDOI structure.  The message names what and where."""


# --- Data attributes (RFC 2408 section 3.3) -------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """One data attribute.  An ``int`` value is sent in TV form (AF=1, 16 bits), ``bytes`` as TLV."""

    type: int
    value: int | bytes

    def as_int(self) -> int:
        if isinstance(self.value, int):
            return self.value
        if len(self.value) > 8:
            raise DecodeError(f"attribute {self.type}: {len(self.value)}-byte value is too long for a number")
        return int.from_bytes(self.value, "big")

    def as_bytes(self) -> bytes:
        if isinstance(self.value, bytes):
            return self.value
        return self.value.to_bytes(2, "big")


def tlv_int(attr_type: int, value: int, size: int = 4) -> Attribute:
    """A numeric attribute in variable (TLV) form, as life durations are (RFC 2409 appendix A)."""
    return Attribute(attr_type, value.to_bytes(size, "big"))


def encode_attributes(attributes: Sequence[Attribute]) -> bytes:
    out = bytearray()
    for attr in attributes:
        if not 0 <= attr.type <= 0x7FFF:
            raise ValueError(f"attribute type {attr.type} out of range")
        if isinstance(attr.value, int):
            if not 0 <= attr.value <= 0xFFFF:
                raise ValueError(f"attribute {attr.type}: TV value {attr.value} does not fit 16 bits")
            out += struct.pack("!HH", 0x8000 | attr.type, attr.value)
        else:
            if len(attr.value) > 0xFFFF:
                raise ValueError(f"attribute {attr.type}: value too long")
            out += struct.pack("!HH", attr.type, len(attr.value)) + attr.value
    return bytes(out)


def decode_attributes(data: bytes, offset: int, what: str) -> tuple[Attribute, ...]:
    """Decode a run of attributes filling ``data`` exactly; ``offset`` is where ``data`` starts."""
    attrs: list[Attribute] = []
    pos = 0
    while pos < len(data):
        if len(attrs) >= MAX_ATTRIBUTES:
            raise DecodeError(f"{what} at offset {offset + pos}: more than {MAX_ATTRIBUTES} attributes")
        if len(data) - pos < 4:
            raise DecodeError(f"{what} attribute at offset {offset + pos}: truncated header")
        af_type, lv = struct.unpack_from("!HH", data, pos)
        attr_type = af_type & 0x7FFF
        if af_type & 0x8000:
            attrs.append(Attribute(attr_type, lv))
            pos += 4
        else:
            if len(data) - pos - 4 < lv:
                raise DecodeError(
                    f"{what} attribute {attr_type} at offset {offset + pos}: length {lv} exceeds "
                    f"the {len(data) - pos - 4} bytes left"
                )
            attrs.append(Attribute(attr_type, bytes(data[pos + 4 : pos + 4 + lv])))
            pos += 4 + lv
    return tuple(attrs)


def find_attribute(attributes: Sequence[Attribute], attr_type: int) -> Attribute | None:
    for attr in attributes:
        if attr.type == attr_type:
            return attr
    return None


# --- ISAKMP header (RFC 2408 section 3.1) ---------------------------------------------------------


@dataclass(frozen=True)
class Header:
    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int
    version: int = ISAKMP_VERSION

    def encode(self) -> bytes:
        if len(self.icookie) != 8 or len(self.rcookie) != 8:
            raise ValueError("ISAKMP cookies are 8 bytes each")
        return (
            self.icookie
            + self.rcookie
            + struct.pack(
                "!BBBBII",
                self.next_payload,
                self.version,
                self.exchange,
                self.flags,
                self.message_id,
                self.length,
            )
        )

    @property
    def spi(self) -> bytes:
        """Both cookies: the KEK SPI in GROUPKEY-PUSH and RFC 8263 acknowledgements."""
        return self.icookie + self.rcookie

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x01)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) > MAX_MESSAGE_LEN:
            raise DecodeError(f"ISAKMP message at offset 0: {len(data)} bytes exceeds {MAX_MESSAGE_LEN}")
        if len(data) < ISAKMP_HEADER_LEN:
            raise DecodeError(f"ISAKMP header at offset 0: only {len(data)} of {ISAKMP_HEADER_LEN} bytes")
        next_payload, version, exchange, flags, message_id, length = struct.unpack_from("!BBBBII", data, 16)
        if version >> 4 != 1:
            raise DecodeError(f"ISAKMP header at offset 17: major version {version >> 4} is not 1")
        if length != len(data):
            raise DecodeError(
                f"ISAKMP header at offset 24: length field {length} but datagram has {len(data)}"
            )
        return cls(
            bytes(data[0:8]), bytes(data[8:16]), next_payload, exchange, flags, message_id, length, version
        )


# --- Payloads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdSpec:
    """An identity inside SA KEK / SA TEK (RFC 6407 sections 5.3 and 5.4.1): type, port and data."""

    id_type: int
    port: int
    data: bytes


@dataclass(frozen=True)
class TransformPayload:
    """RFC 2408 section 3.6 (inside a proposal)."""

    number: int
    transform_id: int
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class ProposalPayload:
    """RFC 2408 section 3.5 (inside an SA payload)."""

    number: int
    protocol_id: int
    spi: bytes
    transforms: tuple[TransformPayload, ...]


@dataclass(frozen=True)
class SaPayload:
    """An SA payload with proposals: IKEv1 phase 1 (RFC 2408 section 3.4, RFC 2407 section 4.6.1)."""

    doi: int
    situation: int
    proposals: tuple[ProposalPayload, ...]


@dataclass(frozen=True)
class SaKekPayload:
    """SA KEK (RFC 6407 section 5.3): the policy of the rekey SA and its 16-byte SPI (cookie pair)."""

    protocol: int
    src: IdSpec
    dst: IdSpec
    spi: bytes
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class SaTekPayload:
    """SA TEK (RFC 6407 section 5.4) of Protocol-ID GDOI_PROTO_IPSEC_ESP (section 5.4.1)."""

    protocol_id: int
    ip_protocol: int
    src: IdSpec
    dst: IdSpec
    transform_id: int
    spi: int
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class GapPayload:
    """Group Associated Policy (RFC 6407 section 5.7): attributes only."""

    attributes: tuple[Attribute, ...]


SaAttributePayload = SaKekPayload | SaTekPayload | GapPayload


@dataclass(frozen=True)
class GdoiSaPayload:
    """The GDOI SA payload (RFC 6407 section 5.1) and the SA KEK/TEK/GAP payloads it contains."""

    situation: int
    payloads: tuple[SaAttributePayload, ...]
    doi: int = Doi.GDOI


@dataclass(frozen=True)
class KePayload:
    data: bytes


@dataclass(frozen=True)
class IdPayload:
    """RFC 2408 section 3.8 with the IPsec DOI layout (RFC 2407 section 4.6.2)."""

    id_type: int
    protocol: int
    port: int
    data: bytes


@dataclass(frozen=True)
class CertPayload:
    encoding: int
    data: bytes


@dataclass(frozen=True)
class HashPayload:
    data: bytes


@dataclass(frozen=True)
class SigPayload:
    data: bytes


@dataclass(frozen=True)
class NoncePayload:
    data: bytes


@dataclass(frozen=True)
class NotifyPayload:
    """RFC 2408 section 3.14."""

    doi: int
    protocol_id: int
    notify_type: int
    spi: bytes = b""
    data: bytes = b""


@dataclass(frozen=True)
class DeletePayload:
    """RFC 2408 section 3.15."""

    doi: int
    protocol_id: int
    spi_size: int
    spis: tuple[bytes, ...]


@dataclass(frozen=True)
class VendorIdPayload:
    data: bytes


@dataclass(frozen=True)
class KeyPacket:
    """One key packet of a KD payload (RFC 6407 section 5.5): type, SPI and key attributes."""

    kd_type: int
    spi: bytes
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class KdPayload:
    """Key Download (RFC 6407 section 5.5)."""

    packets: tuple[KeyPacket, ...]


@dataclass(frozen=True)
class SeqPayload:
    """Sequence Number (RFC 6407 section 5.6)."""

    seq: int


@dataclass(frozen=True)
class UnknownPayload:
    """A payload type this codec does not interpret; kept so its bytes can still be hashed."""

    payload_type: int
    body: bytes


Payload = (
    SaPayload
    | GdoiSaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | HashPayload
    | SigPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | KdPayload
    | SeqPayload
    | UnknownPayload
)

_TYPE_OF: dict[type, int] = {
    SaPayload: PayloadType.SA,
    GdoiSaPayload: PayloadType.SA,
    KePayload: PayloadType.KE,
    IdPayload: PayloadType.ID,
    CertPayload: PayloadType.CERT,
    HashPayload: PayloadType.HASH,
    SigPayload: PayloadType.SIG,
    NoncePayload: PayloadType.NONCE,
    NotifyPayload: PayloadType.NOTIFY,
    DeletePayload: PayloadType.DELETE,
    VendorIdPayload: PayloadType.VENDOR_ID,
    KdPayload: PayloadType.KD,
    SeqPayload: PayloadType.SEQ,
    SaKekPayload: PayloadType.SA_KEK,
    SaTekPayload: PayloadType.SA_TEK,
    GapPayload: PayloadType.GAP,
}


def payload_type(payload: Payload | SaAttributePayload) -> int:
    if isinstance(payload, UnknownPayload):
        return payload.payload_type
    return _TYPE_OF[type(payload)]


def _generic(next_payload: int, body: bytes) -> bytes:
    length = GENERIC_HEADER_LEN + len(body)
    if length > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    return struct.pack("!BBH", next_payload, 0, length) + body


def _encode_id_spec(spec: IdSpec) -> tuple[bytes, bytes]:
    """SA KEK/TEK identity: (type, port) before the 1-byte length, then the data."""
    if len(spec.data) > 0xFF:
        raise ValueError("identity data longer than 255 bytes")
    return struct.pack("!BHB", spec.id_type, spec.port, len(spec.data)), spec.data


def _encode_sa_attribute_payload(payload: SaAttributePayload) -> bytes:
    if isinstance(payload, SaKekPayload):
        if len(payload.spi) != KEK_SPI_LEN:
            raise ValueError("SA KEK SPI is 16 bytes")
        src_head, src_data = _encode_id_spec(payload.src)
        dst_head, dst_data = _encode_id_spec(payload.dst)
        # After the SPI, four octets that RFC 3547 used for POP algorithm/key length and RFC 6407
        # leaves reserved (zero); then the KEK attributes.
        return (
            bytes([payload.protocol])
            + src_head
            + src_data
            + dst_head
            + dst_data
            + payload.spi
            + b"\x00" * 4
            + encode_attributes(payload.attributes)
        )
    if isinstance(payload, SaTekPayload):
        src_head, src_data = _encode_id_spec(payload.src)
        dst_head, dst_data = _encode_id_spec(payload.dst)
        return (
            bytes([payload.protocol_id, payload.ip_protocol])
            + src_head
            + src_data
            + dst_head
            + dst_data
            + bytes([payload.transform_id])
            + payload.spi.to_bytes(4, "big")
            + encode_attributes(payload.attributes)
        )
    return encode_attributes(payload.attributes)


def encode_body(payload: Payload) -> bytes:
    """The payload body (everything after the generic header)."""
    if isinstance(payload, SaPayload):
        out = struct.pack("!II", payload.doi, payload.situation)
        for i, prop in enumerate(payload.proposals):
            nxt = PayloadType.PROPOSAL if i + 1 < len(payload.proposals) else PayloadType.NONE
            tbytes = b""
            for j, tr in enumerate(prop.transforms):
                tnext = PayloadType.TRANSFORM if j + 1 < len(prop.transforms) else PayloadType.NONE
                tbody = struct.pack("!BBH", tr.number, tr.transform_id, 0) + encode_attributes(tr.attributes)
                tbytes += _generic(tnext, tbody)
            pbody = struct.pack("!BBBB", prop.number, prop.protocol_id, len(prop.spi), len(prop.transforms))
            out += _generic(nxt, pbody + prop.spi + tbytes)
        return out
    if isinstance(payload, GdoiSaPayload):
        first: int = payload_type(payload.payloads[0]) if payload.payloads else PayloadType.NONE
        out = struct.pack("!IIHH", payload.doi, payload.situation, first, 0)
        for i, sub in enumerate(payload.payloads):
            sub_next: int = (
                payload_type(payload.payloads[i + 1]) if i + 1 < len(payload.payloads) else PayloadType.NONE
            )
            out += _generic(sub_next, _encode_sa_attribute_payload(sub))
        return out
    if isinstance(payload, (KePayload, HashPayload, SigPayload, NoncePayload, VendorIdPayload)):
        return payload.data
    if isinstance(payload, IdPayload):
        return struct.pack("!BBH", payload.id_type, payload.protocol, payload.port) + payload.data
    if isinstance(payload, CertPayload):
        return bytes([payload.encoding]) + payload.data
    if isinstance(payload, NotifyPayload):
        return (
            struct.pack("!IBBH", payload.doi, payload.protocol_id, len(payload.spi), payload.notify_type)
            + payload.spi
            + payload.data
        )
    if isinstance(payload, DeletePayload):
        for spi in payload.spis:
            if len(spi) != payload.spi_size:
                raise ValueError("every SPI of a Delete payload has spi_size bytes")
        return struct.pack(
            "!IBBH", payload.doi, payload.protocol_id, payload.spi_size, len(payload.spis)
        ) + b"".join(payload.spis)
    if isinstance(payload, KdPayload):
        out = struct.pack("!HH", len(payload.packets), 0)
        for pkt in payload.packets:
            inner = bytes([len(pkt.spi)]) + pkt.spi + encode_attributes(pkt.attributes)
            out += struct.pack("!BBH", pkt.kd_type, 0, 4 + len(inner)) + inner
        return out
    if isinstance(payload, SeqPayload):
        return payload.seq.to_bytes(4, "big")
    return payload.body


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Chain payloads; returns the type of the first one (for the header) and the bytes."""
    out = bytearray()
    for i, p in enumerate(payloads):
        nxt = payload_type(payloads[i + 1]) if i + 1 < len(payloads) else PayloadType.NONE
        out += _generic(nxt, encode_body(p))
    first = payload_type(payloads[0]) if payloads else PayloadType.NONE
    return first, bytes(out)


def encode_message(
    icookie: bytes, rcookie: bytes, exchange: int, flags: int, message_id: int, payloads: Sequence[Payload]
) -> bytes:
    """A complete unencrypted message (the header's length covers everything)."""
    first, body = encode_payloads(payloads)
    header = Header(icookie, rcookie, first, exchange, flags, message_id, ISAKMP_HEADER_LEN + len(body))
    return header.encode() + body


# --- Decoding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A decoded payload and its exact bytes on the wire (generic header included), for hashing."""

    payload: Payload
    raw: bytes = field(repr=False)


def _need(data: bytes, pos: int, n: int, what: str, offset: int) -> None:
    if len(data) - pos < n:
        raise DecodeError(f"{what} at offset {offset + pos}: needs {n} bytes, {len(data) - pos} left")


def _decode_id_spec(data: bytes, pos: int, what: str, offset: int) -> tuple[IdSpec, int]:
    _need(data, pos, 4, what, offset)
    id_type, port, dlen = struct.unpack_from("!BHB", data, pos)
    pos += 4
    _need(data, pos, dlen, what + " identity data", offset)
    return IdSpec(id_type, port, bytes(data[pos : pos + dlen])), pos + dlen


def _decode_sa_kek(body: bytes, offset: int) -> SaKekPayload:
    what = "SA KEK"
    _need(body, 0, 1, what, offset)
    protocol = body[0]
    src, pos = _decode_id_spec(body, 1, what, offset)
    dst, pos = _decode_id_spec(body, pos, what, offset)
    _need(body, pos, KEK_SPI_LEN + 4, what + " SPI", offset)
    spi = bytes(body[pos : pos + KEK_SPI_LEN])
    pos += KEK_SPI_LEN + 4
    attrs = decode_attributes(body[pos:], offset + pos, what)
    return SaKekPayload(protocol, src, dst, spi, attrs)


def _decode_sa_tek(body: bytes, offset: int) -> SaTekPayload:
    what = "SA TEK"
    _need(body, 0, 2, what, offset)
    protocol_id = body[0]
    if protocol_id not in (SaTekProtocol.IPSEC_ESP, SaTekProtocol.IPSEC_AH):
        raise DecodeError(f"{what} at offset {offset}: protocol-ID {protocol_id} is not supported")
    ip_protocol = body[1]
    src, pos = _decode_id_spec(body, 2, what, offset)
    dst, pos = _decode_id_spec(body, pos, what, offset)
    _need(body, pos, 5, what + " transform/SPI", offset)
    transform_id = body[pos]
    spi = int.from_bytes(body[pos + 1 : pos + 5], "big")
    pos += 5
    attrs = decode_attributes(body[pos:], offset + pos, what)
    return SaTekPayload(protocol_id, ip_protocol, src, dst, transform_id, spi, attrs)


def _walk_chain(
    data: bytes, first: int, offset: int, what: str, limit: int, allowed: set[int] | None
) -> list[tuple[int, bytes, bytes, int]]:
    """Generic-header chain inside ``data`` (which it must fill exactly): (type, body, raw, offset)."""
    out: list[tuple[int, bytes, bytes, int]] = []
    pos = 0
    ptype = first
    while ptype != PayloadType.NONE:
        if len(out) >= limit:
            raise DecodeError(f"{what} at offset {offset + pos}: more than {limit} entries")
        if allowed is not None and ptype not in allowed:
            raise DecodeError(f"{what} at offset {offset + pos}: payload type {ptype} not allowed here")
        _need(data, pos, GENERIC_HEADER_LEN, f"{what} header (type {ptype})", offset)
        nxt, _reserved, plen = struct.unpack_from("!BBH", data, pos)
        if plen < GENERIC_HEADER_LEN or plen > len(data) - pos:
            raise DecodeError(
                f"{what} (type {ptype}) at offset {offset + pos}: length {plen} outside 4..{len(data) - pos}"
            )
        out.append(
            (ptype, bytes(data[pos + 4 : pos + plen]), bytes(data[pos : pos + plen]), offset + pos + 4)
        )
        pos += plen
        ptype = nxt
    if pos != len(data):
        raise DecodeError(f"{what} at offset {offset + pos}: {len(data) - pos} unexpected trailing bytes")
    return out


def _decode_phase1_sa(body: bytes, offset: int) -> SaPayload:
    _need(body, 0, 8, "SA", offset)
    doi, situation = struct.unpack_from("!II", body, 0)
    proposals: list[ProposalPayload] = []
    for _t, pbody, _raw, poff in _walk_chain(
        body[8:], PayloadType.PROPOSAL, offset + 8, "SA proposal", MAX_PROPOSALS, {int(PayloadType.PROPOSAL)}
    ):
        _need(pbody, 0, 4, "proposal", poff)
        number, protocol_id, spi_size, ntrans = struct.unpack_from("!BBBB", pbody, 0)
        _need(pbody, 4, spi_size, "proposal SPI", poff)
        spi = pbody[4 : 4 + spi_size]
        start = 4 + spi_size
        chain = _walk_chain(
            pbody[start:],
            PayloadType.TRANSFORM if ntrans else PayloadType.NONE,
            poff + start,
            "transform",
            MAX_TRANSFORMS,
            {int(PayloadType.TRANSFORM)},
        )
        if len(chain) != ntrans:
            raise DecodeError(f"proposal at offset {poff}: announces {ntrans} transforms, has {len(chain)}")
        transforms: list[TransformPayload] = []
        for _tt, tbody, _traw, toff in chain:
            _need(tbody, 0, 4, "transform", toff)
            tnum, tid = tbody[0], tbody[1]
            transforms.append(
                TransformPayload(tnum, tid, decode_attributes(tbody[4:], toff + 4, "transform"))
            )
        proposals.append(ProposalPayload(number, protocol_id, bytes(spi), tuple(transforms)))
    return SaPayload(doi, situation, tuple(proposals))


def _decode_gdoi_sa(body: bytes, offset: int) -> GdoiSaPayload:
    _need(body, 0, 12, "GDOI SA", offset)
    doi, situation, first, _reserved2 = struct.unpack_from("!IIHH", body, 0)
    if doi != Doi.GDOI:
        raise DecodeError(f"GDOI SA at offset {offset}: DOI {doi} is not GDOI (2)")
    subs: list[SaAttributePayload] = []
    allowed: set[int] = {PayloadType.SA_KEK, PayloadType.SA_TEK, PayloadType.GAP}
    for ptype, pbody, _raw, poff in _walk_chain(
        body[12:], first, offset + 12, "SA attribute payload", MAX_SA_ATTRIBUTE_PAYLOADS, allowed
    ):
        if ptype == PayloadType.SA_KEK:
            subs.append(_decode_sa_kek(pbody, poff))
        elif ptype == PayloadType.SA_TEK:
            subs.append(_decode_sa_tek(pbody, poff))
        else:
            subs.append(GapPayload(decode_attributes(pbody, poff, "GAP")))
    return GdoiSaPayload(situation, tuple(subs), doi)


def _decode_kd(body: bytes, offset: int) -> KdPayload:
    _need(body, 0, 4, "KD", offset)
    count = struct.unpack_from("!H", body, 0)[0]
    if count > MAX_KEY_PACKETS:
        raise DecodeError(f"KD at offset {offset}: {count} key packets exceeds {MAX_KEY_PACKETS}")
    pos = 4
    packets: list[KeyPacket] = []
    for _ in range(count):
        _need(body, pos, 5, "KD key packet", offset)
        kd_type, _res, klen, spi_size = struct.unpack_from("!BBHB", body, pos)
        if klen < 5 + spi_size or klen > len(body) - pos:
            raise DecodeError(f"KD key packet at offset {offset + pos}: length {klen} is inconsistent")
        spi = bytes(body[pos + 5 : pos + 5 + spi_size])
        attrs = decode_attributes(
            body[pos + 5 + spi_size : pos + klen], offset + pos + 5 + spi_size, "KD key packet"
        )
        packets.append(KeyPacket(kd_type, spi, attrs))
        pos += klen
    if pos != len(body):
        raise DecodeError(f"KD at offset {offset + pos}: {len(body) - pos} bytes after {count} key packets")
    return KdPayload(tuple(packets))


def decode_body(ptype: int, body: bytes, offset: int, *, gdoi_sa: bool) -> Payload:
    """Decode one payload body of type ``ptype`` found at ``offset``."""
    if ptype == PayloadType.SA:
        return _decode_gdoi_sa(body, offset) if gdoi_sa else _decode_phase1_sa(body, offset)
    if ptype == PayloadType.KE:
        return KePayload(body)
    if ptype == PayloadType.ID:
        _need(body, 0, 4, "ID", offset)
        id_type, protocol, port = struct.unpack_from("!BBH", body, 0)
        return IdPayload(id_type, protocol, port, body[4:])
    if ptype == PayloadType.CERT:
        _need(body, 0, 1, "CERT", offset)
        return CertPayload(body[0], body[1:])
    if ptype == PayloadType.HASH:
        return HashPayload(body)
    if ptype == PayloadType.SIG:
        return SigPayload(body)
    if ptype == PayloadType.NONCE:
        return NoncePayload(body)
    if ptype == PayloadType.NOTIFY:
        _need(body, 0, 8, "Notify", offset)
        doi, proto, spi_size, ntype = struct.unpack_from("!IBBH", body, 0)
        _need(body, 8, spi_size, "Notify SPI", offset)
        return NotifyPayload(doi, proto, ntype, body[8 : 8 + spi_size], body[8 + spi_size :])
    if ptype == PayloadType.DELETE:
        _need(body, 0, 8, "Delete", offset)
        doi, proto, spi_size, nspi = struct.unpack_from("!IBBH", body, 0)
        if nspi > MAX_SPIS or len(body) - 8 != nspi * spi_size:
            raise DecodeError(f"Delete at offset {offset}: {nspi} SPIs of {spi_size} bytes do not fill it")
        spis = tuple(body[8 + i * spi_size : 8 + (i + 1) * spi_size] for i in range(nspi))
        return DeletePayload(doi, proto, spi_size, spis)
    if ptype == PayloadType.VENDOR_ID:
        return VendorIdPayload(body)
    if ptype == PayloadType.KD:
        return _decode_kd(body, offset)
    if ptype == PayloadType.SEQ:
        if len(body) != 4:
            raise DecodeError(f"SEQ at offset {offset}: body is {len(body)} bytes, not 4")
        return SeqPayload(int.from_bytes(body, "big"))
    if ptype in (
        PayloadType.SA_KEK,
        PayloadType.SA_TEK,
        PayloadType.GAP,
        PayloadType.PROPOSAL,
        PayloadType.TRANSFORM,
    ):
        raise DecodeError(f"payload type {ptype} at offset {offset} may only appear nested")
    return UnknownPayload(ptype, body)


def decode_payloads(
    first: int, data: bytes, *, offset: int = ISAKMP_HEADER_LEN, gdoi_sa: bool, padded: bool = False
) -> tuple[Decoded, ...]:
    """Decode the payload chain in ``data``.

    ``padded``: ``data`` is decrypted plaintext, so bytes after the last payload are CBC padding
    (RFC 2409 section 5.3) and are ignored; otherwise the chain must fill ``data`` exactly.
    """
    if len(data) > MAX_MESSAGE_LEN:
        raise DecodeError(f"payloads at offset {offset}: {len(data)} bytes exceeds {MAX_MESSAGE_LEN}")
    out: list[Decoded] = []
    pos = 0
    ptype = first
    while ptype != PayloadType.NONE:
        if len(out) >= MAX_PAYLOADS:
            raise DecodeError(f"message at offset {offset + pos}: more than {MAX_PAYLOADS} payloads")
        _need(data, pos, GENERIC_HEADER_LEN, f"payload (type {ptype}) header", offset)
        nxt, _reserved, plen = struct.unpack_from("!BBH", data, pos)
        if plen < GENERIC_HEADER_LEN or plen > len(data) - pos:
            raise DecodeError(
                f"payload (type {ptype}) at offset {offset + pos}: length {plen} outside 4..{len(data) - pos}"
            )
        body = bytes(data[pos + 4 : pos + plen])
        out.append(
            Decoded(
                decode_body(ptype, body, offset + pos + 4, gdoi_sa=gdoi_sa), bytes(data[pos : pos + plen])
            )
        )
        pos += plen
        ptype = nxt
    if pos != len(data) and not padded:
        raise DecodeError(f"message at offset {offset + pos}: {len(data) - pos} bytes after the last payload")
    return tuple(out)


def decode_message(data: bytes, *, gdoi_sa: bool | None = None) -> tuple[Header, tuple[Decoded, ...]]:
    """Decode an unencrypted message.  ``gdoi_sa`` defaults to "the exchange is a GDOI one"."""
    header = Header.decode(data)
    if header.encrypted:
        raise DecodeError("ISAKMP header at offset 19: encrypted message given to the cleartext decoder")
    if gdoi_sa is None:
        gdoi_sa = header.exchange in (32, 33, 35)
    return header, decode_payloads(header.next_payload, data[ISAKMP_HEADER_LEN:], gdoi_sa=gdoi_sa)
