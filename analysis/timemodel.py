"""The time model (docs/design.md section 7): what a step costs, per strategy, for any K.

    t_step(K) = max_k compute_k + sum over phases (latency x messages
                                                   + bytes on the busiest link / bandwidth)

compute_k prices worker k's kernels (:mod:`parrbm.analysis.compute`) with a machine
profile: a GEMM rate per precision and shape class (the smallest of the three
dimensions), a cost per element for each elementwise kernel, how much slower each
strategy's kernels run in its own sequence than one by one (its efficiency), and the
per-step overhead of its driver. The phases and their bytes are the closed form of
:mod:`parrbm.analysis.cost`; each phase is priced by the link of its collective, from a
ping-pong on a transport of this machine or from given figures (the paper's network:
105 MB/s, 0.091 ms). In lockstep the two add up. With ``overlap_chunks`` = N > 1 a
strategy's declared overlapped compute C (:meth:`Worker.overlap_work`: the products and
units it runs chunk by chunk) and its overlapped phases' transfer time T are pipelined in
N stages, a two-stage pipeline of N items:

    max(C, T) + min(C, T) / N  =  C + T - min(C, T) (1 - 1/N)

and C is priced with its products cut into N along their first dimension (smaller GEMMs
run at a lower rate: what chunking itself costs).

A step's time here is the typical step: weight syncs that happen every step
(per-update-sync) are in it, rarer ones are reported apart (``sync_seconds``) and
amortised in ``mean_step_seconds``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from parrbm.analysis import cost
from parrbm.analysis.compute import Work, step_work, sync_work
from parrbm.partition import Partition
from parrbm.strategies import phases as P
from parrbm.units import BANDWIDTH_FORMS, parse_bandwidth, parse_latency  # noqa: F401 (named here too)

#: the collective behind each phase (bits / floats decided by the model)
PHASE_KIND = {
    P.HIDDEN: "allgather",
    P.NEGATIVE_HIDDEN: "allgather",
    P.VISIBLE: "allgather",
    P.HIDDEN_INPUT: "reduce_scatter",
    P.NEGATIVE_HIDDEN_INPUT: "reduce_scatter",
    P.VISIBLE_INPUT: "reduce_scatter",
    P.GRADIENT: "allreduce",
    P.AVERAGE: "allreduce",
    P.WEIGHT_SYNC: "alltoall",
}
LINK_KINDS = ("allgather", "allgather_bits", "reduce_scatter", "allreduce", "alltoall")


@dataclass
class Link:
    latency: float  # seconds per message
    bandwidth: float  # bytes per second on one worker's link
    #: payload bytes a collective passes at once after an idle spell: an emulated link's
    #: token bucket, refilled by the compute phase before each collective (0: none)
    burst: float = 0.0

    def seconds(self, messages: float, nbytes: float, calls: int = 1, bursts: int | None = None) -> float:
        """``bursts``: the collectives that start after an idle spell (default: every call);
        the chunks of an overlapped phase follow one another on a busy link."""
        return (
            self.latency * messages
            + max(0.0, nbytes - self.burst * (calls if bursts is None else bursts)) / self.bandwidth
        )


#: the largest machine profile read (one is some tens of kB)
PROFILE_MAX_BYTES = 1 << 24


@dataclass
class Profile:
    """What a machine (or a cluster node) does per second; saved as JSON."""

    cpu: str = ""
    cores: int = 1
    blas: str = ""
    #: precision -> [[smallest dimension, flop/s], ...] ascending
    gemm: dict[str, list[list[float]]] = field(default_factory=dict)
    #: precision -> [[operand bytes, seconds per element], ...] ascending: what a GEMM's
    #: larger input costs beyond the ``gemm`` table when it comes from memory rather than
    #: from the cache the table's operands sit in (packed once per call, so it does not
    #: shrink with the short side); interpolated in log bytes, 0 at the table's own size
    gemm_stream: dict[str, list[list[float]]] = field(default_factory=dict)
    #: precision -> kind -> seconds per element (see compute.Work)
    element: dict[str, dict[str, float]] = field(default_factory=dict)
    #: precision -> [[64-case words per term, seconds per cell-word-term], ...] ascending:
    #: the bit statistics' cost per word falls and rises again with the words (unrolled
    #: counts up to four words, a loop beyond); ``element["bitstat"]`` when absent
    bitstat: dict[str, list[list[float]]] = field(default_factory=dict)
    #: strategy -> seconds of driver overhead per step (Python, kernel calls)
    overhead: dict[str, float] = field(default_factory=dict)
    #: strategy -> its kernels' time in its own step / the same kernels timed one by one
    #: (operands evicted by the previous kernel, copies between them); 1 when unmeasured
    efficiency: dict[str, float] = field(default_factory=dict)
    #: transport -> n -> how much longer a step of n workers sharing this machine's cores
    #: takes than its kernels and transfers (stragglers, transport threads, the OS)
    contention: dict[str, dict[str, float]] = field(default_factory=dict)
    #: transport -> [[a worker's weight bytes, co-scheduling factor], ...] ascending, K = cores:
    #: workers whose weight blocks spill out of the shared cache also share the memory
    #: bandwidth; ``sharing`` interpolates between the measured sizes
    contention_memory: dict[str, list[list[float]]] = field(default_factory=dict)
    #: transport -> collective kind -> Link
    links: dict[str, dict[str, Link]] = field(default_factory=dict)
    #: transport (``mpi@hosts``) -> how much longer a kernel takes on the slowest of its
    #: hosts than on this machine (the workers wait for the slowest)
    host_slowdown: dict[str, float] = field(default_factory=dict)
    #: emulated transport (``tcp@105MB/s``) -> K hosts dilated by F (``8x4``, see
    #: :func:`dilation_key`) -> [[a worker's weight bytes, {strategy, and ``*`` their
    #: median: a step of those hosts over the step the model prices for K machines of their
    #: own}], ...] ascending, one per calibration model: what the emulation itself costs,
    #: which machines of their own do not pay; priced into dilated runs only
    #: (:func:`predict`'s ``dilation``)
    dilated: dict[str, dict[str, list[list]]] = field(default_factory=dict)
    created: str = ""

    def save(self, path: str | Path) -> None:
        from parrbm._files import write_atomic

        write_atomic(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        """A profile written by ``save``; anything else (a device, a huge or deeply nested
        file, another JSON) is a ValueError naming the file."""
        from parrbm._files import strict_json

        try:
            with open(path, "rb") as fh:
                data = fh.read(PROFILE_MAX_BYTES + 1)
            if len(data) > PROFILE_MAX_BYTES:
                raise ValueError(f"larger than {PROFILE_MAX_BYTES >> 20} MiB")
            raw = strict_json(data.decode("utf-8"), max_depth=8)
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON {type(raw).__name__}, not an object")
            # older profiles scaled the efficiency by a step's GEMM traffic per flop; the
            # streamed-operand cost (``gemm_stream``) now prices what that stood for
            raw.pop("efficiency_traffic", None)
            raw["links"] = {t: {k: Link(**v) for k, v in kinds.items()} for t, kinds in raw["links"].items()}
            _check_dilated(raw.get("dilated", {}))
            if any(not isinstance(v, dict) for v in raw.get("contention", {}).values()):
                raw["contention"] = {"*": raw["contention"]}  # older profiles: one figure for all transports
            return cls(**raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a parrbm machine profile ({exc}); make one with 'parrbm calibrate --out {path}'"
            ) from None

    # ---- pricing ---------------------------------------------------------------------------

    def gemm_rate(self, precision: str, M: int, N: int, depth: int) -> float:
        table = self.gemm[precision]
        d = min(M, N, depth)
        if d <= table[0][0]:
            # below the table: the rate falls with the short side (vector-bound)
            return table[0][1] * d / table[0][0]
        for (d0, r0), (d1, r1) in zip(table, table[1:]):
            if d <= d1:
                f = math.log(d / d0) / math.log(d1 / d0)
                return math.exp((1 - f) * math.log(r0) + f * math.log(r1))
        return table[-1][1]

    def gemm_seconds(self, precision: str, M: int, N: int, depth: int) -> float:
        """One (M x depth) @ (depth x N) product: its flops at the table's rate, and its
        larger input's elements at what streaming them from memory costs beyond that."""
        t = 2 * M * N * depth / self.gemm_rate(precision, M, N, depth)
        table = self.gemm_stream.get(precision)
        if table:
            elements = max(M, N) * depth
            nbytes = elements * (8 if precision == "float64" else 4)
            xs = np.log([b for b, _ in table])
            t += elements * float(np.interp(np.log(nbytes), xs, [c for _, c in table]))
        return t

    def kernel_seconds(self, work: Work, precision: str) -> float:
        """The kernels of ``work`` timed one by one."""
        t = sum(self.gemm_seconds(precision, M, N, d) for M, N, d in work.gemms)
        per = self.element[precision]
        t += sum(n * per[kind] for kind, n in work.counts.items() if kind != "bitstat")
        bits = work.counts.get("bitstat", 0)
        if bits and self.bitstat.get(precision):
            for words, n in work.bitstat_words.items():
                t += n * self.bitstat_cost(precision, words)
            bits -= sum(work.bitstat_words.values())  # a plug-in's own, words unknown
        if bits:
            t += bits * per["bitstat"]
        return t

    def bitstat_cost(self, precision: str, words: int) -> float:
        """Seconds per cell-word-term of the bit statistics at ``words`` 64-case words:
        interpolated in log words between the measured ones, held beyond them."""
        table = self.bitstat[precision]
        xs = np.log([w for w, _ in table])
        return float(np.interp(np.log(max(words, 1)), xs, [c for _, c in table]))

    def compute_seconds(self, work: Work, precision: str, strategy: str, visible: str = "binary") -> float:
        return self.kernel_seconds(work, precision) * self.step_efficiency(
            work, strategy, visible, precision
        ) + self.overhead.get(strategy, 0.0)

    def step_efficiency(self, work: Work, strategy: str, visible: str = "binary", precision: str = "float32") -> float:
        """The measured ``efficiency`` of ``strategy`` with ``visible`` units in
        ``precision``. Gaussian steps have their own figure: their statistics are a GEMM,
        not the bit statistics, so their sequence is another; and float64 steps theirs,
        since a copy between kernels costs them no more than a flop does relative to
        float32. A profile without a figure falls back to the nearest it has (float32,
        then binary units). The figure is held as measured for any model size: what a
        bigger weight costs the kernels, streamed from memory, is in their own price
        (``gemm_stream``); scaling the excess by the GEMMs' traffic per flop as well
        over-priced unit-partitioned's m = 100 steps by 9-11 %."""
        keys = (efficiency_key(strategy, visible, precision), efficiency_key(strategy, visible), strategy)
        key = next((k for k in keys if k in self.efficiency), strategy)
        return self.efficiency.get(key, 1.0)

    def link(self, transport: str, kind: str) -> Link:
        links = self.links.get(transport)
        if not links:
            raise ValueError(
                f"the profile has no figures for transport {transport!r}; it has "
                f"{', '.join(self.links) or 'none'} (calibrate it, or give --bandwidth and --latency)"
            )
        return links.get(kind) or links["allgather"]

    def sharing(self, transport: str, K: int, weight_bytes: float | None = None) -> float:
        """The co-scheduling factor for K workers of ``transport`` on this machine's
        cores (the nearest measured K at or below it; 1 when unmeasured). With
        ``weight_bytes`` (a worker's) and the factor measured at two sizes, it is
        interpolated in log size between them (held at the ends)."""
        base = transport.split("@")[0]  # tcp@105MB/s: tcp's workers on emulated hosts
        names = [transport] + ([f"{base}@unshaped"] if "@" in transport else []) + [base, "*"]
        sizes = next((self.contention_memory[n] for n in names if n in self.contention_memory), None)
        if weight_bytes and sizes and len(sizes) >= 2:
            xs = np.log([w for w, _ in sizes])
            return float(np.interp(np.log(max(weight_bytes, 1.0)), xs, [f for _, f in sizes]))
        table = next((self.contention[n] for n in names if self.contention.get(n)), {})
        known = [int(n) for n in table if int(n) <= K]
        return float(table[str(max(known))]) if known else 1.0

    def dilation_factor(
        self, transport: str, K: int, dilation: float, strategy: str, weight_bytes: float | None = None
    ) -> float:
        """How much longer a step of K hosts dilated by ``dilation`` on ``transport`` takes
        than K machines of their own (``dilated``): the strategy's own figure, else the
        median of the strategies'; at the K measured with the same dilation nearest to K;
        with ``weight_bytes`` (a worker's), interpolated in log size between the
        calibration models (held at the ends), else the first's; 1 when the profile has
        none for this transport and dilation."""
        table = self.dilated.get(transport) or {}
        same_f = {k: rows for k, rows in table.items() if math.isclose(float(k.split("x")[1]), dilation)}
        if not same_f:
            return 1.0
        rows = (
            same_f.get(dilation_key(K, dilation))
            or same_f[min(same_f, key=lambda k: (abs(math.log(int(k.split("x")[0]) / K)), k))]
        )
        factors = [float(row.get(strategy, row.get("*", 1.0))) for _, row in rows]
        if weight_bytes and len(rows) >= 2:
            xs = np.log([size for size, _ in rows])
            return float(np.interp(np.log(max(weight_bytes, 1.0)), xs, factors))
        return factors[0]

    def at_speed(self, slowdown: float) -> "Profile":
        """A copy whose kernels and per-step overheads all take ``slowdown`` times as long
        (the machine as fast as it was when measured: 1); its links and its measured
        ratios (efficiency, co-scheduling, emulation) as they are."""
        p = Profile(**{**vars(self)})
        p.gemm = {prec: [[d, rate / slowdown] for d, rate in rows] for prec, rows in self.gemm.items()}
        p.gemm_stream = {prec: [[b, c * slowdown] for b, c in rows] for prec, rows in self.gemm_stream.items()}
        p.element = {prec: {k: c * slowdown for k, c in per.items()} for prec, per in self.element.items()}
        p.bitstat = {prec: [[w, c * slowdown] for w, c in rows] for prec, rows in self.bitstat.items()}
        p.overhead = {k: c * slowdown for k, c in self.overhead.items()}
        return p

    def with_network(self, name: str, bandwidth: float, latency: float) -> "Profile":
        """A copy whose transport ``name`` has these figures for every collective."""
        p = Profile(**{**asdict(self), "links": dict(self.links)})
        p.links[name] = {k: Link(latency, bandwidth) for k in LINK_KINDS}
        return p


