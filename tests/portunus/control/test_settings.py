"""server.toml validation: every problem reported, each naming the file and key."""

from __future__ import annotations

import pytest

from portunus.config import ConfigError
from portunus.control.settings import ServerSettings, load_server_settings, parse_server_settings

GOOD = {"control_listen": "127.0.0.1:7443", "operator_http_listen": "127.0.0.1:7080",
        "metrics_listen": "127.0.0.1:7090", "operator_token": "x" * 43}


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_server_settings(data, "D/server.toml")
    return e.value.problems


def test_good_and_defaults() -> None:
    s = parse_server_settings(GOOD)
    assert s == ServerSettings("127.0.0.1:7443", "127.0.0.1:7080", "x" * 43, "127.0.0.1:7090")
    assert s.endpoint == "127.0.0.1:7443"
    assert parse_server_settings({**GOOD, "advertised_endpoint": "edge.example:443"}).endpoint == "edge.example:443"


def test_every_problem_names_file_and_key() -> None:
    got = problems({"control_listen": "nope", "operator_token": "short", "colour": 1, "ack_timeout_secs": 0,
                    "metrics_listen": "127.0.0.1:7443", "log_level": "loud"})
    assert "D/server.toml: colour: unknown key (allowed: " in got[0]
    assert "D/server.toml: operator_http_listen: missing" in got
    assert any(p.startswith("D/server.toml: control_listen: control_listen must be HOST:PORT") for p in got)
    assert any(p.startswith("D/server.toml: operator_token: must be at least 32 characters") and "gen-token" in p
               for p in got)
    assert any(p.startswith("D/server.toml: ack_timeout_secs: must be a number > 0 and <= 3600 (seconds)") for p in got)
    assert any(p.startswith("D/server.toml: log_level:") for p in got)


def test_listeners_must_differ() -> None:
    got = problems({**GOOD, "metrics_listen": GOOD["control_listen"]})
    assert got == ["D/server.toml: metrics_listen: same address as control_listen (127.0.0.1:7443); "
                   "each listener needs its own port"]


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_server_settings(tmp_path / "server.toml")
    (tmp_path / "server.toml").write_text("control_listen = \n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_server_settings(tmp_path / "server.toml")


@pytest.mark.parametrize(("extra", "key"), [
    ({"control_listen": "0.0.0.0:7443"}, "control_listen"),
    ({"control_listen": "[::]:7443"}, "control_listen"),
    ({"advertised_endpoint": "0.0.0.0:7443"}, "advertised_endpoint"),
])
def test_enrollment_uris_never_carry_a_wildcard_address(extra: dict, key: str) -> None:
    """Issue 15 item 9: the README's 0.0.0.0 control_listen made portunus://0.0.0.0:7443/ URIs."""
    got = problems({**GOOD, **extra})
    assert len(got) == 1 and got[0].startswith(f"D/server.toml: {key}: ") and "set advertised_endpoint" in got[0]
    ok = parse_server_settings({**GOOD, "control_listen": "0.0.0.0:7443",
                                "advertised_endpoint": "ctl.example.com:7443"})
    assert ok.endpoint == "ctl.example.com:7443"
