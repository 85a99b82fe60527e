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
"""

from __future__ import annotations

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
    def exchange(self, sends: Sequence[np.ndarray | None],
                 receive: Callable[[int, np.ndarray], None]) -> float:
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

    # ---- accounting ------------------------------------------------------------------

    def _begin(self, phase: str) -> float:
        self.transport.phase = phase
        return time.perf_counter()

    def _record(self, phase: str, t0: float, wait: float, sent: int, recv: int,
                messages: int, logical: int = 0) -> None:
        s = self.stats.setdefault(phase, PhaseStats())
        s.bytes_sent += int(sent)
        s.bytes_recv += int(recv)
        s.messages += int(messages)
        s.calls += 1
        dt = time.perf_counter() - t0
        s.seconds += dt
        s.call_seconds.append(dt)
        s.wait_seconds += wait
        s.logical_bytes_sent += int(logical)
        take_wire = getattr(self.transport, "take_wire", None)
        if take_wire is not None:
            wire, frames = take_wire()
            s.wire_bytes_sent += wire
            s.wire_frames += frames

    def reset_stats(self) -> None:
        self.stats = {}

    # ---- collectives ------------------------------------------------------------------

    def allgather(self, block: np.ndarray, out: np.ndarray, parts: Partition, *, phase: str) -> None:
        """out[:, parts[j]] = block of worker j for every j. block: (m, |part k|) -> out (m, N)."""
        t0 = self._begin(phase)
        block = np.ascontiguousarray(block)
        parts.put(out, self.rank, block)

        def receive(j, buf):
            parts.put(out, j, buf.view(out.dtype).reshape(out.shape[0], parts.size(j)))

        wait = self._send_all(block, receive)
        recv = sum(out.shape[0] * parts.size(j) * out.itemsize for j in self._peers())
        self._record(phase, t0, wait, (self.size - 1) * block.nbytes, recv, self.size - 1)

    def allgather_bits(self, states: np.ndarray, out: np.ndarray, parts: Partition, *,
                       phase: str) -> None:
        """Like :meth:`allgather` for 0/1 states, sent bit-packed: ceil(m n / 8) bytes a block
        (little-endian bit order, row-major, each message padded to a whole byte)."""
        t0 = self._begin(phase)
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
        self._record(phase, t0, wait, (self.size - 1) * packed.nbytes, recv, self.size - 1)

    def reduce_scatter(self, partial: np.ndarray, out: np.ndarray, parts: Partition, *,
                       phase: str) -> None:
        """out = sum over workers j (in rank order) of partial_j[:, parts[rank]].
        partial: (m, N), this worker's addend; out: (m, |part rank|). out must not alias
        partial."""
        t0 = self._begin(phase)
        sends = [None if j == self.rank else np.ascontiguousarray(parts.take(partial, j))
                 for j in range(self.size)]
        own = parts.take(partial, self.rank)
        # A fixed summation order (rank 0 first) gives the same bits on every transport.
        # Contributions are added as they arrive in that order; only one that arrives
        # early is copied aside.
        state = {"next": 0, "started": False}
        early: dict[int, np.ndarray] = {}

        def add(a: np.ndarray) -> None:
            if state["started"]:
                out.__iadd__(a)
            else:
                np.copyto(out, a)
                state["started"] = True

        def drain() -> None:
            while state["next"] < self.size:
                j = state["next"]
                if j == self.rank:
                    add(own)
                elif j in early:
                    add(early.pop(j))
                else:
                    return
                state["next"] += 1

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
        self._record(phase, t0, wait, sent, (self.size - 1) * out.nbytes, self.size - 1)

    def alltoall(self, sends: Sequence[np.ndarray], outs: Sequence[np.ndarray], *, phase: str) -> None:
        """Personalised exchange: outs[j] = what worker j sent to this worker (sends[j] of
        the sender is addressed to j). sends[rank] is copied to outs[rank] locally."""
        t0 = self._begin(phase)
        np.copyto(outs[self.rank], sends[self.rank])
        payload = [None if j == self.rank else np.ascontiguousarray(sends[j]) for j in range(self.size)]

        def receive(j, buf):
            np.copyto(outs[j], buf.view(outs[j].dtype).reshape(outs[j].shape))

        wait = self.transport.exchange(payload, receive)
        sent = sum(a.nbytes for a in payload if a is not None)
        recv = sum(outs[j].nbytes for j in self._peers())
        self._record(phase, t0, wait, sent, recv, self.size - 1)

    def allreduce(self, array: np.ndarray, *, phase: str) -> None:
        """In-place sum over workers of a contiguous array, as reduce-scatter + allgather of
        K near-equal chunks (the bandwidth-optimal pattern of ring all-reduce): every worker
        sends N - n_k + (K - 1) n_k elements, 2 (K - 1) N over all workers."""
        flat = array.reshape(1, -1)
        chunks = Partition.contiguous(flat.shape[1], self.size)
        mine = np.empty((1, chunks.size(self.rank)), array.dtype)
        self.reduce_scatter(flat, mine, chunks, phase=phase)
        self.allgather(mine, flat, chunks, phase=phase)

    def gather(self, array: np.ndarray, *, root: int = 0, phase: str) -> list[np.ndarray] | None:
        """Root receives every worker's array, flattened, in rank order (sizes may differ
        between workers); the others get None."""
        t0 = self._begin(phase)
        array = np.ascontiguousarray(array)
        result: list[np.ndarray | None] = [None] * self.size
        if self.rank == root:
            result[root] = array.ravel().copy()
        sends = [array if (j == root and self.rank != root) else None for j in range(self.size)]

        def receive(j, buf):
            result[j] = buf.view(array.dtype).ravel().copy()

        wait = self.transport.exchange(sends, receive)
        if self.rank == root:
            recv = sum(result[j].nbytes for j in self._peers())
            self._record(phase, t0, wait, 0, recv, 0)
            return result  # type: ignore[return-value]
        self._record(phase, t0, wait, array.nbytes, 0, 1)
        return None

    def bcast(self, array: np.ndarray, *, root: int = 0, phase: str) -> None:
        """array <- root's array, in place."""
        t0 = self._begin(phase)
        is_root = self.rank == root
        sends = [np.ascontiguousarray(array) if (is_root and j != root) else None
                 for j in range(self.size)]

        def receive(j, buf):
            np.copyto(array, buf.view(array.dtype).reshape(array.shape))

        wait = self.transport.exchange(sends, receive)
        if is_root:
            self._record(phase, t0, wait, (self.size - 1) * array.nbytes, 0, self.size - 1)
        else:
            self._record(phase, t0, wait, 0, array.nbytes, 0)

    def barrier(self, *, phase: str) -> None:
        t0 = self._begin(phase)
        wait = self.transport.barrier()
        self._record(phase, t0, wait, 0, 0, 0)

    def shared_sync(self, logical_bytes_sent: int, *, phase: str) -> None:
        """A barrier standing in for a weight exchange that shared memory makes
        unnecessary: records the bytes the exchange would have sent, moves none."""
        t0 = self._begin(phase)
        wait = self.transport.barrier()
        self._record(phase, t0, wait, 0, 0, 0, logical=logical_bytes_sent)

    # ---- helpers ------------------------------------------------------------------------

    def _peers(self):
        return (j for j in range(self.size) if j != self.rank)

    def _send_all(self, payload: np.ndarray, receive) -> float:
        return self.transport.share(np.ascontiguousarray(payload), receive)
