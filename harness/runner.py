"""Runs a parallel strategy on K workers and collects what the comparison needs: the
model, reconstruction error, exact bytes by phase and worker, and time split into
compute, communication and waiting."""

from __future__ import annotations

import time
from dataclasses import asdict, fields

import numpy as np

from parrbm.config import TRANSPORTS, CDSpec, ModelState
from parrbm.harness.comm import Comm, PhaseStats
from parrbm.strategies.base import StrategyOptions, Worker, admin_phase, chunk_plan


def worker_class(strategy, *, load: bool = False) -> type[Worker]:
    """The parallel strategy's class, by name, ``module:Class`` or the class itself
    (``load``: import a plug-in not loaded yet, see :func:`registry.resolve`)."""
    from parrbm.strategies.registry import resolve

    cls = resolve(strategy, load=load)
    if not issubclass(cls, Worker):
        raise ValueError(f"strategy {cls.name!r} runs on one worker: it is not a parallel strategy")
    return cls


def check_options(spec: CDSpec, strategy: str, workers: int, transport: str, options: StrategyOptions) -> None:
    """Reject impossible combinations with a message naming the parameter."""
    if transport not in TRANSPORTS:
        raise ValueError(
            f"transport {transport!r} is not available in this release; available: {', '.join(TRANSPORTS)}"
        )
    options.check()
    from parrbm.strategies.rules import check_split

    check_split(strategy, n_visible=spec.n_visible, n_hidden=spec.n_hidden, batch_size=spec.batch_size, workers=workers)
    cls = worker_class(strategy)
    cls.check_options(options, transport=transport)


class WorkerBook:
    """What the launcher keeps of a worker that runs in a process of its own (tcp and mpi
    workers parrbm starts): its counters, not its arrays, so that K replicas of the model
    do not sit in the launcher too. The worker itself is built here only to check or to
    give its local state before its process has ever run."""

    def __init__(
        self, cls: type[Worker], spec: CDSpec, state: ModelState, rank: int, size: int, options: StrategyOptions
    ):
        self.cls, self.spec, self.state, self.rank, self.K, self.options = cls, spec, state, rank, size, options
        self.name = cls.name
        self.sync_phases = cls.sync_phases_of(options)
        self.divergence: list[float] = []
        self.syncs = 0
        self.remote_memory: int | None = None
        self.peak_rss: int | None = None
        self._local: tuple[dict, dict] | None = None

    def _built(self) -> Worker:
        return self.cls(self.spec, self.state, self.rank, self.K, self.options)

    def local_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return self._local if self._local is not None else self._built().local_state()

    def restore_local(self, counters: dict, arrays: dict[str, np.ndarray]) -> None:
        self._built().restore_local(counters, arrays)  # the shapes checked, as on a worker
        self._local = (counters, arrays)

    def memory_bytes(self) -> int:
        return self.remote_memory or 0

    def chunks(self, rows: int) -> list[slice]:
        return chunk_plan(self.cls, self.spec, self.options, self.K, rows)


