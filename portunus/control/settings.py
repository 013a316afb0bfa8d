"""`D/server.toml` -> validated, immutable `ServerSettings`.

Same standards as the rule TOML: unknown keys are rejected, every problem is
reported at once, and each message names the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portunus.bounds import Bounded, show
from portunus.config import LOG_FORMATS, LOG_LEVELS, ConfigError, read_toml
from portunus.control.files import others_may_access
from portunus.runtime import parse_host_port

# An operator token is a bearer secret and an admin's: 32 characters of
# gen-token's alphabet carry 192 bits; `portunus-server gen-token` makes 43.
MIN_TOKEN_CHARS = 32
# How long a one-time enrollment URI stays valid unless the request says otherwise.
DEFAULT_ENROLLMENT_TTL_SECS = 3600.0
# How long POST/PUT /v1/rules waits for the client's Active/Failed ack before
# answering 504; applying a rule is a bind() or two, so seconds are plenty.
DEFAULT_ACK_TIMEOUT_SECS = 10.0
# A one-time URI is a bearer secret in transit: a week covers any hand-over.
MAX_ENROLLMENT_TTL_SECS = 7 * 86400
# An API call waiting longer than an hour for a bind() is waiting for nothing.
MAX_ACK_TIMEOUT_SECS = 3600.0
ENROLLMENT_TTL_SECS = Bounded(False, 0, MAX_ENROLLMENT_TTL_SECS, "seconds", lo_open=True)
ACK_TIMEOUT_SECS = Bounded(False, 0, MAX_ACK_TIMEOUT_SECS, "seconds", lo_open=True)

WILDCARD_HOSTS = ("0.0.0.0", "::")

SERVER_KEYS = (
    "control_listen",
    "operator_http_listen",
    "metrics_listen",
    "operator_token",
    "advertised_endpoint",
    "enrollment_ttl_secs",
    "ack_timeout_secs",
    "log_level",
    "log_format",
)
REQUIRED_KEYS = ("control_listen", "operator_http_listen", "operator_token")


@dataclass(frozen=True)
class ServerSettings:
    control_listen: str
    operator_http_listen: str
    operator_token: str
    metrics_listen: str | None = None
    advertised_endpoint: str = ""
    enrollment_ttl_secs: float = DEFAULT_ENROLLMENT_TTL_SECS
    ack_timeout_secs: float = DEFAULT_ACK_TIMEOUT_SECS
    log_level: str = "info"
    log_format: str = "pretty"

    @property
    def endpoint(self) -> str:
        """The control endpoint clients dial (advertised_endpoint, else control_listen)."""
        return self.advertised_endpoint or self.control_listen


def parse_server_settings(data: Mapping[str, Any], source: str = "server.toml") -> ServerSettings:
    """Validate a parsed server.toml; raise ConfigError listing every problem."""
    problems: list[str] = []

    def bad(key: str, message: str) -> None:
        problems.append(f"{source}: {key}: {message}")

    for key in data:
        if key not in SERVER_KEYS:
            bad(key, f"unknown key (allowed: {', '.join(SERVER_KEYS)})")
    for key in REQUIRED_KEYS:
        if key not in data:
            bad(key, "missing")

    values: dict[str, Any] = {}
    for key in ("control_listen", "operator_http_listen", "metrics_listen", "advertised_endpoint"):
        if key not in data:
            continue
        v = data[key]
        if not isinstance(v, str):
            bad(key, f'must be a string "HOST:PORT", got {show(v)}')
            continue
        try:
            parse_host_port(v, key)
        except ValueError as e:
            bad(key, str(e))
            continue
        values[key] = v

    token = data.get("operator_token")
    if "operator_token" in data:
        if not isinstance(token, str) or not token.strip():
            bad("operator_token", "must be a non-empty string (generate one with `portunus-server gen-token`)")
        elif len(token) < MIN_TOKEN_CHARS or token != token.strip():
            bad("operator_token", f"must be at least {MIN_TOKEN_CHARS} characters without surrounding "
                "spaces (generate one with `portunus-server gen-token`)")
        else:
            values["operator_token"] = token

    for key, typ in (("enrollment_ttl_secs", ENROLLMENT_TTL_SECS), ("ack_timeout_secs", ACK_TIMEOUT_SECS)):
        if key in data:
            problem = typ.problem(data[key])
            if problem is not None:
                bad(key, problem)
            else:
                values[key] = typ.coerce(data[key])
    if "log_level" in data:
        if data["log_level"] not in LOG_LEVELS:
            bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {show(data['log_level'])}")
        else:
            values["log_level"] = data["log_level"]
    if "log_format" in data:
        if data["log_format"] not in LOG_FORMATS:
            bad("log_format", f'must be "json" or "pretty", got {show(data["log_format"])}')
        else:
            values["log_format"] = data["log_format"]

    # Enrollment URIs carry the endpoint clients dial: a wildcard bind address is no address to dial.
    endpoint_key = "advertised_endpoint" if "advertised_endpoint" in values else "control_listen"
    if endpoint_key in values and parse_host_port(values[endpoint_key])[0] in WILDCARD_HOSTS:
        bad(endpoint_key, f"{values[endpoint_key]} binds every address but is no address a client can dial, and "
            "enrollment URIs would carry it; set advertised_endpoint to the HOST:PORT clients reach "
            '(e.g. advertised_endpoint = "ctl.example.com:7443")')

    listens = [(k, values[k]) for k in ("control_listen", "operator_http_listen", "metrics_listen") if k in values]
    for i, (k, v) in enumerate(listens):
        for k2, v2 in listens[:i]:
            if v == v2:
                bad(k, f"same address as {k2} ({v}); each listener needs its own port")

    if problems:
        raise ConfigError(problems)
    return ServerSettings(**values)


def readable_by_others_warning(path: str | Path) -> str | None:
    """A loud warning if server.toml (which holds operator_token) is open to group or others."""
    mode = others_may_access(Path(path))
    if mode is None:
        return None
    return (f"{path} is mode {mode:04o}: other local users can read operator_token, an admin token; "
            f"run `chmod 600 {path}` and rotate the token (see README 'Security')")


def load_server_settings(path: str | Path) -> ServerSettings:
    """Read and validate server.toml; raise ConfigError (unreadable file included)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"{path}: not found (create it with control_listen, operator_http_listen, "
                           "metrics_listen and operator_token; see README 'Control plane')"])
    mode = others_may_access(path)
    if mode is not None and mode & 0o022:
        raise ConfigError([f"{path}: mode {mode:04o} lets other users change it (and so the admin token and "
                           f"the listeners); run `chmod 600 {path}`"])
    return parse_server_settings(read_toml(path), str(path))
