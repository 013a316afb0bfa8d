"""Measuring: the run loop and what it drives through a path (no report or statistics here).

    runner       one measurement end to end (path up, target, client, forwarder CPU, record); the run loop
    drivers      what runs through a path, by the kind's driver name: iperf3 | latency | connrate
    iperf        iperf3 client and server processes (cli backend; python backend via iperf_child)
    probe        the latency / connection-rate client (probe_child) and its target (echo_server)
    preflight    tools, root, ports, paths and topology checked before anything is measured
    signals, progress, sysinfo   Ctrl-C / SIGTERM handling, the progress line, host metadata
"""
