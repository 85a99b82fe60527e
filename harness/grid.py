"""A comparison's grid: its points (strategy, K, transport, minibatch, precision, visible
units, link, time dilation, chunks), their settings, and how a run names itself and its baselines."""

from __future__ import annotations

import itertools
import os
import platform
import sys
from pathlib import Path

import numpy as np


def workers_on_hosts(cfg: dict, transport: str | None) -> bool:
    """Whether a transport's workers run on the hosts of the config's ``tcp`` or ``mpi``
    section (not on this machine)."""
    return bool((transport == "tcp" and (cfg.get("tcp") or {}).get("hosts")) or (transport == "mpi" and cfg.get("mpi")))


def mpi_hosts(section: dict | None):
    """The config's ``mpi`` section as :class:`parrbm.harness.remote.MPIHosts`, or None."""
    if not section:
        return None
    from parrbm.harness.remote import MPIHosts

    return MPIHosts(**section)


def grid_points(cfg: dict) -> list[dict]:
    """Every run of the grid, serial baselines first: the serial trainer with each
    worker's BLAS threads (one core), and with as many as the K workers use in all, up
    to the cores here (the baseline a user with K cores would pick: ``baseline:
    all-cores``). K = 1 runs once per strategy, on threads (with one worker the transport
    moves nothing)."""
    g = {k: (v if isinstance(v, list) else [v]) for k, v in cfg["grid"].items()}
    emulate = (cfg.get("network") or {}).get("emulate")
    bandwidths = (
        (emulate["bandwidth"] if isinstance(emulate["bandwidth"], list) else [emulate["bandwidth"]])
        if emulate
        else [None]
    )
    batch = g.get("batch_size", [cfg["training"]["batch_size"]])
    prec = g.get("precision", [cfg["model"]["precision"]])
    vis = g.get("visible_type", [cfg["model"]["visible_type"]])
    transports = g.get("transport", ["threads"])
    chunk_counts = g.get("overlap_chunks", [cfg.get("options", {}).get("overlap_chunks", 1)])
    overlap_modes = g.get("overlap", [bool(cfg.get("options", {}).get("overlap", False))])
    dilations = (
        (
            emulate.get("dilation", OFF)
            if isinstance(emulate.get("dilation", OFF), list)
            else [emulate.get("dilation", OFF)]
        )
        if emulate
        else [OFF]
    )
    per_host = cfg["training"]["blas_threads"]
    points = []
    for m, p, v in itertools.product(batch, prec, vis):
        base = {"batch_size": m, "precision": p, "visible_type": v}
        points.append({**base, "strategy": "serial", "workers": 1, "transport": None})
        for threads in all_cores_threads(cfg):
            points.append(
                {
                    **base,
                    "strategy": "serial",
                    "workers": 1,
                    "transport": None,
                    "baseline": ALL_CORES,
                    "blas_threads": threads,
                }
            )
        for s in g["strategy"]:
            if is_serial(s):
                continue
            for K in g["workers"]:
                for t in ["threads"] if K == 1 else transports:
                    # on emulated hosts (tcp, mpi), one run per link bandwidth and dilation
                    for bw in bandwidths if t in NETWORK_TRANSPORTS else [None]:
                        for F in dilation_factors(dilations, K, per_host, t) if t in NETWORK_TRANSPORTS else [1.0]:
                            # chunk counts for a strategy that overlaps, at K > 1 (one worker moves nothing)
                            for chunks in chunk_counts if K > 1 and overlaps(s) else [1]:
                                # overlapped with the cases whole, or lockstep (chunks imply overlap)
                                for ov in overlap_modes if K > 1 and overlaps(s) and chunks == 1 else [chunks > 1]:
                                    points.append(
                                        {
                                            **base,
                                            "strategy": s,
                                            "workers": K,
                                            "transport": t,
                                            "bandwidth": bw,
                                            "overlap_chunks": chunks,
                                            "overlap": ov,
                                            "dilation": F,
                                        }
                                    )
                if K == 1 and emulate:
                    # one worker dilated: on an emulated host of its own, its CPU capped,
                    # beside the same undilated (it moves nothing: the link is left unshaped)
                    host = next((t for t in transports if t in NETWORK_TRANSPORTS), None)
                    factors = dilation_factors(dilations, 1, per_host, host) if host else []
                    for F in factors if any(F != 1.0 for F in factors) else []:
                        points.append(
                            {
                                **base,
                                "strategy": s,
                                "workers": 1,
                                "transport": host,
                                "bandwidth": UNSHAPED,
                                "overlap_chunks": 1,
                                "overlap": False,
                                "dilation": F,
                            }
                        )
    for pt in points:
        pt.setdefault("bandwidth", None)
        pt.setdefault("overlap_chunks", 1)
        pt.setdefault("overlap", False)
        pt.setdefault("dilation", 1.0)
        pt["run_id"] = (
            "|".join(
                f"{k}={pt[k]}" for k in ("strategy", "workers", "transport", "batch_size", "precision", "visible_type")
            )
            + (f"|bandwidth={pt['bandwidth']}" if pt["bandwidth"] is not None else "")
            + (f"|blas_threads={pt['blas_threads']}" if pt.get("baseline") == ALL_CORES else "")
            + (f"|overlap_chunks={pt['overlap_chunks']}" if pt["overlap_chunks"] != 1 else "")
            + ("|overlap=true" if pt["overlap"] and pt["overlap_chunks"] == 1 else "")
            + (f"|dilation={pt['dilation']:g}" if pt["dilation"] != 1.0 else "")
        )
    return points


