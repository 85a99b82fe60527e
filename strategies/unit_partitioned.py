"""Unit-partitioned CD (the paper's algorithm, docs/design.md 5.1).

Worker k holds the whole minibatch, its green weights G_k = W[:, H_k] (all visible x its
hidden units) and purple weights P_k = W[V_k, :] (its visible x all hidden units), b[V_k]
and c[H_k]. Every weight lives on two workers and is updated on both; purple is
authoritative and overwrites green every ``sync_every`` minibatches.
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.accounting import (
    Model,
    Traffic,
    Work,
    chunk_calls,
    hidden_traffic,
    hidden_work,
    statistics_work,
    visible_traffic,
)
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, Worker, own, phase_hidden


class UnitPartitioned(Worker):
    local_arrays = ("green", "green_inc")  # green drifts from purple between syncs
    name = "unit-partitioned"
    options_used = ("partition", "sync_every", "overlap", "overlap_chunks")
    sync_phases = (P.WEIGHT_SYNC,)

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        V, H, m = spec.n_visible, spec.n_hidden, spec.batch_size
        Vk, Hk = self.vis.size(rank), self.hid.size(rank)
        self.green = own(self.hid.take(state.W, rank, axis=1))  # (V, |H_k|)
        self.purple = own(self.vis.take(state.W, rank, axis=0))  # (|V_k|, H)
        self.own_biases(state)
        momentum = state.W_inc is not None
        self.green_inc = own(self.hid.take(state.W_inc, rank, axis=1)) if momentum else None
        self.purple_inc = own(self.vis.take(state.W_inc, rank, axis=0)) if momentum else None
        self.chains = None if state.chains is None else state.chains.copy()  # (m, H) replicated
        # Work buffers: stacked statistics operands and the local blocks.
        self.left = self.zeros(2 * m, V)  # [x; v']
        self.right = self.zeros(2 * m, H)  # [h; -h']
        self.right_k = self.zeros(2 * m, Hk)  # [h_k; -h'_k]: this worker's own columns of it
        self.hidden_act = self.zeros(m, H)
        self.hidden_states = self.zeros(m, H)
        self.pre_h = self.zeros(m, Hk)
        self.h_local = self.zeros(m, Hk)
        self.pre_v = self.zeros(m, Vk)
        self.v_local = self.zeros(m, Vk)
        self.own_states = self.zeros(m, Hk)  # this worker's units of the states driving v'

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left, right = self.left[: mb + c], self.right[: mb + c]
        left[:mb] = X
        X_k = self.vis.take(X, k)
        act, states = self.hidden_act, self.hidden_states  # (m, H): h, then h', as they arrive
        v_neg = left[mb:]
        # The minibatch's cases in chunks (one in lockstep): each chunk's exchange is in
        # flight while the next chunk computes, and each chunk goes on as soon as its own
        # rows have arrived.
        pos, neg = self.chunks(mb), self.chunks(c)

        # 1. h_k ~ p(h_k | x); allgather -> every worker has h.
        flight = []
        for r in pos:
            _core.gemm(X[r], self.green, self.pre_h[r])
            flight.append(
                self.start_hidden(self.pre_h, self.c, step, PHASE_POSITIVE, P.HIDDEN, self.h_local, act, states, r)
            )

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            # 2. v'_k = act(h P_k^T + b_k); allgather -> every worker has v'.
            chained = t == 1 and spec.persistent  # the chains drive it, not the h just sampled
            driver = self.chains if chained else states
            assert driver is not None  # chained: persistent CD, whose chains are set
            sent, err_t = [], 0.0
            drawn = phase_hidden(t - 1) if t > 1 else PHASE_POSITIVE
            for i, r in enumerate(neg):
                if chained:
                    _core.gemm(driver[r], self.purple, self.pre_v[r], trans_b=True)
                else:  # this worker's own units of h first, while the others' are on the wire
                    own = self.own_hidden_states(self.h_local, self.own_states, step, drawn, r)
                    self.product_own_first(
                        own,
                        driver[r],
                        self.purple,
                        self.pre_v[r],
                        self.hid,
                        trans_b=True,
                        arrived=lambda i=i, r=r: self.finish_hidden(flight[i], step, drawn, act, states, r),
                    )
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
            if t == 1:  # h leaves the shared buffers before h' arrives in them
                if chained:
                    for i, r in enumerate(pos):
                        self.finish_hidden(flight[i], step, PHASE_POSITIVE, act, states, r)
                right[:mb] = act[:mb] if not self.hidden_as_bits else states[:mb]
            # 3. h'_k ~ p(h_k | v'); allgather -> every worker has h'.
            flight = []
            for i, r in enumerate(neg):
                self.product_own_first(
                    self.v_local[r], v_neg[r], self.green, self.pre_h[r], self.vis, arrived=sent[i].wait
                )
                flight.append(
                    self.start_hidden(
                        self.pre_h, self.c, step, phase_hidden(t), P.NEGATIVE_HIDDEN, self.h_local, act, states, r
                    )
                )
        # 4. Both copies of every weight are updated: green with x^T h_k - v'^T h'_k,
        #    purple with x_k^T h - v'_k^T h'. Green needs only this worker's own units of
        #    h' (here already): it is updated while the rest of h' is on the wire.
        hid_k = self.right_k[: mb + c]
        hid_k[:mb] = self.hid.take(right[:mb], k)
        np.multiply(self.h_local[:c], -neg_scale, out=hid_k[mb:])
        self.apply_statistics(self.green, self.green_inc, left, hid_k, mb, neg_scale)
        for i, r in enumerate(neg):
            self.finish_hidden(flight[i], step, phase_hidden(spec.cd_k), act, states, r)
        right[mb:] = -neg_scale * (states[:c] if self.hidden_as_bits else act[:c])
        if spec.persistent:
            assert self.chains is not None
            self.chains[...] = states[:c]
        vis_k = self.vis.take(left, k)
        self.apply_statistics(self.purple, self.purple_inc, vis_k, right, mb, neg_scale)
        self.update_bias(self.b, self.b_inc, vis_k[:mb], vis_k[mb:], mb, neg_scale)
        self.update_bias(self.c, self.c_inc, hid_k, None, mb)

        # 5. Purple is authoritative: overwrite green every sync_every minibatches.
        self.steps_done += 1
        every = self.options.sync_every
        if every and self.steps_done % every == 0:
            self.sync()
        return err

    @classmethod
    def chunked_gemms(cls, spec, vis: Partition, hid: Partition) -> list[tuple[int, int, bool]]:
        V, H, K = spec.n_visible, spec.n_hidden, len(vis.parts)
        gemms = [g for j in range(K) for g in ((V, hid.size(j), False), (H, vis.size(j), True))]
        # the products summed block by block over their depth (Worker.product_own_first)
        return gemms + [
            g
            for k in range(K)
            for j in range(K)
            for g in ((vis.size(j), hid.size(k), False), (hid.size(j), vis.size(k), True))
        ]

    def sync(self) -> None:
        """alltoall: worker j sends P_j[:, H_k] to worker k, which overwrites G_k[V_j, :]."""
        self.syncs += 1
        k = self.rank
        sends = [np.ascontiguousarray(self.hid.take(self.purple, j)) for j in range(self.K)]
        if not hasattr(self, "_sync_in"):  # reused: a sync allocates nothing
            self._sync_in = [np.empty((self.vis.size(j), self.hid.size(k)), self.dtype) for j in range(self.K)]
        outs = self._sync_in
        self.comm.alltoall(sends, outs, phase=P.WEIGHT_SYNC)
        drift = 0.0
        for j in range(self.K):
            rows = self.vis.index(j)
            drift = max(drift, float(np.max(np.abs(self.green[rows] - outs[j]), initial=0.0)))
            self.green[rows] = outs[j]
        self.divergence.append(drift)

    def gather_model(self) -> ModelState | None:
        return self.gather_purple_model()

    # ---- what it declares: traffic and compute in closed form (docs/design.md 5.1) ---------

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        vis, hid = Partition.cuts_sizes(model.n_visible, K), Partition.cuts_sizes(model.n_hidden, K)
        t = Traffic(K)
        pos, neg = chunk_calls(m, options.overlap_chunks), chunk_calls(chains, options.overlap_chunks)
        t.add(P.HIDDEN, hidden_traffic(model, m, hid), calls=pos)
        for _ in range(model.cd_k):
            t.add(P.VISIBLE, visible_traffic(model, chains, vis), calls=neg)
            t.add(P.NEGATIVE_HIDDEN, hidden_traffic(model, chains, hid), calls=neg)
        return t

    @classmethod
    def sync_traffic(cls, model: Model, K: int, options) -> Traffic:
        """P_k[:, H_j] to every j != k."""
        V, H = model.n_visible, model.n_hidden
        vis, hid = Partition.cuts_sizes(V, K), Partition.cuts_sizes(H, K)
        t = Traffic(K)
        t.add(P.WEIGHT_SYNC, [vis[k] * (H - hid[k]) * model.pb for k in range(K)])
        return t

    @classmethod
    def syncs_per_step(cls, options) -> float:
        return 1.0 / options.sync_every if options.sync_every else 0.0

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        V, H, c = model.n_visible, model.n_hidden, m
        vk, hk = model.block(K, rank)
        w = cls._exchange_work(model, m, K, rank)
        w.add("copy", m * V + m * vk)  # left[:m] = x, x_k
        w.add("copy", m * H)  # right[:m] = h
        w.add("copy", c * H + (m + c) * (hk + vk))  # right[m:] = -h'; the k-th blocks
        statistics_work(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
        statistics_work(w, model, vk, H, m, c, momentum=momentum, binary_data=binary_data)
        return w

    @classmethod
    def _exchange_work(cls, model: Model, m: int, K: int, rank: int) -> Work:
        """The products and units of the hidden and visible phases: what runs chunk by chunk."""
        V, H, c = model.n_visible, model.n_hidden, m
        vk, hk = model.block(K, rank)
        vis, hid = Partition.cuts_sizes(V, K), Partition.cuts_sizes(H, K)
        w = Work()
        w.gemm(m, hk, V)
        hidden_work(w, model, m, hk, H)
        for t in range(model.cd_k):
            # summed over the depth block by block, this worker's own first
            if t == 0 and model.persistent:  # the chains drive it: one product
                w.gemm(c, vk, H)
            else:
                for hj in hid:
                    w.gemm(c, vk, hj)
                if not model.hidden_bits:
                    w.add("bernoulli", c * hk)  # its own units' states, drawn ahead
            w.add(model.visible_kind, c * vk)
            for vj in vis:
                w.gemm(c, hk, vj)
            hidden_work(w, model, c, hk, H)
        return w

    @classmethod
    def overlap_work(
        cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool
    ) -> tuple[Work, tuple[str, ...]]:
        """With its cases whole: this worker's own block of the visible and hidden inputs
        (while the rest of h and v' are on the wire) and green's update (while h' is); in
        chunks, the phases' products as well."""
        if not options.overlapped:
            return Work(), ()
        vk, hk = model.block(K, rank)
        w = Work()
        statistics_work(w, model, model.n_visible, hk, m, m, momentum=momentum, binary_data=binary_data)
        if options.overlap_chunks > 1:
            w.absorb(cls._exchange_work(model, m, K, rank))
        else:
            for t in range(model.cd_k):
                if not (t == 0 and model.persistent):
                    w.gemm(m, vk, hk)
                w.gemm(m, hk, vk)
        return w, (P.HIDDEN, P.VISIBLE, P.NEGATIVE_HIDDEN)

    @classmethod
    def sync_work(cls, model: Model, K: int, rank: int, options) -> Work:
        w = Work()
        vk, hk = model.block(K, rank)
        w.add("copy", vk * model.n_hidden + 2 * model.n_visible * hk)  # P_k's blocks out; drift, G_k's rows in
        return w
