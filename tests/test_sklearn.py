"""scikit-learn's conventions: pickling (joblib, GridSearchCV with n_jobs), feature names,
sparse input, and scikit-learn's own estimator checks over RBM and DBN."""

import pickle
import re

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from parrbm import DBN, RBM


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"strategy": "unit-partitioned", "workers": 2, "strategy_options": {"sync_every": 7}},  # replicas apart
        {
            "strategy": "parameter-averaging",
            "workers": 2,
            "strategy_options": {"average": "weights", "average_every": 5},
        },
        {"persistent": True, "momentum": 0.5},  # chains, increments
    ],
)
def test_a_pickled_model_equals_the_original_and_trains_on_as_it_would(digits, tmp_path, kw):
    X = digits[0][:300]
    rbm = RBM(n_hidden=16, n_iter=2, batch_size=20, random_state=0, progress=False, **kw).fit(X)
    joblib.dump(rbm, tmp_path / "rbm.joblib")
    back = joblib.load(tmp_path / "rbm.joblib")
    assert back.get_params() == rbm.get_params()
    for name in ("components_", "intercept_hidden_", "intercept_visible_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(rbm, name))
    np.testing.assert_array_equal(back.transform(X[:10]), rbm.transform(X[:10]))
    # the unpickled model keeps the workers' own state: one more pass equals the original's
    rbm.partial_fit(X[:140])
    back.partial_fit(X[:140])
    np.testing.assert_array_equal(back.components_, rbm.components_)
    assert back.n_steps_ == rbm.n_steps_
    # an unfitted model pickles too
    assert pickle.loads(pickle.dumps(RBM(n_hidden=3))).get_params() == RBM(n_hidden=3).get_params()


def test_a_fitted_pipeline_and_grid_search_with_two_jobs(digits, tmp_path):
    X, y = digits
    pipe = Pipeline(
        [("rbm", RBM(n_hidden=20, n_iter=2, random_state=0, progress=False)), ("clf", LogisticRegression(max_iter=200))]
    )
    search = GridSearchCV(pipe, {"rbm__learning_rate": [0.02, 0.06]}, cv=2, n_jobs=2).fit(X[:400], y[:400])
    best = search.best_estimator_
    joblib.dump(best, tmp_path / "pipe.joblib")
    again = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(again.predict_proba(X[400:450]), best.predict_proba(X[400:450]))


def test_feature_names_and_pandas_output(digits):
    X = pd.DataFrame(digits[0][:200], columns=[f"pixel{i}" for i in range(64)])
    rbm = RBM(n_hidden=5, n_iter=1, random_state=0, progress=False).fit(X)
    assert rbm.n_features_in_ == 64 and list(rbm.feature_names_in_) == list(X.columns)
    assert list(rbm.get_feature_names_out()) == [f"rbm{i}" for i in range(5)]
    out = rbm.set_output(transform="pandas").transform(X)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"rbm{i}" for i in range(5)]
    with pytest.raises(ValueError, match="feature names"):
        rbm.transform(X[list(reversed(X.columns))])
    dbn = DBN(hidden_layer_sizes=(6, 3), n_iter=1, random_state=0, progress=False).fit(X)
    assert list(dbn.feature_names_in_) == list(X.columns)
    assert list(dbn.get_feature_names_out()) == ["dbn0", "dbn1", "dbn2"]


@pytest.mark.parametrize("kind", [sp.csr_matrix, sp.csc_array, sp.lil_matrix])
def test_sparse_input_trains_the_dense_model_a_few_minibatches_at_a_time(digits, monkeypatch, kind):
    import parrbm.rbm as rbm_module

    X = digits[0][:97]
    dense = RBM(n_hidden=6, batch_size=10, n_iter=2, random_state=3, progress=False).fit(X)
    # chunks of 2 minibatches: the steps, their random streams and the model are the dense X's
    monkeypatch.setattr(rbm_module, "SPARSE_CHUNK_BYTES", 2 * 10 * 64 * 4)
    seen = []
    densify = rbm_module._dense
    monkeypatch.setattr(rbm_module, "_dense", lambda A: seen.append(A.shape[0]) or densify(A))
    sparse = RBM(n_hidden=6, batch_size=10, n_iter=2, random_state=3, progress=False).fit(kind(X))
    np.testing.assert_array_equal(sparse.components_, dense.components_)
    np.testing.assert_array_equal(sparse.intercept_visible_, dense.intercept_visible_)
    assert sparse.reconstruction_error_ == dense.reconstruction_error_
    assert max(seen[1:]) <= 20 < X.shape[0]  # (the first is the monitor's sample)
    np.testing.assert_array_equal(sparse.transform(kind(X)), dense.transform(X))
    np.testing.assert_array_equal(sparse.score_samples(kind(X)), dense.score_samples(X))


