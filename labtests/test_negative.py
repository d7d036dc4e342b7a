"""Negative checks: a member with the wrong pre-shared key never registers and never leaks GRE in clear;
a replayed or tampered GROUPKEY-PUSH changes nothing on the member that receives it."""

from __future__ import annotations

import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from dmvpn_lab.gdoi.constants import ISAKMP_HEADER_LEN, ExchangeType
from dmvpn_lab.gdoi.model import GDOI_PORT
from dmvpn_lab.lab import checks
from dmvpn_lab.lab.capture import capture
from dmvpn_lab.lab.converge import wait_for_json
from labtests.wire import judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.negative]


def _rejected(lab, node: str) -> dict[str, int]:
    return dict(lab.shell.gdoi_json(node, "show", "crypto", "gdoi").get("rejected", {}))


def test_wrong_psk_never_registers_and_never_sends_in_clear(lab, request, tmp_path):
    ks = lab.topology.key_server()
    spoke2 = lab.topology.nodes["spoke2"]
    good = spoke2.binds["/etc/gdoi/gdoi.cfg"]
    bad = tmp_path / "gdoi-wrong-psk.cfg"
    bad.write_text(good.read_text().replace("crypto isakmp key 0 cisco ", "crypto isakmp key 0 wrongkey "))
    assert bad.read_text() != good.read_text()
    rejected_before = sum(_rejected(lab, ks.name).values())
    address = spoke2.env["GDOI_LOCAL_ADDRESS"]
    member_before = checks.ks_members(lab.shell).get(address)
    pcap = lab.artifact(request.node.name, "wrong-psk.pcap")
    try:
        with capture(lab.shell, "internet", "any", pcap) as cap:
            lab.runtime.restart_gdoi(spoke2.name, config=bad)
            wait_for_json(
                lambda: sum(_rejected(lab, ks.name).values()),
                lambda n: None if n > rejected_before else "the KS has not refused anything yet",
                what=f"{ks.name}: gdoi show crypto gdoi --json (rejected counters)",
                timeout=60,
            )
            status = lab.shell.gdoi_json(spoke2.name, "show", "crypto", "gdoi")
            lab.save(request.node.name, "spoke2-show-crypto-gdoi.json", status)
            assert not status["registered"], status
            # spoke2's LAN cannot reach another spoke's LAN: dropped, not sent in clear.
            dst = lab.address_of_host(lab.host_of("spoke1"))
            result = lab.shell.run(
                lab.host_of(spoke2.name), ["ping", "-n", "-c", "5", "-i", "0.2", "-W", "1", dst], check=False
            )
            lab.save(request.node.name, "ping.txt", result.stdout)
            assert result.returncode != 0, "a member without keys reached another member"
        # The KS may still remember the earlier, legitimate registration; it must not have a new one.
        member_after = checks.ks_members(lab.shell).get(address)
        if member_before is None:
            assert member_after is None, f"{address} registered with the wrong key: {member_after}"
        elif member_after is not None:
            assert member_after["registered_ago_s"] >= member_before["registered_ago_s"], (
                f"{address} registered again with the wrong key: {member_after}"
            )
        verdict = judge_capture(cap, lab_policy(lab.shell))
        lab.save(request.node.name, "verdict.txt", verdict.summary() + "\n" + "\n".join(verdict.problems()))
        # The refused registrations are GDOI between spoke2 and the KS (allowed); anything else on the
        # underlay, from spoke2 or anyone, is a leak.
        assert verdict.problems() == [], f"{pcap}: " + "\n".join(verdict.problems())
        assert verdict.gdoi > 0, f"no GDOI between spoke2 and the KS on the wire ({pcap})"
    finally:
        lab.runtime.restart_gdoi(spoke2.name)
        checks.wait_converged(lab.shell, timeout=180, progress=lambda _line: None)


