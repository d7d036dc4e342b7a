"""Group policy <-> GDOI payloads: the SA (KEK + TEK policy, RFC 6407 5.1-5.4) and the KD (5.5).

Both the GROUPKEY-PULL (message 2 carries the SA, message 4 the KD) and the GROUPKEY-PUSH (SA and
KD together) describe the same things, so the key server builds them and the group member reads
them here:

* SA KEK (RFC 6407 section 5.3): the rekey SA.  Protocol UDP (17), source = the key server at its
  port (848 unless configured), destination = the multicast group (or 0.0.0.0 for unicast rekeys) at
  the same port, the 16-byte SPI, and the attributes KEK_ALGORITHM, KEK_KEY_LENGTH (which members
  default for 3DES), KEK_KEY_LIFETIME, SIG_HASH_ALGORITHM, SIG_ALGORITHM, SIG_KEY_LENGTH, plus
  KEK_ACK_REQUESTED when unicast members must acknowledge (RFC 8263 section 3).
* SA TEK (section 5.4.1, GDOI_PROTO_IPSEC_ESP): one payload per traffic selector (an ACL line):
  IP protocol, source and destination (ID_IPV4_ADDR for a host, ID_IPV4_ADDR_SUBNET otherwise; both
  are read), the ESP transform ID and SPI, then RFC 2407 attributes (SA life type/duration,
  encapsulation mode, authentication algorithm, key length).  An ACL ``deny`` line goes as one more SA
  TEK payload of the same SPI with the private attribute PRIVATE_CLEAR_TEXT_SELECTOR: the SA TEK is the
  only place RFC 6407 gives a selector, and it has no "bypass" of its own.
* KD (section 5.5): a TEK key packet per SPI (TEK_ALGORITHM_KEY and TEK_INTEGRITY_KEY; for AES-GCM
  the algorithm key is the key followed by the 4-byte salt, RFC 4106 section 8.1) and a KEK key packet
  (KEK_ALGORITHM_KEY, the IV then the key as section 5.5.2.1 says, and SIG_ALGORITHM_KEY, the key
  server's RSA public key).

Key sizes per transform: 3DES 24 bytes, AES-CBC 16/24/32, AES-GCM 16/24/32 + 4 bytes of salt and no
integrity key; HMAC keys are as long as their hash (MD5 16, SHA-1 20, SHA-256 32, SHA-384 48, SHA-512 64).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .codec import (
    Attribute,
    DecodeError,
    GdoiSaPayload,
    IdSpec,
    KdPayload,
    KeyPacket,
    SaKekPayload,
    SaTekPayload,
    find_attribute,
    tlv_int,
)
from .constants import (
    KEK_SPI_LEN,
    AuthAlgorithm,
    EncapsulationMode,
    EspTransformId,
    IdType,
    IpsecAttr,
    KdType,
    KekAckType,
    KekAlgorithm,
    KekAttr,
    KekKeyAttr,
    LifeType,
    SaTekProtocol,
    SigAlgorithm,
    SigHashAlgorithm,
    Situation,
    TekKeyAttr,
)
from .crypto import CryptoError, KekKey
from .model import GDOI_PORT, Phase1Cipher, TekTransform, TrafficSelector

UDP = 17


class PolicyError(ValueError):
    """The SA/KD describe something this engine cannot use; ``reason`` goes into MessageRejected."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TransformSpec:
    esp_id: EspTransformId
    key_bits: int | None
    auth: AuthAlgorithm | None
    enc_key_len: int  # bytes of TEK_ALGORITHM_KEY (salt included for GCM)
    int_key_len: int  # bytes of TEK_INTEGRITY_KEY


# IOS transform-set words -> what goes on the wire.  Ciphers: ESP transform ID (RFC 2407 section 4.4.4,
# RFC 3602, RFC 4106 section 8.4) and whether KEY_LENGTH is sent (not for fixed-length 3DES).
# Integrity: AUTH_ALGORITHM (RFC 2407 section 4.5, RFC 4868) and its key bytes (the hash length).
_ESP_CIPHERS: dict[str, EspTransformId] = {
    "esp-3des": EspTransformId.ESP_3DES,
    "esp-aes": EspTransformId.ESP_AES,
    "esp-gcm": EspTransformId.ESP_AES_GCM_16,
}
_ESP_INTEGRITY: dict[str, tuple[AuthAlgorithm, int]] = {
    "esp-md5-hmac": (AuthAlgorithm.HMAC_MD5, 16),
    "esp-sha-hmac": (AuthAlgorithm.HMAC_SHA, 20),
    "esp-sha256-hmac": (AuthAlgorithm.HMAC_SHA2_256, 32),
    "esp-sha384-hmac": (AuthAlgorithm.HMAC_SHA2_384, 48),
    "esp-sha512-hmac": (AuthAlgorithm.HMAC_SHA2_512, 64),
}


