"""Figures of a results file (seaborn; PNG and SVG):

    speedup.*      speedup and efficiency vs K per strategy, with the ideal line, one
                   column per (visible type, precision, minibatch) -- the paper's 4.4-4.7
    bytes.*        bytes per 8000 cases vs K: measured points on the closed-form lines
    breakdown.*    compute / communication / wait per step, stacked, for every run
    predicted.*    the time model's step against the measured one
    divergence.*   green/purple replica divergence over steps, unit-partitioned, no sync

``parrbm plot RESULTS.jsonl --out DIR``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from parrbm.analysis import cost
from parrbm.analysis.compare import model_of, predicted_vs_measured


def _order(records: list[dict]) -> list[str]:
    """The parallel strategies that ran (a legend lists only those): the built-ins in their
    order, then the rest."""
    from parrbm.strategies.registry import builtin_order

    present = {
        r.get("strategy")
        for r in records
        if r.get("strategy") not in (None, "serial") and r.get("status", "ok") == "ok"
    }
    return sorted(present, key=builtin_order)


#: one colour and marker per strategy in every figure (purple-only purple, green-only
#: green); seaborn's "deep" palette
_STYLE = {
    "serial": ("#4d4d4d", "X"),
    "unit-partitioned": ("#4C72B0", "o"),
    "per-update-sync": ("#DD8452", "s"),
    "purple-only": ("#8172B3", "D"),
    "green-only": ("#55A868", "^"),
    "parameter-averaging": ("#C44E52", "v"),
}
_PLUGIN_STYLE = [("#937860", "P"), ("#DA8BC3", "*"), ("#CCB974", "h"), ("#64B5CD", "p"), ("#8C8C8C", "<")]
#: how a transport draws its lines where several ran
TRANSPORT_LINES = {"threads": "-", "tcp": "--", "mpi": ":"}


def strategy_style(name: str) -> tuple[str, str]:
    """(colour, marker) of a strategy, the same in every figure of every report; a
    plug-in's follows from its name."""
    if name in _STYLE:
        return _STYLE[name]
    import zlib

    return _PLUGIN_STYLE[zlib.crc32(str(name).encode()) % len(_PLUGIN_STYLE)]


def _legend_handles(strategies: list[str], transports: list[str] = ()) -> list:
    """Legend entries: each strategy that ran (colour and marker), then the transports'
    line styles where more than one ran."""
    from matplotlib.lines import Line2D

    out = [
        Line2D([], [], color=strategy_style(s)[0], marker=strategy_style(s)[1], linestyle="-", label=s)
        for s in strategies
    ]
    if len(transports) > 1:
        out += [Line2D([], [], color="black", linestyle=TRANSPORT_LINES.get(t, "-."), label=t) for t in transports]
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig, out: Path, name: str) -> list[Path]:
    from parrbm._files import write_atomic

    paths = []
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        write_atomic(p, lambda fh, ext=ext: fig.savefig(fh, format=ext, dpi=130, bbox_inches="tight"))
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _setting(r: dict) -> str:
    return f"{r['model']['visible_type']}, {r['model']['precision']}, m={r['batch_size']}"


def _frame(records: list[dict]):
    import pandas as pd

    rows = []
    for r in records:
        if r.get("status") != "ok" or r["strategy"] == "serial":
            continue
        if r["workers"] == 1 and (r.get("time_dilation") or 1.0) != 1.0:
            continue  # one worker dilated checks the CPU cap (the table's dilation check)
        mt = r["metrics"]
        rows.append(
            {
                "strategy": r["strategy"],
                "K": r["workers"],
                "transport": r.get("transport") or "threads",
                "setting": _setting(r),
                "speedup": mt["speedup_vs_serial"],
                "efficiency": mt["efficiency"],
                "speedup_all_cores": mt.get("speedup_vs_serial_all_cores"),
                "meaningful": mt.get("speedup_meaningful", True),
                "dilation": float(r.get("time_dilation") or 1.0),
                "MB per 8000 cases": mt["bytes_per_step"] * 8000 / r["batch_size"] / 1e6,
                "compute": mt["compute_seconds"] * 1e3,
                "communication": mt["comm_seconds"] * 1e3,  # already without the waiting
                "wait": mt["wait_seconds"] * 1e3,
                "step": mt["step_seconds"]["median"] * 1e3,
            }
        )
    return pd.DataFrame(rows)