@dataclass
class Prediction:
    strategy: str
    workers: int
    transport: str
    compute_seconds: float  # the slowest worker's
    comm_seconds: float
    step_seconds: float  # a typical step (see the module docstring)
    sync_seconds: float  # one rarer weight sync, 0 if none
    mean_step_seconds: float  # with the rarer syncs amortised
    phases: dict[str, float]
    wait_seconds: float = 0.0  # waiting for each other on a shared machine (in step_seconds)
    speedup: float | None = None  # vs the serial trainer, mean step times
    efficiency: float | None = None
    hidden_seconds: float = 0.0  # transfer time overlapped with compute (in step_seconds)
    overlap_chunks: int = 1
    overlap: bool = False
    #: what emulating the K machines by hosts dilated in time adds (in step_seconds; 0 for
    #: machines of their own)
    emulation_seconds: float = 0.0


def _check_dilated(table) -> None:
    """A profile's ``dilated`` as :func:`dilated_waiting` writes it, else a ValueError
    saying where it is not."""
    import re

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

    if not isinstance(table, dict):
        raise ValueError("dilated: not an object")
    for transport, points in table.items():
        if not isinstance(points, dict):
            raise ValueError(f"dilated[{transport!r}]: not an object")
        for key, rows in points.items():
            if not re.fullmatch(r"[1-9][0-9]*x[0-9]+(\.[0-9]+)?", key) or float(key.split("x")[1]) < 1:
                raise ValueError(f"dilated[{transport!r}]: {key!r} is not K hosts x a factor (8x4)")
            if (
                not isinstance(rows, list)
                or not rows
                or not all(
                    isinstance(row, list)
                    and len(row) == 2
                    and number(row[0])
                    and isinstance(row[1], dict)
                    and all(isinstance(n, str) and number(f) for n, f in row[1].items())
                    for row in rows
                )
            ):
                raise ValueError(f"dilated[{transport!r}][{key!r}]: not rows of [weight bytes, {{strategy: factor}}]")


