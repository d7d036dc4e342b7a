#!/usr/bin/env python3
"""How fast the GDOI key server registers group members, and how fast one rekey reaches them all.

Why this shape: a KS's two load peaks are everyone registering at once (after a KS or WAN restart) and a
unicast rekey that must reach, and be acknowledged by, every member before the old TEK expires.

* The KS is the real daemon (``gdoi ks``, a separate process pinned to CPU 0), talking UDP on loopback.
* The GMs are the real :class:`~dmvpn_lab.gdoi.gm.GroupMember` engine, simulated in this process (pinned
  to CPU 1), each on its own UDP socket at a distinct 127.x.y.z address.
* Registrations/s = GMs / wall time from the first GM's start to the last ``Registered``.  Because the
  GM side runs the same phase 1 maths in one Python process, the KS's own CPU time per registration is
  reported too (from /proc), as the KS's capacity when the GMs are not the bottleneck.
* Rekey time = from the ``rekey`` control request to the moment the KS counts an ACK from every member
  (its ``summary`` is polled every 0.1 s, so the figure is rounded up to that), with the time the last GM
  received the rekey alongside.

Goals (reported, not asserted): >= 500 registrations/s; 8000 GMs rekeyed and acked within 5 s.
Writes a table to stdout and JSON to results/bench-gdoi.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmvpn_lab.gdoi.config_model import GroupMemberConfig
from dmvpn_lab.gdoi.control import NoDaemonError, control_request
from dmvpn_lab.gdoi.events import Registered, RekeyReceived
from dmvpn_lab.gdoi.gm import GroupMember
from dmvpn_lab.gdoi.model import MAX_HALF_OPEN_LIMIT

REPO = Path(__file__).resolve().parent.parent
KS_ADDRESS = "127.0.0.1"
PORT = 18848
PSK = "bench"
GOAL_REGISTRATIONS_PER_S = 500.0
GOAL_REKEY_8000_S = 5.0


def gm_address(index: int) -> str:
    return f"127.{10 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


# --- The simulated group members ------------------------------------------------------------------


@dataclass
class SimulatedGm(asyncio.DatagramProtocol):
    """One GM engine on its own socket, pumped like the real daemon pumps it."""

    engine: GroupMember
    loop: asyncio.AbstractEventLoop
    on_event: Callable[[SimulatedGm, object], None]
    transport: asyncio.DatagramTransport | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    registered_at: float | None = None
    rekeyed_at: float | None = None
    events: list[object] = field(default_factory=list)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.engine.receive_datagram(data, (str(addr[0]), int(addr[1])), self.loop.time())
        self.pump()

    def fire(self) -> None:
        self.timer = None
        self.timer_at = None
        self.engine.handle_timer(self.loop.time())
        self.pump()

    def pump(self) -> None:
        assert self.transport is not None
        for data, addr in self.engine.datagrams_to_send(self.loop.time()):
            self.transport.sendto(data, addr)
        while (event := self.engine.next_event()) is not None:
            self.on_event(self, event)
        when = self.engine.get_timer()
        if when != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None if when is None else self.loop.call_at(when, self.fire)
            self.timer_at = when

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()


class Fleet:
    """N simulated GMs; registration starts with at most ``concurrency`` in progress at once."""

    def __init__(self, count: int, concurrency: int) -> None:
        self.count = count
        self.concurrency = concurrency
        self.gms: list[SimulatedGm] = []
        self.registered = 0
        self.rekeyed = 0
        self.all_registered = asyncio.Event()
        self.all_rekeyed = asyncio.Event()
        self._waiting: list[SimulatedGm] = []
        self.loop = asyncio.get_running_loop()

    def on_event(self, gm: SimulatedGm, event: object) -> None:
        if isinstance(event, Registered) and gm.registered_at is None:
            gm.registered_at = self.loop.time()
            self.registered += 1
            if self._waiting:
                self._start(self._waiting.pop())
            if self.registered == self.count:
                self.all_registered.set()
        elif isinstance(event, RekeyReceived) and gm.rekeyed_at is None:
            gm.rekeyed_at = self.loop.time()
            self.rekeyed += 1
            if self.rekeyed == self.count:
                self.all_rekeyed.set()

    async def open(self) -> None:
        for index in range(self.count):
            config = GroupMemberConfig(
                local_address=gm_address(index),
                group_name="BENCH",
                identity=1,
                servers=(KS_ADDRESS,),
                psk_by_peer={KS_ADDRESS: PSK.encode()},
                server_port=PORT,
            )
            gm = SimulatedGm(GroupMember(config), self.loop, self.on_event)
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda gm=gm: gm, local_addr=(config.local_address, PORT)
            )
            gm.transport = transport
            self.gms.append(gm)

    def _start(self, gm: SimulatedGm) -> None:
        gm.engine.start(self.loop.time())
        gm.pump()

    def start_registration(self) -> None:
        self._waiting = list(reversed(self.gms[self.concurrency :]))
        for gm in self.gms[: self.concurrency]:
            self._start(gm)

    def reset_rekeys(self) -> None:
        self.rekeyed = 0
        self.all_rekeyed.clear()
        for gm in self.gms:
            gm.rekeyed_at = None

    async def close(self) -> None:
        for gm in self.gms:
            gm.close()
        await asyncio.sleep(0.1)  # transports close on the next loop turns: free the addresses first


# --- The key server daemon ------------------------------------------------------------------------


class KeyServerProcess:
    def __init__(self, work: Path, members: int, *, profile: Path | None = None) -> None:
        self.work = work
        self.run_dir = work / "run-ks"
        config = work / "ks.yaml"
        lines = [
            "role: ks",
            f"local_address: {KS_ADDRESS}",
            f"port: {PORT}",
            f"max_half_open: {min(max(1000, members), MAX_HALF_OPEN_LIMIT)}",
            "psk:",
            *(f"  {gm_address(i)}: {PSK}" for i in range(members)),
            "groups:",
            "  - name: BENCH",
            "    identity: 1",
            "    transform: esp-gcm 256",
            "    acl: [permit gre any any]",
            "    rekey: {retransmit_interval: 10, retransmit_count: 2, rsa_modulus: 2048}",
        ]
        config.write_text("\n".join(lines) + "\n")
        command = [sys.executable]
        if profile is not None:
            command += ["-m", "cProfile", "-o", str(profile)]
        command += (
            ["-m", "dmvpn_lab.gdoi.cli"] if profile is None else [str(REPO / "src/dmvpn_lab/gdoi/cli.py")]
        )
        command += ["ks", "--config", str(config), "--run-dir", str(self.run_dir)]
        command += ["--key-dir", str(work / "keys"), "--log-level", "warning"]
        self.log = open(work / "ks.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(self.process.pid, {0})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gdoi ks exited: {(work / 'ks.log').read_text()}")
            try:
                control_request(self.run_dir, {"cmd": "status"}, timeout=5)
                return
            except NoDaemonError:
                time.sleep(0.05)
        raise SystemExit("gdoi ks did not start within 60 s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        return control_request(self.run_dir, payload, timeout=60)

    def stop(self) -> None:
        with contextlib.suppress(NoDaemonError):
            self.request({"cmd": "stop"})
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# --- Scenarios ------------------------------------------------------------------------------------


async def register(fleet: Fleet, ks: KeyServerProcess, budget: float) -> dict[str, Any]:
    cpu_before = ks.cpu_seconds()
    own_before = time.process_time()
    started = fleet.loop.time()
    fleet.start_registration()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.all_registered.wait(), budget)
    finished = max((gm.registered_at or started) for gm in fleet.gms)
    wall = max(finished - started, 1e-9)
    ks_cpu = ks.cpu_seconds() - cpu_before
    return {
        "gms": fleet.count,
        "concurrency": fleet.concurrency,
        "registered": fleet.registered,
        "wall_s": round(wall, 3),
        "registrations_per_s": round(fleet.registered / wall, 1),
        "ks_cpu_s": round(ks_cpu, 3),
        "ks_cpu_ms_per_registration": round(1000 * ks_cpu / max(fleet.registered, 1), 3),
        "ks_capacity_per_s": round(fleet.registered / ks_cpu, 1) if ks_cpu else None,
        "gm_side_cpu_s": round(time.process_time() - own_before, 3),
    }


async def rekey(fleet: Fleet, ks: KeyServerProcess, budget: float) -> dict[str, Any]:
    fleet.reset_rekeys()
    loop = fleet.loop
    before = await loop.run_in_executor(None, ks.request, {"cmd": "summary"})
    acked_before = sum(g["rekey_acks"] for g in before["summary"]["groups"])
    cpu_before = ks.cpu_seconds()
    started = loop.time()
    answer = await loop.run_in_executor(None, ks.request, {"cmd": "rekey"})
    if not answer.get("ok"):
        raise SystemExit(f"rekey refused: {answer}")
    acked_at = None
    acked = 0
    while loop.time() - started < budget:
        summary = await loop.run_in_executor(None, ks.request, {"cmd": "summary"})
        acked = sum(g["rekey_acks"] for g in summary["summary"]["groups"]) - acked_before
        if acked >= fleet.count:
            acked_at = loop.time()
            break
        await asyncio.sleep(0.1)
    reached = [gm.rekeyed_at for gm in fleet.gms if gm.rekeyed_at is not None]
    return {
        "gms": fleet.count,
        "reached": len(reached),
        "acked": acked,
        "last_gm_received_s": round(max(reached) - started, 3) if reached else None,
        "all_acked_s": round(acked_at - started, 3) if acked_at else None,
        "ks_cpu_s": round(ks.cpu_seconds() - cpu_before, 3),
    }


async def run_size(
    count: int, concurrency: int, work: Path, *, with_rekey: bool, profile: Path | None
) -> dict[str, Any]:
    ks = KeyServerProcess(work, count, profile=profile)
    fleet = Fleet(count, concurrency)
    try:
        await fleet.open()
        result: dict[str, Any] = {"registration": await register(fleet, ks, budget=max(60.0, count / 20))}
        if with_rekey and fleet.registered == count:
            result["rekey"] = await rekey(fleet, ks, budget=60.0)
        return result
    finally:
        await fleet.close()
        ks.stop()


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{'GMs':>6} {'concurrent':>10} {'registered':>10} {'wall s':>8} {'reg/s':>8} {'KS ms/reg':>10} "
        f"{'KS cap/s':>9} {'rekey reach s':>13} {'rekey acked s':>13}"
    )
    for size, result in results["runs"].items():
        reg = result["registration"]
        rk = result.get("rekey", {})
        print(
            f"{size:>6} {reg['concurrency']:>10} {reg['registered']:>10} {reg['wall_s']:>8} "
            f"{reg['registrations_per_s']:>8} {reg['ks_cpu_ms_per_registration']:>10} "
            f"{reg['ks_capacity_per_s'] or '-':>9} {rk.get('last_gm_received_s') or '-':>13} "
            f"{rk.get('all_acked_s') or '-':>13}"
        )
    goals = results["goals"]
    print(f"goal >= {GOAL_REGISTRATIONS_PER_S:.0f} registrations/s (1000 GMs): {goals['registrations']}")
    print(f"goal 8000 GMs rekeyed+acked within {GOAL_REKEY_8000_S:.0f} s: {goals['rekey_8000']}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {1 if (os.cpu_count() or 1) > 1 else 0})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(args.sizes) + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    runs: dict[str, Any] = {}
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"gdoi-bench-{size}-"))
        profile = work / "ks.prof" if args.profile and size == max(args.sizes) else None
        concurrency = min(size, args.concurrency)
        print(f"running {size} GMs ({concurrency} registering at once)...", file=sys.stderr)
        runs[str(size)] = await run_size(
            size, concurrency, work, with_rekey=size in args.rekey_sizes, profile=profile
        )
        if profile is not None and profile.exists():
            print(f"KS profile ({size} GMs), top functions by own time:", file=sys.stderr)
            pstats.Stats(str(profile), stream=sys.stderr).sort_stats("tottime").print_stats(15)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    reg_1000 = runs.get("1000", {}).get("registration", {}).get("registrations_per_s")
    rekey_8000 = runs.get("8000", {}).get("rekey", {}).get("all_acked_s")
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "runs": runs,
        "goals": {
            "registrations": "n/a"
            if reg_1000 is None
            else ("met" if reg_1000 >= GOAL_REGISTRATIONS_PER_S else f"missed ({reg_1000}/s)"),
            "rekey_8000": "n/a"
            if "8000" not in runs
            else (
                "met"
                if rekey_8000 is not None and rekey_8000 <= GOAL_REKEY_8000_S
                else f"missed ({rekey_8000} s)"
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 8000])
    parser.add_argument("--rekey-sizes", type=int, nargs="*", default=[1000, 8000])
    parser.add_argument(
        "--concurrency", type=int, default=1000, help="GMs registering at once (default 1000)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the KS in the largest run")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (configs, KS logs)")
    parser.add_argument("--output", type=Path, default=REPO / "results" / "bench-gdoi.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
