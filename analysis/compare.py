"""The model beside the measurements: predicted step time and bytes for every record of
a results file, the errors, and whether the model ranks the strategies as measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parrbm.analysis import cost
from parrbm.analysis.timemodel import Prediction, Profile, predict
from parrbm.harness.results import profile_path  # noqa: F401 (named here too)


def load_profile_for(results: str | Path, given: str | Path | None = None) -> Profile | None:
    if given is not None:
        return Profile.load(given)
    p = profile_path(results)
    return Profile.load(p) if p.exists() else None


def model_of(rec: dict) -> cost.Model:
    md = rec["model"]
    return cost.Model(
        md["visible"],
        md["hidden"],
        visible=md["visible_type"],
        precision=md["precision"],
        statistics=md.get("statistics", "samples"),
        cd_k=md.get("cd_k", 1),
    )


def network_profile(profile: Profile, transport: str, network: dict | None) -> tuple[Profile, str]:
    """(profile, transport name) for a run on an emulated link: the profile's calibration
    of that link (``tcp@105MB/s``, from ``parrbm calibrate --network``) if it has one;
    else the transport's own figures with the link's bandwidth: its payload rate (the
    configured rate is the wire's: TCP over Ethernet carries 1448 payload bytes in 1514)
    and the transport's latency plus the link's emulated one. Either way the link's
    token bucket, as the run's record gives it, is what a collective passes at once."""
    if not network:
        return profile, transport
    hosts = network_transport(transport, None)  # the emulated hosts' unshaped links, if calibrated
    if network.get("bandwidth") is None:
        return profile, hosts if hosts in profile.links else transport
    from parrbm.harness.network import bucket_bytes, payload_rate

    bandwidth = network["bandwidth"]
    name = network_transport(transport, bandwidth)
    burst = (network.get("burst") or bucket_bytes(bandwidth)) * payload_rate(bandwidth) / bandwidth
    base = hosts if hosts in profile.links else transport
    if name in profile.links:
        links = profile.links[name]
    elif base in profile.links:
        payload = payload_rate(bandwidth)
        extra = (network.get("latency") or 0.0) if network.get("latency_emulated") else 0.0
        links = {
            k: type(link)(link.latency + extra, min(link.bandwidth, payload)) for k, link in profile.links[base].items()
        }
    else:
        raise ValueError(f"the profile has no figures for transport {transport!r}")
    p = Profile(**{**vars(profile), "links": dict(profile.links)})
    p.links[name] = {k: type(link)(link.latency, link.bandwidth, burst) for k, link in links.items()}
    return p, name


def network_transport(transport: str, bandwidth: float | None) -> str:
    """How a profile names ``transport`` on an emulated link of ``bandwidth`` bytes/s
    (None: the emulated hosts' unshaped links)."""
    return f"{transport}@unshaped" if bandwidth is None else f"{transport}@{bandwidth / 1e6:g}MB/s"


def bytes_per_cases(rec: dict, cases: int = 8000) -> float:
    """A run's measured bytes for ``cases`` cases, its weight syncs included at their
    period (a sync every step counts in full): the headline "MB / 8000 cases"."""
    tr, opts = rec.get("training") or {}, rec.get("options") or {}
    mt = rec["metrics"]
    try:
        per = cost.syncs_per_step(
            rec["strategy"],
            sync_every=tr.get("sync_every", 1),
            average=opts.get("average", "gradients"),
            average_every=opts.get("average_every", 1),
        )
    except ValueError:  # a plug-in that cannot be imported here: its steps' bytes alone
        per = 0.0
    per = per if rec["workers"] > 1 else 0.0
    return (mt["bytes_per_step"] + per * mt["bytes_per_sync"]) * cases / rec["batch_size"]


def all_cores_label(rec: dict) -> str:
    """How a run names itself in a table: an all-cores serial baseline says its threads."""
    from parrbm.harness.grid import display_name, is_all_cores_baseline

    name = rec.get("strategy_name") if isinstance(rec.get("strategy_name"), str) else display_name(rec["strategy"])
    if (rec.get("overlap_chunks") or 1) > 1:
        name = f"{name}, {rec['overlap_chunks']} chunks"
    elif rec.get("overlap"):
        name = f"{name}, overlapped"
    return f"{name} ({rec['blas_threads']} BLAS thr.)" if is_all_cores_baseline(rec) else name


def dilation_of(rec: dict) -> float:
    """A run's time dilation (1.0: undilated)."""
    return float(rec.get("time_dilation") or 1.0)


def where_label(rec: dict) -> str:
    """Where a run ran, as tables show it: its transport, the emulated link's bandwidth, and
    the time dilation of its hosts (tcp@105MB/s x4)."""
    where = (rec.get("transport") or "-") + (f"@{rec['bandwidth']}" if rec.get("bandwidth") else "")
    return where + (f" x{dilation_of(rec):g}" if dilation_of(rec) != 1.0 else "")


def predict_record(rec: dict, profile: Profile) -> Prediction:
    """The model's step for a recorded run, on the machine it ran on (the workers share
    its cores), over the emulated link it ran on if any."""
    tr, opts = rec.get("training", {}), rec.get("options") or {}
    transport = rec.get("transport") or "threads"
    profile, transport = network_profile(profile, transport, rec.get("network"))
    if rec.get("hosts") and f"{transport}@hosts" in profile.links:  # calibrated between the run's hosts
        transport = f"{transport}@hosts"
    cores = (rec.get("environment") or {}).get("cores") or profile.cores
    if dilation_of(rec) != 1.0:
        cores = None  # each dilated host stands for a machine of its own
    data_kind = (rec.get("data") or {}).get("kind", "random-binary")
    return predict(
        rec["strategy"],
        model_of(rec),
        rec["batch_size"],
        rec["workers"],
        profile,
        transport=transport,
        sync_every=tr.get("sync_every", 1),
        momentum=bool(tr.get("momentum", 0.0)),
        binary_data=data_kind == "random-binary",
        reduce=opts.get("reduce", "allreduce"),
        average=opts.get("average", "gradients"),
        average_every=opts.get("average_every", 1),
        cores=cores,
        overlap_chunks=int(rec.get("overlap_chunks") or 1),
        overlap=bool(rec.get("overlap")),
        dilation=dilation_of(rec),
    )


def workload_of(rec: dict) -> tuple:
    """What a run computes, whatever its strategy, K and transport: its model, minibatch
    and data (runs of one workload share a serial baseline)."""
    md = rec["model"]
    return (
        md["visible"],
        md["hidden"],
        md["visible_type"],
        md["precision"],
        md.get("statistics", "samples"),
        md.get("cd_k", 1),
        rec["batch_size"],
        (rec.get("data") or {}).get("kind", "random-binary"),
    )


def run_speed(records: list[dict], profile: Profile) -> dict[tuple, float]:
    """How much slower this machine ran each workload's kernels than when ``profile`` was
    measured: the serial trainer's measured step (one BLAS thread) over the step the
    profile prices for it, per workload (:func:`workload_of`; the median where a file
    holds several). A shared machine's speed moves by more from one hour to the next than
    the model's own error; the serial baseline measures it in the run itself. Workloads
    without a serial run are absent."""
    from parrbm.harness.grid import is_all_cores_baseline

    ratios: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("status") != "ok" or r["strategy"] != "serial" or not r.get("metrics") or is_all_cores_baseline(r):
            continue
        try:
            priced = predict_record(r, profile).step_seconds
        except ValueError:
            continue
        ratios.setdefault(workload_of(r), []).append(r["metrics"]["step_seconds"]["median"] / priced)
    return {k: float(np.median(v)) for k, v in ratios.items()}


def predicted_vs_measured(records: list[dict], profile: Profile) -> list[dict]:
    """One row per successful run: measured and predicted step (median vs typical step),
    relative error, and the closed-form bytes beside the measured ones.

    Beside the model's figure, the same run priced at the speed the comparison's own
    serial trainer measured (:func:`run_speed`; kernels and overheads scaled, links as
    calibrated): ``predicted_run_speed_seconds`` and ``error_run_speed`` (None without a
    serial run of that model setting), ``run_slowdown`` the factor; the serial run
    itself is then the yardstick (``anchor``), not a prediction. It tells how much of an
    error is the machine's speed moving between the calibration and the comparison."""
    rows = []
    from parrbm.harness.grid import is_all_cores_baseline

    speeds = run_speed(records, profile)
    for r in records:
        # the model prices one BLAS thread a worker: a multi-threaded serial baseline is
        # a yardstick, not a prediction to check
        if r.get("status") != "ok" or not r.get("metrics") or is_all_cores_baseline(r):
            continue
        try:
            p = predict_record(r, profile)
        except ValueError:  # the profile has no figures for this run's transport
            continue
        slowdown = speeds.get(workload_of(r))
        at_speed = None if slowdown is None else predict_record(r, profile.at_speed(slowdown)).step_seconds
        mt = r["metrics"]
        measured = mt["step_seconds"]["median"]
        formula = cost.step_traffic(
            r["strategy"],
            model_of(r),
            r["batch_size"],
            r["workers"],
            reduce=(r.get("options") or {}).get("reduce", "allreduce"),
            average=(r.get("options") or {}).get("average", "gradients"),
        ).total
        rows.append(
            {
                "record_id": id(r),  # the record itself: several runs can share strategy, K and setting
                "strategy": r["strategy"],
                "workers": r["workers"],
                "overlap_chunks": int(r.get("overlap_chunks") or 1),
                "overlap": bool(r.get("overlap")) or (r.get("overlap_chunks") or 1) > 1,
                # on emulated hosts each link is a transport of its own (tcp@105MB/s), and
                # dilated hosts machines of their own (tcp@105MB/s x4)
                "transport": where_label(r) if r.get("transport") else None,
                "time_dilation": dilation_of(r),
                "batch_size": r["batch_size"],
                "visible_type": r["model"]["visible_type"],
                "precision": r["model"]["precision"],
                "measured_seconds": measured,
                "predicted_seconds": p.step_seconds,
                "measured_p10": mt["step_seconds"].get("p10", measured),
                "measured_p90": mt["step_seconds"].get("p90", measured),
                "error": p.step_seconds / measured - 1.0,
                "predicted_run_speed_seconds": at_speed,
                "error_run_speed": None if at_speed is None else at_speed / measured - 1.0,
                "run_slowdown": slowdown,
                "anchor": slowdown is not None and r["strategy"] == "serial",
                "predicted_compute_seconds": p.compute_seconds,
                # a dilated run: what the emulation adds to its K machines' step (calibrated)
                "predicted_emulation_seconds": p.emulation_seconds,
                "predicted_comm_seconds": p.comm_seconds,
                "measured_compute_seconds": mt.get("compute_seconds"),
                "measured_comm_seconds": mt.get("comm_seconds"),
                "bytes_per_step": mt["bytes_per_step"],
                "bytes_per_step_formula": formula,
                "meaningful": mt.get("speedup_meaningful", True),
            }
        )
    return rows


def ranking_agreement(rows: list[dict]) -> list[dict]:
    """For each (model setting, K, transport) with two or more strategies: the order of
    the strategies by measured and by predicted step time, and the pairs the model orders
    the other way. A pair whose measured p10-p90 ranges overlap is within the noise of the
    measurement: neither order is established, so the model cannot contradict it.
    ``discordant`` splits into ``discordant_within_noise`` and ``discordant_beyond_noise``;
    ``same_within_noise``: every pair the model orders differently is within the noise."""
    groups: dict = {}
    for r in rows:
        if r["strategy"] == "serial" or not r["meaningful"]:
            continue
        key = (r["visible_type"], r["precision"], r["batch_size"], r["workers"], r["transport"])
        if r.get("overlap"):  # the strategies are ranked as they ran: lockstep with lockstep
            key = key + (r.get("overlap_chunks", 1),)
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if len(rs) < 2:
            continue
        measured = [r["strategy"] for r in sorted(rs, key=lambda r: r["measured_seconds"])]
        predicted = [r["strategy"] for r in sorted(rs, key=lambda r: r["predicted_seconds"])]
        by = {r["strategy"]: r for r in rs}
        # pairs the model orders the other way, with how far apart the measurements were
        discordant = [
            (a, b, 100.0 * (by[b]["measured_seconds"] / by[a]["measured_seconds"] - 1))
            for i, a in enumerate(measured)
            for b in measured[i + 1 :]
            if predicted.index(a) > predicted.index(b)
        ]
        within = [(a, b, gap) for a, b, gap in discordant if _overlap(by[a], by[b])]
        beyond = [(a, b, gap) for a, b, gap in discordant if not _overlap(by[a], by[b])]
        mode = "lockstep" if len(key) == 5 else ("overlapped" if key[5] == 1 else f"{key[5]} chunks")
        out.append(
            {
                "visible_type": key[0],
                "precision": key[1],
                "batch_size": key[2],
                "workers": key[3],
                "transport": key[4],
                "mode": mode,
                "measured": measured,
                "predicted": predicted,
                "same": measured == predicted,
                "same_best": measured[0] == predicted[0],
                "discordant": discordant,
                "discordant_within_noise": within,
                "discordant_beyond_noise": beyond,
                "same_within_noise": not beyond,
            }
        )
    return out


def _overlap(a: dict, b: dict) -> bool:
    return a["measured_p10"] <= b["measured_p90"] and b["measured_p10"] <= a["measured_p90"]


def error_summary(rows: list[dict]) -> dict:
    """Median and worst |predicted / measured median - 1| over the meaningful rows; and,
    beside them, how many predictions fall inside their run's own measured p10-p90 band and
    the worst distance of one outside it (relative to the median): the error left once the
    run's own step-to-step spread is allowed for. ``median_run_speed`` and
    ``worst_run_speed``: the rows priced at the run's own speed, the rows that set it
    (``anchor``) left out (None if none was)."""
    kept = [r for r in rows if r["meaningful"]]
    at_speed = [abs(r["error_run_speed"]) for r in kept if r.get("error_run_speed") is not None and not r.get("anchor")]
    if not kept:
        return {
            "runs": 0,
            "median": None,
            "worst": None,
            "within_spread": 0,
            "worst_beyond_spread": None,
            "median_run_speed": None,
            "worst_run_speed": None,
        }
    errs = np.array([abs(r["error"]) for r in kept])
    beyond = [
        max(0.0, r["predicted_seconds"] - r["measured_p90"], r["measured_p10"] - r["predicted_seconds"])
        / r["measured_seconds"]
        for r in kept
    ]
    return {
        "runs": len(kept),
        "median": float(np.median(errs)),
        "worst": float(errs.max()),
        "within_spread": sum(b == 0.0 for b in beyond),
        "worst_beyond_spread": float(max(beyond)),
        "median_run_speed": float(np.median(at_speed)) if at_speed else None,
        "worst_run_speed": float(max(at_speed)) if at_speed else None,
    }


def speed_line(rows: list[dict]) -> str | None:
    """The model's error had it priced each run at the speed the comparison's own serial
    trainer measured (rows of :func:`predicted_vs_measured`); None without a serial run."""
    slowdowns = sorted({r["run_slowdown"] for r in rows if r.get("run_slowdown") is not None})
    e = error_summary(rows)
    if not slowdowns or e["median_run_speed"] is None:
        return None
    span = f"{slowdowns[0]:.2f}" if len(slowdowns) == 1 else f"{slowdowns[0]:.2f}-{slowdowns[-1]:.2f}"
    return (
        f"at this run's own speed (the profile's kernels x{span}: the serial trainer's measured step over its "
        f"priced one) the model's error would be median {100 * e['median_run_speed']:.1f}%, worst "
        f"{100 * e['worst_run_speed']:.1f}%"
    )


def emulation_line(rows: list[dict]) -> str:
    """What the model's figures for dilated runs carry beyond the machines they stand for
    (rows of :func:`predicted_vs_measured` with an emulation cost)."""
    factors = [r["predicted_seconds"] / (r["predicted_seconds"] - r["predicted_emulation_seconds"]) for r in rows]
    alone = [(r["predicted_seconds"] - r["predicted_emulation_seconds"]) / r["measured_seconds"] - 1.0 for r in rows]
    errors = np.abs([r["predicted_seconds"] / r["measured_seconds"] - 1.0 for r in rows])
    return (
        f"dilated runs: the model prices their K machines and adds what the emulation itself costs, measured by "
        f"the calibration ({min(factors):.2f}-{max(factors):.2f} x the machines' step): median error "
        f"{100 * float(np.median(errors)):.1f}%, worst {100 * float(errors.max()):.1f}% over {len(rows)} runs; "
        f"the machines alone it prices {100 * float(np.median(np.abs(alone))):.0f}% off the measured steps (median)"
    )
