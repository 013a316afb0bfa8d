"""Hostile numbers and bodies at the operator API, against a real server and a connected client
(issue 15 item 1: one API call used to crash-loop a client, others gave 500s)."""

from __future__ import annotations

import json
import random
import re
import sqlite3

import pytest

from tests.portunus.control.support import ControlPlane, through, wait_until
from tests.support.net import ExchangeServer, free_port

HUGE = "1" + "0" * 400          # 10**400: an int Python parses, a float cannot hold
DIGITS_5000 = "7" * 5000        # beyond Python's 4,300-digit int conversion limit
OUT_OF_RANGE = [HUGE, "1e999", "NaN", "-Infinity", "1e400"]


def _rule_json(name: str, port: int, extra: str) -> bytes:
    base = json.dumps({"client": "edge", "name": name, "listen_addr": "127.0.0.1", "listen_port": port,
                       "target": "127.0.0.1:9"})
    return (base[:-1] + ", " + extra + "}").encode()


def _no_traceback(plane: ControlPlane) -> None:
    assert plane.server is not None and plane.server.alive()
    assert "Traceback" not in plane.server.log(), plane.server.log()[-3000:]
    client = plane.edge_client  # type: ignore[attr-defined]
    assert client.alive(), client.log()[-3000:]
    assert "Traceback" not in client.log(), client.log()[-3000:]


@pytest.mark.parametrize(("field", "where"), [
    ("bandwidth_in_bps", "rate_limit"), ("bandwidth_out_burst", "rate_limit"),
    ("new_connections_per_sec", "rate_limit"), ("concurrent_connections", "rate_limit"),
    ("udp_flow_idle_secs", None), ("udp_max_flows", None), ("idle_timeout_secs", None),
    ("tcp_keepalive_secs", None),
])
def test_out_of_range_numbers_are_400_and_the_client_keeps_running(edge: ControlPlane, field: str,
                                                                     where: str | None) -> None:
    for value in OUT_OF_RANGE:
        extra = f'"rate_limit": {{"{field}": {value}}}' if where else f'"{field}": {value}'
        resp = edge.raw("POST", "/v1/rules", _rule_json(f"bad-{field}", free_port(), extra))
        assert resp.status == 400, (field, value[:10], resp)
        assert resp.error["code"] == "invalid_rule"
        key = f"{where}.{field}" if where else field
        # The message names the key and says what it allows.
        assert re.search(rf"{key}: must be (an integer|a number) .*(to|<=) [0-9]+", resp.error["message"]), resp
    # The client took no harm: a good rule is acked Active.
    ok = edge.push("edge", f"good-after-{field}", free_port(), "127.0.0.1:9")
    assert ok.status == 201, ok
    assert edge.api().delete(f"/v1/rules/{ok.body['id']}").status == 200
    _no_traceback(edge)


def test_owner_limits_and_enrollment_ttl_are_bounded(edge: ControlPlane) -> None:
    for value in OUT_OF_RANGE:
        resp = edge.raw("PUT", "/v1/clients/edge/owners/acme/rate-limit", f'{{"bandwidth_in_bps": {value}}}'.encode())
        assert resp.status == 400 and "bandwidth_in_bps: must be an integer from 1 to" in resp.error["message"], resp
        resp = edge.raw("POST", "/v1/client-enrollments",
                        f'{{"name": "ttl-test", "address": "127.0.0.1", "ttl_secs": {value}}}'.encode())
        assert resp.status == 400, (value[:10], resp)
        assert resp.error["message"].startswith("ttl_secs must be a number > 0 and <= 604800 (seconds)"), resp
    _no_traceback(edge)


def test_names_with_a_trailing_newline_are_refused(edge: ControlPlane) -> None:
    """Issue 15 item 9: "web" and "web\\n" used to coexist as two rules."""
    port = free_port()
    resp = edge.api().post("/v1/rules", {"client": "edge", "name": "nl\n", "listen_addr": "127.0.0.1",
                                         "listen_port": port, "target": "127.0.0.1:9"})
    assert resp.status == 400 and "name: must be 1-128 chars" in resp.error["message"], resp
    for path, body in (("/v1/client-enrollments", {"name": "edge2\n", "address": "127.0.0.1"}),
                       ("/v1/tokens", {"name": "t\n", "role": "viewer"})):
        resp = edge.api().post(path, body)
        assert resp.status == 400 and "name must be 1-128 chars" in resp.error["message"], resp
    resp = edge.api().put("/v1/clients/edge/owners/acme%0A/rate-limit", {"bandwidth_in_bps": 10})
    assert resp.status == 400 and "owner must be" in resp.error["message"], resp
    _no_traceback(edge)


