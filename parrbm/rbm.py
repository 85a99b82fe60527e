"""The scikit-learn estimator: ``parrbm.RBM``."""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from parrbm import _validation as v
from parrbm.config import DTYPES, STATISTICS, VISIBLE_TYPES, CDSpec, ModelState

_FORMAT = "parrbm-rbm"
_FORMAT_VERSION = 1
_TRANSPORTS = ("threads", "tcp", "mpi")


def _resolve_seed(random_state) -> int:
    """A 64-bit key for every random stream of the fit."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy) & (2**64 - 1)
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        draw = random_state.integers if hasattr(random_state, "integers") else random_state.randint
        return int(draw(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise ValueError(f"RBM: parameter 'random_state' must be None, an int, or a numpy "
                         f"RandomState/Generator, got {random_state!r}")
    if random_state < 0 or random_state >= 2**64:
        raise ValueError(f"RBM: parameter 'random_state' must be in [0, 2**64), got {random_state}")
    return int(random_state)


class RBM(TransformerMixin, BaseEstimator):
    """Restricted Boltzmann Machine trained with contrastive divergence.

    Binary hidden units; binary or unit-variance Gaussian visible units. Every random
    draw is a pure function of (seed, step, phase, case, unit), so results do not depend
    on how work is split across workers.

    Parameters
    ----------
    n_hidden : int, default=256
        Number of hidden units H.
    visible : {"binary", "gaussian"}, default="binary"
        Visible unit type. Binary data must lie in [0, 1]; Gaussian data should be
        standardised per feature (unit variance is assumed).
    learning_rate : float, default=0.1
        Step size eps; the weight change of a minibatch of m cases is
        eps / m * (x^T h - v'^T h').
    batch_size : int, default=10
        Cases per minibatch m.
    n_iter : int, default=10
        Epochs (passes over the training data) of ``fit``.
    momentum : float in [0, 1), default=0.0
    weight_decay : float >= 0, default=0.0
        L2 weight cost on W (not on the biases).
    cd_k : int, default=1
        Gibbs steps in the negative phase (CD-k).
    persistent : bool, default=False
        Persistent CD: batch_size chains that carry over between minibatches.
    statistics : {"samples", "probabilities"}, default="samples"
        Learning statistics from sampled hidden states (the paper's choice: one bit per
        hidden unit on the wire) or from probabilities (Hinton's practical guide).
    gaussian_noise : bool, default=False
        Sample Gaussian visible units in the negative phase instead of using their mean.
    dtype : {"float32", "float64"}, default="float32"
    random_state : int, RandomState, Generator or None, default=None
    strategy : {"serial", "unit-partitioned", "per-update-sync", "purple-only", "green-only", \
            "parameter-averaging"}, default="serial"
        How the work is split over ``workers`` (DESIGN.md section 5).
    workers : int, default=1
        K, the number of workers.
    transport : {"threads", "tcp", "mpi"}, default="threads"
        How workers exchange data; this release has "threads".
    strategy_options : dict or None, default=None
        Options of the parallel strategies: ``partition`` ("contiguous" | "random"),
        ``sync_every`` (unit-partitioned; 0 = never), ``shared_weights`` (per-update-sync on
        threads), ``reduce`` ("master" | "allreduce"), ``average`` ("gradients" |
        "weights"), ``average_every`` (parameter averaging), ``blas_threads`` (BLAS threads
        per worker, default 1) and ``timeout`` (seconds a worker waits for its peers).
    verbose : bool, default=False
        Print the reconstruction error of every epoch.

    Attributes
    ----------
    components_ : ndarray of shape (n_hidden, n_features_in_)
        Weights, as in scikit-learn (the transpose of W).
    intercept_hidden_ : ndarray of shape (n_hidden,)
    intercept_visible_ : ndarray of shape (n_features_in_,)
    n_features_in_ : int
    reconstruction_error_ : list of float
        Mean squared reconstruction error per epoch (per element; for PCD the mean-field
        reconstruction of the training data).
    comm_stats_ : dict
        Communication of the fit (see :meth:`ParallelRunner.comm_stats`): at least
        ``bytes_per_step`` (payload bytes over all workers for one minibatch, weight sync
        excluded), ``bytes_per_sync``, ``by_phase``, ``by_worker`` and ``seconds``
        (compute / communication / waiting).
    n_steps_ : int
        Minibatch steps done so far; the step index of the random streams.
    seed_ : int
        The resolved 64-bit seed.
    """

    def __init__(self, n_hidden=256, *, visible="binary", learning_rate=0.1, batch_size=10,
                 n_iter=10, momentum=0.0, weight_decay=0.0, cd_k=1, persistent=False,
                 statistics="samples", gaussian_noise=False, dtype="float32",
                 random_state=None, strategy="serial", workers=1, transport="threads",
                 strategy_options=None, verbose=False):
        self.n_hidden = n_hidden
        self.visible = visible
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.cd_k = cd_k
        self.persistent = persistent
        self.statistics = statistics
        self.gaussian_noise = gaussian_noise
        self.dtype = dtype
        self.random_state = random_state
        self.strategy = strategy
        self.workers = workers
        self.transport = transport
        self.strategy_options = strategy_options
        self.verbose = verbose

    # ---- parameters ------------------------------------------------------------------

    def _check_params(self) -> None:
        o = "RBM"
        v.check_int(o, "n_hidden", self.n_hidden, minimum=1)
        v.check_choice(o, "visible", self.visible, VISIBLE_TYPES)
        v.check_float(o, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        v.check_int(o, "batch_size", self.batch_size, minimum=1)
        v.check_int(o, "n_iter", self.n_iter, minimum=0)
        v.check_float(o, "momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        v.check_float(o, "weight_decay", self.weight_decay, low=0.0)
        v.check_int(o, "cd_k", self.cd_k, minimum=1)
        if not isinstance(self.persistent, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'persistent' must be True or False, got {self.persistent!r}")
        if not isinstance(self.gaussian_noise, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'gaussian_noise' must be True or False, got {self.gaussian_noise!r}")
        v.check_choice(o, "statistics", self.statistics, STATISTICS)
        v.check_choice(o, "dtype", self._dtype_name(), DTYPES)
        v.check_int(o, "workers", self.workers, minimum=1)
        v.check_choice(o, "transport", self.transport, _TRANSPORTS)
        from parrbm.strategies import STRATEGIES

        v.check_choice(o, "strategy", self.strategy, STRATEGIES)
        if self.strategy == "serial" and self.workers != 1:
            raise ValueError(f"RBM: strategy 'serial' runs on one worker; got workers={self.workers}. "
                             f"Choose a parallel strategy for workers > 1")
        self._options()

    def _options(self):
        """(StrategyOptions, runner keyword arguments) from ``strategy_options``."""
        from parrbm.strategies import StrategyOptions

        if self.strategy_options is not None and not isinstance(self.strategy_options, dict):
            raise ValueError(f"RBM: parameter 'strategy_options' must be a dict or None, "
                             f"got {self.strategy_options!r}")
        opts = dict(self.strategy_options or {})
        runner = {k: opts.pop(k) for k in ("blas_threads", "timeout") if k in opts}
        known = {f for f in StrategyOptions.__dataclass_fields__}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"RBM: parameter 'strategy_options' has unknown keys {unknown}; allowed: "
                             f"{sorted(known | {'blas_threads', 'timeout'})}")
        if "blas_threads" in runner:
            v.check_int("RBM", "strategy_options['blas_threads']", runner["blas_threads"], minimum=1)
        if "timeout" in runner:
            v.check_float("RBM", "strategy_options['timeout']", runner["timeout"], low=0.0, low_open=True)
        return StrategyOptions(**opts), runner

    def _dtype_name(self):
        """'float32' for np.float32, 'float32' or np.dtype('float32'); the value itself if
        it names no numpy dtype (so the error shows what was given)."""
        try:
            return str(np.dtype(self.dtype))
        except TypeError:
            return self.dtype

    def _spec(self, n_features: int) -> CDSpec:
        return CDSpec(
            n_visible=n_features, n_hidden=int(self.n_hidden), batch_size=int(self.batch_size),
            visible=self.visible, gaussian_noise=bool(self.gaussian_noise),
            statistics=self.statistics, cd_k=int(self.cd_k), persistent=bool(self.persistent),
            learning_rate=float(self.learning_rate), momentum=float(self.momentum),
            weight_decay=float(self.weight_decay), dtype=self._dtype_name(), seed=self.seed_,
        )

    def _make_strategy(self, spec: CDSpec, state: ModelState):
        from parrbm.strategies import SerialStrategy

        if self.strategy == "serial":
            return SerialStrategy(spec, state)
        from parrbm.harness.runner import ParallelRunner

        options, runner = self._options()
        try:
            return ParallelRunner(spec, state, self.strategy, int(self.workers), self.transport,
                                  options, **runner)
        except ValueError as exc:
            raise ValueError(f"RBM: {exc}") from exc

    # ---- fitting ---------------------------------------------------------------------------

    def _validate_X(self, X, *, reset: bool) -> np.ndarray:
        dtype = self.spec_.dtype if hasattr(self, "spec_") and not reset else self._dtype_name()
        return v.check_data("RBM", X, dtype=np.dtype(dtype),
                            n_features=None if reset else self.n_features_in_,
                            binary_range=self.visible == "binary")

    def _initialise(self, X: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)
        self.n_features_in_ = X.shape[1]
        self.spec_ = self._spec(X.shape[1])
        self._state = ModelState.initial(self.spec_)
        self._strategy = self._make_strategy(self.spec_, self._state)
        self.n_steps_ = 0
        self.reconstruction_error_ = []
        self._export()

    def _train_epoch(self, X: np.ndarray, order: np.ndarray) -> float:
        errors = self._strategy.run(X, order.astype(np.int64, copy=False), self.n_steps_)
        self.n_steps_ += len(errors)
        self._state = self._strategy.gather_model()
        self._export()
        self.comm_stats_ = self._strategy.comm_stats()
        if self.spec_.persistent:
            # A PCD chain is not a reconstruction of the data: monitor mean-field instead.
            sub = X[order[: min(len(order), 1000)]]
            return float(np.mean((sub.astype(np.float64) - self._strategy.reconstruct(sub)) ** 2))
        return float(np.sum(errors) / (len(order) * X.shape[1]))

    def fit(self, X, y=None):
        """Fit the model to X, of shape (n_samples, n_features), for n_iter epochs.

        Each epoch visits the samples in a fresh order drawn from the seed.
        """
        self._check_params()
        X = self._validate_X(X, reset=True)
        if self.batch_size > X.shape[0]:
            raise ValueError(f"RBM: parameter 'batch_size' ({self.batch_size}) is larger than the "
                             f"number of samples in X ({X.shape[0]})")
        self._initialise(X)
        for epoch in range(self.n_iter):
            order = np.random.default_rng([self.seed_, 0x0E90C4, epoch]).permutation(X.shape[0])
            t0 = time.perf_counter()
            err = self._train_epoch(X, order)
            self.reconstruction_error_.append(err)
            if self.verbose:
                print(f"[RBM] epoch {epoch + 1}/{self.n_iter}: reconstruction error {err:.6f}, "
                      f"{time.perf_counter() - t0:.2f} s")
        return self

    def partial_fit(self, X, y=None):
        """One pass of CD-k over X, of shape (n_samples, n_features), in the given order.

        The first call initialises the model; later calls continue it (the step index of
        the random streams continues too, so the result equals one longer run).
        """
        first = not hasattr(self, "spec_")
        if first:
            self._check_params()
        X = self._validate_X(X, reset=first)
        if first:
            self._initialise(X)
        elif self.batch_size != self.spec_.batch_size:
            raise ValueError("RBM: parameter 'batch_size' changed since the first partial_fit "
                             f"({self.spec_.batch_size} -> {self.batch_size})")
        err = self._train_epoch(X, np.arange(X.shape[0], dtype=np.int64))
        self.reconstruction_error_.append(err)
        return self

    def _export(self) -> None:
        self.components_ = self._state.W.T
        self.intercept_hidden_ = self._state.c
        self.intercept_visible_ = self._state.b

    # ---- inference ----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "spec_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This RBM instance is not fitted yet; call 'fit' first.")

    def transform(self, X) -> np.ndarray:
        """Hidden probabilities p(h = 1 | x): (n_samples, n_features) -> (n_samples, n_hidden)."""
        self._check_fitted()
        return self._strategy.hidden_probabilities(self._validate_X(X, reset=False))

    def reconstruct(self, X) -> np.ndarray:
        """Mean-field reconstruction E[v | h = p(h | x)], shape (n_samples, n_features)."""
        self._check_fitted()
        return self._strategy.reconstruct(self._validate_X(X, reset=False))

    def free_energy(self, X) -> np.ndarray:
        """F(x) of each sample, shape (n_samples,); lower means more probable.

        Binary: -x.b - sum_j softplus(x W + c)_j; Gaussian: ||x - b||^2 / 2 - sum_j softplus(.)_j.
        """
        self._check_fitted()
        X = self._validate_X(X, reset=False).astype(np.float64)
        return self._free_energy(X)

    def _free_energy(self, X: np.ndarray) -> np.ndarray:
        s = self._state
        hidden = np.logaddexp(0, X @ s.W.astype(np.float64) + s.c).sum(axis=1)
        if self.spec_.visible == "gaussian":
            return 0.5 * np.sum((X - s.b) ** 2, axis=1) - hidden
        return -X @ s.b.astype(np.float64) - hidden

    def score_samples(self, X) -> np.ndarray:
        """Pseudo-likelihood of each sample (binary visible units), shape (n_samples,).

        As scikit-learn's BernoulliRBM: one randomly chosen visible unit of each sample is
        flipped and n_features * log sigm(F(x_flipped) - F(x)) is returned.
        """
        self._check_fitted()
        if self.spec_.visible != "binary":
            raise ValueError("RBM: score_samples (pseudo-likelihood) needs visible='binary'")
        X = self._validate_X(X, reset=False).astype(np.float64)
        rng = np.random.default_rng([self.seed_, 0x5C0E, self.n_steps_])
        idx = (np.arange(X.shape[0]), rng.integers(0, X.shape[1], X.shape[0]))
        X_flip = X.copy()
        X_flip[idx] = 1 - X_flip[idx]
        fe, fe_flip = self._free_energy(X), self._free_energy(X_flip)
        return -X.shape[1] * np.logaddexp(0, -(fe_flip - fe))

    # ---- persistence --------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the fitted model to one ``.npz`` file, atomically (temp file + rename)."""
        self._check_fitted()
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": {k: (val if isinstance(val, (int, float, str, bool, type(None))) else repr(val))
                       for k, val in self.get_params().items()},
            "spec": {**self.spec_.__dict__},
            "n_steps": self.n_steps_,
            "seed": self.seed_,
            "reconstruction_error": list(self.reconstruction_error_),
        }
        arrays = {f"state_{k}": a for k, a in self._state.arrays().items()}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, parrbm_meta=np.array(json.dumps(meta)), **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path) -> "RBM":
        """Read a model written by ``save``; a truncated or foreign file raises ValueError."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"RBM.load: no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "parrbm_meta" not in z.files:
                    raise ValueError(f"RBM.load: {path} is not a parrbm model file "
                                     f"(no 'parrbm_meta' entry; found {sorted(z.files)[:5]})")
                meta = json.loads(str(z["parrbm_meta"]))
                arrays = {k[len("state_"):]: z[k] for k in z.files if k.startswith("state_")}
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"RBM.load: {path} is not a readable parrbm model file "
                             f"(truncated or corrupt: {exc})") from exc
        except ValueError as exc:
            if str(exc).startswith("RBM.load"):
                raise
            raise ValueError(f"RBM.load: {path} is not a parrbm model file ({exc})") from exc
        if meta.get("format") != _FORMAT:
            raise ValueError(f"RBM.load: {path} is not a parrbm model file (format {meta.get('format')!r})")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"RBM.load: {path} has format version {meta.get('format_version')}, "
                             f"this parrbm reads version {_FORMAT_VERSION}")
        missing = {"W", "b", "c"} - set(arrays)
        if missing:
            raise ValueError(f"RBM.load: {path} lacks the arrays {sorted(missing)}")
        params = {k: val for k, val in meta["params"].items() if k != "random_state" or
                  isinstance(val, (int, type(None)))}
        try:
            rbm = cls(**params)
            spec = CDSpec(**meta["spec"])
        except TypeError as exc:
            raise ValueError(f"RBM.load: {path} has metadata this parrbm does not understand ({exc})") from exc
        rbm.seed_ = int(meta["seed"])
        rbm.n_features_in_ = spec.n_visible
        rbm.spec_ = spec
        state = ModelState(**{k: arrays.get(k) for k in ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")})
        if state.W.shape != (spec.n_visible, spec.n_hidden) or state.W.dtype != spec.np_dtype:
            raise ValueError(f"RBM.load: {path} holds weights of shape {state.W.shape} and dtype "
                             f"{state.W.dtype}, its metadata says ({spec.n_visible}, {spec.n_hidden}) {spec.dtype}")
        rbm._state = state
        rbm._strategy = rbm._make_strategy(spec, state)
        rbm.n_steps_ = int(meta["n_steps"])
        rbm.reconstruction_error_ = list(meta.get("reconstruction_error", []))
        rbm._export()
        return rbm
