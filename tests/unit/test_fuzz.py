"""Hypothesis fuzzing: the decoder raises only DecodeError; the engines only ever reject."""

from __future__ import annotations

import contextlib
from functools import lru_cache

from engine_harness import KS_ADDR, Network, make_lab
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmvpn_lab.gdoi.codec import DecodeError, decode_message, decode_payloads
from dmvpn_lab.gdoi.model import MessageRejected

GM = "127.0.0.11"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def captured() -> tuple[bytes, ...]:
    """Every datagram of a registration, a rekey and its acknowledgements (deterministic seeds)."""
    net = make_lab(2)
    net.ks().force_rekey(net.now)
    net.advance(1)
    return tuple(c.data for c in net.captured)


def registered_lab() -> Network:
    net = make_lab(1)
    net.ks().force_rekey(net.now)
    net.advance(1)
    return net


@SETTINGS
@given(st.binary(max_size=2048))
def test_decode_message_random_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else escaping fails the test
        decode_message(data)


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=1024), st.booleans(), st.booleans())
def test_decode_payloads_random_bytes(first: int, data: bytes, gdoi_sa: bool, padded: bool) -> None:
    with contextlib.suppress(DecodeError):
        decode_payloads(first, data, gdoi_sa=gdoi_sa, padded=padded)


def _mutate(data: bytes, flips: list[int], cut: int | None) -> bytes:
    buf = bytearray(data)
    for bit in flips:
        buf[(bit // 8) % len(buf)] ^= 1 << (bit % 8)
    if cut is not None:
        buf = buf[: cut % (len(buf) + 1)]
    return bytes(buf)


def _deliver_and_check(net: Network, target: str, data: bytes, src: str) -> None:
    node = net.nodes[target]
    before = len(net.events[target])
    node.receive_datagram(data, (src, 848), net.now)  # must not raise
    net._drain_events()
    new = net.events[target][before:]
    rejects = [e for e in new if isinstance(e, MessageRejected)]
    assert len(rejects) <= 1
    if rejects:
        assert new == rejects  # a rejected datagram produces nothing else
        assert rejects[0].reason != "internal-error", rejects[0].detail


@SETTINGS
@given(st.binary(max_size=1500), st.sampled_from([KS_ADDR, GM]))
def test_engines_reject_random_bytes(data: bytes, target: str) -> None:
    net = registered_lab()
    before = len(net.events[target])
    net.nodes[target].receive_datagram(data, ("10.0.0.1", 848), net.now)
    net._drain_events()
    new = net.events[target][before:]
    assert len(new) == 1 and isinstance(new[0], MessageRejected)


@SETTINGS
@given(
    st.integers(0, 10_000),
    st.lists(st.integers(0, 1 << 20), max_size=4),
    st.one_of(st.none(), st.integers(0, 4096)),
    st.sampled_from([KS_ADDR, GM]),
)
def test_engines_survive_mutated_real_messages(
    index: int, flips: list[int], cut: int | None, target: str
) -> None:
    msgs = captured()
    data = _mutate(msgs[index % len(msgs)], flips, cut)
    net = registered_lab()
    src = KS_ADDR if target == GM else GM
    _deliver_and_check(net, target, data, src)
