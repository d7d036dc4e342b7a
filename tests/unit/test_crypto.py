"""IKEv1/GDOI cryptography: known answers, independent recomputation, DH agreement, padding."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from engine_harness import rsa_key, seeded_random

from dmvpn_lab.gdoi.crypto import (
    CryptoError,
    cbc_decrypt,
    cbc_encrypt,
    derive_phase1_psk,
    dh_generate,
    dh_shared,
    expand_key,
    hash_i,
    hash_r,
    ikev1_pad,
    ke_len,
    kek_decrypt,
    kek_encrypt,
    phase2_iv,
    prf,
    rsa_public_der,
    rsa_public_from_der,
    rsa_sign,
    rsa_verify,
)
from dmvpn_lab.gdoi.model import DhGroup, Phase1Cipher, Phase1Hash


@pytest.mark.parametrize(
    ("alg", "expected"),
    [  # RFC 4231 test case 2 / RFC 2202 test cases 2 ("Jefe")
        (Phase1Hash.SHA256, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (Phase1Hash.SHA1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (Phase1Hash.MD5, "750c783e6ab0b503eaa86e310a5db738"),
    ],
)
def test_prf_known_answers(alg: Phase1Hash, expected: str) -> None:
    assert prf(alg, b"Jefe", b"what do ya want for nothing?").hex() == expected


def test_aes_cbc_known_answer() -> None:
    # NIST SP 800-38A F.2.1 CBC-AES128.Encrypt, first block (aligned: IKEv1 padding adds nothing)
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    pt = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert cbc_encrypt(Phase1Cipher.AES_CBC_128, key, iv, pt).hex() == "7649abac8119b246cee98e9b12e9197d"


@pytest.mark.parametrize("cipher", list(Phase1Cipher))
@pytest.mark.parametrize("size", [0, 1, 7, 8, 15, 16, 17, 100])
def test_cbc_padding_and_round_trip(cipher: Phase1Cipher, size: int) -> None:
    block = 8 if cipher is Phase1Cipher.TRIPLE_DES else 16
    key = bytes(
        range(
            {Phase1Cipher.TRIPLE_DES: 24, Phase1Cipher.AES_CBC_128: 16, Phase1Cipher.AES_CBC_256: 32}[cipher]
        )
    )
    data = bytes(range(size))
    padded = ikev1_pad(data, block)
    assert len(padded) % block == 0 and padded.startswith(data) and len(padded) - size < block
    if len(padded) > size:
        assert padded[-1] == len(padded) - size
    if size == 0:
        return
    ct = cbc_encrypt(cipher, key, b"\x01" * block, data)
    assert cbc_decrypt(cipher, key, b"\x01" * block, ct) == padded
    with pytest.raises(CryptoError):
        cbc_decrypt(cipher, key, b"\x01" * block, ct[:-1])


def test_phase1_derivation_matches_an_independent_computation() -> None:
    h = hashlib.sha1
    psk, ni, nr, gxy = b"cisco", b"n" * 16, b"r" * 16, b"\x07" * 128
    ci, cr, gxi, gxr = b"I" * 8, b"R" * 8, b"\x02" * 128, b"\x03" * 128
    keys = derive_phase1_psk(Phase1Hash.SHA1, Phase1Cipher.TRIPLE_DES, psk, ni, nr, gxy, ci, cr, gxi, gxr)
    skeyid = hmac.new(psk, ni + nr, h).digest()
    d = hmac.new(skeyid, gxy + ci + cr + b"\0", h).digest()
    a = hmac.new(skeyid, d + gxy + ci + cr + b"\1", h).digest()
    e = hmac.new(skeyid, a + gxy + ci + cr + b"\2", h).digest()
    k1 = hmac.new(e, b"\0", h).digest()
    k2 = hmac.new(e, k1, h).digest()
    assert (keys.skeyid, keys.skeyid_d, keys.skeyid_a, keys.skeyid_e) == (skeyid, d, a, e)
    assert keys.enc_key == (k1 + k2)[:24]  # RFC 2409 appendix B: 20-byte SKEYID_e expanded for 3DES
    assert keys.initial_iv == h(gxi + gxr).digest()[:8]
    assert expand_key(Phase1Hash.SHA256, b"x" * 32, 32) == b"x" * 32
    sai, idii = b"SA-body", b"\x01\x00\x00\x00\x7f\x00\x00\x0b"
    assert (
        hash_i(Phase1Hash.SHA1, skeyid, gxi, gxr, ci, cr, sai, idii)
        == hmac.new(skeyid, gxi + gxr + ci + cr + sai + idii, h).digest()
    )
    assert (
        hash_r(Phase1Hash.SHA1, skeyid, gxi, gxr, ci, cr, sai, idii)
        == hmac.new(skeyid, gxr + gxi + cr + ci + sai + idii, h).digest()
    )
    last = b"\x09" * 8
    assert (
        phase2_iv(Phase1Hash.SHA1, Phase1Cipher.TRIPLE_DES, last, 0x01020304)
        == h(last + bytes([1, 2, 3, 4])).digest()[:8]
    )


@pytest.mark.parametrize("group", list(DhGroup))
def test_dh_agreement(group: DhGroup) -> None:
    a = dh_generate(group, seeded_random(1))
    b = dh_generate(group, seeded_random(2))
    assert len(a.public) == ke_len(group) == {2: 128, 14: 256, 19: 64}[int(group)]
    shared = dh_shared(a, b.public)
    assert shared == dh_shared(b, a.public)
    if group is DhGroup.ECP_256:
        assert len(shared) == 32  # RFC 5903: only x goes into g^xy
    else:
        assert len(shared) == ke_len(group)  # g^xy keeps its leading zeros (length of the prime)
    with pytest.raises(CryptoError):
        dh_shared(a, b"\x00" * ke_len(group))


def test_modp_shared_secret_independently() -> None:
    from dmvpn_lab.gdoi.crypto import _MODP_PRIMES

    p = _MODP_PRIMES[DhGroup.MODP_1024]
    a = dh_generate(DhGroup.MODP_1024, seeded_random(3))
    b = dh_generate(DhGroup.MODP_1024, seeded_random(4))
    assert int.from_bytes(a.public, "big") == pow(2, a.private, p)
    assert dh_shared(a, b.public) == pow(2, a.private * b.private, p).to_bytes(128, "big")


def test_rsa_signature_and_public_key_transport() -> None:
    key = rsa_key()
    other = rsa_key(seed=1, bits=1024 + 64)
    pub = rsa_public_from_der(rsa_public_der(key.public_key()))
    for hash_name in ("sha256", "sha1"):
        sig = rsa_sign(key, hash_name, b"rekey|message")
        assert len(sig) == 128
        assert rsa_verify(pub, hash_name, sig, b"rekey|message")
        assert not rsa_verify(pub, hash_name, sig, b"rekey|messagE")
        assert not rsa_verify(other.public_key(), hash_name, sig, b"rekey|message")
    with pytest.raises(CryptoError):
        rsa_public_from_der(b"\x30\x03\x02\x01\x00")


@pytest.mark.parametrize("cipher", list(Phase1Cipher))
def test_kek_protection_round_trip(cipher: Phase1Cipher) -> None:
    block = 8 if cipher is Phase1Cipher.TRIPLE_DES else 16
    key = bytes(
        range(
            {Phase1Cipher.TRIPLE_DES: 24, Phase1Cipher.AES_CBC_128: 16, Phase1Cipher.AES_CBC_256: 32}[cipher]
        )
    )
    body = kek_encrypt(cipher, key, b"\x05" * block, b"payloads")
    assert body[:block] == b"\x05" * block
    assert kek_decrypt(cipher, key, body).startswith(b"payloads")
    with pytest.raises(CryptoError):
        kek_decrypt(cipher, key, body[:block])


def test_modp_shared_secret_matches_the_library_while_it_has_finite_field_dh():
    # cryptography deprecates finite-field DH; our pow() path must give the library's exact bytes.
    import warnings

    from dmvpn_lab.gdoi.crypto import _MODP_PRIMES, dh_generate, dh_shared, modp_shared
    from dmvpn_lab.gdoi.model import DhGroup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dh = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.dh")
    for group in (DhGroup.MODP_1024, DhGroup.MODP_2048):
        prime = _MODP_PRIMES[group]
        a = dh_generate(group, lambda n, g=group: bytes([int(g)] * n))
        b = dh_generate(group, lambda n: bytes(range(n)))
        params = dh.DHParameterNumbers(prime, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mine = dh.DHPrivateNumbers(a.private, dh.DHPublicNumbers(pow(2, a.private, prime), params)).private_key()
            theirs = dh.DHPublicNumbers(int.from_bytes(b.public, "big"), params).public_key()
            library = mine.exchange(theirs).rjust(len(a.public), b"\x00")
        assert dh_shared(a, b.public) == library == dh_shared(b, a.public)
        assert modp_shared(a.private, int.from_bytes(b.public, "big"), prime) == int.from_bytes(library, "big")
