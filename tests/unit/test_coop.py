"""Cooperative key servers (COOP) on the in-memory network with a fake clock.

Proves the promises of docs/coop.md: one primary elected by priority then address; secondaries hold the
primary's keys, policy and members; a secondary takes over after the dead time with the same keys, so
members see no change; a key server coming back does not pre-empt; two primaries that meet after a
partition end as one, with one key set; a forged, altered or replayed COOP message is refused and counted.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from engine_harness import FAST_POLICY, PSK, Captured, Network, group_policy, rsa_key, seeded_random

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.codec import Header
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig, Redundancy
from dmvpn_lab.gdoi.constants import ExchangeType
from dmvpn_lab.gdoi.coop import CoopState
from dmvpn_lab.gdoi.events import CoopRoleChanged, MessageRejected, Registered, RegistrationFailed, RekeyReceived
from dmvpn_lab.gdoi.gm import GmState, GroupMember
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.model import GDOI_PORT

ANNOUNCE_S = 2.0
DEAD_S = 6.0


def ks_address(i: int) -> str:
    return f"127.0.0.{i + 1}"


def gm_address(i: int) -> str:
    return f"127.0.0.{11 + i}"


def make_ks(
    index: int, priorities: list[int], n_gms: int, *, seed: int, now: float = 0.0, **group: object
) -> KeyServer:
    """Key server ``index`` of a cooperating set; each starts with its own signing key and keys."""
    me = ks_address(index)
    peers = tuple(ks_address(j) for j in range(len(priorities)) if j != index)
    psk = {a: PSK for a in [*peers, *(gm_address(i) for i in range(n_gms))]}
    policy = group_policy(**group)
    config = KeyServerConfig(
        me,
        (policy,),
        psk,
        (FAST_POLICY,),
        redundancy=Redundancy(peers, priorities[index], ANNOUNCE_S, DEAD_S),
    )
    return KeyServer(config, {policy.rsa_key_label: rsa_key(index + 1)}, random=seeded_random(seed), now=now)


def coop_lab(priorities: list[int], n_gms: int = 0, *, servers: list[int] | None = None, **group: object) -> Network:
    """Key servers at 127.0.0.1.. with ``priorities``; members at 127.0.0.11.. listing ``servers``."""
    net = Network()
    for index in range(len(priorities)):
        net.add(ks_address(index), make_ks(index, priorities, n_gms, seed=100 + index, **group))
    order = servers if servers is not None else list(range(len(priorities)))
    for i in range(n_gms):
        conf = GroupMemberConfig(
            gm_address(i),
            "GDOI_GM",
            123,
            tuple(ks_address(j) for j in order),
            {ks_address(j): PSK for j in order},
            (FAST_POLICY,),
            registration_retry_s=2.0,
        )
        net.add(gm_address(i), GroupMember(conf, random=seeded_random(500 + i)))
    return net


def start_members(net: Network) -> None:
    for node in net.nodes.values():
        if isinstance(node, GroupMember):
            node.start(net.now)


def coop_state(net: Network, address: str) -> CoopState:
    coop = net.ks(address)._coop
    assert coop is not None
    return coop.state


def roles(net: Network) -> dict[str, CoopState]:
    return {a: coop_state(net, a) for a, n in net.nodes.items() if isinstance(n, KeyServer)}


def key_set(ks: KeyServer) -> tuple[object, ...]:
    """What members would be handed: TEK SPIs and keys, KEK SPI and key, signing key, sequence."""
    group = ks._groups["GDOI_GROUP"]
    return (
        tuple((t.spi, t.encryption_key) for t in group.teks),
        group.kek.spi,
        group.kek.key.key,
        group.signing_key.public_key().public_numbers(),
        group.sequence,
    )


def member_teks(net: Network, address: str) -> set[int]:
    return set(net.gm(address)._teks)


def newest_tek(ks: KeyServer) -> int:
    return ks._groups["GDOI_GROUP"].teks[-1].spi


def partition(net: Network, side_a: set[str]) -> None:
    """Lose every datagram between ``side_a`` and the rest."""
    net.drop = lambda src, dst, _data: (src[0] in side_a) != (dst[0] in side_a)


def test_election_highest_priority_then_highest_address_and_everyone_holds_its_keys() -> None:
    net = coop_lab([10, 20, 20, 5])
    net.advance(3 * ANNOUNCE_S)
    assert roles(net) == {
        "127.0.0.1": CoopState.SECONDARY,
        "127.0.0.2": CoopState.SECONDARY,
        "127.0.0.3": CoopState.PRIMARY,  # priority 20 as .2, but the higher address
        "127.0.0.4": CoopState.SECONDARY,
    }
    primary = key_set(net.ks("127.0.0.3"))
    assert all(key_set(net.ks(a)) == primary for a in net.nodes)
    status = net.ks("127.0.0.1").status(net.now).coop
    assert status is not None and status.primary == "127.0.0.3" and status.role == "Secondary"
    assert {p.address: p.role for p in status.peers}["127.0.0.3"] == "Primary"
    assert all(p.alive for p in status.peers)


def test_secondaries_follow_every_rekey_and_registration_of_the_primary() -> None:
    net = coop_lab([100, 50], n_gms=2)
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    assert all(net.gm(gm_address(i)).state is GmState.REGISTERED for i in range(2))
    net.ks("127.0.0.1").force_rekey(net.now)
    net.advance(1)
    assert key_set(net.ks("127.0.0.2")) == key_set(net.ks("127.0.0.1"))
    assert set(net.ks("127.0.0.2")._groups["GDOI_GROUP"].members) == {gm_address(0), gm_address(1)}
    with pytest.raises(ValueError, match="secondary"):
        net.ks("127.0.0.2").force_rekey(net.now)


def test_primary_dies_secondary_takes_over_after_dead_time_with_the_same_keys() -> None:
    net = coop_lab([100, 50, 10], n_gms=3)
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    before = key_set(net.ks("127.0.0.2"))
    teks_before = member_teks(net, gm_address(0))
    del net.nodes["127.0.0.1"]  # the primary is gone: its datagrams and those sent to it vanish
    net.advance(DEAD_S - ANNOUNCE_S - 0.5)  # last heard at most one announce period before it died
    assert coop_state(net, "127.0.0.2") is CoopState.SECONDARY  # not yet: it may only be slow
    net.advance(2 + ANNOUNCE_S)
    assert roles(net) == {"127.0.0.2": CoopState.PRIMARY, "127.0.0.3": CoopState.SECONDARY}
    assert key_set(net.ks("127.0.0.2")) == before
    took_over = net.of_type("127.0.0.2", CoopRoleChanged)[-1]
    assert isinstance(took_over, CoopRoleChanged) and took_over.state == "PRIMARY"
    assert took_over.reason == "primary 127.0.0.1 silent for 6 s: taking over with the keys held"
    # Members saw nothing: same TEKs, still registered, no registration since.
    for i in range(3):
        gm = net.gm(gm_address(i))
        assert gm.state is GmState.REGISTERED and member_teks(net, gm_address(i)) == teks_before
    registered_before = len(net.of_type(gm_address(0), Registered))
    # The next rekey comes from the new primary, under the KEK the members hold, and they take it.
    net.ks("127.0.0.2").force_rekey(net.now)
    net.advance(1)
    new_tek = newest_tek(net.ks("127.0.0.2"))
    for i in range(3):
        assert new_tek in member_teks(net, gm_address(i))
        assert net.of_type(gm_address(i), RekeyReceived)
        # What `show crypto gdoi` tells a trainee: registered with the old primary, rekeyed by the new.
        status = net.gm(gm_address(i)).status(net.now)
        assert (status.active_server, status.last_rekey_from) == ("127.0.0.1", "127.0.0.2")
    assert len(net.of_type(gm_address(0), Registered)) == registered_before
    # Their acknowledgements reach the primary that sent the rekey, so nobody is dropped.
    members = net.ks("127.0.0.2")._groups["GDOI_GROUP"].members
    assert all(m.last_ack_sequence == net.ks("127.0.0.2")._groups["GDOI_GROUP"].sequence for m in members.values())
    assert key_set(net.ks("127.0.0.3")) == key_set(net.ks("127.0.0.2"))


def test_the_whole_day_runs_on_after_failover_rekeys_on_schedule() -> None:
    net = coop_lab([100, 50], n_gms=2, tek_lifetime_s=600)
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    del net.nodes["127.0.0.1"]
    net.advance(3 * 3600)
    survivor = net.ks("127.0.0.2")
    assert survivor._groups["GDOI_GROUP"].sequence >= 15
    for i in range(2):
        assert net.gm(gm_address(i)).state is GmState.REGISTERED
        assert newest_tek(survivor) in member_teks(net, gm_address(i))
    assert len(net.of_type(gm_address(0), Registered)) == 1  # never had to register again


def test_returning_former_primary_comes_back_as_secondary_and_learns_the_current_keys() -> None:
    net = coop_lab([100, 50], n_gms=1)
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    del net.nodes["127.0.0.1"]
    net.advance(DEAD_S + ANNOUNCE_S)
    net.ks("127.0.0.2").force_rekey(net.now)
    net.advance(1)
    current = key_set(net.ks("127.0.0.2"))
    # The old primary restarts: a new run, its own fresh keys, the higher priority.
    net.add("127.0.0.1", make_ks(0, [100, 50], 1, seed=999, now=net.now))
    net.advance(4 * ANNOUNCE_S)
    assert roles(net) == {"127.0.0.1": CoopState.SECONDARY, "127.0.0.2": CoopState.PRIMARY}
    assert key_set(net.ks("127.0.0.1")) == current == key_set(net.ks("127.0.0.2"))


def test_partition_heal_ends_with_one_primary_and_one_key_set_members_included() -> None:
    net = coop_lab([100, 50], n_gms=2, servers=[0, 1])
    # Member 1 prefers the second key server, so each side of the coming partition has a member.
    second = net.gm(gm_address(1))
    net.nodes[gm_address(1)] = GroupMember(
        replace(second.config, servers=("127.0.0.2", "127.0.0.1")), random=seeded_random(77)
    )
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    partition(net, {"127.0.0.1", gm_address(0)})
    net.advance(DEAD_S + 2 * ANNOUNCE_S)
    assert roles(net) == {"127.0.0.1": CoopState.PRIMARY, "127.0.0.2": CoopState.PRIMARY}  # split brain
    net.ks("127.0.0.1").force_rekey(net.now)
    net.ks("127.0.0.2").force_rekey(net.now)
    net.ks("127.0.0.2").force_rekey(net.now)
    net.advance(1)
    assert newest_tek(net.ks("127.0.0.1")) != newest_tek(net.ks("127.0.0.2"))
    net.drop = None  # the partition heals
    net.advance(3 * ANNOUNCE_S)
    assert sorted(roles(net).values(), key=lambda s: s.name) == [CoopState.PRIMARY, CoopState.SECONDARY]
    assert roles(net)["127.0.0.1"] is CoopState.PRIMARY  # the higher priority keeps the role
    assert key_set(net.ks("127.0.0.1")) == key_set(net.ks("127.0.0.2"))
    tek = newest_tek(net.ks("127.0.0.1"))
    assert all(tek in member_teks(net, gm_address(i)) for i in range(2))
    # The merged primary knows both members, and a later rekey reaches both.
    assert set(net.ks("127.0.0.1")._groups["GDOI_GROUP"].members) == {gm_address(0), gm_address(1)}
    net.ks("127.0.0.1").force_rekey(net.now)
    net.advance(1)
    tek = newest_tek(net.ks("127.0.0.1"))
    assert all(tek in member_teks(net, gm_address(i)) for i in range(2))


def test_partition_of_never_synced_key_servers_heals_with_a_handover_push() -> None:
    """Two key servers that started apart made different KEKs and signing keys: the members of the one
    that yields get the winner's KEK in a push under the KEK they hold."""
    net = coop_lab([50, 100], n_gms=2)
    second = net.gm(gm_address(1))
    net.nodes[gm_address(1)] = GroupMember(
        replace(second.config, servers=("127.0.0.2", "127.0.0.1")), random=seeded_random(78)
    )
    partition(net, {"127.0.0.1", gm_address(0)})
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    assert net.ks("127.0.0.1")._groups["GDOI_GROUP"].kek.spi != net.ks("127.0.0.2")._groups["GDOI_GROUP"].kek.spi
    net.drop = None
    net.advance(3 * ANNOUNCE_S)
    assert roles(net) == {"127.0.0.1": CoopState.SECONDARY, "127.0.0.2": CoopState.PRIMARY}
    net.ks("127.0.0.2").force_rekey(net.now)
    net.advance(1)
    tek = newest_tek(net.ks("127.0.0.2"))
    assert all(tek in member_teks(net, gm_address(i)) for i in range(2))


