"""The asyncio adapter around a sans-I/O GDOI engine: sockets, timers, logs, keylog, control.

Why a thin adapter: the engines (:mod:`~dmvpn_lab.gdoi.ks`, :mod:`~dmvpn_lab.gdoi.gm`) hold the whole
protocol and are tested with a fake clock; this module only moves bytes and time in and out of them and
turns their events into side effects, so it stays small enough to read in one sitting:

* one UDP socket bound to ``(local_address, port)`` (:mod:`~dmvpn_lab.gdoi.udp`); every datagram goes to
  ``receive_datagram`` and every datagram the engine wants to send goes out at once;
* one timer, always set to the engine's ``get_timer()``, on ``loop.time()`` (the engine's clock);
* events become one log line each (rejected datagrams: a summary per interval,
  :class:`~dmvpn_lab.gdoi.daemon_log.RejectionLog`) and a keylog line per phase 1 (``--keylog``:
  ``<icookie hex> <key hex>``, flushed at once, for Wireshark);
* a control socket ``<run-dir>/gdoi-<role>.sock`` that takes one JSON request per connection
  (:mod:`~dmvpn_lab.gdoi.control`: ``status``, ``summary``, ``rekey``, ``acks``, ``add-peer``, ``stop``)
  and a pid file beside it;
* SIGTERM/SIGINT stop cleanly.

What differs by role lives in the subclasses: :class:`~dmvpn_lab.gdoi.ks_daemon.KsDaemon` (rekeys on
request) and :class:`~dmvpn_lab.gdoi.gm_daemon.GmDaemon` (the rekey multicast group, and the kernel
through :mod:`~dmvpn_lab.gdoi.gm_kernel`).

Startup problems (address not on this host, port in use, no xfrm in the kernel, unreadable key) raise
:class:`~dmvpn_lab.gdoi.daemon_errors.StartupError` with one sentence that says what to do; the CLI
prints it and exits with 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.control import (
    Answer,
    ControlCommand,
    ControlServer,
    Request,
    answers,
    pid_path,
    read_pid,
    socket_path,
)
from dmvpn_lab.gdoi.daemon_errors import StartupError
from dmvpn_lab.gdoi.daemon_log import Keylog, RejectionLog
from dmvpn_lab.gdoi.events import Event, MessageRejected, Phase1Established
from dmvpn_lab.gdoi.udp import bind_udp

DEFAULT_RUN_DIR = Path("/run/gdoi")
READ_BATCH = 256


class Engine(Protocol):
    """What the adapter needs from :class:`KeyServer` and :class:`GroupMember` (docs/engine-api.md)."""

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Event | None: ...


EngineT = TypeVar("EngineT", bound=Engine)


@dataclass
class DaemonSettings:
    role: str  # "ks" | "gm"
    local_address: str
    port: int
    run_dir: Path = DEFAULT_RUN_DIR
    keylog: Path | None = None
    xfrm: bool = False  # GM: program the kernel
    xfrm_address: str | None = None  # GM: ESP endpoint (NBMA); defaults to local_address


class GdoiDaemon(ABC, Generic[EngineT]):
    """Runs one engine: ``await daemon.run()`` returns when the daemon stops.

    Subclasses create the engine (:meth:`_create_engine`), act on their role's events
    (:meth:`_handle_role_event`), describe their state (:meth:`_status_view`, :meth:`_summary`) and may
    take part in starting and stopping through the ``_prepare``/``_release`` hooks.
    """

    def __init__(self, settings: DaemonSettings, *, log: logging.Logger | None = None) -> None:
        self.settings = settings
        self.name = f"gdoi-{settings.role}"
        self.log = log or logging.getLogger("dmvpn_lab.gdoi")
        self._engine: EngineT | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: socket.socket | None = None  # the bound one: every datagram goes out from it
        self._readers: list[socket.socket] = []
        self._send_drops = 0
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping: asyncio.Event | None = None
        self._control: ControlServer | None = None
        self._keylog: Keylog | None = None
        self._rejections = RejectionLog()
        self._rejections_timer: asyncio.TimerHandle | None = None

    @property
    def engine(self) -> EngineT:
        assert self._engine is not None, "the engine is created when the daemon starts"
        return self._engine

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the loop is known once the daemon runs"
        return self._loop

    # -- what a role adds --

    @abstractmethod
    def _create_engine(self, now: float) -> EngineT: ...

    def _check_host(self) -> None:
        """Refuse to start on a host that cannot serve this role (runs once the UDP port is bound)."""

    async def _prepare(self) -> None:
        """Set up what the role needs before the control socket opens (the engine exists by now)."""

    def _start_engine(self, now: float) -> None:
        """Let the engine begin (a GM registers); runs once the daemon is fully up."""

    def _stop_engine(self, now: float) -> None:
        """Let the engine wind down before the sockets close."""

    async def _release(self) -> None:
        """Undo :meth:`_prepare` (runs even when starting failed half-way)."""

    @abstractmethod
    def _handle_role_event(self, event: Event, now: float) -> None:
        """Act on an event of this role (phase 1 and rejections are handled here for both roles)."""

    def _after_events(self) -> None:
        """Runs after each batch of events (a GM logs a registration it could not complete in one line)."""

    @abstractmethod
    async def _status_view(self, now: float) -> show.View:
        """What ``show crypto ...`` prints, as of ``now``."""

    @abstractmethod
    def _summary(self, now: float) -> dict[str, Any]:
        """A few numbers to poll cheaply (the ``summary`` command)."""

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
        loop = self.loop
        self._prepare_run_dir()
        sock = bind_udp(settings.local_address, settings.port)
        self._check_host()
        if settings.keylog is not None:
            try:
                self._keylog = Keylog(settings.keylog)
            except OSError as exc:
                sock.close()
                raise StartupError(f"cannot open the keylog {settings.keylog}: {exc.strerror}") from None
        try:
            self._engine = self._create_engine(loop.time())
        except StartupError:
            sock.close()
            raise
        except Exception as exc:  # the engine refused its config: say so in one line
            sock.close()
            raise StartupError(f"the {self.name} engine cannot start: {exc}") from None
        self._socket = sock
        self.listen(sock)
        await self._prepare()
        path = socket_path(settings.run_dir, settings.role)
        self._control = ControlServer(path, self._control_commands())
        await self._control.start()
        pid_path(settings.run_dir, settings.role).write_text(f"{os.getpid()}\n")
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)
        self.log.info(
            "%s: listening on %s port %d (control %s)", self.name, settings.local_address, settings.port, path
        )
        self._started = True
        self._start_engine(loop.time())
        self._pump()

    def listen(self, sock: socket.socket) -> None:
        """Feed what ``sock`` receives to the engine; it is closed when the daemon stops."""
        self._readers.append(sock)
        self.loop.add_reader(sock.fileno(), self._on_readable, sock)

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
            if answers(path):
                pid = read_pid(pid_path(run_dir, self.settings.role))
                raise StartupError(
                    f"a {self.name} daemon already runs in {run_dir}"
                    + (f" (pid {pid})" if pid else "")
                    + "; stop it with `kill` or use another --run-dir"
                )
            path.unlink()

    async def _shutdown(self) -> None:
        loop = self.loop
        if self._engine is not None:
            try:
                self._stop_engine(loop.time())
            except Exception as exc:  # keep cleaning up whatever the engine did
                self.log.error("%s: engine stop failed: %s", self.name, exc)
        if self._timer is not None:
            self._timer.cancel()
        if self._rejections_timer is not None:
            self._rejections_timer.cancel()
        self._log_rejections()
        await self._release()
        if self._control is not None:
            self._control.close()  # a no-op unless it started
        for sock in self._readers:
            loop.remove_reader(sock.fileno())
            sock.close()
        if self._control is not None and self._control.started:  # else the files may be another daemon's
            for path in (
                socket_path(self.settings.run_dir, self.settings.role),
                pid_path(self.settings.run_dir, self.settings.role),
            ):
                with contextlib.suppress(FileNotFoundError):
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
        try:
            self.engine.receive_datagram(data, addr, self.loop.time())
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
        self._timer = None
        self._timer_at = None
        try:
            self.engine.handle_timer(self.loop.time())
        except Exception:
            self.log.error("%s: internal error in a timer:\n%s", self.name, traceback.format_exc())
        self._pump()

    def _pump(self, *, reschedule: bool = True) -> None:
        """Send what the engine has queued, act on its events, and set the timer it asks for."""
        engine, loop = self.engine, self.loop
        for data, addr in engine.datagrams_to_send(loop.time()):
            self._send(data, addr)
        events: list[Event] = []
        while (event := engine.next_event()) is not None:
            events.append(event)
        for event in events:
            self._handle_event(event)
        self._after_events()
        if not reschedule:
            return
        when = engine.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if when is None else loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _handle_event(self, event: Event) -> None:
        now = self.loop.time()
        if isinstance(event, Phase1Established):
            self.log.debug("%s: IKE phase 1 up with %s", self.name, event.peer)
            if self._keylog is not None:
                self._keylog.write(event)
        elif isinstance(event, MessageRejected):
            self._log_rejection(event, now)
        else:
            self._handle_role_event(event, now)

    def _log_rejection(self, event: MessageRejected, now: float) -> None:
        line = self._rejections.add(event, now)
        if line is not None:
            self.log.warning("%s: %s", self.name, line)
        due = self._rejections.due()
        if due is not None and self._rejections_timer is None:
            self._rejections_timer = self.loop.call_at(due, self._log_rejections)

    def _log_rejections(self) -> None:
        self._rejections_timer = None
        line = self._rejections.flush()
        if line is not None:
            self.log.warning("%s: %s", self.name, line)

    # -- control commands --

    def _control_commands(self) -> dict[str, ControlCommand]:
        """The command table; a role's own commands answer with a refusal on the other role."""
        return {
            "status": self._status_command,
            "summary": self._summary_command,
            "rekey": self._rekey_command,
            "acks": self._acks_command,
            "add-peer": self._add_peer_command,
            "stop": self._stop_command,
        }

    async def _status_command(self, request: Request) -> Answer:
        view = await self._status_view(self.loop.time())
        return {"ok": True, "status": show.view_to_json(view), "pid": os.getpid(), "time": time.time()}

    async def _summary_command(self, request: Request) -> Answer:
        summary = self._summary(self.loop.time())
        summary["send_drops"] = self._send_drops
        return {"ok": True, "summary": summary}

    async def _stop_command(self, request: Request) -> Answer:
        self.loop.call_soon(self.request_stop)
        return {"ok": True}

    async def _rekey_command(self, request: Request) -> Answer:
        return {"ok": False, "error": "only a key server rekeys"}

    async def _acks_command(self, request: Request) -> Answer:
        return {"ok": False, "error": 'acks is a GM command: {"cmd": "acks", "enabled": true|false}'}

    async def _add_peer_command(self, request: Request) -> Answer:
        return {"ok": False, "error": 'add-peer needs a GM with xfrm and {"peer": "A.B.C.D"}'}


def run_daemon(daemon: GdoiDaemon[Any]) -> int:
    """Run until stopped; 0 on a clean stop, 2 on a startup error (printed as one line)."""
    try:
        asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"gdoi: {daemon.name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 130
    return 0