def plot_speedup(records: list[dict], out: Path, cores: int) -> list[Path]:
    plt, sns = _plt()
    df = _frame(records)
    if df.empty:
        return []
    settings = sorted(df["setting"].unique())
    # two baselines: the serial trainer on one core, and on the cores the K workers use
    # (K x their BLAS threads, up to this machine's cores): what a user with them would run
    metrics = ["speedup"] + (["speedup_all_cores"] if df["speedup_all_cores"].notna().any() else []) + ["efficiency"]
    labels = {
        "speedup": "speedup vs serial on 1 core (x)",
        "speedup_all_cores": "speedup vs serial on the\nworkers' cores, BLAS threads (x)",
        "efficiency": "efficiency (speedup vs 1 core / K)",
    }
    fig, axes = plt.subplots(
        len(metrics),
        len(settings),
        figsize=(5.2 * len(settings) + 1.8, 3.75 * len(metrics)),
        squeeze=False,
        sharex=True,
    )
    ORDER = _order(records)
    transports = sorted(df["transport"].unique(), key=lambda t: (t not in TRANSPORT_LINES, t))
    Ks = sorted(df["K"].unique())
    for j, setting in enumerate(settings):
        d = df[df["setting"] == setting]
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for (s, t), g in d.groupby(["strategy", "transport"]):
                line = g.groupby("K")[metric].mean().dropna()
                colour, marker = strategy_style(s)
                ax.plot(
                    line.index,
                    line.values,
                    color=colour,
                    marker=marker,
                    markersize=6,
                    linestyle=TRANSPORT_LINES.get(t, "-.") if len(transports) > 1 else "-",
                    gid=s,
                )
            ideal = Ks if metric == "speedup" else [1.0] * len(Ks)  # all cores: ideal is 1 (the same cores)
            ax.plot(Ks, ideal, color="black", linestyle="--", linewidth=1, label="ideal")
            ax.set_xscale("log", base=2)
            beyond = sorted(d.loc[~d["meaningful"].astype(bool), "K"].unique())
            if beyond:  # runs of more workers than cores, undilated
                ax.axvspan(beyond[0] * 2**-0.5, max(Ks) * 2**0.25, color="grey", alpha=0.12)
                ax.text(
                    beyond[0] * 2**-0.45,
                    ax.get_ylim()[1] * 0.97,
                    f"K > {cores} cores:\nnot meaningful",
                    fontsize=8,
                    va="top",
                    color="dimgray",
                )
            # dilated runs are drawn as measured, marked with their factor
            for F, at in d[d["dilation"] != 1.0].groupby(["dilation", "K"]).first()[metric].items():
                ax.annotate(
                    f"x{F[0]:g}", (F[1], at), textcoords="offset points", xytext=(4, -10), fontsize=7, color="dimgray"
                )
            ax.set_xticks(Ks)
            ax.set_xticklabels([str(k) for k in Ks])
            ax.minorticks_off()
            ax.set_xlabel("workers K")
            ax.set_ylabel(labels[metric])
            if i == 0:
                ax.set_title(setting)
    from matplotlib.lines import Line2D

    handles = _legend_handles(ORDER, transports) + [
        Line2D([], [], color="black", linestyle="--", linewidth=1, label="ideal")
    ]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(
        "Speedup and efficiency (median step time; serial trainer = 1 on one core, and on all the workers' cores)",
        y=1.01,
    )
    fig.tight_layout()
    return _save(fig, out, "speedup")


