"""Statistics and per-kind summaries (pure functions over records)."""

from __future__ import annotations

import pytest

from harness.kinds.ab import summarise_ab
from harness.kinds.capped import summarise_capped, target_mbps
from harness.kinds.headline import summarise_headline
from harness.kinds.sweep import summarise_sweep
from harness.summarise.stats import pct_error, ranges_overlap, ratio_pct, summarise
from tests.harness.test_results import record


def test_summarise() -> None:
    s = summarise([3.0, None, 1.0, 2.0, 10.0])
    assert (s.n, s.median, s.min, s.max) == (4, 2.5, 1.0, 10.0)
    assert s.spread_pct == pytest.approx(360.0) and s.wide
    assert summarise([]).n == 0 and summarise([]).median is None and summarise([]).spread_pct is None


def test_ratios_and_overlap() -> None:
    assert ratio_pct(50, 200) == 25.0
    assert ratio_pct(None, 1) is None and ratio_pct(1, 0) is None
    assert ranges_overlap(summarise([1, 3]), summarise([2, 5]))
    assert not ranges_overlap(summarise([1, 2]), summarise([3, 4]))
    assert pct_error(10.2, 10) == pytest.approx(2.0)


def test_headline_medians_ratios_and_notes() -> None:
    recs = [record("direct", i, v) for i, v in enumerate([100, 110, 90], 1)]
    recs += [record("iptables", i, v) for i, v in enumerate([95, 100, 105], 1)]
    recs += [record("standalone", i, v, cpu_s_per_gb=c) for i, (v, c) in enumerate([(50, .2), (60, .4), (40, .3)], 1)]
    recs += [record("standalone", 4, None)]  # failed: counted, left out of the statistics
    recs += [record("client_capped", 1, 8.3, cap_bytes_per_s=1048576)]  # capped: not a headline row
    s = summarise_headline(recs, ["iptables", "standalone", "direct"])
    assert [p.path for p in s.paths] == ["iptables", "standalone", "direct"]
    st = s.get("standalone")
    assert st is not None and st.throughput_mbps.median == 50 and st.n_failed == 1
    assert st.cpu_s_per_gb.median == pytest.approx(0.3)
    assert st.vs_pct["iptables"] == pytest.approx(50.0) and st.vs_pct["direct"] == pytest.approx(50.0)
    assert "reference" not in st.vs_pct
    assert any("direct and iptables overlap" in n for n in s.notes)
    assert any("standalone: 1 failed" in n for n in s.notes)
    assert any("standalone: spread" in n for n in s.notes)  # 40-60 around 50 = 40%


def test_ab_pairs_by_round() -> None:
    recs = [record("standalone", 1, 100), record("client", 1, 50), record("standalone", 2, 80),
            record("client", 2, 80), record("standalone", 3, 90)]  # round 3 has no client run
    s = summarise_ab(recs, "standalone", "client")
    assert [(r.round, r.ratio_pct) for r in s.rows] == [(1, 200.0), (2, 100.0), (3, None)]
    assert s.ratio_pct.median == 150.0 and s.ratio_pct.n == 2
    assert s.ratio_of_medians_pct == pytest.approx(90 / 65 * 100)


def test_capped_bounds() -> None:
    cap = 1048576
    target = target_mbps(cap)
    assert target == pytest.approx(8.388608)
    recs = [record("client_capped", i, v * 1.3, receiver_mbps=v, cap_bytes_per_s=cap)
            for i, v in enumerate([target * 1.01, target * 1.05, target * 0.99], 1)]
    recs += [record("client_capped", 1, target, receiver_mbps=target * 1.2, cap_bytes_per_s=65536)]
    s = summarise_capped(recs, bound_pct=10, goal_pct=2)
    row = next(r for r in s.rows if r.cap_bytes_per_s == cap)
    assert row.delivered_mbps.median == pytest.approx(target * 1.01)  # receiver side, not sender
    assert row.within_bound and row.within_goal and row.n_within_goal == 2 and row.n_within_bound == 3
    assert row.error_pct == pytest.approx(1.0)
    low = next(r for r in s.rows if r.cap_bytes_per_s == 65536)
    assert not low.within_bound  # delivered 1.2 x target(1 MiB/s) far above 64 KiB/s


def test_sweep() -> None:
    recs = [record("direct", 1, 99.0, offered_mbps=100.0), record("direct", 2, 101.0, offered_mbps=100.0),
            record("client", 1, 480.0, offered_mbps=500.0), record("direct", 1, 200.0)]  # unpaced: not sweep
    s = summarise_sweep(recs)
    assert s.rates_mbps == (100.0, 500.0) and s.paths == ("direct", "client")
    c = s.cell("direct", 100.0)
    assert c is not None and c.delivered_mbps.median == 100.0 and c.pct_of_offered == 100.0
    assert s.cell("client", 100.0) is None
