"""IOS-style ``show`` output (and its JSON twin) from the engines' status snapshots.

Why: the lab is checked against IOS documentation, so a trainee should see the same blocks and field
names as on a router (``show crypto gdoi``, ``show crypto isakmp sa``, ``show crypto ipsec sa``), while
tests and tooling read the JSON twin of each command, never the text (as FRR topotests do).

The daemons send a *view* over their control socket: the engine's :class:`~dmvpn_lab.gdoi.status.GmStatus`
or :class:`~dmvpn_lab.gdoi.status.KsStatus`, the engine clock at the snapshot (status times are on that
clock), display-only facts from the config (interface, crypto map), and the kernel's per-SPI counters.
:func:`view_to_json` / :func:`view_from_json` carry a view through JSON losslessly; each ``format_*``
function renders text and each ``*_json`` function the stable dict of the same command.

Values IOS shows but Linux does not have (``in use settings``, ``sibling_flags``, path MTU) are printed
with fixed plausible values or with what Linux really does (``Transport``), never invented counters.

Where the configuration asks for something the kernel does not do, the output says what is true rather
than what IOS would print.  ``replay time window-size N`` is one: the window travels to every member and
is shown, marked ``not enforced``, but Linux has no time-based anti-replay and the group SAs run with
``replay-window 0`` (many senders share one SPI, so sequence-number replay detection cannot work either),
so ``show crypto ipsec sa`` says ``replay detection support: N``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dmvpn_lab.gdoi.config_model import GroupPolicy
from dmvpn_lab.gdoi.constants import EspTransformId
from dmvpn_lab.gdoi.groupsa import TRANSFORMS
from dmvpn_lab.gdoi.model import GDOI_PORT, Phase1Cipher, RekeyTransport, TekTransform, TrafficSelector
from dmvpn_lab.gdoi.status import GmStatus, KekInfo, KsGroupStatus, KsStatus, TekInfo
from dmvpn_lab.gdoi.xfrm import SpiCounters

# --- Views ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GmView:
    """What ``gdoi show`` needs from a GM daemon."""

    status: GmStatus
    now: float  # engine clock at the snapshot
    local_address: str  # GDOI address (crypto map local-address)
    xfrm_address: str  # ESP endpoint (NBMA)
    crypto_map: str
    interface: str
    counters: dict[int, SpiCounters] = field(default_factory=dict)
    send_acks: bool = True
    xfrm_enabled: bool = True
    server_port: int = GDOI_PORT
    fail_close: bool = False  # ``crypto map M N gdoi fail-close`` activated


@dataclass(frozen=True)
class KsView:
    """What ``gdoi show`` needs from a KS daemon."""

    status: KsStatus
    now: float
    policies: tuple[GroupPolicy, ...] = ()
    port: int = GDOI_PORT


View = GmView | KsView


# --- Lossless JSON for the model's dataclasses ----------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Dataclasses -> dicts, enums -> values, bytes -> hex, tuples -> lists, dict keys -> str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def from_jsonable(kind: Any, value: Any) -> Any:
    """The inverse of :func:`to_jsonable`, guided by type hints (``kind`` is a type or a hint)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_jsonable(option, value)
            except (TypeError, ValueError, KeyError) as exc:
                errors.append(exc)
        raise ValueError(f"{value!r} matches none of {kind}: {errors}")
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in value)
        return tuple(from_jsonable(a, v) for a, v in zip(args, value, strict=True))
    if origin is list:
        (item,) = typing.get_args(kind)
        return [from_jsonable(item, v) for v in value]
    if origin is dict:
        key_kind, value_kind = typing.get_args(kind)
        return {from_jsonable(key_kind, k): from_jsonable(value_kind, v) for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{kind.__name__} needs a JSON object, got {value!r}")
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        return kind(**{name: from_jsonable(hints[name], v) for name, v in value.items() if name in known})
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if kind is bytes:
        return bytes.fromhex(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.isdigit():
                return int(value)
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, got {value!r}")
        return value
    if kind is Any:
        return value
    raise TypeError(f"cannot read {kind!r} from JSON")


def view_to_json(view: View) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(view)
    data["role"] = "gm" if isinstance(view, GmView) else "ks"
    return data


def view_from_json(data: Any) -> View:
    """The view a daemon's ``status`` answer holds; ValueError for anything not shaped like one."""
    if not isinstance(data, dict):
        raise ValueError(f"status is not a JSON object: {data!r:.80}")
    role = data.get("role")
    body = {k: v for k, v in data.items() if k != "role"}
    kind = {"gm": GmView, "ks": KsView}.get(role) if isinstance(role, str) else None
    if kind is None or not isinstance(role, str):
        raise ValueError(f"status has no known role: {role!r:.80}")
    try:
        return typing.cast(View, from_jsonable(kind, body))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Another version of the daemon, or something else on the socket: say so, not where it broke.
        shape = f"{type(exc).__name__}: {exc!s:.120}"
        raise ValueError(f"status of a {role.upper()} in an unexpected shape ({shape})") from None


# --- Small formatting helpers ---------------------------------------------------------------------


def spi_ios(spi: int) -> str:
    """IOS's SPI style: ``0x42CE20E(70050318)``."""
    return f"0x{spi:X}({spi})"


def hms(seconds: float) -> str:
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _or_none(value: object) -> object:
    """IOS prints ``None`` for a value that does not exist yet (as for ``Authorization ACL``)."""
    return "None" if value is None else value


def _field(label: str, value: object, indent: int = 4) -> str:
    """IOS aligns every colon of a block in column 30, whatever the label's indent."""
    return f"{' ' * indent}{label}".ljust(29) + f": {value}"


_CIPHER_NAMES = {
    Phase1Cipher.AES_CBC_128: ("AES", 128),
    Phase1Cipher.AES_CBC_256: ("AES", 256),
    Phase1Cipher.TRIPLE_DES: ("3DES", 192),
}


def _transport_name(transport: RekeyTransport) -> str:
    return transport.value.capitalize()


def _acl_mask(cidr: str) -> tuple[str, str]:
    net = ipaddress.IPv4Network(cidr, strict=False)
    return str(net.network_address), str(net.netmask)


def _ident(selector: TrafficSelector, end: str) -> str:
    address, mask = _acl_mask(selector.source if end == "local" else selector.destination)
    return f"({address}/{mask}/{selector.protocol}/0)"


def _iv_bytes(transform: TekTransform) -> int:
    """ESP IV size: the 3DES block, the 8-byte GCM nonce (RFC 4106 section 3.1), else the AES block."""
    return 8 if TRANSFORMS[transform].esp_id in (EspTransformId.ESP_3DES, EspTransformId.ESP_AES_GCM_16) else 16


def _selector_json(selector: TrafficSelector) -> dict[str, Any]:
    return {
        "action": "permit" if selector.permit else "deny",
        "protocol": selector.protocol,
        "source": selector.source,
        "destination": selector.destination,
        "acl": selector.acl_text().replace("access-list  ", ""),
    }


def _kek_json(kek: KekInfo | None) -> dict[str, Any] | None:
    if kek is None:
        return None
    name, _ = _CIPHER_NAMES.get(kek.cipher, (kek.cipher.value, kek.key_size_bits))
    return {
        "rekey_transport": kek.transport.value,
        "lifetime_remaining_s": kek.lifetime_remaining_s,
        "encrypt_algorithm": name,
        "key_size_bits": kek.key_size_bits,
        "sig_hash_algorithm": kek.sig_hash,
        "sig_key_bits": kek.sig_key_bits,
        "spi": kek.spi.hex(),
        "multicast_address": kek.multicast_address,
    }


# The kernel checks no packet against the time-based window (see the module docstring).
REPLAY_NOT_ENFORCED = "not enforced: Linux has no time-based anti-replay"


def _tek_json(tek: TekInfo) -> dict[str, Any]:
    return {
        "spi": tek.spi,
        "spi_hex": f"0x{tek.spi:08x}",
        "transform": tek.transform.value,
        "lifetime_remaining_s": tek.lifetime_remaining_s,
        "anti_replay_time_window_s": tek.replay_time_window_s,
        "anti_replay_enforced": False,  # configured or not, no replay check runs on a group SA here
    }


def _kek_lines(kek: KekInfo | None) -> list[str]:
    if kek is None:
        return ["KEK POLICY:", "    (none: not registered)"]
    name, size = _CIPHER_NAMES.get(kek.cipher, (kek.cipher.value, kek.key_size_bits))
    return [
        "KEK POLICY:",
        _field("Rekey Transport Type", _transport_name(kek.transport)),
        _field("Lifetime (secs)", kek.lifetime_remaining_s),
        _field("Encrypt Algorithm", name),
        _field("Key Size", kek.key_size_bits or size),
        _field("Sig Hash Algorithm", kek.sig_hash),
        _field("Sig Key Length (bits)", kek.sig_key_bits),
    ]


def _tek_lines(tek: TekInfo, indent: int) -> list[str]:
    pad = " " * indent
    lines = [
        f"{pad}spi: {spi_ios(tek.spi)}",
        f"{pad}transform: {tek.transform.value}",
        f"{pad}sa timing:remaining key lifetime (sec): ({tek.lifetime_remaining_s})",
    ]
    if tek.replay_time_window_s:
        lines.append(
            f"{pad}Anti-Replay(Time Based) : {tek.replay_time_window_s} sec interval ({REPLAY_NOT_ENFORCED})"
        )
    return lines


def _newest_tek(teks: tuple[TekInfo, ...]) -> TekInfo | None:
    return max(teks, key=lambda t: t.lifetime_remaining_s) if teks else None


# --- show crypto gdoi (GM) ------------------------------------------------------------------------


def gdoi_gm_json(view: GmView) -> dict[str, Any]:
    status = view.status
    rekey_ago = None if status.last_rekey_at is None else max(0, int(view.now - status.last_rekey_at))
    return {
        "role": "gm",
        "group_name": status.group_name,
        "group_identity": status.identity,
        "registered": status.registered,
        "rekeys_received": status.rekeys_cumulative,
        "ipsec_sa_direction": "Both",
        "active_group_server": status.active_server,
        "group_server_list": list(status.servers),
        "reregister_in_s": status.reregister_in_s,
        "rekey_received_ago_s": rekey_ago,
        "rekey_received_from": status.last_rekey_from,
        "rekeys_cumulative": status.rekeys_cumulative,
        "rekeys_after_registration": status.rekeys_after_registration,
        "rekey_acks_sent": status.rekey_acks_sent,
        "send_acks": view.send_acks,
        "fail_close": view.fail_close,
        "acl_downloaded_from": status.active_server if status.selectors else None,
        "acl": [_selector_json(s) for s in status.selectors],
        "kek": _kek_json(status.kek),
        "interface": view.interface,
        "teks": [_tek_json(t) for t in status.teks],
        "rejected": dict(status.rejected),
    } | _gm_state_json(status)


def _gm_state_json(status: GmStatus) -> dict[str, Any]:
    """The member's registration state (gm.GmState), when the engine reports one."""
    return {"state": status.state} if status.state else {}


def format_gdoi_gm(view: GmView) -> str:
    status = view.status
    data = gdoi_gm_json(view)
    rekey_received = "never" if data["rekey_received_ago_s"] is None else hms(data["rekey_received_ago_s"])
    lines = [
        "GROUP INFORMATION",
        _field("Group Name", status.group_name),
        _field("Group Identity", status.identity),
        _field("Rekeys received", status.rekeys_cumulative),
        _field("IPSec SA Direction", "Both"),
        _field("Active Group Server", status.active_server or "None (not registered)"),
        _field("Group Server list", ", ".join(status.servers)),
        *([_field("Registration State", status.state)] if status.state else []),
        _field("GM Reregisters in", f"{status.reregister_in_s or 0} secs"),
        _field("Rekey Received(hh:mm:ss)", rekey_received),
        # Not an IOS line: shown only when another key server than the one the member registered with
        # sent the last rekey (a COOP failover), where it is the news; otherwise the block stays IOS's.
        *(
            [_field("Rekey Received From", status.last_rekey_from)]
            if status.last_rekey_from is not None and status.last_rekey_from != status.active_server
            else []
        ),
        "    Rekeys received",
        _field("Cumulative", status.rekeys_cumulative, indent=9),
        _field("After registration", status.rekeys_after_registration, indent=9),
        _field("Rekey Acks sent", status.rekey_acks_sent),
    ]
    if view.fail_close:
        # Only when configured: the seed's IOS output (fail-open, the default) has no such line.
        lines.append(_field("Fail-Close", "Enabled"))
    if status.selectors:
        lines.append(f" ACL Downloaded From KS {status.active_server}:")
        lines.extend(f"   {s.acl_text()}" for s in status.selectors)
    lines.extend(_kek_lines(status.kek))
    lines.append("TEK POLICY for the current KS-Policy ACEs Downloaded:")
    lines.append(f"  {view.interface}:")
    for tek in sorted(status.teks, key=lambda t: t.lifetime_remaining_s, reverse=True):
        lines.append("    IPsec SA:")
        lines.extend(_tek_lines(tek, indent=8))
    return "\n".join(lines) + "\n"


# --- show crypto gdoi (KS) ------------------------------------------------------------------------


def _policy_for(view: KsView, name: str) -> GroupPolicy | None:
    return next((p for p in view.policies if p.name == name), None)


def _ks_group_json(view: KsView, group: KsGroupStatus) -> dict[str, Any]:
    policy = _policy_for(view, group.group_name)
    return {
        "group_name": group.group_name,
        "group_identity": group.identity,
        "group_members": len(group.members),
        "ipsec_sa_direction": "Both",
        "active_group_server": "Local",
        "rekey_sequence": group.rekey_sequence,
        "kek_lifetime_s": policy.kek_lifetime_s if policy else None,
        "tek_lifetime_s": policy.tek_lifetime_s if policy else None,
        "rekey_retransmit_period_s": policy.rekey_retransmit_interval_s if policy else None,
        "rekey_retransmit_attempts": policy.rekey_retransmit_count if policy else None,
        "replay_time_window_s": policy.replay_time_window_s if policy else None,
        "acl": [_selector_json(s) for s in group.selectors],
        "authorization_acl": policy.authorization.acl_name if policy and policy.authorization else None,
        "unauthorized_pulls": group.unauthorized_pulls,
        "kek": _kek_json(group.kek),
        "teks": [_tek_json(t) for t in group.teks],
    }


def gdoi_ks_json(view: KsView) -> dict[str, Any]:
    return {
        "role": "ks",
        "local_address": view.status.local_address,
        "groups": [_ks_group_json(view, g) for g in view.status.groups],
        "registration": to_jsonable(view.status.registration),
        "rejected": dict(view.status.rejected),
    }


def _registration_lines(view: KsView) -> list[str]:
    """Not an IOS block: how registrations stand against the key server's limits, and every refusal."""
    reg = view.status.registration
    stateless = ", ".join(f"{why} {n}" for why, n in sorted(reg.stateless_replies.items()))
    lines = [
        "REGISTRATION PROTECTION:",
        _field("Half-open now / peak", f"{reg.half_open} / {reg.half_open_peak}"),
        _field("Half-open limits", f"{reg.max_half_open} in all, {reg.max_half_open_per_peer} per peer"),
        _field("Cookies above", f"{reg.cookie_threshold} half-open"),
        _field("Stateless replies", f"{sum(reg.stateless_replies.values())} ({stateless or 'none'})"),
        _field("ISAKMP SAs", reg.isakmp_sas),
        _field("Offers remembered", reg.remembered_offers),
        _field("Peer data held (bytes)", reg.state_bytes),
        "    Refused datagrams",
    ]
    rejected = sorted(view.status.rejected.items())
    lines += [_field(reason, count, 8) for reason, count in rejected] or [_field("(none)", 0, 8)]
    return lines


def format_gdoi_ks(view: KsView) -> str:
    lines: list[str] = []
    for group in view.status.groups:
        data = _ks_group_json(view, group)
        transport = _transport_name(group.kek.transport)
        lines += [
            "GROUP INFORMATION",
            "",
            _field("Group Name", f"{group.group_name} ({transport})"),
            _field("Group Identity", group.identity),
            _field("Group Members", data["group_members"]),
            _field("IPSec SA Direction", "Both"),
            _field("Active Group Server", "Local"),
            _field("Group Server Address", view.status.local_address),
        ]
        if data["kek_lifetime_s"] is not None:
            lines.append(_field("Group Rekey Lifetime", f"{data['kek_lifetime_s']} secs"))
        lines += [
            "    Group Rekey",
            _field("Remaining Lifetime", f"{group.kek.lifetime_remaining_s} secs", 8),
        ]
        if data["rekey_retransmit_period_s"] is not None:
            lines.append(_field("Rekey Retransmit Period", f"{data['rekey_retransmit_period_s']} secs"))
            lines.append(_field("Rekey Retransmit Attempts", data["rekey_retransmit_attempts"]))
        lines.append(_field("Rekey Sequence Number", group.rekey_sequence))
        lines.append("")
        if data["tek_lifetime_s"] is not None:
            lines.append(_field("IPSec SA Rekey Lifetime", f"{data['tek_lifetime_s']} secs"))
        if data["replay_time_window_s"]:
            lines.append(_field("Replay method", f"Time Based ({REPLAY_NOT_ENFORCED})"))
            lines.append(_field("Replay Window Size", data["replay_time_window_s"]))
        newest = _newest_tek(group.teks)
        if newest is not None:
            lines += ["    SA Rekey", _field("Remaining Lifetime", f"{newest.lifetime_remaining_s} secs", 7)]
        lines.append("    ACL Configured           :")
        lines.extend(f"      {s.acl_text()}" for s in group.selectors)
        if data["authorization_acl"] is not None:
            lines.append(_field("Authorization ACL", data["authorization_acl"]))
            lines.append(_field("Unauthorized pulls", group.unauthorized_pulls))
        lines.append("")
        lines.extend(_kek_lines(group.kek))
        lines.append("")
        lines.append("TEK POLICY:")
        for tek in sorted(group.teks, key=lambda t: t.lifetime_remaining_s, reverse=True):
            lines.append("    IPsec SA:")
            lines.extend(_tek_lines(tek, indent=8))
        lines.append("")
    if not view.status.groups:
        lines.append("No GDOI groups configured")
    lines.extend(_registration_lines(view))
    return "\n".join(lines).rstrip("\n") + "\n"


# --- show crypto gdoi ks --------------------------------------------------------------------------


def ks_json(view: KsView) -> dict[str, Any]:
    return {
        "role": "ks",
        "key_server": view.status.local_address,
        "members_registered": sum(len(g.members) for g in view.status.groups),
        "groups": [
            {
                "group_name": g.group_name,
                "group_identity": g.identity,
                "group_members": len(g.members),
                "authorization_acl": _ks_group_json(view, g)["authorization_acl"],
                "unauthorized_pulls": g.unauthorized_pulls,
            }
            for g in view.status.groups
        ],
        "registration": to_jsonable(view.status.registration),
        "rejected": dict(view.status.rejected),
    }


def format_ks(view: KsView) -> str:
    """IOS's header and per-group lines, then how registrations stand against the limits."""
    data = ks_json(view)
    lines = [f"Total group members registered to this box: {data['members_registered']}", ""]
    for group in data["groups"]:
        lines += [
            f"Key Server Information For Group {group['group_name']}:",
            _field("Group Name", group["group_name"]),
            _field("Group Identity", group["group_identity"]),
            _field("Group Members", group["group_members"]),
            _field("Authorization ACL", group["authorization_acl"] or "None"),
            _field("Unauthorized pulls", group["unauthorized_pulls"]),
            "",
        ]
    lines.extend(_registration_lines(view))
    return "\n".join(lines) + "\n"


# --- show crypto gdoi ks members ------------------------------------------------------------------


def ks_members_json(view: KsView) -> dict[str, Any]:
    members = []
    for group in view.status.groups:
        for member in group.members:
            members.append(
                {
                    "address": member.address,
                    "group_name": member.group_name,
                    "group_identity": group.identity,
                    "registered_ago_s": max(0, int(view.now - member.registered_at)),
                    "rekeys_sent": member.rekeys_sent,
                    "rekey_acks": member.rekey_acks,
                    "missed_acks": member.missed_acks,
                    # The engine starts a member's counter at the sequence it registered under (to refuse
                    # replayed ACKs); that is no ACK, so a member that never acknowledged shows none.
                    "last_ack_sequence": member.last_ack_sequence if member.rekey_acks else None,
                }
            )
    return {
        "role": "ks",
        "key_server": view.status.local_address,
        "rekeys_sent": {g.group_name: g.rekey_sequence for g in view.status.groups},
        "members": members,
    }


def format_ks_members(view: KsView) -> str:
    data = ks_members_json(view)
    lines = ["Group Member Information :", ""]
    for group in view.status.groups:
        lines.append(f"Number of rekeys sent for group {group.group_name} : {group.rekey_sequence}")
        lines.append("")
        for member in data["members"]:
            if member["group_name"] != group.group_name:
                continue
            lines += [
                f"Group Member ID    : {member['address']}",
                f" Group ID          : {member['group_identity']}",
                f" Group Name        : {member['group_name']}",
                f" Key Server ID     : {view.status.local_address}",
                f" Registered        : {hms(member['registered_ago_s'])} ago",
                f" Rekeys sent       : {member['rekeys_sent']}",
                f" Rekey Acks Rcvd   : {member['rekey_acks']}",
                f" Rekey Acks missed : {member['missed_acks']}",
                "",
                f" Last ack seq num  : {_or_none(member['last_ack_sequence'])}",
                "",
            ]
    if not data["members"]:
        lines.append("No group members registered")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- show crypto gdoi ks coop ---------------------------------------------------------------------


def ks_coop_json(view: KsView) -> dict[str, Any]:
    """This key server's role among its cooperative peers (docs/coop.md); ``coop`` None without redundancy."""
    coop = view.status.coop
    if coop is None:
        return {"role": "ks", "key_server": view.status.local_address, "coop": None}
    peers = [
        to_jsonable(peer) | {"in_sync": peer.version is not None and peer.version == coop.version}
        for peer in coop.peers
    ]
    return {
        "role": "ks",
        "key_server": view.status.local_address,
        "coop": to_jsonable(coop) | {"peers": peers},
        "groups": [{"group_name": g.group_name, "rekey_sequence": g.rekey_sequence} for g in view.status.groups],
    }


def _ago(seconds: int | None) -> str:
    return "never" if seconds is None else f"{seconds} secs ago"


def format_ks_coop(view: KsView) -> str:
    """IOS's per-group COOP block: the local key server, then one session per peer."""
    data = ks_coop_json(view)
    coop = data["coop"]
    if coop is None:
        return "Key server redundancy (COOP) is not configured on this key server\n"
    lines: list[str] = []
    for group in data["groups"]:
        lines += [
            f"Crypto Gdoi Group Name :{group['group_name']}",
            "",
            _field("Local Address", coop["local_address"], 8),
            _field("Local Priority", coop["local_priority"], 8),
            f"        Local KS Role: {coop['role']:<10}, Local KS Status: Alive",
            _field("Primary KS", coop["primary"] or "None elected yet", 8),
            _field("Timers", f"announce {coop['announce_period_s']:g} secs, dead {coop['dead_time_s']:g} secs", 8),
            _field("Group State Version", coop["version"] or "None", 8),
            _field("Last Sync", _ago(coop["last_sync_ago_s"]), 8),
            _field("Syncs Sent/Received", f"{coop['syncs_sent']}/{coop['syncs_received']}", 8),
            _field("Rekey Sequence Number", group["rekey_sequence"], 8),
            "",
            "        Peer Sessions:",
        ]
        for number, peer in enumerate(coop["peers"], start=1):
            status = "Alive" if peer["alive"] else "Dead"
            sync = "in sync" if peer["in_sync"] else f"behind (holds {peer['version'] or 'nothing'})"
            lines += [
                f"        Session {number}:",
                _field("Peer Address", peer["address"], 16),
                _field("Peer Priority", peer["priority"], 16),
                f"                Peer KS Role: {peer['role']:<10}, Peer KS Status: {status}",
                _field("Last Heard", _ago(peer["last_heard_ago_s"]), 16),
                _field("Sync State", sync, 16),
                _field("Messages In/Out", f"{peer['messages_in']}/{peer['messages_out']}", 16),
            ]
            if not peer["has_psk"]:
                lines.append(_field("Warning", "no pre-shared key for this peer", 16))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- show crypto isakmp sa ------------------------------------------------------------------------


def isakmp_sa_json(view: View) -> dict[str, Any]:
    return {
        "ipv4": [
            {"dst": sa.dst, "src": sa.src, "state": sa.state, "conn_id": sa.conn_id, "status": sa.status}
            for sa in view.status.isakmp_sas
        ],
        "ipv6": [],
    }


def format_isakmp_sa(view: View) -> str:
    lines = ["IPv4 Crypto ISAKMP SA", "dst             src             state          conn-id status"]
    for sa in view.status.isakmp_sas:
        lines.append(f"{sa.dst:<16}{sa.src:<16}{sa.state:<15}{sa.conn_id:>7} {sa.status}")
    lines.append("IPv6 Crypto ISAKMP SA")
    return "\n".join(lines) + "\n"


# --- show crypto ipsec sa -------------------------------------------------------------------------


def ipsec_sa_json(view: View) -> dict[str, Any]:
    if isinstance(view, KsView):
        return {"role": "ks", "interfaces": []}
    status = view.status
    counters = view.counters
    encaps = sum(c.out_packets for c in counters.values())
    decaps = sum(c.in_packets for c in counters.values())
    errors = sum(c.in_errors for c in counters.values())
    newest = _newest_tek(status.teks)

    def sa_json(tek: TekInfo, direction: str) -> dict[str, Any]:
        spi_counters = counters.get(tek.spi, SpiCounters(spi=tek.spi))
        packets = spi_counters.in_packets if direction == "in" else spi_counters.out_packets
        octets = spi_counters.in_bytes if direction == "in" else spi_counters.out_bytes
        return {**_tek_json(tek), "packets": packets, "bytes": octets}

    idents = [
        {"local_ident": _ident(s, "local"), "remote_ident": _ident(s, "remote"), "protocol": s.protocol}
        for s in status.selectors
        if s.permit  # as on IOS, a flow is an ACL line that is protected; deny lines stay in clear
    ]
    return {
        "role": "gm",
        "interfaces": [
            {
                "interface": view.interface,
                "crypto_map": view.crypto_map,
                "local_address": view.local_address,
                "local_crypto_endpoint": view.xfrm_address,
                "current_peer": "0.0.0.0",
                "port": view.server_port,
                "idents": idents,
                "pkts_encaps": encaps,
                "pkts_decaps": decaps,
                "send_errors": 0,
                "recv_errors": errors,
                "current_outbound_spi": newest.spi if newest else 0,
                "inbound_esp_sas": [sa_json(t, "in") for t in status.teks],
                "outbound_esp_sas": [
                    sa_json(t, "out") for t in status.teks if newest and t.spi == newest.spi
                ],
                "xfrm_enabled": view.xfrm_enabled,
            }
        ],
    }


def _esp_sa_lines(tek: TekInfo, conn_id: int, crypto_map: str) -> list[str]:
    return [
        f"      spi: {spi_ios(tek.spi)}",
        f"        transform: {tek.transform.value} ,",
        "        in use settings ={Transport, }",
        f"        conn id: {conn_id}, flow_id: SW:{conn_id}, sibling_flags 80000040, "
        f"crypto map: {crypto_map}",
        f"        sa timing: remaining key lifetime (sec): ({tek.lifetime_remaining_s})",
        f"        IV size: {_iv_bytes(tek.transform)} bytes",
        # What the kernel does, whatever was configured: every state has replay-window 0 (xfrm.state_add).
        "        replay detection support: N",
        "        Status: ACTIVE",
    ]


def format_ipsec_sa(view: View) -> str:
    if isinstance(view, KsView):
        return "No SAs found\n"
    data = ipsec_sa_json(view)["interfaces"][0]
    status = view.status
    newest = _newest_tek(status.teks)
    idents = data["idents"] or [
        {"local_ident": "(0.0.0.0/0.0.0.0/0/0)", "remote_ident": "(0.0.0.0/0.0.0.0/0/0)"}
    ]
    lines: list[str] = []
    for ident in idents:
        lines += [
            "     PFS (Y/N): N, DH group: none",
            f"interface: {view.interface}",
            f"    Crypto map tag: {view.crypto_map}, local addr {view.local_address}",
            "   protected vrf: (none)",
            f"   local  ident (addr/mask/prot/port): {ident['local_ident']}",
            f"   remote ident (addr/mask/prot/port): {ident['remote_ident']}",
            f"   current_peer 0.0.0.0 port {view.server_port}",
            "     PERMIT, flags={origin_is_acl,}",
            f"    #pkts encaps: {data['pkts_encaps']}, #pkts encrypt: {data['pkts_encaps']}, "
            f"#pkts digest: {data['pkts_encaps']}",
            f"    #pkts decaps: {data['pkts_decaps']}, #pkts decrypt: {data['pkts_decaps']}, "
            f"#pkts verify: {data['pkts_decaps']}",
            "    #pkts compressed: 0, #pkts decompressed: 0",
            "    #pkts not compressed: 0, #pkts compr. failed: 0",
            "    #pkts not decompressed: 0, #pkts decompress failed: 0",
            f"    #send errors {data['send_errors']}, #recv errors {data['recv_errors']}",
            f"     local crypto endpt.: {view.xfrm_address}, remote crypto endpt.: 0.0.0.0",
            f"     path mtu 1500, ip mtu 1500, ip mtu idb {view.interface}",
            f"     current outbound spi: {spi_ios(newest.spi) if newest else '0x0(0)'}",
            "     inbound esp sas:",
        ]
        conn_id = 5
        for tek in status.teks:
            lines += _esp_sa_lines(tek, conn_id, view.crypto_map)
            conn_id += 2
        lines += ["     inbound ah sas:", "     inbound pcp sas:", "     outbound esp sas:"]
        conn_id = 6
        if newest is not None:
            lines += _esp_sa_lines(newest, conn_id, view.crypto_map)
        lines += ["     outbound ah sas:", "     outbound pcp sas:"]
    return "\n".join(lines) + "\n"


# --- The command table ----------------------------------------------------------------------------

Formatter = Callable[[Any], str]
JsonTwin = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class ShowCommand:
    words: tuple[str, ...]
    gm: tuple[Formatter, JsonTwin] | None
    ks: tuple[Formatter, JsonTwin] | None


SHOW_COMMANDS: tuple[ShowCommand, ...] = (
    ShowCommand(("crypto", "gdoi"), (format_gdoi_gm, gdoi_gm_json), (format_gdoi_ks, gdoi_ks_json)),
    ShowCommand(("crypto", "gdoi", "ks"), None, (format_ks, ks_json)),
    ShowCommand(("crypto", "gdoi", "ks", "members"), None, (format_ks_members, ks_members_json)),
    ShowCommand(("crypto", "gdoi", "ks", "coop"), None, (format_ks_coop, ks_coop_json)),
    ShowCommand(
        ("crypto", "isakmp", "sa"), (format_isakmp_sa, isakmp_sa_json), (format_isakmp_sa, isakmp_sa_json)
    ),
    ShowCommand(
        ("crypto", "ipsec", "sa"), (format_ipsec_sa, ipsec_sa_json), (format_ipsec_sa, ipsec_sa_json)
    ),
)


def find_command(words: list[str]) -> ShowCommand | None:
    """IOS-style matching: every word may be abbreviated (``sh cry gd``) as long as it is unambiguous."""
    matches = [
        c
        for c in SHOW_COMMANDS
        if len(c.words) == len(words)
        and all(full.startswith(w.lower()) for full, w in zip(c.words, words, strict=True))
    ]
    return matches[0] if len(matches) == 1 else None


def render(command: ShowCommand, view: View, *, as_json: bool) -> str | dict[str, Any]:
    """Text or JSON of ``command`` for ``view``; raises ValueError when the role has no such command."""
    pair = command.gm if isinstance(view, GmView) else command.ks
    if pair is None:
        role = "group member" if isinstance(view, GmView) else "key server"
        raise ValueError(f"`show {' '.join(command.words)}` is not available on a {role}")
    formatter, twin = pair
    return twin(view) if as_json else formatter(view)
