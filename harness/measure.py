"""One grid point measured: its data, its repeated runs from the initial model, and the
record made of them (the record's fields: :mod:`parrbm.harness.experiment`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parrbm.harness.comparison_config import ConfigError
from parrbm.harness.grid import (
    ALL_CORES,
    environment_cores,
    grid_points,
    link_of,
    mpi_hosts,
    point_options,
    spec_for,
    tcp_hosts,
)
from parrbm.harness.job import job_bcast, job_comm, on_the_job


def make_data(cfg: dict, V: int, visible_type: str, dtype: str, cases: int) -> np.ndarray:
    """The training data of a run, checked as the estimator checks its X: numbers, 2-D,
    finite in ``dtype``, in [0, 1] for binary visible units. ConfigError names the field."""
    from parrbm._validation import check_data

    d = cfg["data"]
    rng = np.random.default_rng(d.get("seed", 0))
    n = d.get("cases", cases)
    where = f"data.path {d['path']}" if d["kind"] == "npy" else f"data.kind {d['kind']}"
    if d["kind"] == "random-binary":
        X = rng.random((n, V)) < 0.5
    elif d["kind"] == "random-gaussian":
        X = rng.standard_normal((n, V))
    elif d["kind"] == "digits":
        from sklearn.datasets import load_digits

        X = load_digits().data / 16.0
        if visible_type == "gaussian":
            X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    else:
        import hashlib
        import io

        try:
            raw = Path(d["path"]).read_bytes()
            X = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConfigError(f"{where}: not a readable .npy array ({exc})") from None
        then = cfg.get("_data_sha256")  # the data the run's records name
        now = hashlib.sha256(raw).hexdigest()
        if then is not None and now != then:
            raise ConfigError(
                f"data.path: {d['path']} changed while the run was going (sha256 {then[:12]}... "
                f"at its start, {now[:12]}... now); the run stopped so that its records do not "
                f"mix two data sets. Restore the file, or start a new run (--overwrite or "
                f"another --out)"
            )
        if not isinstance(X, np.ndarray):  # an .npz archive behind a .npy name
            raise ConfigError(f"{where}: not a .npy array (an archive of several arrays?)")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != V:
        raise ConfigError(
            f"{where}: the data have shape {X.shape}, the model has {V} visible units "
            f"(model.visible): give (cases, {V})"
        )
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise ConfigError(f"{where}: the data must be real numbers, got dtype {X.dtype}")
    try:
        return check_data(where, X, dtype=np.dtype(dtype), name="data", binary_range=visible_type == "binary")
    except ValueError as exc:
        raise ConfigError(f"{exc} ({visible_type} visible units, {dtype})") from None


def check_data_of(cfg: dict) -> None:
    """Make and check the data of every (visible type, precision) of the grid before
    anything runs."""
    seen = set()
    for p in grid_points(cfg):
        key = (p["visible_type"], p["precision"])
        if key not in seen:
            seen.add(key)
            try:
                make_data(cfg, cfg["model"]["visible"], p["visible_type"], p["precision"], p["batch_size"])
            except ConfigError as exc:
                raise ConfigError(f"{cfg.get('source', 'config')}: {exc}") from None


def _data_for(cfg: dict, pt: dict, spec, cases: int) -> np.ndarray:
    """A run's data: made here, or on the ranks of an MPI job made by rank 0 and sent."""
    if not on_the_job(pt):
        return make_data(cfg, spec.n_visible, spec.visible, spec.dtype, cases)
    world = job_comm()
    if world.Get_rank() == 0:
        try:
            X = make_data(cfg, spec.n_visible, spec.visible, spec.dtype, cases)
        except Exception as exc:
            job_bcast(("error", str(exc)))
            raise
        job_bcast(("ok", X))
        return X
    kind, X = job_bcast(None)
    if kind == "error":
        raise RuntimeError(f"rank 0 could not make the data: {X}")
    return X


