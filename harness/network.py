"""Emulated hosts on one machine: every tcp or mpi worker on a host of its own, a Linux
network namespace, whose link to a switch is shaped to a bandwidth in both directions.

    switch namespace  <name>-sw:  bridge br0, ports p0 .. p{K-1}
    host namespace    <name>-h{r}: lo and eth0 (10.213.x.y/16), the other end of port p{r}

Each host's link is a veth pair: eth0 in the host, p{r} on the switch's bridge. A token
bucket (the ``tbf`` qdisc) on both ends holds the link to ``bandwidth`` in each
direction. The rate is that of the wire: Ethernet, IP and TCP headers count, as on a real
link, so a TCP stream's payload gets 1448 of every 1514 bytes (95.6 %). Latency is added
by ``netem`` where the kernel has it; where it has not, the link keeps its own (tens of
microseconds) and the network says so (:attr:`EmulatedNetwork.latency_emulated`).

Nothing can leave: the addresses exist only inside the run's namespaces, which have no
default route, no NAT and no link to any interface outside them. Names carry the
launcher's PID and a per-process counter, so two runs never collide; deleting a
namespace deletes its links and qdiscs, and the namespaces of a launcher killed
outright are removed by the next network set up, or by ``parrbm network cleanup``.

Time dilation (:attr:`LinkSpec.dilation` F > 1) emulates more machines than this one
has cores (Gupta et al., NSDI 2006): each host runs in a cgroup capped to ``host_cores``
/ F cores (:mod:`parrbm.harness.cgroups`), its link is shaped to bandwidth / F with F
times the latency (the token bucket keeps the undilated link's bytes), and whoever
measures divides every time by F. The cgroups are named like the namespaces and go with
them.

Needs root or CAP_NET_ADMIN, and iproute2 (``ip``, ``tc``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: every namespace of an emulated network is named PREFIX<launcher pid>-<n>-...
PREFIX = "parrbm-net-"
#: the folders of emulated clusters (harness.cluster) are named FOLDER_PREFIX<launcher pid>-...
FOLDER_PREFIX = "parrbm-cluster-"
#: the hosts' subnet (it exists only inside the run's namespaces)
SUBNET = "10.213"
MAX_HOSTS = 254 * 250
#: bytes of headers per full TCP segment on the wire: Ethernet 14, IPv4 20, TCP 20 + 12
#: (timestamps); a 1500-byte MTU carries 1448 bytes of payload
HEADER_BYTES = 66
MTU = 1500
#: the token bucket: at least this many bytes, and this many seconds of the rate
BURST_MIN = 32 * 1024
BURST_SECONDS = 1e-3


def bucket_bytes(wire_rate: float) -> int:
    """The token bucket of a link shaped to ``wire_rate`` bytes/s: the wire bytes it lets
    through at once after an idle spell (the time model prices a transfer with it)."""
    return int(max(BURST_MIN, wire_rate * BURST_SECONDS))


def payload_rate(wire_rate: float) -> float:
    """The bytes/s a TCP stream's payload gets on a link of ``wire_rate`` bytes/s: 1448
    payload bytes in every 1514-byte frame."""
    return wire_rate * (MTU - (HEADER_BYTES - 14)) / (MTU + 14)


_count = itertools.count()


class NetworkError(RuntimeError):
    """The emulated network cannot be set up here (what is missing is said), or a
    command that builds it failed."""


@dataclass(frozen=True)
class LinkSpec:
    """What a config's ``network.emulate`` asks for: ``bandwidth`` in bytes/s on the wire
    (None: unshaped), ``latency`` in seconds one way (None: the link's own); with a time
    ``dilation`` F > 1, hosts that stand for machines of ``host_cores`` cores each, run F
    times slower (their CPU capped to host_cores / F cores, their links F times slower)."""

    bandwidth: float | None
    latency: float | None = None
    dilation: float = 1.0
    host_cores: float = 1.0

    def __post_init__(self) -> None:
        why = shaping_refusal(self.bandwidth, self.latency) or dilation_refusal(self.dilation)
        if why:
            raise ValueError(why)

    @property
    def dilated(self) -> bool:
        return self.dilation != 1.0

    def undilated(self) -> "LinkSpec":
        """The same link without dilation (the link a dilated run stands for)."""
        return LinkSpec(self.bandwidth, self.latency)

    def describe(self) -> dict:
        return {"bandwidth": self.bandwidth, "latency": self.latency, "time_dilation": self.dilation}


#: the rates tc's token bucket shapes here, bytes/s: from 8 kbit/s (a frame per 0.2 s) to
#: 100 Gbit/s (beyond it the bucket's 0.2 s queue no longer fits tc's 32-bit limit)
MIN_RATE = 1e3
MAX_RATE = 12.5e9
#: the longest one-way latency emulated (netem's delay; a collective waits for it)
MAX_LATENCY = 10.0


#: the greatest time dilation: a host's share of a core is 1/F, its period F ms
MAX_DILATION = 64.0


def dilation_refusal(dilation) -> str | None:
    """Why a time dilation of ``dilation`` cannot be emulated, or None."""
    if isinstance(dilation, bool) or not isinstance(dilation, (int, float)) or not (1.0 <= dilation <= MAX_DILATION):
        return f"time dilation {dilation!r}: give a factor from 1 (undilated) to {MAX_DILATION:g}, 'auto' or 'off'"
    return None


def shaping_refusal(bandwidth: float | None, latency: float | None = None) -> str | None:
    """Why an emulated link of ``bandwidth`` bytes/s and ``latency`` seconds cannot be
    built, or None."""
    if bandwidth is not None and not (MIN_RATE <= bandwidth <= MAX_RATE):
        return (
            f"bandwidth {bandwidth:g} B/s is outside what the emulated links shape: {MIN_RATE:g} B/s "
            f"(8kbit/s) to {MAX_RATE / 1e9:g} GB/s (100Gbit/s)"
        )
    if latency is not None and not (0 <= latency <= MAX_LATENCY):
        return f"latency {latency:g} s is outside what the emulated links delay: 0 to {MAX_LATENCY:g} s"
    return None


def missing() -> str | None:
    """Why this process cannot build an emulated network, or None if it can."""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the emulated network needs iproute2's '{tool}' (apt-get install iproute2)"
    if not _has_net_admin():
        return (
            "the emulated network needs root or CAP_NET_ADMIN (it creates network namespaces, "
            "veth links and qdiscs); run as root, or drop the config's 'network' section"
        )
    return None


def host_cpus(r: int, host_cores: float) -> list[int]:
    """The CPUs of this machine host r keeps to: the hosts dealt round the CPUs in turn,
    ``host_cores`` (rounded up) each, so that each CPU serves as many hosts as any other."""
    import math

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    n = min(len(cpus), max(1, math.ceil(host_cores)))
    return sorted({cpus[(r * n + i) % len(cpus)] for i in range(n)})


def dilation_missing() -> str | None:
    """Why this process cannot dilate time (cap the hosts' CPU, keep their CPUs busy), or None."""
    from parrbm.harness.cgroups import missing as cgroup_missing

    tools = [t for t in ("taskset", "chrt") if shutil.which(t) is None]
    if tools:
        return (
            f"time dilation keeps the capped hosts' CPUs busy with {' and '.join(tools)}, which this machine "
            f"lacks (util-linux)"
        )
    return cgroup_missing()


def _has_net_admin() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))  # CAP_NET_ADMIN
    except OSError:
        pass
    return False


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise NetworkError(f"emulated network: '{' '.join(cmd)}' failed: {p.stderr.strip() or p.stdout.strip()}")
    return p


