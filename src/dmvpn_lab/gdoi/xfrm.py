"""The kernel side of a group member: TEKs into Linux xfrm.  The only module that changes the kernel.

Why it looks like this (see docs/lab-facts.md, "The group SA in plain Linux xfrm"):

* Every member shares one SPI and key per TEK, so nothing is negotiated pairwise.  Per selector of the
  downloaded ACL (``permit gre any any``) there is a ``dir out`` and a ``dir in`` policy with
  ``tmpl proto esp mode transport level required``.  The policies name no SPI, so they outlive rekeys.
* A ``deny`` line of that ACL is traffic IOS leaves in clear.  It gets ``dir out``/``dir in`` policies with
  ``action allow`` and no template, at a priority that outranks every protect policy
  (:data:`CLEAR_TEXT_PRIORITY`), so an overlapping ``permit`` cannot demand ESP for it.
* ONE inbound state per TEK: ``src 0.0.0.0 dst <own NBMA> spi S ... replay-window 0 flag wildrecv``: any
  member may send with it.  Sequence-number anti-replay cannot work with many senders on one SPI
  (replay-window 0); IOS's time-based anti-replay has no Linux counterpart.
* One outbound state per peer, keyed by the peer's NBMA address.  Peers are learnt two ways:
  - from NHRP, ahead of traffic: nhrpd writes each binding it learns (registration, resolution) into the
    kernel's neighbour table of the tunnel, with the peer's NBMA address as link-layer address.  The
    state goes in as that binding appears, so the first packet over a fresh shortcut finds it and
    leaves at once instead of waiting for the round trip below;
  - from the kernel's XFRM ACQUIRE (a packet to a peer without a state), the fallback for anything the
    first way missed.  That state must carry the ACQUIRE's own src and dst so that it replaces the larval
    state; a ``src 0.0.0.0`` state would leave the larval one blocking traffic.
* Across a rekey both TEKs are present: the new inbound state is added, every peer's outbound state moves
  to the new SPI at once (add new, then delete old, so there is no gap), and the old inbound state stays
  until the engine says the old TEK expired (members that have not switched yet still send with it).
* Fail-close: the policies can go in before any TEK (:meth:`XfrmApplier.install_policies`).  A policy
  with no state behind it makes the kernel raise ACQUIRE and hold the packet back, so GRE is dropped,
  never sent in clear, until registration; the peers those ACQUIREs name are remembered and get their
  outbound states as soon as the first TEK is installed.
* Each state carries a kernel hard lifetime a little past the TEK's, so keys never outlive a crashed
  daemon by much.

Implementation: iproute2 ``ip xfrm`` commands.  pyroute2 has no API for xfrm states (SAs), only for
some policy and monitor plumbing, so we use one well-known tool for everything.  Every command goes
through a single runner function (:func:`run_ip`), which feeds it on stdin with ``ip -batch -`` so key
material never appears in a process's command line (``/proc/<pid>/cmdline`` is world-readable).  Tests
replace the runner and check the exact commands.  What the kernel reports back (ACQUIREs, NHRP's
neighbour bindings) is read in :mod:`~dmvpn_lab.gdoi.kernel_events`, which changes nothing.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dmvpn_lab.gdoi.constants import AuthAlgorithm, EspTransformId
from dmvpn_lab.gdoi.events import TekSA
from dmvpn_lab.gdoi.groupsa import TRANSFORMS
from dmvpn_lab.gdoi.kernel_events import Acquire
from dmvpn_lab.gdoi.model import GDOI_PORT, TrafficSelector

Runner = Callable[[Sequence[str]], str]

POLICY_PRIORITY = 2000  # GDOI policies; lower numbers win in xfrm
CLEAR_TEXT_PRIORITY = 1500  # the ACL's deny lines: above every protect policy, whatever the ACL order
BYPASS_PRIORITY = 1000  # keep GDOI's own UDP 848 out of an ``ip``/``udp`` selector
HARD_LIFETIME_GRACE_S = 30  # the kernel drops a state this long after the TEK's lifetime ends


class XfrmError(Exception):
    """An ``ip xfrm`` command failed; the message has the command (keys masked) and iproute2's words."""


class XfrmExists(XfrmError):
    """The kernel already has that state or policy."""


