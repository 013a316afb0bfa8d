"""portunus-bench: the benchmark harness (measure -> record -> summarise -> report).

Module map, in data-flow order:
  config      YAML experiment definitions -> frozen ExperimentConfig
  plan        config -> ordered list of Measurement (interleaved, shuffled rounds)
  paths/      one module per forwarding path (direct, iptables, standalone, client, reference)
  iperf       iperf3 driver (two backends) and parse_iperf_json
  runner      executes a plan: path up, iperf3 server, client, CPU accounting, record
  results     versioned JSONL result files (append + fsync), loader, pandas
  stats       summaries and ratios (no I/O)
  experiments per-kind summaries (headline, ab, capped, sweep)
  report      render_* markdown over loaded results
  cli         `portunus-bench` verbs
"""
