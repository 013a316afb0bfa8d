"""sni_pattern, the SNI peek limits and health_check_interval_secs in the rule schema:
values, defaults, and conflicts refused by --check, reload and the rule-set checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from portunus.config import (
    DEFAULT_SNI_PEEK_MAX_BYTES,
    DEFAULT_SNI_PEEK_TIMEOUT_SECS,
    ConfigError,
    parse_config,
    parse_rule,
)
from portunus.control.ruleset import conflicts, conflicts_with, rule_to_dict
from tests.support.net import free_port
from tests.support.proc import run_cli


def rule(name: str, port: int = 443, extra: str = "", listen: str = "listen_port = {port}") -> str:
    return (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\n{listen.format(port=port)}\n'
            f'target = "127.0.0.1:9"\n{extra}\n')


def errors(toml: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(toml), "x.toml")
    return e.value.problems


def test_patterns_are_normalised_and_round_trip():
    cfg = parse_config(tomllib.loads(
        rule("a", extra='sni_pattern = "App.Example.COM"') + rule("w", extra='sni_pattern = "*.Example.com"')
        + rule("f")), "x.toml")
    a, w, f = cfg.rules
    assert (a.sni_pattern, w.sni_pattern, f.sni_pattern) == ("app.example.com", "*.example.com", None)
    assert (a.sni_peek_timeout_secs, a.sni_peek_max_bytes) == (DEFAULT_SNI_PEEK_TIMEOUT_SECS,
                                                               DEFAULT_SNI_PEEK_MAX_BYTES)
    for r in cfg.rules:
        assert parse_rule(rule_to_dict(r)) == r
    assert "sni_pattern" not in rule_to_dict(f) and "health_check_interval_secs" not in rule_to_dict(f)


BAD = [
    (rule("a", extra='sni_pattern = "*"'), "leave sni_pattern out to make the rule the port's fallback"),
    (rule("a", extra='sni_pattern = "a.*.example.com"'), "a wildcard must be the whole leftmost label"),
    (rule("a", extra='sni_pattern = "*x.example.com"'), "a wildcard must be the whole leftmost label"),
    (rule("a", extra='sni_pattern = "example.com."'), "no trailing dot"),
    (rule("a", extra='sni_pattern = "10.0.0.1"'), "is an IP address: TLS clients send only DNS names"),
    (rule("a", extra="sni_pattern = 7"), "sni_pattern: must be a server name string"),
    (rule("a", extra='sni_pattern = "a.example.com"\nprotocol = "udp"'), "sni_pattern: only for tcp rules"),
    (rule("a", extra='sni_pattern = "a.example.com"', listen='listen_ports = "443-444"'),
     "sni_pattern: needs a single listen_port, not a range"),
    (rule("a", extra="sni_peek_timeout_secs = 0"), "sni_peek_timeout_secs: must be a number > 0 and <= 300"),
    (rule("a", extra="sni_peek_max_bytes = 100"), "sni_peek_max_bytes: must be an integer from 512 to 65536"),
    (rule("a", extra="health_check_interval_secs = 0.5"),
     "health_check_interval_secs: must be 0 (off) or a number from 1 to 86400 (seconds), got 0.5"),
    (rule("a", extra='health_check_interval_secs = 5\nprotocol = "udp"'),
     "health_check_interval_secs: only for tcp rules"),
    ('[[rule]]\nname = "a"\nlisten_ports = "80-81"\ntarget = "h:90-91"\nhealth_check_interval_secs = 5\n',
     "health_check_interval_secs: needs fixed target ports"),
    ("[defaults]\nhealth_check_interval_secs = -1\n" + rule("a"), "[defaults]: health_check_interval_secs"),
    # Conflicts: each names both rules.
    (rule("a", extra='sni_pattern = "x.example.com"') + rule("b", extra='sni_pattern = "X.example.com"'),
     'rule "b" (rule #2): sni_pattern: sni_pattern "x.example.com" on tcp 127.0.0.1:443 is also used by '
     'rule "a" (rule #1)'),
    (rule("s", extra='sni_pattern = "x.example.com"') + rule("f1") + rule("f2"),
     'rule "f2" (rule #3): sni_pattern: two fallback rules (without sni_pattern) on tcp 127.0.0.1:443: this '
     'one and rule "f1"'),
    (rule("s", extra='sni_pattern = "x.example.com"') + rule("r", listen='listen_ports = "440-450"'),
     'rule "r" (rule #2): listen_ports: tcp 127.0.0.1:440-450 overlaps rule "s" (rule #1)'),
]


@pytest.mark.parametrize(("toml", "fragment"), BAD, ids=[b[1][:50] for b in BAD])
def test_bad_values_and_conflicts_are_named(toml, fragment):
    problems = errors(toml)
    assert len(problems) == 1, problems
    assert fragment in problems[0], problems[0]


def test_sni_rules_share_a_port_and_differ_elsewhere():
    cfg = parse_config(tomllib.loads(
        rule("a", extra='sni_pattern = "a.example.com"') + rule("b", extra='sni_pattern = "*.example.com"')
        + rule("f") + rule("other-addr", extra='sni_pattern = "a.example.com"').replace("127.0.0.1", "127.0.0.2")),
        "x.toml")
    assert len(cfg.rules) == 4
    # The same pattern on another address is not a conflict; a plain rule on that address and port is none either.
    assert not conflicts(list(cfg.rules))


def test_health_interval_defaults_apply_where_probes_can_run():
    cfg = parse_config(tomllib.loads(
        "[defaults]\nhealth_check_interval_secs = 10\n" + rule("tcp") + rule("udp", extra='protocol = "udp"')
        + '[[rule]]\nname = "range"\nlisten_ports = "80-81"\ntarget = "h:90-91"\n'
        + rule("off", port=444, extra="health_check_interval_secs = 0")
        + rule("own", port=445, extra="health_check_interval_secs = 2.5")), "x.toml")
    by = {r.name: r.health_check_interval_secs for r in cfg.rules}
    assert by == {"tcp": 10.0, "udp": None, "range": None, "off": None, "own": 2.5}


def test_pushed_rule_set_conflicts_name_the_rules():
    a = parse_rule({"name": "a", "listen_port": 443, "target": "h:1", "sni_pattern": "x.example.com"})
    b = parse_rule({"name": "b", "listen_port": 443, "target": "h:1", "sni_pattern": "x.example.com"})
    f1 = parse_rule({"name": "f1", "listen_port": 443, "target": "h:1"})
    f2 = parse_rule({"name": "f2", "listen_port": 443, "target": "h:1"})
    assert any('sni_pattern "x.example.com" on tcp 0.0.0.0:443 is also used by rule "a"' in p
               for p in conflicts([a, b]))
    assert any("two fallback rules" in p for p in conflicts([a, f1, f2]))
    assert any("two fallback rules" in p for p in conflicts_with([f2], [a, f1]))
    assert not conflicts([a, f1])


def test_check_and_reload_refuse_conflicts(standalone, tmp_path: Path):
    port = free_port()
    for text, expected in (
            (rule("a", port, 'sni_pattern = "x.example.com"') + rule("b", port, 'sni_pattern = "x.example.com"'),
             'rule "b" (rule #2): sni_pattern: sni_pattern "x.example.com" on tcp 127.0.0.1:'),
            (rule("u", port, 'sni_pattern = "u.example.com"\nprotocol = "udp"'),
             'rule "u" (rule #1): sni_pattern: only for tcp rules')):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        r = run_cli("portunus-standalone", "--config", str(bad), "--check")
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines

    good = rule("a", port, 'sni_pattern = "x.example.com"') + rule("f", port)
    st = standalone(good, wait_ports=[])
    st.reload(good + rule("f2", port))
    log = st.wait_log("reload rejected")
    assert 'two fallback rules (without sni_pattern) on tcp 127.0.0.1:' in log and 'rule "f"' in log
    assert st.proc.poll() is None


def test_thousands_of_names_on_one_port_and_each_conflict_once():
    """One port may carry many SNI names (grouped by dict, not compared pairwise); every
    conflict is still found: a duplicate name, a second fallback, a range across the port."""
    names = [parse_rule({"name": f"n{i}", "listen_port": 443, "target": "h:1", "sni_pattern": f"n{i}.example.com"})
             for i in range(2000)]
    fb = parse_rule({"name": "fb", "listen_port": 443, "target": "h:1"})
    assert conflicts([*names, fb]) == []
    dup = parse_rule({"name": "dup", "listen_port": 443, "target": "h:1", "sni_pattern": "N7.example.com"})
    fb2 = parse_rule({"name": "fb2", "listen_port": 443, "target": "h:1"})
    span = parse_rule({"name": "span", "listen_ports": "400-500", "target": "h:1"})
    problems = conflicts([*names, fb, dup, fb2])
    assert len(problems) == 2, problems
    assert 'rule "dup": sni_pattern "n7.example.com"' in problems[0] and 'rule "n7"' in problems[0]
    assert 'rule "fb2": two fallback rules' in problems[1] and 'rule "fb"' in problems[1]
    assert len(conflicts([*names[:5], span])) == 5
