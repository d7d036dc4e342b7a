"""A real ``gdoi ks`` flooded with Main Mode message 1s forged from a member's address.

Only loopback addresses of 127.0.13.0/24 (apart from the other integration tests' 127.0.0.x), a bounded
number of datagrams sent within a bounded time, and a flood that stops by itself.  The forged datagrams
carry the member's address and port (a raw socket writes the IP header) when the test may open one,
otherwise the member's address from another port.  While the flood runs, a real ``gdoi gm`` starts
and must be registered within 2 s; the key server's memory must not grow with the flood, and its
refusal counters must account for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmvpn_lab.gdoi.config_model import IsakmpPolicy
from dmvpn_lab.gdoi.control import NoDaemonError, control_request
from dmvpn_lab.gdoi.phase1 import MainModeInitiator

pytestmark = pytest.mark.integration

KS, GM, PORT = "127.0.13.1", "127.0.13.2", 848
FLOOD_S = 3.0  # the flood stops after this long ...
FLOOD_DATAGRAMS = 2400  # ... or this many datagrams, whichever comes first
GM_STARTS_AFTER_S = 0.5
OVERSIZED_EVERY, FORGED_MSG3_EVERY = 10, 10  # of every 10 datagrams: 1 oversized, 1 forged message 3

KS_YAML = f"""\
role: ks
local_address: {KS}
psk: {{{GM}: cisco}}
groups:
  - name: G
    identity: 7
"""
GM_YAML = f"""\
role: gm
local_address: {GM}
group: G
identity: 7
servers: [{KS}]
psk: {{{KS}: cisco}}
"""


def _status(run_dir: Path) -> dict[str, Any] | None:
    try:
        answer = control_request(run_dir, {"cmd": "status"}, timeout=5)
    except NoDaemonError:
        return None
    status: dict[str, Any] | None = answer.get("status") if answer.get("ok") else None
    return status


def _stop(process: subprocess.Popen[bytes], run_dir: Path) -> None:
    with contextlib.suppress(NoDaemonError):
        control_request(run_dir, {"cmd": "stop"}, timeout=5)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Forger:
    """Sends UDP datagrams whose source is the member's address (and port, with a raw socket)."""

    def __init__(self) -> None:
        try:
            self.raw: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.udp: socket.socket | None = None
        except PermissionError:
            self.raw = None
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((GM, 0))

    def send(self, payload: bytes) -> None:
        with contextlib.suppress(OSError):  # a full buffer loses a forged datagram: no matter
            if self.raw is not None:
                udp = struct.pack("!HHHH", PORT, PORT, 8 + len(payload), 0) + payload  # checksum 0: none
                ip = struct.pack(
                    "!BBHHHBBH4s4s",
                    0x45,
                    0,
                    20 + len(udp),
                    0,
                    0,
                    64,
                    socket.IPPROTO_UDP,
                    0,
                    socket.inet_aton(GM),
                    socket.inet_aton(KS),
                )  # the kernel fills in the total length, ID and header checksum
                self.raw.sendto(ip + udp, (KS, 0))
            else:
                assert self.udp is not None
                self.udp.sendto(payload, (KS, PORT))

    def close(self) -> None:
        for sock in (self.raw, self.udp):
            if sock is not None:
                sock.close()


def flood(forger: Forger, counts: dict[str, int], stop: threading.Event) -> None:
    """Bounded in count and time, whatever happens to the daemons."""
    first = MainModeInitiator((IsakmpPolicy(),), b"x", GM, KS, os.urandom).first_message()
    padding = bytes(60000)  # trailing bytes the header's length counts: 60 KB the KS must not echo
    oversized = first[:24] + struct.pack("!I", len(first) + len(padding)) + first[28:] + padding
    deadline = time.monotonic() + FLOOD_S
    interval = FLOOD_S / FLOOD_DATAGRAMS
    for n in range(FLOOD_DATAGRAMS):
        if stop.is_set() or time.monotonic() > deadline:
            break
        kind = n % 10
        first = MainModeInitiator((IsakmpPolicy(),), b"x", GM, KS, os.urandom).first_message()
        if kind == 0:
            forger.send(oversized)
            counts["oversized"] += 1
        elif kind == 1:
            forger.send(first[:8] + os.urandom(8) + first[16:])  # message 3 under a guessed cookie
            counts["forged-msg3"] += 1
        else:
            forger.send(first)
            counts["msg1"] += 1
        time.sleep(max(0.0, (n + 1) * interval - (FLOOD_S - (deadline - time.monotonic()))))


