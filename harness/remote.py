"""The worker processes parrbm starts for a tcp or mpi fit, on this machine, on its
emulated hosts or on other hosts, driven over the run's own connections: no file
system is shared, and nothing polls.

:class:`MPIGroup`: the driver (the process that runs the fit or the comparison) listens
(TCP; a Unix socket for emulated hosts) and starts ``mpiexec [-hosts ...] -n K python -m
parrbm.harness.remote`` (on named hosts: the config's ``mpi`` section, with hosts or a
hostfile, the launcher command, variables for every rank). Every rank connects back and
proves it knows the run's secret; rank 0's connection carries every message: the job
(spec, strategy, options, the initial model, a plug-in's source), the data, each command
(epoch, gather, load, finish, local, restore, stop) and its answer. Rank 0 hands each
command to the other ranks with an MPI broadcast; the ranks run it as the ranks of a job
the user started run a fit (:class:`parrbm.harness.mpi.SPMDGroup`), and rank 0 answers
with what the workers measured and the gathered model. The other ranks' connections
carry nothing: they close when their process ends, which names the rank that died.

:class:`TCPGroup`: worker r is a process of its own (under ``ip netns exec`` on emulated
host r, through ssh on a named host), and its standard input and output carry the same
frames.

A message is a frame: 8 bytes of length and a JSON header (the op and its values, and
for each array its name, dtype, shape), then the arrays' bytes. Only numeric dtypes are
taken; nothing in a message is ever run.

The driver gone (its connection closed, however it ended): rank 0 ends the MPI job at
once (MPI_Abort), and mpiexec stops every rank on every host; a tcp worker exits when
its standard input closes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from parrbm.config import CDSpec, ModelState
from parrbm.harness.comm import CommError, PhaseStats
from parrbm.harness.frames import read_exact

#: the longest JSON header a frame may carry
MAX_HEADER = 1 << 20
#: the dtypes an array in a frame may have
DTYPES = {"float32", "float64", "int64", "int32", "uint8", "bool"}
#: how long rank 0 may take to connect back once mpiexec started
CONNECT_SECONDS = 60.0
_STATE_FIELDS = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")


@dataclass
class MPIHosts:
    """Where parrbm starts its mpi workers: ``hosts`` (one rank a host, in order; list a
    host twice for two ranks there) or a ``hostfile`` (mpiexec's ``-f``); ``mpiexec``, the
    launcher command with its own arguments (default: the mpiexec beside this Python, with
    ``-wdir /``: the ranks start in a folder every host has), which parrbm extends with
    the hosts, the rank count and the worker command; ``env``,
    variables every rank gets; ``listen``, the address of this machine that the ranks
    connect back to (default: its host name)."""

    hosts: list[str] | None = None
    hostfile: str | None = None
    mpiexec: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    listen: str | None = None
    python: str = sys.executable

    def __post_init__(self) -> None:
        if not self.hosts and not self.hostfile:
            raise ValueError("mpi: give hosts (a list of host names) or hostfile (a path)")
        if self.hosts and self.hostfile:
            raise ValueError("mpi: give hosts or hostfile, not both")
        if self.hosts is not None and not (
            isinstance(self.hosts, list)
            and self.hosts
            and all(isinstance(h, str) and re.fullmatch(r"[A-Za-z0-9_.:-]+", h) for h in self.hosts)
        ):
            raise ValueError(f"mpi.hosts: {self.hosts!r}; a list of host names (letters, digits, '.', '-', '_')")
        if self.hostfile is not None and not Path(self.hostfile).is_file():
            raise ValueError(f"mpi.hostfile: {self.hostfile!r} is not a file")
        for k, v in self.env.items():
            if not (isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and isinstance(v, str)):
                raise ValueError(f"mpi.env: {k!r}: {v!r}; names of letters, digits and '_', string values")

    def command(self, K: int, program: list[str] | None = None) -> list[str]:
        """The launcher's command for K ranks of ``program`` (arguments after this Python;
        default: the remote workers)."""
        from parrbm.harness.launch import mpiexec

        where = ["-hosts", ",".join(self.hosts)] if self.hosts else ["-f", self.hostfile]
        # the ranks start in a folder every host has: mpiexec would have them start in this
        # process's, which another host need not have (no shared file system)
        launcher = self.mpiexec or [mpiexec(), "-wdir", "/"]
        return [*launcher, *where, "-n", str(K), self.python, *(program or ["-m", "parrbm.harness.remote"])]

    def describe(self) -> dict:
        return {"hosts": self.hosts, "hostfile": self.hostfile}


# ---- frames ---------------------------------------------------------------------------------------


def send_frame(sock: socket.socket, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {k: np.ascontiguousarray(a) for k, a in (arrays or {}).items() if a is not None}
    meta = [{"name": k, "dtype": a.dtype.name, "shape": list(a.shape)} for k, a in arrays.items()]
    head = json.dumps({**header, "arrays": meta}, default=_plain).encode()
    sock.sendall(struct.pack("<Q", len(head)) + head)
    for a in arrays.values():
        if a.nbytes:
            sock.sendall(memoryview(a).cast("B"))


def _plain(o):
    """numpy scalars in a header, as JSON numbers."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} in a frame header")


def recv_frame(sock: socket.socket) -> tuple[dict, dict[str, np.ndarray]]:
    (n,) = struct.unpack("<Q", read_exact(sock, 8))
    if n > MAX_HEADER:
        raise ConnectionError(f"a frame header of {n} bytes (at most {MAX_HEADER})")
    header = json.loads(read_exact(sock, n))
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise ConnectionError("a frame without its array list")
    arrays = {}
    for m in header.pop("arrays"):
        if (
            m.get("dtype") not in DTYPES
            or not isinstance(m.get("shape"), list)
            or not all(isinstance(d, int) and d >= 0 for d in m["shape"])
        ):
            raise ConnectionError(f"a frame's array {str(m)[:80]} is not a numeric array")
        dtype = np.dtype(m["dtype"])
        size = int(np.prod(m["shape"], dtype=np.int64)) * dtype.itemsize
        arrays[str(m["name"])] = (
            np.frombuffer(read_exact(sock, size), dtype).reshape(m["shape"]).copy()
            if size
            else np.empty(m["shape"], dtype)
        )
    return header, arrays


