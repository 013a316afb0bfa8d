"""Regression gate: verdicts over microbenchmark runs and the quick run's floors.

Two checks, one verdict each, pure functions over loaded files and summaries:

* **Microbenchmarks** (`benchmarks/microbench/`): every benchmark measures the
  same operation through the proxy and directly (no proxy), interleaved
  round by round, and the gate compares the per-round *ratio* proxy / direct
  (seconds per operation), never absolute times: the ratio cancels most of
  what a noisy host does to both. `compare` marks a benchmark a REGRESSION
  only if BOTH hold (asv's rule: a ratio beyond the threshold and a
  significant difference):
    - beyond threshold: the current median ratio is more than
      `max_regression_pct` above the baseline's median ratio;
    - outside spread: the current run's interquartile range of ratios lies
      entirely above the baseline's (the two runs' middle halves do not
      overlap, so run-to-run noise cannot explain the difference).
  Beyond the threshold but inside the spread is `noise`; `improved` is the
  mirror image (median ratio below baseline / (1 + threshold), IQRs apart);
  improvements never fail. Exit code: 1 if any regression; else 2 if any benchmark is missing,
  failed, has too few rounds or other parameters than its baseline; else 0.
* **Floors** (`configs/quick.yaml` through `portunus-bench run`): a path's
  median throughput as % of another's (e.g. standalone vs iptables) must not
  fall below a committed floor. Exit 1 below a floor, 2 if a path is missing.

    verdicts  microbenchmark run vs baseline, per benchmark; the exit code
    floors    a headline summary of the quick run against committed floors
"""
