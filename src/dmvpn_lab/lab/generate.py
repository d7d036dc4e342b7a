"""Generate the DMVPN topologies from one description, so the variants never drift apart.

One ``LabSpec`` (number of spokes, how the tunnel is protected) gives a containerlab folder: the
``.clab.yml`` plus, per node, ``setup.sh`` (kernel plumbing), ``frr.conf`` and ``gdoi.cfg``.  The
addressing follows the seed document (../shared/seeds/gdoi-based-dmvpn.txt):

=========  ==============  ================  ==============  ===============
node       GDOI address    NBMA (underlay)   tunnel          LAN
=========  ==============  ================  ==============  ===============
ks         1.1.1.1         1.1.1.1           -               -
hub        2.2.2.2 (lo)    172.17.1.1        192.168.100.1   192.168.1.0/24
spoke<i>   <10+i> x4 (lo)  172.<10i+17>.1.1  192.168.100.<i+1>  192.168.<i+1>.0/24
=========  ==============  ================  ==============  ===============

An ``internet`` node routes between the NBMA subnets and knows the loopbacks, like a provider would.
Routing over the tunnel is eBGP (hub AS 65000, spoke i AS 65000+i): the hub rewrites the next hop to
itself, so spoke-to-spoke traffic first goes through the hub, which redirects (DMVPN phase 3) and the
spoke installs an NHRP shortcut.  Why not EIGRP: see topologies/dmvpn-gdoi/README.md.
"""

from __future__ import annotations

import argparse
import enum
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from dmvpn_lab.lab.topology import FRR_CONF_PATH, GDOI_CONF_PATH, SETUP_PATH

ROUTER_IMAGE = "ghcr.io/dmvpn-lab/router:0.1.0-frr10.3"
KS_IMAGE = "ghcr.io/dmvpn-lab/ks:0.1.0"
HOST_IMAGE = "ghcr.io/dmvpn-lab/router:0.1.0-frr10.3"

TUNNEL_KEY = 123  # seed: tunnel key 123
NHRP_NETWORK_ID = 123  # seed: ip nhrp network-id 123
NHRP_HOLDTIME = 240  # seed: ip nhrp holdtime 240
GDOI_IDENTITY = 123  # seed: identity number 123
PSK = "cisco"  # seed: crypto isakmp key 0 cisco
TUNNEL_MTU = 1400  # room for GRE + ESP on a 1500-byte underlay
HUB_ASN = 65000
MAX_SPOKES = 23  # the seed's 172.<10i+17> pattern stays a valid octet up to here


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

    @property
    def lab_name(self) -> str:
        if self.name:
            return self.name
        base = f"dmvpn-{self.protection.value}"
        return base if self.spokes == 3 else f"{base}-{self.spokes}"

    def routers(self) -> list[Router]:
        if not 1 <= self.spokes <= MAX_SPOKES:
            raise ValueError(f"spokes must be 1..{MAX_SPOKES}, got {self.spokes}")
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


