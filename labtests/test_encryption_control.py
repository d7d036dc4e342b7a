"""Positive control of the encryption suite's wire verdict: the same DMVPN without GDOI (dmvpn-plain)
must fail it with cleartext GRE.  A module of its own so the plain lab runs beside the seed lab's suites
(labtests/parallel.py)."""

from __future__ import annotations

import pytest

from labtests.lib import drive_protected_traffic
from labtests.wire import judge_capture, lab_policy

pytestmark = [pytest.mark.lab, pytest.mark.encryption]


def test_positive_control_plain_dmvpn_fails_the_same_check(plain_lab, request):
    pcap = plain_lab.artifact(request.node.name, "underlay.pcap")
    verdict = judge_capture(drive_protected_traffic(plain_lab, pcap), lab_policy(plain_lab.shell))
    lab_problems = verdict.problems()
    plain_lab.save(request.node.name, "verdict.txt", "\n".join(lab_problems))
    assert verdict.esp == 0
    assert any("cleartext" in p for p in lab_problems), "the wire check did not notice cleartext GRE"
    kinds = {"/".join(p.protocols[2:4]) for p in verdict.cleartext}
    assert any(k.startswith("gre") for k in kinds), kinds
