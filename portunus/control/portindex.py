"""Rules indexed by protocol and port: the few a rule may overlap, found without a scan.

Ports fall into buckets of `BUCKET_PORTS`; a rule is listed under every bucket
its listen range touches, so looking up a rule costs its own buckets (one for
a single port, at most 65536 / BUCKET_PORTS for the widest range), whatever
the number of rules held. The verdict on a candidate is `listen_conflict`'s,
the same as for a TOML file (SNI rules share a TCP port). The server keeps one index per client (keys are
rule ids), the client one for its rule book (keys are rule names).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Generic, TypeVar

from portunus.config import Rule, listen_conflict, sni_ports

K = TypeVar("K")

# 256 buckets cover the port space: a single-port rule shares its bucket with
# at most 255 other single-port rules of its protocol and address family.
BUCKET_PORTS = 256


def _buckets(rule: Rule) -> range:
    return range(rule.listen_port // BUCKET_PORTS, rule.listen_port_end // BUCKET_PORTS + 1)


def may_overlap(a: Rule, b: Rule) -> bool:
    """Cheap pre-filter: same protocol and intersecting port ranges."""
    return a.protocol == b.protocol and a.listen_port <= b.listen_port_end and b.listen_port <= a.listen_port_end


def overlap(a: Rule, b: Rule, sni_port: bool = False) -> str | None:
    """Why `a` cannot listen next to `b` (the text names b), or None; `sni_port` as for `listen_conflict`."""
    return listen_conflict(a, b, sni_port) if may_overlap(a, b) else None


class PortIndex(Generic[K]):
    """Rules by key, with a port-bucket index for overlap checks."""

    def __init__(self) -> None:
        self._rules: dict[K, Rule] = {}
        # (protocol, bucket) -> keys; a dict keeps insertion order, so answers are stable.
        self._buckets: dict[tuple[str, int], dict[K, None]] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, key: object) -> bool:
        return key in self._rules

    def get(self, key: K) -> Rule | None:
        return self._rules.get(key)

    def items(self) -> Iterator[tuple[K, Rule]]:
        return iter(self._rules.items())

    def add(self, key: K, rule: Rule) -> None:
        """Index `rule` under `key` (replacing what `key` held)."""
        self.discard(key)
        self._rules[key] = rule
        for b in _buckets(rule):
            self._buckets.setdefault((rule.protocol, b), {})[key] = None

    def discard(self, key: K) -> None:
        rule = self._rules.pop(key, None)
        if rule is None:
            return
        for b in _buckets(rule):
            slot = self._buckets.get((rule.protocol, b))
            if slot is not None:
                slot.pop(key, None)
                if not slot:
                    del self._buckets[(rule.protocol, b)]

    def candidates(self, rule: Rule) -> list[K]:
        """Keys whose rules share `rule`'s protocol and some of its ports."""
        found: dict[K, None] = {}
        for b in _buckets(rule):
            for key in self._buckets.get((rule.protocol, b), ()):
                if key not in found and may_overlap(rule, self._rules[key]):
                    found[key] = None
        return list(found)

    def overlapping(self, rule: Rule, ignore: Collection[K] = ()) -> list[tuple[K, str]]:
        """(key, why) for every indexed rule `rule` cannot listen next to, leaving out the keys in `ignore`."""
        keys = [key for key in self.candidates(rule) if key not in ignore]
        # Whether some rule routes the port by SNI only changes the message; rules on the port are candidates.
        sni_port = rule.listen_key in sni_ports([rule, *(self._rules[key] for key in keys)])
        out = []
        for key in keys:
            problem = overlap(rule, self._rules[key], sni_port)
            if problem is not None:
                out.append((key, problem))
        return out