def test_member_fails_over_to_the_secondary_when_its_key_server_is_gone() -> None:
    net = coop_lab([100, 50], n_gms=1, tek_lifetime_s=600)
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    gm = net.gm(gm_address(0))
    assert gm.status(net.now).active_server == "127.0.0.1"
    teks_before = member_teks(net, gm_address(0))
    # The primary dies, and the new primary's rekeys do not reach the member: it must fetch its keys by
    # registering again near the TEK's end, and the first server on its list does not answer.
    del net.nodes["127.0.0.1"]
    net.drop = lambda src, dst, data: (
        src[0] == "127.0.0.2" and dst[0] == gm_address(0) and Header.decode(data).exchange == ExchangeType.GROUPKEY_PUSH
    )
    net.advance(DEAD_S + ANNOUNCE_S)
    assert coop_state(net, "127.0.0.2") is CoopState.PRIMARY
    net.advance(600)
    assert gm.state is GmState.REGISTERED
    assert gm.status(net.now).active_server == "127.0.0.2"
    assert len(net.of_type(gm_address(0), Registered)) == 2
    assert net.of_type(gm_address(0), RegistrationFailed)[-1].server == "127.0.0.1"
    survivor = net.ks("127.0.0.2")
    assert newest_tek(survivor) in member_teks(net, gm_address(0))
    assert teks_before <= {t.spi for t in survivor._groups["GDOI_GROUP"].teks} | teks_before


