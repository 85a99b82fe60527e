"""What overlap costs and what it hides: per-step time of a strategy in lockstep, overlapped
with its cases whole (chunk count 0 here: ``overlap: true``) and in 2, 4 and 8 chunks, with
each run's compute, busy and exposed communication per step.

The quick model (V=1024, H=2048, m=200, float32, binary), one BLAS thread a worker, 2
epochs of --steps steps (the first warms up). Chunk counts run round-robin, --repeats
times; the table gives medians and each count's ratio to lockstep measured in the same
run. At --workers 1 nothing moves: the figures are the chunking's own cost (every product
of a chunk packs the whole weight block again).

    python benchmarks/bench_overlap.py [--strategy green-only] [--transport threads]
        [--workers 2] [--chunks 1 0 2 4 8] [--repeats 3] [--steps 20] [--bandwidth 105MB/s]

``--bandwidth`` puts each tcp or mpi worker on an emulated host whose link is shaped to it
(latency 0.091 ms, the paper's network; needs root or CAP_NET_ADMIN).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from parrbm.config import CDSpec, ModelState  # noqa: E402
from parrbm.harness.runner import ParallelRunner  # noqa: E402
from parrbm.strategies import StrategyOptions  # noqa: E402


def one_fit(
    spec: CDSpec,
    X: np.ndarray,
    strategy: str,
    transport: str,
    K: int,
    chunks: int,
    steps: int,
    bandwidth: float | None = None,
) -> tuple[float, float, float, float]:
    """(median step, compute, busy, exposed) in seconds per step of the second epoch's fit."""
    from parrbm.harness.network import LinkSpec

    network = LinkSpec(bandwidth, 0.091e-3) if bandwidth else None
    runner = ParallelRunner(
        spec,
        ModelState.initial(spec),
        strategy,
        K,
        transport,
        StrategyOptions(sync_every=40, overlap_chunks=max(chunks, 1), overlap=chunks != 1),
        network=network,
    )
    order = np.arange(steps * spec.batch_size, dtype=np.int64)
    try:
        runner.run(X, order, 0)
        runner.run_again(X, order, steps)
    finally:
        runner.close()
    s = runner.comm_stats()
    n = runner.steps
    slowest = np.max(np.array(runner.step_seconds), axis=0)
    compute = float(np.mean([w["compute_seconds"] for w in s["by_worker"]])) / n
    return (
        float(np.median(slowest[steps:])),
        compute,
        s["overlap"]["busy_seconds"] / n,
        s["overlap"]["exposed_seconds"] / n,
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="green-only")
    ap.add_argument("--transport", default="threads")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[1, 0, 2, 4, 8],
        help="1: lockstep; 0: overlapped, the cases whole; N: N chunks",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--bandwidth", help="emulated hosts' links, e.g. 105MB/s (tcp and mpi)")
    args = ap.parse_args(argv)
    from parrbm.units import parse_bandwidth

    bandwidth = parse_bandwidth(args.bandwidth) if args.bandwidth else None
    V, H, m = 1024, 2048, 200
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, learning_rate=0.05, seed=0, dtype="float32")
    X = (np.random.default_rng(0).random((args.steps * m, V)) < 0.5).astype(np.float32)
    chunks = sorted(set([1, *args.chunks]), key=lambda c: (c != 1, c))
    figures: dict[int, list] = {c: [] for c in chunks}
    for _ in range(args.repeats):
        for c in chunks:
            figures[c].append(one_fit(spec, X, args.strategy, args.transport, args.workers, c, args.steps, bandwidth))
    med = {c: np.median(np.array(v), axis=0) for c, v in figures.items()}
    print(
        f"{V} x {H} binary RBM, float32, minibatch {m}, {args.strategy} K = {args.workers} on "
        f"{args.transport}"
        + (f" at {args.bandwidth}" if args.bandwidth else "")
        + f"; medians of {args.repeats} round-robin fits, ms a step"
    )
    print(f"{'chunks':>6}{'step':>8}{'vs lockstep':>13}{'compute':>9}{'busy':>8}{'exposed':>9}{'hidden':>8}")
    for c in chunks:
        step, compute, busy, exposed = med[c] * 1e3
        hidden = max(0.0, 1 - exposed / busy) if busy > 0 else 0.0
        print(
            f"{'whole' if c == 0 else c:>6}{step:>8.1f}{step / (med[1][0] * 1e3):>12.2f}x{compute:>9.1f}{busy:>8.1f}{exposed:>9.1f}"
            f"{hidden:>8.0%}"
        )


if __name__ == "__main__":
    main()
