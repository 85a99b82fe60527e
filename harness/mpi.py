"""The mpi transport: mpi4py buffer collectives.

An allgather is an Allgather of the block sizes (where a worker waits for its peers) and
an Allgatherv of the bytes; any other exchange an Alltoall of the sizes and an Alltoallv.
Reduce-scatter deliberately is an Alltoallv too, not MPI_Reduce_scatter: MPI leaves the
order of a sum open, and the Comm layer adds the contributions in rank order so that
every transport gives the same bits."""

from __future__ import annotations

import os
import struct
import time

import numpy as np

from parrbm.harness.comm import Transport


class MPITransport(Transport):
    def __init__(self, comm=None, beat: "Beat | None" = None):
        from mpi4py import MPI

        self.mpi = MPI
        self.world = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        # MPI collectives wait forever for a hung peer: each worker records which
        # collective it has reached, so the job's watch can name the one that stopped.
        self.calls = 0  # collectives entered
        self.done = 0  # collectives left
        self._shared_beat = beat  # an MPI job's fit: read by the job's watch (see Watch)

    def _heartbeat(self) -> None:
        self.calls += 1
        if self._shared_beat is not None:
            self._shared_beat.entered(self.phase)

    def _left(self) -> None:
        self.done = self.calls
        if self._shared_beat is not None:
            self._shared_beat.left()

    def exchange(self, sends, receive) -> float:
        self._heartbeat()
        K = self.size
        views = [
            None if (j == self.rank or sends[j] is None) else np.ascontiguousarray(sends[j]).reshape(-1).view(np.uint8)
            for j in range(K)
        ]
        send_counts = np.array([0 if v is None else v.size for v in views], np.int64)
        recv_counts = np.empty(K, np.int64)
        t0 = time.perf_counter()
        self.world.Alltoall(send_counts, recv_counts)
        wait = time.perf_counter() - t0
        send_buf = np.concatenate([v for v in views if v is not None]) if send_counts.sum() else np.empty(0, np.uint8)
        recv_buf = np.empty(int(recv_counts.sum()), np.uint8)
        sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
        as_ints = lambda a: [int(x) for x in a]  # noqa: E731
        self.world.Alltoallv(
            [send_buf, (as_ints(send_counts), as_ints(sdispl)), self.mpi.BYTE],
            [recv_buf, (as_ints(recv_counts), as_ints(rdispl)), self.mpi.BYTE],
        )
        self._left()
        for j in range(K):
            if j != self.rank and recv_counts[j]:
                receive(j, recv_buf[rdispl[j] : rdispl[j] + recv_counts[j]])
        return wait

    def share(self, payload, receive) -> float:
        self._heartbeat()
        K = self.size
        mine = payload.reshape(-1).view(np.uint8)
        counts = np.empty(K, np.int64)
        t0 = time.perf_counter()
        self.world.Allgather(np.array([mine.size], np.int64), counts)
        wait = time.perf_counter() - t0
        displ = np.concatenate([[0], np.cumsum(counts)[:-1]])
        recv_buf = np.empty(int(counts.sum()), np.uint8)
        self.world.Allgatherv(
            [mine, self.mpi.BYTE], [recv_buf, ([int(c) for c in counts], [int(d) for d in displ]), self.mpi.BYTE]
        )
        self._left()
        for j in range(K):
            if j != self.rank and counts[j]:
                receive(j, recv_buf[displ[j] : displ[j] + counts[j]])
        return wait

    def barrier(self) -> float:
        self._heartbeat()
        t0 = time.perf_counter()
        self.world.Barrier()
        self._left()
        return time.perf_counter() - t0


def process_stopped(pid: int) -> bool:
    """The kernel shows process ``pid`` of this machine stopped (SIGSTOP, a debugger)."""
    from pathlib import Path

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] in "Tt"


