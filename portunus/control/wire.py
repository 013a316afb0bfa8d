"""The gRPC contract between portunus-server and portunus-client.

JSON over gRPC with generic handlers (no generated code to drift): each gRPC
message is one UTF-8 JSON object. Two methods:

    /portunus.control.v1.Control/Enroll   unary:  EnrollRequest -> EnrollResponse
    /portunus.control.v1.Control/Session  bidirectional stream:

    server -> client   {"type": "challenge", "nonce": b64}               first, once
                       {"type": "ruleset", "signed": {payload, signature}} full, then deltas
    client -> server   {"type": "hello", "client", "signature", "version", "agent"}  first, once
                       {"type": "ack", "version", "results": {rule: null | reason}}
                       {"type": "rejected", "version", "reason"}   bundle refused, old rules kept
                       {"type": "resync", "reason"}                 delta gap: send the full set
                       {"type": "stats", "rules": {rule: counters}, "active_connections",
                        "quotas": {owner: {"period_start", "used_bytes"}}}   (quotas: optional)

The hello signature is the client's Ed25519 signature (context
`SESSION_CONTEXT`) over nonce + client name: the server learns the client's
public key at enrollment, so a session proves possession of the private key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from portunus.metrics import parse_rule_counters

SERVICE = "portunus.control.v1.Control"
ENROLL_METHOD = f"/{SERVICE}/Enroll"
SESSION_METHOD = f"/{SERVICE}/Session"

# 1,000 rules are ~300 KB of JSON; leave room for ranges of big fleets.
MAX_MESSAGE_BYTES = 64 << 20
# HTTP/2 keepalive: notice a silently dead peer (cable pulled, host frozen)
# within about KEEPALIVE_TIME + KEEPALIVE_TIMEOUT; a killed process is noticed
# at once because the kernel resets its sockets.
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000

CLIENT_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # While the server is away the client's one channel keeps dialing on this
    # backoff (gRPC adds +-20% jitter), so a returning server is seen within
    # ~2 s and the client's own, longer backoff is cut short (see client.py).
    # A refused dial costs a SYN and a RST; a fleet of 1,000 sends ~500 a second.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
)


def session_proof_bytes(nonce_b64: str, client: str) -> bytes:
    """What a client signs to open a session: the server's nonce and its own name."""
    return base64.b64decode(nonce_b64) + b"\0" + client.encode()


