"""`compare`: the spec's headline JSON, key for key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.compare import compare_config
from harness.kinds.capped import CappedSummary, summarise_capped
from harness.kinds.headline import HeadlineSummary, summarise_headline
from harness.present.compare import build_compare_json, build_sweep_json
from tests.harness.test_results import record


def summaries(recs: list) -> tuple[HeadlineSummary, CappedSummary]:
    """What compare's JSON is built from: the run's headline summary and its cap accuracy."""
    return summarise_headline(recs), summarise_capped(recs)

# The example in the spec's "Reproduction" section, verbatim.
SPEC_EXAMPLE = json.loads("""
{
  "direct": { "mbps": 30889.985, "retransmits": 147 },
  "iptables_redirect": { "mbps": 26987.079, "retransmits": 16 },
  "iptables_vs_direct_pct": 87.37,
  "standalone_uncapped": { "mbps": 31935.997, "retransmits": 9 },
  "standalone_vs_direct_pct": 103.39,
  "standalone_vs_iptables_pct": 118.34,
  "client_uncapped": { "mbps": 26644.098, "retransmits": 4 },
  "client_vs_direct_pct": 86.25,
  "client_vs_iptables_pct": 98.73,
  "standalone_vs_client_pct": 119.86,
  "client_capped": {
    "cap_bytes_per_sec": 1048576, "mbps": 8.388,
    "target_mbps": 8.389, "within_plus_10pct": true
  }
}
""")


def assert_same_shape(doc: dict, example: dict = SPEC_EXAMPLE) -> None:
    assert list(doc) == list(example)
    for k, v in example.items():
        if isinstance(v, dict) and doc[k] is not None:
            assert list(doc[k]) == list(v), k


def test_build_reproduces_the_spec_example_from_its_numbers() -> None:
    recs = [record("direct", 1, 30889.985, retransmits=147), record("iptables", 1, 26987.079, retransmits=16),
            record("standalone", 1, 31935.997, retransmits=9), record("client", 1, 26644.098, retransmits=4),
            record("client_capped", 1, 10.0, receiver_mbps=8.388, cap_bytes_per_s=1048576)]
    doc = build_compare_json(*summaries(recs), 1048576)
    assert_same_shape(doc)
    assert doc == SPEC_EXAMPLE


def test_skipped_paths_are_null() -> None:
    doc = build_compare_json(*summaries([record("direct", 1, 100.0)]), 0)
    assert_same_shape(doc)
    assert doc["iptables_redirect"] is None and doc["iptables_vs_direct_pct"] is None
    assert doc["client_capped"] is None


def test_rounds_give_medians() -> None:
    recs = [record("direct", i, v, retransmits=r) for i, (v, r) in enumerate([(100, 1), (300, 9), (200, 4)], 1)]
    assert build_compare_json(*summaries(recs), 0)["direct"] == {"mbps": 200.0, "retransmits": 4}


def test_sweep_json_has_one_record_per_path_rate_round() -> None:
    recs = [record(p, r, rate, offered_mbps=rate) for p in ("direct", "client") for rate in (100.0, 500.0)
            for r in (1, 2)]
    doc = build_sweep_json(recs)
    assert doc["offered_mbps"] == [100.0, 500.0] and len(doc["records"]) == 8
    assert {(e["path"], e["offered_mbps"], e["round"]) for e in doc["records"]} == {
        (p, rate, r) for p in ("direct", "client") for rate in (100.0, 500.0) for r in (1, 2)}


def test_compare_config_follows_the_flags() -> None:
    cfg = compare_config(seconds=30, omit_seconds=5, rounds=1, with_iptables=True, cap_bytes_per_s=1048576,
                         offered_mbps=(), skip_client=False, skip_standalone=False)
    assert cfg.paths == ("direct", "iptables", "standalone", "client", "client_capped")
    assert cfg.caps_bytes_per_s == (1048576,)
    sweep = compare_config(seconds=5, omit_seconds=1, rounds=1, with_iptables=False, cap_bytes_per_s=0,
                           offered_mbps=(100.0,), skip_client=True, skip_standalone=False)
    assert sweep.kind == "sweep" and sweep.paths == ("direct", "standalone") and not sweep.caps_bytes_per_s


@pytest.mark.timeout(180)
def test_compare_cli_writes_every_spec_key(tmp_path: Path) -> None:
    out = tmp_path / "perf-headline.json"
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", "--seconds", "1", "--omit-seconds", "0",
                           "--with-iptables", "--cap-bytes-per-sec", "1048576", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr}"
    doc = json.loads(out.read_text())
    assert json.loads(proc.stdout) == doc
    assert_same_shape(doc)
    for key in ("direct", "iptables_redirect", "standalone_uncapped", "client_uncapped"):
        assert doc[key]["mbps"] > 0, key
    assert doc["client_capped"]["cap_bytes_per_sec"] == 1048576
    assert doc["client_capped"]["target_mbps"] == 8.389 and doc["client_capped"]["mbps"] > 0
    assert (tmp_path / "perf-headline.records.jsonl").exists()
