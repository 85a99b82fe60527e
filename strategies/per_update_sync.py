"""Per-update weight sync (docs/design.md 5.2).

The unit partition of 5.1, but worker k updates only its green block (each weight once),
needs no allgather of h', and after every minibatch sends G_k[V_j, :] to worker j, which
overwrites P_j[:, H_k]: purple copies are always exact. With ``shared_weights`` (threads
transport only) green and purple are views of one W in shared memory and the sync is a
barrier: the paper's multi-core variant, 0 bytes moved, its logical bytes still reported.
"""

from __future__ import annotations

import numpy as np

from parrbm import _core
from parrbm.accounting import Model, Traffic, Work, hidden_traffic, hidden_work, statistics_work, visible_traffic
from parrbm.config import ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.strategies.base import PHASE_POSITIVE, Worker, exact_row_blocks, own, phase_hidden


class PerUpdateSync(Worker):
    name = "per-update-sync"
    options_used = ("partition", "shared_weights", "overlap", "overlap_chunks")
    sync_phases = (P.WEIGHT_SYNC,)

    def __init__(self, spec, state: ModelState, rank, size, options):
        super().__init__(spec, state, rank, size, options)
        V, H, m = spec.n_visible, spec.n_hidden, spec.batch_size
        Vk, Hk = self.vis.size(rank), self.hid.size(rank)
        if options.shared_weights:
            # One W for all workers (the runner hands every worker the same array).
            self.W = state.W
            self.green = self.hid.view(state.W, rank)  # W[:, H_k]
            self.purple = state.W[self.vis.parts[rank]]  # W[V_k, :]
        else:
            self.green = own(self.hid.take(state.W, rank, axis=1))
            self.purple = own(self.vis.take(state.W, rank, axis=0))
        self.own_biases(state)
        momentum = state.W_inc is not None
        self.green_inc = own(self.hid.take(state.W_inc, rank, axis=1)) if momentum else None
        self.chains = None if state.chains is None else state.chains.copy()  # (m, H) replicated
        self.left = self.zeros(2 * m, V)  # [x; v']
        self.right_k = self.zeros(2 * m, Hk)  # [h_k; -h'_k]
        self.hidden_act = self.zeros(m, H)
        self.hidden_states = self.zeros(m, H)
        self.pre_h = self.zeros(m, Hk)
        self.h_local = self.zeros(m, Hk)
        self.pre_v = self.zeros(m, Vk)
        self.v_local = self.zeros(m, Vk)
        self._sync_plan: list | None = None
        self._rows_exact: dict = {}

    def step(self, X: np.ndarray, step: int) -> float:
        spec, k = self.spec, self.rank
        mb = X.shape[0]
        c = self.chain_rows(mb)
        neg_scale = mb / c
        left, right_k = self.left[: mb + c], self.right_k[: mb + c]
        left[:mb] = X
        hid_units = self.hid.units(k)

        # 1. h_k ~ p(h_k | x); allgather -> every worker has h.
        _core.gemm(X, self.green, self.pre_h[:mb])
        act, states = self.exchange_hidden(
            self.pre_h[:mb], self.c, step, PHASE_POSITIVE, P.HIDDEN, self.h_local, self.hidden_act, self.hidden_states
        )
        right_k[:mb] = self.hid.take(act, k)
        driver = self.chains if spec.persistent else states
        assert driver is not None  # persistent CD's chains are set

        err = 0.0
        for t in range(1, spec.cd_k + 1):
            # 2. v'_k = act(h P_k^T + b_k); allgather -> every worker has v'.
            _core.gemm(driver, self.purple, self.pre_v[:c], trans_b=True)
            data = self.vis.take(X, k) if (t == 1 and not spec.persistent) else None
            err += self.visible_units(self.pre_v[:c], self.b, self.v_local[:c], self.vis.units(k), step, t, data=data)
            self.exchange_visible(self.v_local[:c], left[mb:])
            # 3. h'_k ~ p(h_k | v'), local: only this worker's green block needs it -- unless
            #    it drives another Gibbs step or a persistent chain.
            _core.gemm(left[mb:], self.green, self.pre_h[:c])
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
            elif self.hidden_as_bits:
                self.sample_hidden(self.pre_h[:c], self.c, hid_units, step, phase_hidden(t), states=self.h_local[:c])
                final_k = self.h_local[:c]
            else:
                self.sample_hidden(self.pre_h[:c], self.c, hid_units, step, phase_hidden(t), probs=self.h_local[:c])
                final_k = self.h_local[:c]
        right_k[mb:] = -neg_scale * final_k
        if spec.persistent:
            assert self.chains is not None
            self.chains[...] = states

        # 4. Only green is updated (each weight once), and the biases.
        vis_k = self.vis.take(left, k)
        self.update_bias(self.b, self.b_inc, vis_k[:mb], vis_k[mb:], mb, neg_scale)
        self.update_bias(self.c, self.c_inc, right_k, None, mb)
        plan = self.sync_plan()
        if plan is None:
            self.apply_statistics(self.green, self.green_inc, left, right_k, mb, neg_scale)
            # 5. Green -> purple after every minibatch.
            self.sync()
            return err

        # 4-5 overlapped: the rows of green the peers need are updated first, chunk by
        # chunk, each chunk's sync in flight while the next is updated; this worker's own
        # rows last, while the last chunk is on the wire. (Where the BLAS would round a
        # block of rows otherwise, green is updated whole first: the same chunks go.)
        packed = self.pack_statistics(left, right_k, mb) if self.visible_as_bits else None
        by_rows = self.rows_exact(mb + c, plan)
        if not by_rows:
            self.apply_statistics(self.green, self.green_inc, left, right_k, mb, neg_scale, packed=packed)
        self.syncs += 1
        flight = []
        for sends, received in plan:
            for rows in sends:
                if rows is not None and by_rows:
                    self.apply_statistics(
                        self.green, self.green_inc, left, right_k, mb, neg_scale, rows=rows, packed=packed
                    )
            flight.append(
                self.comm.start_alltoall(
                    [None if rows is None else self.green[rows] for rows in sends],
                    [None if j == k else self.hid.view(self.purple[received], j) for j in range(self.K)],
                    phase=P.WEIGHT_SYNC,
                )
            )
        own_rows = self.vis.parts[k]
        if by_rows:
            self.apply_statistics(
                self.green, self.green_inc, left, right_k, mb, neg_scale, rows=own_rows, packed=packed
            )
        self.hid.view(self.purple, k)[...] = self.green[own_rows]
        for handle in flight:
            handle.wait()
        return err

    def sync_plan(self) -> list[tuple[list[slice | None], slice]] | None:
        """The overlapped sync: for each of its chunks, the rows of green sent to each
        worker (None: this worker) and the rows of purple received (the same chunk of every
        peer's block, so that every worker starts as many alltoalls). None in lockstep."""
        if self.lockstep:
            return None
        if self._sync_plan is None:
            self._sync_plan = self._sync_chunks(self.rank, min(self.options.overlap_chunks, min(self.vis.sizes())))
        return self._sync_plan

    def rows_exact(self, depth: int, plan) -> bool:
        """Whether the BLAS gives every worker's update of green, a block of rows at a time
        in its plan's order, the bits of the whole product (:func:`exact_row_blocks`)."""
        key = (depth, _core.get_blas_threads())
        if key not in self._rows_exact:
            n = len(plan)
            order = []
            for k in range(self.K):
                chunks = self._sync_chunks(k, n)
                order.append(
                    (
                        self.hid.size(k),
                        [rows for sends, _ in chunks for rows in sends if rows is not None] + [self.vis.parts[k]],
                    )
                )
            self._rows_exact[key] = exact_row_blocks(depth, self.spec.n_visible, order, self.dtype)
        return self._rows_exact[key]

    def _sync_chunks(self, k: int, n: int) -> list[tuple[list[slice | None], slice]]:
        """Worker k's sync in n chunks: chunk i of every visible block V_j (near-equal cuts)."""

        def cut(j: int, i: int) -> tuple[int, int]:
            c = Partition.cuts(self.vis.size(j), n)
            return c[i], c[i + 1]

        plan = []
        for i in range(n):
            sends = [
                None
                if j == k
                else slice(self.vis.parts[j].start + cut(j, i)[0], self.vis.parts[j].start + cut(j, i)[1])
                for j in range(self.K)
            ]
            plan.append((sends, slice(*cut(k, i))))
        return plan

    def sync_bytes(self) -> int:
        """Payload this worker's sync sends: G_k[V_j, :] to every j != k."""
        Hk = self.hid.size(self.rank)
        return sum(self.vis.size(j) * Hk for j in range(self.K) if j != self.rank) * self.dtype.itemsize

    def sync(self) -> None:
        k = self.rank
        self.syncs += 1
        if self.options.shared_weights:
            self.comm.shared_sync(self.sync_bytes(), phase=P.WEIGHT_SYNC)
            return
        sends = [np.ascontiguousarray(self.vis.take(self.green, j, axis=0)) for j in range(self.K)]
        if self.hid.is_contiguous:  # received straight into purple's column blocks
            self.comm.alltoall(sends, [self.hid.view(self.purple, j) for j in range(self.K)], phase=P.WEIGHT_SYNC)
            return
        if not hasattr(self, "_sync_in"):
            self._sync_in = [np.empty((self.vis.size(k), self.hid.size(j)), self.dtype) for j in range(self.K)]
        self.comm.alltoall(sends, self._sync_in, phase=P.WEIGHT_SYNC)
        for j in range(self.K):
            self.hid.put(self.purple, j, self._sync_in[j])

    def gather_model(self) -> ModelState | None:
        W_inc = None
        if self.green_inc is not None:  # increments live with green, W[:, H_k]
            W_inc = self.gather_columns(self.green_inc, self.hid, self.spec.n_visible)
        return self.gather_purple_model(W_inc)

    # ---- what it declares: traffic and compute in closed form (docs/design.md 5.2) ---------

    @classmethod
    def check_options(cls, options, *, transport: str) -> None:
        if options.shared_weights:
            if transport != "threads":
                raise ValueError("strategy option 'shared_weights' needs transport='threads' (one memory)")
            if options.partition != "contiguous":
                raise ValueError("strategy option 'shared_weights' needs partition='contiguous'")
        if options.overlapped:
            if options.shared_weights:
                raise ValueError(
                    "strategy options 'overlap' and 'overlap_chunks' > 1 cannot be used with "
                    "'shared_weights' (per-update-sync's sync is then a barrier: nothing to overlap)"
                )
            if options.partition != "contiguous":
                raise ValueError(
                    "strategy options 'overlap' and 'overlap_chunks' > 1 of per-update-sync need "
                    "partition='contiguous' (each chunk of a worker's rows is sent from one "
                    "block of its weights)"
                )

    @classmethod
    def step_traffic(cls, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
        vis, hid = Partition.cuts_sizes(model.n_visible, K), Partition.cuts_sizes(model.n_hidden, K)
        t = Traffic(K)
        t.add(P.HIDDEN, hidden_traffic(model, m, hid))
        for step in range(1, model.cd_k + 1):
            t.add(P.VISIBLE, visible_traffic(model, chains, vis))
            if step < model.cd_k or model.persistent:
                t.add(P.NEGATIVE_HIDDEN, hidden_traffic(model, chains, hid))
        return t

    @classmethod
    def sync_traffic(cls, model: Model, K: int, options) -> Traffic:
        """G_k[V_j, :] to every j != k (for shared weights the logical bytes; none move)."""
        V, H = model.n_visible, model.n_hidden
        vis, hid = Partition.cuts_sizes(V, K), Partition.cuts_sizes(H, K)
        t = Traffic(K)
        calls = 1 if options.overlap_chunks == 1 else min(options.overlap_chunks, min(vis))
        t.add(P.WEIGHT_SYNC, [(V - vis[k]) * hid[k] * model.pb for k in range(K)], calls=calls)
        return t

    @classmethod
    def syncs_per_step(cls, options) -> float:
        return 1.0

    @classmethod
    def step_work(cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool) -> Work:
        V, H, c, k = model.n_visible, model.n_hidden, m, model.cd_k
        vk, hk = model.block(K, rank)
        vis_kind = model.visible_kind
        w = Work()
        w.add("copy", m * V + m * vk)
        w.gemm(m, hk, V)
        hidden_work(w, model, m, hk, H)
        w.add("copy", m * hk)  # right_k[:m] = h_k
        for t in range(1, k + 1):
            w.gemm(c, vk, H)
            w.add(vis_kind, c * vk)
            w.gemm(c, hk, V)
            hidden_work(w, model, c, hk, H, exchanged=t < k or model.persistent)
        w.add("copy", c * hk + (m + c) * vk)
        statistics_work(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
        return w

    @classmethod
    def overlap_work(
        cls, model: Model, m: int, K: int, rank: int, options, *, momentum: bool, binary_data: bool
    ) -> tuple[Work, tuple[str, ...]]:
        """The update of green, the rows peers need first, while the sync's chunks go."""
        if not options.overlapped or options.shared_weights:
            return Work(), ()
        w = Work()
        vk, hk = model.block(K, rank)
        # in chunks, the whole update; with the rows in one chunk, its own rows' (the peers' go first)
        statistics_work(
            w,
            model,
            model.n_visible if options.overlap_chunks > 1 else vk,
            hk,
            m,
            m,
            momentum=momentum,
            binary_data=binary_data,
        )
        return w, (P.WEIGHT_SYNC,)

    @classmethod
    def sync_work(cls, model: Model, K: int, rank: int, options) -> Work:
        w = Work()
        vk, hk = model.block(K, rank)
        w.add("copy", vk * hk)  # its own block (the rest arrives in place)
        return w
