"""The mpi transport: mpi4py buffer collectives.

An allgather is an Allgather of the block sizes (where a worker waits for its peers) and
an Allgatherv of the bytes; any other exchange an Alltoall of the sizes and an Alltoallv.
Reduce-scatter deliberately is an Alltoallv too, not MPI_Reduce_scatter: MPI leaves the
order of a sum open, and the Comm layer adds the contributions in rank order so that
every transport gives the same bits."""

from __future__ import annotations

import os
import time

import numpy as np

from parrbm.harness.comm import Transport


class MPITransport(Transport):
    def __init__(self, comm=None, heartbeat: str | None = None):
        from mpi4py import MPI

        self.mpi = MPI
        self.world = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        # MPI collectives wait forever for a hung peer: each worker records which
        # collective it has reached, so the launcher can name the one that stopped.
        self.calls = 0   # collectives entered
        self.done = 0    # collectives left
        self._beat = os.open(heartbeat, os.O_WRONLY | os.O_CREAT, 0o644) if heartbeat else None

    def _heartbeat(self) -> None:
        self.calls += 1
        self._write_beat()

    def _left(self) -> None:
        self.done = self.calls
        self._write_beat()

    def _write_beat(self) -> None:
        if self._beat is not None:
            os.pwrite(self._beat, f"{self.calls:12d} {self.done:12d} {self.phase[:48]:<48}".encode(), 0)

    def exchange(self, sends, receive) -> float:
        self._heartbeat()
        K = self.size
        views = [None if (j == self.rank or sends[j] is None)
                 else np.ascontiguousarray(sends[j]).reshape(-1).view(np.uint8) for j in range(K)]
        send_counts = np.array([0 if v is None else v.size for v in views], np.int64)
        recv_counts = np.empty(K, np.int64)
        t0 = time.perf_counter()
        self.world.Alltoall(send_counts, recv_counts)
        wait = time.perf_counter() - t0
        send_buf = (np.concatenate([v for v in views if v is not None])
                    if send_counts.sum() else np.empty(0, np.uint8))
        recv_buf = np.empty(int(recv_counts.sum()), np.uint8)
        sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
        as_ints = lambda a: [int(x) for x in a]  # noqa: E731
        self.world.Alltoallv([send_buf, (as_ints(send_counts), as_ints(sdispl)), self.mpi.BYTE],
                             [recv_buf, (as_ints(recv_counts), as_ints(rdispl)), self.mpi.BYTE])
        self._left()
        for j in range(K):
            if j != self.rank and recv_counts[j]:
                receive(j, recv_buf[rdispl[j]: rdispl[j] + recv_counts[j]])
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
        self.world.Allgatherv([mine, self.mpi.BYTE],
                              [recv_buf, ([int(c) for c in counts], [int(d) for d in displ]), self.mpi.BYTE])
        self._left()
        for j in range(K):
            if j != self.rank and counts[j]:
                receive(j, recv_buf[displ[j]: displ[j] + counts[j]])
        return wait

    def barrier(self) -> float:
        self._heartbeat()
        t0 = time.perf_counter()
        self.world.Barrier()
        self._left()
        return time.perf_counter() - t0


# ---- started by the user's launcher (SPMD) --------------------------------------------------------

#: the variables an MPI launcher sets in every rank it starts (hydra and PMI-2/PMIx: PMI_*;
#: Open MPI: OMPI_COMM_WORLD_*)
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


def spmd_world() -> tuple[int, int] | None:
    """(rank, size) of the MPI world this process belongs to, when an MPI launcher
    (``mpiexec -n N``, ``srun --mpi=pmi2``) started it as one of N > 1 ranks; else None.
    parrbm's own mpi workers are such ranks too, but never build a trainer."""
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var, "")
        # PARRBM_SPMD: parrbm's own ranks on other hosts (harness.remote), one rank too
        if value.isdigit() and (int(value) > 1 or (int(value) == 1 and os.environ.get("PARRBM_SPMD") == "1")):
            try:
                from mpi4py import MPI
            except ImportError:
                raise ValueError(f"this process is one of {value} ranks of an MPI job ({var}), but mpi4py is "
                                 f"not installed here: pip install 'parrbm[mpi]'") from None
            world = MPI.COMM_WORLD
            _remove_topology_file_after_proxy()
            return world.Get_rank(), world.Get_size()
    return None


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


