"""The report's cost table: CPU per unit of work per path, forwarder and whole host, and how to read it."""

from __future__ import annotations

from harness.present.format import DASH, table
from harness.summarise.cost import DIRECT, UNITS, CostCell, CostTable

# Why per-process CPU and whole-host CPU differ on loopback and veth (the report prints this under the table).
SOFTIRQ_ATTRIBUTION = (
    "How softirq time is attributed, and what it means for the forwarder column: on loopback and veth a sent "
    "packet is not handed to hardware; the kernel queues it to the receiving side and runs the receive half of "
    "the stack (IP, netfilter NAT and conntrack for iptables / nftables, TCP receive processing and the ACK it "
    "triggers) in NET_RX softirq, normally at once on the sending CPU when the sender's system call re-enables "
    "bottom halves (in ksoftirqd only under overload). The dev host's kernel accounts CPU by tick "
    "(CONFIG_TICK_CPU_ACCOUNTING, no CONFIG_IRQ_TIME_ACCOUNTING; /proc/config.gz): softirq work done in a "
    "process's context is charged to that process's system time and CPU clock, and /proc/stat books the same "
    "ticks as softirq. So a forwarder's CPU includes delivering what it sends to the target (and its ACKs) but "
    "not what the iperf3 client sends to it (charged to the client), and the work of a kernel path (NAT, a "
    "second trip through the stack) is charged to the iperf3 processes: no forwarder column can show it. The "
    "whole-host column does: busy time of all cores (user + nice + system + irq + softirq from /proc/stat, "
    "steal and idle excluded) over the client's run, every process included; `direct` is then what the "
    "endpoints alone cost, and *above direct* is what forwarding adds, kernel paths included. The softirq share "
    "is part of the busy time, not extra, and is sampled at the tick (4 ms at HZ=250): a coarse split. On a "
    "host shared with other work the whole-host figures include that work too: over interleaved, shuffled "
    "rounds it adds to every path alike on average and widens their spread; the forwarder figures do not "
    "contain it."
)


def _cell_fwd(c: CostCell | None, digits: int) -> str:
    if c is None:
        return DASH
    return DASH if c.forwarder.median is None else f"{c.forwarder.median:.{digits}f}"


def _cell_host(c: CostCell | None, digits: int) -> str:
    if c is None or c.host.median is None:
        return DASH
    soft = (f", softirq {100.0 * c.host_softirq.median / c.host.median:.0f}%"
            if c.host_softirq.median is not None and c.host.median > 0 else "")
    above = "" if c.above_direct is None else f" ({c.above_direct:+.{digits}f} vs direct{soft})"
    if not above and soft:
        above = f" ({soft[2:]})"
    return f"{c.host.median:.{digits}f}{above}"


def render_cost_table(t: CostTable, kernel_paths: frozenset[str] = frozenset()) -> str:
    """One row per path: forwarder and whole-host CPU per GB, per connection, per datagram (medians)."""
    units = [u for u in UNITS if u in t.cells]
    digits = {"GB": 3, "connection": 1, "datagram": 2}
    header = ["Path"]
    for u in units:
        label = UNITS[u][1]
        header += [f"Forwarder CPU, {label}", f"Whole-host CPU, {label}"]
    rows = []
    for path in t.paths:
        row = [f"`{path}`"]
        for u in units:
            c = t.get(u, path)
            fwd = _cell_fwd(c, digits[u])
            if c is not None and fwd == DASH:
                fwd = "none" if path == DIRECT else ("kernel (see host)" if path in kernel_paths else DASH)
            row += [fwd, _cell_host(c, digits[u])]
        rows.append(row)
    return table(header, rows)
