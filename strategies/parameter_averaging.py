"""Parameter averaging: data-parallel CD (docs/design.md 5.5).

Every worker holds a full replica; the m cases of a minibatch are split over workers by
case index (the global index keys the random streams, so the states are the serial
ones). ``average="gradients"``: each worker's gradient is summed over workers every step
(``reduce="allreduce"``: reduce-scatter + allgather; ``reduce="master"``: gather to rank
0, which sums and broadcasts) and every replica applies the same update -- exactly serial
CD. ``average="weights"``: local steps on the worker's own cases, the weights averaged
every ``average_every`` minibatches (local SGD).
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.accounting import Model, Traffic, Work, allreduce, hidden_work, master_reduce, statistics_work
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, Worker, exact_row_blocks, phase_hidden

_FULL = {"unit0": 0}


class ParameterAveraging(Worker):
    name = "parameter-averaging"
    options_used = ("reduce", "average", "average_every", "overlap", "overlap_chunks")

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        V, H, m = spec.n_visible, spec.n_hidden, spec.batch_size
        self.W, self.b, self.c = state.W.copy(), state.b.copy(), state.c.copy()
        self.W_inc = None if state.W_inc is None else state.W_inc.copy()  # momentum's increments
        self.b_inc = None if state.b_inc is None else state.b_inc.copy()
        self.c_inc = None if state.c_inc is None else state.c_inc.copy()
        self.chain_cases = Partition.contiguous(m, size).parts[rank]
        self.chains = None if state.chains is None else state.chains[self.chain_cases].copy()
        mk = -(-m // size)  # the most cases a worker gets
        self.left = self.zeros(2 * mk, V)
        self.right = self.zeros(2 * mk, H)
        self.pre_h = self.zeros(mk, H)
        self.states = self.zeros(mk, H)
        # Gradient of (W, b, c) in one buffer: one collective per step.
        self.grad = self.zeros(V * H + V + H)
        self.sync_phases = self.sync_phases_of(options)
        self._blocks: dict = {}

    @classmethod
    def sync_phases_of(cls, options) -> tuple[str, ...]:
        return (P.AVERAGE,) if options.average == "weights" else ()

    def step(self, X: np.ndarray, step: int) -> float:
        spec = self.spec
        mb = X.shape[0]
        mine = Partition.contiguous(mb, self.K).parts[self.rank]
        case0, n = mine.start, mine.stop - mine.start
        if spec.persistent:
            chain0, c = self.chain_cases.start, self.chain_cases.stop - self.chain_cases.start
        else:
            chain0, c = case0, n
        neg_scale = mb / self.chain_rows(mb)
        left, right = self.left[: n + c], self.right[: n + c]
        x = X[mine]
        left[:n] = x

        # Serial CD on this worker's cases, with their global case indices.
        _core.gemm(x, self.W, self.pre_h[:n])
        probs = spec.statistics == "probabilities"
        states = self.states
        self.sample_hidden(
            self.pre_h[:n],
            self.c,
            _FULL,
            step,
            PHASE_POSITIVE,
            case0=case0,
            states=states[:n],
            probs=right[:n] if probs else None,
        )
        if not probs:
            right[:n] = states[:n]
        driver = self.chains if spec.persistent else states[:n]
        assert driver is not None  # persistent CD's chains are set
        err = 0.0
        for t in range(1, spec.cd_k + 1):
            _core.gemm(driver, self.W, left[n:], trans_b=True)
            data = x if (t == 1 and not spec.persistent) else None
            err += self.visible_units(left[n:], self.b, left[n:], _FULL, step, t, data=data, case0=chain0)
            _core.gemm(left[n:], self.W, self.pre_h[:c])
            states_out = self.chains if spec.persistent else states[:c]
            assert states_out is not None
            self.sample_hidden(
                self.pre_h[:c],
                self.c,
                _FULL,
                step,
                phase_hidden(t),
                case0=chain0,
                states=states_out,
                probs=right[n:] if probs else None,
                prob_scale=-neg_scale,
            )
            driver = states_out
        if not probs:
            right[n:] = -neg_scale * driver

        self.steps_done += 1
        if self.options.average == "gradients" and self.K > 1:
            blocks = self.gradient_blocks(self.spec.n_visible, self.options)
            if blocks is None:
                self.sum_gradients(left, right, n, neg_scale)
                self.apply_summed_gradient(mb)
            else:  # each block of W's rows summed while the next is computed, applied once summed
                self.sum_and_apply_in_blocks(blocks, left, right, n, neg_scale, mb)
            return err
        # A local step: with weights averaged (local SGD), and at K = 1, where this worker's
        # cases are the minibatch and the summed gradient is its own (the serial algorithm,
        # at the serial trainer's cost: no gradient buffer, no collective).
        if n:  # a short last minibatch may leave a worker no cases: no local step then
            self.apply_statistics(self.W, self.W_inc, left, right, n, neg_scale)
            self.update_bias(self.b, self.b_inc, left[:n], left[n:], n, neg_scale)
            self.update_bias(self.c, self.c_inc, right, None, n)
        if self.options.average == "weights" and self.K > 1 and self.steps_done % self.options.average_every == 0:
            self.average_weights()
        return err

    # ---- gradient mode -----------------------------------------------------------------------

    def sum_gradients(self, left, right, n, neg_scale) -> None:
        V, H = self.spec.n_visible, self.spec.n_hidden
        gW = self.grad[: V * H].reshape(V, H)
        self.statistics_gradient(left, right, gW)
        self.grad[V * H : V * H + V] = left[:n].sum(0) - neg_scale * left[n:].sum(0)
        self.grad[V * H + V :] = right.sum(0)
        self.reduce(self.grad, phase=P.GRADIENT)

    @staticmethod
    def gradient_blocks(n_visible: int, options) -> list[slice] | None:
        """The blocks of W's rows whose gradients are summed one at a time
        (``overlap_chunks``), the last one with the bias gradients; None in lockstep and
        with the master reduce (a gather has no start)."""
        if options.overlap_chunks == 1 or options.reduce != "allreduce":
            return None
        cuts = Partition.cuts(n_visible, min(options.overlap_chunks, n_visible))
        return [slice(a, b) for a, b in zip(cuts, cuts[1:])]

    def blocks_exact(self, mb: int, blocks: list[slice]) -> bool:
        """Whether the BLAS gives every worker's gradient, a block of rows at a time, the
        bits of the whole product (:func:`exact_row_blocks`); if not, the gradient is
        computed whole and only its sums and updates go block by block."""
        key = (mb, _core.get_blas_threads())
        if key not in self._blocks:
            V, H = self.spec.n_visible, self.spec.n_hidden
            cases = Partition.contiguous(mb, self.K)
            chains = Partition.contiguous(self.spec.batch_size, self.K) if self.spec.persistent else cases
            depths = {cases.size(k) + chains.size(k) for k in range(self.K)}
            self._blocks[key] = all(exact_row_blocks(d, V, [(H, blocks)], self.dtype) for d in sorted(depths))
        return self._blocks[key]

    def sum_and_apply_in_blocks(self, blocks: list[slice], left, right, n: int, neg_scale: float, mb: int) -> None:
        """:meth:`sum_gradients` and :meth:`apply_summed_gradient`, one block of W's rows at
        a time: block i's allreduce is in flight while block i + 1's gradient is computed,
        and the blocks already summed are applied while the last ones are on the wire.
        Every element is summed in rank order, as in lockstep: the bits are lockstep's."""
        V, H = self.spec.n_visible, self.spec.n_hidden
        gW = self.grad[: V * H].reshape(V, H)
        self.grad[V * H : V * H + V] = left[:n].sum(0) - neg_scale * left[n:].sum(0)
        self.grad[V * H + V :] = right.sum(0)
        by_block = self.blocks_exact(mb, blocks)
        if not by_block:
            self.statistics_gradient(left, right, gW)
        total, flight = self.grad.size, []
        for i, rows in enumerate(blocks):
            if by_block:
                self.statistics_gradient(left[:, rows], right, gW[rows])
            start, stop = rows.start * H, (rows.stop * H if i < len(blocks) - 1 else total)
            flight.append(self.comm.start_allreduce(self.grad[start:stop], phase=P.GRADIENT))
        for rows, handle in zip(blocks, flight):
            handle.wait()
            self.apply_weight_gradient(mb, rows)
        self.apply_bias_gradients(mb)

    def apply_summed_gradient(self, mb: int) -> None:
        self.apply_weight_gradient(mb, slice(None))
        self.apply_bias_gradients(mb)

    def apply_weight_gradient(self, mb: int, rows: slice) -> None:
        """W[rows] (+ its increments) <- the summed gradient's rows ``rows``."""
        spec = self.spec
        V, H = spec.n_visible, spec.n_hidden
        gW = self.grad[: V * H].reshape(V, H)
        _core.apply_gradient(
            self.W[rows],
            None if self.W_inc is None else self.W_inc[rows],
            gW[rows],
            alpha=spec.learning_rate / mb,
            momentum=spec.momentum,
            decay_lr=spec.learning_rate * spec.weight_decay,
        )

    def apply_bias_gradients(self, mb: int) -> None:
        """b and c (+ their increments) <- the summed gradient's bias parts."""
        spec = self.spec
        V, H = spec.n_visible, spec.n_hidden
        for bias, inc, g in (
            (self.b, self.b_inc, self.grad[V * H : V * H + V]),
            (self.c, self.c_inc, self.grad[V * H + V :]),
        ):
            _core.apply_gradient(
                bias.reshape(1, -1),
                None if inc is None else inc.reshape(1, -1),
                g.reshape(1, -1),
                alpha=spec.learning_rate / mb,
                momentum=spec.momentum,
            )

    def reduce(self, flat: np.ndarray, *, phase: str) -> None:
        """flat <- sum over workers, by allreduce or through the master (rank 0)."""
        if self.options.reduce == "allreduce":
            self.comm.allreduce(flat, phase=phase)
            return
        parts = self.comm.gather(flat, root=0, phase=phase)
        if parts is not None:
            np.copyto(flat, parts[0])
            for p in parts[1:]:
                flat += p
        self.comm.bcast(flat, root=0, phase=phase)

    # ---- weights mode ----------------------------------------------------------------------------

    def average_weights(self) -> None:
        self.syncs += 1
        V, H = self.spec.n_visible, self.spec.n_hidden
        self.grad[: V * H] = self.W.ravel()
        self.grad[V * H : V * H + V] = self.b
        self.grad[V * H + V :] = self.c
        self.reduce(self.grad, phase=P.AVERAGE)
        self.grad /= self.K
        self.W[...] = self.grad[: V * H].reshape(V, H)
        self.b[...] = self.grad[V * H : V * H + V]
        self.c[...] = self.grad[V * H + V :]

    def local_state(self):
        counters, _ = super().local_state()
        if self.options.average != "weights":  # every replica is the model
            return counters, {}
        names = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")
        return counters, {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    local_arrays = ("W", "b", "c", "W_inc", "b_inc", "c_inc", "chains")

    def finish(self) -> None:
        """A fit that does not end on an averaging step ends with one."""
        if self.options.average == "weights" and self.K > 1 and self.steps_done % self.options.average_every:
            self.average_weights()

    def gather_model(self) -> ModelState | None:
        chains = None
        if self.chains is not None:
            parts = self.comm.gather(self.chains, phase=P.GATHER_MODEL)
            chains = None if parts is None else np.concatenate(parts).reshape(self.spec.batch_size, -1)
        W, b, c = self.W, self.b, self.c
        if self.options.average == "weights" and self.K > 1:
            # local steps since the last averaging leave the replicas apart: the model is
            # their average (the same bits an averaging step gives: summed in rank order)
            V, H = self.spec.n_visible, self.spec.n_hidden
            flat = np.concatenate([self.W.ravel(), self.b, self.c])
            parts = self.comm.gather(flat, phase=P.GATHER_MODEL)
            if parts is not None:
                total = parts[0].copy()
                for p in parts[1:]:
                    total += p
                total /= self.K
                W, b, c = total[: V * H].reshape(V, H), total[V * H : V * H + V], total[V * H + V :]
        if self.rank != 0:
            return None
        copy = lambda a: None if a is None else a.copy()  # noqa: E731
        return ModelState(
            W=W.copy(),
            b=b.copy(),
            c=c.copy(),
            W_inc=copy(self.W_inc),
            b_inc=copy(self.b_inc),
            c_inc=copy(self.c_inc),
            chains=chains,
        )

    # ---- what it declares: rules, traffic and compute in closed form (docs/design.md 5.5) ----

    @classmethod
    def check_options(cls, options, *, transport: str) -> None:
        if options.overlapped and (options.average != "gradients" or options.reduce != "allreduce"):
            raise ValueError(
                "strategy options 'overlap' and 'overlap_chunks' > 1 of parameter-averaging need "
                "average='gradients' and reduce='allreduce' (the gradient's allreduce is what it "
                "overlaps)"
            )

    @classmethod
    def split_refusal(cls, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> str | None:
        if workers > batch_size:
            return (
                f"parameter-averaging splits each minibatch over the workers: workers={workers} is "
                f"larger than batch_size={batch_size}"
            )
        return None

    @classmethod
    def _exchange(cls, model: Model, K: int, options) -> list[int]:
        n = model.n_visible * model.n_hidden + model.n_visible + model.n_hidden
        if options.reduce != "allreduce":
            return master_reduce(n, K, model.pb)
        blocks = cls.gradient_blocks(model.n_visible, options)
        if blocks is None or options.average != "gradients":
            return allreduce(n, K, model.pb)
        # each block of W's rows (the last with the biases) is an allreduce of its own
        H, per = model.n_hidden, [0] * K
        sizes = [(b.stop - b.start) * H for b in blocks]
        sizes[-1] += model.n_visible + H
        for size in sizes:
            per = [a + b for a, b in zip(per, allreduce(size, K, model.pb))]
        return per

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        t = Traffic(K)
        if options.average == "gradients" and K > 1:  # K = 1: the serial algorithm, no collective
            # in blocks: each worker's share of every block's allreduce adds up to the whole's
            blocks = cls.gradient_blocks(model.n_visible, options)
            t.add(P.GRADIENT, cls._exchange(model, K, options), calls=2 * (len(blocks) if blocks else 1))
        return t

    @classmethod
    def sync_traffic(cls, model: Model, K: int, options) -> Traffic:
        t = Traffic(K)
        if options.average == "weights" and K > 1:
            t.add(P.AVERAGE, cls._exchange(model, K, options), calls=2)
        return t

    @classmethod
    def syncs_per_step(cls, options) -> float:
        return 1.0 / options.average_every if options.average == "weights" else 0.0

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        V, H = model.n_visible, model.n_hidden
        vis_kind = model.visible_kind
        n = Partition.part_size(m, K, rank)  # this worker's cases (and chains)
        w = Work()
        w.add("copy", n * V)
        w.gemm(n, H, V)
        hidden_work(w, model, n, H, H, exchanged=False)
        w.add("copy", n * H if model.hidden_bits else 0)
        for _ in range(model.cd_k):
            w.gemm(n, V, H)
            w.add(vis_kind, n * V)
            w.gemm(n, H, V)
            hidden_work(w, model, n, H, H, exchanged=False)
        w.add("copy", n * H if model.hidden_bits else 0)
        if options.average == "gradients" and K > 1:
            w.gemm(V, H, 2 * n)  # the dense gradient, to be summed
            w.add("copy", 2 * n * (V + H))  # bias gradients
            w.add("update", V * H + V + H)  # apply the summed gradient (W, b, c)
        else:
            statistics_work(w, model, V, H, n, n, momentum=momentum, binary_data=binary_data)
        return w

    @classmethod
    def overlap_work(
        cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool
    ) -> tuple[Work, tuple[str, ...]]:
        """The gradient of W and its update, a block of rows at a time, while the blocks'
        allreduces go."""
        if options.overlap_chunks == 1 or options.average != "gradients" or options.reduce != "allreduce" or K == 1:
            return Work(), ()
        V, H = model.n_visible, model.n_hidden
        n = Partition.part_size(m, K, rank)
        w = Work()
        w.gemm(V, H, 2 * n)
        w.add("update", V * H)
        return w, (P.GRADIENT,)

    @classmethod
    def sync_work(cls, model: Model, K: int, rank: int, options) -> Work:
        w = Work()
        if options.average == "weights" and K > 1:
            w.add("update", model.n_visible * model.n_hidden)
        return w
