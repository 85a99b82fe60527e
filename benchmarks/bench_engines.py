"""One engine on every transport: the per-step time of each strategy on threads, tcp and
mpi, with the core's epoch loop (engine "native") and with the Python strategy modules
(engine "python").

The quick model (V=1024, H=2048, m=200, float32, binary), K = 2 workers with one BLAS
thread each, 2 epochs of 40 steps. A step's time is its slowest worker's; the table gives
the median over the steps of the last epoch, the median over --repeats fits. The baseline,
measured in the same run, is the serial trainer on one BLAS thread (its steps timed inside
the core, as the workers' are); each row also gives its ratio to the same strategy on
threads with the native engine, the transport-only cost. The repeats run round-robin over
every row, so a busy spell of a shared machine spoils one repeat of a few rows, not a row.

    python benchmarks/bench_engines.py [--repeats 3] [--strategies green-only ...]
                                       [--transports threads tcp mpi] [--quick]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parrbm import _core  # noqa: E402
from parrbm.config import CDSpec, ModelState  # noqa: E402
from parrbm.harness.runner import ParallelRunner  # noqa: E402
from parrbm.strategies import PARALLEL_STRATEGIES, SerialStrategy, StrategyOptions  # noqa: E402


def serial_step(spec: CDSpec, X: np.ndarray, steps: int) -> float:
    _core.set_blas_threads(1)
    s = SerialStrategy(spec, ModelState.initial(spec))
    _, times = s.run_timed(X, np.arange(len(X), dtype=np.int64), 0)
    return float(np.median(times[steps:]))


def parallel_step(spec: CDSpec, X: np.ndarray, strategy: str, transport: str, engine: str,
                  steps: int) -> float:
    runner = ParallelRunner(spec, ModelState.initial(spec), strategy, 2, transport,
                            StrategyOptions(sync_every=40), engine=engine)
    order = np.arange(len(X), dtype=np.int64)
    try:
        runner.run(X, order[:steps * spec.batch_size], 0)  # the first epoch warms up
        runner.run_again(X, order[:steps * spec.batch_size], steps)
    finally:
        runner.close()
    slowest = np.max(np.array(runner.step_seconds), axis=0)
    return float(np.median(slowest[steps:]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=list(PARALLEL_STRATEGIES))
    ap.add_argument("--transports", nargs="+", default=["threads", "tcp", "mpi"])
    ap.add_argument("--quick", action="store_true", help="a small model, one repeat, for a smoke run")
    args = ap.parse_args(argv)
    V, H, m, steps = (256, 512, 50, 10) if args.quick else (1024, 2048, 200, 40)
    if args.quick:
        args.repeats = 1
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, learning_rate=0.05, seed=0, dtype="float32")
    X = (np.random.default_rng(0).random((2 * steps * m, V)) < 0.5).astype(np.float32)
    rows = [(s, t, e) for s in args.strategies for t in args.transports for e in ("native", "python")]
    times: dict = {row: [] for row in [("serial", None, "native"), *rows]}
    for _ in range(args.repeats):
        times[("serial", None, "native")].append(serial_step(spec, X, steps))
        for row in rows:
            times[row].append(parallel_step(spec, X, *row, steps))
    median = {row: float(np.median(v)) for row, v in times.items()}
    serial = median[("serial", None, "native")]
    print(f"{V} x {H} binary RBM, float32, minibatch {m}, K = 2, one BLAS thread a worker; "
          f"medians of {args.repeats} fits of 2 x {steps} steps")
    print(f"serial, 1 BLAS thread (baseline): {serial * 1e3:.1f} ms a step")
    print(f"{'strategy':<21}{'transport':<10}{'engine':<8}{'step ms':>9}{'vs serial':>11}"
          f"{'vs threads native':>19}")
    for strategy, transport, engine in rows:
        t = median[(strategy, transport, engine)]
        base = median.get((strategy, "threads", "native"))
        rel = f"{t / base:.2f}x" if base else "-"
        print(f"{strategy:<21}{transport:<10}{engine:<8}{t * 1e3:>9.1f}{serial / t:>10.2f}x{rel:>19}")

if __name__ == "__main__":
    main()
