"""``dmvpn-lab``: one verb per lifecycle step of a lab.

    dmvpn-lab up [TOPOLOGY] [--runtime netns|containerlab]
    dmvpn-lab down | status [--json] | validate [--json]
    dmvpn-lab exec NODE -- CMD...      dmvpn-lab vtysh NODE -c 'show ip nhrp cache'
    dmvpn-lab show NODE crypto gdoi [ks members|ks coop] | crypto isakmp sa | crypto ipsec sa [--json]
    dmvpn-lab gdoi-stop NODE | gdoi-start NODE   (a key server failure and its return, for instance)
    dmvpn-lab preflight

Where the running kernel lacks ``ip_gre``/``esp4``/``xfrm_user`` the netns runtime runs inside the
sandbox kernel (see ``sandbox.py``): ``up`` boots it, the other verbs are forwarded into it, ``down``
stops it.  Exit codes: 0 success, 1 a check failed (``validate``, ``status`` of a lab that is down),
2 usage or configuration error, 3 the environment is missing something (pre-flight).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

from dmvpn_lab.lab import preflight, sandbox
from dmvpn_lab.lab.clab import ContainerlabError, ContainerlabRuntime
from dmvpn_lab.lab.images import ImageError
from dmvpn_lab.lab.labstate import RUNTIMES, read_state, recorded_runtime
from dmvpn_lab.lab.node import NodeCommandError, NodeShell
from dmvpn_lab.lab.runtime import Runtime, runtime_for
from dmvpn_lab.lab.topology import Topology, TopologyError, load_topology

DEFAULT_TOPOLOGY = "topologies/dmvpn-gdoi"
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmvpn-lab", description="GDOI-protected DMVPN lab on Linux.")
    parser.add_argument(
        "-t",
        "--topology",
        default=os.environ.get("DMVPN_LAB_TOPOLOGY", DEFAULT_TOPOLOGY),
        help=f"containerlab topology file or folder (default {DEFAULT_TOPOLOGY})",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get("DMVPN_LAB_RUNTIME"),
        help="netns (default) or containerlab; after `up`, the lab's own runtime is remembered",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", help="bring the lab up and wait until it has converged")
    up.add_argument("topology_arg", nargs="?", metavar="TOPOLOGY")
    up.add_argument("--timeout", type=float, default=240.0, help="convergence budget in seconds")
    down = sub.add_parser("down", help="remove every namespace, process and file of the lab")
    down.add_argument("topology_arg", nargs="?", metavar="TOPOLOGY")
    status = sub.add_parser("status", help="nodes, daemons, GDOI registration, NHRP peers")
    status.add_argument("--json", action="store_true")
    validate = sub.add_parser("validate", help="grade a running lab: [PASS]/[FAIL] lines")
    validate.add_argument("--json", action="store_true")
    execute = sub.add_parser("exec", help="run a command in a node: dmvpn-lab exec spoke1 -- ip xfrm state")
    execute.add_argument("node")
    execute.add_argument("command", nargs=argparse.REMAINDER)
    vtysh = sub.add_parser("vtysh", help="FRR's shell in a node")
    vtysh.add_argument("node")
    vtysh.add_argument("-c", "--command", action="append", required=True)
    show = sub.add_parser("show", help="the GDOI show commands of a node's sidecar")
    show.add_argument("node")
    show.add_argument("what", nargs="+", help="crypto gdoi | crypto gdoi ks members | crypto isakmp sa | ...")
    show.add_argument("--json", action="store_true")
    gdoi_stop = sub.add_parser(
        "gdoi-stop", help="stop a node's GDOI daemon (fail a key server; a member removes its kernel state)"
    )
    gdoi_stop.add_argument("node")
    gdoi_start = sub.add_parser("gdoi-start", help="start a node's GDOI daemon again, with the topology's file")
    gdoi_start.add_argument("node")
    sub.add_parser("preflight", help="check tools, privileges and kernel modules")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "topology_arg", None):
        args.topology = args.topology_arg
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if not preflight.in_sandbox():
        sandboxed = _sandbox_dispatch(args, topology, argv if argv is not None else sys.argv[1:])
        if sandboxed is not None:
            return sandboxed
    try:
        return _dispatch(args, topology)
    except preflight.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except NodeCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except Exception as exc:  # the lab's own errors carry their remedy in the message
        from dmvpn_lab.lab.netns import LabError

        if isinstance(
            exc, (LabError, ContainerlabError, ImageError, sandbox.SandboxError, TimeoutError, AssertionError)
        ):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        raise


def _sandbox_dispatch(args: argparse.Namespace, topology: Topology, argv: list[str]) -> int | None:
    """Run the verb through the sandbox kernel when this kernel cannot carry the lab; None otherwise."""
    if args.verb == "preflight":
        return None
    running = sandbox.agent_running(topology.name)
    if not running and not preflight.kernel_missing_modules():
        return None
    # containerlab needs a Docker engine as well: one on this host serves it here, with this kernel's
    # GRE and ESP; else the sandbox kernel runs its own engine.
    docker = args.runtime == "containerlab"
    if docker and not running and preflight.docker_engine_answers():
        return None
    inner = [sys.executable, "-m", "dmvpn_lab.lab.cli", *argv]
    if args.verb == "up":
        if running:
            print(f"{topology.name} already runs in the sandbox kernel; `dmvpn-lab down` first", file=sys.stderr)
            return EXIT_USAGE
        print("this kernel lacks ip_gre/esp4/xfrm_user: the lab runs under the sandbox kernel (User-Mode Linux)")
        rc = sandbox.start_agent(topology.name, inner, docker=docker)
        if rc != 0:
            sandbox.stop_agent(topology.name)
        return rc
    if not running:
        if args.verb == "down":
            print(f"{topology.name} is not running")
            return 0
        print(f"error: {topology.name} is not running (start it with `make lab-up`)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    rc = sandbox.forward(topology.name, inner)
    if args.verb == "down":
        sandbox.stop_agent(topology.name)
        print("sandbox kernel stopped")
    return rc


def _next_steps(args: argparse.Namespace, shell: NodeShell) -> str:
    """What to try once the lab is up, with this lab's own node names and addresses."""
    topology = shell.topology
    lab = "dmvpn-lab" if args.topology == DEFAULT_TOPOLOGY else f"dmvpn-lab -t {shlex.quote(args.topology)}"
    spokes = topology.spokes()
    steps = [f"{lab} status"]
    if spokes:
        steps.append(f"{lab} show {spokes[0].name} crypto gdoi")
    if len(spokes) >= 2:
        # Spoke to spoke: the traffic that makes NHRP build a shortcut.
        source = spokes[-1].labels.get("dmvpn-lab.host")
        target = topology.nodes.get(spokes[0].labels.get("dmvpn-lab.host", ""))
        if source and target is not None and "dmvpn-lab.address" in target.labels:
            steps.append(f"{lab} exec {source} -- ping -c3 {target.labels['dmvpn-lab.address']}")
    steps.append(f"{lab} down")
    return "next: " + " | ".join(steps)