def hung_message(beats: dict, stopped: list[int], K: int, timeout: float, silent: list[int] = ()) -> str:
    """Which rank stopped the collectives: one the kernel shows stopped; else one whose
    watch has gone silent (``silent``: its process stopped or gone, on any host); else the
    one that entered fewest collectives; among equals, one outside any collective while
    its peers wait inside one."""
    entered = {r: beats.get(r, (0, 0, ""))[0] for r in range(K)}
    left = {r: beats.get(r, (0, 0, ""))[1] for r in range(K)}
    if stopped:
        lag = stopped
    elif silent:
        lag = sorted(silent)
    else:
        low = min(entered.values())
        lag = [r for r in range(K) if entered[r] == low]
        outside = [r for r in lag if left[r] >= entered[r]]
        if outside and len(outside) < len(lag):
            lag = outside
    who = f"worker {lag[0]}" if len(lag) == 1 else f"one of workers {lag}"
    r = lag[0]
    where = (
        f"last in phase '{beats[r][2]}', collective #{entered[r]}"
        if r in beats
        else "it never reached its first collective"
    )
    return (
        f"{who} did not respond within {timeout:g} s (stopped or hung"
        + ("; the kernel shows it stopped, as by SIGSTOP" if stopped else "")
        + "): "
        + (f"its watch silent for over {Watch.SILENT:g} s, " if silent and not stopped else "")
        + f"{where}; "
        f"its peers reached #{max(entered.values())}; the run was stopped"
    )


class Beat:
    """This rank's collectives in the current fit: entered, left, and the phase of the
    last one entered (updated by its MPITransport, read by the job's :class:`Watch`)."""

    def __init__(self) -> None:
        self.calls, self.done, self.phase = 0, 0, ""

    def entered(self, phase: str) -> None:
        self.calls += 1
        self.phase = phase

    def left(self) -> None:
        self.done = self.calls


