"""The key server daemon: a :class:`~dmvpn_lab.gdoi.ks.KeyServer` behind the asyncio adapter.

On top of what every daemon does (:mod:`~dmvpn_lab.gdoi.daemon`) it loads the groups' RSA signing keys
before it starts, logs members coming and going, and rekeys on request (``gdoi rekey``).  With
``redundancy`` configured, COOP (:mod:`~dmvpn_lab.gdoi.coop`) shares the GDOI socket: it is ISAKMP-framed
and the engine tells it apart by exchange type, so one bound port (848) serves members and peers alike,
as on IOS, and no second port needs opening between key servers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.config_model import KeyServerConfig
from dmvpn_lab.gdoi.control import Answer, Request
from dmvpn_lab.gdoi.daemon import DaemonSettings, GdoiDaemon
from dmvpn_lab.gdoi.daemon_errors import StartupError
from dmvpn_lab.gdoi.events import CoopRoleChanged, Event, MemberDropped, MemberRegistered, RekeySent
from dmvpn_lab.gdoi.keys import SigningKeyError, load_signing_keys
from dmvpn_lab.gdoi.ks import KeyServer
from dmvpn_lab.gdoi.status import KsStatus

DEFAULT_KEY_DIR = Path("/var/lib/dmvpn-lab/gdoi-keys")


class KsDaemon(GdoiDaemon[KeyServer]):
    def __init__(
        self,
        config: KeyServerConfig,
        settings: DaemonSettings,
        signing_keys: dict[str, rsa.RSAPrivateKey],
        log: logging.Logger,
    ) -> None:
        super().__init__(settings, log=log)
        self.config = config
        self._signing_keys = signing_keys

    def _create_engine(self, now: float) -> KeyServer:
        return KeyServer(self.config, self._signing_keys, now=now)

    def _handle_role_event(self, event: Event, now: float) -> None:
        if isinstance(event, MemberRegistered):
            self.log.info("%s: GM %s registered in group %s", self.name, event.address, event.group_name)
        elif isinstance(event, MemberDropped):
            self.log.warning("%s: GM %s dropped: %s", self.name, event.address, event.reason)
        elif isinstance(event, CoopRoleChanged):
            log = self.log.warning if event.state in ("PRIMARY", "ELECTING") else self.log.info
            log("%s: COOP %s (primary %s): %s", self.name, event.state, event.primary or "none", event.reason)
        elif isinstance(event, RekeySent):
            self.log.info(
                "%s: rekey #%d for group %s sent to %d member(s)",
                self.name,
                event.sequence,
                event.group_name,
                event.members,
            )

    async def _status_view(self, now: float) -> show.View:
        status = self.engine.status(now)
        return show.KsView(status=status, now=now, policies=self.config.groups, port=self.config.port)

    def _summary(self, now: float) -> dict[str, Any]:
        return summarise_ks(self.engine.status(now))

    async def _rekey_command(self, request: Request) -> Answer:
        group = request.get("group")
        if group is not None and not isinstance(group, str):
            return {"ok": False, "error": f'rekey "group" must be a group name, not {group!r:.40}'}
        try:
            self.engine.force_rekey(self.loop.time(), group)
        except (KeyError, ValueError) as exc:
            return {"ok": False, "error": f"cannot rekey: {exc.args[0] if exc.args else exc}"}
        self._pump()
        return {"ok": True}


def summarise_ks(status: KsStatus) -> dict[str, Any]:
    """A few numbers to poll cheaply (a full KS status with thousands of members is megabytes of JSON)."""
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
        # Cooperative key servers: whether this one makes the keys, and who does.
        "coop": None if status.coop is None else {"state": status.coop.state, "primary": status.coop.primary},
    }


def load_ks_daemon(
    config: KeyServerConfig, settings: DaemonSettings, key_dir: Path, log: logging.Logger
) -> KsDaemon:
    """A key server daemon with the groups' signing keys from ``key_dir`` (made there when missing)."""
    try:
        keys, notes = load_signing_keys(key_dir, config.groups)
    except SigningKeyError as exc:
        raise StartupError(str(exc)) from None
    for note in notes:
        log.info("gdoi-ks: %s", note)
    return KsDaemon(config, settings, keys, log)
