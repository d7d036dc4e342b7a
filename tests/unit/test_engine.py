"""KeyServer and GroupMember wired back to back (engine_harness) with a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from engine_harness import (
    FAST_POLICY,
    KS_ADDR,
    LEGACY_POLICY,
    PSK,
    Network,
    group_policy,
    make_lab,
    rsa_key,
    seeded_random,
)

from dmvpn_lab.gdoi.config_model import GroupMemberConfig
from dmvpn_lab.gdoi.constants import ExchangeType
from dmvpn_lab.gdoi.crypto import KekKey
from dmvpn_lab.gdoi.events import (
    MemberDropped,
    MemberRegistered,
    MessageRejected,
    Phase1Established,
    Registered,
    RegistrationFailed,
    RekeyReceived,
    RekeySent,
    TekExpired,
    TekInstalled,
)
from dmvpn_lab.gdoi.gm import GroupMember
from dmvpn_lab.gdoi.ks import REGISTRATION_SA_IDLE_S
from dmvpn_lab.gdoi.model import Phase1Cipher, RekeyTransport, TekTransform, TrafficSelector
from dmvpn_lab.gdoi.phase1 import MainModeInitiator, MainModeState

GMS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def installed(net: Network, gm: str) -> list[TekInstalled]:
    return [e for e in net.of_type(gm, TekInstalled) if isinstance(e, TekInstalled)]


def pushes(net: Network) -> list[bytes]:
    return [c.data for c in net.captured if c.data[18] == ExchangeType.GROUPKEY_PUSH]


def test_registration_gives_every_member_the_same_tek() -> None:
    net = make_lab(3)
    ks = net.ks()
    assert len(net.of_type(KS_ADDR, MemberRegistered)) == 3
    teks = []
    for gm in GMS:
        assert len(net.of_type(gm, Registered)) == 1
        (ev,) = installed(net, gm)
        teks.append((ev.sa.spi, ev.sa.encryption_key, ev.sa.integrity_key))
        assert ev.sa.transform is TekTransform.ESP_GCM256 and len(ev.sa.encryption_key) == 36
        assert ev.sa.selectors[0].protocol == 47
    assert len(set(teks)) == 1
    status = ks.status(net.now)
    assert status.groups[0].teks[0].spi == teks[0][0]
    assert [(s.dst, s.state) for s in status.isakmp_sas] == [(KS_ADDR, "GDOI_IDLE")] * 3
    assert sorted(s.src for s in status.isakmp_sas) == GMS
    assert sorted(s.conn_id for s in status.isakmp_sas) == [1001, 1002, 1003]
    gm_status = net.gm(GMS[0]).status(net.now)
    assert gm_status.registered and gm_status.active_server == KS_ADDR
    assert [(s.state, s.conn_id) for s in sorted(gm_status.isakmp_sas, key=lambda s: s.conn_id)] == [
        ("GDOI_IDLE", 1001),
        ("GDOI_REKEY", 1002),
    ]
    assert gm_status.kek is not None and gm_status.kek.transport is RekeyTransport.UNICAST
    # both ends of each phase 1 computed the same Wireshark key
    ks_keys = {e.icookie: e.encryption_key for e in net.of_type(KS_ADDR, Phase1Established)}  # type: ignore[attr-defined]
    for gm in GMS:
        (p1,) = net.of_type(gm, Phase1Established)
        assert isinstance(p1, Phase1Established) and ks_keys[p1.icookie] == p1.encryption_key


def test_force_rekey_reaches_everyone_and_is_acknowledged() -> None:
    net = make_lab(3)
    old_spi = installed(net, GMS[0])[0].sa.spi
    assert net.gm(GMS[0]).status(net.now).last_rekey_from is None
    net.ks().force_rekey(net.now)
    net.advance(1)
    (sent,) = net.of_type(KS_ADDR, RekeySent)
    assert isinstance(sent, RekeySent) and sent.sequence == 1 and sent.members == 3
    new = set()
    for gm in GMS:
        assert [e.sequence for e in net.of_type(gm, RekeyReceived)] == [1]  # type: ignore[attr-defined]
        evs = installed(net, gm)
        assert len(evs) == 2 and evs[1].sa.spi != old_spi
        new.add((evs[1].sa.spi, evs[1].sa.encryption_key))
        st = net.gm(gm).status(net.now)
        assert st.rekey_acks_sent == 1 and st.rekeys_cumulative == 1 and len(st.teks) == 2
        assert st.last_rekey_from == KS_ADDR
    assert len(new) == 1
    members = net.ks().status(net.now).groups[0].members
    assert all(m.rekey_acks == 1 and m.last_ack_sequence == 1 and m.missed_acks == 0 for m in members)
    net.advance(60)  # acknowledged: no retransmission
    assert len(pushes(net)) == 3


def test_lifetime_rekey_keeps_old_tek_until_it_expires() -> None:
    net = make_lab(2, group=group_policy(tek_lifetime_s=300, rekey_ahead_s=90))
    first = installed(net, GMS[0])[0].sa
    net.run_until(209)
    assert not net.of_type(KS_ADDR, RekeySent)
    net.run_until(211)
    assert len(net.of_type(KS_ADDR, RekeySent)) == 1
    second = installed(net, GMS[0])[1].sa
    assert second.installed_at == pytest.approx(210)
    net.run_until(299)
    assert not net.of_type(GMS[0], TekExpired)  # both TEKs installed across the rollover
    net.run_until(301)
    assert [e.spi for e in net.of_type(GMS[0], TekExpired)] == [first.spi]  # type: ignore[attr-defined]
    assert [t.spi for t in net.gm(GMS[0]).status(net.now).teks] == [second.spi]
    net.run_until(1000)
    assert len(net.of_type(KS_ADDR, RekeySent)) == 4  # at 210, 420, 630, 840
    assert not net.of_type(GMS[1], MessageRejected)


def test_member_missing_acks_is_dropped_and_reregisters_on_its_own() -> None:
    net = make_lab(3, group=group_policy(tek_lifetime_s=300, rekey_ahead_s=90))
    silent = GMS[2]
    net.gm(silent).set_send_acks(False)
    net.run_until(700)
    (dropped,) = net.of_type(KS_ADDR, MemberDropped)
    assert isinstance(dropped, MemberDropped) and dropped.address == silent
    ks = net.ks().status(net.now)
    assert silent not in [m.address for m in ks.groups[0].members]
    assert len(ks.isakmp_sas) == 2
    net.run_until(850)
    last = net.of_type(KS_ADDR, RekeySent)[-1]
    assert isinstance(last, RekeySent) and last.members == 2  # no more rekeys for the dropped member
    regs_before = len(net.of_type(silent, Registered))
    net.run_until(935)
    regs = net.of_type(silent, Registered)
    assert len(regs) == regs_before + 1  # "GM Reregisters in": before its newest TEK (630 + 300) ends
    assert silent in [m.address for m in net.ks().status(net.now).groups[0].members]
    for gm in GMS[:2]:
        members = {m.address: m for m in net.ks().status(net.now).groups[0].members}
        assert members[gm].missed_acks == 0 and members[gm].rekey_acks == 4


def test_retransmits_until_acknowledged() -> None:
    net = make_lab(1)
    lost = {"n": 0}

    def drop_first_ack(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        if data[18] == ExchangeType.GDOI_REKEY_ACK and lost["n"] == 0:
            lost["n"] += 1
            return True
        return False

    net.drop = drop_first_ack
    net.ks().force_rekey(net.now)
    net.advance(15)
    assert len(pushes(net)) == 2  # the original and one retransmission
    (member,) = net.ks().status(net.now).groups[0].members
    assert member.rekey_acks == 1 and member.missed_acks == 0
    assert len(net.of_type(GMS[0], RekeyReceived)) == 1  # the retransmission was not applied twice
    assert net.gm(GMS[0]).status(net.now).rekey_acks_sent == 2
    net.advance(60)
    assert len(pushes(net)) == 2


def test_reregisters_when_no_rekey_arrives() -> None:
    net = make_lab(1, group=group_policy(tek_lifetime_s=300, rekey_ahead_s=90))
    net.drop = lambda src, dst, data: data[18] == ExchangeType.GROUPKEY_PUSH
    first = installed(net, GMS[0])[0].sa
    net.run_until(280)
    assert len(net.of_type(GMS[0], Registered)) == 1
    net.run_until(299)
    assert len(net.of_type(GMS[0], Registered)) == 2
    spis = [e.sa.spi for e in installed(net, GMS[0])]
    assert len(spis) == 2 and spis[0] == first.spi  # the TEK made at 210 came with the new PULL
    net.run_until(301)
    assert [e.spi for e in net.of_type(GMS[0], TekExpired)] == [first.spi]  # type: ignore[attr-defined]
    assert len(net.gm(GMS[0]).status(net.now).teks) == 1


def test_wrong_psk_never_registers() -> None:
    net = make_lab(1, gm_psk=b"not-cisco")
    net.run_until(200)
    assert not net.of_type(GMS[0], Registered)
    assert net.of_type(GMS[0], RegistrationFailed)
    assert net.ks().status(net.now).rejected.get("bad-hash", 0) >= 1
    assert not net.of_type(KS_ADDR, MemberRegistered)


def test_unknown_address_is_refused() -> None:
    net = make_lab(1, ks_psk_for=[])
    net.run_until(30)
    rejects = [e for e in net.of_type(KS_ADDR, MessageRejected) if isinstance(e, MessageRejected)]
    assert rejects and all(e.reason == "no-psk" and GMS[0] in e.detail for e in rejects)
    assert net.of_type(GMS[0], RegistrationFailed)
    assert net.ks().status(net.now).rejected["no-psk"] == len(rejects)


def test_wrong_group_identity_is_refused() -> None:
    net = make_lab(1, gm_identity=999)
    net.run_until(5)
    assert net.ks().status(net.now).rejected == {"wrong-group": 1}
    (fail,) = net.of_type(GMS[0], RegistrationFailed)
    assert isinstance(fail, RegistrationFailed) and "INVALID-ID-INFORMATION" in fail.reason
    assert not net.of_type(KS_ADDR, MemberRegistered) and not net.of_type(GMS[0], Registered)


def test_rekey_signed_by_another_key_is_rejected_and_changes_nothing() -> None:
    net = make_lab(1)
    ks = net.ks()
    group = ks._groups["GDOI_GROUP"]
    real_key = group.signing_key
    group.signing_key = rsa_key(seed=1, bits=1024 + 64)
    group.sequence += 1
    forged = ks._build_push(group, group.kek, net.now)
    group.sequence -= 1
    group.signing_key = real_key
    gm = net.gm(GMS[0])
    before = gm.status(net.now)
    n_events = len(net.events[GMS[0]])
    net.inject(forged, (KS_ADDR, 848), GMS[0])
    new_events = net.events[GMS[0]][n_events:]
    assert len(new_events) == 1
    assert isinstance(new_events[0], MessageRejected) and new_events[0].reason == "bad-signature"
    after = gm.status(net.now)
    assert after.teks == before.teks and after.rekeys_cumulative == 0
    assert after.rejected == {"bad-signature": 1}
    assert not net.gm(GMS[0]).datagrams_to_send(net.now)  # no acknowledgement for a forgery


def test_push_reannouncing_the_kek_spi_with_another_algorithm_changes_nothing() -> None:
    """A push signed by the key server that names the current KEK SPI with another
    algorithm (and a key of that algorithm) is refused as a whole; the member keeps its KEK and
    still accepts the genuine rekeys that follow."""
    net = make_lab(1)
    ks = net.ks()
    group = ks._groups["GDOI_GROUP"]
    real_kek = group.kek
    assert real_kek.key.cipher is Phase1Cipher.AES_CBC_256
    group.kek = replace(real_kek, key=KekKey(Phase1Cipher.TRIPLE_DES, bytes(range(24)), bytes(8)))
    group.sequence += 1
    odd = ks._build_push(group, real_kek, net.now)
    group.sequence -= 1
    group.kek = real_kek
    gm = net.gm(GMS[0])
    assert gm._kek is not None
    kek_before = (gm._kek.ann, gm._kek.key)
    before = gm.status(net.now)
    n_events = len(net.events[GMS[0]])
    net.inject(odd, (KS_ADDR, 848), GMS[0])
    (rejected,) = net.events[GMS[0]][n_events:]
    assert isinstance(rejected, MessageRejected) and rejected.reason == "bad-policy"
    assert (gm._kek.ann, gm._kek.key) == kek_before
    after = gm.status(net.now)
    assert after.kek == before.kek and after.teks == before.teks and after.rekeys_cumulative == 0
    assert not gm.datagrams_to_send(net.now)
    ks.force_rekey(net.now)
    net.advance(1)
    assert gm.status(net.now).rekeys_cumulative == 1
    assert ks.status(net.now).groups[0].members[0].rekey_acks == 1
    ks.force_rekey(net.now)
    net.advance(1)
    assert gm.status(net.now).rekeys_cumulative == 2


def test_replayed_rekey_is_rejected() -> None:
    net = make_lab(1)
    net.ks().force_rekey(net.now)
    net.advance(1)
    old = pushes(net)[0]
    net.ks().force_rekey(net.now)
    net.advance(1)
    latest = pushes(net)[-1]
    gm = net.gm(GMS[0])
    before = gm.status(net.now)
    net.inject(old, (KS_ADDR, 848), GMS[0])
    ev = net.events[GMS[0]][-1]
    assert isinstance(ev, MessageRejected) and ev.reason == "replayed"
    assert gm.status(net.now).teks == before.teks
    n = len(net.events[GMS[0]])
    net.inject(latest, (KS_ADDR, 848), GMS[0])  # a duplicate of the newest: acknowledged again, not applied
    assert len(net.events[GMS[0]]) == n
    assert gm.status(net.now).rekey_acks_sent == before.rekey_acks_sent + 1


def test_half_open_flood_is_bounded_and_a_member_still_registers() -> None:
    attacker = "127.0.0.99"
    net = make_lab(1, start=False, max_half_open=5, ks_psk_for=[GMS[0], attacker])
    rnd = seeded_random(77)
    for _ in range(20):
        msg1 = MainModeInitiator((FAST_POLICY,), PSK, attacker, KS_ADDR, rnd).first_message()
        net.inject(msg1, (attacker, 848), KS_ADDR)
    net.ks().datagrams_to_send(net.now)  # the attacker never answers
    status = net.ks().status(net.now)
    assert status.rejected == {}  # answered, but without keeping state beyond the first five
    assert status.registration.stateless_replies == {"table-busy": 15}
    assert status.registration.half_open == 5
    net.gm(GMS[0]).start(net.now)
    net.run_until(120)
    assert len(net.of_type(GMS[0], Registered)) == 1
    assert len(net.of_type(KS_ADDR, MemberRegistered)) == 1


def test_legacy_3des_md5_modp1024_seed_config() -> None:
    group = group_policy(
        transform=TekTransform.ESP_3DES_MD5, kek_cipher=Phase1Cipher.TRIPLE_DES, replay_time_window_s=5
    )
    net = make_lab(2, group=group, ks_policies=(LEGACY_POLICY,), gm_policies=(LEGACY_POLICY,))
    (ev,) = installed(net, GMS[0])
    assert ev.sa.transform is TekTransform.ESP_3DES_MD5
    assert len(ev.sa.encryption_key) == 24 and len(ev.sa.integrity_key) == 16
    assert ev.sa.replay_time_window_s == 5
    kek = net.gm(GMS[0]).status(net.now).kek
    assert kek is not None and kek.cipher is Phase1Cipher.TRIPLE_DES and kek.key_size_bits == 192
    assert kek.sig_hash == "HMAC_AUTH_SHA" and kek.sig_key_bits == 1024
    net.ks().force_rekey(net.now)
    net.advance(1)
    assert all(m.rekey_acks == 1 for m in net.ks().status(net.now).groups[0].members)


def test_legacy_proposal_is_refused_unless_configured() -> None:
    net = make_lab(1, gm_policies=(LEGACY_POLICY,))
    net.run_until(5)
    assert net.ks().status(net.now).rejected.get("no-proposal", 0) >= 1
    assert not net.of_type(GMS[0], Registered)


@pytest.mark.parametrize("transform", list(TekTransform))
def test_every_tek_transform(transform: TekTransform) -> None:
    net = make_lab(1, group=group_policy(transform=transform))
    net.ks().force_rekey(net.now)
    net.advance(1)
    evs = installed(net, GMS[0])
    assert len(evs) == 2
    sizes = {
        TekTransform.ESP_3DES_MD5: (24, 16),
        TekTransform.ESP_AES128_SHA1: (16, 20),
        TekTransform.ESP_AES256_SHA1: (32, 20),
        TekTransform.ESP_AES128_SHA256: (16, 32),
        TekTransform.ESP_AES256_SHA256: (32, 32),
        TekTransform.ESP_GCM128: (20, 0),
        TekTransform.ESP_GCM256: (36, 0),
        TekTransform.ESP_3DES_SHA1: (24, 20),
        TekTransform.ESP_3DES_SHA256: (24, 32),
        TekTransform.ESP_3DES_SHA384: (24, 48),
        TekTransform.ESP_3DES_SHA512: (24, 64),
        TekTransform.ESP_AES128_MD5: (16, 16),
        TekTransform.ESP_AES128_SHA384: (16, 48),
        TekTransform.ESP_AES128_SHA512: (16, 64),
        TekTransform.ESP_AES192_MD5: (24, 16),
        TekTransform.ESP_AES192_SHA1: (24, 20),
        TekTransform.ESP_AES192_SHA256: (24, 32),
        TekTransform.ESP_AES192_SHA384: (24, 48),
        TekTransform.ESP_AES192_SHA512: (24, 64),
        TekTransform.ESP_AES256_MD5: (32, 16),
        TekTransform.ESP_AES256_SHA384: (32, 48),
        TekTransform.ESP_AES256_SHA512: (32, 64),
        TekTransform.ESP_GCM192: (28, 0),
    }[transform]
    for ev in evs:
        assert ev.sa.transform is transform
        assert (len(ev.sa.encryption_key), len(ev.sa.integrity_key)) == sizes


def test_multicast_rekey_reaches_all_without_acks() -> None:
    group = group_policy(rekey_transport=RekeyTransport.MULTICAST, rekey_multicast_address="239.192.1.1")
    net = make_lab(2, group=group)
    net.ks().force_rekey(net.now)
    net.advance(1)
    assert [c.dst[0] for c in net.captured if c.data[18] == ExchangeType.GROUPKEY_PUSH] == ["239.192.1.1"]
    for gm in GMS[:2]:
        assert len(installed(net, gm)) == 2
        st = net.gm(gm).status(net.now)
        assert st.rekey_acks_sent == 0 and st.kek is not None and st.kek.transport is RekeyTransport.MULTICAST
    net.advance(100)
    assert not net.of_type(KS_ADDR, MemberDropped)


def test_the_kek_names_the_multicast_rekey_group() -> None:
    # RFC 6407 section 5.3: the SA KEK's destination ID is the rekey group; the GM daemon joins it.
    group = group_policy(rekey_transport=RekeyTransport.MULTICAST, rekey_multicast_address="239.192.1.1")
    net = make_lab(1, group=group)
    gm_kek = net.gm(GMS[0]).status(net.now).kek
    assert gm_kek is not None and gm_kek.multicast_address == "239.192.1.1"
    assert net.ks().status(net.now).groups[0].kek.multicast_address == "239.192.1.1"
    unicast = make_lab(1)
    gm_kek = unicast.gm(GMS[0]).status(unicast.now).kek
    assert gm_kek is not None and gm_kek.multicast_address is None
    assert unicast.ks().status(unicast.now).groups[0].kek.multicast_address is None


def test_kek_rollover() -> None:
    net = make_lab(2, group=group_policy(kek_lifetime_s=600, tek_lifetime_s=3600, rekey_ahead_s=90))
    kek1 = net.gm(GMS[0]).status(net.now).kek
    net.run_until(520)
    kek2 = net.gm(GMS[0]).status(net.now).kek
    assert kek1 is not None and kek2 is not None and kek1.spi != kek2.spi
    assert kek2.spi == net.ks().status(net.now).groups[0].kek.spi
    net.ks().force_rekey(net.now)
    net.advance(1)
    assert len(net.of_type(GMS[0], RekeyReceived)) == 2
    assert all(m.rekey_acks == 2 for m in net.ks().status(net.now).groups[0].members)


@pytest.mark.parametrize("target", [KS_ADDR, GMS[0]])
def test_garbage_is_rejected_once_and_changes_nothing(target: str) -> None:
    net = make_lab(1)
    node = net.nodes[target]
    before = node.status(net.now)
    for i, junk in enumerate([b"", b"\x00", b"x" * 27, b"\xff" * 28, bytes(range(256)) * 3]):
        net.inject(junk, ("10.9.9.9", 848), target)
        rejects = net.of_type(target, MessageRejected)
        assert len(rejects) == i + 1
    after = node.status(net.now)
    assert after.rejected == {"malformed": 5}
    assert after.isakmp_sas == before.isakmp_sas


def test_gm_without_psk_for_its_server_reports_failure() -> None:
    conf = GroupMemberConfig("127.0.0.50", "G", 123, (KS_ADDR,), {})
    gm = GroupMember(conf, random=seeded_random(5))
    gm.start(0.0)
    ev = gm.next_event()
    assert isinstance(ev, RegistrationFailed) and "pre-shared key" in ev.reason
    assert gm.get_timer() == pytest.approx(conf.registration_retry_s)


def test_stop_expires_every_tek() -> None:
    net = make_lab(1)
    net.ks().force_rekey(net.now)
    net.advance(1)
    gm = net.gm(GMS[0])
    spis = {t.spi for t in gm.status(net.now).teks}
    gm.stop(net.now)
    net.flush()
    assert {e.spi for e in net.of_type(GMS[0], TekExpired)} == spis  # type: ignore[attr-defined]
    assert gm.get_timer() is None and not gm.status(net.now).registered


# --- The key server's indexes (scaling) -----------------------------------------------------------


def _check_ks_indexes(net: Network) -> None:
    """The KS's deadline heaps, per-address SA index and half-open counter agree with full scans."""
    ks = net.ks()
    assert ks._half_open() == len(ks._phase1) + sum(not p.done for p in ks._pulls.values())
    by_ip: dict[str, set[bytes]] = {}
    for cookies, ike in ks._ikes.items():
        by_ip.setdefault(ike.addr[0], set()).add(cookies)
    assert ks._ikes_by_ip == by_ip
    p1_times = [p.started_at + 30.0 for p in ks._phase1.values()]
    pull_times = [p.started_at + 30.0 for p in ks._pulls.values()]
    ike_times = [min(i.sa.expires_at(), i.last_used + REGISTRATION_SA_IDLE_S) for i in ks._ikes.values()]
    per_ip: dict[str, int] = {}
    for ip, _icookie in ks._phase1:
        per_ip[ip] = per_ip.get(ip, 0) + 1
    for pull in ks._pulls.values():
        if not pull.done:
            per_ip[pull.peer] = per_ip.get(pull.peer, 0) + 1
    assert dict(ks._half_open_by_ip) == per_ip
    assert all(k in ks._phase1 and ks._phase1[k].responder.state is MainModeState.WAIT_MSG3 for k in ks._awaiting_msg3)
    assert ks._phase1_deadlines.next() == min(p1_times, default=None)
    assert ks._pull_deadlines.next() == min(pull_times, default=None)
    assert ks._ike_deadlines.next() == min(ike_times, default=None)


