"""Data-partitioned, purple-only CD: row-parallel (docs/design.md 5.3).

Worker k holds only its data columns x[:, V_k], purple weights P_k = W[V_k, :], b[V_k]
and c[H_k]. Each weight is stored once: no sync, no drift. Hidden inputs are sums of
partial products over the visible slices, combined by reduce-scatter.
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
    reduce_scatter,
    statistics_work,
)
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, Worker, own, phase_hidden


class PurpleOnly(Worker):
    name = "purple-only"
    options_used = ("partition", "overlap", "overlap_chunks")

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        H, m = spec.n_hidden, spec.batch_size
        Vk, Hk = self.vis.size(rank), self.hid.size(rank)
        self.purple = own(self.vis.take(state.W, rank, axis=0))  # (|V_k|, H)
        self.own_biases(state)
        momentum = state.W_inc is not None
        self.purple_inc = own(self.vis.take(state.W_inc, rank, axis=0)) if momentum else None
        self.chains = None if state.chains is None else state.chains.copy()
        self.left_k = self.zeros(2 * m, Vk)  # [x_k; v'_k]
        self.right = self.zeros(2 * m, H)  # [h; -h']
        self.partial = self.zeros(m, H)  # x_k P_k: this worker's addend of every input
        self.hidden_act = self.zeros(m, H)
        self.hidden_states = self.zeros(m, H)
        self.pre_h = self.zeros(m, Hk)
        self.h_local = self.zeros(m, Hk)

    @classmethod
    def chunked_gemms(cls, spec, vis: Partition, hid: Partition) -> list[tuple[int, int, bool]]:
        H = spec.n_hidden
        return [g for j in range(len(vis.parts)) for g in ((vis.size(j), H, False), (H, vis.size(j), True))]

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left_k, right = self.left_k[: mb + c], self.right[: mb + c]
        left_k[:mb] = self.vis.take(X, k)
        x_k, v_neg = left_k[:mb], left_k[mb:]
        act, states = self.hidden_act, self.hidden_states  # (m, H): h, then h', as they arrive
        # The minibatch's cases in chunks (one in lockstep): each chunk's exchange is in
        # flight while the next chunk computes.
        pos, neg = self.chunks(mb), self.chunks(c)

        # 1. Inputs of h_k by reduce-scatter; h_k ~ p(h_k | x); allgather bits -> h.
        summed = []
        for r in pos:
            _core.gemm(x_k[r], self.purple, self.partial[r])
            summed.append(
                self.comm.start_reduce_scatter(
                    self.partial[r], self.pre_h[r], self.hid, phase=P.HIDDEN_INPUT, now=self.lockstep
                )
            )
        flight = []
        for i, r in enumerate(pos):
            summed[i].wait()
            flight.append(
                self.start_hidden(self.pre_h, self.c, step, PHASE_POSITIVE, P.HIDDEN, self.h_local, act, states, r)
            )

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            chained = t == 1 and spec.persistent  # the chains drive it, not the h just sampled
            if chained:
                for i, r in enumerate(pos):
                    self.finish_hidden(flight[i], step, PHASE_POSITIVE, act, states, r)
            driver = self.chains if chained else states
            assert driver is not None  # chained: persistent CD, whose chains are set
            summed, err_t = [], 0.0
            for i, r in enumerate(neg):
                if not chained:
                    self.finish_hidden(
                        flight[i], step, phase_hidden(t - 1) if t > 1 else PHASE_POSITIVE, act, states, r
                    )
                # 2. v'_k = act(h P_k^T + b_k): local.
                _core.gemm(driver[r], self.purple, v_neg[r], trans_b=True)
                data = x_k[r] if (t == 1 and not spec.persistent) else None
                err_t = self.visible_units(
                    v_neg[r], self.b, v_neg[r], self.vis.units(k), step, t, data=data, case0=r.start, err0=err_t
                )
                # 3. Inputs of h'_k by reduce-scatter (in flight while the next chunk computes).
                _core.gemm(v_neg[r], self.purple, self.partial[r])
                summed.append(
                    self.comm.start_reduce_scatter(
                        self.partial[r], self.pre_h[r], self.hid, phase=P.NEGATIVE_HIDDEN_INPUT, now=self.lockstep
                    )
                )
            err += err_t
            if t == 1:  # h leaves the shared buffers before h' arrives in them
                right[:mb] = states[:mb] if self.hidden_as_bits else act[:mb]
            # h'_k; allgather -> h'.
            flight = []
            for i, r in enumerate(neg):
                summed[i].wait()
                flight.append(
                    self.start_hidden(
                        self.pre_h, self.c, step, phase_hidden(t), P.NEGATIVE_HIDDEN, self.h_local, act, states, r
                    )
                )
        for i, r in enumerate(neg):
            self.finish_hidden(flight[i], step, phase_hidden(spec.cd_k), act, states, r)
        right[mb:] = -neg_scale * (states[:c] if self.hidden_as_bits else act[:c])
        if spec.persistent:
            assert self.chains is not None
            self.chains[...] = states[:c]

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
        pos, neg = chunk_calls(m, options.overlap_chunks), chunk_calls(chains, options.overlap_chunks)
        t.add(P.HIDDEN_INPUT, reduce_scatter(m, hid, model.pb), calls=pos)
        t.add(P.HIDDEN, hidden_traffic(model, m, hid), calls=pos)
        for _ in range(model.cd_k):
            t.add(P.NEGATIVE_HIDDEN_INPUT, reduce_scatter(chains, hid, model.pb), calls=neg)
            t.add(P.NEGATIVE_HIDDEN, hidden_traffic(model, chains, hid), calls=neg)
        return t

    @classmethod
    def _exchange_work(cls, model: Model, m: int, K: int, rank: int) -> Work:
        """The products and units of the hidden and visible phases: what runs chunk by chunk."""
        H, c = model.n_hidden, m
        vk, hk = model.block(K, rank)
        w = Work()
        w.gemm(m, H, vk)
        hidden_work(w, model, m, hk, H)
        for _ in range(model.cd_k):
            w.gemm(c, vk, H)
            w.add(model.visible_kind, c * vk)
            w.gemm(c, H, vk)
            hidden_work(w, model, c, hk, H)
        return w

    @classmethod
    def overlap_work(
        cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool
    ) -> tuple[Work, tuple[str, ...]]:
        if options.overlap_chunks == 1:
            return Work(), ()
        return cls._exchange_work(model, m, K, rank), tuple(cls.step_traffic(model, m, K, options, chains=m).phases)

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        H, c = model.n_hidden, m
        vk, hk = model.block(K, rank)
        w = cls._exchange_work(model, m, K, rank)
        w.add("copy", m * vk)  # left_k[:m] = x_k
        w.add("copy", m * H)
        w.add("copy", c * H + (m + c) * hk)
        statistics_work(w, model, vk, H, m, c, momentum=momentum, binary_data=binary_data)
        return w