def dilation_key(K: int, dilation: float) -> str:
    """Where a profile's ``dilated`` keeps K hosts dilated by ``dilation``: ``8x4``."""
    return f"{K}x{dilation:g}"


def efficiency_key(strategy: str, visible: str, precision: str = "float32") -> str:
    """Where a profile keeps a strategy's kernel efficiency for ``visible`` units in
    ``precision``: ``strategy``, ``strategy/gaussian``, ``strategy/float64``,
    ``strategy/gaussian/float64``."""
    return "/".join(
        [strategy] + ([visible] if visible != "binary" else []) + ([precision] if precision != "float32" else [])
    )


def working_set(model: cost.Model, K: int) -> float:
    """A worker's share of the weights in bytes (V H pb / K): what decides whether the
    workers' blocks fit the shared cache."""
    return model.n_visible * model.n_hidden * model.pb / K


def phase_kind(phase: str, model: cost.Model, strategy=None) -> str:
    """The collective behind a phase: the strategy's own declaration
    (``phase_collectives``) first, then the built-ins' (:data:`PHASE_KIND`)."""
    declared = {}
    if strategy is not None:
        from parrbm.strategies.registry import resolve

        declared = getattr(resolve(strategy), "phase_collectives", {}) or {}
    if phase in declared:
        return declared[phase]
    kind = PHASE_KIND.get(phase, "alltoall")
    if kind == "allgather":
        bits = model.visible_bits if phase == P.VISIBLE else model.hidden_bits
        return "allgather_bits" if bits else "allgather"
    return kind


