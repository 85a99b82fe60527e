"""What a strategy declares, in closed form: the vocabulary of its traffic (bytes per
phase and worker, as :class:`parrbm.harness.comm.Comm` counts them) and of its compute
account (the kernels of a step and their shapes, for the time model).

The lowest layer of the accounting: the strategies write their declarations with it, and
the analysis (cost and time models) reads them. Bytes are payload bytes a worker delivers
to other workers: binary states travel bit-packed, each message padded to a whole byte
(the padding is counted here too).

Notation: V, H units; m cases per minibatch; K workers; pb bytes per float (4 or 8);
bv bits per visible value on the wire (1 for binary samples, 8 pb otherwise).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from parrbm.partition import Partition

#: Gibbs steps of CD-k that parrbm trains or prices (the literature's k stays below 1000;
#: the closed forms list each step, so a bound keeps pricing instant)
MAX_CD_K = 10000


@dataclass(frozen=True)
class Model:
    """What the traffic depends on."""

    n_visible: int
    n_hidden: int
    visible: str = "binary"  # "binary" | "gaussian"
    precision: str = "float32"  # "float32" | "float64"
    statistics: str = "samples"  # "samples" | "probabilities"
    cd_k: int = 1
    persistent: bool = False

    def __post_init__(self) -> None:
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
    calls: dict[str, int] = field(default_factory=dict)  # collectives per phase

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


# ---- the compute account ---------------------------------------------------------------------


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

    def absorb(self, other: "Work") -> None:
        """Add ``other``'s kernels to these."""
        self.gemms.extend(other.gemms)
        self.counts.update(other.counts)
        self.bitstat_words.update(other.bitstat_words)

    def chunked(self, chunks: int) -> "Work":
        """The same kernels with every product cut into ``chunks`` along its first
        dimension (a step's cases, or a weight block's rows): what overlapping costs."""
        w = Work(counts=Counter(self.counts), bitstat_words=Counter(self.bitstat_words))
        for M, N, depth in self.gemms:
            for size in Partition.cuts_sizes(M, min(chunks, M)):
                w.gemm(size, N, depth)
        return w


def hidden_work(w: Work, model: Model, rows: int, hk: int, H: int, exchanged: bool = True) -> None:
    """Sample this worker's hidden block; with probability statistics every worker then
    draws the states of all H units from the gathered probabilities."""
    w.add("sample", rows * hk)
    if exchanged and not model.hidden_bits:
        w.add("bernoulli", rows * H)


def statistics_work(
    w: Work, model: Model, a: int, b: int, m: int, c: int, *, momentum: bool, binary_data: bool
) -> None:
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
