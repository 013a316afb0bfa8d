"""TOML rule files -> validated, immutable rule model.

Every problem found is reported, not just the first, and each message names
the file, the rule (by name and position) and the key, so an operator can fix
a file in one pass. The same validation serves the control plane's JSON rules
(`parse_rule`), so a rule means the same thing wherever it comes from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from portunus.bounds import Bounded, is_int, is_number, show

PROTOCOLS = ("tcp", "udp")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "pretty")
PROXY_PROTOCOLS = ("v1", "v2")
# Traffic quota periods: "monthly" resets on `reset_day` at 00:00 UTC, "daily"
# at 00:00 UTC, "never" is a one-off budget (portunus.quota).
QUOTA_PERIODS = ("monthly", "daily", "never")

DEFAULT_UDP_MAX_FLOWS = 1024
DEFAULT_UDP_FLOW_IDLE_SECS = 60.0
# Long enough for a short transfer to finish, short enough that a service
# manager's stop timeout (systemd: 90 s) is never hit.
DEFAULT_SHUTDOWN_DRAIN_SECS = 10.0
# A TCP connection with no bytes either way for this long is closed: one hour,
# like HAProxy's commonly used `timeout tunnel 1h` (long-lived but quiet
# sessions survive; peers that vanished do not hold sockets forever).
DEFAULT_IDLE_TIMEOUT_SECS = 3600.0
# TCP keepalive idle time before the first probe on both sockets of a
# forwarded connection: notices a vanished peer long before the idle timeout.
DEFAULT_TCP_KEEPALIVE_SECS = 60.0
# Worker loops sharing the listeners; `auto` = CPUs. One until the data plane's
# measurements say more pays off.
DEFAULT_WORKERS = 1
# SNI routing reads the TLS ClientHello before choosing a rule. A real client sends
# it right after the TCP handshake; 5 s (HAProxy's usual `tcp-request inspect-delay`)
# covers slow links, while a client that stalls is closed instead of holding a socket.
DEFAULT_SNI_PEEK_TIMEOUT_SECS = 5.0
# One full TLS record (2^14 bytes + 5-byte header): every ClientHello seen in
# practice fits, post-quantum key shares (~1.2 KiB) included.
DEFAULT_SNI_PEEK_MAX_BYTES = 16384 + 5

# Upper bounds of numeric fields: far above any real use, and low enough that
# the float arithmetic downstream (token buckets, timers, select()) stays finite.
# 10^12 bytes/s is 8 Tbit/s, beyond any NIC.
MAX_BANDWIDTH_BPS = 10**12
# 2^53: the largest integer a float (the token bucket's type) holds exactly.
MAX_BURST_BYTES = 2**53
# Ten million connections (per second, or at once) is beyond what one host
# accepts or has file descriptors for.
MAX_CONNECTIONS = 10**7
# A thousandth of a connection per second (one per ~17 min) is the slowest
# rate worth a limit; smaller ones underflow the bucket's arithmetic.
MIN_CONNECTIONS_PER_SEC = 0.001
# Each UDP flow holds a socket: a million is far beyond the fd limit.
MAX_UDP_FLOWS = 10**6
# 30 days: longer than any sensible idle, drain or enrollment time.
MAX_DURATION_SECS = 30 * 86400
# Linux refuses TCP_KEEPIDLE above 32767 s (MAX_TCP_KEEPIDLE in the kernel).
MAX_TCP_KEEPALIVE_SECS = 32767
# 16 bits, like DNS SRV priorities: plenty of room for failover tiers.
MAX_PRIORITY = 65535
# Beyond 64 worker loops a single process gains nothing on any host we target.
MAX_WORKERS = 64
# A ClientHello with a server name needs about 100 bytes; 512 leaves room for the
# smallest real ones. 64 KiB (four full records) bounds what one peek may buffer.
MIN_SNI_PEEK_BYTES = 512
MAX_SNI_PEEK_BYTES = 64 * 1024
# A peek longer than 5 minutes only holds sockets for clients that will not finish.
MAX_SNI_PEEK_TIMEOUT_SECS = 300
# Probing a target more often than once a second adds load and no faster failover
# than the probe's own timeout allows; a day is the longest interval worth a timer.
MIN_HEALTH_CHECK_INTERVAL_SECS = 1
MAX_HEALTH_CHECK_INTERVAL_SECS = 86400

# Field types: one schema for the TOML, the operator API and pushed rule sets.
BANDWIDTH_BPS = Bounded(True, 1, MAX_BANDWIDTH_BPS, "bytes per second")
BURST_BYTES = Bounded(True, 1, MAX_BURST_BYTES, "bytes")
CONNECTIONS_PER_SEC = Bounded(False, MIN_CONNECTIONS_PER_SEC, MAX_CONNECTIONS, "connections per second")
CONNECTIONS = Bounded(True, 1, MAX_CONNECTIONS, "connections")
UDP_FLOWS = Bounded(True, 1, MAX_UDP_FLOWS, "flows")
IDLE_SECS = Bounded(False, 0, MAX_DURATION_SECS, "seconds", lo_open=True)
KEEPALIVE_SECS = Bounded(False, 0, MAX_TCP_KEEPALIVE_SECS, "seconds", lo_open=True)
DRAIN_SECS = Bounded(False, 0, MAX_DURATION_SECS, "seconds")
PRIORITY = Bounded(True, 0, MAX_PRIORITY)
WORKERS = Bounded(True, 1, MAX_WORKERS, 'worker loops, or "auto"')
SNI_PEEK_SECS = Bounded(False, 0, MAX_SNI_PEEK_TIMEOUT_SECS, "seconds", lo_open=True)
SNI_PEEK_BYTES = Bounded(True, MIN_SNI_PEEK_BYTES, MAX_SNI_PEEK_BYTES, "bytes")
HEALTH_CHECK_SECS = Bounded(False, MIN_HEALTH_CHECK_INTERVAL_SECS, MAX_HEALTH_CHECK_INTERVAL_SECS, "seconds")
# A quota counter is a double (portunus.limits.QUOTA_CELL): exact up to 2^53 bytes.
QUOTA_BYTES = Bounded(True, 1, 2**53, "bytes")
# Days past the 28th exist in some months only: such a day means the month's last day there.
RESET_DAY = Bounded(True, 1, 31, "day of the month")

_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def valid_name(v: Any) -> TypeGuard[str]:
    """True for a rule, owner, client or token name: 1-128 of letters, digits, '_.:-', whole string."""
    return isinstance(v, str) and _NAME_RE.fullmatch(v) is not None


class ConfigError(Exception):
    """A config (or rule) that does not validate; `problems` holds one line per issue."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class RateLimit:
    """Limits of a rule or an owner. Bandwidth in BYTES per second; None = unlimited."""

    bandwidth_in_bps: int | None = None
    bandwidth_out_bps: int | None = None
    new_connections_per_sec: float | None = None
    concurrent_connections: int | None = None
    bandwidth_in_burst: int | None = None
    bandwidth_out_burst: int | None = None
    new_connections_burst: int | None = None

    @property
    def has_bandwidth_cap(self) -> bool:
        return self.bandwidth_in_bps is not None or self.bandwidth_out_bps is not None

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in self.to_dict().values())

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RATE_LIMIT_KEYS}


