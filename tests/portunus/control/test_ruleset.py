"""Rules on the wire and the client's RuleBook: what it accepts, what it refuses."""

from __future__ import annotations

import tomllib

import pytest

from portunus.config import parse_config, parse_rule
from portunus.control.ruleset import (
    BundleRejected,
    NeedResync,
    RuleBook,
    conflicts,
    conflicts_with,
    delta_payload,
    full_payload,
    rule_to_dict,
)

RULES_TOML = """
[[owner]]
name = "team"
rate_limit = { bandwidth_in_bps = 1000 }

[[rule]]
name = "plain"
listen_port = 8080
target = "127.0.0.1:80"

[[rule]]
name = "v6-range"
listen_addr = "::1"
listen_ports = "9000-9009"
target = "[::1]:19000-19009"
owner = "team"
rate_limit = { bandwidth_in_bps = 5000, bandwidth_out_bps = 7000, concurrent_connections = 3, new_connections_per_sec = 2.5 }

[[rule]]
name = "failover"
protocol = "udp"
listen_port = 5353
targets = [{ host = "a.example", port = 53, priority = 1, proxy_protocol = "v2" }, { host = "[2001:db8::1]", port = 53 }]
udp_max_flows = 10
udp_flow_idle_secs = 2.5

[[rule]]
name = "long-lived"
listen_port = 8443
target = "127.0.0.1:443"
idle_timeout_secs = 86400
tcp_keepalive_secs = 15.5
"""


def test_rule_to_dict_round_trips() -> None:
    cfg = parse_config(tomllib.loads(RULES_TOML))
    for rule in cfg.rules:
        assert parse_rule(rule_to_dict(rule)) == rule
    # Keys newer than the first clients travel only when a rule sets them (older clients refuse unknown keys).
    plain, long_lived = cfg.rules[0], cfg.rules[-1]
    assert not {"idle_timeout_secs", "tcp_keepalive_secs"} & set(rule_to_dict(plain))
    assert (rule_to_dict(long_lived)["idle_timeout_secs"], rule_to_dict(long_lived)["tcp_keepalive_secs"]) == \
        (86400.0, 15.5)


def spec(name: str, port: int, target: str = "127.0.0.1:80") -> dict:
    return {"name": name, "listen_port": port, "target": target}


def test_full_then_deltas() -> None:
    book = RuleBook("edge")
    book, changed = book.advance(full_payload("edge", 3, [spec("a", 1000), spec("b", 1001)], {"t": {"bandwidth_in_bps": 9}}))
    assert (book.version, sorted(book.rules), changed) == (3, ["a", "b"], ["a", "b"])
    assert book.owners["t"].rate_limit.bandwidth_in_bps == 9
    book, changed = book.advance(delta_payload("edge", 4, upsert=[spec("c", 1002)], remove=["a"]))
    assert (book.version, sorted(book.rules), changed) == (4, ["b", "c"], ["c"])
    book, _ = book.advance(delta_payload("edge", 5, owners={"u": {"concurrent_connections": 1}}))
    assert sorted(book.owners) == ["t", "u"]
    # A re-sync at the same version is accepted (the server restarted, nothing changed).
    same, _ = book.advance(full_payload("edge", 5, [spec("b", 1001)], {}))
    assert same.version == 5 and sorted(same.rules) == ["b"]


@pytest.mark.parametrize("payload, message", [
    (full_payload("edge", 1, [], {}), "stale rule set: version 1 is older than the running 2"),
    (delta_payload("edge", 2, upsert=[spec("x", 1)]), "stale delta"),
    (full_payload("other", 9, [], {}), "rule set is for client 'other', not 'edge'"),
    ({**full_payload("edge", 9, [], {}), "format": 3}, "payload format 3 not supported"),
    ({**full_payload("edge", 9, [], {}), "format": 2, "quotas": {"u": {"bytes": 0, "period_start": 0, "used_bytes": 0}}},
     "bytes: must be an integer from 1"),
    ({**full_payload("edge", 9, [], {}), "format": 2, "quotas": {"u": {"bytes": 5, "period_start": -1, "used_bytes": 0}}},
     "period_start must be a number from 0"),
    (full_payload("edge", 9, [spec("x", 70000)], {}), "listen_port: port 70000 out of range"),
    (full_payload("edge", 9, [spec("x", 5), spec("y", 5)], {}), "overlaps"),
    (full_payload("edge", 9, [], {"t": {"bandwidth_in_bps": 0}}), "must be > 0"),
    ({**full_payload("edge", 9, [], {}), "kind": "weird"}, "unknown rule-set kind"),
])
def test_refused_payloads_leave_the_book_alone(payload: dict, message: str) -> None:
    book, _ = RuleBook("edge").advance(full_payload("edge", 2, [spec("a", 1000)], {}))
    with pytest.raises(BundleRejected, match=message):
        book.advance(payload)
    assert book.version == 2 and list(book.rules) == ["a"]


