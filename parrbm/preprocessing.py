"""What Gaussian-binary RBMs on natural images need from the data: every dimension at
zero mean and unit variance (:class:`Standardizer`) or the pixels decorrelated as well
(:class:`ZCAWhitener`). Both are scikit-learn transformers with ``inverse_transform``,
so filters and reconstructions can be shown as images again.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data


class Standardizer(StandardScaler):
    """Per-dimension standardisation, x -> (x - mean) / std, as the Gaussian visible units
    assume (unit variance). scikit-learn's ``StandardScaler`` with ``min_std``: a
    dimension whose deviation is below it (e.g. a border pixel that is always 0) is
    divided by ``min_std`` instead of being blown up to unit variance.

    Parameters
    ----------
    min_std : float, default=1e-2
        Floor on the per-dimension standard deviation, in the data's units.
    """

    def __init__(self, *, min_std: float = 1e-2, copy: bool = True):
        super().__init__(copy=copy, with_mean=True, with_std=True)
        self.min_std = min_std

    def fit(self, X, y=None, sample_weight=None):
        if not (isinstance(self.min_std, (int, float)) and self.min_std > 0):
            raise ValueError(f"Standardizer: parameter 'min_std' must be a positive number, got {self.min_std!r}")
        super().fit(X, y, sample_weight)
        self.scale_ = np.maximum(np.sqrt(self.var_), self.min_std)
        return self


class ZCAWhitener(TransformerMixin, BaseEstimator):
    """ZCA whitening: x -> (x - mean) U diag(1 / sqrt(s + epsilon)) U^T, with U, s the
    eigenvectors and eigenvalues of the data's covariance. Unlike PCA whitening the
    result stays in pixel space (it looks like an edge-enhanced image), which is what
    Krizhevsky's CIFAR-10 RBMs were trained on.

    Parameters
    ----------
    epsilon : float, default=0.01
        Added to the eigenvalues, relative to the mean eigenvalue: directions with less
        variance than ``epsilon`` x mean are damped instead of amplified (noise).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    whiten_ : ndarray of shape (n_features, n_features)
        Symmetric: transform(X) = (X - mean_) @ whiten_.
    unwhiten_ : ndarray of shape (n_features, n_features)
        Its inverse: inverse_transform(Z) = Z @ unwhiten_ + mean_.
    eigenvalues_ : ndarray of shape (n_features,)
        Of the covariance, descending.
    """

    def __init__(self, epsilon: float = 0.01):
        self.epsilon = epsilon

    def fit(self, X, y=None):
        """X : (n_samples, n_features)."""
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon > 0):
            raise ValueError(f"ZCAWhitener: parameter 'epsilon' must be a positive number, got {self.epsilon!r}")
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        cov = Xc.T @ Xc / (X.shape[0] - 1)
        s, U = linalg.eigh(cov)
        s, U = np.clip(s[::-1], 0.0, None), U[:, ::-1]
        floor = self.epsilon * max(float(s.mean()), np.finfo(np.float64).tiny)
        self.eigenvalues_ = s
        self.whiten_ = (U / np.sqrt(s + floor)) @ U.T
        self.unwhiten_ = (U * np.sqrt(s + floor)) @ U.T
        return self

    def transform(self, X) -> np.ndarray:
        """(n_samples, n_features) -> whitened (n_samples, n_features)."""
        check_is_fitted(self, "whiten_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_) @ self.whiten_

    def inverse_transform(self, Z) -> np.ndarray:
        """Whitened (n_samples, n_features) -> the data's space."""
        check_is_fitted(self, "whiten_")
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_features_in_:
            raise ValueError(f"ZCAWhitener: expected shape (n_samples, {self.n_features_in_}), got {Z.shape}")
        return Z @ self.unwhiten_ + self.mean_


PREPROCESSORS = ("none", "standardize", "zca")


def make(name: str):
    """The transformer called ``name`` on the command line (None for 'none')."""
    if name == "none":
        return None
    if name == "standardize":
        return Standardizer()
    if name == "zca":
        return ZCAWhitener()
    raise ValueError(f"unknown preprocessing {name!r}; choose from {', '.join(PREPROCESSORS)}")
