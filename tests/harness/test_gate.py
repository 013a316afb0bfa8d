"""Regression gate logic on synthetic result files: regression, improvement, noise, missing,
failed, incompatible (schema, format, parameters, too few rounds), new, pooling, floors, and the
CLI's exit codes and tables (golden file)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness import cli
from harness.gate import floors, verdicts
from harness.gate.floors import check_floors
from harness.gate.thresholds import derive_thresholds
from harness.gate.verdicts import compare
from harness.kinds.headline import summarise_headline
from harness.records import bench_file
from harness.records.bench_file import (
    BenchFile,
    BenchResult,
    CostRound,
    Floor,
    GateDataError,
    Round,
    dump_bench_file,
    parse_bench_file,
    pool_bench_files,
)
from harness.records.results import create_results
from harness.summarise.bench import shift_test, summarise_bench, summarise_ratios
from tests.harness.conftest import FIXTURES
from tests.harness.golden import assert_matches_golden
from tests.harness.test_results import header, record

GATE_FIXTURES = FIXTURES / "gate"
REPO = Path(__file__).resolve().parents[2]

# Ratios of a steady benchmark: median 2.0, IQR [1.95, 2.05].
STEADY = [1.9, 1.95, 1.95, 2.0, 2.0, 2.0, 2.05, 2.05, 2.1]


def bench(name: str, ratios: list[float], *, warmup: list[float] = (), kind: str = "latency",
          params: dict | None = None, error: str | None = None, direct_s: float = 0.1) -> BenchResult:
    """A benchmark whose rounds have exactly these proxy/direct ratios (direct time fixed)."""
    rounds = [Round(direct_s, direct_s * r, 1000, warmup=True) for r in warmup]
    rounds += [Round(direct_s, direct_s * r, 1000) for r in ratios]
    return BenchResult(name, f"synthetic {name}", kind, params or {"payload_bytes": 64}, tuple(rounds), error)


def cost_bench(name: str, ratios: list[float], *, unit: str = "GB", client_cpu_s: float = 0.1,
               units: float = 0.5) -> BenchResult:
    """A cost benchmark whose rounds have exactly these forwarder/client CPU ratios."""
    rounds = tuple(CostRound(client_cpu_s * r, client_cpu_s, units, 1.0) for r in ratios)
    return BenchResult(name, f"synthetic {name}", "cost", {"unit": unit, "path": "splice"}, rounds)


def bfile(*benches: BenchResult, settings: dict | None = None, host: str = "h1") -> BenchFile:
    return BenchFile(created_at="2026-01-01T00:00:00+00:00", sysinfo={"hostname": host, "cpu_cores": 2},
                     settings=settings or {"forwarder": "standalone"}, benchmarks=tuple(benches))


def write(path: Path, bf: BenchFile) -> Path:
    path.write_text(json.dumps(dump_bench_file(bf)))
    return path


def only_row(report: verdicts.GateReport) -> verdicts.Comparison:
    assert len(report.rows) == 1
    return report.rows[0]


# ---------------------------------------------------------------- statistics


def test_quartiles_and_median_of_ratios() -> None:
    s = summarise_ratios([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s is not None
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max) == (5, 3.0, 2.0, 4.0, 1.0, 5.0)
    one = summarise_ratios([2.5])
    assert one is not None and one.q1 == one.q3 == one.median == 2.5
    assert summarise_ratios([]) is None


def test_warmup_rounds_are_kept_but_not_counted() -> None:
    b = bench("x", STEADY, warmup=[50.0])
    assert len(b.rounds) == len(STEADY) + 1
    assert b.ratios() == pytest.approx(STEADY)


def test_rank_test_sees_a_shift_and_ignores_outliers() -> None:
    shifted = shift_test(STEADY, [r * 1.1 for r in STEADY])
    assert shifted.p_slower < 0.01 < shifted.p_faster
    # One wild round in the current run moves the rank test by one rank, not by its size.
    outlier = shift_test(STEADY, [*STEADY[:-1], 50.0])
    assert outlier.p_slower > 0.3
    same = shift_test(STEADY, STEADY)
    assert same.p_slower > 0.4 and same.p_faster > 0.4


def test_cost_rounds_compare_forwarder_cpu_to_client_cpu() -> None:
    b = cost_bench("cost_bulk.splice", [2.0, 2.0, 2.0], client_cpu_s=0.1, units=0.5)
    assert b.ratios() == pytest.approx([2.0, 2.0, 2.0])
    s = summarise_bench(b)
    # 0.2 s of forwarder CPU for 0.5 GB = 0.4 s/GB; the client's 0.1 s = 0.2 s/GB.
    assert (s.proxy_value, s.direct_value, s.unit) == (pytest.approx(0.4), pytest.approx(0.2), "s/GB")
    conn = summarise_bench(cost_bench("cost_connections", [1.0] * 3, unit="connection", client_cpu_s=0.25,
                                      units=1000))
    assert (conn.proxy_value, conn.unit) == (pytest.approx(250.0), "us/conn")


def test_thresholds_follow_the_spread_of_the_runs_medians() -> None:
    runs = [bfile(cost_bench("a", [r * f for r in STEADY]), cost_bench("b", STEADY), bench("t", [r * f for r in STEADY]))
            for f in (1.0, 1.1, 1.2)]
    t = derive_thresholds(runs)
    # a: run medians 2.0, 2.2, 2.4 around the pooled median 2.2: spread 18.2%, threshold twice that.
    assert t["a"].run_medians == (2.0, 2.2, 2.4)
    assert t["a"].spread_pct == pytest.approx(18.18, abs=0.01)
    assert t["a"].max_regression_pct == pytest.approx(36.4)
    # b never moved: the cost floor applies, not zero.
    assert t["b"].spread_pct == 0 and t["b"].max_regression_pct == 20.0
    # A timing benchmark with a's spread: its kind's floor (50%) is above twice the spread.
    assert t["t"].spread_pct == t["a"].spread_pct and t["t"].max_regression_pct == 50.0
    assert "50%" in t["t"].rule and "20%" in t["b"].rule
    with pytest.raises(ValueError, match=">= 2 runs"):
        derive_thresholds(runs[:1])


def test_the_baselines_threshold_overrides_the_default() -> None:
    base = dataclasses.replace(bfile(cost_bench("a", STEADY)), thresholds=derive_thresholds(
        [bfile(cost_bench("a", STEADY)), bfile(cost_bench("a", STEADY))]))
    cur = bfile(cost_bench("a", [r * 1.3 for r in STEADY]))  # +30%: under the default 50%, over the baseline's 20%
    row = only_row(compare(base, cur, 50))
    assert row.threshold_pct == 20.0 and row.verdict == verdicts.VERDICT_REGRESSION
    assert only_row(compare(bfile(cost_bench("a", STEADY)), cur, 50)).verdict == verdicts.VERDICT_OK


def test_cost_regression_is_caught() -> None:
    base = bfile(cost_bench("cost_bulk.splice", STEADY))
    row = only_row(compare(base, bfile(cost_bench("cost_bulk.splice", [r * 2 for r in STEADY])), 50))
    assert row.verdict == verdicts.VERDICT_REGRESSION
    # A timing benchmark of the same name is not the same measurement.
    row = only_row(compare(base, bfile(bench("cost_bulk.splice", STEADY)), 50))
    assert row.verdict == verdicts.VERDICT_INCOMPATIBLE and "kind: 'cost' -> 'latency'" in row.note


# ---------------------------------------------------------------- verdicts


def test_regression_needs_threshold_and_significance() -> None:
    cur = [r * 1.8 for r in STEADY]  # +80%, tight: every current round above every baseline round
    row = only_row(compare(bfile(bench("udp", STEADY)), bfile(bench("udp", cur)), 50))
    assert row.verdict == verdicts.VERDICT_REGRESSION
    assert row.beyond_threshold and row.significant
    assert row.p_slower is not None and row.p_slower < 1e-3
    assert row.delta_pct == pytest.approx(80.0)


def test_improvement_never_fails() -> None:
    cur = [r / 3 for r in STEADY]
    report = compare(bfile(bench("udp", STEADY)), bfile(bench("udp", cur)), 50)
    assert only_row(report).verdict == verdicts.VERDICT_IMPROVED
    assert report.exit_code == verdicts.EXIT_OK
    # Also with a zero threshold: faster is never a regression.
    assert compare(bfile(bench("udp", STEADY)), bfile(bench("udp", cur)), 0).exit_code == verdicts.EXIT_OK


def test_noise_beyond_threshold_but_not_significant_is_not_a_regression() -> None:
    # Median +60%, but this run is all over the place: a third of its rounds are at or below
    # the baseline's, and the one-sided rank test gives p ~ 0.06.
    noisy = [1.0, 1.5, 2.0, 3.2, 3.2, 3.2, 3.3, 5.0, 6.0]
    row = only_row(compare(bfile(bench("rtt", STEADY)), bfile(bench("rtt", noisy)), 50))
    assert row.delta_pct == pytest.approx(60.0)
    assert row.beyond_threshold and not row.significant
    assert row.p_slower == pytest.approx(0.0596, abs=1e-3)
    assert row.verdict == verdicts.VERDICT_NOISE
    # The same shift at a laxer significance level is a regression: alpha is the test's knob.
    assert only_row(compare(bfile(bench("rtt", STEADY)), bfile(bench("rtt", noisy)), 50, alpha=0.1)).verdict \
        == verdicts.VERDICT_REGRESSION


def test_significant_but_within_threshold_is_ok() -> None:
    cur = [r * 1.3 for r in STEADY]  # +30%: real, but under the 50% the gate allows
    row = only_row(compare(bfile(bench("rtt", STEADY)), bfile(bench("rtt", cur)), 50))
    assert row.significant and not row.beyond_threshold
    assert row.verdict == verdicts.VERDICT_OK and "within threshold" in row.note


def test_small_significant_speedup_is_ok_not_improved() -> None:
    cur = [r * 0.8 for r in STEADY]  # -20%: real, but not the mirror of a 50% regression (-33%)
    assert only_row(compare(bfile(bench("a", STEADY)), bfile(bench("a", cur)), 50)).verdict == verdicts.VERDICT_OK


def test_threshold_is_a_parameter() -> None:
    cur = [r * 1.3 for r in STEADY]
    assert only_row(compare(bfile(bench("a", STEADY)), bfile(bench("a", cur)), 20)).verdict == "REGRESSION"


def test_missing_benchmark_is_exit_2() -> None:
    report = compare(bfile(bench("a", STEADY), bench("b", STEADY)), bfile(bench("a", STEADY)), 50)
    assert [r.verdict for r in report.rows] == [verdicts.VERDICT_OK, verdicts.VERDICT_MISSING]
    assert report.exit_code == verdicts.EXIT_DATA


def test_a_regression_outranks_missing_data() -> None:
    report = compare(bfile(bench("a", STEADY), bench("b", STEADY)), bfile(bench("a", [r * 2 for r in STEADY])), 50)
    assert report.exit_code == verdicts.EXIT_REGRESSION


def test_failed_benchmark_is_exit_2() -> None:
    report = compare(bfile(bench("a", STEADY)), bfile(bench("a", STEADY[:3], error="BenchIOError: closed")), 50)
    row = only_row(report)
    assert row.verdict == verdicts.VERDICT_FAILED and "closed" in row.note
    assert report.exit_code == verdicts.EXIT_DATA


def test_other_parameters_are_incompatible() -> None:
    cur = bench("a", STEADY, params={"payload_bytes": 1024})
    row = only_row(compare(bfile(bench("a", STEADY)), bfile(cur), 50))
    assert row.verdict == verdicts.VERDICT_INCOMPATIBLE and "payload_bytes: 64 -> 1024" in row.note


def test_too_few_rounds_cannot_be_gated() -> None:
    row = only_row(compare(bfile(bench("a", STEADY)), bfile(bench("a", [9.0, 9.0])), 50))
    assert row.verdict == verdicts.VERDICT_INCOMPATIBLE and f">= {verdicts.MIN_ROUNDS}" in row.note


def test_new_benchmark_is_listed_not_gated() -> None:
    report = compare(bfile(bench("a", STEADY)), bfile(bench("a", STEADY), bench("z", [99.0] * 9)), 50)
    assert [r.verdict for r in report.rows] == [verdicts.VERDICT_OK, verdicts.VERDICT_NEW]
    assert report.exit_code == verdicts.EXIT_OK


def test_host_and_setting_differences_are_noted() -> None:
    report = compare(bfile(bench("a", STEADY)),
                     bfile(bench("a", STEADY), host="h2", settings={"forwarder": "small-buffer-copy"}), 50)
    text = "\n".join(report.notes)
    assert "hostname differs" in text and "forwarder: baseline 'standalone', current 'small-buffer-copy'" in text


# ---------------------------------------------------------------- files


def test_dump_and_parse_round_trip() -> None:
    bf = bfile(bench("a", STEADY, warmup=[3.0], kind="throughput", params={"payload_bytes": 65536}),
               cost_bench("c", STEADY, unit="datagram"))
    bf = dataclasses.replace(bf, thresholds=derive_thresholds([bf, bf]))
    again = parse_bench_file(json.loads(json.dumps(dump_bench_file(bf))))
    assert again == bf


def test_version_1_file_is_upgraded_without_thresholds() -> None:
    doc = dump_bench_file(bfile(bench("a", STEADY)))
    doc["schema_version"] = 1
    bf = parse_bench_file(doc)
    assert bf.thresholds == {} and bf.benchmarks[0].ratios() == pytest.approx(STEADY)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(schema_version=99), "newer than this harness reads"),
    (lambda d: d.update(schema_version="1"), "bad schema_version"),
    (lambda d: d.update(format="portunus-bench-results"), "expected 'portunus-microbench'"),
    (lambda d: d["benchmarks"][0].update(kind="speed"), "kind must be one of"),
    (lambda d: d["benchmarks"][0]["rounds"][0].update(direct_s=0), "must be positive"),
    (lambda d: d["benchmarks"].append(d["benchmarks"][0]), "duplicate benchmark names"),
    (lambda d: d["benchmarks"][1]["params"].update(unit="furlong"), "params.unit must be one of"),
    (lambda d: d["benchmarks"][1]["rounds"][0].update(client_cpu_s=0), "must be positive"),
    (lambda d: d["benchmarks"][1]["rounds"][0].pop("units"), "bad cost round"),
    (lambda d: d.update(thresholds={"a": {"max_regression_pct": -1, "spread_pct": 0}}), "must be >= 0"),
])
def test_incompatible_or_malformed_files_are_refused(mutate, message: str) -> None:
    doc = dump_bench_file(bfile(bench("a", STEADY), cost_bench("c", STEADY)))
    mutate(doc)
    with pytest.raises(GateDataError, match=message):
        parse_bench_file(doc, "x.json")


def test_pooling_keeps_every_round_and_refuses_mixed_runs() -> None:
    a = bfile(bench("a", STEADY, warmup=[5.0]))
    b = bfile(bench("a", [r * 1.1 for r in STEADY], warmup=[5.0]))
    pooled = pool_bench_files([a, b])
    assert len(pooled.benchmarks[0].rounds) == 2 * (len(STEADY) + 1)
    assert len(pooled.benchmarks[0].ratios()) == 2 * len(STEADY)
    assert pooled.settings["pooled_runs"] == 2
    with pytest.raises(GateDataError, match="other settings"):
        pool_bench_files([a, bfile(bench("a", STEADY), settings={"forwarder": "small-buffer-copy"})])
    with pytest.raises(GateDataError, match="parameters"):
        pool_bench_files([a, bfile(bench("a", STEADY, params={"payload_bytes": 1}))])
    with pytest.raises(GateDataError, match="other benchmarks"):
        pool_bench_files([a, bfile(bench("b", STEADY))])


# ---------------------------------------------------------------- CLI and tables


def run_gate(*args: str, capsys) -> tuple[int, str, str]:
    code = cli.main(["gate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_table(tmp_path: Path, capsys) -> None:
    base = write(tmp_path / "base.json", bfile(bench("a", STEADY), bench("b", STEADY)))
    same = write(tmp_path / "same.json", bfile(bench("a", STEADY), bench("b", STEADY)))
    worse = write(tmp_path / "worse.json", bfile(bench("a", STEADY), bench("b", [r * 2 for r in STEADY])))
    code, out, _ = run_gate("--baseline", str(base), "--current", str(same), capsys=capsys)
    assert code == 0 and "result: 2 ok -> exit 0" in out
    code, out, _ = run_gate("--baseline", str(base), "--current", str(worse), "--max-regression-pct", "50",
                            capsys=capsys)
    assert code == 1
    gate_table = out[out.index("Microbenchmark gate:"):]
    row = next(line for line in gate_table.splitlines() if line.startswith("| b "))
    assert re.search(r"\| \+100\.0% \| 50%\s+\| yes\s+\| 1\.9e-04\s+\| yes\s+\| REGRESSION \|", row), row
    # Same files, a threshold the slowdown stays under.
    code, _, _ = run_gate("--baseline", str(base), "--current", str(worse), "--max-regression-pct", "150",
                          capsys=capsys)
    assert code == 0


def test_cli_incompatible_schema_is_exit_2(tmp_path: Path, capsys) -> None:
    base = write(tmp_path / "base.json", bfile(bench("a", STEADY)))
    doc = dump_bench_file(bfile(bench("a", STEADY)))
    doc["schema_version"] = bench_file.BENCH_SCHEMA_VERSION + 1
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(doc))
    code, _, err = run_gate("--baseline", str(base), "--current", str(newer), capsys=capsys)
    assert code == 2 and "newer than this harness reads" in err
    code, _, err = run_gate("--baseline", str(base), "--current", str(tmp_path / "absent.json"), capsys=capsys)
    assert code == 2 and "no such file" in err
    (tmp_path / "garbage.json").write_text("{not json")
    code, _, err = run_gate("--baseline", str(tmp_path / "garbage.json"), "--current", str(base), capsys=capsys)
    assert code == 2 and "not JSON" in err


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    code, _, err = run_gate(capsys=capsys)
    assert code == 2 and "nothing to check" in err
    code, _, err = run_gate("--baseline", "x.json", capsys=capsys)
    assert code == 2 and "--baseline with --current" in err
    base = write(tmp_path / "base.json", bfile(bench("a", STEADY)))
    code, _, err = run_gate("--baseline", str(base), "--current", str(base), "--max-regression-pct", "-1",
                            capsys=capsys)
    assert code == 2 and ">= 0" in err
    code, _, err = run_gate("--baseline", str(base), "--current", str(base), "--alpha", "1.5", capsys=capsys)
    assert code == 2 and "--alpha must be between 0 and 1" in err


def test_cli_current_alone_prints_what_was_measured(tmp_path: Path, capsys) -> None:
    cur = write(tmp_path / "cur.json", bfile(bench("tcp_echo_64k.splice", STEADY, kind="throughput",
                                                   params={"payload_bytes": 65536}, direct_s=0.01)))
    code, out, _ = run_gate("--current", str(cur), capsys=capsys)
    # 1000 x 64 KiB in 0.01 s direct = 6250 MiB/s; the proxy takes twice as long.
    assert code == 0 and "6,250.0 MiB/s" in out and "3,125.0 MiB/s" in out and "2.00x [1.95-2.05]" in out


def test_baseline_verb_pools_runs_and_stores_thresholds(tmp_path: Path, capsys) -> None:
    runs = [write(tmp_path / f"r{i}.json", bfile(cost_bench("a", [r * f for r in STEADY])))
            for i, f in enumerate((1.0, 1.1, 1.2))]
    out = tmp_path / "baselines" / "microbench.json"
    assert cli.main(["baseline", "--out", str(out), *map(str, runs)]) == 0
    pooled = bench_file.load_bench_file(out)
    assert len(pooled.benchmarks[0].ratios()) == 3 * len(STEADY)
    assert pooled.thresholds["a"].max_regression_pct == pytest.approx(36.4)
    assert "36.4%" in capsys.readouterr().out
    # One run has no run-to-run spread to derive a threshold from.
    assert cli.main(["baseline", "--out", str(out), str(runs[0])]) == 2


def golden_pair() -> tuple[BenchFile, BenchFile]:
    """A baseline and a current run with every verdict once."""
    noisy = [1.0, 1.5, 2.0, 3.2, 3.2, 3.2, 3.3, 5.0, 6.0]
    base = bfile(bench("ok", STEADY), bench("improved", STEADY), bench("noise", STEADY),
                 bench("regression", STEADY), bench("missing", STEADY), bench("failed", STEADY),
                 bench("incompatible", STEADY), cost_bench("cost", STEADY))
    cur = bfile(bench("ok", [r * 1.02 for r in STEADY]), bench("improved", [r * 0.5 for r in STEADY]),
                bench("noise", noisy), bench("regression", [r * 1.8 for r in STEADY]),
                bench("failed", [], error="BenchIOError: connection closed after 0 of 65536 echoed bytes"),
                bench("incompatible", STEADY, params={"payload_bytes": 128}),
                cost_bench("cost", [r * 1.6 for r in STEADY]), bench("new", STEADY))
    return base, cur


def test_gate_table_golden(tmp_path: Path, capsys) -> None:
    """The synthetic pair renders exactly the committed table (tests/fixtures/gate/gate-table.txt;
    after an intended change of the table, rewrite it with PORTUNUS_UPDATE_GOLDEN=1)."""
    base, cur = golden_pair()
    code, out, _ = run_gate("--baseline", str(write(tmp_path / "b.json", base)),
                            "--current", str(write(tmp_path / "c.json", cur)), capsys=capsys)
    table = out[out.index("Microbenchmark gate:"):]
    assert_matches_golden(table, GATE_FIXTURES / "gate-table.txt")
    assert code == 1


# ---------------------------------------------------------------- floors


def floors_file(tmp_path: Path, min_pct: float = 40.0) -> Path:
    p = tmp_path / "floors.json"
    p.write_text(json.dumps({"schema_version": 1, "format": bench_file.FLOORS_FORMAT,
                             "floors": [{"path": "standalone", "vs": "iptables", "min_pct": min_pct}]}))
    return p


def quick_results(tmp_path: Path, standalone_mbps: float | None, with_iptables: bool = True) -> Path:
    p = tmp_path / "quick.jsonl"
    w = create_results(p, header())
    if with_iptables:
        w.append(record("iptables", mbps=20000.0))
    w.append(record("standalone", mbps=standalone_mbps))
    w.close()
    return p


def test_floor_checks() -> None:
    fl = (Floor("standalone", "iptables", 40.0),)
    ok = check_floors(fl, summarise_headline([record("iptables", mbps=20000.0), record("standalone", mbps=14000.0)]))
    assert ok[0].verdict == verdicts.VERDICT_OK and ok[0].value_pct == pytest.approx(70.0)
    low = check_floors(fl, summarise_headline([record("iptables", mbps=20000.0), record("standalone", mbps=6000.0)]))
    assert low[0].verdict == floors.VERDICT_BELOW_FLOOR and floors.floors_exit_code(low) == 1
    failed = check_floors(fl, summarise_headline([record("iptables", mbps=20000.0), record("standalone", mbps=None)]))
    assert failed[0].verdict == verdicts.VERDICT_MISSING and floors.floors_exit_code(failed) == 2


@pytest.mark.parametrize(("standalone_mbps", "with_iptables", "expected"), [
    (15000.0, True, 0), (5000.0, True, 1), (15000.0, False, 2), (None, True, 2)])
def test_cli_floors(tmp_path: Path, capsys, standalone_mbps, with_iptables: bool, expected: int) -> None:
    res = quick_results(tmp_path, standalone_mbps, with_iptables)
    code, out, _ = run_gate("--floors", str(floors_file(tmp_path)), "--results", str(res), capsys=capsys)
    assert code == expected
    assert "Quick-run floors" in out


def test_cli_floors_and_benchmarks_together_report_the_worst(tmp_path: Path, capsys) -> None:
    base = write(tmp_path / "base.json", bfile(bench("a", STEADY)))
    res = quick_results(tmp_path, 5000.0)
    code, out, _ = run_gate("--baseline", str(base), "--current", str(base), "--floors",
                            str(floors_file(tmp_path)), "--results", str(res), capsys=capsys)
    assert code == 1 and "BELOW FLOOR" in out and "result: 1 ok -> exit 0" in out


def test_committed_floors_and_baseline_are_usable() -> None:
    """The files `make gate` reads parse, and the baseline covers every microbenchmark with
    enough rounds and the benchmark module's current parameters (else: make baseline)."""
    from benchmarks.microbench import test_microbench as mb

    floors = bench_file.load_floors(REPO / "results" / "baselines" / "quick-floors.json")
    assert any(f.path == "standalone" and f.vs == "iptables" for f in floors)
    baseline = bench_file.load_bench_file(REPO / "results" / "baselines" / "microbench.json")
    ops = {"tcp_echo_64k.splice": mb.ECHO_64K_OPS, "tcp_echo_64k.copy": mb.ECHO_64K_OPS,
           "tcp_echo_1m.splice": mb.ECHO_1M_OPS, "tcp_echo_1m.copy": mb.ECHO_1M_OPS,
           "tcp_rtt_1b.splice": mb.RTT_OPS, "tcp_connect.splice": mb.CONNECT_OPS, "udp_rtt_64b": mb.UDP_OPS}
    timing = {b.name: b.params["ops_per_round"] for b in baseline.benchmarks if not b.is_cost}
    assert timing == ops
    cost = {b.name: b.params["amount_per_round"] for b in baseline.benchmarks if b.is_cost}
    assert cost == {c.name: c.amount for c in mb.COST_SPECS}
    for b in baseline.benchmarks:
        assert b.error is None and len(b.ratios()) >= verdicts.MIN_ROUNDS, b.name
        # Every benchmark has a threshold from the spread of >= 2 runs (make baseline).
        t = baseline.thresholds[b.name]
        assert len(t.run_medians) >= 2 and t.max_regression_pct >= 20.0, b.name


# ---------------------------------------------------------------- gate proof


def test_gate_proof_judges_caught_missed_and_false_alarms() -> None:
    from benchmarks.microbench.gate_proof import SCENARIOS, judge

    nosplice = next(s for s in SCENARIOS if s.name == "nosplice")
    unchanged = next(s for s in SCENARIOS if s.name == "unchanged")
    base = bfile(cost_bench("cost_bulk.splice", STEADY), bench("udp", STEADY))
    caught = compare(base, bfile(cost_bench("cost_bulk.splice", [r * 2 for r in STEADY]), bench("udp", STEADY)))
    assert judge(nosplice, caught).passed and judge(nosplice, caught).regressions == ("cost_bulk.splice",)
    # A regression somewhere else (timing noise) is not the injected one being caught.
    elsewhere = compare(base, bfile(cost_bench("cost_bulk.splice", STEADY), bench("udp", [r * 2 for r in STEADY])))
    assert not judge(nosplice, elsewhere).passed and "MISSED: cost_bulk.splice" in judge(nosplice, elsewhere).why
    assert not judge(unchanged, elsewhere).passed and "FALSE ALARM" in judge(unchanged, elsewhere).why
    assert judge(unchanged, compare(base, base)).passed