def _dispatch(args: argparse.Namespace, topology: Topology) -> int:
    # `up` takes --runtime (default netns); every other verb acts on the runtime that brought the lab up.
    recorded = recorded_runtime(topology)
    if args.verb in ("up", "preflight") or recorded is None:
        runtime = runtime_for(topology, args.runtime)
    else:
        if args.runtime and args.runtime != recorded:
            print(
                f"note: {topology.name} runs on {recorded}, not {args.runtime}: acting on {recorded}", file=sys.stderr
            )
        runtime = runtime_for(topology, recorded)
    runtime_name = "containerlab" if isinstance(runtime, ContainerlabRuntime) else "netns"
    shell = runtime.shell
    if args.verb == "preflight":
        checks = preflight.containerlab_checks() if runtime_name == "containerlab" else preflight.netns_checks()
        for check in checks:
            print(check.line())
        ok, how = sandbox.available()
        print(f"{'[PASS]' if ok else '[WARNING]':<8} {'sandbox kernel':<24} {how}")
        return 0 if all(c.ok for c in checks if c.name != "kernel modules") else EXIT_ENVIRONMENT
    if args.verb == "up":
        checks = preflight.containerlab_checks() if runtime_name == "containerlab" else preflight.netns_checks()
        preflight.require(checks)
        runtime.up(converge_timeout=args.timeout)
        print("\n" + _next_steps(args, shell))
        return 0
    if args.verb == "down":
        runtime.down()
        return 0
    if args.verb == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            print("error: nothing to run: dmvpn-lab exec NODE -- CMD ...", file=sys.stderr)
            return EXIT_USAGE
        result = shell.run(args.node, command, check=False, timeout=3600)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    if args.verb == "vtysh":
        for command in args.command:
            sys.stdout.write(shell.vtysh(args.node, command))
        return 0
    if args.verb == "show":
        sys.stdout.write(shell.gdoi(args.node, "show", *args.what, json_output=args.json, check=False))
        return 0
    if args.verb == "status":
        return _status(shell, runtime, as_json=args.json)
    if args.verb in ("gdoi-stop", "gdoi-start"):
        return _gdoi_daemon(args, topology, runtime)
    if args.verb == "validate":
        from dmvpn_lab.lab import validate

        return validate.main(shell, as_json=args.json)
    raise AssertionError(args.verb)


