"""Rekey on the running lab: a forced GROUPKEY-PUSH during a continuous spoke-to-spoke flow loses nothing
and moves the wire to the new SPI; a KS restart never lets traffic out in clear."""

from __future__ import annotations

import subprocess

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import wait_for_json
from labtests.lib import NEW_FLOW_LOSS
from labtests.wire import assert_one_switch, judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.rekey]


def test_forced_rekey_during_a_flow_loses_no_packet(lab, request):
    ks = lab.topology.key_server()
    spoke3, spoke1 = lab.topology.nodes["spoke3"], lab.topology.nodes["spoke1"]
    before = checks.group_spis(lab.shell)
    acks_before = {
        gm.name: lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi")["rekey_acks_sent"]
        for gm in lab.topology.group_members()
    }
    dst = lab.address_of_host(lab.host_of(spoke1.name))
    # Shortcut in place before the measured flow (building it may cost a packet or two).
    lab.ping(lab.host_of(spoke3.name), dst, count=5, max_lost=NEW_FLOW_LOSS)
    pcap = lab.artifact(request.node.name, "rekey.pcap")
    with capture(lab.shell, "internet", "any", pcap):
        flow = lab.shell.spawn(
            lab.host_of(spoke3.name), ["ping", "-n", "-c", "400", "-i", "0.02", dst], log=subprocess.PIPE
        )
        lab.shell.gdoi(ks.name, "rekey")
        new = wait_for_json(
            lambda: checks.group_spis(lab.shell),
            lambda spis: None if spis - before else f"KS still hands out only {spis}",
            what=f"{ks.name}: gdoi show crypto gdoi --json (new TEK)",
            timeout=60,
        )
        new_spi = max(new - before)
        for gm in lab.topology.group_members():
            wait_for_json(
                lambda gm=gm: lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi"),
                lambda s, gm=gm: (
                    None
                    if s["rekey_acks_sent"] > acks_before[gm.name] and new_spi in [int(t["spi"]) for t in s["teks"]]
                    else "no new TEK / ACK yet"
                ),
                what=f"{gm.name}: gdoi show crypto gdoi --json (rekey received and ACKed)",
                timeout=90,
            )
        out, _ = flow.communicate(timeout=120)
    text = out.decode() if isinstance(out, bytes) else str(out)
    lab.save(request.node.name, "ping.txt", text)
    assert "400 packets transmitted, 400 received" in text, text[-400:]
    # The flow's own packets (spoke3 -> spoke1): the old SPI first, then the new one, switching once.
    src, dst_nbma = spoke3.labels["dmvpn-lab.nbma"], spoke1.labels["dmvpn-lab.nbma"]
    flow_spis = [p.esp_spi for p in read_packets(pcap, "esp") if (p.src, p.dst) == (src, dst_nbma)]
    lab.save(request.node.name, "flow-spis.txt", "\n".join(f"0x{s:x}" for s in flow_spis if s is not None))
    assert_one_switch(flow_spis, before, new_spi, pcap)
    members = checks.ks_members(lab.shell)
    assert all(m["rekey_acks"] >= 1 for m in members.values()), members


def test_ks_restart_never_lets_traffic_out_in_clear(lab, request):
    ks = lab.topology.key_server()
    try:
        _ks_restart_without_cleartext(lab, ks, lab.artifact(request.node.name, "ks-restart.pcap"))
    finally:
        # The restarted KS hands out a new TEK while members keep the old one until it nears its end (one
        # hour here), as IOS does without a cooperative KS: have every member register again so the
        # suites after this one find one group.
        for gm in lab.topology.group_members():
            lab.runtime.restart_gdoi(gm.name)
        checks.wait_converged(lab.shell, timeout=180, progress=lambda _line: None)


def _ks_restart_without_cleartext(lab, ks, pcap) -> None:
    spoke3, spoke1 = lab.topology.nodes["spoke3"], lab.topology.nodes["spoke1"]
    dst = lab.address_of_host(lab.host_of(spoke1.name))
    before = checks.group_spis(lab.shell)
    with capture(lab.shell, "internet", "any", pcap) as cap:
        lab.runtime.restart_gdoi(ks.name)
        wait_for_json(
            lambda: lab.shell.gdoi_json(ks.name, "show", "crypto", "gdoi"),
            {"role": "ks"},
            what=f"{ks.name}: gdoi show crypto gdoi --json after restart",
            timeout=60,
        )
        lab.ping(lab.host_of(spoke3.name), dst, count=10)
        lab.ping(lab.host_of("hub"), dst, count=5)
    # The SPIs the KS handed out before and after its restart: members keep the old TEK for now.
    verdict = judge_capture(cap, lab_policy(lab.shell, group_spis=before | checks.group_spis(lab.shell)))
    assert verdict.esp > 0 and verdict.problems() == [], verdict.problems()
