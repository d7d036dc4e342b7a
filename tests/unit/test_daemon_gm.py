"""The GM daemon's kernel and socket side effects, with a scripted engine and a recording xfrm runner.

No kernel is touched: the applier's commands go to a recorder (as in test_xfrm_commands), the ACQUIRE
watcher runs a harmless process, and multicast joins are recorded instead of made.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dmvpn_lab.gdoi import cli
from dmvpn_lab.gdoi import gm_daemon as gm_daemon_module
from dmvpn_lab.gdoi.config_model import GroupMemberConfig
from dmvpn_lab.gdoi.daemon import DaemonSettings
from dmvpn_lab.gdoi.daemon_errors import StartupError
from dmvpn_lab.gdoi.events import Event, TekDeleted, TekInstalled, TekSA
from dmvpn_lab.gdoi.gm_daemon import GmDaemon
from dmvpn_lab.gdoi.gm_kernel import ios_interface_address, loopback_address
from dmvpn_lab.gdoi.kernel_events import Acquire, NhrpBinding
from dmvpn_lab.gdoi.model import TekTransform, TrafficSelector
from dmvpn_lab.gdoi.xfrm import XfrmError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

GM = "127.0.0.1"
PEER = "127.0.0.77"
TEK = TekSA(0x100, TekTransform.ESP_GCM256, bytes(36), b"", (TrafficSelector(),), 3600, 0.0)


class ScriptedGm:
    """Just enough of a GroupMember: the test queues its events and sets its KEK."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.events: deque[Event] = deque()
        self.kek: Any = None

    def start(self, now: float) -> None:
        self.journal.append("engine start")

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def status(self, now: float) -> SimpleNamespace:
        return SimpleNamespace(kek=self.kek)


class Recorder:
    def __init__(self, journal: list[str], fail: str | None = None, neighbours: str = "") -> None:
        self.journal = journal
        self.fail = fail
        self.neighbours = neighbours  # what `ip neigh show` answers

    def __call__(self, args: Sequence[str]) -> str:
        line = " ".join(args)
        if self.fail and self.fail in line:
            raise XfrmError(f"`ip {line}` failed: Operation not permitted")
        self.journal.append(line)
        return self.neighbours if line == "neigh show" else ""


def run_gm(
    tmp_path: Path,
    journal: list[str],
    script: Any,
    *,
    xfrm: bool,
    fail_close: tuple[TrafficSelector, ...] = (),
    runner: Recorder | None = None,
    runner_neighbours: str = "",
) -> GmDaemon:
    engine = ScriptedGm(journal)
    settings = DaemonSettings(role="gm", local_address=GM, port=0, run_dir=tmp_path, xfrm=xfrm)
    config = GroupMemberConfig(GM, "G", 1, servers=(), psk_by_peer={}, fail_close_selectors=fail_close)
    daemon = GmDaemon(
        config,
        settings,
        logging.getLogger("test.gdoi"),
        engine_factory=lambda config: engine,
        xfrm_runner=runner or Recorder(journal, neighbours=runner_neighbours),
        acquire_command=("sleep", "60"),
        neighbour_command=("sleep", "60"),
    )

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(ready=ready.set))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()  # a startup error surfaces here
            return
        try:
            script(daemon, engine)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    return daemon


def test_fail_close_policies_go_in_before_registration_and_held_acquires_are_served(tmp_path: Path) -> None:
    journal: list[str] = []

    def script(daemon: GmDaemon, engine: ScriptedGm) -> None:
        assert daemon.kernel is not None
        daemon.kernel.on_acquire(Acquire(src=GM, dst=PEER, protocol="gre"))  # GRE to PEER before any key
        assert not any("state add" in line for line in journal)
        engine.events.append(TekInstalled(TEK))
        daemon._pump()

    run_gm(tmp_path, journal, script, xfrm=True, fail_close=(TrafficSelector(),))
    start = journal.index("engine start")
    assert journal[1] == "neigh show"  # bindings NHRP made before the daemon started
    assert [line.split(" priority")[0] for line in journal[2:start]] == [
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir out",
        "xfrm policy update src 0.0.0.0/0 dst 0.0.0.0/0 proto 47 dir in",
    ]
    added = [line for line in journal[start:] if " add " in line or "policy update" in line]
    assert [line.split(" proto esp")[0] for line in added] == [
        f"xfrm state add src 0.0.0.0 dst {GM}",  # the TEK's inbound state; no second set of policies
        f"xfrm state add src {GM} dst {PEER}",  # the held ACQUIRE, answered with its own addresses
    ]


def test_without_fail_close_nothing_is_installed_before_the_first_tek(tmp_path: Path) -> None:
    journal: list[str] = []
    run_gm(tmp_path, journal, lambda daemon, engine: None, xfrm=True)
    assert journal[1:3] == ["neigh show", "engine start"]


def test_a_tek_the_key_server_deletes_leaves_the_kernel_at_once(tmp_path: Path) -> None:
    """A Delete payload's TekDeleted goes the way of an expired TEK (remove_tek)."""
    journal: list[str] = []

    def script(daemon: GmDaemon, engine: ScriptedGm) -> None:
        engine.events.append(TekInstalled(TEK))
        daemon._pump()
        assert not any("state delete" in line for line in journal)
        engine.events.append(TekDeleted(TEK.spi))
        daemon._pump()

    run_gm(tmp_path, journal, script, xfrm=True)
    assert f"xfrm state delete src 0.0.0.0 dst {GM} proto esp spi 0x{TEK.spi:08x}" in journal


NEIGHBOURS = """\
192.168.100.1 dev gre1 lladdr 127.0.0.88 REACHABLE proto nhrp
192.168.1.10 dev eth2 lladdr 3a:05:68:3e:09:d5 STALE
"""


