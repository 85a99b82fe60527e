"""YAML-defined comparisons: validate a config, expand its grid, run every point, and
append one JSON record per run to a results file (DESIGN.md section 6).

Record schema (one JSON object per line):

    run_id        stable key of the grid point (``--resume`` skips ids already recorded)
    config        the config's name;  status  "ok" | "error";  error  message or null
    strategy, workers, transport, batch_size
    model         {visible, hidden, visible_type, precision, statistics, cd_k}
    training      {steps, warmup, repeats, learning_rate, momentum, weight_decay, sync_every, seed}
    options       the strategy options;  data  {kind, cases, path}
    environment   {cpu, cores, blas, python, numpy, parrbm, platform}
    metrics       {bytes_per_step, bytes_per_sync, bytes_per_step_formula, wire_bytes_per_step,
                   step_seconds {median, p10, p90 over the timed steps of all repeats,
                   repeat_medians}, compute_seconds, comm_seconds, wait_seconds
                   (per step, slowest worker), cases_per_second, speedup_vs_serial, speedup_vs_k1,
                   efficiency, speedup_meaningful, replica_divergence, reconstruction_error,
                   peak_rss_bytes [per worker], memory_bytes [per worker]}
    started, finished   ISO times
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

STRATEGY_NAMES = ["serial", "unit-partitioned", "per-update-sync", "purple-only", "green-only",
                  "parameter-averaging"]


class ConfigError(ValueError):
    """A config that cannot be run, with the file, the field's path and what is allowed."""


def _list_of(item: dict) -> dict:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}


_POS_INT = {"type": "integer", "minimum": 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model", "grid"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "model": {
            "type": "object", "additionalProperties": False, "required": ["visible", "hidden"],
            "properties": {
                "visible": _POS_INT, "hidden": _POS_INT,
                "visible_type": {"enum": ["binary", "gaussian"]},
                "precision": {"enum": ["float32", "float64"]},
                "statistics": {"enum": ["samples", "probabilities"]},
                "cd_k": _POS_INT,
                "gaussian_noise": {"type": "boolean"},
            },
        },
        "data": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["random-binary", "random-gaussian", "digits", "npy"]},
                "path": {"type": "string"}, "cases": _POS_INT, "seed": {"type": "integer", "minimum": 0},
            },
        },
        "training": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "batch_size": _POS_INT, "steps": _POS_INT, "cases": _POS_INT,
                "warmup": {"type": "integer", "minimum": 0},
                "learning_rate": {"type": "number", "exclusiveMinimum": 0},
                "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "weight_decay": {"type": "number", "minimum": 0},
                "sync_every": {"type": "integer", "minimum": 0},
                "seed": {"type": "integer", "minimum": 0},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "blas_threads": _POS_INT, "repeats": _POS_INT,
                "engine": {"enum": ["auto", "native", "python"]},
            },
        },
        "tcp": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "listen": {"type": "string", "minLength": 1},
                "hosts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "launcher": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "python": {"type": "string", "minLength": 1},
                "job_root": {"type": "string", "minLength": 1},
            },
        },
        "options": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "partition": {"enum": ["contiguous", "random"]},
                "shared_weights": {"type": "boolean"},
                "reduce": {"enum": ["master", "allreduce"]},
                "average": {"enum": ["gradients", "weights"]},
                "average_every": _POS_INT,
            },
        },
        "grid": {
            "type": "object", "additionalProperties": False, "required": ["strategy", "workers"],
            "properties": {
                "strategy": _list_of({"enum": STRATEGY_NAMES}),
                "workers": _list_of(_POS_INT),
                "batch_size": _list_of(_POS_INT),
                "precision": _list_of({"enum": ["float32", "float64"]}),
                "visible_type": _list_of({"enum": ["binary", "gaussian"]}),
                "transport": _list_of({"enum": ["threads", "tcp", "mpi"]}),
            },
        },
    },
}

