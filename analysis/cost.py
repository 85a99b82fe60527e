"""Closed-form communication of every strategy (docs/design.md sections 4, 5 and 7).

Bytes are payload bytes a worker delivers to other workers, exactly as the Comm layer
counts them: binary states travel bit-packed, each message padded to a whole byte (the
padding is counted here too). The measured bytes of a run equal these figures to the
byte; the tests hold the strategies to it.

Notation: V, H units; m cases per minibatch; K workers; pb bytes per float (4 or 8);
bv bits per visible value on the wire (1 for binary samples, 8 pb otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parrbm.partition import Partition



@dataclass(frozen=True)
class Model:
    """What the traffic depends on."""

    n_visible: int
    n_hidden: int
    visible: str = "binary"          # "binary" | "gaussian"
    precision: str = "float32"       # "float32" | "float64"
    statistics: str = "samples"      # "samples" | "probabilities"
    cd_k: int = 1
    persistent: bool = False

    def __post_init__(self) -> None:
        from parrbm.strategies.rules import MAX_CD_K

        if isinstance(self.cd_k, bool) or not isinstance(self.cd_k, int) or not 1 <= self.cd_k <= MAX_CD_K:
            raise ValueError(f"cd_k must be an integer from 1 to {MAX_CD_K}, got {self.cd_k!r:.40}")

    @property
    def pb(self) -> int:
        return 8 if self.precision == "float64" else 4

    @property
    def hidden_bits(self) -> bool:
        return self.statistics == "samples"

    @property
    def visible_bits(self) -> bool:
        return self.visible == "binary" and self.statistics == "samples"

    @property
    def bv(self) -> int:
        return 1 if self.visible_bits else 8 * self.pb

    @property
    def visible_kind(self) -> str:
        """The compute account's name for sampling the visible units."""
        return "visible" if self.visible == "binary" else "visible-gaussian"

    def block(self, K: int, rank: int) -> tuple[int, int]:
        """(|V_rank|, |H_rank|): worker ``rank``'s visible and hidden slice sizes."""
        return Partition.part_size(self.n_visible, K, rank), Partition.part_size(self.n_hidden, K, rank)


@dataclass
class Traffic:
    """Bytes sent by each worker, by phase."""

    K: int
    phases: dict[str, list[int]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)   # collectives per phase

    def add(self, phase: str, per_worker: list[int], calls: int = 1) -> None:
        acc = self.phases.setdefault(phase, [0] * self.K)
        for k, b in enumerate(per_worker):
            acc[k] += int(b)
        self.calls[phase] = self.calls.get(phase, 0) + calls

    @property
    def total(self) -> int:
        return sum(sum(v) for v in self.phases.values())

    @property
    def per_worker(self) -> list[int]:
        return [sum(v[k] for v in self.phases.values()) for k in range(self.K)]

    @property
    def busiest(self) -> int:
        return max(self.per_worker, default=0)

    def by_phase(self) -> dict[str, int]:
        return {p: sum(v) for p, v in self.phases.items()}


# ---- the collectives, per worker --------------------------------------------------------------