#: network.emulate.dilation: undilated; or F = K x the workers' BLAS threads / the cores
#: here where the K workers would outnumber the cores
OFF, AUTO = "off", "auto"
#: the transports whose waits block (a worker that waits uses no CPU): the ones that can
#: be dilated. MPICH's collectives poll its progress engine while they wait: a rank
#: waiting in one uses a whole core, which would burn its host's CPU cap
DILATABLE = ("tcp",)


def dilation_factors(listed: list, K: int, per_host: int, transport: str | None) -> list[float]:
    """The time dilations of a grid point of K workers on ``transport`` (each the factor F,
    1.0 undilated; each once): ``auto`` is K x ``per_host`` / the cores here where that is
    more than 1 and the transport can be dilated, else undilated."""
    out: list[float] = []
    for d in listed:
        if d is False or d == OFF:  # YAML reads a bare off as false
            F = 1.0
        elif d == AUTO:
            need = K * per_host / environment_cores()
            F = float(need) if need > 1 and transport in DILATABLE else 1.0
        else:
            F = float(d)
        if F not in out:
            out.append(F)
    return out


def overlaps(strategy: str) -> bool:
    """The strategy reads ``overlap`` and ``overlap_chunks`` (its exchanges can be overlapped)."""
    from parrbm.strategies.registry import resolve

    return "overlap_chunks" in getattr(resolve(strategy), "options_used", ())


#: a serial run with the BLAS threads of K workers in all: the other speedup baseline
ALL_CORES = "all-cores"


def all_cores_threads(cfg: dict) -> list[int]:
    """The BLAS thread counts of the all-cores serial baselines: K x the workers' BLAS
    threads for each K of the grid, capped at this machine's cores (nobody runs a serial
    trainer with more BLAS threads than cores), beyond the one-core baseline's."""
    per_worker = cfg["training"]["blas_threads"]
    workers = cfg["grid"]["workers"] if isinstance(cfg["grid"]["workers"], list) else [cfg["grid"]["workers"]]
    cores = environment_cores()
    return sorted({min(K * per_worker, cores) for K in workers} - {per_worker} - set(range(per_worker)))


def is_all_cores_baseline(rec: dict) -> bool:
    """A serial run with more BLAS threads: a baseline, not a strategy's run."""
    return rec.get("baseline") == ALL_CORES


#: the transports whose workers an emulated network puts on hosts of their own
NETWORK_TRANSPORTS = ("tcp", "mpi")
#: a network.emulate.bandwidth that leaves the links unshaped (the hosts and links stay)
UNSHAPED = "unshaped"


def network_links_of(cfg: dict) -> list:
    """The distinct shaped links (LinkSpec) a config's runs use."""
    pts = [p for p in grid_points(cfg) if p.get("bandwidth") not in (None, UNSHAPED)]
    return list({link_of(cfg, p).undilated(): None for p in pts})


def link_of(cfg: dict, pt: dict):
    """The emulated link a grid point runs on (a LinkSpec), or None."""
    from parrbm.harness.network import LinkSpec
    from parrbm.units import parse_bandwidth, parse_latency

    if pt.get("bandwidth") is None:
        return None
    latency = cfg["network"]["emulate"].get("latency")
    return LinkSpec(
        None if pt["bandwidth"] == UNSHAPED else parse_bandwidth(pt["bandwidth"]),
        None if latency is None else parse_latency(latency),
        dilation=float(pt.get("dilation", 1.0)),
        host_cores=float(cfg["training"]["blas_threads"]),
    )


def display_name(strategy: str) -> str:
    """A strategy as tables show it: its own name (a plug-in's ``module:Class`` reference
    is the name it declares, when it can be imported here)."""
    from parrbm.strategies.registry import StrategyError, name_of

    try:
        return name_of(strategy)
    except StrategyError:
        return strategy


def is_serial(strategy: str) -> bool:
    from parrbm.strategies.registry import resolve

    return resolve(strategy).name == "serial"


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
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "blas": _core.blas_info()["config"],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "parrbm": __version__,
        "platform": platform.platform(),
    }


def spec_for(cfg: dict, pt: dict):
    from parrbm.config import CDSpec

    model, tr = cfg["model"], cfg["training"]
    return CDSpec(
        n_visible=model["visible"],
        n_hidden=model["hidden"],
        batch_size=pt["batch_size"],
        visible=pt["visible_type"],
        gaussian_noise=model["gaussian_noise"],
        statistics=model["statistics"],
        cd_k=model["cd_k"],
        learning_rate=tr["learning_rate"],
        momentum=tr["momentum"],
        weight_decay=tr["weight_decay"],
        dtype=pt["precision"],
        seed=tr["seed"],
    )


def point_options(cfg: dict, pt: dict):
    """The strategy options of a grid point: the config's, with the point's chunk count and
    overlap."""
    from parrbm.strategies import StrategyOptions

    return StrategyOptions(
        **{
            **cfg["options"],
            "sync_every": cfg["training"]["sync_every"],
            "overlap_chunks": pt.get("overlap_chunks", cfg["options"].get("overlap_chunks", 1)),
            "overlap": bool(pt.get("overlap", cfg["options"].get("overlap", False))),
        }
    )


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
