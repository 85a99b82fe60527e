"""What each strategy can split: one rule set for the trainer and for the analysis
(``cost``, ``predict``, ``advise``), so nothing is priced that cannot be trained."""

from __future__ import annotations

import numbers

#: every strategy, serial first
NAMES = ("serial", "unit-partitioned", "per-update-sync", "purple-only", "green-only",
         "parameter-averaging")
#: more workers than any machine or cluster this toolkit drives (and than a closed-form
#: account should be asked to list worker by worker)
MAX_WORKERS = 65536


def split_refusal(strategy: str, *, n_visible: int, n_hidden: int, batch_size: int,
                  workers: int) -> str | None:
    """Why ``strategy`` cannot run K = ``workers`` workers on this model and minibatch,
    or None if it can."""
    if strategy not in NAMES:
        return f"unknown strategy {strategy!r}; known: {', '.join(NAMES)}"
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        return f"workers must be an integer >= 1, got {workers!r}"
    if workers > MAX_WORKERS:
        return f"workers={workers} is more than parrbm runs or prices (at most {MAX_WORKERS})"
    if strategy == "serial":
        return None if workers == 1 else \
            f"strategy 'serial' runs on one worker, got workers={workers} (choose a parallel strategy)"
    if strategy == "parameter-averaging":
        if workers > batch_size:
            return (f"parameter-averaging splits each minibatch over the workers: workers={workers} is "
                    f"larger than batch_size={batch_size}")
        return None
    for n, what in ((n_visible, "visible"), (n_hidden, "hidden")):
        if workers > n:
            return (f"strategy {strategy!r} splits the {what} units over the workers: workers={workers} "
                    f"is larger than the {n} {what} units")
    return None


def check_split(strategy: str, *, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> None:
    """:func:`split_refusal` as a ValueError."""
    why = split_refusal(strategy, n_visible=n_visible, n_hidden=n_hidden, batch_size=batch_size,
                        workers=workers)
    if why is not None:
        raise ValueError(why)


def largest_workers(strategy: str, *, n_visible: int, n_hidden: int, batch_size: int) -> int:
    """The largest K the strategy can run (the rules above in closed form)."""
    if strategy == "serial":
        return 1
    if strategy == "parameter-averaging":
        return batch_size
    return min(n_visible, n_hidden)
