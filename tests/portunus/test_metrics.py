"""The counter-report schema the server checks matches what the data plane reports."""

from __future__ import annotations

import pytest

from portunus.config import parse_rule
from portunus.dataplane import Forwarder
from portunus.metrics import parse_rule_counters, rule_metrics
from tests.support.net import free_port


def test_a_real_forwarder_snapshot_passes_the_schema_unchanged() -> None:
    fwd = Forwarder()
    try:
        rules = [parse_rule({"name": "t", "listen_addr": "127.0.0.1", "listen_port": free_port(),
                             "target": "127.0.0.1:9", "rate_limit": {"bandwidth_in_bps": 1000}}),
                 parse_rule({"name": "u", "protocol": "udp", "listen_addr": "127.0.0.1",
                             "listen_port": free_port(), "target": "127.0.0.1:9"})]
        assert fwd.apply(rules, [], atomic=True) == {"t": None, "u": None}
        snap = fwd.snapshot()["rules"]
    finally:
        fwd.close()
    assert parse_rule_counters(snap) == snap
    assert list(rule_metrics(parse_rule_counters(snap)))


@pytest.mark.parametrize(("rules", "fragment"), [
    ([], "rules must be an object"),
    ({"r": {"bytes_in": 1}}, "rule 'r': bytes_out missing"),
    ({"r": {"bytes_in": 10**400, "bytes_out": 0, "connections_active": 0, "connections_total": 0,
            "connect_failures": 0}}, "rule 'r': bytes_in: must be a number from 0 to"),
    ({"r": {"bytes_in": 1, "bytes_out": 0, "connections_active": 0, "connections_total": 0,
            "connect_failures": 0, "rejected": {"x": None}}}, "rule 'r': rejected.'x': must be a number"),
    ({"r": {"bytes_in": 1, "bytes_out": 0, "connections_active": 0, "connections_total": 0,
            "connect_failures": 0, "datagrams_in": -1}}, "rule 'r': datagrams_in: must be a number"),
])
def test_bad_reports_say_what_is_wrong(rules: object, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_rule_counters(rules)
    assert fragment in str(e.value)
