"""Experiment YAML: every shipped config loads; bad ones fail with one line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.define.load import ConfigError, load_config, parse_config
from harness.define.plan import build_plan

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
BASE = {"name": "x", "kind": "headline", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}


def test_there_are_configs() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"headline", "ab", "capped", "quick"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem  # result file name matches the config's file name
    assert build_plan(cfg)


def test_capped_config_has_the_issue_caps() -> None:
    cfg = load_config(next(p for p in CONFIGS if p.stem == "capped"))
    assert cfg.caps_bytes_per_s == (65536, 1048576, 10485760, 104857600)
    assert cfg.cap_bound_pct == 10 and cfg.cap_goal_pct == 2


def test_quick_is_quick() -> None:
    cfg = load_config(next(p for p in CONFIGS if p.stem == "quick"))
    assert len(build_plan(cfg)) * (cfg.seconds + cfg.omit_seconds) <= 30


@pytest.mark.parametrize(("change", "match"), [
    ({"colour": "red"}, "colour: unknown key"),
    ({"paths": ["direct", "warp"]}, "unknown path 'warp'"),
    ({"rounds": 0}, r"rounds: must be in \[1"),
    ({"seconds": 1.5}, "seconds: must be an integer"),
    ({"backend": "ftp"}, "backend: must be one of cli, python"),
    ({"caps_bytes_per_s": [1000]}, "no capped path is listed"),
    ({"paths": ["client_capped"]}, "is a capped path: list at least one cap"),
    ({"offered_mbps": [0]}, "offered_mbps: each rate must be a number > 0"),
    ({"kind": "sweep"}, "a sweep experiment needs at least one offered rate"),
    ({"pair": ["direct", "client"]}, "pair: must name two of the listed paths"),
    ({"name": "../evil"}, "name: must be"),
])
def test_bad_configs(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config({**BASE, **change}, "f.yaml")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "rounds": -1, "seconds": "x", "backend": "y"}, "f.yaml")
    assert len(e.value.problems) == 3 and all(p.startswith("f.yaml: ") for p in e.value.problems)


def test_missing_keys() -> None:
    with pytest.raises(ConfigError, match="rounds: required"):
        parse_config({k: v for k, v in BASE.items() if k != "rounds"})


def test_config_is_frozen() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(AttributeError):
        cfg.rounds = 3  # type: ignore[misc]


def test_cli_validate_exits_2_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: headline\npaths: [direct]\nrounds: 1\nseconds: 1\nomit_seconds: 0\nfoo: 1\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "foo: unknown key" in proc.stderr and proc.stderr.startswith("error: ")
    ok = subprocess.run([sys.executable, "-m", "harness", "validate", *map(str, CONFIGS)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
