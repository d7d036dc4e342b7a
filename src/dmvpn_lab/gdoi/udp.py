"""The daemons' UDP sockets: the unicast one a daemon binds and a GM's rekey multicast group.

Startup problems come back as :class:`~dmvpn_lab.gdoi.daemon_errors.StartupError` with one sentence that
says what to do.
"""

from __future__ import annotations

import errno
import socket
import struct

from dmvpn_lab.gdoi.daemon_errors import StartupError


def bind_udp(address: str, port: int) -> socket.socket:
    """A UDP socket bound to ``(address, port)``, or a :class:`StartupError` that says why not."""
    if _is_broadcast(address):
        raise StartupError(
            f"address {address} is a broadcast address on this host; bind a unicast address of an interface"
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                f"address {address} is not assigned to an interface of this host "
                f"(add it, e.g. `ip addr add {address}/32 dev lo`, or fix --local-address)"
            ) from None
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"UDP port {port} on {address} is already in use (another gdoi daemon? "
                f"see `ss -ulpn 'sport = :{port}'`)"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"binding UDP port {port} needs root (or CAP_NET_BIND_SERVICE)") from None
        raise StartupError(f"cannot bind UDP {address}:{port}: {exc.strerror}") from None
    _grow_buffers(sock)
    sock.setblocking(False)
    return sock


def _is_broadcast(address: str) -> bool:
    """Whether the kernel routes ``address`` as a broadcast (a subnet's directed broadcast included).

    Linux lets a socket bind to one, but only the routing table knows which addresses they are: a UDP
    socket without SO_BROADCAST is refused (EACCES) when it connects to one, and nothing is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except PermissionError:
            return True
        except OSError:
            return False
    return False


SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


def _grow_buffers(sock: socket.socket) -> None:
    """Room for a burst: a thousand GMs registering at once must not overflow the default 208 KiB."""
    force = {
        socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", None),
        socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", None),
    }
    for option, forced in force.items():
        for name in (forced, option):
            if name is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, name, SOCKET_BUFFER_BYTES)
                break
            except OSError:
                continue  # not root: fall back to the capped, unforced size


def join_multicast(group: str, port: int, interface_address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface_address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock
