"""Run the lab under a real Linux kernel when the host's kernel cannot carry GRE and ESP.

Why User-Mode Linux (UML) rather than QEMU/virtme-ng: both were measured on this project's machines
(see docs/sandbox.md): UML boots in about 2 s against about 20 s, runs Python at native speed against
about 6x slower under TCG, and shares the host's filesystem as its root (hostfs), so FRR, tshark and this
package installed on the host are there unchanged.  Its one cost, slow system calls, does not matter for
a lab of a few dozen daemons.

Two ways in, one switch (``DMVPN_LAB_SANDBOX_KERNEL``, default ``uml``):

* ``run(argv)``: boot, run one command (the lab test suite, a benchmark) as PID 1's child, halt, and
  return its exit code.  Output streams to our stdout.
* ``start_agent(...)``: boot in the background and keep serving: the host's ``dmvpn-lab`` forwards each
  command through a spool folder on the shared filesystem and prints the answer, so ``make lab-up``
  followed by ``dmvpn-lab status`` works as it does on a normal host.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from dmvpn_lab.lab.converge import ConvergenceError, wait_until

UML_BINARY = "linux.uml"
SANDBOX_ROOT = Path("/var/tmp/dmvpn-lab/sandbox")
UML_MODULES = Path("/usr/lib/uml/modules")
DEFAULT_MEMORY = os.environ.get("DMVPN_LAB_SANDBOX_MEMORY", "3G")
# The engine keeps images and containers' layers on a guest tmpfs: room for them and ten containers.
DOCKER_MEMORY = os.environ.get("DMVPN_LAB_SANDBOX_DOCKER_MEMORY", "6G")
# Variables carried into the sandbox: enough to find the same Python, tools and settings.
ENV_KEEP = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "CI",
    "TERM",
    "DMVPN_LAB_RESULTS",
    "PYTEST_ADDOPTS",
    "XDG_CONFIG_HOME",
    "DMVPN_LAB_KEEP",
    "DMVPN_LAB_SHARD",
    "DMVPN_LAB_RUNTIME",
    "DMVPN_LAB_TOPOLOGY",
)


class SandboxError(RuntimeError):
    pass


def sandbox_kernel() -> str:
    return os.environ.get("DMVPN_LAB_SANDBOX_KERNEL", "uml")


def available() -> tuple[bool, str]:
    """Whether a sandbox kernel can be booted here, and how to get one if not."""
    kind = sandbox_kernel()
    if kind != "uml":
        return False, f"DMVPN_LAB_SANDBOX_KERNEL={kind!r} is not supported (use 'uml')"
    if shutil.which(UML_BINARY) is None:
        return False, "apt-get install user-mode-linux (gives linux.uml and its modules)"
    if not _module_dir():
        return False, f"no kernel modules under {UML_MODULES} (reinstall user-mode-linux)"
    return True, shutil.which(UML_BINARY) or UML_BINARY


def _module_dir() -> Path | None:
    dirs = sorted(p for p in UML_MODULES.glob("*") if p.is_dir())
    return dirs[-1] if dirs else None


def _link_modules() -> None:
    """UML's modprobe looks in /lib/modules/<its version>: link the package's folder there."""
    mods = _module_dir()
    if mods is None:
        raise SandboxError("user-mode-linux modules are missing")
    target = Path("/lib/modules") / mods.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(mods)


_INIT = """#!/bin/sh
# PID 1 of the sandbox kernel. The root filesystem is the host's own (hostfs).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /run/netns
ip link set lo up
for m in ip_gre esp4 xfrm_user xfrm_algo des3_ede authenc cbc md5 sha1 sha256 gcm ghash-generic \\
         xt_NFLOG nfnetlink_log xt_hashlimit sch_netem veth bridge ip_tables iptable_filter; do
  modprobe -q $m 2>/dev/null
done
set -a
. {envfile}
set +a
export DMVPN_LAB_SANDBOX=1
{docker}
cd {cwd} || exit 1
{command}
echo $? > {rcfile}
sync
halt -f
"""


# With ``docker=True`` the guest also runs Debian's Docker Engine (docs/sandbox.md, "Docker inside the
# sandbox"): network through slirp for the images' apt, cgroup2, and the engine's storage on a guest
# tmpfs, since writes to hostfs would land on the host's disk.  The UML kernel has no nf_tables for
# ip/ip6/inet, so dockerd must find iptables-legacy first on PATH.
_DOCKER_PRELUDE = """
mount --make-rshared /
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The guest's / is the host's: containerlab's host entries (/etc/hosts) and SSH config
# (/etc/ssh/ssh_config.d) go to copies of the guest's own, never to the host's files.
cp /etc/hosts /run/dmvpn-lab-hosts && mount --bind /run/dmvpn-lab-hosts /etc/hosts
[ -d /etc/ssh ] && mount -t tmpfs tmpfs /etc/ssh
for m in overlay br_netfilter nf_nat iptable_nat xt_MASQUERADE xt_conntrack xt_addrtype xt_nat; do
  modprobe -q $m 2>/dev/null