def plot_scaling(records: list[dict], out: Path) -> list[Path]:
    """The paper's Figures 4.6 and 4.7: the speedup of 4 machines over 2 and of 8 over 4,
    per setting, beside the ideal 2."""
    from parrbm.analysis.scaling import scaling_rows

    rows = [r for r in scaling_rows(records) if any(K >= 4 for K in r["doubling"])]
    if not rows:
        return []
    plt, _ = _plt()
    strategies = sorted({r["strategy"] for r in rows})
    fig, axes = plt.subplots(1, len(strategies), figsize=(max(6.0, 0.9 * len(rows) + 3), 4.2), squeeze=False)
    style = {4: ("s", "tab:blue"), 8: ("D", "tab:red"), 16: ("^", "tab:green")}
    for ax, name in zip(axes[0], strategies):
        mine = [r for r in rows if r["strategy"] == name]
        labels = [
            f"{r['visible_type']}, {r['precision']}\nm={r['batch_size']}"
            + (f"\n{r['visible']}x{r['hidden']}" if len({(x["visible"], x["hidden"]) for x in mine}) > 1 else "")
            for r in mine
        ]
        for K in sorted({K for r in mine for K in r["doubling"] if K >= 4}):
            xs = [i for i, r in enumerate(mine) if K in r["doubling"]]
            marker, colour = style.get(K, ("o", "tab:grey"))
            ax.scatter(
                xs,
                [mine[i]["doubling"][K] for i in xs],
                marker=marker,
                color=colour,
                s=45,
                label=f"{K} machines over {K // 2}",
                zorder=3,
            )
        ax.axhline(2.0, color="black", linestyle="--", linewidth=1, label="ideal (2)")
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="no gain (1)")
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylim(0, max(2.4, 1.1 * max(x for r in mine for x in r["doubling"].values())))
        ax.set_ylabel("speedup of 2K machines over K (x)")
        ax.set_title(name)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, out, "scaling")


def plot_bytes(records: list[dict], out: Path) -> list[Path]:
    plt, sns = _plt()
    df = _frame(records)
    if df.empty:
        return []
    settings = sorted(df["setting"].unique())
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings) + 1.8, 4.5), squeeze=False)
    ORDER = _order(records)
    for j, setting in enumerate(settings):
        ax = axes[0][j]
        d = df[df["setting"] == setting]
        rec = next(
            r for r in records if r.get("status") == "ok" and r["strategy"] != "serial" and _setting(r) == setting
        )
        model, m = model_of(rec), rec["batch_size"]
        Kmax = max(8, int(d["K"].max()))
        Ks = np.arange(2, Kmax + 1)
        for s in ORDER:
            if s not in set(d["strategy"]):
                continue
            try:
                line = [cost.bytes_for_cases(s, model, m, int(K), 8000) / 1e6 for K in Ks]
            except ValueError:  # a plug-in that cannot be imported here: its measured points alone
                line = None
            colour, marker = strategy_style(s)
            if line is not None:
                ax.plot(Ks, line, color=colour, linewidth=1.2, gid=s)
            pts = d[(d["strategy"] == s) & (d["K"] > 1)]
            ax.scatter(
                pts["K"],
                pts["MB per 8000 cases"],
                color=colour,
                marker=marker,
                s=40,
                zorder=3,
                edgecolor="black",
                linewidth=0.5,
                gid=s,
            )
        ax.set_yscale("log")
        ax.set_xlabel("workers K")
        ax.set_ylabel("MB per 8000 cases (all workers)")
        ax.set_title(setting)
    fig.legend(
        handles=_legend_handles([s for s in ORDER if s in set(df["strategy"])]),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        fontsize=9,
    )
    fig.suptitle("Training traffic: measured (points) on the closed form (lines), weight syncs apart", y=1.02)
    fig.tight_layout()
    return _save(fig, out, "bytes")


def plot_breakdown(records: list[dict], out: Path) -> list[Path]:
    plt, sns = _plt()
    df = _frame(records)
    if df.empty:
        return []
    df = df[df["K"] > 1].copy()
    if df.empty:
        return []
    df["run"] = df["strategy"] + "  K=" + df["K"].astype(str) + "  " + df["transport"]
    ORDER = _order(records)
    df["order"] = df["strategy"].map(ORDER.index)
    settings = sorted(df["setting"].unique())
    n = max(len(df[df["setting"] == s]) for s in settings)
    fig, axes = plt.subplots(1, len(settings), figsize=(7.5 * len(settings), 0.32 * n + 1.8), squeeze=False)
    colors = sns.color_palette("deep", 3)
    for j, setting in enumerate(settings):
        ax = axes[0][j]
        d = df[df["setting"] == setting].sort_values(["order", "K", "transport"], ascending=False)
        left = np.zeros(len(d))
        for part, color in zip(("compute", "communication", "wait"), colors):
            ax.barh(d["run"], d[part], left=left, color=color, label=part)
            left += d[part].to_numpy()
        ax.set_xlabel("ms per step (slowest worker, mean)")
        ax.set_title(setting)
        ax.tick_params(axis="y", labelsize=8)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Where a step's time goes", y=1.0)
    fig.tight_layout()
    return _save(fig, out, "breakdown")


