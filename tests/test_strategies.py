"""The parallel strategies: exact bytes, exactness against serial CD, replica agreement."""

import itertools
import time

import numpy as np
import pytest

from parrbm import RBM
from parrbm.analysis import cost
from parrbm.config import CDSpec, ModelState
from parrbm.harness.comm import CommError
from parrbm.harness.runner import ParallelRunner
from parrbm.strategies import PARALLEL_STRATEGIES, SerialStrategy, StrategyOptions
from parrbm.strategies.unit_partitioned import UnitPartitioned

PARALLEL = list(PARALLEL_STRATEGIES)


def data(rng, n, V, visible, dtype):
    if visible == "binary":
        return (rng.random((n, V)) < 0.5).astype(dtype)
    return rng.standard_normal((n, V)).astype(dtype)


def train(strategy, spec, X, K, steps, **options):
    state = ModelState.initial(spec)
    order = np.arange(steps * spec.batch_size, dtype=np.int64) % X.shape[0]
    if strategy == "serial":
        s = SerialStrategy(spec, state)
        s.run(X, order, 0)
        return s, s.gather_model()
    r = ParallelRunner(spec, state, strategy, K, options=StrategyOptions(**options))
    r.run(X, order, 0)
    return r, r.state


# ---- bytes measured == closed form ------------------------------------------------------------------

BYTE_CASES = list(
    itertools.product(
        PARALLEL,
        [2, 3, 4],
        ["binary", "gaussian"],
        ["float32", "float64"],
        ["samples", "probabilities"],
        [(24, 16, 8), (23, 17, 7)],  # even and uneven slices (and messages not a whole byte)
    )
)


@pytest.mark.parametrize(
    "strategy,K,visible,precision,statistics,sizes", BYTE_CASES, ids=lambda v: str(v).replace(" ", "")
)
def test_bytes_equal_closed_form(strategy, K, visible, precision, statistics, sizes):
    V, H, m = sizes
    spec = CDSpec(
        n_visible=V,
        n_hidden=H,
        batch_size=m,
        visible=visible,
        statistics=statistics,
        dtype=precision,
        seed=3,
        learning_rate=0.01,
    )
    X = data(np.random.default_rng(0), 3 * m, V, visible, spec.np_dtype)
    runner, _ = train(strategy, spec, X, K, 3)
    stats = runner.comm_stats()
    model = cost.Model(V, H, visible=visible, precision=precision, statistics=statistics)
    want = cost.step_traffic(strategy, model, m, K)
    assert stats["bytes_per_step"] == want.total
    assert all(b == want.total for b in runner.step_bytes)
    sync = cost.sync_traffic(strategy, model, K)
    assert stats["bytes_per_sync"] == sync.total
    # Phase by phase, worker by worker, over the three steps.
    for phase, per_worker in {**want.phases, **sync.phases}.items():
        n_calls = 3 if phase in want.phases else stats["syncs"]
        measured = [runner.phase_stats[k][phase].bytes_sent for k in range(K)]
        assert measured == [n_calls * b for b in per_worker], phase
    measured_phases = {p for p in stats["by_phase"] if stats["by_phase"][p]["bytes_sent"]}
    assert measured_phases == {p for p in {**want.phases, **sync.phases}}
    # Received equals sent over all workers.
    total_sent = sum(v["bytes_sent"] for v in stats["by_phase"].values())
    total_recv = sum(v["bytes_recv"] for v in stats["by_phase"].values())
    assert total_sent == total_recv


@pytest.mark.parametrize(
    "strategy,kw",
    [
        ("unit-partitioned", dict(cd_k=3)),
        ("per-update-sync", dict(cd_k=2)),
        ("purple-only", dict(cd_k=2, persistent=True)),
        ("green-only", dict(persistent=True)),
        ("per-update-sync", dict(persistent=True)),
        ("unit-partitioned", dict(persistent=True)),
    ],
)
def test_bytes_closed_form_cd_k_and_pcd(strategy, kw):
    V, H, m = 21, 13, 6
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, seed=1, **kw)
    X = data(np.random.default_rng(1), 4 * m, V, "binary", np.float32)
    runner, _ = train(strategy, spec, X, 3, 4)
    model = cost.Model(V, H, cd_k=spec.cd_k, persistent=spec.persistent)
    assert runner.comm_stats()["bytes_per_step"] == cost.step_traffic(strategy, model, m, 3).total


# Written out by hand from the paper's formulas (docs/design.md section 5), not from
# analysis/cost.py, for V = H = m = 16, K = 2, binary units, float64 (pb = 8, bv = 1):
# every message a whole number of bytes, so no padding enters.
HAND_BYTES_PER_STEP = {
    # (K-1)(2mH/8 + mV/8) = 96, and at sync_every = 1 a sync S = sum |V_j||H_k| pb = 1024
    "unit-partitioned": 1 * (2 * 16 * 16 // 8 + 16 * 16 // 8) + 2 * 8 * 8 * 8,
    "per-update-sync": 1 * (16 * 16 // 8 + 16 * 16 // 8) + 2 * 8 * 8 * 8,  # + sum |V_j||H_k| pb = 1088
    "purple-only": 2 * 1 * 16 * 16 * 8 + 2 * 1 * 16 * 16 // 8,  # 2(K-1) m H (pb + 1/8) = 4160
    "green-only": 1 * 16 * 16 * 8 + 1 * 16 * 16 // 8,  # (K-1) m V (pb + bv/8) = 2080
    "parameter-averaging": 2 * 1 * (16 * 16 + 16 + 16) * 8,  # 2(K-1)(VH + V + H) pb = 4608
}


@pytest.mark.parametrize("strategy", PARALLEL)
def test_bytes_equal_the_papers_formulas_written_out_by_hand(strategy):
    spec = CDSpec(n_visible=16, n_hidden=16, batch_size=16, dtype="float64", seed=4)
    X = data(np.random.default_rng(4), 48, 16, "binary", np.float64)
    runner, _ = train(strategy, spec, X, 2, 3, sync_every=1)
    stats = runner.comm_stats()
    # every exchange here happens every minibatch (the sync at sync_every = 1, the weight
    # exchange, the gradient sum), whichever way a strategy books it: bytes over 3 steps / 3
    moved = sum(w["bytes_sent"] for w in stats["by_worker"]) // 3
    assert moved == HAND_BYTES_PER_STEP[strategy]


@pytest.mark.parametrize("reduce", ["master", "allreduce"])
@pytest.mark.parametrize("average", ["gradients", "weights"])
def test_parameter_averaging_bytes_total_and_busiest(reduce, average):
    V, H, m, K = 19, 11, 9, 3
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, seed=2)
    X = data(np.random.default_rng(2), 6 * m, V, "binary", np.float32)
    runner, _ = train("parameter-averaging", spec, X, K, 6, reduce=reduce, average=average, average_every=2)
    stats = runner.comm_stats()
    model = cost.Model(V, H)
    n = V * H + V + H
    step = cost.step_traffic("parameter-averaging", model, m, K, reduce=reduce, average=average)
    sync = cost.sync_traffic("parameter-averaging", model, K, reduce=reduce, average=average)
    assert stats["bytes_per_step"] == step.total
    assert stats["bytes_per_sync"] == sync.total
    assert step.total + sync.total == 2 * (K - 1) * n * 4  # the paper's figure, per exchange
    exchange = step if average == "gradients" else sync
    per_worker = [w["bytes_sent"] for w in stats["by_worker"]]
    times = 6 if average == "gradients" else 3
    assert per_worker == [times * b for b in exchange.per_worker]
    if reduce == "master":
        assert exchange.busiest == (K - 1) * n * 4  # everything passes through rank 0
    else:
        assert exchange.busiest < (K - 1) * n * 4


def test_table_4_1():
    MB = 10**6
    got = {(r["visible_type"], r["precision"], r["workers"]): r["bytes"] / MB for r in cost.table_4_1()}
    assert [got[("binary", "float32", K)] for K in (1, 2, 4, 8)] == [0, 48, 144, 336]
    assert [got[("gaussian", "float32", K)] for K in (2, 4, 8)] == [296, 888, 2072]
    assert [got[("gaussian", "float64", K)] for K in (2, 4, 8)] == [552, 1656, 3864]
    # The same from the per-minibatch formula with minibatches of 100 cases.
    model = cost.Model(8000, 20000)
    assert cost.bytes_for_cases("unit-partitioned", model, 100, 4, 8000) == 144 * MB


def test_crossovers_match_the_byte_counts():
    # Gaussian, H < V / 2: purple-only wins; H > 4 pb V: green-only wins (docs/design.md 5.3, 5.4).
    wide = cost.crossovers(cost.Model(1000, 300, visible="gaussian"), 100, 4)
    assert {c["name"]: c["holds"] for c in wide}["purple-only sends less than unit-partitioned"]
    tall = cost.crossovers(cost.Model(100, 2000), 100, 4)
    assert {c["name"]: c["holds"] for c in tall}["green-only sends less than unit-partitioned"]
    # per-update-sync wins with large minibatches: m K >= 8 pb V (against a unit-partitioned
    # run that never syncs; one that syncs every minibatch always loses).
    for m, expect in ((100, False), (5000, True)):
        c = cost.crossovers(cost.Model(500, 800), m, 4, sync_every=0)[0]
        assert c["holds"] == expect == (c["lhs"] > c["rhs"])
    assert cost.crossovers(cost.Model(500, 800), 100, 4, sync_every=1)[0]["holds"]


# ---- exactness: every strategy reproduces serial CD-1 in float64 ------------------------------------

EXACT_CASES = [(s, K, p) for s in PARALLEL for K in (2, 3, 4) for p in ("contiguous", "random")]


@pytest.mark.parametrize("strategy,K,partition", EXACT_CASES)
def test_float64_exactly_serial(strategy, K, partition):
    V, H, m = 25, 18, 8
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float64", seed=11, learning_rate=0.2)
    X = data(np.random.default_rng(5), 20 * m, V, "binary", np.float64)
    _, serial = train("serial", spec, X, 1, 20)
    _, par = train(strategy, spec, X, K, 20, partition=partition)
    for name in ("W", "b", "c"):
        diff = np.max(np.abs(getattr(serial, name) - getattr(par, name)))
        assert diff <= 1e-10, (name, diff)


VARIANTS = [
    dict(statistics="probabilities"),
    dict(visible="gaussian", learning_rate=0.01),
    dict(momentum=0.5, weight_decay=0.01),
    dict(cd_k=2),
    dict(persistent=True),
    dict(visible="gaussian", gaussian_noise=True, learning_rate=0.01),
]


@pytest.mark.parametrize("strategy", PARALLEL)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_float64_exactly_serial_variants(strategy, variant):
    V, H, m = 17, 14, 6
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float64", seed=4, **variant)
    X = data(np.random.default_rng(6), 5 * m, V, spec.visible, np.float64)
    _, serial = train("serial", spec, X, 1, 10)
    _, par = train(strategy, spec, X, 3, 10)
    assert np.max(np.abs(serial.W - par.W)) <= 1e-10
    assert np.max(np.abs(serial.c - par.c)) <= 1e-10
    if spec.persistent:
        np.testing.assert_array_equal(serial.chains, par.chains)
    if spec.momentum:
        assert np.max(np.abs(serial.W_inc - par.W_inc)) <= 1e-10


def test_shared_weights_is_exact_and_moves_nothing():
    V, H, m, K = 20, 16, 8, 4
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float64", seed=8)
    X = data(np.random.default_rng(7), 5 * m, V, "binary", np.float64)
    _, serial = train("serial", spec, X, 1, 10)
    runner, par = train("per-update-sync", spec, X, K, 10, shared_weights=True)
    assert np.max(np.abs(serial.W - par.W)) <= 1e-10
    stats = runner.comm_stats()
    assert stats["bytes_per_sync"] == 0
    assert (
        stats["logical_bytes_per_sync"]
        == cost.sync_traffic("per-update-sync", cost.Model(V, H, precision="float64"), K).total
    )
    assert stats["syncs"] == 10


# ---- replicas --------------------------------------------------------------------------------------


def green_and_purple(runner):
    """Assemble W once from the green blocks and once from the purple blocks."""
    V, H = runner.spec.n_visible, runner.spec.n_hidden
    green, purple = np.empty((V, H), runner.spec.np_dtype), np.empty((V, H), runner.spec.np_dtype)
    for w in runner.workers:
        green[:, w.hid.index(w.rank)] = w.green
        purple[w.vis.index(w.rank)] = w.purple
    return green, purple


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_replicas_stay_bit_identical_without_sync(dtype):
    V, H, m = 30, 21, 10
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype=dtype, seed=21, momentum=0.5, weight_decay=1e-3)
    X = data(np.random.default_rng(9), 50 * m, V, "binary", spec.np_dtype)
    runner, _ = train("unit-partitioned", spec, X, 3, 50, sync_every=0)
    green, purple = green_and_purple(runner)
    assert runner.comm_stats()["syncs"] == 0
    assert not np.array_equal(green, ModelState.initial(spec).W)  # it did train
    np.testing.assert_array_equal(green, purple)


