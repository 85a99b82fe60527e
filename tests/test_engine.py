"""One engine on every transport: each strategy's Python module, run on worker processes
over tcp and mpi, reproduces its run on threads bit for bit -- the same model, errors,
optimiser state and chains, the same bytes phase by phase, the same syncs and drift --
and the threads runs' own machinery (BLAS budget, leaving the core, Ctrl-C)."""

from __future__ import annotations

import numpy as np
import pytest
from support import needs_mpi, sigint_default

from parrbm.config import CDSpec, ModelState
from parrbm.harness.runner import ParallelRunner
from parrbm.strategies import PARALLEL_STRATEGIES, StrategyOptions

FIELDS = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")
COUNTERS = ("bytes_sent", "bytes_recv", "messages", "calls", "logical_bytes_sent")

# Each row switches on a different mix of what the workers branch on.
CONFIGS = [
    dict(dtype="float32", visible="binary", statistics="samples", cd_k=1, persistent=False, momentum=0.0),
    dict(
        dtype="float32",
        visible="binary",
        statistics="probabilities",
        cd_k=1,
        persistent=True,
        momentum=0.5,
        sample_visible=True,
    ),
    dict(dtype="float64", visible="binary", statistics="samples", cd_k=2, persistent=True, momentum=0.9),
    dict(
        dtype="float64",
        visible="gaussian",
        statistics="probabilities",
        cd_k=2,
        persistent=False,
        momentum=0.0,
        gaussian_noise=True,
    ),
    dict(dtype="float32", visible="gaussian", statistics="samples", cd_k=1, persistent=False, momentum=0.5),
]


def options_for(strategy: str, partition: str) -> list[StrategyOptions]:
    if strategy == "parameter-averaging":
        return [
            StrategyOptions(reduce="allreduce"),
            StrategyOptions(reduce="master", average="weights", average_every=2),
        ]
    opts = [StrategyOptions(partition=partition, sync_every=2)]
    if strategy == "per-update-sync" and partition == "contiguous":
        opts.append(StrategyOptions(shared_weights=True))
    return opts


