"""Hypothesis fuzzing that can see a crash: the codec raises only DecodeError, the engines reject for a reason.

The engines turn any exception into ``MessageRejected("internal-error")`` so that no datagram can kill a
daemon; a fuzz test that accepts any rejection would therefore pass with the decoder broken.  These
properties hold the engines to their own rule (docs/engine-api.md) instead:

* a rejected datagram yields exactly one MessageRejected whose reason is never ``internal-error``,
  sends nothing (except the KS's INVALID-ID notify for a wrong group) and changes no state;
* a payload chain the codec cannot decode is rejected as ``malformed``;
* a mutated datagram that is accepted does what the unmutated one does, and a mutated GROUPKEY-PUSH
  that is accepted (it is re-signed with the KS key, so it is a valid push) installs exactly the TEKs
  and KEK its SA and KD announce.

GROUPKEY-PUSH is fuzzed below the encryption: the push's plaintext is mutated (payload and
length fields, inserted and removed bytes), then signed with the key server's key and encrypted with
the KEK, so the member's deep parsing (SA KEK, SA TEK, KD, keys) is reached instead of the decryption
failing first.  The KEK is learnt the way Wireshark learns it: from the keylog event's IKE key and the
captured GROUPKEY-PULL, with the public codec and crypto functions only.

Budget: ``DMVPN_FUZZ_EXAMPLES`` examples per property (default 3000; the push property runs twice
that), derandomized so CI runs the same cases every time.  ``DMVPN_FUZZ_EXAMPLES=50000 pytest -m fuzz``
runs only these, with more.  Each example works on a deep copy of one prepared engine, so examples do
not leak state into each other and no lab is rebuilt per example.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import pytest
from engine_harness import KS_ADDR, Network, make_lab, rsa_key
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dmvpn_lab.gdoi.codec import (
    DecodeError,
    DeletePayload,
    GdoiSaPayload,
    Header,
    KdPayload,
    SaKekPayload,
    SaTekPayload,
    decode_message,
    decode_payloads,
)
from dmvpn_lab.gdoi.config import detect_format, parse_yaml_config
from dmvpn_lab.gdoi.config_report import ConfigError, ConfigReport
from dmvpn_lab.gdoi.constants import (
    ISAKMP_HEADER_LEN,
    ExchangeType,
    Flags,
    PayloadType,
)
from dmvpn_lab.gdoi.crypto import (
    KekKey,
    cbc_decrypt,
    cipher_block_len,
    rekey_signed_bytes,
    rekey_signed_length,
    rsa_sign,
)
from dmvpn_lab.gdoi.events import (
    Event,
    MessageRejected,
    Phase1Established,
    RekeyReceived,
    TekDeleted,
    TekExpired,
    TekInstalled,
)
from dmvpn_lab.gdoi.gm import GroupMember
from dmvpn_lab.gdoi.groupsa import KekAnnouncement, PolicyError, read_kd, read_kek, read_teks
from dmvpn_lab.gdoi.ios_config import parse_ios_config
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.model import Phase1Cipher
from dmvpn_lab.gdoi.status import KsStatus

pytestmark = pytest.mark.fuzz

GM = "127.0.0.11"
FUZZ_EXAMPLES = int(os.environ.get("DMVPN_FUZZ_EXAMPLES", "3000"))
PHASE1_CIPHER = Phase1Cipher.AES_CBC_256  # the harness's FAST_POLICY


def fuzz_settings(examples: int = FUZZ_EXAMPLES) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,  # the same cases on every run: CI failures reproduce
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


Engine = KeyServer | GroupMember
Addr = tuple[str, int]


# --- delivering one datagram and judging what the engine did -----------------------------------------


@dataclass
class Outcome:
    events: list[Event]
    sent: list[tuple[bytes, Addr]]
    before: object
    after: object

    @property
    def rejection(self) -> MessageRejected | None:
        rejects = [e for e in self.events if isinstance(e, MessageRejected)]
        return rejects[0] if rejects else None


def state(engine: Engine, now: float) -> object:
    """What the engine holds, as its status shows it, without the rejection counters."""
    return dataclasses.replace(engine.status(now), rejected={})


def fresh(engine: Engine) -> Engine:
    """A deep copy to work on, sharing the seeded random source (copying its state dominated the cost)."""
    memo: dict[int, object] = {}
    for value in vars(engine).values():
        source = getattr(value, "__self__", None)
        if isinstance(source, random.Random):
            memo[id(source)] = source
    return copy.deepcopy(engine, memo)


def deliver(engine: Engine, data: bytes, src: Addr, now: float) -> Outcome:
    before = state(engine, now)
    engine.receive_datagram(data, src, now)  # must not raise
    events: list[Event] = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return Outcome(events, engine.datagrams_to_send(now), before, state(engine, now))


def assert_clean_rejection(outcome: Outcome) -> MessageRejected:
    """The engine's rule for a refused datagram: one reason (not a crash), nothing sent, nothing changed."""
    rejection = outcome.rejection
    assert rejection is not None
    assert outcome.events == [rejection], f"a rejected datagram also produced {outcome.events}"
    assert rejection.reason != "internal-error", f"the engine crashed: {rejection.detail}"
    assert not outcome.sent or rejection.reason == "wrong-group", f"{rejection.reason}: sent {outcome.sent}"
    assert outcome.after == outcome.before, f"a datagram rejected as {rejection.reason} changed the engine"
    return rejection


