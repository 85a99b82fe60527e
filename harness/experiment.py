"""YAML-defined comparisons: validate a config, expand its grid, run every point, and
append one JSON record per run to a results file (docs/design.md section 6).

Record schema (one JSON object per line):

    run_id        stable key of the grid point (``--resume`` skips ids already recorded)
    config        the config's name;  status  "ok" | "error";  error  message or null
    identity      the experiment: resolved model, data (an npy file by its sha256), training
                  (but timeout) and options; ``--resume`` refuses a file of another identity
    nulls         where a value was NaN or infinite: field -> why it is null (absent if none)
    strategy, workers, transport, batch_size
    model         {visible, hidden, visible_type, precision, statistics, cd_k}
    training      {steps, warmup, repeats, learning_rate, momentum, weight_decay, sync_every, seed}
    options       the strategy options;  data  {kind, cases, path}
    environment   {cpu, cores, blas, python, numpy, parrbm, platform}
    metrics       {bytes_per_step, bytes_per_sync, bytes_per_step_formula, bytes_per_sync_formula,
                   formula_mismatch (what moved unlike the declared closed form), wire_bytes_per_step,
                   step_seconds {median, p10, p90 over the timed steps of all repeats,
                   repeat_medians}, compute_seconds, comm_seconds, wait_seconds
                   (per step, slowest worker), cases_per_second, speedup_vs_serial, speedup_vs_k1,
                   efficiency, speedup_meaningful, replica_divergence, reconstruction_error,
                   peak_rss_bytes [per worker], memory_bytes [per worker]}
    started, finished   ISO times
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from parrbm.harness.comparison_config import ConfigError, check_name
from parrbm.harness.grid import (
    ALL_CORES,
    display_name,
    environment,
    grid_points,
    is_all_cores_baseline,
    workers_on_hosts,
)
from parrbm.harness.job import JOB_TRANSPORTS, job_comm, job_kind, job_world, on_the_job, release_servers, watch_point
from parrbm.harness.measure import check_data_of, measure_point, point_record
from parrbm.harness.results import ResultsError


def run_identity(cfg: dict) -> dict:
    """What makes two records measurements of the same experiment: the resolved model,
    data, training and options. The grid's own axes (strategy, K, transport, minibatch,
    precision, visible type) are in each run's ``run_id``; ``timeout`` is left out (it
    bounds a failure, it does not change a measurement). The data of an npy file count
    by their content (SHA-256), not by where the file lies."""
    from parrbm.harness.results import file_digest

    model = {k: v for k, v in cfg["model"].items() if k not in ("precision", "visible_type")}
    training = {k: v for k, v in cfg["training"].items() if k not in ("timeout", "batch_size")}
    data = {k: v for k, v in cfg["data"].items() if k != "path"}
    if cfg["data"]["kind"] == "npy":
        data["sha256"] = file_digest(cfg["data"]["path"])
    identity = {"model": model, "data": data, "training": training, "options": cfg["options"]}
    if (cfg.get("tcp") or {}).get("hosts"):  # where the runs happen is part of what was measured
        identity["tcp"] = {"hosts": list(cfg["tcp"]["hosts"])}
    if cfg.get("mpi"):
        identity["mpi"] = {k: cfg["mpi"].get(k) for k in ("hosts", "hostfile")}
    if "network" in cfg:  # the bandwidths are a grid axis (in run_id); the latency is not
        identity["network"] = {"latency": cfg["network"]["emulate"].get("latency")}
    return copy.deepcopy(identity)


def serve_grid() -> None:
    """The ranks beyond 0 of an MPI job running a comparison: take part in each mpi grid
    point rank 0 announces (as the workers it needs), until it says the grid is done. Rank
    0 alone reads the config and the data and writes every file; they reach the others
    over MPI, so no file system is shared."""
    world = job_comm()
    cfg = world.bcast(None, root=0)
    if cfg is None:
        return
    while True:
        pt = world.bcast(None, root=0)
        if pt is None:
            return
        watch_point(cfg, pt)
        try:
            measure_point(cfg, pt)
        except Exception:  # noqa: BLE001 - rank 0 records why the point failed
            pass


def _measure(cfg: dict, pt: dict) -> dict:
    """:func:`measure_point`; on the ranks of an MPI job an mpi or tcp point runs on them all."""
    from parrbm.harness.load import LoadProbe

    launched = on_the_job(pt)
    if launched:
        job_comm().bcast(pt, root=0)
        watch_point(cfg, pt)
    # the run's workers are ours (this process, or processes it starts and reaps) unless a
    # launcher started them or they run on hosts of a config's tcp or mpi section
    probe = LoadProbe(ours=not launched and not workers_on_hosts(cfg, pt["transport"]))
    run = measure_point(cfg, pt)
    run["load"] = probe.finish()
    return run


def read_records(path: Path) -> list[dict]:
    """The records of a results file, each run once (see :func:`read_results`)."""
    return read_results(path)[0]


def read_results(path: Path) -> tuple[list[dict], list[str]]:
    """(records, notes): each run once, with notes on what was left out (a torn last
    line, a run recorded twice). ResultsError names the file and line of anything that
    is not a parrbm record."""
    from parrbm.harness.results import file_identity, identity_diff, one_per_run, record_problem, scan

    rf = scan(path)
    notes = []
    if rf.torn is not None:
        notes.append(
            f"{path}: line {rf.torn_line} is incomplete (an interrupted write) and was left out; "
            f"'parrbm run --resume' sets it aside and continues"
        )
    # a record that is not one 'parrbm run' writes is listed apart, with a note; one of
    # another experiment (pasted from another file) makes the file a mix: refused
    fitting = []
    name, identity = file_identity([r for r in rf.records if record_problem(r) is None])
    for i, r in enumerate(rf.records, 1):
        why = record_problem(r)
        if why is not None:
            notes.append(f"{path}: record {i} ({str(r.get('run_id', '?'))[:80]}) left out: {why}")
            continue
        if r.get("config") != name or r.get("identity") != identity:
            diff = identity_diff(identity, r.get("identity")) if r.get("identity") != identity else []
            raise ResultsError(
                f"{path}: record {i} ({str(r.get('run_id'))[:80]}) is of another experiment than "
                f"the file's first record ("
                + (f"experiment {r.get('config')!r}, not {name!r}" if r.get("config") != name else "; ".join(diff[:4]))
                + "): the file mixes experiments"
            )
        fitting.append(r)
    records, more = one_per_run(fitting, path)
    return records, notes + more


def run_config(
    cfg: dict, out_dir: Path, *, resume: bool = False, overwrite: bool = False, progress=print, calibrate=None
) -> Path:
    """Run every grid point of a validated config; returns the results file. With
    ``calibrate`` (``calibrate(cfg, where, resume=, progress=, lock=)``, such as
    :func:`parrbm.analysis.calibrate.calibrate_for_config`), first measure this machine for
    the time model and keep the profile beside the results (``where``:
    ``<name>.profile.json``) for the table and the report.

    An existing results file is continued with ``resume`` (only if it was written under
    the same configuration), set aside and started afresh with ``overwrite``, and
    otherwise refused: recorded results are never deleted."""
    world = job_world()
    if world is None:
        return _run_config(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, calibrate=calibrate)
    # rank 0 of an MPI job: the other ranks serve the grid's mpi points as workers
    try:
        points = grid_points(cfg)
        big = max((p["workers"] for p in points if p["transport"] in JOB_TRANSPORTS), default=0)
        if big > world[1]:
            raise ConfigError(
                f"grid.workers: {big} workers on the job's ranks, but its launcher started {world[1]} "
                f"ranks: start at least {big} (mpiexec -n {big}, srun -n {big}), or give fewer workers"
            )
        if job_kind() != "mpi" and any(p["transport"] == "mpi" for p in points):
            raise ConfigError(
                f"grid.transport: 'mpi', but this job's ranks were started without MPI "
                f"({job_comm().launcher}): run the tcp and threads points only, or start the "
                f"ranks with mpiexec or srun --mpi=pmi2"
            )
        if (cfg.get("tcp") or {}).get("hosts"):
            raise ConfigError(
                "tcp.hosts: the tcp points run on the MPI job's ranks, where its launcher put them; "
                "leave out tcp.hosts (or start the comparison without mpiexec)"
            )
        if "network" in cfg:
            raise ConfigError(
                "network.emulate: the runs go on the MPI job's ranks, where its launcher put them; "
                "emulated hosts do not apply (start the comparison without mpiexec to emulate them)"
            )
    except BaseException:
        release_servers()
        raise
    job_comm().bcast(cfg, root=0)
    try:
        return _run_config(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, calibrate=calibrate)
    finally:
        job_comm().bcast(None, root=0)


def _run_config(cfg: dict, out_dir: Path, *, resume: bool, overwrite: bool, progress, calibrate) -> Path:
    from parrbm.harness.results import WriterLock, profile_path

    if resume and overwrite:
        raise ConfigError("--resume continues a results file and --overwrite starts a new one: give one of them")
    why = check_name(cfg.get("name"))
    if why:
        raise ConfigError(f"name: {why}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})") from None
    results = out_dir / f"{cfg['name']}.jsonl"
    if results.resolve().parent != out_dir.resolve():
        raise ConfigError(f"name: {cfg['name']!r} would write outside {out_dir}")
    identity = run_identity(cfg)
    if cfg["data"]["kind"] == "npy":
        cfg = {**cfg, "_data_sha256": identity["data"]["sha256"]}  # every point trains on these data
    check_data_of(cfg)
    where = profile_path(results)
    try:
        lock = WriterLock(results).__enter__()
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    try:
        done = _results_to_continue(results, where, identity, resume=resume, overwrite=overwrite, progress=progress)
        if calibrate is not None:
            calibrate(cfg, where, resume=resume, progress=progress, lock=lock)
        _run_points(cfg, results, identity, done, progress, lock)
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        lock.__exit__(None, None, None)
    return results


def _results_to_continue(
    results: Path, where: Path, identity: dict, *, resume: bool, overwrite: bool, progress
) -> dict[str, dict]:
    """The finished records of ``results`` by run_id, for ``resume``; with ``overwrite``
    the old file (and its profile) set aside; otherwise an existing file refused."""
    from parrbm.harness.results import scan, set_aside, set_aside_torn

    if results.exists() and not results.is_file():
        raise ConfigError(f"{results}: exists and is not a file")
    if not results.exists() or results.stat().st_size == 0:
        return {}
    if overwrite:
        kept = set_aside(results, "replaced")
        progress(f"note: the previous results were moved to {kept}")
        if where.exists():
            set_aside(where, "replaced")
        return {}
    if not resume:
        try:
            n = len(scan(results).records)
        except ResultsError:
            n = None
        held = f"holds {n} record(s)" if n is not None else "exists (and is not a clean results file)"
        raise ConfigError(
            f"{results} already {held}: give --resume to continue it (same config), "
            f"--overwrite to start again (the old file is kept beside it, renamed), "
            f"or another --out or name"
        )
    try:
        rf = scan(results)
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    from parrbm.harness.results import record_problem

    for i, r in enumerate(rf.records, 1):
        why = record_problem(r)
        if why is not None:
            raise ConfigError(
                f"{results}: record {i} is not a record of 'parrbm run' ({why}); --resume "
                f"would continue a file that holds what no run wrote. Use --overwrite (the old "
                f"file is kept beside it) or another --out or name"
            )
        _check_same_experiment(r, results, identity)
    if rf.torn is not None:
        side = set_aside_torn(rf)
        progress(
            f"note: {results} line {rf.torn_line} was incomplete (an interrupted write); "
            f"it was moved to {side} and the {len(rf.records)} good record(s) kept"
        )
    return {r["run_id"]: r for r in rf.records if r.get("status") == "ok" and "run_id" in r}


#: strategy_sha256 of a plug-in whose source could not be read (defined in no file)
UNKNOWN_SOURCE = "unknown"


def _check_same_experiment(record: dict, results: Path, identity: dict) -> None:
    """Refuse to --resume into a file whose record ran under another configuration or
    another version of its strategy's code."""
    from parrbm.harness.results import identity_diff
    from parrbm.strategies.registry import StrategyError, source_digest

    try:
        now = source_digest(record.get("strategy"))
    except StrategyError:
        now = None
    then = record.get("strategy_sha256")
    if then == UNKNOWN_SOURCE:
        raise ConfigError(
            f"{results}: the code of strategy {record['strategy']!r} in run {record.get('run_id')} "
            f"could not be identified when it was recorded; --resume cannot tell whether it "
            f"changed. Use --overwrite (the old file is kept beside it) or another --out or name"
        )
    if then and now and then != now:
        raise ConfigError(
            f"{results}: the code of strategy {record['strategy']!r} changed since run "
            f"{record.get('run_id')} was recorded (sha256 {then[:12]}... then, {now[:12]}... "
            f"now); --resume would mix two versions. Use --overwrite (the old file is kept "
            f"beside it) or another --out or name"
        )
    diff = identity_diff(record.get("identity"), identity)
    if diff:
        raise ConfigError(
            f"{results} was written under another configuration; --resume would mix two "
            f"experiments. Differing fields: {'; '.join(diff[:8])}"
            + (f" (and {len(diff) - 8} more)" if len(diff) > 8 else "")
            + ". Use --overwrite (the old file is kept beside it) or another --out or name"
        )