def plot_predicted(records: list[dict], profile, out: Path) -> list[Path]:
    plt, sns = _plt()
    import pandas as pd

    rows = [r for r in predicted_vs_measured(records, profile)]
    if not rows:
        return []
    df = pd.DataFrame(rows)
    df["measured ms"] = df["measured_seconds"] * 1e3
    df["predicted ms"] = df["predicted_seconds"] * 1e3
    df["K"] = (
        df["workers"].astype(str)
        + np.where(df["meaningful"], "", " (> cores)")
        + np.where(df["time_dilation"] != 1.0, " (dilated)", "")
    )
    df["transport"] = df["transport"].fillna("-")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    lo = 0.8 * min(df["measured ms"].min(), df["predicted ms"].min())
    hi = 1.2 * max(df["measured ms"].max(), df["predicted ms"].max())
    xs = np.array([lo, hi])
    ax.plot(xs, xs, color="black", linewidth=1, label="prediction = measurement")
    ax.fill_between(xs, xs * 0.85, xs * 1.15, color="grey", alpha=0.15, label="within 15%")
    from matplotlib.lines import Line2D

    ran = [s for s in ["serial", *_order(records)] if s in set(df["strategy"])]
    sizes = {k: 40 + 25 * i for i, k in enumerate(sorted(df["K"].unique(), key=lambda k: (len(k), k)))}
    for (s, k), g in df.groupby(["strategy", "K"]):
        colour, marker = strategy_style(s)
        ax.scatter(
            g["measured ms"],
            g["predicted ms"],
            color=colour,
            marker=marker,
            s=sizes[k],
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
            gid=s,
        )
    handles = [*ax.get_legend_handles_labels()[0], *_legend_handles(ran)]
    handles += [
        Line2D([], [], color="grey", marker="o", linestyle="", markersize=(sizes[k] ** 0.5) * 0.9, label=f"K = {k}")
        for k in sizes
    ]
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(which="both", labelsize=8, pad=3, length=3)  # the decade label no bigger than its neighbours
    ax.set_xlabel("measured median step (ms)")
    ax.set_ylabel("time model (ms)")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=9)
    ax.set_title("Time model vs measurement")
    fig.tight_layout()
    return _save(fig, out, "predicted")


#: the settings of the divergence figure when no comparison names its own
DIVERGENCE_SETTINGS = (("binary", "float32"), ("gaussian", "float32"), ("gaussian", "float64"))


def divergence_curves(
    steps: int = 40, V: int = 256, H: int = 512, m: int = 100, settings=DIVERGENCE_SETTINGS
) -> list[dict]:
    """Measure green/purple divergence of unit-partitioned (K = 2, no sync) after every
    step: the largest |G_k[V_j, :] - P_j[:, H_k]| over all blocks, for each (visible
    type, precision) of ``settings``."""
    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import StrategyOptions

    out = []
    rng = np.random.default_rng(0)
    for visible, precision in settings:
        spec = CDSpec(
            n_visible=V,
            n_hidden=H,
            batch_size=m,
            dtype=precision,
            visible=visible,
            learning_rate=0.01 if visible == "gaussian" else 0.1,
            seed=1,
        )
        X = ((rng.random((steps * m, V)) < 0.3) if visible == "binary" else rng.standard_normal((steps * m, V))).astype(
            precision
        )
        r = ParallelRunner(spec, ModelState.initial(spec), "unit-partitioned", 2, options=StrategyOptions(sync_every=0))
        for s in range(steps):
            r.run(X, np.arange(s * m, (s + 1) * m, dtype=np.int64), s)
            drift = 0.0
            for k, wk in enumerate(r.workers):
                for j, wj in enumerate(r.workers):
                    green_rows = wk.green[r.workers[0].vis.index(j)]
                    purple_cols = wj.purple[:, r.workers[0].hid.index(k)]
                    drift = max(drift, float(np.max(np.abs(green_rows - purple_cols))))
            out.append({"setting": f"{visible}, {precision}", "step": s + 1, "divergence": drift})
    return out