def test_ids_and_query_numbers_that_name_no_row(edge: ControlPlane) -> None:
    for path in ("/v1/rules/%C2%B2", "/v1/rules/" + "9" * 20, "/v1/rules/" + "9" * 19, "/v1/rules/-1"):
        assert edge.raw("GET", path).status == 404, path
        assert edge.raw("DELETE", path).status == 404, path
        assert edge.raw("PUT", path, b"{}").status == 404, path
    for path in ("/v1/tokens/%C2%B2", "/v1/tokens/" + "9" * 20):
        assert edge.raw("DELETE", path).status == 404, path
    for query in ("after_id=" + "9" * 30, "after_id=%C2%B2", "limit=0", "limit=" + "9" * 30, "limit=-5"):
        resp = edge.raw("GET", "/v1/audit?" + query)
        assert resp.status == 400 and resp.error["code"] == "invalid", (query, resp)
    _no_traceback(edge)


@pytest.mark.parametrize("body", [
    ('{"client": "edge", "name": "x", "listen_port": ' + DIGITS_5000 + "}").encode(),
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"name": "x", "address": "\\ud800"}',
    b'{"name": "x", "address": "\xff\xfe"}',
], ids=["5000-digit-int", "deep-nesting", "lone-surrogate", "not-utf8"])
def test_bodies_json_cannot_carry_are_400(edge: ControlPlane, body: bytes) -> None:
    for method, path in (("POST", "/v1/rules"), ("POST", "/v1/client-enrollments"),
                         ("PUT", "/v1/clients/edge/owners/acme/rate-limit")):
        resp = edge.raw(method, path, body)
        assert resp.status == 400 and resp.error["code"] == "bad_json", (path, resp)
    _no_traceback(edge)


def test_client_refuses_a_stored_out_of_range_rule_and_keeps_forwarding(plane: ControlPlane) -> None:
    """A rule stored by an older, laxer server reaches the client in its full set: the client
    refuses the set (the bundle path shares the schema) and keeps its running rules."""
    target = ExchangeServer(lambda tag: 4096, random.Random(3))
    try:
        client = plane.start_client(plane.enroll("edge"))
        plane.wait_online("edge")
        port = free_port()
        assert plane.push("edge", "keep", port, f"127.0.0.1:{target.port}").status == 201
        through(port, target, b"before-000000001")

        assert plane.server is not None
        plane.server.stop()
        db = sqlite3.connect(plane.data_dir / "state.db")
        spec = json.loads(db.execute("SELECT spec_json FROM rules WHERE name = 'keep'").fetchone()[0])
        spec["rate_limit"] = {"bandwidth_in_bps": 10**400}
        with db:
            db.execute("UPDATE rules SET spec_json = ? WHERE name = 'keep'", (json.dumps(spec),))
            db.execute("UPDATE clients SET ruleset_version = ruleset_version + 1 WHERE name = 'edge'")
        db.close()
        plane.start_server()
        client.wait_log("rule set refused", timeout_s=30)
        assert "bandwidth_in_bps: must be an integer from 1 to 1000000000000" in client.log()
        wait_until(lambda: client.stats()["control"]["rulesets_rejected"] >= 1, 10, "rejection counted")
        assert client.alive()
        through(port, target, b"after-0000000001")
        # A further change is answered (not a 500): the client refuses the whole set it belongs to.
        resp = plane.push("edge", "other", free_port(), f"127.0.0.1:{target.port}")
        assert resp.status == 422 and "bandwidth_in_bps" in resp.error["message"], resp
        assert "Traceback" not in client.log() and "Traceback" not in plane.server.log()
    finally:
        target.close()


def test_timeout_and_keepalive_keys_are_accepted_and_reach_the_client(edge: ControlPlane) -> None:
    """The schema keys the data plane implements (idle timeout, keepalive) travel like any rule field."""
    resp = edge.push("edge", "quiet", free_port(), "127.0.0.1:9", idle_timeout_secs=120, tcp_keepalive_secs=7.5)
    assert resp.status == 201, resp
    stored = edge.api().get(f"/v1/rules/{resp.body['id']}").body["rule"]
    assert (stored["idle_timeout_secs"], stored["tcp_keepalive_secs"]) == (120.0, 7.5)
    # The client's last-known file holds what it applied, as the server signed it.
    lines = (edge.root / "edge.bundle.json.ruleset.jsonl").read_text().splitlines()
    payloads = [json.loads(json.loads(line)["signed"]["payload"]) for line in lines[1:]]
    pushed = [r for p in payloads for r in p.get("upsert", p.get("rules", [])) if r["name"] == "quiet"]
    assert pushed and (pushed[-1]["idle_timeout_secs"], pushed[-1]["tcp_keepalive_secs"]) == (120.0, 7.5)
    assert edge.api().delete(f"/v1/rules/{resp.body['id']}").status == 200
