"""scikit-learn's conventions: pickling (joblib, GridSearchCV with n_jobs), feature names,
sparse input, and scikit-learn's own estimator checks over RBM and DBN."""

import pickle

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


@pytest.mark.parametrize("kw", [
    {},
    {"strategy": "unit-partitioned", "workers": 2, "strategy_options": {"sync_every": 7}},  # replicas apart
    {"strategy": "parameter-averaging", "workers": 2, "strategy_options": {"average": "weights",
                                                                          "average_every": 5}},
    {"persistent": True, "momentum": 0.5},                                                 # chains, increments
])
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
    pipe = Pipeline([("rbm", RBM(n_hidden=20, n_iter=2, random_state=0, progress=False)),
                     ("clf", LogisticRegression(max_iter=200))])
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


def test_sparse_input_is_refused_by_name(digits):
    S = sp.csr_matrix(digits[0][:50])
    with pytest.raises(TypeError, match=r"RBM: 'X' is a scipy sparse csr_matrix of shape \(50, 64\); "
                                        r"sparse input is not supported"):
        RBM(n_hidden=4, n_iter=1).fit(S)
    rbm = RBM(n_hidden=4, n_iter=1, progress=False).fit(digits[0][:50])
    with pytest.raises(TypeError, match="sparse"):
        rbm.transform(sp.csr_array(digits[0][:5]))


# scikit-learn's estimator checks, over both visible unit types. Binary visible units
# model data in [0, 1], which RBM checks (a clear error naming the range, rather than a
# model of nonsense); these checks feed data outside it, even with the positive_only tag
# (which only shifts the data to >= 0), so they cannot apply there:
_BINARY_DATA = ("binary visible units model data in [0, 1]; the check feeds values outside it, which RBM "
                "refuses by name (visible='gaussian' takes real-valued data, and passes this check)")
_OUT_OF_RANGE_DATA = (
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_estimators_dtypes",
    "check_estimators_fit_returns_self", "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_1sample", "check_fit2d_predict1d",
    "check_fit_check_is_fitted", "check_fit_idempotent", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_readonly_memmap_input", "check_transformer_data_not_an_array",
    "check_transformer_general", "check_transformer_preserve_dtypes",
)


def _expected_failures(estimator) -> dict:
    if getattr(estimator, "visible", "binary") != "binary":
        return {}
    return {check: _BINARY_DATA for check in _OUT_OF_RANGE_DATA}


@parametrize_with_checks([RBM(n_hidden=4, n_iter=2, progress=False, visible="gaussian", random_state=0),
                          DBN(hidden_layer_sizes=(4, 3), n_iter=2, progress=False, visible="gaussian",
                              random_state=0),
                          RBM(n_hidden=4, n_iter=2, progress=False, random_state=0),
                          DBN(hidden_layer_sizes=(4, 3), n_iter=2, progress=False, random_state=0)],
                         expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