def test_delta_gap_asks_for_resync() -> None:
    book, _ = RuleBook("edge").advance(full_payload("edge", 2, [], {}))
    with pytest.raises(NeedResync):
        book.advance(delta_payload("edge", 4, upsert=[spec("x", 1)]))


def test_conflict_checks_match_the_toml_rules() -> None:
    wild = parse_rule({"name": "wild", "listen_addr": "0.0.0.0", "listen_ports": "100-200", "target": "h:1"})
    specific = parse_rule({"name": "one", "listen_addr": "127.0.0.1", "listen_port": 150, "target": "h:1"})
    other_addr = parse_rule({"name": "two", "listen_addr": "127.0.0.2", "listen_port": 300, "target": "h:1"})
    udp = parse_rule({"name": "udp", "protocol": "udp", "listen_port": 150, "target": "h:1"})
    v6 = parse_rule({"name": "v6", "listen_addr": "::", "listen_port": 150, "target": "h:1"})
    assert len(conflicts([wild, specific, other_addr, udp, v6])) == 1
    assert conflicts_with([specific], [wild, other_addr, udp, v6, specific]) != []
    assert conflicts_with([other_addr], [wild, specific, udp, v6, other_addr]) == []
    many = [parse_rule({"name": f"r{i}", "listen_port": 1000 + i, "target": "h:1"}) for i in range(500)]
    assert conflicts(many) == []
    assert len(conflicts([*many, parse_rule({"name": "x", "listen_ports": "1100-1102", "target": "h:1"})])) == 3


def test_full_set_reparses_only_what_changed() -> None:
    book, _ = RuleBook("edge").advance(full_payload("edge", 1, [spec("a", 1000), spec("b", 1001)], {}))
    a, b = book.rules["a"], book.rules["b"]
    same = book.plan(full_payload("edge", 1, [spec("a", 1000), spec("b", 1001)], {}))
    assert not same.changes_rules and same.defines == ["a", "b"]
    plan = book.plan(full_payload("edge", 2, [spec("a", 1000), spec("b", 1001, "127.0.0.1:81"), spec("c", 1002)], {}))
    assert sorted(plan.upsert) == ["b", "c"] and plan.remove == []
    book.commit(plan)
    assert book.rules["a"] is a and book.rules["b"] is not b and book.version == 2
    # Dropping a rule frees its port within the same full set.
    plan = book.plan(full_payload("edge", 3, [spec("a", 1000), spec("d", 1001)], {}))
    assert plan.remove == ["b", "c"] and list(plan.upsert) == ["d"]


def test_delta_checks_only_its_rules_against_the_index() -> None:
    book, _ = RuleBook("edge").advance(full_payload("edge", 1, [spec(f"r{i}", 2000 + i) for i in range(300)], {}))
    with pytest.raises(BundleRejected, match='overlaps rule "r7"'):
        book.plan(delta_payload("edge", 2, upsert=[spec("x", 2007)]))
    # A rule may move onto its own old port, or onto a port removed in the same delta.
    plan = book.plan(delta_payload("edge", 2, upsert=[spec("r7", 2007, "127.0.0.1:99"), spec("y", 2008)],
                                   remove=["r8"]))
    assert sorted(plan.upsert) == ["r7", "y"] and plan.remove == ["r8"]
    after = book.rules_after(plan)
    assert len(after) == 300 and {r.name for r in after} >= {"r7", "y"} and "r8" not in {r.name for r in after}
    book.commit(plan)
    with pytest.raises(BundleRejected, match='overlaps rule "y"'):
        book.plan(delta_payload("edge", 3, upsert=[spec("z", 2008)]))
    # Two rules of one delta that overlap each other are refused too.
    with pytest.raises(BundleRejected, match="overlaps"):
        book.plan(delta_payload("edge", 3, upsert=[spec("p", 5000), spec("q", 5000)]))
    # Re-sending a rule exactly as it runs changes nothing for the data plane.
    assert not book.plan(delta_payload("edge", 3, upsert=[spec("y", 2008)])).changes_rules
