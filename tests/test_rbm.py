"""parrbm.RBM: the scikit-learn estimator, training quality, persistence, validation."""

import gc
import os
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from parrbm import RBM


@pytest.fixture(scope="module")
def digits_binary():
    X = load_digits().data / 16.0
    return (X > 0.5).astype(np.float64)


def test_estimator_api(digits_binary):
    rbm = RBM(n_hidden=20, n_iter=2, random_state=0)
    params = rbm.get_params()
    assert params["n_hidden"] == 20 and params["strategy"] == "serial"
    rbm.set_params(learning_rate=0.05)
    assert rbm.learning_rate == 0.05
    c = clone(rbm)
    assert c.get_params() == rbm.get_params() and not hasattr(c, "components_")
    rbm.fit(digits_binary[:300])
    assert rbm.components_.shape == (20, 64)
    assert rbm.intercept_hidden_.shape == (20,) and rbm.intercept_visible_.shape == (64,)
    assert rbm.n_features_in_ == 64
    H = rbm.transform(digits_binary[:5])
    assert H.shape == (5, 20) and H.dtype == np.float32 and np.all((H > 0) & (H < 1))
    assert rbm.reconstruct(digits_binary[:5]).shape == (5, 64)
    assert rbm.score_samples(digits_binary[:5]).shape == (5,)
    assert rbm.fit_transform(digits_binary[:300]).shape == (300, 20)


