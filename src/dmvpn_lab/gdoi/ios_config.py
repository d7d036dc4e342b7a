"""The ``crypto`` stanzas of a Cisco IOS configuration, read into a KS or GM config.

Why: the lab reproduces IOS documentation scenarios, and an operator should be able to paste the key
server's and group members' configs from there unchanged.  Only what GDOI needs is read:

* ``crypto key generate rsa general-keys label L modulus N [exportable]``
* ``crypto isakmp policy N`` (``authentication pre-share``, ``encryption aes [128|256]|3des`` or ``encr ...``
  as IOS prints it, ``hash sha256|sha|md5``, ``group 2|14|19``, ``lifetime S``) and ``crypto isakmp key [0]
  KEY address A [255.255.255.255]``, or the wildcard ``address 0.0.0.0 0.0.0.0`` (any peer without its own key)
* ``crypto ipsec transform-set NAME <transforms>``, ``crypto ipsec profile P`` / ``set transform-set T`` /
  ``set security-association lifetime seconds S``, ``crypto ipsec security-association lifetime seconds S``
* ``crypto gdoi group NAME``: ``identity number N``; on a KS ``server local`` with ``rekey transport
  unicast|multicast``, ``rekey address ipv4 ACL`` (multicast), ``rekey authentication mypubkey rsa L``,
  ``rekey retransmit S number N``, ``rekey lifetime seconds S``, ``rekey algorithm 3des|aes [128|256]``
  (absent: 3DES, IOS's default),
  ``sa ipsec N`` / ``profile P`` / ``match address ipv4 ACL`` / ``replay time window-size N``,
  ``address ipv4 A``, ``authorization address ipv4 ACL`` (the member addresses the group serves: a
  standard list, or an extended one whose source addresses count), ``redundancy`` with ``local priority
  N`` and ``peer address ipv4 A`` (cooperative key servers, docs/coop.md) and this project's own
  ``timers announce S dead S`` (IOS keeps its COOP timers to itself); on a GM one or more
  ``server address ipv4 A``, tried in that order
* ``crypto map M local-address IF``, ``crypto map M N gdoi`` / ``set group G``, and the ``interface`` that
  carries ``crypto map M`` (kept for display, as IOS shows it).  The GM registers from IF's address (else
  the carrying interface's): its ``interface IF`` / ``ip address`` in the file, else what the caller's
  ``interface_address`` finds on the node (``gdoi gm``: Loopback0 is ``lo``'s address outside 127/8)
* on a GM, ``crypto map M N gdoi fail-close`` / ``match address ACL`` / ``activate``: the ACL's ``permit``
  lines are held closed until registration (none, or no ``match address``: ``permit gre any any``, what
  the KS downloads); its ``deny`` lines are IOS's clear-text exceptions to an implicit ``permit ip any
  any``, which this Linux GM does not close, so they are reported as ignored.  Without ``activate`` IOS
  does not enforce fail-close and neither do we.
* ``ip access-list extended NAME`` (or numbered ``access-list N``) ``permit`` lines: ``permit gre any any``,
  ``permit ip ...``, ``host A`` and ``A wildcard`` forms; in a key server group's ``match address`` ACL also
  ``deny`` lines of the same forms, traffic members leave in clear as IOS does (``check-config`` warns
  when one follows a ``permit`` it overlaps: IOS stops at the first match, members here let deny lines
  win); ``ip access-list standard NAME`` (or ``access-list N`` numbered 1-99 or 1300-1999) ``permit|deny
  any|host A|A [wildcard]`` lines, for authorization only.

Anything else inside these stanzas goes to the :class:`~dmvpn_lab.gdoi.config.ConfigReport` with its line
number: ``ignored`` when it changes nothing we do, ``refused`` when it asks for crypto or policy we cannot
honour (an unknown or misspelt transform, ``authentication rsa-sig``, DH group 5, ``deny`` ACEs outside
a group's ACL...).  A key
server must not guess crypto, so the loader turns the first refused line into an error.  Lines outside
crypto stanzas (``interface Tunnel10``, ``router eigrp``...) are not ours: they are only counted.

IOS's own defaults for an unconfigured ISAKMP policy (DES, SHA-1, group 1) are weak and unsupported;
unspecified policy values take this project's defaults (:class:`~dmvpn_lab.gdoi.config_model.IsakmpPolicy`).
An inline ``! comment`` after a command is dropped, as on the seed's ``crypto isakmp key`` lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dmvpn_lab.gdoi.acl import is_standard_acl_number, parse_acl_entry, parse_standard_entry
from dmvpn_lab.gdoi.config_model import (
    WILDCARD_PEER,
    AddressRule,
    GroupMemberConfig,
    GroupPolicy,
    IsakmpPolicy,
    KeyServerConfig,
    MemberAuthorization,
    Redundancy,
)
from dmvpn_lab.gdoi.config_report import REPLAY_WINDOW_WARNING, ConfigError, ConfigReport, Refused
from dmvpn_lab.gdoi.config_values import (
    RSA_MODULUS_MAX,
    RSA_MODULUS_MIN,
    check_local_address,
    check_rsa_key_label,
    did_you_mean,
    identity_taken,
    is_number,
    number_in_range,
    parse_ipv4,
)
from dmvpn_lab.gdoi.model import (
    DhGroup,
    Phase1Cipher,
    Phase1Hash,
    RekeyTransport,
    TekTransform,
    TrafficSelector,
)

DEFAULT_TEK_LIFETIME_S = 3600
DEFAULT_KEK_LIFETIME_S = 86400
# Without `rekey algorithm`, IOS encrypts rekeys with 3DES (the seed's "Encrypt Algorithm : 3DES, Key Size :
# 192"); a pasted config gets the same, really 3DES-CBC (crypto.KekKey).  YAML keeps this project's AES-256.
IOS_DEFAULT_KEK_CIPHER = Phase1Cipher.TRIPLE_DES

_ESP_INTEGRITY_WORDS = ["esp-md5-hmac", "esp-sha-hmac", "esp-sha256-hmac", "esp-sha384-hmac", "esp-sha512-hmac"]
_ESP_TRANSFORM_WORDS = ["esp-3des", "esp-aes", "esp-gcm", *_ESP_INTEGRITY_WORDS]
_ALL_TRANSFORM_WORDS = [
    *_ESP_TRANSFORM_WORDS,
    "esp-des",
    "esp-null",
    "esp-gmac",
    "esp-seal",
    "ah-md5-hmac",
    "ah-sha-hmac",
    "ah-sha256-hmac",
    "comp-lzs",
]


class _Ignored(Exception):
    """A line is understood but has no effect here; becomes an ``ignored`` report entry."""


# --- Intermediate records (what the file says, before cross-references are resolved) -------------


@dataclass
class _TransformSet:
    name: str
    line: int
    transform: TekTransform | None  # None: refused (already reported)


@dataclass
class _Profile:
    name: str
    line: int
    transform_set: str | None = None
    transform_set_line: int = 0
    lifetime_s: int | None = None


@dataclass
class _Acl:
    name: str
    line: int
    selectors: list[TrafficSelector] = field(default_factory=list)  # permit and deny lines, in order
    refused: bool = False
    # ``deny`` entries, judged once it is known what names the ACL: clear-text exceptions in a key
    # server's group ACL (they are in ``selectors`` when they parse; ``why_not`` says why one did not),
    # a fail-close ACL's exceptions, or a refused line anywhere else.
    denies: list[_Deny] = field(default_factory=list)
    standard: bool = False  # a standard list: ``address_rules`` instead of selectors
    address_rules: list[AddressRule] = field(default_factory=list)

    @property
    def permits(self) -> list[TrafficSelector]:
        return [selector for selector in self.selectors if selector.permit]


@dataclass(frozen=True)
class _Deny:
    line: int
    text: str
    selector: TrafficSelector | None  # None when the line did not parse
    why_not: str | None = None  # then: the grammar's refusal (ports, log...)


@dataclass
class _FailClose:
    """``crypto map M N gdoi fail-close`` and what is beneath it."""

    line: int
    acl: tuple[str, int] | None = None
    activated: bool = False


@dataclass
class _GdoiGroup:
    name: str
    line: int
    identity: int | None = None
    server_local_line: int | None = None
    servers: list[str] = field(default_factory=list)
    ks_address: str | None = None
    rekey_transport: RekeyTransport = RekeyTransport.UNICAST
    rekey_address_acl: tuple[str, int] | None = None
    rsa_label: str | None = None
    retransmit: tuple[int, int] | None = None
    kek_lifetime_s: int | None = None
    kek_cipher: Phase1Cipher | None = None
    sa_number: int | None = None
    sa_line: int = 0
    profile: tuple[str, int] | None = None
    acl: tuple[str, int] | None = None
    replay_window_s: int | None = None
    replay_line: int = 0
    authorization_acl: tuple[str, int] | None = None
    redundancy_line: int | None = None
    local_priority: int | None = None
    coop_peers: list[str] = field(default_factory=list)
    coop_timers: tuple[int, int] | None = None


@dataclass
class _IosConfig:
    rsa_moduli: dict[str, int] = field(default_factory=dict)
    isakmp_policies: dict[int, IsakmpPolicy] = field(default_factory=dict)
    psk_by_peer: dict[str, bytes] = field(default_factory=dict)
    transform_sets: dict[str, _TransformSet] = field(default_factory=dict)
    profiles: dict[str, _Profile] = field(default_factory=dict)
    global_tek_lifetime_s: int | None = None
    groups: dict[str, _GdoiGroup] = field(default_factory=dict)
    acls: dict[str, _Acl] = field(default_factory=dict)
    map_local_interface: dict[str, str] = field(default_factory=dict)
    map_groups: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # map -> [(group, line)]
    map_interfaces: dict[str, str] = field(default_factory=dict)
    map_fail_close: dict[str, _FailClose] = field(default_factory=dict)
    # `interface X` / ` ip address A M` (the primary address), for `crypto map M local-address X`
    interface_addresses: dict[str, str] = field(default_factory=dict)


# --- Small word parsers ---------------------------------------------------------------------------


def normalise_interface(name: str) -> str:
    """``serial 1/0`` -> ``Serial1/0``, as IOS shows interface names."""
    compact = name.replace(" ", "")
    return compact[:1].upper() + compact[1:]


def transform_from_words(words: list[str]) -> TekTransform:
    """``esp-aes 256 esp-sha-hmac`` -> :class:`TekTransform`; raises ``Refused`` with a hint."""
    cipher: str | None = None
    key_bits: int | None = None
    integrity: str | None = None
    index = 0
    while index < len(words):
        word = words[index].lower()
        if word in ("esp-3des", "esp-aes", "esp-gcm"):
            if cipher is not None:
                raise Refused(f"two ciphers in one transform set ({cipher}, {word})")
            cipher = word
            if index + 1 < len(words) and is_number(words[index + 1]):
                key_bits = int(words[index + 1])
                index += 1
        elif word in _ESP_INTEGRITY_WORDS:
            if integrity is not None:
                raise Refused(f"two integrity algorithms in one transform set ({integrity}, {word})")
            integrity = word
        elif word in _ALL_TRANSFORM_WORDS:
            raise Refused(
                f"transform {word!r} is not supported; supported: " + ", ".join(_ESP_TRANSFORM_WORDS)
            )
        else:
            raise Refused(
                f"unknown transform {word!r}{did_you_mean(word, _ALL_TRANSFORM_WORDS)}; "
                "a key server does not guess crypto"
            )
        index += 1
    if cipher is None:
        raise Refused("no ESP cipher in the transform set (esp-3des, esp-aes or esp-gcm)")
    if cipher == "esp-3des" and key_bits is not None:
        raise Refused("esp-3des takes no key size")
    if cipher == "esp-gcm" and integrity is not None:
        raise Refused("esp-gcm carries its own integrity; drop " + integrity)
    if cipher != "esp-gcm" and integrity is None:
        raise Refused(f"{cipher} needs an integrity transform ({', '.join(_ESP_INTEGRITY_WORDS)})")
    if key_bits not in (None, 128, 192, 256):
        raise Refused(f"{cipher} {key_bits} is not supported (128, 192 or 256)")
    # TekTransform values are the canonical IOS spelling: the key size only when it is not 128.
    size = [str(key_bits)] if key_bits not in (None, 128) else []
    return TekTransform(" ".join([cipher, *size, *([integrity] if integrity else [])]))


# --- The parser -----------------------------------------------------------------------------------

_INLINE_COMMENT = re.compile(r"\s+!.*$")

Handler = Callable[[list[str], int, str], None]


class _Parser:
    def __init__(self, report: ConfigReport) -> None:
        self.report = report
        self.ios = _IosConfig()
        self.stanza: Handler | None = None
        self.stanza_is_crypto = False
        # per-stanza state
        self.policy_priority = 0
        self.policy_fields: dict[str, object] = {}
        self.group: _GdoiGroup | None = None
        self.in_server_local = False
        self.profile: _Profile | None = None
        self.acl: _Acl | None = None
        self.crypto_map: str | None = None
        self.fail_close: _FailClose | None = None
        self.interface: str | None = None

    # -- driver --

    def parse(self, text: str) -> _IosConfig:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = _INLINE_COMMENT.sub("", raw.rstrip())
            stripped = line.strip()
            if not stripped or stripped.startswith("!"):
                continue
            words = stripped.split()
            indented = line[:1].isspace()
            try:
                if indented:
                    self._sub_line(words, number, stripped)
                else:
                    self._finish_stanza()
                    self._top_line(words, number, stripped)
            except Refused as exc:
                self.report.refuse(number, stripped, exc.message)
            except _Ignored as exc:
                self.report.ignore(number, stripped, str(exc))
            except ConfigError as exc:
                if exc.line is None:
                    exc.line = number
                raise
        self._finish_stanza()
        return self.ios

    def _sub_line(self, words: list[str], number: int, text: str) -> None:
        if self.stanza is None:
            if self.stanza_is_crypto:
                raise _Ignored("indented line after a one-line crypto command")
            self.report.lines_outside_crypto += 1
            return
        if words[0] in ("exit", "end"):
            return
        if words[0] in ("description", "remark"):
            return
        self.stanza(words, number, text)

    def _start(self, handler: Handler | None, crypto: bool) -> None:
        self.stanza = handler
        self.stanza_is_crypto = crypto

    def _finish_stanza(self) -> None:
        if self.stanza == self._isakmp_policy_line:
            self._store_isakmp_policy()
        self.stanza = None
        self.stanza_is_crypto = False
        self.group = None
        self.in_server_local = False
        self.profile = None
        self.acl = None
        self.crypto_map = None
        self.fail_close = None
        self.interface = None

    # -- top level --

    def _top_line(self, words: list[str], number: int, text: str) -> None:
        lowered = [w.lower() for w in words]
        if lowered[0] == "crypto":
            self._start(None, crypto=True)
            self._crypto_line(words, lowered, number)
        elif lowered[:3] == ["ip", "access-list", "extended"] and len(words) >= 4:
            self.acl = self.ios.acls.setdefault(words[3], _Acl(words[3], number))
            self._start(self._acl_line, crypto=True)
        elif lowered[:3] == ["ip", "access-list", "standard"] and len(words) >= 4:
            self.acl = self.ios.acls.setdefault(words[3], _Acl(words[3], number, standard=True))
            self._start(self._standard_acl_line, crypto=True)
        elif lowered[:2] == ["ip", "access-list"]:
            raise Refused("only extended and standard access lists are supported (ip access-list extended NAME)")
        elif lowered[0] == "access-list" and len(words) >= 3 and is_standard_acl_number(words[1]):
            self.acl = self.ios.acls.setdefault(words[1], _Acl(words[1], number, standard=True))
            self._standard_acl_line(words[2:], number, text)
            self.acl = None
            self._start(None, crypto=False)
        elif lowered[0] == "access-list" and len(words) >= 3:
            acl = self.ios.acls.setdefault(words[1], _Acl(words[1], number))
            self.acl = acl
            self._acl_line(words[2:], number, text)
            self.acl = None
            self._start(None, crypto=False)
        elif lowered[0] == "interface" and len(words) >= 2:
            self.interface = normalise_interface(" ".join(words[1:]))
            self._start(self._interface_line, crypto=False)
            self.report.lines_outside_crypto += 1
        else:
            self._start(None, crypto=False)
            self.report.lines_outside_crypto += 1

    def _crypto_line(self, words: list[str], lowered: list[str], number: int) -> None:
        if len(words) < 2:
            raise ConfigError("incomplete command `crypto`")
        head = lowered[1:3]
        if lowered[1:4] == ["key", "generate", "rsa"]:
            self._rsa_key(words, lowered)
        elif head == ["isakmp", "policy"]:
            self.policy_priority = number_in_range(
                words[3] if len(words) > 3 else "", "ISAKMP policy priority", 1, 10000
            )
            self.policy_fields = {"line": number}
            self._start(self._isakmp_policy_line, crypto=True)
        elif head == ["isakmp", "key"]:
            self._isakmp_key(words, lowered)
        elif lowered[1] == "isakmp":
            raise _Ignored("this ISAKMP option has no counterpart here")
        elif head == ["ipsec", "transform-set"] and len(words) >= 4:
            name = words[3]
            try:
                transform: TekTransform | None = transform_from_words(words[4:])
            except Refused:
                self.ios.transform_sets[name] = _TransformSet(name, number, None)
                self._start(self._transform_set_line, crypto=True)
                raise
            self.ios.transform_sets[name] = _TransformSet(name, number, transform)
            self._start(self._transform_set_line, crypto=True)
        elif head == ["ipsec", "profile"] and len(words) >= 4:
            self.profile = self.ios.profiles.setdefault(words[3], _Profile(words[3], number))
            self._start(self._profile_line, crypto=True)
        elif head == ["ipsec", "security-association"]:
            self._global_sa_line(words, lowered)
        elif head == ["gdoi", "group"] and len(words) >= 4:
            if lowered[3] == "ipv6":
                raise Refused("IPv6 GDOI groups are not supported")
            self.group = self.ios.groups.setdefault(words[3], _GdoiGroup(words[3], number))
            self._start(self._gdoi_line, crypto=True)
        elif lowered[1] == "map" and len(words) >= 4:
            self._crypto_map_header(words, lowered, number)
        elif lowered[1] in ("pki", "ca", "engine", "logging", "call", "ikev2"):
            self._start(self._skipped_stanza_line, crypto=True)  # its sub-lines go with the header
            raise _Ignored(f"crypto {lowered[1]} is not used by GDOI with pre-shared keys")
        else:
            raise _Ignored("unsupported crypto command")

    def _rsa_key(self, words: list[str], lowered: list[str]) -> None:
        if "label" not in lowered:
            raise Refused("name the key with `label L`; the KS signs rekeys with a labelled key")
        label = words[lowered.index("label") + 1] if lowered.index("label") + 1 < len(words) else ""
        if not label:
            raise ConfigError("`label` needs a name")
        check_rsa_key_label(label)
        modulus = 2048
        if "modulus" in lowered:
            position = lowered.index("modulus") + 1
            modulus = number_in_range(words[position] if position < len(words) else "", "RSA modulus")
            if not RSA_MODULUS_MIN <= modulus <= RSA_MODULUS_MAX:
                raise Refused(f"RSA modulus {modulus} is outside {RSA_MODULUS_MIN}..{RSA_MODULUS_MAX}")
        extra = set(lowered[4:]) - {
            "general-keys",
            "label",
            "modulus",
            "exportable",
            label.lower(),
            str(modulus),
        }
        if extra:
            raise Refused(f"options {' '.join(sorted(extra))} are not supported")
        self.ios.rsa_moduli[label] = modulus

    def _isakmp_key(self, words: list[str], lowered: list[str]) -> None:
        rest = words[3:]
        if rest and rest[0] in ("0", "6", "7"):
            if rest[0] != "0":
                raise Refused(f"encrypted key type {rest[0]} cannot be read; write the key as `0 KEY`")
            rest = rest[1:]
        if len(rest) < 3 or rest[1].lower() != "address":
            raise ConfigError("expected `crypto isakmp key [0] KEY address A`")
        key, address = rest[0], rest[2]
        peer = parse_ipv4(address)
        # IOS writes the wildcard key `address 0.0.0.0 0.0.0.0` (or, when the mask is left out, `0.0.0.0`).
        mask = rest[3] if len(rest) > 3 else ("0.0.0.0" if peer == WILDCARD_PEER else "255.255.255.255")
        if len(rest) > 4:
            raise Refused("options after the address mask are not supported (no-xauth, ...)")
        if peer == WILDCARD_PEER and mask == "0.0.0.0":
            self.ios.psk_by_peer[WILDCARD_PEER] = key.encode()  # the key for any peer without its own
            return
        if mask != "255.255.255.255":
            raise Refused(
                "keys for a subnet are not supported; one key per peer address, or the wildcard "
                "`address 0.0.0.0 0.0.0.0`"
            )
        self.ios.psk_by_peer[peer] = key.encode()

    def _global_sa_line(self, words: list[str], lowered: list[str]) -> None:
        if lowered[3:5] == ["lifetime", "seconds"] and len(words) == 6:
            self.ios.global_tek_lifetime_s = number_in_range(words[5], "SA lifetime", 120, 86400 * 7)
        elif lowered[3:4] == ["lifetime"]:
            raise _Ignored("only lifetimes in seconds are used for group SAs")
        else:
            raise _Ignored("this global IPsec SA option has no counterpart here")

    def _crypto_map_header(self, words: list[str], lowered: list[str], number: int) -> None:
        name = words[2]
        if lowered[3] == "local-address" and len(words) >= 5:
            self.ios.map_local_interface[name] = normalise_interface(" ".join(words[4:]))
            return
        if len(words) >= 5 and is_number(words[3]):
            if lowered[4] != "gdoi":
                raise Refused(
                    f"crypto map entries of type {words[4]!r} are not GDOI; only `gdoi` is supported"
                )
            if lowered[5:] == ["fail-close"]:
                self.fail_close = self.ios.map_fail_close.setdefault(name, _FailClose(number))
                self._start(self._fail_close_line, crypto=True)
                return
            if len(words) > 5:
                raise Refused("only `crypto map M N gdoi` and `crypto map M N gdoi fail-close` are supported")
            self.crypto_map = name
            self.ios.map_groups.setdefault(name, [])
            self._start(self._crypto_map_line, crypto=True)
            return
        raise _Ignored("unsupported crypto map option")

    # -- stanzas --

    def _isakmp_policy_line(self, words: list[str], number: int, text: str) -> None:
        lowered = [w.lower() for w in words]
        key = lowered[0]
        value = lowered[1:]
        if key == "authentication":
            if value != ["pre-share"]:
                raise Refused("only `authentication pre-share` is supported")
        elif key in ("encryption", "encr"):  # IOS prints `encr aes 256` in its running configuration
            table = {
                ("aes",): Phase1Cipher.AES_CBC_128,
                ("aes", "128"): Phase1Cipher.AES_CBC_128,
                ("aes", "256"): Phase1Cipher.AES_CBC_256,
                ("3des",): Phase1Cipher.TRIPLE_DES,
            }
            if tuple(value) not in table:
                raise Refused(f"encryption {' '.join(value)} is not supported (aes, aes 256, 3des)")
            self.policy_fields["cipher"] = table[tuple(value)]
        elif key == "hash":
            hashes = {"sha256": Phase1Hash.SHA256, "sha": Phase1Hash.SHA1, "md5": Phase1Hash.MD5}
            if len(value) != 1 or value[0] not in hashes:
                raise Refused(f"hash {' '.join(value)} is not supported (sha256, sha, md5)")
            self.policy_fields["hash"] = hashes[value[0]]
        elif key == "group":
            if len(value) != 1 or not is_number(value[0]) or int(value[0]) not in {g.value for g in DhGroup}:
                raise Refused(f"DH group {' '.join(value)} is not supported (2, 14, 19)")
            self.policy_fields["group"] = DhGroup(int(value[0]))
        elif key == "lifetime":
            self.policy_fields["lifetime_s"] = number_in_range(value[0] if value else "", "ISAKMP lifetime", 60, 86400)
        else:
            raise Refused("unsupported ISAKMP policy option")

    def _store_isakmp_policy(self) -> None:
        fields = dict(self.policy_fields)
        fields.pop("line", None)
        self.ios.isakmp_policies[self.policy_priority] = IsakmpPolicy(
            priority=self.policy_priority,
            **fields,  # type: ignore[arg-type]
        )

    def _transform_set_line(self, words: list[str], number: int, text: str) -> None:
        if words[0].lower() == "mode":
            raise _Ignored("group SAs are installed in transport mode over GRE whatever the mode says")
        raise Refused("unsupported transform-set option")

    def _profile_line(self, words: list[str], number: int, text: str) -> None:
        assert self.profile is not None
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["set", "transform-set"] and len(words) >= 3:
            if len(words) > 3:
                raise Refused("only one transform set per GDOI profile is supported")
            self.profile.transform_set = words[2]
            self.profile.transform_set_line = number
        elif lowered[:4] == ["set", "security-association", "lifetime", "seconds"] and len(words) == 5:
            self.profile.lifetime_s = number_in_range(words[4], "SA lifetime", 120, 86400 * 7)
        elif lowered[:2] == ["set", "pfs"]:
            raise _Ignored("GDOI TEKs have no PFS: the KS generates every key")
        elif lowered[:2] == ["set", "security-association"]:
            raise _Ignored("only lifetimes in seconds are used for group SAs")
        else:
            raise Refused("unsupported IPsec profile option")

    def _gdoi_line(self, words: list[str], number: int, text: str) -> None:
        group = self.group
        assert group is not None
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["identity", "number"] and len(words) == 3:
            group.identity = number_in_range(words[2], "group identity")
        elif lowered[0] == "identity":
            raise Refused("only `identity number N` is supported")
        elif lowered == ["server", "local"]:
            group.server_local_line = number
            self.in_server_local = True
        elif lowered[:3] == ["server", "address", "ipv4"] and len(words) == 4:
            address = parse_ipv4(words[3], what="key server address")
            if address not in group.servers:
                group.servers.append(address)
            self.in_server_local = False
        elif lowered[0] == "server":
            raise Refused("only `server local` and `server address ipv4 A` are supported")
        elif lowered[0] == "client":
            raise _Ignored("GM client options have no counterpart here")
        elif not self.in_server_local:
            raise Refused("unsupported GDOI group option")
        else:
            self._server_local_line(group, words, lowered, number)

    def _server_local_line(
        self, group: _GdoiGroup, words: list[str], lowered: list[str], number: int
    ) -> None:
        if lowered[:2] == ["rekey", "transport"] and len(words) == 3:
            if lowered[2] not in ("unicast", "multicast"):
                raise Refused(f"rekey transport {words[2]!r} is not supported (unicast, multicast)")
            group.rekey_transport = RekeyTransport(lowered[2])
        elif lowered[:3] == ["rekey", "address", "ipv4"] and len(words) == 4:
            group.rekey_address_acl = (words[3], number)
        elif lowered[:4] == ["rekey", "authentication", "mypubkey", "rsa"] and len(words) == 5:
            group.rsa_label = check_rsa_key_label(words[4])
        elif lowered[:2] == ["rekey", "retransmit"] and len(words) == 5 and lowered[3] == "number":
            group.retransmit = (
                number_in_range(words[2], "retransmit interval", 1, 3600),
                number_in_range(words[4], "retransmit count", 0, 10),
            )
        elif lowered[:3] == ["rekey", "lifetime", "seconds"] and len(words) == 4:
            group.kek_lifetime_s = number_in_range(words[3], "KEK lifetime", 300, 86400 * 7)
        elif lowered[:2] == ["rekey", "algorithm"]:
            table = {
                ("3des",): Phase1Cipher.TRIPLE_DES,
                ("aes",): Phase1Cipher.AES_CBC_128,
                ("aes", "128"): Phase1Cipher.AES_CBC_128,
                ("aes", "256"): Phase1Cipher.AES_CBC_256,
            }
            if tuple(lowered[2:]) not in table:
                raise Refused(
                    f"rekey algorithm {' '.join(words[2:])} is not supported (3des, aes 128, aes 256)"
                )
            group.kek_cipher = table[tuple(lowered[2:])]
        elif lowered[:3] == ["authorization", "address", "ipv4"] and len(words) == 4:
            group.authorization_acl = (words[3], number)
        elif lowered[:2] == ["sa", "ipsec"] and len(words) == 3:
            sa_number = number_in_range(words[2], "sa ipsec number", 1, 65535)
            if group.sa_number is not None and group.sa_number != sa_number:
                raise Refused("only one `sa ipsec` per group is supported")
            group.sa_number = sa_number
            group.sa_line = number
        elif lowered[0] in ("profile", "match", "replay") and group.sa_number is None:
            raise ConfigError(f"`{words[0]}` belongs under `sa ipsec N`", hint="add `sa ipsec 1` above it")
        elif lowered[0] == "profile" and len(words) == 2:
            group.profile = (words[1], number)
        elif lowered[:3] == ["match", "address", "ipv4"] and len(words) == 4:
            group.acl = (words[3], number)
        elif lowered[:3] == ["replay", "time", "window-size"] and len(words) == 4:
            group.replay_window_s = number_in_range(words[3], "replay window", 1, 3600)
            group.replay_line = number
        elif lowered[:2] == ["replay", "counter"]:
            raise _Ignored(
                "counter-based anti-replay cannot work with many senders on one SPI; "
                "Linux group SAs run with replay-window 0"
            )
        elif lowered[:2] == ["address", "ipv4"] and len(words) == 3:
            group.ks_address = parse_ipv4(words[2], what="key server address")
        elif lowered == ["redundancy"]:
            group.redundancy_line = number
        elif lowered[0] in ("local", "peer", "timers") and group.redundancy_line is None:
            raise ConfigError(f"`{words[0]}` belongs under `redundancy`", hint="add `redundancy` above it")
        elif lowered[:2] == ["local", "priority"] and len(words) == 3:
            group.local_priority = number_in_range(words[2], "local priority", 1, 255)
        elif lowered[:3] == ["peer", "address", "ipv4"] and len(words) == 4:
            peer = parse_ipv4(words[3], what="redundancy peer address")
            if peer not in group.coop_peers:
                group.coop_peers.append(peer)
        elif lowered[0] == "timers" and len(words) == 5 and lowered[1] == "announce" and lowered[3] == "dead":
            announce = number_in_range(words[2], "COOP announce period", 1, 3600)
            dead = number_in_range(words[4], "COOP dead time", 2, 7200)
            if dead < 2 * announce:
                raise ConfigError(
                    f"COOP dead time {dead} s is under two announce periods ({announce} s)",
                    hint="one lost announcement must not make a secondary take over: dead >= 2 x announce",
                )
            group.coop_timers = (announce, dead)
        else:
            raise Refused("unsupported key server option")

    def _crypto_map_line(self, words: list[str], number: int, text: str) -> None:
        assert self.crypto_map is not None
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["set", "group"] and len(words) == 3:
            self.ios.map_groups[self.crypto_map].append((words[2], number))
        else:
            raise Refused("unsupported GDOI crypto map option (only `set group G`)")

    def _fail_close_line(self, words: list[str], number: int, text: str) -> None:
        assert self.fail_close is not None
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["match", "address"] and len(words) == 3:
            self.fail_close.acl = (words[2], number)
        elif lowered == ["activate"]:
            self.fail_close.activated = True
        else:
            raise Refused("unsupported fail-close option (only `match address ACL` and `activate`)")

    def _acl_line(self, words: list[str], number: int, text: str) -> None:
        assert self.acl is not None
        body = words[1:] if words and is_number(words[0]) else words
        if body and body[0].lower() == "remark":
            return
        if body and body[0].lower() == "deny":
            # Judged in parse_ios_config, once its use is known; a line that does not parse is refused
            # there only if the ACL is one where deny lines count.
            try:
                selector = parse_acl_entry(words)
            except Refused as exc:
                self.acl.denies.append(_Deny(number, text, None, exc.message))
            else:
                self.acl.selectors.append(selector)
                self.acl.denies.append(_Deny(number, text, selector))
            return
        try:
            self.acl.selectors.append(parse_acl_entry(words))
        except Refused:
            self.acl.refused = True
            raise

    def _standard_acl_line(self, words: list[str], number: int, text: str) -> None:
        assert self.acl is not None
        body = words[1:] if words and words[0].isdigit() else words
        if body and body[0].lower() == "remark":
            return
        self.acl.address_rules.append(parse_standard_entry(body))

    def _skipped_stanza_line(self, words: list[str], number: int, text: str) -> None:
        """Sub-lines of a stanza whose header was already reported as ignored."""

    def _interface_line(self, words: list[str], number: int, text: str) -> None:
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["crypto", "map"] and len(words) == 3 and self.interface is not None:
            self.ios.map_interfaces[words[2]] = self.interface
            return
        self.report.lines_outside_crypto += 1  # an address is not crypto either: counted, and kept below
        if lowered[:2] == ["ip", "address"] and len(words) == 4 and self.interface is not None:
            # Only the primary address: it is the one IOS sources from (`secondary` has a fifth word).
            try:
                address = parse_ipv4(words[2])
            except ConfigError:
                return  # not ours to judge: `ip address dhcp` and the like name no address
            self.ios.interface_addresses.setdefault(self.interface, address)


# --- From the file's records to a config ----------------------------------------------------------


# Asked for an IOS interface name (``Loopback0``) when the file names one without its address: the
# address the node really has there, or None.  The GM's adapter reads the kernel; the parser does no I/O.
InterfaceAddress = Callable[[str], str | None]


def parse_ios_config(
    text: str,
    report: ConfigReport,
    *,
    local_address: str | None = None,
    checking: bool = False,
    interface_address: InterfaceAddress | None = None,
) -> KeyServerConfig | GroupMemberConfig:
    """Parse IOS text into a KS or GM config, filling ``report`` with unsupported lines.

    A GM's address is ``local_address`` if given, else the address of the interface its crypto map
    sources from (``crypto map M local-address IF``, else the interface carrying the map): from the
    file's ``interface IF`` / ``ip address``, else from ``interface_address``.
    """
    ios = _Parser(report).parse(text)
    ks_groups = [g for g in ios.groups.values() if g.server_local_line is not None]
    gm_groups = [g for g in ios.groups.values() if g.server_local_line is None]
    if not ios.groups:
        raise ConfigError(
            "no `crypto gdoi group` in this configuration",
            hint="a KS needs `crypto gdoi group G` with `server local`, a GM one with "
            "`server address ipv4 A`",
        )
    if ks_groups and gm_groups:
        raise ConfigError(
            f"group {gm_groups[0].name} is a GM group but {ks_groups[0].name} has `server local`",
            line=gm_groups[0].line,
            hint="one daemon is either a key server or a group member",
        )
    config: KeyServerConfig | GroupMemberConfig
    if ks_groups:
        report.role = "ks"
        config = _build_ks(ios, ks_groups, report, local_address)
    else:
        report.role = "gm"
        config = _build_gm(ios, gm_groups, local_address, checking, report, interface_address)
    _judge_denies(ios, report, config)
    report.unsupported.sort(key=lambda entry: entry.line)  # deny lines were judged last
    return config


def _judge_denies(ios: _IosConfig, report: ConfigReport, config: KeyServerConfig | GroupMemberConfig) -> None:
    """``deny`` ACEs: traffic left in clear in a key server's group ACL, exceptions in the GM's fail-close
    ACL, refused anywhere else (an authorization or rekey list, a list nothing uses)."""
    fail_close_acls: set[str] = set()
    group_acls: set[str] = set()
    if isinstance(config, GroupMemberConfig):
        entry = ios.map_fail_close.get(config.crypto_map)
        if entry is not None and entry.acl is not None:
            fail_close_acls.add(entry.acl[0])
    else:
        group_acls = {g.acl[0] for g in ios.groups.values() if g.server_local_line is not None and g.acl}
    for acl in ios.acls.values():
        for deny in acl.denies:
            if acl.name in fail_close_acls:
                report.ignore(
                    deny.line,
                    deny.text,
                    "fail-close holds only the permit lines closed here; other traffic already passes in clear",
                )
            elif acl.name in group_acls:
                if deny.selector is None:
                    acl.refused = True
                    report.refuse(deny.line, deny.text, deny.why_not or "not a valid deny line")
                else:
                    _warn_if_shadowed_in_ios(acl, deny.line, deny.text, deny.selector, report)
            else:
                acl.refused = True
                report.refuse(
                    deny.line,
                    deny.text,
                    "deny entries count only in a group's `match address` ACL (traffic left in clear)",
                )


def _warn_if_shadowed_in_ios(
    acl: _Acl, line: int, text: str, denied: TrafficSelector, report: ConfigReport
) -> None:
    """A deny below a permit it overlaps: IOS stops at the first match, the kernel here at the deny.

    Members install each deny as an xfrm policy that outranks every protect policy (xfrm.CLEAR_TEXT_PRIORITY),
    whatever the ACL order, so where the two overlap the traffic goes in clear here but encrypted on IOS.
    """
    index = acl.selectors.index(denied)
    earlier = [s for s in acl.selectors[:index] if s.permit and _overlap(s, denied)]
    if earlier:
        report.warn(
            line,
            text,
            f"comes after `{earlier[0].acl_text().split(maxsplit=1)[1]}`, which also matches this traffic: IOS "
            "encrypts it (first match wins), members here leave it in clear (deny lines always win); "
            "put deny lines first",
        )


def _overlap(a: TrafficSelector, b: TrafficSelector) -> bool:
    """True when some packet matches both selectors."""
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return False
    return ipaddress.IPv4Network(a.source).overlaps(ipaddress.IPv4Network(b.source)) and ipaddress.IPv4Network(
        a.destination
    ).overlaps(ipaddress.IPv4Network(b.destination))


def _resolve_selectors(
    ios: _IosConfig, acl_ref: tuple[str, int] | None, group: _GdoiGroup, report: ConfigReport
) -> tuple[TrafficSelector, ...]:
    if acl_ref is None:
        raise ConfigError(
            f"group {group.name}: `sa ipsec {group.sa_number}` has no `match address ipv4 ACL`",
            line=group.sa_line,
        )
    name, line = acl_ref
    acl = _defined_acl(ios, acl_ref, f"add `ip access-list extended {name}` with a `permit gre any any` line")
    if acl.standard:
        raise ConfigError(f"access list {name!r} is a standard list; traffic selectors need an extended one", line=line)
    if not acl.permits and not acl.refused:
        raise ConfigError(
            f"access list {name!r} has no permit entries", line=acl.line, hint="deny lines alone protect nothing"
        )
    return tuple(acl.selectors)


def _build_ks(
    ios: _IosConfig, groups: list[_GdoiGroup], report: ConfigReport, local_address: str | None
) -> KeyServerConfig:
    policies: list[GroupPolicy] = []
    addresses = {g.ks_address for g in groups if g.ks_address}
    group_by_identity: dict[int, str] = {}
    for group in groups:
        if group.identity is None:
            raise ConfigError(f"group {group.name} has no `identity number N`", line=group.line)
        if group.identity in group_by_identity:
            raise ConfigError(identity_taken(group.name, group.identity, group_by_identity), line=group.line)
        group_by_identity[group.identity] = group.name
        if group.sa_number is None:
            raise ConfigError(
                f"group {group.name} has no `sa ipsec N`",
                line=group.server_local_line,
                hint="add `sa ipsec 1`, `profile P` and `match address ipv4 ACL` under server local",
            )
        if group.profile is None:
            raise ConfigError(
                f"group {group.name}: `sa ipsec {group.sa_number}` has no `profile P`", line=group.sa_line
            )
        profile_name, profile_line = group.profile
        profile = ios.profiles.get(profile_name)
        if profile is None:
            raise ConfigError(
                f"IPsec profile {profile_name!r} is not defined",
                line=profile_line,
                hint=f"add `crypto ipsec profile {profile_name}` with `set transform-set T`",
            )
        if profile.transform_set is None:
            raise ConfigError(f"IPsec profile {profile_name!r} has no `set transform-set`", line=profile.line)
        transform_set = ios.transform_sets.get(profile.transform_set)
        if transform_set is None:
            raise ConfigError(
                f"transform set {profile.transform_set!r} is not defined", line=profile.transform_set_line
            )
        selectors = _resolve_selectors(ios, group.acl, group, report)
        multicast: str | None = None
        if group.rekey_transport is RekeyTransport.MULTICAST:
            if group.rekey_address_acl is None:
                raise ConfigError(
                    f"group {group.name}: multicast rekey needs `rekey address ipv4 ACL`",
                    line=group.server_local_line,
                    hint="the ACL's destination host is the multicast group",
                )
            multicast = _multicast_group(ios, group.rekey_address_acl)
        if group.replay_window_s is not None:
            report.warn(
                group.replay_line,
                f"replay time window-size {group.replay_window_s}",
                REPLAY_WINDOW_WARNING,
            )
        label = group.rsa_label or GroupPolicy(name="", identity=0).rsa_key_label
        tek_lifetime = profile.lifetime_s or ios.global_tek_lifetime_s or DEFAULT_TEK_LIFETIME_S
        retransmit = group.retransmit or (60, 2)
        policies.append(
            GroupPolicy(
                name=group.name,
                identity=group.identity,
                transform=transform_set.transform or TekTransform.ESP_GCM256,  # refused sets stop the loader
                tek_lifetime_s=tek_lifetime,
                kek_lifetime_s=group.kek_lifetime_s or DEFAULT_KEK_LIFETIME_S,
                kek_cipher=group.kek_cipher or IOS_DEFAULT_KEK_CIPHER,
                selectors=selectors,
                rekey_transport=group.rekey_transport,
                rekey_retransmit_interval_s=retransmit[0],
                rekey_retransmit_count=retransmit[1],
                rekey_multicast_address=multicast,
                rsa_key_label=label,
                rsa_modulus=ios.rsa_moduli.get(label, 2048),
                replay_time_window_s=group.replay_window_s,
                rekey_ahead_s=min(90, max(1, tek_lifetime // 4)),
                authorization=_authorization(ios, group.authorization_acl),
            )
        )
    if local_address is not None:
        address = parse_ipv4(local_address, what="--local-address")
    elif len(addresses) == 1:
        address = addresses.pop()
    elif addresses:
        raise ConfigError(
            "the groups name different `address ipv4` values; one KS binds one address",
            hint="pass --local-address",
        )
    else:
        raise ConfigError(
            "the key server has no `address ipv4 A` under `server local`",
            line=groups[0].server_local_line,
            hint="add it or pass --local-address",
        )
    local = check_local_address(address, "ks")
    return KeyServerConfig(
        local_address=local,
        groups=tuple(policies),
        psk_by_peer=dict(ios.psk_by_peer),
        isakmp_policies=_policies(ios),
        redundancy=_redundancy(groups, local, ios.psk_by_peer),
    )


def _redundancy(groups: list[_GdoiGroup], local: str, psk_by_peer: dict[str, bytes]) -> Redundancy | None:
    """The ``redundancy`` blocks of the groups: one election per key server, so they must agree."""
    blocks = {
        g.name: (tuple(g.coop_peers), g.local_priority or 1, g.coop_timers or (10, 30), g.redundancy_line)
        for g in groups
        if g.redundancy_line is not None
    }
    if not blocks:
        return None
    first_name, (peers, priority, timers, line) = next(iter(blocks.items()))
    for name, (other_peers, other_priority, other_timers, other_line) in blocks.items():
        if (set(other_peers), other_priority, other_timers) != (set(peers), priority, timers):
            raise ConfigError(
                f"groups {first_name} and {name} configure redundancy differently",
                line=other_line,
                hint="this key server runs one election for all its groups: give them the same lines",
            )
    if len(blocks) != len(groups):
        missing = next(g for g in groups if g.name not in blocks)
        raise ConfigError(
            f"group {missing.name} has no `redundancy` while group {first_name} has",
            line=missing.server_local_line,
            hint="one key server is primary or secondary for all its groups: add the same redundancy lines",
        )
    if not peers:
        raise ConfigError("`redundancy` without `peer address ipv4 A`", line=line, hint="name the other key servers")
    if local in peers:
        raise ConfigError(f"`peer address ipv4 {local}` is this key server itself", line=line)
    for peer in peers:
        if peer not in psk_by_peer:
            raise ConfigError(
                f"redundancy peer {peer} has no pre-shared key: COOP messages are protected with it",
                line=line,
                hint=f"add `crypto isakmp key KEY address {peer}` (the same key on both key servers)",
            )
    return Redundancy(peers, priority, float(timers[0]), float(timers[1]))


def _defined_acl(ios: _IosConfig, ref: tuple[str, int], hint: str) -> _Acl:
    name, line = ref
    acl = ios.acls.get(name)
    if acl is None:
        raise ConfigError(f"access list {name!r} is not defined", line=line, hint=hint)
    return acl


def _authorization(ios: _IosConfig, ref: tuple[str, int] | None) -> MemberAuthorization | None:
    """``authorization address ipv4 ACL``: a standard list as is; an extended one by source address."""
    if ref is None:
        return None
    name = ref[0]
    acl = _defined_acl(ios, ref, f"add `ip access-list standard {name}` with a `permit` line per member address")
    if acl.standard:
        return MemberAuthorization(name, tuple(acl.address_rules))
    sources = (ipaddress.IPv4Network(s.source) for s in acl.permits)
    return MemberAuthorization(name, tuple(AddressRule(True, str(n.network_address), str(n.hostmask)) for n in sources))


def _multicast_group(ios: _IosConfig, ref: tuple[str, int]) -> str:
    name, line = ref
    acl = ios.acls.get(name)
    if acl is None:
        raise ConfigError(f"access list {name!r} is not defined", line=line)
    for selector in acl.permits:
        net = ipaddress.IPv4Network(selector.destination)
        if net.prefixlen == 32 and net.network_address.is_multicast:
            return str(net.network_address)
    raise ConfigError(
        f"access list {name!r} names no multicast destination host",
        line=acl.line,
        hint="e.g. `permit udp host 1.1.1.1 host 239.192.1.1`",
    )


def _policies(ios: _IosConfig) -> tuple[IsakmpPolicy, ...]:
    if not ios.isakmp_policies:
        return (IsakmpPolicy(),)
    return tuple(ios.isakmp_policies[p] for p in sorted(ios.isakmp_policies))


def _build_gm(
    ios: _IosConfig,
    groups: list[_GdoiGroup],
    local_address: str | None,
    checking: bool,
    report: ConfigReport,
    interface_address: InterfaceAddress | None,
) -> GroupMemberConfig:
    mapped = [(m, g, line) for m, entries in ios.map_groups.items() for g, line in entries]
    used = {g for _, g, _ in mapped}
    if len(groups) > 1:
        candidates = [g for g in groups if g.name in used]
        if len(candidates) != 1:
            raise ConfigError(
                "a group member joins one GDOI group; this file defines " + ", ".join(g.name for g in groups),
                line=groups[1].line,
            )
        groups = candidates
    group = groups[0]
    if group.identity is None:
        raise ConfigError(f"group {group.name} has no `identity number N`", line=group.line)
    if not group.servers:
        raise ConfigError(f"group {group.name} has no `server address ipv4 A`", line=group.line)
    for _, name, line in mapped:
        if name not in ios.groups:
            raise ConfigError(f"crypto map sets group {name!r}, which is not defined", line=line)
    crypto_map = next((m for m, g, _ in mapped if g == group.name), "DMVPN")
    interface = ios.map_interfaces.get(crypto_map, "eth1")
    if local_address is not None:
        address = check_local_address(parse_ipv4(local_address, what="--local-address"), "gm")
    else:
        address = _gm_address(ios, crypto_map, checking, report, interface_address)
    return GroupMemberConfig(
        local_address=address,
        group_name=group.name,
        identity=group.identity,
        servers=tuple(group.servers),
        psk_by_peer=dict(ios.psk_by_peer),
        isakmp_policies=_policies(ios),
        crypto_map=crypto_map,
        interface=interface,
        fail_close_selectors=_fail_close_selectors(ios, crypto_map, report),
    )


def _gm_address(
    ios: _IosConfig,
    crypto_map: str,
    checking: bool,
    report: ConfigReport,
    interface_address: InterfaceAddress | None,
) -> str:
    """The address the crypto map sources GDOI from, as IOS picks it.

    IOS registers from ``crypto map M local-address IF``'s address, or else from the interface that
    carries the map.  A pasted config often has that line but not the interface's ``ip address`` (the
    seed's ``local-address Loopback0``): then the node itself is asked.
    """
    named = ios.map_local_interface.get(crypto_map) or ios.map_interfaces.get(crypto_map)
    if named is not None and named in ios.interface_addresses:
        return check_local_address(ios.interface_addresses[named], "gm")
    if named is not None and interface_address is not None:
        found = interface_address(named)
        if found is not None:
            return check_local_address(found, "gm")
    where = f"crypto map {crypto_map} sources from interface {named}" if named else f"crypto map {crypto_map}"
    remedy = (
        f"add `interface {named}` with ` ip address A M` to the file, "
        + ("give this node's loopback (lo) an address outside 127.0.0.0/8, " if _is_loopback(named) else "")
        + "or pass --local-address A"
        if named
        else "add `crypto map M local-address IF` and that interface's `ip address`, or pass --local-address A"
    )
    if checking:
        # check-config reads the file anywhere, not on the node: say where the daemon will look.
        node = "`gdoi gm` takes lo's address outside 127.0.0.0/8 on the node; " if named and _is_loopback(named) else ""
        report.warn(None, f"the GDOI address is not in the file ({where})", f"{node}if there is none: {remedy}")
        return "0.0.0.0"  # a placeholder, so the rest of the file is still checked
    looked = " or on this node" if named is not None and interface_address is not None else ""
    raise ConfigError(f"the group member's GDOI address is not in the file{looked} ({where})", hint=remedy)


def _is_loopback(ios_name: str) -> bool:
    return ios_name.lower().startswith("loopback")


def _fail_close_selectors(ios: _IosConfig, crypto_map: str, report: ConfigReport) -> tuple[TrafficSelector, ...]:
    """What ``crypto map M N gdoi fail-close`` holds closed until registration (empty: fail-open)."""
    entry = ios.map_fail_close.get(crypto_map)
    if entry is None:
        return ()
    if not entry.activated:
        report.ignore(
            entry.line,
            f"crypto map {crypto_map} gdoi fail-close",
            "fail-close is not enforced until `activate` is configured beneath it (as on IOS)",
        )
        return ()
    if entry.acl is None:
        return (TrafficSelector(),)
    name, line = entry.acl
    acl = ios.acls.get(name)
    if acl is None:
        raise ConfigError(
            f"access list {name!r} is not defined",
            line=line,
            hint=f"add `ip access-list extended {name}`, or drop `match address` to hold GRE closed",
        )
    # Only deny lines (the usual IOS form): the ACL names exceptions, and what stays closed is GRE.
    return tuple(acl.permits) or (TrafficSelector(),)
