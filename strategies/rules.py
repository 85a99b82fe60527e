"""What each strategy can split: one rule set for the trainer, the comparison configs and
the analysis (``cost``, ``predict``, ``advise``), so nothing is priced that cannot be
trained. Each strategy declares its own rule (:meth:`Worker.split_refusal`); the limits
every strategy shares are here."""

from __future__ import annotations

import numbers

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
    why = split_refusal(strategy, n_visible=n_visible, n_hidden=n_hidden, batch_size=batch_size,
                        workers=workers)
    if why is not None:
        raise ValueError(why)
