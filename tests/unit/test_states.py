"""The engines' states: enums changed through one setter that logs each transition."""

from __future__ import annotations

import logging

import pytest
from engine_harness import KS_ADDR, make_lab

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.gm import GmState

GM = "127.0.0.11"


def _transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dmvpn_lab.gdoi.statemachine"]


def test_a_registration_logs_every_transition_of_the_member_and_both_exchanges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dmvpn_lab.gdoi")
    net = make_lab(1)
    gm = net.gm(GM)
    assert gm.state is GmState.REGISTERED
    member = f"group member {GM} (group GDOI_GM, key server {KS_ADDR})"
    assert _transitions(caplog) == [
        f"{member}: IDLE -> MAIN_MODE",
        f"Main Mode initiator {GM} -> {KS_ADDR}: START -> WAIT_MSG2",
        f"Main Mode initiator {GM} -> {KS_ADDR}: WAIT_MSG2 -> WAIT_MSG4",
        f"Main Mode responder {KS_ADDR} <- {GM}: WAIT_MSG3 -> WAIT_MSG5",
        f"Main Mode initiator {GM} -> {KS_ADDR}: WAIT_MSG4 -> WAIT_MSG6",
        f"Main Mode responder {KS_ADDR} <- {GM}: WAIT_MSG5 -> ESTABLISHED",
        f"Main Mode initiator {GM} -> {KS_ADDR}: WAIT_MSG6 -> ESTABLISHED",
        f"{member}: MAIN_MODE -> GROUPKEY_PULL",
        f"GROUPKEY-PULL initiator {GM} -> {KS_ADDR}: START -> WAIT_MSG2",
        f"GROUPKEY-PULL responder {KS_ADDR} <- {GM}: START -> WAIT_MSG3",
        f"GROUPKEY-PULL initiator {GM} -> {KS_ADDR}: WAIT_MSG2 -> WAIT_MSG4",
        f"GROUPKEY-PULL responder {KS_ADDR} <- {GM}: WAIT_MSG3 -> DONE",
        f"GROUPKEY-PULL initiator {GM} -> {KS_ADDR}: WAIT_MSG4 -> DONE",
        f"{member}: GROUPKEY_PULL -> REGISTERED",
    ]
    caplog.clear()
    gm.stop(net.now)
    assert _transitions(caplog) == [f"{member}: REGISTERED -> IDLE"]


def test_a_refused_member_waits_to_retry_and_show_says_so() -> None:
    net = make_lab(1, ks_psk_for=[])  # the key server has no key for the member: no answer comes
    gm = net.gm(GM)
    assert gm.state is GmState.MAIN_MODE
    net.advance(4 * 5.0 + 1)  # message 1 and its three retransmissions, 5 s apart, went unanswered
    status = gm.status(net.now)
    assert status.state == "RETRY_WAIT" and not status.registered
    view = show.GmView(status, net.now, GM, GM, "GDOI_MAP", "Tunnel0")
    assert show.gdoi_gm_json(view)["state"] == "RETRY_WAIT"
    assert "    Registration State       : RETRY_WAIT\n" in show.format_gdoi_gm(view)
    net.advance(10.0)  # registration_retry_s later the next (here: the same) key server is tried
    assert gm.state is GmState.MAIN_MODE
