"""Serial CD-k: the single-worker fused path (docs/design.md 5.6).

The reference for speedup and for the exactness of every other strategy. The whole
minibatch step runs in one call of the C++ core (``CDTrainer``), which owns the
parameters and work buffers and releases the GIL.
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.config import CDSpec, ModelState


class SerialStrategy:
    """One worker, the whole model, the whole minibatch."""

    name = "serial"
    options_used: tuple[str, ...] = ()

    def __init__(self, spec: CDSpec, state: ModelState):
        self.spec = spec
        trainer_cls = _core.CDTrainer64 if spec.dtype == "float64" else _core.CDTrainer32
        self._trainer = trainer_cls(**spec.trainer_kwargs())
        self.load_model(state)

    def run(self, X: np.ndarray, order: np.ndarray, first_step: int) -> np.ndarray:
        """CD-k over the minibatches of ``X[order]`` (consecutive chunks of batch_size).

        X : (n_samples, n_visible) array of the spec's dtype. order : (n,) int64 row
        indices. Returns the summed squared reconstruction error of each minibatch.
        """
        return self._trainer.run(X, order, first_step)

    def run_timed(self, X: np.ndarray, order: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run`, with each step's seconds timed inside the core, as the parallel
        workers time theirs (the minibatch's rows gathered outside the clock)."""
        return self._trainer.run(X, order, first_step, timed=True)

    def step(self, X_batch: np.ndarray, step: int) -> float:
        """One CD-k step on a (m, n_visible) minibatch; returns its error sum."""
        return self._trainer.step(X_batch, step)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Continue with another learning rate (a schedule's next epoch)."""
        state = self.gather_model()
        self.spec = self.spec.replace(learning_rate=learning_rate)
        trainer_cls = _core.CDTrainer64 if self.spec.dtype == "float64" else _core.CDTrainer32
        self._trainer = trainer_cls(**self.spec.trainer_kwargs())
        self.load_model(state)

    def gather_model(self) -> ModelState:
        t = self._trainer
        copy = lambda a: None if a is None else a.copy()  # noqa: E731
        return ModelState(
            W=t.W.copy(),
            b=t.b.copy(),
            c=t.c.copy(),
            W_inc=copy(t.W_inc),
            b_inc=copy(t.b_inc),
            c_inc=copy(t.c_inc),
            chains=copy(t.chains),
        )

    def load_model(self, state: ModelState) -> None:
        t = self._trainer
        t.W[...] = state.W
        t.b[...] = state.b
        t.c[...] = state.c
        for name in ("W_inc", "b_inc", "c_inc", "chains"):
            dst, src = getattr(t, name), getattr(state, name)
            if dst is not None:
                dst[...] = 0 if src is None else src

    def comm_stats(self) -> dict:
        """One worker moves no data."""
        return {
            "strategy": self.name,
            "workers": 1,
            "transport": None,
            "bytes_per_step": 0,
            "bytes_per_sync": 0,
            "syncs": 0,
            "bytes_total": 0,
            "by_phase": {},
            "by_worker": [],
            "seconds": {"compute": 0.0, "communication": 0.0, "waiting": 0.0},
            "replica_divergence": 0.0,
        }

    def hidden_probabilities(self, X: np.ndarray) -> np.ndarray:
        return self._trainer.hidden_probabilities(X)

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        return self._trainer.reconstruct(X)

    # ---- what it declares (docs/design.md 5.6) ------------------------------------------

    @classmethod
    def split_refusal(cls, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> str | None:
        if workers != 1:
            return f"strategy 'serial' runs on one worker, got workers={workers} (choose a parallel strategy)"
        return None

    @classmethod
    def check_options(cls, options, *, transport: str) -> None:
        pass

    @classmethod
    def step_traffic(cls, model, m: int, K: int, options, *, chains: int):
        from parrbm.accounting import Traffic

        return Traffic(K)

    @classmethod
    def sync_traffic(cls, model, K: int, options):
        from parrbm.accounting import Traffic

        return Traffic(K)

    @classmethod
    def syncs_per_step(cls, options) -> float:
        return 0.0

    @classmethod
    def step_work(cls, model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool):
        from parrbm.accounting import Work, hidden_work, statistics_work

        V, H, c = model.n_visible, model.n_hidden, m
        vis_kind = model.visible_kind
        w = Work()
        w.gemm(m, H, V)
        hidden_work(w, model, m, H, H, exchanged=False)
        for _ in range(model.cd_k):
            w.gemm(c, V, H)
            w.add(vis_kind, c * V)
            w.gemm(c, H, V)
            hidden_work(w, model, c, H, H, exchanged=False)
        statistics_work(w, model, V, H, m, c, momentum=momentum, binary_data=binary_data)
        return w

    @classmethod
    def sync_work(cls, model, K: int, rank: int, options):
        from parrbm.accounting import Work

        return Work()
