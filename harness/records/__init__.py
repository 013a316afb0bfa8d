"""What a run leaves behind, as files and as the raw output of tools: formats, loaders, pure parsers.

    results      versioned JSONL result files: one Record per measurement, writer and loader
    header       the file's header as typed values: ExperimentConfig, SysInfo, TopologyInfo, PathFacts
    schema       the format's version, its history, and the step-by-step upgrades of older files
    iperf_json   iperf3's JSON report -> IperfResult (pure)
    probe_json   the latency / connection-rate probe's report -> percentiles, rates (pure)
    bench_file   microbenchmark files (benchmarks/microbench) and the gate's floor files
"""
