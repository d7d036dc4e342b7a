"""The ISAKMP/GDOI codec: round trips, hand-written known-answer bytes, and hostile input."""

from __future__ import annotations

import pytest

from dmvpn_lab.gdoi.codec import (
    MAX_MESSAGE_LEN,
    MAX_PAYLOADS,
    Attribute,
    CertPayload,
    DecodeError,
    DeletePayload,
    GapPayload,
    GdoiSaPayload,
    HashPayload,
    Header,
    IdPayload,
    IdSpec,
    KdPayload,
    KePayload,
    KeyPacket,
    NoncePayload,
    NotifyPayload,
    Payload,
    ProposalPayload,
    SaKekPayload,
    SaPayload,
    SaTekPayload,
    SeqPayload,
    SigPayload,
    TransformPayload,
    UnknownPayload,
    VendorIdPayload,
    decode_attributes,
    decode_message,
    decode_payloads,
    encode_attributes,
    encode_message,
    encode_payloads,
)
from dmvpn_lab.gdoi.constants import ExchangeType, PayloadType

ICK = bytes.fromhex("0102030405060708")
RCK = bytes.fromhex("1112131415161718")

KEK = SaKekPayload(
    17,
    IdSpec(1, 848, bytes([10, 0, 0, 1])),
    IdSpec(1, 848, bytes(4)),
    bytes(range(16)),
    (Attribute(2, 3), Attribute(3, 256), Attribute(4, (86400).to_bytes(4, "big"))),
)
TEK = SaTekPayload(
    1,
    47,
    IdSpec(4, 0, bytes(8)),
    IdSpec(4, 0, bytes(8)),
    20,
    0x042CE20E,
    (Attribute(1, 1), Attribute(2, (3600).to_bytes(4, "big")), Attribute(6, 256)),
)
PHASE1_SA = SaPayload(
    2,
    1,
    (
        ProposalPayload(
            1,
            1,
            b"",
            (
                TransformPayload(
                    1,
                    1,
                    (Attribute(1, 7), Attribute(14, 256), Attribute(2, 4), Attribute(3, 1), Attribute(4, 19)),
                ),
                TransformPayload(2, 1, (Attribute(1, 5), Attribute(2, 1), Attribute(3, 1), Attribute(4, 2))),
            ),
        ),
    ),
)

