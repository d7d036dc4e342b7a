"""The key server under forged Main Mode traffic: per-peer limits, stateless cookies, bounded state.

A flood of message 1s forged from a member's address must neither lock that
member out nor grow the key server's state, and every refusal is counted.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
from engine_harness import FAST_POLICY, KS_ADDR, LEGACY_POLICY, PSK, Network, make_lab, rsa_key, seeded_random

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.admission import COOKIE_EPOCH_S, RECENT_OFFERS_PER_PEER, OfferBook
from dmvpn_lab.gdoi.codec import Header
from dmvpn_lab.gdoi.config import load_config
from dmvpn_lab.gdoi.config_model import IsakmpPolicy, KeyServerConfig
from dmvpn_lab.gdoi.config_report import ConfigError
from dmvpn_lab.gdoi.events import MemberRegistered, Registered, RegistrationFailed
from dmvpn_lab.gdoi.ks import MAX_FIRST_MESSAGE_LEN, MAX_ISAKMP_SAS_PER_PEER, REGISTRATION_SA_IDLE_S, KeyServer
from dmvpn_lab.gdoi.phase1 import MainModeInitiator

GM = "127.0.0.11"
PORT = 848


def first_message(policies: tuple[IsakmpPolicy, ...] = (FAST_POLICY,), seed: int | None = None) -> bytes:
    rnd = seeded_random(seed) if seed is not None else os.urandom
    return MainModeInitiator(policies, PSK, GM, KS_ADDR, rnd).first_message()


def replies(ks: KeyServer) -> list[bytes]:
    return [data for data, _addr in ks.datagrams_to_send(0.0)]


def complete_main_mode(net: Network, ip: str, seed: int) -> MainModeInitiator:
    """Main Mode from ``ip`` driven by hand (a PSK holder that never sends GROUPKEY-PULL)."""
    ks = net.ks()
    initiator = MainModeInitiator((FAST_POLICY,), PSK, ip, KS_ADDR, seeded_random(seed))
    message: bytes | None = initiator.first_message()
    while message is not None:
        ks.receive_datagram(message, (ip, PORT), net.now)
        (reply,) = replies(ks)
        message = initiator.handle(Header.decode(reply), reply, net.now)
    assert initiator.established is not None
    return initiator


# --- Item 1: message 1 ------------------------------------------------------------------------------


def test_an_oversized_first_message_is_refused_echoes_nothing_and_keeps_nothing() -> None:
    net = make_lab(1, start=False)
    ks = net.ks()
    many = tuple(IsakmpPolicy(priority=p) for p in range(1, 130))  # 129 transforms: over 4 KB
    big = first_message(many)
    assert len(big) > MAX_FIRST_MESSAGE_LEN
    ks.receive_datagram(big, (GM, PORT), 0.0)
    assert replies(ks) == []
    status = ks.status(0.0)
    assert status.rejected == {"oversized": 1}
    assert status.registration.half_open == 0 and status.registration.remembered_offers == 0


def test_a_stateless_answer_is_the_same_every_time_and_keeps_no_exchange() -> None:
    net = make_lab(1, start=False, cookie_threshold=0)
    ks = net.ks()
    msg1 = first_message(seed=5)
    ks.receive_datagram(msg1, (GM, PORT), 1.0)
    ks.receive_datagram(msg1, (GM, PORT), 2.0)  # a retransmission gets the same message 2
    first, again = replies(ks)
    assert first == again and Header.decode(first).rcookie != b"\x00" * 8
    status = ks.status(2.0)
    assert status.registration.half_open == 0 and not status.isakmp_sas
    assert status.registration.stateless_replies == {"table-busy": 2}


@pytest.mark.parametrize("gm_policies", [(FAST_POLICY, LEGACY_POLICY), (LEGACY_POLICY,)])
def test_members_register_when_every_message_1_is_answered_statelessly(
    gm_policies: tuple[IsakmpPolicy, ...],
) -> None:
    # the KS's own policies make its own offer, known without memory; the other comes from the offer book
    ks_policies = (FAST_POLICY, LEGACY_POLICY)
    net = make_lab(3, cookie_threshold=0, ks_policies=ks_policies, gm_policies=gm_policies)
    net.advance(1)
    assert len(net.of_type(KS_ADDR, MemberRegistered)) == 3
    registration = net.ks().status(net.now).registration
    assert registration.stateless_replies == {"table-busy": 3} and registration.half_open == 0


def test_the_offer_book_is_bounded_per_peer_and_keeps_proven_offers_through_churn() -> None:
    own = b"own offer"
    book = OfferBook(own)
    book.prove("10.0.0.1", b"P" * 32, b"proven body")
    for n in range(50):  # forged message 1s with ever new SA payloads
        book.remember("10.0.0.1", bytes([n]) * 32, b"x" * 100)
    book.remember("10.0.0.1", hashlib.sha256(own).digest(), own)  # the KS's own: never stored
    digests = [d for d, _body in book.candidates("10.0.0.1")]
    assert digests[:2] == [hashlib.sha256(own).digest(), b"P" * 32]
    assert len(digests) == 2 + RECENT_OFFERS_PER_PEER and digests[2] == bytes([49]) * 32  # newest first
    assert book.count() == 1 + RECENT_OFFERS_PER_PEER and book.size_bytes() == 11 + 100 * RECENT_OFFERS_PER_PEER
    assert [d for d, _ in book.candidates("10.0.0.2")] == [hashlib.sha256(own).digest()]


def test_a_member_that_registered_before_registers_again_through_offer_churn() -> None:
    ks_policies = (FAST_POLICY, LEGACY_POLICY)
    gm_policies = (LEGACY_POLICY,)  # not the KS's own offer: it must come from the book
    net = make_lab(1, cookie_threshold=0, ks_policies=ks_policies, gm_policies=gm_policies)
    assert len(net.of_type(GM, Registered)) == 1
    ks, rnd, gm = net.ks(), seeded_random(21), net.gm(GM)

    def churn(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        """Between the member's message 1 and its message 3, ten forged message 1s with new offers."""
        p1 = gm._p1
        if src[0] == KS_ADDR and data[18] == 2 and p1 is not None and data[:8] == p1.icookie:
            for _ in range(10):
                offer = (IsakmpPolicy(priority=1, lifetime_s=600 + int.from_bytes(rnd(2), "big")),)
                forged = MainModeInitiator(offer, PSK, GM, KS_ADDR, rnd).first_message()
                ks.receive_datagram(forged, (GM, PORT), net.now)
        return False

    net.drop = churn
    gm.stop(net.now)
    gm.start(net.now)
    net.advance(1)
    assert len(net.of_type(GM, Registered)) == 2
    assert ks.status(net.now).rejected.get("bad-cookie", 0) == 0