# --- mutations ----------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 12, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0xFFFFFFFF]
WIDTHS = {"set8": 1, "set16": 2, "set32": 4}

Plan = list[tuple[str, bool, int, int]]
# One edit: what to do, where (a field found in the bytes, or anywhere), and a value.
edits = st.tuples(
    st.sampled_from(["flip", "set8", "set16", "set32", "insert", "delete", "truncate"]),
    st.booleans(),
    st.integers(0, 1 << 20),
    st.one_of(st.sampled_from(INTERESTING), st.integers(0, 0xFFFFFFFF)),
)


def length_fields(data: bytes) -> list[int]:
    """Offsets of 16-bit values that could be lengths inside ``data``: where mutations hurt most."""
    return [i for i in range(len(data) - 1) if 4 <= int.from_bytes(data[i : i + 2], "big") <= len(data)]


def mutate(data: bytes, fields: list[int], plan: Plan) -> bytes:
    buf = bytearray(data)
    for op, at_field, where, value in plan:
        if not buf:
            break
        pos = fields[where % len(fields)] if at_field and fields else where % len(buf)
        pos = min(pos, len(buf) - 1)
        if op == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif op in WIDTHS:
            width = min(WIDTHS[op], len(buf) - pos)
            buf[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
        elif op == "insert":
            buf[pos:pos] = value.to_bytes(4, "big")[: 1 + value % 4]
        elif op == "delete":
            del buf[pos : pos + 1 + value % 8]
        else:
            del buf[pos:]
    return bytes(buf)


# --- the codec ------------------------------------------------------------------------------------------


@fuzz_settings()
@given(st.binary(max_size=2048))
def test_decode_message_random_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else escaping fails the test
        decode_message(data)


@fuzz_settings()
@given(st.integers(0, 255), st.binary(max_size=1024), st.booleans(), st.booleans())
def test_decode_payloads_random_bytes(first: int, data: bytes, gdoi_sa: bool, padded: bool) -> None:
    with contextlib.suppress(DecodeError):
        decode_payloads(first, data, gdoi_sa=gdoi_sa, padded=padded)


# --- the configuration readers ---------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONFIG_SEEDS = [
    (FIXTURES / "ks-seed.ios").read_text(),
    (FIXTURES / "gm-seed.ios").read_text(),
    "role: ks\nlocal_address: 1.1.1.1\npsk: {2.2.2.2: cisco}\nisakmp_policies: [{group: 14, lifetime: 600}]\n"
    "groups:\n  - name: G\n    identity: 1\n    acl: [permit gre any any, {protocol: udp}]\n"
    "    rekey: {transport: multicast, multicast_address: 239.1.1.1, ahead: 10}\n",
    "role: gm\nlocal_address: 2.2.2.2\ngroup: G\nidentity: 1\nservers: [1.1.1.1]\npsk: {1.1.1.1: x}\n"
    "registration_retry: 5\nfail_close: {acl: [permit gre host 1.1.1.1 any]}\n",
]
CONFIG_TOKENS = [
    "\u00b2", "\uff11", "0", "-1", "99999999999", "1" * 5000, " ", ":", "[", "{", "]", "}", "!", "#", "&a", "*a",
    ".nan", ".inf", "~", "'", '"', "\x00", "host", "any", "0.0.0.0", "224.0.0.1", "permit", "deny", "label",
    "number", "\n", "\n ", "\n  ", "2001-99-99", "crypto", "crypto gdoi group", "identity number",
]  # fmt: skip
config_edits = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 40), st.sampled_from(CONFIG_TOKENS)), min_size=1, max_size=4
)


