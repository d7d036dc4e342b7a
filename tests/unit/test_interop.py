"""Interoperability with other GDOI stacks: one test per difference, from hand-made bytes.

Every alternative a deployed implementation puts on the wire gets its own test vector, written out
byte by byte here rather than produced by our own encoder, with the RFC section that defines (or
leaves open) the field.  docs/interop.md lists the same differences with what we send and accept.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from engine_harness import FAST_POLICY, KS_ADDR, PSK, Network, group_policy, make_lab, rsa_key, seeded_random

from dmvpn_lab.gdoi.codec import (
    GdoiSaPayload,
    Header,
    SaKekPayload,
    SaTekPayload,
    decode_payloads,
    encode_attributes,
    encode_body,
)
from dmvpn_lab.gdoi.config_model import KeyServerConfig
from dmvpn_lab.gdoi.constants import ExchangeType
from dmvpn_lab.gdoi.crypto import (
    CryptoError,
    KekKey,
    cbc_decrypt,
    cbc_encrypt,
    rsa_public_der,
    rsa_public_from_der,
)
from dmvpn_lab.gdoi.events import MessageRejected, Registered, TekDeleted, TekInstalled, TekSA
from dmvpn_lab.gdoi.groupsa import (
    TRANSFORMS,
    PolicyError,
    TekPolicy,
    read_kek,
    read_teks,
    sa_kek_payload,
    sa_tek_payloads,
)
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.model import Phase1Cipher, RekeyTransport, TekTransform, TrafficSelector
from dmvpn_lab.gdoi.phase1 import (
    MainModeInitiator,
    MainModeResponder,
    Phase1Error,
    message2,
    read_offer,
    transform_for,
)
from dmvpn_lab.gdoi.xfrm import algorithm_args

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
    transform = _transform_body()
    proposal = bytes([1, 1, 0, 1]) + _generic(0, transform)  # #1, PROTO_ISAKMP, no SPI, one transform
    sa_body = (2).to_bytes(4, "big") + situation.to_bytes(4, "big") + _generic(0, proposal)
    sa = _generic(0, sa_body)
    return _isakmp_header(ICK, bytes(8), 1, ExchangeType.MAIN_MODE, 0, 28 + len(sa)) + sa


def _transform_body() -> bytes:
    """The transform of FAST_POLICY (RFC 2408 section 3.6): number, KEY_IKE, RESERVED2, attributes."""
    transform = transform_for(FAST_POLICY, 1)
    return bytes([1, 1, 0, 0]) + encode_attributes(transform.attributes)


@pytest.mark.parametrize(
    "situation",
    [
        0,  # RFC 6407 section 5.1: GDOI's situation is zero
        1,  # RFC 2407 section 4.2: SIT_IDENTITY_ONLY of the IPsec DOI, what this project sent before
    ],
)
def test_key_server_accepts_situation_0_and_1(situation: int) -> None:
    data = _main_mode_1(situation)
    header = Header.decode(data)
    offer = read_offer((FAST_POLICY,), header, data)
    reply = message2(offer, header.icookie, b"\x01" * 8)
    assert reply[28 + 4 + 4 : 28 + 4 + 8] == situation.to_bytes(4, "big")  # echoed in the chosen SA


def test_key_server_refuses_other_situations() -> None:
    data = _main_mode_1(2)  # SIT_SECRECY of the IPsec DOI: means nothing to GDOI
    with pytest.raises(Phase1Error) as err:
        read_offer((FAST_POLICY,), Header.decode(data), data)
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


@pytest.mark.parametrize("port", [848, 8848])  # RFC 6407 5.3: the SA KEK's SRC/DST ID ports
def test_member_reads_an_sa_kek_of_any_port(port: int) -> None:
    sak_bytes = _sa_kek(_tv(2, 3), _tv(3, 256), *KEK_COMMON).replace((848).to_bytes(2, "big"), port.to_bytes(2, "big"))
    (sak,) = _gdoi_sa((15, sak_bytes)).payloads
    assert isinstance(sak, SaKekPayload) and sak.src.port == port
    assert read_kek(sak).cipher is Phase1Cipher.AES_CBC_256


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


def test_member_listens_for_multicast_rekeys_on_the_sa_kek_port() -> None:
    group = group_policy(rekey_transport=RekeyTransport.MULTICAST, rekey_multicast_address="239.1.1.1")
    net = make_lab(1, group=group, start=False)
    net.ks().config = replace(net.ks().config, port=8848)
    net.gm(GM_ADDR).start(net.now)
    net.flush()
    kek = net.gm(GM_ADDR).status(net.now).kek
    assert kek is not None and (kek.multicast_address, kek.multicast_port) == ("239.1.1.1", 8848)


# --- 8. TEK selectors ---------------------------------------------------------------------------------


def _sa_tek(src_id: bytes, dst_id: bytes, spi: int = 0x1234) -> bytes:
    """SA TEK, GDOI_PROTO_IPSEC_ESP (RFC 6407 5.4.1): ESP, GRE, src ID, dst ID, ESP_AES_GCM_16, SPI,
    then SA life type seconds, duration 3600, transport mode, key length 256."""
    attrs = _tv(1, 1) + _tlv(2, (3600).to_bytes(4, "big")) + _tv(4, 2) + _tv(6, 256)
    return bytes([1, 47]) + src_id + dst_id + bytes([20]) + spi.to_bytes(4, "big") + attrs


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
    assert _sa_tek_body(sat).startswith(bytes([1, 47]) + HOST_AS_ADDR + ANY)


def _sa_tek_body(sat: SaTekPayload) -> bytes:
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
    header = Header.decode(first)
    offer = read_offer((FAST_POLICY,), header, first)
    rcookie = bytes.fromhex("1112131415161718")
    ks = MainModeResponder(KS_ADDR, GM_ADDR, PSK, offer, header.icookie, rcookie, seeded_random(6))
    second = message2(offer, header.icookie, rcookie)
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


def test_message_6_that_decrypts_but_does_not_decode_is_malformed() -> None:
    gm, _ks = _main_mode_to_message_5()
    assert gm.keys is not None and gm.suite is not None
    # RFC 2409 5.4: message 6 is HDR*, IDir_b, HASH_R, chained from the last block of message 5.
    plain = _generic(8, bytes([1, 0])) + _generic(0, bytes(32))  # an ID body of 2 bytes, as above
    ct = cbc_encrypt(gm.suite.cipher, gm.keys.enc_key, gm.iv, plain)
    data = _isakmp_header(gm.icookie, gm.rcookie, 5, ExchangeType.MAIN_MODE, 1, 28 + len(ct)) + ct
    with pytest.raises(Phase1Error) as err:
        gm.handle(Header.decode(data), data, 0.0)
    assert err.value.reason == "malformed" and "message 6" in err.value.detail and "ID" in err.value.detail


def test_message_5_under_another_key_is_bad_hash() -> None:
    gm, ks = _main_mode_to_message_5()
    assert gm.keys is not None
    plain = _generic(8, bytes([1, 0, 0, 0, 10, 0, 0, 11])) + _generic(0, bytes(32))
    data = _message_5(gm, bytes(len(gm.keys.enc_key)), plain)  # what a wrong pre-shared key gives
    with pytest.raises(Phase1Error) as err:
        ks.handle(Header.decode(data), data, 0.0)
    assert err.value.reason == "bad-hash"


# --- 3. KEK key and IV --------------------------------------------------------------------------------


def test_kek_download_forms_are_told_apart_by_length() -> None:
    key, iv = bytes(range(32)), bytes(range(100, 116))
    # RFC 6407 5.5.2.1: the IV comes first in KEK_ALGORITHM_KEY when the mode needs one (CBC does).
    assert KekKey.from_download(Phase1Cipher.AES_CBC_256, iv + key) == KekKey(Phase1Cipher.AES_CBC_256, key, iv)
    # The bare key (other stacks, this project's earlier key servers): the IV precedes each ciphertext.
    assert KekKey.from_download(Phase1Cipher.AES_CBC_256, key) == KekKey(Phase1Cipher.AES_CBC_256, key, None)
    # 3DES: 8-byte IV and 24-byte key (the three DES keys in order, parity included, as RFC 3547 has it).
    assert KekKey.from_download(Phase1Cipher.TRIPLE_DES, key).iv == key[:8]
    with pytest.raises(CryptoError):
        KekKey.from_download(Phase1Cipher.AES_CBC_128, bytes(20))


def _registered(legacy_kek: bool = False) -> Network:
    """A member registered with a key server whose KEK is downloaded with its IV (RFC 6407) or bare."""
    net = make_lab(1, start=False)
    group = net.ks()._groups["GDOI_GROUP"]
    if legacy_kek:
        group.kek = replace(group.kek, key=replace(group.kek.key, iv=None))
    net.gm(GM_ADDR).start(net.now)
    net.flush()
    assert net.gm(GM_ADDR).status(net.now).registered
    return net


def _seq(seq: int) -> bytes:
    return seq.to_bytes(4, "big")  # RFC 6407 5.6


def _new_tek_payloads(spi: int) -> list[tuple[int, bytes]]:
    """SA with one SA TEK (ESP GCM-256, GRE any any) and the KD carrying its 36 key bytes (5.5.1)."""
    sat = _sa_tek(ANY, ANY, spi)
    sa_body = (2).to_bytes(4, "big") + bytes(4) + (16).to_bytes(2, "big") + bytes(2) + _generic(0, sat)
    key_attr = _tlv(1, bytes(range(36)))
    packet_body = bytes([4]) + spi.to_bytes(4, "big") + key_attr
    packet = bytes([1, 0]) + (4 + len(packet_body)).to_bytes(2, "big") + packet_body
    kd_body = (1).to_bytes(2, "big") + bytes(2) + packet
    return [(1, sa_body), (17, kd_body)]


def _delete(protocol: int, *spis: bytes) -> tuple[int, bytes]:
    """RFC 2408 3.15 Delete: DOI (GDOI), protocol, SPI size, number of SPIs, SPIs."""
    body = (2).to_bytes(4, "big") + bytes([protocol, len(spis[0])]) + len(spis).to_bytes(2, "big")
    return 12, body + b"".join(spis)


def _hand_push(
    net: Network, seq: int, payloads: list[tuple[int, bytes]], *, signed_length: str = "before encryption"
) -> bytes:
    """A GROUPKEY-PUSH built byte by byte: HDR*, SEQ, payloads..., SIG (RFC 6407 section 4)."""
    kek = net.ks()._groups["GDOI_GROUP"].kek
    chain = [(18, _seq(seq)), *payloads]
    signed = b"".join(
        _generic(chain[i + 1][0] if i + 1 < len(chain) else 9, body) for i, (_t, body) in enumerate(chain)
    )
    sig_payload_len = 4 + rsa_key().key_size // 8
    block = 16
    padded_len = -(-(len(signed) + sig_payload_len) // block) * block
    sent_len = 28 + padded_len + (block if kek.key.iv is None else 0)
    length = {
        "before encryption": 28 + len(signed) + sig_payload_len,  # RFC 6407 / RFC 3547 section 4
        "as sent": sent_len,  # older key servers of this project
        "without SIG": 28 + len(signed),
        "wrong": 12345,
    }[signed_length]
    signature = rsa_key().sign(
        b"rekey" + _isakmp_header(kek.spi[:8], kek.spi[8:], 18, 33, 1, length) + signed,
        padding.PKCS1v15(),
        hashes.SHA256(),  # SIG_HASH_ALGORITHM of an AES KEK here
    )
    plain = signed + _generic(0, signature)
    if kek.key.iv is None:
        explicit_iv = bytes(range(200, 216))
        ct = explicit_iv + cbc_encrypt(kek.key.cipher, kek.key.key, explicit_iv, plain)
    else:
        ct = cbc_encrypt(kek.key.cipher, kek.key.key, kek.key.iv, plain)
    assert 28 + len(ct) == sent_len
    return _isakmp_header(kek.spi[:8], kek.spi[8:], 18, 33, 1, 28 + len(ct)) + ct


@pytest.mark.parametrize("legacy_kek", [False, True], ids=["IV in KD (RFC 6407)", "IV per message"])
def test_member_reads_pushes_under_either_kek_form(legacy_kek: bool) -> None:
    net = _registered(legacy_kek)
    kd = net.gm(GM_ADDR)._kek
    assert kd is not None and (kd.key.iv is None) is legacy_kek
    net.inject(_hand_push(net, 5, _new_tek_payloads(0x1234)), (KS_ADDR, 848), GM_ADDR)
    assert [e.sa.spi for e in net.of_type(GM_ADDR, TekInstalled) if isinstance(e, TekInstalled)][-1] == 0x1234
    assert net.gm(GM_ADDR).status(net.now).rejected == {}


def test_key_server_sends_the_iv_with_the_kek_and_encrypts_with_it() -> None:
    net = _registered()
    kek = net.ks()._groups["GDOI_GROUP"].kek
    assert kek.key.iv is not None and len(kek.key.download()) == 16 + 32
    net.ks().force_rekey(net.now)
    (push, _dst), *_rest = net.ks().datagrams_to_send(net.now)
    plain = cbc_decrypt(kek.key.cipher, kek.key.key, kek.key.iv, push[28:])  # no IV in front
    assert plain[:4] == bytes.fromhex("01 00 0008")  # SEQ (next: SA), 8 bytes long


# --- 4. What the push signature covers ------------------------------------------------------------------


@pytest.mark.parametrize("signed_length", ["before encryption", "as sent", "without SIG"])
def test_member_accepts_each_reading_of_the_signed_header(signed_length: str) -> None:
    net = _registered()
    net.inject(_hand_push(net, 5, _new_tek_payloads(0x1234), signed_length=signed_length), (KS_ADDR, 848), GM_ADDR)
    assert net.gm(GM_ADDR).status(net.now).rekeys_cumulative == 1


def test_member_refuses_a_signature_over_another_length() -> None:
    net = _registered()
    net.inject(_hand_push(net, 5, _new_tek_payloads(0x1234), signed_length="wrong"), (KS_ADDR, 848), GM_ADDR)
    assert net.gm(GM_ADDR).status(net.now).rejected == {"bad-signature": 1}


def test_key_server_signs_the_message_before_encryption() -> None:
    net = _registered()
    kek = net.ks()._groups["GDOI_GROUP"].kek
    assert kek.key.iv is not None
    net.ks().force_rekey(net.now)
    (push, _dst), *_rest = net.ks().datagrams_to_send(net.now)
    plain = cbc_decrypt(kek.key.cipher, kek.key.key, kek.key.iv, push[28:])
    decoded = decode_payloads(18, plain, gdoi_sa=True, padded=True)
    signed = b"".join(d.raw for d in decoded[:-1])
    sig = decoded[-1]
    length = 28 + len(signed) + len(sig.raw)  # no padding: RFC 6407 section 4, "before encryption"
    assert length < len(push)
    rsa_key().public_key().verify(
        sig.raw[4:], b"rekey" + push[:24] + length.to_bytes(4, "big") + signed, padding.PKCS1v15(), hashes.SHA256()
    )


# --- 5. Delete payloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol",
    [
        1,  # RFC 6407 5.4: GDOI_PROTO_IPSEC_ESP
        3,  # RFC 2407 4.4.1: PROTO_IPSEC_ESP of the IPsec DOI, as RFC 3547-era stacks send
    ],
)
def test_push_with_only_a_tek_delete_removes_the_tek(protocol: int) -> None:
    net = _registered()
    gm = net.gm(GM_ADDR)
    (tek,) = gm.status(net.now).teks
    net.inject(_hand_push(net, 5, [_delete(protocol, tek.spi.to_bytes(4, "big"))]), (KS_ADDR, 848), GM_ADDR)
    assert gm.status(net.now).teks == ()
    assert net.events[GM_ADDR][-1] == TekDeleted(tek.spi)
    assert gm.status(net.now).rejected == {}


def test_push_deleting_the_kek_makes_the_member_register_again() -> None:
    net = _registered()
    gm = net.gm(GM_ADDR)
    spi = net.ks()._groups["GDOI_GROUP"].kek.spi
    net.inject(_hand_push(net, 5, [_delete(1, spi)]), (KS_ADDR, 848), GM_ADDR)
    assert gm.status(net.now).kek is None
    net.advance(1)
    assert len(net.of_type(GM_ADDR, Registered)) == 2 and gm.status(net.now).kek is not None


def test_delete_and_new_tek_in_one_push() -> None:
    net = _registered()
    gm = net.gm(GM_ADDR)
    (old,) = gm.status(net.now).teks
    payloads = [_delete(1, old.spi.to_bytes(4, "big")), *_new_tek_payloads(0x1234)]
    net.inject(_hand_push(net, 5, payloads), (KS_ADDR, 848), GM_ADDR)
    assert [t.spi for t in gm.status(net.now).teks] == [0x1234]



# --- 6. Transforms -----------------------------------------------------------------------------------


def _tek_attributes(*extra: bytes) -> bytes:
    """RFC 2407 4.5 attributes of an SA TEK: life type seconds, duration 3600, transport mode."""
    return _tv(1, 1) + _tlv(2, (3600).to_bytes(4, "big")) + _tv(4, 2) + b"".join(extra)


@pytest.mark.parametrize(
    ("esp_id", "attributes", "expected"),
    [
        # RFC 2407 4.4.4 ESP_3DES (3) with AUTH_ALGORITHM HMAC-SHA (2): no KEY_LENGTH, 3DES has one size
        (3, _tek_attributes(_tv(5, 2)), TekTransform.ESP_3DES_SHA1),
        # the same with KEY_LENGTH 192, as some stacks send it
        (3, _tek_attributes(_tv(5, 2), _tv(6, 192)), TekTransform.ESP_3DES_SHA1),
        # RFC 3602 ESP_AES (12), KEY_LENGTH 192, RFC 4868 HMAC-SHA2-384 (6)
        (12, _tek_attributes(_tv(5, 6), _tv(6, 192)), TekTransform.ESP_AES192_SHA384),
        # RFC 2403 HMAC-MD5 (1) with AES-128
        (12, _tek_attributes(_tv(5, 1), _tv(6, 128)), TekTransform.ESP_AES128_MD5),
        # RFC 4106 8.4 ESP_AES_GCM_16 (20), KEY_LENGTH 192, no AUTH_ALGORITHM
        (20, _tek_attributes(_tv(6, 192)), TekTransform.ESP_GCM192),
    ],
)
def test_member_reads_more_ios_transforms(esp_id: int, attributes: bytes, expected: TekTransform) -> None:
    sat_bytes = bytes([1, 47]) + ANY + ANY + bytes([esp_id]) + (0x1234).to_bytes(4, "big") + attributes
    (sat,) = _gdoi_sa((16, sat_bytes)).payloads
    assert isinstance(sat, SaTekPayload)
    (tek,) = read_teks([sat])
    assert tek.transform is expected


@pytest.mark.parametrize(
    ("transform", "kernel"),
    [
        (TekTransform.ESP_3DES_SHA1, ["enc", "cbc(des3_ede)", "auth-trunc", "hmac(sha1)", "96"]),
        (TekTransform.ESP_3DES_SHA256, ["enc", "cbc(des3_ede)", "auth-trunc", "hmac(sha256)", "128"]),
        (TekTransform.ESP_AES192_SHA384, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha384)", "192"]),
        (TekTransform.ESP_AES256_SHA512, ["enc", "cbc(aes)", "auth-trunc", "hmac(sha512)", "256"]),
        (TekTransform.ESP_AES128_MD5, ["enc", "cbc(aes)", "auth-trunc", "hmac(md5)", "96"]),
        (TekTransform.ESP_GCM192, ["aead", "rfc4106(gcm(aes))", "128"]),
    ],
)
def test_new_transforms_map_to_linux_xfrm(transform: TekTransform, kernel: list[str]) -> None:
    spec = TRANSFORMS[transform]
    sa = TekSA(0x1234, transform, bytes(spec.enc_key_len), bytes(spec.int_key_len), (TrafficSelector(),), 60, 0.0)
    assert [a for a in algorithm_args(sa) if not a.startswith("0x")] == kernel


def test_deletes_of_unknown_spis_are_ignored_and_of_another_doi_refused() -> None:
    net = _registered()
    gm = net.gm(GM_ADDR)
    teks = gm.status(net.now).teks
    net.inject(_hand_push(net, 5, [_delete(1, bytes([0, 0, 0, 99]))]), (KS_ADDR, 848), GM_ADDR)
    assert gm.status(net.now).teks == teks and gm.status(net.now).rekeys_cumulative == 1
    protocol, body = _delete(1, teks[0].spi.to_bytes(4, "big"))
    ipsec_doi = (protocol, (1).to_bytes(4, "big") + body[4:])  # RFC 2407's DOI: not GDOI's delete
    net.inject(_hand_push(net, 6, [ipsec_doi]), (KS_ADDR, 848), GM_ADDR)
    assert gm.status(net.now).teks == teks and gm.status(net.now).rejected == {"bad-policy": 1}


def test_a_refused_push_deletes_nothing() -> None:
    """All or nothing with deletes: the Delete is fine, the new TEK has no keys."""
    net = _registered()
    gm = net.gm(GM_ADDR)
    (tek,) = gm.status(net.now).teks
    sa_without_kd = _new_tek_payloads(0x1234)[:1]
    payloads = [_delete(1, tek.spi.to_bytes(4, "big")), *sa_without_kd]
    n_events = len(net.events[GM_ADDR])
    net.inject(_hand_push(net, 5, payloads), (KS_ADDR, 848), GM_ADDR)
    assert gm.status(net.now).teks == (tek,) and gm.status(net.now).rejected == {"bad-policy": 1}
    (rejected,) = net.events[GM_ADDR][n_events:]
    assert isinstance(rejected, MessageRejected)
