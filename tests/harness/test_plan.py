"""Plans: rounds interleaved across paths, shuffled reproducibly, caps only on capped paths."""

from __future__ import annotations

from harness.define.load import parse_config
from harness.define.plan import build_plan

BASE = {"name": "x", "kind": "headline", "rounds": 3, "seconds": 1, "omit_seconds": 0}


def test_rounds_are_interleaved_and_shuffled_reproducibly() -> None:
    cfg = parse_config({**BASE, "paths": ["direct", "iptables", "standalone", "reference"], "rounds": 6})
    plan = build_plan(cfg)
    assert len(plan) == 24 and [m.index for m in plan] == list(range(24))
    for rnd in range(1, 7):
        chunk = plan[(rnd - 1) * 4: rnd * 4]
        assert {m.round for m in chunk} == {rnd}
        assert sorted(m.path for m in chunk) == sorted(cfg.paths)
    orders = {tuple(m.path for m in plan[i * 4:(i + 1) * 4]) for i in range(6)}
    assert len(orders) > 1  # shuffled, not the config order every round
    assert build_plan(cfg) == plan  # same seed, same plan (resume relies on it)
    other = parse_config({**BASE, "paths": list(cfg.paths), "rounds": 6, "shuffle_seed": 99})
    assert [m.path for m in build_plan(other)] != [m.path for m in plan]


def test_caps_apply_only_to_capped_paths_and_rates_to_all() -> None:
    cfg = parse_config({**BASE, "rounds": 1, "paths": ["client", "client_capped"],
                        "caps_bytes_per_s": [65536, 1048576], "offered_mbps": [100, 1000]})
    combos = {(m.path, m.offered_mbps, m.cap_bytes_per_s) for m in build_plan(cfg)}
    assert combos == {
        ("client", 100.0, None), ("client", 1000.0, None),
        ("client_capped", 100.0, 65536), ("client_capped", 100.0, 1048576),
        ("client_capped", 1000.0, 65536), ("client_capped", 1000.0, 1048576),
    }


def test_excluded_paths_are_left_out() -> None:
    cfg = parse_config({**BASE, "paths": ["direct", "client"]})
    assert {m.path for m in build_plan(cfg, exclude_paths=frozenset({"client"}))} == {"direct"}