@fuzz_settings(FUZZ_EXAMPLES // 2)
@given(st.sampled_from(CONFIG_SEEDS), config_edits, st.booleans())
def test_config_readers_raise_only_config_errors(seed: str, plan: list[tuple[int, int, str]], checking: bool) -> None:
    """Any configuration text gives a ConfigError (one located line), never another exception."""
    text = seed
    for where, cut, token in plan:
        pos = where % (len(text) + 1)
        text = text[:pos] + token + text[pos + cut % 8 :]
    report = ConfigReport("fuzz", "yaml")
    with contextlib.suppress(ConfigError):
        if detect_format(text) == "yaml":
            parse_yaml_config(text, report)
        else:
            parse_ios_config(text, report, checking=checking)


# --- both engines, whole datagrams ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def captured() -> tuple[tuple[bytes, list[int]], ...]:
    """Every datagram of two registrations, a rekey and its acknowledgements, with its length fields."""
    net = make_lab(2)
    net.ks().force_rekey(net.now)
    net.advance(1)
    return tuple((c.data, length_fields(c.data)) for c in net.captured)


@lru_cache(maxsize=1)
def registered() -> Network:
    """A KS and one GM after registration and one rekey: the engines each example gets a copy of."""
    net = make_lab(1)
    net.ks().force_rekey(net.now)
    net.advance(1)
    return net


RANDOM_DATAGRAMS = (st.binary(max_size=1500), st.sampled_from([KS_ADDR, GM]))
MUTATION_PLANS = st.lists(edits, min_size=0, max_size=4)
MUTATED_DATAGRAMS = (st.integers(0, 10_000), MUTATION_PLANS)
PUSH_PLANS = (st.lists(edits, min_size=1, max_size=3),)


def check_random_datagram(data: bytes, target: str) -> None:
    net = registered()
    assert_clean_rejection(deliver(fresh(net.nodes[target]), data, ("10.0.0.1", 848), net.now))


@fuzz_settings()
@given(*RANDOM_DATAGRAMS)
def test_engines_reject_random_bytes(data: bytes, target: str) -> None:
    check_random_datagram(data, target)


def check_mutated_datagram(target: str, index: int, plan: Plan) -> None:
    """Deliver a mutated captured datagram; a rejection must be clean, an acceptance harmless."""
    net = registered()
    original, fields = captured()[index % len(captured())]
    data = mutate(original, fields, plan)
    src = (KS_ADDR if target == GM else GM, 848)
    outcome = deliver(fresh(net.nodes[target]), data, src, net.now)
    if outcome.rejection is not None:
        assert_clean_rejection(outcome)
        return
    # Accepted: the mutation must not matter (a retransmission, a field the protocol ignores): the
    # unmutated datagram does the same to the same engine.
    reference = deliver(copy.deepcopy(net.nodes[target]), original, src, net.now)
    assert (outcome.events, _comparable(outcome.after)) == (reference.events, _comparable(reference.after)), (
        f"a mutated datagram was accepted and did something else than the original: {outcome.events}"
    )


def _comparable(status: object) -> object:
    """A status with the key server's registration bookkeeping set aside: a mutated message 1 the key
    server still accepts is another valid offer, and remembering it (bounded per address, see
    admission.py and its tests) is the protocol, not harm."""
    if isinstance(status, KsStatus):
        return replace(status, registration=type(status.registration)())
    return status


def check_mutated_to_key_server(index: int, plan: Plan) -> None:
    check_mutated_datagram(KS_ADDR, index, plan)


def check_mutated_to_member(index: int, plan: Plan) -> None:
    check_mutated_datagram(GM, index, plan)


@fuzz_settings()
@given(*MUTATED_DATAGRAMS)
def test_key_server_survives_mutated_messages(index: int, plan: Plan) -> None:
    check_mutated_to_key_server(index, plan)


@fuzz_settings()
@given(*MUTATED_DATAGRAMS)
def test_group_member_survives_mutated_messages(index: int, plan: Plan) -> None:
    check_mutated_to_member(index, plan)


# --- GROUPKEY-PUSH below the encryption ----------------------------------------------------------------


@dataclass(frozen=True)
class PushKit:
    """A member that registered but has not seen the first rekey, and what is needed to forge pushes."""

    gm: GroupMember
    now: float
    kek: KekAnnouncement
    kek_key: KekKey
    payloads: bytes  # SEQ, SA, KD of the real push, as signed
    fields: list[int]


def _open_pull(net: Network, messages: list[bytes], index: int) -> GdoiSaPayload | KdPayload:
    """GROUPKEY-PULL message ``index + 1`` decrypted with the keylog's IKE key: its SA (2) or KD (4).

    RFC 2409 appendix B: within an exchange each message's IV is the last cipher block of the one before.
    """
    ike_key = next(e.encryption_key for e in net.events[GM] if isinstance(e, Phase1Established))
    block = cipher_block_len(PHASE1_CIPHER)
    data = messages[index]
    plain = cbc_decrypt(PHASE1_CIPHER, ike_key, messages[index - 1][-block:], data[ISAKMP_HEADER_LEN:])
    decoded = decode_payloads(Header.decode(data).next_payload, plain, gdoi_sa=True, padded=True)
    wanted = GdoiSaPayload if index == 1 else KdPayload
    return next(d.payload for d in decoded if isinstance(d.payload, wanted))


@lru_cache(maxsize=1)
def push_kit() -> PushKit:
    net = make_lab(1)
    held: list[bytes] = []

    def hold_pushes(src: Addr, dst: Addr, data: bytes) -> bool:
        if data[18] == ExchangeType.GROUPKEY_PUSH:
            held.append(data)
            return True
        return False

    net.drop = hold_pushes
    net.ks().force_rekey(net.now)
    net.flush()
    pulls = [c.data for c in net.captured if c.data[18] == ExchangeType.GROUPKEY_PULL]
    sa, kd = _open_pull(net, pulls, 1), _open_pull(net, pulls, 3)
    assert isinstance(sa, GdoiSaPayload) and isinstance(kd, KdPayload)
    kek = read_kek(next(p for p in sa.payloads if isinstance(p, SaKekPayload)))
    teks = read_teks([p for p in sa.payloads if isinstance(p, SaTekPayload)])
    _tek_keys, kek_keys = read_kd(kd, teks, kek)
    assert kek_keys is not None
    plain = kek_keys.key.open(held[0][ISAKMP_HEADER_LEN:])
    decoded = decode_payloads(PayloadType.SEQ, plain, gdoi_sa=True, padded=True)
    payloads = b"".join(d.raw for d in decoded[:-1])  # everything but SIG
    starts = [sum(len(d.raw) for d in decoded[:i]) for i in range(len(decoded) - 1)]
    fields = sorted({*length_fields(payloads), *starts, *(s + 2 for s in starts)})
    return PushKit(copy.deepcopy(net.gm(GM)), net.now, kek, kek_keys.key, payloads, fields)


def forge_push(kit: PushKit, payloads: bytes) -> tuple[bytes, bytes]:
    """A GROUPKEY-PUSH carrying ``payloads`` then SIG, signed by the KS key and encrypted under the KEK
    (RFC 6407 section 4).  Returns the datagram and its plaintext."""
    signer = rsa_key()
    sig_len = (signer.key_size + 7) // 8
    spi = kit.kek.spi
    header = Header(spi[:8], spi[8:], PayloadType.SEQ, ExchangeType.GROUPKEY_PUSH, Flags.ENCRYPTION, 0, 0)
    # Signed as the key server signs: the message before encryption, its length counting the SIG.
    length = rekey_signed_length(payloads, 4 + sig_len)
    signature = rsa_sign(signer, kit.kek.sig_hash, rekey_signed_bytes(header.encode(), payloads, length))
    plain = payloads + struct.pack("!BBH", PayloadType.NONE, 0, 4 + len(signature)) + signature
    ciphertext = kit.kek_key.seal(plain, lambda n: bytes(n))
    return replace(header, length=ISAKMP_HEADER_LEN + len(ciphertext)).encode() + ciphertext, plain


def expected_installs(kit: PushKit, plain: bytes) -> tuple[set[tuple[int, bytes, bytes]], bytes | None]:
    """What a member must do with a validly signed push: TEKs (SPI, keys) and the KEK SPI it moves to."""
    decoded = decode_payloads(PayloadType.SEQ, plain, gdoi_sa=True, padded=True)
    sa = next(d.payload for d in decoded if isinstance(d.payload, GdoiSaPayload))
    kd = next(d.payload for d in decoded if isinstance(d.payload, KdPayload))
    keks = [p for p in sa.payloads if isinstance(p, SaKekPayload)]
    kek = read_kek(keks[0]) if keks else None
    teks = read_teks([p for p in sa.payloads if isinstance(p, SaTekPayload)])
    tek_keys, _kek_keys = read_kd(kd, teks, kek)
    held = {t.spi for t in kit.gm.status(kit.now).teks}
    installs = {(spi, enc, integ) for spi, (enc, integ) in tek_keys.items() if spi not in held}
    return installs, None if kek is None else kek.spi


def deleted_spis(plain: bytes) -> set[int]:
    """TEK SPIs a push's Delete payloads name (RFC 6407 section 4.1: a KS may delete TEKs in a push)."""
    decoded = decode_payloads(PayloadType.SEQ, plain, gdoi_sa=True, padded=True)
    return {
        int.from_bytes(spi, "big") for d in decoded if isinstance(d.payload, DeletePayload) for spi in d.payload.spis
    }


def check_push(kit: PushKit, payloads: bytes) -> Outcome:
    datagram, plain = forge_push(kit, payloads)
    member = fresh(kit.gm)
    outcome = deliver(member, datagram, (KS_ADDR, 848), kit.now)
    try:
        decode_payloads(PayloadType.SEQ, plain, gdoi_sa=True, padded=True)
        decodes = True
    except DecodeError:
        decodes = False
    if outcome.rejection is not None:
        rejection = assert_clean_rejection(outcome)
        assert decodes or rejection.reason == "malformed", f"undecodable push rejected as {rejection.reason}"
        return outcome
    assert decodes, "a push the codec cannot decode was accepted"
    try:
        installs, kek_spi = expected_installs(kit, plain)
    except (PolicyError, StopIteration) as exc:
        raise AssertionError(f"a push with an unreadable policy was accepted ({exc})") from None
    got = {(e.sa.spi, e.sa.encryption_key, e.sa.integrity_key) for e in outcome.events if isinstance(e, TekInstalled)}
    assert got == installs, "the member installed other TEKs than the push announced"
    removed = {e.spi for e in outcome.events if isinstance(e, TekExpired | TekDeleted)}
    assert removed <= deleted_spis(plain), f"the member removed TEKs {removed} the push did not delete"
    others = [e for e in outcome.events if not isinstance(e, TekInstalled | TekExpired | TekDeleted)]
    assert [type(e) for e in others] == [RekeyReceived], others
    status = kit.gm.status(kit.now)
    assert status.kek is not None
    after_kek = getattr(getattr(outcome.after, "kek", None), "spi", None)
    assert after_kek == (kek_spi or status.kek.spi), "the member's KEK is not the one the push announced"
    live_through_timers(member, kit.now)
    return outcome


def live_through_timers(engine: Engine, now: float, count: int = 4) -> None:
    """Whatever an accepted push set up (lifetimes, re-registration), the timers that follow must run."""
    for _ in range(count):
        when = engine.get_timer()
        if when is None:
            return
        now = max(now, when)
        engine.handle_timer(now)
        engine.status(now)
        engine.datagrams_to_send(now)
        while engine.next_event() is not None:
            pass


def test_the_unmutated_forged_push_is_accepted() -> None:
    """The control: without mutations the forged push is a valid rekey, so the fuzzer reaches deep parsing."""
    kit = push_kit()
    outcome = check_push(kit, kit.payloads)
    assert outcome.rejection is None
    assert any(isinstance(e, TekInstalled) for e in outcome.events)


def check_mutated_push(plan: Plan) -> None:
    kit = push_kit()
    check_push(kit, mutate(kit.payloads, kit.fields, plan))


@fuzz_settings(2 * FUZZ_EXAMPLES)
@given(*PUSH_PLANS)
def test_push_plaintext_mutations(plan: Plan) -> None:
    check_mutated_push(plan)


# --- the properties can fail --------------------------------------------------------------------------


def _always_index_error(*_args: object, **_kwargs: object) -> Header:
    raise IndexError("injected into the decoder")


@pytest.mark.parametrize(
    ("check", "strategies"),
    [
        pytest.param(check_random_datagram, RANDOM_DATAGRAMS, id="random-bytes"),
        pytest.param(check_mutated_to_key_server, MUTATED_DATAGRAMS, id="ks-mutations"),
        pytest.param(check_mutated_to_member, MUTATED_DATAGRAMS, id="gm-mutations"),
        pytest.param(check_mutated_push, PUSH_PLANS, id="push-mutations"),
    ],
)
def test_an_injected_crash_fails_the_properties(
    monkeypatch: pytest.MonkeyPatch, check: Callable[..., None], strategies: tuple[st.SearchStrategy[object], ...]
) -> None:
    """Control: an IndexError in the decode path on every datagram makes each property fail.

    The same checks and strategies as the fuzz tests above, with a few examples and no shrinking.
    """
    registered(), captured(), push_kit()  # built before the decoder breaks
    monkeypatch.setattr(Header, "decode", classmethod(_always_index_error))
    prop = settings(fuzz_settings(20), phases=[Phase.generate])(given(*strategies)(check))
    with pytest.raises(AssertionError, match="the engine crashed: IndexError: injected into the decoder"):
        prop()
