"""Registries of numbers the GDOI engine puts on the wire, each citing where it is defined.

GDOI (RFC 6407) is an ISAKMP (RFC 2408) Domain of Interpretation.  Its phase 1 is IKEv1 (RFC 2409)
and its phase 2 exchanges are GROUPKEY-PULL (registration) and GROUPKEY-PUSH (rekey).  RFC 8263 adds
an acknowledgement of the rekey.  Most numbers below come from the IANA "ISAKMP Identifiers",
"IPsec DOI" and "GDOI Payloads" registries that those RFCs created; the comment on each class says
which section defines it.  Nothing here has behaviour: it is the vocabulary the codec and the engines
share.
"""

from __future__ import annotations

import enum

ISAKMP_VERSION = 0x10  # RFC 2408 section 3.1: major version 1, minor version 0
ISAKMP_HEADER_LEN = (
    28  # RFC 2408 section 3.1: 2 cookies, next payload, version, exchange, flags, M-ID, length
)
GENERIC_HEADER_LEN = 4  # RFC 2408 section 3.2: next payload, reserved, payload length
KEK_SPI_LEN = 16  # RFC 6407 section 5.3: the KEK SPI is an ISAKMP cookie pair
REKEY_SIGNATURE_PREFIX = b"rekey"  # RFC 6407 section 4: prepended to the signed GROUPKEY-PUSH


class PayloadType(enum.IntEnum):
    """ISAKMP Next Payload types: RFC 2408 section 3.1, GDOI additions RFC 6407 section 5."""

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERT_REQUEST = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR_ID = 13
    SA_KEK = 15  # RFC 6407 section 5.3
    SA_TEK = 16  # RFC 6407 section 5.4
    KD = 17  # RFC 6407 section 5.5 (Key Download)
    SEQ = 18  # RFC 6407 section 5.6 (Sequence Number)
    GAP = 22  # RFC 6407 section 5.7 (Group Associated Policy)
    # RFC 2408 section 3.1 leaves 128-255 to private use: this project's key server cooperation
    # (docs/coop.md), never sent to a group member.
    COOP = 200


class ExchangeType(enum.IntEnum):
    """ISAKMP exchange types: RFC 2408 section 3.1, RFC 2409, RFC 6407 section 3/4, RFC 8263."""

    BASE = 1
    MAIN_MODE = 2  # "Identity Protection" in RFC 2408 section 4.5, Main Mode in RFC 2409 section 5
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    GROUPKEY_PULL = 32  # RFC 6407 section 3 (shares the number of IKEv1 Quick Mode)
    GROUPKEY_PUSH = 33  # RFC 6407 section 4 (shares the number of IKEv1 New Group Mode)
    GDOI_REKEY_ACK = 35  # RFC 8263 section 3: the GROUPKEY-PUSH acknowledgement
    # RFC 2408 section 3.1 leaves 240-255 to private use: key server to key server (docs/coop.md).
    COOP = 240


class Flags(enum.IntFlag):
    """ISAKMP header flags, RFC 2408 section 3.1."""

    NONE = 0
    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTH_ONLY = 0x04


class Doi(enum.IntEnum):
    """Domains of interpretation: RFC 2407 section 4.2 (IPsec), RFC 6407 section 5.1 (GDOI)."""

    ISAKMP = 0
    IPSEC = 1
    GDOI = 2


class Situation(enum.IntEnum):
    """Situation bitmap of an IPsec DOI SA payload (RFC 2407 section 4.2); GDOI uses 0 (RFC 6407 5.1)."""

    NONE = 0
    IDENTITY_ONLY = 1


class ProtocolId(enum.IntEnum):
    """Proposal / notify / delete Protocol-ID values: RFC 2407 section 4.4.1."""

    RESERVED = 0
    ISAKMP = 1
    IPSEC_AH = 2
    IPSEC_ESP = 3


class IkeTransformId(enum.IntEnum):
    """Transform ID inside an ISAKMP proposal: RFC 2407 section 4.4.2."""

    KEY_IKE = 1


class IkeAttr(enum.IntEnum):
    """IKEv1 phase 1 attribute classes: RFC 2409 appendix A."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14


class IkeEncryption(enum.IntEnum):
    """RFC 2409 appendix A encryption algorithms; AES-CBC from RFC 3602 section 5.1 / IANA."""

    DES_CBC = 1
    TRIPLE_DES_CBC = 5
    AES_CBC = 7


class IkeHash(enum.IntEnum):
    """RFC 2409 appendix A hash algorithms; SHA2-256 from RFC 4868 / IANA."""

    MD5 = 1
    SHA = 2
    SHA2_256 = 4


class IkeAuthMethod(enum.IntEnum):
    """RFC 2409 appendix A authentication methods."""

    PRE_SHARED_KEY = 1
    RSA_SIG = 3


class LifeType(enum.IntEnum):
    """RFC 2409 appendix A life types (also RFC 2407 section 4.5 SA Life Type)."""

    SECONDS = 1
    KILOBYTES = 2


class IdType(enum.IntEnum):
    """Identification types of the IPsec DOI: RFC 2407 section 4.6.2.1 (GDOI reuses them, 6407 5.2)."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11  # RFC 6407 section 5.2: the group identity goes in an ID_KEY_ID


