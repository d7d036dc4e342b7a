"""Generate the DMVPN topologies from one description, so the variants never drift apart.

One ``LabSpec`` (number of spokes, how the tunnel is protected) gives a containerlab folder: the
``.clab.yml`` plus, per node, ``setup.sh`` (kernel plumbing), ``frr.conf`` and ``gdoi.cfg``.  The
addressing follows the seed document (../shared/seeds/gdoi-based-dmvpn.txt):

=========  ==============  ================  ==============  ===============
node       GDOI address    NBMA (underlay)   tunnel          LAN
=========  ==============  ================  ==============  ===============
ks         1.1.1.1         1.1.1.1           -               -
ks1, ks2   1.1.1.1, 1.1.2.1  the same        -               -     (``--key-servers 2`` instead of ks)
hub        2.2.2.2 (lo)    172.17.1.1        192.168.100.1   192.168.1.0/24
spoke<i>   <10+i> x4 (lo)  172.<10i+17>.1.1  192.168.100.<i+1>  192.168.<i+1>.0/24
=========  ==============  ================  ==============  ===============

An ``internet`` node routes between the NBMA subnets and knows the loopbacks, like a provider would.
With ``key_servers=2`` the single ``ks`` becomes two cooperative key servers (IOS ``redundancy``,
docs/coop.md): ``ks1`` (1.1.1.1, priority 100) and ``ks2`` (1.1.2.1, priority 50) on their own underlay
subnets; every member lists both, ``ks1`` first.
The ``ipsec`` variant is the classic baseline for the same DMVPN: per-peer IKEv2 from strongSwan
(``swanctl.conf`` and ``strongswan.conf`` per router), hub tunnels started at once, spoke-to-spoke
ones negotiated on demand from trap policies; see the README it writes into its folder.
Routing over the tunnel is eBGP (hub AS 65000, spoke i AS 65000+i): the hub rewrites the next hop to
itself, so spoke-to-spoke traffic first goes through the hub, which redirects (DMVPN phase 3) and the
spoke installs an NHRP shortcut.  Why not EIGRP: see topologies/README.md.

The files are containerlab's own format, which ``containerlab deploy`` reads strictly: the project's
metadata lives in ``labels`` of the nodes and of ``topology.defaults`` (containerlab has no top-level
``labels``), kernel settings in each node's ``sysctls``, and every bound file is read-only.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from dmvpn_lab.lab.images import KS as KS_IMAGE_SPEC
from dmvpn_lab.lab.images import ROUTER as ROUTER_IMAGE_SPEC
from dmvpn_lab.lab.strongswan import STRONGSWAN_CONF_PATH, SWANCTL_CONF_PATH
from dmvpn_lab.lab.topology import FRR_CONF_PATH, GDOI_CONF_PATH, SETUP_PATH

ROUTER_IMAGE = ROUTER_IMAGE_SPEC.tag
KS_IMAGE = KS_IMAGE_SPEC.tag
HOST_IMAGE = ROUTER_IMAGE  # hosts need iproute2 and ping only: the routers' image has them

TUNNEL_KEY = 123  # seed: tunnel key 123
NHRP_NETWORK_ID = 123  # seed: ip nhrp network-id 123
NHRP_HOLDTIME = 240  # seed: ip nhrp holdtime 240
GDOI_IDENTITY = 123  # seed: identity number 123
PSK = "cisco"  # seed: crypto isakmp key 0 cisco
TUNNEL_MTU = 1400  # room for GRE + ESP on a 1500-byte underlay
HUB_ASN = 65000
# IKEv2 proposal (MODP like the GDOI phase 1) and the ESP transform of the seed's GDOI TEK
# (esp-3des esp-md5-hmac), so both labs put the same bytes on the wire and differ in key management only.
IKE_PROPOSAL = "aes128-sha256-modp2048"
ESP_PROPOSAL = "3des-md5"
MAX_SPOKES = 23  # the seed's 172.<10i+17> pattern stays a valid octet up to here
# Cooperative key servers (COOP): short timers so a failover takes seconds in a lab, not IOS's minute.
# The dead time must be at least two announce periods (one lost announcement is no failure).
COOP_ANNOUNCE_S = 2
COOP_DEAD_S = 6


class Protection(enum.Enum):
    GDOI = "gdoi"  # group SA from the KS: the point of the project
    PLAIN = "plain"  # no encryption: for teaching and as the positive control of the wire checks
    IPSEC = "ipsec"  # per-peer IKEv2 (strongSwan): the classic baseline


@dataclass(frozen=True)
class Router:
    name: str
    index: int  # 0 for the hub, i for spoke i
    loopback: str
    nbma: str
    tunnel_ip: str
    lan_prefix: str  # "192.168.2"

    @property
    def asn(self) -> int:
        return HUB_ASN + self.index

    @property
    def is_hub(self) -> bool:
        return self.index == 0

    @property
    def gateway(self) -> str:
        return self.nbma.rsplit(".", 1)[0] + ".254"


@dataclass(frozen=True)
class LabSpec:
    spokes: int = 3
    protection: Protection = Protection.GDOI
    name: str | None = None
    tek_lifetime_s: int | None = None  # None: IOS's default (3600 s); short ones make rekeys observable
    rekey_retransmit: tuple[int, int] = (60, 2)  # seed: rekey retransmit 60 number 2
    nhrp_holdtime_s: int = NHRP_HOLDTIME  # short ones let unused shortcuts age out within a test
    nhrp_authentication: str | None = None  # ``ip nhrp authentication`` (FRR 10 and later)
    key_servers: int = 1  # 2: a primary and a secondary cooperating (COOP), GDOI only

    @property
    def lab_name(self) -> str:
        if self.name:
            return self.name
        base = f"dmvpn-{self.protection.value}"
        name = base if self.spokes == 3 else f"{base}-{self.spokes}"
        return name if self.key_servers == 1 else f"{name}-{self.key_servers}ks"

    def key_server_nodes(self) -> list[KeyServer]:
        """The key servers of the lab, in the order members try them (empty without GDOI)."""
        if self.key_servers not in (1, 2):
            raise ValueError(f"key servers must be 1 or 2, got {self.key_servers}")
        if self.protection is not Protection.GDOI:
            if self.key_servers != 1:
                raise ValueError(f"--key-servers {self.key_servers} needs --protection gdoi")
            return []
        if self.key_servers == 1:
            return [KeyServer("ks", KS_ADDRESS, KS_GATEWAY, priority=None)]
        return [
            KeyServer("ks1", KS_ADDRESS, KS_GATEWAY, priority=100),
            KeyServer("ks2", "1.1.2.1", "1.1.2.254", priority=50),
        ]

    def routers(self) -> list[Router]:
        if not 1 <= self.spokes <= MAX_SPOKES:
            raise ValueError(f"spokes must be 1..{MAX_SPOKES}, got {self.spokes}")
        if not 1 <= self.nhrp_holdtime_s <= 65000:
            raise ValueError(f"NHRP holdtime must be 1..65000 s (FRR's range), got {self.nhrp_holdtime_s}")
        if self.nhrp_authentication is not None and not re.fullmatch(r"[!-~]{1,8}", self.nhrp_authentication):
            raise ValueError("NHRP authentication must be 1..8 printable characters without spaces (FRR's limit)")
        hub = Router("hub", 0, "2.2.2.2", "172.17.1.1", "192.168.100.1", "192.168.1")
        spokes = [
            Router(
                f"spoke{i}",
                i,
                ".".join([str(10 + i)] * 4),
                f"172.{10 * i + 17}.1.1",
                f"192.168.100.{i + 1}",
                f"192.168.{i + 1}",
            )
            for i in range(1, self.spokes + 1)
        ]
        return [hub, *spokes]


KS_ADDRESS = "1.1.1.1"
KS_GATEWAY = "1.1.1.254"


@dataclass(frozen=True)
class KeyServer:
    name: str
    address: str  # its GDOI address, on its own /24 of the underlay
    gateway: str  # the internet node's side of that /24
    priority: int | None  # COOP ``local priority``; None: a lone key server (no redundancy)


def render(spec: LabSpec) -> dict[str, str]:
    """Every file of the topology folder, by relative path."""
    routers = spec.routers()
    key_servers = spec.key_server_nodes()
    files: dict[str, str] = {}
    lab = spec.lab_name
    nodes: dict[str, dict[str, object]] = {}
    links: list[dict[str, list[str]]] = []

    # The underlay: one port per router (and the KS), static routes to the GDOI loopbacks.
    inet_setup = [_SH_HEADER]
    port = 1
    for ks in key_servers:
        inet_setup += _iface(f"eth{port}", ks.gateway + "/24")
        links.append({"endpoints": [f"{ks.name}:eth1", f"internet:eth{port}"]})
        port += 1
    for r in routers:
        inet_setup += _iface(f"eth{port}", f"{r.gateway}/24")
        inet_setup.append(f"ip route add {r.loopback}/32 via {r.nbma}")
        links.append({"endpoints": [f"{r.name}:eth1", f"internet:eth{port}"]})
        port += 1
    files["internet/setup.sh"] = "\n".join(inet_setup) + "\n"
    nodes["internet"] = {
        "labels": {"dmvpn-lab.role": "underlay"},
        "sysctls": {"net.ipv4.ip_forward": "1"},
        "binds": [f"internet/setup.sh:{SETUP_PATH}:ro"],
    }

    for ks in key_servers:
        files[f"{ks.name}/setup.sh"] = (
            "\n".join([_SH_HEADER, *_iface("eth1", ks.address + "/24"), _default_route(ks.gateway)])
            + "\n"
        )
        peers = [other for other in key_servers if other is not ks]
        files[f"{ks.name}/gdoi.cfg"] = _ks_config(routers, spec, ks, peers)
        nodes[ks.name] = {
            "image": KS_IMAGE,
            "labels": {"dmvpn-lab.role": "ks"},
            "env": {"GDOI_ROLE": "ks", "GDOI_LOCAL_ADDRESS": ks.address},
            "binds": [f"{ks.name}/setup.sh:{SETUP_PATH}:ro", f"{ks.name}/gdoi.cfg:{GDOI_CONF_PATH}:ro"],
            "healthcheck": {
                "test": ["CMD", "gdoi", "show", "crypto", "gdoi", "--run-dir", "/run/gdoi", "--json"],
                "start-period": 5,
                "interval": 2,
                "retries": 30,
            },
        }

    for r in routers:
        host = f"host{r.index + 1}"
        files[f"{r.name}/setup.sh"] = _router_setup(r, hub=routers[0])
        files[f"{r.name}/frr.conf"] = _frr_conf(r, hub=routers[0], spec=spec)
        env = {"FRR_DAEMONS": "zebra bgpd nhrpd"}
        binds = [f"{r.name}/setup.sh:{SETUP_PATH}:ro", f"{r.name}/frr.conf:{FRR_CONF_PATH}:ro"]
        node: dict[str, object] = {
            "labels": {
                "dmvpn-lab.role": "hub" if r.is_hub else "spoke",
                "dmvpn-lab.nbma": r.nbma,
                "dmvpn-lab.tunnel-ip": r.tunnel_ip,
                "dmvpn-lab.lan": f"{r.lan_prefix}.0/24",
                "dmvpn-lab.host": host,
            },
            "env": env,
            "sysctls": _router_sysctls(protected=spec.protection is not Protection.PLAIN),
            "binds": binds,
        }
        if spec.protection is Protection.GDOI:
            files[f"{r.name}/gdoi.cfg"] = _gm_config(r, key_servers)
            env.update({"GDOI_ROLE": "gm", "GDOI_LOCAL_ADDRESS": r.loopback, "GDOI_XFRM_ADDRESS": r.nbma})
            binds.append(f"{r.name}/gdoi.cfg:{GDOI_CONF_PATH}:ro")
            node["stages"] = {
                "create": {"wait-for": [{"node": ks.name, "stage": "healthy"} for ks in key_servers]}
            }
        if spec.protection is Protection.IPSEC:
            files[f"{r.name}/swanctl.conf"] = _swanctl_conf(r, routers)
            files[f"{r.name}/strongswan.conf"] = _strongswan_conf(r)
            env["IKE_DAEMON"] = "strongswan"
            binds.append(f"{r.name}/swanctl.conf:{SWANCTL_CONF_PATH}:ro")
            binds.append(f"{r.name}/strongswan.conf:{STRONGSWAN_CONF_PATH}:ro")
        nodes[r.name] = node
        files[f"{host}/setup.sh"] = (
            "\n".join(
                [_SH_HEADER, *_iface("eth1", f"{r.lan_prefix}.10/24"), _default_route(f"{r.lan_prefix}.1")]
            )
            + "\n"
        )
        nodes[host] = {
            "image": HOST_IMAGE,
            "labels": {"dmvpn-lab.role": "host", "dmvpn-lab.address": f"{r.lan_prefix}.10", "dmvpn-lab.router": r.name},
            "binds": [f"{host}/setup.sh:{SETUP_PATH}:ro"],
        }
        links.append({"endpoints": [f"{r.name}:eth2", f"{host}:eth1"]})

    doc = {
        "name": lab,
        "topology": {
            "defaults": {
                "kind": "linux",
                "image": ROUTER_IMAGE,
                "labels": {"dmvpn-lab.protection": spec.protection.value, "dmvpn-lab.spokes": str(spec.spokes)},
            },
            "nodes": nodes,
            "links": links,
        },
    }
    cooperating = f", {len(key_servers)} cooperative key servers" if len(key_servers) > 1 else ""
    header = (
        f"# {lab}: DMVPN phase 3, hub + {spec.spokes} spokes, protection: {spec.protection.value}{cooperating}.\n"
        "# Generated by `python -m dmvpn_lab.lab.generate`; edit the generator, not this file.\n"
    )
    files[f"{lab}.clab.yml"] = header + yaml.safe_dump(doc, sort_keys=False, width=120)
    if spec.protection is Protection.IPSEC:
        files["README.md"] = _ipsec_readme(spec, routers)
    return files


_SH_HEADER = "\n".join(
    [
        "#!/bin/sh",
        "# Kernel plumbing of this node; run once in the node's namespace. Generated.",
        "set -e",
        "# The lab is IPv4 only: no IPv6 link-local chatter (MLD, router solicitations) on its links, so the",
        "# wire checks can count any IPv6 frame as a finding.",
        "if [ -d /proc/sys/net/ipv6 ]; then",
        "  sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
        "  sysctl -qw net.ipv6.conf.default.disable_ipv6=1",
        "fi",
    ]
)


def _iface(name: str, cidr: str) -> list[str]:
    return [f"ip addr add {cidr} dev {name}", f"ip link set {name} up"]


def _default_route(gateway: str) -> str:
    # replace, not add: in a container Docker has already set a default route on the management eth0.
    return f"ip route replace default via {gateway}"


def _router_sysctls(*, protected: bool) -> dict[str, str]:
    """A router's kernel settings, as containerlab's ``sysctls`` (the netns runtime applies them too)."""
    settings = {
        "net.ipv4.ip_forward": "1",
        # NHRP redirects replace ICMP redirects (IOS: no ip redirects).
        "net.ipv4.conf.all.send_redirects": "0",
        "net.ipv4.ip_forward_use_pmtu": "0",
    }
    if protected:
        # The first packet toward a new peer raises XFRM ACQUIRE: queue it while the GM installs the
        # outbound group state (microseconds) or IKEv2 negotiates (up to the kernel's queue limit),
        # instead of dropping it.
        settings["net.core.xfrm_larval_drop"] = "0"
        # A larval state left by an ACQUIRE nobody answered (a GM restarting) blocks that peer until it
        # expires: keep that short so a restarted GM's own ACQUIREs come through quickly.
        settings["net.core.xfrm_acq_expires"] = "3"
    return settings


def _router_setup(r: Router, hub: Router) -> str:
    lines = [
        _SH_HEADER,
        f"ip addr add {r.loopback}/32 dev lo",
        *_iface("eth1", f"{r.nbma}/24"),
        *_iface("eth2", f"{r.lan_prefix}.1/24"),
        _default_route(r.gateway),
        # mGRE: a keyed tunnel with no remote; nhrpd supplies the per-peer NBMA addresses.
        f"ip tunnel add gre1 mode gre key {TUNNEL_KEY} ttl 64 local {r.nbma} dev eth1",
        f"ip addr add {r.tunnel_ip}/32 dev gre1",
        f"ip link set gre1 mtu {TUNNEL_MTU} up",
    ]
    if r.is_hub:
        # nhrpd learns of spoke-to-spoke traffic crossing the hub from this NFLOG group (phase 3).
        # Some kernels (the UML sandbox among them) have no nf_tables IPv4 family: fall back to legacy.
        # --nflog-threshold 1 hands each packet to nhrpd at once: the kernel's default queues up to 100
        # and flushes after 1 s, which delays every redirect by up to a second (FRR's documented rule
        # has that second too; copy this one).
        rule = (
            "-A FORWARD -i gre1 -o gre1 -m hashlimit --hashlimit-upto 4/minute --hashlimit-burst 1"
            " --hashlimit-mode srcip,dstip --hashlimit-srcmask 24 --hashlimit-dstmask 24"
            " --hashlimit-name nhrp-redirect -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 1"
        )
        lines.append(f"iptables {rule} 2>/dev/null || iptables-legacy {rule}")
    return "\n".join(lines) + "\n"


def _frr_conf(r: Router, hub: Router, spec: LabSpec) -> str:
    out = [
        "frr defaults traditional",
        f"hostname {r.name}",
        "no ipv6 forwarding",
        "!",
    ]
    if r.is_hub:
        out += ["nhrp nflog-group 1", "!"]
    out += [
        "interface gre1",
        f" ip nhrp network-id {NHRP_NETWORK_ID}",
        f" ip nhrp holdtime {spec.nhrp_holdtime_s}",
        " ip nhrp registration no-unique",
    ]
    if spec.nhrp_authentication:
        out += [f" ip nhrp authentication {spec.nhrp_authentication}"]
    if r.is_hub:
        out += [" ip nhrp redirect"]
    else:
        out += [f" ip nhrp nhs {hub.tunnel_ip} nbma {hub.nbma}", " ip nhrp shortcut"]
    out += [" tunnel source eth1", "exit", "!", f"router bgp {r.asn}", f" bgp router-id {r.loopback}"]
    out += [" no bgp ebgp-requires-policy", " no bgp network import-check"]
    if r.is_hub:
        out += [
            " neighbor SPOKES peer-group",
            " neighbor SPOKES remote-as external",
            " neighbor SPOKES disable-connected-check",
            " neighbor SPOKES timers 10 30",
            " bgp listen range 192.168.100.0/24 peer-group SPOKES",
        ]
    else:
        out += [
            f" neighbor {hub.tunnel_ip} remote-as {hub.asn}",
            f" neighbor {hub.tunnel_ip} disable-connected-check",
            f" neighbor {hub.tunnel_ip} timers 10 30",
        ]
    out += [" address-family ipv4 unicast", f"  network {r.lan_prefix}.0/24"]
    if r.is_hub:
        out += ["  network 192.168.100.0/24"]
    out += [" exit-address-family", "exit", "!"]
    return "\n".join(out) + "\n"


def _ks_config(routers: list[Router], spec: LabSpec, ks: KeyServer, peers: list[KeyServer]) -> str:
    keys = [
        f"crypto isakmp key 0 {PSK} address {r.loopback}   ! {'Hub' if r.is_hub else r.name.capitalize()} router"
        for r in routers
    ]
    # COOP messages between key servers are protected with the pre-shared key of the peer's address.
    keys += [f"crypto isakmp key 0 {PSK} address {peer.address}   ! key server {peer.name} (COOP)" for peer in peers]
    redundancy = []
    if peers:
        redundancy = [
            "  redundancy",
            f"   local priority {ks.priority}",
            *(f"   peer address ipv4 {peer.address}" for peer in peers),
            f"   timers announce {COOP_ANNOUNCE_S} dead {COOP_DEAD_S}",
            "  !",
        ]
    return (
        "\n".join(
            [
                "! Key server: the seed's configuration (gdoi-based-dmvpn.txt), as IOS would take it.",
                "crypto key generate rsa general-keys label GDOI_KEYS modulus 2048 exportable",
                "!",
                "crypto isakmp policy 10",
                " authentication pre-share",
                "!",
                *keys,
                "!",
                "crypto ipsec transform-set GDOI_TS esp-3des esp-md5-hmac",
                *(
                    [f"crypto ipsec security-association lifetime seconds {spec.tek_lifetime_s}"]
                    if spec.tek_lifetime_s
                    else []
                ),
                "!",
                "crypto ipsec profile GDOI_PROFILE",
                " set transform-set GDOI_TS",
                "!",
                "crypto gdoi group GDOI_GROUP",
                f" identity number {GDOI_IDENTITY}",
                " server local",
                "  rekey transport unicast",
                "  rekey authentication mypubkey rsa GDOI_KEYS",
                f"  rekey retransmit {spec.rekey_retransmit[0]} number {spec.rekey_retransmit[1]}",
                "  !",
                "  sa ipsec 1",
                "   profile GDOI_PROFILE",
                "   match address ipv4 ACL",
                "   replay time window-size 5",
                "  !",
                *redundancy,
                f"  address ipv4 {ks.address}",
                "!",
                "ip access-list extended ACL",
                " permit gre any any",
                "!",
            ]
        )
        + "\n"
    )


def _gm_config(r: Router, key_servers: list[KeyServer]) -> str:
    return (
        "\n".join(
            [
                f"! Group member on {r.name}: the seed's GM configuration.",
                "crypto isakmp policy 10",
                " authentication pre-share",
                "!",
                *(f"crypto isakmp key 0 {PSK} address {ks.address}" for ks in key_servers),
                "!",
                "crypto gdoi group GDOI_GM",
                f" identity number {GDOI_IDENTITY}",
                # Tried in this order: the first that answers registers the member (IOS's failover).
                *(f" server address ipv4 {ks.address}" for ks in key_servers),
                "!",
                "crypto map DMVPN local-address Loopback0",
                "crypto map DMVPN 10 gdoi",
                " set group GDOI_GM",
                "!",
                # Fail-close: GRE is dropped, never sent in clear, until the KS has handed out the TEK.
                "crypto map DMVPN 10 gdoi fail-close",
                " activate",
                "!",
                "interface eth1",
                " crypto map DMVPN",
                "!",
            ]
        )
        + "\n"
    )


def _swanctl_conf(r: Router, routers: list[Router]) -> str:
    """Per-peer IKEv2 between NBMA addresses, ESP in transport mode for GRE only.

    A spoke starts its hub tunnel at once and holds one trap connection per other spoke: the first GRE
    packet toward that spoke's NBMA address raises an ACQUIRE and charon negotiates then.  The hub
    traps toward every spoke (it normally answers the spokes' own initiations).
    """
    lines = [
        f"# {r.name}: per-peer IKEv2 (strongSwan swanctl.conf), the classic protection of this DMVPN. Generated.",
        "connections {",
    ]
    for peer in routers:
        if peer.name == r.name:
            continue
        start = "start" if peer.is_hub else "trap"
        lines += [
            f"  {peer.name} {{",
            "    version = 2",
            f"    local_addrs = {r.nbma}",
            f"    remote_addrs = {peer.nbma}",
            f"    proposals = {IKE_PROPOSAL}",
            "    dpd_delay = 30s",
            "    local {",
            "      auth = psk",
            f"      id = {r.nbma}",
            "    }",
            "    remote {",
            "      auth = psk",
            f"      id = {peer.nbma}",
            "    }",
            "    children {",
            "      gre {",
            "        mode = transport",
            "        local_ts = dynamic[gre]",
            "        remote_ts = dynamic[gre]",
            f"        esp_proposals = {ESP_PROPOSAL}",
            f"        start_action = {start}",
            "        dpd_action = trap" if not peer.is_hub else "        dpd_action = restart",
            "      }",
            "    }",
            "  }",
        ]
    lines += [
        "}",
        "secrets {",
        "  ike-dmvpn {",
        f"    secret = {PSK}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _strongswan_conf(r: Router) -> str:
    return (
        "\n".join(
            [
                f"# {r.name}: charon settings for the DMVPN baseline, a drop-in for /etc/strongswan.conf. Generated.",
                "charon {",
                "  # zebra and nhrpd own the routing table; ESP only wraps GRE between NBMA addresses.",
                "  install_routes = no",
                "  install_virtual_ip = no",
                "  filelog {",
                "    stderr {",
                "      time_format = %H:%M:%S",
                "      default = 1",
                "    }",
                "  }",
                "}",
            ]
        )
        + "\n"
    )


def _ipsec_readme(spec: LabSpec, routers: list[Router]) -> str:
    hub, spokes = routers[0], routers[1:]
    pairs = len(spokes) * (len(spokes) - 1) // 2
    return f"""# {spec.lab_name}: the same DMVPN, protected the classic way (per-peer IKEv2)

Generated by `python -m dmvpn_lab.lab.generate --protection ipsec --spokes {spec.spokes}` from the same
description as `dmvpn-gdoi` and `dmvpn-plain`: same nodes, addresses, mGRE tunnel (key {TUNNEL_KEY}), FRR
`nhrpd` (phase 3 redirect/shortcut) and eBGP over the tunnel.  Only the protection differs: no key
server, and on every router strongSwan's `charon` (IKEv2, configured with `swanctl`) instead of the
GDOI group member.  It is the baseline of `make bench` (`bench/side_by_side.py`); the measured
numbers and how they were taken are in `docs/bench.md`.

## What protects what

| piece | setting |
|---|---|
| IKE | IKEv2, pre-shared key (the seed's `{PSK}`), identities = NBMA addresses, proposal `{IKE_PROPOSAL}` |
| ESP | transport mode, traffic selectors `<own NBMA>/32[gre] <-> <peer NBMA>/32[gre]`, `{ESP_PROPOSAL}` |
| hub <-> spoke | each spoke's connection `hub` has `start_action = start`: up before FRR starts |
| spoke <-> spoke | one connection per other spoke ({pairs} spoke pairs here), `start_action = trap` (on demand) |
| kernel | `net.core.xfrm_larval_drop=0` as in the GDOI lab: packets wait while the SA is negotiated |
| `nhrpd` | no `tunnel protection` (as in the GDOI lab): NHRP never waits for IPsec, the xfrm policies do |

On demand means: the kernel holds a trap policy per spoke pair; the first GRE packet toward another
spoke's NBMA address raises an XFRM ACQUIRE, and charon negotiates IKE_SA_INIT and IKE_AUTH (two round
trips) before the kernel releases the queued packets.

The netns runtime starts one `charon` per router (environment `IKE_DAEMON=strongswan`) with its own
private `/run` (its pid file and vici socket live in `/run/dmvpn-lab/<lab>/<node>/ipsec/` on the
host), loads `swanctl.conf` with `swanctl --load-all`, waits until every spoke's hub CHILD_SA is
installed, and only then starts FRR, so no GRE packet ever leaves in clear.  Inspect it with
`dmvpn-lab exec spoke1 -- swanctl --list-sas --uri unix:///run/dmvpn-lab/{spec.lab_name}/spoke1/ipsec/charon.vici`
or `ip xfrm state` / `ip xfrm policy` in a node.

## Why this is a fair baseline

* Same topology source, same routing, same NHRP behaviour, same kernel, same `xfrm_larval_drop`
  setting: the two labs differ in key management only.
* Same ESP transform as the GDOI lab's TEK (the seed's `esp-3des esp-md5-hmac`), so packet sizes and
  per-packet cost are identical on the wire; the IKE proposal uses a MODP group like GDOI's phase 1.
