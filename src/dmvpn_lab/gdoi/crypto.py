"""The cryptography of IKEv1 phase 1 (RFC 2409) and of GDOI (RFC 6407), built on ``cryptography``.

Nothing here implements a primitive: HMAC, hashes, AES, 3DES, DH, ECDH and RSA all come from the
``cryptography`` package.  This module only arranges them the way the RFCs say:

* PRF and hashes (RFC 2409 section 5, appendix A): the PRF is the HMAC of the negotiated hash.
* Pre-shared key keying material (RFC 2409 section 5):
  ``SKEYID = prf(pre-shared-key, Ni_b | Nr_b)`` and ``SKEYID_d``, ``SKEYID_a``, ``SKEYID_e`` chained
  from it with ``g^xy`` and the cookies; appendix B expands ``SKEYID_e`` when the cipher needs a
  longer key (``K1 = prf(SKEYID_e, 0)``, ``K2 = prf(SKEYID_e, K1)``, ...).
* IVs (RFC 2409 appendix B): the phase 1 IV is ``hash(g^xi | g^xr)``; each message then chains
  from the last cipher block of the previous one; a new exchange with message ID ``M-ID`` starts
  from ``hash(last phase-1 CBC block | M-ID)``.
* ``HASH_I``/``HASH_R`` (RFC 2409 section 5): the Main Mode authenticators.
* Diffie-Hellman: MODP-1024 (group 2, RFC 2409 section 6.2), MODP-2048 (group 14, RFC 3526
  section 3) and ECP-256 (group 19, RFC 5903; KE data is ``x | y``, the shared secret is ``x``).
* CBC encryption with IKEv1 padding (RFC 2409 section 5.3 leaves the pad bytes open; we write zeros
  with the pad count in the last byte, and rely on the payload chain, not the padding, to find the end).
* The GROUPKEY-PUSH protection (RFC 6407 section 4): CBC under the KEK with the IV that came with it
  (:class:`KekKey`), and an RSA PKCS#1 v1.5 signature with the hash the KEK policy names, over
  ``"rekey" | HDR | payloads before SIG`` (:func:`rekey_signed_bytes`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .constants import ISAKMP_HEADER_LEN, REKEY_SIGNATURE_PREFIX
from .model import DhGroup, Phase1Cipher, Phase1Hash

RandomFn = Callable[[int], bytes]


class CryptoError(ValueError):
    """A cryptographic check failed or an input has the wrong size."""


# --- Hashes and the PRF ----------------------------------------------------------------------------

_HASHLIB_NAME = {Phase1Hash.SHA256: "sha256", Phase1Hash.SHA1: "sha1", Phase1Hash.MD5: "md5"}


def hash_len(alg: Phase1Hash) -> int:
    return hashlib.new(_HASHLIB_NAME[alg]).digest_size


def digest(alg: Phase1Hash, data: bytes) -> bytes:
    return hashlib.new(_HASHLIB_NAME[alg], data).digest()


def prf(alg: Phase1Hash, key: bytes, data: bytes) -> bytes:
    """RFC 2409 section 3.2/4: the negotiated PRF is HMAC with the negotiated hash (RFC 2104)."""
    return hmac.new(key, data, _HASHLIB_NAME[alg]).digest()


# --- Block ciphers -----------------------------------------------------------------------------------

_CIPHER_KEY_LEN = {Phase1Cipher.AES_CBC_128: 16, Phase1Cipher.AES_CBC_256: 32, Phase1Cipher.TRIPLE_DES: 24}


def cipher_key_len(cipher: Phase1Cipher) -> int:
    return _CIPHER_KEY_LEN[cipher]


def cipher_block_len(cipher: Phase1Cipher) -> int:
    return 8 if cipher is Phase1Cipher.TRIPLE_DES else 16


def _cbc(cipher: Phase1Cipher, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    if len(key) != cipher_key_len(cipher) or len(iv) != cipher_block_len(cipher):
        raise CryptoError(f"{cipher.value}: key {len(key)} bytes / IV {len(iv)} bytes have the wrong size")
    algo = TripleDES(key) if cipher is Phase1Cipher.TRIPLE_DES else algorithms.AES(key)
    return Cipher(algo, modes.CBC(iv))


def ikev1_pad(data: bytes, block: int) -> bytes:
    """Pad to a block multiple: zeros, the last byte counting the pad bytes (none when aligned)."""
    n = (-len(data)) % block
    if n == 0:
        return data
    return data + b"\x00" * (n - 1) + bytes([n])


def cbc_encrypt(cipher: Phase1Cipher, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """CBC-encrypt ``plaintext`` after IKEv1 padding."""
    enc = _cbc(cipher, key, iv).encryptor()
    return enc.update(ikev1_pad(plaintext, cipher_block_len(cipher))) + enc.finalize()


def cbc_decrypt(cipher: Phase1Cipher, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """CBC-decrypt; the padding stays (the payload chain says where the payloads end)."""
    block = cipher_block_len(cipher)
    if not ciphertext or len(ciphertext) % block:
        raise CryptoError(f"ciphertext of {len(ciphertext)} bytes is not a positive multiple of {block}")
    dec = _cbc(cipher, key, iv).decryptor()
    return dec.update(ciphertext) + dec.finalize()


# --- Diffie-Hellman ----------------------------------------------------------------------------------

# RFC 2409 section 6.2 (Second Oakley Group) and RFC 3526 section 3 (2048-bit MODP group); generator 2.
_MODP_PRIMES = {
    DhGroup.MODP_1024: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
        "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
        16,
    ),
    DhGroup.MODP_2048: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
        "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
        "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
        "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
        16,
    ),
}


def ke_len(group: DhGroup) -> int:
    """Length of the KE payload data: the prime's length (MODP) or 2 x 32 bytes (ECP-256)."""
    if group is DhGroup.ECP_256:
        return 64
    return (_MODP_PRIMES[group].bit_length() + 7) // 8


