"""Input and parameter checks that name the offending parameter and what is allowed."""

from __future__ import annotations

import numbers

import numpy as np


def check_int(owner: str, name: str, value, *, minimum: int, maximum: int | None = None) -> int:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: parameter '{name}' must be {allowed}, got {value!r:.60}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{owner}: parameter '{name}' must be {allowed}, got {value!r:.60}")
    return int(value)


def check_float(
    owner: str,
    name: str,
    value,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    ok = ok and np.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = ("(" if low_open else "[") + f"{low:g}"
        hi = f"{high:g}" + (")" if high_open else "]") if high is not None else "inf)"
        raise ValueError(f"{owner}: parameter '{name}' must be a real number in {lo}, {hi}, got {value!r}")
    return float(value)


def check_choice(owner: str, name: str, value, choices) -> str:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: parameter '{name}' must be one of {allowed}, got {value!r}")
    return value


class NotNumbersError(TypeError, ValueError):
    """Data that are not numbers: a TypeError as scikit-learn's checks expect, and a
    ValueError as every other bad-data refusal of parrbm is."""


def refuse_sparse(owner: str, X, name: str = "X") -> None:
    """A scipy.sparse matrix or array is refused, not densified behind the user's back: a
    dense copy of a large sparse matrix can exhaust memory, and the core's kernels are
    dense GEMMs."""
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return
    if sp.issparse(X):
        raise TypeError(
            f"{owner}: '{name}' is a scipy sparse {type(X).__name__} of shape {X.shape}; sparse input "
            f"is not supported: pass a dense array (X.toarray(), {X.shape[0]} x {X.shape[1]} values)"
        )


def check_data(
    owner: str,
    X,
    *,
    dtype: np.dtype,
    name: str = "X",
    n_features: int | None = None,
    binary_range: bool = False,
    accept_sparse: bool = False,
):
    """X as a C-contiguous 2-D array of dtype; rejects non-numeric, NaN/inf, bad shapes.

    With ``accept_sparse`` a scipy.sparse matrix or array is checked as it is (its stored
    values) and returned as a CSR matrix of dtype, never densified: its users densify a
    few rows at a time."""
    if accept_sparse and _is_sparse(X):
        return _check_sparse(owner, X, dtype=dtype, name=name, n_features=n_features, binary_range=binary_range)
    refuse_sparse(owner, X, name)
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # rows of different lengths, for one
        raise ValueError(
            f"{owner}: '{name}' must be a 2-D array of numbers, (n_samples, n_features) with every "
            f"row of one length; numpy could not make one: {exc}"
        ) from None
    if arr.dtype == object:  # numbers in an object array are numbers; anything else is refused
        missing = [i for i, v in enumerate(arr.flat) if v is None]
        if missing:  # numpy would make None a NaN: say what it is
            raise NotNumbersError(f"{owner}: '{name}' must hold numbers, got None at flat index {missing[0]}")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise NotNumbersError(f"{owner}: '{name}' must hold numbers: {exc}") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{owner}: '{name}' must be real (Complex data not supported), got dtype {arr.dtype}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{owner}: '{name}' must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{owner}: '{name}' must be 2-D (n_samples, n_features), got shape {arr.shape}. Reshape "
            f"your data either using array.reshape(-1, 1) if your data has a single feature or "
            f"array.reshape(1, -1) if it contains a single sample"
        )
    if arr.shape[0] < 1:
        raise ValueError(
            f"{owner}: '{name}' must have at least one sample: found array with 0 sample(s) "
            f"(shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.shape[1] < 1:
        raise ValueError(
            f"{owner}: '{name}' must have at least one feature: found array with 0 feature(s) "
            f"(shape={arr.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and arr.shape[1] != n_features:
        # scikit-learn's wording, which its tools look for
        raise ValueError(
            f"{owner}: X has {arr.shape[1]} features, but {owner} is expecting {n_features} "
            f"features as input (the model was fitted with {n_features})"
        )
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{owner}: '{name}' contains NaN or infinity")
    if binary_range and (out.min() < 0 or out.max() > 1):
        row, col = np.unravel_index(int(np.flatnonzero((out < 0) | (out > 1))[0]), out.shape)
        _refuse_range(owner, name, float(out[row, col]), row, col, float(out.min()), float(out.max()))
    return out


def _refuse_range(owner: str, name: str, value: float, row: int, col: int, low: float, high: float):
    negative = " (Negative values in data.)" if low < 0 else ""
    raise ValueError(
        f"{owner}: '{name}' must lie in [0, 1] for binary visible units, got {value!r} at row {row}, "
        f"column {col} (values span [{low!r}, {high!r}]){negative}. Data scaled on another fold "
        f"(a fitted MinMaxScaler on test data) can stray a little outside: clip it, "
        f"MinMaxScaler(clip=True) or np.clip(X, 0, 1). For real-valued data, standardise it and use "
        f"visible='gaussian'"
    )


def _is_sparse(X) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return False
    return bool(sp.issparse(X))


def _check_sparse(owner: str, X, *, dtype: np.dtype, name: str, n_features: int | None, binary_range: bool):
    import scipy.sparse as sp

    if X.ndim != 2:
        raise ValueError(f"{owner}: '{name}' must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{owner}: '{name}' must have at least one sample and one feature, got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or X.dtype.kind == "c":
        raise ValueError(f"{owner}: '{name}' must hold real numbers, got dtype {X.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{owner}: X has {X.shape[1]} features, but {owner} is expecting {n_features} "
            f"features as input (the model was fitted with {n_features})"
        )
    out = sp.csr_matrix(X, dtype=dtype)  # rows are what the trainer takes: CSR slices them cheaply
    out.sum_duplicates()
    if not np.isfinite(out.data).all():
        raise ValueError(f"{owner}: '{name}' contains NaN or infinity")
    if binary_range and out.nnz and (out.data.min() < 0 or out.data.max() > 1):
        k = int(np.flatnonzero((out.data < 0) | (out.data > 1))[0])
        row = int(np.searchsorted(out.indptr, k, side="right") - 1)
        _refuse_range(
            owner,
            name,
            float(out.data[k]),
            row,
            int(out.indices[k]),
            min(0.0, float(out.data.min())),
            max(0.0, float(out.data.max())),
        )
    return out
