"""The asyncio adapter around the sans-I/O GDOI engines: sockets, timers, logs, keylog, kernel, control.

Why a thin adapter: the engines (:mod:`~dmvpn_lab.gdoi.ks`, :mod:`~dmvpn_lab.gdoi.gm`) hold the whole
protocol and are tested with a fake clock; this module only moves bytes and time in and out of them and
turns their events into side effects, so it stays small enough to read in one sitting:

* one UDP socket bound to ``(local_address, port)``; every datagram goes to ``receive_datagram`` and every
  datagram the engine wants to send goes out at once (a GM also joins the rekey multicast group, if the
  KEK says there is one);
* one timer, always set to the engine's ``get_timer()``, on ``loop.time()`` (the engine's clock);
* events become one log line each (rejected datagrams: a summary per interval, :class:`RejectionLog`),
  a keylog line per phase 1 (``--keylog``: ``<icookie hex> <key hex>``,
  flushed at once, for Wireshark), and xfrm calls on a GM (unless ``--no-xfrm``);
* a control socket ``<run-dir>/gdoi-<role>.sock`` that takes one JSON request per connection
  (``status``, ``rekey``, ``acks``, ``add-peer``, ``stop``) and a pid file beside it;
* fail-close on a GM (``fail_close_selectors``): its ESP-required policies go into the kernel before the
  engine starts registering, so the traffic they cover is held back, never sent in clear, until a TEK
  arrives; a GM that cannot install them does not start;
* SIGTERM/SIGINT stop cleanly: a GM removes every xfrm state and policy it added.

Startup problems (address not on this host, port in use, no xfrm in the kernel, unreadable key) raise
:class:`StartupError` with one sentence that says what to do; the CLI prints it and exits with 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
import time
import traceback
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig
from dmvpn_lab.gdoi.events import (
    Event,
    MemberDropped,
    MemberRegistered,
    MessageRejected,
    Phase1Established,
    Registered,
    RegistrationFailed,
    RekeyReceived,
    RekeySent,
    TekDeleted,
    TekExpired,
    TekInstalled,
)
from dmvpn_lab.gdoi.kernel_events import (
    ACQUIRE_MONITOR,
    NEIGHBOUR_MONITOR,
    Acquire,
    MonitorWatcher,
    NhrpBinding,
    parse_acquire,
    parse_nhrp_binding,
)
from dmvpn_lab.gdoi.model import TrafficSelector
from dmvpn_lab.gdoi.status import GmStatus, KsStatus
from dmvpn_lab.gdoi.xfrm import Runner, SpiCounters, XfrmApplier, XfrmError, run_ip, spi_text

DEFAULT_RUN_DIR = Path("/run/gdoi")
# After a rekey, wait this long before sending with the new TEK: the KS's pushes reach all members
# within milliseconds, so by then every peer accepts the new SPI inbound (the old TEK stays valid).
OUTBOUND_SWITCH_DELAY_S = 5.0
DEFAULT_KEY_DIR = Path("/var/lib/dmvpn-lab/gdoi-keys")
CONTROL_TIMEOUT_S = 10.0
READ_BATCH = 256
MAX_REQUEST_BYTES = 64 * 1024
REJECTED_LOG_INTERVAL_S = 10.0  # rejected datagrams are summed up in one log line per interval


class StartupError(Exception):
    """The daemon cannot start; the message is the whole story for the operator."""


class NoDaemonError(Exception):
    """Nothing answers on the control socket of a run directory."""


class Engine(Protocol):
    """What the adapter needs from :class:`KeyServer` and :class:`GroupMember` (docs/engine-api.md)."""

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Event | None: ...


def socket_path(run_dir: Path, role: str) -> Path:
    return run_dir / f"gdoi-{role}.sock"


def pid_path(run_dir: Path, role: str) -> Path:
    return run_dir / f"gdoi-{role}.pid"


# --- Control client (used by the CLI and the tests) -----------------------------------------------


def find_daemon(run_dir: Path, role: str | None = None) -> Path:
    """The control socket of the daemon in ``run_dir`` (``role`` picks one when both a KS and GM run)."""
    roles = [role] if role else ["gm", "ks"]
    present = [socket_path(run_dir, r) for r in roles if socket_path(run_dir, r).exists()]
    for path in present:
        if not path.is_socket():
            raise NoDaemonError(f"{path} is not a socket (remove it; a daemon puts its control socket there)")
    if not present:
        raise NoDaemonError(_no_daemon_message(run_dir, role))
    if len(present) > 1:
        live = [p for p in present if _answers(p)]
        if len(live) > 1:
            raise NoDaemonError(f"both a key server and a group member run in {run_dir}; pass --role ks|gm")
        present = live or present
    return present[0]


def _no_daemon_message(run_dir: Path, role: str | None) -> str:
    start = "gdoi ks --config ..." if role == "ks" else "gdoi gm --config ..."
    return f"no GDOI daemon is listening in {run_dir} (start one with `{start} --run-dir {run_dir}`)"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(1.0)
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def control_request(
    run_dir: Path, request: dict[str, Any], *, role: str | None = None, timeout: float = CONTROL_TIMEOUT_S
) -> dict[str, Any]:
    """Send one JSON request to the daemon in ``run_dir``; returns its JSON answer."""
    path = find_daemon(run_dir, role)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NoDaemonError(_no_daemon_message(run_dir, role) + " (stale socket)") from None
        except PermissionError:
            raise NoDaemonError(f"permission denied on {path}: the control socket is root's") from None
        client.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        try:
            while True:
                chunk = client.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise NoDaemonError(f"the daemon at {path} did not answer within {timeout:.0f} s") from None
    try:
        answer = json.loads(b"".join(chunks) or b"null")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
        raise NoDaemonError(f"the daemon at {path} sent something that is not JSON") from None
    if not isinstance(answer, dict):
        raise NoDaemonError(f"the daemon at {path} closed the connection without an answer")
    return answer


# --- Logging and keylog ---------------------------------------------------------------------------


class _Keylog:
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


def _describe_tek(event: TekInstalled) -> str:
    return f"TEK spi {spi_text(event.sa.spi)} ({event.sa.transform.value}, {event.sa.lifetime_s} s)"


# --- The daemon -----------------------------------------------------------------------------------


@dataclass
class DaemonSettings:
    role: str  # "ks" | "gm"
    local_address: str
    port: int
    run_dir: Path = DEFAULT_RUN_DIR
    keylog: Path | None = None
    xfrm: bool = False  # GM: program the kernel
    xfrm_address: str | None = None  # GM: ESP endpoint (NBMA); defaults to local_address


class GdoiDaemon:
    """Runs one engine: ``await GdoiDaemon(...).run()`` returns when the daemon stops."""

    def __init__(
        self,
        settings: DaemonSettings,
        engine_factory: Callable[[float], Engine],
        *,
        status_view: Callable[[float], show.View] | None = None,
        log: logging.Logger | None = None,
        fail_close: Sequence[TrafficSelector] = (),
        xfrm_runner: Runner = run_ip,
        acquire_command: Sequence[str] = ACQUIRE_MONITOR,
        neighbour_command: Sequence[str] = NEIGHBOUR_MONITOR,
    ) -> None:
        self.settings = settings
        self._fail_close = tuple(fail_close)
        self._xfrm_runner = xfrm_runner  # tests hand in a recorder instead of iproute2
        self._acquire_command = acquire_command  # tests hand in a command that reports nothing
        self._neighbour_command = neighbour_command
        self.name = f"gdoi-{settings.role}"
        self.log = log or logging.getLogger("dmvpn_lab.gdoi")
        self._engine_factory = engine_factory
        self._status_view = status_view
        self.engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: socket.socket | None = None
        self._multicast: dict[str, socket.socket] = {}
        self._send_drops = 0
        self._started = False
        self.send_acks = True
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._keylog: _Keylog | None = None
        self.applier: XfrmApplier | None = None
        self._watchers: list[MonitorWatcher[Any]] = []
        self._pending_registration: Registered | None = None
        self._extra_status: Callable[[], dict[str, Any]] = dict
        self._rejections = RejectionLog()
        self._rejections_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self._start()
            if ready is not None:
                ready()
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _start(self) -> None:
        settings = self.settings
        loop = self._loop
        assert loop is not None
        self._prepare_run_dir()
        sock = bind_udp(settings.local_address, settings.port)
        if settings.xfrm:
            self._preflight_xfrm()
        if settings.keylog is not None:
            try:
                self._keylog = _Keylog(settings.keylog)
            except OSError as exc:
                sock.close()
                raise StartupError(f"cannot open the keylog {settings.keylog}: {exc.strerror}") from None
        try:
            self.engine = self._engine_factory(loop.time())
        except StartupError:
            sock.close()
            raise
        except Exception as exc:  # the engine refused its config: say so in one line
            sock.close()
            raise StartupError(f"the {self.name} engine cannot start: {exc}") from None
        self._socket = sock
        loop.add_reader(sock.fileno(), self._on_readable, sock)
        if settings.xfrm:
            self.applier = XfrmApplier(
                settings.xfrm_address or settings.local_address,
                runner=self._xfrm_runner,
                log=lambda m: self.log.warning("%s: xfrm: %s", self.name, m),
            )
            self._watchers = [
                MonitorWatcher(self._acquire_command, parse_acquire, self._on_acquire),
                MonitorWatcher(self._neighbour_command, parse_nhrp_binding, self._on_nhrp_binding),
            ]
            # The watchers run before the fail-close policies exist, so not one ACQUIRE they raise is missed.
            for watcher in self._watchers:
                await watcher.start()
            self._learn_existing_bindings()
            self._close_before_registration()
        elif self._fail_close:
            self.log.warning(
                "%s: fail-close is configured but --no-xfrm leaves the kernel alone: nothing is held closed",
                self.name,
            )
        path = socket_path(settings.run_dir, settings.role)
        self._server = await asyncio.start_unix_server(self._on_control, path=str(path))
        os.chmod(path, 0o600)
        pid_path(settings.run_dir, settings.role).write_text(f"{os.getpid()}\n")
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)
        self.log.info(
            "%s: listening on %s port %d (control %s)", self.name, settings.local_address, settings.port, path
        )
        self._started = True
        start = getattr(self.engine, "start", None)
        if callable(start):
            start(loop.time())
        self._pump()

    def _prepare_run_dir(self) -> None:
        run_dir = self.settings.run_dir
        try:
            run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the run directory {run_dir}: {exc.strerror}") from None
        path = socket_path(run_dir, self.settings.role)
        if path.exists() and not path.is_socket():
            raise StartupError(
                f"{path} exists and is not a socket; remove it (the control socket goes there) "
                "or use another --run-dir"
            )
        if path.exists():
            if _answers(path):
                pid = _read_pid(pid_path(run_dir, self.settings.role))
                raise StartupError(
                    f"a {self.name} daemon already runs in {run_dir}"
                    + (f" (pid {pid})" if pid else "")
                    + "; stop it with `kill` or use another --run-dir"
                )
            path.unlink()

    def _close_before_registration(self) -> None:
        """Fail-close: demand ESP for the configured traffic before the engine registers.

        Until a TEK arrives the policies have no state behind them, so the kernel holds matching
        packets back (ACQUIRE) instead of sending them in clear.  A daemon that cannot close must not
        start open: that is the whole point of the setting.
        """
        if not self._fail_close or self.applier is None:
            return
        try:
            self.applier.install_policies(self._fail_close)
        except XfrmError as exc:
            raise StartupError(
                f"fail-close: cannot install the xfrm policies ({exc}); refusing to start fail-open"
            ) from None
        self.log.info(
            "%s: fail-close: %s held closed until a TEK is installed",
            self.name,
            ", ".join(s.acl_text().replace("access-list  ", "") for s in self._fail_close),
        )

    def _preflight_xfrm(self) -> None:
        try:
            self._xfrm_runner(["xfrm", "state", "list", "spi", "0x1"])
        except XfrmError as exc:
            raise StartupError(
                f"this kernel's xfrm cannot be used ({exc}); run with --no-xfrm, or in a "
                "kernel with xfrm_user and esp4"
            ) from None

    async def _shutdown(self) -> None:
        loop = self._loop
        assert loop is not None
        if self.engine is not None:
            stop = getattr(self.engine, "stop", None)
            if callable(stop):
                try:
                    stop(loop.time())
                    self._pump(reschedule=False)
                except Exception as exc:  # keep cleaning up whatever the engine did
                    self.log.error("%s: engine stop failed: %s", self.name, exc)
        if self._timer is not None:
            self._timer.cancel()
        if self._rejections_timer is not None:
            self._rejections_timer.cancel()
        self._log_rejections()
        for watcher in self._watchers:
            await watcher.stop()
        if self.applier is not None:
            await loop.run_in_executor(None, functools.partial(self.applier.stop, keep=self._fail_close))
            if self._fail_close:
                self.log.info("%s: removed xfrm states; fail-close policies stay (GRE stays blocked)", self.name)
            else:
                self.log.info("%s: removed xfrm states and policies", self.name)
        if self._server is not None:
            self._server.close()
        for sock in [self._socket, *self._multicast.values()]:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        for path in (
            socket_path(self.settings.run_dir, self.settings.role),
            pid_path(self.settings.run_dir, self.settings.role),
        ):
            with contextlib.suppress(FileNotFoundError):
                if self._server is not None:
                    path.unlink()
        if self._keylog is not None:
            self._keylog.close()
        if self._started:
            self.log.info("%s: stopped", self.name)

    # -- engine plumbing --

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram in, then everything the engine wants done."""
        self._feed(data, addr)
        self._pump()

    def _feed(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.engine is not None and self._loop is not None
        try:
            self.engine.receive_datagram(data, addr, self._loop.time())
        except Exception:
            self.log.error(
                "%s: internal error on a datagram from %s:\n%s", self.name, addr[0], traceback.format_exc()
            )

    def _on_readable(self, sock: socket.socket) -> None:
        """Read what the socket holds (up to a batch), then pump once.

        Under load datagrams queue up while the engine works, so batches grow by themselves and the
        per-pump costs (``get_timer``, the timer handle) are paid once per batch, not per datagram.
        """
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                self.log.debug("%s: socket error: %s", self.name, exc)
                break
            self._feed(data, (str(addr[0]), int(addr[1])))
        self._pump()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._send_drops += 1  # UDP: the engine's retransmission covers a full send buffer
        except OSError as exc:
            self.log.warning("%s: cannot send to %s:%d: %s", self.name, addr[0], addr[1], exc.strerror)

    def _on_timer(self) -> None:
        assert self.engine is not None and self._loop is not None
        self._timer = None
        self._timer_at = None
        try:
            self.engine.handle_timer(self._loop.time())
        except Exception:
            self.log.error("%s: internal error in a timer:\n%s", self.name, traceback.format_exc())
        self._pump()

    def _pump(self, *, reschedule: bool = True) -> None:
        """Send what the engine has queued, act on its events, and set the timer it asks for."""
        engine, loop = self.engine, self._loop
        assert engine is not None and loop is not None
        for data, addr in engine.datagrams_to_send(loop.time()):
            self._send(data, addr)
        events: list[Event] = []
        while (event := engine.next_event()) is not None:
            events.append(event)
        for event in events:
            try:
                self._handle_event(event)
            except XfrmError as exc:
                self.log.error("%s: xfrm: %s", self.name, exc)
        self._flush_registration()
        if not reschedule:
            return
        when = engine.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if when is None else loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _flush_registration(self) -> None:
        if self._pending_registration is not None:
            event = self._pending_registration
            self.log.info("%s: registered with KS %s group %s", self.name, event.server, event.group_name)
            self._pending_registration = None

    def _handle_event(self, event: Event) -> None:
        assert self._loop is not None
        now = self._loop.time()
        name = self.name
        if isinstance(event, Phase1Established):
            self.log.debug("%s: IKE phase 1 up with %s", name, event.peer)
            if self._keylog is not None:
                self._keylog.write(event)
        elif isinstance(event, Registered):
            self._flush_registration()
            self._pending_registration = event
        elif isinstance(event, TekInstalled):
            if self._pending_registration is not None:
                registered = self._pending_registration
                self._pending_registration = None
                self.log.info(
                    "%s: registered with KS %s group %s, %s",
                    name,
                    registered.server,
                    registered.group_name,
                    _describe_tek(event),
                )
            else:
                self.log.info("%s: installed %s", name, _describe_tek(event))
            if self.applier is not None:
                rekey = self.applier.current_spi is not None
                self.applier.install_tek(event.sa, now, send=not rekey)
                if rekey:
                    asyncio.get_running_loop().call_later(
                        OUTBOUND_SWITCH_DELAY_S, self._switch_outbound, event.sa.spi
                    )
            self._join_rekey_group()
        elif isinstance(event, (TekExpired, TekDeleted)):
            why = "expired" if isinstance(event, TekExpired) else "deleted by the key server"
            self.log.info("%s: TEK spi %s %s, removed", name, spi_text(event.spi), why)
            if self.applier is not None:
                self.applier.remove_tek(event.spi, now)
        elif isinstance(event, RekeyReceived):
            self.log.info("%s: rekey #%d received from %s", name, event.sequence, event.server)
        elif isinstance(event, RegistrationFailed):
            self.log.warning("%s: registration with KS %s failed: %s", name, event.server, event.reason)
        elif isinstance(event, MemberRegistered):
            self.log.info("%s: GM %s registered in group %s", name, event.address, event.group_name)
        elif isinstance(event, MemberDropped):
            self.log.warning("%s: GM %s dropped: %s", name, event.address, event.reason)
        elif isinstance(event, RekeySent):
            self.log.info(
                "%s: rekey #%d for group %s sent to %d member(s)",
                name,
                event.sequence,
                event.group_name,
                event.members,
            )
        elif isinstance(event, MessageRejected):
            line = self._rejections.add(event, now)
            if line is not None:
                self.log.warning("%s: %s", name, line)
            due = self._rejections.due()
            if due is not None and self._rejections_timer is None:
                self._rejections_timer = self._loop.call_at(due, self._log_rejections)

    def _log_rejections(self) -> None:
        self._rejections_timer = None
        line = self._rejections.flush()
        if line is not None:
            self.log.warning("%s: %s", self.name, line)

    def _switch_outbound(self, spi: int) -> None:
        if self.applier is None:
            return
        try:
            self.applier.switch_outbound(spi, asyncio.get_running_loop().time())
            self.log.info("%s: sending with TEK spi %s", self.name, spi_text(spi))
        except XfrmError as exc:
            self.log.error("%s: could not switch outbound to %s: %s", self.name, spi_text(spi), exc)

    def _join_rekey_group(self) -> None:
        """A GM whose KEK names a multicast rekey group listens there too (RFC 6407 section 4)."""
        status_fn = getattr(self.engine, "status", None)
        if self.settings.role != "gm" or not callable(status_fn) or self._loop is None:
            return
        status = status_fn(self._loop.time())
        kek = getattr(status, "kek", None)
        group = getattr(kek, "multicast_address", None)
        if not isinstance(group, str) or group in self._multicast:
            return
        port = getattr(kek, "multicast_port", None) or self.settings.port  # the key server's --port
        try:
            sock = join_multicast(group, port, self.settings.local_address)
        except OSError as exc:
            self.log.error("%s: cannot join rekey group %s: %s", self.name, group, exc.strerror)
            return
        self._multicast[group] = sock
        self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        self.log.info("%s: joined rekey group %s", self.name, group)

    # -- kernel --

    def _on_acquire(self, acquire: Acquire) -> None:
        if self.applier is None or self._loop is None:
            return
        try:
            self.applier.handle_acquire(acquire, self._loop.time())
            if self.applier.current_spi is None:
                # fail-close before registration: the peer is remembered and served with the first TEK
                self.log.info("%s: ACQUIRE for %s held until a TEK is installed", self.name, acquire.dst)
            else:
                self.log.info("%s: outbound state to %s (ACQUIRE)", self.name, acquire.dst)
        except XfrmError as exc:
            self.log.error("%s: xfrm: %s", self.name, exc)

    def _on_nhrp_binding(self, binding: NhrpBinding) -> None:
        """nhrpd bound a peer: give it its outbound state before the first packet toward it needs one."""
        if self.applier is None or self._loop is None or binding.nbma == self.applier.xfrm_address:
            return
        try:
            if self.applier.add_peer(binding.nbma, self._loop.time()):
                self.log.info(
                    "%s: outbound state to %s (NHRP bound %s on %s)",
                    self.name,
                    binding.nbma,
                    binding.protocol,
                    binding.device,
                )
        except XfrmError as exc:
            self.log.error("%s: xfrm: %s", self.name, exc)

    def _learn_existing_bindings(self) -> None:
        """Bindings nhrpd made before this daemon started (a restarted GM): the monitor shows only new ones."""
        assert self.applier is not None
        try:
            table = self._xfrm_runner(["neigh", "show"])
        except XfrmError as exc:
            self.log.warning("%s: cannot read the neighbour table: %s", self.name, exc)
            return
        for line in table.splitlines():
            binding = parse_nhrp_binding(line)
            if binding is not None:
                self._on_nhrp_binding(binding)

    async def _counters(self) -> dict[int, SpiCounters]:
        if self.applier is None or self._loop is None:
            return {}
        try:
            return await self._loop.run_in_executor(None, self.applier.counters)
        except XfrmError as exc:
            self.log.warning("%s: cannot read xfrm counters: %s", self.name, exc)
            return {}

    # -- control socket --

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S)
                request = json.loads(line[:MAX_REQUEST_BYTES] or b"null")
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ValueError('expected a JSON object with "cmd"')
                answer = await self._control(request)
            except (ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            except RecursionError:  # json nests as deep as the request does
                answer = {"ok": False, "error": "bad request: JSON nested too deeply"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _summary(self, now: float) -> dict[str, Any]:
        status_fn = getattr(self.engine, "status", None)
        if not callable(status_fn):
            return {}
        summary = summarise(status_fn(now))
        summary["send_drops"] = self._send_drops
        return summary

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._loop is not None and self.engine is not None
        command = request["cmd"]
        now = self._loop.time()
        if command == "status":
            if self._status_view is None:
                return {"ok": False, "error": "this daemon has no status view"}
            view = self._status_view(now)
            if isinstance(view, show.GmView) and self.applier is not None:
                from dataclasses import replace

                view = replace(view, counters=await self._counters())
            return {"ok": True, "status": show.view_to_json(view), "pid": os.getpid(), "time": time.time()}
        if command == "summary":
            return {"ok": True, "summary": self._summary(now)}
        if command == "stop":
            self._loop.call_soon(self.request_stop)
            return {"ok": True}
        if command == "rekey":
            force = getattr(self.engine, "force_rekey", None)
            if not callable(force):
                return {"ok": False, "error": "only a key server rekeys"}
            group = request.get("group")
            if group is not None and not isinstance(group, str):
                return {"ok": False, "error": f'rekey "group" must be a group name, not {group!r:.40}'}
            try:
                force(now, group)
            except (KeyError, ValueError) as exc:
                return {"ok": False, "error": f"cannot rekey: {exc.args[0] if exc.args else exc}"}
            self._pump()
            return {"ok": True}
        if command == "acks":
            set_acks = getattr(self.engine, "set_send_acks", None)
            if not callable(set_acks) or not isinstance(request.get("enabled"), bool):
                return {"ok": False, "error": 'acks is a GM command: {"cmd": "acks", "enabled": true|false}'}
            set_acks(request["enabled"])
            self.send_acks = request["enabled"]
            return {"ok": True, "enabled": request["enabled"]}
        if command == "add-peer":
            peer = request.get("peer")
            if self.applier is None or not isinstance(peer, str):
                return {"ok": False, "error": 'add-peer needs a GM with xfrm and {"peer": "A.B.C.D"}'}
            try:
                self.applier.add_peer(peer, now)
            except XfrmError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True}
        return {
            "ok": False,
            "error": f"unknown command {command!r} (status, summary, rekey, acks, add-peer, stop)",
        }


def summarise(status: KsStatus | GmStatus) -> dict[str, Any]:
    """A few numbers to poll cheaply (a full KS status with thousands of members is megabytes of JSON)."""
    if isinstance(status, KsStatus):
        return {
            "role": "ks",
            "groups": [
                {
                    "group_name": g.group_name,
                    "members": len(g.members),
                    "rekey_sequence": g.rekey_sequence,
                    "rekey_acks": sum(m.rekey_acks for m in g.members),
                    "members_acked_current": sum(m.last_ack_sequence >= g.rekey_sequence for m in g.members),
                }
                for g in status.groups
            ],
            "rejected": dict(status.rejected),
        }
    return {
        "role": "gm",
        "registered": status.registered,
        "rekeys": status.rekeys_cumulative,
        "rekey_acks_sent": status.rekey_acks_sent,
        "teks": [t.spi for t in status.teks],
        "rejected": dict(status.rejected),
    }


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# --- Sockets --------------------------------------------------------------------------------------


def bind_udp(address: str, port: int) -> socket.socket:
    """A UDP socket bound to ``(address, port)``, or a :class:`StartupError` that says why not."""
    if _is_broadcast(address):
        raise StartupError(
            f"address {address} is a broadcast address on this host; bind a unicast address of an interface"
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                f"address {address} is not assigned to an interface of this host "
                f"(add it, e.g. `ip addr add {address}/32 dev lo`, or fix --local-address)"
            ) from None
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"UDP port {port} on {address} is already in use (another gdoi daemon? "
                f"see `ss -ulpn 'sport = :{port}'`)"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"binding UDP port {port} needs root (or CAP_NET_BIND_SERVICE)") from None
        raise StartupError(f"cannot bind UDP {address}:{port}: {exc.strerror}") from None
    _grow_buffers(sock)
    sock.setblocking(False)
    return sock


