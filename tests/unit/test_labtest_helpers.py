"""Controls for the lab suites' own helpers: each must fail on the fault it exists to catch."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
from labtests.lib import Lab, ping_totals
from labtests.wire import assert_one_switch

OLD, NEW = 0x1111, 0x2222


def test_one_switch_from_old_to_new_passes():
    assert_one_switch([OLD] * 12 + [NEW] * 15, {OLD}, NEW, "x.pcap")


@pytest.mark.parametrize(
    "spis",
    [
        [NEW] * 30,  # the old SPI never carried the flow
        [OLD] * 30,  # never moved
        [OLD] * 12 + [NEW] * 5 + [OLD] * 3 + [NEW] * 12,  # flapped back
        [0x9999] * 12 + [NEW] * 15,  # a foreign SPI before the switch
        [],  # nothing on the wire
    ],
)
def test_one_switch_fails_on_what_it_rules_out(spis):
    with pytest.raises(AssertionError):
        assert_one_switch(spis, {OLD}, NEW, "x.pcap")


def _lab_answering(stdout: str, returncode: int = 0) -> Lab:
    def run(node, argv, check=True, timeout=60.0):
        return subprocess.CompletedProcess(argv, returncode, stdout, "")

    return Lab(topology=None, shell=SimpleNamespace(run=run), runtime=None, results=None)  # type: ignore[arg-type]


def test_ping_asserts_no_loss_unless_told():
    # iputils exits 0 when any reply came back: one lost of three must still fail.
    summary = "3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n"
    with pytest.raises(AssertionError, match="2/3 answered"):
        _lab_answering(summary).ping("host4", "192.168.2.10")
    assert _lab_answering(summary).ping("host4", "192.168.2.10", max_lost=1) == summary
    assert ping_totals("5 packets transmitted, 5 received, 0% packet loss") == (5, 5)


def test_ping_without_a_summary_fails():
    with pytest.raises(AssertionError, match="no ping summary"):
        _lab_answering("connect: Network is unreachable\n", returncode=2).ping("host4", "192.168.2.10")
