"""Bad input to the ``gdoi`` command and daemons: one clear line and a non-zero exit, never a traceback or a hang.

Each case is bad input once seen to crash or hang a daemon, plus the keylog, rejection-log and ACK rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_harness import KS_ADDR, make_lab
from test_cli import GM_YAML

from dmvpn_lab.gdoi.cli import main
from dmvpn_lab.gdoi.config import load_config
from dmvpn_lab.gdoi.config_model import KeyServerConfig
from dmvpn_lab.gdoi.constants import ExchangeType
from dmvpn_lab.gdoi.control import control_request, socket_path
from dmvpn_lab.gdoi.daemon import DaemonSettings
from dmvpn_lab.gdoi.daemon_log import Keylog, RejectionLog
from dmvpn_lab.gdoi.events import MessageRejected
from dmvpn_lab.gdoi.ks_daemon import KsDaemon, load_ks_daemon

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

KS_YAML = """\
role: ks
local_address: 127.0.0.1
psk: {127.0.0.2: cisco}
groups:
  - name: G1
    identity: 1
    rekey: {rsa_modulus: 1024}
  - name: G2
    identity: 2
    rekey: {rsa_modulus: 1024}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout then stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def one_clear_line(output: str) -> str:
    """The output is one line (besides a daemon's timestamped log lines), not a traceback; returns it."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip() and not re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert len(lines) == 1, output
    return lines[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- configurations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed_line", "bad_line", "expected"),
    [
        (" authentication pre-share", " authentication pre-share\n group \u00b2", "DH group \u00b2 is not supported"),
        ("esp-3des esp-md5-hmac", "esp-aes \u00b2 esp-sha-hmac", "unknown transform '\u00b2'"),
    ],
)
def test_unicode_digits_in_ios_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, seed_line: str, bad_line: str, expected: str
) -> None:
    # str.isdigit() accepts "²", int() does not: this was a ValueError traceback.
    text = (FIXTURES / "ks-seed.ios").read_text().replace(seed_line, bad_line, 1)
    config = write(tmp_path, "ks.ios", text)
    code, out = run(capsys, "check-config", str(config))
    assert code == 1 and "Traceback" not in out
    assert any(line.startswith("[REFUSED ]") and expected in line for line in out.splitlines()), out
    code, out = run(capsys, "ks", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and expected in one_clear_line(out)


def test_a_bare_crypto_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Found by test_config_readers_raise_only_config_errors: an IndexError.
    config = write(tmp_path, "ks.ios", "crypto\n" + (FIXTURES / "ks-seed.ios").read_text())
    code, out = run(capsys, "check-config", str(config))
    assert code == 1 and one_clear_line(out) == f"[ERROR   ] {config}:1: incomplete command `crypto`"


def test_deeply_nested_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write(tmp_path, "ks.yaml", "role: ks\nlocal_address: 127.0.0.1\ngroups: " + "[" * 5000 + "\n")
    code, out = run(capsys, "check-config", str(config))
    assert code == 1
    assert one_clear_line(out) == f"[ERROR   ] {config}:3: not valid YAML at column 40: nested deeper than 32 levels"


def test_yaml_alias_bomb_is_refused_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = ["role: ks", "local_address: 127.0.0.1", "a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefghi", "bcdefghij", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    lines.append("groups: [{name: G, identity: 1, acl: *j}]")  # 9**10 nodes once expanded
    config = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    assert config.stat().st_size < 600
    code, out = run(capsys, "ks", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert code == 2
    assert one_clear_line(out) == (
        f"gdoi: {config}:4: not valid YAML at column 8: aliases (*name) are not accepted in a configuration"
    )


@pytest.mark.parametrize(("value", "shown"), [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), ("0", "0")])
def test_registration_retry_must_be_finite_and_in_range(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, shown: str
) -> None:
    config = write(tmp_path, "gm.yaml", GM_YAML + f"registration_retry: {value}\n")
    code, out = run(capsys, "gm", "--config", str(config), "--no-xfrm", "--run-dir", str(tmp_path / "run"))
    assert code == 2
    line = one_clear_line(out)
    assert line.startswith(f"gdoi: {config}:7: registration_retry: ")
    assert f"got {shown}" in line or "outside 0.1..3600 s" in line
    assert load_config(write(tmp_path, "ok.yaml", GM_YAML + "registration_retry: 2.5\n")).registration_retry_s == 2.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("identity: " + "1" * 5000, ":4: not valid YAML at column 11: cannot read '1111111111"),
        ("crypto_map: 2001-99-99", ":7: not valid YAML at column 13: cannot read '2001-99-99': month must be in 1..12"),
    ],
)
def test_yaml_values_python_cannot_build(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, expected: str
) -> None:
    # PyYAML raised a bare ValueError (int() digit limit, datetime()) for these.
    text = GM_YAML.replace("identity: 1", line) if line.startswith("identity") else GM_YAML + line + "\n"
    config = write(tmp_path, "gm.yaml", text)
    code, out = run(capsys, "gm", "--config", str(config), "--no-xfrm", "--run-dir", str(tmp_path / "run"))
    assert code == 2 and one_clear_line(out).startswith(f"gdoi: {config}{expected}")


def test_yaml_syntax_error_is_reported_where_it_is(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # It was read as IOS and reported as "no `crypto gdoi group`".
    config = write(tmp_path, "ks.yaml", "role: ks\nlocal_address: 127.0.0.1\ngroups: [ {name: a\n  identity: 1 ]\n")
    code, out = run(capsys, "check-config", str(config))
    assert code == 1
    assert (
        one_clear_line(out) == f"[ERROR   ] {config}:4: not valid YAML at column 11: expected ',' or '}}', but got ':'"
    )


def test_yaml_without_a_role_is_not_read_as_ios(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write(tmp_path, "lab.yml", "name: dmvpn-gdoi\ntopology:\n  nodes: {}\n")
    code, out = run(capsys, "check-config", str(config))
    assert code == 1 and "role must be 'ks' or 'gm', not None" in one_clear_line(out)


def test_two_groups_with_one_identity(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write(tmp_path, "ks.yaml", KS_YAML.replace("identity: 2", "identity: 1"))
    code, out = run(capsys, "check-config", str(config))
    assert code == 1
    assert one_clear_line(out) == (
        f"[ERROR   ] {config}:9: groups[1].identity: group G2: identity 1 is already used by group G1"
    )
    seed = (FIXTURES / "ks-seed.ios").read_text()
    second = seed[seed.index("crypto gdoi group") : seed.index("ip access-list")].replace("GDOI_GROUP", "OTHER")
    ios = write(tmp_path, "ks.ios", seed + second)
    code, out = run(capsys, "ks", "--config", str(ios), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "group OTHER: identity 123 is already used by group GDOI_GROUP" in one_clear_line(out)


@pytest.mark.parametrize("label", ["bad label", "../escape", ".hidden"])
def test_check_config_and_ks_agree_on_key_labels(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, label: str
) -> None:
    yaml_config = write(
        tmp_path, "ks.yaml", KS_YAML.replace("rekey: {rsa_modulus: 1024}", f"rekey: {{rsa_key_label: '{label}'}}", 1)
    )
    configs = [yaml_config]
    if " " not in label:  # an IOS label is one word
        seed = (FIXTURES / "ks-seed.ios").read_text()
        configs.append(write(tmp_path, "ks.ios", seed.replace("GDOI_KEYS", label)))
    for config in configs:
        code, out = run(capsys, "check-config", str(config))
        assert code == 1 and "is not usable as a file name" in out and "Traceback" not in out, out
        code, out = run(
            capsys, "ks", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--key-dir", str(tmp_path / "k")
        )
        assert code == 2 and "is not usable as a file name" in one_clear_line(out)
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.192.1.1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
    ],
)
def test_ks_refuses_a_non_unicast_address(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, address: str, kind: str
) -> None:
    yaml_config = write(tmp_path, "ks.yaml", KS_YAML)
    for argv in (
        ["ks", "--config", str(yaml_config), "--local-address", address],
        ["ks", "--config", str(FIXTURES / "ks-seed.ios"), "--local-address", address],
        ["ks", "--config", str(write(tmp_path, "own.yaml", KS_YAML.replace("127.0.0.1", address, 1)))],
    ):
        code, out = run(capsys, *argv, "--run-dir", str(tmp_path / "run"), "--key-dir", str(tmp_path / "k"))
        assert code == 2
        assert f"local address {address} is {kind}; a key server binds one unicast address" in one_clear_line(out)
    assert not (tmp_path / "run").exists()


def test_ks_refuses_a_subnet_broadcast_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Not visible in the address itself (it depends on the netmask): the daemon asks the kernel.
    config = write(tmp_path, "ks.yaml", KS_YAML)
    code, out = run(
        capsys, "ks", "--config", str(config), "--local-address", "127.255.255.255", "--port", str(free_port()),
        "--run-dir", str(tmp_path / "run"), "--key-dir", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 2
    assert one_clear_line(out) == (
        "gdoi: gdoi-ks: address 127.255.255.255 is a broadcast address on this host; bind a unicast address "
        "of an interface"
    )


# --- control socket ------------------------------------------------------------------------------


def test_a_folder_where_the_control_socket_goes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    socket_path(run_dir, "ks").mkdir(parents=True)
    code, out = run(capsys, "show", "crypto", "gdoi", "--run-dir", str(run_dir))
    assert code == 2
    assert one_clear_line(out) == (
        f"gdoi: {run_dir}/gdoi-ks.sock is not a socket (remove it; a daemon puts its control socket there)"
    )
    config = write(tmp_path, "ks.yaml", KS_YAML)
    code, out = run(
        capsys, "ks", "--config", str(config), "--port", str(free_port()), "--run-dir", str(run_dir),
        "--key-dir", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 2
    assert one_clear_line(out) == (
        f"gdoi: gdoi-ks: {run_dir}/gdoi-ks.sock exists and is not a socket; remove it (the control socket "
        "goes there) or use another --run-dir"
    )


@contextlib.contextmanager
def answering(path: Path, answer: bytes) -> Iterator[None]:
    """Something on the control socket that answers every request with ``answer``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                with client:
                    client.recv(1 << 16)
                    client.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        {"ok": True},
        {"ok": True, "status": 5},
        {"ok": True, "status": {"role": "ks"}},
        {"ok": True, "status": {"role": "gm", "status": []}},
        {"ok": True, "status": {"role": ["ks"]}},
        {"ok": False, "error": {"nested": True}},
    ],
)
def test_show_against_unexpected_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, answer: Any) -> None:
    with answering(tmp_path / "gdoi-ks.sock", json.dumps(answer).encode()):
        code, out = run(capsys, "show", "crypto", "gdoi", "--run-dir", str(tmp_path))
    assert code == 2
    line = one_clear_line(out)
    assert line.startswith(("gdoi: cannot show the daemon's answer in", "gdoi: the daemon refused:")), line


