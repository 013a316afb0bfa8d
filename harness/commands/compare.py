"""`portunus-bench compare`: the spec's perf_compare flags -> an experiment, run, and its headline (or sweep) JSON."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.define.experiment import ExperimentConfig
from harness.errors import EXIT_FAILED_MEASUREMENTS, EXIT_OK

NAME = "compare"


def compare_config(*, seconds: int, omit_seconds: int, rounds: int, with_iptables: bool, cap_bytes_per_s: int,
                   offered_mbps: Sequence[float], skip_client: bool, skip_standalone: bool,
                   backend: str = "cli", base_port: int | None = None, with_reference: bool = False) -> ExperimentConfig:
    """The experiment `compare` runs for a set of spec flags."""
    paths = ["direct"]
    if with_iptables:
        paths.append("iptables")
    if with_reference:
        paths.append("reference")
    if not skip_standalone:
        paths.append("standalone")
    if not skip_client:
        paths.append("client")
    sweep = bool(offered_mbps)
    caps: tuple[int, ...] = ()
    if cap_bytes_per_s > 0 and not skip_client and not sweep:
        paths.append("client_capped")
        caps = (cap_bytes_per_s,)
    return ExperimentConfig(
        name="compare", kind="sweep" if sweep else "headline", paths=tuple(paths), rounds=rounds,
        seconds=seconds, omit_seconds=omit_seconds, backend=backend, offered_mbps=tuple(offered_mbps),
        caps_bytes_per_s=caps, base_port=base_port,
        description="portunus-bench compare (the spec's perf_compare flags)",
    )


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


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
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


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run compare's experiment and print (and write) the spec's JSON."""
    from harness.measure.runner import run_experiment
    from harness.present.compare import build_compare_json, build_sweep_json

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
    from harness.kinds import summarise_file
    from harness.kinds.capped import summarise_capped
    from harness.records.results import load_results

    rs = load_results(records_path)
    if cfg.offered_mbps:
        doc = build_sweep_json(rs.records)
    else:  # a headline-kind file: its summary, and the capped client rule's accuracy
        doc = build_compare_json(summarise_file(rs).summary, summarise_capped(rs.records), args.cap_bytes_per_sec)
    text = json.dumps(doc, indent=2)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text)
    print(f"records: {records_path}", file=sys.stderr)
    return EXIT_FAILED_MEASUREMENTS if any(not r.ok for r in outcome.records) else EXIT_OK
