"""What every parallel strategy shares: the model split, the random streams, the CD
kernels applied to blocks, and the statistics update. Strategy modules read as their
algorithm in docs/design.md section 5 on top of these; none of this knows the transport."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from parrbm import _core
from parrbm.accounting import Traffic, Work
from parrbm.config import CDSpec, ModelState
from parrbm.partition import Partition
from parrbm.strategies import phases as P

PHASE_POSITIVE = 0


#: row alignments tried for the chunk boundaries, finest first (see :func:`exact_chunks`):
#: multiples of 8, so that the bytes of bit-packed chunks are the whole block's
ALIGNMENTS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
_plans: dict = {}
_plans_lock = threading.Lock()


def exact_chunks(rows: int, chunks: int, dtype, gemms) -> list[slice]:
    """The row ranges a step of ``rows`` cases takes in ``chunks`` chunks, such that every
    product of the step computed chunk by chunk has the bits of the whole block's.

    A BLAS computes a row of a product with the kernel of the tile the row falls in, and
    edge tiles may round differently (measured here: OpenBLAS's SkylakeX dgemm, where the
    rows of a partial tile differ in the columns of a partial one). Chunk boundaries at a
    multiple of the kernel's tile keep each row in the tile it has in the whole product.
    The tile is not known, so the finest alignment (a multiple of 8 rows: the chunks'
    bit-packed messages then add up to the whole block's bytes) whose chunks reproduce each product of
    ``gemms`` ((depth, columns, transposed B) for every worker's shapes, so that every
    worker finds the same plan) on random operands is taken; one chunk (lockstep) if none
    does. Found once per process for each shape set."""
    # a BLAS on several threads splits a product among them: the tiles may fall elsewhere
    key = (rows, chunks, np.dtype(dtype).str, tuple(sorted(set(gemms))), _core.get_blas_threads())
    with _plans_lock:
        plan = _plans.get(key)
        if plan is None:
            plan = [slice(0, rows)]
            rng = np.random.default_rng(0x0C4E)
            for align in ALIGNMENTS:
                candidate = Partition.row_chunks(rows, chunks, align)
                if len(candidate) < 2:
                    break
                if all(
                    _rounds_alike(rows, k, n, tb, candidate, np.dtype(dtype), rng) for k, n, tb in sorted(set(gemms))
                ):
                    plan = candidate
                    break
            _plans[key] = plan
        return plan


def exact_column_blocks(rows: int, depths: list[int], cuts: list[slice], dtype) -> bool:
    """Whether a product ``a @ b.T`` of ``rows`` rows, computed one block of output
    columns at a time (``cuts``: the blocks, in the order a step computes them), has the
    bits of the whole product, for every depth in ``depths`` (every worker's: all find the
    same answer), on random operands. A BLAS's edge tiles may round otherwise (measured
    here: OpenBLAS's dgemm differs at some float64 shapes, its sgemm at none tried)."""
    key = (
        "columns",
        rows,
        tuple(sorted(set(depths))),
        tuple((c.start, c.stop) for c in cuts),
        np.dtype(dtype).str,
        _core.get_blas_threads(),
    )
    with _plans_lock:
        if key not in _plans:
            rng = np.random.default_rng(0x0C4F)
            n = max(c.stop for c in cuts)
            ok = True
            for depth in sorted(set(depths)):
                a = rng.standard_normal((rows, depth)).astype(dtype)
                b = rng.standard_normal((n, depth)).astype(dtype)
                whole, parts = np.empty((rows, n), dtype), np.empty((rows, n), dtype)
                _core.gemm(a, b, whole, trans_b=True)
                for c in cuts:
                    _core.gemm(a, b[c], parts[:, c], trans_b=True)
                ok = ok and bool(np.array_equal(whole, parts))
            _plans[key] = ok
        return _plans[key]


def exact_row_blocks(depth: int, n_rows: int, plans: list[tuple[int, list[slice]]], dtype) -> bool:
    """Whether a statistics product ``C <- alpha a.T @ b + beta C`` (a: depth x n_rows,
    b: depth x cols) computed one block of C's rows at a time (``cuts``, in the order a
    step computes them) has the bits of the whole product, for every (cols, cuts) of
    ``plans`` (every worker's: all find the same answer), on random operands, with and
    without a beta term. Measured here: OpenBLAS's sgemm gives the whole product's bits at
    every cut tried, its dgemm differs below about a thousand rows (it takes another
    kernel for small products)."""
    key = (
        "rows",
        depth,
        n_rows,
        tuple((cols, tuple((c.start, c.stop) for c in cuts)) for cols, cuts in plans),
        np.dtype(dtype).str,
        _core.get_blas_threads(),
    )
    with _plans_lock:
        if key not in _plans:
            rng = np.random.default_rng(0x0C50)
            ok = True
            for cols, cuts in sorted(set((cols, tuple((c.start, c.stop) for c in cuts)) for cols, cuts in plans)):
                a = rng.standard_normal((depth, n_rows)).astype(dtype)
                b = rng.standard_normal((depth, cols)).astype(dtype)
                c0 = rng.standard_normal((n_rows, cols)).astype(dtype)
                for alpha, beta in ((1.0, 0.0), (0.37, 0.0), (0.37, 0.9)):
                    whole, parts = c0.copy(), c0.copy()
                    _core.gemm(a, b, whole, alpha=alpha, beta=beta, trans_a=True)
                    for start, stop in cuts:
                        _core.gemm(a[:, start:stop], b, parts[start:stop], alpha=alpha, beta=beta, trans_a=True)
                    ok = ok and bool(np.array_equal(whole, parts))
            _plans[key] = ok
        return _plans[key]


def chunk_plan(cls, spec: CDSpec, options: StrategyOptions, K: int, rows: int) -> list[slice]:
    """The chunks of a step of ``rows`` cases of strategy ``cls`` (one in lockstep): what
    its workers cut, found here without building one."""
    if options.overlap_chunks == 1 or rows <= 1:
        return [slice(0, rows)]
    vis = Partition.make(options.partition, spec.n_visible, K, spec.seed)
    hid = Partition.make(options.partition, spec.n_hidden, K, spec.seed + 1)
    return exact_chunks(rows, options.overlap_chunks, spec.np_dtype, cls.chunked_gemms(spec, vis, hid))


def _rounds_alike(rows: int, k: int, n: int, trans_b: bool, plan: list[slice], dtype, rng) -> bool:
    a = rng.standard_normal((rows, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((rows, n)).astype(dtype)
    for beta in (0.0, 1.0):  # a product of its own, and one added to a sum (product_own_first)
        whole, parts = c.copy(), c.copy()
        _core.gemm(a, b, whole, beta=beta, trans_b=trans_b)
        for r in plan:
            _core.gemm(a[r], b, parts[r], beta=beta, trans_b=trans_b)
        if not np.array_equal(whole, parts):
            return False
    return True


def own(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy this worker owns (never a view of the caller's model)."""
    return np.array(a, order="C", copy=True)


def phase_visible(t: int) -> int:
    return 2 * t - 1


def phase_hidden(t: int) -> int:
    return 2 * t


@dataclass(frozen=True)
class Option:
    """One strategy option, declared once: the YAML schema, the command line's choices and
    the estimator's and runner's checks are made from :data:`OPTIONS`."""

    name: str
    default: Any  # the option's type: str, int or bool
    doc: str
    choices: tuple = ()  # the allowed values of a choice
    minimum: int | None = None  # an integer's least value (None: not an integer)

    @property
    def is_flag(self) -> bool:
        return isinstance(self.default, bool)

    def refusal(self, value) -> str | None:
        """Why ``value`` is not allowed (None if it is)."""
        if self.choices:
            return None if value in self.choices else "must be " + " or ".join(map(repr, self.choices))
        if self.is_flag:
            return None if isinstance(value, (bool, np.bool_)) else "must be true or false"
        least = self.minimum if self.minimum is not None else 0
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
            return f"must be an integer >= {self.minimum}"
        return None

    def schema(self) -> dict:
        """The JSON schema of a value."""
        if self.choices:
            return {"enum": list(self.choices)}
        if self.is_flag:
            return {"type": "boolean"}
        return {"type": "integer", "minimum": self.minimum}


#: the options of the parallel strategies; each strategy reads the ones it lists in
#: ``options_used`` (an option set away from its default that no strategy of a run reads
#: is refused: :func:`parrbm.strategies.rules.unused_options`)
OPTIONS = (
    Option(
        "partition",
        "contiguous",
        "how units are split (random: a seeded permutation)",
        choices=("contiguous", "random"),
    ),
    Option("sync_every", 1, "unit-partitioned: minibatches between weight syncs (0: never)", minimum=0),
    Option("shared_weights", False, "per-update sync on threads: one W, the sync a barrier"),
    Option("reduce", "allreduce", "parameter averaging: how gradients are summed", choices=("master", "allreduce")),
    Option(
        "average",
        "gradients",
        "parameter averaging: sum gradients every step (exactly serial CD), or "
        "average weights every average_every steps",
        choices=("gradients", "weights"),
    ),
    Option("average_every", 1, "parameter averaging with average='weights': minibatches between averagings", minimum=1),
    Option(
        "overlap",
        False,
        "each exchange in flight while the worker computes what does not need it (its own "
        "block of the next product, its own weights' update); lockstep's results, bit for bit",
    ),
    Option(
        "overlap_chunks",
        1,
        "the minibatch's cases (per-update sync: the synced rows; parameter averaging: the "
        "gradient's rows) in this many chunks, each chunk's exchange in flight while the next computes; "
        "more than 1 implies overlap (1 and no overlap: lockstep); lockstep's results, bit for bit",
        minimum=1,
    ),
)
OPTION = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class StrategyOptions:
    """Options of the parallel strategies (each strategy reads the ones it knows): the
    fields of :data:`OPTIONS`, with their defaults."""

    partition: str = OPTION["partition"].default
    sync_every: int = OPTION["sync_every"].default
    shared_weights: bool = OPTION["shared_weights"].default
    reduce: str = OPTION["reduce"].default
    average: str = OPTION["average"].default
    average_every: int = OPTION["average_every"].default
    overlap: bool = OPTION["overlap"].default
    overlap_chunks: int = OPTION["overlap_chunks"].default

    @property
    def overlapped(self) -> bool:
        """Exchanges in flight while the workers compute (``overlap``, or chunks)."""
        return bool(self.overlap) or self.overlap_chunks > 1

    def check(self) -> None:
        """ValueError naming the first option whose value is not allowed."""
        for o in OPTIONS:
            value = getattr(self, o.name)
            why = o.refusal(value)
            if why:
                raise ValueError(f"strategy option '{o.name}' {why}, got {value!r}")


class Worker:
    """One worker of a parallel strategy.

    Subclasses implement :meth:`step` (one CD-k minibatch step; returns this worker's
    share of the reconstruction error sum) and :meth:`gather_model` (the full model on
    rank 0, None elsewhere).
    """

    name = ""
    #: the StrategyOptions this strategy reads; an option set away from its default that
    #: no strategy of a run reads is refused (:func:`parrbm.strategies.rules.unused_options`)
    options_used: tuple[str, ...] = ("partition",)
    #: phases whose bytes are weight synchronisation, not per-step training traffic
    sync_phases: tuple[str, ...] = ()
    #: the collective behind each of its phases, where it differs from the built-ins' use
    #: of the phase name (the time model prices a phase by its collective's link):
    #: one of LINK_KINDS of the time model ("allgather" of floats, "allgather_bits",
    #: "reduce_scatter", "allreduce", "alltoall")
    phase_collectives: dict[str, str] = {}
    #: arrays this worker holds that the gathered model does not give back (a replica
    #: between syncs): kept with a checkpoint, so that a resumed fit is the uninterrupted one
    local_arrays: tuple[str, ...] = ()
    #: the purple rows P_k = W[V_k, :], in the strategies that keep them
    purple: np.ndarray

    def __init__(self, spec: CDSpec, state: ModelState, rank: int, size: int, options: StrategyOptions):
        self.spec = spec
        # its Comm (harness/comm.py; the transport's, which a strategy never names): set by
        # the runner for each run
        self.comm: Any = None
        self.options = options
        self.rank, self.K = rank, size
        self.dtype = spec.np_dtype
        self.vis = Partition.make(options.partition, spec.n_visible, self.K, spec.seed)
        self.hid = Partition.make(options.partition, spec.n_hidden, self.K, spec.seed + 1)
        self.divergence: list[float] = []  # replica drift measured before each sync
        self.syncs = 0  # weight synchronisations done
        self.steps_done = 0  # minibatch steps taken (sync and averaging periods)
        self._chunk_plans: dict = {}
        if self.options.overlap_chunks > 1:  # the chunk plan of a full minibatch, found before the first step
            self.chunks(spec.batch_size)

    # ---- properties of the configuration -------------------------------------------------

    @property
    def hidden_as_bits(self) -> bool:
        """Hidden activities travel as 1-bit states (sampled statistics)."""
        return self.spec.statistics == "samples"

    @property
    def visible_as_bits(self) -> bool:
        """Negative visible data are binary samples, so they travel as bits."""
        return self.spec.visible == "binary" and self.spec.statistics == "samples"

    @property
    def sample_visible(self) -> bool:
        if self.spec.visible == "binary":
            return self.spec.statistics == "samples" or self.spec.sample_visible
        return self.spec.gaussian_noise

    def chain_rows(self, mb: int) -> int:
        return self.spec.batch_size if self.spec.persistent else mb

    def key(self, step: int, phase: int) -> dict:
        return {"seed": self.spec.seed, "step": step, "phase": phase}

    def zeros(self, *shape) -> np.ndarray:
        return np.zeros(shape, self.dtype)

    @property
    def lockstep(self) -> bool:
        """No overlap: every collective runs at once, as it is started."""
        return not self.options.overlapped

    def chunks(self, rows: int) -> list[slice]:
        """The row ranges of the ``overlap_chunks`` chunks of ``rows`` rows (one range in
        lockstep), cut where every product rounds as the whole block's does
        (:func:`exact_chunks`). A chunk's rows keep their case index in the minibatch, so
        the random streams, keyed by case, draw what lockstep draws."""
        if self.options.overlap_chunks == 1 or rows <= 1:
            return [slice(0, rows)]
        key = (rows, _core.get_blas_threads())  # a step's plan, found once (not in the step's loop)
        plan = self._chunk_plans.get(key)
        if plan is None:
            plan = self._chunk_plans[key] = exact_chunks(
                rows, self.options.overlap_chunks, self.dtype, type(self).chunked_gemms(self.spec, self.vis, self.hid)
            )
        return plan

    @classmethod
    def chunked_gemms(cls, spec: CDSpec, vis: Partition, hid: Partition) -> list[tuple[int, int, bool]]:
        """The products a chunked step computes chunk by chunk, for every worker's block
        sizes: (depth, columns, B transposed). A strategy that reads ``overlap_chunks``
        lists them."""
        return []

    @classmethod
    def sync_phases_of(cls, options: StrategyOptions) -> tuple[str, ...]:
        """The phases whose bytes are weight synchronisation, with these options."""
        return cls.sync_phases

    # ---- CD kernels on blocks -------------------------------------------------------------

    @staticmethod
    def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, *, trans_b: bool = False) -> None:
        """out <- a @ b (or a @ b.T), in place; row-strided views are used without copying."""
        _core.gemm(a, b, out, trans_b=trans_b)

    def sample_hidden(
        self,
        pre: np.ndarray,
        bias: np.ndarray,
        units: dict,
        step: int,
        phase: int,
        *,
        states=None,
        probs=None,
        case0: int = 0,
        state_value: float = 1.0,
        prob_scale: float = 1.0,
    ) -> None:
        _core.sample_sigmoid(
            pre,
            bias,
            states,
            probs,
            case0=case0,
            state_value=state_value,
            prob_scale=prob_scale,
            **units,
            **self.key(step, phase),
        )

    def states_from_probabilities(
        self, probs: np.ndarray, units: dict, step: int, phase: int, *, out: np.ndarray, case0: int = 0
    ) -> np.ndarray:
        """The states sample_hidden would have drawn from these probabilities."""
        _core.sample_bernoulli(probs, out, case0=case0, **units, **self.key(step, phase))
        return out

    def visible_units(
        self,
        pre: np.ndarray,
        bias: np.ndarray,
        out: np.ndarray,
        units: dict,
        step: int,
        t: int,
        *,
        data=None,
        case0: int = 0,
        err0: float = 0.0,
    ) -> float:
        """Visible activations of the rows of ``pre`` (cases case0, case0 + 1, ...); returns
        err0 plus their squared reconstruction error against ``data``, added row by row."""
        return _core.visible_activation(
            pre,
            bias,
            out,
            self.spec.visible,
            self.sample_visible,
            data,
            case0=case0,
            err0=err0,
            **units,
            **self.key(step, phase_visible(t)),
        )

    # ---- statistics and updates -------------------------------------------------------------

    def pack_statistics(self, left: np.ndarray, right: np.ndarray, mb: int) -> tuple:
        """The bit-packed operands of the bit statistics (:meth:`apply_statistics` with
        ``packed``): packed once when a step updates its weights a block of rows at a time.
        x's bits are None when the data are not 0/1."""
        words = (max(mb, left.shape[0] - mb) + 63) // 64
        v_bits, _ = _core.pack_columns(left[mb:], words)
        hn_bits, _ = _core.pack_columns(right[mb:], words)
        h_bits, _ = _core.pack_columns(right[:mb], words)
        x_bits, binary = _core.pack_columns(left[:mb], words)
        return (x_bits if binary else None), h_bits, v_bits, hn_bits

    def apply_statistics(
        self,
        W: np.ndarray,
        inc,
        left: np.ndarray,
        right: np.ndarray,
        mb: int,
        neg_scale: float,
        *,
        rows: slice | None = None,
        packed=None,
    ) -> None:
        """W (+ inc) <- update with eps / mb (left_pos^T right_pos + left_neg^T right_neg).

        left: (mb + c, a) stacked [x; v'] columns of W's rows; right: (mb + c, b) stacked
        [h; -neg_scale h'] columns of W's columns. Binary-binary statistics are counted
        with AND + popcount (exact integers), anything else is one GEMM of depth mb + c.
        ``rows``: only W's rows ``rows`` (left's columns) are updated, for a step that sends
        each block of rows as soon as it is updated; ``packed``: :meth:`pack_statistics`
        of the whole operands.
        """
        spec = self.spec
        alpha = spec.learning_rate / mb
        decay_lr = spec.learning_rate * spec.weight_decay
        r = slice(None) if rows is None else rows
        W, inc, left = W[r], (None if inc is None else inc[r]), left[:, r]
        if self.visible_as_bits:
            x_bits, h_bits, v_bits, hn_bits = packed if packed is not None else self.pack_statistics(left, right, mb)
            if packed is not None:
                x_bits, v_bits = (None if x_bits is None else x_bits[r]), v_bits[r]
            if x_bits is None:
                beta = spec.momentum if inc is not None else 1.0 - decay_lr
                _core.gemm(left[:mb], right[:mb], W if inc is None else inc, alpha=alpha, beta=beta, trans_a=True)
            _core.bit_statistics_update(
                W,
                inc,
                x_bits,
                h_bits,
                v_bits,
                hn_bits,
                alpha=alpha,
                neg_scale=neg_scale,
                momentum=spec.momentum,
                decay_lr=decay_lr,
            )
        elif inc is not None:
            _core.gemm(left, right, inc, alpha=alpha, beta=spec.momentum, trans_a=True)
            _core.apply_increment(W, inc, decay_lr)
        else:
            _core.gemm(left, right, W, alpha=alpha, beta=1.0 - decay_lr, trans_a=True)

    def statistics_gradient(self, left: np.ndarray, right: np.ndarray, out: np.ndarray) -> None:
        """out <- left^T right (the unscaled weight gradient of a stacked minibatch)."""
        _core.gemm(left, right, out, alpha=1.0, beta=0.0, trans_a=True)

    def update_bias(self, bias: np.ndarray, inc, pos: np.ndarray, neg, mb: int, neg_scale: float = 1.0) -> None:
        _core.bias_update(
            bias, inc, pos, neg, neg_scale=neg_scale, alpha=self.spec.learning_rate / mb, momentum=self.spec.momentum
        )

    # ---- what a strategy declares (the registry, the cost and time models, the rules) -------
    #
    # The traffic of one step (syncs excluded) and of one sync, per phase and worker, in
    # closed form for any model, m, K and options: measured bytes are held to them. The
    # compute account lists a worker's kernels and their shapes for the time model.

    @classmethod
    def split_refusal(cls, n_visible: int, n_hidden: int, batch_size: int, workers: int) -> str | None:
        """Why this strategy cannot run ``workers`` workers (None if it can). The default
        is the model-parallel rule: the visible and the hidden units are split."""
        for n, what in ((n_visible, "visible"), (n_hidden, "hidden")):
            if workers > n:
                return (
                    f"strategy {cls.name!r} splits the {what} units over the workers: workers={workers} "
                    f"is larger than the {n} {what} units"
                )
        return None

    @classmethod
    def check_options(cls, options: "StrategyOptions", *, transport: str) -> None:
        """Refuse option values this strategy cannot use (ValueError naming the option);
        which options a run may set at all is :func:`rules.unused_options`'s."""

    @classmethod
    def step_traffic(cls, model, m: int, K: int, options: "StrategyOptions", *, chains: int):
        """:class:`parrbm.accounting.Traffic` of one step of m cases (``chains``: rows of
        the negative phase: m, or the persistent chains)."""
        raise NotImplementedError(f"strategy {cls.name!r} declares no step traffic")

    @classmethod
    def sync_traffic(cls, model, K: int, options: "StrategyOptions"):
        return Traffic(K)

    @classmethod
    def syncs_per_step(cls, options: "StrategyOptions") -> float:
        return 0.0

    @classmethod
    def step_work(
        cls, model, m: int, K: int, rank: int, options: "StrategyOptions", *, momentum: bool, binary_data: bool
    ):
        """:class:`parrbm.accounting.Work` of worker ``rank`` in one step."""
        raise NotImplementedError(f"strategy {cls.name!r} declares no compute account")

    @classmethod
    def sync_work(cls, model, K: int, rank: int, options: "StrategyOptions"):
        return Work()

    @classmethod
    def overlap_work(
        cls, model, m: int, K: int, rank: int, options: "StrategyOptions", *, momentum: bool, binary_data: bool
    ) -> tuple:
        """(:class:`Work`, phases): with ``overlap_chunks`` > 1, the part of worker
        ``rank``'s step (or of its every-step sync) computed chunk by chunk while the
        listed phases' chunks are on the wire. The time model pipelines the two and
        prices the products cut into chunks. Lockstep, or a strategy that does not
        overlap: nothing."""
        return Work(), ()

    # ---- the interface the runner uses ------------------------------------------------------

    def step(self, X: np.ndarray, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def gather_model(self) -> ModelState | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def gathered_model(self) -> ModelState | None:
        """:meth:`gather_model`, held to what it promises: on rank 0 a ModelState of the
        model's shapes and dtype (TypeError naming the strategy otherwise)."""
        model = self.gather_model()
        if self.rank != 0:
            return model
        s = self.spec
        V, H, dt = s.n_visible, s.n_hidden, s.np_dtype
        if not isinstance(model, ModelState):
            raise TypeError(
                f"strategy {self.name!r}: gather_model() must return a ModelState on rank 0, got {type(model).__name__}"
            )
        for name, shape in (("W", (V, H)), ("b", (V,)), ("c", (H,))):
            a = getattr(model, name)
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dt:
                got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(
                    f"strategy {self.name!r}: gather_model() must return {name} of shape {shape} "
                    f"and dtype {dt}, got {got}"
                )
        return model

    def checked_step(self, X: np.ndarray, i: int) -> float:
        """:meth:`step`, held to what it promises: a real number (this worker's share of
        the reconstruction error sum); TypeError naming the strategy otherwise."""
        err = self.step(X, i)
        if isinstance(err, np.ndarray) and err.shape == () and err.dtype.kind in "iuf":
            err = err.item()
        if isinstance(err, (bool, np.bool_)) or not isinstance(err, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"strategy {self.name!r}: step() must return this worker's reconstruction error sum "
                f"(a number), got {type(err).__name__} {err!r:.40}"
            )
        return float(err)

    def local_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(counters, arrays) of what only this worker knows: the steps it has taken (the
        sync and averaging periods count them) and its :attr:`local_arrays`."""
        arrays = {k: getattr(self, k) for k in self.local_arrays if getattr(self, k, None) is not None}
        return {"steps_done": int(self.steps_done)}, arrays

    def restore_local(self, counters: dict, arrays: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`local_state` gave (on a worker built from the gathered model)."""
        self.steps_done = int(counters["steps_done"])
        for k, a in arrays.items():
            mine = getattr(self, k, None) if k in self.local_arrays else None
            if mine is None or mine.shape != a.shape:
                raise ValueError(
                    f"worker {self.rank} of {self.name!r}: local array {k!r} "
                    f"{getattr(a, 'shape', None)} does not fit this worker "
                    f"({None if mine is None else mine.shape})"
                )
            mine[...] = a

    def finish(self) -> None:
        """The end of a fit: a strategy whose replicas may stand apart brings them together
        (its bytes count as a sync)."""

    def memory_bytes(self) -> int:
        """Bytes of the arrays this worker holds (parameters, optimiser state, buffers)."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))

    def own_biases(self, state: ModelState) -> None:
        """b[V_k], c[H_k] and, with momentum, their increments: this worker's slices."""
        k = self.rank
        self.b = own(self.vis.take(state.b, k, axis=0))
        self.c = own(self.hid.take(state.c, k, axis=0))
        self.b_inc: np.ndarray | None = None
        self.c_inc: np.ndarray | None = None
        if state.b_inc is not None and state.c_inc is not None:  # momentum
            self.b_inc = own(self.vis.take(state.b_inc, k, axis=0))
            self.c_inc = own(self.hid.take(state.c_inc, k, axis=0))

    # ---- activities shared by all workers ---------------------------------------------------

    def exchange_visible(self, local: np.ndarray, out: np.ndarray) -> None:
        """Allgather v'_k -> v': bits for binary samples, floats otherwise."""
        if self.visible_as_bits:
            self.comm.allgather_bits(local, out, self.vis, phase=P.VISIBLE)
        else:
            self.comm.allgather(local, out, self.vis, phase=P.VISIBLE)

    def start_visible(self, local: np.ndarray, out: np.ndarray):
        """:meth:`exchange_visible` put in flight: returns its handle."""
        if self.visible_as_bits:
            return self.comm.start_allgather_bits(local, out, self.vis, phase=P.VISIBLE, now=self.lockstep)
        return self.comm.start_allgather(local, out, self.vis, phase=P.VISIBLE, now=self.lockstep)

    def start_hidden(
        self,
        pre: np.ndarray,
        bias: np.ndarray,
        step: int,
        phase: int,
        name: str,
        local: np.ndarray,
        full_act: np.ndarray,
        full_states: np.ndarray,
        rows: slice,
    ):
        """:meth:`exchange_hidden` of the rows ``rows`` of ``pre`` (rows x |H_k| of the whole
        block), put in flight: samples this worker's units of those cases and starts their
        allgather into the same rows of ``full_act`` / ``full_states``. Complete it with
        :meth:`finish_hidden`."""
        units = self.hid.units(self.rank)
        if self.hidden_as_bits:
            self.sample_hidden(pre[rows], bias, units, step, phase, states=local[rows], case0=rows.start)
            return self.comm.start_allgather_bits(
                local[rows], full_states[rows], self.hid, phase=name, now=self.lockstep
            )
        self.sample_hidden(pre[rows], bias, units, step, phase, probs=local[rows], case0=rows.start)
        return self.comm.start_allgather(local[rows], full_act[rows], self.hid, phase=name, now=self.lockstep)

    def finish_hidden(
        self, handle, step: int, phase: int, full_act: np.ndarray, full_states: np.ndarray, rows: slice
    ) -> None:
        """Wait for a :meth:`start_hidden`; with probabilities, every worker then draws the
        same states of those cases from them."""
        handle.wait()
        if not self.hidden_as_bits:
            self.states_from_probabilities(
                full_act[rows], {"unit0": 0}, step, phase, out=full_states[rows], case0=rows.start
            )

    def own_hidden_states(self, local: np.ndarray, out: np.ndarray, step: int, phase: int, rows: slice) -> np.ndarray:
        """This worker's own units of the hidden states of the cases ``rows`` (the columns
        H_k of what :meth:`finish_hidden` gives), from its own samples, before the others'
        arrive: the states themselves (sampled statistics), or the same draws from its
        own probabilities (keyed by global unit and case, so the bits are the gathered ones')."""
        if self.hidden_as_bits:
            return local[rows]
        return self.states_from_probabilities(
            local[rows], self.hid.units(self.rank), step, phase, out=out[rows], case0=rows.start
        )

    def product_own_first(
        self,
        own: np.ndarray,
        full: np.ndarray,
        weights: np.ndarray,
        out: np.ndarray,
        parts: Partition,
        *,
        arrived,
        trans_b: bool = False,
    ) -> None:
        """out <- full @ weights (weights.T with ``trans_b``), summed block by block over
        the depth as ``parts`` cuts it: this worker's own block first, from ``own`` (its
        columns of ``full``, here before the others'), then, once ``arrived()`` has
        returned, every other block in rank order. Lockstep sums in the same order, so the
        bits do not depend on when the blocks arrived. Over scattered blocks (a random
        partition) the product is one GEMM, after ``arrived()``."""
        if not parts.is_contiguous:
            arrived()
            _core.gemm(full, weights, out, trans_b=trans_b)
            return
        k = self.rank
        block = (lambda j: weights[:, parts.parts[j]]) if trans_b else (lambda j: weights[parts.parts[j]])
        _core.gemm(own, block(k), out, trans_b=trans_b)
        arrived()
        for j in range(self.K):
            if j != k:
                _core.gemm(full[:, parts.parts[j]], block(j), out, beta=1.0, trans_b=trans_b)

    def exchange_hidden(
        self,
        pre: np.ndarray,
        bias: np.ndarray,
        step: int,
        phase: int,
        name: str,
        local: np.ndarray,
        full_act: np.ndarray,
        full_states: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample this worker's hidden units from their inputs ``pre`` (rows x |H_k|) and
        allgather them: 1-bit states (sampled statistics) or probabilities (then every
        worker draws the same states from them). Returns (activities for the statistics,
        states driving the chain), both (rows x H)."""
        rows = pre.shape[0]
        units = self.hid.units(self.rank)
        out_states = full_states[:rows]
        if self.hidden_as_bits:
            self.sample_hidden(pre, bias, units, step, phase, states=local[:rows])
            self.comm.allgather_bits(local[:rows], out_states, self.hid, phase=name)
            return out_states, out_states
        out_act = full_act[:rows]
        self.sample_hidden(pre, bias, units, step, phase, probs=local[:rows])
        self.comm.allgather(local[:rows], out_act, self.hid, phase=name)
        self.states_from_probabilities(out_act, {"unit0": 0}, step, phase, out=out_states)
        return out_act, out_states

    # ---- model assembly -----------------------------------------------------------------------

    def gather_rows(
        self, rows_block: np.ndarray, parts: Partition, n_cols: int, *, phase: str = P.GATHER_MODEL
    ) -> np.ndarray | None:
        """Rank 0 assembles the full (n, n_cols) array from each worker's row block."""
        blocks = self.comm.gather(np.ascontiguousarray(rows_block), phase=phase)
        if blocks is None:
            return None
        full = np.empty((parts.n, n_cols), rows_block.dtype)
        for j, blk in enumerate(blocks):
            full[parts.index(j)] = blk.reshape(parts.size(j), n_cols)
        return full

    def gather_columns(
        self, cols_block: np.ndarray, parts: Partition, n_rows: int, *, phase: str = P.GATHER_MODEL
    ) -> np.ndarray | None:
        """Rank 0 assembles the full (n_rows, n) array from each worker's column block
        (n_rows, |part j|): sent as it lies, placed by columns, never transposed."""
        blocks = self.comm.gather(np.ascontiguousarray(cols_block), phase=phase)
        if blocks is None:
            return None
        full = np.empty((n_rows, parts.n), cols_block.dtype)
        for j, blk in enumerate(blocks):
            parts.put(full, j, blk.reshape(n_rows, parts.size(j)))
        return full

    def gather_vector(self, piece: np.ndarray, parts: Partition, *, phase: str = P.GATHER_MODEL):
        full = self.gather_rows(piece.reshape(-1, 1), parts, 1, phase=phase)
        return None if full is None else full[:, 0]

    def gather_purple_model(self, W_inc_full=None) -> ModelState | None:
        """The full model on rank 0 from purple rows P_k = W[V_k, :] and the bias slices
        (W_inc_full: the increments if the strategy keeps them elsewhere than purple)."""
        H = self.spec.n_hidden
        W = self.gather_rows(self.purple, self.vis, H)
        b = self.gather_vector(self.b, self.vis)
        c = self.gather_vector(self.c, self.hid)
        incs: tuple = (None, None, None)
        if self.b_inc is not None and self.c_inc is not None:
            purple_inc = getattr(self, "purple_inc", None)
            W_inc = self.gather_rows(purple_inc, self.vis, H) if purple_inc is not None else W_inc_full
            incs = (W_inc, self.gather_vector(self.b_inc, self.vis), self.gather_vector(self.c_inc, self.hid))
        if self.rank != 0:
            return None
        assert W is not None and b is not None and c is not None  # gathered on rank 0
        chains = getattr(self, "chains", None)
        return ModelState(
            W=W, b=b, c=c, W_inc=incs[0], b_inc=incs[1], c_inc=incs[2], chains=None if chains is None else chains.copy()
        )


def admin_phase(phase: str) -> bool:
    """Phases that are bookkeeping (assembling the model), not training traffic."""
    return phase.startswith("gather-")