class Watch:
    """An MPI job's own watch for hung ranks (MPI collectives wait forever).

    Every worker rank sends its :class:`Beat` to rank 0 whenever it changes (a thread, at
    most four times a second, over a TCP connection of the watch's own: MPI's progress
    cannot be counted on from a second thread while the first waits in a collective);
    rank 0 keeps the books, and when no worker has entered or left a collective for
    ``timeout`` seconds while one waits inside one, it names the rank that stopped the
    collectives (:func:`hung_message`), prints it and ends the job (MPI_Abort): on every
    host, within the timeout. A worker that has waited in one collective for ``timeout``
    + :attr:`GRACE` seconds without the job ending (rank 0 itself stopped) ends it too,
    naming rank 0. One watch a process, for every fit of the job; a new fit (a new
    generation) starts the books again."""

    PERIOD = 0.25
    GRACE = 10.0
    #: a worker whose watch has sent nothing for this long is stopped or gone: its watch
    #: sends its beat every PERIOD, whether or not it changed, while its process runs
    SILENT = 1.5
    #: a beat on the wire: rank, generation, collectives entered and left, phase
    RECORD = struct.Struct("<iqqq48s")
    _instance: "Watch | None" = None

    @classmethod
    def of(cls, world) -> "Watch":
        """The process's watch (made collectively, on the first fit of the job)."""
        if cls._instance is None:
            cls._instance = cls(world)
        return cls._instance

    def __init__(self, world):
        import atexit
        import socket
        import threading

        self.world = world
        self.rank = world.Get_rank()
        self.beat = Beat()
        self.generation, self.K, self.timeout = 0, 0, 60.0
        self._ahead = False  # a generation started before its fit's group (a comparison's point)
        self._stop = threading.Event()
        self.sock = None
        listener = None
        if self.rank == 0:
            listener = socket.create_server(("", 0))
            # PARRBM_RANK0_ADDRESS: where the others reach rank 0 when its host name does not
            # say (parrbm's ranks on emulated hosts of one machine)
            where = (
                os.environ.get("PARRBM_RANK0_ADDRESS") or socket.gethostname(),
                listener.getsockname()[1],
                os.urandom(16),
            )
        else:
            where = None
        host, port, token = world.bcast(where, root=0)
        #: each rank's host and PID: a stopped rank on rank 0's host is named as such
        self.placement = world.allgather((socket.gethostname(), os.getpid()))
        if self.rank == 0:
            target = self._keep_books
            self._listener, self._token = listener, token
        else:
            target = self._send_beats
            try:
                self.sock = socket.create_connection((host, port), timeout=10)
                self.sock.sendall(token)
                self.sock.settimeout(1.0)
            except OSError as exc:
                import sys

                sys.stderr.write(
                    f"parrbm: worker {self.rank} cannot reach worker 0's watch at {host}:{port} "
                    f"({exc}): a hung worker will not be named\n"
                )
                self.sock = None
        self._thread = threading.Thread(target=target, name="parrbm-mpi-watch", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def start_fit(self, K: int, timeout: float, *, ahead: bool = False) -> Beat:
        """A new fit of K workers: books cleared (every rank calls it, at the same point).
        ``ahead``: started for what comes before the fit's group (a comparison's point
        sends its data first); the group then goes on in it."""
        self.K, self.timeout = K, timeout
        if self._ahead and not ahead:
            self._ahead = False
            return self.beat
        self.beat = Beat()
        self.generation += 1
        self._ahead = ahead
        return self.beat

    def books(self, collective, *args):
        """One of the world's collectives outside the workers' own, counted in this rank's
        beat: a rank that never joins it is named as well."""
        self.beat.entered("books")
        try:
            return collective(*args)
        finally:
            self.beat.left()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _send_beats(self) -> None:
        inside_since, inside_at = None, None
        while not self._stop.wait(self.PERIOD):
            b, gen = self.beat, self.generation
            # every period, changed or not: rank 0 tells a rank that waits from one that
            # stopped (SIGSTOP stops this thread too) by its silence
            if self.sock is not None and self.rank < self.K:
                try:
                    self.sock.sendall(self.RECORD.pack(self.rank, gen, b.calls, b.done, b.phase.encode()[:48]))
                except OSError:  # rank 0 stopped (its buffers full) or gone: the wait below decides
                    pass
            # rank 0 itself stopped: nobody ends the job but the ranks that wait on it
            if b.calls > b.done:
                if inside_at != (gen, b.calls):
                    inside_at, inside_since = (gen, b.calls), time.monotonic()
                elif time.monotonic() - inside_since > self.timeout + self.GRACE:
                    self._end(
                        f"worker {self.rank} waited {self.timeout + self.GRACE:g} s in collective "
                        f"#{b.calls} ('{b.phase}') and worker 0, which watches the others, did not end "
                        f"the job: worker 0 is stopped or hung; the run was stopped"
                    )
            else:
                inside_at = None

    def _keep_books(self) -> None:
        import select
        import socket

        books: dict[int, dict[int, tuple]] = {}  # generation -> rank -> (entered, left, phase)
        heard: dict[int, float] = {}  # rank -> when its watch last sent
        conns: dict = {}  # socket -> (token seen, bytes received not yet read)
        gen_seen, changed, last = 0, time.monotonic(), None
        size = self.RECORD.size
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener, *conns], [], [], 0.05)
            for s in ready:
                if s is self._listener:
                    c, _ = self._listener.accept()
                    c.setblocking(False)
                    conns[c] = (False, b"")
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    conns.pop(s, None)
                    s.close()
                    continue
                known, buf = conns[s]
                buf += data
                if not known:  # a stranger without the job's token is dropped
                    if len(buf) < 16:
                        conns[s] = (False, buf)
                        continue
                    if buf[:16] != self._token:
                        conns.pop(s)
                        s.close()
                        continue
                    buf = buf[16:]
                while len(buf) >= size:
                    rank, gen, calls, left, phase = self.RECORD.unpack(buf[:size])
                    buf = buf[size:]
                    heard[rank] = time.monotonic()
                    if gen >= self.generation:  # a rank may begin a fit before this one does
                        books.setdefault(gen, {})[rank] = (calls, left, phase.rstrip(b"\0").decode(errors="replace"))
                conns[s] = (True, buf)
            if gen_seen != self.generation:
                gen_seen, changed, last = self.generation, time.monotonic(), None
                books = {g: v for g, v in books.items() if g >= gen_seen}
            beats = books.setdefault(gen_seen, {})
            if not self.K:
                continue
            b = self.beat
            beats[0] = (b.calls, b.done, b.phase)
            state = tuple(sorted((r, c, d) for r, (c, d, _) in beats.items() if r < self.K))
            if state != last:
                last, changed = state, time.monotonic()
            waiting = any(c > d for r, (c, d, _) in beats.items() if r < self.K)
            if waiting and time.monotonic() - changed > self.timeout:
                here = socket.gethostname()
                stopped = [
                    r
                    for r in range(1, min(self.K, len(self.placement)))
                    if self.placement[r][0] == here and process_stopped(self.placement[r][1])
                ]
                now = time.monotonic()
                # (a rank never heard from, its watch unconnected, is not silent: unknown)
                silent = [r for r in range(1, self.K) if r in heard and now - heard[r] > self.SILENT]
                self._end(
                    hung_message(
                        {r: v for r, v in beats.items() if r < self.K}, stopped, self.K, self.timeout, silent=silent
                    )
                )
        for c in conns:
            c.close()

    #: called with the message before the job ends (parrbm's remote ranks tell their driver)
    on_end: list = []

    def _end(self, message: str) -> None:
        import sys

        sys.stderr.write(f"parrbm: {message}\n")
        sys.stderr.flush()
        for tell in self.on_end:
            try:
                tell(message)
            except Exception:  # noqa: BLE001 - the job ends anyway
                pass
        time.sleep(0.5)  # the launcher forwards the line before MPI_Abort tears the job down
        self.world.Abort(1)