def _captured_push(lab, request, target_address: str) -> bytes:
    """Force two rekeys while capturing at the KS; return the first GROUPKEY-PUSH sent to ``target``.

    Replaying the newest push would be a retransmission (the member just ACKs it again); the first one
    is a genuine, correctly signed message whose sequence number is already behind.
    """
    ks = lab.topology.key_server()
    gm = next(g for g in lab.topology.group_members() if g.env["GDOI_LOCAL_ADDRESS"] == target_address)
    pcap = lab.artifact(request.node.name, "push.pcap")
    with capture(lab.shell, ks.name, "eth1", pcap, bpf=f"udp port {GDOI_PORT}"):
        for _ in range(2):
            before = lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi")["rekeys_cumulative"]
            lab.shell.gdoi(ks.name, "rekey")
            wait_for_json(
                lambda: lab.shell.gdoi_json(gm.name, "show", "crypto", "gdoi")["rekeys_cumulative"],
                lambda n, before=before: None if n > before else "rekey not received yet",
                what=f"{gm.name}: gdoi show crypto gdoi --json (rekey received)",
                timeout=60,
            )
    for pkt in rdpcap(str(pcap)):
        if IP in pkt and UDP in pkt and pkt[IP].dst == target_address:
            payload = bytes(pkt[UDP].payload)
            if len(payload) > ISAKMP_HEADER_LEN and payload[18] == ExchangeType.GROUPKEY_PUSH:  # exchange type byte
                return payload
    raise AssertionError(f"no GROUPKEY-PUSH to {target_address} in {pcap}")


def _send_from_ks(lab, payload: bytes, target: str) -> None:
    ks = lab.topology.key_server()
    src = ks.env["GDOI_LOCAL_ADDRESS"]
    script = (
        "import sys; from scapy.all import IP, UDP, Raw, send; "
        f"send(IP(src='{src}', dst='{target}')/UDP(sport={GDOI_PORT}, dport={GDOI_PORT})"
        "/Raw(bytes.fromhex(sys.argv[1])), verbose=0)"
    )
    lab.shell.run(ks.name, [sys.executable, "-c", script, payload.hex()], network_only=True)


@pytest.mark.parametrize(("attack", "reason"), [("replayed", "replayed"), ("tampered-signature", "bad-signature")])
def test_forged_or_replayed_rekey_changes_nothing(lab, request, attack, reason):
    # Target a GM the KS currently pushes to (after a KS restart, members re-join only as their TEKs end).
    members = set(checks.ks_members(lab.shell))
    target_gm = next((g for g in lab.topology.group_members() if g.env["GDOI_LOCAL_ADDRESS"] in members), None)
    assert target_gm is not None, f"the KS has no members to push to: {members}"
    target = target_gm.env["GDOI_LOCAL_ADDRESS"]
    push = _captured_push(lab, request, target)
    if attack == "tampered-signature":
        # PUSH bodies are CBC-encrypted under the KEK and end with the SIG payload: flipping a byte of the
        # third-last cipher block garbles two plaintext blocks inside the signature, nothing else.
        forged = bytearray(push)
        forged[-40] ^= 0x01
        push = bytes(forged)
    before = lab.shell.gdoi_json(target_gm.name, "show", "crypto", "gdoi")
    rejected_before = before.get("rejected", {}).get(reason, 0)
    _send_from_ks(lab, push, target)
    after = wait_for_json(
        lambda: lab.shell.gdoi_json(target_gm.name, "show", "crypto", "gdoi"),
        lambda s: None if s.get("rejected", {}).get(reason, 0) > rejected_before else f"no `{reason}` rejection yet",
        what=f"{target_gm.name}: gdoi show crypto gdoi --json (rejected counters)",
        timeout=30,
    )
    lab.save(request.node.name, f"{target_gm.name}-after.json", after)
    assert [t["spi"] for t in after["teks"]] == [t["spi"] for t in before["teks"]], "the TEKs changed"
    assert after["rekeys_cumulative"] == before["rekeys_cumulative"], "the forged rekey was counted"
    assert after["registered"]
