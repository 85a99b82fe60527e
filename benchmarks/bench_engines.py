"""One engine on every transport: the per-step time of each strategy on threads, tcp and
mpi, against the serial trainer and, with ``--against``, against another installation of
parrbm (an earlier release in its own environment) measured in the same run.

The quick model (V=1024, H=2048, m=200, float32, binary), K = 2 workers (--workers) with
one BLAS thread each, 2 epochs of 40 steps. A step's time is its slowest worker's; a fit's figure
is the median over the steps of its last epoch, and the table gives the median over
--repeats fits. Every fit runs in a fresh process (this environment's Python, or the
``--against`` one), and the repeats go round-robin over every row and both
installations, so a busy spell of a shared machine spoils one repeat of a few rows, not a
row. The baseline of the "vs serial" column is the serial trainer on one BLAS thread (its
steps timed inside the core, as the workers' are), measured the same way.

    python benchmarks/bench_engines.py [--repeats 3] [--strategies green-only ...]
        [--transports threads tcp mpi] [--model 1024x2048x200] [--against /other/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# One fit, printed as JSON: the median step of the last epoch. Only API that every
# release since the strategies ran on processes has (ParallelRunner's positional
# arguments, run/run_again, step_seconds), so that an earlier installation runs it as is.
_FIT = r"""
import json, os, sys
import numpy as np
from parrbm.config import CDSpec, ModelState
V, H, m, steps, K, strategy, transport = json.loads(sys.argv[1])
spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, learning_rate=0.05, seed=0, dtype="float32")
X = (np.random.default_rng(0).random((2 * steps * m, V)) < 0.5).astype(np.float32)
order = np.arange(steps * m, dtype=np.int64)
if strategy == "serial":
    from parrbm import _core
    from parrbm.strategies import SerialStrategy
    _core.set_blas_threads(1)
    s = SerialStrategy(spec, ModelState.initial(spec))
    _, times = s.run_timed(X, np.arange(len(X), dtype=np.int64), 0)
    print(json.dumps(float(np.median(times[steps:]))))
    sys.exit(0)
from parrbm.harness.runner import ParallelRunner
from parrbm.strategies import StrategyOptions
runner = ParallelRunner(spec, ModelState.initial(spec), strategy, K, transport, StrategyOptions(sync_every=40))
try:
    runner.run(X, order, 0)              # the first epoch warms up
    runner.run_again(X, order, steps)
finally:
    runner.close()
slowest = np.max(np.array(runner.step_seconds), axis=0)
print(json.dumps(float(np.median(slowest[steps:]))))
"""


def fit_seconds(python: str, V: int, H: int, m: int, steps: int, K: int, strategy: str, transport: str | None) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [python, "-c", _FIT, json.dumps([V, H, m, steps, K, strategy, transport])],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"{python}: {strategy} on {transport} failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv=None) -> None:
    from parrbm.strategies import PARALLEL_STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=list(PARALLEL_STRATEGIES))
    ap.add_argument("--transports", nargs="+", default=["threads", "tcp", "mpi"])
    ap.add_argument("--model", default="1024x2048x200", help="VxHxm (default: the quick model)")
    ap.add_argument("--steps", type=int, default=40, help="steps an epoch (default 40)")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="K (default 2; 1: each strategy against the serial trainer it should cost)",
    )
    ap.add_argument("--against", help="the Python of another parrbm installation, measured alongside")
    ap.add_argument("--quick", action="store_true", help="a small model, one repeat, for a smoke run")
    args = ap.parse_args(argv)
    V, H, m = (int(x) for x in args.model.lower().split("x"))
    steps = args.steps
    if args.quick:
        V, H, m, steps, args.repeats = 256, 512, 50, 10, 1
    pythons = {"this": sys.executable, **({"against": args.against} if args.against else {})}
    rows = [("serial", None)] + [(s, t) for s in args.strategies for t in args.transports]
    times: dict = {(who, row): [] for who in pythons for row in rows}
    for _ in range(args.repeats):
        for row in rows:
            for who, python in pythons.items():
                times[(who, row)].append(fit_seconds(python, V, H, m, steps, args.workers, *row))
    median = {key: float(np.median(v)) for key, v in times.items()}
    serial = median[("this", rows[0])]
    print(
        f"{V} x {H} binary RBM, float32, minibatch {m}, K = {args.workers}, one BLAS thread a worker; "
        f"medians of {args.repeats} fits of 2 x {steps} steps, each in a fresh process"
    )
    print(
        f"serial trainer, 1 BLAS thread (baseline): {serial * 1e3:.3g} ms a step"
        + (f" (against: {median[('against', rows[0])] * 1e3:.3g} ms)" if args.against else "")
    )
    head = f"{'strategy':<21}{'transport':<10}{'step ms':>9}{'vs serial':>11}"
    if args.against:
        head += f"{'against ms':>12}{'this/against':>14}"
    print(head)
    for row in rows[1:]:
        t = median[("this", row)]
        line = f"{row[0]:<21}{row[1]:<10}{t * 1e3:>9.3g}{serial / t:>10.2f}x"
        if args.against:
            b = median[("against", row)]
            line += f"{b * 1e3:>12.3g}{t / b:>13.3f}x"
        print(line)


if __name__ == "__main__":
    main()