DEFAULTS = {
    "model": {"visible_type": "binary", "precision": "float32", "statistics": "samples", "cd_k": 1,
              "gaussian_noise": False},
    "data": {"kind": "random-binary", "seed": 0},
    "training": {"batch_size": 100, "warmup": 1, "learning_rate": 0.1, "momentum": 0.0,
                 "weight_decay": 0.0, "sync_every": 1, "seed": 0, "timeout": 60.0, "blas_threads": 1,
                 "repeats": 1, "engine": "auto"},
    "options": {},
    "tcp": {},
}


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config; ConfigError names the file and the field."""
    import jsonschema
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with 'model' and 'grid', got {type(raw).__name__}")
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "(top level)"
        raise ConfigError(f"{path}: {where}: {_explain(e)}")
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if isinstance(values, dict) and section in cfg:
            cfg[section].update(values)
        else:
            cfg[section] = values
    cfg.setdefault("name", path.stem)
    training, data = cfg["training"], cfg["data"]
    if "steps" in training and "cases" in training:
        raise ConfigError(f"{path}: training: give 'steps' or 'cases', not both")
    if data["kind"] == "npy":
        if "path" not in data:
            raise ConfigError(f"{path}: data.path: required for kind 'npy'")
        npy = (path.parent / data["path"]) if not Path(data["path"]).is_absolute() else Path(data["path"])
        if not npy.is_file():
            raise ConfigError(f"{path}: data.path: no such file: {npy}")
        data["path"] = str(npy)
    return cfg


def _explain(e) -> str:
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        return f"{e.message}; allowed: {', '.join(allowed)}"
    if e.validator == "enum":
        return f"{e.instance!r} is not allowed; allowed: {', '.join(map(repr, e.validator_value))}"
    if e.validator == "oneOf":
        return f"{e.instance!r} is not allowed here: give one value or a list of them"
    return f"{e.instance!r}: {e.message}"


def grid_points(cfg: dict) -> list[dict]:
    """Every run of the grid, serial baselines first. K = 1 runs once per strategy, on
    threads (with one worker the transport moves nothing)."""
    g = {k: (v if isinstance(v, list) else [v]) for k, v in cfg["grid"].items()}
    batch = g.get("batch_size", [cfg["training"]["batch_size"]])
    prec = g.get("precision", [cfg["model"]["precision"]])
    vis = g.get("visible_type", [cfg["model"]["visible_type"]])
    transports = g.get("transport", ["threads"])
    points = []
    for m, p, v in itertools.product(batch, prec, vis):
        base = {"batch_size": m, "precision": p, "visible_type": v}
        points.append({**base, "strategy": "serial", "workers": 1, "transport": None})
        for s in g["strategy"]:
            if s == "serial":
                continue
            for K in g["workers"]:
                for t in (["threads"] if K == 1 else transports):
                    points.append({**base, "strategy": s, "workers": K, "transport": t})
    for pt in points:
        pt["run_id"] = "|".join(f"{k}={pt[k]}" for k in ("strategy", "workers", "transport", "batch_size",
                                                          "precision", "visible_type"))
    return points


def environment() -> dict:
    from parrbm import __version__, _core

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "blas": _core.blas_info()["config"], "python": sys.version.split()[0], "numpy": np.__version__,
            "parrbm": __version__, "platform": platform.platform()}


def make_data(cfg: dict, V: int, visible_type: str, dtype: str, cases: int) -> np.ndarray:
    d = cfg["data"]
    rng = np.random.default_rng(d.get("seed", 0))
    n = d.get("cases", cases)
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
        X = np.load(d["path"], allow_pickle=False)
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2 or X.shape[1] != V:
        raise ConfigError(f"data: the data have shape {X.shape}, the model has {V} visible units")
    return X


def _spec_for(cfg: dict, pt: dict):
    from parrbm.config import CDSpec

    model, tr = cfg["model"], cfg["training"]
    return CDSpec(n_visible=model["visible"], n_hidden=model["hidden"], batch_size=pt["batch_size"],
                  visible=pt["visible_type"], gaussian_noise=model["gaussian_noise"],
                  statistics=model["statistics"], cd_k=model["cd_k"], learning_rate=tr["learning_rate"],
                  momentum=tr["momentum"], weight_decay=tr["weight_decay"], dtype=pt["precision"],
                  seed=tr["seed"])


def measure_point(cfg: dict, pt: dict) -> dict:
    """One training run of a grid point from the initial model: its timed steps'
    seconds (slowest worker), the per-step compute / communication / wait of the
    slowest worker, the communication statistics and the reconstruction errors."""
    from parrbm.config import ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import SerialStrategy, StrategyOptions

    tr = cfg["training"]
    spec = _spec_for(cfg, pt)
    m = spec.batch_size
    steps = tr.get("steps") or max(1, tr["cases"] // m)
    warmup = tr["warmup"]
    X = make_data(cfg, spec.n_visible, spec.visible, spec.dtype, (warmup + steps) * m)
    order = np.arange((warmup + steps) * m, dtype=np.int64) % X.shape[0]
    state = ModelState.initial(spec)
    K = pt["workers"]
    if pt["strategy"] == "serial":
        from parrbm import _core

        _core.set_blas_threads(tr["blas_threads"])  # the same per-worker resources as a worker
        s = SerialStrategy(spec, state)
        times, errs = [], []
        for i in range(warmup + steps):
            xb = np.ascontiguousarray(X[order[i * m:(i + 1) * m]])
            t0 = time.perf_counter()
            errs.append(s.step(xb, i))
            times.append(time.perf_counter() - t0)
        step_times = np.array(times[warmup:])
        stats = s.comm_stats()
        per_step = {"compute": float(step_times.mean()), "comm": 0.0, "wait": 0.0}
        extra = {"peak_rss_bytes": [_rss()], "memory_bytes": [int(spec.n_visible * spec.n_hidden
                                                                   * spec.np_dtype.itemsize)]}
        errors = np.array(errs)
    else:
        opts = StrategyOptions(sync_every=tr["sync_every"], **cfg["options"])
        r = ParallelRunner(spec, state, pt["strategy"], K, pt["transport"], opts,
                           blas_threads=tr["blas_threads"], timeout=tr["timeout"],
                           tcp=tcp_hosts(cfg["tcp"]), engine=tr["engine"])
        errors = r.run(X, order, 0)
        step_times = np.max(np.array(r.step_seconds), axis=0)[warmup:]
        stats = r.comm_stats()
        slow = max(stats["by_worker"], key=lambda w: w["step_seconds"])
        n = warmup + steps
        per_step = {"compute": slow["compute_seconds"] / n, "comm": slow["comm_seconds"] / n,
                    "wait": slow["wait_seconds"] / n}
        extra = {"peak_rss_bytes": [w["peak_rss_bytes"] or _rss() for w in stats["by_worker"]],
                 "memory_bytes": [w["memory_bytes"] for w in stats["by_worker"]]}
    return {"step_times": step_times, "per_step": per_step, "stats": stats, "extra": extra,
            "errors": errors, "steps": steps, "warmup": warmup}


def point_record(cfg: dict, pt: dict, runs: list[dict], baselines: dict) -> dict:
    """The record of a grid point from its repeated runs: the step times of all repeats
    pooled (a busy moment of a shared machine spoils one repeat, not the median)."""
    from parrbm.analysis import cost

    tr = cfg["training"]
    spec = _spec_for(cfg, pt)
    m, K = spec.batch_size, pt["workers"]
    first, steps, warmup = runs[0], runs[0]["steps"], runs[0]["warmup"]
    stats, errors = first["stats"], first["errors"]
    if any(r["stats"]["bytes_per_step"] != stats["bytes_per_step"] for r in runs):
        raise RuntimeError(f"{pt['run_id']}: the repeats moved different numbers of bytes "
                           f"({[r['stats']['bytes_per_step'] for r in runs]})")
    step_times = np.concatenate([r["step_times"] for r in runs])
    per_step = {k: float(np.mean([r["per_step"][k] for r in runs])) for k in ("compute", "comm", "wait")}
    median = float(np.median(step_times))
    cores = environment_cores()
    key = (m, pt["precision"], pt["visible_type"])
    serial = median if pt["strategy"] == "serial" else baselines.get(("serial",) + key)
    k1 = median if K == 1 else baselines.get((pt["strategy"],) + key)
    formula = cost.step_traffic(
        pt["strategy"], cost.Model(spec.n_visible, spec.n_hidden, visible=spec.visible, precision=spec.dtype,
                                   statistics=spec.statistics, cd_k=spec.cd_k), m, K,
        reduce=cfg["options"].get("reduce", "allreduce"), average=cfg["options"].get("average", "gradients")).total
    metrics = {
        "bytes_per_step": stats["bytes_per_step"], "bytes_per_sync": stats["bytes_per_sync"],
        "bytes_per_step_formula": formula,
        "wire_bytes_per_step": stats.get("wire_bytes_per_step"),
        "step_seconds": {"median": median, "p10": float(np.percentile(step_times, 10)),
                         "p90": float(np.percentile(step_times, 90)),
                         "repeat_medians": [float(np.median(r["step_times"])) for r in runs]},
        "compute_seconds": per_step["compute"], "comm_seconds": per_step["comm"],
        "wait_seconds": per_step["wait"],
        "cases_per_second": m / median,
        "speedup_vs_serial": serial / median if serial else None,
        "speedup_vs_k1": k1 / median if k1 else None,
        "efficiency": (serial / median) / K if serial else None,
        "speedup_meaningful": K <= cores,
        "replica_divergence": stats.get("replica_divergence", 0.0),
        "reconstruction_error": float(np.sum(errors[-steps:]) / (steps * m * spec.n_visible)),
        **first["extra"],
    }
    return {"strategy": pt["strategy"], "workers": K, "transport": pt["transport"], "batch_size": m,
            "model": {"visible": spec.n_visible, "hidden": spec.n_hidden, "visible_type": spec.visible,
                      "precision": spec.dtype, "statistics": spec.statistics, "cd_k": spec.cd_k},
            "training": {"steps": steps, "warmup": warmup, "repeats": len(runs), **{k: tr[k] for k in (
                "learning_rate", "momentum", "weight_decay", "sync_every", "seed")}},
            "options": cfg["options"], "data": {k: cfg["data"].get(k) for k in ("kind", "cases", "path")},
            "metrics": metrics}


def tcp_hosts(section: dict):
    """The config's ``tcp`` section as the launcher's :class:`TCPHosts`; with ``hosts``
    the workers listen on every interface unless ``listen`` says otherwise."""
    from parrbm.harness.launch import TCPHosts

    kw = dict(section)
    if "hosts" in kw and "listen" not in kw:
        kw["listen"] = "0.0.0.0"
    kw.setdefault("listen", "127.0.0.1")
    return TCPHosts(**kw)


def environment_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def append_record(path: Path, record: dict) -> None:
    """One whole line, flushed and fsync'd, with Ctrl-C held off while it is written."""
    line = (json.dumps(record, default=_jsonable) + "\n").encode()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    try:
        with open(path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_records(path: Path) -> list[dict]:
    """The records of a results file; a line that is not JSON names the file and line."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {n} is not a JSON record ({exc.msg})") from exc
    return out


def run_config(cfg: dict, out_dir: Path, *, resume: bool = False, progress=print,
               calibrate: bool = False) -> Path:
    """Run every grid point of a validated config; returns the results file. With
    ``calibrate``, first measure this machine for the time model (quick) and keep the
    profile beside the results (``<name>.profile.json``) for the table and the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"{cfg['name']}.jsonl"
    if calibrate:
        from parrbm.analysis.calibrate import calibrate as measure
        from parrbm.analysis.compare import profile_path

        where = profile_path(results)
        if not (resume and where.exists()):
            transports = sorted({t for t in (pt["transport"] for pt in grid_points(cfg)) if t})
            measure(quick=True, transports=transports or ["threads"], progress=progress).save(where)
    done: dict[str, dict] = {}
    if resume and results.exists():
        done = {r["run_id"]: r for r in read_records(results) if r.get("status") == "ok"}
    elif results.exists():
        results.unlink()
    env = environment()
    points = grid_points(cfg)
    baselines: dict = {}
    for r in done.values():
        _note_baseline(baselines, r)
    if max(p["workers"] for p in points) > env["cores"]:
        progress(f"note: some runs use more workers than the {env['cores']} cores here: their measured "
                 f"speedup is not meaningful (speedup_meaningful=false); the cost model still holds")
    repeats = cfg["training"]["repeats"]
    runs: dict[str, list[dict]] = {}
    started: dict[str, tuple[str, float]] = {}
    failed: set[str] = set()
    # The repeats go round the whole grid: a busy spell of a shared machine then lands on
    # one repeat of several points, not on every repeat of one point.
    for rep in range(repeats):
        for i, pt in enumerate(points, 1):
            label = f"[{i}/{len(points)}] {pt['strategy']} K={pt['workers']} {pt['transport'] or ''} " \
                    f"m={pt['batch_size']} {pt['precision']} {pt['visible_type']}" \
                    + (f" (repeat {rep + 1}/{repeats})" if repeats > 1 else "")
            rid = pt["run_id"]
            if rid in done or rid in failed:
                if rep == 0 and rid in done:
                    progress(f"{label}: recorded, skipped")
                continue
            started.setdefault(rid, (datetime.now(timezone.utc).isoformat(), time.perf_counter()))
            t0 = time.perf_counter()
            try:
                runs.setdefault(rid, []).append(measure_point(cfg, pt))
                if rep + 1 < repeats:
                    progress(f"{label}: {np.median(runs[rid][-1]['step_times']) * 1e3:.1f} ms/step "
                             f"({time.perf_counter() - t0:.1f} s)")
                    continue
                rec = point_record(cfg, pt, runs.pop(rid), baselines)
                rec.update(status="ok", error=None)
                _note_baseline(baselines, {**rec, "run_id": rid})
                msg = f"{rec['metrics']['step_seconds']['median'] * 1e3:.1f} ms/step"
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - the grid goes on; the record says why
                rec = {"strategy": pt["strategy"], "workers": pt["workers"], "transport": pt["transport"],
                       "batch_size": pt["batch_size"], "status": "error", "error": str(exc), "metrics": None}
                msg = f"FAILED: {exc}"
                failed.add(rid)
                runs.pop(rid, None)
            rec.update(run_id=rid, config=cfg["name"], environment=env, started=started[rid][0],
                       finished=datetime.now(timezone.utc).isoformat())
            append_record(results, rec)
            progress(f"{label}: {msg} ({time.perf_counter() - t0:.1f} s)")
    return results


def _note_baseline(baselines: dict, rec: dict) -> None:
    if rec.get("status", "ok") != "ok" or not rec.get("metrics"):
        return
    key = (rec["batch_size"], rec["model"]["precision"], rec["model"]["visible_type"])
    median = rec["metrics"]["step_seconds"]["median"]
    if rec["strategy"] == "serial":
        baselines[("serial",) + key] = median
    elif rec["workers"] == 1:
        baselines[(rec["strategy"],) + key] = median


# ---- tables ------------------------------------------------------------------------------------

def summary_table(records: list[dict], profile=None) -> str:
    """Bytes per 8000 cases (the paper's Table 4.1 form) and speedup / efficiency; with a
    machine profile, the time model's step beside each measured one."""
    ok = [r for r in records if r.get("status") == "ok"]
    predicted = {}
    if profile is not None:
        from parrbm.analysis.compare import predict_record

        for r in ok:
            try:
                predicted[id(r)] = predict_record(r, profile).step_seconds
            except ValueError:  # no figures for this transport in the profile
                pass
    lines = []
    groups: dict = {}
    for r in ok:
        key = (r["model"]["visible_type"], r["model"]["precision"], r["batch_size"])
        groups.setdefault(key, []).append(r)
    for (vis, prec, m), rs in sorted(groups.items()):
        V, H = rs[0]["model"]["visible"], rs[0]["model"]["hidden"]
        lines.append(f"\n{V} x {H}, {vis} visible, {prec}, minibatch {m}")
        lines.append(f"{'strategy':<21}{'K':>3} {'transport':<8}{'MB/8000 cases':>14}{'MB/sync':>9}"
                     f"{'ms/step':>9}{'speedup':>9}{'vs K=1':>8}{'effic.':>8}"
                     + (f"{'model ms':>10}{'error':>8}" if predicted else ""))
        for r in sorted(rs, key=lambda r: (STRATEGY_NAMES.index(r["strategy"]), r["workers"], r["transport"] or "")):
            mt = r["metrics"]
            per_8000 = mt["bytes_per_step"] * 8000 / m / 1e6
            fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
            note = "" if mt.get("speedup_meaningful", True) else "  (K > cores)"
            lines.append(f"{r['strategy']:<21}{r['workers']:>3} {r['transport'] or '-':<8}{per_8000:>14.2f}"
                         f"{mt['bytes_per_sync'] / 1e6:>9.3f}{mt['step_seconds']['median'] * 1e3:>9.1f}"
                         f"{fmt(mt['speedup_vs_serial'], '.2f'):>9}{fmt(mt['speedup_vs_k1'], '.2f'):>8}"
                         f"{fmt(mt['efficiency'], '.2f'):>8}"
                         + (f"{predicted[id(r)] * 1e3:>10.1f}"
                            f"{100 * (predicted[id(r)] / mt['step_seconds']['median'] - 1):>+7.0f}%"
                            if id(r) in predicted else (f"{'-':>10}{'-':>8}" if predicted else "")) + note)
    if predicted:
        from parrbm.analysis.compare import error_summary, predicted_vs_measured, ranking_agreement

        rows = predicted_vs_measured(records, profile)
        e = error_summary(rows)
        if e["runs"]:
            lines.append(f"\ntime model vs measured (runs with K <= cores): median error {100 * e['median']:.1f}%, "
                         f"worst {100 * e['worst']:.1f}% over {e['runs']} runs")
        for g in ranking_agreement(rows):
            noisy = len(g["discordant_within_noise"])
            verdict = ("same order" if g["same"] else
                       f"same order up to {noisy} pair(s) within the p10-p90 noise" if g["same_within_noise"] else
                       "different order: " + ", ".join(f"{a} / {b} ({gap:.1f}% apart)"
                                                       for a, b, gap in g["discordant_beyond_noise"]))
            lines.append(f"ranking K={g['workers']} {g['transport']}: measured {' < '.join(g['measured'])}; "
                         f"model: {verdict}")
    failed = [r for r in records if r.get("status") == "error"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed:")
        lines += [f"  {r['run_id']}: {r['error']}" for r in failed]
    return "\n".join(lines).lstrip("\n")
