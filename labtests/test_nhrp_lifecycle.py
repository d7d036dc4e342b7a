"""NHRP over time and against a stranger, on a small lab built for it.

The seed's holdtime (240 s) would make a shortcut outlive any sensible test, and Debian 12's FRR 8.4
has no ``ip nhrp authentication``.  So this module brings up its own lab: a hub, two spokes, GDOI as in
the seed, ``ip nhrp holdtime 30`` and ``ip nhrp authentication`` on every tunnel, with the routers'
FRR 10 taken from the Debian 13 root that ``scripts/frr-root.sh`` builds (the netns runtime runs it
with chroot; containerlab's router image carries FRR 10 already).

- in use, a shortcut stays (FRR 10.3 lets it lapse at each holdtime and rebuilds it within seconds, at
  a cost of at most one packet per lapse); unused, it ages out after its holdtime and stays gone;
- the NHRP network-id is local to a router: a spoke with another one still registers (as on IOS);
- a spoke with the wrong NHRP authentication is refused by the hub and never registered.
"""

from __future__ import annotations

import math
import subprocess
import time

import pytest

from dmvpn_lab.lab import checks
from dmvpn_lab.lab.converge import stays, wait_for_json
from labtests.lib import NEW_FLOW_LOSS, ping_totals

pytestmark = [pytest.mark.lab, pytest.mark.nhrp]

HOLDTIME_S = 30  # registrations every 10 s; shortcuts and hub entries live 30 s unless renewed
PASSWORD = "dmvpnlab"  # FRR and IOS take at most 8 characters


@pytest.fixture(scope="module")
def nhrp_lab(pytestconfig, tmp_path_factory):
    from dmvpn_lab.lab import generate
    from dmvpn_lab.lab.generate import LabSpec, Protection
    from labtests.lib import bring_up

    spec = LabSpec(2, Protection.GDOI, "nhrp-lab", nhrp_holdtime_s=HOLDTIME_S, nhrp_authentication=PASSWORD)
    folder = generate.write(spec, tmp_path_factory.mktemp("nhrp-lab"))
    yield from bring_up(pytestconfig, str(folder))


def _shortcut(lab, spoke, peer):
    """The spoke's NHRP route to the peer's LAN, or None."""
    routes = lab.shell.vtysh_json(spoke.name, "show ip route nhrp json")
    return routes.get(peer.labels["dmvpn-lab.lan"])


def _cache_entry(lab, router, peer):
    cache = lab.shell.vtysh_json(router.name, "show ip nhrp cache json")
    tunnel_ip = peer.labels["dmvpn-lab.tunnel-ip"]
    return next((e for e in cache.get("table", []) if e.get("protocol") == tunnel_ip), None)


def _shortcut_changes(route_events, lan):
    """(lapses, rebuilds) of the NHRP route to ``lan`` in ``ip -o monitor route`` lines, from a shortcut.

    zebra replaces the route in place (NHRP's by BGP's via the hub and back), so a lapse shows as the
    prefix installed with another protocol, or as its NHRP route deleted.
    """
    lapses = rebuilt = 0
    protocol = "nhrp"
    for event in route_events:
        words = event.split()
        deleted = words[:1] == ["Deleted"]
        if lan not in words[:2] or "proto" not in words:
            continue
        route_protocol = words[words.index("proto") + 1]
        if deleted and route_protocol != protocol:
            continue  # another protocol's route went; the one in use stays
        now = None if deleted else route_protocol
        lapses += protocol == "nhrp" and now != "nhrp"
        rebuilt += protocol != "nhrp" and now == "nhrp"
        protocol = now
    return lapses, rebuilt


def _ping_until_shortcut(lab, spoke, peer, *, count, why):
    """Ping from the spoke's LAN to the peer's, then wait for the spoke's NHRP route to the peer's LAN."""
    lab.ping(lab.host_of(spoke.name), lab.address_of_host(lab.host_of(peer.name)), count=count, max_lost=NEW_FLOW_LOSS)
    wait_for_json(
        lambda: lab.shell.vtysh_json(spoke.name, "show ip route nhrp json"),
        {peer.labels["dmvpn-lab.lan"]: [{"protocol": "nhrp", "selected": True}]},
        what=f"{spoke.name}: show ip route nhrp json ({why})",
        timeout=60,
    )