class ParallelRunner:
    """A parallel strategy behind the interface of :class:`SerialStrategy`."""

    def __init__(
        self,
        spec: CDSpec,
        state: ModelState,
        strategy: str,
        workers: int,
        transport: str = "threads",
        options: StrategyOptions | None = None,
        *,
        blas_threads: int = 1,
        timeout: float = 60.0,
        tcp=None,
        network=None,
        mpi=None,
    ):
        from parrbm.strategies.registry import reference

        self.spec = spec
        self.K = workers
        self.transport = transport
        self.options = options or StrategyOptions()
        check_options(spec, strategy, workers, transport, self.options)
        from parrbm.harness.faults import fault_spec

        fault_spec()  # a malformed PARRBM_FAULT is named here, before any worker starts
        self.name = reference(strategy)  # how any process names it: a registered name or module:Class
        self.blas_threads = blas_threads
        self.timeout = timeout
        from parrbm.harness.launch import TCPHosts

        self.tcp = tcp if tcp is not None else TCPHosts()  # where tcp workers run and listen
        # emulated hosts for the tcp or mpi workers: a LinkSpec (set up with the workers and
        # torn down with them) or an EmulatedNetwork the caller set up (a comparison's)
        if network is not None and transport == "threads":
            raise ValueError(
                "an emulated network puts each worker on a host of its own: it needs "
                "transport 'tcp' or 'mpi', not 'threads'"
            )
        if network is not None and self.tcp.hosts:
            raise ValueError("an emulated network and tcp.hosts both say where the workers run: give one")
        self.network = network
        self.network_info = None if network is None else network.describe()  # as set up, once it is
        #: where parrbm starts its mpi workers on other hosts (harness.remote.MPIHosts), or None
        self.mpi_hosts = mpi
        if mpi is not None and (transport != "mpi" or network is not None):
            raise ValueError(
                "mpi hosts say where the mpi workers run: they need transport 'mpi' and no emulated network"
            )
        # where the workers run, chosen once: threads of this process; the ranks of the job
        # the user's launcher started (mpiexec -n N python script.py: this process is one of
        # them); or processes parrbm starts at the first epoch
        from parrbm.harness.placement import JobRanks, Processes, Threads

        self._where = Threads(self) if transport == "threads" else Processes(self)
        if transport in ("mpi", "tcp"):
            from parrbm.harness.mpi import SPMDGroup
            from parrbm.harness.world import spmd_world

            if spmd_world() is not None:
                if network is not None or self.tcp.hosts or mpi is not None:
                    raise ValueError(
                        "this process is one rank of a job started by mpiexec or srun: the "
                        "fit runs on the job's ranks, where the launcher put them; an emulated "
                        "network or hosts do not apply"
                    )
                self._where = JobRanks(self, SPMDGroup(workers, timeout=timeout, transport=transport))
        self.load_model(state)

    # ---- model ----------------------------------------------------------------------------

    def load_model(self, state: ModelState) -> None:
        """Start (again) from ``state``: every worker rebuilt from it (on tcp and mpi, in its
        process)."""
        cls = worker_class(self.name)
        shared = state
        if self.options.shared_weights:  # every worker gets the same W object
            shared = ModelState(**{k: getattr(state, k) for k in ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")})
            shared.W = np.array(state.W, dtype=self.spec.np_dtype, copy=True)
        # worker processes (tcp, mpi) build their own workers: the launcher keeps counters
        self.workers = [
            cls(self.spec, shared, r, self.K, self.options)
            if self._where.keeps_workers
            else WorkerBook(cls, self.spec, shared, r, self.K, self.options)
            for r in range(self.K)
        ]
        self.state = state
        if not self._where.load(state):  # running workers keep their books
            self._reset_stats()

    def _reset_stats(self) -> None:
        self.phase_stats = [dict() for _ in range(self.K)]  # per worker: phase -> PhaseStats
        # per worker, tcp and mpi: what assembling the model moved (gather-model), kept apart
        self.admin_stats: list[dict] = [dict() for _ in range(self.K)]
        self.step_bytes: list[int] = []  # all workers, per step, syncs excluded
        self.step_wire: list[int] = []  # the same as written on the wire (tcp)
        self.step_seconds: list[list[float]] = [[] for _ in range(self.K)]
        self.steps = 0

    def set_learning_rate(self, learning_rate: float) -> None:
        """Continue with another learning rate (a schedule's next epoch); the workers
        read it from their spec at every update."""
        self.spec = self.spec.replace(learning_rate=learning_rate)
        for w in self.workers:
            w.spec = self.spec
        self._serial = None

    def finish(self) -> None:
        """The end of a fit: each worker's ``finish`` (a strategy whose replicas stand apart
        brings them together; its bytes count as a sync), then the tcp and mpi workers stop."""
        self._where.finish()
        self._serial = None

    def _absorb(self, extras, stats) -> None:
        split_waits(stats)
        for r, per_phase in enumerate(stats):
            for phase, s in per_phase.items():
                self.phase_stats[r].setdefault(phase, PhaseStats()).add(s)
        for w, e in zip(self.workers, extras or []):
            w.divergence.extend(e["divergence"])
            w.syncs += e["syncs"]
            w.remote_memory = e["memory_bytes"]
            w.peak_rss = e["peak_rss_bytes"]

    def close(self) -> None:
        """Stop the worker processes of a tcp or mpi fit. What only they knew is kept, and
        a later run starts new ones from the model and it: the fit goes on as if they had
        never stopped."""
        self._where.close()

    # ---- worker-local state (checkpoints) ------------------------------------------------

    def local_states(self) -> list[tuple[dict, dict[str, np.ndarray]]]:
        """Per worker, (counters, arrays) of what the gathered model does not give back:
        see :meth:`Worker.local_state`."""
        return self._where.local_states()

    def restore_local(self, states: list[tuple[dict, dict[str, np.ndarray]]]) -> None:
        """Put back :meth:`local_states` (from a checkpoint) on workers built from its model."""
        if len(states) != self.K:
            raise ValueError(f"{len(states)} workers' local states for {self.K} workers")
        for w, (counters, arrays) in zip(self.workers, states):
            w.restore_local(counters, arrays)
        self._where.restore_local(states)

    def gather_model(self) -> ModelState:
        return self._where.gather()

    def _on(self, comm: Comm) -> Worker:
        w = self.workers[comm.rank]
        w.comm = comm
        return w

    # ---- training ----------------------------------------------------------------------------

    def run_again(self, X: np.ndarray, order: np.ndarray, first_step: int) -> np.ndarray:
        """:meth:`run` on the same, unchanged X as the last run (the epochs of one fit):
        tcp and mpi workers keep the data they were sent."""
        self._same_data = True
        try:
            return self.run(X, order, first_step)
        finally:
            self._same_data = False

    def run(self, X: np.ndarray, order: np.ndarray, first_step: int) -> np.ndarray:
        """CD-k over the minibatches of X[order] on K workers; returns each minibatch's
        reconstruction error sum (summed over workers). tcp and mpi workers are sent X
        unless its contents are those they hold (or :meth:`run_again` says it is the last
        run's X, unchanged)."""
        m = self.spec.batch_size
        batches = [order[s : s + m] for s in range(0, len(order), m)]
        results, extra, gathered = self._epoch(X, order, batches, first_step)
        for r, (_, seconds, _, stats, _) in enumerate(results):
            self.step_seconds[r].extend(seconds)
        self._absorb(extra, [res[3] for res in results])
        self.step_bytes.extend(int(sum(res[2][i] for res in results)) for i in range(len(batches)))
        self.step_wire.extend(int(sum(res[4][i] for res in results)) for i in range(len(batches)))
        self.steps += len(batches)
        self.state = gathered if gathered is not None else self.gather_model()
        self._serial = None
        return np.sum([res[0] for res in results], axis=0)

    def _epoch(self, X: np.ndarray, order: np.ndarray, batches: list, first_step: int):
        """The workers' pass over the batches, wherever they run: per worker (errors,
        seconds, traffic, stats, wire), the per-worker extras (None on threads) and the
        gathered model (tcp and mpi processes; else None)."""

        def work(comm: Comm):
            from parrbm.harness.faults import fault_hook, inject_fault, slow_hook

            # PARRBM_FAULT, for the tests: on threads a straggler only (slow:R:MS)
            hook = fault_hook(comm.rank, comm.transport) if self._where.any_fault else slow_hook(comm.rank)
            worker = self._on(comm)
            inject_fault(worker, hook)
            try:
                return train_on(worker, comm, X, batches, first_step)
            finally:
                worker.__dict__.pop("step", None)  # the runner's workers outlive this run

        return self._where.epoch(work, X, order, first_step, getattr(self, "_same_data", False))

    # ---- inference on the gathered model -------------------------------------------------------

    def _serial_view(self):
        if getattr(self, "_serial", None) is None:
            from parrbm.strategies.serial import SerialStrategy

            self._serial = SerialStrategy(self.spec, self.state)
        return self._serial

    def hidden_probabilities(self, X):
        return self._serial_view().hidden_probabilities(X)

    def reconstruct(self, X):
        return self._serial_view().reconstruct(X)

    # ---- statistics ------------------------------------------------------------------------------

    def comm_stats(self) -> dict:
        """Exact payload bytes and time split of the runs so far (see RBM.comm_stats_)."""
        sync_phases = set(self.workers[0].sync_phases)
        by_phase: dict[str, dict] = {}
        for per_worker in self.phase_stats:
            for phase, s in per_worker.items():
                if admin_phase(phase):
                    continue
                agg = by_phase.setdefault(phase, {f.name: 0 for f in fields(PhaseStats) if f.name != "call_seconds"})
                for k, v in asdict(s).items():
                    if k in agg:
                        agg[k] += v
        for agg in by_phase.values():
            agg["hidden_fraction"] = hidden_fraction(agg["seconds"], agg["busy_seconds"])
        busy = sum(v["busy_seconds"] for v in by_phase.values()) / max(self.K, 1)
        exposed = sum(v["seconds"] for v in by_phase.values()) / max(self.K, 1)
        syncs = self.workers[0].syncs
        sync_sent = sum(by_phase.get(p, {}).get("bytes_sent", 0) for p in sync_phases)
        sync_logical = sum(by_phase.get(p, {}).get("logical_bytes_sent", 0) for p in sync_phases)
        by_worker = []
        for r in range(self.K):
            stats = {p: s for p, s in self.phase_stats[r].items() if not admin_phase(p)}
            inside = sum(s.seconds for s in stats.values())
            wait = sum(s.wait_seconds for s in stats.values())
            total = sum(self.step_seconds[r])
            by_worker.append(
                {
                    "rank": r,
                    "bytes_sent": sum(s.bytes_sent for s in stats.values()),
                    "bytes_recv": sum(s.bytes_recv for s in stats.values()),
                    "messages": sum(s.messages for s in stats.values()),
                    "compute_seconds": total - inside,
                    "comm_seconds": inside - wait,
                    "wait_seconds": wait,
                    "step_seconds": total,
                    "memory_bytes": getattr(self.workers[r], "remote_memory", None) or self.workers[r].memory_bytes(),
                    "peak_rss_bytes": getattr(self.workers[r], "peak_rss", None),
                    "wire_bytes_sent": sum(s.wire_bytes_sent for s in stats.values()),
                }
            )
        n = max(self.K, 1)
        divergence = [d for w in self.workers for d in w.divergence]
        return {
            "strategy": self.name,
            "network": self.network_info,
            "hosts": self._where.hosts,
            "workers": self.K,
            "transport": self.transport,
            "steps": self.steps,
            "bytes_per_step": self.step_bytes[0] if self.step_bytes else 0,
            "bytes_per_sync": (sync_sent // syncs) if syncs else 0,
            "wire_bytes_per_step": self.step_wire[0] if self.transport == "tcp" and self.step_wire else None,
            "logical_bytes_per_sync": (sync_logical // syncs) if syncs else 0,
            "syncs": syncs,
            "bytes_total": sum(v["bytes_sent"] for v in by_phase.values()),
            "by_phase": by_phase,
            "by_worker": by_worker,
            "seconds": {
                "compute": sum(w["compute_seconds"] for w in by_worker) / n,
                "communication": sum(w["comm_seconds"] for w in by_worker) / n,
                "waiting": sum(w["wait_seconds"] for w in by_worker) / n,
                # a step lasts as long as its slowest worker
                "step_median": float(np.median(np.max(np.array(self.step_seconds), axis=0))) if self.steps else 0.0,
            },
            "replica_divergence": max(divergence) if divergence else 0.0,
            # communication overlapped with computation (definitions: harness/comm.py):
            # seconds per worker, over every collective of the runs
            "overlap": {
                "overlap_chunks": self.options.overlap_chunks,
                "overlapped": self.options.overlapped,
                "chunks_used": len(self.workers[0].chunks(self.spec.batch_size)),
                "busy_seconds": busy,
                "exposed_seconds": exposed,
                "hidden_fraction": hidden_fraction(exposed, busy),
            },
        }


def hidden_fraction(exposed: float, busy: float) -> float:
    """The share of the collectives' busy time the step did not wait for (0 in lockstep)."""
    return min(1.0, max(0.0, 1.0 - exposed / busy)) if busy > 0 else 0.0


def split_waits(stats: list[dict[str, PhaseStats]]) -> None:
    """The one definition of communication and waiting, the same on every transport.

    Each collective call lasts, on the worker that reached it last, as long as moving
    its bytes takes: that worker waits for nobody. Every other worker spent the excess
    waiting for it. So for call c of a phase, worker k waited ``t[k, c] - min_j t[j, c]``
    and communicated ``min_j t[j, c]``; compute is the step's time outside the calls.
    This replaces the transports' own wait figures, which differ (tcp's covers the time
    its bytes take on the wire, threads' only the barrier), and clears the per-call
    seconds. ``stats``: per worker, phase -> PhaseStats of the same run or command."""
    for phase in set().union(*stats) if stats else ():
        per = [s.get(phase) for s in stats]
        calls = [p.call_seconds for p in per if p is not None]
        if len(calls) == len(stats) and len({len(c) for c in calls}) == 1 and calls[0]:
            t = np.array(calls)
            floor = t.min(axis=0)
            for p, row in zip(per, t):
                p.wait_seconds = float(np.sum(row - floor))
        for p in per:
            if p is not None:
                p.call_seconds = []


def _training_bytes(stats: dict[str, PhaseStats], sync_phases: set[str]) -> int:
    return sum(s.bytes_sent for p, s in stats.items() if p not in sync_phases and not admin_phase(p))


def _training_wire(stats: dict[str, PhaseStats], sync_phases: set[str]) -> int:
    return sum(s.wire_bytes_sent for p, s in stats.items() if p not in sync_phases and not admin_phase(p))


def train_on(worker: Worker, comm: Comm, X: np.ndarray, batches: list[np.ndarray], first_step: int):
    """The training loop of one worker, the same on every transport. Returns the
    minibatch errors, step seconds, training payload bytes per step and the phase stats."""
    sync_phases = set(worker.sync_phases)
    m = worker.spec.batch_size
    errors, seconds, traffic, wire = [], [], [], []
    buf = np.empty((m, X.shape[1]), X.dtype)
    before = _training_bytes(comm.stats, sync_phases)
    wire_before = _training_wire(comm.stats, sync_phases)
    try:
        for i, idx in enumerate(batches):
            xb = buf[: len(idx)]
            np.take(X, idx, axis=0, out=xb)
            t0 = time.perf_counter()
            errors.append(worker.checked_step(xb, first_step + i))
            comm.wait_all()  # a step's collectives are its own (a plug-in may leave one in flight)
            seconds.append(time.perf_counter() - t0)
            after = _training_bytes(comm.stats, sync_phases)
            wire_after = _training_wire(comm.stats, sync_phases)
            traffic.append(after - before)
            wire.append(wire_after - wire_before)
            before, wire_before = after, wire_after
    except BaseException:
        comm.abandon()
        raise
    comm.close()
    return errors, seconds, traffic, comm.stats, wire