def test_a_forged_or_stale_cookie_in_message_3_is_refused() -> None:
    net = make_lab(1, start=False, cookie_threshold=0)
    ks = net.ks()
    initiator = MainModeInitiator((FAST_POLICY,), PSK, GM, KS_ADDR, seeded_random(3))
    ks.receive_datagram(initiator.first_message(), (GM, PORT), 0.0)
    (msg2,) = replies(ks)
    msg3 = initiator.handle(Header.decode(msg2), msg2, 0.0)
    assert msg3 is not None
    forged = msg3[:8] + bytes(8) + msg3[16:]
    forged = forged[:8] + b"\x00\x01\x02\x03\x04\x05\x06\x07" + forged[16:]
    ks.receive_datagram(forged, (GM, PORT), 1.0)
    ks.receive_datagram(msg3, ("127.0.0.12", PORT), 1.0)  # the cookie is bound to the address
    ks.receive_datagram(msg3, (GM, 4500), 1.0)  # ... and to the port
    ks.receive_datagram(msg3, (GM, PORT), 2 * COOKIE_EPOCH_S + 1)  # ... and lives two epochs at most
    assert replies(ks) == []
    assert ks.status(0.0).rejected == {"bad-cookie": 3, "no-psk": 1}
    ks.receive_datagram(msg3, (GM, PORT), COOKIE_EPOCH_S + 1)  # the next epoch still takes it
    (msg4,) = replies(ks)
    assert initiator.handle(Header.decode(msg4), msg4, 0.0) is not None


def test_a_peer_that_proves_its_address_displaces_forged_half_open_entries() -> None:
    net = make_lab(1, start=False, cookie_threshold=100)
    ks = net.ks()
    for seed in range(5):  # forged from the member's address: the five per-peer slots fill up
        ks.receive_datagram(first_message(seed=100 + seed), (GM, PORT), 0.0)
    ks.receive_datagram(first_message(seed=200), (GM, PORT), 0.0)
    ks.datagrams_to_send(0.0)
    registration = ks.status(0.0).registration
    assert registration.half_open == 5 and registration.stateless_replies == {"peer-at-limit": 1}
    assert [s.state for s in ks.status(0.0).isakmp_sas] == ["MM_SA_SETUP"] * 5
    net.gm(GM).start(net.now)
    net.advance(1)
    assert len(net.of_type(GM, Registered)) == 1
    assert ks.status(net.now).registration.half_open <= 5