def test_gaussian_replicas_drift_and_sync_restores_them():
    V, H, m = 24, 18, 8
    spec = CDSpec(
        n_visible=V, n_hidden=H, batch_size=m, visible="gaussian", dtype="float32", seed=5, learning_rate=0.01
    )
    X = data(np.random.default_rng(10), 20 * m, V, "gaussian", np.float32)
    runner, _ = train("unit-partitioned", spec, X, 3, 20, sync_every=0)
    green, purple = green_and_purple(runner)
    rounding = float(np.max(np.abs(green - purple)))
    assert rounding < 1e-4, rounding  # rounding, not a bug (0 where the BLAS rounds both alike)
    print(f"largest |green - purple| after 20 minibatches, float32 Gaussian: {rounding:.3g}")
    # a difference the sync must see and undo, whatever the BLAS's rounding
    w = runner.workers[1]
    w.green[2, 3] += 0.25
    green, purple = green_and_purple(runner)
    drift = float(np.max(np.abs(green - purple)))
    assert drift >= 0.25 - 1e-4
    from parrbm.harness.threads import run_threads

    run_threads(3, lambda comm: runner._on(comm).sync())
    green, purple = green_and_purple(runner)
    np.testing.assert_array_equal(green, purple)
    assert max(w.divergence[-1] for w in runner.workers) == pytest.approx(drift)


