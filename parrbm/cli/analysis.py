"""The analysis commands of the ``parrbm`` command line: cost, calibrate, predict,
advise, plot, report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from parrbm.analysis import cost
from parrbm.cli.errors import UsageError
from parrbm.config import TRANSPORTS

SETTINGS = (("binary", "float32"), ("gaussian", "float32"), ("gaussian", "float64"))


def _parallel() -> list[str]:
    """The default strategies: every registered parallel one."""
    from parrbm.strategies.registry import names

    return names(parallel_only=True)


def _usage(msg: str) -> UsageError:
    return UsageError(msg)


def default_profile() -> Path:
    """Where ``parrbm calibrate`` saves the machine profile unless told otherwise."""
    if os.environ.get("PARRBM_PROFILE"):
        return Path(os.environ["PARRBM_PROFILE"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "parrbm" / "machine.json"


def _settings(args) -> list[tuple[str, str]]:
    if args.visible_type is None and args.precision is None:
        return list(SETTINGS)
    return [(args.visible_type or "binary", args.precision or "float32")]


def _one_setting(args) -> tuple[str, str]:
    """predict / advise: one setting, binary float32 unless told."""
    return args.visible_type or "binary", args.precision or "float32"


def _model(args, visible: str, precision: str) -> cost.Model:
    return cost.Model(
        args.visible, args.hidden, visible=visible, precision=precision, statistics=args.statistics, cd_k=args.cd_k
    )


def _common_model_args(p: argparse.ArgumentParser, batch_required: bool = True) -> None:
    p.add_argument("--visible", type=_positive, required=True, metavar="V", help="visible units")
    p.add_argument("--hidden", type=_positive, required=True, metavar="H", help="hidden units")
    p.add_argument(
        "--batch-size",
        "--batch",
        dest="batch",
        type=_positive,
        required=batch_required,
        default=100,
        metavar="M",
        help="cases per minibatch (--batch: the same)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        nargs="+",
        default=None,
        metavar="K",
        help="worker counts: numbers and ranges like 1..256 (powers of two); default 1 2 4 8",
    )
    p.add_argument("--visible-type", choices=["binary", "gaussian"], help="the visible units' type (default: both)")
    p.add_argument(
        "--precision",
        "--dtype",
        dest="precision",
        choices=["float32", "float64"],
        help="floating-point precision (default: both; --dtype: the same)",
    )
    p.add_argument(
        "--statistics",
        choices=["samples", "probabilities"],
        default="samples",
        help="learning statistics: sampled hidden states (one bit per unit on the wire) or probabilities",
    )
    from parrbm.strategies.rules import MAX_CD_K

    p.add_argument(
        "--cd-k", type=_integer_from(1, maximum=MAX_CD_K), default=1, help=f"Gibbs steps of CD-k (1 to {MAX_CD_K})"
    )
    p.add_argument(
        "--strategy",
        nargs="+",
        type=_strategy,
        metavar="STRATEGY",
        help="strategies: registered names or module:Class (default: every registered parallel strategy)",
    )
    p.add_argument(
        "--sync-every",
        type=_non_negative,
        default=80,
        help="unit-partitioned: minibatches between weight syncs (0: never)",
    )
    from parrbm.strategies.base import OPTION

    p.add_argument(
        "--average",
        choices=list(OPTION["average"].choices),
        default=OPTION["average"].default,
        help="parameter averaging: sum gradients every step, or average weights every --average-every",
    )
    p.add_argument(
        "--average-every",
        type=_positive,
        default=1,
        metavar="T",
        help="parameter averaging with --average weights: minibatches between averaging rounds",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _strategy(text: str) -> str:
    from parrbm.strategies.registry import StrategyError, load

    try:
        load(text)
    except StrategyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _integer_from(minimum: int, meaning: str = "", maximum: int | None = None):
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum``)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}{meaning}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be <= {maximum}")
        return v

    return parse


_positive = _integer_from(1)
_non_negative = _integer_from(0, " (0: never)")


def _workers(text: str) -> list[int]:
    if ".." in text:
        lo, _, hi = text.partition("..")
        a, b = _positive(lo), _positive(hi)
        if b < a:
            raise argparse.ArgumentTypeError(f"range {text!r} runs backwards")
        out, k = [], a
        while k <= b:
            out.append(k)
            k *= 2
        return out
    return [_positive(text)]


def _flat_workers(args) -> list[int]:
    if not args.workers:
        return [1, 2, 4, 8]
    return sorted({k for group in args.workers for k in group})


def _runnable(args, default: list[str]) -> list[tuple[str, int]]:
    """The (strategy, K) pairs to price: only what the trainer would run (the same rules,
    :mod:`parrbm.strategies.rules`). A pair the user asked for by name is refused with
    the reason; of the default strategies, those that cannot run at some K are left out
    there with a note; a K no strategy can run is refused."""
    from parrbm.strategies.rules import split_refusal

    strategies = args.strategy or default
    workers = _flat_workers(args)
    pairs, refused = [], []
    for s in strategies:
        for K in workers:
            why = split_refusal(s, n_visible=args.visible, n_hidden=args.hidden, batch_size=args.batch, workers=K)
            (refused if why else pairs).append((s, K, why))
    if refused and args.strategy:
        s, K, why = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise _usage(f"--strategy {s} --workers {K}: {why}{more}")
    for K in workers:
        if not any(k == K for _, k, _ in pairs):
            reasons = "; ".join(dict.fromkeys(why for _, k, why in refused if k == K))
            raise _usage(
                f"--workers {K}: no strategy can run {K} workers on a {args.visible} x {args.hidden} "
                f"model with minibatch {args.batch}: {reasons}"
            )
    for s in strategies:
        left_out = [(K, why) for t, K, why in refused if t == s]
        if left_out:
            print(
                f"note: {s} is left out at K = {', '.join(str(K) for K, _ in left_out)}: {left_out[0][1]}",
                file=sys.stderr,
            )
    return [(s, K) for s, K, _ in pairs]


# ---- cost ---------------------------------------------------------------------------------------


def cost_rows(args) -> list[dict]:
    rows = []
    pairs = _runnable(args, _parallel())
    for visible, precision in _settings(args):
        model = _model(args, visible, precision)
        for s, K in pairs:
            kw = dict(average=args.average)
            step = cost.step_traffic(s, model, args.batch, K, **kw)
            sync = cost.sync_traffic(s, model, K, **kw)
            periods = dict(sync_every=args.sync_every, average_every=args.average_every, **kw)
            per_step = cost.syncs_per_step(s, **periods)
            cases = cost.traffic_for_cases(s, model, args.batch, K, args.cases, **periods)
            rows.append(
                {
                    "strategy": s,
                    "workers": K,
                    "visible_type": visible,
                    "precision": precision,
                    "visible": args.visible,
                    "hidden": args.hidden,
                    "batch_size": args.batch,
                    "cases": args.cases,
                    "bytes_per_step": step.total,
                    "busiest_worker_bytes_per_step": step.busiest,
                    "bytes_per_sync": sync.total,
                    "busiest_worker_bytes_per_sync": sync.busiest,
                    "syncs_per_step": per_step,
                    # every sync included: one every step counts in full, a periodic one once a period
                    "bytes_per_step_with_syncs": step.total + per_step * sync.total,
                    "bytes": cases["bytes"],
                    "step_bytes": cases["step_bytes"],
                    "sync_bytes": cases["sync_bytes"],
                    "syncs": cases["syncs"],
                    "by_phase": step.by_phase(),
                }
            )
    return rows


def cmd_cost(args) -> int:
    rows = cost_rows(args)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    mb = 1e6
    print(
        f"Bytes sent by all workers (MB = 10^6 bytes); {args.visible} x {args.hidden} RBM, "
        f"minibatch {args.batch}; weight syncs included at their period (unit-partitioned every "
        f"{args.sync_every or 'never'}; parameter averaging: {args.average}"
        f"{f', every {args.average_every}' if args.average == 'weights' else ''})"
    )
    print(
        "MB / step: a mean step, its syncs included; of which syncs: the syncs' share of the cases' bytes "
        "(the rest is the paper's Table 4.1 figure)"
    )
    for visible, precision in _settings(args):
        print(f"\n{visible} visible, {precision}")
        print(
            f"{'strategy':<21}{'K':>4}{f'MB / {args.cases} cases':>20}{'of which syncs':>16}{'MB / step':>11}"
            f"{'busiest':>9}{'MB / sync':>11}  syncs"
        )
        for r in rows:
            if (r["visible_type"], r["precision"]) != (visible, precision):
                continue
            per = r["syncs_per_step"]
            when = (
                "never"
                if per <= 0 or r["workers"] == 1
                else "every step"
                if per >= 1
                else f"every {round(1 / per)} steps"
            )
            print(
                f"{r['strategy']:<21}{r['workers']:>4}{r['bytes'] / mb:>20.3f}{r['sync_bytes'] / mb:>16.3f}"
                f"{r['bytes_per_step_with_syncs'] / mb:>11.3f}{r['busiest_worker_bytes_per_step'] / mb:>9.3f}"
                f"{r['bytes_per_sync'] / mb:>11.3f}  {when}"
            )
        K = max(_flat_workers(args))
        if K > 1:
            print(f"crossovers at K = {K}:")
            for c in cost.crossovers(_model(args, visible, precision), args.batch, K, sync_every=args.sync_every):
                print(
                    f"  {'yes' if c['holds'] else 'no ':<4}{c['name']}: {c['inequality']} "
                    f"({c['lhs']:.4g} vs {c['rhs']:.4g})"
                )
    return 0


# ---- calibrate / predict / advise ---------------------------------------------------------------------


def cmd_calibrate(args) -> int:
    from parrbm.analysis.calibrate import calibrate

    out = Path(args.out) if args.out else default_profile()
    if out.exists():  # replace an older profile, never another file
        from parrbm.analysis.timemodel import Profile

        try:
            Profile.load(out)
        except ValueError:
            raise _usage(
                f"--out {out}: exists and is not a machine profile; it is left alone "
                f"(give a new file or an older profile to replace)"
            ) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _usage(f"--out {out}: cannot create its directory ({exc.strerror or exc})") from None
    links = _network_links_arg(args)
    dilated = _dilated_arg(args)
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    p = calibrate(quick=args.quick, transports=args.transports, progress=progress)
    if links:
        from parrbm.analysis.calibrate import calibrate_network, dilated_waiting

        for link in links:
            calibrate_network(p, [t for t in args.transports if t in ("tcp", "mpi")], link, args.quick, progress)
            if dilated:
                dilated_waiting(p, "tcp", link, dilated, args.quick, progress)
    p.save(out)
    print(
        f"GEMM rate (largest class): float32 {p.gemm['float32'][-1][1] / 1e9:.1f} GFLOP/s, "
        f"float64 {p.gemm['float64'][-1][1] / 1e9:.1f} GFLOP/s per core"
    )
    for t, links in p.links.items():
        link = links["allgather"]
        print(f"{t}: latency {link.latency * 1e3:.3f} ms, bandwidth {link.bandwidth / 1e6:.0f} MB/s (allgather)")
    print(f"profile: {out}")
    return 0


def _network_links_arg(args) -> list:
    """calibrate's --network (emulated links to measure the collectives over), checked
    before the long measurements start."""
    if not args.network:
        return []
    from parrbm.analysis.timemodel import parse_bandwidth, parse_latency
    from parrbm.harness.network import LinkSpec, missing

    why = missing()
    if why:
        raise _usage(f"--network: {why}")
    if not any(t in ("tcp", "mpi") for t in args.transports):
        raise _usage("--network measures tcp and mpi over emulated hosts: give --transports tcp and/or mpi")
    try:
        latency = None if args.latency is None else parse_latency(args.latency)
        return [LinkSpec(parse_bandwidth(bw), latency) for bw in args.network]
    except ValueError as exc:
        raise _usage(f"--network/--latency: {exc}") from None


def _dilated_arg(args) -> list[tuple[int, float]]:
    """calibrate's --dilated KxF ... (K hosts dilated by F), checked before the long
    measurements start."""
    if not args.dilated:
        return []
    from parrbm.harness.network import dilation_missing, dilation_refusal

    if not args.network or "tcp" not in args.transports:
        raise _usage("--dilated measures tcp's hosts on an emulated link: give --network BANDWIDTH and tcp")
    why = dilation_missing()
    if why:
        raise _usage(f"--dilated: {why}")
    points = []
    for item in args.dilated:
        K, _, F = item.lower().partition("x")
        try:
            point = (int(K), float(F))
        except ValueError:
            point = None
        if point is None or point[0] < 2:
            raise _usage(f"--dilated {item!r}: give K hosts x a factor F, K at least 2 (e.g. 4x2 8x4)")
        refusal = dilation_refusal(point[1])
        if refusal or point[1] == 1.0:
            raise _usage(f"--dilated {item!r}: {refusal or 'a factor of 1 is undilated'}")
        points.append(point)
    return points


def _profile_for(args):
    from parrbm.analysis.timemodel import Profile, parse_bandwidth, parse_latency

    path = Path(args.profile) if args.profile else default_profile()
    if not path.exists():
        raise _usage(f"no machine profile at {path}: run 'parrbm calibrate' first (or give --profile FILE)")
    try:
        profile = Profile.load(path)
    except ValueError as exc:
        raise _usage(str(exc)) from exc
    transport = args.transport
    if args.bandwidth or args.latency:
        if not (args.bandwidth and args.latency):
            raise _usage("--bandwidth and --latency go together (e.g. --bandwidth 105MB/s --latency 0.091ms)")
        try:
            bw, lat = parse_bandwidth(args.bandwidth), parse_latency(args.latency)
        except ValueError as exc:
            raise _usage(str(exc)) from exc
        profile = profile.with_network("network", bw, lat)
        transport = "network"
    elif transport not in profile.links:
        raise _usage(
            f"--transport {transport}: the profile {path} has no figures for it "
            f"(it has {', '.join(profile.links) or 'none'}); give --bandwidth and --latency"
        )
    return profile, transport


def _predict_args(p: argparse.ArgumentParser) -> None:
    _common_model_args(p)
    p.add_argument("--profile", help="machine profile from 'parrbm calibrate' (default: %(default)s)", default=None)
    p.add_argument(
        "--transport", default="tcp", choices=list(TRANSPORTS), help="whose measured latency and bandwidth to use"
    )
    p.add_argument("--bandwidth", help="a network's bandwidth instead, e.g. 105MB/s, 10Gbit/s")
    p.add_argument("--latency", help="and its latency, e.g. 0.091ms")
    p.add_argument("--momentum", action="store_true", help="the model trains with momentum")


def _predictions(args):
    from parrbm.analysis.timemodel import predict_curve

    profile, transport = _profile_for(args)
    visible, precision = _one_setting(args)
    strategies = sorted({s for s, _ in _runnable(args, _parallel())}, key=(args.strategy or _parallel()).index)
    preds = predict_curve(
        strategies,
        _model(args, visible, precision),
        args.batch,
        _flat_workers(args),
        profile,
        transport=transport,
        sync_every=args.sync_every,
        momentum=args.momentum,
        average=args.average,
        average_every=args.average_every,
    )
    return [(visible, precision, preds)], transport


def cmd_predict(args) -> int:
    from dataclasses import asdict

    results, transport = _predictions(args)
    if args.json:
        print(
            json.dumps(
                [{**asdict(p), "visible_type": v, "precision": pr} for v, pr, ps in results for p in ps], indent=1
            )
        )
        return 0
    for visible, precision, preds in results:
        print(
            f"{args.visible} x {args.hidden} RBM, {visible} visible, {precision}, minibatch {args.batch}, "
            f"transport: {transport} (one worker per machine)"
        )
        print(f"{'strategy':<21}{'K':>5}{'ms/step':>10}{'compute':>9}{'comm':>9}{'speedup':>9}{'effic.':>8}")
        for p in preds:
            print(
                f"{p.strategy:<21}{p.workers:>5}{p.mean_step_seconds * 1e3:>10.2f}{p.compute_seconds * 1e3:>9.2f}"
                f"{(p.mean_step_seconds - p.compute_seconds) * 1e3:>9.2f}{p.speedup:>9.2f}{p.efficiency:>8.2f}"
            )
    return 0


def cmd_advise(args) -> int:
    from parrbm.analysis.timemodel import advise

    _runnable(args, _parallel())
    profile, transport = _profile_for(args)
    visible, precision = _one_setting(args)
    model = _model(args, visible, precision)
    rows = advise(
        model,
        args.batch,
        _flat_workers(args),
        profile,
        strategies=args.strategy,
        transport=transport,
        sync_every=args.sync_every,
        momentum=args.momentum,
        average=args.average,
        average_every=args.average_every,
    )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"{args.visible} x {args.hidden} RBM, {visible} visible, {precision}, minibatch {args.batch}, "
        f"transport: {transport}"
    )
    print(f"{'K':>5}  {'best strategy':<31}{'ms/step':>9}{'speedup':>9}{'effic.':>8}  runner-up (slower by)")
    for r in rows:
        second = f"{r['runner_up']} (+{r['margin_percent']:.1f}%)" if r["runner_up"] else "-"
        best = r["best"] + (
            f", {r['overlap_chunks']} chunks"
            if r.get("overlap_chunks", 1) > 1
            else ", overlapped"
            if r.get("overlap")
            else ""
        )
        print(
            f"{r['workers']:>5}  {best:<31}{r['step_seconds'] * 1e3:>9.2f}{r['speedup']:>9.2f}"
            f"{r['efficiency']:>8.2f}  {second}"
        )
    return 0


# ---- plot / report ------------------------------------------------------------------------------------------


def load_results(results: str, profile: str | None, *, need_ok: bool = True, with_notes: bool = False):
    """(records, machine profile or None) of a results file, each run once, or a
    UsageError saying what is wrong with it; ``with_notes`` adds the notes on what was
    left out (a torn last line, a run recorded twice)."""
    from parrbm.analysis.compare import load_profile_for
    from parrbm.harness.comparison_config import ConfigError
    from parrbm.harness.experiment import read_results

    path = Path(results)
    if not path.exists():
        raise _usage(f"{path}: no such results file")
    try:
        records, notes = read_results(path)
    except (ConfigError, ValueError) as exc:
        raise _usage(str(exc)) from exc
    if not records:
        raise _usage(
            f"{path}: "
            + (
                f"not a parrbm results file: no record is one 'parrbm run' writes ({notes[0]})"
                if notes
                else "no records"
            )
        )
    if need_ok and not any(r.get("status") == "ok" for r in records):
        raise _usage(f"{path}: no successful runs to show")
    missing = [
        k
        for k in ("strategy", "workers", "batch_size", "model", "metrics")
        if any(k not in r for r in records if r.get("status") == "ok")
    ]
    if missing:
        raise _usage(f"{path}: not a parrbm results file (records without {', '.join(missing)})")
    bad = [r.get("run_id", "?") for r in records if r.get("status") == "ok" and not _well_formed(r)]
    if bad:
        raise _usage(f"{path}: not a parrbm results file (record {bad[0]} lacks the fields of a measured run)")
    try:
        prof = load_profile_for(path, profile)
    except ValueError as exc:
        raise _usage(str(exc)) from exc
    if not with_notes:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    return (records, prof, notes) if with_notes else (records, prof)


def _well_formed(r: dict) -> bool:
    """A successful record has the fields the table and the figures read, of their types."""
    from numbers import Real

    if not isinstance(r.get("strategy"), str) or not r["strategy"]:
        return False
    md, mt = r.get("model"), r.get("metrics")
    if not (isinstance(md, dict) and isinstance(mt, dict)):
        return False
    if not all(isinstance(md.get(k), int) for k in ("visible", "hidden")):
        return False
    if md.get("visible_type") not in ("binary", "gaussian") or md.get("precision") not in ("float32", "float64"):
        return False
    if not isinstance(r.get("workers"), int) or not isinstance(r.get("batch_size"), int) or r["batch_size"] < 1:
        return False
    step = mt.get("step_seconds")
    return (
        isinstance(step, dict)
        and isinstance(step.get("median"), Real)
        and step["median"] > 0
        and isinstance(mt.get("bytes_per_step"), int)
        and isinstance(mt.get("bytes_per_sync"), int)
    )


def cmd_plot(args) -> int:
    from parrbm.analysis.plots import plot_all

    records, profile = load_results(args.results, args.profile)
    figs = plot_all(records, Path(args.out), profile=profile, divergence=not args.no_divergence)
    for paths in figs.values():
        print("  ".join(str(p) for p in paths))
    return 0


def cmd_report(args) -> int:
    from parrbm.analysis.report import write_report

    records, profile = load_results(args.results, args.profile)
    out = Path(args.out) if args.out else Path(args.results).with_suffix(".html")
    try:
        write_report(records, out, profile=profile, divergence=not args.no_divergence)
    except ValueError as exc:
        raise _usage(str(exc)) from exc
    print(f"report: {out}")
    return 0


def add_parsers(sub) -> None:
    c = sub.add_parser(
        "cost",
        help="closed-form communication of every strategy (Table 4.1 form)",
        epilog="example: parrbm cost --visible 8000 --hidden 20000 --batch-size 100 "
        "--workers 1 2 4 8   # the paper's Table 4.1",
    )
    _common_model_args(c)
    c.add_argument("--cases", type=_positive, default=8000, help="bytes per this many training cases")
    c.set_defaults(func=cmd_cost)

    cal = sub.add_parser(
        "calibrate",
        help="measure this machine for the time model",
        epilog="examples: parrbm calibrate --quick; sudo parrbm calibrate --network 105MB/s --out machine.json",
    )
    cal.add_argument("--out", help=f"profile file (default: {default_profile()})")
    cal.add_argument("--quick", action="store_true", help="fewer, smaller measurements (seconds)")
    cal.add_argument(
        "--transports",
        nargs="+",
        default=list(TRANSPORTS),
        choices=list(TRANSPORTS),
        help="the transports whose collectives are measured (default: all)",
    )
    cal.add_argument(
        "--network",
        nargs="+",
        metavar="BANDWIDTH",
        help="also measure tcp and mpi between emulated hosts whose links are shaped to each "
        "bandwidth (e.g. 105MB/s; needs root): the profile's transports tcp@105MB/s, ...",
    )
    cal.add_argument("--latency", help="the emulated links' latency (e.g. 0.091ms; where the kernel has netem)")
    cal.add_argument(
        "--dilated",
        nargs="+",
        metavar="KxF",
        help="also measure, on each --network link, what emulating K machines by tcp hosts dilated in time by F "
        "costs a step beyond K machines of their own (e.g. 4x2 8x4; needs root): priced into dilated runs",
    )
    cal.set_defaults(func=cmd_calibrate)

    pr = sub.add_parser(
        "predict",
        help="predicted step time, speedup and efficiency per strategy and K",
        epilog="example: parrbm predict --visible 8000 --hidden 20000 --batch-size 100 "
        "--workers 1..16 --bandwidth 105MB/s --latency 0.091ms",
    )
    _predict_args(pr)
    pr.set_defaults(func=cmd_predict)

    ad = sub.add_parser(
        "advise",
        help="the fastest strategy for a model and cluster, with its margin",
        epilog="example: parrbm advise --visible 8000 --hidden 20000 --batch-size 100 "
        "--workers 1..256 --bandwidth 105MB/s --latency 0.091ms",
    )
    _predict_args(ad)
    ad.set_defaults(func=cmd_advise)

    for name, helptext, func in (
        ("plot", "figures of a results file (PNG and SVG)", cmd_plot),
        ("report", "one HTML or Markdown page: tables, figures, the paper's numbers", cmd_report),
    ):
        q = sub.add_parser(
            name,
            help=helptext,
            epilog=f"example: parrbm {name} results/quick.jsonl --out "
            + ("figures/" if name == "plot" else "report.html"),
        )
        q.add_argument("results", help="a .jsonl file written by 'parrbm run'")
        if name == "plot":
            q.add_argument("--out", default="plots", help="directory for the figures")
        else:
            q.add_argument("--out", help="report.html or report.md (default: beside the results, .html)")
        q.add_argument(
            "--profile",
            help="machine profile for the time model (default: the one beside the results, <name>.profile.json)",
        )
        q.add_argument(
            "--no-divergence", action="store_true", help="skip the replica-divergence measurement (a few seconds)"
        )
        q.set_defaults(func=func)