class XfrmNotFound(XfrmError):
    """The state or policy to delete is not there."""


def _mask_keys(args: Sequence[str]) -> str:
    return " ".join("<key>" if a.startswith("0x") and len(a) > 18 else a for a in args)


def run_ip(args: Sequence[str]) -> str:
    """Run one iproute2 command; leading ``-x`` options go on the command line, the rest on stdin.

    Returns its standard output; raises :class:`XfrmError` (or a subclass) when it fails.
    """
    options = [a for a in _leading_options(args)]
    command = " ".join(args[len(options) :])
    try:
        done = subprocess.run(
            ["ip", *options, "-batch", "-"],
            input=command + "\n",
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except FileNotFoundError:
        raise XfrmError("iproute2's `ip` is not installed") from None
    except subprocess.TimeoutExpired:
        raise XfrmError(f"`ip {_mask_keys(args)}` did not finish in 15 s") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.replace("Command failed -:1", "").split())
        text = f"`ip {_mask_keys(args)}` failed: {message or 'exit ' + str(done.returncode)}"
        if "File exists" in message:
            raise XfrmExists(text)
        if "No such process" in message or "No such file" in message:
            raise XfrmNotFound(text)
        raise XfrmError(text)
    return done.stdout


def _leading_options(args: Sequence[str]) -> list[str]:
    options = []
    for arg in args:
        if not arg.startswith("-"):
            break
        options.append(arg)
    return options


# --- Pure command construction --------------------------------------------------------------------

# The kernel's names for the ESP algorithms of groupsa.TRANSFORMS; HMAC ICVs are truncated to 96 bits for
# MD5 and SHA-1 (RFC 2403, RFC 2404) and to half the hash for SHA-2 (RFC 4868 section 2.3).
_KERNEL_CIPHERS = {EspTransformId.ESP_3DES: "cbc(des3_ede)", EspTransformId.ESP_AES: "cbc(aes)"}
_KERNEL_INTEGRITY = {
    AuthAlgorithm.HMAC_MD5: ("hmac(md5)", 96),
    AuthAlgorithm.HMAC_SHA: ("hmac(sha1)", 96),
    AuthAlgorithm.HMAC_SHA2_256: ("hmac(sha256)", 128),
    AuthAlgorithm.HMAC_SHA2_384: ("hmac(sha384)", 192),
    AuthAlgorithm.HMAC_SHA2_512: ("hmac(sha512)", 256),
}


def algorithm_args(sa: TekSA) -> list[str]:
    """The ``enc``/``auth-trunc`` or ``aead`` part of ``ip xfrm state add`` for a TEK."""
    spec = TRANSFORMS[sa.transform]
    if len(sa.encryption_key) != spec.enc_key_len or len(sa.integrity_key) != spec.int_key_len:
        raise XfrmError(
            f"TEK spi {spi_text(sa.spi)}: {sa.transform.value} needs {spec.enc_key_len}+{spec.int_key_len} "
            f"key bytes, got {len(sa.encryption_key)}+{len(sa.integrity_key)}"
        )
    enc = "0x" + sa.encryption_key.hex()
    if spec.auth is None:  # AES-GCM: key then 4-byte salt (RFC 4106 section 8.1), 16-byte ICV
        return ["aead", "rfc4106(gcm(aes))", enc, "128"]
    auth, icv_bits = _KERNEL_INTEGRITY[spec.auth]
    return ["enc", _KERNEL_CIPHERS[spec.esp_id], enc, "auth-trunc", auth, "0x" + sa.integrity_key.hex(), str(icv_bits)]


def spi_text(spi: int) -> str:
    return f"0x{spi:08x}"


def selector_args(selector: TrafficSelector, *, mirrored: bool = False) -> list[str]:
    """``src S dst D [proto P]`` for a policy; ``mirrored`` swaps the ends (the inbound direction)."""
    source, destination = selector.source, selector.destination
    if mirrored:
        source, destination = destination, source
    args = ["src", source, "dst", destination]
    if selector.protocol:
        args += ["proto", str(selector.protocol)]
    return args