def plot_divergence(curves: list[dict], out: Path) -> list[Path]:
    plt, sns = _plt()
    import pandas as pd

    df = pd.DataFrame(curves)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    floor = 1e-18  # zero (binary: bit-identical) drawn at the floor of the log axis
    df["shown"] = df["divergence"].clip(lower=floor)
    sns.lineplot(data=df, x="step", y="shown", hue="setting", marker="o", markersize=4, ax=ax)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1e-2)
    ax.set_xlabel("minibatches since the last weight sync")
    ax.set_ylabel("max |green - purple| (log)")
    ax.set_title("Replica divergence, unit-partitioned, K = 2, no sync")
    zero = [s for s, d in df.groupby("setting") if d["divergence"].max() == 0.0]
    if zero:
        ax.text(
            0.02,
            0.06,
            "exactly 0 at every step (bit-identical replicas, drawn at the floor): " + "; ".join(zero),
            transform=ax.transAxes,
            fontsize=8,
        )
    ax.legend(title=None, loc="upper right", ncol=3, fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "divergence")


# ---- the emulated network: speedup against bandwidth -----------------------------------------------


def _network_runs(records: list[dict]) -> list[dict]:
    return [
        r
        for r in records
        if r.get("status") == "ok" and r.get("network") and r["workers"] > 1 and r["metrics"].get("speedup_vs_serial")
    ]


def _sweeps(records: list[dict]) -> dict:
    """(transport, K, setting) -> strategy -> [(bandwidth bytes/s or None, record)], for
    the runs on emulated hosts."""
    out: dict = {}
    for r in _network_runs(records):
        key = (r["transport"], r["workers"], _setting(r))
        out.setdefault(key, {}).setdefault(r["strategy"], []).append((r["network"].get("bandwidth"), r))
    return out


def _model_speedup(rec: dict, bandwidth: float, profile) -> float:
    """The time model's speedup of a recorded run had its link been ``bandwidth``, over the
    run's own measured serial step."""
    from parrbm.analysis.compare import predict_record

    serial = rec["metrics"]["step_seconds"]["median"] * rec["metrics"]["speedup_vs_serial"]
    # the link's token bucket goes with its rate (burst dropped: the rate's own is used)
    moved = {**rec, "network": {**{k: v for k, v in rec["network"].items() if k != "burst"}, "bandwidth": bandwidth}}
    # one line from one rule: every bandwidth priced from the transport's figures and the
    # link's rate (the calibrated links are the measured points' business, not the line's)
    uncalibrated = type(profile)(
        **{
            **vars(profile),
            "links": {k: v for k, v in profile.links.items() if "@" not in k or k.endswith("@unshaped")},
        }
    )
    return serial / predict_record(moved, uncalibrated).step_seconds


def bandwidth_crossovers(records: list[dict], profile=None) -> list[dict]:
    """Where the fastest strategy changes as the link gets faster: measured, as
    ``(lo, hi, before, after, estimate)``: between two measured bandwidths, and the
    estimate where the two strategies' log step-time ratio, linear in log bandwidth
    between them, is 0; and, with a profile, the time model's ``(bandwidth, before,
    after)`` (on a fine grid)."""
    rows = []
    for (transport, K, setting), per in sorted(_sweeps(records).items()):
        shaped = sorted({b for runs in per.values() for b, _ in runs if b is not None})
        if len(shaped) < 2:
            continue
        best, step = [], []
        for b in shaped:
            at = {s: r["metrics"]["step_seconds"]["median"] for s, runs in per.items() for bb, r in runs if bb == b}
            best.append(min(at, key=at.get))
            step.append(at)
        measured = []
        for i in range(len(best) - 1):
            a, b = best[i], best[i + 1]
            if a == b:
                continue
            lo, hi = shaped[i], shaped[i + 1]
            r0 = math.log(step[i][a] / step[i][b]) if b in step[i] else -1.0
            r1 = math.log(step[i + 1][a] / step[i + 1][b]) if a in step[i + 1] else 1.0
            f = -r0 / (r1 - r0) if r1 > r0 else 0.5
            measured.append((lo, hi, a, b, math.exp(math.log(lo) + f * (math.log(hi) - math.log(lo)))))
        model = []
        if profile is not None:
            grid = np.geomspace(shaped[0], shaped[-1], 200)
            refs = {s: next(r for _, r in runs) for s, runs in per.items()}
            prev = None
            for b in grid:
                try:
                    fast = max(refs, key=lambda s: _model_speedup(refs[s], float(b), profile))
                except ValueError:
                    break
                if prev is not None and fast != prev:
                    model.append((float(b), prev, fast))
                prev = fast
        rows.append({"transport": transport, "workers": K, "setting": setting, "measured": measured, "model": model})
    return rows


