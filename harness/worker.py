"""The worker process of the tcp and mpi transports.

    python -m parrbm.harness.worker --job DIR --transport mpi
    python -m parrbm.harness.worker --job DIR --transport tcp --rank R --size K

The harness writes DIR (job.json, data.npy, order.npy, state.npz) and starts the workers
itself; on a cluster, run the mpi form under your own ``mpiexec -n K`` or ``srun`` with
DIR on a shared file system (``parrbm.harness.launch.write_job`` writes one). Each worker
writes DIR/result-R.json (rank 0 also DIR/model.npz), or DIR/error-R.txt on failure.

The tcp form reads the run's secret from standard input (``SECRET <hex>``), prints
``PORT n`` once it listens, then reads the peers' addresses, one JSON line
``[[host, port], ...]``, from standard input.

PARRBM_FAULT=kill:R:S, hang:R:S or stop:R:S makes worker R kill itself, hang or stop
itself with SIGSTOP at the start of step S; stop-in:R:S stops it inside the first
collective of step S (after it has told the launcher it entered it) -- the
fault-injection hook of the harness's own tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def _inject_fault(worker, rank: int, transport) -> None:
    spec = os.environ.get("PARRBM_FAULT")
    if not spec:
        return
    what, r, s = spec.split(":")
    if int(r) != rank:
        return
    step = worker.step

    def faulty(X, i):
        if i == int(s):
            if what == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if what == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            if what == "stop-in":
                _stop_inside_next_collective(transport)
            while what == "hang":
                time.sleep(1)
        return step(X, i)

    worker.step = faulty


def _stop_inside_next_collective(transport) -> None:
    for name in ("exchange", "share", "barrier"):
        if not hasattr(transport, name):
            continue
        inner = getattr(transport, name)

        def entered(*a, _inner=inner):
            if hasattr(transport, "_heartbeat"):
                transport._heartbeat()      # the launcher sees it inside the collective
                transport._heartbeat = lambda: None
            os.kill(os.getpid(), signal.SIGSTOP)
            return _inner(*a)

        setattr(transport, name, entered)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parrbm.harness.worker")
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument("--transport", required=True, choices=["tcp", "mpi"])
    ap.add_argument("--rank", type=int)
    ap.add_argument("--size", type=int)
    args = ap.parse_args(argv)

    rank = args.rank if args.rank is not None else -1
    transport = None

    if not (args.job / "job.json").is_file():
        print(f"parrbm worker on {socket.gethostname()}: no job at {args.job} (with tcp.hosts, "
              f"tcp.job_root must be a directory every host sees at the same path)", file=sys.stderr)
        return 1
    try:
        job = json.loads((args.job / "job.json").read_text())
        if args.transport == "mpi":
            from parrbm.harness.mpi import MPITransport

            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank()
            transport = MPITransport(heartbeat=str(args.job / f"beat-{rank}"))
            # mpiexec reports a dead rank by its PID: let the launcher map it back.
            (args.job / f"pid-{rank}.txt").write_text(str(os.getpid()))
            if transport.size != job["workers"]:
                raise RuntimeError(f"started with {transport.size} MPI ranks, the job has "
                                   f"{job['workers']} workers")
        else:
            from parrbm.harness.tcp import TCPTransport

            word, _, value = sys.stdin.readline().partition(" ")
            if word != "SECRET":
                raise RuntimeError("expected the run's secret on standard input")
            secret = bytes.fromhex(value.strip())
            (args.job / f"pid-{rank}.txt").write_text(str(os.getpid()))
            listener = socket.create_server((job["listen"], 0))
            print(f"PORT {listener.getsockname()[1]}", flush=True)
            addresses = [tuple(a) for a in json.loads(sys.stdin.readline())]
            transport = TCPTransport(rank, args.size, secret, listener, addresses,
                                     timeout=job["timeout"])
        run(job, args.job, rank, transport)
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the launcher, then exit 1
        msg = str(exc) if exc.__class__.__name__ == "CommError" else f"worker {rank} failed: {type(exc).__name__}: {exc}"
        peer = getattr(exc, "peer", None)
        if peer is not None:  # whom this worker holds responsible: the launcher names it
            (args.job / f"blame-{rank}.txt").write_text(str(peer))
        (args.job / f"error-{rank}.txt").write_text(msg)
        if args.transport == "mpi" and transport is not None:
            transport.world.Abort(1)
        return 1
    finally:
        if transport is not None and hasattr(transport, "close"):
            transport.close()


def run(job: dict, job_dir: Path, rank: int, transport) -> None:
    from parrbm import _core
    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.comm import Comm
    from parrbm.harness.launch import read_state
    from parrbm.harness.runner import train_on, worker_class
    from parrbm.strategies.base import StrategyOptions

    _core.set_blas_threads(int(job["blas_threads"]))
    spec = CDSpec(**job["spec"])
    options = StrategyOptions(**job["options"])
    state: ModelState = read_state(job_dir / "state.npz")
    X = np.load(job_dir / "data.npy", mmap_mode="r")
    order = np.load(job_dir / "order.npy")
    m = spec.batch_size
    batches = [order[s:s + m] for s in range(0, len(order), m)]
    worker = worker_class(job["strategy"])(spec, state, rank, job["workers"], options)
    comm = Comm(transport)
    worker.comm = comm
    _inject_fault(worker, rank, transport)
    errors, seconds, traffic, stats, wire = train_on(worker, comm, np.asarray(X), batches, job["first_step"])
    model = worker.gather_model()
    result = {
        "errors": [float(e) for e in errors], "seconds": seconds, "traffic": traffic, "wire": wire,
        "stats": {p: asdict(s) for p, s in comm.stats.items()},
        "divergence": worker.divergence, "syncs": worker.syncs,
        "memory_bytes": worker.memory_bytes(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if rank == 0:
        np.savez(job_dir / "model.npz", **model.arrays())
    (job_dir / f"result-{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