def measure_point(cfg: dict, pt: dict) -> dict:
    """One training run of a grid point from the initial model: its timed steps'
    seconds (slowest worker), the per-step compute / communication / wait of the
    slowest worker, the communication statistics and the reconstruction errors."""
    from parrbm.config import ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import SerialStrategy

    tr = cfg["training"]
    spec = spec_for(cfg, pt)
    m = spec.batch_size
    steps = tr.get("steps") or max(1, tr["cases"] // m)
    warmup = tr["warmup"]
    X = _data_for(cfg, pt, spec, (warmup + steps) * m)
    order = np.arange((warmup + steps) * m, dtype=np.int64) % X.shape[0]
    state = ModelState.initial(spec)
    K = pt["workers"]
    dilation = float(pt.get("dilation", 1.0))
    if pt["strategy"] == "serial":
        from parrbm import _core

        # one worker's resources; or, for the all-cores baseline, all the workers' in all
        _core.set_blas_threads(pt.get("blas_threads") or tr["blas_threads"])
        s = SerialStrategy(spec, state)
        # timed inside the core, step by step, as the workers' steps are
        errs, times = s.run_timed(X, order, 0)
        step_times = np.asarray(times[warmup:])
        stats = s.comm_stats()
        per_step = {"compute": float(step_times.mean()), "comm": 0.0, "wait": 0.0, "busy": 0.0, "exposed": 0.0}
        extra = {
            "peak_rss_bytes": [_rss()],
            "memory_bytes": [int(spec.n_visible * spec.n_hidden * spec.np_dtype.itemsize)],
        }
        errors = np.array(errs)
        model = s.gather_model()
    else:
        opts = point_options(cfg, pt)
        # a dilated run takes F times as long: so may its waits
        r = ParallelRunner(
            spec,
            state,
            pt["strategy"],
            K,
            pt["transport"],
            opts,
            blas_threads=tr["blas_threads"],
            timeout=tr["timeout"] * dilation,
            tcp=tcp_hosts(cfg["tcp"]),
            network=link_of(cfg, pt),
            mpi=mpi_hosts(cfg.get("mpi")) if pt["transport"] == "mpi" else None,
        )
        try:
            errors = r.run(X, order, 0)
            model = r.state
        finally:
            r.close()
        step_times = np.max(np.array(r.step_seconds), axis=0)[warmup:]
        stats = r.comm_stats()
        slow = max(stats["by_worker"], key=lambda w: w["step_seconds"])
        n = warmup + steps
        per_step = {
            "compute": slow["compute_seconds"] / n,
            "comm": slow["comm_seconds"] / n,
            "wait": slow["wait_seconds"] / n,
            "busy": stats["overlap"]["busy_seconds"] / n,
            "exposed": stats["overlap"]["exposed_seconds"] / n,
        }
        extra = {
            "peak_rss_bytes": [w["peak_rss_bytes"] or _rss() for w in stats["by_worker"]],
            "memory_bytes": [w["memory_bytes"] for w in stats["by_worker"]],
        }
    extra["model_sha256"] = model_digest(model)
    # on dilated hosts everything ran F times slower: the times of the machines they stand for
    measured = np.asarray(step_times)
    step_times = measured / dilation
    per_step = {k: v / dilation for k, v in per_step.items()}
    return {
        "step_times": step_times,
        "measured_step_times": measured,
        "per_step": per_step,
        "stats": stats,
        "extra": extra,
        "errors": errors,
        "steps": steps,
        "warmup": warmup,
        "dilation": dilation,
    }


def model_digest(state) -> str:
    """sha256 of a model's weights and biases (W, b, c: their dtype, shape and bytes): two
    runs that trained the same model bit for bit have the same digest."""
    import hashlib

    h = hashlib.sha256()
    for a in (state.W, state.b, state.c):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def point_record(cfg: dict, pt: dict, runs: list[dict], baselines: dict) -> dict:
    """The record of a grid point from its repeated runs: the step times of all repeats
    pooled (a busy moment of a shared machine spoils one repeat, not the median)."""
    from parrbm.accounting import Model
    from parrbm.harness.runner import hidden_fraction
    from parrbm.harness.traced import step_traffic, traffic_source
    from parrbm.strategies.declared import sync_traffic

    tr = cfg["training"]
    spec = spec_for(cfg, pt)
    m, K = spec.batch_size, pt["workers"]
    first, steps, warmup = runs[0], runs[0]["steps"], runs[0]["warmup"]
    stats, errors = first["stats"], first["errors"]
    if any(r["stats"]["bytes_per_step"] != stats["bytes_per_step"] for r in runs):
        raise RuntimeError(
            f"{pt['run_id']}: the repeats moved different numbers of bytes "
            f"({[r['stats']['bytes_per_step'] for r in runs]})"
        )
    step_times = np.concatenate([r["step_times"] for r in runs])
    per_step = {
        k: float(np.mean([r["per_step"].get(k, 0.0) for r in runs]))
        for k in ("compute", "comm", "wait", "busy", "exposed")
    }
    median = float(np.median(step_times))
    measured = np.concatenate([r.get("measured_step_times", r["step_times"]) for r in runs])
    dilation = float(pt.get("dilation", 1.0))
    cores = environment_cores()
    key = (m, pt["precision"], pt["visible_type"])
    all_cores = pt.get("baseline") == ALL_CORES
    serial = median if pt["strategy"] == "serial" and not all_cores else baselines.get(("serial",) + key)
    # the serial trainer's median in each repeat, timed in the same round as this point's
    serial_by_repeat = baselines.get(("serial-repeats",) + key)
    k1 = median if K == 1 else baselines.get((pt["strategy"],) + key)
    threads = pt.get("blas_threads") or tr["blas_threads"]
    # the workers' BLAS threads in all (an all-cores baseline is its own)
    wanted = threads if all_cores else max(tr["blas_threads"], min(K * tr["blas_threads"], cores))
    serial_all = (
        median if all_cores else serial if wanted == tr["blas_threads"] else baselines.get(("serial", wanted) + key)
    )

    opts = point_options(cfg, pt)
    model = Model(
        spec.n_visible,
        spec.n_hidden,
        visible=spec.visible,
        precision=spec.dtype,
        statistics=spec.statistics,
        cd_k=spec.cd_k,
    )
    formula = step_traffic(pt["strategy"], model, m, K, options=opts).total
    sync_formula = sync_traffic(pt["strategy"], model, K, options=opts).total
    # what the strategy declares against what moved (a plug-in's closed form is held to it too)
    mismatch = []
    if stats["bytes_per_step"] != formula:
        mismatch.append(f"per step: measured {stats['bytes_per_step']} bytes, declared {formula}")
    sync_measured = stats.get("logical_bytes_per_sync", 0) if opts.shared_weights else stats["bytes_per_sync"]
    if stats.get("syncs") and sync_measured != sync_formula:
        mismatch.append(f"per sync: measured {sync_measured} bytes, declared {sync_formula}")
    metrics = {
        "bytes_per_step": stats["bytes_per_step"],
        "bytes_per_sync": stats["bytes_per_sync"],
        "bytes_per_step_formula": formula,
        "bytes_per_sync_formula": sync_formula,
        # "declared": the strategy's closed form; "traced": a dry run of its step (no closed form)
        "traffic_source": traffic_source(pt["strategy"]) if K > 1 else "declared",
        "formula_mismatch": mismatch,
        "wire_bytes_per_step": stats.get("wire_bytes_per_step"),
        # dilated runs: divided by the dilation (the machines the hosts stand for);
        # measured_step_seconds: as the clock here saw them
        "step_seconds": {
            "median": median,
            "p10": float(np.percentile(step_times, 10)),
            "p90": float(np.percentile(step_times, 90)),
            "repeat_medians": [float(np.median(r["step_times"])) for r in runs],
            # each repeat's own spread, against which the repeats' medians are held
            "repeat_p10_p90": [
                [float(np.percentile(r["step_times"], 10)), float(np.percentile(r["step_times"], 90))] for r in runs
            ],
        },
        "measured_step_seconds": {
            "median": float(np.median(measured)),
            "p10": float(np.percentile(measured, 10)),
            "p90": float(np.percentile(measured, 90)),
        },
        "compute_seconds": per_step["compute"],
        "comm_seconds": per_step["comm"],
        "wait_seconds": per_step["wait"],
        # communication overlapped with computation, per step, the workers' mean
        # (definitions: harness/comm.py): in progress, waited for, hidden
        "comm_busy_seconds": per_step["busy"],
        "comm_exposed_seconds": per_step["exposed"],
        "hidden_fraction": hidden_fraction(per_step["exposed"], per_step["busy"]),
        "hidden_fraction_by_phase": {p: v.get("hidden_fraction", 0.0) for p, v in stats.get("by_phase", {}).items()},
        "chunks_used": stats.get("overlap", {}).get("chunks_used", 1),
        "cases_per_second": m / median,
        "speedup_vs_serial": serial / median if serial else None,
        # repeat by repeat, against the serial trainer timed in the same round of the grid
        "speedup_vs_serial_by_repeat": (
            [s / float(np.median(r["step_times"])) for s, r in zip(serial_by_repeat, runs)]
            if serial_by_repeat and len(serial_by_repeat) == len(runs)
            else None
        ),
        # against the serial trainer given every core the K workers use (K x their BLAS
        # threads, up to the cores): the baseline a user with those cores would pick
        "speedup_vs_serial_all_cores": serial_all / median if serial_all else None,
        "serial_all_cores_threads": wanted,
        "speedup_vs_k1": k1 / median if k1 else None,
        "efficiency": (serial / median) / K if serial else None,
        # the K workers had cores of their own: K <= cores, or dilated hosts that together
        # had no more CPU than the cores here
        "speedup_meaningful": K * (threads / dilation if dilation != 1.0 else 1) <= cores,
        "replica_divergence": stats.get("replica_divergence", 0.0),
        "reconstruction_error": float(np.sum(errors[-steps:]) / (steps * m * spec.n_visible)),
        **first["extra"],
    }
    return {
        "strategy": pt["strategy"],
        "workers": K,
        "transport": pt["transport"],
        "batch_size": m,
        **({"baseline": ALL_CORES} if all_cores else {}),
        "blas_threads": threads,
        "bandwidth": pt.get("bandwidth"),
        "overlap_chunks": pt.get("overlap_chunks", 1),
        "overlap": bool(pt.get("overlap", False)) or pt.get("overlap_chunks", 1) > 1,
        "network": stats.get("network"),
        "time_dilation": dilation,
        **({"hosts": stats["hosts"]} if stats.get("hosts") else {}),
        "model": {
            "visible": spec.n_visible,
            "hidden": spec.n_hidden,
            "visible_type": spec.visible,
            "precision": spec.dtype,
            "statistics": spec.statistics,
            "cd_k": spec.cd_k,
        },
        "training": {
            "steps": steps,
            "warmup": warmup,
            "repeats": len(runs),
            **{k: tr[k] for k in ("learning_rate", "momentum", "weight_decay", "sync_every", "seed", "blas_threads")},
        },
        "options": cfg["options"],
        "data": {k: cfg["data"].get(k) for k in ("kind", "cases", "path")},
        # what else the machine did during each repeat (harness/load.py)
        "load": [r["load"] for r in runs if "load" in r],
        "metrics": metrics,
    }


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
