"""The threads transport: K workers as threads of one process (the paper's multi-core
mode). The C++ core releases the GIL, so workers compute in parallel; data moves only
through :class:`~parrbm.harness.comm.Comm`, as it would between processes."""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import numpy as np

from parrbm import _core
from parrbm.harness.comm import Comm, CommError, Transport
from parrbm.harness.signals import signals_held

#: how long an early arrival at a collective spins before it sleeps
SPIN_SECONDS = 2e-4


class ThreadsHub:
    """State shared by the K threads of one run: a mailbox per worker and a barrier.

    The barrier is the core's: it waits without the GIL and spins before it sleeps, so a
    small model's collectives do not each cost a sleep and a wake-up."""

    def __init__(self, size: int, timeout: float = 60.0, spin_seconds: float = SPIN_SECONDS):
        self.size = size
        self.timeout = timeout
        self.mailbox: list[Sequence[np.ndarray | None] | None] = [None] * size
        self.barrier = _core.Barrier(size, spin_seconds)
        # How many barriers each worker has reached, and in which phase: names the
        # laggards when a barrier times out.
        self.arrivals = [0] * size
        self.phase = [""] * size
        # who is inside a barrier now: a live worker outside one, while nobody moves,
        # is stuck in its own code
        self.waiting = [False] * size

    def abort(self) -> None:
        self.barrier.abort()


class ThreadsTransport(Transport):
    def __init__(self, hub: ThreadsHub, rank: int):
        self.hub = hub
        self.rank = rank
        self.size = hub.size

    def _wait(self) -> float:
        hub = self.hub
        hub.arrivals[self.rank] += 1
        hub.phase[self.rank] = self.phase
        t0 = time.perf_counter()
        hub.waiting[self.rank] = True
        try:
            passed = hub.barrier.wait(hub.timeout) == "passed"
        finally:
            hub.waiting[self.rank] = False
        if not passed:
            late = [r for r in range(self.size) if hub.arrivals[r] < hub.arrivals[self.rank]]
            who = ", ".join(f"worker {r} (last in phase '{hub.phase[r]}')" for r in late) or "a peer"
            raise CommError(
                f"{who} did not reach phase '{self.phase}' within {hub.timeout:g} s (seen by worker {self.rank})"
            )
        return time.perf_counter() - t0

    def exchange(self, sends, receive: Callable[[int, np.ndarray], None]) -> float:
        self.hub.mailbox[self.rank] = sends
        wait = self._wait()  # every mailbox is filled
        for j in range(self.size):
            if j != self.rank:
                buf = self.hub.mailbox[j][self.rank]
                if buf is not None:
                    receive(j, buf)
        wait += self._wait()  # every peer has read this worker's buffers
        return wait

    def barrier(self) -> float:
        return self._wait()


class WorkerGate:
    """Counts the worker threads inside their work; once closed, none enters.

    A Ctrl-C can land inside ``Thread.start``: the thread then runs, but is not yet alive
    to ``is_alive`` and cannot be joined by the code that stops the run. Were it to enter
    the core afterwards, it would still be there, without the GIL, when the interpreter
    finalizes, and taking the GIL back then ends the process with an abort. Behind the
    gate it either entered before the stop (and is waited for) or never enters."""

    def __init__(self):
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False

    def enter(self) -> bool:
        with self._cond:
            if self._closed:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True

    def wait_empty(self, seconds: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._inside == 0, max(0.0, seconds))


def stop_workers(
    stop: Callable[[], None], threads: list[threading.Thread], seconds: float, gate: WorkerGate | None = None
) -> None:
    """After Ctrl-C or SIGTERM: call ``stop`` (which must release the workers from what
    they wait on) and wait up to ``seconds`` for ``threads`` to leave, and for ``gate`` to
    be empty, with the signals held. A second Ctrl-C does not cut the wait short: one that
    lands before the signals are held only starts the wait again."""
    deadline = time.monotonic() + seconds
    if gate is not None:
        gate.close()
    while time.monotonic() < deadline:
        running = [t for t in threads if t.ident is not None and t.is_alive()]  # started, not done
        if not running and (gate is None or gate.wait_empty(0.0)):
            return
        try:
            with signals_held():
                stop()
                for t in running:
                    t.join(max(0.0, deadline - time.monotonic()))
                if gate is not None:
                    gate.wait_empty(deadline - time.monotonic())
        except BaseException:  # noqa: BLE001 - the first signal is the one re-raised
            continue


