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
