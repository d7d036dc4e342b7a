"""A tiny in-memory network that wires GDOI engines back to back with a fake clock.

Every node is a sans-I/O engine (KeyServer or GroupMember) at an IPv4 address, port 848.  The
network moves datagrams between them until nothing is left to send, then jumps the clock to the
earliest engine timer.  Nothing sleeps: a day of rekeys runs in milliseconds.  Datagrams are
recorded (for pcaps and fuzzing), events are collected per node, and a ``drop`` hook lets a test
lose packets on purpose.
"""

from __future__ import annotations

import ipaddress
import random as pyrandom
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import rsa

from dmvpn_lab.gdoi.config_model import GroupMemberConfig, GroupPolicy, IsakmpPolicy, KeyServerConfig
from dmvpn_lab.gdoi.events import Event
from dmvpn_lab.gdoi.gm import GroupMember
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.model import GDOI_PORT, DhGroup, Phase1Cipher, Phase1Hash, TekTransform

Engine = KeyServer | GroupMember
Addr = tuple[str, int]

KS_ADDR = "127.0.0.1"
PSK = b"cisco"
FAST_POLICY = IsakmpPolicy(priority=10, group=DhGroup.ECP_256)
LEGACY_POLICY = IsakmpPolicy(
    priority=20, cipher=Phase1Cipher.TRIPLE_DES, hash=Phase1Hash.MD5, group=DhGroup.MODP_1024
)


@lru_cache(maxsize=4)
def rsa_key(seed: int = 0, bits: int = 1024) -> rsa.RSAPrivateKey:
    """Small RSA keys, generated once per test session (1024 bits keeps the suite fast)."""
    del seed
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def seeded_random(seed: int) -> Callable[[int], bytes]:
    rng = pyrandom.Random(seed)
    return rng.randbytes


@dataclass
class Captured:
    time: float
    src: Addr
    dst: Addr
    data: bytes


@dataclass
class Network:
    now: float = 0.0
    nodes: dict[str, Engine] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    captured: list[Captured] = field(default_factory=list)
    drop: Callable[[Addr, Addr, bytes], bool] | None = None
    delivered: int = 0

    def add(self, address: str, engine: Engine) -> Engine:
        self.nodes[address] = engine
        self.events.setdefault(address, [])
        return engine

    def gm(self, address: str) -> GroupMember:
        node = self.nodes[address]
        assert isinstance(node, GroupMember)
        return node

    def ks(self, address: str = KS_ADDR) -> KeyServer:
        node = self.nodes[address]
        assert isinstance(node, KeyServer)
        return node

    def inject(self, data: bytes, src: Addr, dst_ip: str) -> None:
        """Deliver a datagram from anywhere (an attacker, a replay) right now."""
        node = self.nodes[dst_ip]
        node.receive_datagram(data, src, self.now)
        self._drain_events()

    def _drain_events(self) -> None:
        for address, node in self.nodes.items():
            while (ev := node.next_event()) is not None:
                self.events[address].append(ev)

    def flush(self, max_rounds: int = 10000) -> None:
        for _ in range(max_rounds):
            moved = False
            for address, node in list(self.nodes.items()):
                for data, dst in node.datagrams_to_send(self.now):
                    moved = True
                    src = (address, GDOI_PORT)
                    self.captured.append(Captured(self.now, src, dst, data))
                    if self.drop is not None and self.drop(src, dst, data):
                        continue
                    targets = (
                        [a for a, n in self.nodes.items() if isinstance(n, GroupMember)]
                        if ipaddress.IPv4Address(dst[0]).is_multicast
                        else [dst[0]]
                        if dst[0] in self.nodes
                        else []
                    )
                    for t in targets:
                        self.nodes[t].receive_datagram(data, src, self.now)
                        self.delivered += 1
            self._drain_events()
            if not moved:
                return
        raise AssertionError("the network did not go quiet")

    def run_until(self, t: float) -> None:
        self.flush()
        while True:
            timers = [(n.get_timer(), n) for n in self.nodes.values()]
            due = [x for x in timers if x[0] is not None]
            nxt = min((x[0] for x in due if x[0] is not None), default=None)
            if nxt is None or nxt > t:
                break
            self.now = max(self.now, nxt)
            for when, node in due:
                if when is not None and when <= self.now:
                    node.handle_timer(self.now)
            self._drain_events()
            self.flush()
        self.now = max(self.now, t)
        self.flush()

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def of_type(self, address: str, cls: type) -> list[Event]:
        return [e for e in self.events[address] if isinstance(e, cls)]


def group_policy(**kw: object) -> GroupPolicy:
    base: dict[str, object] = dict(
        name="GDOI_GROUP",
        identity=123,
        transform=TekTransform.ESP_GCM256,
        tek_lifetime_s=3600,
        rekey_retransmit_interval_s=10,
        rekey_retransmit_count=2,
    )
    base.update(kw)
    return GroupPolicy(**base)  # type: ignore[arg-type]


def make_lab(
    n_gms: int = 3,
    *,
    group: GroupPolicy | None = None,
    ks_policies: tuple[IsakmpPolicy, ...] = (FAST_POLICY,),
    gm_policies: tuple[IsakmpPolicy, ...] = (FAST_POLICY,),
    gm_psk: bytes = PSK,
    ks_psk_for: list[str] | None = None,
    gm_identity: int | None = None,
    max_half_open: int = 1000,
    max_half_open_per_peer: int = 5,
    cookie_threshold: int = 10,
    max_missed_acks: int | None = None,
    signing_key: rsa.RSAPrivateKey | None = None,
    seed: int = 1,
    start: bool = True,
) -> Network:
    """A KS at 127.0.0.1 and GMs at 127.0.0.11, .12, ... registered (if ``start``) at t=0."""
    group = group or group_policy()
    gms = [f"127.0.0.{11 + i}" for i in range(n_gms)]
    psk_for = gms if ks_psk_for is None else ks_psk_for
    ks_conf = KeyServerConfig(
        KS_ADDR,
        (group,),
        {a: PSK for a in psk_for},
        ks_policies,
        max_half_open=max_half_open,
        max_half_open_per_peer=max_half_open_per_peer,
        cookie_threshold=cookie_threshold,
        max_missed_acks=max_missed_acks,
    )
    net = Network()
    net.add(
        KS_ADDR,
        KeyServer(
            ks_conf, {group.rsa_key_label: signing_key or rsa_key()}, random=seeded_random(seed), now=0.0
        ),
    )
    for i, address in enumerate(gms):
        conf = GroupMemberConfig(
            address,
            "GDOI_GM",
            group.identity if gm_identity is None else gm_identity,
            (KS_ADDR,),
            {KS_ADDR: gm_psk},
            gm_policies,
        )
        gm = GroupMember(conf, random=seeded_random(seed * 1000 + i))
        net.add(address, gm)
        if start:
            gm.start(net.now)
    net.flush()
    return net
