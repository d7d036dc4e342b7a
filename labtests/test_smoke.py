"""Smoke suite: the seed's lab comes up, registers, routes and pings; `down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmvpn_lab.lab import checks, generate
from dmvpn_lab.lab.converge import wait_for_json, wait_until
from dmvpn_lab.lab.generate import LabSpec, Protection
from dmvpn_lab.lab.netns import FRR_RUN, LabError, NetnsRuntime
from dmvpn_lab.lab.topology import load_topology
from labtests.lib import NEW_FLOW_LOSS

pytestmark = pytest.mark.lab


def test_every_gm_registered_with_the_ks(lab):
    spis = set()
    for gm in lab.topology.group_members():
        status = lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi")
        lab.save("smoke", f"{gm.name}-show-crypto-gdoi.json", status)
        assert checks.gm_registered(status) is None, f"{gm.name}: {checks.gm_registered(status)}"
        spis.add(tuple(sorted(t["spi"] for t in status["teks"])))
    assert len(spis) == 1, f"GMs hold different TEKs: {spis}"
    ks = lab.topology.key_server()
    assert ks is not None
    members = lab.shell.gdoi(ks.name, "show", "crypto", "gdoi", "ks", "members")
    for gm in lab.topology.group_members():
        assert gm.env["GDOI_LOCAL_ADDRESS"] in members, f"KS does not list {gm.name}:\n{members}"


def test_spokes_registered_at_the_hub(lab):
    hub = lab.topology.hub()
    cache = wait_for_json(
        lambda: lab.shell.vtysh_json(hub.name, "show ip nhrp cache json"),
        checks.hub_nhrp_expected(lab.shell),
        what=f"{hub.name}: show ip nhrp cache json",
        timeout=60,
    )
    lab.save("smoke", "hub-nhrp-cache.json", cache)


@pytest.mark.parametrize("src,dst", [("hub", "spoke1"), ("spoke1", "hub"), ("spoke3", "spoke1"), ("spoke2", "spoke3")])
def test_lan_hosts_ping_each_other(lab, src, dst):
    source, target = lab.host_of(src), lab.address_of_host(lab.host_of(dst))
    if src.startswith("spoke") and dst.startswith("spoke"):
        # The first spoke-to-spoke packets build the NHRP shortcut (labtests/lib.py, NEW_FLOW_LOSS);
        # the flow once it is built must lose nothing.
        lab.ping(source, target, count=5, max_lost=NEW_FLOW_LOSS)
    out = lab.ping(source, target, count=5)
    assert " 0% packet loss" in out, out


def _leftovers(lab_name: str) -> list[str]:
    found = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"namespace {line.split()[0]}" for line in namespaces.splitlines() if f"clab-{lab_name}-" in line]
    found += [f"FRR run dir {p}" for p in FRR_RUN.glob(f"clab-{lab_name}-*")]
    run_dir = Path("/run/dmvpn-lab") / lab_name
    if run_dir.exists():
        found.append(f"run dir {run_dir}")
    procs = subprocess.run(
        ["pgrep", "-af", f"clab-{lab_name}-|/run/dmvpn-lab/{lab_name}/"], capture_output=True, text=True
    ).stdout
    found += [f"process {line}" for line in procs.splitlines() if "pgrep" not in line]
    return found


@pytest.mark.runtime("netns")
def test_up_after_a_killed_up_works_and_down_leaves_nothing(tmp_path):
    """Kill `dmvpn-lab up` half-way, bring the lab up again, then `down`: nothing may remain."""
    # A private copy under another name, so this test never disturbs the session's labs.
    topo = load_topology(generate.write(LabSpec(1, Protection.PLAIN, "smoke-killed"), tmp_path))
    cli = [sys.executable, "-m", "dmvpn_lab.lab.cli", "-t", str(topo.path)]
    first = subprocess.Popen([*cli, "up"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert first.stdout is not None
    for line in first.stdout:  # kill it once FRR is starting: namespaces, links and daemons exist
        if "FRR" in line:
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert _leftovers(topo.name), "the killed up should have left a half-built lab to clean"

    again = subprocess.run([*cli, "up"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removing leftovers" in again.stdout
    runtime = NetnsRuntime(topo, progress=lambda _l: None)
    checks.wait_converged(runtime.shell, timeout=60, progress=lambda _l: None)

    down = subprocess.run([*cli, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while _leftovers(topo.name) and time.monotonic() < deadline:
        time.sleep(0.2)  # processes may take a moment to be reaped after SIGKILL
    assert _leftovers(topo.name) == []


# --- containerlab's own machinery ---------------------------------------------------------------------


@pytest.mark.runtime("containerlab")
def test_containerlab_inspect_lists_every_node_running(lab):
    """The topology file deployed by containerlab itself: its own inspection lists every node running."""
    from dmvpn_lab.lab.clab import containerlab_binary

    out = subprocess.run(
        [containerlab_binary(), "inspect", "-t", str(lab.topology.path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lab.save("smoke", "containerlab-inspect.json", out)
    data = json.loads(out)
    # containerlab 0.60 and later group the containers by lab name.
    containers = data.get("containers") or [c for group in data.values() if isinstance(group, list) for c in group]
    states = {c["name"]: c["state"] for c in containers}
    expected = {lab.topology.namespace(n): "running" for n in lab.topology.nodes}
    assert states == expected


@pytest.mark.runtime("containerlab")
def test_netns_runtime_refuses_to_touch_a_containerlab_lab(lab):
    before = lab.runtime.existing_namespaces()
    with pytest.raises(LabError, match="not by the netns runtime"):
        NetnsRuntime(lab.topology, progress=lambda _l: None).down()
    assert lab.runtime.existing_namespaces() == before
    assert lab.runtime.dead_daemons() == []


@pytest.mark.runtime("containerlab")
def test_supervisord_restarts_a_killed_sidecar_and_it_registers_again(lab):
    spoke = lab.topology.spokes()[0]
    before = lab.shell.run(spoke.name, ["pgrep", "-f", "gdoi gm"]).stdout.split()
    assert len(before) == 1, before
    lab.shell.run(spoke.name, ["kill", "-9", before[0]])

    def restarted() -> str | None:
        pids = lab.shell.run(spoke.name, ["pgrep", "-f", "gdoi gm"], check=False).stdout.split()
        return None if pids and pids != before else f"no new sidecar yet ({pids})"

    wait_until(restarted, what=f"{spoke.name}: supervisord restarts the GDOI member", timeout=60)
    wait_for_json(
        lambda: lab.shell.gdoi_json(spoke.name, "show", "crypto", "gdoi"),
        lambda status: checks.gm_registered(status),
        what=f"{spoke.name}: registered again after the restart",
        timeout=120,
    )
    lab.ping(lab.host_of(spoke.name), lab.address_of_host(lab.host_of(lab.topology.hub().name)), count=3, max_lost=1)
