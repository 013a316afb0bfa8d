"""Config validation: every error names the file, the rule and the key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from portunus.config import (
    DEFAULT_WORKERS,
    ConfigError,
    auto_workers,
    load_config,
    parse_config,
    parse_rule,
)
from tests.support.net import echo_handler, free_port, tcp_server
from tests.support.proc import run_cli

GOOD = """
[global]
label = "edge-1"
log_level = "info"
log_format = "json"
shutdown_drain_secs = 3

[defaults]
protocol = "tcp"
udp_max_flows = 10
udp_flow_idle_secs = 5

[[owner]]
name = "acme"
rate_limit = { bandwidth_in_bps = 1000000 }

[[rule]]
name = "web"
listen_addr = "127.0.0.1"
listen_port = 8080
target = "127.0.0.1:80"
owner = "acme"

[[rule]]
name = "range"
listen_ports = "9000-9009"
target = "backend.example:7000-7009"

[[rule]]
name = "ha"
listen_addr = "::1"
listen_port = 8443
targets = [
  { host = "[::1]", port = 443, priority = 1 },
  { host = "10.0.0.2", port = 443, priority = 0, proxy_protocol = "v2" },
]
rate_limit = { concurrent_connections = 5, new_connections_per_sec = 2.5 }

[[rule]]
name = "dns"
protocol = "udp"
listen_port = 5353
target = "127.0.0.1:53"
udp_max_flows = 3
"""


def test_good_config_parses_into_model():
    cfg = parse_config(__import__("tomllib").loads(GOOD), "good.toml")
    assert cfg.settings.label == "edge-1" and cfg.settings.shutdown_drain_secs == 3.0
    web, rng, ha, dns = cfg.rules
    assert web.owner == "acme" and cfg.owner("acme").rate_limit.bandwidth_in_bps == 1_000_000
    assert rng.listen_addr == "0.0.0.0" and list(rng.listen_ports) == list(range(9000, 9010))
    assert rng.targets_for(9003) == [("backend.example", 7003, None)]
    assert ha.listen_addr == "::1"
    assert ha.targets_for(8443) == [("10.0.0.2", 443, "v2"), ("::1", 443, None)]
    assert ha.rate_limit.concurrent_connections == 5 and ha.rate_limit.new_connections_per_sec == 2.5
    assert not ha.rate_limit.has_bandwidth_cap
    assert dns.protocol == "udp" and dns.udp_max_flows == 3 and dns.udp_flow_idle_secs == 5.0


def _errors(toml: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(__import__("tomllib").loads(toml), "x.toml")
    return e.value.problems


RULE = '[[rule]]\nname = "r"\nlisten_port = 8080\ntarget = "127.0.0.1:80"\n'

CASES = [
    # (toml, expected fragment of the single error line)
    ('[[rule]]\nname = "r"\nlisten_port = 8080\ntarget = "127.0.0.1:80"\ncolour = 1\n',
     'x.toml: rule "r" (rule #1): colour: unknown key'),
    ('[global]\nfoo = 1\n', "x.toml: [global]: foo: unknown key"),
    ('[bogus]\n', "x.toml: bogus: unknown key"),
    (RULE + RULE.replace("8080", "8081"), 'rule "r" (rule #2): name: duplicate rule name (also rule #1)'),
    ('[[rule]]\nname = "r"\nlisten_port = 1\nlisten_ports = "1-2"\ntarget = "127.0.0.1:80"\n',
     'rule "r" (rule #1): listen_port: set both listen_port and listen_ports'),
    ('[[rule]]\nname = "r"\ntarget = "127.0.0.1:80"\n',
     'rule "r" (rule #1): listen_port: missing: set exactly one of listen_port or listen_ports'),
    ('[[rule]]\nname = "r"\nlisten_port = 1\ntarget = "127.0.0.1:80"\ntargets = [{host="a", port=1}]\n',
     'rule "r" (rule #1): target: set both target and targets'),
    ('[[rule]]\nname = "r"\nlisten_port = 1\n',
     'rule "r" (rule #1): target: missing: set exactly one of target or targets'),
    ('[[rule]]\nname = "r"\nlisten_ports = "8000-8009"\ntarget = "127.0.0.1:9000-9004"\n',
     'rule "r" (rule #1): target: port range 9000-9004 has 5 ports but the listen range has 10'),
    ('[[rule]]\nname = "r"\nlisten_port = 0\ntarget = "127.0.0.1:80"\n',
     'rule "r" (rule #1): listen_port: port 0 out of range (1-65535)'),
    ('[[rule]]\nname = "r"\nlisten_port = 70000\ntarget = "127.0.0.1:80"\n',
     'rule "r" (rule #1): listen_port: port 70000 out of range'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "127.0.0.1:0"\n',
     'rule "r" (rule #1): target: port 0 out of range'),
    ('[[rule]]\nname = "r"\nlisten_ports = "90-80"\ntarget = "127.0.0.1:80"\n',
     "rule \"r\" (rule #1): listen_ports: inverted range '90-80' (start > end)"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "bad_host!:80"\n',
     "rule \"r\" (rule #1): target: bad host 'bad_host!'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "256.1.1.1:80"\n',
     "rule \"r\" (rule #1): target: bad host '256.1.1.1'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "::1:80"\n',
     'rule "r" (rule #1): target: bare IPv6 address'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntargets = [{host = "::1", port = 80}]\n',
     "rule \"r\" (rule #1): targets[0].host: bare IPv6 address '::1'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntargets = [{host = "a", port = 80, proxy_protocol = "v3"}]\n',
     "rule \"r\" (rule #1): targets[0].proxy_protocol: must be \"v1\" or \"v2\", got 'v3'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nrate_limit = { bandwidth_in_bps = 0 }\n',
     'rule "r" (rule #1): rate_limit.bandwidth_in_bps: must be > 0 (got 0)'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nrate_limit = { concurrent_connections = -1 }\n',
     'rule "r" (rule #1): rate_limit.concurrent_connections: must be > 0'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nrate_limit = { bandwidth_out_bps = true }\n',
     'rule "r" (rule #1): rate_limit.bandwidth_out_bps: must be an integer from 1 to 1000000000000 '
     '(bytes per second), got True'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nrate_limit = { speed = 1 }\n',
     'rule "r" (rule #1): rate_limit: speed: unknown key'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nprotocol = "sctp"\n',
     "rule \"r\" (rule #1): protocol: must be \"tcp\" or \"udp\", got 'sctp'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nlisten_addr = "localhost"\n',
     "rule \"r\" (rule #1): listen_addr: bad IP address 'localhost'"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a:80"\nowner = "ghost"\n',
     'rule "r" (rule #1): owner: unknown owner "ghost"'),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a"\n',
     "rule \"r\" (rule #1): target: missing port in 'a'"),
    (RULE + RULE.replace('"r"', '"s"'),
     'rule "s" (rule #2): listen_port: tcp 0.0.0.0:8080-8080 overlaps rule "r" (rule #1)'),
    ('[global]\nlog_format = "xml"\n', "[global]: log_format: must be \"json\" or \"pretty\""),
    ('[global]\nshutdown_drain_secs = -1\n', "[global]: shutdown_drain_secs: must be a number from 0 to 2592000"),
    # Bounded numbers (issue 15 item 1): the limit is in the message, and nothing overflows.
    (RULE + f"rate_limit = {{ bandwidth_in_bps = {10**400} }}\n",
     'rule "r" (rule #1): rate_limit.bandwidth_in_bps: must be an integer from 1 to 1000000000000 '
     '(bytes per second), got an integer of about 401 digits'),
    (RULE + "rate_limit = { new_connections_per_sec = inf }\n",
     "rate_limit.new_connections_per_sec: must be a number from 0.001 to 10000000 (connections per second), got inf"),
    (RULE + "rate_limit = { new_connections_per_sec = nan }\n", "new_connections_per_sec: must be a number"),
    (RULE + f"rate_limit = {{ concurrent_connections = {10**400} }}\n",
     "concurrent_connections: must be an integer from 1 to 10000000 (connections)"),
    (RULE + f"udp_flow_idle_secs = {10**400}\n",
     'udp_flow_idle_secs: must be a number > 0 and <= 2592000 (seconds), got an integer of about 401 digits'),
    (RULE + "idle_timeout_secs = 0\n", 'idle_timeout_secs: must be a number > 0 and <= 2592000 (seconds), got 0'),
    (RULE + "tcp_keepalive_secs = 40000\n", "tcp_keepalive_secs: must be a number > 0 and <= 32767 (seconds)"),
    ('[defaults]\nidle_timeout_secs = -1\n' + RULE, "[defaults]: idle_timeout_secs: must be a number > 0"),
    ('[global]\nworkers = 0\n' + RULE, '[global]: workers: must be an integer from 1 to 64 (worker loops, or "auto")'),
    ('[global]\nworkers = "many"\n' + RULE, "[global]: workers: must be an integer from 1 to 64"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntargets = [{host = "a", port = 80, priority = 70000}]\n',
     "targets[0].priority: must be an integer from 0 to 65535, got 70000"),
    ('[[rule]]\nname = "r"\nlisten_ports = "8' + "0" * 5000 + '-9"\ntarget = "a:80"\n', "listen_ports: bad port range"),
    # Low items (issue 15 item 9): a trailing newline is not part of a name; a file needs rules.
    (RULE.replace('"r"', '"web\\n"'), "name: must be 1-128 chars of letters, digits, '_.:-' (got 'web\\n')"),
    ('[[rule]]\nname = "r"\nlisten_port = 80\ntarget = "a\\n:80"\n', "target: bad host"),
    ("", "x.toml: [[rule]]: no rules: a rules file needs at least one [[rule]] table"),
    ('[global]\nlabel = "x"\n', "no rules"),
]


@pytest.mark.parametrize(("toml", "fragment"), CASES, ids=[c[1][:60] for c in CASES])
def test_each_error_names_rule_and_key(toml, fragment):
    errors = _errors(toml)
    assert len(errors) == 1, errors
    assert fragment in errors[0], errors[0]
    assert errors[0].startswith("x.toml: ")


def test_all_problems_reported_in_one_pass():
    errors = _errors('[[rule]]\nname = "a"\nlisten_port = 0\ntarget = "::1:80"\nxx = 1\n'
                     '[[rule]]\nname = "b"\nlisten_ports = "5-1"\ntarget = "a:1"\n')
    assert len(errors) == 4
    assert sum('rule "a"' in e for e in errors) == 3 and sum('rule "b"' in e for e in errors) == 1


def test_control_plane_rule_shares_validation():
    rule = parse_rule({"name": "x", "listen_port": 9000, "target": "[::1]:22", "client": "edge"},
                      extra_keys=("client",))
    assert rule.targets_for(9000) == [("::1", 22, None)]
    with pytest.raises(ConfigError) as e:
        parse_rule({"name": "x", "listen_port": 9000, "target": "h:1", "client": "edge"})
    assert "client: unknown key" in str(e.value)


def test_load_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\nname=")
    with pytest.raises(ConfigError, match="bad.toml: TOML syntax error"):
        load_config(bad)


def test_check_cli_ok_and_errors(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = run_cli("portunus-standalone", "--config", str(good), "--check")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "r"\nlisten_ports = "90-80"\ntarget = "::1:80"\n')
    r = run_cli("portunus-standalone", "--config", str(bad), "--check")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"error: {bad}: rule \"r\" (rule #1): ") for line in lines)
    r = run_cli("portunus-standalone", "--bogus-flag")
    assert r.returncode == 2 and "usage" in r.stderr


def test_timeouts_and_workers_take_defaults_then_rule_values():
    cfg = parse_config(__import__("tomllib").loads(
        '[global]\nworkers = 4\n[defaults]\nidle_timeout_secs = 600\ntcp_keepalive_secs = 30\n'
        + RULE + '[[rule]]\nname = "s"\nlisten_port = 8081\ntarget = "a:1"\nidle_timeout_secs = 5.5\n'
        'tcp_keepalive_secs = 1\n'), "x.toml")
    assert cfg.settings.workers == 4
    r, s = cfg.rules
    assert (r.idle_timeout_secs, r.tcp_keepalive_secs) == (600.0, 30.0)
    assert (s.idle_timeout_secs, s.tcp_keepalive_secs) == (5.5, 1.0)
    plain = parse_config(__import__("tomllib").loads(RULE), "x.toml")
    assert plain.settings.workers == DEFAULT_WORKERS
    assert (plain.rules[0].idle_timeout_secs, plain.rules[0].tcp_keepalive_secs) == (3600.0, 60.0)


def test_workers_auto_resolves_to_cpu_count():
    cfg = parse_config(__import__("tomllib").loads('[global]\nworkers = "auto"\n' + RULE), "x.toml")
    assert cfg.settings.workers == auto_workers() == max(1, min(64, len(os.sched_getaffinity(0))))


@pytest.mark.parametrize(("text", "fragment"), [
    ("x = " + "1" * 5000, "TOML value not readable"),          # beyond Python's int conversion limit
    ("x = " + "[" * 5000 + "]" * 5000, "TOML nested too deeply"),
    (b"\xff\xfe".decode("latin-1"), "not UTF-8 text"),
])
def test_unreadable_toml_is_a_config_error_not_a_crash(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "x.toml"
    path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)
    r = run_cli("portunus-standalone", "--config", str(path), "--check")
    assert r.returncode == 2 and "Traceback" not in r.stderr and fragment in r.stderr, r.stderr


def test_check_refuses_a_file_without_rules(tmp_path: Path):
    empty = tmp_path / "empty.toml"
    empty.write_text("# all rules were removed\n")
    r = run_cli("portunus-standalone", "--config", str(empty), "--check")
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.strip() == f"error: {empty}: [[rule]]: no rules: a rules file needs at least one [[rule]] table"


def test_sighup_to_a_file_without_rules_keeps_the_running_rules(standalone):
    """Issue 15 item 9: a reload to an emptied file used to drop every rule."""
    port = free_port()
    with tcp_server(echo_handler) as echo:
        proc = standalone(f'[[rule]]\nname = "keep"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
                          f'target = "127.0.0.1:{echo.port}"\n', wait_ports=[port])
        proc.reload("# truncated by an editor or a failed deploy\n")
        out = proc.wait_log("reload rejected")
        assert "[[rule]]: no rules: a rules file needs at least one [[rule]] table" in out
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # still forwarding
            c.sendall(b"still here")
            assert c.recv(10) == b"still here"
