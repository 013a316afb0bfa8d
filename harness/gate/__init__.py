"""Regression gate: verdicts over microbenchmark runs and the quick run's floors.

Two checks, one verdict each, pure functions over loaded files and summaries:

* **Microbenchmarks** (`benchmarks/microbench/`): every round is a pair
  measured at the same time, and the gate compares the per-round *ratio*,
  never absolute times: the ratio cancels most of what a noisy host does to
  both sides. Timing benchmarks: the same operation through the proxy and
  directly (no proxy), interleaved; ratio = proxy / direct seconds per
  operation. Cost benchmarks: a fixed amount of work (bytes, connections,
  datagrams) through the forwarder; ratio = the forwarder process tree's
  CPU time / the measuring client's CPU time for the same work. `compare`
  marks a benchmark a REGRESSION only if BOTH hold (asv's rule: a ratio
  beyond the threshold and a significant difference):
    - beyond threshold: the current median ratio is more than the
      baseline's threshold for this benchmark above the baseline's median
      (thresholds.py derives it from the spread between the baseline's
      runs; --max-regression-pct for a benchmark without one);
    - significant: a one-sided Mann-Whitney U test of the current rounds'
      ratios against the baseline's says "larger" at p < alpha (0.01).
  Beyond the threshold but not significant is `noise`; `improved` is the
  mirror image (median below baseline / (1 + threshold), significantly
  smaller); improvements never fail. Exit code: 1 if any regression; else
  2 if any benchmark is missing, failed, has too few rounds or other
  parameters than its baseline; else 0.
* **Floors** (`configs/quick.yaml` through `portunus-bench run`): a path's
  median throughput as % of another's (e.g. standalone vs iptables) must not
  fall below a committed floor. Exit 1 below a floor, 2 if a path is missing.

    verdicts    microbenchmark run vs baseline, per benchmark; the exit code
    thresholds  per-benchmark thresholds from the spread of the baseline's runs
    floors      a headline summary of the quick run against committed floors
"""