def test_divergence_is_reported_before_each_sync():
    spec = CDSpec(n_visible=16, n_hidden=12, batch_size=8, visible="gaussian", seed=6, learning_rate=0.01)
    X = data(np.random.default_rng(11), 64, 16, "gaussian", np.float32)
    state = ModelState.initial(spec)
    runner = ParallelRunner(spec, state, "unit-partitioned", 2, options=StrategyOptions(sync_every=4))
    runner.workers[0].green[0, 0] += 1e-3  # rounding alone may leave the copies equal
    runner.run(X, np.arange(64, dtype=np.int64), 0)
    stats = runner.comm_stats()
    assert stats["syncs"] == 2 and all(len(w.divergence) == 2 for w in runner.workers)
    assert stats["replica_divergence"] == pytest.approx(1e-3, rel=0.05)
    assert runner.workers[0].divergence[0] == stats["replica_divergence"]


# ---- the estimator and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", PARALLEL)
def test_rbm_trains_with_every_strategy(strategy):
    X = data(np.random.default_rng(12), 120, 20, "binary", np.float64)
    rbm = RBM(n_hidden=10, batch_size=12, n_iter=2, random_state=0, strategy=strategy, workers=2, dtype="float64")
    rbm.fit(X)
    serial = RBM(n_hidden=10, batch_size=12, n_iter=2, random_state=0, dtype="float64").fit(X)
    np.testing.assert_allclose(rbm.components_, serial.components_, atol=1e-10)
    s = rbm.comm_stats_
    assert isinstance(s["bytes_per_step"], int) and isinstance(s["bytes_per_sync"], int)
    model = cost.Model(20, 10, visible="binary", precision="float64")
    assert s["bytes_per_step"] == cost.step_traffic(strategy, model, 12, 2).total > 0
    assert s["bytes_per_sync"] == cost.sync_traffic(strategy, model, 2).total
    assert set(s["seconds"]) >= {"compute", "communication", "waiting"}
    assert len(s["by_worker"]) == 2 and s["by_phase"]
    np.testing.assert_allclose(rbm.transform(X[:4]), serial.transform(X[:4]), atol=1e-10)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(strategy="magic", workers=2), "'strategy'"),
        (dict(strategy="purple-only", workers=25), "larger than the 20 visible"),
        (dict(strategy="green-only", workers=12, n_hidden=10), "larger than the 10 hidden"),
        (dict(strategy="parameter-averaging", workers=13), "larger than batch_size"),
        (dict(strategy="purple-only", workers=2, strategy_options={"shared_weights": True}), "shared_weights"),
        (
            dict(
                strategy="per-update-sync", workers=2, strategy_options={"shared_weights": True, "partition": "random"}
            ),
            "contiguous",
        ),
        (dict(strategy="unit-partitioned", workers=2, strategy_options={"sync": 3}), "unknown keys"),
        (dict(strategy="unit-partitioned", workers=2, strategy_options={"partition": "striped"}), "partition"),
        (dict(strategy="unit-partitioned", workers=2, transport="carrier-pigeon"), "'transport'"),
        (dict(strategy="parameter-averaging", workers=2, strategy_options={"reduce": "tree"}), "reduce"),
    ],
)
def test_impossible_combinations_raise(kw, match):
    X = data(np.random.default_rng(13), 24, 20, "binary", np.float64)
    with pytest.raises(ValueError, match=match):
        RBM(**{"n_hidden": 10, "batch_size": 12, "n_iter": 1, **kw}).fit(X)


