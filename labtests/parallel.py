"""The whole test run split across sandbox kernels, for machines whose kernel cannot carry the lab.

A User-Mode Linux kernel runs on one CPU, so one sandbox leaves the machine's other cores idle while the
labs spend most of their time waiting on protocol timers.  When ``make test`` (pytest with no paths) has
to use the sandbox, it runs instead:

* ``tests/`` (unit and loopback integration tests) directly on this host, which needs no GRE or ESP;
* each group of lab suites below in a sandbox kernel of its own, all at once;
* the seed lab's suites once more on the containerlab runtime, in a sandbox kernel that also runs the
  Docker Engine (``containerlab`` group).

Each group brings up the labs it needs; no lab is shared between groups.  Output is streamed with the
group's name in front, each group's full output is kept in ``<results>/run-<group>.log``, and the totals
are printed at the end with the time per suite (``<results>/suite-times.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# Lab groups, balanced by measured time: the seed lab's suites (in SUITE_ORDER, they share one lab), the
# clock-driven rekey lab (mostly idle, waiting on TEK lifetimes), and the labs of their own.
SHARDS: dict[str, tuple[str, ...]] = {
    "unit": ("tests",),
    "seed-lab": (
        "labtests/test_smoke.py",
        "labtests/test_gdoi.py",
        "labtests/test_nhrp.py",
        "labtests/test_encryption.py",
        "labtests/test_validate.py",
        "labtests/test_rekey.py",
        "labtests/test_negative.py",
    ),
    "rekey-lab": ("labtests/test_rekey_timers.py", "labtests/test_coop.py"),
    "own-labs": (
        "labtests/test_nhrp_lifecycle.py",
        "labtests/test_baseline.py",
        "labtests/test_encryption_control.py",
    ),
}
# The seed lab's suites again, on containerlab and Docker (the sandbox kernel runs its own engine).
SHARDS["containerlab"] = SHARDS["seed-lab"]
SHARD_RUNTIME = {"containerlab": "containerlab"}
HOST_SHARDS = frozenset({"unit"})  # run on this host: no sandbox kernel needed
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass
class _Shard:
    name: str
    proc: subprocess.Popen[str]
    log: IO[str]
    started: float
    reader: threading.Thread | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def outcome_file(results: Path, shard: str) -> Path:
    return results / f"outcomes.{shard}.json"


def suite_times_file(results: Path, shard: str | None) -> Path:
    return results / (f"suite-times.{shard}.json" if shard else "suite-times.json")


def covers_everything(args: list[str], rootdir: Path) -> bool:
    """True when pytest was given no paths of its own (it then runs the configured testpaths)."""
    return sorted(str(Path(a).resolve()) for a in args) == sorted(
        str((rootdir / p).resolve()) for p in ("tests", "labtests")
    )


def run(options: list[str], results: Path, rootdir: Path) -> int:
    """Run every shard at once with the user's pytest ``options``; return pytest's exit code for all."""
    results.mkdir(parents=True, exist_ok=True)
    for name in SHARDS:
        outcome_file(results, name).unlink(missing_ok=True)
        suite_times_file(results, name).unlink(missing_ok=True)
    lock = threading.Lock()
    # pytest prunes older numbered temp folders when a session starts, so sessions running at once must
    # not share the default base folder: each group gets its own, removed at the end (results/ keeps
    # what a test saves).
    temp_root = Path(tempfile.mkdtemp(prefix="dmvpn-lab-pytest-"))
    shards = [_start(name, options, results, rootdir, lock, temp_root) for name in SHARDS]
    print(f"parallel run: {', '.join(s.name for s in shards)} (each log in {results}/run-<name>.log)", flush=True)
    for shard in shards:
        shard.proc.wait()
        if shard.reader is not None:
            shard.reader.join()
        shard.log.close()
        path = outcome_file(results, shard.name)
        shard.counts = json.loads(path.read_text()) if path.exists() else {}
    shutil.rmtree(temp_root, ignore_errors=True)
    return _report(shards, results)


def _start(
    name: str, options: list[str], results: Path, rootdir: Path, lock: threading.Lock, temp_root: Path
) -> _Shard:
    env = dict(os.environ, DMVPN_LAB_SHARD=name, DMVPN_LAB_RESULTS=str(results))
    if name in HOST_SHARDS:
        env["DMVPN_LAB_NO_SANDBOX"] = "1"
    if name in SHARD_RUNTIME:
        env["DMVPN_LAB_RUNTIME"] = SHARD_RUNTIME[name]
    argv = [sys.executable, "-m", "pytest", *SHARDS[name], f"--basetemp={temp_root / name}", *options]
    log = (results / f"run-{name}.log").open("w")
    proc = subprocess.Popen(
        argv, cwd=rootdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    shard = _Shard(name, proc, log, time.monotonic())
    shard.reader = threading.Thread(target=_relay, args=(shard, lock), daemon=True)
    shard.reader.start()
    return shard


def _relay(shard: _Shard, lock: threading.Lock) -> None:
    assert shard.proc.stdout is not None
    for line in shard.proc.stdout:
        shard.log.write(line)
        shard.log.flush()
        with lock:
            sys.stdout.write(f"[{shard.name}] {line}")
            sys.stdout.flush()
    shard.seconds = time.monotonic() - shard.started  # its output ended: the group is done


def _report(shards: list[_Shard], results: Path) -> int:
    totals = dict.fromkeys(OUTCOMES, 0)
    print("\n==== parallel run: groups ====")
    for shard in shards:
        counted = ", ".join(f"{n} {k}" for k, n in shard.counts.items() if n) or "no result file"
        print(f"{shard.name:>10}: exit {shard.proc.returncode}, {shard.seconds:6.1f} s, {counted}")
        for key in OUTCOMES:
            totals[key] += int(shard.counts.get(key, 0))
    times: dict[str, float] = {}
    for shard in shards:
        path = suite_times_file(results, shard.name)
        if path.exists():
            runtime = SHARD_RUNTIME.get(shard.name)
            shard_times = json.loads(path.read_text())
            times.update({f"{suite} [{runtime}]" if runtime else suite: t for suite, t in shard_times.items()})
    print("==== time per suite (setup, tests, teardown) ====")
    for suite, seconds in times.items():
        print(f"{seconds:8.1f} s  {suite}")
    suite_times_file(results, None).write_text(json.dumps(times, indent=1) + "\n")
    # A group that ran nothing (all deselected by -k/-m) exits 5; that is no failure of the run.
    broken = [s for s in shards if s.proc.returncode not in (0, 5) or (s.proc.returncode == 0 and not s.counts)]
    failed = totals["failed"] + totals["error"] + (len(broken) if not totals["failed"] + totals["error"] else 0)
    print(f"total: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    if broken or failed:
        return 1
    return 0 if totals["passed"] else 5