@dataclass(frozen=True)
class DhKeyPair:
    group: DhGroup
    private: int
    public: bytes  # KE payload data


def dh_generate(group: DhGroup, random: RandomFn) -> DhKeyPair:
    """A fresh key pair whose private value comes from ``random`` (so engines stay deterministic)."""
    if group is DhGroup.ECP_256:
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        d = int.from_bytes(random(40), "big") % (order - 1) + 1
        key = ec.derive_private_key(d, ec.SECP256R1())
        nums = key.public_key().public_numbers()
        return DhKeyPair(group, d, nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big"))
    p = _MODP_PRIMES[group]
    x = int.from_bytes(random(32), "big") | (1 << 255)  # 256-bit exponent (RFC 3526 section 8 sizes)
    return DhKeyPair(group, x, pow(2, x, p).to_bytes(ke_len(group), "big"))


def dh_shared(pair: DhKeyPair, peer_public: bytes) -> bytes:
    """``g^xy`` as IKEv1 uses it; raises CryptoError on a bad peer value."""
    if len(peer_public) != ke_len(pair.group):
        raise CryptoError(
            f"KE data is {len(peer_public)} bytes, group {int(pair.group)} needs {ke_len(pair.group)}"
        )
    try:
        if pair.group is DhGroup.ECP_256:
            x = int.from_bytes(peer_public[:32], "big")
            y = int.from_bytes(peer_public[32:], "big")
            peer = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            priv = ec.derive_private_key(pair.private, ec.SECP256R1())
            return priv.exchange(ec.ECDH(), peer)  # RFC 5903 section 7: the x coordinate
        p = _MODP_PRIMES[pair.group]
        y_peer = int.from_bytes(peer_public, "big")
        if not 1 < y_peer < p - 1:
            raise CryptoError("peer DH public value out of range")
        return modp_shared(pair.private, y_peer, p).to_bytes(ke_len(pair.group), "big")
    except CryptoError:
        raise
    except ValueError as exc:  # invalid curve point, bad DH value
        raise CryptoError(f"bad peer key exchange value: {exc}") from exc


def modp_shared(private: int, peer_public: int, prime: int) -> int:
    """``peer_public ^ private mod prime``: the MODP shared secret of RFC 2409 section 5.

    cryptography has deprecated finite-field Diffie-Hellman and will remove it, while IKEv1's groups 2, 5
    and 14 (RFC 2409 section 6, RFC 3526) are MODP groups.  The computation is one modular
    exponentiation, which Python's ``pow`` does exactly; the unit tests check it against the library's
    own result for as long as the library still has it.  (Not constant-time: this is a lab's key server.)
    """
    return pow(peer_public, private, prime)


# --- IKEv1 phase 1 keying material (RFC 2409 section 5 and appendix B) ------------------------------


@dataclass(frozen=True)
class Phase1Keys:
    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes
    enc_key: bytes  # SKEYID_e expanded/truncated to the cipher key length (what Wireshark's table wants)
    initial_iv: bytes  # hash(g^xi | g^xr) truncated to the block length


def expand_key(alg: Phase1Hash, skeyid_e: bytes, length: int) -> bytes:
    """RFC 2409 appendix B: Ka = K1 | K2 | ... with K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1)."""
    if len(skeyid_e) >= length:
        return skeyid_e[:length]
    out = b""
    k = prf(alg, skeyid_e, b"\x00")
    while True:
        out += k
        if len(out) >= length:
            return out[:length]
        k = prf(alg, skeyid_e, k)


def derive_phase1_psk(
    alg: Phase1Hash,
    cipher: Phase1Cipher,
    psk: bytes,
    ni_b: bytes,
    nr_b: bytes,
    g_xy: bytes,
    cky_i: bytes,
    cky_r: bytes,
    g_xi: bytes,
    g_xr: bytes,
) -> Phase1Keys:
    """All keying material of a pre-shared-key Main Mode (RFC 2409 section 5)."""
    skeyid = prf(alg, psk, ni_b + nr_b)
    skeyid_d = prf(alg, skeyid, g_xy + cky_i + cky_r + b"\x00")
    skeyid_a = prf(alg, skeyid, skeyid_d + g_xy + cky_i + cky_r + b"\x01")
    skeyid_e = prf(alg, skeyid, skeyid_a + g_xy + cky_i + cky_r + b"\x02")
    enc_key = expand_key(alg, skeyid_e, cipher_key_len(cipher))
    iv = digest(alg, g_xi + g_xr)[: cipher_block_len(cipher)]
    return Phase1Keys(skeyid, skeyid_d, skeyid_a, skeyid_e, enc_key, iv)


def hash_i(
    alg: Phase1Hash,
    skeyid: bytes,
    g_xi: bytes,
    g_xr: bytes,
    cky_i: bytes,
    cky_r: bytes,
    sai_b: bytes,
    idii_b: bytes,
) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b) (RFC 2409 section 5)."""
    return prf(alg, skeyid, g_xi + g_xr + cky_i + cky_r + sai_b + idii_b)


def hash_r(
    alg: Phase1Hash,
    skeyid: bytes,
    g_xi: bytes,
    g_xr: bytes,
    cky_i: bytes,
    cky_r: bytes,
    sai_b: bytes,
    idir_b: bytes,
) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b) (RFC 2409 section 5)."""
    return prf(alg, skeyid, g_xr + g_xi + cky_r + cky_i + sai_b + idir_b)


