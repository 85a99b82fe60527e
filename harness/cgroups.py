"""A hard CPU cap for each emulated host: a cgroup of the kernel's CPU bandwidth
controller, so that a host of a dilated network gets ``cores`` of this machine's cores
and no more, however idle the others are (CFS bandwidth control: a quota of CPU time per
period, the excess throttled until the next period).

Both hierarchies are served: cgroup v1's ``cpu`` controller (``cpu.cfs_quota_us`` and
``cpu.cfs_period_us``) and cgroup v2's ``cpu.max``. The cgroups go under the launcher's own
cgroup and are named like the network's namespaces (``parrbm-net-<launcher pid>-...``),
so that a launcher killed outright leaves nothing :func:`remove_stale` cannot find.

The period: a host's share of a core is quota / period; the cap uses a quota of 2 ms
(:data:`QUOTA_US`) for each of the host's cores, and so a period of 2 x ``dilation`` ms,
but never a period under 8 ms (:data:`MIN_PERIOD_US`: 4 ms of quota in 8 at a dilation of
2; 2 in 8 at 4, where a 30 ms step dilated by 4 spans 15 periods). A capped process
catches up within a period what it left idle in it, and the kernel enforces a quota only
at its ticks: the quota is the shortest that the tick does not spoil
(docs/design.md, "Time dilation").

The CPUs the capped hosts run on are kept busy while they are up (:class:`IdleSpinners`):
a throttled host leaves its CPU idle, and an idle CPU is lost for longer than the rest of
the period (a virtual CPU is halted and its physical core given to other guests; a bare
core drops into a deep sleep state and loses its caches).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

#: the kernel's least quota (and period), microseconds
MIN_QUOTA_US = 1000
#: the quota given for each core of a share, microseconds. The kernel enforces a quota at
#: its scheduler ticks (4 ms at HZ=250) and at context switches, and repays an overrun in
#: whole periods: a 1 ms quota cost a capped GEMM loop 15-33 % beyond its share here, 2
#: and 4 ms quotas 8-10 %; but a process idle for part of a period catches up with the
#: rest of its quota at once, more so the longer the quota (1 GEMM, then 2 ms waiting:
#: 2 ms quota 17 % fast, 4 ms 17 %; 2 GEMMs, 3 ms waiting: 1 % and 7 %). 2 ms holds both.
QUOTA_US = 2000
#: the shortest period, microseconds. With the CPUs kept busy (:class:`IdleSpinners`) a
#: capped GEMM loop ran 3-5 % beyond its share at periods of 8 ms and more, but 40-55 % at
#: 4 and 6 ms (a period within one or two ticks of the kernel's 4 ms)
MIN_PERIOD_US = 8000
#: the kernel's greatest period, microseconds
MAX_PERIOD_US = 1_000_000


@dataclass(frozen=True)
class Controller:
    """Where this machine's CPU bandwidth controller is: ``version`` 1 or 2, and the folder
    new cgroups go in (the launcher's own cgroup in that hierarchy)."""

    version: int
    parent: Path


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of /proc/self/mountinfo."""
    out = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) >= 5 and len(rest) >= 3:
                out.append((fields[4].replace("\\040", " "), rest[0], rest[2]))
    except OSError:
        pass
    return out


def _own_path(version: int) -> str:
    """The launcher's cgroup in the v1 ``cpu`` hierarchy or in the v2 one."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            num, controllers, path = line.split(":", 2)
            if version == 2 and num == "0" and controllers == "":
                return path
            if version == 1 and "cpu" in controllers.split(","):
                return path
    except (OSError, ValueError):
        pass
    return "/"


def controller() -> Controller | None:
    """This machine's CPU bandwidth controller, or None when it has none that is mounted
    writable (see :func:`missing`)."""
    for point, fstype, opts in _mounts():
        if fstype == "cgroup" and "cpu" in opts.split(","):
            parent = Path(point) / _own_path(1).lstrip("/")
            if (parent / "cpu.cfs_quota_us").exists() or parent == Path(point):
                return Controller(1, parent)
    for point, fstype, _ in _mounts():
        if fstype == "cgroup2":
            root = Path(point)
            try:
                if "cpu" not in (root / "cgroup.controllers").read_text().split():
                    continue
            except OSError:
                continue
            return Controller(2, root / _own_path(2).lstrip("/"))
    return None


def missing() -> str | None:
    """Why this process cannot cap an emulated host's CPU, or None if it can."""
    c = controller()
    if c is None:
        return (
            "time dilation caps each emulated host's CPU with the kernel's CPU bandwidth controller, and "
            "this machine has none mounted (cgroup v1 'cpu' or cgroup v2 with the 'cpu' controller)"
        )
    if not os.access(c.parent, os.W_OK):
        return (
            f"time dilation caps each emulated host's CPU in a cgroup under {c.parent}, which this process "
            f"cannot write: run as root (or give the user that cgroup)"
        )
    return None


def cap_settings(cores: float) -> tuple[int, int]:
    """(quota, period) in microseconds for a share of ``cores`` cores: the quota is
    :data:`QUOTA_US` for each core the share begins, the period follows from it (at least
    :data:`MIN_PERIOD_US`, the quota then the share of it)."""
    if not cores > 0:
        raise ValueError(f"a CPU cap of {cores!r} cores: give a share > 0")
    quota = QUOTA_US * max(1, math.ceil(cores))
    period = round(quota / cores)
    if period < MIN_PERIOD_US:  # the same share over the shortest period
        quota, period = round(MIN_PERIOD_US * cores), MIN_PERIOD_US
    if period > MAX_PERIOD_US:
        raise ValueError(
            f"a CPU cap of {cores:g} cores needs a period of {period} us, beyond the kernel's {MAX_PERIOD_US} us"
        )
    return quota, period


class CpuCap:
    """One cgroup capped to ``cores`` cores (quota and period: :func:`cap_settings`).

    :meth:`create` makes it, :meth:`enter_prefix` is the command prefix that runs a program
    inside it, :meth:`remove` stops what still runs in it and removes it (idempotent)."""

    def __init__(self, name: str, cores: float, cpus: list[int] | None = None):
        c = controller()
        if c is None:
            raise OSError(missing())
        self.controller = c
        self.path = c.parent / name
        self.cores = cores
        #: the CPUs the host's processes may run on (None: any): a host that keeps to
        #: its CPUs keeps its caches, as a machine of its own would
        self.cpus = cpus
        self.quota_us, self.period_us = cap_settings(cores)

    def create(self) -> "CpuCap":
        if self.controller.version == 2:
            # the cpu controller must be enabled for the parent's children
            try:
                (self.controller.parent / "cgroup.subtree_control").write_text("+cpu")
            except OSError:
                pass
        self.path.mkdir()
        if self.controller.version == 1:
            # the period first: the kernel refuses a quota it would hold against the old period
            (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        else:
            (self.path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
        return self

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def enter_prefix(self) -> list[str]:
        """A command prefix: the shell joins the cgroup, then becomes the program (its
        children stay in the cgroup). It joins before anything else runs, and before
        ``ip netns exec`` mounts a /sys of its own, where the cgroups are not to be seen."""
        pin = ["taskset", "-c", ",".join(map(str, self.cpus))] if self.cpus and shutil.which("taskset") else []
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs_file), *pin]

    def pids(self) -> list[int]:
        return pids_in(self.path)

    def throttled(self) -> dict:
        """The kernel's account of the cap: periods, periods throttled, time throttled (s)."""
        return throttle_stats(self.path)

    def remove(self) -> None:
        remove(self.path)

    def describe(self) -> dict:
        return {
            "cores": self.cores,
            "quota_us": self.quota_us,
            "period_us": self.period_us,
            "cgroup": f"v{self.controller.version}",
            "cpus": self.cpus,
        }


class IdleSpinners:
    """A busy loop at the lowest priority (``SCHED_IDLE``) on each of ``cpus``, in a cgroup
    of its own (uncapped, named like the hosts' caps, so that a killed launcher's are
    found and stopped with them), while a dilated network is up.

    A host capped to 1/F of a core leaves its CPU idle for the rest of every period. An
    idle virtual CPU is halted and its core handed to other guests by the hypervisor (a
    bare machine's core sleeps deeply and loses its caches), so each time the cap lets the
    host run again it first waits for its CPU back, caches cold: a GEMM loop pinned to a
    CPU and capped to 1/2 or 1/4 of it ran 10-47 % beyond its share here, and 3-5 % with
    the CPU kept busy (docs/design.md, "Time dilation"). ``SCHED_IDLE``: any other task
    (the hosts, the launcher, the kernel's threads) preempts the loops at once, so they
    take only what would have been idle. :meth:`stop` reaps them, so their CPU time is
    the run's own, not another process's."""

    def __init__(self, name: str, cpus: list[int]):
        c = controller()
        if c is None:
            raise OSError(missing())
        self.path = c.parent / name
        self.cpus = sorted(set(cpus))
        self.procs: list = []

    def start(self) -> "IdleSpinners":
        import subprocess

        self.path.mkdir()
        # each loop lasts while the process that started it does (its parent: a launcher
        # killed outright leaves none spinning, in the cgroup or out of it), which it asks
        # every 20-50 ms: between, it spins in user space without a system call
        loop = 'while kill -0 "$PPID" 2>/dev/null; do i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; done'
        for cpu in self.cpus:
            self.procs.append(
                subprocess.Popen(
                    ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs")]
                    + ["taskset", "-c", str(cpu), "chrt", "--idle", "0", "sh", "-c", loop],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # a terminal's ^C goes to the run, which stops them
                )
            )
        deadline = time.monotonic() + GONE_SECONDS
        while len(pids_in(self.path)) < len(self.procs):  # every loop in place before the hosts run
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise OSError(f"the loops keeping the hosts' CPUs busy did not start in {self.path}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the loops, reap them and remove their cgroup (idempotent)."""
        for p in self.procs:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()
        self.procs = []
        remove(self.path)


def pids_in(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def throttle_stats(path: Path) -> dict:
    try:
        text = (path / "cpu.stat").read_text()
    except OSError:
        return {}
    stat = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
    periods = int(stat.get("nr_periods", 0))
    throttled = int(stat.get("nr_throttled", 0))
    seconds = (
        int(stat["throttled_time"]) / 1e9 if "throttled_time" in stat else int(stat.get("throttled_usec", 0)) / 1e6
    )
    return {"periods": periods, "throttled_periods": throttled, "throttled_seconds": seconds}


#: how long the processes of a removed cgroup may take to be gone
GONE_SECONDS = 5.0


def remove(path: Path) -> bool:
    """Kill what runs in the cgroup at ``path`` and remove it; True if it is gone."""
    if not path.is_dir():
        return True
    deadline = time.monotonic() + GONE_SECONDS
    while True:
        left = pids_in(path)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            # EBUSY while a killed process is still exiting
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def ours(prefix: str) -> list[tuple[Path, int]]:
    """The cgroups named ``<prefix><launcher pid>-...`` under the launcher's cgroup, with
    their launcher's PID."""
    c = controller()
    if c is None or not c.parent.is_dir():
        return []
    out = []
    for d in c.parent.iterdir():
        m = re.match(re.escape(prefix) + r"(\d+)-", d.name)
        if m and d.is_dir():
            out.append((d, int(m.group(1))))
    return out
