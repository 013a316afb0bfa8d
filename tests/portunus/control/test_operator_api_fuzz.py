"""Property-based fuzzing of the operator API (issue 15) against a real server with a connected
client: for arbitrary JSON values in every field, and arbitrary path segments and query values,
the answer is a JSON error or success (never a 500), the server logs no traceback, and the
client neither crashes nor logs one."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portunus.config import RATE_LIMIT_KEYS, RULE_KEYS, ConfigError, parse_rule
from tests.portunus.control.support import ControlPlane
from tests.support.net import free_port

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.text(st.characters(categories=["Cs", "Cc", "Zl", "Nd"]), max_size=5),
    st.sampled_from(["tcp", "udp", "edge", "127.0.0.1:9", "[::1]:9", "1-3", "v2", "web\n", "", "²", "0.0.0.0"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=8)
SEGMENTS = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=25),
                     st.integers(min_value=-(10**30), max_value=10**30).map(str),
                     st.sampled_from(["1", "²", "9" * 20, "0", "-1", "%", "..", "edge", "a\n"]))

FIELDS = ([("rule", k) for k in (*RULE_KEYS, "client", "colour")] + [("rate_limit", k) for k in RATE_LIMIT_KEYS]
          + [("target", k) for k in ("host", "port", "priority", "proxy_protocol", "x")])
FUZZ_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def reserved_port() -> int:
    """The one port a fuzzed rule may bind (a valid random port could be another test's)."""
    return free_port()


def _body(raw: dict[str, Any]) -> bytes | None:
    try:
        return json.dumps(raw).encode()
    except ValueError:  # an int beyond Python's str() limit; the server's refusal of such bodies is tested apart
        return None


def _answer_ok(status: int, body: Any) -> None:
    assert status != 500 and status < 600, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("code"), body


def _binds_elsewhere(rule_body: dict[str, Any], port: int) -> bool:
    try:
        rule = parse_rule(rule_body, extra_keys=("client",))
    except ConfigError:
        return False
    return list(rule.listen_ports) != [port]


def _rule(field: tuple[str, str], value: Any, port: int) -> dict[str, Any]:
    body: dict[str, Any] = {"client": "edge", "name": "fuzz", "listen_addr": "127.0.0.1", "listen_port": port,
                            "target": "127.0.0.1:9", "rate_limit": {"bandwidth_in_bps": 1000}}
    where, key = field
    if where == "rule":
        body.pop({"targets": "target", "listen_ports": "listen_port"}.get(key, ""), None)
        body[key] = value
    elif where == "rate_limit":
        body["rate_limit"][key] = value
    else:
        body.pop("target")
        body["targets"] = [{"host": "127.0.0.1", "port": 9, key: value}]
    return body


@FUZZ_SETTINGS
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_rules_any_value_in_any_field(edge: ControlPlane, reserved_port: int, field: tuple[str, str],
                                      value: Any) -> None:
    rule = _rule(field, value, reserved_port)
    body = _body(rule)
    if body is None or _binds_elsewhere(rule, reserved_port):
        return
    resp = edge.raw("POST", "/v1/rules?wait=false", body)
    _answer_ok(resp.status, resp.body)
    if resp.status in (201, 202):
        assert edge.raw("DELETE", f"/v1/rules/{resp.body['id']}").status == 200


@FUZZ_SETTINGS
@given(segment=SEGMENTS, value=JSON_VALUES, method=st.sampled_from(["GET", "PUT", "DELETE"]))
def test_rule_ids_and_replacements(edge: ControlPlane, segment: str, value: Any, method: str) -> None:
    body = _body({"name": value}) if method == "PUT" else None
    resp = edge.raw(method, "/v1/rules/" + urllib.parse.quote(segment, safe=""), body)
    _answer_ok(resp.status, resp.body)
    assert resp.status != 200 or segment.isascii() and segment.isdigit()


@FUZZ_SETTINGS
@given(name=JSON_VALUES, address=JSON_VALUES, ttl=JSON_VALUES, which=st.sampled_from(["name", "address", "ttl_secs"]))
def test_enrollments(edge: ControlPlane, name: Any, address: Any, ttl: Any, which: str) -> None:
    raw = {"name": "fuzz-client", "address": "127.0.0.1", "ttl_secs": 60}
    raw[which] = {"name": name, "address": address, "ttl_secs": ttl}[which]
    body = _body(raw)
    if body is not None:
        resp = edge.raw("POST", "/v1/client-enrollments", body)
        _answer_ok(resp.status, resp.body)


@FUZZ_SETTINGS
@given(client=SEGMENTS, owner=SEGMENTS, key=st.sampled_from([*RATE_LIMIT_KEYS, "x"]), value=JSON_VALUES,
       real_client=st.booleans())
def test_owner_limits(edge: ControlPlane, client: str, owner: str, key: str, value: Any, real_client: bool) -> None:
    body = _body({key: value})
    if body is None:
        return
    path = (f"/v1/clients/{'edge' if real_client else urllib.parse.quote(client, safe='')}/owners/"
            f"{urllib.parse.quote(owner, safe='')}/rate-limit")
    resp = edge.raw("PUT", path, body)
    _answer_ok(resp.status, resp.body)


@FUZZ_SETTINGS
@given(limit=SEGMENTS, after=SEGMENTS, segment=SEGMENTS, token_body=JSON_VALUES)
def test_audit_tokens_and_enrollment_ids(edge: ControlPlane, limit: str, after: str, segment: str,
                                         token_body: Any) -> None:
    query = urllib.parse.urlencode({"limit": limit, "after_id": after})
    for method, path, body in (("GET", f"/v1/audit?{query}", None),
                               ("DELETE", "/v1/tokens/" + urllib.parse.quote(segment, safe=""), None),
                               ("DELETE", "/v1/client-enrollments/" + urllib.parse.quote(segment, safe=""), None),
                               ("POST", "/v1/tokens", _body({"name": token_body, "role": "viewer"}))):
        resp = edge.raw(method, path, body)
        _answer_ok(resp.status, resp.body)


def test_after_the_fuzzing_nothing_crashed(edge: ControlPlane) -> None:
    """Runs last in this module (pytest keeps file order): the processes the fuzzing hit are whole."""
    assert edge.server is not None and edge.server.alive()
    client = edge.edge_client  # type: ignore[attr-defined]
    assert client.alive(), client.log()[-3000:]
    for proc in (edge.server, client):
        assert "Traceback" not in proc.log(), proc.log()[-5000:]
    assert edge.client_view("edge")["status"] == "online"
    assert edge.push("edge", "after-fuzz", free_port(), "127.0.0.1:9").status == 201