def phase2_iv(alg: Phase1Hash, cipher: Phase1Cipher, last_phase1_block: bytes, message_id: int) -> bytes:
    """RFC 2409 appendix B: IV of a new exchange = hash(last phase-1 CBC block | M-ID)."""
    return digest(alg, last_phase1_block + message_id.to_bytes(4, "big"))[: cipher_block_len(cipher)]


# --- GDOI: KEK protection and the rekey signature (RFC 6407 section 4) --------------------------------

_SIG_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha1": hashes.SHA1,
    "md5": hashes.MD5,
}


def kek_encrypt(cipher: Phase1Cipher, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """Encrypt a GROUPKEY-PUSH/ACK body under a KEK downloaded without IV: the IV goes in front."""
    return iv + cbc_encrypt(cipher, key, iv, plaintext)


def kek_decrypt(cipher: Phase1Cipher, key: bytes, data: bytes) -> bytes:
    block = cipher_block_len(cipher)
    if len(data) < 2 * block:
        raise CryptoError(f"KEK-encrypted body of {len(data)} bytes is shorter than IV plus one block")
    return cbc_decrypt(cipher, key, data[:block], data[block:])


@dataclass(frozen=True)
class KekKey:
    """A KEK and the way GROUPKEY-PUSH and acknowledgement bodies are encrypted under it.

    RFC 6407 section 5.5.2.1: when the cipher mode needs an IV (CBC does), KEK_ALGORITHM_KEY carries
    the IV in front of the key, and each message under that KEK is encrypted with that IV, its
    ciphertext right after the ISAKMP header.  This is what the key server sends.  Other stacks (and this
    project's earlier key servers) send the bare key and put a fresh IV in front of every ciphertext
    instead (``iv`` None);
    members accept both, told apart by the attribute's length for the algorithm.
    """

    cipher: Phase1Cipher
    key: bytes
    iv: bytes | None

    @classmethod
    def from_download(cls, cipher: Phase1Cipher, material: bytes) -> KekKey:
        key_len, block = cipher_key_len(cipher), cipher_block_len(cipher)
        if len(material) == block + key_len:
            return cls(cipher, material[block:], material[:block])
        if len(material) == key_len:
            return cls(cipher, material, None)
        raise CryptoError(
            f"KEK_ALGORITHM_KEY of {len(material)} bytes is neither IV and key ({block + key_len}) "
            f"nor key ({key_len}) of {cipher.value}"
        )

    def download(self) -> bytes:
        """KEK_ALGORITHM_KEY as the KD carries it."""
        return (self.iv or b"") + self.key

    def seal(self, plaintext: bytes, random: RandomFn) -> bytes:
        if self.iv is None:
            return kek_encrypt(self.cipher, self.key, random(cipher_block_len(self.cipher)), plaintext)
        return cbc_encrypt(self.cipher, self.key, self.iv, plaintext)

    def open(self, ciphertext: bytes) -> bytes:
        if self.iv is None:
            return kek_decrypt(self.cipher, self.key, ciphertext)
        return cbc_decrypt(self.cipher, self.key, self.iv, ciphertext)


def rekey_signed_bytes(header: bytes, payloads: bytes, length: int) -> bytes:
    """What the SIG of a GROUPKEY-PUSH covers: ``"rekey" | HDR | payloads before SIG`` (RFC 6407
    section 4), with the header's length field set to ``length``.

    The RFC signs "the message before encryption", whose length counts the header, every payload and
    the SIG, but no IV and no padding: the key server signs that (:func:`rekey_signed_length`).  Stacks
    differ, so members also try the length as sent and the length without the SIG (see docs/interop.md).
    """
    return REKEY_SIGNATURE_PREFIX + header[: ISAKMP_HEADER_LEN - 4] + length.to_bytes(4, "big") + payloads


def rekey_signed_length(payloads: bytes, sig_payload_len: int) -> int:
    """The length of the GROUPKEY-PUSH before encryption: header, payloads and the SIG payload."""
    return ISAKMP_HEADER_LEN + len(payloads) + sig_payload_len


def rsa_sign(key: rsa.RSAPrivateKey, hash_name: str, data: bytes) -> bytes:
    """PKCS#1 v1.5 signature (RFC 6407 section 5.3.6, SIG_ALG_RSA)."""
    return key.sign(data, padding.PKCS1v15(), _SIG_HASHES[hash_name]())


def rsa_verify(key: rsa.RSAPublicKey, hash_name: str, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, padding.PKCS1v15(), _SIG_HASHES[hash_name]())
    except InvalidSignature:
        return False
    return True


def rsa_public_der(key: rsa.RSAPublicKey) -> bytes:
    """The public key as SIG_ALGORITHM_KEY carries it: PKCS#1 RSAPublicKey, DER (RFC 6407 section
    5.5.2.2 points to RFC 3447 appendix A.1.1 for it)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def rsa_public_from_der(data: bytes) -> rsa.RSAPublicKey:
    """Load SIG_ALGORITHM_KEY (PKCS#1 RSAPublicKey DER; a SubjectPublicKeyInfo is accepted too)."""
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"SIG_ALGORITHM_KEY is not a public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("SIG_ALGORITHM_KEY is not an RSA public key")
    return key