def _state_arrays(state: ModelState, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v for k, v in state.arrays().items()}


def _state_from(arrays: dict[str, np.ndarray], prefix: str = "") -> ModelState:
    return ModelState(**{k: arrays.get(prefix + k) for k in _STATE_FIELDS})


def _proof(secret: bytes, nonce: bytes, rank: int) -> bytes:
    return hmac.new(secret, b"parrbm-remote" + nonce + struct.pack("<i", rank), hashlib.sha256).digest()


def _epoch_arrays(group, X: np.ndarray, order: np.ndarray, same_data: bool) -> dict[str, np.ndarray]:
    """The arrays of an epoch command: the order, and X unless the workers hold it (by
    content, unless the caller says it is the last epoch's)."""
    import zlib

    X = np.ascontiguousarray(X)
    arrays = {"order": np.asarray(order, np.int64)}
    fingerprint = (X.shape, X.dtype.str, zlib.crc32(memoryview(X).cast("B"))) if not same_data else None
    if group._data_fingerprint is None or (fingerprint is not None and fingerprint != group._data_fingerprint):
        arrays["X"] = X
        group._data_fingerprint = fingerprint or (X.shape, X.dtype.str, zlib.crc32(memoryview(X).cast("B")))
    return arrays


def _epoch_results(answers: list[dict]) -> list[tuple]:
    """Per worker (errors, seconds, traffic, stats, wire) from the answers to an epoch."""
    return [
        (a["errors"], a["seconds"], a["traffic"], {p: PhaseStats(**v) for p, v in a["stats"].items()}, a["wire"])
        for a in answers
    ]


def _shut_down(procs: list, tag: str | None, network=None, closables: list = ()) -> None:
    """Kill a group's processes (and whatever carries its tag), close its connections and
    pipes (``closables``: what no thread of its own closes), and take down its hosts."""
    import signal

    from parrbm.harness.launch import kill_tagged

    try:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if tag is not None:
            kill_tagged(tag)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for c in closables:
            try:
                c.close()
            except OSError:
                pass
        if network is not None:
            network.down()


class OutputTail:
    """The last ``limit`` bytes a child process writes to a pipe, read by a thread of its
    own: however much the child writes (a plug-in's prints, warnings every step), it never
    blocks on a full pipe, and the driver keeps a bounded tail for the messages that name
    a failure. The thread closes the pipe at its end and holds no reference to the group."""

    def __init__(self, stream, name: str, limit: int = 1 << 18):
        from collections import deque

        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name=name)
        self._thread.start()

    def _read(self, stream) -> None:
        with stream:
            for chunk in iter(lambda: stream.read1(65536), b""):
                with self._lock:
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    while self._size - len(self._chunks[0]) >= self.limit:
                        self._size -= len(self._chunks.popleft())

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the pipe's end (the child and whatever inherited it gone)."""
        self._thread.join(timeout)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")


# ---- the driver's side ----------------------------------------------------------------------------