@pytest.mark.parametrize("answer", [b"\xff\xfe{}", b"[" * 30_000, b'{"ok": tru'])
def test_show_against_an_answer_that_is_not_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, answer: bytes
) -> None:
    with answering(tmp_path / "gdoi-ks.sock", answer):
        code, out = run(capsys, "show", "crypto", "gdoi", "--run-dir", str(tmp_path))
    assert code == 2
    assert one_clear_line(out) == f"gdoi: the daemon at {tmp_path}/gdoi-ks.sock sent something that is not JSON"


@pytest.fixture
def ks_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Path]:
    """A real key server daemon (two groups) on 127.0.0.1, an ephemeral port; yields its run directory."""
    config = load_config(write(tmp_path, "ks.yaml", KS_YAML))
    assert isinstance(config, KeyServerConfig)
    run_dir = tmp_path / "run"
    settings = DaemonSettings(role="ks", local_address="127.0.0.1", port=0, run_dir=run_dir)
    caplog.set_level(logging.INFO)
    daemon = load_ks_daemon(config, settings, tmp_path / "keys", logging.getLogger("test.gdoi.ks"))
    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(daemon.run(ready=ready.set)), daemon=True)
    thread.start()
    assert ready.wait(20), "the key server did not start"
    try:
        yield run_dir
    finally:
        with contextlib.suppress(Exception):
            control_request(run_dir, {"cmd": "stop"}, timeout=5)
        thread.join(10)
        assert not thread.is_alive()