RATE_LIMIT_KEYS = (
    "bandwidth_in_bps",
    "bandwidth_out_bps",
    "new_connections_per_sec",
    "concurrent_connections",
    "bandwidth_in_burst",
    "bandwidth_out_burst",
    "new_connections_burst",
)
RATE_LIMIT_TYPES = {
    "bandwidth_in_bps": BANDWIDTH_BPS,
    "bandwidth_out_bps": BANDWIDTH_BPS,
    "new_connections_per_sec": CONNECTIONS_PER_SEC,
    "concurrent_connections": CONNECTIONS,
    "bandwidth_in_burst": BURST_BYTES,
    "bandwidth_out_burst": BURST_BYTES,
    "new_connections_burst": CONNECTIONS,
}
# Numeric rule keys whose default comes from [defaults].
_RULE_NUMBERS = {
    "udp_max_flows": UDP_FLOWS,
    "udp_flow_idle_secs": IDLE_SECS,
    "idle_timeout_secs": IDLE_SECS,
    "tcp_keepalive_secs": KEEPALIVE_SECS,
    "sni_peek_timeout_secs": SNI_PEEK_SECS,
    "sni_peek_max_bytes": SNI_PEEK_BYTES,
}


@dataclass(frozen=True)
class Target:
    """One upstream. `port_end` > `port` only for a port-range target."""

    host: str
    port: int
    port_end: int
    priority: int = 0
    proxy_protocol: str | None = None

    def port_for(self, offset: int) -> int:
        return self.port + offset if self.port_end != self.port else self.port

    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        ports = f"{self.port}-{self.port_end}" if self.port_end != self.port else str(self.port)
        return f"{host}:{ports}"


@dataclass(frozen=True)
class Rule:
    """A forwarding rule: listen ports -> targets, with optional limits."""

    name: str
    protocol: str
    listen_addr: str
    listen_port: int
    listen_port_end: int
    targets: tuple[Target, ...]
    owner: str | None = None
    rate_limit: RateLimit = field(default_factory=RateLimit)
    udp_max_flows: int = DEFAULT_UDP_MAX_FLOWS
    udp_flow_idle_secs: float = DEFAULT_UDP_FLOW_IDLE_SECS
    idle_timeout_secs: float = DEFAULT_IDLE_TIMEOUT_SECS
    tcp_keepalive_secs: float = DEFAULT_TCP_KEEPALIVE_SECS
    sni_pattern: str | None = None  # lower case; "*.suffix" for a wildcard; None: not SNI-routed
    sni_peek_timeout_secs: float = DEFAULT_SNI_PEEK_TIMEOUT_SECS
    sni_peek_max_bytes: int = DEFAULT_SNI_PEEK_MAX_BYTES
    health_check_interval_secs: float | None = None  # None: no active health checks

    @property
    def listen_ports(self) -> range:
        return range(self.listen_port, self.listen_port_end + 1)

    def targets_for(self, listen_port: int) -> list[tuple[str, int, str | None]]:
        """(host, port, proxy_protocol) to try for a connection on `listen_port`, best first."""
        offset = listen_port - self.listen_port
        ordered = sorted(self.targets, key=lambda t: t.priority)  # stable: file order breaks ties
        return [(t.host, t.port_for(offset), t.proxy_protocol) for t in ordered]

    @property
    def listen_key(self) -> tuple[str, str, int, int]:
        return (self.protocol, self.listen_addr, self.listen_port, self.listen_port_end)


