"""The one convergence wait: subset matching and its error messages."""

from __future__ import annotations

import pytest

from dmvpn_lab.lab.converge import ABSENT, ConvergenceError, json_mismatch, stays, wait_for_json, wait_until


def test_subset_ignores_extra_keys_and_list_order():
    actual = {"table": [{"type": "local", "protocol": "a"}, {"type": "dynamic", "protocol": "b", "x": 1}]}
    assert json_mismatch({"table": [{"protocol": "b"}, {"type": "local"}]}, actual) is None


def test_mismatch_names_the_path():
    assert json_mismatch({"a": {"b": 1}}, {"a": {"b": 2}}) == "$.a.b: expected 1, got 2"
    assert "missing" in json_mismatch({"a": 1}, {})
    assert "no item matches" in json_mismatch({"t": [{"p": "z"}]}, {"t": [{"p": "y"}]})
    assert json_mismatch({"gone": ABSENT}, {"gone": 1}) is not None
    assert json_mismatch({"gone": ABSENT}, {}) is None


def test_each_expected_item_needs_its_own_match():
    assert json_mismatch([{"a": 1}, {"a": 1}], [{"a": 1}]) is not None


def test_list_matching_is_not_greedy():
    # The loose first item must not take the only item the strict second one can match.
    expected = [{"a": 1}, {"a": 1, "b": 2}]
    assert json_mismatch(expected, [{"a": 1, "b": 2}, {"a": 1}]) is None
    assert json_mismatch(expected, [{"a": 1, "b": 2}]) is not None
    assert "no item matches" in json_mismatch([{"a": 1}, {"c": 3}], [{"a": 1}, {"a": 1}])


def test_wait_until_raises_the_given_error_with_the_last_problem():
    with pytest.raises(TimeoutError) as err:
        wait_until(lambda: "file not there", what="tshark start", timeout=0.1, interval=0.02, error=TimeoutError)
    assert "tshark start" in str(err.value) and "file not there" in str(err.value)


def test_wait_until_stops_at_once_when_the_check_raises():
    def check():
        raise ChildProcessError("daemon exited")

    with pytest.raises(ChildProcessError):
        wait_until(check, what="x", timeout=30)


def test_stays_holds_for_the_duration_and_fails_at_the_first_problem():
    polls = {"n": 0}

    def fine():
        polls["n"] += 1
        return None

    stays(fine, what="route gone", duration=0.1, interval=0.02)
    assert polls["n"] >= 3
    answers = iter([None, None, "route back"])
    with pytest.raises(ConvergenceError, match="route gone: route back"):
        stays(lambda: next(answers), what="route gone", duration=5, interval=0.01)


def test_wait_returns_once_matched():
    outputs = iter([{}, {"ready": False}, {"ready": True}])
    assert wait_for_json(lambda: next(outputs), {"ready": True}, what="t", timeout=5, interval=0.01) == {"ready": True}


def test_wait_reports_node_command_and_last_output():
    with pytest.raises(ConvergenceError) as err:
        wait_for_json(lambda: {"ready": False}, {"ready": True}, what="spoke1: show x json", timeout=0.2, interval=0.05)
    text = str(err.value)
    assert "spoke1: show x json" in text and "$.ready: expected True, got False" in text and '"ready": false' in text


def test_fetch_errors_count_as_not_yet():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("daemon not up")
        return {"ok": 1}

    assert wait_for_json(flaky, {"ok": 1}, what="t", timeout=5, interval=0.01) == {"ok": 1}
