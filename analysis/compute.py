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
                (``Work.bitstat_words`` splits them by words: the kernel's cost per
                word depends on how many there are)
    update      weights touched by an elementwise update (increments, a summed gradient)
    copy        values moved between buffers by the strategy itself

and ``Work.gemms``: (M, N, depth) of every matrix product, 2 M N depth flops each.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from parrbm.analysis.cost import Model


@dataclass
class Work:
    gemms: list[tuple[int, int, int]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    #: 64-case words per term -> the "bitstat" count of updates with that many words
    bitstat_words: Counter = field(default_factory=Counter)

    def gemm(self, M: int, N: int, depth: int) -> None:
        if M and N and depth:
            self.gemms.append((int(M), int(N), int(depth)))

    def add(self, kind: str, n: int) -> None:
        if n:
            self.counts[kind] += int(n)

    @property
    def flops(self) -> int:
        return sum(2 * M * N * d for M, N, d in self.gemms)


def hidden_work(w: Work, model: Model, rows: int, hk: int, H: int, exchanged: bool = True) -> None:
    """Sample this worker's hidden block; with probability statistics every worker then
    draws the states of all H units from the gathered probabilities."""
    w.add("sample", rows * hk)
    if exchanged and not model.hidden_bits:
        w.add("bernoulli", rows * H)


def statistics_work(w: Work, model: Model, a: int, b: int, m: int, c: int, *, momentum: bool,
                binary_data: bool) -> None:
    """The update of an (a x b) weight block from [x; v'] (a columns) and [h; -h'] (b)."""
    if model.visible_bits:
        words = (max(m, c) + 63) // 64
        w.add("pack", (m + c) * (a + b))
        terms = 2 if binary_data else 1
        if not binary_data:
            w.gemm(a, b, m)
        w.add("bitstat", a * b * words * terms)
        if a * b:
            w.bitstat_words[words] += a * b * words * terms
    else:
        w.gemm(a, b, m + c)
        if momentum:
            w.add("update", a * b)


def step_work(strategy, model: Model, m: int, K: int, rank: int = 0, *, momentum: bool = False,
              binary_data: bool = True, average: str | None = None, options=None) -> Work:
    """The kernels worker ``rank`` runs in one step of m cases (contiguous partition;
    weight syncs excluded, see :func:`sync_work`), as the strategy declares them."""
    from parrbm.analysis.cost import _options
    from parrbm.strategies.registry import resolve

    return resolve(strategy).step_work(model, m, K, rank, _options(options, average=average), momentum=momentum,
                                       binary_data=binary_data and model.visible == "binary")


def sync_work(strategy, model: Model, K: int, rank: int = 0, *, average: str | None = None, options=None) -> Work:
    """The copies of one weight synchronisation on worker ``rank`` (its bytes are in
    :func:`parrbm.analysis.cost.sync_traffic`)."""
    from parrbm.analysis.cost import _options
    from parrbm.strategies.registry import resolve

    if K == 1:
        return Work()
    return resolve(strategy).sync_work(model, K, rank, _options(options, average=average))
