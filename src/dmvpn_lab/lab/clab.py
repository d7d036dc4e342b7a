"""The containerlab runtime: Docker containers deployed by ``containerlab`` from the same topology.

``up`` makes sure the images are built from the current sources (:mod:`~dmvpn_lab.lab.images`), runs
``containerlab deploy`` and waits for convergence through the same :class:`NodeShell` checks as the netns
runtime.  Inside each container supervisord runs the GDOI daemon and FRR (images/common/entrypoint.sh),
so stopping or restarting a node's GDOI daemon is a ``supervisorctl`` call, never a container restart
(which would lose the container's links).  containerlab's lab folder goes under the state folder, not
next to the topology.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmvpn_lab.lab import checks, images
from dmvpn_lab.lab.labstate import read_state, write_state
from dmvpn_lab.lab.node import NodeCommandError, NodeShell, container_pid, state_root
from dmvpn_lab.lab.topology import Topology

PINNED_BINARY = Path("/var/lib/dmvpn-lab/bin/containerlab")  # what scripts/containerlab.sh installs
OVERRIDE_CONFIG = "/run/dmvpn-lab/gdoi-override.cfg"  # read by images/common/gdoi-run.sh
SUPERVISORCTL = ["supervisorctl", "-c", "/run/dmvpn-lab/supervisord.conf"]


class ContainerlabError(RuntimeError):
    """containerlab or Docker refused; the message carries their words and what to do."""


def containerlab_binary() -> str:
    found = shutil.which("containerlab")
    if found:
        return found
    if PINNED_BINARY.exists():
        return str(PINNED_BINARY)
    raise ContainerlabError("containerlab is not installed: run scripts/containerlab.sh (or `make setup`)")


@dataclass
class ContainerlabRuntime:
    topology: Topology
    progress: Callable[[str], None] = print

    @property
    def shell(self) -> NodeShell:
        return NodeShell(self.topology, "containerlab")

    @property
    def state_dir(self) -> Path:
        return state_root() / self.topology.name

    def _clab(self, *args: str, timeout: float = 900, show: bool = False) -> str:
        """Run containerlab on this topology; with ``show``, pass its log lines on as progress."""
        argv = [containerlab_binary(), *args, "-t", str(self.topology.path)]
        # The lab folder (clab-<lab>/) would otherwise be written next to the topology, in the checkout.
        env = {**os.environ, "CLAB_LABDIR_BASE": str(self.state_dir)}
        started = time.monotonic()
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        ) as proc:
            assert proc.stderr is not None and proc.stdout is not None
            log: list[str] = []
            for line in proc.stderr:  # containerlab logs to stderr, its result (JSON, tables) to stdout
                log.append(line)
                if show and line.strip():
                    self.progress(f"  [{time.monotonic() - started:5.1f}s] {line.strip()}")
                if time.monotonic() - started > timeout:
                    proc.kill()
                    raise ContainerlabError(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s")
            out = proc.stdout.read()
            code = proc.wait()
        if code != 0:
            raise ContainerlabError(f"`{' '.join(argv)}` failed:\n{''.join(log).strip()[-3000:]}")
        return out

    # --- up and down -------------------------------------------------------------------------------

    def up(self, *, converge_timeout: float = 240.0) -> dict[str, Any]:
        started = time.monotonic()
        per_peer = sorted(n.name for n in self.topology.nodes.values() if n.env.get("IKE_DAEMON"))
        if per_peer:
            # The images carry strongSwan but do not run charon: such a lab would route GRE unprotected.
            raise ContainerlabError(
                f"{self.topology.name}: {', '.join(per_peer)} use IKE_DAEMON (the per-peer IPsec baseline), which "
                "runs on the netns runtime only: `dmvpn-lab --runtime netns up`"
            )
        try:
            for tag, how in images.ensure_images(self.progress).items():
                self.progress(f"  image {tag}: {how}")
        except images.ImageError as exc:
            raise ContainerlabError(f"{exc}\n(`make images` builds them)") from None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_state(
            self.topology, {"lab": self.topology.name, "topology": str(self.topology.path), "runtime": "containerlab"}
        )
        self.progress(f"containerlab deploy {self.topology.path.name} ({len(self.topology.nodes)} containers)")
        self._clab("deploy", "--reconfigure", show=True)
        deployed = time.monotonic() - started
        self.progress(f"  deployed in {deployed:.1f}s; waiting for convergence (GDOI, NHRP, BGP)")
        outputs = checks.wait_converged(self.shell, timeout=converge_timeout, progress=self.progress)
        elapsed = time.monotonic() - started
        write_state(
            self.topology,
            {**read_state(self.topology), "up_seconds": round(elapsed, 1), "deploy_seconds": round(deployed, 1)},
        )
        self.progress(f"lab {self.topology.name} is up and converged in {elapsed:.1f}s")
        return outputs

    def down(self) -> None:
        self.progress(f"containerlab destroy {self.topology.name}")
        self._clab("destroy", "--cleanup", show=True)
        state = self.state_dir / "state.json"
        state.unlink(missing_ok=True)
        self.progress(f"{self.topology.name} is down")

    # --- what runs ---------------------------------------------------------------------------------

    def _containers(self) -> dict[str, str]:
        """Container name -> state, for this lab's containers (containerlab labels each with the lab)."""
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label=containerlab={self.topology.name}",
                "--format",
                "{{.Names}} {{.State}}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        ).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def existing_namespaces(self) -> list[str]:
        return [name for name, state in self._containers().items() if state == "running"]

    def dead_daemons(self) -> list[str]:
        """Containers not running, and GDOI or FRR daemons missing from a running one.

        Read from the process table (one pass over /proc), not with ``supervisorctl`` in every container:
        the check runs after each test.
        """
        containers = self._containers()
        tree = _process_tree()
        stopped_on_purpose = set(read_state(self.topology).get("gdoi_stopped", []))
        found = []
        for node in self.topology.nodes.values():
            name = self.topology.namespace(node.name)
            state = containers.get(name)
            if state != "running":
                found.append(f"{node.name}: container {name} is {state or 'missing'} (see `docker logs {name}`)")
                continue
            wanted = [f"gdoi {node.gdoi_role}"] if node.gdoi_role and node.name not in stopped_on_purpose else []
            wanted += [f"/usr/lib/frr/{d}" for d in node.frr_daemons]
            if not wanted:
                continue
            try:
                commands = _descendants(tree, container_pid(name))
            except NodeCommandError as exc:
                found.append(f"{node.name}: {exc}")
                continue
            for program in wanted:
                if not any(program in command for command in commands):
                    found.append(f"{node.name}: {program} is not running in {name} (see `docker logs {name}`)")
        return found

    # --- the GDOI daemon, through supervisord ------------------------------------------------------

    def stop_gdoi(self, name: str) -> None:
        self._supervise(name, "stop")
        # Stopped on purpose: not a daemon that died (dead_daemons) until start_gdoi.
        self._mark_gdoi_stopped(name, stopped=True)

    def start_gdoi(self, name: str, config: Path | None = None) -> None:
        if config is not None:
            # The topology's file is bound read-only; the daemon's wrapper takes this one while it exists.
            self.shell.run(name, ["sh", "-c", f"cat > {OVERRIDE_CONFIG}"], input=config.read_text())
        else:
            self.shell.run(name, ["rm", "-f", OVERRIDE_CONFIG])
        self._supervise(name, "start")
        self._mark_gdoi_stopped(name, stopped=False)

    def _mark_gdoi_stopped(self, name: str, *, stopped: bool) -> None:
        state = read_state(self.topology)
        names = set(state.get("gdoi_stopped", [])) - {name}
        write_state(self.topology, {**state, "gdoi_stopped": sorted(names | ({name} if stopped else set()))})

    def restart_gdoi(self, name: str, config: Path | None = None) -> None:
        self.stop_gdoi(name)
        self.start_gdoi(name, config=config)

    def _supervise(self, name: str, action: str) -> None:
        node = self.topology.nodes[name]
        if not node.gdoi_role:
            raise ContainerlabError(f"{name}: no GDOI daemon on this node")
        result = self.shell.run(name, [*SUPERVISORCTL, action, "gdoi"], check=False, timeout=60)
        # supervisorctl exits non-zero for "already started/stopped" too: its words decide.
        words = (result.stdout + result.stderr).lower()
        if result.returncode != 0 and "already" not in words and "not running" not in words:
            raise ContainerlabError(f"{name}: supervisorctl {action} gdoi: {words.strip()}")

    # --- logs --------------------------------------------------------------------------------------

    def daemon_log(self, node: str, daemon: str) -> str:
        try:
            log = Path(f"/proc/{container_pid(self.topology.namespace(node))}/root/var/log/frr/{daemon}.log")
        except NodeCommandError:
            return ""
        return log.read_text(errors="replace") if log.exists() else ""

    def collect_logs(self, folder: Path) -> None:
        """Each container's output (supervisord, the GDOI daemon, FRR's start) and FRR's log files."""
        for node in self.topology.nodes:
            name = self.topology.namespace(node)
            target = folder / node
            target.mkdir(parents=True, exist_ok=True)
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False, timeout=60)
            (target / "container.log").write_text(logs.stdout + logs.stderr)
            try:
                frr_logs = Path(f"/proc/{container_pid(name)}/root/var/log/frr")
            except NodeCommandError:
                continue
            for log in frr_logs.glob("*.log") if frr_logs.is_dir() else []:
                shutil.copyfile(log, target / log.name)


def _process_tree() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process the kernel shows us."""
    tree: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        tree[int(entry.name)] = (int(fields[1]), cmdline)
    return tree


def _descendants(tree: dict[int, tuple[int, str]], root: int) -> list[str]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _cmd) in tree.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in tree:
            found.append(tree[pid][1])
        todo.extend(children.get(pid, []))
    return found