done
mkdir -p /run/dmvpn-lab-bin /run/docker-data
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf /usr/sbin/$t-legacy /run/dmvpn-lab-bin/$t
done
export PATH=/run/dmvpn-lab-bin:$PATH
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 dev eth0
mount -t tmpfs -o size=90% tmpfs /run/docker-data
containerd --root /run/docker-data/containerd --state /run/docker-data/containerd-state \\
  > {workdir}/containerd.log 2>&1 &
dockerd --data-root /run/docker-data/docker --exec-root /run/docker-data/exec --storage-driver overlay2 \\
  --containerd /run/containerd/containerd.sock > {workdir}/dockerd.log 2>&1 &
export DMVPN_LAB_SANDBOX_DOCKER=1
"""


def _write_init(workdir: Path, command: str, cwd: Path, *, docker: bool = False) -> Path:
    env_lines = [f"{k}={shlex.quote(os.environ[k])}" for k in ENV_KEEP if k in os.environ]
    env_lines.append("PYTHONUNBUFFERED=1")
    env_lines.append(f"DMVPN_LAB_STATE_DIR={shlex.quote(str(workdir / 'state'))}")
    envfile = workdir / "env"
    envfile.write_text("\n".join(env_lines) + "\n")
    init = workdir / "init"
    prelude = _DOCKER_PRELUDE.format(workdir=workdir) if docker else ""
    init.write_text(
        _INIT.format(envfile=envfile, cwd=shlex.quote(str(cwd)), command=command, rcfile=workdir / "rc", docker=prelude)
    )
    init.chmod(0o755)
    return init


def _uml_argv(init: Path, memory: str, umid: str, *, docker: bool = False) -> list[str]:
    network = [f"eth0=slirp,,{_quiet_slirp(init.parent)}"] if docker else []
    return [
        UML_BINARY,
        f"mem={memory}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={init}",
        f"umid={umid}",
        "quiet",
        "loglevel=1",
        "con=null",
        "con0=fd:0,fd:1",
        *network,
    ]


def _quiet_slirp(workdir: Path) -> Path:
    """slirp-fullbolt (user-mode networking for the guest: apt in image builds; plain slirp wants a
    tty), with its banner kept out of the run's output."""
    wrapper = workdir / "slirp"
    wrapper.write_text("#!/bin/sh\nexec /usr/bin/slirp-fullbolt \"$@\" 2>/dev/null\n")
    wrapper.chmod(0o755)
    return wrapper


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    memory: str | None = None,
    timeout: float | None = None,
    docker: bool = False,
) -> int:
    """Boot the sandbox kernel, run ``argv`` inside it, halt; return the command's exit code.

    ``docker``: run the Docker Engine in the guest too (the containerlab runtime).
    """
    memory = memory or (DOCKER_MEMORY if docker else DEFAULT_MEMORY)
    ok, how = available()
    if not ok:
        raise SandboxError(f"this kernel lacks GRE/ESP and no sandbox kernel is available: {how}")
    _link_modules()
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=_sandbox_root()))
    init = _write_init(workdir, shlex.join(argv), cwd or Path.cwd(), docker=docker)
    started = time.monotonic()
    engine = " with the Docker Engine" if docker else ""
    print(f"sandbox: booting User-Mode Linux ({memory}){engine} to run: {shlex.join(argv)}", flush=True)
    proc = subprocess.Popen(
        _uml_argv(init, memory, f"dmvpn-{workdir.name}", docker=docker),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SandboxError(f"sandbox run exceeded {timeout:.0f}s and was stopped") from None
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    rc_file = workdir / "rc"
    elapsed = time.monotonic() - started
    if not rc_file.exists():
        raise SandboxError(f"the sandbox kernel stopped before the command finished (after {elapsed:.0f}s)")
    rc = int(rc_file.read_text().strip() or "1")
    print(f"sandbox: finished in {elapsed:.1f}s with exit code {rc}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return rc


def _sandbox_root() -> Path:
    root = SANDBOX_ROOT
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- the persistent sandbox and its agent ------------------------------------------------------------


def agent_dir(lab: str) -> Path:
    return _sandbox_root() / lab


def agent_running(lab: str) -> bool:
    pid_file = agent_dir(lab) / "uml.pid"
    if not pid_file.exists():
        return False
    pid = pid_file.read_text().strip()
    return pid.isdigit() and _pid_alive(int(pid)) and (agent_dir(lab) / "ready").exists()


def start_agent(
    lab: str, up_argv: Sequence[str], *, memory: str | None = None, timeout: float = 1200, docker: bool = False
) -> int:
    """Boot a sandbox that runs ``up_argv`` (bringing the lab up) and then serves forwarded commands.

    ``docker``: with the Docker Engine in the guest (the containerlab runtime).
    """
    memory = memory or (DOCKER_MEMORY if docker else DEFAULT_MEMORY)
    ok, how = available()
    if not ok:
        raise SandboxError(f"this kernel lacks GRE/ESP and no sandbox kernel is available: {how}")
    _link_modules()
    folder = agent_dir(lab)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "spool").mkdir(parents=True)
    agent = [sys.executable, "-m", "dmvpn_lab.lab.sandbox", "agent", str(folder)]
    command = f"{shlex.join(up_argv)} > {folder}/up.log 2>&1; echo $? > {folder}/up.rc; {shlex.join(agent)}"
    init = _write_init(folder, command, Path.cwd(), docker=docker)
    console = (folder / "console.log").open("ab")
    proc = subprocess.Popen(
        _uml_argv(init, memory, f"dmvpn-{lab}", docker=docker),
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=console,
        start_new_session=True,
    )
    (folder / "uml.pid").write_text(str(proc.pid))
    print(f"sandbox: User-Mode Linux started (pid {proc.pid}); bringing {lab} up inside it", flush=True)
    started = time.monotonic()
    up_log = folder / "up.log"
    shown = [0]

    def brought_up() -> str | None:
        shown[0] = _echo_new(up_log, shown[0])  # the bring-up's progress lines, as they come
        if (folder / "up.rc").exists():
            return None
        if proc.poll() is not None:
            raise SandboxError(f"the sandbox kernel stopped during bring-up; see {folder}/console.log")
        return f"bring-up still running; see {up_log}"

    wait_until(brought_up, what="sandbox bring-up", timeout=timeout, interval=0.2, error=SandboxError)
    _echo_new(up_log, shown[0])
    rc = int((folder / "up.rc").read_text().strip() or "1")
    if rc != 0:
        return rc

    # The agent starts serving only after bring-up has returned; a verb forwarded before that (make
    # lab-up runs `status` next) would find no sandbox.  So "up" ends when the agent is ready.
    def agent_ready() -> str | None:
        if proc.poll() is not None:
            raise SandboxError(f"the sandbox kernel stopped after bring-up; see {folder}/console.log")
        return None if (folder / "ready").exists() else f"agent not serving yet; see {folder}/console.log"

    wait_until(
        agent_ready, what="sandbox agent", timeout=max(1.0, timeout - (time.monotonic() - started)), error=SandboxError
    )
    return rc


def _echo_new(path: Path, shown: int) -> int:
    if not path.exists():
        return shown
    data = path.read_bytes()
    if len(data) > shown:
        sys.stdout.write(data[shown:].decode(errors="replace"))
        sys.stdout.flush()
    return len(data)


def forward(lab: str, argv: Sequence[str], *, timeout: float = 600) -> int:
    """Run ``argv`` inside the lab's running sandbox, print its output, return its exit code."""
    spool = agent_dir(lab) / "spool"
    request_id = uuid.uuid4().hex
    request = spool / f"{request_id}.req"
    tmp = spool / f"{request_id}.tmp"
    tmp.write_text(json.dumps({"argv": list(argv), "cwd": str(Path.cwd())}))
    tmp.replace(request)
    answer = spool / f"{request_id}.done"

    def answered() -> str | None:
        if answer.exists():
            return None
        if not agent_running(lab):
            raise SandboxError("the sandbox kernel is not running (run `make lab-up` again)")
        return "no answer from the sandbox yet"

    wait_until(answered, what=f"sandbox {lab}: {shlex.join(argv)}", timeout=timeout, error=SandboxError)
    result = json.loads(answer.read_text())
    answer.unlink()
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    return int(result["rc"])


def serve(folder: Path) -> None:
    """The agent loop inside the sandbox: run each spooled request; ``halt`` ends the sandbox."""
    (folder / "ready").write_text("1")
    spool = folder / "spool"
    while True:
        for request in sorted(spool.glob("*.req")):
            job = json.loads(request.read_text())
            request.unlink()
            argv = job["argv"]
            if argv == ["halt"]:
                (folder / "ready").unlink(missing_ok=True)
                _answer(spool, request.stem, 0, "sandbox: halting\n", "")
                return
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, cwd=job.get("cwd"), timeout=900, check=False
                )
                _answer(spool, request.stem, done.returncode, done.stdout, done.stderr)
            except (OSError, subprocess.TimeoutExpired) as exc:
                _answer(spool, request.stem, 127, "", f"sandbox agent: {exc}\n")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _answer(spool: Path, request_id: str, rc: int, stdout: str, stderr: str) -> None:
    tmp = spool / f"{request_id}.atmp"
    tmp.write_text(json.dumps({"rc": rc, "stdout": stdout, "stderr": stderr}))
    tmp.replace(spool / f"{request_id}.done")


def stop_agent(lab: str, timeout: float = 60) -> None:
    folder = agent_dir(lab)
    pid_file = folder / "uml.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    if agent_running(lab):
        forward(lab, ["halt"], timeout=30)
    try:
        wait_until(lambda: "still running" if _pid_alive(pid) else None, what="sandbox halt", timeout=timeout)
    except ConvergenceError:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "agent":
        serve(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["--docker"]:
        sys.exit(run(sys.argv[2:], docker=True))
    else:
        sys.exit(run(sys.argv[1:]))
