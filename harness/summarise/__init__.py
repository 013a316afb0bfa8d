"""Statistics over loaded records (no I/O, no printing, no measurement).

    stats      n, median, min-max, ratios of medians, overlapping ranges
    topology   the same paths across topologies (loopback vs netns), side by side
    bench      microbenchmark rounds: per-round ratio proxy/direct, median and interquartile range
"""
