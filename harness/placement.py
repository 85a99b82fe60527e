"""Where a fit's K workers run, chosen once when the fit is built, and driven through one
interface whatever the transport:

- :class:`Threads`: threads of this process (the threads transport); the runner holds
  the K workers.
- :class:`JobRanks`: the ranks of a job the user's launcher started (``mpiexec -n N``,
  ``srun``): this process is one of them, and rank k is worker k.
- :class:`Processes`: worker processes parrbm starts (tcp and mpi: on this machine, its
  emulated hosts or named hosts), started at the fit's first epoch and kept to its end;
  the runner keeps counters (:class:`parrbm.harness.runner.WorkerBook`), not replicas.

Each offers ``epoch`` (the workers' pass over the batches), ``finish``, ``gather`` (the
model), ``load`` (a new model: whether running workers took it), ``local_states`` /
``restore_local`` (what only the workers know), ``close``, and ``hosts`` (where they ran,
when that is not this machine); ``keeps_workers``: whether the runner holds the K
workers themselves; ``any_fault``: whether PARRBM_FAULT may kill or stop a worker here
(not on threads, which share one process: a straggler only).
"""

from __future__ import annotations

import numpy as np

from parrbm.config import ModelState
from parrbm.harness.comm import Comm, PhaseStats
from parrbm.harness.threads import run_threads


class Threads:
    """The K workers as threads of this process."""

    keeps_workers = True
    any_fault = False
    hosts = None

    def __init__(self, runner):
        self.runner = runner

    def _all(self, target):
        r = self.runner
        return run_threads(r.K, target, timeout=r.timeout, blas_threads=r.blas_threads, spin=not r.options.overlapped)

    def epoch(self, work, X: np.ndarray, order: np.ndarray, first_step: int, same_data: bool):
        return self._all(work), None, None

    def finish(self) -> None:
        r = self.runner

        def work(comm: Comm):
            r._on(comm).finish()
            return comm.stats

        r._absorb(None, self._all(work))
        r.state = self.gather()

    def gather(self) -> ModelState:
        return self._all(lambda comm: self.runner._on(comm).gathered_model())[0]

    def load(self, state: ModelState) -> bool:
        return False

    def local_states(self):
        return [w.local_state() for w in self.runner.workers]

    def restore_local(self, states) -> None:
        pass  # the runner's own workers took them

    def close(self) -> None:
        pass


class JobRanks:
    """The K workers as the first K ranks of the job this process is a rank of (see
    :class:`parrbm.harness.mpi.SPMDGroup`); every rank keeps the same books and model."""

    keeps_workers = True
    any_fault = True

    def __init__(self, runner, group):
        self.runner, self.group = runner, group
        self.local = None  # the workers' local states, gathered on rank 0 after every run

    @property
    def hosts(self) -> list[str]:
        return self.group.hosts

    def epoch(self, work, X: np.ndarray, order: np.ndarray, first_step: int, same_data: bool):
        from parrbm import _core

        r = self.runner
        _core.set_blas_threads(r.blas_threads)
        results, extra = self.group.call(r.workers, work)
        self.local = self.group.to_root(r.workers, lambda w: w.local_state())
        return results, extra, None

    def finish(self) -> None:
        r = self.runner

        def work(comm: Comm):
            r._on(comm).finish()
            return comm.stats

        stats, extras = self.group.call(r.workers, work)
        r._absorb(extras, stats)
        r.state = self.gather()
        self.local = self.group.to_root(r.workers, lambda w: w.local_state())

    def gather(self) -> ModelState:
        """Worker 0 assembles it; every rank gets it."""
        return self.group.run(lambda comm: self.runner._on(comm).gathered_model(), everyone=False)

    def load(self, state: ModelState) -> bool:
        self.local = None
        return False

    def local_states(self):
        # gathered on rank 0 after every run: a checkpoint or a save there needs no peer
        if self.local is None and self.group.rank == 0:
            return [w.local_state() for w in self.runner.workers]  # no run yet: as built
        if self.local is None:
            raise RuntimeError(
                "the workers' own state of a job's fit is gathered on rank 0: save the model "
                "there (on rank 0 only: rbm.save(path))"
            )
        return self.local

    def restore_local(self, states) -> None:
        self.local = states

    def close(self) -> None:
        pass


class Processes:
    """The K workers as processes parrbm starts, at the first epoch of the fit; closed,
    what only they knew is kept, and the next epoch starts new ones from the model and
    it, as if they had never stopped."""

    keeps_workers = False
    any_fault = True  # in the workers' own processes

    def __init__(self, runner):
        self.runner = runner
        self.group = None  # a TCPGroup or an MPIGroup, while the processes run
        self.pending = None  # local states for processes not started yet
        self.hosts = None  # named hosts, once the processes said where they run

    def _start(self) -> None:
        from parrbm.harness.remote import MPIGroup, TCPGroup

        r = self.runner
        self.group = MPIGroup(r, r.mpi_hosts) if r.transport == "mpi" else TCPGroup(r)
        if r.mpi_hosts is not None or r.tcp.hosts:
            self.hosts = self.group.hosts
        if self.group.network is not None:
            r.network_info = self.group.network.describe()
        if self.pending is not None:  # carried over from a checkpoint or a closed group
            self.group.restore_local(self.pending)
            self.pending = None

    def epoch(self, work, X: np.ndarray, order: np.ndarray, first_step: int, same_data: bool):
        if self.group is None:
            self._start()
        return self.group.epoch(self.runner.spec, X, order, first_step, same_data=same_data)

    def finish(self) -> None:
        if self.group is None:
            return  # no epoch ran: the model is already the gathered one (for averaging, the average)
        r = self.runner
        answers = self.group.finish()
        r._absorb(answers, [{p: PhaseStats(**v) for p, v in a["stats"].items()} for a in answers])
        r.state = self.group.gather()
        self.close()

    def gather(self) -> ModelState:
        return self.runner.state  # gathered from the worker processes after every run

    def load(self, state: ModelState) -> bool:
        self.pending = None
        if self.group is None:
            return False
        self.group.load(state)
        return True

    def local_states(self):
        if self.group is not None:
            return self.group.local_states()
        if self.pending is not None:
            return self.pending
        return [w.local_state() for w in self.runner.workers]

    def restore_local(self, states) -> None:
        if self.group is not None:
            self.group.restore_local(states)
        else:
            self.pending = states

    def close(self) -> None:
        if self.group is not None:
            if self.group.alive:
                self.pending = self.group.local_states()
            self.group.close()
            self.group = None