@pytest.fixture
def ks_daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    (tmp_path / "ks.yaml").write_text(KS_YAML)
    run_dir = tmp_path / "run-ks"
    log = open(tmp_path / "ks.log", "wb")  # noqa: SIM115 - the process owns it until the end
    cmd = [sys.executable, "-m", "dmvpn_lab.gdoi.cli", "ks", "--config", str(tmp_path / "ks.yaml")]
    cmd += ["--run-dir", str(run_dir), "--key-dir", str(tmp_path / "keys"), "--log-level", "error"]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while _status(run_dir) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the KS did not start:\n{(tmp_path / 'ks.log').read_text()}")
            time.sleep(0.05)
        yield process, run_dir, tmp_path
    finally:
        _stop(process, run_dir)
        log.close()


def test_a_forged_flood_does_not_lock_the_member_out(
    ks_daemon: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    ks, ks_run, root = ks_daemon
    (root / "gm.yaml").write_text(GM_YAML)
    gm_run = root / "run-gm"
    rss_before = _rss_kb(ks.pid)
    counts = {"oversized": 0, "forged-msg3": 0, "msg1": 0}
    stop = threading.Event()
    forger = Forger()
    flooding = threading.Thread(target=flood, args=(forger, counts, stop), daemon=True)
    gm: subprocess.Popen[bytes] | None = None
    try:
        flooding.start()
        time.sleep(GM_STARTS_AFTER_S)
        started = time.monotonic()
        gm_cmd = [sys.executable, "-m", "dmvpn_lab.gdoi.cli", "gm", "--config", str(root / "gm.yaml")]
        gm_cmd += ["--no-xfrm", "--run-dir", str(gm_run), "--log-level", "error"]
        gm = subprocess.Popen(gm_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        registered_after = None
        while time.monotonic() - started < 10:
            status = _status(gm_run)
            if status is not None and status["status"]["registered"]:
                registered_after = time.monotonic() - started
                break
            time.sleep(0.02)
        flood_running = flooding.is_alive()
        flooding.join(timeout=FLOOD_S + 5)
        assert not flooding.is_alive(), "the flood did not stop by itself"
    finally:
        stop.set()
        forger.close()
        if gm is not None:
            _stop(gm, gm_run)
    assert registered_after is not None, "the member never registered during the flood"
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmvpn_lab.gdoi.cli",
            "show",
            "crypto",
            "gdoi",
            "ks",
            "--run-dir",
            str(ks_run),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ks_show = json.loads(shown.stdout)  # what an operator sees: `show crypto gdoi ks`
    registration, rejected = ks_show["registration"], ks_show["rejected"]
    rss_after = _rss_kb(ks.pid)
    report = (
        f"forged {counts}, member registered after {registered_after:.2f} s (flood still running: "
        f"{flood_running}), KS RSS {rss_before} -> {rss_after} kB, registration {registration}, "
        f"rejected {rejected}"
    )
    print(report)
    (root / "flood-report.txt").write_text(report + "\n")
    assert flood_running, "the member registered only after the flood"
    assert registered_after < 2.0, report
    # received datagrams may be fewer than sent ones (a full socket buffer), never more
    assert 0 < rejected.get("oversized", 0) <= counts["oversized"], report
    assert 0 < rejected.get("bad-cookie", 0) <= counts["forged-msg3"], report
    assert counts["msg1"] // 2 < sum(registration["stateless_replies"].values()) <= counts["msg1"], report
    assert registration["half_open_peak"] <= 5 + 1, report  # five forged slots, then the member's own
    assert registration["state_bytes"] < 50_000, report
    assert rss_after - rss_before < 20_000, report  # kB: the flood leaves no trace in memory
