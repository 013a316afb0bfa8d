"""portunus-bench: the benchmark harness (define -> measure -> record -> summarise -> present / gate).

Stages, in data-flow order (harness/README.md has the walkthroughs):
  define     experiment YAML -> ExperimentConfig, topology spec, plan
  measure    run loop, drivers (iperf3 | latency | connrate), tool wrappers and child programs
  paths      forwarding paths, one interface, registry PATHS
  site       topologies and executors: where each process runs
  records    result / microbenchmark file formats, pure parsers of tool output
  summarise  statistics (no I/O)
  kinds      one module per experiment kind (summary, section, figures, rules), registry KINDS
  present    report, figures, README block, compare JSON, gate tables
  gate       regression verdicts
  commands   one module per `portunus-bench` verb (cli: parser and dispatch)
"""