def _comm(
    traffic: cost.Traffic,
    model: cost.Model,
    K: int,
    profile: Profile,
    transport: str,
    strategy=None,
    lockstep: cost.Traffic | None = None,
) -> dict[str, float]:
    """Each phase's time on its link; ``lockstep``: the same step's traffic in lockstep,
    whose calls are those that find the link idle (an emulated link's burst)."""
    out = {}
    for phase, per_worker in traffic.phases.items():
        calls = traffic.calls.get(phase, 1)
        bursts = None if lockstep is None else min(calls, lockstep.calls.get(phase, calls))
        link = profile.link(transport, phase_kind(phase, model, strategy))
        out[phase] = link.seconds(calls * (K - 1), max(per_worker), calls, bursts)
    return out


def _cpu_comm(
    phases: dict[str, float],
    traffic: cost.Traffic,
    model: cost.Model,
    K: int,
    profile: Profile,
    transport: str,
    strategy=None,
) -> float:
    return sum(_cpu_phases(phases, traffic, model, K, profile, transport, strategy).values())


def _cpu_phases(
    phases: dict[str, float],
    traffic: cost.Traffic,
    model: cost.Model,
    K: int,
    profile: Profile,
    transport: str,
    strategy=None,
) -> dict[str, float]:
    """The part of the phases' time that the workers' cores spend (copies, packing, the
    stack): on an emulated link (``tcp@105MB/s``), what the same transfers take on the
    hosts' unshaped links (or the transport's loopback), at most the link's time; the
    rest is the wire's."""
    base = transport.split("@")[0]
    if f"{base}@unshaped" in profile.links:
        base = f"{base}@unshaped"  # the emulated hosts' own links: veth and bridge included
    if base == transport or base not in profile.links:
        return dict(phases)
    own = _comm(traffic, model, K, profile, base, strategy)
    return {ph: min(t, own[ph]) for ph, t in phases.items()}


