"""What a run leaves behind, as files and as the raw output of tools: formats, loaders, pure parsers.

    results      versioned JSONL result files (header, one Record per measurement), loader with upgrades
    iperf_json   iperf3's JSON report -> IperfResult (pure)
    probe_json   the latency / connection-rate probe's report -> percentiles, rates (pure)
"""
