"""Topology files: the committed folders match the generator; broken files get errors naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dmvpn_lab.lab import generate
from dmvpn_lab.lab.generate import LabSpec, Protection
from dmvpn_lab.lab.topology import TopologyError, load_topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("protection", [Protection.GDOI, Protection.PLAIN, Protection.IPSEC])
def test_committed_topologies_match_the_generator(protection):
    spec = LabSpec(3, protection)
    folder = ROOT / "topologies" / spec.lab_name
    for rel, text in generate.render(spec).items():
        assert (folder / rel).read_text() == text, f"{folder / rel} differs: run `make topologies`"


def test_seed_topology_loads_with_seed_addressing():
    topo = load_topology(ROOT / "topologies" / "dmvpn-gdoi")
    assert topo.name == "dmvpn-gdoi"
    assert topo.namespace("hub") == "clab-dmvpn-gdoi-hub"
    assert topo.nodes["spoke1"].labels["dmvpn-lab.nbma"] == "172.27.1.1"
    assert topo.nodes["spoke3"].env["GDOI_LOCAL_ADDRESS"] == "13.13.13.13"
    assert topo.nodes["hub"].wait_for == ("ks",)
    order = [n.name for n in topo.ordered_nodes()]
    assert order.index("ks") < order.index("hub")
    hub_frr = (ROOT / "topologies/dmvpn-gdoi/hub/frr.conf").read_text()
    assert "ip nhrp network-id 123" in hub_frr and "ip nhrp holdtime 240" in hub_frr
    assert "ip nhrp redirect" in hub_frr
    assert "ip nhrp shortcut" in (ROOT / "topologies/dmvpn-gdoi/spoke1/frr.conf").read_text()
    assert "key 123" in (ROOT / "topologies/dmvpn-gdoi/spoke1/setup.sh").read_text()


@pytest.mark.parametrize("protection", [Protection.GDOI, Protection.PLAIN, Protection.IPSEC])
def test_hub_redirect_rule_hands_each_packet_to_nhrpd_at_once(protection):
    # Without a queue threshold of 1 the kernel holds NFLOG packets up to 1 s, and every redirect waits.
    hub_setup = generate.render(LabSpec(3, protection))["hub/setup.sh"]
    rule = next(line for line in hub_setup.splitlines() if "NFLOG" in line)
    assert "--nflog-group 1" in rule and "--nflog-threshold 1" in rule, rule


def test_every_node_turns_ipv6_off_before_its_links_come_up():
    # The wire verdict counts any IPv6 frame as a finding, so no node may send link-local chatter.
    for rel, text in generate.render(LabSpec(3, Protection.GDOI)).items():
        if rel.endswith("setup.sh"):
            lines = text.splitlines()
            first_up = next(i for i, line in enumerate(lines) if " up" in line and line.startswith("ip link set"))
            off = lines.index("  sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
            assert off < first_up, rel


def test_plain_variant_has_no_ks_and_no_gdoi():
    topo = load_topology(ROOT / "topologies" / "dmvpn-plain")
    assert "ks" not in topo.nodes
    assert all(n.gdoi_role is None for n in topo.nodes.values())


def test_scaled_generation(tmp_path):
    topo = load_topology(generate.write(LabSpec(20, Protection.GDOI), tmp_path))
    assert len([n for n in topo.nodes.values() if n.role == "spoke"]) == 20
    assert topo.nodes["spoke20"].labels["dmvpn-lab.nbma"] == "172.217.1.1"
    with pytest.raises(ValueError, match="spokes must be"):
        LabSpec(99).routers()


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "x.clab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "doc,needle",
    [
        ("not a mapping", "top level must be a mapping"),
        ({"name": "Bad Name", "topology": {"nodes": {"a": {}}}}, "name:"),
        ({"name": "x", "topology": {"nodes": {}}}, "at least one node"),
        ({"name": "x", "topology": {"nodes": {"a": {}}}}, "topology.nodes.a: no image"),
        (
            {
                "name": "x",
                "topology": {
                    "defaults": {"image": "i"},
                    "nodes": {"a": {}},
                    "links": [{"endpoints": ["a:eth1", "b:eth1"]}],
                },
            },
            "topology.links[0].endpoints[1]: unknown node 'b'",
        ),
        (
            {
                "name": "x",
                "topology": {
                    "defaults": {"image": "i"},
                    "nodes": {"a": {}, "b": {}},
                    "links": [{"endpoints": ["a:eth1"]}],
                },
            },
            "topology.links[0].endpoints",
        ),
        (
            {
                "name": "x",
                "topology": {
                    "defaults": {"image": "i"},
                    "nodes": {"a": {}, "b": {}},
                    "links": [{"endpoints": ["a:eth1", "b:averyveryverylongname"]}],
                },
            },
            "not a valid Linux interface name",
        ),
        (
            {
                "name": "x",
                "topology": {
                    "defaults": {"image": "i"},
                    "nodes": {"a": {}, "b": {}},
                    "links": [{"endpoints": ["a:eth1", "b:eth1"]}, {"endpoints": ["a:eth1", "b:eth2"]}],
                },
            },
            "a:eth1 is already used",
        ),
        (
            {"name": "x", "topology": {"defaults": {"image": "i"}, "nodes": {"a": {"binds": ["nope.sh:/x"]}}}},
            "topology.nodes.a.binds[0]: nope.sh does not exist",
        ),
        (
            {
                "name": "x",
                "topology": {
                    "defaults": {"image": "i"},
                    "nodes": {
                        "a": {"stages": {"create": {"wait-for": [{"node": "b"}]}}},
                        "b": {"stages": {"create": {"wait-for": [{"node": "a"}]}}},
                    },
                },
            },
            "circle",
        ),
    ],
)
def test_broken_topologies_name_the_place(tmp_path, doc, needle):
    with pytest.raises(TopologyError) as err:
        load_topology(_write(tmp_path, doc))
    assert needle in str(err.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.clab.yml"
    bad.write_text("name: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)
    with pytest.raises(TopologyError, match="no such topology file"):
        load_topology(tmp_path / "missing.clab.yml")


def test_short_holdtime_authentication_and_frr_root_reach_every_router(tmp_path):
    spec = LabSpec(2, Protection.GDOI, "nhrp-lab", nhrp_holdtime_s=30, nhrp_authentication="dmvpnlab", frr_root="/r")
    topology = load_topology(generate.write(spec, tmp_path))
    routers = [n for n in topology.nodes.values() if n.role in ("hub", "spoke")]
    assert len(routers) == 3
    for node in routers:
        conf = node.file("/etc/frr/frr.conf").read_text()
        assert " ip nhrp holdtime 30\n" in conf and " ip nhrp authentication dmvpnlab\n" in conf
        assert node.frr_root == Path("/r")
    assert topology.nodes["ks"].frr_root is None
    seed = load_topology(ROOT / "topologies" / "dmvpn-gdoi")
    assert all(n.frr_root is None for n in seed.nodes.values())
    assert "ip nhrp authentication" not in seed.nodes["hub"].file("/etc/frr/frr.conf").read_text()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"nhrp_holdtime_s": 0}, "NHRP holdtime must be 1..65000"),
        ({"nhrp_authentication": "ninechars"}, "1..8 printable"),
        ({"nhrp_authentication": "two words"}, "1..8 printable"),
    ],
)
def test_bad_nhrp_settings_are_refused(tmp_path, change, needle):
    with pytest.raises(ValueError, match=needle):
        generate.write(LabSpec(2, Protection.GDOI, "bad", **change), tmp_path)


def test_frr_commands_pick_the_node_pathspace_and_its_root(tmp_path):
    from dmvpn_lab.lab.netns import _on_host
    from dmvpn_lab.lab.node import NodeShell

    spec = LabSpec(1, Protection.PLAIN, "frr-lab", frr_root="/srv/frr10")
    topology = load_topology(generate.write(spec, tmp_path))
    netns = NodeShell(topology, "netns")
    assert netns.frr_argv("hub", "vtysh") == ["chroot", "/srv/frr10", "vtysh", "-N", "clab-frr-lab-hub"]
    assert netns.frr_argv("hub", "zebra")[:3] == ["chroot", "/srv/frr10", "/usr/lib/frr/zebra"]
    seed = NodeShell(load_topology(ROOT / "topologies" / "dmvpn-gdoi"), "netns")
    assert seed.frr_argv("hub", "vtysh") == ["vtysh", "-N", "clab-dmvpn-gdoi-hub"]
    assert NodeShell(topology, "containerlab").frr_argv("hub", "vtysh") == ["vtysh"]
    # /var/run is an absolute symlink inside a Debian root: the host path must not follow it.
    assert _on_host(Path("/srv/frr10"), Path("/var/run/frr/x")) == Path("/srv/frr10/run/frr/x")
    assert _on_host(Path("/"), Path("/var/tmp/a")) == Path("/var/tmp/a")
