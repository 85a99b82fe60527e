"""The scikit-learn estimator: ``parrbm.RBM``."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import validate_data
from threadpoolctl import ThreadpoolController

from parrbm import _validation as v
from parrbm.config import DTYPES, STATISTICS, TRANSPORTS, VISIBLE_TYPES, CDSpec, ModelState

_FORMAT = "parrbm-rbm"
_FORMAT_VERSION = 1
_SCHEDULES = ("constant", "linear", "exponential")
#: samples of the training data (and of X_valid) the per-epoch monitors look at
MONITOR_SAMPLES = 500
#: m x V x H below which the serial trainer's GEMMs run on one BLAS thread
SMALL_GEMM = 1 << 22
#: the most bytes of a sparse X densified at once (whole minibatches, at least one)
SPARSE_CHUNK_BYTES = 4 << 20


class DivergenceError(ValueError):
    """Training blew up (NaN / inf or exploding weights); the model is left as it was
    after the last good epoch."""


def latest_checkpoint(directory) -> Path | None:
    """The newest ``epoch-NNNN.npz`` written by ``fit`` in ``directory`` (None if none)."""
    found = sorted(Path(directory).glob("epoch-[0-9][0-9][0-9][0-9]*.npz"))
    return found[-1] if found else None


def _resolve_seed(random_state) -> int:
    """A 64-bit key for every random stream of the fit."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy) & (2**64 - 1)
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        draw = random_state.integers if hasattr(random_state, "integers") else random_state.randint
        return int(draw(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise ValueError(
            f"RBM: parameter 'random_state' must be None, an int, or a numpy "
            f"RandomState/Generator, got {random_state!r}"
        )
    if random_state < 0 or random_state >= 2**64:
        raise ValueError(f"RBM: parameter 'random_state' must be in [0, 2**64), got {random_state}")
    return int(random_state)


class ModelTagsMixin:
    """scikit-learn tags of RBM and DBN (both have ``dtype`` and ``visible``)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # features come out in the model's own precision (``dtype``), whatever X's is
        tags.transformer_tags.preserves_dtype = [self.dtype]
        tags.input_tags.positive_only = self.visible == "binary"  # and at most 1: see _validation
        tags.input_tags.sparse = True  # densified a few minibatches at a time
        return tags


class RBM(ModelTagsMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
    learning_rate : float or "auto", default="auto"
        Step size eps; the weight change of a minibatch of m cases is
        eps / m * (x^T h - v'^T h'). "auto": 0.1 for binary visible units, 0.01 for
        Gaussian ones.
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
    sample_visible : bool, default=False
        Binary visible units with ``statistics="probabilities"``: sample the negative-phase
        visible states instead of using their probabilities, as scikit-learn's BernoulliRBM
        does (with ``persistent=True`` this is BernoulliRBM's algorithm). Sampled statistics
        always sample them; Gaussian units have ``gaussian_noise``.
    gaussian_noise : bool, default=False
        Sample Gaussian visible units in the negative phase instead of using their mean.
    dtype : {"float32", "float64"}, default="float32"
    random_state : int, RandomState, Generator or None, default=None
    strategy : {"serial", "unit-partitioned", "per-update-sync", "purple-only", "green-only", \
            "parameter-averaging"}, default="serial"
        How the work is split over ``workers`` (docs/design.md section 5).
    workers : int, default=1
        K, the number of workers.
    transport : {"threads", "tcp", "mpi"}, default="threads"
        How workers exchange data: "threads" (threads of this process, shared memory),
        "tcp" (one process per worker, sockets; on other hosts too) or "mpi" (mpi4py under
        ``mpiexec``, started for the fit; ``pip install "parrbm[mpi]"``).
    strategy_options : dict or None, default=None
        Options of the parallel strategies: ``partition`` ("contiguous" | "random"),
        ``sync_every`` (unit-partitioned; 0 = never), ``shared_weights`` (per-update-sync on
        threads), ``reduce`` ("master" | "allreduce"), ``average`` ("gradients" |
        "weights"), ``average_every`` (parameter averaging), ``blas_threads`` (BLAS threads
        per worker, default 1), ``timeout`` (seconds a worker waits for its peers),
        ``network`` (tcp and mpi: each worker on an emulated host of its own, its link
        shaped, e.g. ``{"bandwidth": "105MB/s", "latency": "0.091ms"}``; needs root or
        CAP_NET_ADMIN), ``hosts`` (tcp and mpi: the hosts parrbm starts the workers on, one
        a host in order, e.g. ``["node0", "node1"]``; mpi over mpiexec's ssh start, with
        nothing shared but the installed environment), ``mpi`` and ``tcp`` (the keys of a
        config's ``mpi`` and ``tcp`` sections: ``hostfile``, ``mpiexec``, ``env``,
        ``listen``, ...).
    learning_rate_schedule : {"constant", "linear", "exponential"} or callable, default="constant"
        The learning rate of epoch e (from 0): constant; ``learning_rate * (1 - e / n_iter)``;
        ``learning_rate * learning_rate_decay ** e``; or ``schedule(e)`` for a callable
        (not saved with the model).
    learning_rate_decay : float in (0, 1], default=0.95
        The factor per epoch of the exponential schedule.
    max_abs_weight : float, default=100.0
        The divergence guard: an epoch that ends with a NaN / inf anywhere in the model or
        the reconstruction error, or with a weight larger than this in magnitude, stops
        ``fit`` with :class:`DivergenceError` naming the epoch and a smaller learning rate;
        the model is put back to the last good epoch.
    warm_start : bool, default=False
        ``fit`` on a fitted model (e.g. one read from a checkpoint) continues it: epochs
        ``epochs_done_`` to ``n_iter`` - 1 run, with the data order and random streams of
        those epochs, so a resumed fit equals one that was never interrupted.
    checkpoint_dir : str or None, default=None
        Save the model as ``epoch-NNNN.npz`` there every ``checkpoint_every`` epochs and
        after the last (atomically; the two newest are kept). ``latest_checkpoint(dir)``
        finds the newest.
    checkpoint_every : int, default=1
    progress : bool or "auto", default="auto"
        A progress bar over the epochs on standard error ("auto": when it is a terminal).
    verbose : int, default=0
        0: silent; 1 or more: one line per epoch on standard output, as scikit-learn's
        BernoulliRBM prints it (``[RBM] Iteration 3, pseudo-likelihood = -21.05,
        time = 0.12s``), followed by the other monitors; written through the progress
        bar when there is one, so the two do not break each other.

    Notes
    -----
    ``X`` may be a scipy.sparse matrix or array (CSR, CSC, LIL, ...): it is never
    densified as a whole, only a few minibatches at a time (at most 4 MB of them).
    Training data of binary visible units must lie in [0, 1]; inference (``transform``,
    ``score_samples``, ``gibbs``) takes any finite values.

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
    history_ : list of dict
        One entry per epoch of ``fit``: ``epoch`` (from 1), ``learning_rate``,
        ``reconstruction_error`` (during the epoch), ``train_reconstruction_error`` (the
        mean-field reconstruction error of up to 500 training samples after the epoch,
        measured as ``valid_reconstruction_error`` is), ``pseudo_likelihood`` (binary visible units: mean over
        up to 500 training samples), ``free_energy_gap`` (mean free energy of up to 500
        ``X_valid`` samples minus that of as many training samples: it grows when the
        model overfits), ``valid_reconstruction_error``, ``max_abs_weight``, ``seconds``.
    epochs_done_ : int
        Epochs of ``fit`` done so far.
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

    def __init__(
        self,
        n_hidden=256,
        *,
        visible="binary",
        learning_rate="auto",
        batch_size=10,
        n_iter=10,
        momentum=0.0,
        weight_decay=0.0,
        cd_k=1,
        persistent=False,
        statistics="samples",
        sample_visible=False,
        gaussian_noise=False,
        dtype="float32",
        random_state=None,
        strategy="serial",
        workers=1,
        transport="threads",
        strategy_options=None,
        learning_rate_schedule="constant",
        learning_rate_decay=0.95,
        max_abs_weight=100.0,
        warm_start=False,
        checkpoint_dir=None,
        checkpoint_every=1,
        progress="auto",
        verbose=0,
    ):
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
        self.sample_visible = sample_visible
        self.gaussian_noise = gaussian_noise
        self.dtype = dtype
        self.random_state = random_state
        self.strategy = strategy
        self.workers = workers
        self.transport = transport
        self.strategy_options = strategy_options
        self.learning_rate_schedule = learning_rate_schedule
        self.learning_rate_decay = learning_rate_decay
        self.max_abs_weight = max_abs_weight
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.verbose = verbose

    # ---- parameters ------------------------------------------------------------------

    def _check_params(self, *, strategy: bool = True) -> None:
        o = "RBM"
        v.check_int(o, "n_hidden", self.n_hidden, minimum=1)
        v.check_choice(o, "visible", self.visible, VISIBLE_TYPES)
        if self.learning_rate != "auto":
            v.check_float(o, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        v.check_int(o, "batch_size", self.batch_size, minimum=1)
        v.check_int(o, "n_iter", self.n_iter, minimum=0)
        v.check_float(o, "momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        v.check_float(o, "weight_decay", self.weight_decay, low=0.0)
        from parrbm.strategies.rules import MAX_CD_K

        v.check_int(o, "cd_k", self.cd_k, minimum=1, maximum=MAX_CD_K)
        if not isinstance(self.persistent, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'persistent' must be True or False, got {self.persistent!r}")
        if not isinstance(self.sample_visible, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'sample_visible' must be True or False, got {self.sample_visible!r}")
        if self.sample_visible and self.visible != "binary":
            raise ValueError(
                "RBM: parameter 'sample_visible' is for binary visible units; Gaussian units are "
                "sampled with gaussian_noise=True"
            )
        if not isinstance(self.gaussian_noise, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'gaussian_noise' must be True or False, got {self.gaussian_noise!r}")
        v.check_choice(o, "statistics", self.statistics, STATISTICS)
        v.check_choice(o, "dtype", self._dtype_name(), DTYPES)
        v.check_int(o, "workers", self.workers, minimum=1)
        v.check_choice(o, "transport", self.transport, TRANSPORTS)
        from parrbm.strategies.registry import StrategyError, resolve

        try:
            # a plug-in is imported when the user names it, never because a model file does
            if strategy:
                resolve(self.strategy, load=not self._strategy_from_file())
        except StrategyError as exc:
            raise ValueError(
                f"RBM: parameter 'strategy': {exc}"
                + (
                    "; the model file names it: set_params(strategy=...) with the class or a "
                    "registered name to train on"
                    if self._strategy_from_file()
                    else ""
                )
            ) from None
        if not callable(self.learning_rate_schedule):
            v.check_choice(o, "learning_rate_schedule", self.learning_rate_schedule, _SCHEDULES)
        v.check_float(o, "learning_rate_decay", self.learning_rate_decay, low=0.0, high=1.0, low_open=True)
        v.check_float(o, "max_abs_weight", self.max_abs_weight, low=0.0, low_open=True)
        v.check_int(o, "checkpoint_every", self.checkpoint_every, minimum=1)
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError(f"RBM: parameter 'warm_start' must be True or False, got {self.warm_start!r}")
        if not isinstance(self.verbose, (bool, np.bool_)):  # True / False as scikit-learn's estimators take them
            v.check_int(o, "verbose", self.verbose, minimum=0)
        if self.progress not in (True, False, "auto"):
            raise ValueError(f"RBM: parameter 'progress' must be True, False or 'auto', got {self.progress!r}")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"RBM: parameter 'checkpoint_dir' must be a path or None, got {self.checkpoint_dir!r}")
        if strategy and self._serial() and self.workers != 1:
            raise ValueError(
                f"RBM: strategy 'serial' runs on one worker; got workers={self.workers}. "
                f"Choose a parallel strategy for workers > 1"
            )
        self._options()

    #: parameters that make another model (its shape, its units, its sampling): changed
    #: after a fit, they are refused by a continued fit (call fit to start anew)
    MODEL_PARAMS = (
        "n_hidden",
        "visible",
        "dtype",
        "batch_size",
        "cd_k",
        "persistent",
        "statistics",
        "sample_visible",
        "gaussian_noise",
    )
    #: parameters that apply to the next steps of a continued fit (partial_fit, warm_start)
    STEP_PARAMS = ("learning_rate", "momentum", "weight_decay", "strategy", "workers", "transport", "strategy_options")

    def set_params(self, **params):
        """scikit-learn's set_params. After a fit, a changed parameter of
        :attr:`MODEL_PARAMS` is refused by a continued fit (``partial_fit``, ``fit`` with
        ``warm_start``); one of :attr:`STEP_PARAMS` applies to its next steps."""
        if "strategy" in params:  # the user names the strategy now: it may be imported
            self._file_strategies = set()
        return super().set_params(**params)

    def _continue_with_params(self, how: str) -> None:
        """A continued fit under the current parameters: refused if one of MODEL_PARAMS
        changed since the model was fitted; the trainer rebuilt from the model if one of
        STEP_PARAMS did."""
        spec = self.spec_
        now = {
            "n_hidden": int(self.n_hidden),
            "visible": self.visible,
            "dtype": self._dtype_name(),
            "batch_size": int(self.batch_size),
            "cd_k": int(self.cd_k),
            "persistent": bool(self.persistent),
            "statistics": self.statistics,
            "sample_visible": bool(self.sample_visible),
            "gaussian_noise": bool(self.gaussian_noise),
        }
        then = {
            "n_hidden": spec.n_hidden,
            "visible": spec.visible,
            "dtype": spec.dtype,
            "batch_size": spec.batch_size,
            "cd_k": spec.cd_k,
            "persistent": spec.persistent,
            "statistics": spec.statistics,
            "sample_visible": spec.sample_visible,
            "gaussian_noise": spec.gaussian_noise,
        }
        changed = [k for k in self.MODEL_PARAMS if now[k] != then[k]]
        if changed:
            k = changed[0]
            raise ValueError(
                f"RBM: parameter {k!r} changed since the model was fitted ({then[k]!r} -> {now[k]!r}); "
                f"{how} continues the fitted model, whose {', '.join(changed)} cannot change: call "
                f"fit (warm_start=False) to fit a new model"
            )
        built = getattr(self, "_built_with", None)
        wanted = self._step_params()
        if built is not None and built != wanted and self._strategy is not None:
            self._rebuild_trainer()

    def _step_params(self) -> tuple:
        """The STEP_PARAMS as the trainer was built with them (comparable)."""
        return (
            self.base_learning_rate(),
            float(self.momentum),
            float(self.weight_decay),
            registry_reference(self.strategy),
            int(self.workers),
            self.transport,
            json.dumps(self.strategy_options, sort_keys=True, default=str),
        )

    def _rebuild_trainer(self) -> None:
        """The next steps under the new STEP_PARAMS: the replicas brought together, the old
        trainer closed, a new one built on the model as it is (momentum's increments
        zero where the model had none)."""
        old = self._strategy
        if hasattr(old, "finish"):
            old.finish()
        state = old.gather_model()
        if hasattr(old, "close"):
            old.close()
        spec = self.spec_.replace(
            learning_rate=self.base_learning_rate(),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
        )
        if spec.momentum != 0.0 and state.W_inc is None:
            state = ModelState(
                **{
                    **vars(state),
                    "W_inc": np.zeros_like(state.W),
                    "b_inc": np.zeros_like(state.b),
                    "c_inc": np.zeros_like(state.c),
                }
            )
        self.spec_, self._state = spec, state
        self._strategy = self._make_strategy(spec, state)

    def _spmd(self) -> bool:
        """This fit runs on the ranks of a job the user's launcher started
        (``mpiexec -n N python script.py`` with ``transport="mpi"`` or ``"tcp"``)."""
        if self.transport not in ("mpi", "tcp") or self._strategy_from_file() or self._serial():
            return False
        from parrbm.harness.world import spmd_world

        return spmd_world() is not None

    def _leader(self) -> bool:
        """This process writes checkpoints and prints progress: always, except on the
        ranks beyond 0 of an MPI job."""
        if not self._spmd():
            return True
        from parrbm.harness.world import spmd_leader

        return spmd_leader()

    def _strategy_from_file(self) -> bool:
        """The strategy parameter is still the name a model file gave (see ``load``)."""
        return isinstance(self.strategy, str) and self.strategy in getattr(self, "_file_strategies", ())

    def _serial(self) -> bool:
        from parrbm.strategies.registry import resolve

        return resolve(self.strategy).name == "serial"

    def _options(self):
        """(StrategyOptions, runner keyword arguments) from ``strategy_options``."""
        from parrbm.strategies import StrategyOptions

        if self.strategy_options is not None and not isinstance(self.strategy_options, dict):
            raise ValueError(f"RBM: parameter 'strategy_options' must be a dict or None, got {self.strategy_options!r}")
        opts = dict(self.strategy_options or {})
        if "engine" in opts:
            raise ValueError(
                "RBM: strategy_options['engine'] is no longer an option: every strategy has one "
                "description, its Python module over the core's kernels, and runs it on every "
                "transport; remove it"
            )
        runner = {k: opts.pop(k) for k in RUNNER_OPTIONS if k in opts}
        known = {f for f in StrategyOptions.__dataclass_fields__}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(
                f"RBM: parameter 'strategy_options' has unknown keys {unknown}; allowed: "
                f"{sorted(known | set(RUNNER_OPTIONS))}"
            )
        if "network" in runner:
            runner["network"] = _network_option(runner["network"], self.transport)
        if {"hosts", "mpi", "tcp"} & set(runner):
            _hosts_options(runner, self.transport)
        if "blas_threads" in runner:
            v.check_int("RBM", "strategy_options['blas_threads']", runner["blas_threads"], minimum=1)
        if "timeout" in runner:
            v.check_float("RBM", "strategy_options['timeout']", runner["timeout"], low=0.0, low_open=True)
        options = StrategyOptions(**opts)
        from parrbm.strategies.registry import StrategyError
        from parrbm.strategies.rules import unused_options

        try:
            unused = unused_options(options, [self.strategy])
        except StrategyError:  # a plug-in named by a model file, not loaded: checked when a fit names it
            unused = []
        if unused:
            raise ValueError(
                f"RBM: parameter 'strategy_options': the option {unused[0]} is not read by strategy "
                f"{self.strategy!r}; remove it or choose a strategy that reads it"
            )
        return options, runner

    def _dtype_name(self):
        """'float32' for np.float32, 'float32' or np.dtype('float32'); the value itself if
        it names no numpy dtype (so the error shows what was given)."""
        try:
            return str(np.dtype(self.dtype))
        except TypeError:
            return self.dtype

    def _spec(self, n_features: int) -> CDSpec:
        return CDSpec(
            n_visible=n_features,
            n_hidden=int(self.n_hidden),
            batch_size=int(self.batch_size),
            visible=self.visible,
            gaussian_noise=bool(self.gaussian_noise),
            sample_visible=bool(self.sample_visible),
            statistics=self.statistics,
            cd_k=int(self.cd_k),
            persistent=bool(self.persistent),
            learning_rate=self.base_learning_rate(),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
            dtype=self._dtype_name(),
            seed=self.seed_,
        )

    def _make_strategy(self, spec: CDSpec, state: ModelState):
        self._built_with = self._step_params()
        return self._build_strategy(spec, state)

    def _build_strategy(self, spec: CDSpec, state: ModelState):
        from parrbm.strategies import SerialStrategy

        if self._serial():
            return SerialStrategy(spec, state)
        from parrbm.harness.runner import ParallelRunner

        options, runner = self._options()
        try:
            return ParallelRunner(spec, state, self.strategy, int(self.workers), self.transport, options, **runner)
        except ValueError as exc:
            raise ValueError(f"RBM: {exc}") from exc

    # ---- fitting ---------------------------------------------------------------------------

    def _validate_X(self, X, *, reset: bool, training: bool = False):
        """X checked, as an array of the model's dtype, or a CSR matrix for sparse X.
        Binary units train on data in [0, 1]; inference takes any finite values."""
        dtype = self.spec_.dtype if hasattr(self, "spec_") and not reset else self._dtype_name()
        arr = v.check_data(
            type(self).__name__,
            X,
            dtype=np.dtype(dtype),
            n_features=None if reset else self.n_features_in_,
            binary_range=training and self.visible == "binary",
            accept_sparse=True,
        )
        # feature_names_in_ (a DataFrame's columns): set on fit, held to on later calls
        validate_data(self, X, reset=reset, skip_check_array=True)
        return arr

    def _initialise(self, X: np.ndarray) -> None:
        self.seed_ = _resolve_seed(self.random_state)
        if self._spmd():  # one of the ranks of an MPI job: they fit one model, from one seed
            from parrbm.harness.world import spmd_agree_on_data

            self.seed_ = spmd_agree_on_data(X, self.seed_)
        self.n_features_in_ = X.shape[1]
        self.spec_ = self._spec(X.shape[1])
        self._state = ModelState.initial(self.spec_)
        self._strategy = self._make_strategy(self.spec_, self._state)
        self.n_steps_ = 0
        self.epochs_done_ = 0
        self.reconstruction_error_ = []
        self.history_ = []
        self._export()

    def _trainer(self):
        """The trainer of a loaded model whose strategy is a plug-in, built when a fit first
        needs it (loading the file imported nothing)."""
        if self._strategy is None:
            self._check_params()
            self._strategy = self._make_strategy(self.spec_, self._state)
            pending = self.__dict__.pop("_pending_local", None)
            if pending is not None:
                self._strategy.restore_local(pending[1])
        return self._strategy

    def _inference(self):
        """What computes hidden and visible probabilities: the trainer, or for a loaded
        model whose plug-in trainer is not built, the serial trainer on the same model."""
        if self._strategy is not None:
            return self._strategy
        from parrbm.strategies import SerialStrategy

        return SerialStrategy(self.spec_, self._state)

    def _train_epoch(self, X, order: np.ndarray) -> float:
        order = order.astype(np.int64, copy=False)
        self._trainer()
        if v._is_sparse(X):
            errors = self._train_sparse(X, order)
        elif getattr(self, "_same_data", False) and hasattr(self._strategy, "run_again"):
            errors = self._strategy.run_again(X, order, self.n_steps_)  # the epochs of one fit: X goes once
        else:
            errors = self._strategy.run(X, order, self.n_steps_)
        self.n_steps_ += len(errors)
        self._state = self._strategy.gather_model()
        self._export()
        self.comm_stats_ = self._strategy.comm_stats()
        if self.spec_.persistent:
            # A PCD chain is not a reconstruction of the data: monitor mean-field instead.
            sub = _dense(X[order[: min(len(order), MONITOR_SAMPLES)]])
            return float(np.mean((sub.astype(np.float64) - self._strategy.reconstruct(sub)) ** 2))
        return float(np.sum(errors) / (len(order) * X.shape[1]))

    def _train_sparse(self, X, order: np.ndarray) -> np.ndarray:
        """The minibatches of a sparse X in ``order``, densified a few whole minibatches at
        a time: the steps, their random streams and the model are those of the dense X."""
        m = int(self.spec_.batch_size)
        batches = max(1, SPARSE_CHUNK_BYTES // max(1, m * X.shape[1] * self.spec_.np_dtype.itemsize))
        errors = []
        for start in range(0, len(order), m * batches):
            rows = order[start : start + m * batches]
            chunk = _dense(X[rows])
            errors.append(self._strategy.run(chunk, np.arange(len(rows), dtype=np.int64), self.n_steps_ + start // m))
        return np.concatenate(errors)

    def base_learning_rate(self) -> float:
        """``learning_rate``, with "auto" resolved: 0.1 for binary visible units, 0.01 for
        Gaussian ones (unit-variance inputs drive the hidden units harder; at 0.1 a
        Gaussian RBM on standardised digits diverges in its first epoch)."""
        if self.learning_rate == "auto":
            return 0.1 if self.visible == "binary" else 0.01
        return float(self.learning_rate)

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (from 0) under the schedule."""
        sched, lr = self.learning_rate_schedule, self.base_learning_rate()
        if callable(sched):
            value = sched(epoch)
            v.check_float("RBM", f"learning_rate_schedule({epoch})", value, low=0.0, low_open=True)
            return float(value)
        if sched == "linear":
            return lr * (1.0 - epoch / max(int(self.n_iter), 1))
        if sched == "exponential":
            return lr * float(self.learning_rate_decay) ** epoch
        return lr

    def fit(self, X, y=None, *, X_valid=None):
        """Fit the model to X, of shape (n_samples, n_features), for n_iter epochs.

        Each epoch visits the samples in a fresh order drawn from the seed and the epoch's
        number. ``X_valid`` (n_valid, n_features), optional: held-out data for the
        free-energy gap and the held-out reconstruction error in ``history_``.
        With ``warm_start`` a fitted model continues from ``epochs_done_``.
        """
        self._check_params()
        resume = bool(self.warm_start) and hasattr(self, "spec_")
        X = self._validate_X(X, reset=not resume, training=True)
        if resume:
            self._continue_with_params("fit with warm_start=True")
        else:
            self._initialise(X)
        X_valid = (
            None
            if X_valid is None
            else v.check_data(
                "RBM",
                X_valid,
                dtype=self.spec_.np_dtype,
                name="X_valid",
                n_features=self.n_features_in_,
                binary_range=self.visible == "binary",
                accept_sparse=True,
            )
        )
        monitor = _Monitor(self, X, X_valid)
        # the checkpoints of an MPI job's fit are rank 0's to write
        ckpt = Path(self.checkpoint_dir) if self.checkpoint_dir is not None and self._leader() else None
        with contextlib.ExitStack() as held:
            if ckpt is not None:
                self._hold_checkpoint_dir(ckpt, held)
                self._check_checkpoint_dir(ckpt, resume)
            return self._fit_epochs(X, monitor, ckpt)

    def _hold_checkpoint_dir(self, ckpt: Path, stack: contextlib.ExitStack) -> None:
        """The checkpoint folder, held for the fit's life: a second fit into it (in this
        process or another) is refused, naming the holder."""
        from parrbm._files import FolderLock, InUse

        try:
            ckpt.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"RBM: parameter 'checkpoint_dir' {str(ckpt)!r}: cannot create the directory ({exc.strerror or exc})"
            ) from None
        try:
            stack.enter_context(FolderLock(ckpt, "another fit"))
        except InUse as exc:
            raise ValueError(
                f"RBM: parameter 'checkpoint_dir': {exc}; two fits cannot write checkpoints "
                f"into one directory: give each its own"
            ) from None
        except OSError as exc:
            raise ValueError(f"RBM: parameter 'checkpoint_dir' {str(ckpt)!r}: {exc.strerror or exc}") from None

    def _fit_epochs(self, X: np.ndarray, monitor: "_Monitor", ckpt: Path | None):
        bar = _progress_bar(self.progress, self.epochs_done_, int(self.n_iter)) if self._leader() else None
        with self._main_thread_blas():
            try:
                first_epoch = self.epochs_done_
                for epoch in range(self.epochs_done_, int(self.n_iter)):
                    self._same_data = epoch > first_epoch
                    entry = self._fit_epoch(epoch, X, monitor, ckpt)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(recon=f"{entry['reconstruction_error']:.4g}")
                    if self.verbose and self._leader():
                        _write(self._epoch_line(entry), bar)
                if self.epochs_done_ == int(self.n_iter) and hasattr(self._strategy, "finish"):
                    self._strategy.finish()  # replicas apart (local steps) are brought together
                    self._state = self._strategy.gather_model()
                    self._export()
                    self.comm_stats_ = self._strategy.comm_stats()
            finally:
                if bar is not None:
                    bar.close()
                if hasattr(self._strategy, "close"):
                    self._strategy.close()  # the worker processes of a tcp or mpi fit stop with it
        return self

    def _epoch_line(self, entry: dict) -> str:
        """BernoulliRBM's verbose line (its tools parse it), then parrbm's other monitors."""
        pl = entry.get("pseudo_likelihood")
        head = f"[{type(self).__name__}] Iteration {entry['epoch']}"
        if pl is not None:
            head += f", pseudo-likelihood = {pl:.2f}"
        extra = "".join(
            f", {k.replace('_', ' ')} = {entry[k]:.4f}"
            for k in ("free_energy_gap", "valid_reconstruction_error")
            if entry.get(k) is not None
        )
        return (
            f"{head}, time = {entry['seconds']:.2f}s, reconstruction error = {entry['reconstruction_error']:.6f}{extra}"
        )

    def _fit_epoch(self, epoch: int, X: np.ndarray, monitor: "_Monitor", ckpt: Path | None) -> dict:
        """One epoch at its learning rate, in its own order; a diverged epoch is undone
        (:class:`DivergenceError`). Returns the epoch's ``history_`` entry."""
        self._trainer()
        lr = self.learning_rate_at(epoch)
        if lr != self.spec_.learning_rate:
            self.spec_ = self.spec_.replace(learning_rate=lr)
            self._strategy.set_learning_rate(lr)
        order = np.random.default_rng([self.seed_, 0x0E90C4, epoch]).permutation(X.shape[0])
        good = ModelState(**{k: None if a is None else a.copy() for k, a in vars(self._state).items()})
        good_steps = self.n_steps_
        t0 = time.perf_counter()
        err = self._train_epoch(X, order)
        problem = self._diverged(err)
        if problem:
            self._state, self.n_steps_ = good, good_steps
            self._strategy.load_model(good)
            self._export()
            raise DivergenceError(
                f"RBM: training diverged in epoch {epoch + 1} at learning_rate={lr:g}: {problem}. "
                f"The model is left as after epoch {epoch}"
                + (f" and no checkpoint was written for epoch {epoch + 1}" if ckpt else "")
                + f". Try learning_rate={lr / 10:g}"
                + (
                    " (Gaussian visible units need a smaller rate than binary ones, and data "
                    "standardised per dimension)"
                    if self.visible == "gaussian"
                    else ""
                )
            )
        self.reconstruction_error_.append(err)
        self.epochs_done_ = epoch + 1
        entry = {
            "epoch": epoch + 1,
            "learning_rate": lr,
            "reconstruction_error": err,
            **monitor.measure(),
            "max_abs_weight": float(np.max(np.abs(self._state.W))),
            "seconds": time.perf_counter() - t0,
        }
        self.history_.append(entry)
        if (
            ckpt is not None
            and self._leader()
            and (self.epochs_done_ % int(self.checkpoint_every) == 0 or self.epochs_done_ == int(self.n_iter))
        ):
            self._checkpoint(ckpt)
        return entry

    def _diverged(self, err: float) -> str | None:
        s = self._state
        if not math.isfinite(err):
            return f"the reconstruction error is {err}"
        for name in ("W", "b", "c"):
            a = getattr(s, name)
            if not np.all(np.isfinite(a)):
                return f"{name} holds NaN or inf"
        biggest = float(np.max(np.abs(s.W)))
        if biggest > self.max_abs_weight:
            return f"a weight reached {biggest:.3g} (max_abs_weight={self.max_abs_weight:g})"
        return None

    def _check_checkpoint_dir(self, ckpt: Path, resume: bool) -> None:
        """The checkpoints already in ``checkpoint_dir`` are never overwritten by another
        fit: a new fit needs a directory without checkpoints, a continued one must not
        reach back behind the newest."""
        try:
            ckpt.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"RBM: parameter 'checkpoint_dir' {str(ckpt)!r}: cannot create the directory ({exc.strerror or exc})"
            ) from None
        newest = latest_checkpoint(ckpt)
        if newest is None:
            return
        epoch = int(newest.name[len("epoch-") :].split(".")[0])
        if not resume:
            raise ValueError(
                f"RBM: parameter 'checkpoint_dir' {str(ckpt)!r} already holds the checkpoints of "
                f"a fit (newest {newest.name}); a new fit would overwrite them. Continue that fit "
                f"(RBM.load(latest_checkpoint(dir)) with warm_start=True; parrbm train --resume) "
                f"or give another directory"
            )
        if epoch > self.epochs_done_:
            raise ValueError(
                f"RBM: parameter 'checkpoint_dir' {str(ckpt)!r} holds checkpoints up to epoch "
                f"{epoch}, beyond this model's {self.epochs_done_} epochs; continuing here would "
                f"overwrite them: load {newest.name}, or give another directory"
            )

    def _checkpoint(self, directory: Path) -> None:
        self.save(directory / f"epoch-{self.epochs_done_:04d}.npz")
        for old in sorted(directory.glob("epoch-[0-9][0-9][0-9][0-9]*.npz"))[:-2]:
            old.unlink()

    def partial_fit(self, X, y=None):
        """One pass of CD-k over X, of shape (n_samples, n_features), in the given order.

        The first call initialises the model; later calls continue it (the step index of
        the random streams continues too, so the result equals one longer run).
        """
        first = not hasattr(self, "spec_")
        self._check_params()
        X = self._validate_X(X, reset=first, training=True)
        if first:
            self._initialise(X)
        else:
            self._continue_with_params("partial_fit")
        with self._main_thread_blas():
            err = self._train_epoch(X, np.arange(X.shape[0], dtype=np.int64))
        self.reconstruction_error_.append(err)
        return self

    def _main_thread_blas(self):
        """While a parallel strategy trains, this thread's BLAS (monitors, inference between
        epochs) keeps to the workers' thread budget. An OpenBLAS pool woken by a
        multi-threaded call spins for a while after it, taking a core from the next epoch's
        workers: on the digits model that doubled the time of a K = 2 fit."""
        from parrbm.harness.runner import ParallelRunner

        if isinstance(self._strategy, ParallelRunner):
            return _blas_limit(self._strategy.blas_threads)
        spec = self.spec_
        if spec.batch_size * spec.n_visible * spec.n_hidden < SMALL_GEMM:
            # a step's GEMMs this small run no faster on more threads, and waking the pool
            # costs more than they do (digits, m = 10: 1.04-1.20x the one-thread fit)
            return _blas_limit(1)
        return contextlib.nullcontext()

    @property
    def _n_features_out(self) -> int:
        """For ``get_feature_names_out``: rbm0 .. rbm{n_hidden - 1}."""
        return self.components_.shape[0]

    # ---- pickling: the trainer is rebuilt from the model ----------------------------------

    def __getstate__(self) -> dict:
        """The fitted model without its trainer (a C++ object, or a runner whose tcp and
        mpi workers are processes): ``__setstate__`` builds a new one from the model and
        what only the workers know, so an unpickled model trains on as the original would."""
        state = dict(super().__getstate__())  # a copy: object.__getstate__ hands out __dict__ itself
        strategy = state.pop("_strategy", None)
        if strategy is None and "_pending_local" in state:
            state["_worker_local"] = state.pop("_pending_local")[1]
        elif strategy is not None and hasattr(strategy, "local_states") and getattr(strategy, "K", 1) > 1:
            state["_worker_local"] = strategy.local_states()
        return state

    def __setstate__(self, state: dict) -> None:
        local = state.pop("_worker_local", None)
        super().__setstate__(state)
        if hasattr(self, "spec_"):
            if self._strategy_from_file():  # built by the first fit that names it
                self._strategy = None
                if local is not None:
                    self._pending_local = (
                        {"strategy": self.strategy, "workers": len(local), "counters": [c for c, _ in local]},
                        local,
                    )
            else:
                self._strategy = self._make_strategy(self.spec_, self._state)
                if local is not None:
                    self._strategy.restore_local(local)
            self._export()

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
        return _by_rows(self._inference().hidden_probabilities, self._validate_X(X, reset=False))

    def sample_hiddens(self, X) -> np.ndarray:
        """Hidden states drawn from p(h | x): (n_samples, n_features) -> (n_samples, n_hidden)
        of 0 / 1 in the model's dtype. Each call draws afresh (from the seed and a count of
        the model's draws)."""
        self._check_fitted()
        p = self.transform(X)
        return (self._draw_uniform(p.shape) < p).astype(p.dtype)

    def gibbs(self, v) -> np.ndarray:
        """One Gibbs step from v: h ~ p(h | v), then v' ~ p(v | h) (binary units sampled;
        Gaussian units their mean plus unit-variance noise), shape (n_samples, n_features).
        As scikit-learn's ``BernoulliRBM.gibbs``; each call draws afresh."""
        self._check_fitted()
        h = self.sample_hiddens(v)
        s = self._state
        pre = h.astype(np.float64) @ s.W.T.astype(np.float64) + s.b.astype(np.float64)
        if self.spec_.visible == "gaussian":
            out = pre + np.random.default_rng(self._next_draw()).standard_normal(pre.shape)
        else:
            out = (self._draw_uniform(pre.shape) < _sigmoid(pre)).astype(np.float64)
        return out.astype(self.spec_.np_dtype)

    def _next_draw(self) -> list[int]:
        """The seed of the next inference draw: the model's seed, its steps and a count of
        the draws since, so draws never repeat and a model trained alike draws alike."""
        self._draws = getattr(self, "_draws", 0) + 1
        return [self.seed_, 0x61BB5, self.n_steps_, self._draws]

    def _draw_uniform(self, shape) -> np.ndarray:
        return np.random.default_rng(self._next_draw()).random(shape)

    def reconstruct(self, X) -> np.ndarray:
        """Mean-field reconstruction E[v | h = p(h | x)], shape (n_samples, n_features)."""
        self._check_fitted()
        return _by_rows(self._inference().reconstruct, self._validate_X(X, reset=False))

    def free_energy(self, X) -> np.ndarray:
        """F(x) of each sample, shape (n_samples,); lower means more probable.

        Binary: -x.b - sum_j softplus(x W + c)_j; Gaussian: ||x - b||^2 / 2 - sum_j softplus(.)_j.
        """
        self._check_fitted()
        return _by_rows(lambda A: self._free_energy(A.astype(np.float64)), self._validate_X(X, reset=False))

    def _hidden_inputs(self, X: np.ndarray, W=None, dtype=np.float64) -> np.ndarray:
        """X W + c in ``dtype``, (n, H). Through the core's BLAS: a second BLAS thread pool
        (numpy's) would spin beside the trainer's between epochs and slow it down."""
        from parrbm import _core

        X = np.ascontiguousarray(X, dtype=dtype)
        out = np.empty((X.shape[0], self.spec_.n_hidden), dtype)
        out[...] = self._state.c
        W = np.ascontiguousarray(self._state.W, dtype=dtype) if W is None else W
        _core.gemm(X, W, out, beta=1.0)
        return out

    def _free_energy(self, X: np.ndarray) -> np.ndarray:
        s = self._state
        hidden = softplus(self._hidden_inputs(X)).sum(axis=1)
        if self.spec_.visible == "gaussian":
            return 0.5 * np.sum((X - s.b) ** 2, axis=1) - hidden
        return -(X * s.b.astype(np.float64)).sum(axis=1) - hidden

    def _binary_visible(self) -> bool:
        if self.visible != "binary":
            raise AttributeError("RBM: score_samples (pseudo-likelihood) needs visible='binary'")
        return True

    @available_if(_binary_visible)
    def score_samples(self, X) -> np.ndarray:
        """Pseudo-likelihood of each sample (binary visible units only: a Gaussian RBM has
        no such method), shape (n_samples,).

        As scikit-learn's BernoulliRBM: one randomly chosen visible unit of each sample is
        flipped and n_features * log sigm(F(x_flipped) - F(x)) is returned.
        """
        self._check_fitted()
        return self._pseudo_likelihood(self._validate_X(X, reset=False), np.float64)

    def _pseudo_likelihood(self, X: np.ndarray, dtype) -> np.ndarray:
        """score_samples in ``dtype``: float64 for the public method, the model's own
        precision for the per-epoch monitor (half the time of a float64 GEMM)."""
        rng = np.random.default_rng([self.seed_, 0x5C0E, self.n_steps_])
        units = rng.integers(0, X.shape[1], X.shape[0])  # one per row, drawn alike for dense and sparse X
        if v._is_sparse(X):
            step = _sparse_rows(X)
            return np.concatenate(
                [
                    self._pseudo_likelihood_of(_dense(X[i : i + step]), units[i : i + step], dtype)
                    for i in range(0, X.shape[0], step)
                ]
            )
        return self._pseudo_likelihood_of(X, units, dtype)

    def _pseudo_likelihood_of(self, X: np.ndarray, unit: np.ndarray, dtype) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=dtype)
        rows = np.arange(X.shape[0])
        s = self._state
        W, b = np.ascontiguousarray(s.W, dtype=dtype), s.b.astype(dtype)
        pre = self._hidden_inputs(X, W, dtype)
        # flipping unit i of a row moves its hidden inputs by (1 - 2 x_i) W[i, :]
        delta = 1.0 - 2.0 * X[rows, unit]
        pre_flip = pre + delta[:, None] * W[unit]
        # F(x_flip) - F(x) = -delta b_i - sum_j (softplus(pre_flip) - softplus(pre))_j
        change = softplus(pre_flip)
        change -= softplus(pre)
        gap = -delta * b[unit] - change.sum(axis=1)
        return (-X.shape[1] * softplus(-gap)).astype(np.float64)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the fitted model to one ``.npz`` file, atomically (temp file + rename).
        A model holding NaN or inf is refused (:class:`DivergenceError`): a saved model is
        never overwritten by a broken one."""
        meta, arrays = self._payload(path)
        write_npz_atomic(
            Path(path), {"parrbm_meta": np.array(json.dumps(meta)), **{f"state_{k}": a for k, a in arrays.items()}}
        )

    def _payload(self, where) -> tuple[dict, dict[str, np.ndarray]]:
        """(metadata, arrays) of the fitted model, for ``save`` and the DBN's file."""
        self._check_fitted()
        broken = [k for k, a in self._state.arrays().items() if not np.all(np.isfinite(a))]
        if broken:
            raise DivergenceError(f"RBM.save: the model holds NaN or inf in {broken}; {where} was not written")
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": {
                k: (
                    val
                    if isinstance(val, (int, float, str, bool, type(None)))
                    else dict(val)
                    if k == "strategy_options" and isinstance(val, dict)
                    else str(val)
                    if isinstance(val, os.PathLike)
                    else _strategy_reference(val)
                    if k == "strategy"
                    else repr(val)
                )
                for k, val in self.get_params().items()
            },
            "spec": {**self.spec_.__dict__},
            "n_steps": self.n_steps_,
            "seed": self.seed_,
            "reconstruction_error": list(self.reconstruction_error_),
            "epochs_done": self.epochs_done_,
            "history": self.history_,
        }
        arrays = self._state.arrays()
        pending = getattr(self, "_pending_local", None)
        if self._strategy is None and pending is not None:  # kept as loaded: the trainer was never built
            meta["worker_local"] = pending[0]
            for r, (_, local) in enumerate(pending[1]):
                arrays.update({f"local{r}_{k}": a for k, a in local.items()})
        elif hasattr(self._strategy, "local_states") and self._strategy.K > 1:
            # what only the workers know (a replica between syncs, the steps of a sync or
            # averaging period): a fit resumed from this file is the uninterrupted one
            states = self._strategy.local_states()
            meta["worker_local"] = {
                "strategy": self._strategy.name,
                "workers": self._strategy.K,
                "counters": [c for c, _ in states],
            }
            for r, (_, local) in enumerate(states):
                arrays.update({f"local{r}_{k}": a for k, a in local.items()})
        return meta, arrays

    @classmethod
    def load(cls, path) -> "RBM":
        """Read a model written by ``save``; a truncated or foreign file raises ValueError."""
        path = Path(path)
        with read_npz(path, "RBM.load") as z:
            if "parrbm_meta" not in z.files:
                raise ValueError(
                    f"RBM.load: {path} is not a parrbm model file (no 'parrbm_meta' entry; found {sorted(z.files)[:5]})"
                )
            meta = z.json("parrbm_meta")
            if not isinstance(meta, dict):
                raise ValueError(f"RBM.load: {path}: its metadata must be a JSON object, got {type(meta).__name__}")
            stray = [k for k in z.files if k != "parrbm_meta" and not k.startswith("state_")]
            if stray:
                raise ValueError(f"RBM.load: {path}: entry {stray[0]!r} is not one a parrbm model file holds")
            arrays = _model_arrays(z, meta, "state_", path)
        return cls._from_payload(meta, arrays, path)

    @classmethod
    def _from_payload(cls, meta, arrays: dict, path) -> "RBM":
        """The model of a file's metadata and arrays, every field checked: a hand-edited
        or damaged file gets a ValueError naming the file and the field."""

        def bad(field: str, why: str):
            return ValueError(f"RBM.load: {path}: field '{field}' {why}")

        if not isinstance(meta, dict):
            raise ValueError(f"RBM.load: {path}: its metadata must be a JSON object, got {type(meta).__name__}")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"RBM.load: {path} is not a parrbm model file (format {meta.get('format')!r})")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"RBM.load: {path} has format version {meta.get('format_version')}, "
                f"this parrbm reads version {_FORMAT_VERSION}"
            )
        for key, kind in (("params", dict), ("spec", dict), ("seed", int), ("n_steps", int)):
            if key not in meta:
                raise bad(key, "is missing")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise bad(key, f"must be a JSON {'object' if kind is dict else 'integer'}, got {meta[key]!r:.60}")
        for key in ("n_steps", "epochs_done"):
            if key in meta and (not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0):
                raise bad(key, f"must be an integer >= 0, got {meta[key]!r:.60}")
        if not 0 <= meta["seed"] < 2**64:
            raise bad("seed", f"must be in [0, 2**64), got {meta['seed']}")
        for key, kind in (("reconstruction_error", list), ("history", list)):
            if key in meta and not isinstance(meta[key], kind):
                raise bad(key, f"must be a JSON list, got {type(meta[key]).__name__}")
        if any(not isinstance(e, (int, float)) or isinstance(e, bool) for e in meta.get("reconstruction_error", [])):
            raise bad("reconstruction_error", "must hold numbers")
        if any(not isinstance(h, dict) for h in meta.get("history", [])):
            raise bad("history", "must hold one JSON object per epoch")
        missing = {"W", "b", "c"} - set(arrays)
        if missing:
            raise ValueError(f"RBM.load: {path} lacks the arrays {sorted(missing)}")
        spec = _spec_from(meta["spec"], bad)
        params = {
            k: val for k, val in meta["params"].items() if k != "random_state" or isinstance(val, (int, type(None)))
        }
        if params.get("learning_rate_schedule") not in (None, *_SCHEDULES):
            params["learning_rate_schedule"] = "constant"  # a callable is not saved
        unknown = sorted(set(params) - set(cls._get_param_names()))
        if unknown:
            raise bad(f"params.{unknown[0]}", "is not a parameter of this parrbm's RBM")
        # a path in a file does not choose where a later fit writes
        params.pop("checkpoint_dir", None)
        rbm = cls(**params)
        rbm._file_strategies = {rbm.strategy} if isinstance(rbm.strategy, str) else set()
        from parrbm.strategies.registry import StrategyError, resolve

        try:
            resolve(rbm.strategy)
            pending = False
        except StrategyError:
            pending = True  # a plug-in: its parameters load, its code is not imported
        try:
            rbm._check_params(strategy=not pending)
        except ValueError as exc:
            raise ValueError(f"RBM.load: {path}: field 'params': {exc}") from None
        if int(rbm.n_hidden) != spec.n_hidden:
            raise bad("params.n_hidden", f"is {rbm.n_hidden}, but spec.n_hidden is {spec.n_hidden}")
        state = ModelState(**{k: arrays.get(k) for k in ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")})
        V, H = spec.n_visible, spec.n_hidden
        shapes = {
            "W": (V, H),
            "b": (V,),
            "c": (H,),
            "W_inc": (V, H),
            "b_inc": (V,),
            "c_inc": (H,),
            "chains": (spec.batch_size, H),
        }
        for k, a in state.arrays().items():
            if a.shape != shapes[k] or a.dtype != spec.np_dtype:
                raise bad(
                    f"state_{k}", f"has shape {a.shape} and dtype {a.dtype}; the metadata say {shapes[k]} {spec.dtype}"
                )
            if not np.all(np.isfinite(a)):
                raise bad(f"state_{k}", "holds NaN or infinity")
        incs = [state.W_inc is None, state.b_inc is None, state.c_inc is None]
        if spec.momentum != 0.0 and any(incs):
            raise bad("state_W_inc", "(with b_inc, c_inc) is needed: the model trains with momentum")
        if spec.persistent and state.chains is None:
            raise bad("state_chains", "is needed: the model trains with persistent CD")
        rbm.seed_ = int(meta["seed"])
        rbm.n_features_in_ = V
        rbm.spec_ = spec
        rbm._state = state
        local = meta.get("worker_local")
        if pending:
            rbm._strategy = None
            if local is not None:
                rbm._pending_local = (local, _local_states(local, arrays, bad))
        else:
            try:
                rbm._strategy = rbm._make_strategy(spec, state)
            except ValueError as exc:
                raise ValueError(f"RBM.load: {path}: field 'params': {exc}") from None
            if local is not None:
                _restore_local(rbm, local, arrays, bad)
        rbm.n_steps_ = int(meta["n_steps"])
        rbm.reconstruction_error_ = list(meta.get("reconstruction_error", []))
        rbm.epochs_done_ = int(meta.get("epochs_done", 0))
        rbm.history_ = list(meta.get("history", []))
        rbm._export()
        return rbm


_STATE = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")


def _model_arrays(z: "read_npz", meta, prefix: str, path) -> dict[str, np.ndarray]:
    """The entries ``prefix``* of a model file, each checked against the sizes its
    metadata declare before it is read; an entry no parrbm writes is refused."""

    def bad(field: str, why: str):
        return ValueError(f"RBM.load: {path}: field '{field}' {why}")

    if not isinstance(meta, dict):
        raise ValueError(f"RBM.load: {path}: its metadata must be a JSON object, got {type(meta).__name__}")
    if "spec" not in meta:
        raise bad("spec", "is missing")
    if not isinstance(meta["spec"], dict):
        raise bad("spec", f"must be a JSON object, got {meta['spec']!r:.60}")
    spec = _spec_from(meta["spec"], bad)
    V, H, m = spec.n_visible, spec.n_hidden, spec.batch_size
    itemsize = spec.np_dtype.itemsize
    shapes = {"W": (V, H), "b": (V,), "c": (H,), "W_inc": (V, H), "b_inc": (V,), "c_inc": (H,), "chains": (m, H)}
    out = {}
    for key in z.files:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in shapes:
            z.check(key, shapes[name])
        elif name.startswith("local") and name[5:].split("_", 1)[0].isdigit():
            # a worker's own state: a slice, a replica or an increment, never more than W's twice
            z.check(key, most_bytes=2 * (V * H + V + H + m * H) * itemsize)
        else:
            raise ValueError(
                f"RBM.load: {path}: entry {key!r} is not one a parrbm model file holds "
                f"({', '.join(prefix + s for s in _STATE)}, {prefix}local<worker>_*)"
            )
        out[name] = z[key]
    return out


def _restore_local(rbm: RBM, local, arrays: dict, bad) -> None:
    """The workers' own state saved with the model (see ``_payload``), put back."""
    runner = rbm._strategy
    if not isinstance(local, dict) or not isinstance(local.get("counters"), list):
        raise bad("worker_local", "must be an object with a list of counters per worker")
    if (
        getattr(runner, "K", 1) != local.get("workers")
        or len(local["counters"]) != local.get("workers")
        or getattr(runner, "name", None) != local.get("strategy")
    ):
        raise bad(
            "worker_local",
            f"is for {local.get('workers')} workers of {local.get('strategy')!r}; the "
            f"model's parameters say {getattr(runner, 'K', 1)} of {getattr(runner, 'name', None)!r}",
        )
    try:
        runner.restore_local(_local_states(local, arrays, bad))
    except ValueError as exc:
        raise bad("worker_local", str(exc)) from None


def _local_states(local, arrays: dict, bad) -> list:
    """The workers' saved counters and arrays, each checked."""
    if not isinstance(local, dict) or not isinstance(local.get("counters"), list):
        raise bad("worker_local", "must be an object with a list of counters per worker")
    states = []
    for r, counters in enumerate(local["counters"]):
        if (
            not isinstance(counters, dict)
            or not isinstance(counters.get("steps_done"), int)
            or counters["steps_done"] < 0
        ):
            raise bad(f"worker_local.counters[{r}]", "must hold steps_done, an integer >= 0")
        prefix = f"local{r}_"
        mine = {k[len(prefix) :]: a for k, a in arrays.items() if k.startswith(prefix)}
        if any(not np.all(np.isfinite(a)) for a in mine.values()):
            raise bad(f"state_{prefix}*", "holds NaN or infinity")
        states.append((counters, mine))
    return states


def registry_reference(strategy) -> str:
    """A strategy as comparable text (its reference where it resolves, else as given)."""
    from parrbm.strategies.registry import StrategyError, reference

    try:
        return reference(strategy)
    except StrategyError:
        return repr(strategy)


def _strategy_reference(strategy) -> str:
    """A strategy class as the name or ``module:Class`` that finds it again on load."""
    from parrbm.strategies.registry import reference

    return reference(strategy)


def _spec_from(raw: dict, bad) -> CDSpec:
    """The saved CDSpec, each field of its type and range."""
    fields = CDSpec.__dataclass_fields__
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise bad(f"spec.{unknown[0]}", "is not a field this parrbm knows")
    missing = sorted(k for k in ("n_visible", "n_hidden", "batch_size") if k not in raw)
    if missing:
        raise bad(f"spec.{missing[0]}", "is missing")
    rules = {
        "n_visible": lambda x: _is_int(x) and x >= 1,
        "n_hidden": lambda x: _is_int(x) and x >= 1,
        "batch_size": lambda x: _is_int(x) and x >= 1,
        "cd_k": lambda x: _is_int(x) and x >= 1,
        "seed": lambda x: _is_int(x) and 0 <= x < 2**64,
        "visible": lambda x: x in VISIBLE_TYPES,
        "statistics": lambda x: x in STATISTICS,
        "dtype": lambda x: x in DTYPES,
        "gaussian_noise": lambda x: isinstance(x, bool),
        "sample_visible": lambda x: isinstance(x, bool),
        "persistent": lambda x: isinstance(x, bool),
        "learning_rate": lambda x: _is_real(x) and x > 0,
        "momentum": lambda x: _is_real(x) and 0 <= x < 1,
        "weight_decay": lambda x: _is_real(x) and x >= 0,
    }
    for k, val in raw.items():
        if k in rules and not rules[k](val):
            raise bad(f"spec.{k}", f"has a value this parrbm cannot use: {val!r:.60}")
    return CDSpec(**raw)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file beside ``path``, fsync, rename: a reader sees the old
    file or the new one, never half of one."""
    from parrbm._files import write_atomic

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save the model: the directory {parent} does not exist", str(path)
        )
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "cannot save the model: the path is a directory", str(path))
    write_atomic(path, lambda fh: np.savez(fh, **arrays))


class read_npz:
    """``with read_npz(path, who) as z``: the arrays of a parrbm file, any damage reported
    as ValueError naming ``who`` and the file."""

    def __init__(self, path: Path, who: str):
        self.path, self.who = Path(path), who

    #: the largest metadata entry read (a model's history of thousands of epochs is < 1 MiB)
    MAX_META_BYTES = 1 << 26

    def __enter__(self):
        if not self.path.is_file():
            raise ValueError(f"{self.who}: no such file: {self.path}")
        # opened here, not by numpy: np.load leaves its own file open when the archive is damaged
        self._fh = open(self.path, "rb")
        try:
            self.z = np.load(self._fh, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            self._fh.close()
            raise ValueError(f"{self.who}: {self.path} is not a readable parrbm model file ({exc})") from None
        if not isinstance(self.z, np.lib.npyio.NpzFile):
            self._fh.close()
            raise ValueError(
                f"{self.who}: {self.path} holds one array (a .npy file), not a parrbm model file "
                f"(an .npz archive written by save)"
            )
        self.files = self.z.files
        self.headers = {}
        try:  # each entry's shape and dtype, from its header, before any data is read
            for key in self.files:
                info = self.z.zip.getinfo(f"{key}.npy")
                with self.z.zip.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if read_header is None:
                        raise ValueError(f"entry {key!r} has .npy format version {version}")
                    shape, _, dtype = read_header(fh)
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if dtype.hasobject or nbytes > info.file_size:
                    raise ValueError(
                        f"entry {key!r} claims {nbytes} bytes ({shape}, {dtype}) but holds {info.file_size}"
                    )
                self.headers[key] = (tuple(shape), dtype, nbytes)
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
            self.close()
            raise ValueError(f"{self.who}: {self.path} is not a readable parrbm model file ({exc})") from None
        return self

    def check(self, key: str, shape: tuple | None = None, *, most_bytes: int | None = None) -> None:
        """Refuse entry ``key`` unless its header declares ``shape`` (or at most
        ``most_bytes``), before its data are read."""
        got, dtype, nbytes = self.headers[key]
        if shape is not None and got != tuple(shape):
            raise ValueError(f"{self.who}: {self.path}: field '{key}' has shape {got}; the metadata say {tuple(shape)}")
        if most_bytes is not None and nbytes > most_bytes:
            raise ValueError(
                f"{self.who}: {self.path}: field '{key}' holds {nbytes} bytes, more than a model of "
                f"this size has ({most_bytes})"
            )

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.z[key]
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{self.who}: {self.path} is not a readable parrbm model file (truncated or corrupt: {exc})"
            ) from None

    def json(self, key: str) -> dict:
        from parrbm._files import strict_json

        self.check(key, most_bytes=self.MAX_META_BYTES)
        entry = self[key]
        if entry.dtype.kind != "U" or entry.shape != ():
            raise ValueError(
                f"{self.who}: {self.path}: its metadata must be one string, got {entry.dtype} {entry.shape}"
            )
        try:
            return strict_json(str(entry), max_depth=32)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(
                f"{self.who}: {self.path}: its metadata is not JSON of a parrbm model ({getattr(exc, 'msg', exc)})"
            ) from None

    def close(self) -> None:
        self.z.close()
        self._fh.close()

    def __exit__(self, *exc):
        self.close()
        return False


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), without overflow: max(x, 0) + log1p(exp(-|x|)). As exact as
    ``np.logaddexp(0, x)`` and several times faster (the per-epoch monitors call it on
    (samples, n_hidden) arrays)."""
    out = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0)
    return out


#: strategy_options that go to the runner, not to the strategy
RUNNER_OPTIONS = ("blas_threads", "timeout", "network", "hosts", "mpi", "tcp")


def _hosts_options(runner: dict, transport: str) -> None:
    """strategy_options['hosts'] (the workers' hosts, one worker a host in order), 'mpi'
    (the config's mpi section: hosts or hostfile, mpiexec, env, listen, python) and 'tcp'
    (its tcp section: hosts, listen, launcher, python), in place: 'mpi' becomes
    the runner's MPIHosts, 'tcp' its TCPHosts."""
    name = "RBM: strategy_options"
    hosts = runner.pop("hosts", None)
    for key in ("mpi", "tcp"):
        if key in runner and not isinstance(runner[key], dict):
            raise ValueError(
                f"{name}['{key}'] must be a dict (the keys of a config's {key} section), got {runner[key]!r}"
            )
    if hosts is not None:
        if not (isinstance(hosts, (list, tuple)) and hosts and all(isinstance(h, str) and h for h in hosts)):
            raise ValueError(f"{name}['hosts'] must be a non-empty list of host names, got {hosts!r}")
        if transport not in ("tcp", "mpi"):
            raise ValueError(
                f"{name}['hosts'] starts the workers on other hosts: it needs transport 'tcp' or "
                f"'mpi', not {transport!r}"
            )
        section = dict(runner.get(transport) or {})  # the caller's dict stays as given
        if "hosts" in section or "hostfile" in section:
            raise ValueError(f"{name}: 'hosts' and '{transport}' both name the hosts: give one")
        runner[transport] = {**section, "hosts": list(hosts)}
    if "mpi" in runner:
        if transport != "mpi":
            raise ValueError(f"{name}['mpi'] says where mpi workers run: it needs transport 'mpi', not {transport!r}")
        from parrbm.harness.remote import MPIHosts

        unknown = sorted(set(runner["mpi"]) - set(MPIHosts.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"{name}['mpi'] has unknown keys {unknown}; allowed: {sorted(MPIHosts.__dataclass_fields__)}"
            )
        try:
            runner["mpi"] = MPIHosts(**runner["mpi"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}['mpi']: {exc}") from None
    if "tcp" in runner:
        if transport != "tcp":
            raise ValueError(f"{name}['tcp'] says where tcp workers run: it needs transport 'tcp', not {transport!r}")
        from parrbm.harness.grid import tcp_hosts
        from parrbm.harness.launch import TCPHosts

        allowed = set(TCPHosts.__dataclass_fields__)
        unknown = sorted(set(runner["tcp"]) - allowed)
        if unknown:
            raise ValueError(f"{name}['tcp'] has unknown keys {unknown}; allowed: {sorted(allowed)}")
        runner["tcp"] = tcp_hosts(runner["tcp"])


def _network_option(value, transport: str):
    """strategy_options['network']: {"bandwidth": "105MB/s" or "unshaped", "latency":
    "0.091ms" (optional)} -> the LinkSpec of the emulated hosts the workers run on."""
    from parrbm.analysis.timemodel import parse_bandwidth, parse_latency
    from parrbm.harness.network import LinkSpec, missing

    name = "RBM: strategy_options['network']"
    if not isinstance(value, dict) or "bandwidth" not in value or set(value) - {"bandwidth", "latency"}:
        raise ValueError(
            f"{name} must be a dict with 'bandwidth' (e.g. '105MB/s', or 'unshaped') and "
            f"optionally 'latency' (e.g. '0.091ms'), got {value!r}"
        )
    if transport not in ("tcp", "mpi"):
        raise ValueError(
            f"{name} puts each worker on an emulated host: it needs transport 'tcp' or 'mpi', not {transport!r}"
        )
    try:
        bandwidth = None if value["bandwidth"] == "unshaped" else parse_bandwidth(value["bandwidth"])
        latency = None if value.get("latency") is None else parse_latency(value["latency"])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    try:
        link = LinkSpec(bandwidth, latency)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    why = missing()
    if why:
        raise ValueError(f"{name}: {why}")
    return link


_BLAS: ThreadpoolController | None = None


def _blas_limit(threads: int):
    """Limit every BLAS in the process (the core's and numpy's) to ``threads`` for a
    ``with`` block. The libraries are found once: finding them costs about a millisecond,
    as much as a small model's epoch."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=threads, user_api="blas")


class _Monitor:
    """The per-epoch measures of ``fit`` on fixed subsets of the training and held-out data."""

    def __init__(self, rbm: RBM, X: np.ndarray, X_valid: np.ndarray | None):
        self.rbm = rbm
        pick = np.random.default_rng([rbm.seed_, 0x303]).permutation(X.shape[0])[:MONITOR_SAMPLES]
        self.train = _dense(X[np.sort(pick)])
        self.valid = None if X_valid is None else _dense(X_valid[:MONITOR_SAMPLES])

    def measure(self) -> dict:
        rbm, out = self.rbm, {}
        out["pseudo_likelihood"] = (
            float(np.mean(rbm._pseudo_likelihood(self.train, rbm.spec_.np_dtype)))
            if rbm.spec_.visible == "binary"
            else None
        )
        # measured after the epoch as the held-out error is, on as many samples: the two
        # curves compare like with like (the epoch's own error is of CD's samples, during it)
        out["train_reconstruction_error"] = float(
            np.mean((self.train.astype(np.float64) - rbm._inference().reconstruct(self.train)) ** 2)
        )
        if self.valid is None:
            out["free_energy_gap"] = out["valid_reconstruction_error"] = None
        else:
            fe = lambda A: float(np.mean(rbm._free_energy(A.astype(np.float64))))  # noqa: E731
            out["free_energy_gap"] = fe(self.valid) - fe(self.train)
            out["valid_reconstruction_error"] = float(
                np.mean((self.valid.astype(np.float64) - rbm._strategy.reconstruct(self.valid)) ** 2)
            )
        return out


def _dense(X) -> np.ndarray:
    """A (few rows of a) sparse matrix as a C-contiguous array; a dense array as it is."""
    return np.ascontiguousarray(X.toarray()) if v._is_sparse(X) else X


def _sparse_rows(X) -> int:
    """Rows of a sparse X densified at once: at most SPARSE_CHUNK_BYTES of them."""
    return max(1, SPARSE_CHUNK_BYTES // max(1, X.shape[1] * X.dtype.itemsize))


def _by_rows(fn, X) -> np.ndarray:
    """fn over X's rows: at once for an array, a chunk of rows at a time for a sparse X."""
    if not v._is_sparse(X):
        return fn(X)
    step = _sparse_rows(X)
    return np.concatenate([fn(_dense(X[i : i + step])) for i in range(0, X.shape[0], step)])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def _write(line: str, bar) -> None:
    """A line on standard output that does not break the progress bar (on standard error)."""
    if bar is None:
        print(line, flush=True)
    else:
        bar.write(line, file=sys.stdout)


def _progress_bar(setting, done: int, total: int):
    on = sys.stderr.isatty() if setting == "auto" else bool(setting)
    if not on or total <= done:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="epoch", desc="RBM", file=sys.stderr, leave=False)
