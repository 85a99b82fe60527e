"""What the worker processes of the tcp and mpi transports are started with, and how a
job's processes are found and ended: where tcp workers run (:class:`TCPHosts`), the
mpiexec of this environment and its command for emulated hosts, the tag every process
of a job carries, and the sweep of folders left by a launcher that was killed. The
groups of worker processes themselves: :mod:`parrbm.harness.remote`."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from parrbm.harness.comm import CommError, PhaseStats
from parrbm.harness.mpi import hydra_topology_files


@dataclass
class TCPHosts:
    """Where the tcp workers run.

    With no ``hosts`` every worker starts on this machine and listens on ``listen``.
    With ``hosts``, worker r starts on ``hosts[r % len(hosts)]`` (list a host twice for two
    workers there) through ``launcher`` (ssh by default: key-based login, no prompt), runs
    ``python`` there, listens on ``listen`` and is reached by its peers at the host's
    name; its job, data and commands go over its ssh session (:mod:`parrbm.harness.remote`):
    no file system is shared."""

    listen: str = "127.0.0.1"
    hosts: list[str] | None = None
    launcher: list[str] = field(default_factory=lambda: ["ssh", "-o", "BatchMode=yes", "-T"])
    python: str = sys.executable

    def host_of(self, rank: int) -> str | None:
        return self.hosts[rank % len(self.hosts)] if self.hosts else None


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        raise CommError("transport 'mpi' needs mpiexec: pip install 'parrbm[mpi]' (mpi4py and mpich)")
    return found


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def add_admin_stats(admin_stats: list[dict], answers: list[dict]) -> None:
    """What assembling the model moved (each answer's ``admin_stats``), into each worker's
    bookkeeping phases: on the links, not in the accounts."""
    from parrbm.harness.runner import split_waits

    admin = [{p: PhaseStats(**s) for p, s in a.get("admin_stats", {}).items()} for a in answers]
    split_waits(admin)
    for r, per_phase in enumerate(admin):
        for phase, s in per_phase.items():
            admin_stats[r].setdefault(phase, PhaseStats()).add(s)


def _network_for(runner):
    """(the EmulatedNetwork the workers run on or None, whether this group owns it)."""
    from parrbm.harness.network import EmulatedNetwork, LinkSpec

    net = getattr(runner, "network", None)
    if net is None:
        return None, False
    if isinstance(net, LinkSpec):
        return EmulatedNetwork(runner.K, net), True
    if net.hosts < runner.K:
        raise CommError(f"the emulated network has {net.hosts} hosts, the run {runner.K} workers")
    return net, False


def _mpi_command(job_dir: Path, K: int, network, env: dict, program: list[str]) -> list[str]:
    """mpiexec for K ranks of ``program``, one on each emulated host (mpiexec on host 0,
    its proxies started on the others through a launcher that enters their namespaces;
    the ranks' traffic kept off shared memory so that it crosses the links: the variables
    that say so are set in ``env``, the environment mpiexec is to get). The launcher's
    script goes in ``job_dir``."""
    wrapper = job_dir / "enter-host.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# hydra's ssh launcher calls this as: enter-host.sh [options] HOST COMMAND...\n"
        'while [ "${1#-}" != "$1" ]; do shift; done\n'
        "host=$1; shift\n"
        'exec ip netns exec "$host" sh -c "$*"\n'
    )
    wrapper.chmod(0o755)
    # every rank on its own host: no shared memory between them, TCP through eth0 only
    env.update(
        {
            "MPIR_CVAR_NOLOCAL": "1",
            "MPIR_CVAR_CH4_NETMOD": "ucx",
            "UCX_TLS": "tcp,self",
            "UCX_NET_DEVICES": "eth0",
            "FI_PROVIDER": "tcp",
        }
    )
    hosts = ",".join(f"{network.namespace(r)}:1" for r in range(K))
    return [
        *network.exec_prefix(0),
        mpiexec(),
        "-launcher",
        "ssh",
        "-launcher-exec",
        str(wrapper),
        "-hosts",
        hosts,
        "-localhost",
        network.address(0),
        "-n",
        str(K),
        *program,
    ]


JOB_PREFIX = "parrbm-job-"


def sweep_stale_jobs(root: str | None = None) -> list[Path]:
    """Remove the job directories of launchers that are gone (killed before they could
    clean up: SIGKILL, a power cut). A job directory is named after its launcher's PID;
    one whose launcher still runs, or that is not ours to remove, is left alone."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    try:
        entries = list(base.glob(f"{JOB_PREFIX}*"))
    except OSError:
        return removed
    for d in entries:
        pid_text = d.name[len(JOB_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or not d.is_dir() or d.is_symlink():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # its launcher still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue  # another user's process, or not a PID
        if time.time() - d.stat().st_mtime < 5:
            continue  # a PID just reused by a launcher that is creating it
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


#: how long the other workers get to stop by themselves once one has failed
GRACE_SECONDS = 2.0
#: the environment variable that tags every process of a job with its folder's name
JOB_TAG = "PARRBM_JOB"


def tagged(tag: str) -> list[int]:
    """PIDs of the processes whose environment has PARRBM_JOB=tag (this user's, or every
    user's as root)."""
    needle = f"{JOB_TAG}={tag}\0".encode()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if needle in fh.read() + b"\0":
                    out.append(int(entry.name))
        except OSError:
            continue
    return out


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every process tagged ``tag``, then remove the topology files hydra's proxies
    had made for them (a proxy removes its /tmp/hydra_hwloc_xmlfile_* when it exits, not
    when it is killed); returns the PIDs it signalled."""
    pids = tagged(tag)
    leftovers = {f for pid in pids for f in hydra_topology_files(pid)}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for f in leftovers:
        try:
            os.unlink(f)
        except OSError:
            pass
    _wait_gone(pids)
    return pids


#: how long a SIGKILLed process may take to be gone (a loaded machine schedules it late)
GONE_SECONDS = 5.0


def _wait_gone(pids: list[int]) -> None:
    """Return once every one of ``pids`` has ended (gone, or a zombie its parent has not
    reaped yet): what a run killed is no longer running when its caller goes on."""
    deadline = time.monotonic() + GONE_SECONDS
    left = list(pids)
    while left and time.monotonic() < deadline:
        still = []
        for pid in left:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] not in "ZX":
                still.append(pid)
        left = still
        if left:
            time.sleep(0.01)


def _job_root() -> str:
    """Where job folders go: the temporary folder, unless its path has a character a
    launcher's shell would split or expand (hydra's proxies are started through a shell
    command line): then /tmp."""
    import re

    base = tempfile.gettempdir()
    if re.fullmatch(r"[A-Za-z0-9_./+-]+", base):
        return base
    if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK):
        return "/tmp"
    raise CommError(
        f"the temporary folder {base!r} has characters the workers' launcher cannot pass "
        f"through a shell, and /tmp is not writable: set TMPDIR to a plain path"
    )