class MPIGroup:
    """The K mpi worker processes of a fit: ranks of one ``mpiexec``, on this machine, one
    on each emulated host, or on the hosts of an :class:`MPIHosts`. Rank 0 connects back
    to this process (over TCP, or a Unix socket from an emulated host), and the job, the
    data, every command and its answer go over that connection.

    The commands: ``epoch``, ``gather``, ``load``, ``finish``, ``local_states``,
    ``restore_local``, ``close``. A worker that fails, dies or stops answering ends the
    group with a CommError naming it."""

    def __init__(self, runner, where: MPIHosts | None = None):
        import tempfile
        import weakref

        from parrbm.harness.launch import (
            JOB_PREFIX,
            JOB_TAG,
            _job_root,
            _mpi_command,
            _network_for,
            mpiexec,
            sweep_stale_jobs,
        )

        self.K, self.timeout, self.transport = runner.K, runner.timeout, "mpi"
        self.admin_stats = runner.admin_stats
        self.where = where
        self._data_fingerprint = None
        self.sock: socket.socket | None = None
        self.proc = None
        self._lifelines: list[socket.socket] = []
        self._connections: list[socket.socket] = []  # every rank's, closed with the group however it ends
        self._gone: list[list[int]] = []  # ranks whose connection closed, in order (those seen at once together)
        self.network, own = (None, False) if where is not None else _network_for(runner)
        # this machine's ranks: a private folder for mpiexec's temporary files (and the
        # emulated hosts' launcher and socket), removed with the group; every process of the
        # job carries its tag, which its end kills by
        self.scratch = None
        tag = None
        if where is None:
            root = _job_root()
            sweep_stale_jobs(root)
            self.scratch = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-", dir=root))
            tag = self.scratch.name
        self._procs: list[subprocess.Popen] = []  # mpiexec, once started
        # hydra's topology files of this machine's proxies (removed when a proxy exits, not
        # when the job is torn down)
        self._topology: set[str] = set()
        self.tag = tag
        # nothing of the job outlives the group: also when it is dropped unclosed
        self._finalizer = weakref.finalize(
            self,
            _shut_down_mpi,
            self._procs,
            tag,
            self.scratch,
            self.network if own else None,
            self._topology,
            self._connections,
        )
        secret = os.urandom(32)
        program = ["-m", "parrbm.harness.remote"]
        env = {
            **os.environ,
            "PARRBM_SECRET": secret.hex(),
            "PARRBM_SPMD": "1",
            "OPENBLAS_NUM_THREADS": str(runner.blas_threads),
        }
        try:
            if where is not None:
                listener = socket.create_server((where.listen or "", 0) if where.listen else ("", 0))
                driver = f"{where.listen or socket.gethostname()}:{listener.getsockname()[1]}"
                env.update(where.env)
                command = where.command(self.K)
            elif self.network is not None:
                if own:
                    self.network.up()
                # the ranks are in other network namespaces: a Unix socket reaches them
                path = self.scratch / "driver.sock"
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(str(path))
                listener.listen(16)
                driver = f"unix:{path}"
                env.update({JOB_TAG: tag, "TMPDIR": str(self.scratch), "PARRBM_RANK0_ADDRESS": self.network.address(0)})
                command = _mpi_command(self.scratch, self.K, self.network, env, [sys.executable, *program])
            else:
                listener = socket.create_server(("127.0.0.1", 0))
                driver = f"127.0.0.1:{listener.getsockname()[1]}"
                env.update({JOB_TAG: tag, "TMPDIR": str(self.scratch)})
                command = [mpiexec(), "-n", str(self.K), sys.executable, *program]
            if where is None:  # one file system: the plug-in's own imports resolve as here
                _add_import_paths(env, runner.name)
            env["PARRBM_DRIVER"] = driver
            from parrbm.strategies.registry import plugin_sources

            sources = plugin_sources(runner.name)  # a plug-in's code goes with the job, as its data do
            # the variables mpiexec hands to every rank (hydra passes its whole environment)
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.scratch or "/",
            )
            self._procs.append(self.proc)
        except BaseException:
            self.close(kill=True)
            raise
        # the threads hold no reference to the group: dropped unclosed, it is still collected
        self._tail = OutputTail(self.proc.stdout, "parrbm-mpiexec-output")
        try:
            self.sock = self._accept(listener, secret)
            listener.close()
            answer = self._ask(
                {
                    "op": "job",
                    "spec": asdict(runner.spec),
                    "strategy": runner.name,
                    "sources": sources,
                    "workers": self.K,
                    "options": asdict(runner.options),
                    "blas_threads": runner.blas_threads,
                    "timeout": runner.timeout,
                },
                _state_arrays(runner.state),
            )
            self.hosts = answer["hosts"]
            self.pids = answer["pids"]
            if self.tag is not None:
                from parrbm.harness.launch import tagged
                from parrbm.harness.mpi import hydra_topology_files

                self._topology.update(f for pid in tagged(self.tag) for f in hydra_topology_files(pid))
        except BaseException:
            listener.close()
            self.close(kill=True)
            raise

    @property
    def worker_pids(self) -> list[int]:
        """The workers' process IDs (each on its own host)."""
        return list(self.pids)

    def output(self) -> str:
        return self._tail.text()

    def _accept(self, listener: socket.socket, secret: bytes) -> socket.socket:
        """Every rank connects back and proves the run's secret: rank 0's connection carries
        the commands; the others' carry nothing, and tell by closing that their process
        ended (:func:`_watch_lifelines`)."""
        deadline = time.monotonic() + CONNECT_SECONDS
        listener.settimeout(0.2)
        lines: dict[int, socket.socket] = {}
        while len(lines) < self.K:
            if self.proc.poll() is not None:
                self._tail.join(2)
                raise CommError(
                    f"mpi: mpiexec {self._exit()} before its ranks connected back: {self.output().strip()[-1500:]}"
                )
            if time.monotonic() > deadline:
                missing = [r for r in range(self.K) if r not in lines]
                raise CommError(
                    f"mpi: ranks {missing} did not connect back to {listener.getsockname()} within "
                    f"{CONNECT_SECONDS:g} s"
                    + (
                        ""
                        if self.where is None
                        else f" (is this machine reachable from the hosts as "
                        f"{self.where.listen or socket.gethostname()!r}? mpi.listen names it)"
                    )
                )
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            self._connections.append(conn)
            conn.settimeout(5)
            try:  # a stranger that cannot prove the secret is dropped; the wait goes on
                nonce = os.urandom(16)
                conn.sendall(nonce)
                got = read_exact(conn, 4 + 32)
                (rank,) = struct.unpack("<i", got[:4])
                if (
                    0 <= rank < self.K
                    and rank not in lines
                    and hmac.compare_digest(got[4:], _proof(secret, nonce, rank))
                ):
                    conn.settimeout(None)
                    if conn.family != socket.AF_UNIX:
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    lines[rank] = conn
                    continue
            except (OSError, ConnectionError):
                pass
            conn.close()
        self._lifelines = [lines[r] for r in range(self.K)]
        threading.Thread(
            target=_watch_lifelines,
            args=(self._lifelines, self._gone, self.proc),
            daemon=True,
            name="parrbm-mpi-lifelines",
        ).start()
        return lines[0]

    def _exit(self) -> str:
        from parrbm.harness.launch import _describe_exit

        return _describe_exit(self.proc.returncode)

    @property
    def alive(self) -> bool:
        return self.sock is not None and self.proc is not None and self.proc.poll() is None

    def _ask(self, header: dict, arrays: dict | None = None) -> dict:
        return self._ask_arrays(header, arrays)[0]

    def _ask_arrays(self, header: dict, arrays: dict | None = None) -> tuple[dict, dict]:
        if self.sock is None:
            raise CommError("mpi: the workers of this fit have stopped")
        try:
            send_frame(self.sock, header, arrays)
            answer, got = recv_frame(self.sock)
        except (OSError, ValueError) as exc:
            removed = self._hosts_removed()
            why = self._failure()
            self.close(kill=True)
            raise CommError(self._removed_message() if removed else why) from exc
        except BaseException:
            self.close(kill=True)
            raise
        if answer.get("op") == "error":
            removed = self._hosts_removed()
            self.close(kill=True)
            raise CommError(self._removed_message() if removed else answer["message"])
        return answer, got

    def _hosts_removed(self) -> bool:
        return TCPGroup._hosts_removed(self)

    def _removed_message(self) -> str:
        return TCPGroup._removed_message(self)

    def _failure(self) -> str:
        """Why the connection to rank 0 ended: the rank mpiexec saw end, by its host and PID."""
        try:
            self.proc.wait(timeout=max(self.timeout, 10.0))
        except subprocess.TimeoutExpired:
            pass
        self._tail.join(2)
        out = self.output()
        m = re.search(r"PID (\d+) RUNNING AT (\S+)\s*\n=\s+(?:EXIT CODE|KILLED BY SIGNAL): (\d+)", out)
        first = None
        if self._gone and len(getattr(self, "pids", [])) == self.K:
            first = _first_closed(self._gone, self.pids, int(m.group(1)) if m else None)
            if isinstance(first, list):
                return (
                    f"mpi: workers {', '.join(map(str, first))} (PIDs "
                    f"{', '.join(str(self.pids[r]) for r in first)}) ended without a word, their "
                    f"connections closed together (one died, the others were stopped); mpiexec stopped "
                    f"the other workers"
                )
        if first is not None and (m is None or int(m.group(1)) != self.pids[first]):
            # mpiexec saw another rank end first (one it stopped): the connections' order names
            # the one that died
            host = self.hosts[first]
            return (
                f"mpi: worker {first} (on {host}, PID {self.pids[first]}) ended without a word (its "
                f"connection closed first); mpiexec stopped the other workers"
            )
        if m:
            pid, host, code = int(m.group(1)), m.group(2), int(m.group(3))
            rank = next((r for r, p in enumerate(getattr(self, "pids", [])) if p == pid), None)
            if (
                rank is None and self.where is not None and self.where.hosts
            ):  # before the ranks said who they are: by placement
                # (hydra places rank r on hosts[r % len(hosts)], a slot a host)
                placed = [r for r in range(self.K) if self.where.hosts[r % len(self.where.hosts)] == host]
                rank = placed[0] if len(placed) == 1 else None
            from parrbm.harness.launch import _describe_exit

            who = f"worker {rank} (on {host}, PID {pid})" if rank is not None else f"a rank on {host} (PID {pid})"
            return f"mpi: {who} {_describe_exit(-code if code > 0 else code)}; mpiexec stopped the other workers"
        said = re.findall(r"parrbm: .*", out)
        if said:
            return f"mpi: {said[-1][len('parrbm: ') :]}"
        return f"mpi: the connection to worker 0 closed; mpiexec {self._exit() if self.proc.poll() is not None else 'still running'}: {out.strip()[-800:]}"

    # ---- the commands -----------------------------------------------------------------------

    def _answers(self, header: dict) -> list[dict]:
        from parrbm.harness.launch import add_admin_stats

        add_admin_stats(self.admin_stats, header["answers"])
        return header["answers"]

    def epoch(self, spec, X: np.ndarray, order: np.ndarray, first_step: int, *, same_data: bool = False):
        arrays = _epoch_arrays(self, X, order, same_data)
        header, got = self._ask_arrays({"op": "epoch", "spec": asdict(spec), "first_step": int(first_step)}, arrays)
        answers = self._answers(header)
        return _epoch_results(answers), answers, _state_from(got)

    def gather(self) -> ModelState:
        return _state_from(self._ask_arrays({"op": "gather"})[1])

    def load(self, state: ModelState) -> None:
        self._ask({"op": "load"}, _state_arrays(state))

    def finish(self) -> list[dict]:
        return self._answers(self._ask({"op": "finish"}))

    def local_states(self):
        header, got = self._ask_arrays({"op": "local"})
        return [
            (c, {k: got[f"{r}/{k}"] for k in names})
            for r, (c, names) in enumerate(zip(header["counters"], header["names"]))
        ]

    def restore_local(self, states) -> None:
        arrays = {f"{r}/{k}": a for r, (_, local) in enumerate(states) for k, a in local.items()}
        self._ask(
            {"op": "restore", "counters": [c for c, _ in states], "names": [sorted(a) for _, a in states]}, arrays
        )

    def close(self, kill: bool = False) -> None:
        """Stop the workers (asked, then killed if they do not stop)."""
        try:
            if self.sock is not None:
                if not kill:
                    try:
                        send_frame(self.sock, {"op": "stop"})
                        self.proc.wait(timeout=min(self.timeout, 10.0))
                    except (OSError, subprocess.TimeoutExpired):
                        pass
                for conn in {self.sock, *self._lifelines}:
                    try:
                        conn.close()
                    except OSError:
                        pass
                self.sock = None
            if self.proc is not None and self.proc.poll() is None:
                try:  # rank 0 sees its connection close and ends the job; mpiexec then stops
                    self.proc.wait(timeout=5 if self.where is not None or not kill else 0.5)
                except subprocess.TimeoutExpired:
                    pass
        finally:  # also when Ctrl-C lands while they stop
            self._finalizer()


