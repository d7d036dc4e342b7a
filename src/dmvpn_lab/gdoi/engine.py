"""What the key server and the group member engines share: the sans-I/O plumbing, not the protocol.

:class:`Engine` owns the output queue, the event queue and the rejection counters, and the one rule
every engine keeps (docs/engine-api.md): a rejected datagram changes nothing, yields exactly one
:class:`~.model.MessageRejected` and bumps ``rejected[reason]``.  Subclasses implement ``_receive``
and raise :class:`Reject` (or a ``Phase1Error``/``PolicyError``, which carry a reason the same way)
to refuse a datagram; the base rolls back the datagrams and events it had produced.

:class:`Deadlines` is the key server's lazy timer heap.  The protocol objects' states are in
:mod:`.statemachine`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .codec import Decoded, DecodeError
from .crypto import CryptoError
from .events import Event, MessageRejected
from .groupsa import PolicyError
from .phase1 import Phase1Error

Addr = tuple[str, int]
_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")

class Reject(Exception):
    """A datagram is refused: ``reason`` is the MessageRejected reason word, ``reply`` an optional
    answer that is sent anyway (an Informational notify telling the peer why)."""

    def __init__(self, reason: str, detail: str, reply: tuple[bytes, Addr] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.reply = reply


def classify(exc: Exception) -> tuple[str, str, tuple[bytes, Addr] | None]:
    """The reason, detail and reply of a refusal; anything unforeseen is an ``internal-error``."""
    if isinstance(exc, Reject):
        return exc.reason, exc.detail, exc.reply
    if isinstance(exc, (Phase1Error, PolicyError)):
        return exc.reason, exc.detail, None
    if isinstance(exc, (DecodeError, CryptoError)):
        return "malformed", str(exc), None
    return "internal-error", f"{type(exc).__name__}: {exc}", None


def one(payloads: tuple[Decoded, ...], cls: type[_T], what: str) -> _T:
    """The single payload of type ``cls``; a message with none or several is malformed."""
    found = [d.payload for d in payloads if isinstance(d.payload, cls)]
    if len(found) != 1:
        raise Reject("malformed", f"{what}: expected one {cls.__name__}, found {len(found)}")
    return found[0]


def at_most_one(payloads: tuple[Decoded, ...], cls: type[_T], what: str) -> _T | None:
    """The optional payload of type ``cls``; a message with several is malformed."""
    found = [d.payload for d in payloads if isinstance(d.payload, cls)]
    if len(found) > 1:
        raise Reject("malformed", f"{what}: more than one {cls.__name__}")
    return found[0] if found else None


class Engine:
    """The queues and the rollback rule of a sans-I/O engine (docs/engine-api.md)."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Addr]] = []
        self._rejected: Counter[str] = Counter()

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        n_out, n_events = len(self._out), len(self._events)
        try:
            self._receive(bytes(data), addr, now)
        except Exception as exc:  # a rejected datagram must change nothing: roll back what it produced
            del self._out[n_out:]
            while len(self._events) > n_events:
                self._events.pop()
            reason, detail, reply = classify(exc)
            self._rejected[reason] += 1
            self._events.append(MessageRejected(addr[0], reason, detail))
            if reply is not None:
                self._out.append(reply)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram completely, or raise before changing anything the rollback cannot undo."""
        raise NotImplementedError


class Deadlines(Generic[_K, _V]):
    """When the entries of one table end, as a heap with lazy deletion.

    Why: with thousands of members, scanning every ISAKMP SA and registration for each ``get_timer``
    or ``_expire`` made the KS quadratic in the number of members.  Entries are pushed when a record
    is added or its deadline moves; nothing is removed from the heap when a record goes away or moves.
    Instead an entry counts only while the table still holds that very record and the record's
    current deadline is the entry's time, so stale entries are skipped (and dropped) when they reach
    the top.  The heap is rebuilt from the table when stale entries outnumber live ones.
    """

    def __init__(self, table: dict[_K, _V], deadline: Callable[[_V], float]) -> None:
        self._table = table
        self._deadline = deadline
        self._heap: list[tuple[float, int, _K, _V]] = []
        self._order = itertools.count()  # ties never compare keys or records

    def push(self, key: _K, value: _V) -> None:
        """``table[key]`` is ``value`` already (new, or its deadline just moved): note its deadline."""
        if len(self._heap) > 2 * len(self._table) + 64:
            self._heap = [(self._deadline(v), next(self._order), k, v) for k, v in self._table.items()]
            heapq.heapify(self._heap)  # ``value`` is in the table, so the rebuilt heap has it
            return
        heapq.heappush(self._heap, (self._deadline(value), next(self._order), key, value))

    def _live(self, entry: tuple[float, int, _K, _V]) -> bool:
        when, _order, key, value = entry
        return self._table.get(key) is value and self._deadline(value) == when

    def next(self) -> float | None:
        """The earliest deadline of a record still in the table (it may be in the past)."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[tuple[_K, _V]]:
        """Remove from the table every record whose deadline is ``now`` or earlier; return them."""
        heap = self._heap
        gone: list[tuple[_K, _V]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                del self._table[entry[2]]
                gone.append((entry[2], entry[3]))
        return gone
