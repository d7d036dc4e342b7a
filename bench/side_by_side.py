#!/usr/bin/env python3
"""GDOI against per-peer IKEv2 on the same DMVPN, measured on the wire, side by side.

Both labs come from the same generator (``dmvpn_lab.lab.generate``): ``gdoi`` (group SA from a key
server) and ``ipsec`` (strongSwan, hub tunnels up from the start, spoke-to-spoke tunnels negotiated on
demand from trap policies).  For every size N (spokes) and both variants, one lab at a time:

* bring-up: ``NetnsRuntime.up`` until converged (routes everywhere), and the keying part of it: from
  the first to the last key-management packet (GDOI UDP 848, IKE UDP 500/4500) the underlay router saw
  while the lab came up (every GM registered / every spoke's hub CHILD_SA negotiated);
* new spoke-to-spoke flows (on one size only, ``--flow-spokes``): a LAN host pings a host behind a spoke
  its router never talked to (1000-byte payload every 20 ms, so the flow's packets are told from
  control traffic by size), with and without netem delay on the underlay router's ports.  From a
  capture on the underlay router (inbound packets only, timestamps of the sending side): time from the
  flow's first packet to its first packet sent directly to the other spoke, whether every direct packet
  was ESP, how many echo requests went through the hub meanwhile, IKE exchanges between the two spokes,
  and pings lost;
* state after a full mesh of spoke-to-spoke flows (every pair i<j pings): IKE SAs network-wide (GDOI:
  the KS's phase-1 sessions; baseline: distinct IKE SAs), IPsec SAs network-wide (distinct ESP SPIs in
  the kernels), xfrm states per router.

The lab part needs GRE/ESP: where this kernel lacks them the script re-runs itself in the sandbox kernel
(User-Mode Linux), as pytest does.  Writes a table to stdout, JSON and a PNG to ``results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmvpn_lab.lab import checks, generate, preflight, sandbox
from dmvpn_lab.lab.capture import capture, tshark_fields
from dmvpn_lab.lab.converge import ConvergenceError, wait_for_json
from dmvpn_lab.lab.generate import LabSpec, Protection
from dmvpn_lab.lab.netns import NetnsRuntime
from dmvpn_lab.lab.node import NodeShell
from dmvpn_lab.lab.strongswan import swanctl_sas
from dmvpn_lab.lab.topology import Topology, load_topology

REPO = Path(__file__).resolve().parent.parent
VARIANTS = (Protection.GDOI, Protection.IPSEC)
PING_PAYLOAD = 1000  # bytes: a flow packet is > BIG on the wire, control packets (NHRP, BGP, DPD) are not
BIG = 900
PING_INTERVAL = 0.02
PING_COUNT = 150  # 3 s of flow
IKE_SA_INIT, IKE_AUTH = 34, 35
GOAL_IKE_RTT = 2


def log(text: str) -> None:
    print(text, flush=True)


# --- one lab ------------------------------------------------------------------------------------------


@dataclass
class Lab:
    topology: Topology
    runtime: NetnsRuntime

    @property
    def shell(self) -> NodeShell:
        return self.runtime.shell

    def label(self, node: str, name: str) -> str:
        return self.topology.nodes[node].labels[f"dmvpn-lab.{name}"]


def bring_up(spec: LabSpec, root: Path, results: Path) -> tuple[Lab, dict[str, Any]]:
    """Generate and start the lab; time it, and capture its key management while it comes up."""
    topology = load_topology(generate.write(spec, root))
    stack = contextlib.ExitStack()
    pcap = results / f"{spec.lab_name}-bringup.pcap"
    capturing = False
    spent_capturing = 0.0

    def progress(line: str) -> None:
        nonlocal capturing, spent_capturing
        # Every node's setup.sh ran before the first daemon starts: capture from then on.
        if line.startswith("  ") and "setup.sh" not in line and not capturing:
            capturing = True
            started = time.monotonic()
            bpf = "inbound and (udp port 848 or udp port 500 or udp port 4500)"
            stack.enter_context(capture(NodeShell(topology, "netns"), "internet", "any", pcap, bpf=bpf))
            spent_capturing += time.monotonic() - started
        if line.startswith("lab ") or line.startswith("waiting"):
            log(f"    {line.strip()}")

    runtime = NetnsRuntime(topology, progress=progress)
    started = time.monotonic()
    try:
        runtime.up(converge_timeout=300)
        up_s = time.monotonic() - started - spent_capturing
    finally:
        stack.close()
    rows = tshark_fields(pcap, "udp", "frame.time_epoch", "ip.src", "ip.dst", "udp.dstport")
    times = [float(r[0]) for r in rows if r and r[0]]
    keying = {
        "keying_s": round(max(times) - min(times), 3) if times else None,
        "key_packets": len(times),
    }
    return Lab(topology, runtime), {"bring_up_s": round(up_s, 2), **keying}


# --- a new spoke-to-spoke flow ------------------------------------------------------------------------


def set_delay(lab: Lab, delay_ms: int) -> None:
    for port in checks.underlay_ports(lab.shell).values():
        if delay_ms:
            lab.shell.run(
                "internet", ["tc", "qdisc", "replace", "dev", port, "root", "netem", "delay", f"{delay_ms}ms"]
            )
        else:
            lab.shell.run("internet", ["tc", "qdisc", "del", "dev", port, "root"], check=False)


@dataclass(frozen=True)
class Flow:
    a: str
    b: str
    delay: str
    start: float  # wall clock (the capture's clock: same kernel)
    end: float
    ping: str


def new_flow(lab: Lab, a: str, b: str, delay: str) -> Flow:
    """Ping from the host behind spoke ``a`` to the host behind spoke ``b`` (a flow they never had)."""
    dst = lab.label(lab.label(b, "host"), "address")
    argv = ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", str(PING_INTERVAL), "-s", str(PING_PAYLOAD), "-W", "1"]
    start = time.time()
    out = lab.shell.run(lab.label(a, "host"), [*argv, dst], check=False, timeout=120).stdout
    time.sleep(0.5)  # late replies and IKE retransmissions stay inside this flow's window
    return Flow(a, b, delay, start, time.time(), out)


FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "frame.len",
    "isakmp.exchangetype",
    "isakmp.ispi",
    "isakmp.messageid",
    "isakmp.flag_r",
)


def judge_flow(lab: Lab, flow: Flow, rows: list[list[str]], pcap: Path) -> dict[str, Any]:
    """What the underlay router saw of one flow (inbound packets, so timestamps are the senders')."""
    a_nbma, b_nbma, hub_nbma = lab.label(flow.a, "nbma"), lab.label(flow.b, "nbma"), lab.label("hub", "nbma")
    pair = {a_nbma, b_nbma}
    packets = [r + [""] * (len(FIELDS) - len(r)) for r in rows if r and r[0]]
    packets = [r for r in packets if flow.start <= float(r[0]) <= flow.end]
    flow_out = [r for r in packets if r[1] == a_nbma and int(r[4]) > BIG]
    direct = [r for r in packets if {r[1], r[2]} == pair and r[3] in ("47", "50")]
    direct_out = [r for r in flow_out if r[2] == b_nbma]
    ike = [r for r in packets if {r[1], r[2]} == pair and r[5]]
    first = float(flow_out[0][0]) if flow_out else None
    first_direct = float(direct_out[0][0]) if direct_out else None
    # Round trips of the first IKE SA negotiated between the two (both may initiate at once).
    first_sa = [r for r in ike if r[6] == ike[0][6]] if ike else []
    # NHRP's last word before the flow went direct: the resolution reply the hub relays to spoke a
    # (a small ESP packet hub -> a); it reaches a one underlay delay after the router saw it.
    control = [
        float(r[0])
        for r in packets
        if r[1] == hub_nbma and r[2] == a_nbma and int(r[4]) <= BIG and first_direct and float(r[0]) < first_direct
    ]
    resolved = control[-1] + int(flow.delay.removesuffix("ms")) / 1000 if control else None
    sent, received = _ping_counts(flow.ping)
    return {
        "pair": [flow.a, flow.b],
        "time_to_direct_ms": round((first_direct - first) * 1000, 1) if first and first_direct else None,
        "first_direct_encrypted": bool(direct) and direct[0][3] == "50",
        "cleartext_direct": sum(1 for r in direct if r[3] == "47"),
        "via_hub": sum(
            1 for r in flow_out if r[2] == hub_nbma and (first_direct is None or float(r[0]) < first_direct)
        ),
        "sent": sent,
        "lost": sent - received,
        "ike_packets": len(ike),
        "ike_sas_started": len({r[6] for r in ike}),
        "ike_round_trips": len({r[7] for r in first_sa}),
        "ike_ms": round((float(ike[-1][0]) - float(ike[0][0])) * 1000, 1) if ike else 0.0,
        "ike_start_after_first_packet_ms": round((float(ike[0][0]) - first) * 1000, 1) if ike and first else None,
        "resolution_to_direct_ms": round((first_direct - resolved) * 1000, 1) if first_direct and resolved else None,
        "window": [flow.start, flow.end],
        "pcap": str(pcap.relative_to(REPO)) if pcap.is_relative_to(REPO) else str(pcap),
    }


def _ping_counts(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(m[1]), int(m[2])) if m else (PING_COUNT, 0)


def fresh_pairs(spokes: list[str]) -> Iterator[tuple[str, str]]:
    """Spoke pairs that never talked, disjoint ones first so no NHRP or IKE state is shared."""
    used: set[str] = set()
    pairs = list(itertools.combinations(spokes, 2))
    first = []
    for a, b in pairs:
        if a not in used and b not in used:
            used |= {a, b}
            first.append((a, b))
    yield from first
    yield from (pair for pair in pairs if pair not in first)


# --- state after a full mesh --------------------------------------------------------------------------


def full_mesh(lab: Lab) -> None:
    """Every spoke's host pings every host behind a higher-numbered spoke, all flows at once."""
    spokes = [n.name for n in lab.topology.spokes()]
    procs = []
    for i, a in enumerate(spokes):
        targets = [lab.label(lab.label(b, "host"), "address") for b in spokes[i + 1 :]]
        if not targets:
            continue
        script = " ".join(f"ping -n -q -c 20 -i 0.25 -W 1 {t} >/dev/null &" for t in targets) + " wait"
        procs.append(lab.shell.spawn(lab.label(a, "host"), ["sh", "-c", script]))
    for proc in procs:
        proc.wait(timeout=300)


def mesh_state(lab: Lab, variant: Protection) -> dict[str, Any]:
    """SA counts once the mesh settled (every spoke keyed toward every other spoke, or 60 s passed)."""
    routers = [n.name for n in lab.topology.routers()]
    spokes = [n.name for n in lab.topology.spokes()]
    n = len(spokes)

    def direct_peers(node: str) -> int:
        if variant is Protection.IPSEC:
            sas = swanctl_sas(lab.shell, node)
            return len({sa.get("remote") for sa in sas if sa["conn"] != "hub" and sa["children"]})
        own = lab.label(node, "nbma")
        hub = lab.label("hub", "nbma")
        return len({s.dst for s in checks.xfrm_states(lab.shell, node) if s.dst not in (own, hub)})

    def unkeyed(_: object) -> str | None:
        short = {s: got for s in spokes if (got := direct_peers(s)) < n - 1}
        return None if not short else f"spokes keyed toward fewer than {n - 1} others: {short}"

    settled = True
    try:  # one budget for the whole mesh
        wait_for_json(lambda: None, unkeyed, what="full mesh keyed", timeout=45, interval=2.0)
    except ConvergenceError as exc:
        settled = False
        log(f"    not settled: {str(exc).splitlines()[0]}")
    states = {r: checks.xfrm_states(lab.shell, r) for r in routers}
    spis = {s.spi for ss in states.values() for s in ss}
    if variant is Protection.IPSEC:
        ike = child = 0
        for r in routers:
            for sa in swanctl_sas(lab.shell, r):
                if sa["state"] == "ESTABLISHED":
                    ike += 1
                    child += sum(1 for c in sa["children"] if c["state"] == "INSTALLED")
        # Each IKE SA and CHILD_SA is listed by both of its ends.
        ike_sas = ike / 2
        ipsec_pairs = child / 2
    else:
        ks = lab.topology.key_server()
        assert ks is not None
        sessions = lab.shell.gdoi_json(ks.name, "show", "crypto", "isakmp", "sa")["ipv4"]
        ike_sas = float(sum(1 for s in sessions if s["state"] == "GDOI_IDLE"))
        ipsec_pairs = float(len(checks.group_spis(lab.shell)))
    spoke_states = [len(states[s]) for s in spokes]
    return {
        "settled": settled,
        "ike_sas": ike_sas,
        "ipsec_sas": len(spis),
        "child_sas_or_teks": ipsec_pairs,
        "xfrm_states_total": sum(len(v) for v in states.values()),
        "xfrm_states_hub": len(states["hub"]),
        "xfrm_states_spoke_max": max(spoke_states),
        "xfrm_states_spoke_mean": round(statistics.mean(spoke_states), 1),
        "xfrm_policies_spoke_max": max(checks.xfrm_policy_count(lab.shell, s) for s in spokes),
    }


# --- the run ------------------------------------------------------------------------------------------


def run_variant(variant: Protection, n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    spec = LabSpec(n, variant, f"bench-{variant.value}-{n}")
    results = args.results / "pcaps"
    results.mkdir(parents=True, exist_ok=True)
    log(f"== {variant.value}, {n} spokes")
    lab, out = bring_up(spec, root, results)
    log(f"    up in {out['bring_up_s']} s, keying {out['keying_s']} s")
    try:
        spokes = [s.name for s in lab.topology.spokes()]
        if n == args.flow_spokes:
            out["flows"] = timed_flows(lab, spokes, args, results)
        full_mesh(lab)
        out["mesh"] = mesh_state(lab, variant)
        log(f"    mesh: {out['mesh']}")
    finally:
        logs = lab.runtime.state_dir
        if logs.exists():
            shutil.copytree(logs, args.results / "logs" / spec.lab_name, dirs_exist_ok=True)
        lab.runtime.down(quiet=True)
    return out


def timed_flows(lab: Lab, spokes: list[str], args: argparse.Namespace, results: Path) -> dict[str, Any]:
    """New flows between fresh spoke pairs, ``--trials`` per delay, all in one capture."""
    pairs = fresh_pairs(spokes)
    pcap = results / f"{lab.topology.name}-flows.pcap"
    done: list[Flow] = []
    with capture(lab.shell, "internet", "any", pcap, bpf="inbound"):
        for delay in args.delays:
            set_delay(lab, delay)
            for _ in range(args.trials):
                a, b = next(pairs)
                done.append(new_flow(lab, a, b, f"{delay}ms"))
        set_delay(lab, 0)
    rows = tshark_fields(pcap, "ip", *FIELDS)
    flows: dict[str, list[dict[str, Any]]] = {}
    for flow in done:
        judged = judge_flow(lab, flow, rows, pcap)
        flows.setdefault(flow.delay, []).append(judged)
        log(
            f"    flow {flow.a}->{flow.b} +{flow.delay}: direct after {judged['time_to_direct_ms']} ms, "
            f"{judged['via_hub']} via hub, {judged['lost']} lost, IKE {judged['ike_round_trips']} round trips "
            f"({judged['ike_ms']} ms, {judged['ike_sas_started']} SAs started)"
        )
    return flows


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


def summary(results: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
    """Rows of (metric, GDOI, baseline)."""
    g, b = results["runs"]["gdoi"], results["runs"]["ipsec"]
    rows: list[tuple[str, Any, Any]] = []
    fs = str(args.flow_spokes)
    for delay in (f"{d}ms" for d in args.delays):
        gf, bf = g.get(fs, {}).get("flows", {}).get(delay), b.get(fs, {}).get("flows", {}).get(delay)
        if not gf or not bf:
            continue
        for name, key in (
            ("first pkt -> direct (ms, median)", "time_to_direct_ms"),
            ("NHRP reply at spoke -> direct (ms, median)", "resolution_to_direct_ms"),
            ("echo requests via hub meanwhile", "via_hub"),
            ("pings lost", "lost"),
            ("IKE round trips between the spokes", "ike_round_trips"),
            ("IKE time between the spokes (ms)", "ike_ms"),
        ):
            rows.append(
                (
                    f"new flow, underlay +{delay} one way: {name}",
                    _median([f[key] for f in gf]),
                    _median([f[key] for f in bf]),
                )
            )
        rows.append(
            (
                f"new flow, underlay +{delay}: first direct packet is ESP",
                all(f["first_direct_encrypted"] for f in gf),
                all(f["first_direct_encrypted"] for f in bf),
            )
        )
    for n in args.sizes:
        key = str(n)
        if key not in g or key not in b:
            continue
        gm, bm = g[key]["mesh"], b[key]["mesh"]
        rows += [
            (f"N={n}: IKE SAs network-wide (full mesh)", gm["ike_sas"], bm["ike_sas"]),
            (f"N={n}: IPsec SAs network-wide (distinct SPIs)", gm["ipsec_sas"], bm["ipsec_sas"]),
            (f"N={n}: xfrm states on the hub", gm["xfrm_states_hub"], bm["xfrm_states_hub"]),
            (f"N={n}: xfrm states per spoke (max)", gm["xfrm_states_spoke_max"], bm["xfrm_states_spoke_max"]),
            (f"N={n}: keying at bring-up (s)", g[key]["keying_s"], b[key]["keying_s"]),
            (f"N={n}: bring-up to converged (s)", g[key]["bring_up_s"], b[key]["bring_up_s"]),
        ]
    return rows


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return "-"
    if b == 0:
        return "-" if a == 0 else "inf"
    return f"{a / b:.2f}"


def print_table(rows: list[tuple[str, Any, Any]]) -> None:
    width = max(len(r[0]) for r in rows) + 2
    log(f"\n{'metric':<{width}}{'GDOI':>10}{'IKEv2':>10}{'GDOI/IKEv2':>12}")
    for name, g, b in rows:
        log(f"{name:<{width}}{_fmt(g):>10}{_fmt(b):>10}{_ratio(g, b):>12}")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def plot(results: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colors = {"gdoi": "tab:green", "ipsec": "tab:red"}
    names = {"gdoi": "GDOI", "ipsec": "per-peer IKEv2"}
    fs = str(args.flow_spokes)
    ax = axes[0][0]
    delays = [f"{d}ms" for d in args.delays]
    for i, variant in enumerate(("gdoi", "ipsec")):
        flows = results["runs"][variant].get(fs, {}).get("flows", {})
        values = [_median([f["time_to_direct_ms"] for f in flows.get(d, [])]) or 0 for d in delays]
        ax.bar([x + i * 0.38 for x in range(len(delays))], values, 0.38, label=names[variant], color=colors[variant])
    ax.set_xticks([x + 0.19 for x in range(len(delays))], [f"+{d}" for d in delays])
    ax.set_ylabel("ms")
    ax.set_title(f"first packet -> first direct packet (N={fs}, median)")
    ax.set_xlabel("underlay delay, one way")
    ax.legend()
    ax = axes[0][1]
    for i, variant in enumerate(("gdoi", "ipsec")):
        flows = results["runs"][variant].get(fs, {}).get("flows", {})
        values = [_median([f.get("resolution_to_direct_ms") for f in flows.get(d, [])]) or 0 for d in delays]
        ax.bar([x + i * 0.38 for x in range(len(delays))], values, 0.38, label=names[variant], color=colors[variant])
    ax.set_xticks([x + 0.19 for x in range(len(delays))], [f"+{d}" for d in delays])
    ax.set_ylabel("ms")
    ax.set_title("NHRP reply at the spoke -> first direct packet")
    ax.legend()
    panels = [
        (axes[0][2], "ike_sas", "IKE SAs network-wide (after full mesh)"),
        (axes[1][0], "ipsec_sas", "IPsec SAs network-wide (distinct SPIs)"),
        (axes[1][1], "xfrm_states_spoke_max", "xfrm states per spoke"),
    ]
    for ax, key, title in panels:
        for variant in ("gdoi", "ipsec"):
            runs = results["runs"][variant]
            ns = [n for n in args.sizes if str(n) in runs]
            ax.plot(ns, [runs[str(n)]["mesh"][key] for n in ns], "o-", label=names[variant], color=colors[variant])
        ax.set_xlabel("spokes N")
        ax.set_title(title)
        ax.legend()
    ax = axes[1][2]
    for variant in ("gdoi", "ipsec"):
        runs = results["runs"][variant]
        ns = [n for n in args.sizes if str(n) in runs]
        ax.plot(
            ns, [runs[str(n)]["bring_up_s"] for n in ns], "o-", label=f"{names[variant]}: up", color=colors[variant]
        )
        ax.plot(
            ns, [runs[str(n)]["keying_s"] for n in ns], "s--", label=f"{names[variant]}: keying", color=colors[variant]
        )
    ax.set_xlabel("spokes N")
    ax.set_ylabel("s")
    ax.set_title("bring-up to converged, and its keying part")
    ax.legend()
    fig.suptitle(f"GDOI vs per-peer IKEv2 on the same DMVPN ({results['kernel']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kernel": ("sandbox kernel (User-Mode Linux) " if preflight.in_sandbox() else "") + platform.release(),
        "command": "make bench  (python bench/side_by_side.py " + " ".join(sys.argv[1:]) + ")",
        "settings": {
            "sizes": args.sizes,
            "flow_spokes": args.flow_spokes,
            "trials": args.trials,
            "delays_ms_one_way": args.delays,
            "ping": {"payload": PING_PAYLOAD, "interval_s": PING_INTERVAL, "count": PING_COUNT},
            "ike_proposal": generate.IKE_PROPOSAL,
            "esp_proposal": generate.ESP_PROPOSAL,
        },
        "runs": {v.value: {} for v in VARIANTS},
    }
    root = Path(tempfile.mkdtemp(prefix="bench-topologies-"))
    try:
        for n in args.sizes:
            for variant in VARIANTS:
                results["runs"][variant.value][str(n)] = run_variant(variant, n, args, root)
                args.output.write_text(json.dumps(results, indent=1) + "\n")  # keep partial results
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["table"] = [list(r) for r in summary(results, args)]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--flow-spokes", type=int, default=10, help="the size on which new flows are timed")
    parser.add_argument("--trials", type=int, default=3, help="new flows per delay setting")
    parser.add_argument(
        "--delays", type=int, nargs="+", default=[0, 20, 50], help="netem delays (ms, one way) for the new flows"
    )
    parser.add_argument("--results", type=Path, default=REPO / "results" / "side-by-side")
    parser.add_argument("--output", type=Path, default=REPO / "results" / "bench-side-by-side.json")
    parser.add_argument("--png", type=Path, default=REPO / "results" / "bench-side-by-side.png")
    parser.add_argument("--report-only", action="store_true", help="table and PNG from an earlier --output JSON")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(args.output.read_text())
        settings = results["settings"]
        args.sizes, args.flow_spokes, args.delays = (
            settings["sizes"],
            settings["flow_spokes"],
            settings["delays_ms_one_way"],
        )
        results["table"] = [list(r) for r in summary(results, args)]
        args.output.write_text(json.dumps(results, indent=1) + "\n")
        print_table([tuple(r) for r in results["table"]])  # type: ignore[misc]
        plot(results, args, args.png)
        return 0
    if args.flow_spokes not in args.sizes:
        parser.error("--flow-spokes must be one of --sizes")

    if not preflight.in_sandbox() and os.environ.get("DMVPN_LAB_NO_SANDBOX") != "1":
        missing = preflight.kernel_missing_modules()
        if missing:
            log(f"this kernel lacks {' '.join(missing)}: the side-by-side runs in the sandbox kernel")
            os.environ.setdefault("DMVPN_LAB_SANDBOX_MEMORY", "6G")
            return sandbox.run(
                [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                cwd=REPO,
                memory=os.environ["DMVPN_LAB_SANDBOX_MEMORY"],
            )

    args.results.mkdir(parents=True, exist_ok=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    results = measure(args)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print_table([tuple(r) for r in results["table"]])  # type: ignore[misc]
    try:
        plot(results, args, args.png)
        log(f"\nwrote {args.output} and {args.png}")
    except ImportError:
        log(f"\nwrote {args.output} (no PNG: pip install matplotlib, or .[bench])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
