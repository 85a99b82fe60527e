"""How faithful time dilation was in a comparison: each dilated run against the same run
undilated (the same hosts on more CPU, the same link at full speed), and each dilated
run of one worker against the serial trainer (the CPU cap alone)."""

from __future__ import annotations

import re

import numpy as np

from parrbm.analysis.compare import all_cores_label, dilation_of

#: the bounds a dilated run is held to (docs/design.md, "Time dilation")
MEDIAN_BOUND = 0.05
WORST_BOUND = 0.10


def undilated_id(run_id: str) -> str:
    return re.sub(r"\|dilation=[^|]*", "", run_id)


def dilation_check(records: list[dict]) -> list[dict]:
    """One row per dilated run with something to hold it to: its dilated-back median step
    beside the undilated run's (``reference``: "undilated") or, for one worker, beside the
    serial trainer's ("serial"), and their ratio: the median over the comparison's rounds
    of the two runs' steps in the same round (:func:`paired_ratios`)."""
    ok = [r for r in records if r.get("status", "ok") == "ok" and r.get("metrics") and r.get("run_id")]
    by_id = {r["run_id"]: r for r in ok}
    rows = []
    for r in ok:
        F = dilation_of(r)
        if F == 1.0:
            continue
        ref, kind = by_id.get(undilated_id(r["run_id"])), "undilated"
        if ref is None and r["workers"] == 1:
            kind = "serial"
            ref = next(
                (
                    s
                    for s in ok
                    if s["strategy"] == "serial"
                    and not s.get("baseline")
                    and s["batch_size"] == r["batch_size"]
                    and s["model"] == r["model"]
                ),
                None,
            )
        if ref is None:
            continue
        measured = r["metrics"]["step_seconds"]["median"]
        against = ref["metrics"]["step_seconds"]["median"]
        rounds = paired_ratios(r, ref)
        rows.append(
            {
                "run_id": r["run_id"],
                "strategy": all_cores_label(r),
                "workers": r["workers"],
                "transport": r.get("transport"),
                "bandwidth": r.get("bandwidth"),
                "batch_size": r["batch_size"],
                "visible_type": r["model"]["visible_type"],
                "precision": r["model"]["precision"],
                "dilation": F,
                "reference": kind,
                "seconds": measured,
                "reference_seconds": against,
                # the comparison's repeats go round the grid: each round's dilated run over
                # its twin in the same round cancels what the machine's speed did between
                # rounds (the median over rounds); the ratio of the medians where a file
                # holds no rounds
                "ratio": float(np.median(rounds)) if rounds else measured / against,
                "ratio_of_medians": measured / against,
                "rounds": len(rounds),
            }
        )
    return rows


def paired_ratios(run: dict, reference: dict) -> list[float]:
    """Each repeat's median step of ``run`` over ``reference``'s in the same repeat (both
    measured in one round of the grid); [] unless both records have the same repeats."""
    a = (run["metrics"]["step_seconds"] or {}).get("repeat_medians") or []
    b = (reference["metrics"]["step_seconds"] or {}).get("repeat_medians") or []
    if len(a) != len(b) or len(a) < 2:
        return []
    return [x / y for x, y in zip(a, b)]


def summary(rows: list[dict]) -> dict:
    """Median and worst |ratio - 1| over the rows, and whether they are within the bounds."""
    if not rows:
        return {"runs": 0, "median": None, "worst": None, "within_bounds": None}
    errs = np.abs(np.array([r["ratio"] for r in rows]) - 1.0)
    med, worst = float(np.median(errs)), float(errs.max())
    return {
        "runs": len(rows),
        "median": med,
        "worst": worst,
        "within_bounds": med <= MEDIAN_BOUND and worst <= WORST_BOUND,
    }


def dilation_lines(rows: list[dict]) -> list[str]:
    """The check as lines of a table (none when nothing was dilated)."""
    if not rows:
        return []
    out = [
        "\ntime dilation: each dilated run (times divided by its factor) against the same run undilated, "
        "and one worker dilated against the serial trainer (ratio: the median over the rounds of the two "
        "runs' steps in the same round)"
    ]
    out.append(f"{'strategy':<31}{'K':>3} {'settings':<26}{'against':>10}{'ms':>9}{'dilated':>9}{'ms':>9}{'ratio':>8}")
    for r in sorted(
        rows,
        key=lambda r: (r["visible_type"], r["precision"], r["batch_size"], r["workers"], r["strategy"], r["dilation"]),
    ):
        settings = f"{r['visible_type']} {r['precision']} m={r['batch_size']}"
        out.append(
            f"{r['strategy']:<31}{r['workers']:>3} {settings:<26}{r['reference']:>10}"
            f"{r['reference_seconds'] * 1e3:>9.1f}{'x' + format(r['dilation'], 'g'):>9}"
            f"{r['seconds'] * 1e3:>9.1f}{r['ratio']:>8.3f}"
        )
    for label, part in (
        ("K >= 2 against undilated", [r for r in rows if r["reference"] == "undilated" and r["workers"] > 1]),
        ("one worker against undilated", [r for r in rows if r["reference"] == "undilated" and r["workers"] == 1]),
        ("one worker against serial", [r for r in rows if r["reference"] == "serial"]),
    ):
        s = summary(part)
        if s["runs"]:
            out.append(
                f"{label}: |ratio - 1| median {100 * s['median']:.1f}%, worst {100 * s['worst']:.1f}% "
                f"over {s['runs']} runs (bounds: {100 * MEDIAN_BOUND:.0f}% / {100 * WORST_BOUND:.0f}%: "
                + ("met)" if s["within_bounds"] else "NOT met)")
            )
    return out
