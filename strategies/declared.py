"""What a strategy declares, read through the registry: the bytes of a step and of a
weight sync, and the syncs per step, for any model, m, K and options (K = 1 moves
nothing)."""

from __future__ import annotations

from parrbm.accounting import Model, Traffic
from parrbm.strategies.base import StrategyOptions
from parrbm.strategies.registry import resolve


def _options(options=None, **overrides) -> StrategyOptions:
    base = options if options is not None else StrategyOptions()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base if not given else StrategyOptions(**{**base.__dict__, **given})


def step_traffic(
    strategy,
    model: Model,
    m: int,
    K: int,
    *,
    batch_size: int | None = None,
    reduce: str | None = None,
    average: str | None = None,
    options=None,
) -> Traffic:
    """Bytes of one minibatch step of m cases (weight syncs excluded), as the strategy
    declares them. ``batch_size``: the number of persistent chains (PCD); defaults to m.
    ``options``: a StrategyOptions (``reduce`` and ``average`` override its fields)."""
    cls = resolve(strategy)
    if K == 1:
        return Traffic(K)
    chains = (batch_size or m) if model.persistent else m
    return cls.step_traffic(model, m, K, _options(options, reduce=reduce, average=average), chains=chains)


def sync_traffic(
    strategy, model: Model, K: int, *, reduce: str | None = None, average: str | None = None, options=None
) -> Traffic:
    """Bytes of one weight synchronisation (for shared weights: the logical bytes; none
    move). Strategies without a sync give an empty Traffic."""
    cls = resolve(strategy)
    if K == 1:
        return Traffic(K)
    return cls.sync_traffic(model, K, _options(options, reduce=reduce, average=average))


def syncs_per_step(
    strategy,
    *,
    sync_every: int | None = None,
    average: str | None = None,
    average_every: int | None = None,
    options=None,
) -> float:
    return resolve(strategy).syncs_per_step(
        _options(options, sync_every=sync_every, average=average, average_every=average_every)
    )
