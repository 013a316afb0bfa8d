"""The connection-rate probe: right numbers through a path with a known delay, errors counted, parser.

Through tests/harness/delay_forwarder.py every connection takes at least
DELAY_MS (its one request is held that long), so with C connections in flight
in total the rate can never exceed C / DELAY_MS, and a client that is not the
bottleneck gets close to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.define.plan import Measurement
from harness.errors import ProbeError
from harness.kinds.connrate import cpu_us_per_conn, summarise_connrate
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.records.probe_json import parse_connrate_json
from tests.harness.delay_path import DelayPath

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
DELAY_MS = 20.0
PROCESSES, CONCURRENCY = 2, 3  # 6 in flight: at most 6 / 20 ms = 300 connections/s


def _cfg(**kw):
    return parse_config({"name": "cr", "kind": "connrate", "paths": ["direct"], "rounds": 1, "seconds": 2,
                         "omit_seconds": 1, "probe": {"processes": PROCESSES, "concurrency": CONCURRENCY}, **kw})


def test_connrate_matches_concurrency_over_a_known_delay(tmp_path: Path) -> None:
    from harness.paths import PATHS

    cfg = _cfg()
    direct = measure_one(Measurement(0, 1, "direct"), cfg, PATHS["direct"](), tmp_path / "d", PortAllocator(None),
                         SignalGuard())
    rec = measure_one(Measurement(1, 1, "delay"), cfg, DelayPath(DELAY_MS), tmp_path / "x", PortAllocator(None),
                      SignalGuard())
    assert direct.ok and rec.ok, (direct.error, rec.error)
    bound = PROCESSES * CONCURRENCY / (DELAY_MS / 1000)
    assert rec.driver == "connrate" and rec.conn_errors == 0
    assert rec.conn_per_s is not None and 0.7 * bound <= rec.conn_per_s <= bound * 1.02, rec.conn_per_s
    assert rec.conns_ok == pytest.approx(rec.conn_per_s * cfg.seconds)
    # Both client processes reported, and each carried its share.
    workers = json.loads(rec.probe_raw or "{}")["workers"]
    assert len(workers) == PROCESSES and all(sum(w["ok_bins"]) > 0 for w in workers)
    # The direct path (no delay) is far above: the client was not what limited the delayed path.
    assert direct.conn_per_s is not None and direct.conn_per_s > 3 * bound
    s = summarise_connrate([direct, rec], ["direct"])
    assert s.ceiling is not None and s.ceiling.path == "direct"
    row = s.get("delay")
    assert row is not None and row.pct_of_ceiling is not None and row.pct_of_ceiling < 50
    assert row.cpu_us_per_conn.n == 1 and cpu_us_per_conn(rec) is not None


def test_a_path_that_refuses_every_connection_fails_with_the_error_count(tmp_path: Path) -> None:
    from harness.paths.base import Endpoint, ForwardPath, PathSetup
    from tests.support.net import free_port

    class Refusing(ForwardPath):
        name = "refusing"
        description = "nothing listens on the port it hands out"
        has_forwarder_process = False

        def start(self, setup: PathSetup) -> Endpoint:
            return Endpoint("127.0.0.1", free_port())

        def stop(self) -> None:
            pass

    rec = measure_one(Measurement(0, 1, "refusing"), _cfg(omit_seconds=0, seconds=1), Refusing(), tmp_path,
                      PortAllocator(None), SignalGuard())
    assert not rec.ok and "no connection completed" in (rec.error or "") and "ECONNREFUSED" in (rec.error or "")
    assert rec.probe_raw and json.loads(rec.probe_raw)["workers"][0]["errors"]["connect:ECONNREFUSED"] > 0


def test_parse_connrate_fixtures() -> None:
    text = (FIXTURES / "connrate.json").read_text()
    doc = json.loads(text)
    r = parse_connrate_json(text)
    # Window = bins after the omitted second, over the configured seconds; warm-up bin left out.
    expected_ok = sum(sum(w["ok_bins"][1:]) for w in doc["workers"])
    assert r.conns_ok == expected_ok and r.conn_per_s == pytest.approx(expected_ok / 2)
    assert r.per_second == tuple(sum(w["ok_bins"][i] for w in doc["workers"]) for i in range(3))
    assert r.conn_errors == 0 and r.errors == {}
    refused = parse_connrate_json((FIXTURES / "connrate_refused.json").read_text())
    assert refused.conns_ok == 0 and refused.conn_errors > 0
    assert set(refused.errors) == {"connect:ECONNREFUSED"} and refused.error_examples
    with pytest.raises(ProbeError, match="every connrate worker failed"):
        parse_connrate_json(json.dumps({"probe": "connrate", "params": {"omit_seconds": 0, "seconds": 1},
                                        "workers": [{"failed": "OSError: boom"}]}))