def render(spec: LabSpec) -> dict[str, str]:
    """Every file of the topology folder, by relative path."""
    routers = spec.routers()
    files: dict[str, str] = {}
    lab = spec.lab_name
    nodes: dict[str, dict[str, object]] = {}
    links: list[dict[str, list[str]]] = []

    # The underlay: one port per router (and the KS), static routes to the GDOI loopbacks.
    inet_setup = [_SH_HEADER, "sysctl -qw net.ipv4.ip_forward=1"]
    port = 1
    if spec.protection is Protection.GDOI:
        inet_setup += _iface(f"eth{port}", KS_GATEWAY + "/24")
        links.append({"endpoints": ["ks:eth1", f"internet:eth{port}"]})
        port += 1
    for r in routers:
        inet_setup += _iface(f"eth{port}", f"{r.gateway}/24")
        inet_setup.append(f"ip route add {r.loopback}/32 via {r.nbma}")
        links.append({"endpoints": [f"{r.name}:eth1", f"internet:eth{port}"]})
        port += 1
    files["internet/setup.sh"] = "\n".join(inet_setup) + "\n"
    nodes["internet"] = {
        "labels": {"dmvpn-lab.role": "underlay"},
        "binds": [f"internet/setup.sh:{SETUP_PATH}:ro"],
    }

    if spec.protection is Protection.GDOI:
        files["ks/setup.sh"] = (
            "\n".join([_SH_HEADER, *_iface("eth1", KS_ADDRESS + "/24"), f"ip route add default via {KS_GATEWAY}"])
            + "\n"
        )
        files["ks/gdoi.cfg"] = _ks_config(routers)
        nodes["ks"] = {
            "image": KS_IMAGE,
            "labels": {"dmvpn-lab.role": "ks"},
            "env": {"GDOI_ROLE": "ks", "GDOI_LOCAL_ADDRESS": KS_ADDRESS},
            "binds": [f"ks/setup.sh:{SETUP_PATH}:ro", f"ks/gdoi.cfg:{GDOI_CONF_PATH}:ro"],
            "healthcheck": {
                "test": ["CMD", "gdoi", "show", "crypto", "gdoi", "--run-dir", "/run/gdoi", "--json"],
                "start-period": 5,
                "interval": 2,
                "retries": 30,
            },
        }

    for r in routers:
        host = f"host{r.index + 1}"
        files[f"{r.name}/setup.sh"] = _router_setup(r, hub=routers[0], group_sa=spec.protection is Protection.GDOI)
        files[f"{r.name}/frr.conf"] = _frr_conf(r, hub=routers[0])
        env = {"FRR_DAEMONS": "zebra bgpd nhrpd"}
        binds = [f"{r.name}/setup.sh:{SETUP_PATH}:ro", f"{r.name}/frr.conf:{FRR_CONF_PATH}"]
        node: dict[str, object] = {
            "labels": {
                "dmvpn-lab.role": "hub" if r.is_hub else "spoke",
                "dmvpn-lab.nbma": r.nbma,
                "dmvpn-lab.tunnel-ip": r.tunnel_ip,
                "dmvpn-lab.lan": f"{r.lan_prefix}.0/24",
                "dmvpn-lab.host": host,
            },
            "env": env,
            "binds": binds,
        }
        if spec.protection is Protection.GDOI:
            files[f"{r.name}/gdoi.cfg"] = _gm_config(r)
            env.update({"GDOI_ROLE": "gm", "GDOI_LOCAL_ADDRESS": r.loopback, "GDOI_XFRM_ADDRESS": r.nbma})
            binds.append(f"{r.name}/gdoi.cfg:{GDOI_CONF_PATH}:ro")
            node["stages"] = {"create": {"wait-for": [{"node": "ks", "stage": "healthy"}]}}
        nodes[r.name] = node
        files[f"{host}/setup.sh"] = (
            "\n".join(
                [_SH_HEADER, *_iface("eth1", f"{r.lan_prefix}.10/24"), f"ip route add default via {r.lan_prefix}.1"]
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
        "labels": {"dmvpn-lab.protection": spec.protection.value, "dmvpn-lab.spokes": str(spec.spokes)},
        "topology": {
            "defaults": {"kind": "linux", "image": ROUTER_IMAGE},
            "nodes": nodes,
            "links": links,
        },
    }
    header = (
        f"# {lab}: DMVPN phase 3, hub + {spec.spokes} spokes, protection: {spec.protection.value}.\n"
        "# Generated by `python -m dmvpn_lab.lab.generate`; edit the generator, not this file.\n"
    )
    files[f"{lab}.clab.yml"] = header + yaml.safe_dump(doc, sort_keys=False, width=120)
    return files


_SH_HEADER = "#!/bin/sh\n# Kernel plumbing of this node; run once in the node's namespace. Generated.\nset -e"


def _iface(name: str, cidr: str) -> list[str]:
    return [f"ip addr add {cidr} dev {name}", f"ip link set {name} up"]


def _router_setup(r: Router, hub: Router, *, group_sa: bool = False) -> str:
    lines = [
        _SH_HEADER,
        "sysctl -qw net.ipv4.ip_forward=1",
        # NHRP redirects replace ICMP redirects (IOS: no ip redirects).
        "sysctl -qw net.ipv4.conf.all.send_redirects=0",
        "sysctl -qw net.ipv4.ip_forward_use_pmtu=0",
        f"ip addr add {r.loopback}/32 dev lo",
        *_iface("eth1", f"{r.nbma}/24"),
        *_iface("eth2", f"{r.lan_prefix}.1/24"),
        f"ip route add default via {r.gateway}",
        # mGRE: a keyed tunnel with no remote; nhrpd supplies the per-peer NBMA addresses.
        f"ip tunnel add gre1 mode gre key {TUNNEL_KEY} ttl 64 local {r.nbma} dev eth1",
        f"ip addr add {r.tunnel_ip}/32 dev gre1",
        f"ip link set gre1 mtu {TUNNEL_MTU} up",
    ]
    if group_sa:
        # The first packet toward a new peer raises XFRM ACQUIRE; queue it until the GM has installed
        # the outbound group state (microseconds later) instead of dropping it.
        lines.append("sysctl -qw net.core.xfrm_larval_drop=0")
    if r.is_hub:
        # nhrpd learns of spoke-to-spoke traffic crossing the hub from this NFLOG group (phase 3).
        # Some kernels (the UML sandbox among them) have no nf_tables IPv4 family: fall back to legacy.
        rule = (
            "-A FORWARD -i gre1 -o gre1 -m hashlimit --hashlimit-upto 4/minute --hashlimit-burst 1"
            " --hashlimit-mode srcip,dstip --hashlimit-srcmask 24 --hashlimit-dstmask 24"
            " --hashlimit-name nhrp-redirect -j NFLOG --nflog-group 1 --nflog-size 128"
        )
        lines.append(f"iptables {rule} 2>/dev/null || iptables-legacy {rule}")
    return "\n".join(lines) + "\n"


def _frr_conf(r: Router, hub: Router) -> str:
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
        f" ip nhrp holdtime {NHRP_HOLDTIME}",
        " ip nhrp registration no-unique",
    ]
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