def _add_import_paths(env: dict, strategy) -> None:
    """Workers of this machine: the folders a plug-in's module imports from, on their path."""
    from parrbm.strategies.registry import import_paths

    extra = import_paths(strategy)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, *filter(None, [env.get("PYTHONPATH")])])


def _first_closed(gone: list[list[int]], pids: list[int], mpiexec_pid: int | None) -> "int | list[int] | None":
    """The rank whose connection closed first (``gone``: :func:`_watch_lifelines`'s); of
    several seen at once, the one mpiexec named (``mpiexec_pid``), else None if it named
    one of them, else all of them (no order can be told)."""
    batch = gone[0]
    if len(batch) == 1:
        return batch[0]
    named = [r for r in batch if pids[r] == mpiexec_pid]
    return None if named else list(batch)


def _watch_lifelines(lines: list[socket.socket], gone: list[list[int]], proc: subprocess.Popen) -> None:
    """The order in which the ranks' connections close (into ``gone``, one list of ranks for
    the closes seen at once): a rank's closes the moment its process ends, before mpiexec
    learns of it and stops the others, so the first is the rank that died (mpiexec names
    whichever it saw end first). On a busy machine this thread may wake only after
    several have closed: then they are one entry, in no order."""
    import select

    poll = select.poll()
    by_fd = {}
    for r, conn in enumerate(lines):
        poll.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        by_fd[conn.fileno()] = r
    left = set(by_fd)
    while left and proc.poll() is None:
        try:
            events = poll.poll(500)
        except (OSError, ValueError):
            return
        batch = []
        for fd, _ in sorted(events, key=lambda e: by_fd.get(e[0], 0)):
            if fd in left:
                left.discard(fd)
                poll.unregister(fd)
                batch.append(by_fd[fd])
        if batch:
            gone.append(batch)