def _transform_spec(transform: TekTransform) -> TransformSpec:
    """Read ``esp-aes 256 esp-sha-hmac`` and the like (see :class:`TekTransform`)."""
    cipher, *rest = transform.value.split()
    bits = int(rest.pop(0)) if rest and rest[0].isdigit() else 128
    auth, int_key_len = _ESP_INTEGRITY[rest[0]] if rest else (None, 0)
    esp_id = _ESP_CIPHERS[cipher]
    if esp_id is EspTransformId.ESP_3DES:
        return TransformSpec(esp_id, None, auth, 24, int_key_len)  # three DES keys, parity included
    salt = 4 if esp_id is EspTransformId.ESP_AES_GCM_16 else 0  # RFC 4106 section 8.1
    return TransformSpec(esp_id, bits, auth, bits // 8 + salt, int_key_len)


TRANSFORMS: dict[TekTransform, TransformSpec] = {t: _transform_spec(t) for t in TekTransform}

KEK_CIPHERS: dict[Phase1Cipher, tuple[KekAlgorithm, int]] = {
    Phase1Cipher.TRIPLE_DES: (KekAlgorithm.TRIPLE_DES, 192),
    Phase1Cipher.AES_CBC_128: (KekAlgorithm.AES, 128),
    Phase1Cipher.AES_CBC_256: (KekAlgorithm.AES, 256),
}
# RFC 6407 section 5.3.4: KEK_KEY_LENGTH matters for ciphers of several key lengths (AES); members
# default it for the fixed-length ones.  3DES counts its parity bits: 192.
FIXED_KEK_KEY_BITS: dict[int, int] = {KekAlgorithm.TRIPLE_DES: 192}
SIG_HASHES: dict[str, SigHashAlgorithm] = {
    "md5": SigHashAlgorithm.MD5,
    "sha1": SigHashAlgorithm.SHA1,
    "sha256": SigHashAlgorithm.SHA256,
}
# How IOS names the signature hash in "show crypto gdoi" (KEK POLICY / Sig Hash Algorithm).
SIG_HASH_IOS_NAMES = {"sha1": "HMAC_AUTH_SHA", "sha256": "HMAC_AUTH_SHA256", "md5": "HMAC_AUTH_MD5"}


@dataclass(frozen=True)
class KekPolicy:
    """The rekey SA as it is announced (``lifetime_s`` is what remains when the message is built)."""

    spi: bytes
    key: KekKey
    lifetime_s: int
    sig_hash: str  # "sha256", "sha1" or "md5"
    sig_key_bits: int
    public_key_der: bytes
    source: str  # key server address
    destination: str  # multicast group, or 0.0.0.0 for unicast rekeys
    ack_requested: bool
    port: int  # the key server's UDP port: rekeys come from it and go to it (section 5.3)


@dataclass(frozen=True)
class TekPolicy:
    spi: int
    transform: TekTransform
    encryption_key: bytes
    integrity_key: bytes
    selectors: tuple[TrafficSelector, ...]
    lifetime_s: int
    replay_time_window_s: int | None


def _selector_id(cidr: str) -> IdSpec:
    """RFC 2407 section 4.6.2.1 has a type for a single address: a /32 goes as ID_IPV4_ADDR, as deployed
    stacks send hosts; anything wider as ID_IPV4_ADDR_SUBNET.  :func:`_cidr_of` reads both."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return IdSpec(IdType.IPV4_ADDR, 0, net.network_address.packed)
    return IdSpec(IdType.IPV4_ADDR_SUBNET, 0, net.network_address.packed + net.netmask.packed)


def _cidr_of(spec: IdSpec) -> str:
    try:
        if spec.id_type == IdType.IPV4_ADDR_SUBNET and len(spec.data) == 8:
            addr = ipaddress.IPv4Address(spec.data[:4])
            mask = ipaddress.IPv4Address(spec.data[4:])
            return str(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
        if spec.id_type == IdType.IPV4_ADDR and len(spec.data) == 4:
            return f"{ipaddress.IPv4Address(spec.data)}/32"
    except ValueError as exc:
        raise PolicyError("bad-policy", f"SA TEK selector {spec.data.hex()}: {exc}") from exc
    raise PolicyError("bad-policy", f"SA TEK selector of ID type {spec.id_type} is not supported")


def _addr_id(address: str, port: int) -> IdSpec:
    return IdSpec(IdType.IPV4_ADDR, port, ipaddress.IPv4Address(address).packed)


def sa_kek_payload(kek: KekPolicy) -> SaKekPayload:
    alg, bits = KEK_CIPHERS[kek.key.cipher]
    attrs = [
        Attribute(KekAttr.KEK_ALGORITHM, alg),
        Attribute(KekAttr.KEK_KEY_LENGTH, bits),
        tlv_int(KekAttr.KEK_KEY_LIFETIME, max(0, kek.lifetime_s)),
        Attribute(KekAttr.SIG_HASH_ALGORITHM, SIG_HASHES[kek.sig_hash]),
        Attribute(KekAttr.SIG_ALGORITHM, SigAlgorithm.RSA),
        Attribute(KekAttr.SIG_KEY_LENGTH, kek.sig_key_bits),
    ]
    if kek.ack_requested:
        attrs.append(Attribute(KekAttr.KEK_ACK_REQUESTED, KekAckType.CUMULATIVE))
    return SaKekPayload(
        UDP, _addr_id(kek.source, kek.port), _addr_id(kek.destination, kek.port), kek.spi, tuple(attrs)
    )


def sa_tek_payloads(tek: TekPolicy) -> list[SaTekPayload]:
    spec = TRANSFORMS[tek.transform]
    attrs = [
        Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
        tlv_int(IpsecAttr.SA_LIFE_DURATION, max(0, tek.lifetime_s)),
        Attribute(IpsecAttr.ENCAPSULATION_MODE, EncapsulationMode.TRANSPORT),
    ]
    if spec.auth is not None:
        attrs.append(Attribute(IpsecAttr.AUTH_ALGORITHM, spec.auth))
    if spec.key_bits is not None:
        attrs.append(Attribute(IpsecAttr.KEY_LENGTH, spec.key_bits))
    if tek.replay_time_window_s is not None:
        attrs.append(Attribute(IpsecAttr.PRIVATE_TIME_REPLAY_WINDOW, tek.replay_time_window_s))
    clear_text = Attribute(IpsecAttr.PRIVATE_CLEAR_TEXT_SELECTOR, 1)
    return [
        SaTekPayload(
            SaTekProtocol.IPSEC_ESP,
            sel.protocol,
            _selector_id(sel.source),
            _selector_id(sel.destination),
            spec.esp_id,
            tek.spi,
            tuple(attrs) if sel.permit else (*attrs, clear_text),
        )
        for sel in tek.selectors
    ]


def sa_payload(kek: KekPolicy | None, teks: Sequence[TekPolicy]) -> GdoiSaPayload:
    subs: list[SaKekPayload | SaTekPayload] = []
    if kek is not None:
        subs.append(sa_kek_payload(kek))
    for tek in teks:
        subs.extend(sa_tek_payloads(tek))
    return GdoiSaPayload(Situation.NONE, tuple(subs))


def kd_payload(kek: KekPolicy | None, teks: Sequence[TekPolicy]) -> KdPayload:
    packets: list[KeyPacket] = []
    for tek in teks:
        attrs = [Attribute(TekKeyAttr.TEK_ALGORITHM_KEY, tek.encryption_key)]
        if tek.integrity_key:
            attrs.append(Attribute(TekKeyAttr.TEK_INTEGRITY_KEY, tek.integrity_key))
        packets.append(KeyPacket(KdType.TEK, tek.spi.to_bytes(4, "big"), tuple(attrs)))
    if kek is not None:
        packets.append(
            KeyPacket(
                KdType.KEK,
                kek.spi,
                (
                    Attribute(KekKeyAttr.KEK_ALGORITHM_KEY, kek.key.download()),
                    Attribute(KekKeyAttr.SIG_ALGORITHM_KEY, kek.public_key_der),
                ),
            )
        )
    return KdPayload(tuple(packets))


# --- Reading a policy (group member side) -------------------------------------------------------------


@dataclass(frozen=True)
class KekAnnouncement:
    """An SA KEK as read from the wire, before its keys arrive in a KD."""

    spi: bytes
    cipher: Phase1Cipher
    lifetime_s: int
    sig_hash: str
    sig_key_bits: int
    destination: str
    ack_requested: bool
    port: int  # the destination port: where multicast rekeys arrive


@dataclass(frozen=True)
class TekAnnouncement:
    spi: int
    transform: TekTransform
    selectors: tuple[TrafficSelector, ...]
    lifetime_s: int
    replay_time_window_s: int | None


def _int_attr(attrs: Sequence[Attribute], t: int, what: str) -> int:
    a = find_attribute(attrs, t)
    if a is None:
        raise PolicyError("bad-policy", f"{what}: attribute {t} missing")
    try:
        return a.as_int()
    except DecodeError as exc:
        raise PolicyError("bad-policy", f"{what}: {exc}") from exc


def read_kek(sak: SaKekPayload) -> KekAnnouncement:
    what = "SA KEK"
    if len(sak.spi) != KEK_SPI_LEN:
        raise PolicyError("bad-policy", f"{what}: SPI of {len(sak.spi)} bytes")
    alg = _int_attr(sak.attributes, KekAttr.KEK_ALGORITHM, what)
    if find_attribute(sak.attributes, KekAttr.KEK_KEY_LENGTH) is None and alg in FIXED_KEK_KEY_BITS:
        bits = FIXED_KEK_KEY_BITS[alg]  # a fixed-length cipher needs no length, and some stacks omit it
    else:
        bits = _int_attr(sak.attributes, KekAttr.KEK_KEY_LENGTH, what)
    cipher = next((c for c, v in KEK_CIPHERS.items() if v == (alg, bits)), None)
    if cipher is None:
        raise PolicyError("bad-policy", f"{what}: KEK algorithm {alg}/{bits} bits not supported")
    lifetime = _int_attr(sak.attributes, KekAttr.KEK_KEY_LIFETIME, what)
    hash_v = _int_attr(sak.attributes, KekAttr.SIG_HASH_ALGORITHM, what)
    sig_hash = next((n for n, v in SIG_HASHES.items() if v == hash_v), None)
    if sig_hash is None:
        raise PolicyError("bad-policy", f"{what}: signature hash {hash_v} not supported")
    if _int_attr(sak.attributes, KekAttr.SIG_ALGORITHM, what) != SigAlgorithm.RSA:
        raise PolicyError("bad-policy", f"{what}: only RSA signatures are supported")
    key_bits = _int_attr(sak.attributes, KekAttr.SIG_KEY_LENGTH, what)
    ack = find_attribute(sak.attributes, KekAttr.KEK_ACK_REQUESTED)
    if sak.dst.id_type != IdType.IPV4_ADDR or len(sak.dst.data) != 4:
        raise PolicyError("bad-policy", f"{what}: destination must be an IPv4 address")
    dest = str(ipaddress.IPv4Address(sak.dst.data))
    port = sak.dst.port or GDOI_PORT  # RFC 2407 section 4.6.2: port 0 means "any"; GDOI's own is 848
    return KekAnnouncement(sak.spi, cipher, lifetime, sig_hash, key_bits, dest, ack is not None, port)


def read_teks(teks: Sequence[SaTekPayload]) -> list[TekAnnouncement]:
    """Group SA TEK payloads by SPI (one payload per selector) into announcements."""
    by_spi: dict[int, TekAnnouncement] = {}
    for sat in teks:
        what = f"SA TEK spi {sat.spi:#x}"
        if sat.protocol_id != SaTekProtocol.IPSEC_ESP:
            raise PolicyError("bad-policy", f"{what}: only ESP is supported")
        auth_a = find_attribute(sat.attributes, IpsecAttr.AUTH_ALGORITHM)
        keylen_a = find_attribute(sat.attributes, IpsecAttr.KEY_LENGTH)
        auth = auth_a.as_int() if auth_a is not None else None
        keylen = keylen_a.as_int() if keylen_a is not None else None
        if sat.transform_id == EspTransformId.ESP_3DES and keylen == 192:
            keylen = None  # some stacks name 3DES's one key length; RFC 2407 section 4.5 needs none
        transform = next(
            (
                t
                for t, s in TRANSFORMS.items()
                if (s.esp_id, s.key_bits, s.auth) == (sat.transform_id, keylen, auth)
            ),
            None,
        )
        if transform is None:
            raise PolicyError(
                "bad-policy", f"{what}: transform {sat.transform_id}/{keylen}/{auth} not supported"
            )
        life_type = find_attribute(sat.attributes, IpsecAttr.SA_LIFE_TYPE)
        if life_type is None or life_type.as_int() != LifeType.SECONDS:
            raise PolicyError("bad-policy", f"{what}: lifetime in seconds missing")
        lifetime = _int_attr(sat.attributes, IpsecAttr.SA_LIFE_DURATION, what)
        replay_a = find_attribute(sat.attributes, IpsecAttr.PRIVATE_TIME_REPLAY_WINDOW)
        replay = replay_a.as_int() if replay_a is not None else None
        clear_text = find_attribute(sat.attributes, IpsecAttr.PRIVATE_CLEAR_TEXT_SELECTOR)
        permit = clear_text is None or _int_attr(sat.attributes, IpsecAttr.PRIVATE_CLEAR_TEXT_SELECTOR, what) == 0
        selector = TrafficSelector(sat.ip_protocol, _cidr_of(sat.src), _cidr_of(sat.dst), permit)
        prev = by_spi.get(sat.spi)
        if prev is None:
            by_spi[sat.spi] = TekAnnouncement(sat.spi, transform, (selector,), lifetime, replay)
        else:
            if prev.transform is not transform:
                raise PolicyError("bad-policy", f"{what}: two transforms for one SPI")
            by_spi[sat.spi] = TekAnnouncement(
                sat.spi, transform, (*prev.selectors, selector), min(prev.lifetime_s, lifetime), replay
            )
    return list(by_spi.values())


def read_sa(sa: GdoiSaPayload) -> tuple[KekAnnouncement | None, list[TekAnnouncement]]:
    """The SA KEK (at most one, RFC 6407 section 5.3) and the SA TEKs of a GDOI SA payload."""
    keks = [p for p in sa.payloads if isinstance(p, SaKekPayload)]
    if len(keks) > 1:
        raise PolicyError("bad-policy", "more than one SA KEK")
    kek = read_kek(keks[0]) if keks else None
    teks = read_teks([p for p in sa.payloads if isinstance(p, SaTekPayload)])
    return kek, teks


@dataclass(frozen=True)
class KekKeys:
    key: KekKey
    public_key_der: bytes


def read_kd(
    kd: KdPayload, teks: Sequence[TekAnnouncement], kek: KekAnnouncement | None
) -> tuple[dict[int, tuple[bytes, bytes]], KekKeys | None]:
    """Match key packets to the announced SAs; check key sizes.  Returns TEK keys by SPI, KEK keys."""
    tek_keys: dict[int, tuple[bytes, bytes]] = {}
    kek_keys: KekKeys | None = None
    wanted = {t.spi: t for t in teks}
    for pkt in kd.packets:
        if pkt.kd_type == KdType.TEK:
            if len(pkt.spi) != 4:
                raise PolicyError("bad-policy", "TEK key packet with an SPI that is not 4 bytes")
            spi = int.from_bytes(pkt.spi, "big")
            ann = wanted.get(spi)
            if ann is None:
                raise PolicyError("bad-policy", f"TEK key packet for unannounced SPI {spi:#x}")
            spec = TRANSFORMS[ann.transform]
            enc = find_attribute(pkt.attributes, TekKeyAttr.TEK_ALGORITHM_KEY)
            integ = find_attribute(pkt.attributes, TekKeyAttr.TEK_INTEGRITY_KEY)
            enc_b = enc.as_bytes() if enc is not None else b""
            int_b = integ.as_bytes() if integ is not None else b""
            if len(enc_b) != spec.enc_key_len or len(int_b) != spec.int_key_len:
                raise PolicyError(
                    "bad-policy",
                    f"TEK {spi:#x}: key sizes {len(enc_b)}/{len(int_b)} do not fit {ann.transform.value}",
                )
            tek_keys[spi] = (enc_b, int_b)
        elif pkt.kd_type == KdType.KEK:
            if kek is None or pkt.spi != kek.spi:
                raise PolicyError("bad-policy", "KEK key packet for an SPI the SA KEK did not announce")
            k = find_attribute(pkt.attributes, KekKeyAttr.KEK_ALGORITHM_KEY)
            sig = find_attribute(pkt.attributes, KekKeyAttr.SIG_ALGORITHM_KEY)
            if k is None or sig is None:
                raise PolicyError("bad-policy", "KEK key packet lacks the KEK or the signature key")
            try:
                kek_keys = KekKeys(KekKey.from_download(kek.cipher, k.as_bytes()), sig.as_bytes())
            except CryptoError as exc:
                raise PolicyError("bad-policy", f"KEK key packet: {exc}") from exc
        else:
            raise PolicyError("bad-policy", f"key packet type {pkt.kd_type} is not supported")
    missing = set(wanted) - set(tek_keys)
    if missing:
        raise PolicyError(
            "bad-policy", f"no keys for TEK SPI(s) {', '.join(hex(s) for s in sorted(missing))}"
        )
    return tek_keys, kek_keys
