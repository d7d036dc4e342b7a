"""What a group member reads from the kernel: XFRM ACQUIREs and NHRP's neighbour bindings.

Why apart from :mod:`~dmvpn_lab.gdoi.xfrm`: that module is the only one that changes the kernel; this one
only parses what iproute2's ``monitor`` commands print (``ip -o xfrm monitor acquire``:
:func:`parse_acquire`, ``ip -o monitor neigh`` / ``ip neigh show``: :func:`parse_nhrp_binding`) and runs
those commands (:class:`MonitorWatcher`), so the daemon can answer with xfrm calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

# --- ACQUIRE --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    """The kernel asks for an outbound state: a packet from ``src`` to ``dst`` matched a policy."""

    src: str
    dst: str
    protocol: str | None


_ACQUIRE = re.compile(
    r"\bsel\s+src\s+(?P<src>[0-9.]+)(?:/\d+)?\s+dst\s+(?P<dst>[0-9.]+)(?:/\d+)?(?:\s+proto\s+(?P<proto>\S+))?"
)


def parse_acquire(line: str) -> Acquire | None:
    """One line of ``ip -o xfrm monitor acquire``; None for anything that is not an IPv4 acquire."""
    if "acquire" not in line:
        return None
    match = _ACQUIRE.search(line.replace("\\", " "))
    if match is None:
        return None
    try:
        src = str(ipaddress.IPv4Address(match["src"]))
        dst = str(ipaddress.IPv4Address(match["dst"]))
    except ValueError:
        return None
    return Acquire(src=src, dst=dst, protocol=match["proto"])


# --- NHRP bindings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NhrpBinding:
    """nhrpd bound tunnel address ``protocol`` to NBMA address ``nbma`` on ``device``.

    A multipoint GRE tunnel's neighbour table is where nhrpd tells the kernel where to send: its
    link-layer addresses are IPv4 NBMA addresses, which no Ethernet neighbour has.
    """

    protocol: str
    device: str
    nbma: str


_NEIGHBOUR = re.compile(r"^(?P<protocol>[0-9.]+) dev (?P<device>\S+) lladdr (?P<lladdr>\S+)(?P<rest>.*)$")
# A binding being looked up or given up holds no usable NBMA address.
_NOT_BOUND = {"INCOMPLETE", "FAILED"}


def parse_nhrp_binding(line: str) -> NhrpBinding | None:
    """One line of ``ip -o monitor neigh`` (or ``ip neigh show``); None unless it binds an IPv4 NBMA."""
    match = _NEIGHBOUR.match(line.strip())
    if match is None or _NOT_BOUND & set(match["rest"].split()):
        return None
    try:
        protocol = ipaddress.IPv4Address(match["protocol"])
        nbma = ipaddress.IPv4Address(match["lladdr"])  # a MAC address is no IPv4 address: not a tunnel
    except ValueError:
        return None
    return NhrpBinding(protocol=str(protocol), device=match["device"], nbma=str(nbma))


# --- Watching the kernel --------------------------------------------------------------------------

EventT = TypeVar("EventT")

ACQUIRE_MONITOR = ("ip", "-o", "xfrm", "monitor", "acquire")
NEIGHBOUR_MONITOR = ("ip", "-o", "monitor", "neigh")


class MonitorWatcher(Generic[EventT]):
    """Runs an iproute2 ``monitor`` command and hands each line that ``parse`` understands to a callback."""

    def __init__(
        self,
        command: Sequence[str],
        parse: Callable[[str], EventT | None],
        on_event: Callable[[EventT], Awaitable[None] | None],
    ) -> None:
        self._command = list(command)
        self._parse = parse
        self._on_event = on_event
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self._command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            raw = await self._process.stdout.readline()
            if not raw:
                return
            event = self._parse(raw.decode(errors="replace"))
            if event is not None:
                result = self._on_event(event)
                if result is not None:
                    await result

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(ProcessLookupError):
                await self._process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
