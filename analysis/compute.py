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

from parrbm.accounting import Model, Work, hidden_work, statistics_work  # noqa: F401 (named here too)


def step_work(
    strategy,
    model: Model,
    m: int,
    K: int,
    rank: int = 0,
    *,
    momentum: bool = False,
    binary_data: bool = True,
    average: str | None = None,
    options=None,
) -> Work:
    """The kernels worker ``rank`` runs in one step of m cases (contiguous partition;
    weight syncs excluded, see :func:`sync_work`), as the strategy declares them."""
    from parrbm.strategies.declared import _options
    from parrbm.strategies.registry import resolve

    return resolve(strategy).step_work(
        model,
        m,
        K,
        rank,
        _options(options, average=average),
        momentum=momentum,
        binary_data=binary_data and model.visible == "binary",
    )


def sync_work(strategy, model: Model, K: int, rank: int = 0, *, average: str | None = None, options=None) -> Work:
    """The copies of one weight synchronisation on worker ``rank`` (its bytes are in
    :func:`parrbm.analysis.cost.sync_traffic`)."""
    from parrbm.strategies.declared import _options
    from parrbm.strategies.registry import resolve

    if K == 1:
        return Work()
    return resolve(strategy).sync_work(model, K, rank, _options(options, average=average))
