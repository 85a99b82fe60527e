"""Closed-form computation of one minibatch step, per worker and strategy.

The compute counterpart of :mod:`parrbm.analysis.cost`: for each strategy, the kernels a
worker runs in one step, with their shapes, read off the strategy modules in the order
they run. The time model prices them with a machine profile; the tests hold this
account to what the strategies really call (a traced run at small sizes).

Kinds of work (``Work.counts``):

    sample      hidden units sampled from their inputs (sigmoid + Philox), elements
    bernoulli   states drawn from given probabilities, elements
    visible     binary visible units sampled, elements (visible-gaussian: Gaussian units)
    pack        0/1 values packed column-wise for the bit statistics, elements
    bitstat     weight cells updated by AND + popcount, times 64-case words per term
    update      weights touched by an elementwise update (increments, a summed gradient)
    copy        values moved between buffers by the strategy itself

and ``Work.gemms``: (M, N, depth) of every matrix product, 2 M N depth flops each.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from parrbm.analysis.cost import STRATEGIES, Model
from parrbm.partition import Partition


@dataclass
class Work:
    gemms: list[tuple[int, int, int]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def gemm(self, M: int, N: int, depth: int) -> None:
        if M and N and depth:
            self.gemms.append((int(M), int(N), int(depth)))

    def add(self, kind: str, n: int) -> None:
        if n:
            self.counts[kind] += int(n)

    @property
    def flops(self) -> int:
        return sum(2 * M * N * d for M, N, d in self.gemms)


def _hidden(w: Work, model: Model, rows: int, hk: int, H: int, exchanged: bool = True) -> None:
    """Sample this worker's hidden block; with probability statistics every worker then
    draws the states of all H units from the gathered probabilities."""
    w.add("sample", rows * hk)
    if exchanged and not model.hidden_bits:
        w.add("bernoulli", rows * H)


def _statistics(w: Work, model: Model, a: int, b: int, m: int, c: int, *, momentum: bool,
                binary_data: bool) -> None:
    """The update of an (a x b) weight block from [x; v'] (a columns) and [h; -h'] (b)."""
    if model.visible_bits:
        words = (max(m, c) + 63) // 64
        w.add("pack", (m + c) * (a + b))
        terms = 2 if binary_data else 1
        if not binary_data:
            w.gemm(a, b, m)
        w.add("bitstat", a * b * words * terms)
    else:
        w.gemm(a, b, m + c)
        if momentum:
            w.add("update", a * b)


def step_work(strategy: str, model: Model, m: int, K: int, rank: int = 0, *, momentum: bool = False,
              binary_data: bool = True, average: str = "gradients") -> Work:
    """The kernels worker ``rank`` runs in one step of m cases (contiguous partition;
    weight syncs excluded, see :func:`sync_work`)."""
    V, H, k = model.n_visible, model.n_hidden, model.cd_k
    vk = Partition.part_size(V, K, rank)
    hk = Partition.part_size(H, K, rank)
    c = m
    binary_data = binary_data and model.visible == "binary"
    vis_kind = "visible" if model.visible == "binary" else "visible-gaussian"
    w = Work()
    if strategy == "serial":
        w.gemm(m, H, V)
        _hidden(w, model, m, H, H, exchanged=False)
        for t in range(k):
            w.gemm(c, V, H)
            w.add(vis_kind, c * V)
            w.gemm(c, H, V)
            _hidden(w, model, c, H, H, exchanged=False)
        _statistics(w, model, V, H, m, c, momentum=momentum, binary_data=binary_data)
        return w
    if strategy == "unit-partitioned":
        w.add("copy", m * V + m * vk)                 # left[:m] = x, x_k
        w.gemm(m, hk, V)
        _hidden(w, model, m, hk, H)
        w.add("copy", m * H)                          # right[:m] = h
        for _ in range(k):
            w.gemm(c, vk, H)
            w.add(vis_kind, c * vk)
            w.gemm(c, hk, V)
            _hidden(w, model, c, hk, H)
        w.add("copy", c * H + (m + c) * (hk + vk))   # right[m:] = -h'; the k-th blocks
        _statistics(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
        _statistics(w, model, vk, H, m, c, momentum=momentum, binary_data=binary_data)
    elif strategy == "per-update-sync":
        w.add("copy", m * V + m * vk)
        w.gemm(m, hk, V)
        _hidden(w, model, m, hk, H)
        w.add("copy", m * hk)                         # right_k[:m] = h_k
        for t in range(1, k + 1):
            w.gemm(c, vk, H)
            w.add(vis_kind, c * vk)
            w.gemm(c, hk, V)
            _hidden(w, model, c, hk, H, exchanged=t < k or model.persistent)
        w.add("copy", c * hk + (m + c) * vk)
        _statistics(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
    elif strategy == "purple-only":
        w.add("copy", m * vk)                         # left_k[:m] = x_k
        w.gemm(m, H, vk)
        _hidden(w, model, m, hk, H)
        w.add("copy", m * H)
        for _ in range(k):
            w.gemm(c, vk, H)
            w.add(vis_kind, c * vk)
            w.gemm(c, H, vk)
            _hidden(w, model, c, hk, H)
        w.add("copy", c * H + (m + c) * hk)
        _statistics(w, model, vk, H, m, c, momentum=momentum, binary_data=binary_data)
    elif strategy == "green-only":
        w.add("copy", m * V)
        w.gemm(m, hk, V)
        _hidden(w, model, m, hk, H, exchanged=False)
        w.add("copy", m * hk if model.hidden_bits else 0)   # activities = states
        for _ in range(k):
            w.gemm(c, V, hk)
            w.add(vis_kind, c * vk)
            w.gemm(c, hk, V)
            _hidden(w, model, c, hk, H, exchanged=False)
            w.add("copy", c * hk if model.hidden_bits else 0)
        w.add("copy", (m + c) * vk)
        _statistics(w, model, V, hk, m, c, momentum=momentum, binary_data=binary_data)
    elif strategy == "parameter-averaging":
        n = Partition.part_size(m, K, rank)           # this worker's cases (and chains)
        w.add("copy", n * V)
        w.gemm(n, H, V)
        _hidden(w, model, n, H, H, exchanged=False)
        w.add("copy", n * H if model.hidden_bits else 0)
        for _ in range(k):
            w.gemm(n, V, H)
            w.add(vis_kind, n * V)
            w.gemm(n, H, V)
            _hidden(w, model, n, H, H, exchanged=False)
        w.add("copy", n * H if model.hidden_bits else 0)
        if average == "gradients":
            w.gemm(V, H, 2 * n)                       # the dense gradient, to be summed
            w.add("copy", 2 * n * (V + H))            # bias gradients
            w.add("update", V * H + V + H)            # apply the summed gradient (W, b, c)
        else:
            _statistics(w, model, V, H, n, n, momentum=momentum, binary_data=binary_data)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return w


def sync_work(strategy: str, model: Model, K: int, rank: int = 0, *, average: str = "gradients") -> Work:
    """The copies of one weight synchronisation on worker ``rank`` (its bytes are in
    :func:`parrbm.analysis.cost.sync_traffic`)."""
    V, H = model.n_visible, model.n_hidden
    vk = Partition.part_size(V, K, rank)
    hk = Partition.part_size(H, K, rank)
    w = Work()
    if K == 1:
        return w
    if strategy == "unit-partitioned":
        w.add("copy", vk * H + 2 * V * hk)            # P_k's column blocks out; drift, G_k's rows in
    elif strategy == "per-update-sync":
        w.add("copy", vk * hk)                        # its own block (the rest arrives in place)
    elif strategy == "parameter-averaging" and average == "weights":
        w.add("update", V * H)
    return w
