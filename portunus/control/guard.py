"""What unauthenticated callers may cost the server: failed attempts are throttled per peer,
and their audit entries are rate-limited and capped.

Without this, anyone who can reach the control port grows the audit log by
one fsynced row per refused Enroll (3,000 rows in 1.8 s), and anyone who can
reach the operator API may try tokens as fast as the loop answers, unseen.

* Per surface (operator HTTP API, gRPC) and peer address, failures draw from a token bucket (`FAILURE_BURST`
  deep, refilled at `FAILURES_PER_SEC`). While it is empty every request
  from that address is refused with 429 / RESOURCE_EXHAUSTED without looking
  at its credentials, so a blocked peer learns nothing about a guess.
* Unauthenticated audit entries share one bucket (`AUDIT_BURST`,
  `AUDIT_PER_SEC`); the ones it refuses are counted, and the next entry
  written says how many were suppressed before it. At most
  `MAX_UNAUTHENTICATED_AUDIT_ROWS` of them are kept.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from portunus.control.server_metrics import ServerMetrics
from portunus.control.store import Store
from portunus.limits import TokenBucket

# A person mistyping a token a few times in a row is never blocked; a script is
# slowed to one guess a second per address.
FAILURE_BURST = 20
FAILURES_PER_SEC = 1.0
# Addresses tracked at once; beyond this the least recently failing one is
# forgotten (memory stays bounded whatever the number of source addresses).
MAX_TRACKED_PEERS = 4096
# Enough to see that an attack happened and from where, not one row per attempt.
AUDIT_BURST = 30
AUDIT_PER_SEC = 1.0
# About three hours of a sustained attack at AUDIT_PER_SEC; operator actions are never pruned.
MAX_UNAUTHENTICATED_AUDIT_ROWS = 10_000
# Pruning scans the audit table: do it once per this many unauthenticated rows.
PRUNE_EVERY_ROWS = 100
UNAUTHENTICATED_ACTOR_PREFIX = "peer:"


def peer_address(grpc_peer: str) -> str:
    """The address part of a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678")."""
    kind, _, rest = grpc_peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = rest.rpartition(":")
        return host.strip("[]") or rest
    return grpc_peer


class Guard:
    """Failure throttling per peer address, and the rate-limited audit of unauthenticated events."""

    def __init__(self, store: Store, metrics: ServerMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.metrics = metrics
        self._clock = clock
        self._peers: collections.OrderedDict[tuple[str, str], TokenBucket] = collections.OrderedDict()
        self._audit = TokenBucket(AUDIT_PER_SEC, AUDIT_BURST, start_full=True, clock=clock)
        self._suppressed = 0
        self._since_prune = 0

    def retry_after_s(self, surface: str, peer: str) -> float | None:
        """Seconds until `peer` may try again on `surface` ("http", "grpc"), or None if it is not blocked."""
        bucket = self._peers.get((surface, peer))
        if bucket is None:
            return None
        tokens = bucket.tokens()
        return None if tokens >= 1.0 else (1.0 - tokens) / FAILURES_PER_SEC

    def failed(self, surface: str, peer: str, action: str, target: str | None, result: str,
               detail: dict[str, Any] | None = None) -> None:
        """Count a failed attempt from `peer` on `surface` and audit it (rate-limited)."""
        key = (surface, peer)
        bucket = self._peers.get(key)
        if bucket is None:
            bucket = self._peers[key] = TokenBucket(FAILURES_PER_SEC, FAILURE_BURST, start_full=True,
                                                    clock=self._clock)
            while len(self._peers) > MAX_TRACKED_PEERS:
                self._peers.popitem(last=False)
        self._peers.move_to_end(key)
        bucket.try_take(1.0)
        self.audit(peer, action, target, result, detail)

    def audit(self, peer: str, action: str, target: str | None, result: str,
              detail: dict[str, Any] | None = None) -> None:
        """Write an unauthenticated event to the audit log, unless the audit bucket is empty."""
        if not self._audit.try_take(1.0):
            self._suppressed += 1
            self.metrics.audit_suppressed.labels(action).inc()
            return
        if self._suppressed:
            detail = {**(detail or {}), "suppressed_before": self._suppressed}
            self._suppressed = 0
        self.store.add_audit(f"{UNAUTHENTICATED_ACTOR_PREFIX}{peer}", None, action, target, detail, result)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY_ROWS:
            self._since_prune = 0
            self.store.prune_audit(UNAUTHENTICATED_ACTOR_PREFIX, MAX_UNAUTHENTICATED_AUDIT_ROWS)
