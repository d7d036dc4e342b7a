"""Pre-flight checks run before anything expensive, each with a remedy a user can act on."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dmvpn_lab.lab.node import FRR_DIR
from dmvpn_lab.lab.topology import NETNS_FRR_ROOT

KERNEL_MODULES = ("ip_gre", "esp4", "xfrm_user")
# Loaded on demand too, but checked so a missing one fails early with a clear word.
OPTIONAL_MODULES = ("xt_NFLOG", "nfnetlink_log", "sch_netem")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    remedy: str = ""

    def line(self) -> str:
        tag = "[PASS]" if self.ok else "[FAIL]"
        text = f"{tag:<8} {self.name:<24} {self.detail}"
        if not self.ok and self.remedy:
            text += f"\n{'':<8} {'':<24} -> {self.remedy}"
        return text


class PreflightError(RuntimeError):
    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        failed = [c for c in checks if not c.ok]
        super().__init__("pre-flight checks failed:\n" + "\n".join(c.line() for c in failed))


def kernel_missing_modules() -> list[str]:
    """The lab's kernel modules that this kernel can neither find loaded nor load."""
    missing = []
    for module in KERNEL_MODULES:
        if Path(f"/sys/module/{module}").exists():
            continue
        if (
            shutil.which("modprobe")
            and subprocess.run(["modprobe", "-q", module], capture_output=True, check=False).returncode == 0
        ):
            continue
        missing.append(module)
    return missing


def in_sandbox() -> bool:
    """True inside the sandbox kernel this project boots (its init exports this variable)."""
    return os.environ.get("DMVPN_LAB_SANDBOX") == "1"


def netns_checks(need_kernel: bool = True) -> list[Check]:
    frr_bin = NETNS_FRR_ROOT / FRR_DIR.relative_to("/")
    checks = [
        Check("root", os.geteuid() == 0, f"uid {os.geteuid()}", "run as root (sudo make lab-up)"),
        _tool("iproute2", "ip", "apt-get install iproute2"),
        _tool("iptables", "iptables", "apt-get install iptables"),
        Check(
            "FRR",
            all((frr_bin / d).exists() for d in ("zebra", "bgpd", "nhrpd"))
            and (NETNS_FRR_ROOT / "usr/bin/vtysh").exists(),
            str(frr_bin),
            f"scripts/frr-root.sh {NETNS_FRR_ROOT} (Debian's FRR 10.3, as in the containerlab images)"
            if NETNS_FRR_ROOT.parts != ("/",)
            else "apt-get install frr (10.3, as in the containerlab images: zebra, bgpd, nhrpd, vtysh)",
        ),
        _tool("tshark", "tshark", "apt-get install tshark (captures in the lab tests)"),
    ]
    if need_kernel:
        missing = kernel_missing_modules()
        checks.append(
            Check(
                "kernel modules",
                not missing,
                "ip_gre esp4 xfrm_user" if not missing else f"missing: {' '.join(missing)}",
                "this kernel cannot carry GRE/ESP; run through the sandbox kernel (the default: "
                "`dmvpn-lab up` picks it) or install linux-modules-extra for your kernel",
            )
        )
    return checks


def docker_engine_answers() -> bool:
    """A Docker engine answers the ``docker`` client here (not merely the client being installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def containerlab_checks() -> list[Check]:
    pinned = Path("/var/lib/dmvpn-lab/bin/containerlab")
    clab = shutil.which("containerlab") or (str(pinned) if pinned.exists() else None)
    engine = docker_engine_answers()
    return [
        Check("root", os.geteuid() == 0, f"uid {os.geteuid()}", "run as root (sudo)"),
        Check(
            "containerlab",
            clab is not None,
            clab or "containerlab not found",
            "scripts/containerlab.sh builds the pinned release (or https://containerlab.dev/install/)",
        ),
        Check(
            "docker engine",
            engine,
            "answers" if engine else "no answer from `docker info`",
            "install Docker Engine and start it (apt-get install docker.io)",
        ),
    ]


def _tool(name: str, binary: str, remedy: str) -> Check:
    path = shutil.which(binary)
    return Check(name, path is not None, path or f"{binary} not found", remedy)


def require(checks: list[Check]) -> None:
    if not all(c.ok for c in checks):
        raise PreflightError(checks)
