"""The one place that runs commands in a lab node, whatever the runtime.

Everything the harness does inside a node (shell commands, vtysh, the GDOI show commands, packet
captures) goes through :class:`NodeShell`, so a check written once runs on the netns runtime and on
containerlab alike.  The two runtimes differ only in the argv prefix that enters a node and in where
FRR's and the sidecar's sockets live.

Two ways in:

* a node's own world (``run``, ``vtysh``, ``gdoi``): in containerlab, every namespace of the container
  with ``nsenter`` (its file system: the image's FRR and sidecar).  ``docker exec`` would do the same
  through the engine's API, about 1.5-2 s per call under the sandbox kernel, where the convergence
  waits poll many times a second;
* its network only (``network_only=True``): ``ip netns exec clab-<lab>-<node>`` with the harness's own
  programs (tshark, scapy, this Python), the same on both runtimes: containerlab links each container's
  namespace under that name.  Captures and the tests' hand-made packets use this, so no test tool and
  no host path has to be inside an image.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dmvpn_lab.lab.topology import Topology

FRR_DIR = Path("/usr/lib/frr")  # where Debian's FRR keeps its daemons, on the host and in an FRR_ROOT
GDOI_SHOW_TIMEOUT_S = 30.0
CONTAINER_RUN_DIR = "/run/gdoi"  # the sidecar's control socket inside a container (images/common/gdoi-run.sh)
# nsenter runs the program with our environment: give it the image's search path, not ours.
CONTAINER_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_container_pids: dict[str, tuple[int, float]] = {}


class NodeCommandError(RuntimeError):
    """A command in a node failed; the message carries node, command, exit code and output."""

    def __init__(self, node: str, argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.node = node
        self.result = result
        super().__init__(
            f"[{node}] `{shlex.join(argv)}` exited {result.returncode}\n"
            f"stdout: {result.stdout.strip()[-2000:]}\nstderr: {result.stderr.strip()[-2000:]}"
        )


@dataclass(frozen=True)
class NodeShell:
    """Runs commands in the nodes of one running lab.

    ``runtime`` is ``netns`` (each node a network namespace named like the containerlab container) or
    ``containerlab`` (``nsenter`` into the container's namespaces).
    """

    topology: Topology
    runtime: str = "netns"

    # --- where things live -------------------------------------------------------------------------

    def enter(self, node: str, *, network_only: bool = False) -> list[str]:
        """The argv prefix that runs a command inside ``node`` (or only in its network namespace)."""
        name = self.topology.namespace(node)
        if self.runtime == "containerlab" and not network_only:
            return ["nsenter", "--target", str(container_pid(name)), "--all", "--", "env", CONTAINER_PATH]
        return ["ip", "netns", "exec", name]

    def run_dir(self, node: str) -> str:
        """Where the node's GDOI daemon keeps its control socket, as seen inside the node."""
        if self.runtime == "containerlab":
            return CONTAINER_RUN_DIR
        return f"/run/dmvpn-lab/{self.topology.name}/{node}"

    def control_dir(self, node: str) -> Path:
        """The same folder as this process reaches it (a container's through its init's root)."""
        if self.runtime == "containerlab":
            return Path(f"/proc/{container_pid(self.topology.namespace(node))}/root{CONTAINER_RUN_DIR}")
        return Path(self.run_dir(node))

    def frr_argv(self, node: str, program: str) -> list[str]:
        """argv that runs an FRR ``program`` (vtysh, zebra, ...) on this node's FRR instance.

        In containerlab the container holds one FRR.  In the netns runtime every node's FRR is a
        pathspace (``-N``) of the host's FRR, or of the one in the node's ``FRR_ROOT`` (via chroot).
        """
        if self.runtime == "containerlab":
            return [program]
        binary = program if program == "vtysh" else str(FRR_DIR / program)
        root = self.topology.nodes[node].frr_root
        chroot = ["chroot", str(root)] if root else []
        return [*chroot, binary, "-N", self.topology.namespace(node)]

    # --- running -----------------------------------------------------------------------------------

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        network_only: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        self._known(node)
        full = [*self.enter(node, network_only=network_only), *argv]
        try:
            result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise NodeCommandError(
                node, argv, subprocess.CompletedProcess(full, -1, _text(exc.stdout), f"timed out after {timeout}s")
            ) from None
        if check and result.returncode != 0:
            raise NodeCommandError(node, argv, result)
        return result

    def spawn(
        self, node: str, argv: Sequence[str], *, log: IO[bytes] | int | None = None, network_only: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in ``node`` (a daemon or a capture), detached from our session."""
        self._known(node)
        return subprocess.Popen(
            [*self.enter(node, network_only=network_only), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            start_new_session=True,
        )

    def sh(self, node: str, script: str, *, check: bool = True, timeout: float = 60.0) -> str:
        return self.run(node, ["sh", "-c", script], check=check, timeout=timeout).stdout

    def vtysh(self, node: str, command: str, *, timeout: float = 30.0) -> str:
        return self.run(node, [*self.frr_argv(node, "vtysh"), "-c", command], timeout=timeout).stdout

    def vtysh_config(self, node: str, lines: Sequence[str], *, timeout: float = 30.0) -> str:
        """Apply configuration lines (``interface gre1``, ``ip nhrp ...``) in one vtysh session."""
        commands = [arg for line in ["configure terminal", *lines, "end"] for arg in ("-c", line)]
        return self.run(node, [*self.frr_argv(node, "vtysh"), *commands], timeout=timeout).stdout

    def vtysh_json(self, node: str, command: str) -> Any:
        """Run a ``show ... json`` command; FRR prints ``{}`` or nothing when a daemon has no data."""
        out = self.vtysh(node, command if command.endswith(" json") else f"{command} json").strip()
        return json.loads(out) if out else {}

    def gdoi(self, node: str, *args: str, json_output: bool = False, check: bool = True) -> str:
        """Run the ``gdoi`` CLI against the node's sidecar (``gdoi show crypto gdoi`` and friends)."""
        if args[:1] == ("show",):
            return self._gdoi_show(node, args[1:], json_output=json_output, check=check)
        argv = [*gdoi_command(self.runtime), *args, "--run-dir", self.run_dir(node)]
        if json_output:
            argv.append("--json")
        return self.run(node, argv, check=check).stdout

    def _gdoi_show(self, node: str, words: Sequence[str], *, json_output: bool, check: bool) -> str:
        """``gdoi show`` answered in this process: the sidecar's control socket is a file the harness
        reaches directly (a container's through ``/proc/<pid>/root``), and the waits poll it often, where
        a Python interpreter per poll would cost about a second under the sandbox kernel.  Same request,
        same rendering."""
        from dmvpn_lab.gdoi import show
        from dmvpn_lab.gdoi.control import NoDaemonError, control_request

        self._known(node)
        argv = ["gdoi", "show", *words, *(["--json"] if json_output else [])]
        command = show.find_command(list(words))
        try:
            if command is None:
                raise ValueError(f"unknown or ambiguous show command {' '.join(words)!r}")
            # A member applying a rekey to the kernel can keep its loop busy for seconds under a loaded
            # sandbox kernel: give it longer than the CLI's default before calling it unresponsive.
            answer = control_request(self.control_dir(node), {"cmd": "status"}, timeout=GDOI_SHOW_TIMEOUT_S)
            if not answer.get("ok"):
                raise ValueError(f"the daemon refused: {answer.get('error')}")
            output = show.render(command, show.view_from_json(answer["status"]), as_json=json_output)
        except (NoDaemonError, ValueError, KeyError, NodeCommandError) as exc:
            if check:
                raise NodeCommandError(node, argv, subprocess.CompletedProcess(argv, 1, "", f"gdoi: {exc}")) from None
            return ""
        return json.dumps(output, indent=2, sort_keys=True) + "\n" if isinstance(output, dict) else output

    def gdoi_json(self, node: str, *args: str) -> Any:
        return json.loads(self.gdoi(node, *args, json_output=True))

    def _known(self, node: str) -> None:
        if node not in self.topology.nodes:
            raise KeyError(f"no node {node!r} in lab {self.topology.name} (nodes: {', '.join(self.topology.nodes)})")


def container_pid(name: str) -> int:
    """The host pid of container ``name``'s first process (remembered while that process lives)."""
    known = _container_pids.get(name)
    if known is not None and _started_at(known[0]) == known[1]:
        return known[0]
    result = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    pid = int(result.stdout.strip() or 0) if result.returncode == 0 else 0
    if pid <= 0:
        detail = result.stderr.strip() or "not running"
        raise NodeCommandError(name, ["docker", "inspect", name], subprocess.CompletedProcess([], 1, "", detail))
    _container_pids[name] = (pid, _started_at(pid))
    return pid


def _started_at(pid: int) -> float:
    """The process's start time in clock ticks since boot (-1 when gone): tells a reused pid apart."""
    try:
        return float((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[19])
    except (OSError, IndexError, ValueError):
        return -1.0


def gdoi_command(runtime: str) -> list[str]:
    """How to start the gdoi CLI: the installed entry point in images, this interpreter otherwise."""
    if runtime == "containerlab":
        return ["gdoi"]
    return [sys.executable, "-m", "dmvpn_lab.gdoi.cli"]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def state_root() -> Path:
    """Host-visible folder for lab state and logs (also visible from the sandbox kernel via hostfs).

    Each sandbox kernel gets its own (``DMVPN_LAB_STATE_DIR``): two sandboxes running the same lab
    have separate namespaces, so they must not share pid files and logs either.
    """
    return Path(os.environ.get("DMVPN_LAB_STATE_DIR", "/var/tmp/dmvpn-lab"))
