"""Input and parameter checks that name the offending parameter and what is allowed."""

from __future__ import annotations

import numbers

import numpy as np


def check_int(owner: str, name: str, value, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: parameter '{name}' must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: parameter '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(owner: str, name: str, value, *, low: float, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
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


def check_data(owner: str, X, *, dtype: np.dtype, name: str = "X", n_features: int | None = None,
               binary_range: bool = False) -> np.ndarray:
    """X as a C-contiguous 2-D array of dtype; rejects non-numeric, NaN/inf, bad shapes."""
    if hasattr(X, "toarray"):  # scipy.sparse
        X = X.toarray()
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{owner}: '{name}' must hold numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{owner}: '{name}' must be real, got complex dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{owner}: '{name}' must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{owner}: '{name}' must have at least one sample and one feature, got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{owner}: '{name}' has {arr.shape[1]} features, but the model was fitted "
                         f"with {n_features}")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{owner}: '{name}' contains NaN or infinity")
    if binary_range and (out.min() < 0 or out.max() > 1):
        raise ValueError(f"{owner}: '{name}' must lie in [0, 1] for binary visible units, got values in "
                         f"[{out.min():g}, {out.max():g}] (standardise and use visible='gaussian' "
                         f"for real-valued data)")
    return out