def test_pipeline_features_beat_raw_pixels(digits_binary):
    """The RBM's 100 features carry more for a linear classifier than the 64 binarised
    pixels they were learnt from (the point of scikit-learn's RBM example)."""
    y = load_digits().target
    pipe = Pipeline(
        [
            ("rbm", RBM(n_hidden=100, n_iter=20, learning_rate=0.06, random_state=0, progress=False)),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    pipe.fit(digits_binary[:1200], y[:1200])
    raw = LogisticRegression(max_iter=2000).fit(digits_binary[:1200], y[:1200]).score(digits_binary[1200:], y[1200:])
    assert pipe.score(digits_binary[1200:], y[1200:]) > raw


def test_transform_matches_numpy(digits_binary):
    rbm = RBM(n_hidden=16, n_iter=1, random_state=1, dtype="float64").fit(digits_binary)
    want = 1 / (1 + np.exp(-(digits_binary @ rbm.components_.T + rbm.intercept_hidden_)))
    np.testing.assert_allclose(rbm.transform(digits_binary), want, rtol=1e-13)


def test_training_halves_reconstruction_error(digits_binary):
    untrained = RBM(n_hidden=64, n_iter=0, random_state=0).fit(digits_binary)
    before = np.mean((digits_binary - untrained.reconstruct(digits_binary)) ** 2)
    rbm = RBM(n_hidden=64, n_iter=5, learning_rate=0.05, batch_size=10, random_state=0)
    rbm.fit(digits_binary)
    after = np.mean((digits_binary - rbm.reconstruct(digits_binary)) ** 2)
    assert rbm.reconstruction_error_[-1] <= 0.5 * before, (before, rbm.reconstruction_error_)
    assert after <= 0.5 * before
    assert rbm.reconstruction_error_[-1] < rbm.reconstruction_error_[0]


@pytest.mark.parametrize("kw", [dict(), dict(dtype="float64", momentum=0.5, persistent=True)])
def test_same_seed_same_weights_bit_for_bit(digits_binary, kw):
    a = RBM(n_hidden=30, n_iter=3, random_state=123, **kw).fit(digits_binary)
    b = RBM(n_hidden=30, n_iter=3, random_state=123, **kw).fit(digits_binary)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.intercept_hidden_, b.intercept_hidden_)
    c = RBM(n_hidden=30, n_iter=3, random_state=124, **kw).fit(digits_binary)
    assert not np.array_equal(a.components_, c.components_)


def test_partial_fit_continues_one_run(digits_binary):
    X = digits_binary[:200]
    one = RBM(n_hidden=10, batch_size=10, random_state=5, dtype="float64")
    one.partial_fit(np.vstack([X, X]))
    two = RBM(n_hidden=10, batch_size=10, random_state=5, dtype="float64")
    two.partial_fit(X).partial_fit(X)
    assert two.n_steps_ == one.n_steps_ == 40
    np.testing.assert_array_equal(one.components_, two.components_)


def test_gaussian_visible_units_learn():
    X = load_digits().data
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    rbm = RBM(
        n_hidden=64, visible="gaussian", learning_rate=0.005, n_iter=6, batch_size=20, momentum=0.5, random_state=0
    ).fit(X)
    errs = rbm.reconstruction_error_
    assert np.all(np.isfinite(errs)) and errs[-1] < 0.8 * errs[0]
    # pseudo-likelihood is defined for binary visible units: a Gaussian RBM has no such method
    assert not hasattr(rbm, "score_samples")
    with pytest.raises(AttributeError, match="score_samples"):
        rbm.score_samples(X[:3])
    assert np.all(np.isfinite(rbm.free_energy(X[:3])))


# ---- persistence ---------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, digits_binary):
    rbm = RBM(n_hidden=12, n_iter=2, random_state=3, momentum=0.5, persistent=True).fit(digits_binary)
    path = tmp_path / "model.npz"
    rbm.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left behind
    back = RBM.load(path)
    assert back.get_params() == rbm.get_params()
    np.testing.assert_array_equal(back.components_, rbm.components_)
    np.testing.assert_array_equal(back.transform(digits_binary[:9]), rbm.transform(digits_binary[:9]))
    assert back.n_steps_ == rbm.n_steps_
    # Training goes on identically from the loaded model, momentum and chains included.
    rbm.partial_fit(digits_binary[:100])
    back.partial_fit(digits_binary[:100])
    np.testing.assert_array_equal(back.components_, rbm.components_)


def test_load_rejects_truncated_and_foreign_files(tmp_path, digits_binary):
    rbm = RBM(n_hidden=8, n_iter=1, random_state=0).fit(digits_binary)
    good = tmp_path / "good.npz"
    rbm.save(good)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    fds = set(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError, match="truncated.npz"):
            RBM.load(truncated)
        gc.collect()
    assert set(os.listdir("/proc/self/fd")) == fds  # refused, and closed, not left to the collector
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a parrbm model"):
        RBM.load(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        RBM.load(text)
    with pytest.raises(ValueError, match="no such file"):
        RBM.load(tmp_path / "missing.npz")


def test_save_failure_keeps_the_old_file(tmp_path, digits_binary, monkeypatch):
    rbm = RBM(n_hidden=8, n_iter=1, random_state=0).fit(digits_binary)
    path = tmp_path / "m.npz"
    rbm.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        rbm.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


# ---- validation -------------------------------------------------------------------------------

X_OK = np.random.default_rng(0).integers(0, 2, (30, 5)).astype(float)


@pytest.mark.parametrize(
    "X,match",
    [
        (np.zeros(5), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.array([[0.0, np.nan]] * 3), "NaN"),
        (np.array([[0.0, np.inf]] * 3), "NaN or infinity"),
        (np.array([["a", "b"]] * 3), "numbers"),
        (np.array([[0, None]] * 3, dtype=object), "numbers"),
        (np.full((3, 2), 2.0), r"\[0, 1\]"),
        (np.zeros((0, 3)), "at least one"),
    ],
)
def test_bad_data_raises(X, match):
    with pytest.raises(ValueError, match=match) as exc:
        RBM(n_hidden=2, batch_size=1).fit(X)
    assert "'X'" in str(exc.value)


@pytest.mark.parametrize(
    "param,value",
    [
        ("n_hidden", 0),
        ("n_hidden", -3),
        ("n_hidden", 2.5),
        ("visible", "poisson"),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("batch_size", 0),
        ("momentum", 1.0),
        ("weight_decay", -1.0),
        ("cd_k", 0),
        ("statistics", "means"),
        ("dtype", "float16"),
        ("dtype", "banana"),
        ("workers", 0),
        ("transport", "carrier-pigeon"),
        ("strategy", "magic"),
        ("persistent", "yes"),
        ("strategy_options", "fast"),
        ("random_state", "seed"),
        ("n_iter", -1),
    ],
)
def test_bad_parameter_raises_naming_it(param, value):
    with pytest.raises(ValueError, match=f"'{param}'"):
        RBM(**{"n_hidden": 3, "batch_size": 5, param: value}).fit(X_OK)


def test_batch_size_larger_than_data_is_one_minibatch_of_all():
    # as BernoulliRBM takes it: the model of a minibatch of all the samples
    big = RBM(n_hidden=3, batch_size=31, n_iter=3, random_state=0).fit(X_OK)
    whole = RBM(n_hidden=3, batch_size=len(X_OK), n_iter=3, random_state=0).fit(X_OK)
    assert len(X_OK) < 31 and big.n_steps_ == 3
    np.testing.assert_array_equal(big.components_, whole.components_)


def test_serial_with_several_workers_raises():
    with pytest.raises(ValueError, match="workers"):
        RBM(n_hidden=3, batch_size=5, workers=2).fit(X_OK)


def test_transform_checks_feature_count(digits_binary):
    rbm = RBM(n_hidden=4, n_iter=1, random_state=0).fit(digits_binary)
    with pytest.raises(ValueError, match="65 features"):
        rbm.transform(np.zeros((2, 65)))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        RBM().transform(digits_binary)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_saved_model_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    import os
    import stat

    rbm = RBM(n_hidden=3, batch_size=5, n_iter=1, random_state=0).fit(X_OK)
    old = os.umask(umask)
    try:
        rbm.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == mode
    assert not list(tmp_path.glob(".m.npz.*"))  # the temporary file is gone