def test_member_registers_with_the_first_key_server_that_answers() -> None:
    net = coop_lab([100, 50], n_gms=1)
    net.advance(3 * ANNOUNCE_S)
    del net.nodes["127.0.0.1"]
    net.advance(DEAD_S + ANNOUNCE_S)
    start_members(net)
    net.advance(60)
    gm = net.gm(gm_address(0))
    assert gm.state is GmState.REGISTERED and gm.status(net.now).active_server == "127.0.0.2"


def test_member_registered_with_a_secondary_is_rekeyed_by_the_primary() -> None:
    net = coop_lab([100, 50], n_gms=1, servers=[1, 0])
    net.advance(3 * ANNOUNCE_S)
    start_members(net)
    net.advance(5)
    assert net.gm(gm_address(0)).status(net.now).active_server == "127.0.0.2"
    primary = net.ks("127.0.0.1")
    assert gm_address(0) in primary._groups["GDOI_GROUP"].members
    primary.force_rekey(net.now)
    net.advance(1)
    assert newest_tek(primary) in member_teks(net, gm_address(0))
    member = primary._groups["GDOI_GROUP"].members[gm_address(0)]
    assert member.last_ack_sequence == primary._groups["GDOI_GROUP"].sequence  # its ACK came to the primary


def _coop_datagrams(net: Network, src: str, dst: str) -> list[Captured]:
    return [
        c
        for c in net.captured
        if c.src[0] == src and c.dst[0] == dst and Header.decode(c.data).exchange == ExchangeType.COOP
    ]