def _run_points(cfg: dict, results: Path, identity: dict, done: dict, progress, lock=None) -> None:
    from parrbm.harness.results import append_record

    env = environment()
    points = grid_points(cfg)
    baselines: dict = {}
    for r in done.values():
        _note_baseline(baselines, r)
    if any(p["workers"] > env["cores"] and p.get("dilation", 1.0) == 1.0 for p in points):
        progress(
            f"note: some runs use more workers than the {env['cores']} cores here: their measured "
            f"speedup is not meaningful (speedup_meaningful=false); the cost model still holds"
        )
    repeats = cfg["training"]["repeats"]
    runs: dict[str, list[dict]] = {}
    started: dict[str, tuple[str, float]] = {}
    failed: set[str] = set()
    try:
        _rounds(cfg, results, identity, done, progress, lock, points, baselines, env, runs, started, failed)
    except KeyboardInterrupt:
        # the repeats finished so far are results: each interrupted point is recorded with
        # them (training.repeats says how many of repeats_planned ran)
        kept = 0
        for pt in points:
            rid = pt["run_id"]
            if runs.get(rid) and rid not in done and rid not in failed:
                try:
                    rec = point_record(cfg, pt, runs.pop(rid), baselines)
                except Exception:  # noqa: BLE001 - what cannot be made into a record is not kept
                    continue
                rec.update(status="ok", error=None, repeats_planned=repeats)
                _stamp(rec, cfg, pt, identity, env, started[rid][0])
                append_record(results, rec, lock)
                kept += 1
        if kept:
            progress(f"interrupted: {kept} run(s) recorded with the repeats they finished")
        raise