def test_nhrp_bindings_get_their_outbound_state_before_any_packet(tmp_path: Path) -> None:
    journal: list[str] = []

    def script(daemon: GmDaemon, engine: ScriptedGm) -> None:
        assert not any("state add" in line for line in journal)  # the hub's binding waits for a TEK
        engine.events.append(TekInstalled(TEK))
        daemon._pump()
        daemon.kernel.on_nhrp_binding(NhrpBinding("192.168.100.3", "gre1", PEER))  # a shortcut resolved
        daemon.kernel.on_nhrp_binding(NhrpBinding("192.168.3.10", "gre1", PEER))  # same peer: nothing more
        daemon.kernel.on_nhrp_binding(NhrpBinding("192.168.100.2", "gre1", GM))  # our own address: nothing

    run_gm(tmp_path, journal, script, xfrm=True, runner_neighbours=NEIGHBOURS)
    added = [line.split(" proto esp")[0] for line in journal if "state add" in line]
    assert added == [
        f"xfrm state add src 0.0.0.0 dst {GM}",
        f"xfrm state add src {GM} dst 127.0.0.88",  # bound before the daemon started (the hub)
        f"xfrm state add src {GM} dst {PEER}",
    ]


def test_a_gm_that_cannot_close_does_not_start(tmp_path: Path) -> None:
    journal: list[str] = []
    with pytest.raises(StartupError, match="refusing to start fail-open"):
        run_gm(
            tmp_path,
            journal,
            lambda daemon, engine: None,
            xfrm=True,
            fail_close=(TrafficSelector(),),
            runner=Recorder(journal, fail="policy update"),
        )
    assert "engine start" not in journal


def _record_multicast_joins(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str]]:
    """Replace join_multicast: note (group, port, interface) and hand back an ordinary socket."""
    joined: list[tuple[str, int, str]] = []

    def fake_join(group: str, port: int, interface_address: str) -> socket.socket:
        joined.append((group, port, interface_address))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((GM, 0))
        sock.setblocking(False)
        return sock

    monkeypatch.setattr(gm_daemon_module, "join_multicast", fake_join)
    return joined


def test_the_gm_joins_the_rekey_group_its_kek_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joined = _record_multicast_joins(monkeypatch)

    def script(daemon: GmDaemon, engine: ScriptedGm) -> None:
        engine.kek = SimpleNamespace(multicast_address=None)  # unicast rekeys: nothing to join
        engine.events.append(TekInstalled(TEK))
        daemon._pump()
        assert joined == []
        engine.kek = SimpleNamespace(multicast_address="239.192.1.1", multicast_port=None)
        engine.events.extend([TekInstalled(TEK), TekInstalled(TEK)])
        daemon._pump()

    run_gm(tmp_path, journal=[], script=script, xfrm=False)
    assert joined == [("239.192.1.1", 0, GM)]  # once, on the GM's own address and port


def test_the_gm_joins_the_rekey_group_on_the_port_its_kek_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multicast rekeys go to the SA KEK's destination port, the key server's --port."""
    joined = _record_multicast_joins(monkeypatch)

    def script(daemon: GmDaemon, engine: ScriptedGm) -> None:
        engine.kek = SimpleNamespace(multicast_address="239.192.1.1", multicast_port=8848)
        engine.events.append(TekInstalled(TEK))
        daemon._pump()

    run_gm(tmp_path, journal=[], script=script, xfrm=False)
    assert joined == [("239.192.1.1", 8848, GM)]


# --- Loopback0 on a Linux node --------------------------------------------------------------------

LO_JSON = (
    '[{"ifindex":1,"ifname":"lo","addr_info":['
    '{"family":"inet","local":"127.0.0.1","prefixlen":8},'
    '{"family":"inet6","local":"::1","prefixlen":128},'
    '{"family":"inet","local":"11.11.11.11","prefixlen":32}]}]'
)


def test_loopback0_is_the_loopback_address_outside_127() -> None:
    commands: list[list[str]] = []

    def ip(args: Sequence[str]) -> str:
        commands.append(list(args))
        return LO_JSON

    assert ios_interface_address("Loopback0", ip) == "11.11.11.11"
    assert commands == [["-j", "addr", "show", "dev", "lo"]]
    assert ios_interface_address("Serial1/0", ip) is None  # no Linux counterpart is guessed
    assert loopback_address(lambda args: LO_JSON.replace("11.11.11.11", "127.0.0.2")) is None


def test_loopback_address_is_none_when_ip_fails_or_says_nonsense() -> None:
    def failing(args: Sequence[str]) -> str:
        raise XfrmError("`ip -j addr show dev lo` failed: Device does not exist")

    assert loopback_address(failing) is None
    assert loopback_address(lambda args: "not json") is None
    assert loopback_address(lambda args: '{"unexpected": 1}') is None


def test_gdoi_gm_runs_a_seed_config_without_local_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}

    def fake_run_daemon(daemon: object) -> int:
        seen["address"] = daemon.config.local_address  # type: ignore[attr-defined]
        return 0

    monkeypatch.setattr(cli, "run_daemon", fake_run_daemon)
    monkeypatch.setattr(cli, "ios_interface_address", lambda name: "11.11.11.11" if name == "Loopback0" else None)
    code = cli.main(["gm", "--config", str(FIXTURES / "gm-seed.ios"), "--run-dir", str(tmp_path), "--no-xfrm"])
    assert code == 0 and seen == {"address": "11.11.11.11"}
    monkeypatch.setattr(cli, "ios_interface_address", lambda name: None)
    assert cli.main(["gm", "--config", str(FIXTURES / "gm-seed.ios"), "--run-dir", str(tmp_path)]) == 2
