"""Read a containerlab topology file into plain data, with errors that name the exact place.

The containerlab YAML is the single source of truth for both runtimes.  Each DMVPN node carries its
plumbing in files bound into it (``binds``): ``setup.sh`` (addresses, GRE tunnel, routes), ``frr.conf``
and ``gdoi.cfg``; and the sidecar's settings in ``env``.  The netns runtime reads the same keys that
containerlab and the images use, so nothing is described twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Where files land inside a node; the images read them from there and the netns runtime maps them back.
SETUP_PATH = "/etc/dmvpn-lab/setup.sh"
FRR_CONF_PATH = "/etc/frr/frr.conf"
FRR_DAEMONS_PATH = "/etc/frr/daemons"
GDOI_CONF_PATH = "/etc/gdoi/gdoi.cfg"

# Where the netns runtime's routers take FRR from: the Debian 13 root scripts/frr-root.sh builds, so they
# run Debian's FRR 10.3 as the containerlab images do.  "/" means the host's own FRR.
NETNS_FRR_ROOT = Path(os.environ.get("DMVPN_LAB_FRR_ROOT", "/var/lib/dmvpn-lab/frr-trixie"))

# The keys ``containerlab deploy`` accepts (it decodes the file strictly: an unknown key is an error
# before anything runs).  Taken from containerlab 0.69's topology types; a file this parser accepts must
# deploy there unchanged.
CONTAINERLAB_TOP_KEYS = frozenset({"name", "prefix", "mgmt", "settings", "topology", "debug"})
CONTAINERLAB_TOPOLOGY_KEYS = frozenset({"defaults", "kinds", "groups", "nodes", "links"})
CONTAINERLAB_NODE_KEYS = frozenset(
    {
        "kind", "group", "type", "startup-config", "startup-delay", "enforce-startup-config",
        "suppress-startup-config", "auto-remove", "restart-policy", "config", "image", "image-pull-policy",
        "license", "position", "entrypoint", "cmd", "exec", "binds", "devices", "cap-add", "shm-size", "ports",
        "mgmt-ipv4", "mgmt-ipv6", "env", "env-files", "user", "labels", "network-mode", "sandbox", "kernel",
        "runtime", "cpu", "cpu-set", "memory", "sysctls", "extras", "stages", "dns", "certificate",
        "healthcheck", "aliases", "components",
    }
)  # fmt: skip
CONTAINERLAB_LINK_KEYS = frozenset(
    {"endpoints", "type", "mtu", "vars", "labels", "endpoint", "host-interface", "mode", "remote", "vni",
     "udp-port", "parent-interface"}
)  # fmt: skip

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")


class TopologyError(ValueError):
    """A topology file that cannot describe a lab; the message names the place and what to do."""


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str
    env: dict[str, str]
    binds: dict[str, Path]  # path inside the node -> file on the host
    labels: dict[str, str]
    wait_for: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        """``ks``, ``hub``, ``spoke``, ``host`` or ``underlay`` (label ``dmvpn-lab.role``)."""
        return self.labels.get("dmvpn-lab.role", "host")

    @property
    def gdoi_role(self) -> str | None:
        return self.env.get("GDOI_ROLE")

    @property
    def frr_daemons(self) -> tuple[str, ...]:
        return tuple(self.env.get("FRR_DAEMONS", "").split())

    @property
    def frr_root(self) -> Path | None:
        """Netns runtime only: the Debian root whose FRR this node runs with chroot (None: the host's).

        :data:`NETNS_FRR_ROOT` for every node (``DMVPN_LAB_FRR_ROOT`` overrides it); in containerlab the
        image carries the same FRR.
        """
        return None if Path("/") == NETNS_FRR_ROOT else NETNS_FRR_ROOT

    def file(self, inside_path: str) -> Path | None:
        return self.binds.get(inside_path)


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    path: Path
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    labels: dict[str, str] = field(default_factory=dict)

    def namespace(self, node: str) -> str:
        """The node's name as containerlab gives it, which is also its network namespace here."""
        return f"clab-{self.name}-{node}"

    # --- nodes by their role in the lab (labels ``dmvpn-lab.role`` and the GDOI role) --------------

    def routers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role in ("hub", "spoke")]

    def hub(self) -> Node:
        hubs = [n for n in self.nodes.values() if n.role == "hub"]
        if len(hubs) != 1:
            raise ValueError(f"lab {self.name} must have exactly one node labelled dmvpn-lab.role: hub")
        return hubs[0]

    def spokes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == "spoke"]

    def group_members(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.gdoi_role == "gm"]

    def key_servers(self) -> list[Node]:
        """Every key server, in the topology's order (with COOP the first is the one members try first)."""
        return [n for n in self.nodes.values() if n.gdoi_role == "ks"]

    def key_server(self) -> Node | None:
        """The first key server: the only one in a lab without COOP."""
        return next(iter(self.key_servers()), None)

    def ordered_nodes(self) -> list[Node]:
        """Nodes in start order: every node after the nodes it waits for (containerlab ``stages``)."""
        done: list[Node] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen:
                return
            if name in chain:
                raise TopologyError(f"nodes wait for each other in a circle: {' -> '.join((*chain, name))}")
            for dep in self.nodes[name].wait_for:
                visit(dep, (*chain, name))
            seen.add(name)
            done.append(self.nodes[name])

        for name in self.nodes:
            visit(name, ())
        return done


