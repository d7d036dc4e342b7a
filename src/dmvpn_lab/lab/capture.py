"""The one place that captures packets: tshark in a node's namespace, to a pcap file, then analysis.

Capture first, stop, then read the file (pyshark's ``FileCapture`` with a display filter and GDOI's
port decoded as ISAKMP), so the pcap stays behind as a test artifact a trainee can open.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmvpn_lab.lab.converge import wait_until
from dmvpn_lab.lab.node import NodeShell

GDOI_DECODE_AS = {"udp.port==848": "isakmp"}


class CaptureError(RuntimeError):
    pass


@dataclass
class Capture:
    node: str
    interface: str
    pcap: Path

    def counts(self) -> tuple[int, int]:
        """(captured, dropped) as tshark reported them when it stopped; read after the ``with`` block.

        A verdict over a capture that lost packets would judge only what happened to be kept, so the
        callers fail on drops; a log without the count means tshark did not stop cleanly.
        """
        log = self.pcap.with_suffix(".tshark.log").read_text(errors="replace")
        captured = re.search(r"(\d+) packets? captured", log)
        if captured is None:
            raise CaptureError(f"tshark reported no packet count; see {self.pcap.with_suffix('.tshark.log')}")
        dropped = sum(int(n) for n in re.findall(r"(\d+) packets? dropped", log))
        return int(captured[1]), dropped


@contextlib.contextmanager
def capture(
    shell: NodeShell, node: str, interface: str, pcap: Path, *, bpf: str = "", snaplen: int = 0
) -> Iterator[Capture]:
    """Capture on ``node``'s ``interface`` into ``pcap`` for the duration of the ``with`` block.

    ``snaplen`` keeps only the first bytes of each packet (0: all of it): enough for the headers a
    verdict reads, and lighter for a capture that must not drop packets during a bulk transfer.
    """
    pcap.parent.mkdir(parents=True, exist_ok=True)
    if pcap.exists():
        pcap.unlink()
    # A 32 MiB kernel buffer rides out bursts while dumpcap is slow to run (the sandbox kernel).
    argv = ["tshark", "-q", "-n", "-i", interface, "-B", "32", "-w", str(pcap), "-F", "pcap"]
    if snaplen:
        argv += ["-s", str(snaplen)]
    if bpf:
        argv += ["-f", bpf]
    log = pcap.with_suffix(".tshark.log").open("wb")
    # From the host side of the node's network namespace: tshark and the pcap stay outside the node.
    proc = shell.spawn(node, argv, log=log, network_only=True)
    try:
        _wait_started(proc, pcap)
        yield Capture(node, interface, pcap)
        time.sleep(0.3)  # let the last packets of the block reach the file before stopping
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_started(proc: subprocess.Popen[bytes], pcap: Path, timeout: float = 30.0) -> None:
    # tshark writes the pcap header once it is capturing; before that, packets would be missed.
    def started() -> str | None:
        if proc.poll() is not None:
            raise CaptureError(f"tshark exited with {proc.returncode}; see {pcap.with_suffix('.tshark.log')}")
        return None if pcap.exists() and pcap.stat().st_size >= 24 else "no pcap header yet"

    wait_until(started, what=f"tshark on {pcap.name}", timeout=timeout, error=CaptureError)
    time.sleep(0.2)


@dataclass(frozen=True)
class PacketSummary:
    """What the wire checks need from one packet."""

    number: int
    src: str
    dst: str
    protocols: tuple[str, ...]  # highest layers, e.g. ("eth", "ip", "esp")
    esp_spi: int | None
    isakmp_exchange: int | None
    ports: tuple[int, int] | None = None  # UDP (source, destination)

    @property
    def top(self) -> str:
        return self.protocols[-1] if self.protocols else ""


def read_packets(pcap: Path, display_filter: str = "ip") -> list[PacketSummary]:
    """Decode ``pcap`` with pyshark (tshark underneath), GDOI's UDP port decoded as ISAKMP.

    An empty ``display_filter`` reads every frame; a frame without IPv4 (ARP, IPv6) then carries the
    addresses of its own protocol, or empty strings.
    """
    import pyshark  # imported here: it starts tshark processes and is only needed for analysis

    packets: list[PacketSummary] = []
    crashed: Exception | None = None
    # pyshark drives tshark from an asyncio loop; give it its own, whatever state the caller's loop is in
    # (an earlier asyncio.run() leaves none behind).
    loop = asyncio.new_event_loop()
    cap = pyshark.FileCapture(
        str(pcap),
        display_filter=display_filter or None,
        decode_as=GDOI_DECODE_AS,
        keep_packets=False,
        eventloop=loop,
    )
    try:
        for pkt in cap:
            layers = tuple(layer.layer_name for layer in pkt.layers)
            spi = None
            if hasattr(pkt, "esp"):
                spi = int(str(pkt.esp.spi), 0)
            exchange = None
            if hasattr(pkt, "isakmp") and hasattr(pkt.isakmp, "exch_type"):
                exchange = int(str(pkt.isakmp.exch_type), 0)
            ports = None
            if hasattr(pkt, "udp"):
                ports = (int(str(pkt.udp.srcport)), int(str(pkt.udp.dstport)))
            src, dst = _addresses(pkt)
            packets.append(PacketSummary(int(pkt.number), src, dst, layers, spi, exchange, ports))
    finally:
        try:
            cap.close()
        except pyshark.capture.capture.TSharkCrashException as exc:
            crashed = exc
        loop.close()
        del cap
        gc.collect()  # pyshark's finalizer runs now, not inside some later, unrelated code
    if crashed is not None:
        # Seen under the sandbox kernel: tshark's exit status is 255 once pyshark has read every packet.
        # The packets count only if a separate tshark run over the same file agrees on how many.
        expected = len(tshark_fields(pcap, display_filter, "frame.number"))
        if expected != len(packets):
            raise CaptureError(f"tshark failed reading {pcap}: {len(packets)} of {expected} packets ({crashed})")
    return packets


def _addresses(pkt: Any) -> tuple[str, str]:
    for layer, src, dst in (("ip", "src", "dst"), ("ipv6", "src", "dst"), ("arp", "src_proto_ipv4", "dst_proto_ipv4")):
        if hasattr(pkt, layer):
            fields = getattr(pkt, layer)
            return str(getattr(fields, src, "")), str(getattr(fields, dst, ""))
    return "", ""


def tshark_fields(pcap: Path, display_filter: str, *fields: str, extra: list[str] | None = None) -> list[list[str]]:
    """``tshark -T fields`` rows for fields pyshark does not expose conveniently."""
    argv = ["tshark", "-n", "-r", str(pcap), "-d", "udp.port==848,isakmp", "-T", "fields"]
    if display_filter:
        argv += ["-Y", display_filter]
    for field in fields:
        argv += ["-e", field]
    argv += extra or []
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def summarize(packets: list[PacketSummary]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for p in packets:
        counts[p.top] = counts.get(p.top, 0) + 1
    return {"packets": len(packets), "by_top_layer": counts}
