"""Rule sets as they travel from server to client.

A rule travels in the TOML schema (the same keys as a `[[rule]]` table), so
the client re-validates it with `portunus.config.parse_rule`: a pushed rule
means exactly what the same rule in a standalone file means.

Payload (inside a signed document, see `signing`):

    {"format": 1, "kind": "full", "client": NAME, "version": N,
     "rules": [rule, ...], "owners": {owner: rate_limit}}
    {"format": 1, "kind": "delta", "client": NAME, "version": N, "base_version": N-1,
     "upsert": [rule, ...], "remove": [rule name, ...], "owners": {owner: rate_limit}}

A payload that carries traffic quotas is format 2 and has one more key,
"quotas": {owner: {bytes, period, reset_day, period_start, used_bytes}}
(in a delta, an owner mapped to null loses its quota). A client that
predates quotas refuses format 2 instead of forwarding without the budget.

The client's `RuleBook` takes a full set at a version >= its own (equal is a
re-sync), and a delta only on top of exactly its own version; anything else
is refused and the running rules stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from portunus.bounds import Bounded
from portunus.config import (
    DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_SNI_PEEK_MAX_BYTES,
    DEFAULT_SNI_PEEK_TIMEOUT_SECS,
    DEFAULT_TCP_KEEPALIVE_SECS,
    QUOTA_BYTES,
    ConfigError,
    Owner,
    QuotaSpec,
    RateLimit,
    Rule,
    listen_conflict,
    listen_conflicts,
    parse_owner_rate_limit,
    parse_quota,
    parse_rule,
    sni_ports,
)

# Payload format history:
#   1  full / delta rule sets with per-owner rate limits
#   2  format 1 + "quotas" (sent only when the client has quotas, so older clients keep working)
PAYLOAD_FORMAT = 1
QUOTA_PAYLOAD_FORMAT = 2
READABLE_FORMATS = (PAYLOAD_FORMAT, QUOTA_PAYLOAD_FORMAT)
# Period starts are seconds since the epoch (UTC), up to the year 9999.
_PERIOD_START = Bounded(False, 0, 253402300800.0, "seconds since the epoch")
_USED_BYTES = Bounded(True, 0, QUOTA_BYTES.hi, "bytes")


class BundleRejected(Exception):
    """A rule set the client will not apply; its current rules keep running."""


class NeedResync(Exception):
    """A delta that does not follow the client's version: ask for the full set."""


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """A Rule in the TOML schema; parse_rule(rule_to_dict(r)) == r."""
    out: dict[str, Any] = {"name": rule.name, "protocol": rule.protocol, "listen_addr": rule.listen_addr}
    if rule.listen_port_end != rule.listen_port:
        out["listen_ports"] = f"{rule.listen_port}-{rule.listen_port_end}"
    else:
        out["listen_port"] = rule.listen_port
    t0 = rule.targets[0]
    if len(rule.targets) == 1 and t0.priority == 0 and t0.proxy_protocol is None:
        out["target"] = t0.display()
    else:
        targets = []
        for t in rule.targets:
            td: dict[str, Any] = {"host": f"[{t.host}]" if ":" in t.host else t.host, "port": t.port}
            if t.priority:
                td["priority"] = t.priority
            if t.proxy_protocol:
                td["proxy_protocol"] = t.proxy_protocol
            targets.append(td)
        out["targets"] = targets
    if rule.owner is not None:
        out["owner"] = rule.owner
    limits = {k: v for k, v in rule.rate_limit.to_dict().items() if v is not None}
    if limits:
        out["rate_limit"] = limits
    out["udp_max_flows"] = rule.udp_max_flows
    out["udp_flow_idle_secs"] = rule.udp_flow_idle_secs
    # Keys newer than the first clients travel only when set, so a client that
    # predates them still takes every rule that does not use them.
    if rule.idle_timeout_secs != DEFAULT_IDLE_TIMEOUT_SECS:
        out["idle_timeout_secs"] = rule.idle_timeout_secs
    if rule.tcp_keepalive_secs != DEFAULT_TCP_KEEPALIVE_SECS:
        out["tcp_keepalive_secs"] = rule.tcp_keepalive_secs
    if rule.sni_pattern is not None:
        out["sni_pattern"] = rule.sni_pattern
    if rule.sni_peek_timeout_secs != DEFAULT_SNI_PEEK_TIMEOUT_SECS:
        out["sni_peek_timeout_secs"] = rule.sni_peek_timeout_secs
    if rule.sni_peek_max_bytes != DEFAULT_SNI_PEEK_MAX_BYTES:
        out["sni_peek_max_bytes"] = rule.sni_peek_max_bytes
    if rule.health_check_interval_secs is not None:
        out["health_check_interval_secs"] = rule.health_check_interval_secs
    return out


def rate_limit_to_dict(rl: RateLimit) -> dict[str, Any]:
    return {k: v for k, v in rl.to_dict().items() if v is not None}


def full_payload(client: str, version: int, rules: list[dict[str, Any]],
                 owners: Mapping[str, dict[str, Any]],
                 quotas: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {"format": PAYLOAD_FORMAT, "kind": "full", "client": client, "version": version,
           "rules": rules, "owners": dict(owners)}
    if quotas:
        out.update(format=QUOTA_PAYLOAD_FORMAT, quotas=dict(quotas))
    return out


def delta_payload(client: str, version: int, *, upsert: list[dict[str, Any]] | None = None,
                  remove: list[str] | None = None, owners: Mapping[str, dict[str, Any]] | None = None,
                  quotas: Mapping[str, dict[str, Any] | None] | None = None) -> dict[str, Any]:
    out = {"format": PAYLOAD_FORMAT, "kind": "delta", "client": client, "version": version,
           "base_version": version - 1, "upsert": upsert or [], "remove": remove or [],
           "owners": dict(owners or {})}
    if quotas:
        out.update(format=QUOTA_PAYLOAD_FORMAT, quotas=dict(quotas))
    return out


@dataclass(frozen=True)
class QuotaState:
    """A quota as a rule set carries it: the budget, and the ledger's period and count at send time."""

    spec: QuotaSpec
    period_start: float
    used_bytes: int


def _quotas(data: Any, allow_null: bool) -> dict[str, QuotaState | None]:
    if not isinstance(data, Mapping):
        raise BundleRejected("quotas must be an object")
    out: dict[str, QuotaState | None] = {}
    for owner, q in data.items():
        if q is None and allow_null:
            out[owner] = None
            continue
        if not isinstance(q, Mapping):
            raise BundleRejected(f"quota of owner {owner!r} must be an object")
        extra = {k: q[k] for k in q if k not in ("period_start", "used_bytes")}
        try:
            spec = parse_quota(extra, source=f"quota of owner {owner!r}")
        except ConfigError as e:
            raise BundleRejected("; ".join(e.problems)) from None
        start, used = q.get("period_start"), q.get("used_bytes")
        for key, v, typ in (("period_start", start, _PERIOD_START), ("used_bytes", used, _USED_BYTES)):
            problem = typ.problem(v)
            if problem is not None:
                raise BundleRejected(f"quota of owner {owner!r}: {key} {problem}")
        out[owner] = QuotaState(spec, float(start), int(used))  # type: ignore[arg-type]
    return out


def _rules(specs: Any, where: str) -> list[Rule]:
    if not isinstance(specs, list):
        raise BundleRejected(f"{where} must be a list")
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(parse_rule(spec, source=f"{where}[{i}]"))
        except ConfigError as e:
            raise BundleRejected("; ".join(e.problems)) from None
    return out


def _owners(data: Any) -> dict[str, Owner]:
    if not isinstance(data, Mapping):
        raise BundleRejected("owners must be an object")
    out = {}
    for name, rl in data.items():
        try:
            out[name] = Owner(name, parse_owner_rate_limit(rl, source=f"owner {name!r}"))
        except ConfigError as e:
            raise BundleRejected("; ".join(e.problems)) from None
    return out


def _may_overlap(a: Rule, b: Rule) -> bool:
    """Cheap pre-filter: same protocol and intersecting port ranges."""
    return a.protocol == b.protocol and a.listen_port <= b.listen_port_end and b.listen_port <= a.listen_port_end


def _problem(a: Rule, b: Rule, routed: set) -> list[str]:
    problem = listen_conflict(a, b, a.listen_key in routed)
    return [] if problem is None else [f'rule set: rule "{a.name}": {problem}']


def conflicts_with(new: list[Rule], rules: list[Rule]) -> list[str]:
    """Listener conflicts between each rule of `new` and the other rules, in O(len(new) * len(rules)).

    The verdict is `listen_conflict`'s (the TOML's rules); only pairs whose
    port ranges intersect get that far.
    """
    problems: list[str] = []
    routed = sni_ports([*new, *rules])
    for a in new:
        for b in rules:
            if b.name != a.name and _may_overlap(a, b):
                problems.extend(_problem(a, b, routed))
    return problems


def conflicts(rules: list[Rule]) -> list[str]:
    """All conflicts of a whole rule set (`listen_conflicts`: O(n log n) for disjoint listeners)."""
    return [f'rule set: rule "{rules[i].name}": {problem}' for i, _j, problem in listen_conflicts(rules)]


@dataclass(frozen=True)
class RuleBook:
    """The client's verified desired state: version, rules by name, owners by name."""

    client: str
    version: int = 0
    rules: Mapping[str, Rule] = field(default_factory=dict)
    owners: Mapping[str, Owner] = field(default_factory=dict)
    quotas: Mapping[str, QuotaState] = field(default_factory=dict)

    def data_plane_owners(self) -> list[Owner]:
        """Owners for Forwarder.apply: rate limits and quota budgets together."""
        names = sorted(set(self.owners) | set(self.quotas))
        out = []
        for name in names:
            rl = self.owners[name].rate_limit if name in self.owners else RateLimit()
            q = self.quotas.get(name)
            out.append(Owner(name, rl, q.spec if q is not None else None))
        return out

    def advance(self, payload: Mapping[str, Any]) -> tuple[RuleBook, list[str]]:
        """The book after `payload` and the names of rules it (re)defines.

        Raises BundleRejected (keep the current book) or NeedResync (delta gap).
        """
        fmt = payload.get("format")
        if fmt not in READABLE_FORMATS:
            raise BundleRejected(f"payload format {fmt!r} not supported (this client reads "
                                 f"{', '.join(map(str, READABLE_FORMATS))})")
        if payload.get("client") != self.client:
            raise BundleRejected(f"rule set is for client {payload.get('client')!r}, not {self.client!r}")
        version = payload.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise BundleRejected(f"bad version {version!r}")
        kind = payload.get("kind")
        if kind == "full":
            if version < self.version:
                raise BundleRejected(f"stale rule set: version {version} is older than the running {self.version}")
            parsed = _rules(payload.get("rules"), "rules")
            rules = {r.name: r for r in parsed}
            if len(rules) != len(parsed):
                raise BundleRejected("duplicate rule names in the rule set")
            owners = _owners(payload.get("owners", {}))
            quotas = {k: v for k, v in _quotas(payload.get("quotas", {}), False).items() if v is not None}
            changed = list(rules)
        elif kind == "delta":
            if version <= self.version:
                raise BundleRejected(f"stale delta: version {version} is not newer than the running {self.version}")
            if payload.get("base_version") != self.version:
                raise NeedResync(f"delta {payload.get('base_version')}->{version} does not follow version {self.version}")
            rules = dict(self.rules)
            removes = payload.get("remove", [])
            if not isinstance(removes, list) or not all(isinstance(n, str) for n in removes):
                raise BundleRejected("remove must be a list of rule names")
            for name in removes:
                rules.pop(name, None)
            upserts = _rules(payload.get("upsert", []), "upsert")
            for r in upserts:
                rules[r.name] = r
            owners = {**self.owners, **_owners(payload.get("owners", {}))}
            quotas = dict(self.quotas)
            for name, q in _quotas(payload.get("quotas", {}), True).items():
                if q is None:
                    quotas.pop(name, None)
                else:
                    quotas[name] = q
            changed = [r.name for r in upserts]
        else:
            raise BundleRejected(f"unknown rule-set kind {kind!r}")
        if kind == "full":
            problems = conflicts(list(rules.values()))
        else:
            problems = conflicts_with([rules[n] for n in changed], list(rules.values()))
        if problems:
            raise BundleRejected("; ".join(problems))
        return RuleBook(self.client, version, rules, owners, quotas), changed
