"""Green-only CD: column-parallel (docs/design.md 5.4).

Worker k holds the whole minibatch, green weights G_k = W[:, H_k], c[H_k] and b[V_k].
Hidden units are sampled locally; the visible inputs are sums of partial products over
the hidden slices, combined by reduce-scatter, and v' is allgathered. No hidden traffic,
no sync, no drift.
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.accounting import (
    Model,
    Traffic,
    Work,
    chunk_calls,
    hidden_work,
    reduce_scatter,
    statistics_work,
    visible_traffic,
)
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, Worker, exact_column_blocks, own, phase_hidden


class GreenOnly(Worker):
    name = "green-only"
    options_used = ("partition", "overlap", "overlap_chunks")

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        V, m = spec.n_visible, spec.batch_size
        Vk, Hk = self.vis.size(rank), self.hid.size(rank)
        self.green = own(self.hid.take(state.W, rank, axis=1))  # (V, |H_k|)
        self.own_biases(state)
        momentum = state.W_inc is not None
        self.green_inc = own(self.hid.take(state.W_inc, rank, axis=1)) if momentum else None
        # Persistent chains: this worker's hidden units only.
        self.chains = None if state.chains is None else own(self.hid.take(state.chains, rank))
        self.left = self.zeros(2 * m, V)  # [x; v']
        self.right_k = self.zeros(2 * m, Hk)  # [h_k; -h'_k]
        self.states_k = self.zeros(m, Hk)  # hidden states driving the chain
        self.partial = self.zeros(m, V)  # h_k G_k^T: this worker's addend of every input
        self.pre_v = self.zeros(m, Vk)
        self.v_local = self.zeros(m, Vk)
        self.pre_h = self.zeros(m, Hk)

    def sample_local_hidden(
        self,
        pre: np.ndarray,
        step: int,
        phase: int,
        act_out: np.ndarray,
        states_out: np.ndarray,
        act_scale: float = 1.0,
        case0: int = 0,
    ) -> None:
        """Hidden units of this worker: states (drive the chain) and the activities the
        statistics use (states, or probabilities with statistics='probabilities')."""
        units = self.hid.units(self.rank)
        if self.hidden_as_bits:
            self.sample_hidden(pre, self.c, units, step, phase, states=states_out, case0=case0)
            np.multiply(states_out, act_scale, out=act_out)
        else:
            self.sample_hidden(
                pre, self.c, units, step, phase, states=states_out, probs=act_out, prob_scale=act_scale, case0=case0
            )

    @classmethod
    def chunked_gemms(cls, spec, vis: Partition, hid: Partition) -> list[tuple[int, int, bool]]:
        V = spec.n_visible
        return [g for j in range(len(hid.parts)) for g in ((hid.size(j), V, True), (V, hid.size(j), False))]

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left, right_k = self.left[: mb + c], self.right_k[: mb + c]
        left[:mb] = X
        v_neg, h_neg = left[mb:], right_k[mb:]
        X_k = self.vis.take(X, k)
        # The negative phase's cases in chunks (one in lockstep): each chunk's exchange is
        # in flight while the next chunk computes.
        neg = self.chunks(c)
        peers_first = self.peers_first(neg)

        # 1. h_k ~ p(h_k | x): local.
        _core.gemm(X, self.green, self.pre_h[:mb])
        self.sample_local_hidden(self.pre_h[:mb], step, PHASE_POSITIVE, right_k[:mb], self.states_k[:mb])
        driver = self.chains if spec.persistent else self.states_k[:mb]
        assert driver is not None  # persistent CD's chains are set
        states_out = self.chains if spec.persistent else self.states_k[:c]
        assert states_out is not None

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            # 2. Inputs of v'_k by reduce-scatter of h_k G_k^T; v'_k; allgather -> v'.
            summed = []
            for r in neg:
                summed.append(self.start_visible_input(driver[r], r, peers_first))
            sent, err_t = [], 0.0
            for i, r in enumerate(neg):
                summed[i].wait()
                data = X_k[r] if (t == 1 and not spec.persistent) else None
                err_t = self.visible_units(
                    self.pre_v[r],
                    self.b,
                    self.v_local[r],
                    self.vis.units(k),
                    step,
                    t,
                    data=data,
                    case0=r.start,
                    err0=err_t,
                )
                sent.append(self.start_visible(self.v_local[r], v_neg[r]))
            err += err_t
            # 3. h'_k ~ p(h_k | v'): local, each chunk as its v' arrives.
            for i, r in enumerate(neg):
                sent[i].wait()
                _core.gemm(v_neg[r], self.green, self.pre_h[r])
                self.sample_local_hidden(
                    self.pre_h[r], step, phase_hidden(t), h_neg[r], states_out[r], act_scale=-neg_scale, case0=r.start
                )
            driver = states_out

        # 4. G_k <- G_k + eps/m (x^T h_k - v'^T h'_k); biases.
        vis_k = self.vis.take(left, k)
        self.apply_statistics(self.green, self.green_inc, left, right_k, mb, neg_scale)
        self.update_bias(self.b, self.b_inc, vis_k[:mb], vis_k[mb:], mb, neg_scale)
        self.update_bias(self.c, self.c_inc, right_k, None, mb)
        return err

    def peers_first(self, chunks: list[slice]) -> bool:
        """Whether each chunk's partial product is computed the peers' column blocks first,
        so that their reduce-scatter is in flight while this worker computes its own
        block: when overlapping, over contiguous blocks, and where the BLAS gives each
        block the bits of the whole product."""
        if self.lockstep or self.K == 1 or not all(isinstance(p, slice) for p in self.vis.parts):
            return False
        depths = [self.hid.size(j) for j in range(self.K)]
        order = [self.vis.parts[(self.rank + i) % self.K] for i in range(1, self.K + 1)]
        return all(exact_column_blocks(r.stop - r.start, depths, order, self.dtype) for r in chunks)

    def start_visible_input(self, driver: np.ndarray, r: slice, peers_first: bool):
        """Start the reduce-scatter of the visible units' inputs for the cases ``r``:
        partial = driver G_k^T, each worker's sum of its block. Peers first: the blocks
        for the others go while this worker computes its own."""
        partial = self.partial[r]
        if not peers_first:
            _core.gemm(driver, self.green, partial, trans_b=True)
            return self.comm.start_reduce_scatter(
                partial, self.pre_v[r], self.vis, phase=P.VISIBLE_INPUT, now=self.lockstep
            )
        for i in range(1, self.K):
            cols = self.vis.parts[(self.rank + i) % self.K]
            _core.gemm(driver, self.green[cols], partial[:, cols], trans_b=True)
        handle = self.comm.start_reduce_scatter(partial, self.pre_v[r], self.vis, phase=P.VISIBLE_INPUT, own_later=True)
        own = self.vis.parts[self.rank]
        _core.gemm(driver, self.green[own], partial[:, own], trans_b=True)
        return handle

    def gather_model(self) -> ModelState | None:
        V = self.spec.n_visible
        W = self.gather_columns(self.green, self.hid, V)
        b = self.gather_vector(self.b, self.vis)
        c = self.gather_vector(self.c, self.hid)
        incs = (None, None, None)
        if self.green_inc is not None:
            incs = (
                self.gather_columns(self.green_inc, self.hid, V),
                self.gather_vector(self.b_inc, self.vis),
                self.gather_vector(self.c_inc, self.hid),
            )
        chains = None
        if self.chains is not None:
            chains = self.gather_columns(self.chains, self.hid, self.spec.batch_size)
        if self.rank != 0:
            return None
        return ModelState(W=W, b=b, c=c, W_inc=incs[0], b_inc=incs[1], c_inc=incs[2], chains=chains)

    # ---- what it declares: traffic and compute in closed form (docs/design.md 5.4) ---------

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        vis = Partition.cuts_sizes(model.n_visible, K)
        t = Traffic(K)
        neg = chunk_calls(chains, options.overlap_chunks)
        for _ in range(model.cd_k):
            t.add(P.VISIBLE_INPUT, reduce_scatter(chains, vis, model.pb), calls=neg)
            t.add(P.VISIBLE, visible_traffic(model, chains, vis), calls=neg)
        return t

    @classmethod
    def _negative_work(cls, model: Model, m: int, K: int, rank: int) -> Work:
        """The negative phase's products and units: what runs chunk by chunk."""
        V, H, c = model.n_visible, model.n_hidden, m
        vk, hk = model.block(K, rank)
        w = Work()
        for _ in range(model.cd_k):
            w.gemm(c, V, hk)
            w.add(model.visible_kind, c * vk)
            w.gemm(c, hk, V)
            hidden_work(w, model, c, hk, H, exchanged=False)
            w.add("copy", c * hk if model.hidden_bits else 0)
        return w

    @classmethod
    def overlap_work(
        cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool
    ) -> tuple[Work, tuple[str, ...]]:
        """In chunks, the negative phase; with its cases whole, this worker's own block of
        the visible inputs (the peers' go first)."""
        if not options.overlapped:
            return Work(), ()
        if options.overlap_chunks > 1:
            return cls._negative_work(model, m, K, rank), (P.VISIBLE_INPUT, P.VISIBLE)
        vk, hk = model.block(K, rank)
        w = Work()
        for _ in range(model.cd_k):
            w.gemm(m, vk, hk)
        return w, (P.VISIBLE_INPUT,)

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        V, H, c = model.n_visible, model.n_hidden, m
        vk, hk = model.block(K, rank)
        w = Work()
        w.add("copy", m * V)
        w.gemm(m, hk, V)
        hidden_work(w, model, m, hk, H, exchanged=False)
        w.add("copy", m * hk if model.hidden_bits else 0)  # activities = states
        w.absorb(cls._negative_work(model, m, K, rank))
        w.add("copy", (m + c) * vk)
        statistics_work(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
        return w
