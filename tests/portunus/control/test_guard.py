"""Guard: per-address failure throttle, rate-limited and capped unauthenticated audit (fake clock only)."""

from __future__ import annotations

import pytest

from portunus.control import guard as guard_mod
from portunus.control.guard import AUDIT_BURST, FAILURE_BURST, Guard, peer_address
from portunus.control.server_metrics import ServerMetrics
from portunus.control.store import Store
from tests.support.clock import ManualClock


def test_peer_address() -> None:
    assert peer_address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5555") == "::1"
    assert peer_address("unix:/tmp/x") == "unix:/tmp/x"


def test_failures_block_one_address_on_one_surface(store: Store) -> None:
    clock = ManualClock()
    g = Guard(store, ServerMetrics(dict), clock)
    for _ in range(FAILURE_BURST):
        assert g.retry_after_s("http", "10.0.0.1") is None
        g.failed("http", "10.0.0.1", "auth.failed", None, "refused")
    assert g.retry_after_s("http", "10.0.0.1") == pytest.approx(1.0)
    assert g.retry_after_s("grpc", "10.0.0.1") is None and g.retry_after_s("http", "10.0.0.2") is None
    clock.now += 1.0
    assert g.retry_after_s("http", "10.0.0.1") is None


def test_unauthenticated_audit_is_rate_limited_counted_and_pruned(store: Store, monkeypatch) -> None:
    clock = ManualClock()
    g = Guard(store, ServerMetrics(dict), clock)
    for i in range(500):
        g.audit(f"10.0.{i // 250}.{i % 250}", "client.enroll", None, "refused")
    assert len(store.list_audit(limit=1000)) == AUDIT_BURST
    clock.now += 3.0
    g.audit("10.9.9.9", "client.enroll", None, "refused")
    newest = store.list_audit(limit=1)[0]
    assert (newest.actor, newest.detail) == ("peer:10.9.9.9", {"suppressed_before": 500 - AUDIT_BURST})

    # Retention: only the newest unauthenticated rows are kept; operator actions never go.
    store.add_audit("operator_token", "admin", "rule.create", "r", None, "ok")
    monkeypatch.setattr(guard_mod, "MAX_UNAUTHENTICATED_AUDIT_ROWS", 10)
    monkeypatch.setattr(guard_mod, "PRUNE_EVERY_ROWS", 1)
    clock.now += 100.0
    g.audit("10.9.9.8", "client.enroll", None, "refused")
    rows = store.list_audit(limit=1000)
    assert sum(r.actor.startswith("peer:") for r in rows) == 10
    assert any(r.actor == "operator_token" for r in rows)
