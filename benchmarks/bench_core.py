"""CD-1 step of the C++ core against its baselines, all with one BLAS thread.

For each (V, H, m) the same run measures, interleaved round by round so machine noise
hits all of them alike:

  core        parrbm's fused serial CD-1 step (CDTrainer32.step), float32; on binary
              data both statistics are counted with AND + popcount (no GEMM)
  core dense  the same step forced to compute the statistics with one GEMM
              (binary_statistics=False): the path real-valued data takes
  gemm bound  only the GEMMs that step makes, on the same BLAS: x W, h W^T, v' W and the
              statistics [x; v']^T [h; -h'] straight into W (depth 2m) -- the floor
  numpy       a plain numpy float32 CD-1 (five matmuls, sampled states)
  sklearn     scikit-learn's BernoulliRBM.partial_fit on one minibatch (float32 input)

and prints medians and the ratios: bound/core and bound/dense (target >= 0.90),
numpy/core and sklearn/core (target >= 3).

    python benchmarks/bench_core.py [--sizes 784x500x100,...] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

# One BLAS thread for every library, before any of them loads.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.neural_network import BernoulliRBM  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from parrbm import _core  # noqa: E402

DEFAULT_SIZES = [(784, 500, 100), (3072, 1000, 100), (8000, 2500, 100)]
LR = 0.05


def _sigm(x):
    # exp(-x) overflows to inf for x < -88 (float32): the sigmoid is then 0, as it should
    # be, and the overflow is no news worth a warning per call
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


class NumpyCD1:
    """Textbook float32 CD-1 in numpy: what a user writes without parrbm."""

    def __init__(self, V, H, rng):
        self.W = (0.01 * rng.standard_normal((V, H))).astype(np.float32)
        self.b = np.zeros(V, np.float32)
        self.c = np.zeros(H, np.float32)
        self.rng = rng

    def step(self, X):
        f32 = np.float32
        ph = _sigm(X @ self.W + self.c)
        h = (self.rng.random(ph.shape, dtype=f32) < ph).astype(f32)
        pv = _sigm(h @ self.W.T + self.b)
        v = (self.rng.random(pv.shape, dtype=f32) < pv).astype(f32)
        ph2 = _sigm(v @ self.W + self.c)
        h2 = (self.rng.random(ph2.shape, dtype=f32) < ph2).astype(f32)
        a = f32(LR / X.shape[0])
        self.W += a * (X.T @ h - v.T @ h2)
        self.b += a * (X.sum(0) - v.sum(0))
        self.c += a * (h.sum(0) - h2.sum(0))


class GemmBound:
    """The GEMMs of one fused CD-1 step and nothing else."""

    def __init__(self, V, H, m, X, rng):
        f = np.float32
        self.W = (0.01 * rng.standard_normal((V, H))).astype(f)
        self.left = np.zeros((2 * m, V), f)
        self.left[:m] = X
        self.left[m:] = rng.random((m, V)) < 0.5
        self.right = (rng.random((2 * m, H)) < 0.5).astype(f)
        self.right[m:] *= -1
        self.pre = np.zeros((m, H), f)
        self.m = m

    def step(self):
        m, g = self.m, _core.gemm
        g(self.left[:m], self.W, self.pre)
        g(self.right[:m], self.W, self.left[m:], trans_b=True)
        g(self.left[m:], self.W, self.pre)
        g(self.left, self.right, self.W, alpha=LR / m, beta=1.0, trans_a=True)


def measure(V, H, m, rounds, warmup=2):
    rng = np.random.default_rng(0)
    X = (rng.random((m, V)) < 0.5).astype(np.float32)

    core = _core.CDTrainer32(V, H, m, learning_rate=LR, seed=1)
    core.W[...] = (0.01 * rng.standard_normal((V, H))).astype(np.float32)
    dense = _core.CDTrainer32(V, H, m, learning_rate=LR, seed=1, binary_statistics=False)
    dense.W[...] = core.W
    bound = GemmBound(V, H, m, X, rng)
    plain = NumpyCD1(V, H, np.random.default_rng(2))
    sk = BernoulliRBM(n_components=H, learning_rate=LR, batch_size=m, random_state=3)
    sk.partial_fit(X)

    step_no = [0]

    def core_step():
        core.step(X, step_no[0])
        step_no[0] += 1

    def dense_step():
        dense.step(X, step_no[0])

    runs = {
        "core": core_step,
        "core dense": dense_step,
        "gemm bound": bound.step,
        "numpy": lambda: plain.step(X),
        "sklearn": lambda: sk.partial_fit(X),
    }
    times = {k: [] for k in runs}
    for r in range(warmup + rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", help="comma-separated VxHxm, default: " + ",".join("x".join(map(str, s)) for s in DEFAULT_SIZES)
    )
    ap.add_argument("--rounds", type=int, default=0, help="timed rounds per size (default: by size)")
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run, noisy figures)")
    args = ap.parse_args(argv)
    sizes = DEFAULT_SIZES
    if args.sizes:
        sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]

    _core.set_blas_threads(1)
    print(f"BLAS: {_core.blas_info()['config']}; 1 thread everywhere; float32; medians")
    header = (
        f"{'V x H x m':>16} {'core ms':>8} {'dense ms':>9} {'bound ms':>9} {'numpy ms':>9}"
        f" {'sklearn ms':>10} {'bound/core':>11} {'bound/dense':>12} {'numpy/core':>11}"
        f" {'sklearn/core':>13}"
    )
    print(header)
    ok = True
    with threadpool_limits(limits=1):
        for V, H, m in sizes:
            flops = 2.0 * 5 * V * H * m
            rounds = args.rounds or (3 if args.quick else max(7, min(41, int(4e11 / flops))))
            t = measure(V, H, m, rounds)
            r_bound = t["gemm bound"] / t["core"]
            r_dense = t["gemm bound"] / t["core dense"]
            r_np = t["numpy"] / t["core"]
            r_sk = t["sklearn"] / t["core"]
            ok &= r_bound >= 0.90 and r_dense >= 0.90 and r_sk >= 3.0
            print(
                f"{f'{V}x{H}x{m}':>16} {1e3 * t['core']:>8.2f} {1e3 * t['core dense']:>9.2f} "
                f"{1e3 * t['gemm bound']:>9.2f} {1e3 * t['numpy']:>9.2f} {1e3 * t['sklearn']:>10.2f} "
                f"{r_bound:>11.3f} {r_dense:>12.3f} {r_np:>11.2f} {r_sk:>13.2f}",
                flush=True,
            )
    print("targets (bound/core and bound/dense >= 0.90, sklearn/core >= 3): " + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