def test_failing_worker_ends_the_run_with_its_name(monkeypatch):
    spec = CDSpec(n_visible=12, n_hidden=8, batch_size=4, seed=1)
    runner = ParallelRunner(
        spec, ModelState.initial(spec), "unit-partitioned", 3, options=StrategyOptions(), timeout=5.0
    )
    # The step fails at its third minibatch, while its peers already wait in a collective.
    original = UnitPartitioned.step

    def failing(self, *a):
        if self.rank == 1 and a[1] == 2:
            raise RuntimeError("disk on fire")
        return original(self, *a)

    monkeypatch.setattr(UnitPartitioned, "step", failing)
    X = data(np.random.default_rng(0), 16, 12, "binary", np.float32)
    t0 = time.perf_counter()
    with pytest.raises(CommError, match="worker 1 failed: RuntimeError: disk on fire"):
        runner.run(X, np.arange(16, dtype=np.int64), 0)
    assert time.perf_counter() - t0 < 5.0  # peers are released at once, not at the timeout


def test_hung_worker_times_out_naming_a_worker(monkeypatch):
    spec = CDSpec(n_visible=12, n_hidden=8, batch_size=4, seed=1)
    runner = ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, timeout=1.0)
    from parrbm.strategies.green_only import GreenOnly

    original = GreenOnly.step

    def hanging(self, *a):
        if self.rank == 0 and a[1] == 1:
            time.sleep(3)
        return original(self, *a)

    monkeypatch.setattr(GreenOnly, "step", hanging)
    X = data(np.random.default_rng(0), 8, 12, "binary", np.float32)
    t0 = time.perf_counter()
    with pytest.raises(CommError, match=r"worker 0 \(last in phase .*\) did not reach phase"):
        runner.run(X, np.arange(8, dtype=np.int64), 0)
    assert time.perf_counter() - t0 < 5.0


def test_weight_averaging_fits_the_average_of_the_replicas():
    """With average="weights" and steps that are not a multiple of average_every, the
    fitted model is the replicas' average (not rank 0's replica), and the fit ends with an
    averaging step counted as a sync."""
    from parrbm import RBM

    X = np.random.default_rng(0).standard_normal((300, 40)).astype(np.float32)
    rbm = RBM(
        n_hidden=24,
        visible="gaussian",
        batch_size=20,
        n_iter=3,
        learning_rate=0.01,
        random_state=0,
        strategy="parameter-averaging",
        workers=2,
        strategy_options={"average": "weights", "average_every": 4},
    )
    rbm.n_iter = 2
    rbm.fit(X)  # 30 steps: 7 averagings, then the last
    runner = rbm._strategy
    replicas = [w.W for w in runner.workers]
    np.testing.assert_array_equal(replicas[0], replicas[1])  # brought together at the end
    assert rbm.comm_stats_["syncs"] == 30 // 4 + 1
    # an averaging step and the gathered average are the same bits
    np.testing.assert_array_equal(rbm.components_.T, replicas[0])
    # mid-fit (replicas apart) the gathered model is still their average
    for w in runner.workers:
        w.W += np.float32(w.rank + 1) * np.float32(0.5)
    state = runner.gather_model()
    np.testing.assert_array_equal(state.W, (replicas[0] + replicas[1]) / np.float32(2))


def test_the_strategy_options_are_one_table():
    """StrategyOptions, the config schema and the checks are all made from OPTIONS."""
    from dataclasses import fields

    from parrbm.harness.comparison_config import SCHEMA
    from parrbm.strategies.base import OPTIONS

    assert [(f.name, f.default) for f in fields(StrategyOptions)] == [(o.name, o.default) for o in OPTIONS]
    section = SCHEMA["properties"]["options"]["properties"]
    assert set(section) == {o.name for o in OPTIONS} - {"sync_every"}
    for o in OPTIONS:
        StrategyOptions(**{o.name: o.default}).check()
        bad = "nonsense" if not o.choices else 3
        with pytest.raises(ValueError, match=f"strategy option '{o.name}' must be"):
            StrategyOptions(**{o.name: bad}).check()
    with pytest.raises(ValueError, match="'average_every' must be an integer >= 1, got 0"):
        StrategyOptions(average_every=0).check()
    with pytest.raises(ValueError, match="'shared_weights' must be true or false, got 1"):
        StrategyOptions(shared_weights=1).check()