def predict(
    strategy: str,
    model: cost.Model,
    m: int,
    K: int,
    profile: Profile,
    *,
    transport: str = "threads",
    sync_every: int = 1,
    momentum: bool = False,
    binary_data: bool = True,
    reduce: str = "allreduce",
    average: str = "gradients",
    average_every: int = 1,
    cores: int | None = None,
    overlap_chunks: int = 1,
    overlap: bool = False,
    dilation: float = 1.0,
) -> Prediction:
    """Predicted times of one step (ValueError for a K the strategy cannot run, by the
    trainer's rules). ``cores``: the cores of the one machine the K
    workers share (None: a machine each, as on a cluster); then their compute slows by
    the profile's co-scheduling factor (measured at K = cores) stretches their step, and
    their compute slows by K / cores when they outnumber the cores. ``overlap_chunks``:
    the step's exchanges chunked and overlapped (see the module's notes). ``dilation``:
    the K machines emulated by hosts dilated by that factor (with ``cores`` None); the
    step then carries what the emulation costs beyond machines of their own, as the
    profile measured it (``Profile.dilated``; ``emulation_seconds``)."""
    from parrbm.strategies.base import StrategyOptions
    from parrbm.strategies.registry import resolve
    from parrbm.strategies.rules import check_split

    check_split(strategy, n_visible=model.n_visible, n_hidden=model.n_hidden, batch_size=m, workers=K)
    # work depends on a rank's part sizes only: one rank of each size combination suffices
    ranks = Partition.distinct_ranks(K, model.n_visible, model.n_hidden, m)
    works = (
        [
            step_work(strategy, model, m, K, r, momentum=momentum, binary_data=binary_data, average=average)
            for r in ranks
        ]
        if strategy != "serial"
        else [step_work("serial", model, m, 1, momentum=momentum, binary_data=binary_data)]
    )
    # on other hosts: at the speed of the slowest of them
    slowdown = profile.host_slowdown.get(transport, 1.0)
    compute = max(profile.compute_seconds(w, model.precision, strategy, model.visible) for w in works) * slowdown
    shared = cores is not None and strategy != "serial" and K > 1
    if shared and K > cores:
        compute *= K / cores
    options = StrategyOptions(
        reduce=reduce,
        average=average,
        average_every=average_every,
        sync_every=sync_every,
        overlap_chunks=overlap_chunks,
        overlap=overlap,
    )
    lockstep = replace(options, overlap=False, overlap_chunks=1)
    phases, busy, cpu = {}, compute, {}
    if strategy != "serial" and K > 1:
        traffic = cost.step_traffic(strategy, model, m, K, options=options)
        phases = _comm(
            traffic,
            model,
            K,
            profile,
            transport,
            strategy,
            cost.step_traffic(strategy, model, m, K, options=lockstep) if options.overlapped else None,
        )
        cpu = _cpu_phases(phases, traffic, model, K, profile, transport, strategy)
        busy += sum(cpu.values())
    comm = sum(phases.values())
    sync, sync_phases = 0.0, {}
    per_step = cost.syncs_per_step(strategy, sync_every=sync_every, average=average, average_every=average_every)
    if per_step and K > 1:
        st = cost.sync_traffic(strategy, model, K, options=options)
        sync = (
            max(
                profile.compute_seconds(sync_work(strategy, model, K, r, average=average), model.precision, "")
                for r in ranks
            )
            * slowdown
        )
        sync_compute = sync
        sync_phases = _comm(
            st,
            model,
            K,
            profile,
            transport,
            strategy,
            cost.sync_traffic(strategy, model, K, options=lockstep) if options.overlapped else None,
        )
        sync += sum(sync_phases.values())
        if per_step >= 1:
            sync_cpu = _cpu_phases(sync_phases, st, model, K, profile, transport, strategy)
            busy += sync_compute + sum(sync_cpu.values())
            cpu.update(sync_cpu)
    hidden = 0.0
    if options.overlapped and strategy != "serial" and K > 1:
        # workers whose cores are all busy computing cannot hide what the cores spend on a
        # transfer (copies, the stack), only the wire's time; a machine each can hide both
        on_wire = {
            p: t - (cpu.get(p, 0.0) if shared and K >= cores else 0.0)
            for p, t in {**phases, **(sync_phases if per_step >= 1 else {})}.items()
        }
        chunk_cost, hidden = _overlap(
            resolve(strategy),
            model,
            m,
            K,
            ranks,
            options,
            profile,
            strategy,
            on_wire,
            momentum=momentum,
            binary_data=binary_data,
            slowdown=slowdown,
        )
        compute += chunk_cost
    work = compute + comm + (sync if per_step >= 1 else 0.0) - hidden
    # workers sharing one machine's cores wait for each other beyond their kernels and
    # transfers; not beyond an emulated wire's time, which no core spends
    wait = busy * (profile.sharing(transport, min(K, cores), working_set(model, K)) - 1.0) if shared else 0.0
    emulation = 0.0
    if dilation != 1.0 and strategy != "serial" and K > 1:
        factor = profile.dilation_factor(transport, K, dilation, strategy, working_set(model, K))
        emulation = work * (factor - 1.0)
    step = work + wait + emulation
    mean = step + (sync * per_step if per_step < 1 else 0.0)  # rarer syncs amortised
    return Prediction(
        strategy,
        K,
        transport,
        compute,
        comm,
        step,
        sync if per_step < 1 else 0.0,
        mean,
        phases,
        wait_seconds=wait,
        hidden_seconds=hidden,
        overlap_chunks=overlap_chunks,
        overlap=options.overlapped,
        emulation_seconds=emulation,
    )