* It is how a per-peer IPsec DMVPN is deployed: hub tunnels permanent, spoke-to-spoke tunnels
  negotiated when the first packet needs them (IOS does the same with `tunnel protection` and
  dynamic crypto maps).  strongSwan's defaults are kept (retransmission timers, no pre-negotiation).
* One explicit trap connection per spoke pair instead of one wildcard connection: it leaves no doubt
  which peer charon negotiates with, and costs the baseline nothing at run time (trap policies are
  installed at load time, before any measurement).
* Hub: {hub.nbma}; spokes: {", ".join(s.nbma for s in spokes)}.
"""


def write(spec: LabSpec, root: Path) -> Path:
    """Write the topology folder under ``root`` (replacing generated files) and return it."""
    folder = root / spec.lab_name
    for rel, text in render(spec).items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if rel.endswith(".sh"):
            target.chmod(0o755)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmvpn_lab.lab.generate",
        description="Write DMVPN topology folders (containerlab format) from one description.",
    )
    parser.add_argument("--spokes", type=int, default=3)
    parser.add_argument("--protection", choices=[p.value for p in Protection], default="gdoi")
    parser.add_argument("--name", help="lab name (default dmvpn-<protection>[-<spokes>])")
    parser.add_argument("--out", type=Path, default=Path("topologies"), help="parent folder")
    parser.add_argument("--nhrp-holdtime", type=int, default=NHRP_HOLDTIME, help="seconds (seed: 240)")
    parser.add_argument("--nhrp-authentication", help="ip nhrp authentication password (FRR 10+, at most 8 chars)")
    parser.add_argument(
        "--key-servers",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: two cooperative key servers, ks1 primary and ks2 secondary (GDOI only; name gets -2ks)",
    )
    args = parser.parse_args(argv)
    try:
        spec = LabSpec(
            args.spokes,
            Protection(args.protection),
            args.name,
            nhrp_holdtime_s=args.nhrp_holdtime,
            nhrp_authentication=args.nhrp_authentication,
            key_servers=args.key_servers,
        )
        folder = write(spec, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder / f"{spec.lab_name}.clab.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
