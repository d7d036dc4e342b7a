"""Key server redundancy (COOP, docs/coop.md) on a lab of its own: two cooperating key servers, a hub and
two spokes (``python -m dmvpn_lab.lab.generate --key-servers 2 --spokes 2``).

ks1 (1.1.1.1, priority 100) starts first and becomes primary; ks2 (1.1.2.1, priority 50) joins as a
secondary and holds a copy of everything.  COOP timers are the generator's (announce 2 s, dead 6 s), so
a failover takes seconds.  The steps build on each other, as a trainee would go through them:

1. one primary, one secondary in sync, the same keys and members on both;
2. the primary dies during a spoke-to-spoke flow; the secondary takes over, and its forced rekey
   reaches every member: no ping lost, same group and KEK, members never register again;
3. the old primary comes back: it follows the new primary as a secondary, and there stays one primary.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import stays, wait_for_json
from dmvpn_lab.lab.generate import COOP_DEAD_S
from labtests.lib import NEW_FLOW_LOSS, Lab
from labtests.wire import assert_one_switch, judge_capture, lab_policy

# Each step starts where the one before left the lab: once one fails, the rest skip.
pytestmark = [pytest.mark.lab, pytest.mark.rekey, pytest.mark.incremental]

COOP_SHOW = ("show", "crypto", "gdoi", "ks", "coop")
GM_SHOW = ("show", "crypto", "gdoi")
FLOW_INTERVAL_S = 0.05
# Long enough for the dead time, the take-over, the rekey and every member's ACK under a loaded sandbox
# kernel; the test asserts the flow was still running when the last member had the new key.
FLOW_S = 60


@pytest.fixture(scope="module")
def coop_lab(pytestconfig, tmp_path_factory):
    from dmvpn_lab.lab import generate
    from dmvpn_lab.lab.generate import LabSpec, Protection
    from labtests.lib import bring_up

    spec = LabSpec(2, Protection.GDOI, "coop-lab", key_servers=2)
    folder = generate.write(spec, tmp_path_factory.mktemp("coop-lab"))
    yield from bring_up(pytestconfig, str(folder))


def _address(lab: Lab, node: str) -> str:
    return lab.topology.nodes[node].env["GDOI_LOCAL_ADDRESS"]


def _coop_statuses(lab: Lab) -> dict[str, Any]:
    return {ks.name: lab.shell.gdoi_json(ks.name, *COOP_SHOW) for ks in lab.topology.key_servers()}


def _roles(statuses: dict[str, Any]) -> dict[str, str]:
    return {name: status["coop"]["role"] for name, status in statuses.items()}


def _tek_spis(lab: Lab, node: str) -> set[int]:
    return {int(t["spi"]) for t in checks.ks_teks(lab.shell, lab.topology.nodes[node])}


def _wait_one_primary(lab: Lab, why: str) -> dict[str, Any]:
    statuses: dict[str, Any] = wait_for_json(
        lambda: _coop_statuses(lab),
        checks.coop_roles_problem,
        what=f"ks1, ks2: gdoi show crypto gdoi ks coop --json ({why})",
        timeout=60,
    )
    return statuses


def test_one_primary_and_one_secondary_in_sync(coop_lab, request):
    lab = coop_lab
    statuses = _wait_one_primary(lab, "one primary, the other in sync")
    lab.save(request.node.name, "coop.json", statuses)
    lab.save(request.node.name, "ks2-coop.txt", lab.shell.gdoi("ks2", *COOP_SHOW))
    # ks1 started first and has the higher priority; ks2 joined it.
    assert _roles(statuses) == {"ks1": "Primary", "ks2": "Secondary"}
    assert statuses["ks2"]["coop"]["primary"] == _address(lab, "ks1")
    assert statuses["ks1"]["coop"]["version"] == statuses["ks2"]["coop"]["version"]
    # The secondary's copy: the same TEKs and every member (reported in the primary's state).
    assert _tek_spis(lab, "ks2") == _tek_spis(lab, "ks1") != set()
    members = {gm.env["GDOI_LOCAL_ADDRESS"] for gm in lab.topology.group_members()}
    assert set(checks.ks_members(lab.shell, lab.topology.nodes["ks2"])) == members
    # Every member registered with the first key server it lists, the primary.
    for gm in lab.topology.group_members():
        status = lab.shell.gdoi_json(gm.name, *GM_SHOW)
        assert status["active_group_server"] == _address(lab, "ks1"), gm.name
        assert status["group_server_list"] == [_address(lab, "ks1"), _address(lab, "ks2")], gm.name


def test_primary_dies_during_a_flow_and_the_secondary_rekeys_without_a_loss(coop_lab, request):
    lab = coop_lab
    ks1, ks2 = lab.topology.nodes["ks1"], lab.topology.nodes["ks2"]
    _wait_one_primary(lab, "before the failure")
    members = lab.topology.group_members()
    before = {gm.name: lab.shell.gdoi_json(gm.name, *GM_SHOW) for gm in members}
    old_spis = _tek_spis(lab, ks1.name)
    spoke2, spoke1 = lab.topology.nodes["spoke2"], lab.topology.nodes["spoke1"]
    dst = lab.address_of_host(lab.host_of(spoke1.name))
    lab.ping(lab.host_of(spoke2.name), dst, count=5, max_lost=NEW_FLOW_LOSS)  # the shortcut, before measuring
    count = int(FLOW_S / FLOW_INTERVAL_S)
    pcap = lab.artifact(request.node.name, "failover.pcap")
    with capture(lab.shell, "internet", "any", pcap, snaplen=256) as cap:
        flow = lab.shell.spawn(
            lab.host_of(spoke2.name),
            ["ping", "-n", "-c", str(count), "-i", str(FLOW_INTERVAL_S), dst],
            log=subprocess.PIPE,
        )
        lab.runtime.stop_gdoi(ks1.name)
        wait_for_json(
            lambda: lab.shell.gdoi_json(ks2.name, *COOP_SHOW)["coop"],
            lambda coop: None if coop["role"] == "Primary" else f"role {coop['role']}",
            what=f"{ks2.name}: gdoi show crypto gdoi ks coop --json (taking over after {COOP_DEAD_S} s)",
            timeout=60,
        )
        lab.shell.gdoi(ks2.name, "rekey")
        new = wait_for_json(
            lambda: _tek_spis(lab, ks2.name),
            lambda spis: None if spis - old_spis else f"{ks2.name} still hands out only {spis}",
            what=f"{ks2.name}: gdoi show crypto gdoi --json (a new TEK)",
            timeout=60,
        )
        new_spi = max(new - old_spis)
        for gm in members:
            wait_for_json(
                lambda gm=gm: lab.shell.gdoi_json(gm.name, *GM_SHOW),
                lambda s, gm=gm: (
                    None
                    if new_spi in [int(t["spi"]) for t in s["teks"]]
                    and s["rekey_acks_sent"] > before[gm.name]["rekey_acks_sent"]
                    else f"no new TEK 0x{new_spi:x} or no ACK yet (last rekey from {s['rekey_received_from']})"
                ),
                what=f"{gm.name}: gdoi show crypto gdoi --json (the new primary's rekey received and ACKed)",
                timeout=90,
            )
        assert flow.poll() is None, f"the flow ended before every member held the new TEK: lengthen FLOW_S ({FLOW_S})"
        out, _ = flow.communicate(timeout=FLOW_S + 60)
    text = out.decode() if isinstance(out, bytes) else str(out)
    lab.save(request.node.name, "ping.txt", text[-2000:])
    assert f"{count} packets transmitted, {count} received" in text, text[-400:]

    ks2_address = _address(lab, ks2.name)
    ks2_group = lab.shell.gdoi_json(ks2.name, *GM_SHOW)["groups"][0]
    after = {gm.name: lab.shell.gdoi_json(gm.name, *GM_SHOW) for gm in members}
    lab.save(request.node.name, "members-after.json", after)
    for gm in members:
        was, now = before[gm.name], after[gm.name]
        # The rekey came from the secondary, now primary...
        assert now["rekey_received_from"] == ks2_address, gm.name
        # ...for the same group, under the KEK the member already held: it is the same key set.
        assert (now["group_name"], now["group_identity"]) == (was["group_name"], was["group_identity"]), gm.name
        assert now["group_identity"] == ks2_group["group_identity"], gm.name
        assert now["kek"]["spi"] == was["kek"]["spi"] == ks2_group["kek"]["spi"], gm.name
        # The member noticed nothing: still registered, and never registered again (with anyone).
        assert checks.gm_registered(now) is None and now["state"] == "REGISTERED", gm.name
        assert now["active_group_server"] == was["active_group_server"] == _address(lab, "ks1"), gm.name
        assert now["rekeys_after_registration"] > was["rekeys_after_registration"], gm.name
    # The new primary counts every member's ACK, so no member is dropped for ACKs it sent elsewhere.
    acked = checks.ks_members(lab.shell, ks2)
    assert {gm.env["GDOI_LOCAL_ADDRESS"] for gm in members} <= set(acked), acked
    assert all(m["rekey_acks"] >= 1 for m in acked.values()), acked
    # On the wire: the flow moved once from the old SPI to the new primary's, and nothing else than
    # group ESP, GDOI and COOP crossed the underlay during the failover.
    src, dst_nbma = spoke2.labels["dmvpn-lab.nbma"], spoke1.labels["dmvpn-lab.nbma"]
    flow_spis = [p.esp_spi for p in read_packets(pcap, "esp") if (p.src, p.dst) == (src, dst_nbma)]
    lab.save(request.node.name, "flow-spis.txt", "\n".join(f"0x{s:x}" for s in flow_spis if s is not None))
    assert_one_switch(flow_spis, old_spis, new_spi, pcap)
    verdict = judge_capture(cap, lab_policy(lab.shell, group_spis=old_spis | new))
    assert verdict.esp > 0 and verdict.problems() == [], verdict.problems()


def test_old_primary_returns_as_a_secondary_and_one_primary_stays(coop_lab, request):
    lab = coop_lab
    assert not lab.shell.gdoi("ks1", *COOP_SHOW, check=False), "ks1 runs already: the failover step left it"
    lab.runtime.start_gdoi("ks1")
    statuses = _wait_one_primary(lab, "ks1 back and in sync")
    lab.save(request.node.name, "coop.json", statuses)
    lab.save(request.node.name, "ks1-coop.txt", lab.shell.gdoi("ks1", *COOP_SHOW))
    # No pre-emption (docs/coop.md): the running primary keeps the role, whatever ks1's priority.
    assert _roles(statuses) == {"ks1": "Secondary", "ks2": "Primary"}
    assert _tek_spis(lab, "ks1") == _tek_spis(lab, "ks2")
    # Still one primary after ks1's own dead time has passed many times over: it never takes over.
    stays(
        lambda: checks.coop_problem(lab.shell),
        what="ks1, ks2: exactly one primary, the other in sync",
        duration=3 * COOP_DEAD_S,
        interval=1,
    )
    for gm in lab.topology.group_members():
        status = lab.shell.gdoi_json(gm.name, *GM_SHOW)
        assert checks.gm_registered(status) is None and status["state"] == "REGISTERED", gm.name
        assert {int(t["spi"]) for t in status["teks"]} & _tek_spis(lab, "ks2"), gm.name