def _rounds(cfg, results, identity, done, progress, lock, points, baselines, env, runs, started, failed) -> None:
    from parrbm.harness.results import append_record

    repeats = cfg["training"]["repeats"]
    plan, advance = getattr(progress, "plan", None), getattr(progress, "advance", None)
    if plan is not None:  # a progress bar: the measurements to come
        plan(sum(repeats for pt in points if pt["run_id"] not in done))
    # The repeats go round the whole grid: a busy spell of a shared machine then lands on
    # one repeat of several points, not on every repeat of one point.
    for rep in range(repeats):
        for i, pt in enumerate(points, 1):
            label = (
                f"[{i}/{len(points)}] {pt['strategy']} K={pt['workers']} {pt['transport'] or ''} "
                f"m={pt['batch_size']} {pt['precision']} {pt['visible_type']}"
                + (f" at {pt['bandwidth']}" if pt.get("bandwidth") else "")
                + (f" dilated x{pt['dilation']:g}" if pt.get("dilation", 1.0) != 1.0 else "")
                + (f" on {pt['blas_threads']} BLAS threads" if pt.get("baseline") == ALL_CORES else "")
                + (f" (repeat {rep + 1}/{repeats})" if repeats > 1 else "")
            )
            rid = pt["run_id"]
            if rid in done or rid in failed:
                if rep == 0 and rid in done:
                    progress(f"{label}: recorded, skipped")
                continue
            started.setdefault(rid, (datetime.now(timezone.utc).isoformat(), time.perf_counter()))
            t0 = time.perf_counter()
            try:
                try:
                    runs.setdefault(rid, []).append(_measure(cfg, pt))
                finally:
                    if advance is not None:
                        advance(1)
                if rep + 1 < repeats:
                    progress(
                        f"{label}: {np.median(runs[rid][-1]['step_times']) * 1e3:.1f} ms/step "
                        f"({time.perf_counter() - t0:.1f} s)"
                    )
                    continue
                rec = point_record(cfg, pt, runs.pop(rid), baselines)
                rec.update(status="ok", error=None, repeats_planned=repeats)
                _note_baseline(baselines, {**rec, "run_id": rid})
                msg = f"{rec['metrics']['step_seconds']['median'] * 1e3:.1f} ms/step"
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - the grid goes on; the record says why
                rec = {
                    "strategy": pt["strategy"],
                    "workers": pt["workers"],
                    "transport": pt["transport"],
                    "batch_size": pt["batch_size"],
                    "status": "error",
                    "error": str(exc),
                    "metrics": None,
                }
                msg = f"FAILED: {exc}"
                failed.add(rid)
                runs.pop(rid, None)
                if advance is not None and rep + 1 < repeats:
                    advance(repeats - rep - 1)  # its later repeats will not run
            _stamp(rec, cfg, pt, identity, env, started[rid][0])
            append_record(results, rec, lock)
            progress(f"{label}: {msg} ({time.perf_counter() - t0:.1f} s)")