def train(
    strategy: str, K: int, spec: CDSpec, options, X: np.ndarray, perturb: float = 0.0, transport: str = "threads"
):
    runner = ParallelRunner(spec, ModelState.initial(spec), strategy, K, transport, options)
    if perturb:  # one replica apart from its twin by a known amount (rounding alone may give 0)
        runner.workers[0].green[0, 0] += perturb
    rng = np.random.default_rng(1)
    errors, step = [], 0
    for _ in range(2):  # two epochs: the state a worker process carries between them is tested too
        order = rng.permutation(len(X)).astype(np.int64)
        errors.append(runner.run(X, order, step))
        step += -(-len(order) // spec.batch_size)
    runner.close()
    return runner, errors


def assert_same_run(ref: ParallelRunner, ref_errors, nat: ParallelRunner, nat_errors, what: str) -> None:
    """Bit for bit the same model, errors and counts: bytes phase by phase and per worker,
    bytes per step, syncs and drift."""
    for a, b in zip(ref_errors, nat_errors):
        np.testing.assert_array_equal(a, b)
    for f in FIELDS:
        a, b = getattr(ref.state, f), getattr(nat.state, f)
        assert (a is None) == (b is None), f
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{what} {f}")
    rs, ns = ref.comm_stats(), nat.comm_stats()
    assert set(rs["by_phase"]) == set(ns["by_phase"])
    for phase, counters in rs["by_phase"].items():
        for key in COUNTERS:
            assert ns["by_phase"][phase][key] == counters[key], (what, phase, key)
    for key in (
        "bytes_per_step",
        "bytes_per_sync",
        "logical_bytes_per_sync",
        "syncs",
        "replica_divergence",
        "bytes_total",
        "steps",
    ):
        assert ns[key] == rs[key], (what, key)
    assert nat.step_bytes == ref.step_bytes
    for a, b in zip(rs["by_worker"], ns["by_worker"]):
        assert (a["bytes_sent"], a["bytes_recv"], a["messages"]) == (b["bytes_sent"], b["bytes_recv"], b["messages"])


def problem(config: int) -> tuple[CDSpec, np.ndarray]:
    cfg = CONFIGS[config]
    spec = CDSpec(n_visible=13, n_hidden=11, batch_size=7, weight_decay=0.001, learning_rate=0.05, seed=5, **cfg)
    rng = np.random.default_rng(config)
    # 30 cases: the last minibatch is short (2 cases), so with K = 3 a
    # parameter-averaging worker gets none
    X = (rng.random((30, 13)) < 0.4) if cfg["visible"] == "binary" else rng.normal(size=(30, 13))
    return spec, X.astype(cfg["dtype"])


@pytest.mark.parametrize("strategy", list(PARALLEL_STRATEGIES))
@pytest.mark.parametrize(
    "config,transport,K,partition",
    [
        *((c, "tcp", K, p) for c in (0, 1, 2, 3, 4) for K, p in [(2, "contiguous"), (3, "random")]),
        *(needs_mpi(c, "mpi", K, p) for c in (0, 2, 3) for K, p in [(2, "random"), (3, "contiguous")]),
    ],
)
def test_worker_processes_reproduce_the_threads_run(strategy, config, transport, K, partition):
    spec, X = problem(config)
    for options in options_for(strategy, partition):
        if options.shared_weights:
            continue  # one W shared by threads: threads only
        ref, ref_errors = train(strategy, K, spec, options, X)
        run, run_errors = train(strategy, K, spec, options, X, transport=transport)
        assert_same_run(ref, ref_errors, run, run_errors, f"{strategy} {options} on {transport}")
        if transport == "tcp":  # what the socket wrote: the payload and its frame headers, step by step
            assert all(w > b if b else w == 0 for w, b in zip(run.step_wire, run.step_bytes))


def test_unit_partitioned_drift_is_measured_before_each_sync():
    """Replicas drift between syncs (sync_every=3), and the drift is measured before each
    sync. Whether float32 rounding alone makes the two copies differ depends on the BLAS
    kernels, so one copy starts 1e-3 apart."""
    spec = CDSpec(n_visible=10, n_hidden=9, batch_size=5, statistics="probabilities", seed=2, dtype="float32")
    X = np.random.default_rng(0).random((40, 10)).astype(np.float32)
    opts = StrategyOptions(sync_every=3)
    ref, _ = train("unit-partitioned", 2, spec, opts, X, perturb=1e-3)
    drift = [d for w in ref.workers for d in w.divergence]
    assert len(drift) == 2 * ref.workers[0].syncs and ref.workers[0].syncs == 16 // 3
    assert max(drift) == pytest.approx(1e-3, rel=0.05)  # the first sync sees the planted difference


def test_parallel_fit_keeps_the_main_threads_blas_to_the_workers_budget(monkeypatch):
    """Between epochs the main thread's BLAS (monitors, inference) runs on blas_threads, so
    no BLAS pool is left spinning on a core the next epoch's workers need."""
    from threadpoolctl import threadpool_info

    from parrbm import RBM

    seen = []
    original = ParallelRunner.run

    def run(self, X, order, first_step):
        seen.append(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
        return original(self, X, order, first_step)

    monkeypatch.setattr(ParallelRunner, "run", run)
    X = (np.random.default_rng(0).random((40, 12)) < 0.5).astype(np.float32)
    before = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    RBM(n_hidden=6, batch_size=5, n_iter=2, strategy="green-only", workers=2, progress=False, random_state=0).fit(X)
    assert seen == [[1], [1]]
    assert sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}) == before


def test_the_engine_option_is_gone_with_a_clear_message(tmp_path):
    """One engine: a script or a config that still chooses one is told so, by name."""
    from parrbm import RBM
    from parrbm.harness.comparison_config import ConfigError, load_config

    X = (np.random.default_rng(0).random((20, 8)) < 0.5).astype(np.float32)
    for value in ("native", "python", "auto"):
        with pytest.raises(ValueError, match=r"strategy_options\['engine'\] is no longer an option"):
            RBM(
                n_hidden=4, batch_size=5, n_iter=1, strategy="green-only", workers=2, strategy_options={"engine": value}
            ).fit(X)
    path = tmp_path / "old.yaml"
    path.write_text(
        "model: {visible: 8, hidden: 4}\ngrid: {strategy: [green-only], workers: [2]}\n"
        "training: {batch_size: 4, steps: 2, engine: native}\n"
    )
    with pytest.raises(ConfigError, match=r"old.yaml: training.engine: no longer an option"):
        load_config(path)


# ---- leaving the core while the interpreter stops --------------------------------------------

_FINALIZING = """
import os, threading, time
import numpy as np
from parrbm import _core
barrier = _core.Barrier(2)
threading.Thread(target=lambda: barrier.wait(0.3), daemon=True).start()  # times out, alone
a = np.ones((1500, 1500))
threading.Thread(target=lambda: _core.gemm(a, a, np.empty_like(a)), daemon=True).start()
class SlowToGo:  # holds the interpreter in its finalization while the threads come back
    def __del__(self, sleep=time.sleep, write=os.write):
        sleep(1.0)
        write(1, b"finalized\\n")
s = SlowToGo(); s.cycle = s
del s
time.sleep(0.05)
"""


def test_threads_leaving_the_core_during_interpreter_exit_do_not_abort_the_process(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FINALIZING], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and "terminate" not in out.stderr, out.stderr[-500:]
    assert "finalized" in out.stdout  # the threads did come back while the interpreter was stopping


_INTERRUPTED_FIT = """
import sys
import numpy as np
from parrbm import RBM
X = (np.random.default_rng(0).random((60000, 1500)) < 0.3).astype(np.float32)
print("fitting", flush=True)
RBM(n_hidden=1500, n_iter=100, batch_size=20, strategy=sys.argv[1], workers=2, random_state=0,
    progress=False).fit(X)
"""


@pytest.mark.parametrize("strategy", ["green-only", "unit-partitioned", "parameter-averaging"])
def test_ctrl_c_stops_a_threads_fit_at_once(tmp_path, strategy):
    """Ctrl-C stops the K worker threads at their next collective: the process does not
    run the epoch to its end first (also with a second Ctrl-C while it stops)."""
    import signal
    import subprocess
    import sys
    import time

    for second in (None, 0.01):
        proc = subprocess.Popen(
            [sys.executable, "-c", _INTERRUPTED_FIT, strategy],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            preexec_fn=sigint_default,
        )
        assert proc.stdout.readline().strip() == "fitting"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        if second is not None:
            time.sleep(second)
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        assert "KeyboardInterrupt" in err, (second, proc.returncode, err[-800:])
        assert took < 5.0, f"{strategy}: {took:.1f} s from Ctrl-C to exit"  # an epoch here takes 13-25 s
        # An uncaught KeyboardInterrupt ends Python by SIGINT; an abort or a crash at
        # exit (a worker thread left inside the core) would show here instead.
        assert proc.returncode == -signal.SIGINT, (second, proc.returncode, err[-800:])


_INTERRUPTED_MANY = """
import os, random, signal, sys, threading
import numpy as np
from parrbm import RBM
rng = random.Random(0)
X = (np.random.default_rng(0).random((400, 24)) < 0.3).astype(np.float32)
strategies = ["green-only", "unit-partitioned", "parameter-averaging", "purple-only", "per-update-sync"]
stopped = 0
for i in range(int(sys.argv[1])):
    t = threading.Timer(rng.uniform(0.02, 0.3), os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    try:
        RBM(n_hidden=16, n_iter=3000, batch_size=8, strategy=strategies[i % 5], workers=2, progress=False,
            random_state=i).fit(X)
    except KeyboardInterrupt:
        stopped += 1
    t.cancel()
    t.join()
print("stopped", stopped)
"""


@pytest.mark.slow
def test_ctrl_c_mid_collective_never_crashes(tmp_path):
    """Ctrl-C at random moments of 120 small threads fits, each in the middle of its
    collectives: a worker that leaves an exchange on the broken barrier must not free the
    buffers that its peer is still copying from (a segmentation fault, about one run in
    300 of these before the fix), and the process ends normally after them."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_MANY, "120"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        preexec_fn=sigint_default,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-800:])
    assert out.stdout.split() == ["stopped", "120"]  # every fit was interrupted mid-run


def test_the_launcher_keeps_counters_not_replicas_of_process_workers():
    """Worker processes build their own workers: the launcher keeps their counters (K
    replicas of a parameter-averaging model would otherwise sit in it too)."""
    from parrbm.harness.runner import WorkerBook

    spec = CDSpec(n_visible=40, n_hidden=30, batch_size=8, seed=1)
    opts = StrategyOptions(average="weights", average_every=2)
    r = ParallelRunner(spec, ModelState.initial(spec), "parameter-averaging", 3, "tcp", opts)
    assert all(isinstance(w, WorkerBook) for w in r.workers)
    assert not any(isinstance(a, np.ndarray) for w in r.workers for a in vars(w).values())
    counters, arrays = r.local_states()[1]  # before any process ran: the worker as built
    assert counters == {"steps_done": 0} and {"W", "b", "c"} <= set(arrays)
    with pytest.raises(ValueError, match="does not fit"):
        r.restore_local([(counters, {"W": np.zeros((2, 2), np.float32)})] * 3)
    X = (np.random.default_rng(0).random((32, 40)) < 0.5).astype(np.float32)
    try:
        r.run(X, np.arange(32, dtype=np.int64), 0)
    finally:
        r.close()
    s = r.comm_stats()
    assert s["syncs"] == 2 and s["bytes_per_sync"] > 0
    assert all(w["memory_bytes"] > 0 for w in s["by_worker"])  # reported by the processes
    ref = ParallelRunner(spec, ModelState.initial(spec), "parameter-averaging", 3, "threads", opts)
    ref.run(X, np.arange(32, dtype=np.int64), 0)
    np.testing.assert_array_equal(r.state.W, ref.state.W)
