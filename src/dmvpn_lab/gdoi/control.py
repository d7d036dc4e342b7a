"""The daemons' control socket: one JSON request per connection, answered from a command table.

Server side, :class:`ControlServer` listens on ``<run-dir>/gdoi-<role>.sock`` (mode 0600) and hands each
request to the handler its ``cmd`` names; client side, :func:`control_request` (the CLI, the lab and the
tests) finds the daemon of a run directory and asks it.  Requests and answers are one JSON object each;
a refusal is ``{"ok": false, "error": "..."}``, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

CONTROL_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 64 * 1024

Request = dict[str, Any]
Answer = dict[str, Any]
ControlCommand = Callable[[Request], Awaitable[Answer]]


class NoDaemonError(Exception):
    """Nothing answers on the control socket of a run directory."""


def socket_path(run_dir: Path, role: str) -> Path:
    return run_dir / f"gdoi-{role}.sock"


def pid_path(run_dir: Path, role: str) -> Path:
    return run_dir / f"gdoi-{role}.pid"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# --- Client (used by the CLI, the lab and the tests) ----------------------------------------------


def find_daemon(run_dir: Path, role: str | None = None) -> Path:
    """The control socket of the daemon in ``run_dir`` (``role`` picks one when both a KS and GM run)."""
    roles = [role] if role else ["gm", "ks"]
    present = [socket_path(run_dir, r) for r in roles if socket_path(run_dir, r).exists()]
    for path in present:
        if not path.is_socket():
            raise NoDaemonError(f"{path} is not a socket (remove it; a daemon puts its control socket there)")
    if not present:
        raise NoDaemonError(_no_daemon_message(run_dir, role))
    if len(present) > 1:
        live = [p for p in present if answers(p)]
        if len(live) > 1:
            raise NoDaemonError(f"both a key server and a group member run in {run_dir}; pass --role ks|gm")
        present = live or present
    return present[0]


def _no_daemon_message(run_dir: Path, role: str | None) -> str:
    start = "gdoi ks --config ..." if role == "ks" else "gdoi gm --config ..."
    return f"no GDOI daemon is listening in {run_dir} (start one with `{start} --run-dir {run_dir}`)"


def answers(path: Path) -> bool:
    """Whether a daemon accepts connections on the control socket ``path`` (not a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(1.0)
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def control_request(
    run_dir: Path, request: Request, *, role: str | None = None, timeout: float = CONTROL_TIMEOUT_S
) -> Answer:
    """Send one JSON request to the daemon in ``run_dir``; returns its JSON answer."""
    path = find_daemon(run_dir, role)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NoDaemonError(_no_daemon_message(run_dir, role) + " (stale socket)") from None
        except PermissionError:
            raise NoDaemonError(f"permission denied on {path}: the control socket is root's") from None
        client.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        try:
            while True:
                chunk = client.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise NoDaemonError(f"the daemon at {path} did not answer within {timeout:.0f} s") from None
    try:
        answer = json.loads(b"".join(chunks) or b"null")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
        raise NoDaemonError(f"the daemon at {path} sent something that is not JSON") from None
    if not isinstance(answer, dict):
        raise NoDaemonError(f"the daemon at {path} closed the connection without an answer")
    return answer


# --- Server ---------------------------------------------------------------------------------------


class ControlServer:
    """Answers requests on a Unix socket with the handler its command table names for ``cmd``."""

    def __init__(self, path: Path, commands: Mapping[str, ControlCommand]) -> None:
        self.path = path
        self._commands = dict(commands)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.path))
        os.chmod(self.path, 0o600)  # the socket rekeys and stops the daemon: root's only

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def started(self) -> bool:
        return self._server is not None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S)
                request = json.loads(line[:MAX_REQUEST_BYTES] or b"null")
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ValueError('expected a JSON object with "cmd"')
                answer = await self._dispatch(request)
            except (ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            except RecursionError:  # json nests as deep as the request does
                answer = {"ok": False, "error": "bad request: JSON nested too deeply"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _dispatch(self, request: Request) -> Answer:
        command = self._commands.get(request["cmd"])
        if command is None:
            known = ", ".join(self._commands)
            return {"ok": False, "error": f"unknown command {request['cmd']!r} ({known})"}
        return await command(request)