ALL_PAYLOADS: list[Payload] = [
    KePayload(b"\x01" * 64),
    IdPayload(1, 17, 848, bytes([10, 0, 0, 1])),
    CertPayload(4, b"cert"),
    HashPayload(b"\xaa" * 32),
    SigPayload(b"\xbb" * 128),
    NoncePayload(b"\xcc" * 32),
    NotifyPayload(2, 1, 18, ICK + RCK, b"data"),
    DeletePayload(1, 3, 4, (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")),
    VendorIdPayload(b"vendor"),
    KdPayload(
        (
            KeyPacket(1, b"\x04\x2c\xe2\x0e", (Attribute(1, b"k" * 36),)),
            KeyPacket(2, bytes(range(16)), (Attribute(1, b"K" * 32), Attribute(2, b"P" * 140))),
        )
    ),
    SeqPayload(7),
    UnknownPayload(130, b"whatever"),
]


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda p: type(p).__name__)
def test_round_trip_every_payload(payload: Payload) -> None:
    first, data = encode_payloads([payload, SeqPayload(1)])
    decoded = decode_payloads(first, data, gdoi_sa=True)
    assert [d.payload for d in decoded] == [payload, SeqPayload(1)]
    assert b"".join(d.raw for d in decoded) == data


def test_round_trip_gdoi_sa_with_kek_tek_gap() -> None:
    sa = GdoiSaPayload(0, (KEK, TEK, TEK, GapPayload((Attribute(1, 5),))))
    msg = encode_message(ICK, RCK, ExchangeType.GROUPKEY_PUSH, 0, 0, [SeqPayload(1), sa])
    header, decoded = decode_message(msg)
    assert header.exchange == 33 and header.length == len(msg)
    assert decoded[1].payload == sa


def test_round_trip_phase1_sa() -> None:
    msg = encode_message(ICK, bytes(8), ExchangeType.MAIN_MODE, 0, 0, [PHASE1_SA])
    _h, decoded = decode_message(msg)
    assert decoded[0].payload == PHASE1_SA


def test_header_known_answer() -> None:
    h = Header(ICK, RCK, PayloadType.HASH, ExchangeType.GROUPKEY_PULL, 1, 0xDEADBEEF, 28)
    assert h.encode() == ICK + RCK + bytes.fromhex("08 10 20 01 deadbeef 0000001c")
    assert Header.decode(h.encode()) == h


def test_attribute_known_answer() -> None:
    attrs = (Attribute(1, 7), Attribute(12, (86400).to_bytes(4, "big")))
    raw = bytes.fromhex("8001 0007000c 0004 00015180")
    assert encode_attributes(attrs) == raw
    assert decode_attributes(raw, 0, "t") == attrs


def test_seq_known_answer() -> None:
    assert encode_payloads([SeqPayload(42)]) == (18, bytes.fromhex("00 00 0008 0000002a"))


def test_kd_known_answer() -> None:
    # RFC 6407 5.5: generic header, #key packets, RESERVED2; key packet: type, RESERVED, length
    # (header included), SPI size, SPI, attributes.
    kd = KdPayload((KeyPacket(1, bytes.fromhex("042ce20e"), (Attribute(1, b"\x11" * 4),)),))
    body = bytes.fromhex("0001 000001 00 0011 04 042ce20e0001 0004 11111111")
    assert encode_payloads([kd]) == (17, bytes.fromhex("00 00") + (4 + len(body)).to_bytes(2, "big") + body)


def test_sa_kek_known_answer() -> None:
    # RFC 6407 5.1 + 5.3: DOI 2, situation 0, SA attribute next payload 15 (16 bits), RESERVED2,
    # then SA KEK: protocol, src type/port/len/data, dst type/port/len/data, SPI(16), 4 reserved, attrs.
    sa = GdoiSaPayload(
        0,
        (
            SaKekPayload(
                17,
                IdSpec(1, 848, bytes([1, 1, 1, 1])),
                IdSpec(1, 848, bytes(4)),
                bytes(16),
                (Attribute(2, 2),),
            ),
        ),
    )
    sak_body = (
        bytes.fromhex("1101 0350 04 0101010101 0350 04 00000000")
        + bytes(16)
        + bytes(4)
        + bytes.fromhex("8002 0002")
    )
    sak = bytes.fromhex("00 00") + (4 + len(sak_body)).to_bytes(2, "big") + sak_body
    body = bytes.fromhex("00000002 00000000 000f 0000") + sak
    assert encode_payloads([sa]) == (1, bytes.fromhex("00 00") + (4 + len(body)).to_bytes(2, "big") + body)


def test_sa_tek_known_answer() -> None:
    # RFC 6407 5.4.1: Protocol-ID, IP protocol, src/dst with ONE-octet data lengths, transform, SPI, attrs.
    tek = SaTekPayload(
        1, 47, IdSpec(4, 0, bytes(8)), IdSpec(4, 0, bytes(8)), 3, 0x042CE20E, (Attribute(5, 1),)
    )
    body = bytes.fromhex("01 2f04 0000 08 000000000000000004 0000 08 000000000000000003 042ce20e8005 0001")
    sa = GdoiSaPayload(0, (tek,))
    _t, data = encode_payloads([sa])
    assert data.endswith(bytes.fromhex("00 00") + (4 + len(body)).to_bytes(2, "big") + body)


def _real_messages() -> list[bytes]:
    return [
        encode_message(ICK, bytes(8), ExchangeType.MAIN_MODE, 0, 0, [PHASE1_SA]),
        encode_message(
            ICK,
            RCK,
            ExchangeType.GROUPKEY_PULL,
            0,
            5,
            [HashPayload(b"h" * 32), NoncePayload(b"n" * 32), GdoiSaPayload(0, (KEK, TEK))],
        ),
        encode_message(
            ICK,
            RCK,
            ExchangeType.GROUPKEY_PULL,
            0,
            5,
            [HashPayload(b"h" * 32), SeqPayload(3), ALL_PAYLOADS[9]],
        ),
    ]


@pytest.mark.parametrize("msg", _real_messages(), ids=["main-mode-1", "pull-2", "pull-4"])
def test_truncation_at_every_offset_raises_decode_error(msg: bytes) -> None:
    decode_message(msg)
    for cut in range(len(msg)):
        with pytest.raises(DecodeError):
            decode_message(msg[:cut])
        # and with the header patched to the truncated length: the payload parser must notice
        if cut >= 28:
            patched = msg[:24] + cut.to_bytes(4, "big") + msg[28:cut]
            with pytest.raises(DecodeError):
                decode_message(patched)


def test_error_names_payload_and_offset() -> None:
    msg = _real_messages()[2]
    bad = bytearray(msg)
    bad[28 + 36 + 2 : 28 + 36 + 4] = (200).to_bytes(2, "big")  # the SEQ payload claims 200 bytes
    with pytest.raises(DecodeError, match=r"SEQ at offset 68"):
        decode_message(bytes(bad))


def test_bounds() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        Header.decode(bytes(MAX_MESSAGE_LEN + 1))
    first, chain = encode_payloads([NoncePayload(b"n")] * (MAX_PAYLOADS + 1))
    with pytest.raises(DecodeError, match="more than"):
        decode_payloads(first, chain, gdoi_sa=True)
    with pytest.raises(DecodeError, match="key packets"):
        decode_payloads(17, bytes.fromhex("0000 0008 ffff 0000"), gdoi_sa=True)
    with pytest.raises(DecodeError, match="nested"):
        decode_payloads(16, bytes.fromhex("0000 0004"), gdoi_sa=True)
    with pytest.raises(DecodeError, match=r"trailing|after the last"):
        decode_payloads(18, bytes.fromhex("0000 0008 00000001 00"), gdoi_sa=True)
    assert decode_payloads(18, bytes.fromhex("0000 0008 00000001 00"), gdoi_sa=True, padded=True)
