"""The ``gdoi`` command line: usage errors, missing daemons, startup errors, check-config, signing keys."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from dmvpn_lab.gdoi.cli import main
from dmvpn_lab.gdoi.keys import SigningKeyError, load_or_generate_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

GM_YAML = """\
role: gm
local_address: 127.0.0.1
group: G
identity: 1
servers: [127.0.0.1]
psk: {127.0.0.1: cisco}
"""

KS_YAML = """\
role: ks
local_address: 127.0.0.1
psk: {127.0.0.2: cisco}
groups:
  - name: G
    identity: 1
    rekey: {rsa_modulus: 1024}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["gm"])
    assert caught.value.code == 2
    assert "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["gm", "--config", "x", "--local-address", "1.2.3"])
    assert caught.value.code == 2
    assert "'1.2.3' is not an IPv4 address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ks", "--config", "x", "--port", "70000"])
    assert "outside 1..65535" in capsys.readouterr().err


def test_show_without_daemon_says_how_to_start_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "show", "crypto", "gdoi", "--run-dir", str(tmp_path))
    assert code == 2 and out == ""
    assert err == (
        f"gdoi: no GDOI daemon is listening in {tmp_path} "
        f"(start one with `gdoi gm --config ... --run-dir {tmp_path}`)\n"
    )
    code, _, err = run(capsys, "rekey", "--run-dir", str(tmp_path), "--role", "ks")
    assert code == 2 and "start one with `gdoi ks --config ..." in err


def test_stale_control_socket_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(tmp_path / "gdoi-gm.sock"))  # bound, never listening: like a crashed daemon's
    code, _, err = run(capsys, "show", "crypto", "isakmp", "sa", "--run-dir", str(tmp_path))
    assert code == 2 and "no GDOI daemon is listening" in err and "stale socket" in err


def test_unknown_show_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "show", "crypto", "pki", "--run-dir", str(tmp_path))
    assert code == 2 and "unknown or ambiguous show command 'crypto pki'" in err


def test_check_config_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config", str(FIXTURES / "ks-seed.ios"))
    assert code == 0 and "[OK      ] group GDOI_GROUP (identity 123): esp-3des esp-md5-hmac" in out
    code, out, _ = run(capsys, "check-config", str(FIXTURES / "ks-seed-typo.ios"))
    assert code == 1
    assert (
        f"[REFUSED ] {FIXTURES / 'ks-seed-typo.ios'}:13: crypto ipsec transform-set GDOI_TS edp-3des" in out
    )
    code, out, _ = run(capsys, "check-config", str(FIXTURES / "gm-seed.ios"))
    assert code == 0 and "group member of GDOI_GM" in out
    code, out, _ = run(capsys, "check-config", str(FIXTURES / "absent.ios"))
    assert code == 1 and "[ERROR   ]" in out and "cannot read" in out


def test_daemon_with_the_other_roles_config_or_a_bad_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "gm", "--config", str(FIXTURES / "ks-seed.ios"), "--run-dir", str(tmp_path))
    assert code == 2 and "configures a key server; run it with `gdoi ks`" in err
    code, _, err = run(
        capsys, "ks", "--config", str(FIXTURES / "ks-seed-typo.ios"), "--run-dir", str(tmp_path)
    )
    assert code == 2 and err.startswith(f"gdoi: {FIXTURES / 'ks-seed-typo.ios'}:13: refused:")
    assert "Traceback" not in err


def test_address_not_on_this_host(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "gm.yaml"
    config.write_text(GM_YAML)
    code, _, err = run(
        capsys, "gm", "--config", str(config), "--local-address", "192.0.2.77", "--no-xfrm",
        "--run-dir", str(tmp_path / "run"), "--port", "10848",
    )  # fmt: skip
    assert code == 2
    assert "address 192.0.2.77 is not assigned to an interface of this host" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "gdoi-gm.sock").exists()


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "ks.yaml"
    config.write_text(KS_YAML)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        code, _, err = run(
            capsys, "ks", "--config", str(config), "--port", str(port), "--run-dir", str(tmp_path / "run"),
            "--key-dir", str(tmp_path / "keys"),
        )  # fmt: skip
    assert code == 2
    assert f"UDP port {port} on 127.0.0.1 is already in use" in err
    assert "Traceback" not in err


def test_signing_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    key, created = load_or_generate_key(tmp_path / "keys", "GDOI_KEYS", 1024)
    assert created and key.key_size == 1024
    path = tmp_path / "keys" / "GDOI_KEYS.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again, created_again = load_or_generate_key(tmp_path / "keys", "GDOI_KEYS", 2048)
    assert not created_again
    assert again.private_numbers() == key.private_numbers()
    path.chmod(0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_or_generate_key(tmp_path / "keys", "GDOI_KEYS", 1024)
    with pytest.raises(SigningKeyError, match="not usable as a file name"):
        load_or_generate_key(tmp_path / "keys", "../evil", 1024)
    with pytest.raises(SigningKeyError, match=r"outside 1024\.\.4096"):
        load_or_generate_key(tmp_path / "keys", "SMALL", 512)


def test_check_config_warns_about_the_seeds_replay_window(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config", str(FIXTURES / "ks-seed.ios"))
    assert code == 0  # a warning does not refuse the file
    assert f"[WARNING ] {FIXTURES / 'ks-seed.ios'}:28: replay time window-size 5  -- " in out
    assert "KEK 3des" in out  # IOS's default when `rekey algorithm` is absent