def _gdoi_daemon(args: argparse.Namespace, topology: Topology, runtime: Runtime) -> int:
    """``gdoi-stop NODE`` / ``gdoi-start NODE``: one node's GDOI daemon, the rest of the lab untouched."""
    node = topology.nodes.get(args.node)
    if node is None or not node.gdoi_role:
        runs_gdoi = ", ".join(n.name for n in topology.nodes.values() if n.gdoi_role) or "none"
        message = f"error: {args.node!r} runs no GDOI daemon in {topology.name} (nodes that do: {runs_gdoi})"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    if args.verb == "gdoi-stop":
        runtime.stop_gdoi(node.name)
        print(f"{node.name}: gdoi {node.gdoi_role} stopped (`dmvpn-lab gdoi-start {node.name}` starts it again)")
    else:
        runtime.start_gdoi(node.name)
        print(f"{node.name}: gdoi {node.gdoi_role} started")
    return 0


def _status(shell: NodeShell, runtime: Runtime, *, as_json: bool) -> int:
    from dmvpn_lab.lab import checks

    topology = shell.topology
    up = bool(runtime.existing_namespaces())
    nodes: dict[str, Any] = {}
    for node in topology.nodes.values():
        entry: dict[str, Any] = {"role": node.role, "namespace": topology.namespace(node.name)}
        if up and node.gdoi_role:
            try:
                status = shell.gdoi_json(node.name, "show", "crypto", "gdoi")
                if node.gdoi_role == "gm":
                    entry["gdoi"] = {
                        "registered": checks.gm_registered(status) is None,
                        "tek_spis": [t.get("spi") for t in status.get("teks", [])],
                    }
                else:
                    entry["gdoi"] = {"members": sum(g.get("group_members", 0) for g in status.get("groups", []))}
                    coop = shell.gdoi_json(node.name, "show", "crypto", "gdoi", "ks", "coop").get("coop")
                    if coop:  # cooperating key servers: which one makes the keys
                        entry["gdoi"]["coop_role"] = coop.get("role")
            except (NodeCommandError, ValueError) as exc:
                entry["gdoi"] = {"error": str(exc).splitlines()[0]}
        if up and node.frr_daemons:
            try:
                cache = shell.vtysh_json(node.name, "show ip nhrp cache json")
                entry["nhrp"] = [
                    {"type": e.get("type"), "protocol": e.get("protocol"), "nbma": e.get("nbma")}
                    for e in cache.get("table", [])
                ]
            except (NodeCommandError, ValueError) as exc:
                entry["nhrp"] = {"error": str(exc).splitlines()[0]}
        nodes[node.name] = entry
    state = read_state(topology)
    report = {
        "lab": topology.name,
        "up": up,
        "runtime": state.get("runtime"),
        "up_seconds": state.get("up_seconds"),
        "nodes": nodes,
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return 0 if up else EXIT_CHECK_FAILED
    print(
        f"lab {topology.name}: {'up' if up else 'down'}"
        + (f" (converged in {state['up_seconds']}s)" if up and state.get("up_seconds") else "")
    )
    for name, entry in nodes.items():
        parts = [f"{name:<10} {entry['role']:<9}"]
        gdoi = entry.get("gdoi")
        if isinstance(gdoi, dict) and "registered" in gdoi:
            spis = ",".join(f"0x{s:X}" for s in gdoi["tek_spis"] if isinstance(s, int))
            parts.append(f"GDOI {'registered' if gdoi['registered'] else 'NOT registered'} {spis}")
        elif isinstance(gdoi, dict) and "members" in gdoi:
            coop_role = f", COOP {gdoi['coop_role']}" if "coop_role" in gdoi else ""
            parts.append(f"KS {gdoi['members']} members{coop_role}")
        nhrp = entry.get("nhrp")
        if isinstance(nhrp, list):
            peers = [f"{e['protocol']}({e['type']})" for e in nhrp if e["type"] != "local"]
            parts.append("NHRP " + (" ".join(peers) if peers else "-"))
        print("  ".join(parts))
    return 0 if up else EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
