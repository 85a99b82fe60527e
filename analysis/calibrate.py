"""Measure a machine profile for the time model: GEMM rates, elementwise kernel costs,
strategy overheads, and a ping-pong of every collective on each transport.

    parrbm calibrate --out machine.json [--quick] [--transports threads tcp mpi]

All compute is measured with one BLAS thread (one core per worker, as the harness runs
them). Times are medians of repeats.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from parrbm import _core
from parrbm.analysis.timemodel import LINK_KINDS, Link, Profile, working_set
from parrbm.config import TRANSPORTS


def _median_time(fn, repeats: int, sample_seconds: float = 0.0) -> float:
    """The median seconds of one call of ``fn`` over ``repeats`` samples. With
    ``sample_seconds``, each sample times as many calls as fill that long: a kernel call of
    0.1 ms timed alone is at the mercy of any interrupt or busy millisecond of a shared
    machine (the bit statistics' table came out 2x slow in one calibration of three that
    way). Not for collectives: every rank must make the same calls."""
    t0 = time.perf_counter()
    fn()
    calls = max(1, math.ceil(sample_seconds / max(time.perf_counter() - t0, 1e-9))) if sample_seconds else 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times))


#: how long each timed sample of a kernel lasts (see _median_time)
KERNEL_SAMPLE = 0.01


# ---- compute ----------------------------------------------------------------------------------


def gemm_table(precision: str, quick: bool = False) -> list[list[float]]:
    """flop/s by the smallest GEMM dimension d: the mean over d as rows, columns and depth
    (the shapes CD steps have), the other two dimensions ``big``."""
    dt = np.dtype(precision)
    big = 512 if quick else 1024
    rng = np.random.default_rng(0)
    table = []
    for d in (8, 16, 32, 64, 128, 256, 512, 1024):
        if d > big:
            break
        flops, seconds = 0.0, 0.0
        for a_shape, b_shape, trans_a in (
            ((d, big), (big, big), False),
            ((big, big), (big, d), False),
            ((d, big), (d, big), True),
        ):
            a = rng.random(a_shape).astype(dt)
            b = rng.random(b_shape).astype(dt)
            M = a_shape[1] if trans_a else a_shape[0]
            c = np.zeros((M, b_shape[1]), dt)
            depth = a_shape[0] if trans_a else a_shape[1]
            seconds += _median_time(lambda: _core.gemm(a, b, c, trans_a=trans_a), 5 if quick else 7, KERNEL_SAMPLE)
            flops += 2.0 * M * b_shape[1] * depth
        table.append([d, flops / seconds])
    # A longer short side never makes a GEMM slower; a dip is another process's doing on a
    # shared machine: keep the envelope.
    for i in range(1, len(table)):
        table[i][1] = max(table[i][1], table[i - 1][1])
    return table


#: the wide sides of the streamed-operand GEMMs: from inside the cache to well beyond it
STREAM_SIDES = (1024, 2048, 4096)
#: the short side of the streamed-operand GEMMs (a minibatch's rows)
STREAM_ROWS = 100


def gemm_stream_table(profile: Profile, precision: str, quick: bool = False) -> list[list[float]]:
    """[[operand bytes, seconds per element], ...]: what a (100 x N) @ (N x N) product
    takes beyond ``profile.gemm``'s rate, per element of its N x N operand. The table's
    operands (512 wide) stay in the cache from one call to the next; a weight matrix of
    tens of MB comes from memory on every call, and the BLAS packs it once per call
    whatever the short side, so the cost goes with its elements. 0 at the table's own
    operand size, never below 0 (a product cannot gain from a bigger operand)."""
    dt = np.dtype(precision)
    rng = np.random.default_rng(1)
    big = 512 if quick else 1024
    table = [[float(big * big * dt.itemsize), 0.0]]
    for n in STREAM_SIDES:
        if n <= big:
            continue
        a = rng.random((STREAM_ROWS, n)).astype(dt)
        b = rng.random((n, n)).astype(dt)
        c = np.zeros((STREAM_ROWS, n), dt)
        seconds = _median_time(lambda: _core.gemm(a, b, c), 5 if quick else 7, KERNEL_SAMPLE)
        flops = 2.0 * STREAM_ROWS * n * n
        excess = seconds - flops / profile.gemm_rate(precision, STREAM_ROWS, n, n)
        table.append([float(n * n * dt.itemsize), max(0.0, excess / (n * n))])
    return table


def element_costs(precision: str, quick: bool = False) -> dict[str, float]:
    dt = np.dtype(precision)
    rows, cols = (128, 2048) if quick else (256, 4096)
    n = rows * cols
    rng = np.random.default_rng(1)
    pre = rng.standard_normal((rows, cols)).astype(dt)
    bias = np.zeros(cols, dt)
    out = np.empty_like(pre)
    probs = rng.random((rows, cols)).astype(dt)
    states = (probs < 0.5).astype(dt)
    r = 5 if quick else 7
    cost = {
        "sample": _median_time(lambda: _core.sample_sigmoid(pre, bias, out, None, seed=1), r, KERNEL_SAMPLE) / n,
        "bernoulli": _median_time(lambda: _core.sample_bernoulli(probs, out, seed=1), r, KERNEL_SAMPLE) / n,
        "visible": _median_time(
            lambda: _core.visible_activation(pre, bias, out, "binary", True, None, seed=1), r, KERNEL_SAMPLE
        )
        / n,
        "visible-gaussian": _median_time(
            lambda: _core.visible_activation(pre, bias, out, "gaussian", False, None, seed=1), r, KERNEL_SAMPLE
        )
        / n,
        "pack": _median_time(lambda: _core.pack_columns(states), r, KERNEL_SAMPLE) / n,
    }
    W = np.zeros((cols // 4, cols // 4), dt)
    g = np.ones_like(W)
    cost["update"] = _median_time(lambda: _core.apply_increment(W, g, 0.0), r, KERNEL_SAMPLE) / W.size
    dst = np.empty((rows, 2 * cols), dt)
    cost["copy"] = _median_time(lambda: dst.__setitem__((slice(None), slice(0, cols)), pre), r, KERNEL_SAMPLE) / n
    return cost


#: the 64-case words a bit-statistics update is timed at: 64 to 1024 cases a term
BITSTAT_WORDS = (1, 2, 4, 8, 16)


def bitstat_table(precision: str, quick: bool = False) -> list[list[float]]:
    """[words, seconds per cell-word-term] of the bit statistics (AND + popcount over both
    terms): the cost per word is not flat (unrolled up to four words, looped beyond)."""
    dt = np.dtype(precision)
    rng = np.random.default_rng(3)
    a, b = (256, 512) if quick else (512, 1024)
    W = np.zeros((a, b), dt)
    table = []
    for words in BITSTAT_WORDS:
        cases = 64 * words
        lb, _ = _core.pack_columns((rng.random((cases, a)) < 0.5).astype(dt), words)
        rb, _ = _core.pack_columns((rng.random((cases, b)) < 0.5).astype(dt), words)
        seconds = _median_time(
            lambda: _core.bit_statistics_update(W, None, lb, rb, lb, rb, alpha=1e-3), 5 if quick else 7, KERNEL_SAMPLE
        )
        table.append([words, seconds / (a * b * words * 2)])
    return table


def strategy_overheads(quick: bool = False) -> dict[str, float]:
    """Seconds per step of each strategy's driver on a tiny model at K = 1 (no traffic):
    what a step costs beyond its kernels."""
    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import PARALLEL_STRATEGIES
    from parrbm.strategies.serial import SerialStrategy

    spec = CDSpec(n_visible=8, n_hidden=8, batch_size=4, dtype="float32")
    X = (np.random.default_rng(2).random((4, 8)) < 0.5).astype(np.float32)
    steps = 40 if quick else 100
    out = {}
    order = np.zeros(4 * steps, np.int64)
    Xs = np.repeat(X, steps, axis=0)
    # as the runs time the serial trainer: each step in the core's loop (run_timed)
    s = SerialStrategy(spec, ModelState.initial(spec))
    s.run_timed(Xs, order, 0)
    out["serial"] = float(np.median([np.median(s.run_timed(Xs, order, 0)[1]) for _ in range(3)]))
    for name in PARALLEL_STRATEGIES:
        r = ParallelRunner(spec, ModelState.initial(spec), name, 1)
        r.run(Xs, order, 0)
        t = _median_time(lambda: r.run(Xs, order, 0), 3)
        out[name] = t / steps
    return out


#: the model the strategies are calibrated on (not any experiment's): big enough that its
#: kernels, not the drivers, set the step; small enough to run every strategy in seconds
CALIBRATION_MODEL = (768, 1536, 200)
#: the model whose weight blocks spill out of a shared cache at K = 2 (12 MB a worker in
#: float32): where workers sharing the cores also share the memory bandwidth
SPILLING_MODEL = (2048, 3072, 100)


def _calibration_run(steps: int, shape=CALIBRATION_MODEL, visible: str = "binary", precision: str = "float32"):
    """The calibration model's spec, random data for ``steps`` minibatches (binary, or
    standard normal for Gaussian units) and the cost model."""
    from parrbm.analysis import cost
    from parrbm.config import CDSpec

    V, H, m = shape
    rng = np.random.default_rng(4)
    if visible == "binary":
        spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype=precision, learning_rate=0.05)
        X = (rng.random((steps * m, V)) < 0.3).astype(precision)
    else:  # a rate Gaussian units do not diverge at: a step's time, not its learning, is wanted
        spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype=precision, visible=visible, learning_rate=0.001)
        X = rng.standard_normal((steps * m, V)).astype(precision)
    return spec, X, cost.Model(V, H, visible=visible, precision=precision)


def strategy_efficiency(profile: Profile, quick: bool = False, progress=print) -> dict[str, float]:
    """strategy -> its kernels' time inside its own step at K = 1 / the same kernels timed
    one by one (``profile.kernel_seconds``), on the calibration model, for binary and
    Gaussian units in float32 and float64 (keys by :func:`efficiency_key`). Gaussian
    units' statistics are a GEMM where binary units' are the bit statistics: another
    sequence of kernels. A float64 step moves twice the bytes between kernels, but its
    kernels take twice as long too: its excess is its own, not float32's.

    A step's kernels run slower in sequence than alone: each finds its operands evicted
    by the one before, and the drivers copy between them (the stacked [x; v'] operand,
    column slices). The serial trainer and each strategy at K = 1 are run in interleaved
    rounds, the median per strategy kept, so a busy spell spoils one round, not one
    strategy."""
    from parrbm.analysis.compute import step_work
    from parrbm.analysis.timemodel import efficiency_key
    from parrbm.config import ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import PARALLEL_STRATEGIES, SerialStrategy

    steps, warmup = (8, 1) if quick else (12, 2)
    names = ["serial", *PARALLEL_STRATEGIES]
    out: dict[str, float] = {}
    for precision in ("float32", "float64"):
        for visible in ("binary", "gaussian"):
            spec, X, model = _calibration_run(steps + warmup, visible=visible, precision=precision)
            m = spec.batch_size
            order = np.arange(X.shape[0], dtype=np.int64)
            kernels = {n: profile.kernel_seconds(step_work(n, model, m, 1, 0), precision) for n in names}
            ratios: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(5):
                for name in names:
                    if name == "serial":  # timed in the core's loop, as the runs time it
                        s = SerialStrategy(spec, ModelState.initial(spec))
                        measured = float(np.median(s.run_timed(X, order, 0)[1][warmup:]))
                    else:
                        r = ParallelRunner(spec, ModelState.initial(spec), name, 1)
                        r.run(X, order, 0)
                        measured = float(np.median(r.step_seconds[0][warmup:]))
                    ratios[name].append((measured - profile.overhead.get(name, 0.0)) / kernels[name])
            found = {n: float(np.clip(np.median(v), 0.5, 2.0)) for n, v in ratios.items()}
            progress(
                f"calibrate: kernels in their own steps ({visible} units, {precision}) run at "
                + ", ".join(f"{n} {e:.2f}" for n, e in found.items())
                + " x their one-by-one time"
            )
            for n, e in found.items():
                out[efficiency_key(n, visible, precision)] = e
    return out


def _median_step(spec, X: np.ndarray, strategy: str, K: int, transport: str, *, sync_every: int, warmup: int, network):
    """The median step, after ``warmup`` steps, of ``strategy`` on K workers of one BLAS
    thread over all of ``X`` (the slowest worker's, as the runs time it; on dilated hosts
    the clock's, not divided)."""
    from parrbm.config import ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import StrategyOptions

    F = network.dilation if network is not None else 1.0
    r = ParallelRunner(
        spec,
        ModelState.initial(spec),
        strategy,
        K,
        transport,
        StrategyOptions(sync_every=sync_every),
        blas_threads=1,
        timeout=120.0 * F,
        network=network,
    )
    try:
        r.run(X, np.arange(X.shape[0], dtype=np.int64), 0)
    finally:
        r.close()
    return float(np.median(np.max(np.array(r.step_seconds), axis=0)[warmup:]))


def coscheduling(
    profile: Profile, transports, quick: bool = False, progress=print, network=None
) -> dict[str, dict[str, float]]:
    """What sharing this machine's cores costs a step beyond its kernels and transfers:
    transport -> {K: measured step / modelled step}, K = cores.

    Every strategy is run at K = cores on a calibration model (not any experiment's) and
    its median step compared with the model's step from the rest of ``profile``. The gap
    is real and not in the kernels: each step waits for the slower worker, and the
    workers share the cores with the transport's own threads or progress polling and
    with the operating system. Each strategy's median over a few rounds, and the median of
    those over the strategies, is kept, at least 1. With ``network`` (an unshaped
    LinkSpec) the workers run on emulated hosts, and the factor is the profile's
    ``tcp@unshaped``: a veth pair and a bridge cost the cores more than loopback."""
    from parrbm.analysis.timemodel import predict
    from parrbm.config import ModelState
    from parrbm.strategies import PARALLEL_STRATEGIES, SerialStrategy

    K = max(2, profile.cores)
    # a quick calibration's 2 rounds of 5 steps gave the spilling model's factor anywhere
    # from 1.02 to 1.30 on the same machine: 3 rounds of 9 steps
    steps, warmup = (10, 1) if quick else (16, 2)
    rounds = 3 if quick else 4
    out: dict[str, dict[str, float]] = {}
    by_size: dict[str, list[list[float]]] = {}
    for shape in (CALIBRATION_MODEL, SPILLING_MODEL):
        spec, X, model = _calibration_run(steps + warmup, shape)
        m = spec.batch_size
        serial_model = predict("serial", model, m, 1, profile).step_seconds

        def pace() -> float:
            """How much slower this machine runs right now than the profile says, measured
            on one worker alone: the factor is about sharing, not about a busy moment."""
            s = SerialStrategy(spec, ModelState.initial(spec))
            return _median_time(lambda: s.step(X[:m], 0), steps) / serial_model

        for transport in transports:
            name_in_profile = f"{transport}@unshaped" if network is not None else transport
            if name_in_profile not in profile.links:
                continue
            # round-robin rounds, each strategy's median over them: one busy moment of a
            # shared machine moves one sample, not the factor (one round of each was seen
            # to give anything from 1.02 to 1.28 on the same machine)
            samples: dict[str, list[float]] = {name: [] for name in PARALLEL_STRATEGIES}
            for _ in range(rounds):
                for name in PARALLEL_STRATEGIES:
                    measured = _median_step(
                        spec, X, name, K, transport, sync_every=steps * m, warmup=warmup, network=network
                    )
                    modelled = predict(
                        name, model, m, K, profile, transport=name_in_profile, sync_every=steps * m
                    ).step_seconds
                    samples[name].append(measured / (modelled * max(1.0, pace())))
            ratios = [float(np.median(v)) for v in samples.values()]
            factor = max(1.0, float(np.median(ratios)))
            if shape == CALIBRATION_MODEL:
                out[name_in_profile] = {str(K): factor}
            by_size.setdefault(name_in_profile, []).append([working_set(model, K), factor])
            progress(
                f"calibrate: {name_in_profile}, {K} workers on {profile.cores} cores, {shape[0]} x {shape[1]}: "
                f"steps take {factor:.3f} x the kernels and transfers (per strategy "
                f"{', '.join(f'{x:.2f}' for x in ratios)})"
            )
            if factor > 1.5 and shape == CALIBRATION_MODEL:
                progress(
                    f"calibrate: warning: {factor:.2f} is high; something else was probably running. "
                    f"Calibrate again on a quiet machine for predictions that hold"
                )
    profile.contention_memory.update({t: sorted(v) for t, v in by_size.items()})
    return out


def dilated_waiting(
    profile: Profile,
    transport: str,
    link,
    points,
    quick: bool = False,
    progress=print,
    shapes=(CALIBRATION_MODEL, SPILLING_MODEL),
) -> dict[str, list[list]]:
    """What emulating K machines by hosts dilated in time costs a step beyond the K
    machines themselves: for each (K, F) of ``points`` and each of ``shapes``, [a
    worker's weight bytes, {strategy: measured step (divided by F) / the step the model
    prices for K machines of their own on ``link``, ``*``: the median over the
    strategies}]; into ``profile.dilated`` under the link's transport name
    (``tcp@105MB/s``), which must be calibrated already.

    Every strategy that can split a calibration model runs on K hosts dilated by F in
    round-robin rounds (each strategy's median over them kept). The gap is the
    emulation's, not the machines': a capped host computes in bursts of its quota, at
    its own phase of the cap's period, and a collective waits for the host throttled
    last; the hosts' quotas fill their CPUs, so the kernel's and the driver's work there
    comes out of them; and K hosts' flows through one bridge finish unevenly."""
    from dataclasses import replace

    from parrbm.analysis.compare import network_transport
    from parrbm.analysis.timemodel import dilation_key, predict
    from parrbm.strategies import PARALLEL_STRATEGIES
    from parrbm.strategies.rules import split_refusal

    name = network_transport(transport, link.bandwidth)
    steps, warmup = (8, 2) if quick else (12, 2)
    rounds = 2 if quick else 3
    found: dict[str, list[list]] = {}
    for (K, F), shape in itertools.product(sorted(set(points)), shapes):
        spec, X, model = _calibration_run(steps + warmup, shape)
        m = spec.batch_size
        sync_every = (steps + warmup) * m  # never within the run
        dilated = replace(link, dilation=float(F), host_cores=1.0)
        names = [
            n
            for n in PARALLEL_STRATEGIES
            if not split_refusal(n, n_visible=model.n_visible, n_hidden=model.n_hidden, batch_size=m, workers=K)
        ]
        samples: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(rounds):
            for n in names:
                measured = _median_step(spec, X, n, K, transport, sync_every=sync_every, warmup=warmup, network=dilated)
                modelled = predict(n, model, m, K, profile, transport=name, sync_every=sync_every).step_seconds
                samples[n].append(measured / F / modelled)
        row = {n: float(np.median(v)) for n, v in samples.items()}
        row["*"] = float(np.median(list(row.values())))
        found.setdefault(dilation_key(K, F), []).append([working_set(model, K), row])
        progress(
            f"calibrate: {name}, {K} hosts dilated by {F:g}, {shape[0]} x {shape[1]}: steps take {row['*']:.3f} x "
            f"those of {K} machines of their own (per strategy {', '.join(f'{row[n]:.2f}' for n in names)})"
        )
    found = {k: sorted(rows, key=lambda r: r[0]) for k, rows in found.items()}
    profile.dilated.setdefault(name, {}).update(found)
    return found


# ---- links ------------------------------------------------------------------------------------

SIZES = [1 << 10, 1 << 13, 1 << 16, 1 << 19, 1 << 22, 1 << 24]


def collective_times(comm, sizes=SIZES, repeats: int = 5) -> dict[str, list[list[float]]]:
    """[bytes one worker sends, median seconds] per collective kind, on a Comm of K = 2."""
    from parrbm.partition import Partition

    out: dict[str, list[list[float]]] = {k: [] for k in LINK_KINDS}
    for nbytes in sizes:
        n = max(2, nbytes // 4)  # float32 values sent by one worker
        rows = 8
        parts = Partition.contiguous(2 * (n // rows), 2)
        block = np.ones((rows, n // rows), np.float32)
        full = np.zeros((rows, 2 * (n // rows)), np.float32)
        bits_cols = max(2, (8 * nbytes) // rows)
        bits_parts = Partition.contiguous(2 * bits_cols, 2)
        bits = np.ones((rows, bits_cols), np.float32)
        bits_full = np.zeros((rows, 2 * bits_cols), np.float32)
        flat = np.ones(2 * n, np.float32)
        sends = [np.ones(n, np.float32), np.ones(n, np.float32)]
        outs = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
        calls = {
            "allgather": (lambda: comm.allgather(block, full, parts, phase="x"), block.nbytes),
            "allgather_bits": (
                lambda: comm.allgather_bits(bits, bits_full, bits_parts, phase="x"),
                (rows * bits_cols + 7) // 8,
            ),
            "reduce_scatter": (lambda: comm.reduce_scatter(full, block, parts, phase="x"), block.nbytes),
            "allreduce": (lambda: comm.allreduce(flat, phase="x"), flat.nbytes),
            "alltoall": (lambda: comm.alltoall(sends, outs, phase="x"), sends[0].nbytes),
        }
        for kind, (fn, sent) in calls.items():
            comm.barrier(phase="sync")
            out[kind].append([float(sent), _median_time(fn, repeats)])
    return out


def fit_link(points: list[list[float]], messages: int = 1) -> Link:
    """Least squares t = latency x messages + bytes / bandwidth, in relative error."""
    b = np.array([p[0] for p in points])
    t = np.array([p[1] for p in points])
    A = np.stack([np.full_like(b, messages), b], axis=1) / t[:, None]
    (lat, inv_bw), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    if inv_bw <= 0:  # no size dependence visible: take the largest transfer's rate
        inv_bw = t[-1] / b[-1]
    return Link(latency=max(float(lat), 0.0), bandwidth=float(1.0 / inv_bw))


def _links_from(times: dict) -> dict[str, Link]:
    # allreduce: 2 collectives (reduce-scatter + allgather), each one message at K = 2
    return {k: fit_link(v, messages=2 if k == "allreduce" else 1) for k, v in times.items()}


def threads_links(quick: bool = False) -> dict[str, Link]:
    from parrbm.harness.threads import run_threads

    sizes = SIZES[:-1] if quick else SIZES
    res = run_threads(2, lambda comm: collective_times(comm, sizes), timeout=300.0)
    return _links_from(res[0])


def tcp_links(quick: bool = False) -> dict[str, Link]:
    """Two tcp transports in this process (two threads), over loopback."""
    import os
    import socket

    from parrbm.harness.comm import Comm
    from parrbm.harness.tcp import TCPTransport
    from parrbm.harness.threads import WorkerGate, stop_workers

    secret = os.urandom(32)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    addrs = [lst.getsockname() for lst in listeners]
    sizes = SIZES[:-1] if quick else SIZES
    result, transports, errors = {}, {}, []
    gate = WorkerGate()

    def worker(r):
        if not gate.enter():
            return
        try:
            t = transports[r] = TCPTransport(r, 2, secret, listeners[r], addrs, timeout=120.0)
            try:
                result[r] = collective_times(Comm(t), sizes)
            finally:
                t.close()
        except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
            errors.append(exc)
        finally:
            gate.leave()

    # daemon: a worker still connecting when Ctrl-C lands retries until its timeout, and
    # must not hold the interpreter's exit that long
    threads = [threading.Thread(target=worker, args=(r,), name=f"calibrate-tcp-{r}", daemon=True) for r in range(2)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    except BaseException:
        # Ctrl-C: shut the links, so that the workers leave their collectives now rather
        # than after the last size, and let the exception go only once they have.
        def shut_links() -> None:
            for t in list(transports.values()):
                t.close()
            for lst in listeners:
                lst.close()

        stop_workers(shut_links, threads, 30.0, gate)
        raise
    if errors:
        raise errors[0]
    return _links_from(result[0])


def mpi_links(quick: bool = False, where=None) -> dict[str, Link]:
    """Two ranks under mpiexec: on this machine, or on the first two hosts of ``where``
    (a :class:`parrbm.harness.remote.MPIHosts`; rank 0 prints the figures, mpiexec hands
    them back: no file on any host)."""
    from parrbm.harness.launch import mpiexec

    program = ["-m", "parrbm.analysis.calibrate", "--mpi-rank", *(["--quick"] if quick else [])]
    cmd = where.command(2, program) if where is not None else [mpiexec(), "-n", "2", sys.executable, *program]
    env = {**os.environ, **where.env} if where is not None else None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # a source checkout in the cwd must not shadow the package
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"mpi ping-pong failed: {out.stderr.strip()[-500:]}")
    times = json.loads(out.stdout.strip().splitlines()[-1])
    return _links_from(times)


#: the GEMM every host times to compare its speed with this machine's (float32, one thread)
PROBE_SIDE = 512


def kernel_probe_seconds() -> float:
    """Median seconds of a PROBE_SIDE-cubed float32 GEMM on one BLAS thread (the core's)."""
    _core.set_blas_threads(1)
    rng = np.random.default_rng(0)
    a, b = (rng.random((PROBE_SIDE, PROBE_SIDE)).astype(np.float32) for _ in range(2))
    c = np.zeros((PROBE_SIDE, PROBE_SIDE), np.float32)
    return _median_time(lambda: _core.gemm(a, b, c, trans_a=False), 7, KERNEL_SAMPLE)


def host_speeds(where) -> dict[str, float]:
    """Each host's kernel probe seconds (one rank a host of ``where``, an MPIHosts; the
    figures come back through mpiexec's output): what a step's compute takes there
    against this machine, whose kernels the profile measured."""
    n = len(where.hosts) if where.hosts else 2
    cmd = where.command(n, ["-m", "parrbm.analysis.calibrate", "--host-speed"])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp, env={**os.environ, **where.env})
    if out.returncode != 0:
        raise RuntimeError(f"the kernel probe on the hosts failed: {out.stderr.strip()[-500:]}")
    pairs = json.loads(out.stdout.strip().splitlines()[-1])
    speeds: dict[str, float] = {}
    for host, seconds in pairs:  # a host listed twice: its slower figure
        speeds[host] = max(seconds, speeds.get(host, 0.0))
    return speeds


def _on_host(where, host: str, args: list[str]) -> list[str]:
    """The launcher's command (ssh) that runs ``python -m parrbm.analysis.calibrate ARGS``
    on ``host`` of ``where`` (a TCPHosts), in / (a folder every host has)."""
    import shlex

    remote = " ".join(
        [
            "cd / &&",
            "OPENBLAS_NUM_THREADS=1",
            "exec",
            shlex.quote(where.python),
            "-m",
            "parrbm.analysis.calibrate",
            *map(shlex.quote, args),
        ]
    )
    return [*where.launcher, host, remote]


def tcp_host_speeds(where) -> dict[str, float]:
    """:func:`host_speeds` for the hosts of a tcp section: the probe run on each through
    the launcher, one host at a time."""
    speeds: dict[str, float] = {}
    for host in dict.fromkeys(where.hosts):
        out = subprocess.run(
            _on_host(where, host, ["--host-speed-here"]),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if out.returncode != 0:
            raise RuntimeError(f"the kernel probe on {host} failed: {out.stderr.strip()[-300:]}")
        speeds[host] = float(out.stdout.split()[-1])
    return speeds


def tcp_host_links(where, quick: bool = False) -> dict[str, Link]:
    """The tcp collectives between the first two hosts of ``where`` (a TCPHosts): a rank
    on each, started through the launcher; their ports, the secret and the addresses go
    over its standard input and output, the figures come back on rank 0's."""
    hosts = [where.host_of(0), where.host_of(1)]
    args = ["--tcp-host-rank", *(["--quick"] if quick else [])]
    procs = [
        subprocess.Popen(
            _on_host(where, h, [*args[:1], str(r), *args[1:]]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for r, h in enumerate(hosts)
    ]
    try:
        ports = []
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"a tcp calibration rank did not start: {p.stderr.read().strip()[-300:]}")
            ports.append(int(line.split()[1]))
        secret = os.urandom(32).hex()
        for p in procs:
            p.stdin.write(f"{secret}\n{json.dumps([[h, port] for h, port in zip(hosts, ports)])}\n")
            p.stdin.flush()
        out, err = procs[0].communicate(timeout=600)
        if procs[0].returncode != 0:
            raise RuntimeError(f"the tcp calibration between {hosts} failed: {err.strip()[-300:]}")
        procs[1].wait(timeout=60)
        return _links_from(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _print_collective_times(rank: int, peers, secret: bytes, listener, sizes: list[int], repeats: int) -> None:
    """One rank of a tcp calibration: the collectives' times, printed by rank 0."""
    from parrbm.harness.comm import Comm
    from parrbm.harness.tcp import TCPTransport

    t = TCPTransport(rank, len(peers), secret, listener, peers, timeout=120.0)
    try:
        res = collective_times(Comm(t), sizes, repeats)
    finally:
        t.close()
    if rank == 0:
        print(json.dumps(res), flush=True)


def _tcp_host_rank_main(rank: int, sizes: list[int], repeats: int = 5) -> None:
    import socket

    listener = socket.create_server(("", 0))
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    secret = bytes.fromhex(sys.stdin.readline().strip())
    peers = [tuple(a) for a in json.loads(sys.stdin.readline())]
    _print_collective_times(rank, peers, secret, listener, sizes, repeats)


def _host_speed_main() -> None:
    import socket

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    mine = None
    for r in range(world.Get_size()):  # one host at a time: hosts sharing a machine do not slow each other
        if r == world.Get_rank():
            mine = (socket.gethostname(), kernel_probe_seconds())
        world.Barrier()
    every = world.gather(mine, root=0)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(every), flush=True)


def _mpi_rank_main(sizes: list[int], repeats: int = 5) -> None:
    from parrbm.harness.comm import Comm
    from parrbm.harness.mpi import MPITransport

    t = MPITransport()
    res = collective_times(Comm(t), sizes, repeats)
    if t.rank == 0:
        print(json.dumps(res), flush=True)


# ---- links over an emulated network -------------------------------------------------------------

#: the port the calibration's tcp ranks listen on (inside their own namespaces: no collision)
CALIBRATION_PORT = 47213


def network_sizes(bandwidth: float | None, quick: bool) -> list[int]:
    """The transfer sizes timed on a shaped link: small ones for the latency, and three
    large ones (up to a quarter of a second of transfer, 0.15 s when quick) whose
    differences are all link: each is far beyond what the token bucket lets through at
    once."""
    if bandwidth is None:
        return SIZES[:-1] if quick else SIZES
    top = max(min(int(bandwidth * (0.15 if quick else 0.25)), SIZES[-1]), 1 << 20)
    return [1 << 10, 1 << 14, top // 4, top // 2, top]


def fit_shaped_link(points: list[list[float]], messages: int = 1) -> Link:
    """A shaped link's figures: the bandwidth from the slope of the large transfers' times
    (least squares: the token bucket's burst, sent at once, is in the intercept), the
    latency from the smallest transfer, less its bytes' time."""
    (b0, t0), large = points[0], np.array(points[2:], dtype=float)
    slope = np.polyfit(large[:, 0], large[:, 1], 1)[0]
    bandwidth = 1.0 / slope if slope > 0 else large[-1, 0] / large[-1, 1]
    return Link(latency=float(max(0.0, (t0 - b0 / bandwidth) / messages)), bandwidth=float(bandwidth))


def network_links(transport: str, link, quick: bool = False) -> dict[str, Link]:
    """The collectives of ``transport`` between two emulated hosts whose links are shaped
    to ``link`` (a LinkSpec): two worker processes, one on each host."""
    from parrbm.harness.network import EmulatedNetwork

    sizes = network_sizes(link.bandwidth, quick)
    with EmulatedNetwork(2, link) as net, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        # a shaped link stalls now and then (acknowledgements queue behind data): more repeats
        size_arg = ["--sizes", ",".join(map(str, sizes)), "--repeats", "9" if link.bandwidth else "5"]
        if transport == "mpi":
            from parrbm.harness.launch import _mpi_command

            cmd = _mpi_command(
                Path(tmp), 2, net, env, [sys.executable, "-m", "parrbm.analysis.calibrate", "--mpi-rank", *size_arg]
            )
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp, env=env)
            if out.returncode != 0:
                raise RuntimeError(f"mpi ping-pong on the emulated link failed: {out.stderr.strip()[-500:]}")
            times = json.loads(out.stdout.strip().splitlines()[-1])
        else:
            addresses = ",".join(f"{net.address(r)}:{CALIBRATION_PORT}" for r in range(2))
            secret = os.urandom(32).hex()
            procs = [
                subprocess.Popen(
                    [
                        *net.exec_prefix(r),
                        sys.executable,
                        "-m",
                        "parrbm.analysis.calibrate",
                        "--tcp-rank",
                        str(r),
                        "--addresses",
                        addresses,
                        *size_arg,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=tmp,
                    env=env,
                )
                for r in range(2)
            ]
            for p in procs:  # every rank listens before any connects
                ready = p.stdout.readline()
                if ready.strip() != "LISTENING":
                    p.kill()
            for p in procs:
                p.stdin.write(secret + "\n")
                p.stdin.flush()
            outs = [p.communicate(timeout=900) for p in procs]
            if any(p.returncode for p in procs):
                raise RuntimeError(
                    f"tcp ping-pong on the emulated link failed: {' '.join(o[1].strip()[-300:] for o in outs)}"
                )
            times = json.loads(outs[0][0].strip().splitlines()[-1])
    if link.bandwidth is None:
        return _links_from(times)
    return pooled_link_rate({k: fit_shaped_link(v, messages=2 if k == "allreduce" else 1) for k, v in times.items()})


#: the collectives whose large transfers, at K = 2, are a pairwise exchange of plain bytes
#: (allgather_bits packs and unpacks: its rate is its own)
PAIRWISE_KINDS = ("allgather", "reduce_scatter", "allreduce", "alltoall")


def pooled_link_rate(links: dict[str, Link]) -> dict[str, Link]:
    """One shaped link's payload rate for every plain-bytes collective: the median of
    their fitted rates. At K = 2 each is the same exchange over the same token bucket,
    so their rates differ only by the fit's noise; one calibration fitted the 10 MB/s
    link's allreduce at 7.0 MB/s beside 9.1-9.4 for the other three, and priced a sweep's
    parameter averaging 23 % slow with it. Latencies stay each collective's own."""
    kinds = [k for k in PAIRWISE_KINDS if k in links]
    if not kinds:
        return links
    rate = float(np.median([links[k].bandwidth for k in kinds]))
    return {k: (Link(v.latency, rate, v.burst) if k in kinds else v) for k, v in links.items()}


def _tcp_rank_main(rank: int, addresses: str, sizes: list[int], repeats: int = 5) -> None:
    import socket

    peers = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses.split(",")]
    listener = socket.create_server(peers[rank])
    print("LISTENING", flush=True)
    secret = bytes.fromhex(sys.stdin.readline().strip())
    _print_collective_times(rank, peers, secret, listener, sizes, repeats)


def calibrate_network(profile: Profile, transports, link, quick: bool = False, progress=print) -> Profile:
    """Add to ``profile`` the collectives of each of ``transports`` over emulated hosts
    whose links are shaped to ``link``, as transport ``tcp@105MB/s`` (...): the time model
    prices runs on that network with them. The hosts' unshaped links come first, once
    (``tcp@unshaped``: their collectives and the workers' co-scheduling factor there):
    what moving bytes through a veth pair and a bridge costs the cores, a shaped link's
    price beyond its wire time."""
    from parrbm.analysis.compare import network_transport
    from parrbm.harness.network import LinkSpec

    unshaped = LinkSpec(bandwidth=None, latency=link.latency)
    todo = [(t, unshaped) for t in transports if network_transport(t, None) not in profile.links]
    if link.bandwidth is not None:
        todo += [(t, link) for t in transports]
    for t, spec in todo:
        name = network_transport(t, spec.bandwidth)
        progress(f"calibrate: collectives on {t} over emulated hosts ({name})")
        try:
            profile.links[name] = network_links(t, spec, quick)
        except Exception as exc:  # noqa: BLE001 - the model then prices the link from its rate
            progress(f"calibrate: {name} skipped: {exc}")
            continue
        a = profile.links[name]["allgather"]
        progress(f"calibrate: {name}: latency {a.latency * 1e3:.3f} ms, payload {a.bandwidth / 1e6:.1f} MB/s")
        if spec.bandwidth is None:
            try:
                profile.contention.update(coscheduling(profile, [t], quick, progress, network=spec))
            except Exception as exc:  # noqa: BLE001 - then the transport's own factor is used
                progress(f"calibrate: co-scheduling on {name} skipped: {exc}")
    return profile


def calibrate(*, quick: bool = False, transports=TRANSPORTS, progress=print) -> Profile:
    from parrbm.harness.grid import environment

    _core.set_blas_threads(1)
    env = environment()
    p = Profile(
        cpu=env["cpu"],
        cores=env["cores"],
        blas=str(env["blas"]),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    # Rounds apart in time, the median rate per shape kept: a busy spell of a shared machine
    # slows one round, and would otherwise set every compute prediction; the best round
    # would be as wrong the other way, since runs are measured as medians at typical speed.
    rounds: dict[str, list] = {"float32": [], "float64": []}
    for r in range(3):
        for precision in rounds:
            progress(f"calibrate: GEMM rates, {precision} (round {r + 1})")
            rounds[precision].append(gemm_table(precision, quick))
    for precision, tables in rounds.items():
        p.gemm[precision] = [[d, float(np.median([t[i][1] for t in tables]))] for i, (d, _) in enumerate(tables[0])]
    for precision in rounds:
        progress(f"calibrate: GEMMs with an operand from memory, {precision}")
        streams = [gemm_stream_table(p, precision, quick) for _ in range(3)]
        p.gemm_stream[precision] = [
            [b, float(np.median([t[i][1] for t in streams]))] for i, (b, _) in enumerate(streams[0])
        ]
        progress(f"calibrate: elementwise kernels, {precision}")
        p.element[precision] = element_costs(precision, quick)
        p.bitstat[precision] = bitstat_table(precision, quick)
        # the flat figure a plug-in's own bit statistics (words unknown) are priced at
        p.element[precision]["bitstat"] = p.bitstat[precision][BITSTAT_WORDS.index(4)][1]
    progress("calibrate: strategy overheads")
    p.overhead = strategy_overheads(quick)
    progress("calibrate: strategies' kernels in sequence")
    p.efficiency = strategy_efficiency(p, quick, progress)
    makers = {"threads": threads_links, "tcp": tcp_links, "mpi": mpi_links}
    for t in transports:
        progress(f"calibrate: collectives on {t}")
        try:
            p.links[t] = makers[t](quick)
        except Exception as exc:  # noqa: BLE001 - e.g. no mpiexec: the profile goes without it
            progress(f"calibrate: {t} skipped: {exc}")
    progress("calibrate: workers sharing the cores")
    p.contention = coscheduling(p, transports, quick, progress)
    return p


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m parrbm.analysis.calibrate",
        description="one rank of the collectives' ping-pong (started by calibrate)",
    )
    ap.add_argument("--mpi-rank", action="store_true")
    ap.add_argument("--host-speed", action="store_true")
    ap.add_argument("--host-speed-here", action="store_true")
    ap.add_argument("--tcp-host-rank", type=int)
    ap.add_argument("--tcp-rank", type=int)
    ap.add_argument("--addresses")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    chosen = [int(s) for s in a.sizes.split(",")] if a.sizes else (SIZES[:-1] if a.quick else SIZES)
    if a.host_speed:
        _host_speed_main()
    elif a.host_speed_here:
        print(kernel_probe_seconds(), flush=True)
    elif a.tcp_host_rank is not None:
        _tcp_host_rank_main(a.tcp_host_rank, chosen, a.repeats)
    elif a.mpi_rank:
        _mpi_rank_main(chosen, a.repeats)
    elif a.tcp_rank is not None:
        _tcp_rank_main(a.tcp_rank, a.addresses, chosen, a.repeats)


# ---- the calibration of a comparison (parrbm run) ----------------------------------------------


def cache_dir() -> Path:
    """parrbm's folder in the user's cache: $XDG_CACHE_HOME/parrbm, else ~/.cache/parrbm."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "parrbm"


def dilation_engine() -> dict:
    """How this parrbm caps and keeps busy a dilated host's CPU: a calibration of dilated
    hosts measured under other settings is not this one's."""
    from parrbm.harness import cgroups

    return {"quota_us": cgroups.QUOTA_US, "min_period_us": cgroups.MIN_PERIOD_US, "idle_spinners": True}


def calibration_key(what: dict) -> str:
    """What a calibration depends on, hashed: this machine (host name, CPU, cores, memory),
    its BLAS, parrbm's version and what is calibrated (``what``: transports, links, hosts)."""
    import hashlib
    import platform

    import parrbm
    from parrbm.harness.grid import environment

    env = environment()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    blob = json.dumps(
        {
            "host": platform.node(),
            "cpu": env["cpu"],
            "cores": env["cores"],
            "memory": memory,
            "blas": _core.blas_info(),
            "parrbm": parrbm.__version__,
            "what": what,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def dilated_points(cfg: dict, transports) -> list[tuple]:
    """(undilated link, transport, [(K, F), ...]) of a config's dilated runs of more than
    one worker of one BLAS thread on ``transports`` (the model prices one thread a worker):
    what :func:`dilated_waiting` measures for them."""
    from parrbm.harness.grid import grid_points, link_of

    if int(cfg["training"].get("blas_threads", 1)) != 1:
        return []
    by_link: dict[tuple, set] = {}
    for pt in grid_points(cfg):
        if pt.get("dilation", 1.0) != 1.0 and pt["workers"] > 1 and pt.get("transport") in transports:
            link = link_of(cfg, pt)
            if link is not None and link.bandwidth is not None:
                by_link.setdefault((link.undilated(), pt["transport"]), set()).add((pt["workers"], pt["dilation"]))
    return [(link, t, sorted(pts)) for (link, t), pts in by_link.items()]


class _CountedSteps:
    """A calibration's ``progress``: each message of a step ("calibrate: ...") advances
    the calibration's bar, and is counted (the next calibration's bar then has an ETA)."""

    def __init__(self, say):
        self.say, self.steps = say, 0

    def __call__(self, message: str) -> None:
        self.say(message)
        if message.startswith("calibrate"):
            self.steps += 1
            advance = getattr(self.say, "advance", None)
            if advance is not None:
                advance(1)


def calibrate_for_config(cfg: dict, where: Path, *, resume: bool, progress, lock=None, fresh: bool = False) -> None:
    """Measure this machine for a comparison config's transports and emulated links
    (quick) into ``where`` (``parrbm run``'s calibration: :func:`run_config`'s
    ``calibrate``); on --resume an existing profile is kept (and must load).

    A calibration is kept in the user's cache (:func:`cache_dir`), keyed by
    :func:`calibration_key`: a later comparison on the same machine, BLAS and parrbm that
    needs the same transports and links reuses it, unless ``fresh``."""
    from parrbm.analysis.compare import network_transport
    from parrbm.harness.comparison_config import ConfigError
    from parrbm.harness.grid import (
        NETWORK_TRANSPORTS,
        grid_points,
        mpi_hosts,
        network_links_of,
        tcp_hosts,
        workers_on_hosts,
    )
    from parrbm.harness.job import JOB_TRANSPORTS, job_world
    from parrbm.harness.network import LinkSpec

    if resume and where.exists():
        try:
            Profile.load(where)
        except ValueError as exc:
            raise ConfigError(f"{exc}; or delete it and --resume measures this machine again") from None
        return
    transports = sorted({t for t in (pt["transport"] for pt in grid_points(cfg)) if t})
    if job_world() is not None and set(JOB_TRANSPORTS) & set(transports):
        # the ranks are busy serving the grid; their collectives are not measured yet
        on_job = [t for t in transports if t in JOB_TRANSPORTS]
        transports = [t for t in transports if t not in JOB_TRANSPORTS]
        progress(
            f"note: under an MPI launcher the {' and '.join(on_job)} collectives between the job's ranks are "
            f"not calibrated: the time model prices those runs with this machine's other figures"
        )
    else:  # between this machine's workers: not where the runs on hosts happen
        transports = [t for t in transports if not workers_on_hosts(cfg, t)]
    used = {pt["transport"] for pt in grid_points(cfg)}
    on_hosts = mpi_hosts(cfg.get("mpi")) if "mpi" in used else None
    tcp_on_hosts = tcp_hosts(cfg["tcp"]) if "tcp" in used and (cfg.get("tcp") or {}).get("hosts") else None
    links = network_links_of(cfg)  # the emulated links the runs will use
    if not links and any(p.get("bandwidth") is not None for p in grid_points(cfg)):
        links = [LinkSpec(bandwidth=None)]  # unshaped hosts only: their own figures
    dilated = dilated_points(cfg, transports)
    key = calibration_key(
        {
            "transports": transports or ["threads"],
            "links": [repr(link) for link in links],
            "mpi": repr(on_hosts),
            "tcp": repr(tcp_on_hosts),
            **({"dilated": [[repr(link), t, pts] for link, t, pts in dilated]} if dilated else {}),
            # how dilated hosts are emulated: what their factors measured
            **({"emulation": dilation_engine()} if dilated else {}),
        }
    )
    kept, meta = cache_dir() / f"calibration-{key}.json", cache_dir() / f"calibration-{key}.meta.json"
    if not fresh and kept.is_file():
        try:
            profile = Profile.load(kept)
            when = json.loads(meta.read_text()).get("measured", "?") if meta.is_file() else "?"
        except (ValueError, OSError):
            profile = None  # a damaged cache entry is measured again
        if profile is not None:
            progress(f"calibration: this machine's, measured {when}, kept in {kept} (--recalibrate measures it again)")
            if lock is not None:
                lock.check()
            profile.save(where)
            return
    previous = {}
    try:  # the last calibration of the same kind here: what it took, in time and in steps
        previous = json.loads(meta.read_text()) if meta.is_file() else {}
    except (ValueError, OSError):
        pass
    took, steps = previous.get("seconds"), previous.get("steps")
    progress(
        "calibrating this machine for the time model, once (it is kept for later comparisons): "
        + (
            f"the last calibration of this kind here took {took / 60:.1f} min"
            if isinstance(took, (int, float))
            else f"a few minutes ({len(transports or ['threads'])} transport(s), {len(links)} emulated "
            f"link(s)); the next one will say how long"
        )
    )
    t_start = time.perf_counter()
    stage = getattr(progress, "stage", None)
    if stage is not None:
        stage("calibration", steps if isinstance(steps, int) else None, "steps")
    said, progress = progress, _CountedSteps(progress)
    profile = calibrate(quick=True, transports=transports or ["threads"], progress=progress)
    for link in links:
        calibrate_network(
            profile, [t for t in transports if t in NETWORK_TRANSPORTS], link, quick=True, progress=progress
        )
    for link, t, pts in dilated:
        if network_transport(t, link.bandwidth) not in profile.links:
            continue  # its link was not calibrated (said above): priced as machines of their own
        progress(f"calibrate: {t} on hosts dilated in time ({', '.join(f'K = {K} x{F:g}' for K, F in pts)})")
        try:
            dilated_waiting(profile, t, link, pts, quick=True, progress=progress)
        except Exception as exc:  # noqa: BLE001 - then dilated runs are priced as machines of their own
            progress(f"calibrate: dilated hosts skipped ({exc}); those runs are priced as machines of their own")
    if on_hosts is not None:
        between = ", ".join(on_hosts.hosts[:2]) if on_hosts.hosts else f"the first two of {on_hosts.hostfile}"
        progress(f"calibrate: mpi collectives between {between} (mpi@hosts)")
        try:
            profile.links["mpi@hosts"] = mpi_links(quick=True, where=on_hosts)
        except Exception as exc:  # noqa: BLE001 - the model then prices those runs with this machine's mpi
            progress(f"calibrate: mpi@hosts skipped ({exc}); the mpi runs are priced with this machine's figures")
        calibrate_host_kernels(profile, "mpi@hosts", lambda: host_speeds(on_hosts), progress)
    if tcp_on_hosts is not None:
        progress(
            f"calibrate: tcp collectives between {tcp_on_hosts.host_of(0)} and {tcp_on_hosts.host_of(1)} (tcp@hosts)"
        )
        try:
            profile.links["tcp@hosts"] = tcp_host_links(tcp_on_hosts, quick=True)
        except Exception as exc:  # noqa: BLE001 - the model then prices those runs with this machine's tcp
            progress(f"calibrate: tcp@hosts skipped ({exc}); the tcp runs are priced with this machine's figures")
        calibrate_host_kernels(profile, "tcp@hosts", lambda: tcp_host_speeds(tcp_on_hosts), progress)
    if lock is not None:
        lock.check()  # kept only beside results this run still holds
    profile.save(where)
    seconds = time.perf_counter() - t_start
    counted, progress = progress.steps, said
    progress(f"calibration took {seconds / 60:.1f} min")
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        profile.save(kept)
        from parrbm._files import write_atomic

        write_atomic(
            meta,
            json.dumps(
                {
                    "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "seconds": seconds,
                    "steps": counted,
                }
            ),
        )
    except OSError as exc:  # a read-only home: the next comparison calibrates again
        progress(f"note: the calibration could not be kept in {kept.parent} ({exc.strerror or exc})")


#: hosts whose kernels differ by more than this factor are said to differ in speed
HOST_SPEED_SPREAD = 1.15


def calibrate_host_kernels(profile, name: str, measure, progress) -> None:
    """The same GEMM timed on every host (``measure()``: host -> seconds) and here: each
    host's speed against this machine, said; the slowest host's slowdown prices the runs
    there (``profile.host_slowdown[name]``), since a step waits for its slowest worker."""
    try:
        there = measure()
    except Exception as exc:  # noqa: BLE001 - then the runs are priced with this machine's kernels
        progress(f"calibrate: the kernels on the hosts were not measured ({exc}); priced with this machine's")
        return
    here = kernel_probe_seconds()
    ratios = {h: s / here for h, s in there.items()}
    progress(
        "calibrate: kernels on the hosts against this machine: "
        + ", ".join(f"{h} {r:.2f}x the time" for h, r in ratios.items())
    )
    if max(ratios.values()) > HOST_SPEED_SPREAD * min(ratios.values()):
        slow = max(ratios, key=ratios.get)
        progress(
            f"note: the hosts differ in speed ({slow} is {max(ratios.values()) / min(ratios.values()):.2f}x "
            f"slower than the fastest): a step waits for its slowest worker; the model prices the "
            f"{name.split('@')[0]} runs at {slow}'s speed"
        )
    profile.host_slowdown[name] = max(ratios.values())
