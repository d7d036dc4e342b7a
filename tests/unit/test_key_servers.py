"""Labs with several key servers (COOP): every lab helper that asks "the key server" asks the right one,
and the checks that must consider all of them do."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from labtests.wire import WirePolicy, judge, lab_policy

from dmvpn_lab.lab import checks, cli, generate, validate
from dmvpn_lab.lab.capture import PacketSummary
from dmvpn_lab.lab.clab import ContainerlabRuntime
from dmvpn_lab.lab.generate import LabSpec, Protection
from dmvpn_lab.lab.labstate import read_state
from dmvpn_lab.lab.netns import NetnsRuntime
from dmvpn_lab.lab.node import NodeCommandError
from dmvpn_lab.lab.topology import Topology, load_topology

KS1, KS2 = "1.1.1.1", "1.1.2.1"
GMS = ["2.2.2.2", "11.11.11.11", "12.12.12.12"]


@pytest.fixture(scope="module")
def coop_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(generate.write(LabSpec(2, Protection.GDOI, key_servers=2), tmp_path_factory.mktemp("coop")))


@pytest.fixture(scope="module")
def lone_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(generate.write(LabSpec(2, Protection.GDOI), tmp_path_factory.mktemp("lone")))


def coop_json(role: str, *, peer_role: str, in_sync: bool = True, primary: str | None = None) -> dict[str, Any]:
    """What ``gdoi show crypto gdoi ks coop --json`` answers, reduced to what the checks read."""
    me, peer = (KS1, KS2) if role == "Primary" else (KS2, KS1)
    return {
        "role": "ks",
        "coop": {
            "role": role,
            "primary": primary if primary is not None else (me if role == "Primary" else peer),
            "version": "e:3",
            "peers": [{"address": peer, "role": peer_role, "version": "e:3" if in_sync else "e:2", "in_sync": in_sync}],
        },
    }


class FakeShell:
    """Answers ``gdoi_json`` from a table (node, command words) -> JSON; a missing node is a stopped daemon."""

    def __init__(self, topology: Topology, answers: dict[str, dict[tuple[str, ...], Any]]) -> None:
        self.topology = topology
        self.answers = answers
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def gdoi_json(self, node: str, *args: str) -> Any:
        self.asked.append((node, args))
        if node not in self.answers:
            raise NodeCommandError(node, ["gdoi", *args], subprocess.CompletedProcess([], 1, "", "gdoi: no daemon"))
        return self.answers[node][args]


COOP = ("show", "crypto", "gdoi", "ks", "coop")
GDOI = ("show", "crypto", "gdoi")
MEMBERS = ("show", "crypto", "gdoi", "ks", "members")
ISAKMP = ("show", "crypto", "isakmp", "sa")


def ks_answers(coop: dict[str, Any], spi: int, idle_from: list[str]) -> dict[tuple[str, ...], Any]:
    return {
        COOP: coop,
        GDOI: {"groups": [{"teks": [{"spi": spi}]}]},
        MEMBERS: {"members": [{"address": a, "rekey_acks": spi} for a in GMS]},
        ISAKMP: {"ipv4": [{"src": a, "state": "GDOI_IDLE"} for a in idle_from]},
    }


# --- one KS's role, and the roles of all -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (coop_json("Primary", peer_role="Secondary"), None),
        (coop_json("Secondary", peer_role="Primary"), None),
        ({"role": "ks", "coop": None}, None),  # no redundancy: settled once it answers
        (coop_json("Secondary", peer_role="Primary", in_sync=False), "secondary behind its primary 1.1.1.1"),
        (coop_json("Secondary (syncing)", peer_role="Primary"), "neither Primary nor Secondary"),
        (coop_json("Electing", peer_role="Unknown"), "neither Primary nor Secondary"),
        (coop_json("Secondary", peer_role="Primary", primary="9.9.9.9"), "secondary behind its primary 9.9.9.9"),
        ({"role": "ks"}, "no COOP status"),
    ],
)
def test_coop_settled(status: Any, problem: str | None) -> None:
    found = checks.coop_settled(status)
    assert found == problem if problem is None else (found is not None and problem in found)


def test_exactly_one_primary_among_settled_key_servers() -> None:
    primary, secondary = coop_json("Primary", peer_role="Secondary"), coop_json("Secondary", peer_role="Primary")
    assert checks.coop_roles_problem({"ks1": primary, "ks2": secondary}) is None
    two = checks.coop_roles_problem({"ks1": primary, "ks2": coop_json("Primary", peer_role="Primary")})
    assert two is not None and "2 primary key servers" in two
    none = checks.coop_roles_problem({"ks1": {"coop": None}, "ks2": {"coop": None}})
    assert none is not None and "0 primary key servers" in none
    lagging = coop_json("Secondary", peer_role="Primary", in_sync=False)
    behind = checks.coop_roles_problem({"ks1": primary, "ks2": lagging})
    assert behind is not None and behind.startswith("ks2: secondary behind")


# --- which key server speaks for the group --------------------------------------------------------


def test_the_primary_speaks_for_the_group_whichever_it_is(coop_topology: Topology) -> None:
    # After a failover: ks1 stopped, ks2 primary.
    shell = FakeShell(coop_topology, {"ks2": ks_answers(coop_json("Primary", peer_role="Unknown"), 0x22, [])})
    assert checks.primary_key_server(shell) is coop_topology.nodes["ks2"]  # type: ignore[arg-type]
    assert checks.group_spis(shell) == {0x22}  # type: ignore[arg-type]
    assert set(checks.ks_members(shell)) == set(GMS)  # type: ignore[arg-type]
    # Before it: ks1 primary, ks2 secondary; the secondary is never asked for keys or members.
    shell = FakeShell(
        coop_topology,
        {
            "ks1": ks_answers(coop_json("Primary", peer_role="Secondary"), 0x11, GMS),
            "ks2": ks_answers(coop_json("Secondary", peer_role="Primary"), 0x99, []),
        },
    )
    assert checks.group_spis(shell) == {0x11}  # type: ignore[arg-type]
    assert all(node == "ks1" for node, words in shell.asked if words != COOP)
    # A key server can still be named.
    assert checks.ks_members(shell, coop_topology.nodes["ks2"])[GMS[0]]["rekey_acks"] == 0x99  # type: ignore[arg-type]


def test_no_primary_is_an_error_that_names_every_key_server(coop_topology: Topology) -> None:
    shell = FakeShell(coop_topology, {"ks2": ks_answers(coop_json("Electing", peer_role="Unknown"), 1, [])})
    with pytest.raises(ValueError, match=r"no primary key server among ks1, ks2: .*ks1.*not answering.*Electing"):
        checks.primary_key_server(shell)  # type: ignore[arg-type]


def test_a_lone_key_server_is_asked_nothing_about_coop(lone_topology: Topology) -> None:
    shell = FakeShell(lone_topology, {"ks": ks_answers({"coop": None}, 7, GMS[:3])})
    assert checks.group_spis(shell) == {7}  # type: ignore[arg-type]
    assert checks.coop_problem(shell) is None  # type: ignore[arg-type]
    assert COOP not in [words for _node, words in shell.asked]


# --- GDOI sessions over several key servers -------------------------------------------------------


def test_sessions_one_per_member_across_key_servers(coop_topology: Topology) -> None:
    def problem(ks1_idle: list[str] | None, ks2_idle: list[str] | None) -> str | None:
        answers = {}
        if ks1_idle is not None:
            answers["ks1"] = ks_answers(coop_json("Primary", peer_role="Secondary"), 1, ks1_idle)
        if ks2_idle is not None:
            answers["ks2"] = ks_answers(coop_json("Secondary", peer_role="Primary"), 1, ks2_idle)
        return checks.ks_sessions_problem(FakeShell(coop_topology, answers))  # type: ignore[arg-type]

    assert problem(GMS, []) is None  # all registered with the primary
    assert problem(GMS[:2], GMS[2:]) is None  # one with the secondary
    assert problem(None, []) is None  # ks1 stopped: its members carry on without a session
    twice = problem(GMS, GMS[:1])
    assert twice is not None and "more than one per member" in twice and GMS[0] in twice
    stranger = problem([*GMS, "9.9.9.9"], [])
    assert stranger is not None and "9.9.9.9" in stranger
    assert problem(None, None) == "no key server answers (ks1, ks2)"


def test_sessions_of_a_lone_key_server_are_still_exactly_one_per_member(lone_topology: Topology) -> None:
    members = sorted(gm.env["GDOI_LOCAL_ADDRESS"] for gm in lone_topology.group_members())
    shell = FakeShell(lone_topology, {"ks": ks_answers({"coop": None}, 1, members[1:])})
    problem = checks.ks_sessions_problem(shell)  # type: ignore[arg-type]
    assert problem == f"GDOI_IDLE sessions from {members[1:]}, expected one from each of {members}"


# --- validate --------------------------------------------------------------------------------------


def test_validate_grades_coop_only_where_key_servers_cooperate(
    coop_topology: Topology, lone_topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    coop_check = next(c for c in validate.CHECKS if c.needs_coop)
    monkeypatch.setattr(validate, "CHECKS", [coop_check])
    split = FakeShell(
        coop_topology,
        {
            "ks1": {COOP: coop_json("Primary", peer_role="Primary")},
            "ks2": {COOP: coop_json("Primary", peer_role="Primary")},
        },
    )
    (result,) = validate.run_checks(split)  # type: ignore[arg-type]
    assert not result.ok and "2 primary key servers" in result.detail
    assert validate.run_checks(FakeShell(lone_topology, {})) == []  # type: ignore[arg-type]


# --- the wire verdict ------------------------------------------------------------------------------


def pkt(n: int, src: str, dst: str, *layers: str, ports: tuple[int, int] | None = None) -> PacketSummary:
    return PacketSummary(n, src, dst, ("sll", *layers), None, None, ports)


def test_coop_between_key_servers_is_allowed_and_nothing_else_new(coop_topology: Topology) -> None:
    policy = lab_policy(FakeShell(coop_topology, {}), group_spis=[7])  # type: ignore[arg-type]
    assert policy.ks_addresses == {KS1, KS2}
    verdict = judge(
        [
            pkt(1, KS1, KS2, "ip", "udp", "isakmp", ports=(848, 848)),  # COOP
            pkt(2, "11.11.11.11", KS2, "ip", "udp", "isakmp", ports=(848, 848)),  # a member to the secondary
            pkt(3, KS2, "12.12.12.12", "ip", "udp", "isakmp", ports=(848, 848)),  # the new primary's rekey
        ],
        policy,
    )
    assert verdict.problems() == [] and verdict.gdoi == 3
    flagged = judge(
        [
            pkt(1, KS1, KS2, "ip", "udp", "isakmp", ports=(500, 500)),  # IKE between key servers: no
            pkt(2, KS1, "9.9.9.9", "ip", "udp", "isakmp", ports=(848, 848)),  # GDOI to a stranger
            pkt(3, KS1, KS1, "ip", "udp", "isakmp", ports=(848, 848)),  # one key server is no pair
        ],
        policy,
    )
    assert len(flagged.ike) == 3
    lone = WirePolicy(frozenset({7}), frozenset({KS1}), frozenset(GMS))
    assert len(judge([pkt(1, KS1, KS2, "ip", "udp", "isakmp", ports=(848, 848))], lone).ike) == 1


# --- a daemon stopped on purpose is not a dead daemon ----------------------------------------------


def test_netns_stop_gdoi_forgets_the_daemon_it_stopped(
    coop_topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DMVPN_LAB_STATE_DIR", str(tmp_path))
    runtime = NetnsRuntime(coop_topology, progress=lambda _line: None)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runtime._remember_pid("ks1", "gdoi-ks", stand_in.pid)
        runtime.stop_gdoi("ks1")
        assert stand_in.wait(timeout=10) != 0  # terminated by the signal
        assert "gdoi-ks" not in read_state(coop_topology)["pids"]["ks1"]
        assert runtime.dead_daemons() == []
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()


def test_containerlab_remembers_which_gdoi_daemons_were_stopped_on_purpose(
    coop_topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DMVPN_LAB_STATE_DIR", str(tmp_path))
    runtime = ContainerlabRuntime(coop_topology, progress=lambda _line: None)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "_supervise", lambda name, action: calls.append((name, action)))
    # start_gdoi removes a configuration override in the container first: nothing to do here.
    monkeypatch.setattr(ContainerlabRuntime, "shell", property(lambda _self: SimpleNamespace(run=lambda *a, **k: None)))
    runtime.stop_gdoi("ks1")
    runtime.stop_gdoi("ks2")
    assert read_state(coop_topology)["gdoi_stopped"] == ["ks1", "ks2"]
    runtime.start_gdoi("ks1")
    assert read_state(coop_topology)["gdoi_stopped"] == ["ks2"]
    assert calls == [("ks1", "stop"), ("ks2", "stop"), ("ks1", "start")]


# --- dmvpn-lab gdoi-stop / gdoi-start ---------------------------------------------------------------


def test_gdoi_stop_and_start_verbs_parse() -> None:
    args = cli._parser().parse_args(["-t", "topologies/x", "gdoi-stop", "ks1"])
    assert (args.verb, args.node, args.topology) == ("gdoi-stop", "ks1", "topologies/x")
    assert cli._parser().parse_args(["gdoi-start", "ks2"]).node == "ks2"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["gdoi-stop"])  # which node?


def test_gdoi_verbs_act_on_the_runtime_and_refuse_nodes_without_gdoi(
    coop_topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str]] = []
    runtime = SimpleNamespace(
        stop_gdoi=lambda name: calls.append(("stop", name)), start_gdoi=lambda name: calls.append(("start", name))
    )
    stop = argparse.Namespace(verb="gdoi-stop", node="ks1")
    assert cli._gdoi_daemon(stop, coop_topology, runtime) == 0  # type: ignore[arg-type]
    assert "ks1: gdoi ks stopped" in capsys.readouterr().out
    assert cli._gdoi_daemon(argparse.Namespace(verb="gdoi-start", node="ks1"), coop_topology, runtime) == 0  # type: ignore[arg-type]
    assert calls == [("stop", "ks1"), ("start", "ks1")]
    for node in ("host1", "internet", "nosuch"):
        assert cli._gdoi_daemon(argparse.Namespace(verb="gdoi-stop", node=node), coop_topology, runtime) == 2  # type: ignore[arg-type]
        assert "runs no GDOI daemon" in capsys.readouterr().err
    assert calls == [("stop", "ks1"), ("start", "ks1")]
