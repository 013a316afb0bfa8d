"""Prometheus metrics: names, and a collector that reads counters at scrape time.

Nothing on the data plane touches a metric object: the collector asks the
forwarder for a snapshot when Prometheus scrapes, so forwarding pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from portunus.bounds import Bounded, show
from portunus.dataplane.stats import describe_health

PREFIX = "portunus"


class SnapshotCollector(Collector):
    """Exposes per-rule counters of one or more forwarder snapshots."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], extra_labels: dict[str, str] | None = None):
        self._snapshot = snapshot
        self._extra = extra_labels or {}

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from rule_metrics(snap["rules"], self._extra, snap.get("sni_listeners"))
        if snap.get("quotas"):
            yield from quota_metrics(snap["quotas"], self._extra)


def quota_metrics(quotas: dict[Any, Any], extra: dict[str, str] | None = None,
                  key_labels: tuple[str, ...] = ("owner",)) -> Iterable[Metric]:
    """Gauges of traffic quotas: {key: {limit_bytes, used_bytes, exhausted}} (key = owner by default;
    a tuple of label values when `key_labels` names several)."""
    extra = extra or {}
    names, lv = [*extra, *key_labels], list(extra.values())
    limit = GaugeMetricFamily(f"{PREFIX}_quota_limit_bytes", "Traffic quota per period (both directions)",
                              labels=names)
    used = GaugeMetricFamily(f"{PREFIX}_quota_used_bytes", "Bytes charged to the quota in the current period",
                             labels=names)
    spent = GaugeMetricFamily(f"{PREFIX}_quota_exhausted", "1 while the quota is spent (connections refused)",
                              labels=names)
    for key, q in sorted(quotas.items()):
        values = [*lv, *(key if isinstance(key, tuple) else (key,))]
        limit.add_metric(values, q["limit_bytes"])
        used.add_metric(values, q["used_bytes"])
        spent.add_metric(values, 1.0 if q["exhausted"] else 0.0)
    return [limit, used, spent]


def rule_metrics(rules: dict[str, Any], extra: dict[str, str] | None = None,
                 sni_listeners: dict[str, dict[str, int]] | None = None) -> Iterable[Metric]:
    """Metric families for a {rule: counters} snapshot (standalone and client share these);
    `sni_listeners`: per SNI listener, connections no rule took, by result."""
    extra = extra or {}
    names = list(extra)
    lv = list(extra.values())
    by = CounterMetricFamily(f"{PREFIX}_rule_bytes", "Bytes forwarded per rule and direction "
                             "(in = client to target, out = target to client)", labels=[*names, "rule", "direction"])
    dgrams = CounterMetricFamily(f"{PREFIX}_rule_datagrams", "Datagrams forwarded per rule and direction (UDP; "
                                 "in = client to target, out = target to client)", labels=[*names, "rule", "direction"])
    active = GaugeMetricFamily(f"{PREFIX}_rule_connections_active", "Open connections (TCP) or live flows (UDP)",
                               labels=[*names, "rule"])
    total = CounterMetricFamily(f"{PREFIX}_rule_connections", "Connections (TCP) or flows (UDP) admitted",
                                labels=[*names, "rule"])
    fails = CounterMetricFamily(f"{PREFIX}_rule_connect_failures", "Connections closed because no target accepted",
                                labels=[*names, "rule"])
    failovers = CounterMetricFamily(f"{PREFIX}_rule_failovers", "Target connect attempts that failed over to the next",
                                    labels=[*names, "rule"])
    rejected = CounterMetricFamily(f"{PREFIX}_rule_rejected", "Connections or flows refused at admission, by reason",
                                   labels=[*names, "rule", "reason"])
    cuts = CounterMetricFamily(f"{PREFIX}_rule_quota_cuts", "Connections or flows cut because the owner's "
                               "traffic quota was spent", labels=[*names, "rule"])
    dropped = CounterMetricFamily(f"{PREFIX}_rule_dropped", "Datagrams dropped, by reason", labels=[*names, "rule", "reason"])
    splice = CounterMetricFamily(f"{PREFIX}_rule_connections_by_path", "Connections by data path (splice or copy)",
                                 labels=[*names, "rule", "path"])
    rate = GaugeMetricFamily(f"{PREFIX}_rule_rate_bytes_per_second", "Bytes per second forwarded per rule and "
                             "direction over the last ~5 s", labels=[*names, "rule", "direction"])
    limit = GaugeMetricFamily(f"{PREFIX}_rule_limit", "Configured rate_limit values in force per rule "
                              "(bandwidth in bytes/s, connections/s, connections)", labels=[*names, "rule", "limit"])
    sni = CounterMetricFamily(f"{PREFIX}_sni_routes", "Connections on SNI listeners by routing result "
                              "(exact, wildcard, fallback, no_match, not_tls, too_large, timeout, "
                              "client_closed) and the rule that took them (empty: closed)",
                              labels=[*names, "listener", "rule", "result"])
    up = GaugeMetricFamily(f"{PREFIX}_rule_target_up", "Health checks: 1 if the target is up, 0 if down "
                           "(with several workers, the share of workers that see it up)",
                           labels=[*names, "rule", "target"])
    flips = CounterMetricFamily(f"{PREFIX}_rule_target_transitions", "Health checks: targets going down or up",
                                labels=[*names, "rule", "target", "to"])
    probes = CounterMetricFamily(f"{PREFIX}_rule_target_probes", "Health checks: probes sent, by outcome",
                                 labels=[*names, "rule", "target", "outcome"])
    for rule, c in sorted(rules.items()):
        rate.add_metric([*lv, rule, "in"], c.get("rate_in_bytes_per_s", 0.0))
        rate.add_metric([*lv, rule, "out"], c.get("rate_out_bytes_per_s", 0.0))
        for key, value in sorted(c.get("current_limits", {}).items()):
            limit.add_metric([*lv, rule, key], value)
        by.add_metric([*lv, rule, "in"], c["bytes_in"])
        by.add_metric([*lv, rule, "out"], c["bytes_out"])
        if c.get("protocol") != "tcp" and "datagrams_in" in c:  # TCP moves none; older clients send none
            dgrams.add_metric([*lv, rule, "in"], c["datagrams_in"])
            dgrams.add_metric([*lv, rule, "out"], c.get("datagrams_out", 0))
        active.add_metric([*lv, rule], c["connections_active"])
        total.add_metric([*lv, rule], c["connections_total"])
        fails.add_metric([*lv, rule], c["connect_failures"])
        failovers.add_metric([*lv, rule], c.get("failovers", 0))
        cuts.add_metric([*lv, rule], c.get("quota_cuts", 0))
        for reason, n in sorted(c.get("rejected", {}).items()):
            rejected.add_metric([*lv, rule, reason], n)
        for reason, n in sorted(c.get("dropped", {}).items()):
            dropped.add_metric([*lv, rule, reason], n)
        splice.add_metric([*lv, rule, "splice"], c.get("splice_connections", 0))
        splice.add_metric([*lv, rule, "copy"], c.get("copy_connections", 0))
        for result, n in sorted(c.get("sni_routes", {}).items()):
            sni.add_metric([*lv, c.get("listen", ""), rule, result], n)
        checked = c.get("health_checked", {})
        for target, n in sorted(checked.items()):
            up.add_metric([*lv, rule, target], c.get("health_up", {}).get(target, 0) / n if n else 0.0)
            flips.add_metric([*lv, rule, target, "down"], c.get("health_went_down", {}).get(target, 0))
            flips.add_metric([*lv, rule, target, "up"], c.get("health_went_up", {}).get(target, 0))
            sent = c.get("health_probes", {}).get(target, 0)
            failed = c.get("health_probe_failures", {}).get(target, 0)
            probes.add_metric([*lv, rule, target, "failed"], failed)
            probes.add_metric([*lv, rule, target, "passed"], max(0, sent - failed))
    for listener, counts in sorted((sni_listeners or {}).items()):
        for result, n in sorted(counts.items()):
            sni.add_metric([*lv, listener, "", result], n)
    return [by, dgrams, active, total, fails, failovers, cuts, rejected, dropped, splice, rate, limit, sni, up, flips, probes]


