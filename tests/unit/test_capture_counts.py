"""tshark's own packet counts, read after a capture: drops must be seen, a missing count is an error."""

from __future__ import annotations

import pytest

from dmvpn_lab.lab.capture import Capture, CaptureError


def _capture(tmp_path, log: str) -> Capture:
    pcap = tmp_path / "x.pcap"
    pcap.with_suffix(".tshark.log").write_text(log)
    return Capture("internet", "any", pcap)


def test_counts_without_drops(tmp_path):
    log = "Capturing on 'any'\n ** (tshark:1) [Main MESSAGE] -- Capture started.\ntshark: \n412 packets captured\n"
    assert _capture(tmp_path, log).counts() == (412, 0)


def test_counts_with_drops(tmp_path):
    log = "Capturing on 'any'\n1000 packets captured\n17 packets dropped from any\n1 packet dropped\n"
    assert _capture(tmp_path, log).counts() == (1000, 18)


def test_no_count_is_an_error(tmp_path):
    with pytest.raises(CaptureError, match="no packet count"):
        _capture(tmp_path, "Capturing on 'any'\n").counts()
