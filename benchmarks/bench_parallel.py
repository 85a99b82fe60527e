"""K workers against serial CD-1 for every strategy, on the threads transport.

A compute-bound model (default V=4000, H=8000, m=200), binary and Gaussian visible units,
float32, one BLAS thread per worker. For each strategy it prints the median step time and
its speedup against two baselines measured in the same run: the serial trainer on one
BLAS thread (one core, a worker's share) and the serial trainer on K BLAS threads (the
K cores the workers use: what a user with K cores would run instead). Then the
efficiency (speedup over one core / K), the share of the slowest worker's step spent
communicating and waiting, and the step time over the strategy's own compute bound (its
slowest worker's compute alone). unit-partitioned syncs every 8000 cases (the paper's
choice); MB/step is a mean step's bytes, syncs included at their period.

    python benchmarks/bench_parallel.py [--visible 4000 --hidden 8000 --batch 200]
                                        [--workers 2] [--steps 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parrbm import _core  # noqa: E402
from parrbm.config import CDSpec, ModelState  # noqa: E402
from parrbm.harness.runner import ParallelRunner  # noqa: E402
from parrbm.strategies import PARALLEL_STRATEGIES, SerialStrategy, StrategyOptions  # noqa: E402


def serial_median(spec, X, steps, warmup, blas_threads):
    _core.set_blas_threads(blas_threads)
    s = SerialStrategy(spec, ModelState.initial(spec))
    # every step on the first minibatch, timed inside the core as the workers' steps are
    order = np.tile(np.arange(spec.batch_size, dtype=np.int64), warmup + steps)
    _, times = s.run_timed(X, order, 0)
    _core.set_blas_threads(1)
    return float(np.median(times[warmup:]))


def parallel_run(spec, X, strategy, K, steps, warmup, options):
    r = ParallelRunner(spec, ModelState.initial(spec), strategy, K, options=options)
    order = np.arange((warmup + steps) * spec.batch_size, dtype=np.int64) % X.shape[0]
    r.run(X, order, 0)
    per_step = np.max(np.array(r.step_seconds), axis=0)[warmup:]  # slowest worker each step
    stats = r.comm_stats()
    slow = max(stats["by_worker"], key=lambda w: w["step_seconds"])
    total = slow["step_seconds"]
    return {
        "step": float(np.median(per_step)),
        "comm_share": slow["comm_seconds"] / total,
        "wait_share": slow["wait_seconds"] / total,
        "bound_ratio": max(w["step_seconds"] for w in stats["by_worker"])
        / max(w["compute_seconds"] for w in stats["by_worker"]),
        # a mean step's bytes: the syncs that fell in the run spread over its steps
        "bytes": sum(w["bytes_sent"] for w in stats["by_worker"]) / (steps + warmup),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visible", type=int, default=4000)
    ap.add_argument("--hidden", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a small model, for a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.visible, args.hidden, args.batch, args.steps = 800, 1600, 100, 3
    K, warmup = args.workers, 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"V={args.visible} H={args.hidden} m={args.batch} K={K} float32, threads transport, "
        f"1 BLAS thread per worker, {cores} cores; medians over {args.steps} steps"
    )
    if K > cores:
        print(f"note: K={K} exceeds the {cores} cores: measured speedup says nothing here")
    rng = np.random.default_rng(0)
    for visible in ("binary", "gaussian"):
        spec = CDSpec(
            n_visible=args.visible,
            n_hidden=args.hidden,
            batch_size=args.batch,
            visible=visible,
            seed=1,
            learning_rate=0.01 if visible == "gaussian" else 0.1,
        )
        n = args.batch * 4
        X = (
            (rng.random((n, args.visible)) < 0.5) if visible == "binary" else rng.standard_normal((n, args.visible))
        ).astype(np.float32)
        t_serial = serial_median(spec, X, args.steps, warmup, 1)
        t_serial_k = serial_median(spec, X, args.steps, warmup, K)
        print(
            f"\n{visible} visible units: serial on 1 BLAS thread {t_serial * 1e3:.0f} ms/step, on {K} BLAS "
            f"threads {t_serial_k * 1e3:.0f} ms/step ({t_serial / t_serial_k:.2f}x)"
        )
        print(
            f"{'strategy':<22}{'ms/step':>9}{'vs 1 core':>10}{f'vs {K} cores':>11}{'effic.':>8}{'comm %':>8}"
            f"{'wait %':>8}{'step/compute':>14}{'MB/step':>10}"
        )
        best, best_all = 0.0, 0.0
        for name in PARALLEL_STRATEGIES:
            # unit-partitioned syncs every 8000 cases, as in the paper
            variants = [(name, StrategyOptions(sync_every=max(1, 8000 // args.batch)))]
            if name == "per-update-sync":
                variants.append(("per-update (shared W)", StrategyOptions(shared_weights=True)))
            for label, opts in variants:
                r = parallel_run(spec, X, name, K, args.steps, warmup, opts)
                speedup, speedup_all = t_serial / r["step"], t_serial_k / r["step"]
                best, best_all = max(best, speedup), max(best_all, speedup_all)
                print(
                    f"{label:<22}{r['step'] * 1e3:>9.0f}{speedup:>10.2f}{speedup_all:>11.2f}{speedup / K:>8.2f}"
                    f"{100 * r['comm_share']:>8.1f}{100 * r['wait_share']:>8.1f}"
                    f"{r['bound_ratio']:>14.3f}{r['bytes'] / 1e6:>10.2f}",
                    flush=True,
                )
        print(
            f"best at K={K}: {best_all:.2f}x the serial trainer on the same {K} cores ({K} BLAS threads); "
            f"{best:.2f}x the serial trainer on one core"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