def _stamp(rec: dict, cfg: dict, pt: dict, identity: dict, env: dict, started: str) -> None:
    """What every record of a point carries besides its measurement: its run, experiment,
    machine and times, the strategy's own name and, for a plug-in, its code's digest."""
    from parrbm.strategies.registry import StrategyError, source_digest

    # the plug-in's own name: a reader shows it without importing the plug-in
    rec.update(
        strategy_name=display_name(pt["strategy"]),
        run_id=pt["run_id"],
        config=cfg["name"],
        identity=identity,
        environment=env,
        started=started,
        finished=datetime.now(timezone.utc).isoformat(),
    )
    try:
        digest = source_digest(pt["strategy"])
    except StrategyError:
        digest = UNKNOWN_SOURCE  # a --resume refuses to continue what it cannot identify
    if digest:  # a plug-in: its code is part of what was measured
        rec["strategy_sha256"] = digest


def _note_baseline(baselines: dict, rec: dict) -> None:
    if rec.get("status", "ok") != "ok" or not rec.get("metrics"):
        return
    key = (rec["batch_size"], rec["model"]["precision"], rec["model"]["visible_type"])
    median = rec["metrics"]["step_seconds"]["median"]
    if is_all_cores_baseline(rec):
        baselines[("serial", rec["blas_threads"]) + key] = median
    elif rec["strategy"] == "serial":
        baselines[("serial",) + key] = median
        baselines[("serial-repeats",) + key] = rec["metrics"]["step_seconds"].get("repeat_medians")
    elif rec["workers"] == 1 and rec.get("time_dilation", 1.0) == 1.0:  # a dilated one checks the cap
        baselines[(rec["strategy"],) + key] = median