def load_topology(path: str | Path) -> Topology:
    """Parse and validate ``*.clab.yml``.  Raises TopologyError naming the offending key."""
    file = Path(path)
    if file.is_dir():
        candidates = sorted(file.glob("*.clab.yml")) + sorted(file.glob("*.clab.yaml"))
        if len(candidates) != 1:
            raise TopologyError(f"{file}: expected exactly one *.clab.yml in this folder, found {len(candidates)}")
        file = candidates[0]
    if not file.is_file():
        raise TopologyError(f"{file}: no such topology file (try topologies/dmvpn-gdoi)")
    try:
        doc = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError(f"{file}: not valid YAML: {exc}") from None
    return parse_topology(doc, file)


def parse_topology(doc: Any, file: Path) -> Topology:
    where = str(file)
    if not isinstance(doc, dict):
        raise TopologyError(f"{where}: the top level must be a mapping with 'name' and 'topology'")
    _containerlab_keys(doc, CONTAINERLAB_TOP_KEYS, f"{where}: the top level")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TopologyError(f"{where}: name: must be lower-case letters, digits and '-', got {name!r}")
    topo = _mapping(doc.get("topology"), f"{where}: topology")
    _containerlab_keys(topo, CONTAINERLAB_TOPOLOGY_KEYS, f"{where}: topology")
    defaults = _mapping(topo.get("defaults", {}), f"{where}: topology.defaults")
    kinds = _mapping(topo.get("kinds", {}), f"{where}: topology.kinds")
    raw_nodes = _mapping(topo.get("nodes"), f"{where}: topology.nodes")
    if not raw_nodes:
        raise TopologyError(f"{where}: topology.nodes: a lab needs at least one node")

    nodes: dict[str, Node] = {}
    for node_name, raw in raw_nodes.items():
        place = f"{where}: topology.nodes.{node_name}"
        if not isinstance(node_name, str) or not _NAME_RE.match(node_name):
            raise TopologyError(f"{place}: node names are lower-case letters, digits and '-'")
        spec = _mapping(raw or {}, place)
        _containerlab_keys(spec, CONTAINERLAB_NODE_KEYS, place)
        kind = str(spec.get("kind", defaults.get("kind", "linux")))
        kind_defaults = _mapping(kinds.get(kind, {}), f"{where}: topology.kinds.{kind}")
        merged = {**defaults, **kind_defaults, **spec}
        # containerlab merges these maps key by key (node over kind over defaults), not as a whole.
        for key in ("env", "labels", "sysctls"):
            layers = [_mapping(layer.get(key) or {}, f"{place}.{key}") for layer in (defaults, kind_defaults, spec)]
            merged[key] = {k: v for layer in layers for k, v in layer.items()}
        image = merged.get("image")
        if not isinstance(image, str) or not image:
            raise TopologyError(f"{place}: no image (set one on the node, its kind or topology.defaults)")
        env = {str(k): str(v) for k, v in _mapping(merged.get("env", {}), f"{place}.env").items()}
        labels = {str(k): str(v) for k, v in _mapping(merged.get("labels", {}), f"{place}.labels").items()}
        sysctls = {str(k): str(v) for k, v in _mapping(merged.get("sysctls", {}), f"{place}.sysctls").items()}
        binds: dict[str, Path] = {}
        for i, bind in enumerate(merged.get("binds", []) or []):
            parts = str(bind).split(":")
            if len(parts) < 2:
                raise TopologyError(f"{place}.binds[{i}]: expected 'host-file:path-in-node[:ro]', got {bind!r}")
            if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise TopologyError(f"{place}.binds[{i}]: expected 'host-file:path-in-node[:ro]', got {bind!r}")
            host = (file.parent / parts[0]).resolve()
            if not host.exists():
                raise TopologyError(f"{place}.binds[{i}]: {parts[0]} does not exist next to {file.name}")
            binds[parts[1]] = host
        wait_for: list[str] = []
        stages = _mapping(merged.get("stages", {}), f"{place}.stages")
        create = _mapping(stages.get("create", {}), f"{place}.stages.create")
        for j, item in enumerate(create.get("wait-for", []) or []):
            dep = _mapping(item, f"{place}.stages.create.wait-for[{j}]").get("node")
            if not isinstance(dep, str):
                raise TopologyError(f"{place}.stages.create.wait-for[{j}]: needs 'node: NAME'")
            wait_for.append(dep)
        nodes[node_name] = Node(node_name, kind, image, env, binds, labels, tuple(wait_for), sysctls)

    for node in nodes.values():
        for dep in node.wait_for:
            if dep not in nodes:
                raise TopologyError(f"{where}: topology.nodes.{node.name}.stages: waits for unknown node {dep!r}")

    links: list[Link] = []
    used: set[tuple[str, str]] = set()
    for i, raw_link in enumerate(topo.get("links", []) or []):
        place = f"{where}: topology.links[{i}]"
        link = _mapping(raw_link, place)
        _containerlab_keys(link, CONTAINERLAB_LINK_KEYS, place)
        endpoints = link.get("endpoints")
        if not isinstance(endpoints, list) or len(endpoints) != 2:
            raise TopologyError(f'{place}.endpoints: expected two entries like ["hub:eth1", "internet:eth1"]')
        ends: list[Endpoint] = []
        for j, ep in enumerate(endpoints):
            ep_place = f"{place}.endpoints[{j}]"
            if not isinstance(ep, str) or ep.count(":") != 1:
                raise TopologyError(f"{ep_place}: expected 'node:interface', got {ep!r}")
            node_name, ifname = ep.split(":")
            if node_name not in nodes:
                raise TopologyError(f"{ep_place}: unknown node {node_name!r} (nodes: {', '.join(nodes)})")
            if not _IFNAME_RE.match(ifname):
                raise TopologyError(f"{ep_place}: {ifname!r} is not a valid Linux interface name (15 chars max)")
            if (node_name, ifname) in used:
                raise TopologyError(f"{ep_place}: {node_name}:{ifname} is already used by another link")
            used.add((node_name, ifname))
            ends.append(Endpoint(node_name, ifname))
        links.append(Link(ends[0], ends[1]))

    lab_labels = {str(k): str(v) for k, v in _mapping(defaults.get("labels", {}), f"{where}: defaults.labels").items()}
    topology = Topology(name, file, nodes, tuple(links), lab_labels)
    topology.ordered_nodes()  # raises on circular waits
    return topology


def _containerlab_keys(mapping: dict[str, Any], allowed: frozenset[str], place: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise TopologyError(
            f"{place}: {', '.join(unknown)}: not a key containerlab accepts (it refuses the whole file); "
            f"project metadata goes in a node's or topology.defaults' labels"
        )


def _mapping(value: Any, place: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(f"{place}: expected a mapping, got {type(value).__name__}")
    return value
