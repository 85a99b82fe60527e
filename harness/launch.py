"""Starts the worker processes of the tcp and mpi transports and collects their results.

The job (model, data, options) goes to the workers through a directory; each worker
writes its result there (rank 0 also the gathered model), or an error file. A worker
that dies or hangs ends the run within the timeout with a CommError naming it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from parrbm.config import ModelState
from parrbm.harness.comm import CommError, PhaseStats
from parrbm.harness.mpi import hung_message, hydra_topology_files

# Workers start in the job directory, so a source checkout in the caller's working
# directory never shadows the installed package.
WORKER = [sys.executable, "-m", "parrbm.harness.worker"]


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


def write_job(job_dir: Path, runner, network=None) -> None:
    """What every worker of a fit needs once: the spec, the strategy, the options and the
    initial model (``state-0/``)."""
    save_state(job_dir / "state-0", runner.state)
    job = {"spec": asdict(runner.spec), "strategy": runner.name, "workers": runner.K,
           "options": asdict(runner.options), "timeout": runner.timeout, "blas_threads": runner.blas_threads,
           "listen": runner.tcp.listen,
           # on emulated hosts each worker listens on its host's address
           "listen_at": None if network is None else [network.address(r) for r in range(runner.K)],
           # the workers stop by themselves when their launcher is gone (on this machine)
           "launcher_pid": os.getpid() if (runner.transport == "mpi" or not runner.tcp.hosts) else None}
    (job_dir / "job.json").write_text(json.dumps(job))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_STATE_FIELDS = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")


def save_state(path: Path, state: ModelState) -> None:
    """A model as a folder of .npy files (no zip: a model of tens of MB goes and comes back
    every epoch)."""
    path.mkdir()
    for k, a in state.arrays().items():
        np.save(path / f"{k}.npy", a)


def read_state(path: Path) -> ModelState:
    return ModelState(**{k: (np.load(path / f"{k}.npy") if (path / f"{k}.npy").exists() else None)
                         for k in _STATE_FIELDS})


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ProcessGroup:
    """The K worker processes of a fit on tcp or mpi: started once, the data shipped once,
    then one command per epoch (``epoch``, ``gather``, ``load``, ``finish``, ``stop``)
    through the job directory. Every worker-local state (replicas, increments, chains, step
    counters, drift) lives in the processes from the first epoch to the last, as it does
    in the threads of the threads transport.

    A command is a file ``cmd-N.json``; each worker answers with ``result-N-R.json``. A
    worker that fails writes ``error-R.txt`` and exits; the group then diagnoses and names
    it as :func:`_wait` does, and is closed."""

    def __init__(self, runner):
        self.K, self.timeout, self.transport = runner.K, runner.timeout, runner.transport
        self.admin_stats = runner.admin_stats  # per worker: bookkeeping phases (gather-model)
        root = _job_root()
        sweep_stale_jobs(root)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-", dir=root))
        self.procs: list[subprocess.Popen] = []
        self.local = runner.transport == "mpi" or not runner.tcp.hosts
        self.seq = 0
        self._data: tuple[tuple, str] | None = None   # (fingerprint, file) of the data the workers hold
        # no worker outlives the group, and no job folder: also when it is dropped unclosed
        # the emulated hosts the workers run on: the runner's, or one made for this group
        self.network, own = _network_for(runner)
        self._finalizer = weakref.finalize(self, _shut_down, self.procs, self.dir, self.network if own else None)
        self.own_network = own
        try:
            if own:
                self.network.up()
            write_job(self.dir, runner, self.network)
            # every process of the job carries its tag (mpiexec's proxies and ranks too, in
            # whatever session or namespace they put themselves): the job's end kills by it;
            # the launcher's temporary files (hydra's topology file) go in the job folder
            env = {**os.environ, "OPENBLAS_NUM_THREADS": str(runner.blas_threads), JOB_TAG: self.dir.name,
                   "TMPDIR": str(self.dir)}
            from parrbm.strategies.registry import import_paths

            extra = import_paths(runner.name)  # a plug-in's module is imported by the workers too
            if extra:
                env["PYTHONPATH"] = os.pathsep.join([*extra, *filter(None, [env.get("PYTHONPATH")])])
            if runner.transport == "tcp":
                self.procs.extend(_start_tcp(self.dir, self.K, env, self.timeout, runner.tcp, self.network))
            else:
                self.procs.append(subprocess.Popen(
                    _mpi_command(self.dir, self.K, self.network, env), env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True, cwd=self.dir))
        except BaseException:
            self.close(kill=True)
            raise

    def _hosts_removed(self) -> bool:
        """The emulated hosts of this run were removed under it (parrbm network cleanup --all)."""
        return self.network is not None and not set(self.network.namespaces()) <= set(_namespaces_now())

    def _removed_message(self) -> str:
        return (f"{self.transport}: the emulated hosts of this run were removed while it was going "
                f"('parrbm network cleanup --all' stops the runs it removes the hosts of)")

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def command(self, op: str, **payload) -> list[dict]:
        """Give every worker the next command; their answers in rank order."""
        if not self.alive:
            if self._hosts_removed():
                self.close(kill=True)
                raise CommError(self._removed_message())
            raise CommError(f"{self.transport}: the workers of this fit have stopped")
        self.seq += 1
        n = self.seq
        write_atomic(self.dir / f"cmd-{n}.json", json.dumps({"op": op, **payload}))
        answers = [self.dir / f"result-{n}-{r}.json" for r in range(self.K)]
        try:
            _wait(self.procs, self.dir, self.K, self.timeout, self.transport, local=self.local,
                  done=lambda: all(a.exists() for a in answers))
        except BaseException as exc:  # a failure, a hang or Ctrl-C: no worker outlives it
            gone = isinstance(exc, CommError) and self._hosts_removed()
            self.close(kill=True)
            if gone:
                raise CommError(self._removed_message()) from exc
            raise
        out = [json.loads(a.read_text()) for a in answers]
        add_admin_stats(self.admin_stats, out)
        return out

    def epoch(self, spec, X: np.ndarray, order: np.ndarray, first_step: int, *, same_data: bool = False):
        """One pass over X[order]: per worker (errors, seconds, traffic, stats, wire), the
        extras (drift, syncs, memory) of this epoch, and the model the workers gathered at
        its end (in the same command: no extra round trip). The data go to the workers once:
        again only when they are not the data they hold (by content, unless the caller
        says they are the same)."""
        X = np.ascontiguousarray(X)
        if not (same_data and self._data is not None):
            fingerprint = (X.shape, X.dtype.str, zlib.crc32(memoryview(X).cast("B")))
            if self._data is None or self._data[0] != fingerprint:
                name = f"data-{self.seq + 1}.npy"
                np.save(self.dir / name, X)
                if self._data is not None:
                    (self.dir / self._data[1]).unlink(missing_ok=True)
                self._data = (fingerprint, name)
        order_name = f"order-{self.seq + 1}.npy"
        np.save(self.dir / order_name, np.asarray(order, np.int64))
        answers = self.command("epoch", spec=asdict(spec), data=self._data[1], order=order_name,
                               first_step=int(first_step), gather=True)
        (self.dir / order_name).unlink(missing_ok=True)
        results = []
        for res in answers:
            stats = {p: PhaseStats(**v) for p, v in res["stats"].items()}
            results.append((res["errors"], res["seconds"], res["traffic"], stats, res["wire"]))
        return results, answers, self._take_model()

    def gather(self) -> ModelState:
        self.command("gather")
        return self._take_model()

    def _take_model(self) -> ModelState:
        """The model rank 0 wrote in answer to the last command."""
        path = self.dir / f"model-{self.seq}"
        model = read_state(path)
        shutil.rmtree(path, ignore_errors=True)
        return model

    def load(self, state: ModelState) -> None:
        name = f"state-{self.seq + 1}"
        save_state(self.dir / name, state)
        self.command("load", state=name)
        shutil.rmtree(self.dir / name, ignore_errors=True)

    def finish(self) -> list[dict]:
        return self.command("finish")

    def local_states(self) -> list[tuple[dict, dict[str, np.ndarray]]]:
        answers = self.command("local")
        out = []
        for r, a in enumerate(answers):
            folder = self.dir / f"local-{self.seq}-{r}"
            out.append((a["counters"], {k: np.load(folder / f"{k}.npy") for k in a["arrays"]}))
            shutil.rmtree(folder, ignore_errors=True)
        return out

    def restore_local(self, states) -> None:
        n = self.seq + 1
        for r, (counters, arrays) in enumerate(states):
            folder = self.dir / f"restore-{n}-{r}"
            folder.mkdir()
            for k, a in arrays.items():
                np.save(folder / f"{k}.npy", a)
            (folder / "counters.json").write_text(json.dumps(counters))
        self.command("restore", prefix=f"restore-{n}-")
        for r in range(self.K):
            shutil.rmtree(self.dir / f"restore-{n}-{r}", ignore_errors=True)

    def close(self, kill: bool = False) -> None:
        """Stop the workers (asked, then killed if they do not stop) and remove the job
        folder."""
        try:
            if not kill and self.alive:
                self.seq += 1
                write_atomic(self.dir / f"cmd-{self.seq}.json", json.dumps({"op": "stop"}))
                deadline = time.monotonic() + min(self.timeout, 10.0)
                while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                    time.sleep(0.02)
        except OSError:
            pass
        finally:  # also when Ctrl-C or SIGTERM lands while they stop
            self._finalizer()


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


def _mpi_command(job_dir: Path, K: int, network, env: dict) -> list[str]:
    """mpiexec for K ranks: on this machine, or one rank on each emulated host (mpiexec on
    host 0, its proxies started on the others through a launcher that enters their
    namespaces; the ranks' traffic kept off shared memory so that it crosses the links:
    the variables that say so are set in ``env``, the environment mpiexec is to get)."""
    worker = [*WORKER, "--job", str(job_dir), "--transport", "mpi"]
    if network is None:
        return [mpiexec(), "-n", str(K), *worker]
    wrapper = job_dir / "enter-host.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# hydra's ssh launcher calls this as: enter-host.sh [options] HOST COMMAND...\n"
        "while [ \"${1#-}\" != \"$1\" ]; do shift; done\n"
        "host=$1; shift\n"
        'exec ip netns exec "$host" sh -c "$*"\n')
    wrapper.chmod(0o755)
    # every rank on its own host: no shared memory between them, TCP through eth0 only
    env.update({"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ucx", "UCX_TLS": "tcp,self",
                "UCX_NET_DEVICES": "eth0", "FI_PROVIDER": "tcp"})
    hosts = ",".join(f"{network.namespace(r)}:1" for r in range(K))
    return [*network.exec_prefix(0), mpiexec(), "-launcher", "ssh", "-launcher-exec", str(wrapper),
            "-hosts", hosts, "-localhost", network.address(0), "-n", str(K), *worker]


def _shut_down(procs, job_dir: Path, network=None) -> None:
    try:
        _shut_down_workers(procs, job_dir)
    finally:
        if network is not None:
            network.down()


def _shut_down_workers(procs, job_dir: Path) -> None:
    _kill(procs, Path(job_dir).name)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
    shutil.rmtree(job_dir, ignore_errors=True)


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
        pid_text = d.name[len(JOB_PREFIX):].split("-", 1)[0]
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


def _tcp_command(job_dir: Path, rank: int, K: int, blas_threads: str, where: TCPHosts,
                 network=None) -> list[str]:
    args = ["-m", "parrbm.harness.worker", "--job", str(job_dir), "--transport", "tcp",
            "--rank", str(rank), "--size", str(K)]
    if network is not None:
        return [*network.exec_prefix(rank), where.python, *args]
    host = where.host_of(rank)
    if host is None:
        return [where.python, *args]
    # One shell line for the remote side; the environment does not cross ssh.
    remote = " ".join([f"cd {shlex.quote(str(job_dir))} &&", f"OPENBLAS_NUM_THREADS={blas_threads}",
                       "exec", shlex.quote(where.python), *map(shlex.quote, args)])
    return [*where.launcher, host, remote]


def _start_tcp(job_dir: Path, K: int, env: dict, timeout: float, where: TCPHosts,
               network=None) -> list[subprocess.Popen]:
    secret = os.urandom(32).hex()  # goes on standard input: never on a command line
    procs = [subprocess.Popen(_tcp_command(job_dir, r, K, env["OPENBLAS_NUM_THREADS"], where, network), env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=job_dir) for r in range(K)]
    ports: list = [None] * K

    def read_port(r):
        try:
            procs[r].stdin.write(f"SECRET {secret}\n")
            procs[r].stdin.flush()
        except OSError:
            return  # died at once: reported below with its stderr
        line = procs[r].stdout.readline()
        if line.startswith("PORT "):
            ports[r] = int(line.split()[1])

    readers = [threading.Thread(target=read_port, args=(r,), daemon=True) for r in range(K)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(timeout)
    if any(p is None for p in ports):
        missing = [r for r in range(K) if ports[r] is None]
        where_ = "" if not where.hosts else " (on " + ", ".join(f"{r}: {where.host_of(r)}" for r in missing) + ")"
        exited = [r for r in missing if procs[r].poll() is not None]
        why = (f"{_describe_exit(procs[exited[0]].returncode)} before listening" if exited
               else f"did not start listening within {timeout:g} s")
        _kill(procs)
        for p in procs:
            p.wait()
        raise CommError(f"tcp: workers {missing}{where_} {why}" + _stderr_tail(procs, missing))
    def address(r: int) -> str:
        return network.address(r) if network is not None else (where.host_of(r) or where.listen)

    addresses = json.dumps([[address(r), p] for r, p in enumerate(ports)])
    for p in procs:
        p.stdin.write(addresses + "\n")
        p.stdin.close()
    return procs


#: how long the other workers get to stop by themselves once one has failed
GRACE_SECONDS = 2.0
#: what the first heartbeat of an mpi run may take beyond the timeout (interpreters start)
STARTUP_SECONDS = 30.0


def _wait(procs, job_dir: Path, K: int, timeout: float, transport: str, *, local: bool = True,
          done=None) -> None:
    """Wait for the workers. Once one fails, the others get a short grace to notice and
    stop; whatever is left is killed. A worker that stops answering is named: by the peers
    that waited ``timeout`` for it (tcp), by the collective it has not reached (mpi
    heartbeats), and by the kernel's word that it is stopped (SIGSTOP), wherever the
    workers run on this machine. ``done``: the workers are to answer, not to exit: return
    as soon as it is true; a worker that exits before is a failure."""
    deadline = None
    killed: set[int] = set()        # workers parrbm itself killed (they did not stop by themselves)
    stopped: list[int] = []         # workers the kernel showed stopped when they were killed
    beats, last_change = None, time.monotonic()
    nap = 0.0005  # answers come fast: poll often at first, then back off
    while True:
        if done is not None and deadline is None and done():
            return
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            break
        failed = any(c not in (None, 0) for c in codes) or (done is not None and any(c is not None for c in codes))
        if failed and deadline is None:
            deadline = time.monotonic() + min(timeout, GRACE_SECONDS)
            if any(codes[r] is None for r in _blamed(job_dir, K) if r < K):
                deadline = time.monotonic()  # its peers already waited `timeout` for it
        if deadline is not None and time.monotonic() > deadline:
            if transport == "tcp":
                stopped = _stopped_ranks(job_dir, K, procs, transport) if local else []
                killed = {r for r, c in enumerate(codes) if c is None}
            _kill(procs, Path(job_dir).name)
            break
        if transport == "mpi":  # MPI never times out by itself: watch the heartbeats
            now = _read_beats(job_dir, K)
            if now != beats:
                beats, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > (timeout if now else timeout + STARTUP_SECONDS):
                stopped = _stopped_ranks(job_dir, K, procs, transport)
                _kill(procs, Path(job_dir).name)
                raise CommError(hung_message(now, stopped, K, timeout))
        time.sleep(nap)
        nap = min(0.005, nap * 1.5)
    codes = [p.wait() for p in procs]
    if done is None and all(c == 0 for c in codes) and all((job_dir / f"result-{r}.json").exists()
                                                           for r in range(K)):
        return
    _raise_failure(procs, job_dir, K, timeout, transport, codes, stopped=stopped, killed=killed)


def _raise_failure(procs, job_dir: Path, K: int, timeout: float, transport: str, codes: list[int], *,
                   stopped: list[int], killed: set[int]) -> None:
    """Raise the :class:`CommError` that names the cause of a failed run: a worker that
    stopped answering, one that died without a word, else the first error reported."""
    reports = {r: (job_dir / f"error-{r}.txt").read_text().strip()
               for r in range(K) if (job_dir / f"error-{r}.txt").exists()}
    if transport == "tcp":
        # A worker that died without a word is the cause; a peer that was slow to stop
        # after it (and so was killed) is not, even if another peer blamed it.
        dead = [r for r, c in enumerate(codes) if c != 0 and r not in reports and r not in killed]
        blamed = _blamed(job_dir, K)
        unresponsive = stopped or ([] if dead else [r for r in blamed if r in killed])
        if unresponsive:
            r = unresponsive[0]
            seen = next((m for j, m in sorted(reports.items()) if j != r), "")
            raise CommError(f"worker {r} did not respond within {timeout:g} s (stopped or hung"
                            + ("; the kernel shows it stopped, as by SIGSTOP" if r in stopped else "") + ")"
                            + (f"; its peers saw: {seen}" if seen else ""))
        if dead:
            r = dead[0]
            seen = next(iter(reports.values()), "")
            raise CommError(f"worker {r} {_describe_exit(codes[r])}" + (f"; its peers saw: {seen}" if seen else ""))
    else:
        missing = [r for r in range(K) if r not in reports and not (job_dir / f"result-{r}.json").exists()]
        dead = _mpi_dead_rank(procs[0], job_dir, K)
        beats = _read_beats(job_dir, K)
        counts = [beats.get(r, (0, 0, ""))[0] for r in range(K)]
        if dead is not None and counts.count(min(counts)) == 1:
            # mpiexec names whichever rank it saw exit first; the rank that fell behind
            # its peers' collectives is the one that died.
            dead = (counts.index(min(counts)), dead[1])
        if dead is not None:
            rank, code = dead
            raise CommError(f"worker {rank} {_describe_exit(-code if code > 0 else code)}; "
                            f"mpiexec stopped the other workers")
        if missing and not reports:
            raise CommError(f"mpi: worker {missing[0]} stopped without a result; mpiexec "
                            f"{_describe_exit(codes[0])}" + _stderr_tail(procs, [0]))
        if missing:
            first = next(iter(reports.values()))
            raise CommError(f"worker {missing[0]} stopped without a result ({first})")
    if reports:
        r, msg = min(reports.items())
        raise CommError(msg)
    raise CommError(f"{transport}: workers exited with codes {codes} and left no result")


def _blamed(job_dir: Path, K: int) -> list[int]:
    """The ranks the failed workers hold responsible, most often named first."""
    from collections import Counter

    named = Counter()
    for r in range(K):
        try:
            named[int((job_dir / f"blame-{r}.txt").read_text())] += 1
        except (OSError, ValueError):
            continue
    return [r for r, _ in named.most_common()]


def _stopped_ranks(job_dir: Path, K: int, procs, transport: str) -> list[int]:
    """Workers of this machine that the kernel shows stopped (state T: SIGSTOP, a debugger)."""
    out = []
    for r in range(K):
        pid = None
        try:
            pid = int((job_dir / f"pid-{r}.txt").read_text())
        except (OSError, ValueError):
            if transport == "tcp" and r < len(procs):
                pid = procs[r].pid
        if pid is None:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] in "Tt":
            out.append(r)
    return out


def _read_beats(job_dir: Path, K: int) -> dict:
    out = {}
    for r in range(K):
        f = job_dir / f"beat-{r}"
        try:
            text = f.read_text()
        except OSError:
            continue
        parts = text.split(None, 2)
        if len(parts) >= 2:
            try:
                out[r] = (int(parts[0]), int(parts[1]), parts[2].strip() if len(parts) > 2 else "")
            except ValueError:  # a beat being written
                continue
    return out


def _mpi_dead_rank(proc, job_dir: Path, K: int):
    """(rank, exit code) of the process mpiexec reports as badly terminated, if any."""
    import re

    try:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    except (OSError, ValueError):
        return None
    m = re.search(r"PID (\d+) RUNNING AT .*?\n=\s+EXIT CODE: (\d+)", out, re.S)
    if not m:
        return None
    pid, code = int(m.group(1)), int(m.group(2))
    for r in range(K):
        f = job_dir / f"pid-{r}.txt"
        if f.exists() and f.read_text().strip() == str(pid):
            return r, code
    return None


def _kill(procs, tag: str | None = None) -> None:
    """SIGKILL the job's processes: each started one's process group, whether or not its
    leader still runs (mpiexec may be gone while its ranks spin), and, with ``tag``, every
    process whose environment carries the job's tag (what left the group or the session)."""
    if tag is not None:
        kill_tagged(tag)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if p.poll() is None:
                p.kill()
    if tag is not None:
        for _ in range(5):  # a process forked while its parent was being killed
            if not kill_tagged(tag):
                break
            time.sleep(0.05)


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
    raise CommError(f"the temporary folder {base!r} has characters the workers' launcher cannot pass "
                    f"through a shell, and /tmp is not writable: set TMPDIR to a plain path")


def _namespaces_now() -> list[str]:
    from parrbm.harness.network import namespaces

    return namespaces()


def _stderr_tail(procs, ranks) -> str:
    out = []
    for r in ranks:
        p = procs[r]
        if p.poll() is None or p.stderr is None:
            continue
        err = p.stderr.read()
        err = err.decode() if isinstance(err, bytes) else err
        if err.strip():
            out.append(f"\n--- worker {r} stderr ---\n" + "\n".join(err.strip().splitlines()[-8:]))
    return "".join(out)
