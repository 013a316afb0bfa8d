"""CPU per unit of work (harness.summarise.cost) and the report's cost table, on synthetic records."""

from __future__ import annotations

import json

import pytest

from harness.present.cost import render_cost_table
from harness.summarise.cost import (
    build_cost_table,
    connections_of,
    datagrams_of,
    gb_of,
    summarise_cost_cells,
)
from tests.harness.test_results import record


def bulk(path: str, rnd: int, fwd: float | None, host: float, soft: float, gb: float = 2.0):
    return record(path, rnd, total_bytes=int(gb * 1e9), forwarder_cpu_s=fwd, host_busy_cpu_s=host,
                  host_softirq_s=soft)


def test_cost_per_gb_forwarder_and_host_with_the_direct_difference() -> None:
    recs = [bulk("direct", i, None, 1.0 + 0.1 * i, 0.2) for i in range(3)]  # host 0.50-0.60 s/GB
    recs += [bulk("iptables", i, None, 1.6, 0.6) for i in range(3)]
    recs += [bulk("standalone", i, 0.5, 2.0, 0.4) for i in range(3)]
    recs.append(record("standalone", 9, None, total_bytes=10**9, forwarder_cpu_s=9.0, host_busy_cpu_s=99.0))
    cells = summarise_cost_cells(recs, "GB", gb_of)
    assert cells["direct"].host.median == pytest.approx(0.55) and cells["direct"].above_direct is None
    assert cells["direct"].forwarder.n == 0
    ipt = cells["iptables"]
    assert ipt.forwarder.n == 0 and ipt.host.median == pytest.approx(0.8)
    assert ipt.above_direct == pytest.approx(0.25) and ipt.host_softirq.median == pytest.approx(0.3)
    st = cells["standalone"]  # the failed round is not counted
    assert st.forwarder.n == 3 and st.forwarder.median == pytest.approx(0.25) and st.host.median == pytest.approx(1.0)
    # direct has no forwarder process either (like a kernel path), and says so as "none".
    text = render_cost_table(build_cost_table({"GB": cells}, ["direct", "iptables", "standalone"]),
                             frozenset({"direct", "iptables"}))
    assert "| `iptables` | kernel (see host) | 0.800 (+0.250 vs direct, softirq 38%) |" in text
    assert "| `direct` | none | 0.550 (softirq 18%) |" in text
    assert "| `standalone` | 0.250 | 1.000 (+0.450 vs direct, softirq 20%) |" in text


def test_units_of_work_per_experiment() -> None:
    # Two probe workers; warm-up bins count too: the CPU window covers the whole probe run.
    probe = json.dumps({"probe": "connrate", "params": {"omit_seconds": 1, "seconds": 2},
                        "workers": [{"ok_bins": [60, 100, 40], "error_bins": [0, 0, 0]},
                                    {"ok_bins": [40, 50, 10], "error_bins": [0, 0, 0]}]})
    assert connections_of(record("standalone", probe_raw=probe)) == 300.0
    assert connections_of(record("standalone", probe_raw="{}")) is None
    assert gb_of(record("x", total_bytes=500_000_000)) == 0.5 and gb_of(record("x")) is None
    assert datagrams_of(1400)(record("x", total_bytes=14_000)) == 10.0
    per_conn = summarise_cost_cells([record("standalone", probe_raw=probe, forwarder_cpu_s=0.03, host_busy_cpu_s=0.3)],
                                    "connection", lambda r: 300.0)
    assert per_conn["standalone"].forwarder.median == pytest.approx(100.0)  # µs per connection
    assert per_conn["standalone"].host.median == pytest.approx(1000.0)


def test_records_without_host_cpu_leave_the_host_cell_empty() -> None:
    cells = summarise_cost_cells([record("standalone", total_bytes=10**9, forwarder_cpu_s=0.3)], "GB", gb_of)
    assert cells["standalone"].host.n == 0 and cells["standalone"].above_direct is None
    assert "| `standalone` | 0.300 | – |" in render_cost_table(build_cost_table({"GB": cells}))