def test_key_server_indexes_follow_reregistration_expiry_and_half_open_timeouts() -> None:
    short = FAST_POLICY.__class__(priority=10, group=FAST_POLICY.group, lifetime_s=600)
    net = make_lab(3, group=group_policy(tek_lifetime_s=300, rekey_ahead_s=30), ks_policies=(short,))
    window = {"deaf": (0.0, 0.0)}

    def drop(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        if dst[0] == GMS[0] and data[18] == ExchangeType.GROUPKEY_PUSH and net.now < 1200:
            return True  # GM 0 misses rekeys, so it registers again under a new ISAKMP SA
        start, end = window["deaf"]
        return dst[0] == GMS[1] and start <= net.now < end  # GM 1 hears nothing: half-open registrations

    net.drop = drop
    _check_ks_indexes(net)
    for step in range(60):
        if step == 30:
            window["deaf"] = (net.now, net.now + 45)
            net.gm(GMS[1]).stop(net.now)
            net.gm(GMS[1]).start(net.now)
        net.advance(50)
        _check_ks_indexes(net)
    ks = net.ks()
    assert len(net.of_type(KS_ADDR, MemberRegistered)) > 4  # re-registrations happened
    assert len(net.of_type(GMS[1], RegistrationFailed)) >= 1  # a registration was left half-open
    assert ks._half_open() == 0 and not ks._phase1
    assert set(ks._ikes_by_ip) <= set(GMS) and all(len(c) == 1 for c in ks._ikes_by_ip.values())


def test_deadline_heap_skips_stale_entries_and_stays_small() -> None:
    from dataclasses import dataclass

    from dmvpn_lab.gdoi.engine import Deadlines

    @dataclass
    class Rec:
        at: float

    table: dict[int, Rec] = {}
    deadlines = Deadlines(table, lambda r: r.at)
    for key in range(10):
        table[key] = Rec(100.0 + key)
        deadlines.push(key, table[key])
    for moves in range(1000):  # deadlines that keep moving leave stale entries behind
        rec = table[moves % 10]
        rec.at += 10.0
        deadlines.push(moves % 10, rec)
    assert len(deadlines._heap) <= 2 * len(table) + 64 + 1
    del table[3]
    assert deadlines.next() == min(r.at for r in table.values())
    cutoff = min(r.at for r in table.values()) + 4.5
    due = sorted((r.at, k) for k, r in table.items() if r.at <= cutoff)
    gone = deadlines.expire(cutoff)
    assert [k for k, _ in gone] == [k for _, k in due] and len(due) >= 2  # earliest first, 3 not among them
    assert all(k not in table for k, _ in gone)
    assert deadlines.next() == min(r.at for r in table.values())


def test_wrong_psk_failure_names_the_likely_cause_and_what_to_check() -> None:
    net = make_lab(1, gm_psk=b"not-cisco")
    net.run_until(30)
    fail = net.of_type(GMS[0], RegistrationFailed)[0]
    assert isinstance(fail, RegistrationFailed)
    assert "message 5" in fail.reason and "wrong pre-shared key" in fail.reason
    # what to check, on both sides, with the addresses filled in
    assert f"crypto isakmp key K address {KS_ADDR}" in fail.reason
    assert f"crypto isakmp key K address {GMS[0]}" in fail.reason


def test_key_server_without_a_key_for_the_member_is_named_as_a_cause_of_silence() -> None:
    net = make_lab(1, ks_psk_for=[])
    net.run_until(30)
    fail = net.of_type(GMS[0], RegistrationFailed)[0]
    assert isinstance(fail, RegistrationFailed)
    assert "message 1" in fail.reason and f"no pre-shared key for {GMS[0]}" in fail.reason


def test_wildcard_key_on_the_key_server_registers_any_member() -> None:
    net = make_lab(2, ks_psk_for=["0.0.0.0"])
    net.run_until(30)
    assert all(net.of_type(gm, Registered) for gm in GMS[:2])


def test_deny_lines_reach_members_as_clear_text_selectors_in_registration_and_rekey() -> None:
    deny = TrafficSelector(47, "192.168.1.0/24", "192.168.2.0/24", permit=False)
    net = make_lab(1, group=group_policy(selectors=(deny, TrafficSelector())))
    net.run_until(5)
    (first,) = installed(net, GMS[0])
    assert first.sa.selectors == (deny, TrafficSelector())  # order and action survive the SA TEK payloads
    net.ks().force_rekey(net.now)
    net.flush()
    assert installed(net, GMS[0])[-1].sa.selectors == (deny, TrafficSelector())
    assert [s.permit for s in net.gm(GMS[0]).status(net.now).selectors] == [False, True]
