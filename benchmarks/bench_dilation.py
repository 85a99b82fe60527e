"""How faithful time dilation is: each strategy's step at K workers on emulated hosts,
undilated and dilated by each factor (the same hosts on 1/F of a core each, links at 1/F
of the bandwidth, times divided by F), round-robin --repeats times; the table gives the
medians and each dilated step's ratio to the undilated one measured in the same run.

    python benchmarks/bench_dilation.py [--strategies ...] [--workers 2] [--factors 1 2 4]
        [--bandwidth 60MB/s] [--repeats 3] [--steps 12] [--visible 1024 --hidden 2048]

Needs root (network namespaces, veth links, cgroups).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parrbm.config import CDSpec, ModelState  # noqa: E402
from parrbm.harness.runner import ParallelRunner  # noqa: E402
from parrbm.strategies import StrategyOptions  # noqa: E402

FIVE = ["unit-partitioned", "per-update-sync", "purple-only", "green-only", "parameter-averaging"]


def one_fit(
    spec: CDSpec, X: np.ndarray, strategy: str, K: int, F: float, steps: int, warmup: int, bandwidth: float
) -> float:
    """The median of the timed steps (slowest worker), divided by the dilation."""
    from parrbm.harness.network import LinkSpec

    runner = ParallelRunner(
        spec,
        ModelState.initial(spec),
        strategy,
        K,
        "tcp",
        StrategyOptions(sync_every=80),
        network=LinkSpec(bandwidth, 0.091e-3, dilation=F),
        timeout=60 * F,
    )
    order = np.arange((warmup + steps) * spec.batch_size, dtype=np.int64) % X.shape[0]
    try:
        runner.run(X, order, 0)
    finally:
        runner.close()
    slowest = np.max(np.array(runner.step_seconds), axis=0)[warmup:]
    return float(np.median(slowest)) / F


def main(argv=None) -> None:
    from parrbm.units import parse_bandwidth

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=FIVE)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--bandwidth", default="60MB/s")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--visible", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=200)
    a = ap.parse_args(argv)
    spec = CDSpec(n_visible=a.visible, n_hidden=a.hidden, batch_size=a.batch, dtype="float32", seed=1)
    X = (np.random.default_rng(0).random((a.batch * 11, a.visible)) < 0.5).astype(np.float32)
    bw = parse_bandwidth(a.bandwidth)
    times: dict = {}
    for rep in range(a.repeats):
        for s in a.strategies:
            for F in a.factors:
                t = one_fit(spec, X, s, a.workers, F, a.steps, a.warmup, bw)
                times.setdefault((s, F), []).append(t)
                print(f"repeat {rep + 1}: {s} F={F:g}: {t * 1e3:.1f} ms/step", flush=True)
    print(
        f"\n{a.visible} x {a.hidden}, m = {a.batch}, K = {a.workers}, tcp at {a.bandwidth}; "
        f"medians of {a.repeats} round-robin fits, ms a step (dilated back) and the ratio to undilated"
    )
    print(f"{'strategy':22s}" + "".join(f"{'F=' + format(F, 'g'):>18s}" for F in a.factors))
    ratios = []
    for s in a.strategies:
        base = float(np.median(times[(s, a.factors[0])]))
        cells = []
        for F in a.factors:
            med = float(np.median(times[(s, F)]))
            cells.append(f"{med * 1e3:8.1f} ({med / base:5.2f}x)")
            if F != a.factors[0]:
                ratios.append(abs(med / base - 1))
        print(f"{s:22s}" + "".join(f"{c:>18s}" for c in cells))
    if ratios:
        print(f"\n|dilated / undilated - 1|: median {np.median(ratios) * 100:.1f} %, worst {max(ratios) * 100:.1f} %")


if __name__ == "__main__":
    main()
