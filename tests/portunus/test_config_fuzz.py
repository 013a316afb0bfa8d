"""Property-based fuzzing of the TOML loader (issue 15): for any value in any field, the loader
gives a Config or a ConfigError naming where: never another exception, never a traceback."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portunus.config import RATE_LIMIT_KEYS, RULE_KEYS, ConfigError, load_config, parse_config
from tests.support.proc import run_cli

# Every value TOML can hold (tomllib's types), nested a little.
SCALARS = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.datetimes(), st.dates(), st.times(),
    st.sampled_from(["tcp", "udp", "auto", "v1", "127.0.0.1:80", "1-2", "[::1]", "0.0.0.0", "web\n", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=8)

BASE_RULE = {"name": "r", "protocol": "tcp", "listen_addr": "127.0.0.1", "listen_port": 8080,
             "target": "127.0.0.1:80", "rate_limit": {"bandwidth_in_bps": 1000}}
SECTIONS = {
    "global": ("label", "log_level", "log_format", "shutdown_drain_secs", "workers"),
    "defaults": ("protocol", "udp_max_flows", "udp_flow_idle_secs", "idle_timeout_secs", "tcp_keepalive_secs"),
}
FIELDS = ([("global", k) for k in SECTIONS["global"]] + [("defaults", k) for k in SECTIONS["defaults"]]
          + [("rule", k) for k in RULE_KEYS] + [("rate_limit", k) for k in RATE_LIMIT_KEYS]
          + [("target", k) for k in ("host", "port", "priority", "proxy_protocol")]
          + [("owner", k) for k in ("name", "rate_limit")] + [("top", k) for k in ("global", "rule", "owner", "x")])


def _document(where: str, key: str, value: Any) -> dict[str, Any]:
    """A valid document with one field set to `value`."""
    rule: dict[str, Any] = json.loads(json.dumps(BASE_RULE))
    doc: dict[str, Any] = {"global": {"label": "x"}, "defaults": {}, "owner": [{"name": "o"}], "rule": [rule]}
    if where in SECTIONS:
        doc[where][key] = value
    elif where == "rule":
        rule.pop("target" if key == "targets" else "listen_port" if key == "listen_ports" else "", None)
        rule[key] = value
    elif where == "rate_limit":
        rule["rate_limit"][key] = value
    elif where == "target":
        rule.pop("target")
        rule["targets"] = [{"host": "127.0.0.1", "port": 80, key: value}]
    elif where == "owner":
        doc["owner"][0][key] = value
    else:
        doc[key] = value
    return doc


def _check(doc: dict[str, Any]) -> None:
    try:
        cfg = parse_config(doc, "fuzz.toml")
    except ConfigError as e:
        assert e.problems and all(p.startswith("fuzz.toml: ") for p in e.problems), e.problems
        assert all(len(p) < 1000 for p in e.problems), "an error message echoed a huge value"
    else:
        assert cfg.rules


@settings(max_examples=600, deadline=None, database=None)
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_in_any_field_is_a_config_or_a_config_error(field: tuple[str, str], value: Any) -> None:
    _check(_document(*field, value))


def _toml(v: Any) -> str:
    """TOML text for a value (inline tables and arrays); strings escaped as JSON does, which TOML reads."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, datetime.datetime | datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_check_cli_answers_any_file_with_ok_or_errors(tmp_path_factory: Any, field: tuple[str, str],
                                                      value: Any) -> None:
    doc = _document(*field, value)
    try:
        text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in doc.items()) + "\n"
    except ValueError:  # an int beyond Python's str() limit: the file could not even be written
        text = f"x = {'9' * 5000}\n"
    path = tmp_path_factory.mktemp("fuzz") / "rules.toml"
    path.write_text(text, errors="surrogatepass")
    r = run_cli("portunus-standalone", "--config", str(path), "--check")
    assert r.returncode in (0, 2), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 2:
        assert all(line.startswith(f"error: {path}") for line in r.stderr.splitlines()), r.stderr


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_is_read_or_refused(tmp_path_factory: Any, text: str) -> None:
    path: Path = tmp_path_factory.mktemp("raw") / "x.toml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        load_config(path)
    except ConfigError as e:
        assert all(p.startswith(str(path)) for p in e.problems), e.problems
