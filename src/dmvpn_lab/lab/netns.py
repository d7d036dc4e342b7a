"""The embedded runtime: every node a Linux network namespace named as containerlab names it.

``up`` builds the namespaces and veth links, runs each node's ``setup.sh``, starts the KS, the GM
sidecars (or, in the per-peer IPsec baseline, strongSwan's ``charon``) and FRR (zebra first, then the
routing daemons, then the node's ``frr.conf`` through vtysh) and waits until the lab has converged.
``down`` removes every namespace, process and file the lab made, and works after an interrupted ``up``
because it finds what to remove by name, not from memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmvpn_lab.lab.converge import ConvergenceError, wait_for_json, wait_until
from dmvpn_lab.lab.labstate import read_state, recorded_runtime, write_state
from dmvpn_lab.lab.node import FRR_DIR, NodeShell, gdoi_command, state_root
from dmvpn_lab.lab.strongswan import (
    CHARON_PATHS,
    STRONGSWAN_CONF_PATH,
    SWANCTL_CONF_PATH,
    ipsec_run_dir,
    swanctl_sas,
    swanctl_uri,
)
from dmvpn_lab.lab.topology import FRR_CONF_PATH, GDOI_CONF_PATH, SETUP_PATH, Node, Topology

Progress = Callable[[str], None]
FRR_RUN = Path("/var/run/frr")
KEY_ROOT = Path("/var/lib/dmvpn-lab/keys")  # the KS's RSA keys outlive a lab (and a sandbox run)
# FRR 9+ routes configuration through mgmtd, which must run before the other daemons (as frrinit.sh
# starts them).
FRR_ORDER = ("mgmtd", "zebra", "staticd", "bgpd", "ospfd", "nhrpd")


class LabError(RuntimeError):
    """The lab could not be brought to the asked state; the message says what to do."""


@dataclass
class NetnsRuntime:
    topology: Topology
    progress: Progress = print

    @property
    def shell(self) -> NodeShell:
        return NodeShell(self.topology, "netns")

    @property
    def state_dir(self) -> Path:
        return state_root() / self.topology.name

    @property
    def run_root(self) -> Path:
        return Path("/run/dmvpn-lab") / self.topology.name

    # --- up ----------------------------------------------------------------------------------------

    def up(self, *, converge_timeout: float = 180.0) -> dict[str, Any]:
        started = time.monotonic()
        self._refuse_foreign()
        if self.existing_namespaces():
            self.progress(f"removing leftovers of an earlier run of {self.topology.name}")
            self.down(quiet=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)  # logs of an earlier run would mislead
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_state({"lab": self.topology.name, "topology": str(self.topology.path), "runtime": "netns"})

        self.progress(f"creating {len(self.topology.nodes)} namespaces and {len(self.topology.links)} links")
        for node in self.topology.nodes.values():
            ns = self.topology.namespace(node.name)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for link in self.topology.links:
            a, b = link.a, link.b
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    "name",
                    a.interface,
                    "netns",
                    self.topology.namespace(a.node),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    b.interface,
                    "netns",
                    self.topology.namespace(b.node),
                ]
            )

        for node in self.topology.ordered_nodes():
            self._sysctls(node)
            self._setup(node)

        # Key servers one after the other, each settled before the next starts: with COOP the first
        # becomes primary on its own and every later one joins it as a secondary and takes its state, so
        # members find the keys they will be rekeyed with on whichever key server they reach.
        for node in self.topology.ordered_nodes():
            if node.gdoi_role == "ks":
                self._start_gdoi(node)
                self._wait_healthy(node)
        for node in self.topology.ordered_nodes():
            if node.gdoi_role == "gm":
                self._start_gdoi(node)
        ike_nodes = [n for n in self.topology.ordered_nodes() if n.env.get("IKE_DAEMON") == "strongswan"]
        for node in sorted(ike_nodes, key=lambda n: n.role != "hub"):  # the hub answers before spokes ask
            self._start_charon(node)
        for node in ike_nodes:
            self._wait_hub_tunnel(node)
        for node in self.topology.ordered_nodes():
            if node.frr_daemons:
                self._start_frr(node)

        self.progress("waiting for convergence (GDOI registration, NHRP registration, BGP routes)")
        converged = self.wait_converged(timeout=converge_timeout)
        elapsed = time.monotonic() - started
        self._write_state({**self._read_state(), "up_seconds": round(elapsed, 1), "converged": converged})
        self.progress(f"lab {self.topology.name} is up and converged in {elapsed:.1f}s")
        return converged

    def _refuse_foreign(self) -> None:
        """Never touch namespaces this runtime did not make (containerlab's carry the same names)."""
        if not self.existing_namespaces():
            return
        owner = recorded_runtime(self.topology)
        if owner == "netns":
            return
        made_by = f"the {owner} runtime" if owner else "something else (containerlab?)"
        raise LabError(
            f"namespaces clab-{self.topology.name}-* exist and were made by {made_by}, not by the netns runtime: "
            f"remove that lab first (`dmvpn-lab --runtime containerlab down` or "
            f"`containerlab destroy -t {self.topology.path}`)"
        )

    def _sysctls(self, node: Node) -> None:
        """The node's ``sysctls`` from the topology, as Docker sets them when containerlab creates it."""
        if not node.sysctls:
            return
        settings = [f"{key}={value}" for key, value in sorted(node.sysctls.items())]
        result = self.shell.run(node.name, ["sysctl", "-q", "-w", *settings], check=False)
        if result.returncode != 0:
            raise LabError(f"{node.name}: sysctls {' '.join(settings)} refused: {result.stderr.strip()}")

    def _setup(self, node: Node) -> None:
        script = node.file(SETUP_PATH)
        if script is None:
            return
        self.progress(f"  {node.name}: setup.sh")
        result = self.shell.run(node.name, ["sh", str(script)], check=False)
        if result.returncode != 0:
            raise LabError(
                f"{node.name}: {script} failed (exit {result.returncode}): {result.stderr.strip()}\n"
                "fix the script in the topology folder, then run `dmvpn-lab down` and `up` again"
            )

    def _log(self, node: str, daemon: str) -> Path:
        folder = self.state_dir / node
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{daemon}.log"

    def _start_gdoi(self, node: Node, config: Path | None = None) -> None:
        config = config or node.file(GDOI_CONF_PATH)
        if config is None:
            raise LabError(f"{node.name}: GDOI_ROLE is set but no file is bound to {GDOI_CONF_PATH}")
        run_dir = Path(self.shell.run_dir(node.name))
        run_dir.mkdir(parents=True, exist_ok=True)
        role = node.gdoi_role or "gm"
        argv = [*gdoi_command("netns"), role, "--config", str(config), "--run-dir", str(run_dir)]
        if address := node.env.get("GDOI_LOCAL_ADDRESS"):
            argv += ["--local-address", address]
        if role == "gm" and (xfrm := node.env.get("GDOI_XFRM_ADDRESS")):
            argv += ["--xfrm-address", xfrm]
        if role == "ks":
            # Kept across runs (the seed's `crypto key generate rsa` happens once), apart from the logs.
            argv += ["--key-dir", str(KEY_ROOT / self.topology.name / node.name)]
        argv += ["--keylog", str(self.state_dir / "ike-keylog.txt")]
        self.progress(f"  {node.name}: gdoi {role}")
        log = self._log(node.name, f"gdoi-{role}").open("ab")
        proc = self.shell.spawn(node.name, argv, log=log)
        log.close()
        self._remember_pid(node.name, f"gdoi-{role}", proc.pid)

    def stop_gdoi(self, name: str) -> None:
        """Stop a node's GDOI daemon (SIGTERM: a GM removes its kernel state) and wait for it to exit.

        The daemon is forgotten from the lab's state: stopped on purpose, it is not a daemon that died
        (``dead_daemons``) until ``start_gdoi`` records its successor.
        """
        node = self.topology.nodes[name]
        daemon = f"gdoi-{node.gdoi_role}"
        pid = self._read_state().get("pids", {}).get(name, {}).get(daemon)
        if pid is None:
            raise LabError(f"{name}: no GDOI daemon recorded for this lab (stopped already?)")
        _signal(pid, signal.SIGTERM)
        try:
            wait_until(lambda: "still running" if _alive(pid) else None, what=f"{name}: GDOI daemon exit", timeout=10)
        except ConvergenceError:
            _signal(pid, signal.SIGKILL)
        self._forget_pid(name, daemon)

    def start_gdoi(self, name: str, config: Path | None = None) -> None:
        """Start a node's GDOI daemon, optionally with another configuration file than the topology's."""
        self._start_gdoi(self.topology.nodes[name], config=config)

    def restart_gdoi(self, name: str, config: Path | None = None) -> None:
        self.stop_gdoi(name)
        self.start_gdoi(name, config=config)

    def _start_charon(self, node: Node) -> None:
        """strongSwan's IKE daemon in the node, with a private /run (its pid file and vici socket).

        charon insists on one ``/var/run/charon.pid`` per machine; namespaces share the host's /run, so
        each charon gets its own mount namespace whose /run is ``ipsec_run_dir`` on the host.
        """
        swanctl_conf = node.file(SWANCTL_CONF_PATH)
        if swanctl_conf is None:
            raise LabError(f"{node.name}: IKE_DAEMON=strongswan but no file is bound to {SWANCTL_CONF_PATH}")
        charon = next((p for p in CHARON_PATHS if Path(p).exists()), None)
        if charon is None:
            raise LabError(f"{node.name}: strongSwan's charon is missing (apt-get install strongswan-charon)")
        run = ipsec_run_dir(self.topology, node.name)
        run.mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / node.name / "strongswan.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        lines = ["include /etc/strongswan.conf"]
        if dropin := node.file(STRONGSWAN_CONF_PATH):
            lines.append(f"include {dropin}")
        conf.write_text("\n".join(lines) + "\n")
        script = f"mount --bind {run} /run && exec env STRONGSWAN_CONF={conf} {charon}"
        self.progress(f"  {node.name}: strongSwan charon")
        log = self._log(node.name, "charon").open("ab")
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        proc = self.shell.spawn(node.name, argv, log=log)
        log.close()
        self._remember_pid(node.name, "charon", proc.pid)
        _wait_path(run / "charon.vici", f"{node.name}: charon's vici socket")
        result = self.shell.run(
            node.name,
            ["swanctl", "--load-all", "--file", str(swanctl_conf), *swanctl_uri(self.topology, node.name)],
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise LabError(
                f"{node.name}: swanctl refused {swanctl_conf}: {result.stdout.strip()} {result.stderr.strip()}"
            )

    def _wait_hub_tunnel(self, node: Node) -> None:
        """A spoke's CHILD_SA to the hub is installed (so FRR's first GRE packet is already protected)."""
        if node.role != "spoke":
            return
        wait_for_json(
            lambda: swanctl_sas(self.shell, node.name),
            lambda sas: (
                None
                if any(sa["conn"] == "hub" and any(c["state"] == "INSTALLED" for c in sa["children"]) for sa in sas)
                else "no installed CHILD_SA toward the hub"
            ),
            what=f"{node.name}: swanctl --list-sas",
            timeout=60,
            interval=0.2,
        )

    def _wait_healthy(self, node: Node) -> None:
        """The key server answers, and with COOP holds its role: primary, or a secondary in sync."""
        from dmvpn_lab.lab import checks

        self.progress(f"  {node.name}: waiting for the key server to answer")
        wait_for_json(
            lambda: self.shell.gdoi_json(node.name, "show", "crypto", "gdoi"),
            {},
            what=f"{node.name}: gdoi show crypto gdoi --json",
            timeout=60,
            interval=0.5,
        )
        coop = wait_for_json(
            lambda: self.shell.gdoi_json(node.name, "show", "crypto", "gdoi", "ks", "coop"),
            checks.coop_settled,
            what=f"{node.name}: gdoi show crypto gdoi ks coop --json",
            timeout=60,
            interval=0.5,
        )
        if coop.get("coop"):
            self.progress(f"  {node.name}: COOP {coop['coop']['role'].lower()}")

    def _start_frr(self, node: Node) -> None:
        ns = self.topology.namespace(node.name)
        root = node.frr_root or Path("/")
        binaries = _on_host(root, FRR_DIR)
        if not (binaries / "zebra").exists():
            hint = f"build it with `scripts/frr-root.sh {root}`" if node.frr_root else "apt-get install frr"
            raise LabError(f"{node.name}: no FRR under {root}: {hint}")
        if node.frr_root:
            _mount_root_filesystems(root)
        # Paths as the daemons see them; in a chroot that is below FRR_ROOT on the host.
        space = FRR_RUN / ns
        logs = self.state_dir / node.name
        for folder in (space, logs):
            _run(["chroot", str(root), "install", "-d", "-o", "frr", "-g", "frr", str(folder)])
        wanted = set(node.frr_daemons)
        daemons = [d for d in FRR_ORDER if d in wanted or (d == "mgmtd" and (binaries / d).exists())]
        self.progress(f"  {node.name}: FRR {' '.join(daemons)}{f' from {root}' if node.frr_root else ''}")
        for daemon in daemons:
            if not (binaries / daemon).exists():
                raise LabError(f"{node.name}: FRR daemon {daemon} is missing under {binaries}")
            log = logs / f"{daemon}.log"
            argv = [*self.shell.frr_argv(node.name, daemon), "-d", "-i", str(space / f"{daemon}.pid")]
            argv += ["--log", f"file:{log}"]
            if daemon != "mgmtd":  # mgmtd holds the configuration and takes no file; the others start empty
                argv += ["-f", "/dev/null"]
            self._start_daemon(node.name, daemon, argv)
            pid_file = _on_host(root, space / f"{daemon}.pid")
            if pid_file.exists():  # remembered so a daemon that dies later is named (dead_daemons)
                self._remember_pid(node.name, daemon, int(pid_file.read_text().split()[0]))
            if node.frr_root:  # keep every log of the node in the folder the tests copy into their results
                link = self._log(node.name, daemon)
                link.unlink(missing_ok=True)
                link.symlink_to(_on_host(root, log))
            if daemon == "zebra":
                _wait_path(_on_host(root, space / "zserv.api"), f"{node.name}: zebra socket")
        conf = node.file(FRR_CONF_PATH)
        if conf is not None:
            shutil.copyfile(conf, _on_host(root, space / "frr.conf"))
            argv = [*self.shell.frr_argv(node.name, "vtysh"), "-f", str(space / "frr.conf")]
            result = self.shell.run(node.name, argv, check=False, timeout=60)
            if result.returncode != 0:
                raise LabError(f"{node.name}: FRR refused {conf}: {result.stdout.strip()} {result.stderr.strip()}")

    def _start_daemon(self, node: str, daemon: str, argv: list[str]) -> None:
        """Run a self-daemonizing program and wait for its parent to return.

        Its output goes to a file, not a pipe: FRR 10's daemons keep the startup stdout open, so a
        captured pipe would never reach end of file.
        """
        start_log = self._log(node, f"{daemon}-start")
        with start_log.open("ab") as out:
            proc = self.shell.spawn(node, argv, log=out)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise LabError(f"{node}: {daemon} did not start within 30s (see {start_log})") from None
        if code != 0:
            raise LabError(f"{node}: {daemon} exited {code}: {start_log.read_text(errors='replace')[-800:].strip()}")

    # --- convergence -------------------------------------------------------------------------------

    def wait_converged(self, timeout: float = 180.0) -> dict[str, Any]:
        from dmvpn_lab.lab import checks

        return checks.wait_converged(self.shell, timeout=timeout, progress=self.progress)

    # --- down --------------------------------------------------------------------------------------

    def existing_namespaces(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        prefix = f"clab-{self.topology.name}-"
        return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]

    def down(self, *, quiet: bool = False) -> None:
        self._refuse_foreign()
        namespaces = self.existing_namespaces()
        if not quiet:
            self.progress(f"stopping {self.topology.name}: {len(namespaces)} namespaces")
        # Ask the GMs to stop first so they remove their kernel state themselves.
        for pid in self._pids_in(namespaces):
            _signal(pid, signal.SIGTERM)
        with contextlib.suppress(ConvergenceError):
            wait_until(
                lambda: "processes left" if self._pids_in(namespaces) else None,
                what=f"{self.topology.name}: processes exit",
                timeout=5,
                interval=0.1,
            )
        for pid in self._pids_in(namespaces):
            _signal(pid, signal.SIGKILL)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for node in self.topology.nodes.values():
            root = node.frr_root or Path("/")
            shutil.rmtree(_on_host(root, FRR_RUN / self.topology.namespace(node.name)), ignore_errors=True)
        shutil.rmtree(self.run_root, ignore_errors=True)
        state = self.state_dir / "state.json"
        if state.exists():
            state.unlink()
        if not quiet:
            self.progress(f"{self.topology.name} is down")

    def _pids_in(self, namespaces: list[str]) -> list[int]:
        pids: list[int] = []
        for ns in namespaces:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
            pids += [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        return pids

    # --- state -------------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        return read_state(self.topology)

    def _write_state(self, state: dict[str, Any]) -> None:
        write_state(self.topology, state)

    def daemon_log(self, node: str, daemon: str) -> str:
        log = self.state_dir / node / f"{daemon}.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def collect_logs(self, folder: Path) -> None:
        """Every daemon's log (FRR's from its root, through the links ``up`` made), per node."""
        if self.state_dir.exists():
            shutil.copytree(
                self.state_dir, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("keys", "*.sock", "*.json")
            )

    def dead_daemons(self) -> list[str]:
        """Every daemon this lab started that is no longer running, each with the end of its log.

        A test checks this first, so a daemon that died shows as itself (FRR topotests'
        ``routers_have_failure``), not as a timeout somewhere later.
        """
        found = []
        for node, daemons in self._read_state().get("pids", {}).items():
            for daemon, pid in daemons.items():
                if _alive(pid):
                    continue
                log = self.state_dir / node / f"{daemon}.log"
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
                found.append(f"{node}: {daemon} (pid {pid}) is not running; the end of {log}:\n" + "\n".join(tail))
        return found

    def _remember_pid(self, node: str, daemon: str, pid: int) -> None:
        state = self._read_state()
        state.setdefault("pids", {}).setdefault(node, {})[daemon] = pid
        self._write_state(state)

    def _forget_pid(self, node: str, daemon: str) -> None:
        state = self._read_state()
        state.get("pids", {}).get(node, {}).pop(daemon, None)
        self._write_state(state)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers signal 0; it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _on_host(root: Path, path: Path) -> Path:
    """Where ``path`` inside the root file system ``root`` is on the host.

    ``/var/run`` is a symlink to ``/run`` in Debian roots: resolved from the host it would point at the
    host's ``/run``, so spell it out.
    """
    inside = Path("/run", *path.parts[3:]) if path.parts[1:3] == ("var", "run") else path
    return root / inside.relative_to("/")


def _mount_root_filesystems(root: Path) -> None:
    """Give a chroot what FRR needs from the running system, once per boot.

    FRR reads ``/proc`` (per-namespace sysctls among others) and keeps its sockets in ``/run``, which
    must be a file system that can hand them to the ``frr`` user (the sandbox's hostfs cannot chown).
    """
    for fstype, folder in (("proc", "proc"), ("tmpfs", "run")):
        if subprocess.run(["mountpoint", "-q", str(root / folder)], check=False).returncode != 0:
            _run(["mount", "-t", fstype, fstype, str(root / folder)])


def _wait_path(path: Path, what: str, timeout: float = 20.0) -> None:
    wait_until(
        lambda: None if path.exists() else f"{path} not there yet (see the daemon's log)",
        what=what,
        timeout=timeout,
        error=LabError,
    )