def _shut_down_mpi(
    procs: list,
    tag: str | None,
    scratch: Path | None,
    network=None,
    topology: set[str] = frozenset(),
    connections: list = (),
) -> None:
    """:func:`_shut_down` for an mpi group (mpiexec's process group, whatever carries the
    job's tag), then its folder and hydra's topology files."""
    import shutil

    try:
        _shut_down(procs, tag, network, connections)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        for f in topology:
            try:
                os.unlink(f)
            except OSError:
                pass


# ---- the ranks' side ------------------------------------------------------------------------------


def _connect(rank: int) -> socket.socket:
    """This rank's connection to the driver: rank 0's carries the commands; every rank's
    closes when its process ends, which tells the driver who ended first."""
    driver = os.environ["PARRBM_DRIVER"]
    secret = bytes.fromhex(os.environ.pop("PARRBM_SECRET"))
    if driver.startswith("unix:"):  # the driver of emulated hosts, in another network namespace
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_SECONDS)
        sock.connect(driver[len("unix:") :])
    else:
        host, _, port = driver.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    nonce = read_exact(sock, 16)
    sock.sendall(struct.pack("<i", rank) + _proof(secret, nonce, rank))
    sock.settimeout(None)
    return sock


def serve() -> int:
    """Every rank: take the driver's commands (rank 0 over its connection, the others by
    broadcast) and run them on the job's ranks until ``stop``."""
    from mpi4py import MPI

    from parrbm.harness.world import spmd_world

    spmd_world()  # hydra's topology file is removed after the job however it ends
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    try:
        line = _connect(rank)  # held open while this rank lives
    except (OSError, KeyError, ValueError) as exc:
        sys.stderr.write(
            f"parrbm: rank {rank} could not reach the driver at {os.environ.get('PARRBM_DRIVER')}: {exc}\n"
        )
        sys.stderr.flush()
        world.Abort(1)
    sock = line if rank == 0 else None
    runner = None
    if sock is not None:  # the job's watch names a stopped worker to the driver before it ends the job
        from parrbm.harness.mpi import Watch

        Watch.on_end.append(lambda message: send_frame(sock, {"op": "error", "message": message}))
    while True:
        message = None
        if rank == 0:
            try:
                message = recv_frame(sock)
            except (OSError, ValueError):
                world.Abort(1)  # the driver is gone: end the job on every host at once
        message = world.bcast(message, root=0)
        header, arrays = message
        op = header["op"]
        if op == "stop":
            return 0
        try:
            answer, out = _handle(op, header, arrays, runner, world)
        except BaseException as exc:  # noqa: BLE001 - the driver is told, then the job ends
            if rank == 0:
                send_frame(sock, {"op": "error", "message": f"worker {rank} failed: {type(exc).__name__}: {exc}"})
            world.Abort(1)
        if op == "job":
            runner = answer.pop("_runner")
        if rank == 0:
            send_frame(sock, answer, out)


def _handle(op: str, header: dict, arrays: dict, runner, world) -> tuple[dict, dict]:
    """One command on every rank; rank 0's (answer, arrays) go to the driver."""
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies.base import StrategyOptions

    if op == "job":
        from parrbm.strategies.registry import install_sources

        install_sources(header.get("sources") or [])
        from parrbm.harness.runner import worker_class

        worker_class(header["strategy"], load=True)  # the driver named it: a plug-in is loaded here
        spec = CDSpec(**header["spec"])
        r = ParallelRunner(
            spec,
            _state_from(arrays),
            header["strategy"],
            header["workers"],
            "mpi",
            StrategyOptions(**header["options"]),
            blas_threads=header["blas_threads"],
            timeout=header["timeout"],
        )
        who = world.allgather((socket.gethostname(), os.getpid()))[: header["workers"]]
        return {"op": "ok", "hosts": [h for h, _ in who], "pids": [p for _, p in who], "_runner": r}, {}
    if op == "epoch":
        spec = CDSpec(**header["spec"])
        if spec != runner.spec:
            runner.set_learning_rate(spec.learning_rate)
        if "X" in arrays:
            runner._remote_X = arrays["X"]
        X, order = runner._remote_X, arrays["order"]
        m = runner.spec.batch_size
        batches = [order[s : s + m] for s in range(0, len(order), m)]
        results, extra, _ = runner._epoch(X, order, batches, header["first_step"])
        model = runner.gather_model()
        runner.state = model
        answers = [
            {
                "errors": [float(e) for e in res[0]],
                "seconds": [float(t) for t in res[1]],
                "traffic": [int(t) for t in res[2]],
                "stats": {p: asdict(s) for p, s in res[3].items()},
                "wire": [int(w) for w in res[4]],
                **e,
            }
            for res, e in zip(results, extra)
        ]
        return {"op": "ok", "answers": answers}, _state_arrays(model)
    if op == "gather":
        return {"op": "ok"}, _state_arrays(runner.gather_model())
    if op == "load":
        runner.load_model(_state_from(arrays))
        return {"op": "ok"}, {}
    if op == "finish":
        from parrbm.harness.comm import Comm

        def work(comm: Comm):
            runner._on(comm).finish()
            return comm.stats

        ranks = runner._where  # the job's ranks (JobRanks)
        stats, extras = ranks.group.call(runner.workers, work)
        runner.state = runner.gather_model()
        ranks.local = ranks.group.to_root(runner.workers, lambda w: w.local_state())
        answers = [{"stats": {p: asdict(s) for p, s in st.items()}, **e} for st, e in zip(stats, extras)]
        return {"op": "ok", "answers": answers}, {}
    if op == "local":
        states = runner.local_states() if world.Get_rank() == 0 else []
        out = {f"{r}/{k}": a for r, (_, local) in enumerate(states) for k, a in local.items()}
        return {"op": "ok", "counters": [c for c, _ in states], "names": [sorted(a) for _, a in states]}, out
    if op == "restore":
        states = [
            (c, {k: arrays[f"{r}/{k}"] for k in names})
            for r, (c, names) in enumerate(zip(header["counters"], header["names"]))
        ]
        runner.restore_local(states)
        return {"op": "ok"}, {}
    raise RuntimeError(f"unknown command {op!r}")