def test_sparse_input_is_checked_by_name(digits):
    bad = sp.csr_matrix(np.array([[0.5, 0.0], [0.0, 1.5]]))
    with pytest.raises(ValueError, match=r"RBM: 'X' must lie in \[0, 1\].*1\.5 at row 1, column 1.*clip"):
        RBM(n_hidden=2, n_iter=1, progress=False).fit(bad)
    nan = sp.csr_matrix(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        RBM(n_hidden=2, n_iter=1, progress=False).fit(nan)


def test_binary_data_a_little_outside_is_refused_with_the_clip_advice(digits):
    X = digits[0][:50].copy()
    X[3, 5] = 1.0714
    with pytest.raises(ValueError, match=r"MinMaxScaler\(clip=True\) or np.clip\(X, 0, 1\)"):
        RBM(n_hidden=4, n_iter=1, progress=False).fit(X)
    rbm = RBM(n_hidden=4, n_iter=1, progress=False).fit(np.clip(X, 0, 1))
    assert rbm.transform(X).shape == (50, 4)  # inference takes any finite values


def test_gibbs_and_sample_hiddens_draw_afresh(digits):
    X = digits[0][:200]
    rbm = RBM(n_hidden=8, n_iter=2, random_state=0, progress=False).fit(X)
    a, b = rbm.gibbs(X), rbm.gibbs(X)
    assert a.shape == X.shape and set(np.unique(a)) <= {0.0, 1.0} and (a != b).any()
    draws = np.mean([rbm.sample_hiddens(X[:3]) for _ in range(400)], axis=0)
    np.testing.assert_allclose(draws, rbm.transform(X[:3]), atol=0.1)
    again = RBM(n_hidden=8, n_iter=2, random_state=0, progress=False).fit(X)
    np.testing.assert_array_equal(again.gibbs(X), a)  # a model trained alike draws alike


def test_fit_takes_a_batch_larger_than_the_data(digits):
    rbm = RBM(n_hidden=4, batch_size=100, n_iter=2, random_state=0, progress=False).fit(digits[0][:30])
    assert rbm.n_steps_ == 2


def test_verbose_is_an_integer_and_prints_bernoullirbms_line(digits, capsys):
    RBM(n_hidden=4, n_iter=2, verbose=2, progress=False).fit(digits[0][:40])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.match(
        r"\[RBM\] Iteration 2, pseudo-likelihood = -\d+\.\d\d, time = [\d.]+s, "
        r"reconstruction error = [\d.]+$",
        lines[1],
    )
    with pytest.raises(ValueError, match="parameter 'verbose' must be an integer >= 0"):
        RBM(verbose=-1).fit(digits[0][:40])


# scikit-learn's estimator checks, over both visible unit types. Binary visible units
# model data in [0, 1], which RBM checks (a clear error naming the range, rather than a
# model of nonsense); these checks feed data outside it, even with the positive_only tag
# (which only shifts the data to >= 0), so they cannot apply there:
_BINARY_DATA = (
    "binary visible units model data in [0, 1]; the check feeds values outside it, which RBM "
    "refuses by name (visible='gaussian' takes real-valued data, and passes this check)"
)
_OUT_OF_RANGE_DATA = (
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_readonly_memmap_input",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
)


def _expected_failures(estimator) -> dict:
    if getattr(estimator, "visible", "binary") != "binary":
        return {}
    return {check: _BINARY_DATA for check in _OUT_OF_RANGE_DATA}


@parametrize_with_checks(
    [
        RBM(n_hidden=4, n_iter=2, progress=False, visible="gaussian", random_state=0),
        DBN(hidden_layer_sizes=(4, 3), n_iter=2, progress=False, visible="gaussian", random_state=0),
        RBM(n_hidden=4, n_iter=2, progress=False, random_state=0),
        DBN(hidden_layer_sizes=(4, 3), n_iter=2, progress=False, random_state=0),
    ],
    expected_failed_checks=_expected_failures,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
