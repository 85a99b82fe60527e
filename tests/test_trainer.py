"""The fused serial CD-k step against the numpy reference step (float64, tight)."""

import numpy as np
import pytest
import reference as ref

from parrbm import _core

V, H, M = 23, 17, 12


def make(rng, visible, **kw):
    W = 0.3 * rng.standard_normal((V, H))
    b, c = 0.1 * rng.standard_normal(V), 0.1 * rng.standard_normal(H)
    tr = _core.CDTrainer64(V, H, M, visible=visible, **kw)
    tr.W[...], tr.b[...], tr.c[...] = W, b, c
    r = ref.RefCD(W, b, c, visible=visible, batch_size=M, **{k: v for k, v in kw.items() if k != "binary_statistics"})
    return tr, r


def data(rng, visible, m=M):
    if visible == "binary":
        return (rng.random((m, V)) < 0.4).astype(np.float64)
    return rng.standard_normal((m, V))


CASES = [
    dict(visible="binary"),
    dict(visible="binary", statistics="probabilities"),
    dict(visible="binary", momentum=0.9, weight_decay=0.01),
    dict(visible="binary", cd_k=3),
    dict(visible="binary", persistent=True),
    dict(visible="binary", persistent=True, cd_k=2, statistics="probabilities", momentum=0.5),
    dict(visible="binary", binary_statistics=False),
    dict(visible="binary", binary_statistics=False, momentum=0.9, weight_decay=0.01),
    dict(visible="gaussian", learning_rate=0.01),
    dict(visible="gaussian", learning_rate=0.01, gaussian_noise=True, momentum=0.5),
    dict(visible="gaussian", learning_rate=0.01, statistics="probabilities", cd_k=2),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_step_matches_reference(kw):
    rng = np.random.default_rng(42)
    kw = {"seed": 0xDEADBEEF, "learning_rate": 0.1, **kw}
    tr, r = make(rng, **kw)
    for step in range(8):
        X = data(rng, kw["visible"], m=M if step % 3 else M - 5)  # short batches too
        err = tr.step(X, step)
        want_err = r.step(X, step)
        if not kw.get("persistent"):
            assert err == pytest.approx(want_err, rel=1e-12)
    np.testing.assert_allclose(tr.W, r.W, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.b, r.b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.c, r.c, rtol=0, atol=1e-12)
    if kw.get("momentum"):
        np.testing.assert_allclose(tr.W_inc, r.W_inc, rtol=0, atol=1e-12)
    if kw.get("persistent"):
        np.testing.assert_array_equal(tr.chains, r.chains)


def test_binary_statistics_equal_dense_statistics():
    rng = np.random.default_rng(3)
    X = (rng.random((60, V)) < 0.5).astype(np.float64)
    a = _core.CDTrainer64(V, H, 20, seed=5)
    b = _core.CDTrainer64(V, H, 20, seed=5, binary_statistics=False)
    assert a.uses_binary_statistics and not b.uses_binary_statistics
    W0 = 0.1 * rng.standard_normal((V, H))
    a.W[...] = W0
    b.W[...] = W0
    for s in range(3):
        a.step(X[20 * s : 20 * s + 20], s)
        b.step(X[20 * s : 20 * s + 20], s)
    np.testing.assert_allclose(a.W, b.W, rtol=0, atol=1e-13)


def test_non_binary_data_takes_the_gemm_for_positive_statistics():
    rng = np.random.default_rng(4)
    tr, r = make(rng, "binary", seed=9)
    for s in range(4):
        X = rng.random((M, V))  # probabilities in [0, 1], not 0/1
        tr.step(X, s)
        r.step(X, s)
    np.testing.assert_allclose(tr.W, r.W, rtol=0, atol=1e-12)


def test_run_equals_steps_over_the_order():
    rng = np.random.default_rng(6)
    X = (rng.random((50, V)) < 0.5).astype(np.float32)
    order = rng.permutation(50).astype(np.int64)
    a = _core.CDTrainer32(V, H, M, seed=1)
    b = _core.CDTrainer32(V, H, M, seed=1)
    errors = a.run(X, order, 10)
    assert errors.shape == (5,)  # 12, 12, 12, 12, 2
    for i, start in enumerate(range(0, 50, M)):
        e = b.step(np.ascontiguousarray(X[order[start : start + M]]), 10 + i)
        assert e == errors[i]  # the same kernels on the same bits
    np.testing.assert_array_equal(a.W, b.W)


def test_float32_is_deterministic_bit_for_bit():
    rng = np.random.default_rng(7)
    X = (rng.random((40, V)) < 0.5).astype(np.float32)
    runs = []
    for _ in range(2):
        t = _core.CDTrainer32(V, H, 8, seed=77, momentum=0.5)
        t.run(X, np.arange(40, dtype=np.int64), 0)
        runs.append(t.W.copy())
    np.testing.assert_array_equal(*runs)


def test_trainer_rejects_bad_minibatch():
    t = _core.CDTrainer64(V, H, M)
    with pytest.raises(ValueError, match="x"):
        t.step(np.zeros((M + 1, V)), 0)
    with pytest.raises(ValueError, match="x"):
        t.step(np.zeros((M, V + 1)), 0)
    with pytest.raises(ValueError, match="dtype"):
        t.step(np.zeros((M, V), np.float32), 0)


def test_the_serial_trainer_times_its_steps_in_the_core():
    """The serial baseline is timed as the parallel workers' steps are: step by step inside
    the core, the minibatch's rows gathered outside the clock; the errors are run's."""
    from parrbm.config import CDSpec, ModelState
    from parrbm.strategies import SerialStrategy

    spec = CDSpec(n_visible=30, n_hidden=20, batch_size=8, seed=3)
    X = (np.random.default_rng(0).random((40, 30)) < 0.5).astype(np.float32)
    order = np.random.default_rng(1).permutation(40).astype(np.int64)
    a, b = SerialStrategy(spec, ModelState.initial(spec)), SerialStrategy(spec, ModelState.initial(spec))
    errors, seconds = a.run_timed(X, order, 0)
    np.testing.assert_array_equal(errors, b.run(X, order, 0))
    assert seconds.shape == (5,) and np.all(seconds > 0) and np.all(seconds < 1.0)
    np.testing.assert_array_equal(a.gather_model().W, b.gather_model().W)


def test_arrays_with_an_equal_dtype_object_of_their_own_are_taken():
    """An unpickled array (or one made with np.dtype('<f4')) carries a dtype object equal
    to, but not the same as, numpy's canonical one: the core takes it."""
    import pickle

    rng = np.random.default_rng(2)
    X = (rng.random((24, V)) < 0.5).astype(np.float32)
    order = np.arange(24, dtype=np.int64)
    a = _core.CDTrainer32(V, H, M, seed=1)
    b = _core.CDTrainer32(V, H, M, seed=1)
    a.run(X, order, 0)
    X2, order2 = pickle.loads(pickle.dumps(X)), pickle.loads(pickle.dumps(order))
    assert X2.dtype == X.dtype and X2.dtype is not X.dtype
    b.run(X2, order2, 0)
    np.testing.assert_array_equal(a.W, b.W)


@pytest.mark.parametrize("cls", [_core.CDTrainer32, _core.CDTrainer64])
def test_parameter_views_are_none_where_the_trainer_has_no_buffer(cls):
    plain = cls(6, 4, 3)
    assert plain.W.shape == (6, 4) and plain.b.shape == (6,) and plain.c.shape == (4,)
    assert plain.W_inc is None and plain.b_inc is None and plain.c_inc is None and plain.chains is None
    full = cls(6, 4, 3, momentum=0.5, persistent=True)
    assert full.W_inc.shape == (6, 4) and full.b_inc.shape == (6,) and full.c_inc.shape == (4,)
    assert full.chains.shape == (3, 4)
    full.b_inc[:] = 2.0  # views of the trainer's own buffers
    assert np.all(full.b_inc == 2.0) and full.b_inc.dtype == full.W.dtype