# ---- tcp workers on other hosts: the control channel is each worker's ssh session ------------------


class _Pipe:
    """A pair of binary pipes with a socket's sendall / recv_into (for the frames)."""

    def __init__(self, read, write):
        self.read, self.write = read, write

    def sendall(self, data) -> None:
        self.write.write(data)
        self.write.flush()

    def recv_into(self, view, n: int, flags: int = 0) -> int:
        return self.read.readinto(view[:n]) or 0


class TCPGroup:
    """The K tcp worker processes of a fit, behind the interface of :class:`MPIGroup`:
    worker r starts on this machine, on emulated host r, or on ``hosts[r % len]`` through
    the launcher (ssh); its standard input and output carry the frames of the job, the
    data, each command and its answer, as rank 0's connection does for the mpi workers.
    The workers connect to one another directly (the tcp transport). A worker whose
    standard input closes (the driver gone, however) exits at once."""

    def __init__(self, runner):
        import shlex

        from parrbm.harness.launch import JOB_TAG, _network_for

        where = runner.tcp
        self.K, self.timeout, self.transport = runner.K, runner.timeout, "tcp"
        self.admin_stats = runner.admin_stats
        self.hosts = [where.host_of(r) for r in range(self.K)] if where.hosts else None
        self._data_fingerprint = None
        self.procs: list[subprocess.Popen] = []
        self.pipes: list[_Pipe] = []
        self.stderr_tails: list[OutputTail] = []
        self._streams: list = []  # the workers' standard input and output, closed with the group however it ends
        # the workers of this machine and its emulated hosts carry the job's tag: its end
        # kills by it, whatever they started
        self.tag = f"parrbm-tcp-{os.getpid()}-{os.urandom(6).hex()}"
        self.network, self.own_network = _network_for(runner)
        import weakref

        # no worker outlives the group, nor its emulated hosts: also when it is dropped unclosed
        self._finalizer = weakref.finalize(
            self, _shut_down, self.procs, self.tag, self.network if self.own_network else None, self._streams
        )
        secret = os.urandom(32).hex()
        program = ["-m", "parrbm.harness.remote", "--tcp"]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(int(runner.blas_threads)), JOB_TAG: self.tag}
        if not self.hosts:
            _add_import_paths(env, runner.name)
        try:
            if self.own_network:
                self.network.up()
            for r in range(self.K):
                args = [*program, str(r), str(self.K)]
                if self.hosts:
                    remote = " ".join(
                        [
                            "cd / &&",
                            f"OPENBLAS_NUM_THREADS={int(runner.blas_threads)}",
                            "exec",
                            shlex.quote(where.python),
                            *args,
                        ]
                    )
                    command = [*where.launcher, self.hosts[r], remote]
                elif self.network is not None:
                    command = [*self.network.exec_prefix(r), sys.executable, *args]
                else:
                    command = [sys.executable, *args]
                p = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    env=env,
                    cwd="/",
                )
                self.procs.append(p)
                self._streams += [p.stdin, p.stdout]
                self.stderr_tails.append(OutputTail(p.stderr, f"parrbm-tcp-stderr-{r}"))
                self.pipes.append(_Pipe(p.stdout, p.stdin))
            from parrbm.strategies.registry import plugin_sources

            job = {
                "op": "job",
                "secret": secret,
                "spec": asdict(runner.spec),
                "sources": plugin_sources(runner.name),
                "strategy": runner.name,
                "workers": self.K,
                "options": asdict(runner.options),
                "blas_threads": runner.blas_threads,
                "timeout": runner.timeout,
            }
            state = _state_arrays(runner.state)
            ports = [
                a["port"]
                for a, _ in self._all(
                    [({**job, "listen": self._listen(r, where)}, state) for r in range(self.K)], started=True
                )
            ]
            self._all({"op": "peers", "addresses": [[self._address(r, where), ports[r]] for r in range(self.K)]})
        except BaseException:
            self.close(kill=True)
            raise

    def _listen(self, r: int, where) -> str:
        """Where worker r listens for its peers."""
        if self.network is not None:
            return self.network.address(r)
        return where.listen

    def _address(self, r: int, where) -> str:
        """Where its peers reach worker r."""
        if self.network is not None:
            return self.network.address(r)
        return self.hosts[r] if self.hosts else where.listen

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    @property
    def worker_pids(self) -> list[int]:
        """The workers' process IDs (of this machine's launcher: ssh's for other hosts)."""
        return [p.pid for p in self.procs]

    def _all(self, header, arrays: dict | None = None, *, started: bool = False) -> list[tuple[dict, dict]]:
        """``header`` (and ``arrays``) to every worker, or a list of K (header, arrays), one
        a worker; their answers in rank order. A worker that fails, dies or stops
        answering ends the group with a CommError naming it."""
        import queue

        frames = header if isinstance(header, list) else [(header, arrays)] * self.K
        answers: queue.Queue = queue.Queue()

        def exchange(r: int) -> None:
            try:
                send_frame(self.pipes[r], *frames[r])
                answers.put((r, *recv_frame(self.pipes[r])))
            except (OSError, ValueError, ConnectionError) as exc:
                answers.put((r, {"op": "gone", "why": str(exc)}, {}))
            except BaseException as exc:  # noqa: BLE001 - this side failed: said at once, not waited out
                answers.put(
                    (
                        r,
                        {
                            "op": "error",
                            "message": f"tcp: the driver failed talking to worker {r}: {type(exc).__name__}: {exc}",
                        },
                        {},
                    )
                )

        for r in range(self.K):
            threading.Thread(target=exchange, args=(r,), daemon=True).start()
        got: dict[int, tuple[dict, dict]] = {}
        # no deadline on a command (an epoch takes what it takes: the workers' own
        # collectives time out on a silent peer), but on the first answer of a worker
        # starting on another host (an interpreter's start), and, once one has failed, a
        # short grace for the others to say why
        deadline = time.monotonic() + self.timeout + STARTUP_SECONDS if started else None
        try:
            while len(got) < self.K:
                try:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    r, head, arr = answers.get(timeout=wait)
                except queue.Empty:
                    break
                got[r] = (head, arr)
                if head.get("op") != "ok" and (deadline is None or started):  # the others get a grace to say why
                    from parrbm.harness.launch import GRACE_SECONDS

                    started = False
                    deadline = time.monotonic() + min(self.timeout, GRACE_SECONDS)
        except BaseException:  # Ctrl-C or SIGTERM: no worker outlives it
            self.close(kill=True)
            raise
        if len(got) == self.K and all(h.get("op") == "ok" for h, _ in got.values()):
            return [got[r] for r in range(self.K)]
        stopped = self._stopped([r for r in range(self.K) if r not in got])
        removed = self._hosts_removed()
        self._stop(kill=True)
        why = self._removed_message() if removed else self._diagnose(got, stopped)
        self.close(kill=True)
        raise CommError(why)

    def _stopped(self, ranks: list[int]) -> list[int]:
        """Of ``ranks``, the workers of this machine (or its emulated hosts) that the kernel
        shows stopped (state T: SIGSTOP, a debugger)."""
        if self.hosts:
            return []
        from parrbm.harness.mpi import process_stopped

        return [r for r in ranks if process_stopped(self.procs[r].pid)]

    def _hosts_removed(self) -> bool:
        """The emulated hosts of this run were removed under it (parrbm network cleanup --all)."""
        from parrbm.harness.network import namespaces

        return self.network is not None and not set(self.network.namespaces()) <= set(namespaces())

    def _removed_message(self) -> str:
        return (
            f"{self.transport}: the emulated hosts of this run were removed while it was going "
            f"('parrbm network cleanup --all' stops the runs it removes the hosts of)"
        )

    def _diagnose(self, got: dict[int, tuple[dict, dict]], stopped: list[int]) -> str:
        from collections import Counter

        from parrbm.harness.launch import _describe_exit

        reports = {r: h["message"] for r, (h, _) in got.items() if h.get("op") == "error"}
        blamed = Counter(h["blame"] for h, _ in got.values() if h.get("op") == "error" and h.get("blame") is not None)
        codes = {r: p.poll() for r, p in enumerate(self.procs)}
        silent = [r for r in range(self.K) if r not in got]  # never answered: killed by us
        dead = [r for r, (h, _) in sorted(got.items()) if h.get("op") == "gone"]
        where = lambda r: f" (on {self.hosts[r]})" if self.hosts else ""  # noqa: E731
        seen = next(iter(reports.values()), "")
        # the cause, first found: a worker the kernel shows stopped; one that died without a
        # word (not a peer slow to stop after it, whom another peer may blame); one its peers
        # blame that never answered
        unresponsive = [r for r in stopped if r in silent] or (
            [] if dead else [r for r, _ in blamed.most_common() if r in silent]
        )
        if unresponsive:
            r = unresponsive[0]
            seen = next((m for j, m in sorted(reports.items()) if j != r), "")
            return (
                f"worker {r}{where(r)} did not respond within {self.timeout:g} s (stopped or hung"
                + ("; the kernel shows it stopped, as by SIGSTOP" if r in stopped else "")
                + ")"
                + (f"; its peers saw: {seen}" if seen else "")
            )
        if dead:
            r = dead[0]
            self.stderr_tails[r].join(2)
            tail = self.stderr_tails[r].text().strip()
            code = codes[r]
            return (
                f"worker {r}{where(r)} "
                + (_describe_exit(code) if code is not None else "closed its connection")
                + (f"; its peers saw: {seen}" if seen else "")
                + (f"\n--- worker {r} stderr ---\n" + "\n".join(tail.splitlines()[-8:]) if tail else "")
            )
        if reports:
            return min(reports.items())[1]
        if silent:
            return f"worker {silent[0]}{where(silent[0])} did not respond within {self.timeout:g} s (stopped or hung)"
        return "tcp: the workers stopped without a word"

    # ---- the commands (the interface of MPIGroup) ---------------------------------------------

    def _answers(self, got: list[tuple[dict, dict]]) -> list[dict]:
        from parrbm.harness.launch import add_admin_stats

        out = [h for h, _ in got]
        add_admin_stats(self.admin_stats, out)
        return out

    def epoch(self, spec, X: np.ndarray, order: np.ndarray, first_step: int, *, same_data: bool = False):
        arrays = _epoch_arrays(self, X, order, same_data)
        got = self._all({"op": "epoch", "spec": asdict(spec), "first_step": int(first_step), "gather": True}, arrays)
        answers = self._answers(got)
        return _epoch_results(answers), answers, _state_from(got[0][1])

    def gather(self) -> ModelState:
        return _state_from(self._all({"op": "gather", "gather": True})[0][1])

    def load(self, state: ModelState) -> None:
        self._all({"op": "load"}, _state_arrays(state))

    def finish(self) -> list[dict]:
        return self._answers(self._all({"op": "finish"}))

    def local_states(self):
        return [(h["counters"], dict(arr)) for h, arr in self._all({"op": "local"})]

    def restore_local(self, states) -> None:
        self._all([({"op": "restore", "counters": c}, a) for c, a in states])

    def close(self, kill: bool = False) -> None:
        """Stop the workers (asked, then killed if they do not stop), and take down the
        emulated hosts this group set up."""
        try:
            self._stop(kill)
        finally:  # also when Ctrl-C lands while they stop (the pipes close with the finalizer)
            self._finalizer()
            self.procs, self.pipes = [], []

    def _stop(self, kill: bool) -> None:
        import signal

        if not kill:
            for pipe in self.pipes:
                try:
                    send_frame(pipe, {"op": "stop"})
                except OSError:
                    pass
        for p in self.procs:
            try:
                if p.stdin:
                    p.stdin.close()  # the worker's standard input closes: it exits at once
            except OSError:
                pass
        deadline = time.monotonic() + (min(self.timeout, 10.0) if not kill else 2.0)
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                p.wait()


