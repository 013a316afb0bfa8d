"""`portunus-bench` (also `python -m harness`): run experiments, compare paths, report, clean up.

Exit codes: 0 ok; 1 some measurement failed; 2 usage, config, preflight or
result-file error (one `error:` message naming the fix); 128+N stopped by
signal N (130 for Ctrl-C) after a clean teardown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError

EXIT_OK = 0
EXIT_FAILED_MEASUREMENTS = 1
EXIT_USAGE = 2

DEFAULT_RESULTS_ROOT = Path("results")


def default_out_dir() -> Path:
    """results/<date>-<host>, like the Makefile's RESULTS."""
    return DEFAULT_RESULTS_ROOT / f"{dt.date.today().isoformat()}-{socket.gethostname().split('.')[0]}"


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated Mbit/s numbers, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0 Mbit/s, got {text!r}")
    return rates


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portunus-bench",
        description="Benchmark harness for Portunus: measures forwarding paths (direct iperf3, iptables "
        "REDIRECT, portunus-standalone, portunus-client, the C splice reference) with iperf3 over loopback, "
        "records every run in versioned result files, and renders reports.",
        epilog="Exit codes: 0 ok, 1 a measurement failed, 2 usage/config/preflight error, "
        "130/143 stopped by SIGINT/SIGTERM (cleanly: rules removed, processes stopped, results kept).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = sub.add_parser("run", help="run an experiment definition (configs/*.yaml)",
                         description="Run the experiment in CONFIG: preflight, then every planned measurement "
                         "(rounds interleaved across paths, shuffled within a round). Each measurement is "
                         "appended to OUT/<name>.jsonl as it ends. Prints the report section when done.")
    run.add_argument("config", metavar="CONFIG", help="experiment YAML file, e.g. configs/headline.yaml")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="result directory (default: results/<date>-<host>)")
    run.add_argument("--resume", action="store_true",
                     help="continue OUT/<name>.jsonl: skip measurements it already holds (ok ones), run the rest")
    run.add_argument("--skip-unavailable", action="store_true",
                     help="measure the available paths and record why the others were skipped, "
                     "instead of stopping with an error")
    run.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                     help="parent of the scratch directory (configs, logs, server data); default: $TMPDIR. "
                     "Must not be tmpfs for the client path (portunus-server refuses a tmpfs state.db)")
    run.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory (forwarder logs)")
    run.add_argument("--base-port", type=int, default=None, metavar="PORT",
                     help="override the config's base_port: fixed ports PORT, PORT+1, ... (checked free first)")

    cmp_ = sub.add_parser("compare", help="the spec's perf_compare: headline JSON (or a sweep) in one command",
                          description="Measure direct, [iptables], standalone, client and a capped client "
                          "rule back to back and write the spec's headline JSON. With --offered-mbps, run a "
                          "paced sweep instead and write one record per path, rate and round.")
    cmp_.add_argument("--seconds", type=_positive_int, default=10, help="iperf3 -t: measured seconds per run (default 10)")
    cmp_.add_argument("--omit-seconds", type=_non_negative_int, default=2,
                      help="iperf3 -O: warm-up seconds excluded from the result (default 2)")
    cmp_.add_argument("--with-iptables", action="store_true",
                      help="also measure kernel iptables REDIRECT (needs root); otherwise its keys are null")
    cmp_.add_argument("--with-reference", action="store_true",
                      help="also measure the C splice reference forwarder (tools/csplice.c); not in the spec's JSON, "
                      "kept in the records file")
    cmp_.add_argument("--cap-bytes-per-sec", type=_non_negative_int, default=1048576, metavar="N",
                      help="cap of the client_capped rule in bytes/s (default 1048576); 0 = skip the capped run")
    cmp_.add_argument("--offered-mbps", type=_rates, default=None, metavar="R1,R2,...",
                      help="sweep mode: pace iperf3 (-b) at each rate in Mbit/s, every path, one record per "
                      "path, rate and round")
    cmp_.add_argument("--rounds", type=_positive_int, default=1,
                      help="repeat everything N times, interleaved; JSON values are medians (default 1)")
    cmp_.add_argument("--json-out", type=Path, default=None, metavar="FILE",
                      help="write the JSON here (it is always printed on stdout)")
    cmp_.add_argument("--records", type=Path, default=None, metavar="FILE",
                      help="the full result file (JSONL) of this compare; default: next to --json-out as "
                      "<name>.records.jsonl, else in a new temp directory")
    cmp_.add_argument("--skip-client", action="store_true", help="do not measure the client paths (client keys null)")
    cmp_.add_argument("--skip-standalone", action="store_true",
                      help="do not measure standalone (standalone keys null)")
    cmp_.add_argument("--skip-unavailable", action="store_true",
                      help="measure what can run here and leave unavailable paths' keys null (instead of exit 2)")
    cmp_.add_argument("--backend", choices=("cli", "python"), default="cli",
                      help="iperf3 driver: the iperf3 CLI (-J) or the PyPI wrapper in a child process (default cli)")
    cmp_.add_argument("--base-port", type=int, default=None, metavar="PORT",
                      help="use fixed ports PORT, PORT+1, ... (checked free before starting); default: free ports")

    rep = sub.add_parser("report", help="render the markdown report of a result directory",
                         description="Load every *.jsonl result file in DIR and render markdown tables "
                         "(headline: paths as columns, Mbit/s median [min-max], vs iptables / direct / "
                         "reference, forwarder CPU s/GB; A/B pairs; cap accuracy; sweep). Prints it and "
                         "writes DIR/report.md.")
    rep.add_argument("dir", type=Path, metavar="DIR")
    rep.add_argument("--out", type=Path, default=None, metavar="FILE", help="write here instead of DIR/report.md")
    rep.add_argument("--no-plots", action="store_true",
                     help="do not (re)draw DIR/plots/ (by default the report links the plots it draws)")

    plt = sub.add_parser("plots", help="draw the figures of a result directory (PNG + SVG in DIR/plots/)",
                         description="Load every *.jsonl result file in DIR and draw its figures (sweep: "
                         "delivered vs offered and delivered/offered; headline bars; A/B ratio per round; "
                         "cap accuracy) into DIR/plots/ as PNG and SVG. Measures nothing.")
    plt.add_argument("dir", type=Path, metavar="DIR")

    rdm = sub.add_parser("readme", help="put a result directory's tables into README.md between markers",
                         description="Render the report's sections for RESULTS_DIR and replace the text "
                         "between the lines '<!-- results:begin -->' and '<!-- results:end -->' of README. "
                         "Measures nothing; draws RESULTS_DIR/plots/ first unless --no-plots.")
    rdm.add_argument("dir", type=Path, metavar="RESULTS_DIR")
    rdm.add_argument("readme", type=Path, metavar="README")
    rdm.add_argument("--no-plots", action="store_true", help="do not draw or link plots")

    sub.add_parser("sysinfo", help="print the host metadata recorded in result files (JSON)",
                   description="Print commit, CPU, kernel, distro, tool versions and sysctls as JSON.")

    cln = sub.add_parser("cleanup", help="remove leftovers of killed runs (iptables chains, nft tables, "
                         "network namespaces, scratch dirs)",
                         description="Remove PORTUNUS-BENCH-<pid> chains from the nat table (and their jumps), "
                         "`ip PORTUNUS_BENCH_<pid>` nftables tables, network namespaces carrying the harness's "
                         "owner mark (with their veths and any process still inside) "
                         "whose harness process is gone, and scratch directories of dead runs. "
                         "Running harnesses are left alone unless --all (their namespaces always: "
                         "a running harness removes them itself when it stops).")
    cln.add_argument("--all", action="store_true", help="also remove chains of harness processes still running")

    pth = sub.add_parser("paths", help="list the forwarding paths and whether each can run here",
                         description="List every registered path with its description and availability.")
    pth.add_argument("--json", action="store_true", help="machine-readable output")
    pth.add_argument("--topology", choices=("loopback", "netns", "hosts"), default="loopback",
                     help="availability on this topology kind (default loopback)")

    val = sub.add_parser("validate", help="validate experiment files and show their plans' size",
                         description="Load and validate each CONFIG (exit 2 with one line per problem).")
    val.add_argument("configs", nargs="+", metavar="CONFIG")

    gat = sub.add_parser("gate", help="regression gate: microbenchmark ratios vs a baseline, quick-run floors",
                         description="Compare a microbenchmark run (make bench) with a baseline: per benchmark "
                         "the median ratio proxy/direct (time per operation), a REGRESSION only if it grew more "
                         "than --max-regression-pct AND the runs' interquartile ranges do not overlap; and/or "
                         "check a headline-kind result file (the quick run) against committed floors.",
                         epilog="Exit codes: 0 ok (improvements never fail), 1 regression or below a floor, "
                         "2 missing, failed or incompatible data.")
    gat.add_argument("--baseline", type=Path, metavar="FILE", help="baseline microbenchmark JSON "
                     "(results/baselines/microbench.json)")
    gat.add_argument("--current", type=Path, metavar="FILE", help="microbenchmark JSON of this run "
                     "(alone: print what it measured)")
    gat.add_argument("--max-regression-pct", type=float, default=50.0, metavar="N",
                     help="slowdown of the proxy/direct ratio that counts as a regression (default 50)")
    gat.add_argument("--floors", type=Path, metavar="FILE", help="floors JSON (results/baselines/quick-floors.json)")
    gat.add_argument("--results", type=Path, metavar="FILE", help="result file (.jsonl) of a headline-kind run, "
                     "e.g. portunus-bench run configs/quick.yaml")

    bas = sub.add_parser("baseline", help="pool microbenchmark runs into a gate baseline file",
                         description="Pool the rounds of several microbenchmark runs (same benchmarks, parameters "
                         "and settings) into one baseline, so its spread shows run-to-run noise. "
                         "`make baseline` runs the benchmarks BASELINE_RUNS times and calls this.")
    bas.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="microbenchmark JSON files")
    bas.add_argument("--out", type=Path, required=True, metavar="FILE",
                     help="baseline to write (results/baselines/microbench.json)")
    return p


# ---------------------------------------------------------------- verbs


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from harness.define.load import load_config, parse_config
    from harness.measure.runner import run_experiment
    from harness.present.report import render_result_set
    from harness.records.results import SUFFIX, load_results

    cfg = load_config(args.config)
    if args.base_port is not None:
        cfg = parse_config({**cfg.to_dict(), "base_port": args.base_port}, f"--base-port with {args.config}")
    out_dir: Path = args.out or default_out_dir()
    results_path = out_dir / f"{cfg.name}{SUFFIX}"
    if results_path.exists() and not args.resume:
        raise HarnessError(f"{results_path} already exists: pass --resume to continue it, or choose another --out")
    outcome = run_experiment(cfg, results_path, resume=args.resume, skip_unavailable=args.skip_unavailable,
                             argv=["portunus-bench", *argv], workdir_root=args.workdir,
                             keep_workdir=args.keep_workdir)
    if not results_path.exists():  # stopped by a signal before the first line was written
        return outcome.exit_code
    print(render_result_set(load_results(results_path)))
    print(f"results: {results_path}", file=sys.stderr)
    if outcome.interrupted:
        return outcome.exit_code
    return EXIT_FAILED_MEASUREMENTS if any(not r.ok for r in outcome.records) else EXIT_OK


def cmd_compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from harness.measure.runner import run_experiment
    from harness.present.compare import build_compare_json, build_sweep_json, compare_config

    cfg = compare_config(seconds=args.seconds, omit_seconds=args.omit_seconds, rounds=args.rounds,
                         with_iptables=args.with_iptables, cap_bytes_per_s=args.cap_bytes_per_sec,
                         offered_mbps=args.offered_mbps or (), skip_client=args.skip_client,
                         skip_standalone=args.skip_standalone, backend=args.backend, base_port=args.base_port,
                         with_reference=args.with_reference)
    if args.records is not None:
        records_path = args.records
    elif args.json_out is not None:
        records_path = args.json_out.with_name(args.json_out.stem + ".records.jsonl")
    else:
        records_path = Path(tempfile.mkdtemp(prefix="portunus-compare-")) / "compare.records.jsonl"
    outcome = run_experiment(cfg, records_path, argv=["portunus-bench", *argv],
                             skip_unavailable=args.skip_unavailable)
    if outcome.interrupted:
        print(f"records so far: {records_path}", file=sys.stderr)
        return outcome.exit_code
    from harness.records.results import load_results

    records = load_results(records_path).records
    doc = build_sweep_json(records) if cfg.offered_mbps else build_compare_json(records, args.cap_bytes_per_sec)
    text = json.dumps(doc, indent=2)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text)
    print(f"records: {records_path}", file=sys.stderr)
    return EXIT_FAILED_MEASUREMENTS if any(not r.ok for r in outcome.records) else EXIT_OK


def _draw_plots(sets: Sequence, results_dir: Path, link_base: Path) -> dict[str, list[str]]:
    """Draw results_dir/plots/; returns result file name -> PNG/SVG paths relative to link_base."""
    from harness.present.plots import PLOTS_DIRNAME, dump_plots

    written = dump_plots(sets, results_dir / PLOTS_DIRNAME)
    base = link_base.resolve()
    return {name: [os.path.relpath(p.resolve(), base) for p in files] for name, files in written.items()}


def cmd_report(args: argparse.Namespace) -> int:
    from harness.present.report import render_report
    from harness.records.results import load_results_dir

    sets = load_results_dir(args.dir)
    out = args.out or args.dir / "report.md"
    plots = {} if args.no_plots else _draw_plots(sets, args.dir, out.parent)
    text = render_report(sets, title=f"Portunus benchmark results: {args.dir.resolve().name}", plots=plots)
    out.write_text(text)
    print(text, end="")
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


def cmd_plots(args: argparse.Namespace) -> int:
    from harness.present.plots import PLOTS_DIRNAME
    from harness.records.results import load_results_dir

    sets = load_results_dir(args.dir)
    written = _draw_plots(sets, args.dir, args.dir)
    n = sum(len(v) for v in written.values())
    print(f"wrote {n} file(s) into {args.dir / PLOTS_DIRNAME}", file=sys.stderr)
    return EXIT_OK


def cmd_readme(args: argparse.Namespace) -> int:
    from harness.present.readme import replace_results
    from harness.present.report import render_readme_results
    from harness.records.results import load_results_dir

    sets = load_results_dir(args.dir)
    base = args.readme.resolve().parent
    plots = {} if args.no_plots else _draw_plots(sets, args.dir, base)
    rel_dir = os.path.relpath(args.dir.resolve(), base)
    text = render_readme_results(sets, rel_dir, plots)
    try:
        old = args.readme.read_text()
    except OSError as e:
        raise HarnessError(f"cannot read {args.readme}: {e.strerror}") from None
    args.readme.write_text(replace_results(old, text, str(args.readme)))
    print(f"updated {args.readme} from {args.dir} ({len(sets)} result file(s))", file=sys.stderr)
    return EXIT_OK


def cmd_sysinfo() -> int:
    from harness.measure.sysinfo import collect_sysinfo

    print(json.dumps(collect_sysinfo(), indent=2))
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    from harness.measure.runner import WORKDIR_PREFIX
    from harness.paths import iptables as ipt
    from harness.paths import nftables as nft

    av = ipt.iptables_available()
    if av.ok:
        removed = ipt.cleanup_leftovers(include_live=args.all)
        print(f"iptables: removed {len(removed)} chain(s){': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"iptables: not checked ({av.reason})")
    av = nft.nftables_available()
    if av.ok:
        removed = nft.cleanup_leftovers(include_live=args.all)
        print(f"nftables: removed {len(removed)} table(s){': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"nftables: not checked ({av.reason})")
    from harness.site.topology import netns as tnetns

    why = tnetns.netns_available()
    if why is None:
        # Never a running harness's namespaces, even with --all: deleting them would kill its
        # measurement, and a live harness removes them itself when it stops (signals included).
        removed = tnetns.cleanup_leftovers(include_live=False)
        print(f"network namespaces: removed {len(removed)}{': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"network namespaces: not checked ({why})")
    n = 0
    for d in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        pid = d.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and (args.all or not os.path.exists(f"/proc/{pid}")):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    print(f"scratch directories: removed {n}")
    return EXIT_OK


def cmd_paths(args: argparse.Namespace) -> int:
    from harness.paths import PATHS

    rows = []
    for name, cls in PATHS.items():
        path = cls()
        av = path.available_on(args.topology)
        if av.ok:
            av = path.available()
        rows.append({"path": name, "description": cls.description, "available": av.ok, "reason": av.reason,
                     "capped": cls.capped, "forwarder_process": cls.has_forwarder_process})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "available" if r["available"] else f"UNAVAILABLE: {r['reason']}"
            print(f"{r['path']:<18} {r['description']}\n{'':<18} {state}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.define.load import load_config
    from harness.define.plan import build_plan

    for c in args.configs:
        cfg = load_config(c)
        plan = build_plan(cfg)
        per_run = cfg.seconds + cfg.omit_seconds
        if cfg.kind == "latency":  # `seconds` is a time limit there: it stops when its samples are in
            what = f"at most {len(plan) * per_run / 60:.1f} min of probe time"
        else:
            what = f">= {len(plan) * per_run / 60:.1f} min of {'probe' if cfg.kind == 'connrate' else 'iperf3'} time"
        print(f"{c}: ok ({cfg.kind} '{cfg.name}', {len(plan)} measurements, {what})")
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    from harness.gate import verdicts
    from harness.gate.floors import check_floors, floors_exit_code
    from harness.present import gate as gate_tables
    from harness.records import bench_file

    if (args.baseline is not None and args.current is None) or (args.floors is None) != (args.results is None):
        raise HarnessError("gate: give --baseline with --current, and/or --floors with --results")
    if args.current is None and args.floors is None:
        raise HarnessError("gate: nothing to check: give --current [--baseline] and/or --floors/--results")
    if args.max_regression_pct < 0:
        raise HarnessError(f"--max-regression-pct must be >= 0, got {args.max_regression_pct:g}")
    codes = []
    if args.current is not None:
        try:
            current = bench_file.load_bench_file(args.current)
            baseline = bench_file.load_bench_file(args.baseline) if args.baseline is not None else None
        except bench_file.GateDataError as e:
            print(f"gate: incompatible data: {e}", file=sys.stderr)
            codes.append(verdicts.EXIT_DATA)
        else:
            print(f"Microbenchmarks ({args.current}): median of rounds; proxy/direct time median [IQR]")
            print(gate_tables.render_bench_summary(current))
            if baseline is not None:
                report = verdicts.compare(baseline, current, args.max_regression_pct)
                print(gate_tables.render_gate(report))
                codes.append(report.exit_code)
            else:
                codes.append(verdicts.EXIT_OK)
    if args.floors is not None:
        from harness.experiments.headline import summarise_headline
        from harness.records.results import load_results

        try:
            floors = bench_file.load_floors(args.floors)
            records = load_results(args.results).records
        except HarnessError as e:
            print(f"gate: incompatible data: {e}", file=sys.stderr)
            codes.append(verdicts.EXIT_DATA)
        else:
            checks = check_floors(floors, summarise_headline(records))
            print(gate_tables.render_floors(checks))
            codes.append(floors_exit_code(checks))
    # A regression is a finding and wins over missing data elsewhere (as in GateReport.exit_code).
    return verdicts.EXIT_REGRESSION if verdicts.EXIT_REGRESSION in codes else max(codes)


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.present import gate as gate_tables
    from harness.records import bench_file

    pooled = bench_file.pool_bench_files([bench_file.load_bench_file(p) for p in args.runs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench_file.dump_bench_file(pooled), indent=1) + "\n")
    print(gate_tables.render_bench_summary(pooled))
    print(f"wrote {args.out} ({len(args.runs)} run(s) pooled)", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.verb == "run":
            return cmd_run(args, argv)
        if args.verb == "compare":
            return cmd_compare(args, argv)
        if args.verb == "report":
            return cmd_report(args)
        if args.verb == "plots":
            return cmd_plots(args)
        if args.verb == "readme":
            return cmd_readme(args)
        if args.verb == "sysinfo":
            return cmd_sysinfo()
        if args.verb == "cleanup":
            return cmd_cleanup(args)
        if args.verb == "paths":
            return cmd_paths(args)
        if args.verb == "validate":
            return cmd_validate(args)
        if args.verb == "gate":
            return cmd_gate(args)
        if args.verb == "baseline":
            return cmd_baseline(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a Ctrl-C outside a run (preflight, report): nothing to clean up
        print("interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled verb {args.verb}")
