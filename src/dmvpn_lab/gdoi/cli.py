"""``gdoi``: run a GDOI key server or group member, and look at them the way IOS does.

One verb per job, netlab-style::

    gdoi ks --config ks.ios [--local-address A] [--run-dir D] [--key-dir D] [--port P] [--keylog F]
    gdoi gm --config gm.ios [--local-address A] [--xfrm-address NBMA] [--no-xfrm] [--server-port P] ...
    gdoi show crypto gdoi [ks members] | crypto isakmp sa | crypto ipsec sa   [--run-dir D] [--json]
    gdoi rekey [--run-dir D] [--group G]
    gdoi acks on|off [--run-dir D]
    gdoi stop [--run-dir D]
    gdoi check-config FILE [--local-address A]

Exit codes: 0 done (``check-config`` may still print warnings); 1 ``check-config`` found refused lines, or a
control request was refused;
2 bad usage, bad configuration, a daemon that cannot start, or no daemon to talk to.
Errors are one line that names the file:line or the run directory and says what to do next.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmvpn_lab.gdoi import show
from dmvpn_lab.gdoi.config import load_config, load_config_with_report
from dmvpn_lab.gdoi.config_model import GroupMemberConfig, KeyServerConfig
from dmvpn_lab.gdoi.config_report import ConfigError
from dmvpn_lab.gdoi.control import NoDaemonError, control_request
from dmvpn_lab.gdoi.daemon import DEFAULT_RUN_DIR, DaemonSettings, run_daemon
from dmvpn_lab.gdoi.daemon_errors import StartupError
from dmvpn_lab.gdoi.daemon_log import configure_logging
from dmvpn_lab.gdoi.gm_daemon import GmDaemon
from dmvpn_lab.gdoi.gm_kernel import ios_interface_address
from dmvpn_lab.gdoi.ks_daemon import DEFAULT_KEY_DIR, load_ks_daemon

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 1..65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdoi", description="GDOI (RFC 6407) key server and group member for the DMVPN lab."
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def daemon_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", required=True, type=Path, help="YAML or IOS configuration file")
        sub.add_argument("--local-address", type=_ipv4, help="address to bind (overrides the config)")
        sub.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="control socket + pid file")
        sub.add_argument("--port", type=_port, help="UDP port to bind (default 848)")
        sub.add_argument("--keylog", type=Path, help="append `<icookie> <key>` per IKE SA (Wireshark)")
        sub.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default info"
        )

    ks = verbs.add_parser("ks", help="run a key server")
    daemon_options(ks)
    ks.add_argument("--key-dir", type=Path, default=DEFAULT_KEY_DIR, help="RSA signing keys (kept)")

    gm = verbs.add_parser("gm", help="run a group member")
    daemon_options(gm)
    gm.add_argument("--xfrm-address", type=_ipv4, help="ESP endpoint: this router's NBMA address")
    gm.add_argument("--no-xfrm", action="store_true", help="do not touch the kernel (tests, captures)")
    gm.add_argument("--server-port", type=_port, help="the key servers' UDP port (default 848)")

    show_parser = verbs.add_parser(
        "show",
        aliases=["sh"],
        help="IOS-style show commands",
        description="Commands: "
        + "; ".join(" ".join(c.words) for c in show.SHOW_COMMANDS)
        + ". Words may be abbreviated.",
    )
    show_parser.add_argument("words", nargs="+", metavar="WORD", help="e.g. crypto gdoi ks members")
    _client_options(show_parser)
    show_parser.add_argument("--json", action="store_true", help="the command's JSON twin")

    rekey = verbs.add_parser("rekey", help="make the key server rekey now")
    _client_options(rekey)
    rekey.add_argument("--group", help="only this group (default: all)")

    acks = verbs.add_parser("acks", help="turn a group member's rekey ACKs on or off (lab switch)")
    acks.add_argument("state", choices=["on", "off"])
    _client_options(acks)

    stop = verbs.add_parser("stop", help="stop the daemon in the run directory")
    _client_options(stop)

    check = verbs.add_parser("check-config", help="list the lines of a config this implementation skips")
    check.add_argument("file", type=Path)
    check.add_argument("--local-address", type=_ipv4, help="as for `gdoi gm`")
    return parser


def _client_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help=f"default {DEFAULT_RUN_DIR}")
    sub.add_argument("--role", choices=["ks", "gm"], help="when a KS and a GM share the run directory")


def _error(message: str) -> int:
    print(f"gdoi: {message}", file=sys.stderr)
    return EXIT_ERROR


def _run_ks(args: argparse.Namespace) -> int:
    logger = configure_logging(args.log_level)
    try:
        config = load_config(args.config, local_address=args.local_address, port=args.port)
    except ConfigError as exc:
        return _error(str(exc))
    if not isinstance(config, KeyServerConfig):
        return _error(f"{args.config} configures a group member; run it with `gdoi gm`")
    settings = DaemonSettings(
        role="ks",
        local_address=config.local_address,
        port=config.port,
        run_dir=args.run_dir,
        keylog=args.keylog,
    )
    try:
        daemon = load_ks_daemon(config, settings, args.key_dir, logger)
    except StartupError as exc:
        return _error(f"gdoi-ks: {exc}")
    return run_daemon(daemon)


def _run_gm(args: argparse.Namespace) -> int:
    logger = configure_logging(args.log_level)
    try:
        # A pasted IOS config may name `local-address Loopback0` without its address: ask this node.
        config = load_config(args.config, local_address=args.local_address, interface_address=ios_interface_address)
    except ConfigError as exc:
        return _error(str(exc))
    if not isinstance(config, GroupMemberConfig):
        return _error(f"{args.config} configures a key server; run it with `gdoi ks`")
    if args.server_port is not None:
        from dataclasses import replace

        config = replace(config, server_port=args.server_port)
    settings = DaemonSettings(
        role="gm",
        local_address=config.local_address,
        port=args.port or 848,
        run_dir=args.run_dir,
        keylog=args.keylog,
        xfrm=not args.no_xfrm,
        xfrm_address=args.xfrm_address or config.local_address,
    )
    return run_daemon(GmDaemon(config, settings, logger))


def _request(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    return control_request(args.run_dir, payload, role=args.role)


def _run_show(args: argparse.Namespace) -> int:
    command = show.find_command(args.words)
    if command is None:
        known = "; ".join(" ".join(c.words) for c in show.SHOW_COMMANDS)
        return _error(f"unknown or ambiguous show command {' '.join(args.words)!r} (known: {known})")
    try:
        answer = _request(args, {"cmd": "status"})
    except NoDaemonError as exc:
        return _error(str(exc))
    if not answer.get("ok"):
        return _error(f"the daemon refused: {answer.get('error')}")
    try:
        view = show.view_from_json(answer.get("status"))
        output = show.render(command, view, as_json=args.json)
    except ValueError as exc:
        return _error(f"cannot show the daemon's answer in {args.run_dir}: {exc}")
    if isinstance(output, dict):
        print(json.dumps(output, indent=2, sort_keys=True))
    else:
        sys.stdout.write(output)
    return EXIT_OK


def _run_simple(args: argparse.Namespace, payload: dict[str, Any], done: str) -> int:
    try:
        answer = _request(args, payload)
    except NoDaemonError as exc:
        return _error(str(exc))
    if not answer.get("ok"):
        print(f"gdoi: {answer.get('error')}", file=sys.stderr)
        return EXIT_REFUSED
    print(done)
    return EXIT_OK


def _run_check(args: argparse.Namespace) -> int:
    try:
        config, report = load_config_with_report(args.file, local_address=args.local_address, checking=True)
    except ConfigError as exc:
        print(f"[ERROR   ] {exc}")
        return EXIT_REFUSED
    for line in report.render():
        print(line)
    if report.refused:
        return EXIT_REFUSED
    if isinstance(config, KeyServerConfig):
        for group in config.groups:
            print(
                f"[OK      ] group {group.name} (identity {group.identity}): {group.transform.value}, "
                f"TEK {group.tek_lifetime_s} s, KEK {group.kek_cipher.value} {group.kek_lifetime_s} s, "
                f"{group.rekey_transport.value} rekey, {len(config.psk_by_peer)} pre-shared key(s)"
                + (f", members authorized by {group.authorization.acl_name}" if group.authorization else "")
            )
    else:
        print(
            f"[OK      ] group member of {config.group_name} (identity {config.identity}), "
            f"key servers {', '.join(config.servers)}"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "ks":
        return _run_ks(args)
    if args.verb == "gm":
        return _run_gm(args)
    if args.verb in ("show", "sh"):
        return _run_show(args)
    if args.verb == "rekey":
        payload: dict[str, Any] = {"cmd": "rekey"}
        if args.group:
            payload["group"] = args.group
        return _run_simple(args, payload, "rekey started")
    if args.verb == "acks":
        return _run_simple(args, {"cmd": "acks", "enabled": args.state == "on"}, f"rekey ACKs {args.state}")
    if args.verb == "stop":
        return _run_simple(args, {"cmd": "stop"}, "stopping")
    if args.verb == "check-config":
        return _run_check(args)
    parser.error(f"unknown verb {args.verb}")
    return EXIT_ERROR  # not reached: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
