"""Grants: which clients, listen ports and protocols a user may put rules on.

A grant is (user, client name or "*", listen_port_start..listen_port_end,
protocols). A rule of a user is allowed when ONE grant covers its client,
its protocol and its whole listen range. When none does, the refusal names
the first thing no grant allows, checked from the coarsest down:

    client_not_granted     no grant names this client (or "*")
    protocol_not_granted   grants for the client exist, none for this protocol
    port_outside_grant     the protocol is granted there, not for these ports
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portunus.bounds import is_int, show
from portunus.config import PROTOCOLS, Rule, valid_name

ANY_CLIENT = "*"
GRANT_KEYS = ("user_id", "client", "listen_port_start", "listen_port_end", "protocols")


@dataclass(frozen=True)
class Grant:
    client: str
    port_start: int
    port_end: int
    protocols: tuple[str, ...]

    def covers_client(self, client: str) -> bool:
        return self.client in (ANY_CLIENT, client)


class GrantError(ValueError):
    """A grant request that does not validate; `problems` holds one line per issue."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def parse_grant(data: Mapping[str, Any]) -> tuple[int, Grant]:
    """(user id, Grant) from a POST /v1/grants body; GrantError lists every problem."""
    problems = [f"{k}: unknown key (allowed: {', '.join(GRANT_KEYS)})" for k in data if k not in GRANT_KEYS]
    user_id: Any = data.get("user_id")
    if not is_int(user_id) or user_id < 1:
        problems.append(f"user_id: must be a user's id (a positive integer), got {show(user_id)}")
    client = data.get("client")
    if not (client == ANY_CLIENT or valid_name(client)):
        problems.append(f'client: must be a client name or "*", got {show(client)}')
    ports: list[int] = []
    for key in ("listen_port_start", "listen_port_end"):
        v: Any = data.get(key)
        if not is_int(v) or not 1 <= v <= 65535:
            problems.append(f"{key}: must be a port from 1 to 65535, got {show(v)}")
        else:
            ports.append(int(v))
    if len(ports) == 2 and ports[0] > ports[1]:
        problems.append(f"listen_port_start {ports[0]} is above listen_port_end {ports[1]}")
    protocols = data.get("protocols", list(PROTOCOLS))
    if (not isinstance(protocols, list) or not protocols or any(p not in PROTOCOLS for p in protocols)
            or len(set(protocols)) != len(protocols)):
        problems.append(f'protocols: must be a non-empty list of "tcp" and/or "udp", got {show(protocols)}')
    if problems:
        raise GrantError(problems)
    return int(user_id), Grant(str(client), ports[0], ports[1], tuple(sorted(protocols)))


def refusal(grants: Sequence[Grant], client: str, rule: Rule) -> str | None:
    """None if one grant allows `rule` on `client`, else the reason (see the module docstring)."""
    for_client = [g for g in grants if g.covers_client(client)]
    if not for_client:
        return "client_not_granted"
    for_protocol = [g for g in for_client if rule.protocol in g.protocols]
    if not for_protocol:
        return "protocol_not_granted"
    if any(g.port_start <= rule.listen_port and rule.listen_port_end <= g.port_end for g in for_protocol):
        return None
    return "port_outside_grant"


def describe(grants: Sequence[Grant], client: str, rule: Rule, reason: str) -> str:
    """A message for a refusal: what was asked, and what the grants allow."""
    ports = f"{rule.listen_port}" + (f"-{rule.listen_port_end}" if rule.listen_port_end != rule.listen_port else "")
    allowed = [f"{g.client} {g.port_start}-{g.port_end} {'/'.join(g.protocols)}" for g in grants] or ["nothing"]
    what = {"client_not_granted": f'client "{client}" is not granted to you',
            "protocol_not_granted": f'{rule.protocol} is not granted to you on client "{client}"',
            "port_outside_grant": f'{rule.protocol} port(s) {ports} on client "{client}" are outside your grants'}
    return f"{what[reason]} (your grants: {'; '.join(allowed)})"
