"""Runs whose figures a shared machine may have spoiled, and why.

A comparison on a shared machine does not print a skewed figure as a result: each
record is checked against itself (its repeats, timed in different rounds of the grid,
must agree within the spread of its own steps), against its baselines (a K = 1 run of a
strategy does the serial trainer's work, so it cannot be much faster than the serial
trainer; the serial trainer on more BLAS threads cannot be much slower than on one), and
against what else the machine did while it ran (``harness/load.py``). A run whose
baseline is flagged has its speedups flagged too. ``parrbm table`` marks flagged rows
with ``!`` and lists the reasons; the report does the same.
"""

from __future__ import annotations

from parrbm.harness.grid import is_all_cores_baseline
from parrbm.harness.load import OTHERS_CORES_FLAG, STEAL_FLAG

__all__ = ["record_flags", "REPEAT_SPREAD", "SPEEDUP_SPREAD", "K1_FASTER", "MORE_THREADS_SLOWER"]

#: repeat medians further apart than this (and than the p10-p90 of the steps within a
#: repeat) disagree
REPEAT_SPREAD = 1.15
#: per-repeat speedups (each against the serial trainer of the same round) further apart
SPEEDUP_SPREAD = 1.25
#: a K = 1 run of a strategy faster than the serial trainer by more than this: the
#: baseline ran slow (the same arithmetic, with a strategy's overhead on top)
K1_FASTER = 1.25
#: the serial trainer on more BLAS threads slower than on one by more than this
MORE_THREADS_SLOWER = 1.5


def _key(r: dict) -> tuple:
    return r["batch_size"], r["model"]["precision"], r["model"]["visible_type"]


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def _own_flags(r: dict) -> list[str]:
    out: list[str] = []
    st = r["metrics"]["step_seconds"]
    rm = [x for x in st.get("repeat_medians") or [] if x]
    # more workers than cores share them by turns: their repeats vary by construction, and
    # their speedup is marked not meaningful already
    shared = not r["metrics"].get("speedup_meaningful", True)
    if len(rm) >= 2 and not shared:
        spread = max(rm) / min(rm)
        # the steps' spread within a repeat (records before it was kept: none)
        own = max([hi / lo for lo, hi in st.get("repeat_p10_p90") or [] if lo and hi] or [1.0])
        if spread > max(REPEAT_SPREAD, own):
            out.append(
                f"its repeats disagree: medians {_ms(min(rm))}-{_ms(max(rm))} ms (x{spread:.2f}), beyond "
                f"the spread of the steps within a repeat (p10-p90 x{own:.2f})"
            )
    by_repeat = [x for x in r["metrics"].get("speedup_vs_serial_by_repeat") or [] if x]
    if len(by_repeat) >= 2 and not shared and max(by_repeat) / min(by_repeat) > SPEEDUP_SPREAD:
        out.append(
            f"its speedup differs across repeats: {min(by_repeat):.2f}x-{max(by_repeat):.2f}x against the "
            f"serial trainer timed in the same round"
        )
    for i, load in enumerate(r.get("load") or [], 1):
        others, steal = load.get("others_cores"), load.get("steal_fraction")
        if others is not None and others > OTHERS_CORES_FLAG:
            out.append(f"other processes used {others:.2f} cores during repeat {i}")
        if steal is not None and steal > STEAL_FLAG:
            out.append(f"the hypervisor took {steal:.0%} of the CPU during repeat {i}")
    return out


def record_flags(records: list[dict]) -> dict[int, list[str]]:
    """{id(record): reasons} for the successful records that are flagged (others absent)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("metrics")]
    flags: dict[int, list[str]] = {id(r): _own_flags(r) for r in ok}
    serial = {_key(r): r for r in ok if r["strategy"] == "serial" and not is_all_cores_baseline(r)}
    all_cores = {(_key(r), r.get("blas_threads")): r for r in ok if is_all_cores_baseline(r)}
    for r in ok:
        base = serial.get(_key(r))
        if base is None or base is r:
            continue
        same_work = r["workers"] == 1 and r.get("time_dilation", 1.0) == 1.0 and r.get("transport") == "threads"
        faster = base["metrics"]["step_seconds"]["median"] / r["metrics"]["step_seconds"]["median"]
        if same_work and faster > K1_FASTER:
            why = f"K = 1 {r['strategy']} (the same arithmetic) ran {faster:.2f}x faster than it: the baseline ran slow"
            if why not in flags[id(base)]:
                flags[id(base)].append(why)
    for (key, _), r in all_cores.items():
        one = serial.get(key)
        if (
            one is not None
            and r["metrics"]["step_seconds"]["median"] > MORE_THREADS_SLOWER * one["metrics"]["step_seconds"]["median"]
        ):
            flags[id(r)].append(
                f"on {r.get('blas_threads')} BLAS threads it ran "
                f"{r['metrics']['step_seconds']['median'] / one['metrics']['step_seconds']['median']:.1f}x "
                f"slower than on one"
            )
    # speedups against a flagged baseline are flagged with it
    for r in ok:
        if r["strategy"] == "serial" and not is_all_cores_baseline(r):
            continue
        base = serial.get(_key(r))
        if base is not None and base is not r and flags[id(base)]:
            flags[id(r)].append("its speedup is against a flagged serial baseline")
        wanted = r["metrics"].get("serial_all_cores_threads")
        cores = all_cores.get((_key(r), wanted))
        if (
            cores is not None
            and cores is not r
            and flags[id(cores)]
            and r["metrics"].get("speedup_vs_serial_all_cores")
        ):
            flags[id(r)].append(f"its speedup vs cores is against a flagged baseline ({wanted} BLAS threads)")
    return {k: v for k, v in flags.items() if v}
