"""The Comm interface: the collectives strategies use, and the one place bytes are counted.

A strategy talks to its peers only through a :class:`Comm`. Each collective is a small
named function (as Megatron's ``mappings.py``) built on one transport primitive,
:meth:`Transport.exchange` (a personalised all-to-all of byte buffers), so a transport
moves bytes and nothing else, and the accounting below is the same on every transport.

"Bytes" are payload bytes a worker delivers to *other* workers (docs/design.md section 6): an
allgather of a b-byte block sends b to each of the K-1 peers, (K-1) b in all. Every call
records, for its phase label: bytes sent and received, messages, calls and the seconds of
each call. Which of those seconds were waiting for peers is decided across the workers,
the same way on every transport (harness/runner.py ``split_waits``).

Non-blocking collectives. ``start_<collective>`` (``start_allgather``,
``start_allgather_bits``, ``start_reduce_scatter``, ``start_alltoall``, ``start_allreduce``)
puts the collective in flight and returns a :class:`Handle`; ``handle.wait()`` completes
it (with ``now=True`` it runs at once, as the blocking call: lockstep). Until then the caller must neither write its send buffer nor read its output. The
collectives of a worker run in the order they were started, on one progress thread of
the worker's own (the paper's reader and writer threads are the transport's): a blocking
collective called while others are in flight first completes them, so every worker
issues the same sequence, as MPI requires of its non-blocking collectives. Two times
are kept per phase, the same way on every transport:

- *busy* (``busy_seconds``): how long its collectives were in progress, from the moment
  each started moving bytes to the moment it completed;
- *exposed* (``seconds``): how long the worker's step was stopped in them -- a blocking
  call's whole duration, or the time ``wait()`` waited for a started one.

The hidden fraction of a phase is 1 - exposed / busy: 0 in lockstep, where every
collective is waited for from start to end.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from parrbm import _core
from parrbm.partition import Partition


class CommError(RuntimeError):
    """A peer failed, hung past the timeout, or sent something unexpected. ``peer``: the
    rank the reporting worker holds responsible, when it knows one."""

    def __init__(self, message: str, peer: int | None = None):
        super().__init__(message)
        self.peer = peer


@dataclass
class PhaseStats:
    bytes_sent: int = 0
    bytes_recv: int = 0
    messages: int = 0
    calls: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0
    # How long the collectives were in progress (``seconds`` is what the step waited for
    # them: the same in lockstep, less when they ran while the worker computed).
    busy_seconds: float = 0.0
    # Bytes a shared-memory variant would have moved but did not (shared weights).
    logical_bytes_sent: int = 0
    # What the transport really wrote (tcp: payload + frame headers), and its frames.
    wire_bytes_sent: int = 0
    wire_frames: int = 0
    # Each call's seconds in order, until the runner splits them into communication and
    # waiting across the workers (harness/runner.py split_waits) and clears them.
    call_seconds: list = field(default_factory=list)

    def add(self, other: "PhaseStats") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)  # call_seconds: the calls in order


class Transport(ABC):
    """Moves buffers between the K workers of one run. No accounting; ``phase`` names
    the collective in progress, for error messages only."""

    rank: int
    size: int
    phase: str = ""

    @abstractmethod
    def exchange(self, sends: Sequence[np.ndarray | None], receive: Callable[[int, np.ndarray], None]) -> float:
        """Send ``sends[j]`` (a C-contiguous array, or None) to every peer j != rank and
        call ``receive(j, buffer)`` for every peer that sent this worker something, while
        the buffer is valid (it may be the peer's own memory). Returns the seconds spent
        waiting for peers."""

    def share(self, payload: np.ndarray, receive: Callable[[int, np.ndarray], None]) -> float:
        """Send the same ``payload`` to every peer (an allgather); a transport with a
        native allgather overrides this."""
        return self.exchange([None if j == self.rank else payload for j in range(self.size)], receive)

    @abstractmethod
    def barrier(self) -> float:
        """Wait for every worker; returns the seconds waited."""


class Handle:
    """A collective in flight (see the module's notes): :meth:`wait` completes it, and
    raises what it raised."""

    __slots__ = ("phase", "_body", "_done", "_error", "_result", "_busy", "_wire", "_comm", "_finished", "_after")

    def __init__(self, comm: "Comm", phase: str, body: Callable[[], tuple], after: Callable[[], None] | None = None):
        self.phase = phase
        self._body = body
        # what completes the collective on the worker's own thread, once its bytes have
        # moved (a reduce-scatter whose own addend the worker computed meanwhile)
        self._after = after
        self._comm = comm
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._result: tuple | None = None
        self._busy = 0.0
        self._wire = (0, 0)
        self._finished = False

    def _run(self) -> None:
        """On the progress thread: move the bytes, time them, take the wire counters."""
        transport = self._comm.transport
        transport.phase = self.phase
        t0 = time.perf_counter()
        try:
            self._result = self._body()
        except BaseException as exc:  # handed to wait(), on the worker's own thread
            self._error = exc
        self._busy = time.perf_counter() - t0
        take_wire = getattr(transport, "take_wire", None)
        if take_wire is not None:
            self._wire = take_wire()
        self._done.set()

    def wait(self) -> None:
        if self._finished:
            return
        self._finished = True
        comm = self._comm
        t0 = time.perf_counter()
        # the transport bounds every collective by its timeout; this bounds the wait for
        # the progress thread itself
        limit = comm.completion_timeout
        done = self._done.wait(limit)
        exposed = time.perf_counter() - t0
        comm._inflight.remove(self)
        if not done:
            raise CommError(f"worker {comm.rank}: collective '{self.phase}' did not complete within {limit:g} s")
        if self._error is not None:
            raise self._error
        if self._after is not None:
            self._after()
        assert self._result is not None  # set by the body, which ran (no error above)
        comm._record(self.phase, exposed, self._busy, *self._result, wire=self._wire)


class _Done:
    """The handle of a collective that ran at once (lockstep)."""

    __slots__ = ()

    def wait(self) -> None:
        return None


DONE = _Done()


class _Both:
    """Two handles completed as one (an allreduce's reduce-scatter and allgather)."""

    __slots__ = ("_pair",)

    def __init__(self, first: Handle | _Done, second: Handle | _Done):
        self._pair = (first, second)

    def wait(self) -> None:
        for h in self._pair:
            h.wait()


#: the interpreter's thread switch interval while a progress thread runs: a worker's own
#: thread, back from a kernel that released the GIL, otherwise waits up to the default
#: 5 ms for a progress thread in Python code between its transfers
SWITCH_INTERVAL = 2e-4


class _SwitchHolders:
    """Who holds the interpreter's switch interval short, and what it was before."""

    users: int = 0
    before: float = 0.0


_switch = _SwitchHolders()
_switch_lock = threading.Lock()


def _hold_switch_interval(on: bool) -> None:
    """Counted over the progress threads of this process: the first sets
    :data:`SWITCH_INTERVAL`, the last gives back what was there."""
    with _switch_lock:
        if on:
            if _switch.users == 0:
                _switch.before = sys.getswitchinterval()
                sys.setswitchinterval(min(SWITCH_INTERVAL, _switch.before))
            _switch.users += 1
        elif _switch.users > 0:
            _switch.users -= 1
            if _switch.users == 0:
                sys.setswitchinterval(_switch.before)


class Comm:
    """Collectives for one worker with byte accounting per phase.

    Arrays are row-major; column blocks follow a :class:`Partition` of the columns (the
    units of the model), so uneven and scattered (random-partition) blocks are handled.
    """

    def __init__(self, transport: Transport):
        self.transport = transport
        self.rank = transport.rank
        self.size = transport.size
        self.stats: dict[str, PhaseStats] = {}
        self._inflight: list[Handle] = []
        self._queue: queue.SimpleQueue | None = None  # the progress thread's, once started
        self._thread: threading.Thread | None = None

    @property
    def completion_timeout(self) -> float | None:
        """How long ``wait()`` waits for the progress thread: the transport's own timeout
        bounds each collective, so this only catches a progress thread that stopped; None
        where the transport has none (mpi: the job's watch bounds a hung collective)."""
        t = getattr(self.transport, "timeout", None) or getattr(getattr(self.transport, "hub", None), "timeout", None)
        return None if t is None else float(t) + 30.0

    # ---- accounting ------------------------------------------------------------------

    def _record(
        self,
        phase: str,
        exposed: float,
        busy: float,
        wait: float,
        sent: int,
        recv: int,
        messages: int,
        logical: int = 0,
        *,
        wire: tuple[int, int] = (0, 0),
    ) -> None:
        s = self.stats.setdefault(phase, PhaseStats())
        s.bytes_sent += int(sent)
        s.bytes_recv += int(recv)
        s.messages += int(messages)
        s.calls += 1
        s.seconds += exposed
        s.call_seconds.append(exposed)
        s.busy_seconds += busy
        s.wait_seconds += wait
        s.logical_bytes_sent += int(logical)
        s.wire_bytes_sent += wire[0]
        s.wire_frames += wire[1]

    def reset_stats(self) -> None:
        self.stats = {}

    # ---- running a collective: now, or in flight ----------------------------------------

    def _now(self, phase: str, body: Callable[[], tuple]) -> None:
        """A blocking collective: those in flight complete first (one order on every
        worker), then this one runs on the caller's thread."""
        while self._inflight:
            self._inflight[0].wait()
        self.transport.phase = phase
        t0 = time.perf_counter()
        result = body()
        dt = time.perf_counter() - t0
        take_wire = getattr(self.transport, "take_wire", None)
        self._record(phase, dt, dt, *result, wire=take_wire() if take_wire is not None else (0, 0))

    def _start(
        self, phase: str, body: Callable[[], tuple], now: bool = False, after: Callable[[], None] | None = None
    ) -> Handle | _Done:
        if now:  # lockstep: the blocking collective, without a hop to the progress thread
            self._now(phase, body)
            return DONE
        handle = Handle(self, phase, body, after)
        if self._thread is None:
            _hold_switch_interval(True)
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._progress, args=(self._queue,), daemon=True, name=f"parrbm-progress-{self.rank}"
            )
            self._thread.start()
        self._inflight.append(handle)
        assert self._queue is not None  # the progress thread's, started above if it was not
        self._queue.put(handle)
        return handle

    @staticmethod
    def _progress(jobs: queue.SimpleQueue) -> None:
        while True:
            handle = jobs.get()
            if handle is None:
                return
            handle._run()

    def wait_all(self) -> None:
        """Complete every collective in flight."""
        while self._inflight:
            self._inflight[0].wait()

    def close(self) -> None:
        """Complete the collectives in flight and stop the progress thread (it starts again
        with the next started collective)."""
        self.wait_all()
        self.abandon()

    def abandon(self) -> None:
        """Stop the progress thread without waiting for what is in flight (a failed step:
        the transport's own timeout or abort ends whatever it is inside)."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread = self._queue = None
            _hold_switch_interval(False)
        self._inflight.clear()

    # ---- collectives ------------------------------------------------------------------

    def allgather(self, block: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str) -> None:
        """out[:, parts[j]] = block of worker j for every j. block: (m, |part k|) -> out (m, N)."""
        self._now(phase, self._allgather(block, out, parts))

    def start_allgather(
        self, block: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str, now: bool = False
    ) -> Handle | _Done:
        return self._start(phase, self._allgather(block, out, parts), now)

    def _allgather(self, block, out, parts):
        def body():
            b = np.ascontiguousarray(block)
            parts.put(out, self.rank, b)

            def receive(j, buf):
                parts.put(out, j, buf.view(out.dtype).reshape(out.shape[0], parts.size(j)))

            wait = self._send_all(b, receive)
            recv = sum(out.shape[0] * parts.size(j) * out.itemsize for j in self._peers())
            return wait, (self.size - 1) * b.nbytes, recv, self.size - 1

        return body

    def allgather_bits(self, states: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str) -> None:
        """Like :meth:`allgather` for 0/1 states, sent bit-packed: ceil(m n / 8) bytes a block
        (little-endian bit order, row-major, each message padded to a whole byte)."""
        self._now(phase, self._allgather_bits(states, out, parts))

    def start_allgather_bits(
        self, states: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str, now: bool = False
    ) -> Handle | _Done:
        return self._start(phase, self._allgather_bits(states, out, parts), now)

    def _allgather_bits(self, states, out, parts):
        def body():
            m = out.shape[0]
            packed = _core.pack_bits(states)
            parts.put(out, self.rank, states)

            def receive(j, buf):
                n_j = parts.size(j)
                target = parts.view(out, j)
                if target is None:  # scattered columns: unpack, then place
                    tmp = np.empty((m, n_j), out.dtype)
                    _core.unpack_bits(buf.view(np.uint8), tmp)
                    parts.put(out, j, tmp)
                else:
                    _core.unpack_bits(buf.view(np.uint8), target)

            wait = self._send_all(packed, receive)
            recv = sum((m * parts.size(j) + 7) // 8 for j in self._peers())
            return wait, (self.size - 1) * packed.nbytes, recv, self.size - 1

        return body

    def reduce_scatter(self, partial: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str) -> None:
        """out = sum over workers j (in rank order) of partial_j[:, parts[rank]].
        partial: (m, N), this worker's addend; out: (m, |part rank|). out must not alias
        partial."""
        self._now(phase, self._reduce_scatter(partial, out, parts))

    def start_reduce_scatter(
        self,
        partial: np.ndarray,
        out: np.ndarray,
        parts: Partition,
        *,
        phase: str,
        now: bool = False,
        own_later: bool = False,
    ) -> Handle | _Done:
        """:meth:`reduce_scatter`, in flight. ``own_later``: the worker's own block of
        ``partial`` (``partial[:, parts[rank]]``) is not computed yet: the other blocks go
        now, and the own block is read, and added in rank order, by :meth:`Handle.wait`
        (the worker computes it meanwhile; the bits are lockstep's)."""
        if own_later and not now:
            body, after = self._reduce_scatter(partial, out, parts, own_later=True)
            return self._start(phase, body, after=after)
        return self._start(phase, self._reduce_scatter(partial, out, parts), now)

    def _reduce_scatter(self, partial, out, parts, own_later: bool = False):
        state = {"next": 0, "started": False, "own": not own_later}
        early: dict[int, np.ndarray] = {}

        def after() -> None:  # on the worker's thread: its own block is there now
            state["own"] = True
            drain()

        def add(a: np.ndarray) -> None:
            if state["started"]:
                out.__iadd__(a)
            else:
                np.copyto(out, a)
                state["started"] = True

        def drain() -> None:
            while state["next"] < self.size:
                j = state["next"]
                if j == self.rank and state["own"]:
                    add(parts.take(partial, self.rank))
                elif j != self.rank and j in early:
                    add(early.pop(j))
                else:
                    return
                state["next"] += 1

        def body():
            sends = [None if j == self.rank else np.ascontiguousarray(parts.take(partial, j)) for j in range(self.size)]
            # A fixed summation order (rank 0 first) gives the same bits on every transport.
            # Contributions are added as they arrive in that order; only one that arrives
            # early is copied aside.

            def receive(j, buf):
                block = buf.view(out.dtype).reshape(out.shape)
                if j == state["next"]:
                    add(block)
                    state["next"] += 1
                    drain()
                else:
                    early[j] = block.copy()

            drain()
            wait = self.transport.exchange(sends, receive)
            drain()
            sent = sum(a.nbytes for a in sends if a is not None)
            return wait, sent, (self.size - 1) * out.nbytes, self.size - 1

        return (body, after) if own_later else body

    def alltoall(self, sends: Sequence[np.ndarray], outs: Sequence[np.ndarray], *, phase: str) -> None:
        """Personalised exchange: outs[j] = what worker j sent to this worker (sends[j] of
        the sender is addressed to j). sends[rank] is copied to outs[rank] locally (unless
        it is None)."""
        self._now(phase, self._alltoall(sends, outs))

    def start_alltoall(
        self, sends: Sequence[np.ndarray], outs: Sequence[np.ndarray], *, phase: str, now: bool = False
    ) -> Handle | _Done:
        return self._start(phase, self._alltoall(sends, outs), now)

    def _alltoall(self, sends, outs):
        def body():
            if sends[self.rank] is not None:  # None: the worker places its own block itself
                np.copyto(outs[self.rank], sends[self.rank])
            payload = [None if j == self.rank else np.ascontiguousarray(sends[j]) for j in range(self.size)]

            def receive(j, buf):
                np.copyto(outs[j], buf.view(outs[j].dtype).reshape(outs[j].shape))

            wait = self.transport.exchange(payload, receive)
            sent = sum(a.nbytes for a in payload if a is not None)
            recv = sum(outs[j].nbytes for j in self._peers())
            return wait, sent, recv, self.size - 1

        return body

    def allreduce(self, array: np.ndarray, *, phase: str) -> None:
        """In-place sum over workers of a contiguous array, as reduce-scatter + allgather of
        K near-equal chunks (the bandwidth-optimal pattern of ring all-reduce): every worker
        sends N - n_k + (K - 1) n_k elements, 2 (K - 1) N over all workers."""
        flat = array.reshape(1, -1)
        chunks = Partition.contiguous(flat.shape[1], self.size)
        mine = np.empty((1, chunks.size(self.rank)), array.dtype)
        self.reduce_scatter(flat, mine, chunks, phase=phase)
        self.allgather(mine, flat, chunks, phase=phase)

    def start_allreduce(
        self, array: np.ndarray, *, phase: str, now: bool = False, parts: Partition | None = None
    ) -> "_Both | _Done":
        """:meth:`allreduce` in flight: its two collectives, one after the other on the
        progress thread; the returned handle completes both. ``parts``: which worker sums
        which elements (default: K near-equal contiguous chunks, so that every link carries
        a share both ways at once)."""
        flat = array.reshape(1, -1)
        chunks = parts if parts is not None else Partition.contiguous(flat.shape[1], self.size)
        if now:
            mine = np.empty((1, chunks.size(self.rank)), array.dtype)
            self.reduce_scatter(flat, mine, chunks, phase=phase)
            self.allgather(mine, flat, chunks, phase=phase)
            return DONE
        mine = np.empty((1, chunks.size(self.rank)), array.dtype)
        first = self._start(phase, self._reduce_scatter(flat, mine, chunks))
        return _Both(first, self._start(phase, self._allgather(mine, flat, chunks)))

    def gather(self, array: np.ndarray, *, root: int = 0, phase: str) -> list[np.ndarray] | None:
        """Root receives every worker's array, flattened, in rank order (sizes may differ
        between workers); the others get None."""
        array = np.ascontiguousarray(array)
        result: list[np.ndarray | None] = [None] * self.size

        def body():
            if self.rank == root:
                result[root] = array.ravel().copy()
            sends = [array if (j == root and self.rank != root) else None for j in range(self.size)]

            def receive(j, buf):
                result[j] = buf.view(array.dtype).ravel().copy()

            wait = self.transport.exchange(sends, receive)
            if self.rank == root:
                return wait, 0, sum(result[j].nbytes for j in self._peers()), 0
            return wait, array.nbytes, 0, 1

        self._now(phase, body)
        return result if self.rank == root else None  # type: ignore[return-value]

    def bcast(self, array: np.ndarray, *, root: int = 0, phase: str) -> None:
        """array <- root's array, in place."""
        is_root = self.rank == root

        def body():
            sends = [np.ascontiguousarray(array) if (is_root and j != root) else None for j in range(self.size)]

            def receive(j, buf):
                np.copyto(array, buf.view(array.dtype).reshape(array.shape))

            wait = self.transport.exchange(sends, receive)
            if is_root:
                return wait, (self.size - 1) * array.nbytes, 0, self.size - 1
            return wait, 0, array.nbytes, 0

        self._now(phase, body)

    def barrier(self, *, phase: str) -> None:
        self._now(phase, lambda: (self.transport.barrier(), 0, 0, 0))

    def shared_sync(self, logical_bytes_sent: int, *, phase: str) -> None:
        """A barrier standing in for a weight exchange that shared memory makes
        unnecessary: records the bytes the exchange would have sent, moves none."""
        self._now(phase, lambda: (self.transport.barrier(), 0, 0, 0, logical_bytes_sent))

    # ---- helpers ------------------------------------------------------------------------

    def _peers(self):
        return (j for j in range(self.size) if j != self.rank)

    def _send_all(self, payload: np.ndarray, receive) -> float:
        return self.transport.share(np.ascontiguousarray(payload), receive)