def _remove_topology_file_after_proxy() -> None:
    """hydra's proxy (this rank's parent) removes its topology file when it exits, but not
    when it dies of a peer's failure or its mpiexec's kill: a detached shell waits for the
    proxy to end and removes the file if it is still there, so that a job ended any way
    leaves nothing in any host's /tmp. Once a process."""
    global _watching
    if _watching:
        return
    _watching = True
    proxy = os.getppid()
    files = sorted(hydra_topology_files(proxy))
    if not files or proxy <= 1:
        return
    import subprocess

    subprocess.Popen(["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; rm -f -- "$@"',
                      str(proxy), *files], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


class SPMDGroup:
    """The K workers of a fit as K ranks of the world the user's launcher started: rank k
    is worker k (k < K), the ranks beyond K wait and receive what the workers computed, so
    that every rank returns the same model. Every rank runs the same code with the same
    data (the paper's premise: every machine holds the whole data set)."""

    def __init__(self, K: int):
        from mpi4py import MPI

        self.MPI = MPI
        self.world = MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.K = K
        if K > self.size:
            raise ValueError(f"workers={K}, but the MPI launcher started {self.size} ranks: give at most "
                             f"{self.size} workers, or start more ranks (mpiexec -n {K})")
        # collective over the world: every rank builds the same groups in the same order
        self.sub = self.world.Split(0 if self.rank < K else MPI.UNDEFINED, self.rank)
        #: the host each worker runs on, as MPI names it (the records say where they ran)
        self.hosts: list[str] = self.world.allgather(MPI.Get_processor_name())[:K]

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
                mine = target(Comm(MPITransport(self.sub)))
            except BaseException as exc:  # noqa: BLE001 - the whole job ends with the reason
                sys.stderr.write(f"parrbm: worker {self.rank} of {self.K} failed: {type(exc).__name__}: {exc}; "
                                 f"ending the MPI job\n")
                sys.stderr.flush()
                self.world.Abort(1)
        if everyone:
            return self.world.allgather(mine)[: self.K]
        return self.world.bcast(mine if self.rank == 0 else None, root=0)

    def call(self, workers: list, target):
        """:meth:`run` for a target that trains: what each worker counted on its own (the
        divergence of its replicas, its syncs) comes back with its result, and every rank
        keeps the same books. Returns (results, per-worker extras) on every rank."""
        import resource

        def counted(comm):
            w = workers[comm.rank]
            seen, syncs = len(w.divergence), w.syncs
            out = target(comm)
            extra = {"divergence": w.divergence[seen:], "syncs": w.syncs - syncs, "memory_bytes": w.memory_bytes(),
                     "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
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
        out = self.world.gather(mine, root=0)
        return out[: self.K] if out is not None else None

    def agree(self, value):
        """Rank 0's ``value`` on every rank."""
        return self.world.bcast(value, root=0)

    def same_on_every_rank(self, value) -> list:
        """Every rank's ``value``, in rank order."""
        return self.world.allgather(value)


def spmd_agree_on_data(X: np.ndarray, seed: int, who: str = "RBM") -> int:
    """In an SPMD fit: rank 0's seed on every rank, after checking that every rank passes
    the same X (ValueError naming the ranks whose X differs). Outside one: ``seed``."""
    if spmd_world() is None:
        return seed
    import hashlib

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    digest = hashlib.sha256(np.ascontiguousarray(X).view(np.uint8).reshape(-1)).hexdigest() + str(X.shape)
    digests = world.allgather(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise ValueError(f"{who}: an MPI fit needs the same X on every rank (each worker trains on all of it); "
                         f"ranks {differ} passed other data than rank 0")
    return world.bcast(seed, root=0)


def spmd_leader() -> bool:
    """Whether this process writes and prints for an SPMD fit: rank 0, or not one."""
    world = spmd_world()
    return world is None or world[0] == 0