# A counter report is data from another process: every value rule_metrics
# reads is checked here, so one bad report is refused whole instead of
# breaking every scrape (KeyError, OverflowError) for the whole fleet.
_COUNTERS_REQUIRED = ("bytes_in", "bytes_out", "connections_active", "connections_total", "connect_failures")
_COUNTERS_OPTIONAL = ("failovers", "quota_cuts", "splice_connections", "copy_connections", "rate_in_bytes_per_s",
                      "rate_out_bytes_per_s", "datagrams_in", "datagrams_out")
_COUNTER_MAPS = ("rejected", "dropped", "current_limits", "sni_routes", "health_up", "health_checked",
                 "health_probes", "health_probe_failures", "health_went_down", "health_went_up")
_COUNTER = Bounded(False, 0, 2**64, "counter")
_MAX_LABEL_CHARS = 128


def _counter(where: str, v: Any) -> Any:
    problem = _COUNTER.problem(v)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    return v


def parse_rule_counters(rules: Any) -> dict[str, dict[str, Any]]:
    """Check a {rule: counters} report (as `Forwarder.snapshot()["rules"]` makes it); ValueError says what is wrong.

    Known keys are checked; unknown keys are kept only when they are
    counters (a newer client may report more), and text fields are cut short.
    """
    if not isinstance(rules, dict):
        raise ValueError("rules must be an object")
    out: dict[str, dict[str, Any]] = {}
    for name, c in rules.items():
        where = f"rule {show(name)}"
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_LABEL_CHARS:
            raise ValueError(f"{where}: bad rule name")
        if not isinstance(c, dict):
            raise ValueError(f"{where}: counters must be an object")
        entry: dict[str, Any] = {}
        for key in _COUNTERS_REQUIRED:
            if key not in c:
                raise ValueError(f"{where}: {key} missing")
            entry[key] = _counter(f"{where}: {key}", c[key])
        for key, v in c.items():
            if key in _COUNTERS_REQUIRED:
                continue
            if key in _COUNTER_MAPS:
                if not isinstance(v, dict):
                    raise ValueError(f"{where}: {key} must be an object")
                entry[key] = {str(k)[:_MAX_LABEL_CHARS]: _counter(f"{where}: {key}.{show(k)}", n)
                              for k, n in v.items()}
            elif key in _COUNTERS_OPTIONAL or _COUNTER.contains(v):
                entry[key] = _counter(f"{where}: {key}", v)
            elif isinstance(v, str):
                entry[key] = v[:_MAX_LABEL_CHARS]
            elif isinstance(v, list) and all(isinstance(x, str) for x in v):
                entry[key] = [x[:_MAX_LABEL_CHARS] for x in v[:64]]
        describe_health(entry)  # from the checked counts, not from the report's own words
        out[name] = entry
    return out


def make_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry
