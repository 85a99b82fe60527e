"""Communication overlapped with computation: non-blocking collectives on every transport,
and ``overlap_chunks`` giving lockstep's results bit for bit with the closed-form bytes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support import mpi_param

from parrbm.analysis import cost
from parrbm.config import CDSpec, ModelState
from parrbm.harness.comm import Comm, CommError, Transport
from parrbm.harness.runner import ParallelRunner
from parrbm.harness.threads import run_threads
from parrbm.partition import Partition
from parrbm.strategies import StrategyOptions
from parrbm.strategies import phases as P
from parrbm.strategies.base import exact_chunks

FIELDS = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")
OVERLAPPING = ["unit-partitioned", "purple-only", "green-only", "per-update-sync", "parameter-averaging"]

# What the steps branch on: dtype, units, statistics, CD-k, persistent chains, momentum.
CONFIGS = [
    dict(dtype="float32", visible="binary", statistics="samples", cd_k=1, persistent=False, momentum=0.0),
    dict(dtype="float32", visible="binary", statistics="probabilities", cd_k=2, persistent=True, momentum=0.5),
    dict(dtype="float64", visible="binary", statistics="samples", cd_k=2, persistent=False, momentum=0.9),
    dict(
        dtype="float64", visible="gaussian", statistics="probabilities", cd_k=1, persistent=False, gaussian_noise=True
    ),
    dict(dtype="float32", visible="gaussian", statistics="samples", cd_k=1, persistent=True, momentum=0.5),
]


def problem(config: int, V: int = 29, H: int = 23, m: int = 40) -> tuple[CDSpec, np.ndarray]:
    cfg = CONFIGS[config]
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, weight_decay=0.001, learning_rate=0.05, seed=7, **cfg)
    rng = np.random.default_rng(config)
    # 3.5 minibatches: the last one is short, and its chunks are cut afresh
    n = 3 * m + m // 2
    X = (rng.random((n, V)) < 0.4) if cfg["visible"] == "binary" else rng.normal(size=(n, V))
    return spec, X.astype(cfg["dtype"])


def fit(strategy, K, spec, X, transport="threads", **options):
    runner = ParallelRunner(
        spec, ModelState.initial(spec), strategy, K, transport, StrategyOptions(sync_every=2, **options), timeout=30.0
    )
    rng = np.random.default_rng(1)
    errors, step = [], 0
    try:
        for _ in range(2):
            order = rng.permutation(len(X)).astype(np.int64)
            errors.append(runner.run(X, order, step))
            step += -(-len(order) // spec.batch_size)
    finally:
        runner.close()
    return runner, errors


def assert_identical(ref, ref_errors, got, got_errors, what):
    for a, b in zip(ref_errors, got_errors):
        np.testing.assert_array_equal(a, b, err_msg=what)
    for f in FIELDS:
        a, b = getattr(ref.state, f), getattr(got.state, f)
        assert (a is None) == (b is None), (what, f)
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{what} {f}")
    rs, gs = ref.comm_stats(), got.comm_stats()
    assert gs["bytes_per_step"] == rs["bytes_per_step"] and gs["bytes_total"] == rs["bytes_total"], what
    assert {p: v["bytes_sent"] for p, v in gs["by_phase"].items()} == {
        p: v["bytes_sent"] for p, v in rs["by_phase"].items()
    }, what
    assert gs["replica_divergence"] == rs["replica_divergence"], what


@pytest.mark.parametrize("strategy", OVERLAPPING)
@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_chunked_steps_are_lockstep_bit_for_bit_on_threads(strategy, config):
    spec, X = problem(config)
    # per-update-sync sends each chunk from one block of its rows: contiguous partitions only
    for K, partition in [(2, "contiguous"), (3, "contiguous" if strategy == "per-update-sync" else "random")]:
        ref, ref_errors = fit(strategy, K, spec, X, partition=partition)
        for how in (dict(overlap=True), dict(overlap_chunks=2), dict(overlap_chunks=3), dict(overlap_chunks=5)):
            got, got_errors = fit(strategy, K, spec, X, partition=partition, **how)
            assert_identical(ref, ref_errors, got, got_errors, f"{strategy} K={K} {partition} {how}")


@pytest.mark.parametrize("transport", ["tcp", mpi_param()])
@pytest.mark.parametrize("strategy", OVERLAPPING)
def test_chunked_steps_are_lockstep_bit_for_bit_on_processes(strategy, transport):
    for config in (0, 1, 3):
        spec, X = problem(config)
        ref, ref_errors = fit(strategy, 3, spec, X)
        for how in (dict(overlap=True), dict(overlap_chunks=3)):
            got, got_errors = fit(strategy, 3, spec, X, transport=transport, **how)
            assert_identical(ref, ref_errors, got, got_errors, f"{strategy} config {config} on {transport} {how}")


@pytest.mark.parametrize("strategy", ["unit-partitioned", "purple-only", "green-only"])
def test_chunked_bytes_equal_the_closed_form_and_calls_count_the_chunks(strategy):
    """Chunks are cut at multiples of 8 cases, so bit-packed chunks add up to the block's
    bytes, 7 x 23 and 3 x 29 bits included (messages not a whole byte). Where the cut
    falls is the BLAS's answer (the finest alignment at which every product rounds as the
    whole block's): 3 chunks of 16 rows where 8- or 16-row cuts round alike, 2 of 24 with
    OpenBLAS's Haswell sgemm on an AMD EPYC; the calls count the chunks the plan has."""
    spec, X = problem(0, m=48)
    runner, _ = fit(strategy, 3, spec, X, overlap_chunks=3)
    model = cost.Model(spec.n_visible, spec.n_hidden)
    stats = runner.comm_stats()
    assert runner.step_bytes[0] == cost.step_traffic(strategy, model, 48, 3).total
    plan = runner.workers[0].chunks(48)
    n = len(plan)
    assert 2 <= n <= 3 and stats["overlap"]["chunks_used"] == n
    assert plan[0].start == 0 and plan[-1].stop == 48 and all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    assert all(r.start % 8 == 0 for r in plan)
    want = cost.step_traffic(strategy, model, 48, 3, options=StrategyOptions(overlap_chunks=n))
    assert runner.step_bytes[0] == want.total
    for phase, calls in want.calls.items():
        assert calls == n
        # the full minibatches' calls (the short ones are cut afresh): per worker
        assert stats["by_phase"][phase]["calls"] >= n * 3 * 2 * 3, phase


def test_chunked_weight_sync_and_gradient_bytes_equal_the_closed_form():
    """Per-update sync's rows go in chunks, parameter averaging's gradient in blocks of W's
    rows: every worker's bytes are the closed form's (in all, lockstep's: a block's
    allreduce moves what the whole buffer's does, per element), the calls count the chunks."""
    spec, X = problem(0, m=48)
    model = cost.Model(spec.n_visible, spec.n_hidden)
    opts = StrategyOptions(overlap_chunks=3)
    pus, _ = fit("per-update-sync", 3, spec, X, overlap_chunks=3)
    want = cost.sync_traffic("per-update-sync", model, 3, options=opts)
    stats = pus.comm_stats()
    assert stats["bytes_per_sync"] == want.total == cost.sync_traffic("per-update-sync", model, 3).total
    assert want.calls[P.WEIGHT_SYNC] == 3
    assert stats["by_phase"][P.WEIGHT_SYNC]["calls"] == 3 * pus.workers[0].syncs * 3  # chunks x syncs x workers
    assert len(pus.workers[0].sync_plan()) == 3
    pa, _ = fit("parameter-averaging", 3, spec, X, overlap_chunks=3)
    want = cost.step_traffic("parameter-averaging", model, 48, 3, options=opts)
    assert pa.step_bytes[0] == want.total == cost.step_traffic("parameter-averaging", model, 48, 3).total
    assert want.calls[P.GRADIENT] == 6
    assert [(r.start, r.stop) for r in pa.workers[0].gradient_blocks(29, opts)] == [(0, 10), (10, 20), (20, 29)]
    short = cost.step_traffic("parameter-averaging", model, 24, 3, options=opts)  # 3.5 minibatches an epoch
    assert [w["bytes_sent"] for w in pa.comm_stats()["by_worker"]] == [
        2 * (3 * a + b) for a, b in zip(want.per_worker, short.per_worker)
    ]