def plot_bandwidth(records: list[dict], profile, out: Path) -> list[Path]:
    """Speedup against link bandwidth per strategy: measured points, the model's lines,
    the crossovers (model: dashed; measured: the shaded interval)."""
    sweeps = {k: v for k, v in _sweeps(records).items() if len({b for runs in v.values() for b, _ in runs}) >= 2}
    if not sweeps:
        return []
    plt, sns = _plt()
    keys = sorted(sweeps)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys) + 2, 4.6), squeeze=False)
    crossings = {(c["transport"], c["workers"], c["setting"]): c for c in bandwidth_crossovers(records, profile)}
    for ax, key in zip(axes[0], keys):
        per = sweeps[key]
        shaped = sorted({b for runs in per.values() for b, _ in runs if b is not None})
        unshaped_x = shaped[-1] * 3  # where the unshaped runs are drawn
        for s, runs in sorted(
            per.items(), key=lambda kv: _order(records).index(kv[0]) if kv[0] in _order(records) else 99
        ):
            xs = [(b or unshaped_x) / 1e6 for b, _ in runs]
            ys = [r["metrics"]["speedup_vs_serial"] for _, r in runs]
            ax.scatter(xs, ys, color=strategy_style(s)[0], marker=strategy_style(s)[1], zorder=3, gid=s)
            if profile is not None:
                grid = np.geomspace(shaped[0], shaped[-1], 60)
                try:
                    ax.plot(
                        grid / 1e6,
                        [_model_speedup(runs[0][1], float(b), profile) for b in grid],
                        color=strategy_style(s)[0],
                        linewidth=1.2,
                        gid=s,
                    )
                except ValueError:
                    pass
        c = crossings.get(key)
        for b, _, to in (c or {}).get("model", []):
            ax.axvline(b / 1e6, color="dimgray", linestyle="--", linewidth=1)
            ax.text(b / 1e6, ax.get_ylim()[1], f" model: {to}", rotation=90, va="top", fontsize=7, color="dimgray")
        for lo, hi, _, to, at in (c or {}).get("measured", []):
            ax.axvspan(lo / 1e6, hi / 1e6, color="orange", alpha=0.12)
            ax.axvline(at / 1e6, color="darkorange", linestyle=":", linewidth=1.2)
        ax.set_xscale("log")
        ticks = [b / 1e6 for b in shaped] + (
            [unshaped_x / 1e6] if any(b is None for runs in per.values() for b, _ in runs) else []
        )
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks[: len(shaped)]] + ["unshaped"] * (len(ticks) - len(shaped)))
        ax.minorticks_off()
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("link bandwidth (MB/s, wire)")
        ax.set_ylabel("speedup vs serial (x)")
        ax.set_title(f"{key[0]}, K = {key[1]}, {key[2]}")
    fig.legend(
        handles=_legend_handles([s for s in _order(records) if any(s in sweeps[k] for k in keys)]),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
    )
    fig.tight_layout()
    return _save(fig, out, "bandwidth")


def plot_all(
    records: list[dict], out: Path, *, profile=None, cores: int | None = None, divergence: bool = True
) -> dict[str, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    if cores is None:
        cores = next((r["environment"]["cores"] for r in records if r.get("environment")), 1)
    figs = {
        "speedup": plot_speedup(records, out, cores),
        "scaling": plot_scaling(records, out),
        "bytes": plot_bytes(records, out),
        "breakdown": plot_breakdown(records, out),
    }
    if profile is not None:
        figs["predicted"] = plot_predicted(records, profile, out)
    figs["bandwidth"] = plot_bandwidth(records, profile, out)
    if divergence:  # for the comparison's own unit types and precisions
        settings = (
            sorted(
                {
                    (r["model"]["visible_type"], r["model"]["precision"])
                    for r in records
                    if r.get("status") == "ok" and r.get("model")
                }
            )
            or DIVERGENCE_SETTINGS
        )
        figs["divergence"] = plot_divergence(divergence_curves(settings=settings), out)
    return {k: v for k, v in figs.items() if v}