def policy_add(selector: TrafficSelector, direction: str) -> list[str]:
    """The policy for one ACL line and direction: ESP required for a permit, clear text for a deny."""
    if not selector.permit:
        return [
            "xfrm",
            "policy",
            "update",
            *selector_args(selector, mirrored=direction == "in"),
            "dir",
            direction,
            "action",
            "allow",
            "priority",
            str(CLEAR_TEXT_PRIORITY),
        ]
    return [
        "xfrm",
        "policy",
        "update",
        *selector_args(selector, mirrored=direction == "in"),
        "dir",
        direction,
        "priority",
        str(POLICY_PRIORITY),
        "tmpl",
        "proto",
        "esp",
        "mode",
        "transport",
        "level",
        "required",
    ]


def policy_delete(selector: TrafficSelector, direction: str) -> list[str]:
    return [
        "xfrm",
        "policy",
        "delete",
        *selector_args(selector, mirrored=direction == "in"),
        "dir",
        direction,
    ]


def bypass_policies(port: int = GDOI_PORT) -> list[list[str]]:
    """Policies that keep GDOI's own datagrams in the clear when a selector would cover them."""
    commands = []
    for direction, port_key in (("out", "dport"), ("out", "sport"), ("in", "sport"), ("in", "dport")):
        commands.append(
            [
                "xfrm",
                "policy",
                "update",
                "src",
                "0.0.0.0/0",
                "dst",
                "0.0.0.0/0",
                "proto",
                "udp",
                port_key,
                str(port),
                "dir",
                direction,
                "priority",
                str(BYPASS_PRIORITY),
            ]
        )
    return commands


def state_add(sa: TekSA, *, src: str, dst: str, hard_lifetime_s: int, inbound: bool) -> list[str]:
    args = [
        "xfrm",
        "state",
        "add",
        "src",
        src,
        "dst",
        dst,
        "proto",
        "esp",
        "spi",
        spi_text(sa.spi),
        "mode",
        "transport",
        "replay-window",
        "0",
    ]
    if inbound:
        args += ["flag", "wildrecv"]
    args += algorithm_args(sa)
    args += ["limit", "time-hard", str(max(1, hard_lifetime_s))]
    return args


def state_delete(*, src: str, dst: str, spi: int) -> list[str]:
    return ["xfrm", "state", "delete", "src", src, "dst", dst, "proto", "esp", "spi", spi_text(spi)]


# --- Counters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpiCounters:
    """Kernel counters of one TEK (summed over its states) for ``show crypto ipsec sa``."""

    spi: int
    in_packets: int = 0
    in_bytes: int = 0
    out_packets: int = 0
    out_bytes: int = 0
    in_errors: int = 0  # replay + integrity failures the kernel counted
    out_states: int = 0


_STATE_HEAD = re.compile(r"^src (?P<src>\S+) dst (?P<dst>\S+)")
_SPI = re.compile(r"\bproto esp spi (?P<spi>0x[0-9a-f]+)")
_CURRENT = re.compile(r"(?P<bytes>\d+)\(bytes\),\s*(?P<packets>\d+)\(packets\)")
_STATS = re.compile(r"replay-window \d+ replay (?P<replay>\d+) failed (?P<failed>\d+)")


def parse_state_counters(text: str, own_address: str) -> dict[int, SpiCounters]:
    """Per-SPI counters from ``ip -s xfrm state list``; inbound = the wildcard state to ``own_address``."""
    totals: dict[int, dict[str, int]] = {}
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if _STATE_HEAD.match(line):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    for block in blocks:
        head = _STATE_HEAD.match(block[0])
        assert head is not None
        body = "\n".join(block)
        spi_match = _SPI.search(body)
        if spi_match is None:
            continue
        spi = int(spi_match["spi"], 16)
        current = None
        for index, line in enumerate(block):
            if "lifetime current:" in line and index + 1 < len(block):
                current = _CURRENT.search(block[index + 1])
        stats = _STATS.search(body)
        entry = totals.setdefault(
            spi,
            {
                "in_packets": 0,
                "in_bytes": 0,
                "out_packets": 0,
                "out_bytes": 0,
                "in_errors": 0,
                "out_states": 0,
            },
        )
        inbound = head["src"] == "0.0.0.0" and head["dst"] == own_address
        packets = int(current["packets"]) if current else 0
        octets = int(current["bytes"]) if current else 0
        if inbound:
            entry["in_packets"] += packets
            entry["in_bytes"] += octets
            if stats:
                entry["in_errors"] += int(stats["replay"]) + int(stats["failed"])
        else:
            entry["out_packets"] += packets
            entry["out_bytes"] += octets
            entry["out_states"] += 1
    return {spi: SpiCounters(spi=spi, **values) for spi, values in totals.items()}


