"""What a GDOI daemon writes besides datagrams: its log, rejection summaries and the Wireshark keylog."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import Counter
from pathlib import Path

from dmvpn_lab.gdoi.events import MessageRejected, Phase1Established

REJECTED_LOG_INTERVAL_S = 10.0  # rejected datagrams are summed up in one log line per interval


def configure_logging(level: str) -> logging.Logger:
    logger = logging.getLogger("dmvpn_lab.gdoi")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


class Keylog:
    """``<icookie hex> <encryption key hex>`` per phase 1, flushed at once (Wireshark needs it live)."""

    def __init__(self, path: Path) -> None:
        # The keys let anyone read the captures: never follow a link someone planted in our place, never
        # block on a FIFO, and make the file 0600 even if it was there before with a looser mode.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            descriptor = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(exc.errno, "it is a symbolic link (refused)") from None
            if exc.errno == errno.ENXIO:  # a FIFO nobody reads
                raise OSError(exc.errno, "it is not a regular file") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError(errno.EINVAL, "it is not a regular file")
            os.fchmod(descriptor, 0o600)
        except OSError:
            os.close(descriptor)
            raise
        self._file = os.fdopen(descriptor, "a", encoding="ascii")

    def write(self, event: Phase1Established) -> None:
        self._file.write(f"{event.icookie.hex()} {event.encryption_key.hex()}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RejectionLog:
    """Rejected datagrams as log lines: the first in full, then at most one summary per interval.

    Why: a datagram is rejected for the price of a read, so one line each turns a flood of garbage into
    megabytes of log a second.  The first rejection after a quiet interval is logged at once with its
    detail (what an operator debugging a member needs); the rest are counted by reason and summed up
    when the interval ends.
    """

    MAX_PEERS = 1024  # distinct sources counted per interval; past this the count says "at least"

    def __init__(self, interval_s: float = REJECTED_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._until: float | None = None  # end of the current interval; None while quiet
        self._reasons: Counter[str] = Counter()
        self._peers: set[str] = set()

    def add(self, event: MessageRejected, now: float) -> str | None:
        """A line to log now, or None when the rejection is only counted."""
        if self._until is None or now >= self._until:
            summary = self.flush()
            self._until = now + self.interval_s
            first = f"rejected a datagram from {event.peer}: {event.reason} ({event.detail})"
            return first if summary is None else f"{summary}; then {first}"
        self._reasons[event.reason] += 1
        if len(self._peers) < self.MAX_PEERS:
            self._peers.add(event.peer)
        return None

    def due(self) -> float | None:
        """When :meth:`flush` has something to say (None: nothing counted)."""
        return self._until if self._reasons else None

    def flush(self) -> str | None:
        """The summary of what was counted since the last line, and a fresh interval; None if nothing."""
        if not self._reasons:
            self._until = None
            return None
        total = sum(self._reasons.values())
        by_reason = ", ".join(f"{reason} {count}" for reason, count in self._reasons.most_common())
        peers = f"{len(self._peers)}{'+' if len(self._peers) >= self.MAX_PEERS else ''}"
        line = (
            f"rejected {total} more datagram(s) from {peers} source(s) in {self.interval_s:g} s: {by_reason}"
        )
        self._reasons.clear()
        self._peers.clear()
        self._until = None
        return line
