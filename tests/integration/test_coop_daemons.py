"""Two ``gdoi ks`` daemons cooperating on loopback, and a ``gdoi gm`` that lists both.

The primary is stopped: the secondary takes over after the dead time with the same keys, its rekey
reaches the member, which never registers again; the old primary comes back as a secondary.  Timers
are short (announce 0.5 s, dead 1.5 s) so the run takes seconds; everything is awaited by polling the
control sockets.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_daemons import gdoi, show_json, status, wait_for

from dmvpn_lab.gdoi.control import NoDaemonError, control_request

pytestmark = pytest.mark.integration

KS1, KS2, GM = "127.0.0.1", "127.0.0.4", "127.0.0.5"
PORT = 848


def ks_yaml(me: str, peer: str, priority: int) -> str:
    return f"""\
role: ks
local_address: {me}
psk:
  {GM}: cisco
  {peer}: coop-secret
redundancy:
  local_priority: {priority}
  peers: [{peer}]
  announce_period: 0.5
  dead_time: 1.5
groups:
  - name: GDOI_GROUP
    identity: 123
    tek_lifetime: 600
    rekey:
      rsa_modulus: 1024
"""


GM_YAML = f"""\
role: gm
local_address: {GM}
group: GDOI_GM
identity: 123
servers: [{KS1}, {KS2}]
psk: {{{KS1}: cisco, {KS2}: cisco}}
registration_retry: 1
"""


@dataclass
class CoopLab:
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run_dir(self, name: str) -> Path:
        return self.root / f"run-{name}"

    def start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until the end
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "dmvpn_lab.gdoi.cli", *args, "--run-dir", str(self.run_dir(name))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: status(self.run_dir(name)), f"the control socket of {name}")

    def start_ks(self, name: str) -> None:
        self.start(name, "ks", "--config", str(self.root / f"{name}.yaml"), "--port", str(PORT),
                   "--key-dir", str(self.root / f"keys-{name}"))  # fmt: skip

    def stop(self, name: str) -> None:
        with contextlib.suppress(NoDaemonError):
            control_request(self.run_dir(name), {"cmd": "stop"}, timeout=5)
        process = self.processes.pop(name)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    def coop(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = show_json(self.run_dir(name), "crypto", "gdoi", "ks", "coop")["coop"]
        return data


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoopLab]:
    root = tmp_path_factory.mktemp("gdoi-coop")
    (root / "ks1.yaml").write_text(ks_yaml(KS1, KS2, 100))
    (root / "ks2.yaml").write_text(ks_yaml(KS2, KS1, 50))
    (root / "gm.yaml").write_text(GM_YAML)
    lab = CoopLab(root)
    try:
        lab.start_ks("ks1")
        lab.start_ks("ks2")
        yield lab
    finally:
        for name in list(lab.processes):
            lab.stop(name)


def test_one_primary_is_elected_and_the_secondary_syncs(lab: CoopLab) -> None:
    def settled() -> bool:
        ks1, ks2 = lab.coop("ks1"), lab.coop("ks2")
        return ks1["role"] == "Primary" and ks2["role"] == "Secondary" and ks2["peers"][0]["in_sync"]

    wait_for(settled, "ks1 to be primary and ks2 a secondary in sync")
    text = gdoi("show", "crypto", "gdoi", "ks", "coop", "--run-dir", str(lab.run_dir("ks2"))).stdout
    assert "Local KS Role: Secondary , Local KS Status: Alive" in text
    assert "Peer KS Role: Primary   , Peer KS Status: Alive" in text


def test_member_registers_with_the_primary(lab: CoopLab) -> None:
    lab.start("gm", "gm", "--config", str(lab.root / "gm.yaml"), "--no-xfrm", "--port", str(PORT))
    wait_for(lambda: (s := status(lab.run_dir("gm"))) and s["status"]["registered"], "the GM to register")
    assert show_json(lab.run_dir("gm"), "crypto", "gdoi")["active_group_server"] == KS1
    wait_for(
        lambda: len(show_json(lab.run_dir("ks2"), "crypto", "gdoi", "ks", "members")["members"]) == 1,
        "the secondary to learn the member from the primary",
    )


def test_primary_dies_secondary_takes_over_and_rekeys_the_member(lab: CoopLab) -> None:
    before = show_json(lab.run_dir("gm"), "crypto", "gdoi")
    lab.stop("ks1")
    wait_for(lambda: lab.coop("ks2")["role"] == "Primary", "ks2 to take over")
    assert gdoi("rekey", "--run-dir", str(lab.run_dir("ks2"))).stdout.strip() == "rekey started"

    def rekeyed() -> dict[str, Any] | None:
        data = show_json(lab.run_dir("gm"), "crypto", "gdoi")
        return data if data["rekeys_cumulative"] == 1 else None

    after = wait_for(rekeyed, "the GM to take the new primary's rekey")
    assert after["state"] == "REGISTERED" and after["active_group_server"] == KS1  # never registered again
    assert {t["spi"] for t in before["teks"]} < {t["spi"] for t in after["teks"]}
    wait_for(
        lambda: show_json(lab.run_dir("ks2"), "crypto", "gdoi", "ks", "members")["members"][0]["rekey_acks"] == 1,
        "the GM's ACK to reach the new primary",
    )


def test_old_primary_returns_as_secondary(lab: CoopLab) -> None:
    lab.start_ks("ks1")

    def settled() -> bool:
        ks1 = lab.coop("ks1")
        return ks1["role"] == "Secondary" and ks1["peers"][0]["in_sync"] and lab.coop("ks2")["role"] == "Primary"

    wait_for(settled, "ks1 to come back as a secondary in sync")
    ks1 = show_json(lab.run_dir("ks1"), "crypto", "gdoi")
    ks2 = show_json(lab.run_dir("ks2"), "crypto", "gdoi")
    assert [t["spi"] for t in ks1["groups"][0]["teks"]] == [t["spi"] for t in ks2["groups"][0]["teks"]]
