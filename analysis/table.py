"""The comparison of a results file as a text table (``parrbm table``, ``parrbm run``)."""

from __future__ import annotations

from parrbm.analysis.compare import (
    all_cores_label,
    bytes_per_cases,
    dilation_of,
    emulation_line,
    error_summary,
    predicted_vs_measured,
    ranking_agreement,
    speed_line,
    where_label,
)


def summary_table(records: list[dict], profile=None, notes: list[str] | None = None) -> str:
    """Bytes per 8000 cases (the paper's Table 4.1 form, weight syncs included at their
    period) and speedup / efficiency against both baselines (the serial trainer on one
    core, and on the cores the workers use); with a machine profile, the time model's step
    beside each measured one; ``notes`` (what reading the file left out) at the end."""
    from parrbm.analysis.flags import record_flags
    from parrbm.strategies.registry import builtin_order

    ok = [r for r in records if r.get("status") == "ok"]
    flags = record_flags(records)
    # one row a run the model prices (one BLAS thread a worker, a transport the profile has)
    rows = predicted_vs_measured(records, profile) if profile is not None else []
    predicted = {row["record_id"]: row["predicted_seconds"] for row in rows}
    lines = []
    groups: dict = {}
    for r in ok:
        key = (r["model"]["visible_type"], r["model"]["precision"], r["batch_size"])
        groups.setdefault(key, []).append(r)
    for (vis, prec, m), rs in sorted(groups.items()):
        V, H = rs[0]["model"]["visible"], rs[0]["model"]["hidden"]
        lines.append(f"\n{V} x {H}, {vis} visible, {prec}, minibatch {m}")
        width = max([8, *(len(where_label(r)) + 1 for r in rs)])
        chunked = any(_overlapped(r) for r in rs)  # then: the share of communication hidden
        lines.append(
            f"{'strategy':<31}{'K':>3} {'transport':<{width}}{'MB/8000 cases':>14}{'MB/sync':>9}"
            f"{'ms/step':>9}{'vs 1 core':>10}{'vs cores':>9}{'vs K=1':>8}{'effic.':>8}"
            + (f"{'hidden':>8}" if chunked else "")
            + (f"{'model ms':>10}{'error':>8}" if predicted else "")
        )
        for r in sorted(
            rs,
            key=lambda r: (
                builtin_order(r["strategy"]),
                r["workers"],
                r.get("blas_threads", 1),
                r["transport"] or "",
                -((r.get("network") or {}).get("bandwidth") or float("inf")),
                dilation_of(r),
            ),
        ):
            mt = r["metrics"]
            per_8000 = bytes_per_cases(r) / 1e6
            fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
            note = ("" if mt.get("speedup_meaningful", True) else "  (K > cores)") + ("  !" if id(r) in flags else "")
            planned, ran = r.get("repeats_planned"), (r.get("training") or {}).get("repeats")
            if planned and ran and ran < planned:  # an interrupted comparison kept what it finished
                note += f"  ({ran} of {planned} repeats)"
            where = where_label(r)
            lines.append(
                f"{all_cores_label(r):<31}{r['workers']:>3} {where:<{width}}{per_8000:>14.2f}"
                f"{mt['bytes_per_sync'] / 1e6:>9.3f}{mt['step_seconds']['median'] * 1e3:>9.1f}"
                f"{fmt(mt['speedup_vs_serial'], '.2f'):>10}"
                f"{fmt(mt.get('speedup_vs_serial_all_cores'), '.2f'):>9}{fmt(mt['speedup_vs_k1'], '.2f'):>8}"
                f"{fmt(mt['efficiency'], '.2f'):>8}"
                + (f"{fmt(mt.get('hidden_fraction') if r['workers'] > 1 else None, '.0%'):>8}" if chunked else "")
                + (
                    f"{predicted[id(r)] * 1e3:>10.1f}"
                    f"{100 * (predicted[id(r)] / mt['step_seconds']['median'] - 1):>+7.0f}%"
                    if id(r) in predicted
                    else (f"{'-':>10}{'-':>8}" if predicted else "")
                )
                + note
            )
    lines.append(
        "\nvs 1 core: against the serial trainer on one BLAS thread (a worker's share); vs cores: "
        "against it on as many BLAS threads as the K workers use in all, up to the cores here. "
        "MB/8000 cases: weight syncs included at their period"
        + (
            "; hidden: the share of the collectives' busy time the steps did not wait for (N chunks: "
            "each chunk's exchange in flight while the next computes)"
            if any(_overlapped(r) for r in ok)
            else ""
        )
        + (
            "; xF: on emulated hosts dilated by F (each 1/F of its cores, links at 1/F of the "
            "bandwidth), times divided by F"
            if any(dilation_of(r) != 1.0 for r in ok)
            else ""
        )
    )
    from parrbm.analysis.dilation import dilation_check, dilation_lines

    lines += dilation_lines(dilation_check(ok))
    if predicted:
        e = error_summary(rows)
        if e["runs"]:
            lines.append(
                f"\ntime model vs measured (runs with K <= cores, or dilated): median error {100 * e['median']:.1f}%, "
                f"worst {100 * e['worst']:.1f}% over {e['runs']} runs; {e['within_spread']} inside "
                f"the run's p10-p90 steps, the worst {100 * e['worst_beyond_spread']:.1f}% beyond it"
            )
        speed = speed_line(rows)
        if speed:
            lines.append(speed)
        emulated = [r for r in rows if r.get("predicted_emulation_seconds")]
        if emulated:
            lines.append(emulation_line(emulated))
        for g in ranking_agreement(rows):
            noisy = len(g["discordant_within_noise"])
            verdict = (
                "same order"
                if g["same"]
                else f"same order up to {noisy} pair(s) within the p10-p90 noise"
                if g["same_within_noise"]
                else "different order: "
                + ", ".join(f"{a} / {b} ({gap:.1f}% apart)" for a, b, gap in g["discordant_beyond_noise"])
            )
            mode = f" ({g['mode']})" if g["mode"] != "lockstep" else ""
            lines.append(
                f"ranking K={g['workers']} {g['transport']}{mode}: measured {' < '.join(g['measured'])}; "
                f"model: {verdict}"
            )
    traced = sorted(
        {r.get("strategy_name") or r["strategy"] for r in ok if (r["metrics"] or {}).get("traffic_source") == "traced"}
    )
    if traced:
        lines.append(f"\nbytes traced from a dry run of the step (no closed form declared): {', '.join(traced)}")
    off = [r for r in ok if (r["metrics"] or {}).get("formula_mismatch")]
    if off:
        lines.append(f"\n{len(off)} run(s) moved other bytes than their strategy declares:")
        lines += [f"  {r.get('run_id', r['strategy'])}: {'; '.join(r['metrics']['formula_mismatch'])}" for r in off]
    if flags:
        lines.append(
            f"\n! {len(flags)} run(s) flagged: their figures may be skewed by this machine (read them with "
            f"care, or run again on a quiet machine):"
        )
        lines += [f"  {_run_name(r)}: {'; '.join(flags[id(r)])}" for r in ok if id(r) in flags]
    failed = [r for r in records if r.get("status") == "error"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed:")
        lines += [f"  {r.get('run_id', '?')}: {r.get('error')}" for r in failed]
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in notes]
    return "\n".join(lines).lstrip("\n")


def _run_name(r: dict) -> str:
    """A run as the table's rows name it."""
    return (
        f"{all_cores_label(r)} K={r['workers']} {where_label(r)} m={r['batch_size']} "
        f"{r['model']['precision']} {r['model']['visible_type']}"
    )


def _overlapped(rec: dict) -> bool:
    """A run whose exchanges were chunked and overlapped."""
    return bool(rec.get("overlap")) or (rec.get("overlap_chunks") or 1) > 1
