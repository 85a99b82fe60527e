"""What driving worker processes costs: the time from building a fit to the end of its
first step (the workers start, the job and the data reach them), the round trip of one
command (an epoch of one step on a tiny model: the command, the step, the answer and
the gathered model), and the time to stop them, on tcp and mpi, with ``--against``
against another installation of parrbm measured in the same run.

Every measurement runs in a fresh process (this environment's Python, or the
``--against`` one); the repeats go round-robin over the transports and both
installations, and the table gives medians.

    python benchmarks/bench_startup.py [--repeats 5] [--transports tcp mpi]
        [--model 64x100x20] [--commands 30] [--against /other/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# Only API every release since the strategies ran on processes has (ParallelRunner's
# positional arguments, run / run_again, close), so an earlier installation runs it as is.
_FIT = r"""
import json, sys, time
import numpy as np
from parrbm.config import CDSpec, ModelState
from parrbm.harness.runner import ParallelRunner
V, H, m, commands, transport = json.loads(sys.argv[1])
spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, learning_rate=0.05, seed=0, dtype="float32")
X = (np.random.default_rng(0).random((m, V)) < 0.5).astype(np.float32)
order = np.arange(m, dtype=np.int64)
t0 = time.perf_counter()
runner = ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, transport)
runner.run(X, order, 0)
first = time.perf_counter() - t0
trips = []
for i in range(commands):
    t = time.perf_counter()
    runner.run_again(X, order, i + 1)
    trips.append(time.perf_counter() - t)
t = time.perf_counter()
runner.close()
print(json.dumps([first, float(np.median(trips)), time.perf_counter() - t]))
"""


def measure(python: str, V: int, H: int, m: int, commands: int, transport: str) -> list[float]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [python, "-c", _FIT, json.dumps([V, H, m, commands, transport])],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"{python}: {transport} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--transports", nargs="+", default=["tcp", "mpi"])
    ap.add_argument("--model", default="64x100x20", help="VxHxm (default: a tiny model)")
    ap.add_argument("--commands", type=int, default=30, help="one-step epochs timed after the first (default 30)")
    ap.add_argument("--against", help="the Python of another parrbm installation, measured alike")
    args = ap.parse_args(argv)
    V, H, m = (int(x) for x in args.model.lower().split("x"))
    pythons = {"this": sys.executable, **({"against": args.against} if args.against else {})}
    got: dict[tuple[str, str], list[list[float]]] = {}
    for rep in range(args.repeats):
        for transport in args.transports:
            for who, python in pythons.items():
                got.setdefault((transport, who), []).append(measure(python, V, H, m, args.commands, transport))
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"K = 2 green-only workers, model {V}x{H}, m = {m}; medians of {args.repeats} fresh processes")
    print(f"{'transport':10} {'install':8} {'build to 1st step':>18} {'one command':>12} {'stop':>8}")
    for transport in args.transports:
        for who in pythons:
            a = np.median(np.array(got[(transport, who)]), axis=0)
            print(f"{transport:10} {who:8} {a[0] * 1e3:15.0f} ms {a[1] * 1e3:9.2f} ms {a[2] * 1e3:5.0f} ms")
        if args.against:
            this, other = (np.median(np.array(got[(transport, w)]), axis=0) for w in ("this", "against"))
            print(
                f"{transport:10} {'ratio':8} {this[0] / other[0]:16.2f}x {this[1] / other[1]:10.2f}x "
                f"{this[2] / other[2]:6.2f}x"
            )


if __name__ == "__main__":
    main()
