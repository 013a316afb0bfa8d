"""Forwarding paths: one module each, one interface (harness.paths.base.ForwardPath).

Adding a path: write harness/paths/<name>.py with a ForwardPath subclass and
add it to PATHS below. Nothing else in the harness names paths, except the
`compare` verb, which maps the spec's fixed set to its JSON keys.
"""

from __future__ import annotations

from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.paths.client import ClientCappedPath, ClientPath
from harness.paths.direct import DirectPath
from harness.paths.haproxy import HaproxyBigbufPath, HaproxyPath, HaproxySplicePath
from harness.paths.iptables import IptablesPath
from harness.paths.nft_flowtable import NftFlowtablePath
from harness.paths.nftables import NftablesPath
from harness.paths.nginx import NginxBigbufPath, NginxPath
from harness.paths.reference import ReferencePath
from harness.paths.rinetd import RinetdPath
from harness.paths.socat import SocatBigbufPath, SocatPath
from harness.paths.ssh import SshPath
from harness.paths.standalone import (
    StandaloneCappedPath,
    StandaloneCopyPath,
    StandalonePath,
    StandaloneTwoWorkersPath,
)

PATHS: dict[str, type[ForwardPath]] = {
    "direct": DirectPath,
    "iptables": IptablesPath,
    "reference": ReferencePath,
    "standalone": StandalonePath,
    "standalone_copy": StandaloneCopyPath,
    "standalone_capped": StandaloneCappedPath,
    "standalone_w2": StandaloneTwoWorkersPath,
    "client": ClientPath,
    "client_capped": ClientCappedPath,
    # Comparable forwarders (peers): defaults, and buffers comparable to Portunus's.
    "nftables": NftablesPath,
    "haproxy": HaproxyPath,
    "haproxy_bigbuf": HaproxyBigbufPath,
    "haproxy_splice": HaproxySplicePath,
    "nginx": NginxPath,
    "nginx_bigbuf": NginxBigbufPath,
    "socat": SocatPath,
    "socat_bigbuf": SocatBigbufPath,
    "rinetd": RinetdPath,
    "ssh": SshPath,
    # Kernel flow offload: forwarded topologies only (netns, hosts).
    "nft_flowtable": NftFlowtablePath,
}

__all__ = ["PATHS", "Availability", "Endpoint", "ForwardPath", "PathSetup"]