def _overlap(
    cls,
    model: cost.Model,
    m: int,
    K: int,
    ranks,
    options,
    profile: Profile,
    strategy: str,
    phases: dict[str, float],
    *,
    momentum: bool,
    binary_data: bool,
    slowdown: float = 1.0,
) -> tuple[float, float]:
    """(what cutting the overlapped products into chunks adds to the compute, the transfer
    time the pipeline hides) of the slowest worker: see the module's notes."""
    N = options.overlap_chunks
    chunk_cost = hidden = 0.0
    for r in ranks:
        work, names = cls.overlap_work(
            model, m, K, r, options, momentum=momentum, binary_data=binary_data and model.visible == "binary"
        )
        if not names:
            continue
        eff = profile.step_efficiency(work, strategy, model.visible, model.precision) * slowdown
        whole = profile.kernel_seconds(work, model.precision) * eff
        cut = profile.kernel_seconds(work.chunked(N), model.precision) * eff
        transfer = sum(t for p, t in phases.items() if p in names)
        chunk_cost = max(chunk_cost, cut - whole)
        # chunks: a pipeline of N; the cases whole: the declared work runs wholly alongside
        hidden = max(hidden, min(cut, transfer) * ((1.0 - 1.0 / N) if N > 1 else 1.0))
    return chunk_cost, hidden


