"""Interoperability with other GDOI stacks (issue 17): one test per difference, from hand-made bytes.

Every alternative a deployed implementation puts on the wire gets its own test vector, written out
byte by byte here rather than produced by our own encoder, with the RFC section that defines (or
leaves open) the field.  docs/interop.md lists the same differences with what we send and accept.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from engine_harness import FAST_POLICY, KS_ADDR, PSK, group_policy, rsa_key, seeded_random

from dmvpn_lab.gdoi.codec import (
    GdoiSaPayload,
    Header,
    SaKekPayload,
    SaTekPayload,
    decode_payloads,
    encode_attributes,
    encode_body,
)
from dmvpn_lab.gdoi.constants import ExchangeType
from dmvpn_lab.gdoi.crypto import cbc_encrypt, rsa_public_der, rsa_public_from_der
from dmvpn_lab.gdoi.groupsa import (
    PolicyError,
    TekPolicy,
    read_kek,
    read_teks,
    sa_kek_payload,
    sa_tek_payloads,
)
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.model import (
    KeyServerConfig,
    Phase1Cipher,
    RekeyTransport,
    TekTransform,
    TrafficSelector,
)
from dmvpn_lab.gdoi.phase1 import MainModeInitiator, MainModeResponder, Phase1Error, transform_for

GM_ADDR = "127.0.0.11"
ICK = bytes.fromhex("0102030405060708")


def _generic(next_payload: int, body: bytes) -> bytes:
    """RFC 2408 section 3.2: next payload, RESERVED, length (header included), body."""
    return bytes([next_payload, 0]) + (4 + len(body)).to_bytes(2, "big") + body


def _isakmp_header(icookie: bytes, rcookie: bytes, first: int, exchange: int, flags: int, length: int) -> bytes:
    """RFC 2408 section 3.1: cookies, next payload, version 1.0, exchange, flags, M-ID 0, length."""
    return icookie + rcookie + bytes([first, 0x10, exchange, flags]) + bytes(4) + length.to_bytes(4, "big")


def _gdoi_sa(*sub_payloads: tuple[int, bytes]) -> GdoiSaPayload:
    """RFC 6407 section 5.1 SA (DOI 2, situation 0, first SA attribute payload) around sub-payloads."""
    chain = b"".join(
        _generic(sub_payloads[i + 1][0] if i + 1 < len(sub_payloads) else 0, body)
        for i, (_t, body) in enumerate(sub_payloads)
    )
    body = (2).to_bytes(4, "big") + bytes(4) + sub_payloads[0][0].to_bytes(2, "big") + bytes(2) + chain
    (decoded,) = decode_payloads(1, _generic(0, body), gdoi_sa=True)
    assert isinstance(decoded.payload, GdoiSaPayload)
    return decoded.payload


# --- 1. Phase 1 situation ------------------------------------------------------------------------------


def _main_mode_1(situation: int) -> bytes:
    """Main Mode message 1 with a GDOI-DOI SA (RFC 6407 section 2.1.1) and the given situation."""
    transform = encode_body_of_transform()
    proposal = bytes([1, 1, 0, 1]) + _generic(0, transform)  # #1, PROTO_ISAKMP, no SPI, one transform
    sa_body = (2).to_bytes(4, "big") + situation.to_bytes(4, "big") + _generic(0, proposal)
    sa = _generic(0, sa_body)
    return _isakmp_header(ICK, bytes(8), 1, ExchangeType.MAIN_MODE, 0, 28 + len(sa)) + sa


def encode_body_of_transform() -> bytes:
    """The transform of FAST_POLICY (RFC 2408 section 3.6): number, KEY_IKE, RESERVED2, attributes."""
    transform = transform_for(FAST_POLICY, 1)
    return bytes([1, 1, 0, 0]) + encode_attributes(transform.attributes)


@pytest.mark.parametrize(
    "situation",
    [
        0,  # RFC 6407 section 5.1: GDOI's situation is zero
        1,  # RFC 2407 section 4.2: SIT_IDENTITY_ONLY, what RFC 3547-era stacks (and we, before) sent
    ],
)
def test_key_server_accepts_situation_0_and_1(situation: int) -> None:
    data = _main_mode_1(situation)
    header = Header.decode(data)
    _responder, reply = MainModeResponder.start(
        (FAST_POLICY,), PSK, KS_ADDR, GM_ADDR, header, data, seeded_random(1), 0.0
    )
    assert reply[28 + 4 + 4 : 28 + 4 + 8] == situation.to_bytes(4, "big")  # echoed in the chosen SA


def test_key_server_refuses_other_situations() -> None:
    data = _main_mode_1(2)  # SIT_SECRECY of the IPsec DOI: means nothing to GDOI
    with pytest.raises(Phase1Error) as err:
        MainModeResponder.start((FAST_POLICY,), PSK, KS_ADDR, GM_ADDR, Header.decode(data), data, seeded_random(1), 0.0)
    assert err.value.reason == "no-proposal"


def test_member_sends_situation_0() -> None:
    first = MainModeInitiator((FAST_POLICY,), PSK, GM_ADDR, KS_ADDR, seeded_random(1)).first_message()
    sa_body = first[28 + 4 :]
    assert sa_body[:8] == bytes.fromhex("00000002 00000000")  # RFC 6407 5.1: DOI GDOI, situation 0


# --- 2. KEK key length ------------------------------------------------------------------------------


def _sa_kek(*attributes: bytes) -> bytes:
    """SA KEK (RFC 6407 section 5.3): UDP, src/dst ID_IPV4_ADDR port 848, 16-byte SPI, 4 zero bytes."""
    src = bytes([1]) + (848).to_bytes(2, "big") + bytes([4, 10, 0, 0, 1])
    dst = bytes([1]) + (848).to_bytes(2, "big") + bytes([4, 0, 0, 0, 0])
    return bytes([17]) + src + dst + bytes(range(16)) + bytes(4) + b"".join(attributes)


def _tv(attr: int, value: int) -> bytes:
    return (0x8000 | attr).to_bytes(2, "big") + value.to_bytes(2, "big")


def _tlv(attr: int, value: bytes) -> bytes:
    return attr.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value


KEK_COMMON = (_tlv(4, (3600).to_bytes(4, "big")), _tv(5, 2), _tv(6, 1), _tv(7, 2048))  # life, SHA-1, RSA


@pytest.mark.parametrize(
    "attributes",
    [
        (_tv(2, 2), _tv(3, 192)),  # RFC 6407 5.3.3/5.3.4: KEK_ALG_3DES with KEK_KEY_LENGTH 192
        (_tv(2, 2),),  # the same without KEK_KEY_LENGTH, as fixed-length 3DES is often sent
    ],
)
def test_3des_kek_key_length_defaults_from_the_algorithm(attributes: tuple[bytes, ...]) -> None:
    (sak,) = _gdoi_sa((15, _sa_kek(*attributes, *KEK_COMMON))).payloads
    assert isinstance(sak, SaKekPayload)
    kek = read_kek(sak)
    assert kek.cipher is Phase1Cipher.TRIPLE_DES


def test_aes_kek_without_key_length_is_refused() -> None:
    # RFC 6407 5.3.4: AES has several key lengths, so the attribute cannot be guessed.
    (sak,) = _gdoi_sa((15, _sa_kek(_tv(2, 3), *KEK_COMMON))).payloads
    assert isinstance(sak, SaKekPayload)
    with pytest.raises(PolicyError, match="attribute 3 missing"):
        read_kek(sak)


# --- 7. Ports ------------------------------------------------------------------------------------------


def test_sa_kek_ports_follow_the_key_server_port() -> None:
    # RFC 6407 5.3: SRC/DST ID port of the SA KEK is where rekeys come from and go to.
    group = group_policy(rekey_transport=RekeyTransport.MULTICAST, rekey_multicast_address="239.1.1.1")
    ks = KeyServer(
        KeyServerConfig(KS_ADDR, (group,), {GM_ADDR: PSK}, (FAST_POLICY,), port=8848),
        {group.rsa_key_label: rsa_key()},
        random=seeded_random(3),
    )
    kek = ks._kek_policy(ks._groups[group.name], 0.0)
    sak = sa_kek_payload(kek)
    assert (sak.src.port, sak.dst.port) == (8848, 8848)
    ks.force_rekey(1.0)
    assert [dst for _data, dst in ks.datagrams_to_send(1.0)] == [("239.1.1.1", 8848)]


# --- 8. TEK selectors ---------------------------------------------------------------------------------


def _sa_tek(src_id: bytes, dst_id: bytes) -> bytes:
    """SA TEK, GDOI_PROTO_IPSEC_ESP (RFC 6407 5.4.1): ESP, GRE, src ID, dst ID, ESP_AES_GCM_16, SPI,
    then SA life type seconds, duration 3600, transport mode, key length 256."""
    attrs = _tv(1, 1) + _tlv(2, (3600).to_bytes(4, "big")) + _tv(4, 2) + _tv(6, 256)
    return bytes([1, 47]) + src_id + dst_id + bytes([20]) + (0x1234).to_bytes(4, "big") + attrs


HOST_AS_ADDR = bytes([1]) + bytes(2) + bytes([4, 10, 0, 0, 1])  # RFC 2407 4.6.2.2 ID_IPV4_ADDR
HOST_AS_SUBNET = bytes([4]) + bytes(2) + bytes([8, 10, 0, 0, 1, 255, 255, 255, 255])  # 4.6.2.5 /32
ANY = bytes([4]) + bytes(2) + bytes([8]) + bytes(8)  # 0.0.0.0/0.0.0.0


@pytest.mark.parametrize("host", [HOST_AS_ADDR, HOST_AS_SUBNET], ids=["ID_IPV4_ADDR", "ID_IPV4_ADDR_SUBNET"])
def test_member_reads_a_host_selector_in_either_encoding(host: bytes) -> None:
    (sat,) = _gdoi_sa((16, _sa_tek(host, ANY))).payloads
    assert isinstance(sat, SaTekPayload)
    (tek,) = read_teks([sat])
    assert tek.selectors == (TrafficSelector(47, "10.0.0.1/32", "0.0.0.0/0"),)


def test_key_server_sends_a_host_as_id_ipv4_addr() -> None:
    tek = TekPolicy(
        0x1234,
        TekTransform.ESP_GCM256,
        bytes(36),
        b"",
        (TrafficSelector(47, "10.0.0.1/32", "0.0.0.0/0"),),
        3600,
        None,
    )
    (sat,) = sa_tek_payloads(tek)
    assert encode_body_of_sat(sat).startswith(bytes([1, 47]) + HOST_AS_ADDR + ANY)


def encode_body_of_sat(sat: SaTekPayload) -> bytes:
    body = encode_body(GdoiSaPayload(0, (sat,)))
    return body[12 + 4 :]  # after the SA header and the SA TEK's generic header


# --- 9. Public key format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "public_format",
    [
        serialization.PublicFormat.PKCS1,  # RFC 6407 5.5.2.2 -> RFC 3447 A.1.1 RSAPublicKey
        serialization.PublicFormat.SubjectPublicKeyInfo,  # RFC 5280 4.1.2.7, what some stacks send
    ],
)
def test_member_reads_the_signing_key_in_either_format(public_format: serialization.PublicFormat) -> None:
    public = rsa_key().public_key()
    der = public.public_bytes(serialization.Encoding.DER, public_format)
    assert rsa_public_from_der(der).public_numbers() == public.public_numbers()


def test_key_server_sends_pkcs1() -> None:
    public = rsa_key().public_key()
    assert rsa_public_der(public) == public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )


# --- 10. Error names in Main Mode messages 5 and 6 -----------------------------------------------------


def _main_mode_to_message_5() -> tuple[MainModeInitiator, MainModeResponder]:
    gm = MainModeInitiator((FAST_POLICY,), PSK, GM_ADDR, KS_ADDR, seeded_random(5))
    first = gm.first_message()
    ks, second = MainModeResponder.start(
        (FAST_POLICY,), PSK, KS_ADDR, GM_ADDR, Header.decode(first), first, seeded_random(6), 0.0
    )
    third = gm.handle(Header.decode(second), second, 0.0)
    assert third is not None
    fourth = ks.handle(Header.decode(third), third, 0.0)
    assert gm.handle(Header.decode(fourth), fourth, 0.0) is not None
    return gm, ks


def _message_5(gm: MainModeInitiator, key: bytes, plain: bytes) -> bytes:
    assert gm.keys is not None and gm.suite is not None
    ct = cbc_encrypt(gm.suite.cipher, key, gm.keys.initial_iv, plain)
    return _isakmp_header(gm.icookie, gm.rcookie, 5, ExchangeType.MAIN_MODE, 1, 28 + len(ct)) + ct


def test_message_5_that_decrypts_but_does_not_decode_is_malformed() -> None:
    gm, ks = _main_mode_to_message_5()
    assert gm.keys is not None
    # RFC 2407 4.6.2: an ID body has at least type, protocol and port (4 bytes); this one has 2.
    plain = _generic(8, bytes([1, 0])) + _generic(0, bytes(32))
    data = _message_5(gm, gm.keys.enc_key, plain)
    with pytest.raises(Phase1Error) as err:
        ks.handle(Header.decode(data), data, 0.0)
    assert err.value.reason == "malformed" and "message 5" in err.value.detail and "ID" in err.value.detail


def test_message_5_under_another_key_is_bad_hash() -> None:
    gm, ks = _main_mode_to_message_5()
    assert gm.keys is not None
    plain = _generic(8, bytes([1, 0, 0, 0, 10, 0, 0, 11])) + _generic(0, bytes(32))
    data = _message_5(gm, bytes(len(gm.keys.enc_key)), plain)  # what a wrong pre-shared key gives
    with pytest.raises(Phase1Error) as err:
        ks.handle(Header.decode(data), data, 0.0)
    assert err.value.reason == "bad-hash"