def _ks_config(routers: list[Router]) -> str:
    keys = [
        f"crypto isakmp key 0 {PSK} address {r.loopback}   ! {'Hub' if r.is_hub else r.name.capitalize()} router"
        for r in routers
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
                "!",
                "crypto ipsec profile GDOI_PROFILE",
                " set transform-set GDOI_TS",
                "!",
                "crypto gdoi group GDOI_GROUP",
                f" identity number {GDOI_IDENTITY}",
                " server local",
                "  rekey transport unicast",
                "  rekey authentication mypubkey rsa GDOI_KEYS",
                "  rekey retransmit 60 number 2",
                "  !",
                "  sa ipsec 1",
                "   profile GDOI_PROFILE",
                "   match address ipv4 ACL",
                "   replay time window-size 5",
                "  !",
                f"  address ipv4 {KS_ADDRESS}",
                "!",
                "ip access-list extended ACL",
                " permit gre any any",
                "!",
            ]
        )
        + "\n"
    )


def _gm_config(r: Router) -> str:
    return (
        "\n".join(
            [
                f"! Group member on {r.name}: the seed's GM configuration.",
                "crypto isakmp policy 10",
                " authentication pre-share",
                "!",
                f"crypto isakmp key 0 {PSK} address {KS_ADDRESS}",
                "!",
                "crypto gdoi group GDOI_GM",
                f" identity number {GDOI_IDENTITY}",
                f" server address ipv4 {KS_ADDRESS}",
                "!",
                "crypto map DMVPN local-address Loopback0",
                "crypto map DMVPN 10 gdoi",
                " set group GDOI_GM",
                "!",
                "interface eth1",
                " crypto map DMVPN",
                "!",
            ]
        )
        + "\n"
    )


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
    args = parser.parse_args(argv)
    try:
        spec = LabSpec(args.spokes, Protection(args.protection), args.name)
        folder = write(spec, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder / f"{spec.lab_name}.clab.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
