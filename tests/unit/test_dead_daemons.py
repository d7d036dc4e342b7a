"""Before each lab test the harness asks the runtime for dead daemons: a dead one is named with its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dmvpn_lab.lab.netns import NetnsRuntime
from dmvpn_lab.lab.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]


def test_a_dead_daemon_is_named_with_the_end_of_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("DMVPN_LAB_STATE_DIR", str(tmp_path))
    runtime = NetnsRuntime(load_topology(ROOT / "topologies" / "dmvpn-gdoi"), progress=lambda _line: None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = tmp_path / "dmvpn-gdoi"
    (folder / "spoke1").mkdir(parents=True)
    (folder / "spoke1" / "nhrpd.log").write_text("line 1\nnhrpd: fatal: something broke\n")
    state = {"pids": {"spoke1": {"nhrpd": gone.pid}, "hub": {"gdoi-gm": os.getpid()}}}
    (folder / "state.json").write_text(json.dumps(state))
    dead = runtime.dead_daemons()
    assert len(dead) == 1 and dead[0].startswith(f"spoke1: nhrpd (pid {gone.pid}) is not running")
    assert "nhrpd: fatal: something broke" in dead[0]


def test_no_state_means_nothing_dead(tmp_path, monkeypatch):
    monkeypatch.setenv("DMVPN_LAB_STATE_DIR", str(tmp_path))
    runtime = NetnsRuntime(load_topology(ROOT / "topologies" / "dmvpn-gdoi"), progress=lambda _line: None)
    assert runtime.dead_daemons() == []
