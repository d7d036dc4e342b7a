"""`dmvpn-lab validate` grades a lab: all [PASS] on a healthy one, a [FAIL] with a hint on a broken one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dmvpn_lab.lab import checks

pytestmark = pytest.mark.lab


def _validate(lab) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmvpn_lab.lab.cli", "-t", str(lab.topology.path), "validate"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_validate_passes_on_the_running_lab(lab, request):
    result = _validate(lab)
    lab.save(request.node.name, "validate.txt", result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and all(line.startswith("[PASS]") for line in lines), result.stdout


def test_validate_fails_with_a_hint_when_a_gm_is_down(lab, request):
    spoke3 = lab.topology.nodes["spoke3"]
    lab.runtime.stop_gdoi(spoke3.name)
    try:
        result = _validate(lab)
        lab.save(request.node.name, "validate.txt", result.stdout + result.stderr)
        assert result.returncode == 1, result.stdout
        assert "[FAIL]  GDOI: every GM registered" in result.stdout
        # Its kernel state went with it: the no-phase-2 line needs what must be there, not just no strays.
        assert "[FAIL]  xfrm: group SAs only" in result.stdout, result.stdout
        assert "spoke3" in result.stdout and "hint:" in result.stdout
    finally:
        lab.runtime.start_gdoi(spoke3.name)
        checks.wait_converged(lab.shell, timeout=120, progress=lambda _line: None)
