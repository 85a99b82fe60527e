"""Closed-form communication of every strategy (docs/design.md sections 4, 5 and 7).

Bytes are payload bytes a worker delivers to other workers, exactly as the Comm layer
counts them: binary states travel bit-packed, each message padded to a whole byte (the
padding is counted here too). The measured bytes of a run equal these figures to the
byte; the tests hold the strategies to it.

Notation: V, H units; m cases per minibatch; K workers; pb bytes per float (4 or 8);
bv bits per visible value on the wire (1 for binary samples, 8 pb otherwise).
"""

from __future__ import annotations

# The vocabulary (Model, Traffic, the collectives' bytes) is parrbm.accounting's, and what
# each strategy declares is read through strategies.declared; both named here as well.
from parrbm.accounting import (  # noqa: F401
    MAX_CD_K,
    Model,
    Traffic,
    allgather_bits,
    allgather_floats,
    allreduce,
    chunk_calls,
    hidden_traffic,
    master_reduce,
    reduce_scatter,
    visible_traffic,
)

# a strategy that declares no closed form (a plug-in may leave it out) is traced
from parrbm.harness.traced import step_traffic, traffic_source  # noqa: F401
from parrbm.strategies.declared import _options, sync_traffic, syncs_per_step  # noqa: F401


def bytes_for_cases(strategy: str, model: Model, m: int, K: int, cases: int, **kw) -> int:
    """Training traffic (syncs excluded) for ``cases`` cases in minibatches of m (the last
    one shorter if m does not divide cases)."""
    full, rest = divmod(cases, m)
    total = full * step_traffic(strategy, model, m, K, batch_size=m, **kw).total
    if rest:
        total += step_traffic(strategy, model, rest, K, batch_size=m, **kw).total
    return total


def sync_count(strategy: str, steps: int, **kw) -> int:
    """The weight syncs (or averaging rounds) in ``steps`` minibatches: one per step for
    a strategy that syncs every step, one per period otherwise (``sync_every``,
    ``average_every``), none for one that never syncs."""
    per = syncs_per_step(strategy, **kw)
    if per <= 0:
        return 0
    if per >= 1:
        return int(round(per * steps))
    return steps // int(round(1 / per))


def traffic_for_cases(
    strategy: str,
    model: Model,
    m: int,
    K: int,
    cases: int,
    *,
    sync_every: int = 1,
    reduce: str = "allreduce",
    average: str = "gradients",
    average_every: int = 1,
) -> dict:
    """Everything the workers send for ``cases`` cases in minibatches of m: the steps'
    traffic (``step_bytes``, the paper's Table 4.1 figure) and the weight syncs that fall
    in them (``sync_bytes``); ``bytes`` is their sum. A sync every step is as much a
    step's traffic as its exchange; a table that left it apart would make per-update
    sync look the cheapest strategy."""
    steps = -(-cases // m)
    kw = dict(reduce=reduce, average=average)
    syncs = sync_count(strategy, steps, sync_every=sync_every, average=average, average_every=average_every)
    step_bytes = bytes_for_cases(strategy, model, m, K, cases, **kw)
    sync_bytes = syncs * sync_traffic(strategy, model, K, **kw).total
    return {
        "steps": steps,
        "syncs": syncs,
        "step_bytes": step_bytes,
        "sync_bytes": sync_bytes,
        "bytes": step_bytes + sync_bytes,
    }


def table_4_1(
    n_visible: int = 8000, n_hidden: int = 20000, cases: int = 8000, workers=(1, 2, 4, 8), batch: int = 8000
) -> list[dict]:
    """The paper's Table 4.1: unit-partitioned bytes per ``cases`` cases, binary,
    Gaussian float32 and Gaussian float64 visible units."""
    rows = []
    for visible, precision in (("binary", "float32"), ("gaussian", "float32"), ("gaussian", "float64")):
        model = Model(n_visible, n_hidden, visible=visible, precision=precision)
        for K in workers:
            rows.append(
                {
                    "visible_type": visible,
                    "precision": precision,
                    "workers": K,
                    "bytes": bytes_for_cases("unit-partitioned", model, batch, K, cases),
                }
            )
    return rows


# ---- crossovers -----------------------------------------------------------------------------------


def crossovers(model: Model, m: int, K: int, *, sync_every: int = 1) -> list[dict]:
    """When one strategy sends fewer bytes than another (per minibatch, even slices).

    Each entry: the inequality in words, its two sides for these figures, and whether it
    holds. With s = sync_every of the unit-partitioned algorithm:

    * per-update-sync < unit-partitioned  iff  (K-1) m H / 8 > S (1 - 1/s), S the bytes of
      one weight sync, about V H pb (K-1) / K: roughly m K >= 8 pb V (1 - 1/s).
    * the paper's printed condition m h K + 4 m v K >= 4 v h (single precision) is, with the
      lost /8 restored on its first term, this accounting for a variant that also skips the
      exchange of v': (K-1)(m H / 8 + m V pb) >= S, i.e. m H K / 8 + 4 m V K >= 4 V H.
    * purple-only < unit-partitioned  iff  2 H pb < V bv / 8 (Gaussian: H < V / 2).
    * green-only < unit-partitioned  iff  V pb < 2 H / 8 (i.e. H > 4 pb V).
    """
    V, H, pb, bv = model.n_visible, model.n_hidden, model.pb, model.bv
    sync = sync_traffic("per-update-sync", model, K).total
    up = step_traffic("unit-partitioned", model, m, K).total
    up_sync = sync_traffic("unit-partitioned", model, K).total * syncs_per_step(
        "unit-partitioned", sync_every=sync_every
    )
    pus = step_traffic("per-update-sync", model, m, K).total + sync
    saved_hidden = (K - 1) * m * H / 8
    out = [
        {
            "name": "per-update-sync sends less than unit-partitioned",
            "inequality": "(K-1) m H/8 > S (1 - 1/s)",
            "lhs": saved_hidden,
            "rhs": sync * (1 - (1 / sync_every if sync_every else 0)),
            "holds": pus < up + up_sync,
        },
        {
            "name": "paper (p. 43): variant that also skips v' sends less",
            "inequality": "m H K/8 + pb m V K >= pb V H  (printed: m h K + 4 m v K >= 4 v h)",
            "lhs": m * H * K / 8 + pb * m * V * K,
            "rhs": pb * V * H,
            "holds": m * H * K / 8 + pb * m * V * K >= pb * V * H,
        },
        {
            "name": "purple-only sends less than unit-partitioned",
            "inequality": "2 H pb < V bv/8",
            "lhs": 2 * H * pb,
            "rhs": V * bv / 8,
            "holds": step_traffic("purple-only", model, m, K).total < up,
        },
        {
            "name": "green-only sends less than unit-partitioned",
            "inequality": "V pb < 2 H/8",
            "lhs": V * pb,
            "rhs": 2 * H / 8,
            "holds": step_traffic("green-only", model, m, K).total < up,
        },
    ]
    return out
