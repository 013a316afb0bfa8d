"""What to measure: experiment definitions as data, and the plan of measurements they make.

    experiment  ExperimentConfig (frozen; every default lives here), probe settings; pure, read back from headers
    topology    the `topology:` key -> TopologySpec (loopback | netns | hosts, links, ssh hosts); pure
    load        experiment YAML -> validated ExperimentConfig (every problem listed, file and key named)
    plan        config -> measurements: rounds interleaved across paths, shuffled within a round
"""
