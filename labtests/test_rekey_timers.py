"""Rekey driven by the clock, on a small lab of its own with short TEK lifetimes (IOS's minimum, 120 s)
and fast retransmits: natural rollover, expiry of the old SA, a member dropped for missed ACKs and
registering again, and members registering again after a KS restart all happen within minutes."""

from __future__ import annotations

import signal
import subprocess

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture, read_packets
from dmvpn_lab.lab.converge import wait_for_json
from labtests.lib import NEW_FLOW_LOSS, ping_totals
from labtests.wire import assert_one_switch, judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.rekey]


FAST_TEK_LIFETIME_S = 120


@pytest.fixture(scope="module")
def fast_lab(pytestconfig, tmp_path_factory):
    from dmvpn_lab.lab import generate
    from dmvpn_lab.lab.generate import LabSpec, Protection
    from labtests.lib import bring_up

    spec = LabSpec(2, Protection.GDOI, "rekey-lab", tek_lifetime_s=FAST_TEK_LIFETIME_S, rekey_retransmit=(5, 2))
    folder = generate.write(spec, tmp_path_factory.mktemp("rekey-lab"))
    yield from bring_up(pytestconfig, str(folder))


def test_natural_rollover_loses_nothing_and_the_old_state_goes(fast_lab, request):
    lab = fast_lab
    # The flow must start well before the KS rolls the TEK over (30 s before its end): under a loaded
    # machine the bring-up can use most of a 120 s lifetime, so wait for the next TEK if need be.
    old = wait_for_json(
        lambda: max(checks.ks_teks(lab.shell), key=lambda t: t["lifetime_remaining_s"]),
        lambda tek: None if tek["lifetime_remaining_s"] >= 60 else "the current TEK rolls over too soon",
        what="KS: a TEK with 60 s or more to live",
        timeout=FAST_TEK_LIFETIME_S,
    )
    flow_s = old["lifetime_remaining_s"] + 15  # past the rekey (30 s before expiry) and the old TEK's end
    dst = lab.address_of_host(lab.host_of("spoke1"))
    lab.ping(lab.host_of("spoke2"), dst, count=5, max_lost=NEW_FLOW_LOSS)  # builds the shortcut
    pcap = lab.artifact(request.node.name, "rollover.pcap")
    count = int(flow_s / 0.05)
    with capture(lab.shell, "internet", "any", pcap, bpf="esp"):
        flow = lab.shell.spawn(
            lab.host_of("spoke2"), ["ping", "-n", "-c", str(count), "-i", "0.05", dst], log=subprocess.PIPE
        )
        out, _ = flow.communicate(timeout=flow_s + 120)
    text = out.decode()
    lab.save(request.node.name, "ping.txt", text[-2000:])
    # The TEK that followed the old one, read now (the waits below may outlast it): of the KS's other
    # TEKs the oldest, since a slow machine can stretch the flow past the next rollover too.
    successors = [t for t in checks.ks_teks(lab.shell) if t["spi"] != old["spi"]]
    assert successors, "the KS never rolled its TEK over"
    new = min(successors, key=lambda t: t["lifetime_remaining_s"])
    assert f"{count} packets transmitted, {count} received" in text, text[-400:]
    for router in lab.topology.routers():
        wait_for_json(
            lambda r=router: [s.spi for s in checks.xfrm_states(lab.shell, r.name)],
            lambda spis: None if old["spi"] not in spis else f"old SPI 0x{old['spi']:x} still installed",
            what=f"{router.name}: ip xfrm state (old TEK removed after expiry)",
            timeout=60,
        )
    assert new["spi"] != old["spi"], "the KS never rolled its TEK over"
    src, dst_nbma = lab.node_label("spoke2", "nbma"), lab.node_label("spoke1", "nbma")
    flow_spis = [p.esp_spi for p in read_packets(pcap, "esp") if (p.src, p.dst) == (src, dst_nbma)]
    assert_one_switch(flow_spis, {old["spi"]}, new["spi"], pcap)


def test_gm_whose_acks_stop_is_dropped_and_registers_again(fast_lab, request):
    lab = fast_lab
    ks = lab.topology.key_server()
    spoke1 = lab.topology.nodes["spoke1"]
    address = spoke1.env["GDOI_LOCAL_ADDRESS"]
    lab.shell.gdoi(spoke1.name, "acks", "off")
    try:
        for _ in range(6):  # max missed ACKs is retransmit number + 1 = 3 rekeys; allow slack
            if address not in checks.ks_members(lab.shell):
                break
            missed = checks.ks_members(lab.shell)[address]["missed_acks"]
            lab.shell.gdoi(ks.name, "rekey")
            wait_for_json(
                lambda: checks.ks_members(lab.shell),
                lambda m, missed=missed: (
                    None if address not in m or m[address]["missed_acks"] > missed else "ACK not yet counted as missed"
                ),
                what=f"{ks.name}: members (missed ACKs of {address})",
                timeout=60,
            )
        lab.save(request.node.name, "members-after-drop.json", checks.ks_members(lab.shell))
        assert address not in checks.ks_members(lab.shell), f"{address} was never dropped"
    finally:
        lab.shell.gdoi(spoke1.name, "acks", "on")
    # Dropped members get no rekey: the GM registers again before its newest TEK ends.
    wait_for_json(
        lambda: checks.ks_members(lab.shell),
        lambda m: None if address in m else f"{address} not registered again",
        what=f"{ks.name}: members ({address} back)",
        timeout=FAST_TEK_LIFETIME_S + 60,
    )


def test_ks_restart_members_register_again_and_nothing_leaves_in_clear(fast_lab, request):
    lab = fast_lab
    ks = lab.topology.key_server()
    dst = lab.address_of_host(lab.host_of("spoke1"))
    pcap = lab.artifact(request.node.name, "ks-restart.pcap")
    before = checks.group_spis(lab.shell)
    with capture(lab.shell, "internet", "any", pcap) as cap:
        lab.runtime.restart_gdoi(ks.name)
        wait_for_json(lambda: checks.ks_members(lab.shell), {}, what=f"{ks.name}: answering after restart", timeout=60)
        flow = lab.shell.spawn(
            lab.host_of("spoke2"),
            ["ping", "-n", "-i", "0.2", "-w", str(FAST_TEK_LIFETIME_S + 30), dst],
            log=subprocess.PIPE,
        )
        wanted = {gm.env["GDOI_LOCAL_ADDRESS"] for gm in lab.topology.group_members()}
        wait_for_json(
            lambda: set(checks.ks_members(lab.shell)),
            lambda m: None if m >= wanted else f"registered: {sorted(m)}",
            what=f"{ks.name}: every GM registered again",
            timeout=FAST_TEK_LIFETIME_S + 60,
        )
        flow.send_signal(signal.SIGINT)  # ping prints its totals on SIGINT
        out, _ = flow.communicate(timeout=30)
        lab.ping(lab.host_of("spoke2"), dst, count=5)
    sent, received = ping_totals(out.decode())
    lab.save(request.node.name, "flow.json", {"sent": sent, "received": received})
    # Members move to the restarted KS's TEK one by one, as each old TEK nears its end; a packet sent
    # with the new TEK to a member that has not re-registered yet is lost, so a few losses are expected.
    assert sent >= 50 and received >= 0.95 * sent, f"flow across the re-registrations: {received}/{sent} received"
    # Only the SPIs of the KS, before and after its restart, may be on the wire.
    verdict = judge_capture(cap, lab_policy(lab.shell, group_spis=before | checks.group_spis(lab.shell)))
    assert verdict.esp > 0 and verdict.problems() == [], verdict.problems()