@dataclass(frozen=True)
class QuotaSpec:
    """A traffic budget: `bytes` in both directions together per period."""

    bytes: int
    period: str = "monthly"
    reset_day: int = 1  # monthly only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bytes": self.bytes, "period": self.period}
        if self.period == "monthly":
            out["reset_day"] = self.reset_day
        return out


QUOTA_KEYS = ("bytes", "period", "reset_day")


@dataclass(frozen=True)
class Owner:
    name: str
    rate_limit: RateLimit = field(default_factory=RateLimit)
    quota: QuotaSpec | None = None


@dataclass(frozen=True)
class GlobalSettings:
    label: str = "portunus"
    log_level: str = "info"
    log_format: str = "pretty"
    shutdown_drain_secs: float = DEFAULT_SHUTDOWN_DRAIN_SECS
    workers: int = DEFAULT_WORKERS  # "auto" in the file is resolved to the CPU count at load
    quota_state_file: str | None = None  # where owners' quota usage is kept across restarts


@dataclass(frozen=True)
class Defaults:
    protocol: str = "tcp"
    udp_max_flows: int = DEFAULT_UDP_MAX_FLOWS
    udp_flow_idle_secs: float = DEFAULT_UDP_FLOW_IDLE_SECS
    idle_timeout_secs: float = DEFAULT_IDLE_TIMEOUT_SECS
    tcp_keepalive_secs: float = DEFAULT_TCP_KEEPALIVE_SECS
    sni_peek_timeout_secs: float = DEFAULT_SNI_PEEK_TIMEOUT_SECS
    sni_peek_max_bytes: int = DEFAULT_SNI_PEEK_MAX_BYTES
    health_check_interval_secs: float | None = None


@dataclass(frozen=True)
class Config:
    settings: GlobalSettings = field(default_factory=GlobalSettings)
    defaults: Defaults = field(default_factory=Defaults)
    owners: tuple[Owner, ...] = ()
    rules: tuple[Rule, ...] = ()

    def owner(self, name: str | None) -> Owner | None:
        for o in self.owners:
            if o.name == name:
                return o
        return None


# ---------------------------------------------------------------- helpers


class _Problems:
    """Collects problems with a location prefix."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, key: str | None, message: str) -> None:
        loc = f"{self.source}: {where}" if where else self.source
        if key:
            loc += f": {key}"
        self.items.append(f"{loc}: {message}")


def _bounded(p: _Problems, where: str, key: str, v: Any, typ: Bounded, fallback: Any) -> Any:
    """`v` as `typ`'s Python type, or `fallback` after recording why it is not allowed."""
    problem = typ.problem(v)
    if problem is not None:
        p.add(where, key, problem)
        return fallback
    return typ.coerce(v)