def namespaces() -> list[str]:
    """The network namespaces of this machine."""
    p = _run("ip", "-j", "netns", "list", check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return [n["name"] for n in json.loads(p.stdout)]


def cleanup(*, every: bool = False, launcher: int | None = None) -> list[str]:
    """Delete the namespaces (and with them the links and qdiscs) and the hosts' CPU caps
    (cgroups) of emulated networks whose launcher is gone; with ``every``, of all emulated
    networks (a live run's workers stopped first); with ``launcher``, only those of that
    launcher's PID. Returns the names (a cap as ``cgroup <path>``)."""
    from parrbm.harness import cgroups

    removed = []
    for path, pid in cgroups.ours(PREFIX):
        if (launcher is not None and pid != launcher) or (_alive(pid) and not every):
            continue
        if cgroups.remove(path):
            removed.append(f"cgroup {path}")
    for ns in namespaces():
        m = re.match(re.escape(PREFIX) + r"(\d+)-", ns)
        if not m or (launcher is not None and int(m.group(1)) != launcher):
            continue
        live = _alive(int(m.group(1)))
        if live and not every:
            continue
        # what still runs on these hosts is stopped (a run's workers, an emulated
        # cluster's sshd and sessions), so that nothing is left without its network; the
        # namespace goes first, so that a live run's launcher, seeing its workers end,
        # finds why
        inside = _pids_inside(ns)
        if _run("ip", "netns", "delete", ns, check=False).returncode == 0:
            removed.append(ns)
        _kill(inside)
    if launcher is None:
        sweep_stale_folders()
    return removed


def _pids_inside(ns: str) -> list[int]:
    p = _run("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in (p.stdout or "").split() if x.isdigit()]


def _kill(pids: list[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True


def _netem_available(ns: str, dev: str) -> bool:
    ok = (
        _run(
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms", check=False
        ).returncode
        == 0
    )
    if ok:
        _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
    return ok


class EmulatedNetwork:
    """``hosts`` emulated hosts joined by a switch, each link shaped to ``link``.

    Use as a context manager, or :meth:`up` and :meth:`down` (idempotent). Worker r runs
    under :meth:`exec_prefix` (r) and is reached at :meth:`address` (r)."""

    def __init__(self, hosts: int, link: LinkSpec):
        if not 1 <= hosts <= MAX_HOSTS:
            raise NetworkError(f"emulated network: {hosts} hosts; between 1 and {MAX_HOSTS} are possible")
        if link.bandwidth is not None and not link.bandwidth > 0:
            raise NetworkError(f"emulated network: bandwidth must be > 0 bytes/s, got {link.bandwidth!r}")
        if link.latency is not None and not link.latency >= 0:
            raise NetworkError(f"emulated network: latency must be >= 0 s, got {link.latency!r}")
        self.hosts = hosts
        self.link = link
        self.name = f"{PREFIX}{os.getpid()}-{next(_count)}"
        self.is_up = False
        self.latency_emulated = False
        #: each host's CPU cap (a dilated network), made by up()
        self.caps: list = []
        #: the loops that keep the capped hosts' CPUs busy (a dilated network), started by up()
        self.spinners = None

    # ---- names and addresses ------------------------------------------------------------

    @property
    def switch(self) -> str:
        return f"{self.name}-sw"

    def namespace(self, r: int) -> str:
        return f"{self.name}-h{r}"

    def hosts_cpus(self) -> list[int]:
        """The CPUs the hosts are pinned to (:func:`host_cpus`), each once."""
        return sorted({c for r in range(self.hosts) for c in host_cpus(r, self.link.host_cores)})

    @property
    def idle_name(self) -> str:
        """The cgroup of the loops that keep a dilated network's CPUs busy."""
        return f"{self.name}-idle"

    def address(self, r: int) -> str:
        return f"{SUBNET}.{r // 254}.{r % 254 + 1}"

    def namespaces(self) -> list[str]:
        """Every namespace of this network: its hosts' and its switch's."""
        return [*(self.namespace(r) for r in range(self.hosts)), self.switch]

    def exec_prefix(self, r: int) -> list[str]:
        """The command prefix that runs a program on host r (in its CPU cap, if dilated)."""
        enter = self.caps[r].enter_prefix() if self.caps else []
        return [*enter, "ip", "netns", "exec", self.namespace(r)]

    @property
    def dilation(self) -> float:
        return self.link.dilation

    @property
    def shaped_bandwidth(self) -> float | None:
        """The rate the links are shaped to: the bandwidth, slowed by the dilation."""
        return None if self.link.bandwidth is None else self.link.bandwidth / self.dilation

    @property
    def shaped_latency(self) -> float | None:
        return None if self.link.latency is None else self.link.latency * self.dilation

    # ---- life cycle ---------------------------------------------------------------------

    def up(self) -> "EmulatedNetwork":
        why = missing() or (dilation_missing() if self.link.dilated else None)
        if why:
            raise NetworkError(why)
        cleanup()  # what launchers killed outright left behind
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self.is_up = True
        return self

    def _build(self) -> None:
        sw = self.switch
        _run("ip", "netns", "add", sw)
        _run("ip", "netns", "exec", sw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _run("ip", "netns", "exec", sw, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        for r in range(self.hosts):
            ns = self.namespace(r)
            _run("ip", "netns", "add", ns)
            # no router advertisements, no neighbour discovery: only the run's traffic
            # on the link, so its counters can be held to the bytes the workers sent
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{r}", "netns", sw)
            _run("ip", "-n", ns, "link", "set", "eth0", "mtu", str(MTU))
            _run("ip", "-n", sw, "link", "set", f"p{r}", "mtu", str(MTU))
            _run("ip", "-n", ns, "addr", "add", f"{self.address(r)}/16", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", sw, "link", "set", f"p{r}", "master", "br0")
            _run("ip", "-n", sw, "link", "set", f"p{r}", "up")
        if self.link.latency:
            self.latency_emulated = _netem_available(self.namespace(0), "eth0")
        for r in range(self.hosts):
            self._shape(self.namespace(r), "eth0")  # host -> switch
            self._shape(sw, f"p{r}")  # switch -> host
        if self.link.dilated:
            from parrbm.harness.cgroups import CpuCap, IdleSpinners

            for r in range(self.hosts):
                self.caps.append(
                    CpuCap(
                        self.namespace(r), self.link.host_cores / self.dilation, cpus=host_cpus(r, self.link.host_cores)
                    )
                )
                try:
                    self.caps[-1].create()
                except OSError as exc:
                    raise NetworkError(
                        f"time dilation: cannot cap host {r}'s CPU in {self.caps[-1].path} ({exc.strerror or exc}); "
                        f"with cgroup v2 the cgroup parrbm runs in must delegate the 'cpu' controller to its "
                        f"children (for instance: systemd-run --scope -p Delegate=yes parrbm run ...)"
                    ) from None
            self.spinners = IdleSpinners(self.idle_name, self.hosts_cpus())
            try:
                self.spinners.start()
            except OSError as exc:
                raise NetworkError(f"time dilation: cannot keep the hosts' CPUs busy ({exc.strerror or exc})") from None

    def _shape(self, ns: str, dev: str) -> None:
        rate = self.shaped_bandwidth
        if rate is None and not self.latency_emulated:
            return
        tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev]
        parent = ["root"]
        if rate is not None:
            # burst: what the link may send at once after an idle spell. A real link has
            # none beyond its wire speed, and a big bucket would hand every collective
            # after a compute phase that many bytes for free; a tiny one loses rate to
            # late timer wake-ups. 1 ms of the rate holds both (larger GSO packets are
            # segmented by tbf). limit: 0.2 s of queue, so TCP never loses a segment
            # to it (a retransmission timeout would cost 200 ms)
            # (a dilated link keeps the undilated link's bucket and queue in bytes: the
            # same bytes pass at once, and the same bytes wait)
            burst = bucket_bytes(self.link.bandwidth)
            limit = int(max(256 * 1024, self.link.bandwidth * 0.2))
            _run(
                *tc,
                *parent,
                "handle",
                "1:",
                "tbf",
                "rate",
                f"{int(rate * 8)}bit",
                "burst",
                str(burst),
                "limit",
                str(limit),
            )
            parent = ["parent", "1:1"]
        if self.latency_emulated:
            _run(*tc, *parent, "handle", "10:", "netem", "delay", f"{self.shaped_latency * 1e6:.0f}us")

    def down(self) -> None:
        """Delete the namespaces (their links and qdiscs go with them) and the hosts' CPU
        caps (what still runs in them is stopped)."""
        for ns in [*(self.namespace(r) for r in range(self.hosts)), self.switch]:
            _run("ip", "netns", "delete", ns, check=False)
        if self.spinners is not None:
            self.spinners.stop()
            self.spinners = None
        if self.link.dilated:
            from parrbm.harness import cgroups

            c = cgroups.controller()
            if c is not None:
                for name in [*(self.namespace(r) for r in range(self.hosts)), self.idle_name]:
                    cgroups.remove(c.parent / name)
        self.caps = []
        self.is_up = False

    def __enter__(self) -> "EmulatedNetwork":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ---- what the links saw -------------------------------------------------------------

    def counters(self, r: int) -> dict[str, int]:
        """Host r's link as its interface counts it: bytes and packets sent and received."""
        p = _run("ip", "-n", self.namespace(r), "-s", "-j", "link", "show", "eth0")
        stats = json.loads(p.stdout)[0]["stats64"]
        return {
            "tx_bytes": stats["tx"]["bytes"],
            "tx_packets": stats["tx"]["packets"],
            "rx_bytes": stats["rx"]["bytes"],
            "rx_packets": stats["rx"]["packets"],
        }

    def describe(self) -> dict:
        """The link as configured, for records and the report."""
        d = {
            "hosts": self.hosts,
            "bandwidth": self.link.bandwidth,
            "latency": self.link.latency,
            "latency_emulated": self.latency_emulated,
            "qdisc": "tbf" if self.link.bandwidth else None,
            "burst": bucket_bytes(self.link.bandwidth) if self.link.bandwidth else None,
            "mtu": MTU,
            "header_bytes_per_segment": HEADER_BYTES,
            "time_dilation": self.dilation,
        }
        if self.link.dilated:
            # bandwidth and latency are those of the link the run stands for; the links
            # were shaped to these, and each host capped to host_cores / F cores
            from parrbm.harness.cgroups import cap_settings

            quota, period = cap_settings(self.link.host_cores / self.dilation)
            d.update(
                shaped_bandwidth=self.shaped_bandwidth,
                shaped_latency=self.shaped_latency,
                host_cores=self.link.host_cores,
                cpu_cap=self.caps[0].describe()
                if self.caps
                else {"cores": self.link.host_cores / self.dilation, "quota_us": quota, "period_us": period},
                # the CPUs kept busy at the lowest priority while the hosts are capped
                idle_cpus_kept_busy=self.hosts_cpus(),
            )
        return d


def sweep_stale_folders(root: str | None = None) -> list[Path]:
    """Remove the folders of emulated clusters whose launcher is gone."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{FOLDER_PREFIX}*"):
        m = re.match(re.escape(FOLDER_PREFIX) + r"(\d+)-", d.name)
        if not m or not d.is_dir() or d.is_symlink():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed
