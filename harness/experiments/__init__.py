"""Per-kind summaries of an experiment's records (pure functions, no I/O).

headline  per path: throughput median [min-max], CPU s/GB, ratios vs baselines
ab        paired rounds of two paths: per-round ratio, median ratio
capped    delivered rate vs cap: the spec's +10% bound and the +-2% goal
sweep     per path and offered rate: delivered vs offered
peers     headline over the comparable forwarders (experiments.peers): % of iptables, Portunus as % of each
latency   per path: setup time and RTT p50/p90/p99, added over the direct floor (experiments.latency)
connrate  per path: connections/s, % of the direct ceiling, CPU µs per connection (experiments.connrate)
udp       per path and offered rate: delivered, loss, jitter (experiments.udp)
"""

from harness.kinds.ab import AbSummary, summarise_ab
from harness.kinds.capped import CappedSummary, summarise_capped, target_mbps
from harness.kinds.headline import HeadlineSummary, summarise_headline
from harness.kinds.sweep import SweepSummary, summarise_sweep

__all__ = [
    "AbSummary", "CappedSummary", "HeadlineSummary", "SweepSummary",
    "summarise_ab", "summarise_capped", "summarise_headline", "summarise_sweep", "target_mbps",
]
