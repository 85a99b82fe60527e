"""What each strategy can split: one rule set for the trainer, the comparison configs and
the analysis (``cost``, ``predict``, ``advise``), so nothing is priced that cannot be
trained. Each strategy declares its own rule (:meth:`Worker.split_refusal`); the limits
every strategy shares are here."""

from __future__ import annotations

import numbers

# Gibbs steps of CD-k that parrbm trains or prices (the literature's k stays below 1000;
# the closed forms list each step, so a bound keeps pricing instant): the accounting's
from parrbm.accounting import MAX_CD_K  # noqa: F401

#: more workers than any machine or cluster this toolkit drives (and than a closed-form
#: account should be asked to list worker by worker)
MAX_WORKERS = 65536


def split_refusal(strategy, *, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> str | None:
    """Why ``strategy`` (a name, ``module:Class`` or a class) cannot run K = ``workers``
    workers on this model and minibatch, or None if it can: the strategy's own rule
    (:meth:`Worker.split_refusal`) after the ones every strategy shares."""
    from parrbm.strategies.registry import StrategyError, resolve

    try:
        cls = resolve(strategy)
    except StrategyError as exc:
        return str(exc)
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        return f"workers must be an integer >= 1, got {workers!r}"
    if workers > MAX_WORKERS:
        return f"workers={workers} is more than parrbm runs or prices (at most {MAX_WORKERS})"
    return cls.split_refusal(n_visible, n_hidden, batch_size, workers)


def check_split(strategy: str, *, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> None:
    """:func:`split_refusal` as a ValueError."""
    why = split_refusal(strategy, n_visible=n_visible, n_hidden=n_hidden, batch_size=batch_size, workers=workers)
    if why is not None:
        raise ValueError(why)


def unused_options(options, strategies) -> list[str]:
    """The options set away from their defaults that none of ``strategies`` (classes, names
    or references) reads, each as "'name' (read by: ...)": one rule for the configs and
    the estimator, so that an option meant for another strategy never passes silently."""
    import dataclasses

    from parrbm.strategies.base import StrategyOptions
    from parrbm.strategies.registry import BUILTIN, resolve

    classes = [resolve(s) for s in strategies]
    used = {o for cls in classes for o in getattr(cls, "options_used", ())}
    out = []
    for f in dataclasses.fields(StrategyOptions):
        if f.name in used or getattr(options, f.name) == f.default:
            continue
        owners = [n for n in BUILTIN if f.name in getattr(resolve(n), "options_used", ())]
        out.append(f"{f.name!r} (read by: {', '.join(owners) or 'no built-in strategy'})")
    return out