@pytest.mark.parametrize("strategy", ["per-update-sync", "parameter-averaging"])
def test_where_row_blocks_round_otherwise_the_update_is_whole_and_the_same_chunks_go(strategy, monkeypatch):
    """A BLAS that rounds a block of rows otherwise than the whole product: the weights are
    updated (the gradient computed) whole, and the same chunks go as where it does not."""
    import parrbm.strategies.parameter_averaging as pa_module
    import parrbm.strategies.per_update_sync as pus_module

    spec, X = problem(2)
    ref, ref_errors = fit(strategy, 3, spec, X)
    chunked, _ = fit(strategy, 3, spec, X, overlap_chunks=3)
    for module in (pa_module, pus_module):
        monkeypatch.setattr(module, "exact_row_blocks", lambda *a, **k: False)
    got, got_errors = fit(strategy, 3, spec, X, overlap_chunks=3)
    assert_identical(ref, ref_errors, got, got_errors, strategy)
    calls = lambda r: {p: v["calls"] for p, v in r.comm_stats()["by_phase"].items()}  # noqa: E731
    assert calls(got) == calls(chunked) != calls(ref)


def test_exact_chunks_fall_back_to_coarser_cuts_and_keep_products_exact():
    """Whatever cut is chosen, each product computed chunk by chunk equals the whole one."""
    from parrbm import _core

    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        for rows, (k, n, tb) in [(100, (300, 250, False)), (200, (250, 150, True)), (37, (13, 11, False))]:
            plan = exact_chunks(rows, 4, dtype, [(k, n, tb)])
            assert plan[0].start == 0 and plan[-1].stop == rows
            assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
            assert all(r.start % 8 == 0 for r in plan)
            a = rng.standard_normal((rows, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            whole, parts = np.empty((rows, n), dtype), np.empty((rows, n), dtype)
            _core.gemm(a, b, whole, trans_b=tb)
            for r in plan:
                _core.gemm(a[r], b, parts[r], trans_b=tb)
            np.testing.assert_array_equal(whole, parts)


def test_row_chunks_cut_at_multiples_of_eight():
    assert Partition.row_chunks(200, 4) == [slice(0, 56), slice(56, 112), slice(112, 168), slice(168, 200)]
    assert Partition.row_chunks(20, 4) == [slice(0, 8), slice(8, 16), slice(16, 20)]
    assert Partition.row_chunks(7, 3) == [slice(0, 7)]
    assert Partition.row_chunks(0, 3) == [slice(0, 0)]


# ---- the option ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_overlap_chunks_must_be_a_positive_integer(value):
    spec = CDSpec(n_visible=8, n_hidden=6, batch_size=4)
    with pytest.raises(ValueError, match="'overlap_chunks' must be an integer >= 1"):
        ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, options=StrategyOptions(overlap_chunks=value))


@pytest.mark.parametrize(
    "strategy, options, why",
    [
        ("parameter-averaging", {"reduce": "master"}, "reduce='allreduce'"),
        ("parameter-averaging", {"average": "weights"}, "average='gradients'"),
        ("per-update-sync", {"partition": "random"}, "partition='contiguous'"),
    ],
)
def test_overlap_chunks_where_a_strategy_cannot_overlap_are_refused(strategy, options, why):
    from parrbm import RBM

    X = (np.random.default_rng(0).random((32, 8)) < 0.5).astype(np.float32)
    with pytest.raises(ValueError, match=f"'overlap_chunks' > 1 .*{why}"):
        RBM(
            n_hidden=6,
            batch_size=16,
            n_iter=1,
            strategy=strategy,
            workers=2,
            progress=False,
            strategy_options={"overlap_chunks": 2, **options},
        ).fit(X)


def test_overlap_chunks_give_lockstep_results_through_the_estimator():
    from parrbm import RBM

    X = (np.random.default_rng(0).random((32, 8)) < 0.5).astype(np.float32)
    rbm = RBM(
        n_hidden=6,
        batch_size=16,
        n_iter=1,
        strategy="green-only",
        workers=2,
        progress=False,
        random_state=0,
        strategy_options={"overlap_chunks": 2},
    ).fit(X)
    ref = RBM(
        n_hidden=6, batch_size=16, n_iter=1, strategy="green-only", workers=2, progress=False, random_state=0
    ).fit(X)
    np.testing.assert_array_equal(rbm.components_, ref.components_)


# ---- non-blocking collectives ----------------------------------------------------------------------


class SlowTransport(Transport):
    """One worker alone (size 1 moves nothing), whose every collective takes ``delay`` s."""

    rank, size = 0, 1

    def __init__(self, delay: float, fail: bool = False):
        self.delay, self.fail = delay, fail
        self.threads = []

    def exchange(self, sends, receive) -> float:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise CommError("the wire broke", peer=0)
        return 0.0

    def barrier(self) -> float:
        return self.exchange([None], lambda j, b: None)


def test_started_collectives_run_in_order_on_the_progress_thread_and_count_busy_and_exposed_time():
    t = SlowTransport(0.2)
    comm = Comm(t)
    parts = Partition.contiguous(4, 1)
    out = np.zeros((2, 4))
    h = comm.start_reduce_scatter(np.ones((2, 4)), out, parts, phase="p")
    time.sleep(0.35)  # "computing" while the collective is in flight
    h.wait()
    np.testing.assert_array_equal(out, 1.0)
    s = comm.stats["p"]
    assert s.calls == 1 and s.busy_seconds >= 0.2
    assert s.seconds < 0.1  # what the caller waited: the collective was done before it asked
    assert t.threads == ["parrbm-progress-0"]
    comm.reduce_scatter(np.ones((2, 4)), out, parts, phase="q")  # lockstep: exposed = busy
    q = comm.stats["q"]
    assert q.seconds == q.busy_seconds >= 0.2 and t.threads[-1] == threading.current_thread().name
    comm.close()


def test_a_blocking_collective_first_completes_those_in_flight():
    t = SlowTransport(0.05)
    comm = Comm(t)
    parts = Partition.contiguous(3, 1)
    out = [np.zeros((1, 3)) for _ in range(3)]
    handles = [comm.start_allgather(np.full((1, 3), i), out[i], parts, phase=f"a{i}") for i in range(3)]
    comm.barrier(phase="b")
    assert not comm._inflight
    assert [list(o[0]) for o in out] == [[0] * 3, [1] * 3, [2] * 3]
    for h in handles:
        h.wait()  # completed already: returns at once
    assert list(comm.stats) == ["a0", "a1", "a2", "b"]
    comm.close()


def test_a_failed_collective_raises_at_its_wait():
    comm = Comm(SlowTransport(0.01, fail=True))
    h = comm.start_allgather(np.ones((1, 2)), np.zeros((1, 2)), Partition.contiguous(2, 1), phase="x")
    with pytest.raises(CommError, match="the wire broke"):
        h.wait()
    comm.abandon()


def test_started_collectives_match_blocking_ones_across_threads():
    """Each worker starts an allgather, a reduce-scatter and an allreduce, computes, then
    waits: the results are the blocking collectives' and the bytes the same."""
    K, m, n = 3, 5, 10
    parts = Partition.contiguous(n, K)

    def work(comm: Comm, started: bool):
        rng = np.random.default_rng(comm.rank)
        block = rng.random((m, parts.size(comm.rank)))
        partial = rng.random((m, n))
        flat = rng.random(17)
        gathered, summed = np.zeros((m, n)), np.zeros((m, parts.size(comm.rank)))
        if started:
            hs = [
                comm.start_allgather(block, gathered, parts, phase="g"),
                comm.start_reduce_scatter(partial, summed, parts, phase="r"),
                comm.start_allreduce(flat, phase="a"),
            ]
            time.sleep(0.01)
            for h in hs:
                h.wait()
            comm.close()
        else:
            comm.allgather(block, gathered, parts, phase="g")
            comm.reduce_scatter(partial, summed, parts, phase="r")
            comm.allreduce(flat, phase="a")
        return gathered, summed, flat, {p: s.bytes_sent for p, s in comm.stats.items()}

    a = run_threads(K, lambda c: work(c, False), timeout=10)
    b = run_threads(K, lambda c: work(c, True), timeout=10)
    for x, y in zip(a, b):
        for u, v in zip(x[:3], y[:3]):
            np.testing.assert_array_equal(u, v)
        assert x[3] == y[3]


def test_comm_stats_report_busy_exposed_and_hidden_time():
    spec, X = problem(0, m=48)
    runner, _ = fit("green-only", 2, spec, X, overlap_chunks=3)
    s = runner.comm_stats()
    o = s["overlap"]
    # as many chunks as the BLAS rounds alike in (3 or 2 of 48 rows: see above)
    assert o["overlap_chunks"] == 3 and o["chunks_used"] == len(runner.workers[0].chunks(48)) >= 2
    assert o["busy_seconds"] > 0 and 0 <= o["exposed_seconds"]
    # a tiny model's waits are mostly thread hand-overs: exposed may exceed busy (nothing hidden)
    assert o["hidden_fraction"] == pytest.approx(min(1.0, max(0.0, 1 - o["exposed_seconds"] / o["busy_seconds"])))
    for phase, v in s["by_phase"].items():
        assert v["busy_seconds"] > 0 and 0 <= v["hidden_fraction"] <= 1, phase
    lock, _ = fit("green-only", 2, spec, X)
    lo = lock.comm_stats()["overlap"]
    assert lo["overlap_chunks"] == lo["chunks_used"] == 1 and lo["hidden_fraction"] == 0.0


def test_a_progress_thread_that_stops_is_named_within_the_timeout(monkeypatch):
    """The transport bounds each collective; should the progress thread itself never come
    back, wait() says so after its limit (the transport's timeout + 30 s, shortened here)
    and nothing is left in flight."""
    monkeypatch.setattr(Comm, "completion_timeout", property(lambda self: 0.2))
    comm = Comm(SlowTransport(3.0))
    h = comm.start_allgather(np.ones((1, 2)), np.zeros((1, 2)), Partition.contiguous(2, 1), phase="slow")
    t0 = time.perf_counter()
    with pytest.raises(CommError, match="collective 'slow' did not complete within 0.2 s"):
        h.wait()
    assert time.perf_counter() - t0 < 1.0
    assert not comm._inflight
    comm.wait_all()  # nothing left in flight: returns at once
    comm.abandon()


def test_the_overlap_axis_of_a_grid_runs_lockstep_and_overlapped_points(tmp_path):
    """grid.overlap: [false, true] gives each overlapping strategy at K > 1 a lockstep and
    an overlapped point (its record says so); a chunked point is overlapped already."""
    from parrbm.harness.comparison_config import load_config
    from parrbm.harness.grid import grid_points

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "name: ov\nmodel: {visible: 16, hidden: 12}\ndata: {kind: random-binary, cases: 64}\n"
        "training: {batch_size: 16, steps: 2, warmup: 0, repeats: 1}\n"
        "grid: {strategy: [serial, green-only, per-update-sync], workers: [1, 2], "
        "overlap: [false, true], overlap_chunks: [1, 2]}\n"
    )
    points = grid_points(load_config(cfg_file))
    at2 = sorted((p["strategy"], p["overlap"], p["overlap_chunks"]) for p in points if p["workers"] == 2)
    assert at2 == [
        (s, ov, n) for s in ("green-only", "per-update-sync") for ov, n in ((False, 1), (True, 1), (True, 2))
    ]
    ids = [p["run_id"] for p in points if p["workers"] == 2 and p["strategy"] == "green-only"]
    assert len(set(ids)) == 3 and sum("overlap=true" in i for i in ids) == 1
    assert all(not p["overlap"] for p in points if p["workers"] == 1)


def test_a_progress_thread_shortens_the_switch_interval_while_it_runs():
    """A worker back from a kernel would otherwise wait up to the interpreter's 5 ms for a
    progress thread in Python code; the interval comes back when the last one stops."""
    import sys

    from parrbm.harness import comm as comm_module

    before = sys.getswitchinterval()
    a, b = Comm(SlowTransport(0.01)), Comm(SlowTransport(0.01))
    h = a.start_alltoall([np.zeros(1)], [np.zeros(1)], phase="x")
    g = b.start_alltoall([np.zeros(1)], [np.zeros(1)], phase="x")
    assert sys.getswitchinterval() == pytest.approx(min(comm_module.SWITCH_INTERVAL, before))
    h.wait()
    a.close()
    assert sys.getswitchinterval() == pytest.approx(min(comm_module.SWITCH_INTERVAL, before))  # b still runs
    g.wait()
    b.close()
    assert sys.getswitchinterval() == before
