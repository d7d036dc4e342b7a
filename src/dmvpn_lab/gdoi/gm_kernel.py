"""A group member daemon's kernel side: fail-close, the ACQUIRE and NHRP watchers, TEKs in and out of xfrm.

Why apart from the daemon: this is everything a GM does to the kernel on top of the engine's events, and
it can be read (and tested with a recording runner) without sockets or timers:

* fail-close (``fail_close_selectors``): the ESP-required policies go in before the engine starts
  registering, so the traffic they cover is held back, never sent in clear, until a TEK arrives; a GM
  that cannot install them does not start;
* two watchers on the kernel: XFRM ACQUIREs (a packet toward a peer without an outbound state) and NHRP's
  neighbour bindings (a peer nhrpd has just bound: give it its state before its first packet);
* after a rekey, the switch to the new TEK outbound waits :data:`OUTBOUND_SWITCH_DELAY_S`;
* on stop, every state and policy goes, but for fail-close policies (GRE stays blocked);
* before all that, :func:`ios_interface_address` answers the config reader when a pasted IOS config names
  ``crypto map M local-address Loopback0`` without the loopback's address: IOS's Loopback0 is this
  node's ``lo``, read with ``ip -j addr show dev lo`` (reading only: nothing here changes the kernel).

All changes go through :class:`~dmvpn_lab.gdoi.xfrm.XfrmApplier`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
from collections.abc import Sequence

from dmvpn_lab.gdoi.daemon_errors import StartupError
from dmvpn_lab.gdoi.events import TekSA
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
from dmvpn_lab.gdoi.xfrm import Runner, SpiCounters, XfrmApplier, XfrmError, run_ip, spi_text

# After a rekey, wait this long before sending with the new TEK: the KS's pushes reach all members
# within milliseconds, so by then every peer accepts the new SPI inbound (the old TEK stays valid).
OUTBOUND_SWITCH_DELAY_S = 5.0


def loopback_address(runner: Runner = run_ip) -> str | None:
    """The first IPv4 address of ``lo`` outside 127.0.0.0/8, or None (none there, or ``ip`` failed).

    That is what a router's Loopback0 is on a Linux node: the lab puts the seed's 11.11.11.11/32 there.
    """
    try:
        text = runner(["-j", "addr", "show", "dev", "lo"])
        links = json.loads(text or "[]")
    except (XfrmError, ValueError):
        return None
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if not isinstance(info, dict) or info.get("family") != "inet":
                continue
            try:
                address = ipaddress.IPv4Address(str(info.get("local")))
            except ValueError:
                continue
            if not address.is_loopback:
                return str(address)
    return None


def ios_interface_address(name: str, runner: Runner = run_ip) -> str | None:
    """The address of the IOS interface ``name`` on this node: ``Loopback0`` is ``lo``; others are unknown."""
    if name.replace(" ", "").lower() == "loopback0":
        return loopback_address(runner)
    return None


def check_xfrm(runner: Runner = run_ip) -> None:
    """Refuse to start in a kernel whose xfrm cannot be used (no xfrm_user, no privileges)."""
    try:
        runner(["xfrm", "state", "list", "spi", "0x1"])
    except XfrmError as exc:
        raise StartupError(
            f"this kernel's xfrm cannot be used ({exc}); run with --no-xfrm, or in a "
            "kernel with xfrm_user and esp4"
        ) from None


class GmKernel:
    """The xfrm side of one GM daemon; ``name`` and ``log`` are the daemon's, for its log lines."""

    def __init__(
        self,
        xfrm_address: str,
        *,
        name: str,
        log: logging.Logger,
        fail_close: Sequence[TrafficSelector] = (),
        runner: Runner = run_ip,
        acquire_command: Sequence[str] = ACQUIRE_MONITOR,
        neighbour_command: Sequence[str] = NEIGHBOUR_MONITOR,
    ) -> None:
        self.name = name
        self.log = log
        self._fail_close = tuple(fail_close)
        self._runner = runner  # tests hand in a recorder instead of iproute2
        self.applier = XfrmApplier(
            xfrm_address, runner=runner, log=lambda m: self.log.warning("%s: xfrm: %s", self.name, m)
        )
        # Tests hand in commands that report nothing instead of `ip monitor`.
        self._watchers: list[MonitorWatcher[Acquire] | MonitorWatcher[NhrpBinding]] = [
            MonitorWatcher(acquire_command, parse_acquire, self.on_acquire),
            MonitorWatcher(neighbour_command, parse_nhrp_binding, self.on_nhrp_binding),
        ]
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Watch the kernel, serve the bindings nhrpd already made, then close fail-close traffic."""
        self._loop = asyncio.get_running_loop()
        # The watchers run before the fail-close policies exist, so not one ACQUIRE they raise is missed.
        for watcher in self._watchers:
            await watcher.start()
        self._learn_existing_bindings()
        self._close_before_registration()

    async def stop(self) -> None:
        """Stop watching; remove every state and policy but the fail-close ones."""
        loop = asyncio.get_running_loop()
        for watcher in self._watchers:
            await watcher.stop()  # a watcher that never started stops at once
        await loop.run_in_executor(None, functools.partial(self.applier.stop, keep=self._fail_close))
        if self._fail_close:
            self.log.info("%s: removed xfrm states; fail-close policies stay (GRE stays blocked)", self.name)
        else:
            self.log.info("%s: removed xfrm states and policies", self.name)

    def _now(self) -> float:
        assert self._loop is not None, "the kernel side is started before it handles events"
        return self._loop.time()

    def _close_before_registration(self) -> None:
        """Fail-close: demand ESP for the configured traffic before the engine registers.

        Until a TEK arrives the policies have no state behind them, so the kernel holds matching
        packets back (ACQUIRE) instead of sending them in clear.  A daemon that cannot close must not
        start open: that is the whole point of the setting.
        """
        if not self._fail_close:
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

    # -- what the engine says --

    def install_tek(self, sa: TekSA) -> None:
        """A new TEK: inbound at once; outbound at once for the first TEK, a little later after a rekey."""
        rekey = self.applier.current_spi is not None
        self.applier.install_tek(sa, self._now(), send=not rekey)
        if rekey:
            asyncio.get_running_loop().call_later(OUTBOUND_SWITCH_DELAY_S, self._switch_outbound, sa.spi)

    def remove_tek(self, spi: int) -> None:
        self.applier.remove_tek(spi, self._now())

    def _switch_outbound(self, spi: int) -> None:
        try:
            self.applier.switch_outbound(spi, self._now())
            self.log.info("%s: sending with TEK spi %s", self.name, spi_text(spi))
        except XfrmError as exc:
            self.log.error("%s: could not switch outbound to %s: %s", self.name, spi_text(spi), exc)

    # -- what the kernel says --

    def on_acquire(self, acquire: Acquire) -> None:
        try:
            self.applier.handle_acquire(acquire, self._now())
            if self.applier.current_spi is None:
                # fail-close before registration: the peer is remembered and served with the first TEK
                self.log.info("%s: ACQUIRE for %s held until a TEK is installed", self.name, acquire.dst)
            else:
                self.log.info("%s: outbound state to %s (ACQUIRE)", self.name, acquire.dst)
        except XfrmError as exc:
            self.log.error("%s: xfrm: %s", self.name, exc)

    def on_nhrp_binding(self, binding: NhrpBinding) -> None:
        """nhrpd bound a peer: give it its outbound state before the first packet toward it needs one."""
        if binding.nbma == self.applier.xfrm_address:
            return
        try:
            if self.applier.add_peer(binding.nbma, self._now()):
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
        try:
            table = self._runner(["neigh", "show"])
        except XfrmError as exc:
            self.log.warning("%s: cannot read the neighbour table: %s", self.name, exc)
            return
        for line in table.splitlines():
            binding = parse_nhrp_binding(line)
            if binding is not None:
                self.on_nhrp_binding(binding)

    # -- what the operator asks --

    def add_peer(self, peer: str) -> None:
        """An outbound state to ``peer`` ahead of traffic (the ``add-peer`` control command)."""
        self.applier.add_peer(peer, self._now())

    async def counters(self) -> dict[int, SpiCounters]:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.applier.counters)
        except XfrmError as exc:
            self.log.warning("%s: cannot read xfrm counters: %s", self.name, exc)
            return {}