def _check_unknown(p: _Problems, where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            p.add(where, key, f"unknown key (allowed: {', '.join(allowed)})")


def _port(p: _Problems, where: str, key: str, v: Any) -> int | None:
    if not is_int(v):
        p.add(where, key, f"must be an integer port 1-65535, got {show(v)}")
        return None
    if not 1 <= v <= 65535:
        p.add(where, key, f"port {v} out of range (1-65535)")
        return None
    return int(v)


def _port_range(p: _Problems, where: str, key: str, text: str) -> tuple[int, int] | None:
    """Parse "A-B" (or a single "A") into an inclusive port range."""
    m = re.fullmatch(r"\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?", text)
    if not m:
        p.add(where, key, f'bad port range {show(text)} (expected "A-B")')
        return None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else start
    bad = [x for x in (start, end) if not 1 <= x <= 65535]
    if bad:
        p.add(where, key, f"port {bad[0]} out of range (1-65535) in {show(text)}")
        return None
    if start > end:
        p.add(where, key, f"inverted range {show(text)} (start > end)")
        return None
    return start, end


def valid_hostname(host: str) -> bool:
    """True for an IPv4 literal or an RFC 1123 DNS name."""
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        return False  # looks like a broken IPv4 literal, not a name
    labels = host.rstrip(".").split(".")
    return all(_LABEL_RE.fullmatch(label) for label in labels)


def _host(p: _Problems, where: str, key: str, text: str) -> str | None:
    """Validate a host: IPv4, [IPv6] (brackets required) or DNS name. Returns it unbracketed."""
    if text.startswith("["):
        if not text.endswith("]"):
            p.add(where, key, f"bad host {show(text)}: unterminated '['")
            return None
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            p.add(where, key, f"bad IPv6 address {show(text)}")
            return None
        return inner
    if ":" in text:
        p.add(where, key, f"bare IPv6 address {show(text)}: write it in brackets, e.g. [{text[:45]}]")
        return None
    if not valid_hostname(text):
        p.add(where, key, f"bad host {show(text)} (expected IPv4, [IPv6] or a DNS name)")
        return None
    return text


def _split_host_port(p: _Problems, where: str, key: str, text: str) -> tuple[str, str] | None:
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            p.add(where, key, f'bad target {show(text)} (expected "[IPv6]:port")')
            return None
        return text[: close + 1], text[close + 2 :]
    if text.count(":") > 1:
        p.add(where, key, f"bare IPv6 address in {show(text)}: write it in brackets, e.g. [::1]:80")
        return None
    if ":" not in text:
        p.add(where, key, f'missing port in {show(text)} (expected "host:port")')
        return None
    host, _, port = text.rpartition(":")
    return host, port


def _listen_addr(p: _Problems, where: str, v: Any) -> str | None:
    if not isinstance(v, str):
        p.add(where, "listen_addr", f"must be a string IP address, got {show(v)}")
        return None
    text = v[1:-1] if v.startswith("[") and v.endswith("]") else v
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        p.add(where, "listen_addr", f"bad IP address {show(v)} (listen_addr takes an IPv4 or IPv6 literal)")
        return None


def _sni_pattern(p: _Problems, where: str, v: Any) -> str | None:
    """An exact server name or "*.suffix" (the whole leftmost label), lower-cased."""
    key = "sni_pattern"
    example = 'e.g. "app.example.com" or "*.example.com"'
    if not isinstance(v, str):
        p.add(where, key, f"must be a server name string ({example}), got {show(v)}")
        return None
    name = v.lower()
    if name == "*":
        p.add(where, key, 'a lone "*" would match every name: leave sni_pattern out to make the rule the '
              "port's fallback")
        return None
    wildcard = name.startswith("*.")
    host = name[2:] if wildcard else name
    if "*" in host:
        p.add(where, key, f"bad pattern {show(v)}: a wildcard must be the whole leftmost label ({example})")
        return None
    if host.endswith(".") or not valid_hostname(host):
        p.add(where, key, f"bad server name {show(v)} ({example}; no trailing dot)")
        return None
    if re.fullmatch(r"[0-9.]+", host):
        p.add(where, key, f"{show(v)} is an IP address: TLS clients send only DNS names as SNI (RFC 6066)")
        return None
    return name


def _health_interval(p: _Problems, where: str, v: Any) -> float | None:
    """health_check_interval_secs: None for 0 (off), else a bounded number of seconds."""
    if is_number(v) and v == 0:
        return None
    if not HEALTH_CHECK_SECS.contains(v):
        p.add(where, "health_check_interval_secs", f"must be 0 (off) or {HEALTH_CHECK_SECS.describe()}, "
              f"got {show(v)}")
        return None
    return float(v)


def parse_rate_limit(p: _Problems, where: str, data: Any) -> RateLimit:
    key0 = "rate_limit"
    if not isinstance(data, Mapping):
        p.add(where, key0, f"must be a table, got {type(data).__name__}")
        return RateLimit()
    _check_unknown(p, f"{where}: {key0}" if where else key0, data, RATE_LIMIT_KEYS)
    values: dict[str, Any] = {}
    for key in RATE_LIMIT_KEYS:
        if key not in data:
            continue
        v, typ = data[key], RATE_LIMIT_TYPES[key]
        if typ.has_type(v) and v <= 0:
            p.add(where, f"{key0}.{key}", f"must be > 0 (got {show(v)}); leave the key out for no limit")
        else:
            value = _bounded(p, where, f"{key0}.{key}", v, typ, None)
            if value is not None:
                values[key] = value
    for burst, rate in (
        ("bandwidth_in_burst", "bandwidth_in_bps"),
        ("bandwidth_out_burst", "bandwidth_out_bps"),
        ("new_connections_burst", "new_connections_per_sec"),
    ):
        if burst in values and rate not in data:
            p.add(where, f"{key0}.{burst}", f"set without {rate}")
    return RateLimit(**values)


def parse_quota_into(p: _Problems, where: str, data: Any, key0: str = "quota") -> QuotaSpec | None:
    """A quota table {bytes, period, reset_day}; None (with problems recorded) if it is invalid."""
    if not isinstance(data, Mapping):
        p.add(where, key0 or None, f"must be a table {{bytes, period, reset_day}}, got {show(data)}")
        return None
    k = f"{key0}." if key0 else ""
    before = len(p.items)
    _check_unknown(p, f"{where}: {key0}" if where and key0 else (where or key0), data, QUOTA_KEYS)
    nbytes = None
    if "bytes" not in data:
        p.add(where, f"{k}bytes", "missing (the budget in bytes, both directions together)")
    else:
        nbytes = _bounded(p, where, f"{k}bytes", data["bytes"], QUOTA_BYTES, None)
    period = data.get("period", "monthly")
    if period not in QUOTA_PERIODS:
        p.add(where, f"{k}period", f"must be one of {', '.join(QUOTA_PERIODS)}, got {show(period)}")
    reset_day = 1
    if "reset_day" in data:
        if period != "monthly":
            p.add(where, f"{k}reset_day", f'only a "monthly" quota has a reset day (period is {show(period)})')
        else:
            reset_day = _bounded(p, where, f"{k}reset_day", data["reset_day"], RESET_DAY, 1)
    if len(p.items) != before or nbytes is None:
        return None
    return QuotaSpec(nbytes, period, reset_day)


def parse_quota(data: Any, *, source: str = "quota") -> QuotaSpec:
    """Validate a quota mapping on its own (the operator API, pushed rule sets); raise ConfigError."""
    p = _Problems(source)
    q = parse_quota_into(p, "", data, key0="")
    if p.items or q is None:
        raise ConfigError(p.items or [f"{source}: invalid quota"])
    return q


def _target_list(p: _Problems, where: str, v: Any) -> list[Target]:
    if not isinstance(v, list) or not v:
        p.add(where, "targets", "must be a non-empty array of {host, port, priority, proxy_protocol}")
        return []
    out = []
    for i, t in enumerate(v):
        tw = f"targets[{i}]"
        if not isinstance(t, Mapping):
            p.add(where, tw, f"must be a table, got {show(t)}")
            continue
        _check_unknown(p, f"{where}: {tw}", t, _TARGET_KEYS)
        host = port = None
        if "host" not in t:
            p.add(where, f"{tw}.host", "missing")
        elif not isinstance(t["host"], str):
            p.add(where, f"{tw}.host", f"must be a string, got {show(t['host'])}")
        else:
            host = _host(p, where, f"{tw}.host", t["host"])
        if "port" not in t:
            p.add(where, f"{tw}.port", "missing")
        else:
            port = _port(p, where, f"{tw}.port", t["port"])
        prio = _bounded(p, where, f"{tw}.priority", t.get("priority", 0), PRIORITY, 0)
        proxy = t.get("proxy_protocol")
        if proxy is not None and proxy not in PROXY_PROTOCOLS:
            p.add(where, f"{tw}.proxy_protocol", f'must be "v1" or "v2", got {show(proxy)}')
            proxy = None
        if host is not None and port is not None:
            out.append(Target(host, port, port, prio, proxy))
    return out


_TARGET_KEYS = ("host", "port", "priority", "proxy_protocol")

RULE_KEYS = (
    "name",
    "protocol",
    "listen_addr",
    "listen_port",
    "listen_ports",
    "target",
    "targets",
    "owner",
    "rate_limit",
    "udp_max_flows",
    "udp_flow_idle_secs",
    "idle_timeout_secs",
    "tcp_keepalive_secs",
    "sni_pattern",
    "sni_peek_timeout_secs",
    "sni_peek_max_bytes",
    "health_check_interval_secs",
)


def _rule(p: _Problems, index: int, data: Any, defaults: Defaults, extra_keys: Sequence[str] = ()) -> Rule | None:
    name = data.get("name") if isinstance(data, Mapping) else None
    where = f'rule "{name}" (rule #{index + 1})' if isinstance(name, str) else f"rule #{index + 1}"
    if not isinstance(data, Mapping):
        p.add(where, None, f"must be a table, got {type(data).__name__}")
        return None
    before = len(p.items)
    _check_unknown(p, where, data, (*RULE_KEYS, *extra_keys))

    if "name" not in data:
        p.add(where, "name", "missing")
    elif not valid_name(name):
        p.add(where, "name", f"must be 1-128 chars of letters, digits, '_.:-' (got {show(name)})")

    protocol = data.get("protocol", defaults.protocol)
    if protocol not in PROTOCOLS:
        p.add(where, "protocol", f'must be "tcp" or "udp", got {show(protocol)}')

    listen_addr = _listen_addr(p, where, data.get("listen_addr", "0.0.0.0"))

    span: tuple[int, int] | None = None
    has_port, has_ports = "listen_port" in data, "listen_ports" in data
    if has_port and has_ports:
        p.add(where, "listen_port", "set both listen_port and listen_ports; use exactly one")
    elif not has_port and not has_ports:
        p.add(where, "listen_port", "missing: set exactly one of listen_port or listen_ports")
    elif has_port:
        port = _port(p, where, "listen_port", data["listen_port"])
        span = (port, port) if port else None
    else:
        v = data["listen_ports"]
        if not isinstance(v, str):
            p.add(where, "listen_ports", f'must be a string "A-B", got {show(v)}')
        else:
            span = _port_range(p, where, "listen_ports", v)

    targets: list[Target] = []
    has_t, has_ts = "target" in data, "targets" in data
    if has_t and has_ts:
        p.add(where, "target", "set both target and targets; use exactly one")
    elif not has_t and not has_ts:
        p.add(where, "target", "missing: set exactly one of target or targets")
    elif has_t:
        v = data["target"]
        if not isinstance(v, str):
            p.add(where, "target", f'must be a string "host:port", got {show(v)}')
        else:
            hp = _split_host_port(p, where, "target", v)
            if hp:
                host = _host(p, where, "target", hp[0])
                tspan = _port_range(p, where, "target", hp[1])
                if host is not None and tspan is not None:
                    if span and tspan[0] != tspan[1] and (tspan[1] - tspan[0]) != (span[1] - span[0]):
                        p.add(
                            where,
                            "target",
                            f"port range {hp[1]} has {tspan[1] - tspan[0] + 1} ports but the listen "
                            f"range has {span[1] - span[0] + 1}; ranges must be the same length",
                        )
                    elif span and span[0] == span[1] and tspan[0] != tspan[1]:
                        p.add(where, "target", f"port range {hp[1]} needs a listen_ports range of the same length")
                    else:
                        targets.append(Target(host, tspan[0], tspan[1]))
    else:
        targets = _target_list(p, where, data["targets"])

    owner = data.get("owner")
    if owner is not None and not valid_name(owner):
        p.add(where, "owner", f"must be an owner name, got {show(owner)}")
        owner = None

    rate_limit = parse_rate_limit(p, where, data["rate_limit"]) if "rate_limit" in data else RateLimit()

    timing = {key: _bounded(p, where, key, data.get(key, getattr(defaults, key)), typ, getattr(defaults, key))
              for key, typ in _RULE_NUMBERS.items()}

    sni_pattern = None
    if "sni_pattern" in data:
        sni_pattern = _sni_pattern(p, where, data["sni_pattern"])
        if protocol == "udp":
            p.add(where, "sni_pattern", "only for tcp rules (SNI is read from a TLS ClientHello)")
        elif span is not None and span[0] != span[1]:
            p.add(where, "sni_pattern", "needs a single listen_port, not a range (rules share one port by "
                  "server name)")

    # Probes dial fixed target ports over TCP: a [defaults] interval applies only to such
    # rules; set on a rule that cannot be probed, it is an error.
    range_target = any(t.port_end != t.port for t in targets)
    health = None
    if "health_check_interval_secs" in data:
        health = _health_interval(p, where, data["health_check_interval_secs"])
        if health is not None and protocol == "udp":
            p.add(where, "health_check_interval_secs", "only for tcp rules (probes are TCP connects)")
        elif health is not None and range_target:
            p.add(where, "health_check_interval_secs", "needs fixed target ports, not a port range "
                  "(a range maps each listen port to its own target port)")
    elif protocol == "tcp" and not range_target:
        health = defaults.health_check_interval_secs

    if len(p.items) != before or span is None or listen_addr is None:
        return None
    return Rule(
        name=name,  # type: ignore[arg-type]
        protocol=protocol,
        listen_addr=listen_addr,
        listen_port=span[0],
        listen_port_end=span[1],
        targets=tuple(targets),
        owner=owner,
        rate_limit=rate_limit,
        sni_pattern=sni_pattern,
        health_check_interval_secs=health,
        **timing,
    )


def parse_rule(data: Mapping[str, Any], *, defaults: Defaults | None = None, source: str = "rule",
               extra_keys: Sequence[str] = ()) -> Rule:
    """Validate one rule given as a mapping (the control plane's JSON); raise ConfigError."""
    p = _Problems(source)
    rule = _rule(p, 0, data, defaults or Defaults(), extra_keys)
    if p.items or rule is None:
        raise ConfigError(p.items or [f"{source}: invalid rule"])
    return rule


def parse_owner_rate_limit(data: Any, *, source: str = "rate_limit") -> RateLimit:
    """Validate a rate_limit mapping on its own (control plane owner limits)."""
    p = _Problems(source)
    rl = parse_rate_limit(p, "", data)
    if p.items:
        raise ConfigError(p.items)
    return rl


def auto_workers() -> int:
    """`workers = "auto"`: the CPUs this process may run on, within the allowed range."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _overlaps(a: Rule, b: Rule) -> bool:
    if a.protocol != b.protocol:
        return False
    if a.listen_port > b.listen_port_end or b.listen_port > a.listen_port_end:
        return False
    wild = {"0.0.0.0", "::"}
    if a.listen_addr == b.listen_addr:
        return True
    # A wildcard bind conflicts with a specific address of the same family.
    fam = lambda addr: ipaddress.ip_address(addr).version  # noqa: E731
    return fam(a.listen_addr) == fam(b.listen_addr) and (a.listen_addr in wild or b.listen_addr in wild)


def shares_port(a: Rule, b: Rule) -> bool:
    """True if a and b listen on the very same TCP address and single port (SNI may split it)."""
    return a.protocol == b.protocol == "tcp" and a.listen_key == b.listen_key and a.listen_port == a.listen_port_end


def listen_conflict(a: Rule, b: Rule, sni_port: bool = False) -> str | None:
    """Why `a` cannot listen next to `b` (the text names b), or None.

    Rules may share a TCP address and port when they differ by sni_pattern;
    one of them may omit it (the fallback). `sni_port`: some rule routes that
    port by SNI, so two rules without a pattern there are two fallbacks.
    """
    if not _overlaps(a, b):
        return None
    if shares_port(a, b):
        where = f"tcp {a.listen_addr}:{a.listen_port}"
        if a.sni_pattern is not None and b.sni_pattern is not None:
            if a.sni_pattern != b.sni_pattern:
                return None
            return f'sni_pattern "{a.sni_pattern}" on {where} is also used by rule "{b.name}"'
        if a.sni_pattern is not None or b.sni_pattern is not None:
            return None
        if sni_port:
            return (f'two fallback rules (without sni_pattern) on {where}: this one and rule "{b.name}"; '
                    "at most one rule per port may omit sni_pattern")
    return (f"{a.protocol} {a.listen_addr}:{a.listen_port}-{a.listen_port_end} overlaps "
            f'rule "{b.name}"')


def sni_ports(rules: Sequence[Rule]) -> set[tuple[str, str, int, int]]:
    """Listen keys that some rule routes by SNI."""
    return {r.listen_key for r in rules if r.sni_pattern is not None}


def listen_conflicts(rules: Sequence[Rule]) -> list[tuple[int, int, str]]:
    """(i, j, why) for every rule i that cannot listen next to an earlier rule j, sorted.

    Rules on the same TCP address and single port are checked with dicts (a
    port may carry thousands of SNI names); the rest by a sweep over ports, so
    a set of disjoint listeners costs O(n log n), not a comparison per pair.
    """
    routed = sni_ports(rules)
    out: list[tuple[int, int, str]] = []
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(rules):
        # Only a TCP address and single port can be shared; anything else is a group of one.
        key = r.listen_key if r.protocol == "tcp" and r.listen_port == r.listen_port_end else (*r.listen_key, i)
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        if len(members) == 1:
            continue
        first: dict[str | None, int] = {}
        for i in members:
            j = first.setdefault(rules[i].sni_pattern, i)
            if j != i:
                problem = listen_conflict(rules[i], rules[j], key in routed)
                assert problem is not None
                out.append((i, j, problem))
    reps = sorted(groups.values(), key=lambda m: rules[m[0]].listen_port)
    for n, a in enumerate(reps):
        ra = rules[a[0]]
        for b in reps[n + 1:]:
            if rules[b[0]].listen_port > ra.listen_port_end:
                break
            if not _overlaps(ra, rules[b[0]]):
                continue
            for x in a:
                for y in b:
                    i, j = max(x, y), min(x, y)
                    problem = listen_conflict(rules[i], rules[j], rules[i].listen_key in routed)
                    if problem is not None:
                        out.append((i, j, problem))
    return sorted(out)


def check_rule_set(rules: Sequence[Rule], owners: Sequence[str] | None = None, source: str = "config") -> list[str]:
    """Cross-rule checks: unique names, no overlapping listeners (SNI aside), known owners."""
    p = _Problems(source)
    seen: dict[str, int] = {}
    clashes: dict[int, list[tuple[int, str]]] = {}
    for i, j, problem in listen_conflicts(rules):
        clashes.setdefault(i, []).append((j, problem))
    for i, r in enumerate(rules):
        where = f'rule "{r.name}" (rule #{i + 1})'
        if r.name in seen:
            p.add(where, "name", f'duplicate rule name (also rule #{seen[r.name] + 1})')
        else:
            seen[r.name] = i
        for j, problem in clashes.get(i, ()):
            key = "sni_pattern" if problem.startswith(("sni_pattern", "two fallback")) else \
                "listen_port" if r.listen_port == r.listen_port_end else "listen_ports"
            p.add(where, key, f"{problem} (rule #{j + 1})")
        if owners is not None and r.owner is not None and r.owner not in owners:
            p.add(where, "owner", f'unknown owner "{r.owner}" (declare it in an [[owner]] table)')
    return p.items


def parse_config(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    p = _Problems(source)
    _check_unknown(p, "", data, ("global", "defaults", "owner", "rule"))

    g = data.get("global", {})
    settings = GlobalSettings()
    if not isinstance(g, Mapping):
        p.add("[global]", None, "must be a table")
    else:
        _check_unknown(p, "[global]", g, ("label", "log_level", "log_format", "shutdown_drain_secs", "workers",
                                          "quota_state_file"))
        label = g.get("label", settings.label)
        if not isinstance(label, str) or not label.strip():
            p.add("[global]", "label", f"must be a non-empty string, got {show(label)}")
            label = settings.label
        level = g.get("log_level", settings.log_level)
        if level not in LOG_LEVELS:
            p.add("[global]", "log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {show(level)}")
            level = settings.log_level
        fmt = g.get("log_format", settings.log_format)
        if fmt not in LOG_FORMATS:
            p.add("[global]", "log_format", f'must be "json" or "pretty", got {show(fmt)}')
            fmt = settings.log_format
        drain = _bounded(p, "[global]", "shutdown_drain_secs", g.get("shutdown_drain_secs", settings.shutdown_drain_secs),
                         DRAIN_SECS, settings.shutdown_drain_secs)
        workers = g.get("workers", settings.workers)
        if workers == "auto":
            workers = auto_workers()
        else:
            workers = _bounded(p, "[global]", "workers", workers, WORKERS, settings.workers)
        state_file = g.get("quota_state_file")
        if state_file is not None and (not isinstance(state_file, str) or not state_file.strip()):
            p.add("[global]", "quota_state_file", f"must be a file path, got {show(state_file)}")
            state_file = None
        settings = GlobalSettings(label, level, fmt, drain, workers, state_file)

    d = data.get("defaults", {})
    defaults = Defaults()
    if not isinstance(d, Mapping):
        p.add("[defaults]", None, "must be a table")
    else:
        _check_unknown(p, "[defaults]", d, ("protocol", *_RULE_NUMBERS, "health_check_interval_secs"))
        proto = d.get("protocol", defaults.protocol)
        if proto not in PROTOCOLS:
            p.add("[defaults]", "protocol", f'must be "tcp" or "udp", got {show(proto)}')
            proto = defaults.protocol
        numbers = {key: _bounded(p, "[defaults]", key, d.get(key, getattr(defaults, key)), typ, getattr(defaults, key))
                   for key, typ in _RULE_NUMBERS.items()}
        health = _health_interval(p, "[defaults]", d["health_check_interval_secs"]) \
            if "health_check_interval_secs" in d else None
        defaults = Defaults(proto, health_check_interval_secs=health, **numbers)

    owners: list[Owner] = []
    raw_owners = data.get("owner", [])
    if not isinstance(raw_owners, list):
        p.add("[[owner]]", None, "must be an array of tables ([[owner]])")
        raw_owners = []
    owner_names: dict[str, int] = {}
    for i, o in enumerate(raw_owners):
        oname = o.get("name") if isinstance(o, Mapping) else None
        where = f'owner "{oname}" (owner #{i + 1})' if isinstance(oname, str) else f"owner #{i + 1}"
        if not isinstance(o, Mapping):
            p.add(where, None, "must be a table")
            continue
        _check_unknown(p, where, o, ("name", "rate_limit", "quota"))
        if not valid_name(oname):
            p.add(where, "name", f"missing or invalid owner name {show(oname)}")
            continue
        if oname in owner_names:
            p.add(where, "name", f"duplicate owner name (also owner #{owner_names[oname] + 1})")
            continue
        owner_names[oname] = i
        rl = parse_rate_limit(p, where, o["rate_limit"]) if "rate_limit" in o else RateLimit()
        quota = parse_quota_into(p, where, o["quota"]) if "quota" in o else None
        owners.append(Owner(oname, rl, quota))

    rules: list[Rule] = []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        p.add("[[rule]]", None, "must be an array of tables ([[rule]])")
        raw_rules = []
    for i, r in enumerate(raw_rules):
        rule = _rule(p, i, r, defaults)
        if rule is not None:
            rules.append(rule)

    if not p.items:
        p.items.extend(check_rule_set(rules, list(owner_names), source))
    quota_owners = [o.name for o in owners if o.quota is not None]
    if quota_owners and settings.quota_state_file is None:
        p.add("[global]", "quota_state_file", f'missing: owner "{quota_owners[0]}" has a quota, and its usage '
              "must survive a restart; set it to a file path the forwarder may write "
              '(e.g. "/var/lib/portunus/quota.json")')
    if not p.items and not rules:
        # A file that lost its rules (truncated, half-written) must not silently
        # stop every forward at a reload; the spec's reference refuses it too.
        p.add("[[rule]]", None, "no rules: a rules file needs at least one [[rule]] table")
    if p.items:
        raise ConfigError(p.items)
    return Config(settings, defaults, tuple(owners), tuple(rules))


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; raise ConfigError naming the file for unreadable or invalid TOML."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text: {e}"]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: TOML syntax error: {e}"]) from e
    except RecursionError:
        raise ConfigError([f"{path}: TOML nested too deeply"]) from None
    except ValueError as e:  # e.g. an integer literal beyond Python's 4,300-digit conversion limit
        raise ConfigError([f"{path}: TOML value not readable: {show(str(e))}"]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML rule file; raise ConfigError (file problems included)."""
    return parse_config(read_toml(path), str(path))