def test_shortcut_is_kept_while_used_and_ages_out_unused(nhrp_lab, request):
    lab = nhrp_lab
    spoke2, spoke1 = lab.topology.nodes["spoke2"], lab.topology.nodes["spoke1"]
    dst = lab.address_of_host(lab.host_of(spoke1.name))
    lab.shell.vtysh(spoke2.name, "clear ip nhrp shortcut")
    _ping_until_shortcut(lab, spoke2, spoke1, count=5, why="shortcut to spoke1's LAN")

    # In use: a flow longer than two holdtimes.  FRR 10.3 renews a shortcut before its holdtime ends
    # only when the kernel reports the shortcut's next hop (spoke1's tunnel address) in use.  But nhrpd
    # also binds the resolved host itself (a /32 onlink route), so the flow's packets use that host's
    # binding, the next hop's never looks used, and the shortcut lapses at its holdtime however busy it
    # is; the flow's next packet is redirected by the hub and the shortcut is back within seconds.  At a
    # lapse nhrpd deletes the bindings some 20 ms before the routes, and a packet sent in between is
    # dropped (the kernel answers host unreachable).  Measured in nhrpd's debug log and `ip monitor`.
    # So the flow must: lapse at most once per holdtime, get the shortcut back after every lapse within
    # seconds, and lose at most the one packet per lapse that FRR's ordering costs.
    lan = spoke1.labels["dmvpn-lab.lan"]
    routes = lab.shell.spawn(spoke2.name, ["ip", "-o", "monitor", "route"], log=subprocess.PIPE)
    flow_s = 2 * HOLDTIME_S + 10
    # -c, not -w: with a deadline ping gives up at the first ICMP error, which a lapse can cause.
    flow = lab.shell.spawn(
        lab.host_of(spoke2.name),
        ["ping", "-n", "-i", "0.2", "-W", "1", "-c", str(flow_s * 5), dst],
        log=subprocess.PIPE,
    )
    present, gaps = 0, []
    started = time.monotonic()
    while flow.poll() is None:
        if _shortcut(lab, spoke2, spoke1) is None:
            gaps.append(round(time.monotonic() - started, 1))
        else:
            present += 1
        time.sleep(1)
    out = flow.communicate()[0].decode()
    routes.terminate()
    route_events = routes.communicate()[0].decode().splitlines()
    lapses, rebuilt = _shortcut_changes(route_events, lan)
    sent, received = ping_totals(out)
    lab.save(request.node.name, "ping-in-use.txt", out)
    lab.save(request.node.name, "routes-in-use.txt", "\n".join(route_events))
    lab.save(
        request.node.name,
        "in-use.json",
        {
            "flow_s": flow_s,
            "sent": sent,
            "received": received,
            "shortcut_lapses": lapses,
            "shortcut_rebuilt": rebuilt,
            "polls_with_shortcut": present,
            "polls_without_at_s": gaps,
        },
    )
    assert sent == flow_s * 5, out[-300:]
    most_lapses = math.ceil(flow_s / HOLDTIME_S)
    assert lapses <= most_lapses, f"{lapses} lapses in {flow_s} s: more than one per {HOLDTIME_S} s holdtime"
    assert rebuilt >= lapses, f"the shortcut lapsed {lapses} times and came back {rebuilt} times (routes-in-use.txt)"
    # Polls are a second apart and a lapse is rebuilt by the flow's next redirected packet: at most two
    # polls may miss the shortcut per lapse.
    assert len(gaps) <= 2 * lapses, f"in use, the shortcut was missing at {gaps} s into the flow ({lapses} lapses)"
    assert sent - received <= lapses, (
        f"{sent - received} of {sent} pings lost with {lapses} shortcut lapses (at most one each):\n{out[-300:]}"
    )

    # Unused: once the last packet has gone direct, the shortcut (route and cache entry) goes when its
    # holdtime has passed.
    _ping_until_shortcut(lab, spoke2, spoke1, count=3, why="shortcut in place when the traffic stops")
    idle_from = time.monotonic()
    wait_for_json(
        lambda: {"route": _shortcut(lab, spoke2, spoke1), "cache": _cache_entry(lab, spoke2, spoke1)},
        {"route": None, "cache": None},
        what=f"{spoke2.name}: show ip route nhrp json / show ip nhrp cache json (shortcut to spoke1 aged out)",
        timeout=3 * HOLDTIME_S,
        interval=1,
    )
    aged_after = time.monotonic() - idle_from
    lab.save(request.node.name, "aged-out.json", {"holdtime_s": HOLDTIME_S, "aged_out_after_s": round(aged_after, 1)})
    # The entry's holdtime runs from its last resolution, before the traffic stopped: gone within one
    # holdtime of the last packet (plus a poll), and without traffic it does not come back.
    assert aged_after <= HOLDTIME_S + 2, f"the unused shortcut took {aged_after:.1f} s to go (holdtime {HOLDTIME_S} s)"
    stays(
        lambda: (
            None
            if _shortcut(lab, spoke2, spoke1) is None and _cache_entry(lab, spoke2, spoke1) is None
            else "the shortcut came back without traffic"
        ),
        what=f"{spoke2.name}: shortcut to spoke1 stays gone while idle",
        duration=HOLDTIME_S / 2,
    )
    lab.save(request.node.name, "spoke2-nhrp-after.txt", lab.shell.vtysh(spoke2.name, "show ip nhrp cache"))
    # Back to the hub path: spoke2 still reaches spoke1's LAN, first through the hub (two tunnel hops).
    traceroute = ["traceroute", "-n", "-q", "1", "-w", "2", dst]  # the harness's, in the host's namespace
    trace = lab.shell.run(lab.host_of(spoke2.name), traceroute, network_only=True).stdout
    lab.save(request.node.name, "traceroute-after.txt", trace)
    hub_tunnel = lab.topology.hub().labels["dmvpn-lab.tunnel-ip"]
    assert hub_tunnel in trace.split(), f"after aging out, the first packets did not cross the hub:\n{trace}"


