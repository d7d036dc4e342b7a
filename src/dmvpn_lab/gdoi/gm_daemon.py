"""The group member daemon: a :class:`~dmvpn_lab.gdoi.gm.GroupMember` behind the asyncio adapter.

On top of what every daemon does (:mod:`~dmvpn_lab.gdoi.daemon`): it starts the engine's registration
once it is up and stops it cleanly, joins the rekey multicast group the KEK names (RFC 6407 section 4),
and, unless ``--no-xfrm``, hands TEKs to the kernel (:mod:`~dmvpn_lab.gdoi.gm_kernel`), fail-close first.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import show
from .config_model import GroupMemberConfig
from .control import Answer, Request
from .daemon import DaemonSettings, GdoiDaemon
from .events import Event, Registered, RegistrationFailed, RekeyReceived, TekDeleted, TekExpired, TekInstalled
from .gm import GroupMember
from .gm_kernel import GmKernel, check_xfrm
from .kernel_events import ACQUIRE_MONITOR, NEIGHBOUR_MONITOR
from .status import GmStatus
from .udp import join_multicast
from .xfrm import Runner, XfrmError, run_ip, spi_text


class GmDaemon(GdoiDaemon[GroupMember]):
    def __init__(
        self,
        config: GroupMemberConfig,
        settings: DaemonSettings,
        log: logging.Logger,
        *,
        engine_factory: Callable[[GroupMemberConfig], GroupMember] = GroupMember,
        xfrm_runner: Runner = run_ip,
        acquire_command: Sequence[str] = ACQUIRE_MONITOR,
        neighbour_command: Sequence[str] = NEIGHBOUR_MONITOR,
    ) -> None:
        super().__init__(settings, log=log)
        self.config = config
        self._engine_factory = engine_factory  # tests hand in a scripted engine
        self._xfrm_runner = xfrm_runner  # tests hand in a recorder instead of iproute2
        self._monitor_commands = (acquire_command, neighbour_command)  # tests: commands that report nothing
        self.kernel: GmKernel | None = None  # None with --no-xfrm, and until the daemon starts
        self.send_acks = True
        self._rekey_groups: set[str] = set()  # multicast groups joined (their sockets are the daemon's)
        # A registration is logged together with its first TEK, in one line (see _after_events).
        self._pending_registration: Registered | None = None

    # -- lifecycle --

    def _create_engine(self, now: float) -> GroupMember:
        return self._engine_factory(self.config)

    def _check_host(self) -> None:
        if self.settings.xfrm:
            check_xfrm(self._xfrm_runner)

    async def _prepare(self) -> None:
        fail_close = self.config.fail_close_selectors
        if not self.settings.xfrm:
            if fail_close:
                self.log.warning(
                    "%s: fail-close is configured but --no-xfrm leaves the kernel alone: nothing is held closed",
                    self.name,
                )
            return
        acquire_command, neighbour_command = self._monitor_commands
        self.kernel = GmKernel(
            self.settings.xfrm_address or self.settings.local_address,
            name=self.name,
            log=self.log,
            fail_close=fail_close,
            runner=self._xfrm_runner,
            acquire_command=acquire_command,
            neighbour_command=neighbour_command,
        )
        await self.kernel.start()

    def _start_engine(self, now: float) -> None:
        self.engine.start(now)

    def _stop_engine(self, now: float) -> None:
        self.engine.stop(now)
        self._pump(reschedule=False)  # the TekExpired events it emits take the TEKs out of the kernel

    async def _release(self) -> None:
        if self.kernel is not None:
            await self.kernel.stop()

    # -- events --

    def _handle_role_event(self, event: Event, now: float) -> None:
        try:
            self._handle_gm_event(event)
        except XfrmError as exc:
            self.log.error("%s: xfrm: %s", self.name, exc)

    def _handle_gm_event(self, event: Event) -> None:
        name = self.name
        if isinstance(event, Registered):
            self._after_events()
            self._pending_registration = event
        elif isinstance(event, TekInstalled):
            self._log_installed(event)
            if self.kernel is not None:
                self.kernel.install_tek(event.sa)
            self._join_rekey_group()
        elif isinstance(event, (TekExpired, TekDeleted)):
            why = "expired" if isinstance(event, TekExpired) else "deleted by the key server"
            self.log.info("%s: TEK spi %s %s, removed", name, spi_text(event.spi), why)
            if self.kernel is not None:
                self.kernel.remove_tek(event.spi)
        elif isinstance(event, RekeyReceived):
            self.log.info("%s: rekey #%d received from %s", name, event.sequence, event.server)
        elif isinstance(event, RegistrationFailed):
            self.log.warning("%s: registration with KS %s failed: %s", name, event.server, event.reason)

    def _log_installed(self, event: TekInstalled) -> None:
        sa = event.sa
        tek = f"TEK spi {spi_text(sa.spi)} ({sa.transform.value}, {sa.lifetime_s} s)"
        registered, self._pending_registration = self._pending_registration, None
        if registered is None:
            self.log.info("%s: installed %s", self.name, tek)
        else:
            self.log.info(
                "%s: registered with KS %s group %s, %s", self.name, registered.server, registered.group_name, tek
            )

    def _after_events(self) -> None:
        """A registration whose TEK did not come in the same batch is logged on its own."""
        if self._pending_registration is not None:
            event = self._pending_registration
            self.log.info("%s: registered with KS %s group %s", self.name, event.server, event.group_name)
            self._pending_registration = None

    def _join_rekey_group(self) -> None:
        """A GM whose KEK names a multicast rekey group listens there too (RFC 6407 section 4)."""
        kek = self.engine.status(self.loop.time()).kek
        if kek is None or kek.multicast_address is None or kek.multicast_address in self._rekey_groups:
            return
        group = kek.multicast_address
        port = kek.multicast_port or self.settings.port  # the key server's --port
        try:
            sock = join_multicast(group, port, self.settings.local_address)
        except OSError as exc:
            self.log.error("%s: cannot join rekey group %s: %s", self.name, group, exc.strerror)
            return
        self._rekey_groups.add(group)
        self.listen(sock)
        self.log.info("%s: joined rekey group %s", self.name, group)

    # -- status and control --

    async def _status_view(self, now: float) -> show.View:
        config, settings = self.config, self.settings
        view = show.GmView(
            status=self.engine.status(now),
            now=now,
            local_address=config.local_address,
            xfrm_address=settings.xfrm_address or config.local_address,
            crypto_map=config.crypto_map,
            interface=config.interface,
            send_acks=self.send_acks,
            xfrm_enabled=settings.xfrm,
            server_port=config.server_port,
            fail_close=bool(config.fail_close_selectors),
        )
        if self.kernel is None:
            return view
        return dataclasses.replace(view, counters=await self.kernel.counters())

    def _summary(self, now: float) -> dict[str, Any]:
        return summarise_gm(self.engine.status(now))

    async def _acks_command(self, request: Request) -> Answer:
        enabled = request.get("enabled")
        if not isinstance(enabled, bool):
            return await super()._acks_command(request)
        self.engine.set_send_acks(enabled)
        self.send_acks = enabled
        return {"ok": True, "enabled": enabled}

    async def _add_peer_command(self, request: Request) -> Answer:
        peer = request.get("peer")
        if self.kernel is None or not isinstance(peer, str):
            return await super()._add_peer_command(request)
        try:
            self.kernel.add_peer(peer)
        except XfrmError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True}


def summarise_gm(status: GmStatus) -> dict[str, Any]:
    """A few numbers to poll cheaply, as the key server's summary does."""
    return {
        "role": "gm",
        "registered": status.registered,
        "rekeys": status.rekeys_cumulative,
        "rekey_acks_sent": status.rekey_acks_sent,
        "teks": [t.spi for t in status.teks],
        "rejected": dict(status.rejected),
    }
