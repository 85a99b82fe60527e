"""A step's traffic, declared or traced.

The built-ins declare the bytes of a step in closed form (the paper's formulas), and the
measured bytes are held to them: the same hand does not write both sides. A plug-in may
leave the closed form out; then its traffic is traced from a dry run of its step: K
worker threads take one step of m cases of random data over counting Comms, and what
each sent, phase by phase, is its traffic (the sync phases left out, as in a step's
record). Records of such a strategy say "traced" instead of declared.

A declaration counts only where it is written for the step it describes: a plug-in that
overrides ``step`` but inherits ``step_traffic`` from a built-in is traced (the built-in's
closed form describes the built-in's step).
"""

from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np

from parrbm.accounting import Model, Traffic
from parrbm.strategies.base import Worker
from parrbm.strategies.declared import _options
from parrbm.strategies.declared import step_traffic as declared_step_traffic
from parrbm.strategies.registry import reference, resolve

_cache: dict[tuple, Traffic] = {}
_lock = threading.Lock()


def declares_traffic(strategy) -> bool:
    """Whether the strategy's closed form describes its own step: the class that writes
    ``step_traffic`` is the one that writes ``step``, or one below it."""
    cls = resolve(strategy)
    if not issubclass(cls, Worker):
        return True  # the serial trainer: nothing moves
    step_owner = next((k for k in cls.__mro__ if "step" in k.__dict__), Worker)
    traffic_owner = next((k for k in cls.__mro__ if "step_traffic" in k.__dict__), Worker)
    return traffic_owner is not Worker and issubclass(traffic_owner, step_owner)


def traffic_source(strategy) -> str:
    """ "declared" or "traced": where the bytes a record is held to come from."""
    return "declared" if declares_traffic(strategy) else "traced"


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
    """:func:`parrbm.strategies.declared.step_traffic` where the strategy declares it,
    else traced (:func:`trace_step`)."""
    if K == 1 or declares_traffic(strategy):
        return declared_step_traffic(
            strategy, model, m, K, batch_size=batch_size, reduce=reduce, average=average, options=options
        )
    chains = (batch_size or m) if model.persistent else m
    return trace_step(strategy, model, m, K, _options(options, reduce=reduce, average=average), chains=chains)


def trace_step(strategy, model: Model, m: int, K: int, options, *, chains: int) -> Traffic:
    """The bytes each of K workers sends in one step of m cases (``chains`` negative
    chains), phase by phase, measured on threads: the strategy's own step over counting
    Comms, on random data of the model's kind. Cached per strategy, model, m, K and
    options."""
    key = (reference(strategy), model, m, K, tuple(sorted(asdict(options).items())), chains)
    with _lock:
        if key in _cache:
            return _cache[key]
    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.threads import run_threads

    cls = resolve(strategy)
    spec = CDSpec(
        n_visible=model.n_visible,
        n_hidden=model.n_hidden,
        batch_size=chains,
        visible=model.visible,
        statistics=model.statistics,
        cd_k=model.cd_k,
        persistent=model.persistent,
        dtype=model.precision,
        seed=0,
    )
    rng = np.random.default_rng(0)
    X = rng.random((m, model.n_visible))
    X = (X < 0.5).astype(spec.np_dtype) if model.visible == "binary" else X.astype(spec.np_dtype)
    state = ModelState.initial(spec)

    def dry_run(comm):
        worker = cls(spec, state, comm.rank, K, options)
        worker.comm = comm
        worker.checked_step(X, 0)
        comm.wait_all()
        sync = set(worker.sync_phases)
        comm.close()
        return {p: (s.bytes_sent, s.calls) for p, s in comm.stats.items() if p not in sync}

    sent = run_threads(K, dry_run)
    traffic = Traffic(K)
    for phase in dict.fromkeys(p for per in sent for p in per):
        traffic.add(
            phase, [per.get(phase, (0, 0))[0] for per in sent], calls=max(per.get(phase, (0, 0))[1] for per in sent)
        )
    with _lock:
        _cache[key] = traffic
    return traffic