class WireError(ValueError):
    """A message that does not follow the contract."""


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(data)
    except ValueError as e:
        raise WireError(f"message is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise WireError("message is not a JSON object")
    return msg


def _str(msg: dict[str, Any], key: str) -> str:
    v = msg.get(key)
    if not isinstance(v, str):
        raise WireError(f"{msg.get('type', 'message')}: {key} must be a string")
    return v


# Versions and counts travel as JSON integers; SQLite (and every gauge) holds at most 2^63 - 1.
MAX_WIRE_INT = 2**63 - 1


def _int(msg: dict[str, Any], key: str) -> int:
    v = msg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_WIRE_INT:
        raise WireError(f"{msg.get('type', 'message')}: {key} must be an integer from 0 to {MAX_WIRE_INT}")
    return v


# ------------------------------------------------------------------ enroll


@dataclass(frozen=True)
class EnrollRequest:
    secret: str
    public_key: str
    agent: str

    def to_wire(self) -> dict[str, Any]:
        return {"secret": self.secret, "public_key": self.public_key, "agent": self.agent}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> EnrollRequest:
        return cls(_str(msg, "secret"), _str(msg, "public_key"), str(msg.get("agent", "")))


@dataclass(frozen=True)
class EnrollResponse:
    client: str
    signing_public_key: str

    def to_wire(self) -> dict[str, Any]:
        return {"client": self.client, "signing_public_key": self.signing_public_key}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> EnrollResponse:
        return cls(_str(msg, "client"), _str(msg, "signing_public_key"))


# ------------------------------------------------------------------ client -> server


@dataclass(frozen=True)
class Hello:
    client: str
    signature: str
    version: int
    agent: str


@dataclass(frozen=True)
class Ack:
    version: int
    results: dict[str, str | None]


@dataclass(frozen=True)
class Rejected:
    version: int | None
    reason: str


@dataclass(frozen=True)
class Resync:
    reason: str


@dataclass(frozen=True)
class Stats:
    rules: dict[str, Any]
    active_connections: int
    quotas: dict[str, dict[str, Any]] | None = None  # {owner: {"period_start", "used_bytes"}}


ClientMessage = Hello | Ack | Rejected | Resync | Stats


def parse_client_message(msg: dict[str, Any]) -> ClientMessage:
    kind = msg.get("type")
    if kind == "hello":
        return Hello(_str(msg, "client"), _str(msg, "signature"), _int(msg, "version"), str(msg.get("agent", "")))
    if kind == "ack":
        results = msg.get("results")
        if not isinstance(results, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in results.items()):
            raise WireError("ack: results must map rule names to null or a failure reason")
        return Ack(_int(msg, "version"), results)
    if kind == "rejected":
        v = msg.get("version")
        return Rejected(v if isinstance(v, int) and not isinstance(v, bool) else None, _str(msg, "reason"))
    if kind == "resync":
        return Resync(str(msg.get("reason", "")))
    if kind == "stats":
        try:
            rules = parse_rule_counters(msg.get("rules"))
        except ValueError as e:
            raise WireError(f"stats: {e}") from None
        return Stats(rules, _int(msg, "active_connections"), _quota_usage(msg.get("quotas")))
    raise WireError(f"unknown client message type {kind!r}")


def _quota_usage(data: Any) -> dict[str, dict[str, Any]] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or len(data) > MAX_QUOTA_OWNERS:
        raise WireError(f"stats: quotas must be an object of at most {MAX_QUOTA_OWNERS} owners")
    out = {}
    for owner, u in data.items():
        if not isinstance(u, dict):
            raise WireError(f"stats: quota usage of {owner!r} must be an object")
        start = u.get("period_start")
        if not isinstance(start, (int, float)) or isinstance(start, bool) or not 0 <= start < 253402300800:
            raise WireError(f"stats: quota usage of {owner!r}: period_start must be seconds since the epoch")
        out[str(owner)] = {"period_start": float(start), "used_bytes": _int(u, "used_bytes")}
    return out


# More owners than any client runs; a report beyond it is malformed.
MAX_QUOTA_OWNERS = 100_000


def hello(client: str, signature: str, version: int, agent: str) -> dict[str, Any]:
    return {"type": "hello", "client": client, "signature": signature, "version": version, "agent": agent}


def ack(version: int, results: dict[str, str | None]) -> dict[str, Any]:
    return {"type": "ack", "version": version, "results": results}


def rejected(version: int | None, reason: str) -> dict[str, Any]:
    return {"type": "rejected", "version": version, "reason": reason}


def resync(reason: str) -> dict[str, Any]:
    return {"type": "resync", "reason": reason}


def stats(rules: dict[str, Any], active_connections: int,
          quotas: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {"type": "stats", "rules": rules, "active_connections": active_connections}
    if quotas:
        out["quotas"] = quotas
    return out


# ------------------------------------------------------------------ server -> client


@dataclass(frozen=True)
class Challenge:
    nonce: str


@dataclass(frozen=True)
class RuleSetMessage:
    signed: dict[str, Any]


ServerMessage = Challenge | RuleSetMessage


def parse_server_message(msg: dict[str, Any]) -> ServerMessage:
    kind = msg.get("type")
    if kind == "challenge":
        return Challenge(_str(msg, "nonce"))
    if kind == "ruleset":
        signed = msg.get("signed")
        if not isinstance(signed, dict):
            raise WireError("ruleset: signed must be an object")
        return RuleSetMessage(signed)
    raise WireError(f"unknown server message type {kind!r}")


def challenge(nonce: str) -> dict[str, Any]:
    return {"type": "challenge", "nonce": nonce}


def ruleset(signed: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ruleset", "signed": signed}
