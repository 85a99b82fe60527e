"""Data-partitioned, purple-only CD: row-parallel (docs/design.md 5.3).

Worker k holds only its data columns x[:, V_k], purple weights P_k = W[V_k, :], b[V_k]
and c[H_k]. Each weight is stored once: no sync, no drift. Hidden inputs are sums of
partial products over the visible slices, combined by reduce-scatter.
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.accounting import (Model, Traffic, Work, hidden_traffic, hidden_work, reduce_scatter,
                               statistics_work)
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies.base import PHASE_POSITIVE, Worker, own, phase_hidden
from parrbm.strategies import phases as P


class PurpleOnly(Worker):
    name = "purple-only"

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        H, m = spec.n_hidden, spec.batch_size
        Vk, Hk = self.vis.size(rank), self.hid.size(rank)
        self.purple = own(self.vis.take(state.W, rank, axis=0))   # (|V_k|, H)
        self.own_biases(state)
        momentum = state.W_inc is not None
        self.purple_inc = own(self.vis.take(state.W_inc, rank, axis=0)) if momentum else None
        self.chains = None if state.chains is None else state.chains.copy()
        self.left_k = self.zeros(2 * m, Vk)      # [x_k; v'_k]
        self.right = self.zeros(2 * m, H)        # [h; -h']
        self.partial = self.zeros(m, H)          # x_k P_k: this worker's addend of every input
        self.hidden_act = self.zeros(m, H)
        self.hidden_states = self.zeros(m, H)
        self.pre_h = self.zeros(m, Hk)
        self.h_local = self.zeros(m, Hk)

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left_k, right = self.left_k[: mb + c], self.right[: mb + c]
        left_k[:mb] = self.vis.take(X, k)

        # 1. Inputs of h_k by reduce-scatter; h_k ~ p(h_k | x); allgather bits -> h.
        _core.gemm(left_k[:mb], self.purple, self.partial[:mb])
        self.comm.reduce_scatter(self.partial[:mb], self.pre_h[:mb], self.hid, phase=P.HIDDEN_INPUT)
        act, states = self.exchange_hidden(self.pre_h[:mb], self.c, step, PHASE_POSITIVE, P.HIDDEN,
                                           self.h_local, self.hidden_act, self.hidden_states)
        right[:mb] = act
        driver = self.chains if spec.persistent else states

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            # 2. v'_k = act(h P_k^T + b_k): local.
            _core.gemm(driver, self.purple, left_k[mb:], trans_b=True)
            data = left_k[:mb] if (t == 1 and not spec.persistent) else None
            err += self.visible_units(left_k[mb:], self.b, left_k[mb:], self.vis.units(k), step, t,
                                      data=data)
            # 3. Inputs of h'_k by reduce-scatter; h'_k; allgather -> h'.
            _core.gemm(left_k[mb:], self.purple, self.partial[:c])
            self.comm.reduce_scatter(self.partial[:c], self.pre_h[:c], self.hid,
                                     phase=P.NEGATIVE_HIDDEN_INPUT)
            act, states = self.exchange_hidden(self.pre_h[:c], self.c, step, phase_hidden(t),
                                               P.NEGATIVE_HIDDEN, self.h_local, self.hidden_act,
                                               self.hidden_states)
            driver = states
        right[mb:] = -neg_scale * act
        if spec.persistent:
            self.chains[...] = states

        # 4. P_k <- P_k + eps/m (x_k^T h - v'_k^T h'); biases.
        self.apply_statistics(self.purple, self.purple_inc, left_k, right, mb, neg_scale)
        self.update_bias(self.b, self.b_inc, left_k[:mb], left_k[mb:], mb, neg_scale)
        self.update_bias(self.c, self.c_inc, self.hid.take(right, k), None, mb)
        return err


    def gather_model(self) -> ModelState | None:
        return self.gather_purple_model()

    # ---- what it declares: traffic and compute in closed form (docs/design.md 5.3) ---------

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        hid = Partition.cuts_sizes(model.n_hidden, K)
        t = Traffic(K)
        t.add(P.HIDDEN_INPUT, reduce_scatter(m, hid, model.pb))
        t.add(P.HIDDEN, hidden_traffic(model, m, hid))
        for _ in range(model.cd_k):
            t.add(P.NEGATIVE_HIDDEN_INPUT, reduce_scatter(chains, hid, model.pb))
            t.add(P.NEGATIVE_HIDDEN, hidden_traffic(model, chains, hid))
        return t

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool,
                  binary_data: bool) -> Work:
        H, c = model.n_hidden, m
        vk, hk = model.block(K, rank)
        vis_kind = model.visible_kind
        w = Work()
        w.add("copy", m * vk)                         # left_k[:m] = x_k
        w.gemm(m, H, vk)
        hidden_work(w, model, m, hk, H)
        w.add("copy", m * H)
        for _ in range(model.cd_k):
            w.gemm(c, vk, H)
            w.add(vis_kind, c * vk)
            w.gemm(c, H, vk)
            hidden_work(w, model, c, hk, H)
        w.add("copy", c * H + (m + c) * hk)
        statistics_work(w, model, vk, H, m, c, momentum=momentum, binary_data=binary_data)
        return w