def _is_broadcast(address: str) -> bool:
    """Whether the kernel routes ``address`` as a broadcast (a subnet's directed broadcast included).

    Linux lets a socket bind to one, but only the routing table knows which addresses they are: a UDP
    socket without SO_BROADCAST is refused (EACCES) when it connects to one, and nothing is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except PermissionError:
            return True
        except OSError:
            return False
    return False


SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


def _grow_buffers(sock: socket.socket) -> None:
    """Room for a burst: a thousand GMs registering at once must not overflow the default 208 KiB."""
    force = {
        socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", None),
        socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", None),
    }
    for option, forced in force.items():
        for name in (forced, option):
            if name is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, name, SOCKET_BUFFER_BYTES)
                break
            except OSError:
                continue  # not root: fall back to the capped, unforced size


def join_multicast(group: str, port: int, interface_address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface_address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock


# --- Building the two daemons ---------------------------------------------------------------------


def ks_daemon(
    config: KeyServerConfig, settings: DaemonSettings, key_dir: Path, log: logging.Logger
) -> GdoiDaemon:
    from dmvpn_lab.gdoi.keys import SigningKeyError, load_signing_keys

    try:
        keys, notes = load_signing_keys(key_dir, config.groups)
    except SigningKeyError as exc:
        raise StartupError(str(exc)) from None
    for note in notes:
        log.info("gdoi-ks: %s", note)
    holder: dict[str, Any] = {}

    def factory(now: float) -> Engine:
        from dmvpn_lab.gdoi.ks import KeyServer

        engine = KeyServer(config, keys, now=now)
        holder["engine"] = engine
        return typing.cast(Engine, engine)

    def view(now: float) -> show.View:
        status: KsStatus = holder["engine"].status(now)
        return show.KsView(status=status, now=now, policies=config.groups, port=config.port)

    return GdoiDaemon(settings, factory, status_view=view, log=log)


def gm_daemon(config: GroupMemberConfig, settings: DaemonSettings, log: logging.Logger) -> GdoiDaemon:
    holder: dict[str, Any] = {}

    def factory(now: float) -> Engine:
        from dmvpn_lab.gdoi.gm import GroupMember

        engine = GroupMember(config)
        holder["engine"] = engine
        return typing.cast(Engine, engine)

    daemon: GdoiDaemon

    def view(now: float) -> show.View:
        status: GmStatus = holder["engine"].status(now)
        return show.GmView(
            status=status,
            now=now,
            local_address=config.local_address,
            xfrm_address=settings.xfrm_address or config.local_address,
            crypto_map=config.crypto_map,
            interface=config.interface,
            send_acks=daemon.send_acks,
            xfrm_enabled=settings.xfrm,
            server_port=config.server_port,
            fail_close=bool(config.fail_close_selectors),
        )

    daemon = GdoiDaemon(
        settings, factory, status_view=view, log=log, fail_close=config.fail_close_selectors
    )
    return daemon


def configure_logging(level: str) -> logging.Logger:
    logger = logging.getLogger("dmvpn_lab.gdoi")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def run_daemon(daemon: GdoiDaemon) -> int:
    """Run until stopped; 0 on a clean stop, 2 on a startup error (printed as one line)."""
    try:
        asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"gdoi: {daemon.name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 130
    return 0