class WorkerHung(Exception):
    """Raised inside a worker thread that stopped making progress (its strategy's own code
    neither returned nor reached a collective within the run's timeout)."""


#: seconds a stuck worker has to leave once it was told to stop
STOP_GRACE = 5.0


def _raise_in(thread: threading.Thread, exc_type: type) -> bool:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction (a thread inside
    native code sees it when it returns to Python)."""
    import ctypes

    if thread.ident is None:
        return False
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)) == 1


def _join_or_stop_hung(threads: list[threading.Thread], hub: ThreadsHub, errors: list, timeout: float) -> None:
    """Wait for the workers. Once one has failed (a peer waited longer than ``timeout``
    for it at a collective, as on every transport), a worker still outside every
    collective after STOP_GRACE more seconds is stuck in its own code (a plug-in's step
    that never returns): it is stopped and the run fails naming it, instead of waiting
    for it forever. (A worker computing, with nobody failed, is never interrupted: a
    long step is not a hang.)"""
    last, moved = None, time.monotonic()
    while True:
        alive = [r for r, t in enumerate(threads) if t.is_alive()]
        if not alive:
            return
        threads[alive[0]].join(0.2)
        state = (sum(hub.arrivals), tuple(alive), len(errors))
        now = time.monotonic()
        if state != last:
            last, moved = state, now
            continue
        if not errors or now - moved <= STOP_GRACE:
            continue
        hung = [r for r in alive if not hub.waiting[r]]
        for r in hung:
            errors.append(
                (
                    r,
                    WorkerHung(
                        f"its step did not return within {timeout:g} s (training.timeout) while its "
                        f"peers waited at a collective; it was stopped (last phase reached: "
                        f"'{hub.phase[r] or 'none'}')"
                    ),
                )
            )
            _raise_in(threads[r], WorkerHung)
        hub.abort()  # the others leave their barriers
        deadline = time.monotonic() + STOP_GRACE
        for r in alive:
            threads[r].join(max(0.0, deadline - time.monotonic()))
        stuck = [r for r in alive if threads[r].is_alive()]
        if stuck:
            raise CommError(
                f"worker(s) {stuck} did not return within {timeout:g} s (training.timeout) and could "
                f"not be stopped (inside native code); this process cannot run more workers safely"
            )
        return


def run_threads(
    size: int, target: Callable[[Comm], object], *, timeout: float = 60.0, blas_threads: int = 1, spin: bool = True
) -> list:
    """Run ``target(comm)`` on ``size`` worker threads; returns their results in rank order.

    Each worker's BLAS is limited to ``blas_threads``. ``spin=False``: an early arrival at
    a collective sleeps at once -- where collectives wait on progress threads while the
    workers compute (overlap), a spinning one would take a computing worker's core. If a worker raises, the others are
    released from their collectives and a :class:`CommError` naming the worker is raised.
    """
    hub = ThreadsHub(size, timeout, SPIN_SECONDS if spin else 0.0)
    results: list = [None] * size
    errors: list[tuple[int, BaseException]] = []
    previous = _core.get_blas_threads()
    _core.set_blas_threads(blas_threads)

    gate = WorkerGate()

    def work(rank: int) -> None:
        if not gate.enter():  # the run was stopped before this thread began
            return
        try:
            results[rank] = target(Comm(ThreadsTransport(hub, rank)))
        except BaseException as exc:  # noqa: BLE001 - reported below with the rank
            errors.append((rank, exc))
            hub.abort()
        finally:
            gate.leave()

    threads = [threading.Thread(target=work, args=(r,), name=f"parrbm-worker-{r}") for r in range(size)]
    try:
        try:
            for t in threads:
                t.start()
            _join_or_stop_hung(threads, hub, errors, timeout)
        except BaseException:
            # Ctrl-C or SIGTERM: the workers stop at their next collective, and the
            # exception leaves only once they have, so that none is still inside the core
            # when the interpreter exits (nor runs its epoch to the end after Ctrl-C).
            stop_workers(hub.abort, threads, timeout + 5.0, gate)
            raise
    finally:
        if previous > 0:
            _core.set_blas_threads(previous)
    if errors:
        # The first failure is the cause; the others are peers released by it.
        rank, exc = min(errors, key=lambda e: (not isinstance(e[1], WorkerHung), isinstance(e[1], CommError)))
        raise CommError(f"worker {rank} failed: {type(exc).__name__}: {exc}") from exc
    return results
