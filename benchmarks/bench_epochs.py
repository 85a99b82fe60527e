"""What an epoch costs beyond its steps on the tcp and mpi transports.

The workers of a tcp or mpi fit are started once and serve one command per epoch, so an
extra epoch should cost its steps and little more. On the quick model (V=1024, H=2048,
m=200, 40 steps an epoch, float32, binary) it fits K=2 workers for 1 and for 4 epochs and
prints, per transport and strategy, the extra epoch's wall time, (fit(4) - fit(1)) / 3,
against 40 x the median step of the same fits: the per-epoch overhead ratio (target:
at most 1.10). Medians of --repeats fits.

    python benchmarks/bench_epochs.py [--repeats 3] [--strategies green-only purple-only]
                                      [--transports tcp mpi] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parrbm import RBM  # noqa: E402


def fit_seconds(X, strategy, transport, epochs, m):
    rbm = RBM(
        n_hidden=2048,
        batch_size=m,
        n_iter=epochs,
        learning_rate=0.05,
        random_state=0,
        strategy=strategy,
        workers=2,
        transport=transport,
        progress=False,
    )
    t0 = time.perf_counter()
    rbm.fit(X)
    total = time.perf_counter() - t0
    runner = rbm._strategy
    steps = np.max(np.array(runner.step_seconds), axis=0)
    return total, float(np.median(steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=["green-only", "unit-partitioned"])
    ap.add_argument("--transports", nargs="+", default=["tcp", "mpi"])
    ap.add_argument("--quick", action="store_true", help="one strategy, one repeat, a smaller model")
    args = ap.parse_args()
    V, m, steps = (256, 100, 20) if args.quick else (1024, 200, 40)
    if args.quick:
        args.strategies, args.repeats = args.strategies[:1], 1
    X = (np.random.default_rng(0).random((steps * m, V)) < 0.5).astype(np.float32)
    print(f"{V} x 2048 RBM, minibatch {m}, {steps} steps an epoch, K = 2, medians of {args.repeats} fits")
    print(
        f"{'transport':<10}{'strategy':<21}{'fit(1) s':>10}{'fit(4) s':>10}{'epoch s':>10}"
        f"{f'{steps} steps s':>12}{'overhead':>10}"
    )
    for transport in args.transports:
        for strategy in args.strategies:
            one, four, step = [], [], []
            for _ in range(args.repeats):
                t1, s1 = fit_seconds(X, strategy, transport, 1, m)
                t4, s4 = fit_seconds(X, strategy, transport, 4, m)
                one.append(t1)
                four.append(t4)
                step.append(s4)
            t1, t4, s = float(np.median(one)), float(np.median(four)), float(np.median(step))
            epoch = (t4 - t1) / 3
            print(
                f"{transport:<10}{strategy:<21}{t1:>10.3f}{t4:>10.3f}{epoch:>10.3f}{steps * s:>12.3f}"
                f"{epoch / (steps * s):>9.2f}x"
            )


if __name__ == "__main__":
    main()
