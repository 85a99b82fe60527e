"""What else the machine did while a run was timed: a comparison on a shared machine
says so beside its figures instead of printing them as results.

Each timed run is bracketed by :class:`LoadProbe`: the CPU time the whole machine spent
in user and system mode (``/proc/stat``) less the run's own (this process and the
workers it started and reaped: ``os.times``), over the run's wall time, is what other
processes took, in cores; the hypervisor's steal is the share of CPU time taken from
this machine. Kernel interrupt and softirq time (the network stack's) is left out of
both: a run's own traffic is handled there.
"""

from __future__ import annotations

import os
import time

__all__ = ["LoadProbe", "OTHERS_CORES_FLAG", "STEAL_FLAG"]

#: others' CPU, in cores on average over a run, from which the run is flagged
OTHERS_CORES_FLAG = 0.25
#: the hypervisor's share of CPU time from which a run is flagged
STEAL_FLAG = 0.05
#: the shortest run whose load is told: /proc/stat and os.times count in ticks of 10 ms,
#: so a shorter run's figures are mostly rounding
MIN_WALL_SECONDS = 2.0


def _cpu_times() -> tuple[float, float, float] | None:
    """(user + nice + system, steal, total) seconds over all CPUs, or None without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]] + [0] * 10
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return (user + nice + system) / hz, steal / hz, total / hz


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadProbe:
    """Bracket one timed run: ``probe = LoadProbe(ours=True)`` before, ``probe.finish()``
    after. ``ours``: the run's workers are this process or its reaped children (threads,
    and tcp and mpi workers started here); otherwise (ranks of a launcher's job, workers on
    other hosts) others' CPU cannot be told from the run's and is not reported."""

    def __init__(self, *, ours: bool = True):
        self.ours = ours
        self.wall0 = time.monotonic()
        self.cpu0 = _cpu_times()
        self.own0 = _own_cpu()
        self.loadavg_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def finish(self) -> dict:
        """{wall_seconds, loadavg_before, others_cores (None if not known), steal_fraction
        (None without /proc)}; both None for a run shorter than MIN_WALL_SECONDS."""
        wall = max(time.monotonic() - self.wall0, 1e-9)
        cpu1, own = _cpu_times(), _own_cpu() - self.own0
        out = {
            "wall_seconds": wall,
            "loadavg_before": self.loadavg_before,
            "others_cores": None,
            "steal_fraction": None,
        }
        if self.cpu0 is not None and cpu1 is not None and wall >= MIN_WALL_SECONDS:
            busy, steal, total = (b - a for a, b in zip(self.cpu0, cpu1))
            out["steal_fraction"] = steal / total if total > 0 else 0.0
            if self.ours:
                out["others_cores"] = max(0.0, (busy - own) / wall)
        return out