# ---- started by the user's launcher (SPMD) --------------------------------------------------------

#: hydra_pmi_proxy's topology file (a fixed template in its code, whatever TMPDIR says)
HYDRA_TOPOLOGY = "/tmp/hydra_hwloc_xmlfile_"


def hydra_topology_files(pid: int) -> set[str]:
    """Hydra topology files process ``pid`` holds open or was given (PMI_hwloc_xmlfile)."""
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(HYDRA_TOPOLOGY):
                out.add(target)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"PMI_hwloc_xmlfile="):
                    path = item.split(b"=", 1)[1].decode(errors="replace")
                    if path.startswith(HYDRA_TOPOLOGY):
                        out.add(path)
    except OSError:
        pass
    return out


_watching = False


def remove_topology_file_after_proxy() -> None:
    """hydra's proxy (this rank's parent) removes its topology file when it exits, but not
    when it dies of a peer's failure or its mpiexec's kill: a detached shell waits for the
    proxy to end and removes the file if it is still there, so that a job ended any way
    leaves nothing in any host's /tmp. Once a process."""
    global _watching
    if _watching:
        return
    _watching = True
    if os.environ.get("PARRBM_JOB"):  # a job parrbm started: its end removes the file (launch.kill_tagged)
        return
    proxy = os.getppid()
    files = sorted(hydra_topology_files(proxy))
    if not files or proxy <= 1:
        return
    import subprocess

    subprocess.Popen(
        ["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; rm -f -- "$@"', str(proxy), *files],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


class SPMDGroup:
    """The K workers of a fit as K ranks of the world the user's launcher started: rank k
    is worker k (k < K), the ranks beyond K wait and receive what the workers computed, so
    that every rank returns the same model. Every rank runs the same code with the same
    data (the paper's premise: every machine holds the whole data set).

    ``transport``: the workers' collectives over MPI ("mpi"), or over TCP connections
    between the worker ranks ("tcp": each listens on every interface, the addresses and a
    secret go round over MPI, as torchrun's rendezvous does over its store); the books
    (results, the model) go over MPI either way."""

    def __init__(self, K: int, timeout: float = 60.0, transport: str = "mpi"):
        import socket

        from parrbm.harness.world import launcher_world, world_kind

        self.world = launcher_world()
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.K = K
        if K > self.size:
            raise ValueError(
                f"workers={K}, but the launcher started {self.size} ranks: give at most "
                f"{self.size} workers, or start more ranks (mpiexec -n {K}, srun -n {K})"
            )
        if transport == "mpi" and world_kind() != "mpi":
            raise ValueError(
                f"transport 'mpi': this job's ranks were started without MPI "
                f"({self.world.launcher}); use transport 'tcp', or start them with mpiexec or "
                f"srun --mpi=pmi2"
            )
        # every rank makes its fits in the same order: the watch's books start together
        self.watch = Watch.of(self.world)
        self.beat = self.watch.start_fit(K, timeout)
        self.sub = None
        if transport == "mpi":
            from mpi4py import MPI

            # collective over the world: every rank builds the same groups in the same order
            self.sub = self._books(self.world.Split, 0 if self.rank < K else MPI.UNDEFINED, self.rank)
        #: the host each worker runs on (the records say where they ran)
        self.hosts: list[str] = self._books(self.world.allgather, socket.gethostname())[:K]
        self.tcp = self._connect_tcp(timeout) if transport == "tcp" else None

    def _connect_tcp(self, timeout: float):
        import socket
        import weakref

        from parrbm.harness.tcp import TCPTransport

        listener = socket.create_server(("", 0)) if self.is_worker else None
        mine = (socket.gethostname(), listener.getsockname()[1]) if listener is not None else None
        addresses = self._books(self.world.allgather, mine)[: self.K]
        secret = self._books(self.world.bcast, os.urandom(32) if self.rank == 0 else None, 0)
        if not self.is_worker:
            return None
        try:
            transport = TCPTransport(self.rank, self.K, secret, listener, addresses, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - the job ends: its peers would wait forever
            import sys

            sys.stderr.write(
                f"parrbm: worker {self.rank} of {self.K} could not connect to its peers over tcp: "
                f"{type(exc).__name__}: {exc}; ending the job\n"
            )
            sys.stderr.flush()
            self.world.Abort(1)
        weakref.finalize(self, transport.close)
        return transport

    @property
    def is_worker(self) -> bool:
        return self.rank < self.K

    def run(self, target, *, everyone: bool = True):
        """``target(comm)`` on each worker rank; returns every worker's result in rank order
        (``everyone``), or worker 0's alone, on every rank. A worker that raises ends the job
        (MPI_Abort), naming itself: its peers would otherwise wait in a collective forever."""
        import sys

        from parrbm.harness.comm import Comm

        mine = None
        if self.is_worker:
            try:
                mine = target(Comm(self.tcp if self.tcp is not None else MPITransport(self.sub, beat=self.beat)))
            except BaseException as exc:  # noqa: BLE001 - the whole job ends with the reason
                sys.stderr.write(
                    f"parrbm: worker {self.rank} of {self.K} failed: {type(exc).__name__}: {exc}; ending the job\n"
                )
                sys.stderr.flush()
                self.world.Abort(1)
        if everyone:
            return self._books(self.world.allgather, mine)[: self.K]
        return self._books(self.world.bcast, mine if self.rank == 0 else None, 0)

    def _books(self, collective, *args):
        """One of the world's collectives that keep the books, counted in this rank's beat
        like the workers' own: a peer stopped between a fit's collectives and its books is
        named too."""
        return self.watch.books(collective, *args)

    def call(self, workers: list, target):
        """:meth:`run` for a target that trains: what each worker counted on its own (the
        divergence of its replicas, its syncs) comes back with its result, and every rank
        keeps the same books. Returns (results, per-worker extras) on every rank."""
        import resource

        def counted(comm):
            w = workers[comm.rank]
            seen, syncs = len(w.divergence), w.syncs
            out = target(comm)
            extra = {
                "divergence": w.divergence[seen:],
                "syncs": w.syncs - syncs,
                "memory_bytes": w.memory_bytes(),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
            # the books take them from the extras, on every rank alike
            del w.divergence[seen:]
            w.syncs = syncs
            return out, extra

        both = self.run(counted)
        return [b[0] for b in both], [b[1] for b in both]

    def to_root(self, workers: list, fn) -> list | None:
        """``fn(worker)`` of each worker rank's own worker, gathered on rank 0 (rank order);
        None on the other ranks. No collective of the workers' comm: plain local values."""
        mine = fn(workers[self.rank]) if self.is_worker else None
        out = self._books(self.world.gather, mine, 0)
        return out[: self.K] if out is not None else None

    def agree(self, value):
        """Rank 0's ``value`` on every rank."""
        return self._books(self.world.bcast, value, 0)

    def same_on_every_rank(self, value) -> list:
        """Every rank's ``value``, in rank order."""
        return self._books(self.world.allgather, value)
