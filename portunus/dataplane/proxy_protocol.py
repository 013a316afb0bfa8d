"""PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy specifies them.

The header tells the target who the real client is: source = the client's
address, destination = the address the client connected to on our listener.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_VERSION_PROXY = 0x21  # version 2, command PROXY
_V2_FAMILY: dict[tuple[int, int], int] = {
    (4, socket.SOCK_STREAM): 0x11,  # AF_INET, STREAM
    (6, socket.SOCK_STREAM): 0x21,  # AF_INET6, STREAM
    (4, socket.SOCK_DGRAM): 0x12,
    (6, socket.SOCK_DGRAM): 0x22,
}


def _normalise(addr: tuple) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a v4 client on a dual-stack listener is a v4 client
    return ip, int(addr[1])


def build_header(version: str, src: tuple, dst: tuple, kind: int = socket.SOCK_STREAM) -> bytes:
    """Header for a connection from `src` to `dst` (socket address tuples)."""
    sip, sport = _normalise(src)
    dip, dport = _normalise(dst)
    if sip.version != dip.version:
        # Mixed families cannot be expressed; map both to v6 as the spec allows.
        sip = sip if sip.version == 6 else ipaddress.IPv6Address(f"::ffff:{sip}")
        dip = dip if dip.version == 6 else ipaddress.IPv6Address(f"::ffff:{dip}")
    if version == "v1":
        if kind != socket.SOCK_STREAM:
            raise ValueError("PROXY protocol v1 describes TCP only")
        fam = "TCP4" if sip.version == 4 else "TCP6"
        return f"PROXY {fam} {sip} {dip} {sport} {dport}\r\n".encode("ascii")
    if version == "v2":
        body = sip.packed + dip.packed + struct.pack("!HH", sport, dport)
        return V2_SIGNATURE + struct.pack("!BBH", _V2_VERSION_PROXY, _V2_FAMILY[(sip.version, kind)], len(body)) + body
    raise ValueError(f"unknown PROXY protocol version {version!r}")