def predict_curve(strategies, model: cost.Model, m: int, workers, profile: Profile, **kw) -> list[Prediction]:
    """Predictions for every strategy and K, with speedup and efficiency against the
    serial trainer's predicted step."""
    from parrbm.strategies.rules import split_refusal

    serial = predict(
        "serial", model, m, 1, profile, **{k: v for k, v in kw.items() if k in ("momentum", "binary_data")}
    )
    out = []
    for s in strategies:
        for K in workers:
            if split_refusal(s, n_visible=model.n_visible, n_hidden=model.n_hidden, batch_size=m, workers=K):
                continue  # never price what the trainer refuses to run
            p = predict(s, model, m, K, profile, **kw)
            p.speedup = serial.mean_step_seconds / p.mean_step_seconds
            p.efficiency = p.speedup / K
            out.append(p)
    return out


#: the chunk counts :func:`advise` weighs for a strategy that overlaps
CHUNK_CHOICES = (1, 2, 4, 8)


def advise(
    model: cost.Model, m: int, workers, profile: Profile, *, strategies=None, chunk_choices=CHUNK_CHOICES, **kw
) -> list[dict]:
    """For each K, the strategy with the shortest predicted step and its margin over the
    runner-up (how much slower the runner-up is, in percent). A strategy that overlaps
    (reads ``overlap``) runs lockstep, overlapped with its cases whole, or in one of
    ``chunk_choices``, whichever is fastest: each row's ``overlap`` and ``overlap_chunks``,
    and in ``ranking`` the chunks (0: lockstep)."""
    from parrbm.strategies.registry import names, resolve

    asked = list(strategies or names())
    parallel = [s for s in asked if s != "serial"]
    fastest: dict = {}
    overlapping = [s for s in parallel if "overlap" in resolve(s).options_used]
    # lockstep; overlapped with the cases whole; and in each chunk count
    modes = [(parallel, 1, False)] + [(overlapping, N, True) for N in chunk_choices]
    for chosen, N, ov in modes:
        for p in predict_curve(chosen, model, m, workers, profile, overlap_chunks=N, overlap=ov, **kw):
            key = (p.strategy, p.workers)
            if key not in fastest or p.mean_step_seconds < fastest[key].mean_step_seconds:
                fastest[key] = p
    preds = list(fastest.values())
    if 1 in workers and "serial" in asked:  # one worker: the serial trainer competes too
        preds += predict_curve(["serial"], model, m, [1], profile, **kw)
    rows = []
    for K in workers:
        ranked = sorted((p for p in preds if p.workers == K), key=lambda p: p.mean_step_seconds)
        if not ranked:  # nothing asked for can run K workers
            continue
        best = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        rows.append(
            {
                "workers": K,
                "best": best.strategy,
                "overlap": best.overlap,
                "overlap_chunks": best.overlap_chunks,
                "step_seconds": best.mean_step_seconds,
                "speedup": best.speedup,
                "efficiency": best.efficiency,
                "runner_up": second.strategy if second else None,
                "margin_percent": (100.0 * (second.mean_step_seconds / best.mean_step_seconds - 1) if second else None),
                "ranking": [(p.strategy, p.mean_step_seconds, p.overlap_chunks if p.overlap else 0) for p in ranked],
            }
        )
    return rows
