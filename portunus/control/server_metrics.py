"""Prometheus metrics of portunus-server (served on metrics_listen).

Per-rule counters come from the clients' stats reports and use the same
families as standalone (`portunus.metrics.rule_metrics`) with an extra
`client` label, so one dashboard serves both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from portunus.metrics import PREFIX, quota_metrics, rule_metrics

log = logging.getLogger("portunus.server.metrics")


class ClientStatsCollector(Collector):
    """Per client/rule counters from the latest stats report of each client."""

    def __init__(self, reports: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._reports = reports

    def collect(self) -> Iterator[Metric]:
        reports = self._reports()
        active = GaugeMetricFamily(f"{PREFIX}_server_client_connections_active",
                                   "Open connections on each client (latest stats report)", labels=["client"])
        merged: dict[str, Metric] = {}
        for client, report in sorted(reports.items()):
            try:
                families = list(rule_metrics(report.get("rules", {}), {"client": client}))
            except Exception:  # one client's report never takes the fleet's metrics down
                log.exception('client "%s": its stats report cannot be exported; skipped', client)
                continue
            active.add_metric([client], report.get("active_connections", 0))
            for fam in families:
                if fam.name in merged:
                    merged[fam.name].samples.extend(fam.samples)
                else:
                    merged[fam.name] = fam
        yield active
        yield from merged.values()


class QuotaLedgerCollector(Collector):
    """portunus_quota_* gauges per (user, client) from the ledger (a copy the event loop refreshes)."""

    def __init__(self, quotas: Callable[[], dict[tuple[str, str], dict[str, Any]]]) -> None:
        self._quotas = quotas

    def collect(self) -> Iterator[Metric]:
        yield from quota_metrics(self._quotas(), key_labels=("user", "client"))


class ServerMetrics:
    """The server's own counters and gauges, in a private registry."""

    def __init__(self, reports: Callable[[], dict[str, dict[str, Any]]],
                 quotas: Callable[[], dict[tuple[str, str], dict[str, Any]]] = dict) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.clients_connected = Gauge(f"{PREFIX}_server_clients_connected",
                                       "Clients with an open control stream", registry=r)
        self.auth_failures = Counter(f"{PREFIX}_server_auth_failures",
                                     "Rejected credentials, by surface (http, grpc) and reason",
                                     ["surface", "reason"], registry=r)
        self.operator_requests = Counter(f"{PREFIX}_server_operator_requests",
                                         "Operator HTTP API requests, by method, route and status",
                                         ["method", "route", "status"], registry=r)
        self.rulesets_sent = Counter(f"{PREFIX}_server_rulesets_sent",
                                     "Signed rule sets sent to clients, by kind (full, delta)", ["kind"], registry=r)
        self.rule_acks = Counter(f"{PREFIX}_server_rule_acks",
                                 "Per-rule acks from clients, by result (active, failed)", ["result"], registry=r)
        self.rulesets_rejected = Counter(f"{PREFIX}_server_rulesets_rejected",
                                         "Rule sets a client refused to apply", registry=r)
        self.enrollments = Counter(f"{PREFIX}_server_enrollments",
                                   "Enrollment attempts, by result", ["result"], registry=r)
        self.audit_suppressed = Counter(f"{PREFIX}_server_audit_suppressed",
                                        "Unauthenticated events not written to the audit log (rate limit), "
                                        "by action", ["action"], registry=r)
        r.register(ClientStatsCollector(reports))
        r.register(QuotaLedgerCollector(quotas))
