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
from dataclasses import dataclass
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
    listen_conflicts,
    parse_owner_rate_limit,
    parse_quota,
    parse_rule,
    sni_ports,
)
from portunus.control.portindex import PortIndex, overlap

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


def _parse(spec: Any, where: str) -> Rule:
    try:
        return parse_rule(spec, source=where)
    except ConfigError as e:
        raise BundleRejected("; ".join(e.problems)) from None


def _rule_specs(specs: Any, where: str) -> list[Any]:
    if not isinstance(specs, list):
        raise BundleRejected(f"{where} must be a list")
    return specs


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


def _about(rule: Rule, problem: str) -> str:
    return f'rule set: rule "{rule.name}": {problem}'


def conflicts_with(new: list[Rule], rules: list[Rule]) -> list[str]:
    """Listener conflicts between each rule of `new` and the other rules, in O(len(new) * len(rules)).

    The verdict is `listen_conflict`'s (the TOML's rules); only pairs whose
    port ranges intersect get that far.
    """
    problems: list[str] = []
    routed = sni_ports([*new, *rules])
    for a in new:
        for b in rules:
            problem = overlap(a, b, a.listen_key in routed) if b.name != a.name else None
            if problem is not None:
                problems.append(_about(a, problem))
    return problems


def conflicts(rules: list[Rule]) -> list[str]:
    """All conflicts of a whole rule set (`listen_conflicts`: O(n log n) for disjoint listeners)."""
    return [_about(rules[i], problem) for i, _j, problem in listen_conflicts(rules)]


@dataclass(frozen=True)
class Plan:
    """A verified rule set, checked against a book but not yet in it (see `RuleBook.plan`)."""

    kind: str
    version: int
    defines: list[str]          # rule names the payload (re)defines: what the client acks
    upsert: dict[str, Rule]     # rules new or different from the book's
    specs: dict[str, Any]       # their definitions as received
    remove: list[str]           # book rules the rule set drops
    owners: dict[str, Owner]    # every owner after the change
    owners_changed: bool
    quotas: dict[str, QuotaState]  # every quota after the change (budgets and the ledger's counts)
    quota_specs_changed: bool      # a budget set, changed or lifted (counts alone do not count)

    @property
    def changes_rules(self) -> bool:
        """False if applying it leaves every rule, owner limit and quota budget as the book has them."""
        return bool(self.upsert or self.remove or self.owners_changed or self.quota_specs_changed)

    def data_plane_owners(self) -> list[Owner]:
        """Owners for the Forwarder after the change: rate limits and quota budgets together."""
        return _data_plane_owners(self.owners, self.quotas)


def _data_plane_owners(owners: Mapping[str, Owner], quotas: Mapping[str, QuotaState]) -> list[Owner]:
    out = []
    for name in sorted(set(owners) | set(quotas)):
        rl = owners[name].rate_limit if name in owners else RateLimit()
        q = quotas.get(name)
        out.append(Owner(name, rl, q.spec if q is not None else None))
    return out


def _specs_of(quotas: Mapping[str, QuotaState]) -> dict[str, QuotaSpec]:
    return {name: q.spec for name, q in quotas.items()}


class RuleBook:
    """The client's verified desired state: version, rules by name, owners by name.

    `plan` checks a rule set against the book without changing it; `commit`
    makes a plan the book's state. Both cost what the rule set names, not the
    size of the book: a delta parses and indexes only its own rules, and a
    full set re-parses only the rules whose definition changed.
    """

    def __init__(self, client: str, version: int = 0, rules: Mapping[str, Rule] | None = None,
                 owners: Mapping[str, Owner] | None = None,
                 quotas: Mapping[str, QuotaState] | None = None) -> None:
        self.client = client
        self.version = version
        self.rules: dict[str, Rule] = {}
        self.owners: dict[str, Owner] = dict(owners or {})
        self.quotas: dict[str, QuotaState] = dict(quotas or {})
        self._specs: dict[str, Any] = {}  # name -> definition as received (absent: re-parse on the next full set)
        self._index: PortIndex[str] = PortIndex()
        for name, rule in (rules or {}).items():
            self.rules[name] = rule
            self._index.add(name, rule)

    def copy(self) -> RuleBook:
        out = RuleBook(self.client, self.version, self.rules, self.owners, self.quotas)
        out._specs = dict(self._specs)
        return out

    def data_plane_owners(self) -> list[Owner]:
        """Owners for Forwarder.apply: rate limits and quota budgets together."""
        return _data_plane_owners(self.owners, self.quotas)

    def plan(self, payload: Mapping[str, Any]) -> Plan:
        """Check `payload` against the book; the book is not changed.

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
            return self._plan_full(version, payload)
        if kind == "delta":
            if version <= self.version:
                raise BundleRejected(f"stale delta: version {version} is not newer than the running {self.version}")
            if payload.get("base_version") != self.version:
                raise NeedResync(f"delta {payload.get('base_version')}->{version} does not follow version {self.version}")
            return self._plan_delta(version, payload)
        raise BundleRejected(f"unknown rule-set kind {kind!r}")

    def _plan_full(self, version: int, payload: Mapping[str, Any]) -> Plan:
        specs = _rule_specs(payload.get("rules"), "rules")
        defines: list[str] = []
        rules: dict[str, Rule] = {}
        upsert: dict[str, Rule] = {}
        upsert_specs: dict[str, Any] = {}
        for i, spec in enumerate(specs):
            name = spec.get("name") if isinstance(spec, Mapping) else None
            if isinstance(name, str) and name in self._specs and self._specs[name] == spec:
                rule = self.rules[name]  # unchanged definition: no need to parse it again
            else:
                rule = _parse(spec, f"rules[{i}]")
                if self.rules.get(rule.name) != rule:
                    upsert[rule.name] = rule
                upsert_specs[rule.name] = spec
            if rule.name in rules:
                raise BundleRejected("duplicate rule names in the rule set")
            rules[rule.name] = rule
            defines.append(rule.name)
        owners = _owners(payload.get("owners", {}))
        remove = [n for n in self.rules if n not in rules]
        # Rules the book keeps unchanged do not overlap each other; check the rest against everything.
        problems = conflicts(list(rules.values())) if len(upsert) * 8 > len(rules) else \
            self._overlaps(list(upsert.values()), ignore={*remove, *upsert})
        if problems:
            raise BundleRejected("; ".join(problems))
        quotas = {k: v for k, v in _quotas(payload.get("quotas", {}), False).items() if v is not None}
        return Plan("full", version, defines, upsert, upsert_specs, remove, owners, owners != self.owners,
                    quotas, _specs_of(quotas) != _specs_of(self.quotas))

    def _plan_delta(self, version: int, payload: Mapping[str, Any]) -> Plan:
        removes = payload.get("remove", [])
        if not isinstance(removes, list) or not all(isinstance(n, str) for n in removes):
            raise BundleRejected("remove must be a list of rule names")
        upsert: dict[str, Rule] = {}
        specs: dict[str, Any] = {}
        defines: list[str] = []
        for i, spec in enumerate(_rule_specs(payload.get("upsert", []), "upsert")):
            rule = _parse(spec, f"upsert[{i}]")
            upsert[rule.name] = rule
            specs[rule.name] = spec
            defines.append(rule.name)
        remove = [n for n in dict.fromkeys(removes) if n in self.rules and n not in upsert]
        changed_owners = _owners(payload.get("owners", {}))
        owners = {**self.owners, **changed_owners}
        problems = self._overlaps(list(upsert.values()), ignore={*remove, *upsert})
        if problems:
            raise BundleRejected("; ".join(problems))
        real_upsert = {n: r for n, r in upsert.items() if self.rules.get(n) != r}
        quotas = dict(self.quotas)
        for name, q in _quotas(payload.get("quotas", {}), True).items():
            if q is None:
                quotas.pop(name, None)
            else:
                quotas[name] = q
        return Plan("delta", version, defines, real_upsert, specs, remove, owners,
                    any(self.owners.get(n) != o for n, o in changed_owners.items()),
                    quotas, _specs_of(quotas) != _specs_of(self.quotas))

    def _overlaps(self, new: list[Rule], ignore: set[str]) -> list[str]:
        """Overlaps of `new` with each other and with the book's rules not named in `ignore`."""
        problems = conflicts(new)
        for rule in new:
            problems.extend(_about(rule, problem) for _, problem in self._index.overlapping(rule, ignore))
        return problems

    def commit(self, plan: Plan) -> list[str]:
        """Make `plan` (from this book's `plan`) the book's state; return the names it defines."""
        for name in plan.remove:
            self.rules.pop(name, None)
            self._specs.pop(name, None)
            self._index.discard(name)
        for name, rule in plan.upsert.items():
            self.rules[name] = rule
            self._index.add(name, rule)
        self._specs.update(plan.specs)
        self.owners = plan.owners
        self.quotas = plan.quotas
        self.version = plan.version
        return plan.defines

    def rules_after(self, plan: Plan) -> list[Rule]:
        """The whole rule list once `plan` is committed (what the data plane runs)."""
        gone = set(plan.remove)
        out = [r for n, r in self.rules.items() if n not in gone and n not in plan.upsert]
        out.extend(plan.upsert.values())
        return out

    def advance(self, payload: Mapping[str, Any]) -> tuple[RuleBook, list[str]]:
        """A new book after `payload` and the names it (re)defines; this book is not changed."""
        plan = self.plan(payload)
        book = self.copy()
        return book, book.commit(plan)