def test_a_members_pull_displaces_forged_half_open_entries_too() -> None:
    net = make_lab(1, start=False, cookie_threshold=100)
    ks = net.ks()
    forged_seeds = iter(range(300, 400))

    def refill(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        if src[0] == KS_ADDR and data[18] == 2 and data[19] & 1:  # message 6 leaves: refill the slots
            while ks.status(net.now).registration.half_open < 5:
                ks.receive_datagram(first_message(seed=next(forged_seeds)), (GM, PORT), net.now)
        return False

    net.drop = refill
    for _ in range(5):
        ks.receive_datagram(first_message(seed=next(forged_seeds)), (GM, PORT), 0.0)
    net.gm(GM).start(net.now)
    net.advance(1)
    assert len(net.of_type(GM, Registered)) == 1
    assert ks.status(net.now).rejected.get("peer-half-open-limit", 0) == 0


def test_a_forged_flood_from_a_members_address_leaves_it_registering_and_state_bounded() -> None:
    """3000 forged datagrams in 3 s do not keep a real member from registering within 2 s."""
    net = make_lab(1, start=False, ks_policies=(FAST_POLICY, LEGACY_POLICY))
    ks = net.ks()
    offers = [(FAST_POLICY,), (LEGACY_POLICY,), (IsakmpPolicy(priority=5, lifetime_s=3600),)]
    many = tuple(IsakmpPolicy(priority=p) for p in range(1, 130))
    oversized = MainModeInitiator(many, PSK, GM, KS_ADDR, seeded_random(9)).first_message()
    rnd = seeded_random(11)
    sent = 0
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    sizes: list[int] = []
    registered, failed, members = 0, 0, []
    for step in range(300):  # 10 ms steps, 10 forged datagrams each: 1000/s for 3 s
        if step == 50:
            net.gm(GM).start(net.now)
        for i in range(10):
            kind = (step * 10 + i) % 10
            if kind == 9:
                forged = oversized
            elif kind == 8:  # a message 3 under a guessed cookie
                msg1 = MainModeInitiator((FAST_POLICY,), PSK, GM, KS_ADDR, rnd).first_message()
                forged = msg1[:8] + rnd(8) + msg1[16:]
            else:
                forged = MainModeInitiator(offers[kind % 3], PSK, GM, KS_ADDR, rnd).first_message()
            ks.receive_datagram(forged, (GM, PORT), net.now)
            sent += 1
        net.advance(0.01)
        sizes.append(ks.status(net.now).registration.state_bytes)
        registered += len(net.of_type(GM, Registered))
        failed += len(net.of_type(GM, RegistrationFailed))
        members += [e.address for e in net.of_type(KS_ADDR, MemberRegistered)]  # type: ignore[attr-defined]
        net.captured.clear()  # the harness's own records (every datagram, every event) are not the KS's
        for events in net.events.values():
            events.clear()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert registered == 1 and failed == 0 and members == [GM]
    status = ks.status(net.now)
    registration = status.registration
    assert sent == 3000
    assert status.rejected == {"oversized": 300, "bad-cookie": 300}, status.rejected
    assert sum(registration.stateless_replies.values()) >= 2400 - 5
    assert registration.half_open_peak <= 5  # one address never holds more than its five slots
    assert registration.remembered_offers <= RECENT_OFFERS_PER_PEER + 2
    assert max(sizes) < 20_000  # bytes of peer-chosen data held, whatever the flood's length
    assert grown < 200_000, f"traced memory grew {grown} bytes"


def test_the_member_registers_within_two_seconds_during_the_flood() -> None:
    net = make_lab(1, start=False)
    ks = net.ks()
    rnd = seeded_random(12)
    for step in range(200):
        if step == 50:
            net.gm(GM).start(net.now)
            start = net.now
        for _ in range(5):
            ks.receive_datagram(
                MainModeInitiator((FAST_POLICY,), PSK, GM, KS_ADDR, rnd).first_message(), (GM, PORT), net.now
            )
        net.advance(0.01)
        if net.of_type(GM, Registered):
            break
    assert net.of_type(GM, Registered), "the member did not register during the flood"
    assert net.now - start < 2.0


# --- Item 2: established ISAKMP SAs -----------------------------------------------------------------


def test_isakmp_sas_without_registration_are_bounded_per_peer_and_expire_when_idle() -> None:
    net = make_lab(1, start=False)
    ks = net.ks()
    for seed in range(10):
        complete_main_mode(net, GM, seed)
    sas = ks.status(net.now).isakmp_sas
    assert [(s.src, s.state) for s in sas] == [(GM, "GDOI_IDLE")] * MAX_ISAKMP_SAS_PER_PEER
    assert [s.conn_id for s in sas] == [1010, 1009]  # the newest two
    assert ks.status(net.now).registration.isakmp_sas == MAX_ISAKMP_SAS_PER_PEER
    net.run_until(REGISTRATION_SA_IDLE_S + 1)
    assert ks.status(net.now).isakmp_sas == () and ks.status(net.now).registration.isakmp_sas == 0


def test_a_member_asking_for_a_group_not_served_leaves_no_pile_of_sas() -> None:
    net = make_lab(1, gm_identity=999)
    for _ in range(36):
        net.advance(100)
        assert len(net.ks()._ikes) <= MAX_ISAKMP_SAS_PER_PEER
    assert net.ks().status(net.now).rejected["wrong-group"] >= 30


def test_the_registration_sa_goes_after_registration_but_the_member_stays_listed() -> None:
    net = make_lab(2)
    net.advance(REGISTRATION_SA_IDLE_S + 1)
    status = net.ks().status(net.now)
    assert status.registration.isakmp_sas == 0
    assert sorted((s.src, s.state, s.conn_id) for s in status.isakmp_sas) == [
        ("127.0.0.11", "GDOI_IDLE", 1001),
        ("127.0.0.12", "GDOI_IDLE", 1002),
    ]
    net.ks().force_rekey(net.now)
    net.advance(1)
    assert all(m.rekey_acks == 1 for m in net.ks().status(net.now).groups[0].members)  # ACKs still verify


def test_registration_limits_are_capped() -> None:
    base = make_lab(0, start=False).ks().config
    for bad in ({"max_half_open": 10**6}, {"max_half_open": 0}, {"max_half_open_per_peer": 0}):
        conf = KeyServerConfig(base.local_address, base.groups, base.psk_by_peer, **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            KeyServer(conf, {"GDOI_KEYS": rsa_key()})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("max_half_open: 1000000", "max_half_open: 1000000 is outside 1..10000"),
        ("max_half_open: 20\nmax_half_open_per_peer: 21", "max_half_open_per_peer: 21 is outside 1..20"),
        ("cookie_threshold: -1", "cookie_threshold: -1 is outside 0..1000"),
    ],
)
def test_yaml_registration_limits_are_bounded(tmp_path: Path, lines: str, message: str) -> None:
    path = tmp_path / "ks.yaml"
    path.write_text(f"role: ks\nlocal_address: 1.1.1.1\n{lines}\ngroups: [{{name: G, identity: 1}}]\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    path.write_text(
        "role: ks\nlocal_address: 1.1.1.1\nmax_half_open_per_peer: 3\ncookie_threshold: 0\n"
        "groups: [{name: G, identity: 1}]\n"
    )
    config = load_config(path)
    assert isinstance(config, KeyServerConfig)
    assert (config.max_half_open, config.max_half_open_per_peer, config.cookie_threshold) == (1000, 3, 0)