def test_network_id_is_local_a_spoke_with_another_one_still_registers(nhrp_lab, request):
    lab = nhrp_lab
    hub, spoke2 = lab.topology.hub(), lab.topology.nodes["spoke2"]
    lab.shell.vtysh_config(spoke2.name, ["interface gre1", "ip nhrp network-id 999"])
    try:
        lab.shell.vtysh(hub.name, "clear ip nhrp cache")
        config = lab.shell.vtysh(spoke2.name, "show running-config")
        lab.save(request.node.name, "spoke2-running-config.txt", config)
        gre1 = config.split("interface gre1", 1)[1].split("exit", 1)[0]
        assert "ip nhrp network-id 999" in gre1, f"network-id 999 did not take effect on gre1:\n{gre1}"
        entry = _wait_registered(lab, spoke2, "spoke2 with network-id 999", timeout=2 * HOLDTIME_S)
        lab.save(request.node.name, "hub-entry.json", entry)
    finally:
        lab.shell.vtysh_config(spoke2.name, ["interface gre1", "ip nhrp network-id 123"])
        _wait_all_registered(lab)


def _wait_registered(lab, spoke, why, *, timeout):
    """Wait for the hub to hold ``spoke`` as a registered (dynamic) entry with its NBMA address."""
    hub = lab.topology.hub()
    return wait_for_json(
        lambda: _cache_entry(lab, hub, spoke) or {},
        {"type": "dynamic", "nbma": spoke.labels["dmvpn-lab.nbma"]},
        what=f"{hub.name}: show ip nhrp cache json ({why})",
        timeout=timeout,
    )


def _wait_all_registered(lab):
    hub = lab.topology.hub()
    return wait_for_json(
        lambda: lab.shell.vtysh_json(hub.name, "show ip nhrp cache json"),
        checks.hub_nhrp_expected(lab.shell),
        what=f"{hub.name}: show ip nhrp cache json (every spoke registered)",
        timeout=2 * HOLDTIME_S,
    )


@pytest.mark.negative
def test_spoke_with_wrong_nhrp_authentication_is_not_registered(nhrp_lab, request):
    lab = nhrp_lab
    hub, spoke1, spoke2 = lab.topology.hub(), lab.topology.nodes["spoke1"], lab.topology.nodes["spoke2"]
    _wait_all_registered(lab)
    refused_before = _auth_failures(lab, hub, spoke2)
    lab.shell.vtysh_config(spoke2.name, ["interface gre1", "ip nhrp authentication wrongpw"])
    try:
        # spoke2 keeps registering; the hub answers each attempt with an authentication-failure error
        # and lets spoke2's entry run out, while spoke1 (right password) stays registered.
        wait_for_json(
            lambda: {
                "refused": _auth_failures(lab, hub, spoke2) - refused_before,
                "spoke2": _cache_entry(lab, hub, spoke2),
                "spoke1": (_cache_entry(lab, hub, spoke1) or {}).get("type"),
            },
            lambda s: (
                None
                if s["refused"] >= 2 and s["spoke2"] is None and s["spoke1"] == "dynamic"
                else f"refused {s['refused']} times so far; spoke2 entry {s['spoke2']}; spoke1 {s['spoke1']}"
            ),
            what=f"{hub.name}: show ip nhrp cache json and nhrpd's log (spoke2 refused, its entry gone)",
            timeout=4 * HOLDTIME_S,
            interval=1,
        )
        cache = lab.shell.vtysh_json(hub.name, "show ip nhrp cache json")
        lab.save(request.node.name, "hub-nhrp-cache-refused.json", cache)
        # Still refused two registration intervals later: nothing slips through between attempts.
        spoke_attempts = _auth_failures(lab, hub, spoke2)
        wait_for_json(
            lambda: {"refused": _auth_failures(lab, hub, spoke2), "spoke2": _cache_entry(lab, hub, spoke2)},
            lambda s: (
                f"spoke2 registered: {s['spoke2']}"
                if s["spoke2"] is not None
                else (None if s["refused"] >= spoke_attempts + 2 else "waiting for two more attempts")
            ),
            what=f"{hub.name}: spoke2 stays unregistered",
            timeout=4 * HOLDTIME_S,
            interval=1,
        )
    finally:
        lab.shell.vtysh_config(spoke2.name, ["interface gre1", f"ip nhrp authentication {PASSWORD}"])
    # Control: with the right password again, the same check sees spoke2 registered.
    _wait_registered(lab, spoke2, "spoke2 back with the right password", timeout=4 * HOLDTIME_S)


def _auth_failures(lab, hub, spoke) -> int:
    """How many NHRP packets from ``spoke`` the hub's nhrpd refused for their authentication.

    nhrpd has no counter for this in its show commands; it logs each refusal (``From <nbma>: error:
    authentication failure``) to the log file each runtime gives it.
    """
    text = lab.runtime.daemon_log(hub.name, "nhrpd")
    return text.count(f"From {spoke.labels['dmvpn-lab.nbma']}: error: authentication failure")