def allgather_bits(rows: int, sizes: list[int]) -> list[int]:
    K = len(sizes)
    return [(K - 1) * ((rows * s + 7) // 8) for s in sizes]


def allgather_floats(rows: int, sizes: list[int], pb: int) -> list[int]:
    K = len(sizes)
    return [(K - 1) * rows * s * pb for s in sizes]


def reduce_scatter(rows: int, sizes: list[int], pb: int) -> list[int]:
    total = sum(sizes)
    return [rows * (total - s) * pb for s in sizes]


def allreduce(n: int, K: int, pb: int) -> list[int]:
    """Reduce-scatter + allgather over K contiguous chunks of n elements."""
    chunks = Partition.cuts_sizes(n, K)
    return [(n - c + (K - 1) * c) * pb for c in chunks]


def master_reduce(n: int, K: int, pb: int) -> list[int]:
    """Gather to rank 0 (each other worker sends n), then broadcast ((K - 1) n from 0)."""
    return [(K - 1) * n * pb if k == 0 else n * pb for k in range(K)]


def chunk_calls(rows: int, chunks: int) -> int:
    """Collectives a phase of ``rows`` cases takes in ``overlap_chunks`` chunks, cut at
    multiples of 8 rows (the finest cut of strategies.base.exact_chunks: the BLAS may make
    it coarser). The bytes are the whole block's at any cut of that kind."""
    return len(Partition.row_chunks(rows, chunks))


def hidden_traffic(model: Model, rows: int, hid: list[int]) -> list[int]:
    """Allgather of hidden activities: 1-bit states, or floats with probability statistics."""
    return allgather_bits(rows, hid) if model.hidden_bits else allgather_floats(rows, hid, model.pb)


def visible_traffic(model: Model, rows: int, vis: list[int]) -> list[int]:
    """Allgather of negative visible data: bits for binary samples, floats otherwise."""
    return allgather_bits(rows, vis) if model.visible_bits else allgather_floats(rows, vis, model.pb)


# ---- per strategy: what each strategy declares (strategies/*.py), through the registry -------------

def _options(options=None, **overrides):
    from parrbm.strategies.base import StrategyOptions

    base = options if options is not None else StrategyOptions()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base if not given else StrategyOptions(**{**base.__dict__, **given})


def step_traffic(strategy, model: Model, m: int, K: int, *, batch_size: int | None = None,
                 reduce: str | None = None, average: str | None = None, options=None) -> Traffic:
    """Bytes of one minibatch step of m cases (weight syncs excluded), as the strategy
    declares them. ``batch_size``: the number of persistent chains (PCD); defaults to m.
    ``options``: a StrategyOptions (``reduce`` and ``average`` override its fields)."""
    from parrbm.strategies.registry import resolve

    cls = resolve(strategy)
    if K == 1:
        return Traffic(K)
    chains = (batch_size or m) if model.persistent else m
    return cls.step_traffic(model, m, K, _options(options, reduce=reduce, average=average), chains=chains)


def sync_traffic(strategy, model: Model, K: int, *, reduce: str | None = None, average: str | None = None,
                 options=None) -> Traffic:
    """Bytes of one weight synchronisation (for shared weights: the logical bytes; none
    move). Strategies without a sync give an empty Traffic."""
    from parrbm.strategies.registry import resolve

    cls = resolve(strategy)
    if K == 1:
        return Traffic(K)
    return cls.sync_traffic(model, K, _options(options, reduce=reduce, average=average))


def syncs_per_step(strategy, *, sync_every: int | None = None, average: str | None = None,
                   average_every: int | None = None, options=None) -> float:
    from parrbm.strategies.registry import resolve

    return resolve(strategy).syncs_per_step(_options(options, sync_every=sync_every, average=average,
                                                     average_every=average_every))


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


def traffic_for_cases(strategy: str, model: Model, m: int, K: int, cases: int, *, sync_every: int = 1,
                      reduce: str = "allreduce", average: str = "gradients", average_every: int = 1) -> dict:
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
    return {"steps": steps, "syncs": syncs, "step_bytes": step_bytes, "sync_bytes": sync_bytes,
            "bytes": step_bytes + sync_bytes}


def table_4_1(n_visible: int = 8000, n_hidden: int = 20000, cases: int = 8000,
              workers=(1, 2, 4, 8), batch: int = 8000) -> list[dict]:
    """The paper's Table 4.1: unit-partitioned bytes per ``cases`` cases, binary,
    Gaussian float32 and Gaussian float64 visible units."""
    rows = []
    for visible, precision in (("binary", "float32"), ("gaussian", "float32"), ("gaussian", "float64")):
        model = Model(n_visible, n_hidden, visible=visible, precision=precision)
        for K in workers:
            rows.append({"visible_type": visible, "precision": precision, "workers": K,
                         "bytes": bytes_for_cases("unit-partitioned", model, batch, K, cases)})
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
    up_sync = sync_traffic("unit-partitioned", model, K).total * syncs_per_step("unit-partitioned", sync_every=sync_every)
    pus = step_traffic("per-update-sync", model, m, K).total + sync
    saved_hidden = (K - 1) * m * H / 8
    out = [
        {"name": "per-update-sync sends less than unit-partitioned",
         "inequality": "(K-1) m H/8 > S (1 - 1/s)",
         "lhs": saved_hidden, "rhs": sync * (1 - (1 / sync_every if sync_every else 0)),
         "holds": pus < up + up_sync},
        {"name": "paper (p. 43): variant that also skips v' sends less",
         "inequality": "m H K/8 + pb m V K >= pb V H  (printed: m h K + 4 m v K >= 4 v h)",
         "lhs": m * H * K / 8 + pb * m * V * K, "rhs": pb * V * H,
         "holds": m * H * K / 8 + pb * m * V * K >= pb * V * H},
        {"name": "purple-only sends less than unit-partitioned",
         "inequality": "2 H pb < V bv/8",
         "lhs": 2 * H * pb, "rhs": V * bv / 8,
         "holds": step_traffic("purple-only", model, m, K).total < up},
        {"name": "green-only sends less than unit-partitioned",
         "inequality": "V pb < 2 H/8",
         "lhs": V * pb, "rhs": 2 * H / 8,
         "holds": step_traffic("green-only", model, m, K).total < up},
    ]
    return out