# --- The applier ----------------------------------------------------------------------------------


class XfrmApplier:
    """Keeps the kernel's xfrm policies and states in line with the GM engine's TEK events."""

    def __init__(
        self,
        xfrm_address: str,
        *,
        runner: Runner = run_ip,
        gdoi_port: int = GDOI_PORT,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.xfrm_address = xfrm_address
        self._run = runner
        self._gdoi_port = gdoi_port
        self._log = log or (lambda message: None)
        self._teks: dict[int, TekSA] = {}  # by SPI, in install order: the last one is current
        self._peers: dict[str, str] = {}  # peer NBMA -> our source address for it
        self._outbound: dict[str, int] = {}  # peer NBMA -> SPI of its outbound state
        self._policies: set[tuple[TrafficSelector, str]] = set()
        self._bypass = False
        self._sending_spi: int | None = None  # the TEK outbound states use; may lag the newest one

    @property
    def current_spi(self) -> int | None:
        """The SPI this member sends with (inbound accepts every installed TEK)."""
        return self._sending_spi

    @property
    def peers(self) -> dict[str, int]:
        return dict(self._outbound)

    def _hard_lifetime(self, sa: TekSA, now: float) -> int:
        return int(sa.expires_at() - now) + HARD_LIFETIME_GRACE_S

    def install_tek(self, sa: TekSA, now: float, *, send: bool = True) -> None:
        """Policies for the TEK's selectors and its inbound state; with ``send``, every known peer moved
        onto it at once.

        After a rekey the caller passes ``send=False`` and calls :meth:`switch_outbound` a little later:
        members receive the push at slightly different moments, and a member that sent with the new SPI
        before its peer had installed it would lose packets.  Inbound first everywhere, then outbound.
        """
        if sa.spi in self._teks:
            return
        self.install_policies(sa.selectors)
        self._add_state(
            state_add(
                sa,
                src="0.0.0.0",
                dst=self.xfrm_address,
                hard_lifetime_s=self._hard_lifetime(sa, now),
                inbound=True,
            )
        )
        self._teks[sa.spi] = sa
        if send or self._sending_spi is None:
            self.switch_outbound(sa.spi, now)

    def switch_outbound(self, spi: int, now: float) -> None:
        """Send with TEK ``spi`` from now on: every known peer's outbound state moves onto it."""
        sa = self._teks.get(spi)
        if sa is None or spi == self._sending_spi:
            return
        self._sending_spi = spi
        for peer, src in list(self._peers.items()):
            self._point_peer(peer, src, sa, now)

    def install_policies(self, selectors: Sequence[TrafficSelector]) -> None:
        """ESP-required ``dir out``/``dir in`` policies for ``selectors``, with no state behind them yet.

        Fail-close (IOS ``crypto map M N gdoi fail-close``): installed before the first registration,
        these make the kernel hold matching traffic back (ACQUIRE, then drop, or queue while
        ``net.core.xfrm_larval_drop=0``) instead of sending it in clear.  A TEK with the same
        selectors later finds them in place: each policy is added once, so this and :meth:`install_tek`
        may run in any order and any number of times.
        """
        if not self._bypass and any(s.permit and s.protocol in (0, 17) for s in selectors):
            for command in bypass_policies(self._gdoi_port):
                self._run(command)
            self._bypass = True
        for selector in selectors:
            for direction in ("out", "in"):
                if (selector, direction) not in self._policies:
                    self._run(policy_add(selector, direction))
                    self._policies.add((selector, direction))

    def _add_state(self, command: list[str]) -> None:
        try:
            self._run(command)
        except XfrmExists:
            update = list(command)
            update[2] = "update"
            self._run(update)

    def _point_peer(self, peer: str, src: str, sa: TekSA, now: float) -> bool:
        """Give ``peer`` an outbound state with ``sa``'s SPI, then drop its previous one; False if it had it."""
        previous = self._outbound.get(peer)
        if previous == sa.spi:
            return False
        self._add_state(state_add(sa, src=src, dst=peer, hard_lifetime_s=self._hard_lifetime(sa, now), inbound=False))
        self._outbound[peer] = sa.spi
        if previous is not None:
            self._delete(state_delete(src=src, dst=peer, spi=previous))
        return True

    def _delete(self, command: list[str]) -> None:
        with contextlib.suppress(XfrmNotFound):  # the kernel's hard lifetime may have got there first
            self._run(command)

    def add_peer(self, peer: str, now: float, *, src: str | None = None) -> bool:
        """An outbound state to ``peer`` with the current TEK (ahead of traffic, or for an ACQUIRE).

        True if a state went in; False if ``peer`` had one already, or if there is no TEK yet (the peer is
        remembered and gets its state with the first TEK).
        """
        # A peer already known keeps its source (an ACQUIRE's) unless a new one is given: its state was
        # added with it, and a rekey must delete that state by the same src.
        source = src or self._peers.get(peer) or self.xfrm_address
        known = peer in self._peers
        self._peers[peer] = source
        spi = self.current_spi
        if spi is None:
            if not known:
                self._log(f"no TEK yet: outbound state to {peer} waits for registration")
            return False
        return self._point_peer(peer, source, self._teks[spi], now)

    def handle_acquire(self, acquire: Acquire, now: float) -> None:
        """Answer the kernel's ACQUIRE with a state using its own src/dst, replacing the larval state."""
        if acquire.dst == self.xfrm_address:
            return
        self._outbound.pop(acquire.dst, None)  # the kernel lost our state (hard expiry): add it again
        self.add_peer(acquire.dst, now, src=acquire.src)

    def remove_tek(self, spi: int, now: float) -> None:
        """The TEK's lifetime ended: remove its inbound state and any outbound state still on it."""
        if spi not in self._teks:
            return
        if spi == self._sending_spi:
            # Still sending with it (the switch had not happened yet): move onto the newest other TEK first.
            others = [other for other in self._teks if other != spi]
            self._sending_spi = None
            if others:
                self.switch_outbound(others[-1], now)
        self._drop_tek(spi)

    def _drop_tek(self, spi: int) -> None:
        """Delete the TEK's inbound state and the outbound states still on it."""
        self._delete(state_delete(src="0.0.0.0", dst=self.xfrm_address, spi=spi))
        for peer, peer_spi in list(self._outbound.items()):
            if peer_spi == spi:
                self._delete(state_delete(src=self._peers[peer], dst=peer, spi=spi))
                del self._outbound[peer]
        del self._teks[spi]

    def stop(self, *, keep: Sequence[TrafficSelector] = ()) -> None:
        """Remove every state and policy this applier added (best effort: keep going on errors).

        Policies of the selectors in ``keep`` stay: a fail-close GM that stops (or restarts) must leave
        GRE blocked rather than open it in clear until the next registration.
        """
        failures: list[str] = []
        kept = {(selector, direction) for selector in keep for direction in ("out", "in")}
        self._sending_spi = None  # everything goes: no point moving peers from one TEK to another first
        for spi in list(self._teks):
            try:
                self._drop_tek(spi)
            except XfrmError as exc:
                failures.append(str(exc))
                self._teks.pop(spi, None)
        for selector, direction in sorted(self._policies - kept, key=repr):
            try:
                self._delete(policy_delete(selector, direction))
            except XfrmError as exc:
                failures.append(str(exc))
        self._policies.clear()
        if self._bypass:
            for command in bypass_policies(self._gdoi_port):
                delete = [w for w in command if w not in ("priority", str(BYPASS_PRIORITY))]
                delete[2] = "delete"
                try:
                    self._delete(delete)
                except XfrmError as exc:
                    failures.append(str(exc))
            self._bypass = False
        self._peers.clear()
        self._outbound.clear()
        for failure in failures:
            self._log(f"cleanup: {failure}")

    def counters(self) -> dict[int, SpiCounters]:
        """Packet/byte counters of our TEKs' states, by SPI."""
        if not self._teks:
            return {}
        text = self._run(["-s", "xfrm", "state", "list"])
        found = parse_state_counters(text, self.xfrm_address)
        return {spi: found.get(spi, SpiCounters(spi=spi)) for spi in self._teks}
