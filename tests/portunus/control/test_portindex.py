"""The port index: the same overlap verdicts as a scan of every rule, from a few buckets."""

from __future__ import annotations

import random

from portunus.config import Rule, parse_rule
from portunus.control.portindex import BUCKET_PORTS, PortIndex
from portunus.control.ruleset import conflicts_with

ADDRS = ("127.0.0.1", "127.0.0.2", "0.0.0.0", "::", "::1")


def _random_rule(rng: random.Random, name: str) -> Rule:
    start = rng.randrange(1, 3000)
    width = rng.choice((0, 0, 0, 3, BUCKET_PORTS, 700))
    ports = {"listen_port": start} if width == 0 else {"listen_ports": f"{start}-{min(65535, start + width)}"}
    return parse_rule({"name": name, "protocol": rng.choice(("tcp", "udp")), "listen_addr": rng.choice(ADDRS),
                       **ports, "target": "h:1" if width == 0 else f"h:{1000}-{1000 + min(65535, start + width) - start}"})


def test_index_agrees_with_a_scan() -> None:
    rng = random.Random(21)
    index: PortIndex[str] = PortIndex()
    held: list[Rule] = []
    for i in range(400):
        rule = _random_rule(rng, f"r{i}")
        by_scan = set(conflicts_with([rule], held))
        by_index = {f'rule set: rule "{rule.name}": {p}' for _, p in index.overlapping(rule)}
        assert by_index == by_scan
        if not by_index:
            index.add(rule.name, rule)
            held.append(rule)
    assert len(index) == len(held) > 100
    # Removing a rule frees its ports; re-adding a key replaces its old ports.
    victim = held[0]
    index.discard(victim.name)
    assert index.overlapping(victim) == []
    index.add("moved", victim)
    index.add("moved", parse_rule({"name": "moved", "listen_port": 65000, "target": "h:1"}))
    assert index.overlapping(victim) == []
    assert [k for k, _ in index.overlapping(parse_rule({"name": "x", "listen_port": 65000, "target": "h:1"}))] \
        == ["moved"]


def test_ignored_keys_and_wide_ranges() -> None:
    index: PortIndex[int] = PortIndex()
    index.add(1, parse_rule({"name": "wide", "listen_addr": "0.0.0.0", "listen_ports": "1-65535",
                             "target": "h:1-65535"}))
    index.add(2, parse_rule({"name": "other", "listen_addr": "127.0.0.2", "listen_port": 40000, "target": "h:1"}))
    probe = parse_rule({"name": "p", "listen_addr": "127.0.0.2", "listen_port": 40000, "target": "h:1"})
    assert [k for k, _ in index.overlapping(probe)] == [1, 2]
    assert [k for k, _ in index.overlapping(probe, ignore={1})] == [2]
    assert index.overlapping(parse_rule({"name": "v6", "listen_addr": "::1", "listen_port": 40000,
                                         "target": "h:1"})) == []


def test_sni_rules_share_a_port_in_the_index() -> None:
    """SNI names share a TCP port; a second fallback or a repeated name does not (same verdicts as a scan)."""
    index: PortIndex[str] = PortIndex()
    held: list[Rule] = []
    specs = [{"name": f"n{i}", "listen_port": 8443, "sni_pattern": f"h{i}.example", "target": "h:1"} for i in range(50)]
    specs += [{"name": "fallback", "listen_port": 8443, "target": "h:1"},
              {"name": "fallback2", "listen_port": 8443, "target": "h:1"},
              {"name": "again", "listen_port": 8443, "sni_pattern": "h7.example", "target": "h:1"},
              {"name": "range", "listen_ports": "8440-8450", "target": "h:1-11"}]
    verdicts = {}
    for spec in specs:
        rule = parse_rule(spec)
        by_scan = set(conflicts_with([rule], held))
        by_index = {f'rule set: rule "{rule.name}": {p}' for _, p in index.overlapping(rule)}
        assert by_index == by_scan
        verdicts[rule.name] = by_index
        if not by_index:
            index.add(rule.name, rule)
            held.append(rule)
    assert len(held) == 51 and not verdicts["fallback"]
    assert any("two fallback rules" in p for p in verdicts["fallback2"])
    assert any('sni_pattern "h7.example"' in p for p in verdicts["again"])
    assert len(verdicts["range"]) == 51