class IpsecAttr(enum.IntEnum):
    """IPsec DOI SA attributes: RFC 2407 section 4.5 (used inside SA TEK, RFC 6407 section 5.4.1)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    # Private-use attribute class (RFC 2407 section 4.5: 32001-32767).  Carries the time-based
    # anti-replay window IOS shows as "Anti-Replay(Time Based)"; a peer that does not know it ignores it.
    PRIVATE_TIME_REPLAY_WINDOW = 32001
    # Also private: this SA TEK's selector is an ACL ``deny`` line, traffic members leave in clear (value
    # 1).  RFC 6407 section 5.4.1 has no way to say "do not protect"; a peer that ignores the attribute
    # protects that traffic instead, which fails safe.
    PRIVATE_CLEAR_TEXT_SELECTOR = 32002


class EncapsulationMode(enum.IntEnum):
    """RFC 2407 section 4.5."""

    TUNNEL = 1
    TRANSPORT = 2


class AuthAlgorithm(enum.IntEnum):
    """IPsec DOI authentication algorithms: RFC 2407 section 4.5; HMAC-SHA2-256/384/512 from RFC 4868
    (values from the IANA "IPsec DOI" registry)."""

    HMAC_MD5 = 1
    HMAC_SHA = 2
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class EspTransformId(enum.IntEnum):
    """IPsec DOI ESP transform identifiers: RFC 2407 section 4.4.4, RFC 3602, RFC 4106 section 8.4."""

    ESP_3DES = 3
    ESP_AES = 12
    ESP_AES_GCM_16 = 20


class SaTekProtocol(enum.IntEnum):
    """SA TEK Protocol-ID: RFC 6407 section 5.4."""

    IPSEC_ESP = 1
    IPSEC_AH = 2


class SaAttrNextPayload(enum.IntEnum):
    """What may follow a GDOI SA payload (RFC 6407 section 5.1)."""

    SA_KEK = 15
    SA_TEK = 16
    GAP = 22


class KekAttr(enum.IntEnum):
    """SA KEK attributes: RFC 6407 section 5.3; KEK_ACK_REQUESTED from RFC 8263 section 3."""

    KEK_MANAGEMENT_ALGORITHM = 1
    KEK_ALGORITHM = 2
    KEK_KEY_LENGTH = 3  # in bits
    KEK_KEY_LIFETIME = 4  # seconds, variable length
    SIG_HASH_ALGORITHM = 5
    SIG_ALGORITHM = 6
    SIG_KEY_LENGTH = 7  # in bits
    KEK_ACK_REQUESTED = 9  # RFC 8263: the GCKS asks members to acknowledge each GROUPKEY-PUSH


class KekAckType(enum.IntEnum):
    """Values of KEK_ACK_REQUESTED (RFC 8263 section 3): which acknowledgement the GCKS wants."""

    CUMULATIVE = 1  # a GDOI_REKEY_ACK carrying the SEQ of the received GROUPKEY-PUSH


class KekAlgorithm(enum.IntEnum):
    """KEK_ALGORITHM values: RFC 6407 section 5.3.3 (all in CBC mode)."""

    DES = 1
    TRIPLE_DES = 2
    AES = 3


class SigHashAlgorithm(enum.IntEnum):
    """SIG_HASH_ALGORITHM values: RFC 6407 section 5.3.5."""

    MD5 = 1
    SHA1 = 2
    SHA256 = 3
    SHA384 = 4
    SHA512 = 5


class SigAlgorithm(enum.IntEnum):
    """SIG_ALGORITHM values: RFC 6407 section 5.3.6 (RSA is PKCS#1 v1.5)."""

    RSA = 1
    DSS = 2
    ECDSS = 3


class KdType(enum.IntEnum):
    """Key Download key packet types: RFC 6407 section 5.5."""

    TEK = 1
    KEK = 2
    LKH = 3
    SID = 4


class TekKeyAttr(enum.IntEnum):
    """Attributes of a TEK key packet: RFC 6407 section 5.5.1."""

    TEK_ALGORITHM_KEY = 1
    TEK_INTEGRITY_KEY = 2
    TEK_SOURCE_AUTH_KEY = 3


class KekKeyAttr(enum.IntEnum):
    """Attributes of a KEK key packet: RFC 6407 section 5.5.2."""

    KEK_ALGORITHM_KEY = 1
    SIG_ALGORITHM_KEY = 2  # the GCKS public key (PKCS#1 RSAPublicKey, DER) members verify SIG with


class NotifyType(enum.IntEnum):
    """Notify message types: RFC 2408 section 3.14.1 (errors), RFC 2407 section 4.6.3 (status).

    RFC 6407 and RFC 8263 reuse these; neither defines a notify type of its own that this engine
    sends (RFC 8263 acknowledges with an exchange, not a notify).
    """

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576  # RFC 2407 section 4.6.3.1
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
