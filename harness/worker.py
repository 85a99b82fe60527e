"""The worker process of the tcp and mpi transports.

    python -m parrbm.harness.worker --job DIR --transport mpi
    python -m parrbm.harness.worker --job DIR --transport tcp --rank R --size K

The harness writes DIR (job.json, state-0/) and starts the workers itself, on this
machine or its emulated hosts (workers on other hosts: :mod:`parrbm.harness.remote`, no
file). The workers then serve one command after another (DIR/cmd-N.json: epoch,
gather, load, finish, local, restore, stop) for the whole fit; each answers DIR/result-N-R.json (for
gather and epoch, rank 0 also writes the gathered model to DIR/model-N/), or writes
DIR/error-R.txt and exits.

The tcp form reads the run's secret from standard input (``SECRET <hex>``), prints
``PORT n`` once it listens, then reads the peers' addresses, one JSON line
``[[host, port], ...]``, from standard input.

PARRBM_FAULT=kill:R:S, hang:R:S or stop:R:S makes worker R kill itself, hang or stop
itself with SIGSTOP at the start of step S; stop-in:R:S stops it inside the first
collective of step S (after it has told the launcher it entered it); slow:R:MS makes
worker R sleep MS milliseconds before every step (on threads too) -- the
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


FAULT_FORMS = ("kill:R:S, hang:R:S, stop:R:S or stop-in:R:S (worker R at step S, integers >= 0), "
               "or slow:R:MS (worker R sleeps MS >= 0 milliseconds before every step)")


def fault_spec() -> tuple[str, int, float] | None:
    """PARRBM_FAULT as (kind, rank, step or milliseconds), or None when unset; ValueError
    naming the variable and the accepted forms when it is malformed (checked by the
    launcher before any worker starts)."""
    spec = os.environ.get("PARRBM_FAULT")
    if not spec:
        return None
    parts = spec.split(":")
    bad = ValueError(f"PARRBM_FAULT={spec!r:.80} is malformed; accepted: {FAULT_FORMS}")
    if len(parts) != 3 or parts[0] not in ("kill", "hang", "stop", "stop-in", "slow"):
        raise bad
    try:
        rank = int(parts[1])
        value = float(parts[2]) if parts[0] == "slow" else int(parts[2])
    except ValueError:
        raise bad from None
    if rank < 0 or not (0 <= value < float("inf")):
        raise bad
    return parts[0], rank, value


def _fault(rank: int, transport):
    """The PARRBM_FAULT hook of this worker: a function of the step index, or None."""
    spec = fault_spec()
    if spec is None:
        return None
    what, r, s = spec
    if r != rank:
        return None

    if what == "slow":
        return slow_hook(rank)

    def fault(i: int) -> None:
        if i == int(s):
            if what == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if what == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            if what == "stop-in":
                _stop_inside_next_collective(transport)
            while what == "hang":
                time.sleep(1)

    return fault


def slow_hook(rank: int):
    """PARRBM_FAULT=slow:R:MS: worker R sleeps MS milliseconds before every step (a
    straggler, whose peers then wait for it), or None for other workers and faults."""
    spec = fault_spec()
    if spec is None or spec[0] != "slow" or spec[1] != rank:
        return None
    seconds = spec[2] / 1e3

    def slow(i: int) -> None:
        time.sleep(seconds)

    return slow


def _inject_fault(worker, fault) -> None:
    """The fault runs at the start of ``worker.step``."""
    if fault is None:
        return
    step = worker.step

    def faulty(X, i):
        fault(i)
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
        print(f"parrbm worker on {socket.gethostname()}: no job at {args.job} (this form serves the workers "
              f"parrbm starts on its own machine; on other hosts, parrbm starts python -m "
              f"parrbm.harness.remote, which takes its job over its connection)", file=sys.stderr)
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
            listen = job["listen_at"][rank] if job.get("listen_at") else job["listen"]
            listener = socket.create_server((listen, 0))
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
    """Serve the launcher's commands until ``stop``: the worker and everything it holds
    live from the first epoch of the fit to the last."""
    from parrbm import _core
    from parrbm.config import CDSpec
    from parrbm.harness.comm import Comm
    from parrbm.harness.launch import read_state, save_state, write_atomic
    from parrbm.harness.runner import worker_class
    from parrbm.strategies.base import StrategyOptions

    _core.set_blas_threads(int(job["blas_threads"]))
    spec = CDSpec(**job["spec"])
    options = StrategyOptions(**job["options"])
    cls = worker_class(job["strategy"], load=True)  # the launcher named it: a plug-in is imported here
    comm = Comm(transport)
    fault = _fault(rank, transport)

    def build(state_file: str):
        w = cls(spec, read_state(job_dir / state_file), rank, job["workers"], options)
        w.comm = comm
        _inject_fault(w, fault)
        return w

    worker = build("state-0")
    data: dict[str, np.ndarray] = {}
    n = 0
    while True:
        n += 1
        cmd = _next_command(job_dir, n, job.get("launcher_pid"))
        if cmd is None or cmd["op"] == "stop":
            return
        op = cmd["op"]
        comm.reset_stats()
        seen, syncs = len(worker.divergence), worker.syncs
        result: dict = {}
        gather = op == "gather" or bool(cmd.get("gather"))  # the model, after the command's own work
        if op == "epoch":
            result = _epoch(worker, comm, cmd, data, job_dir)
            spec = worker.spec  # a reloaded worker keeps the schedule's learning rate
        elif op == "gather":
            pass
        elif op == "load":
            worker = build(cmd["state"])
        elif op == "finish":
            worker.finish()
        elif op == "local":
            counters, arrays = worker.local_state()
            folder = job_dir / f"local-{n}-{rank}"
            folder.mkdir()
            for k, a in arrays.items():
                np.save(folder / f"{k}.npy", a)
            result = {"counters": counters, "arrays": sorted(arrays)}
        elif op == "restore":
            folder = job_dir / f"{cmd['prefix']}{rank}"
            counters = json.loads((folder / "counters.json").read_text())
            worker.restore_local(counters, {p.stem: np.load(p) for p in folder.glob("*.npy")})
        else:
            raise RuntimeError(f"unknown command {op!r}")
        result.update({
            "stats": {p: asdict(s) for p, s in comm.stats.items()},
            "divergence": worker.divergence[seen:], "syncs": worker.syncs - syncs,
            "memory_bytes": worker.memory_bytes(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        })
        if gather:  # bookkeeping: its bytes are not in the answer's stats, but on their own
            before = set(comm.stats)
            model = worker.gathered_model()
            if rank == 0:
                save_state(job_dir / f"model-{n}", model)
            result["admin_stats"] = {p: asdict(s) for p, s in comm.stats.items() if p not in before}
        write_atomic(job_dir / f"result-{n}-{rank}.json", json.dumps(result))


def _epoch(worker, comm, cmd: dict, data: dict[str, np.ndarray], job_dir: Path) -> dict:
    """The ``epoch`` command: the minibatches of the shared data file in the launcher's
    order, step by step. ``data`` keeps the current
    data file mapped between epochs."""
    from parrbm.config import CDSpec
    from parrbm.harness.runner import train_on

    new_spec = CDSpec(**cmd["spec"])
    if new_spec != worker.spec:  # a schedule's next learning rate
        worker.spec = new_spec
    if cmd["data"] not in data:
        data.clear()
        data[cmd["data"]] = np.load(job_dir / cmd["data"], mmap_mode="r")
    X = np.asarray(data[cmd["data"]])
    order = np.load(job_dir / cmd["order"])
    m = worker.spec.batch_size
    batches = [order[s:s + m] for s in range(0, len(order), m)]
    errors, seconds, traffic, _, wire = train_on(worker, comm, X, batches, cmd["first_step"])
    return {"errors": [float(e) for e in errors], "seconds": seconds, "traffic": traffic, "wire": wire}


def _next_command(job_dir: Path, n: int, launcher_pid: int | None) -> dict | None:
    """Command n, or None when the launcher is gone (it was killed outright)."""
    path = job_dir / f"cmd-{n}.json"
    checked = time.monotonic()
    while not path.exists():
        time.sleep(0.002)
        if launcher_pid and time.monotonic() - checked > 0.5:
            checked = time.monotonic()
            try:
                os.kill(launcher_pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
    return json.loads(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