def test_altered_forged_and_replayed_coop_messages_are_refused_and_change_nothing() -> None:
    net = coop_lab([100, 50])
    net.advance(3 * ANNOUNCE_S)
    secondary = net.ks("127.0.0.2")
    before = key_set(secondary)
    # Hold back the primary's next state message: the attacker has it before the secondary does.
    held: list[bytes] = []

    def hold_state(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        if src[0] == "127.0.0.1" and dst[0] == "127.0.0.2" and len(data) > 500 and not held:
            held.append(data)
            return True
        return False

    net.drop = hold_state
    net.ks("127.0.0.1").force_rekey(net.now)
    net.advance(1)
    net.drop = None
    assert held
    original = held[0]

    altered = bytearray(original)
    altered[-40] ^= 0x01  # one bit of the encrypted body
    net.inject(bytes(altered), ("127.0.0.1", GDOI_PORT), "127.0.0.2")
    renumbered = bytearray(original)
    renumbered[39] ^= 0x01  # the sequence number, authenticated though in clear
    net.inject(bytes(renumbered), ("127.0.0.1", GDOI_PORT), "127.0.0.2")
    net.inject(original, ("127.0.0.9", GDOI_PORT), "127.0.0.2")  # from no peer
    assert key_set(secondary) == before and coop_state(net, "127.0.0.2") is CoopState.SECONDARY

    net.inject(original, ("127.0.0.1", GDOI_PORT), "127.0.0.2")  # the genuine one, late: taken
    assert key_set(secondary) == key_set(net.ks("127.0.0.1")) != before
    net.inject(original, ("127.0.0.1", GDOI_PORT), "127.0.0.2")  # played back

    rejected = net.of_type("127.0.0.2", MessageRejected)
    assert [r.reason for r in rejected] == ["bad-hash", "bad-hash", "unknown-peer", "replayed"]
    assert "does not authenticate" in rejected[0].detail
    assert secondary.status(net.now).rejected == {"bad-hash": 2, "replayed": 1, "unknown-peer": 1}


def test_a_key_server_with_another_pre_shared_key_cannot_join() -> None:
    net = coop_lab([100, 50])
    impostor = net.ks("127.0.0.2")
    conf = replace(impostor.config, psk_by_peer={"127.0.0.1": b"guess"})
    net.nodes["127.0.0.2"] = KeyServer(conf, {"GDOI_KEYS": rsa_key(2)}, random=seeded_random(5))
    net.advance(4 * ANNOUNCE_S)
    assert coop_state(net, "127.0.0.1") is CoopState.PRIMARY
    reasons = {r.reason for r in net.of_type("127.0.0.1", MessageRejected)}
    assert reasons == {"bad-hash"}
    assert key_set(net.ks("127.0.0.2")) != key_set(net.ks("127.0.0.1"))


@pytest.mark.parametrize("cut", [0, 10, 27, 40, -1])
def test_truncated_coop_message_is_malformed_not_a_crash(cut: int) -> None:
    net = coop_lab([100, 50])
    net.advance(3 * ANNOUNCE_S)
    last = _coop_datagrams(net, "127.0.0.1", "127.0.0.2")[-1].data
    net.inject(last[:cut], ("127.0.0.1", GDOI_PORT), "127.0.0.2")
    rejected = net.of_type("127.0.0.2", MessageRejected)
    assert len(rejected) == 1 and rejected[0].reason in ("malformed", "bad-hash")


def test_show_crypto_gdoi_ks_coop_text_and_json_survive_the_control_socket() -> None:
    net = coop_lab([100, 50])
    net.advance(3 * ANNOUNCE_S)
    views = {a: show.KsView(status=net.ks(a).status(net.now), now=net.now) for a in ("127.0.0.1", "127.0.0.2")}
    command = show.find_command(["cry", "gd", "ks", "coop"])
    assert command is not None
    for address, view in views.items():
        view = show.view_from_json(show.view_to_json(view))  # what `gdoi show` gets over the socket
        assert isinstance(view, show.KsView)
        data = show.render(command, view, as_json=True)
        assert isinstance(data, dict) and data["coop"]["primary"] == "127.0.0.1"
        (peer,) = data["coop"]["peers"]
        assert peer["alive"] and peer["in_sync"]
        text = show.render(command, view, as_json=False)
        assert isinstance(text, str)
        assert "Crypto Gdoi Group Name :GDOI_GROUP" in text
        role = "Primary" if address == "127.0.0.1" else "Secondary"
        assert f"Local KS Role: {role:<10}, Local KS Status: Alive" in text
        assert "Peer KS Status: Alive" in text and "in sync" in text
    lone = show.KsView(status=replace(views["127.0.0.1"].status, coop=None), now=net.now)
    assert "not configured" in str(show.render(command, lone, as_json=False))


def test_state_from_a_key_server_serving_other_groups_is_refused_whole() -> None:
    net = coop_lab([100, 50])
    other = net.ks("127.0.0.2")
    policy = replace(group_policy(), name="OTHER_GROUP", identity=9)
    conf = replace(other.config, groups=(policy,))
    net.nodes["127.0.0.2"] = KeyServer(conf, {"GDOI_KEYS": rsa_key(2)}, random=seeded_random(6))
    net.advance(4 * ANNOUNCE_S)
    refused = net.of_type("127.0.0.2", MessageRejected)
    assert refused and {r.reason for r in refused} == {"bad-policy"}
    assert "configurations differ" in refused[0].detail
    assert coop_state(net, "127.0.0.2") is CoopState.SYNCING  # it never takes keys it cannot serve
    assert coop_state(net, "127.0.0.1") is CoopState.PRIMARY


def test_a_lost_member_report_is_sent_again_when_the_primary_state_lacks_the_member() -> None:
    net = coop_lab([100, 50], n_gms=1, servers=[1, 0])
    net.advance(3 * ANNOUNCE_S)
    net.drop = lambda src, dst, data: (
        src[0] == "127.0.0.2" and dst[0] == "127.0.0.1" and Header.decode(data).exchange == ExchangeType.COOP
    )
    start_members(net)
    net.advance(1)  # registered with the secondary; its report to the primary is lost
    net.drop = None
    primary = net.ks("127.0.0.1")
    assert gm_address(0) not in primary._groups["GDOI_GROUP"].members
    primary.force_rekey(net.now)  # the state that follows does not list the member
    net.advance(1)
    assert gm_address(0) in net.ks("127.0.0.2")._groups["GDOI_GROUP"].members  # kept, and reported again
    assert gm_address(0) in primary._groups["GDOI_GROUP"].members
    primary.force_rekey(net.now)
    net.advance(1)
    assert newest_tek(primary) in member_teks(net, gm_address(0))


def test_random_damage_to_coop_messages_is_always_a_clean_refusal() -> None:
    net = coop_lab([100, 50])
    net.advance(3 * ANNOUNCE_S)
    sample = _coop_datagrams(net, "127.0.0.1", "127.0.0.2")[-1].data
    rng = seeded_random(42)
    for _ in range(300):
        damaged = bytearray(sample)
        for _flip in range(1 + rng(1)[0] % 4):
            position = int.from_bytes(rng(2), "big") % len(damaged)
            damaged[position] ^= 1 << (rng(1)[0] % 8)
        net.inject(bytes(damaged), ("127.0.0.1", GDOI_PORT), "127.0.0.2")
    reasons = {r.reason for r in net.of_type("127.0.0.2", MessageRejected)}
    assert reasons <= {"malformed", "bad-hash", "replayed", "unsupported-exchange"}, reasons
    assert coop_state(net, "127.0.0.2") is CoopState.SECONDARY