#: what a tcp worker's first answer may take beyond the timeout (an interpreter starts there)
STARTUP_SECONDS = 30.0


def serve_tcp(rank: int, size: int) -> int:
    """A tcp worker on another host: frames on standard input, answers on standard output;
    standard input closed (the driver gone) ends the process at once."""
    import queue

    from parrbm import _core
    from parrbm.harness.comm import Comm
    from parrbm.harness.runner import train_on, worker_class
    from parrbm.harness.tcp import TCPTransport
    from parrbm.strategies.base import StrategyOptions

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    pipe = _Pipe(sys.stdin.buffer, out)
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            while True:
                inbox.put(recv_frame(pipe))
        except (OSError, ValueError, ConnectionError):
            os._exit(1)  # the driver is gone: nothing of this worker outlives it

    threading.Thread(target=read, daemon=True, name="parrbm-control").start()
    transport = None
    try:
        job, state = inbox.get()
        _core.set_blas_threads(int(job["blas_threads"]))
        listener = socket.create_server((job["listen"], 0))
        send_frame(pipe, {"op": "ok", "port": listener.getsockname()[1]})
        peers, _ = inbox.get()
        transport = TCPTransport(
            rank,
            size,
            bytes.fromhex(job["secret"]),
            listener,
            [tuple(a) for a in peers["addresses"]],
            timeout=job["timeout"],
        )
        comm = Comm(transport)
        from parrbm.strategies.registry import install_sources

        install_sources(job.get("sources") or [])
        cls = worker_class(job["strategy"], load=True)
        options = StrategyOptions(**job["options"])

        from parrbm.harness.faults import fault_hook, inject_fault

        fault = fault_hook(rank, transport)  # PARRBM_FAULT: the harness's own tests

        def build(s: ModelState):
            w = cls(CDSpec(**job["spec"]), s, rank, size, options)
            w.comm = comm
            inject_fault(w, fault)
            return w

        worker = build(_state_from(state))
        send_frame(pipe, {"op": "ok"})
        X = None
        while True:
            header, arrays = inbox.get()
            op = header["op"]
            if op == "stop":
                return 0
            comm.reset_stats()
            seen, syncs = len(worker.divergence), worker.syncs
            answer: dict = {"op": "ok"}
            if op == "epoch":
                spec = CDSpec(**header["spec"])
                if spec != worker.spec:
                    worker.spec = spec
                if "X" in arrays:
                    X = arrays["X"]
                order = arrays["order"]
                m = worker.spec.batch_size
                batches = [order[s : s + m] for s in range(0, len(order), m)]
                errors, seconds, traffic, _, wire = train_on(worker, comm, X, batches, header["first_step"])
                answer.update(
                    {
                        "errors": [float(e) for e in errors],
                        "seconds": [float(t) for t in seconds],
                        "traffic": [int(t) for t in traffic],
                        "wire": [int(w) for w in wire],
                    }
                )
            elif op == "load":
                worker = build(_state_from(arrays))
            elif op == "finish":
                worker.finish()
            elif op == "local":
                counters, local = worker.local_state()
                answer["counters"] = counters
            elif op == "restore":
                worker.restore_local(header["counters"], arrays)
            elif op != "gather":
                raise RuntimeError(f"unknown command {op!r}")
            import resource

            answer.update(
                {
                    "stats": {p: asdict(s) for p, s in comm.stats.items()},
                    "divergence": worker.divergence[seen:],
                    "syncs": worker.syncs - syncs,
                    "memory_bytes": worker.memory_bytes(),
                    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                }
            )
            out_arrays = local if op == "local" else {}
            if header.get("gather"):
                before = set(comm.stats)
                model = worker.gathered_model()
                if rank == 0:
                    out_arrays = _state_arrays(model)
                answer["admin_stats"] = {p: asdict(s) for p, s in comm.stats.items() if p not in before}
            send_frame(pipe, answer, out_arrays)
    except BaseException as exc:  # noqa: BLE001 - the driver is told, then this worker ends
        msg = (
            str(exc) if exc.__class__.__name__ == "CommError" else f"worker {rank} failed: {type(exc).__name__}: {exc}"
        )
        try:
            send_frame(pipe, {"op": "error", "message": msg, "blame": getattr(exc, "peer", None)})
        except OSError:
            pass
        return 1
    finally:
        if transport is not None and hasattr(transport, "close"):
            transport.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tcp"]:
        sys.exit(serve_tcp(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit(serve())
