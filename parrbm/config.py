"""The hyperparameters of one CD training run, shared by the estimator and the strategies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

VISIBLE_TYPES = ("binary", "gaussian")
STATISTICS = ("samples", "probabilities")
DTYPES = ("float32", "float64")
#: how workers exchange data: threads of one process, tcp sockets between processes, MPI
TRANSPORTS = ("threads", "tcp", "mpi")


@dataclass(frozen=True)
class CDSpec:
    """Everything a strategy needs to run CD-k on a model of a given size.

    Attributes
    ----------
    n_visible, n_hidden : int
        Model size V and H.
    batch_size : int
        Largest minibatch m; also the number of persistent chains for PCD.
    visible : {"binary", "gaussian"}
        Visible unit type (Gaussian units have unit variance).
    gaussian_noise : bool
        Gaussian visible units are sampled (mean + N(0, 1)) instead of taking the mean.
    sample_visible : bool
        Binary visible units with probability statistics: the negative phase samples
        the visible states instead of using their probabilities (scikit-learn's
        BernoulliRBM does). Sampled statistics always sample them.
    statistics : {"samples", "probabilities"}
        Learning statistics from sampled hidden states (1 bit each, the paper's
        choice) or from probabilities.
    cd_k : int
        Gibbs steps in the negative phase.
    persistent : bool
        Persistent CD: the negative chains carry over between minibatches.
    learning_rate, momentum, weight_decay : float
    dtype : {"float32", "float64"}
    seed : int
        64-bit key of every random stream (initialisation and sampling).
    """

    n_visible: int
    n_hidden: int
    batch_size: int
    visible: str = "binary"
    gaussian_noise: bool = False
    sample_visible: bool = False
    statistics: str = "samples"
    cd_k: int = 1
    persistent: bool = False
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    dtype: str = "float32"
    seed: int = 0

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def replace(self, **changes) -> "CDSpec":
        return dataclasses.replace(self, **changes)

    def trainer_kwargs(self) -> dict:
        """Keyword arguments of the core's CDTrainer32/CDTrainer64."""
        return dict(
            n_visible=self.n_visible,
            n_hidden=self.n_hidden,
            batch_size=self.batch_size,
            visible=self.visible,
            gaussian_noise=self.gaussian_noise,
            sample_visible=self.sample_visible,
            statistics=self.statistics,
            cd_k=self.cd_k,
            persistent=self.persistent,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )


@dataclass
class ModelState:
    """Full model parameters plus the optimiser state that makes training resumable.

    Shapes: W (V, H), b (V,), c (H,); increments like their parameters or None without
    momentum; chains (batch_size, H) persistent hidden states or None without PCD.
    """

    W: np.ndarray
    b: np.ndarray
    c: np.ndarray
    W_inc: np.ndarray | None = None
    b_inc: np.ndarray | None = None
    c_inc: np.ndarray | None = None
    chains: np.ndarray | None = None

    @classmethod
    def initial(cls, spec: CDSpec) -> "ModelState":
        """W ~ N(0, 0.01^2) from the run's seed (Hinton's practical guide), biases 0."""
        rng = np.random.default_rng([spec.seed, 0x1A17])
        dt = spec.np_dtype
        W = rng.normal(0.0, 0.01, size=(spec.n_visible, spec.n_hidden)).astype(dt)
        z = lambda *shape: np.zeros(shape, dtype=dt)  # noqa: E731
        with_momentum = spec.momentum != 0.0
        return cls(
            W=W,
            b=z(spec.n_visible),
            c=z(spec.n_hidden),
            W_inc=z(spec.n_visible, spec.n_hidden) if with_momentum else None,
            b_inc=z(spec.n_visible) if with_momentum else None,
            c_inc=z(spec.n_hidden) if with_momentum else None,
            chains=z(spec.batch_size, spec.n_hidden) if spec.persistent else None,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