def raw_request(run_dir: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(socket_path(run_dir, "ks")))
        client.sendall(data)
        answer: dict[str, Any] = json.loads(client.makefile("rb").readline())
    return answer


def sequences(run_dir: Path) -> dict[str, int]:
    summary = control_request(run_dir, {"cmd": "summary"})["summary"]
    return {g["group_name"]: g["rekey_sequence"] for g in summary["groups"]}


def test_a_request_nested_30000_deep(ks_running: Path, caplog: pytest.LogCaptureFixture) -> None:
    answer = raw_request(ks_running, b"[" * 30_000 + b"\n")
    assert answer == {"ok": False, "error": "bad request: JSON nested too deeply"}
    assert control_request(ks_running, {"cmd": "summary"})["ok"]  # still serving
    logged = caplog.text
    assert "RecursionError" not in logged and "Traceback" not in logged


def test_rekey_with_a_group_that_is_not_a_name(ks_running: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sequences(ks_running)
    assert before == {"G1": 0, "G2": 0}
    answer = control_request(ks_running, {"cmd": "rekey", "group": 5})
    assert answer == {"ok": False, "error": 'rekey "group" must be a group name, not 5'}
    answer = control_request(ks_running, {"cmd": "rekey", "group": "G9"})
    assert answer == {"ok": False, "error": "cannot rekey: no group named G9"}
    code, out = run(capsys, "rekey", "--group", "G9", "--run-dir", str(ks_running))
    assert code == 1 and one_clear_line(out) == "gdoi: cannot rekey: no group named G9"
    assert sequences(ks_running) == before  # nothing was rekeyed
    assert control_request(ks_running, {"cmd": "rekey", "group": "G2"}) == {"ok": True}
    assert sequences(ks_running) == {"G1": 0, "G2": 1}


# --- keylog, log volume, where ACKs go (item 5) ------------------------------------------------------


def test_keylog_is_0600_even_when_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "keylog"
    path.write_text("")
    path.chmod(0o644)
    Keylog(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keylog_refuses_a_symlink_and_a_fifo(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "keylog"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        Keylog(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):  # no reader: open() would block forever
        Keylog(fifo)


def test_daemon_reports_a_symlinked_keylog_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "keylog").symlink_to(tmp_path / "elsewhere")
    config = write(tmp_path, "ks.yaml", KS_YAML)
    code, out = run(
        capsys, "ks", "--config", str(config), "--port", str(free_port()), "--run-dir", str(tmp_path / "run"),
        "--key-dir", str(tmp_path / "k"), "--keylog", str(tmp_path / "keylog"),
    )  # fmt: skip
    assert code == 2
    assert "cannot open the keylog" in one_clear_line(out) and "symbolic link" in out
    assert not (tmp_path / "elsewhere").exists()


def test_rejections_are_summed_up_per_interval() -> None:
    log = RejectionLog(interval_s=10)
    first = log.add(MessageRejected("10.0.0.1", "malformed", "short"), 100.0)
    assert first == "rejected a datagram from 10.0.0.1: malformed (short)"
    for i in range(5000):
        reason = "no-psk" if i % 5 == 0 else "malformed"
        assert log.add(MessageRejected(f"10.0.{i % 7}.2", reason, "x"), 100.0 + i / 1000) is None
    assert log.due() == 110.0
    assert log.flush() == "rejected 5000 more datagram(s) from 7 source(s) in 10 s: malformed 4000, no-psk 1000"
    assert log.flush() is None and log.due() is None
    # quiet again: the next one is shown in full at once
    assert (
        log.add(MessageRejected("10.0.0.9", "bad-hash", "y"), 200.0)
        == "rejected a datagram from 10.0.0.9: bad-hash (y)"
    )


def test_daemon_logs_a_flood_of_garbage_in_a_few_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(write(tmp_path, "ks.yaml", KS_YAML))
    assert isinstance(config, KeyServerConfig)
    settings = DaemonSettings(role="ks", local_address="127.0.0.1", port=0, run_dir=tmp_path / "run")
    caplog.set_level(logging.INFO)
    daemon: KsDaemon = load_ks_daemon(config, settings, tmp_path / "keys", logging.getLogger("test.gdoi.flood"))

    async def scenario() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(ready=ready.set))
        await asyncio.wait_for(ready.wait(), 20)
        for i in range(2000):
            daemon.on_datagram(b"garbage %d" % i, ("127.0.0.9", 848))
        daemon.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert rejected == [
        "gdoi-ks: rejected a datagram from 127.0.0.9: malformed (ISAKMP header at offset 0: only 9 of 28 bytes)",
        "gdoi-ks: rejected 1999 more datagram(s) from 1 source(s) in 10 s: malformed 1999",
    ]


def test_the_ack_goes_to_the_key_server_not_to_whoever_delivered_the_push() -> None:
    gm = "127.0.0.11"
    pushes: list[bytes] = []

    def hold_pushes(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        if src[0] == KS_ADDR and dst[0] == gm and data[18] == ExchangeType.GROUPKEY_PUSH:  # the exchange type byte
            pushes.append(data)
            return True
        return False

    net = make_lab(1)
    net.drop = hold_pushes
    net.ks().force_rekey(net.now)
    net.flush()
    net.drop = None
    assert pushes
    sent_before = len(net.captured)
    net.inject(pushes[0], ("192.0.2.66", 848), gm)  # delivered by a third party
    net.flush()
    acks = [c for c in net.captured[sent_before:] if c.src[0] == gm]
    assert [c.dst for c in acks] == [(KS_ADDR, 848)]
    assert not [e for e in net.events[gm] if isinstance(e, MessageRejected)]
