"""An example strategy plug-in: per-update weight sync that skips the exchange of v'.

This is the variant that the paper's printed inequality (``m h K + 4 m v K >= 4 v h``)
describes. Every worker keeps a full replica of W, exact after every step. The hidden
units are split over the workers as in per-update weight sync, but each worker computes
all of the negative visible data v' itself (redundant compute, and the same on every
worker because every random draw is keyed by the global unit and case index), so v'
never travels. What travels: the 1-bit hidden states, and after every minibatch each
worker's updated column block W[:, H_k], allgathered into every replica.

Use it by reference, with this file's folder importable (the tcp and mpi workers import
it by the same reference; parrbm puts the folder on their PYTHONPATH):

    RBM(strategy="skip_visible_exchange:SkipVisibleExchange", workers=2)
    # a YAML comparison:  strategy: [green-only, "skip_visible_exchange.py:SkipVisibleExchange"]
"""

from __future__ import annotations

import numpy as np

from parrbm.analysis.compute import Work, hidden_work, statistics_work
from parrbm.analysis.cost import Model, Traffic, allgather_floats, hidden_traffic
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import Worker
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, own, phase_hidden

_ALL_UNITS = {"unit0": 0}


class SkipVisibleExchange(Worker):
    name = "skip-visible-exchange"
    sync_phases = (P.WEIGHT_SYNC,)
    phase_collectives = {P.WEIGHT_SYNC: "allgather"}  # the built-ins' weight sync is an alltoall

    def __init__(self, spec, state: ModelState, rank: int, size: int, options):
        super().__init__(spec, state, rank, size, options)
        V, H, m = spec.n_visible, spec.n_hidden, spec.batch_size
        Hk = self.hid.size(rank)
        self.W = own(state.W)  # the full replica (V, H)
        self.b = own(state.b)  # every visible bias, updated alike everywhere
        self.c = own(self.hid.take(state.c, rank, axis=0))  # c[H_k]
        momentum = state.W_inc is not None
        self.green_inc = own(self.hid.take(state.W_inc, rank, axis=1)) if momentum else None
        self.b_inc = own(state.b_inc) if momentum else None
        self.c_inc = own(self.hid.take(state.c_inc, rank, axis=0)) if momentum else None
        self.chains = None if state.chains is None else state.chains.copy()
        self.green = self.zeros(V, Hk)  # W[:, H_k], updated here
        self.left = self.zeros(2 * m, V)  # [x; v']
        self.right_k = self.zeros(2 * m, Hk)  # [h_k; -h'_k]
        self.hidden_act = self.zeros(m, H)
        self.hidden_states = self.zeros(m, H)
        self.pre_h = self.zeros(m, Hk)
        self.h_local = self.zeros(m, Hk)
        self.pre_v = self.zeros(m, V)

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left, right_k = self.left[: mb + c], self.right_k[: mb + c]
        left[:mb] = X
        self.green[...] = self.hid.take(self.W, k)

        # 1. h_k ~ p(h_k | x); allgather -> every worker has h.
        self.matmul(X, self.green, self.pre_h[:mb])
        act, states = self.exchange_hidden(
            self.pre_h[:mb], self.c, step, PHASE_POSITIVE, P.HIDDEN, self.h_local, self.hidden_act, self.hidden_states
        )
        right_k[:mb] = self.hid.take(act, k)
        driver = self.chains if spec.persistent else states

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            # 2. all of v' = act(h W^T + b), here: nothing to exchange.
            self.matmul(driver, self.W, self.pre_v[:c], trans_b=True)
            data = X if (t == 1 and not spec.persistent) else None
            err += self.visible_units(self.pre_v[:c], self.b, left[mb:], _ALL_UNITS, step, t, data=data)
            # 3. h'_k ~ p(h_k | v'); exchanged only when it drives another Gibbs step.
            self.matmul(left[mb:], self.green, self.pre_h[:c])
            if t < spec.cd_k or spec.persistent:
                act, states = self.exchange_hidden(
                    self.pre_h[:c],
                    self.c,
                    step,
                    phase_hidden(t),
                    P.NEGATIVE_HIDDEN,
                    self.h_local,
                    self.hidden_act,
                    self.hidden_states,
                )
                driver = states
                final_k = self.hid.take(act, k)
            else:
                probs = not self.hidden_as_bits
                self.sample_hidden(
                    self.pre_h[:c],
                    self.c,
                    self.hid.units(k),
                    step,
                    phase_hidden(t),
                    states=None if probs else self.h_local[:c],
                    probs=self.h_local[:c] if probs else None,
                )
                final_k = self.h_local[:c]
        right_k[mb:] = -neg_scale * final_k
        if spec.persistent:
            self.chains[...] = states

        # 4. This worker's column block, every visible bias (alike on every worker), c[H_k].
        self.apply_statistics(self.green, self.green_inc, left, right_k, mb, neg_scale)
        self.update_bias(self.b, self.b_inc, left[:mb], left[mb:], mb, neg_scale)
        self.update_bias(self.c, self.c_inc, right_k, None, mb)

        # 5. Every replica gets every updated column block.
        self.syncs += 1
        self.comm.allgather(self.green, self.W, self.hid, phase=P.WEIGHT_SYNC)
        # every worker computed the whole reconstruction error: count it once
        return err if k == 0 else 0.0

    def gather_model(self) -> ModelState | None:
        c = self.gather_vector(self.c, self.hid)
        incs = (None, None, None)
        if self.green_inc is not None:
            W_inc = self.gather_columns(self.green_inc, self.hid, self.spec.n_visible)
            incs = (W_inc, self.b_inc.copy(), self.gather_vector(self.c_inc, self.hid))
        if self.rank != 0:
            return None
        return ModelState(
            W=self.W.copy(),
            b=self.b.copy(),
            c=c,
            W_inc=incs[0],
            b_inc=incs[1],
            c_inc=incs[2],
            chains=None if self.chains is None else self.chains.copy(),
        )

    # ---- what it declares -------------------------------------------------------------------

    @classmethod
    def split_refusal(cls, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> str | None:
        if workers > n_hidden:
            return (
                f"strategy {cls.name!r} splits the hidden units over the workers: workers={workers} "
                f"is larger than the {n_hidden} hidden units"
            )
        return None

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        hid = Partition.cuts_sizes(model.n_hidden, K)
        t = Traffic(K)
        t.add(P.HIDDEN, hidden_traffic(model, m, hid))
        for step in range(1, model.cd_k + 1):
            if step < model.cd_k or model.persistent:
                t.add(P.NEGATIVE_HIDDEN, hidden_traffic(model, chains, hid))
        return t

    @classmethod
    def sync_traffic(cls, model: Model, K: int, options) -> Traffic:
        """W[:, H_k] from every worker to every other one."""
        t = Traffic(K)
        t.add(P.WEIGHT_SYNC, allgather_floats(model.n_visible, Partition.cuts_sizes(model.n_hidden, K), model.pb))
        return t

    @classmethod
    def syncs_per_step(cls, options) -> float:
        return 1.0

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        V, H, c, k = model.n_visible, model.n_hidden, m, model.cd_k
        hk = Partition.part_size(H, K, rank)
        w = Work()
        w.add("copy", m * V + V * hk)  # left[:m] = x; the column block
        w.gemm(m, hk, V)
        hidden_work(w, model, m, hk, H)
        w.add("copy", m * hk)
        for t in range(1, k + 1):
            w.gemm(c, V, H)  # all of v', on every worker
            w.add(model.visible_kind, c * V)
            w.gemm(c, hk, V)
            hidden_work(w, model, c, hk, H, exchanged=t < k or model.persistent)
        w.add("copy", c * hk)
        statistics_work(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
        return w

    @classmethod
    def sync_work(cls, model: Model, K: int, rank: int, options) -> Work:
        w = Work()
        w.add("copy", model.n_visible * model.n_hidden)  # the blocks placed into the replica
        return w
