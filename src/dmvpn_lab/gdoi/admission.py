"""What lets a key server answer Main Mode message 1 without keeping state for it.

Why: UDP source addresses are free to forge and the pre-shared key is chosen by that address (RFC 2409
section 5.4), so whoever can send datagrams can make the key server start Main Modes "from" a member.
A key server that keeps state for every message 1 can be filled up from one forged address.  Instead,
under pressure, it answers message 1 statelessly and keeps state only once message 3 comes back under a
responder cookie that only a peer receiving at that address can know (the anti-clogging idea of Photuris,
RFC 2522 section 2.3, and of IKEv2's COOKIE, RFC 7296 section 2.6, fitted into IKEv1's 8-byte cookie).

Two pieces, both sans-I/O (time comes in as ``now``):

* :class:`CookieJar`: the responder cookie, ``epoch byte | HMAC-SHA256(secret_epoch, IP | port | CKY-I |
  SHA-256(SAi_b))[:7]``.  The secret of an epoch is derived from one random master key, so nothing
  rotates and nothing is stored per cookie; a cookie is accepted in its own epoch and the next one
  (``COOKIE_EPOCH_S`` to twice that).
* :class:`OfferBook`: the only thing message 3 cannot bring back is SAi_b, the initiator's SA payload
  body that HASH_I and HASH_R cover.  The book remembers a few recent distinct SA bodies per peer
  address (only addresses with a pre-shared key get one), pins the bodies that completed Main Mode, and
  knows without memory the body of a member whose policies equal the key server's.  The cookie names
  which body by its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import OrderedDict
from collections.abc import Iterator

COOKIE_EPOCH_S = 60.0  # a stateless cookie is good for 60 to 120 s: longer than a member's retries
RECENT_OFFERS_PER_PEER = 4  # SA bodies seen from an address but not (yet) proven by Main Mode
PROVEN_OFFERS_PER_PEER = 2  # SA bodies an address completed Main Mode with; only a later proof evicts

Addr = tuple[str, int]


class CookieJar:
    """Stateless responder cookies bound to the peer's address, port, initiator cookie and SA body."""

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key

    def _mac(self, epoch: int, peer: Addr, icookie: bytes, offer_digest: bytes) -> bytes:
        secret = hmac.digest(self._master, b"gdoi cookie epoch" + epoch.to_bytes(8, "big", signed=True), "sha256")
        message = ipaddress.IPv4Address(peer[0]).packed + peer[1].to_bytes(2, "big") + icookie + offer_digest
        return bytes([epoch & 0xFF]) + hmac.digest(secret, message, "sha256")[:7]

    def make(self, peer: Addr, icookie: bytes, offer_digest: bytes, now: float) -> bytes:
        return self._mac(int(now // COOKIE_EPOCH_S), peer, icookie, offer_digest)

    def check(self, peer: Addr, icookie: bytes, rcookie: bytes, offer_digests: list[bytes], now: float) -> bytes | None:
        """The digest of the SA body ``rcookie`` was made for, or None when we did not make it lately."""
        current = int(now // COOKIE_EPOCH_S)
        for epoch in (current, current - 1):
            if rcookie[0] != epoch & 0xFF:
                continue
            for digest in offer_digests:
                if hmac.compare_digest(self._mac(epoch, peer, icookie, digest), rcookie):
                    return digest
        return None


class _PeerOffers:
    def __init__(self) -> None:
        self.recent: OrderedDict[bytes, bytes] = OrderedDict()  # digest -> SA body, oldest first
        self.proven: OrderedDict[bytes, bytes] = OrderedDict()


class OfferBook:
    """SA bodies (SAi_b) by peer address, bounded per address; see the module docstring."""

    def __init__(self, own_body: bytes) -> None:
        self._own = (hashlib.sha256(own_body).digest(), own_body)
        self._peers: dict[str, _PeerOffers] = {}

    def remember(self, ip: str, digest: bytes, body: bytes) -> None:
        if digest == self._own[0]:
            return
        peer = self._peers.setdefault(ip, _PeerOffers())
        if digest in peer.proven:
            return
        peer.recent[digest] = body
        peer.recent.move_to_end(digest)
        while len(peer.recent) > RECENT_OFFERS_PER_PEER:
            peer.recent.popitem(last=False)

    def prove(self, ip: str, digest: bytes, body: bytes) -> None:
        """``ip`` completed Main Mode with this body: keep it where forged message 1s cannot push it out."""
        if digest == self._own[0]:
            return
        peer = self._peers.setdefault(ip, _PeerOffers())
        peer.recent.pop(digest, None)
        peer.proven[digest] = body
        peer.proven.move_to_end(digest)
        while len(peer.proven) > PROVEN_OFFERS_PER_PEER:
            peer.proven.popitem(last=False)

    def candidates(self, ip: str) -> Iterator[tuple[bytes, bytes]]:
        """(digest, body) pairs a cookie from ``ip`` may name: the key server's own, proven, recent."""
        yield self._own
        peer = self._peers.get(ip)
        if peer is not None:
            yield from peer.proven.items()
            yield from reversed(peer.recent.items())

    def body(self, ip: str, digest: bytes) -> bytes | None:
        return next((b for d, b in self.candidates(ip) if d == digest), None)

    def count(self) -> int:
        return sum(len(p.recent) + len(p.proven) for p in self._peers.values())

    def size_bytes(self) -> int:
        return sum(len(b) for p in self._peers.values() for b in (*p.recent.values(), *p.proven.values()))