def test_show_on_the_key_server_lists_half_open_sas_and_the_refusals() -> None:
    net = make_lab(1, start=False)
    ks = net.ks()
    ks.receive_datagram(first_message(seed=1), (GM, PORT), 0.0)
    ks.receive_datagram(b"\x00" * 30, (GM, PORT), 0.0)
    view = show.KsView(status=ks.status(0.0), now=0.0, policies=ks.config.groups)
    assert f"{KS_ADDR:<16}{GM:<16}MM_SA_SETUP          0 ACTIVE" in show.format_isakmp_sa(view)
    text = show.format_gdoi_ks(view)
    assert "REGISTRATION PROTECTION:\n    Half-open now / peak     : 1 / 1\n" in text
    assert text.endswith("    Refused datagrams\n        malformed            : 1\n")
    data = show.gdoi_ks_json(view)
    assert data["rejected"] == {"malformed": 1} and data["registration"]["half_open"] == 1
    command = show.find_command(["cry", "gd", "ks"])
    assert command is not None and command.words == ("crypto", "gdoi", "ks")
    ks_text = show.render(command, view, as_json=False)
    assert isinstance(ks_text, str) and ks_text.startswith("Total group members registered to this box: 0\n")
    assert "Key Server Information For Group GDOI_GROUP:\n" in ks_text
    assert ks_text.endswith(text[text.index("REGISTRATION PROTECTION:") :])
    ks_data = show.render(command, view, as_json=True)
    assert isinstance(ks_data, dict) and ks_data["rejected"] == {"malformed": 1}
    assert ks_data["registration"]["stateless_replies"] == {} and ks_data["groups"][0]["unauthorized_pulls"] == 0
    assert show.view_from_json(show.view_to_json(view)) == view
