"""One page from a results file: the environment, the comparison table with the time
model beside every run, the figures, the paper's numbers beside ours, and advice for
the paper's model on the paper's network.

    parrbm report RESULTS.jsonl --out report.html     (or report.md)

HTML is one self-contained file (figures inlined); Markdown links the figures, written
to ``<name>_files/`` beside it (PNG and SVG in both cases).
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from parrbm.analysis import cost
from parrbm.analysis.compare import (
    all_cores_label,
    bytes_per_cases,
    emulation_line,
    error_summary,
    predicted_vs_measured,
    ranking_agreement,
    speed_line,
    where_label,
)
from parrbm.analysis.plots import plot_all

#: the paper's Table 4.1 (MB per 8000 cases, 8000 x 20000 RBM, K = 1, 2, 4, 8)
PAPER_TABLE_4_1 = {
    ("binary", "float32"): [0, 48, 144, 336],
    ("gaussian", "float32"): [0, 296, 888, 2072],
    ("gaussian", "float64"): [0, 552, 1656, 3864],
}
PAPER_NETWORK = (105e6, 0.091e-3)  # bytes/s, s

CAPTIONS = {
    "speedup": "Speedup over the serial trainer on one core, over the serial trainer on as many BLAS threads as "
    "the K workers use in all (up to the cores: the baseline a user with those cores would run), "
    "and efficiency (speedup over one core / K); median step times; dashed: ideal.",
    "scaling": "As the paper draws it (its Figures 4.6 and 4.7): the speedup of 4 machines over 2 (squares) "
    "and of 8 over 4 (diamonds) for each setting; dashed: doubling the machines doubles the speed.",
    "bytes": "Bytes per 8000 training cases: every measured run (points) lies on the closed form (lines).",
    "breakdown": "Per step, slowest worker. The same definitions on every transport: compute is a step's time "
    "outside the collectives; a collective call lasts, on the worker that reached it last, as long "
    "as moving its bytes takes (it waits for nobody): that is communication, for every worker; "
    "what a call lasts beyond it on another worker is waiting for the last one.",
    "predicted": "The calibrated time model against the measured median step; grey band: within 15%.",
    "bandwidth": "Speedup against the emulated link's bandwidth: measured points, the time model's lines "
    "(the transport's calibrated costs with the link's payload rate); dashed: where the model's "
    "fastest strategy changes; shaded: between which measured bandwidths it changes.",
    "divergence": "Unit-partitioned keeps two copies of every weight; without a sync they drift apart only "
    "by rounding (measured here, K = 2, after every minibatch).",
}


#: what the speedup figure's caption adds when the figure shows it
_SHADED = " Shaded: more workers than cores, where measured speedup means nothing."
_DILATED = (
    " xF: emulated machines with time dilated by F (each host 1/F of a core, its link 1/F of the "
    "bandwidth, times divided by F)."
)


def _captions(records: list[dict]) -> dict:
    """The figures' captions, each saying only what its figure shows."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("metrics")]
    shaded = any(
        not r["metrics"].get("speedup_meaningful", True) and (r.get("time_dilation") or 1.0) == 1.0 for r in ok
    )
    dilated = any((r.get("time_dilation") or 1.0) != 1.0 for r in ok)
    return {**CAPTIONS, "speedup": CAPTIONS["speedup"] + (_SHADED if shaded else "") + (_DILATED if dilated else "")}


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def _tables(records: list[dict], profile, flags: dict) -> dict:
    ok = [r for r in records if r.get("status") == "ok"]
    # by the record itself: the serial trainer on one and on two BLAS threads share every
    # other key, and only the first has a prediction
    pred = {row["record_id"]: row for row in predicted_vs_measured(records, profile)} if profile is not None else {}
    from parrbm.strategies.registry import builtin_order

    head = [
        "strategy",
        "K",
        "transport",
        "setting",
        "MB / 8000 cases",
        "= formula",
        "MB / sync",
        "ms / step (p10-p90)",
        "model ms",
        "model error",
        "speedup vs serial, 1 core",
        "vs serial, the workers' cores",
        "vs K=1",
        "efficiency",
    ]
    rows = []
    for r in sorted(
        ok,
        key=lambda r: (
            r["model"]["visible_type"],
            r["model"]["precision"],
            r["batch_size"],
            builtin_order(r["strategy"]),
            r["workers"],
            r.get("transport") or "",
        ),
    ):
        mt, m = r["metrics"], r["batch_size"]
        where = r.get("transport") and where_label(r)
        p = pred.get(id(r))
        st = mt["step_seconds"]
        note = "" if mt.get("speedup_meaningful", True) else " *"
        all_cores = mt.get("speedup_vs_serial_all_cores")
        rows.append(
            [
                all_cores_label(r) + (" !" if id(r) in flags else ""),
                str(r["workers"]),
                where or "-",
                f"{r['model']['visible_type']}, {r['model']['precision']}, m={m}",
                f"{bytes_per_cases(r) / 1e6:.2f}",
                "yes" if mt["bytes_per_step"] == mt.get("bytes_per_step_formula") else "NO",
                f"{mt['bytes_per_sync'] / 1e6:.3f}",
                f"{st['median'] * 1e3:.1f} ({st['p10'] * 1e3:.1f}-{st['p90'] * 1e3:.1f})",
                _fmt(p and p["predicted_seconds"] * 1e3, ".1f"),
                _fmt(p and 100 * p["error"], "+.0f") + ("%" if p else ""),
                _fmt(mt["speedup_vs_serial"], ".2f") + note,
                _fmt(all_cores, ".2f") + (f" ({mt['serial_all_cores_threads']} thr.)" if all_cores else ""),
                _fmt(mt["speedup_vs_k1"], ".2f"),
                _fmt(mt["efficiency"], ".2f"),
            ]
        )
    beyond = any(not r["metrics"].get("speedup_meaningful", True) for r in ok)
    return {"head": head, "rows": rows, "beyond_cores": beyond, "flagged": any(id(r) in flags for r in ok)}


def _table_notes(t: dict) -> list[str]:
    """The footnotes of the runs table: only for what it shows."""
    out = []
    if t["beyond_cores"]:
        out.append("*: more workers than cores; the measured speedup is not meaningful there.")
    if t["flagged"]:
        out.append('!: flagged, its figures may be skewed by this machine: see "Flagged runs".')
    return out


def _paper_rows() -> dict:
    head = ["visible, precision", "K", "paper MB", "parrbm closed form MB"]
    rows = []
    for (vis, prec), paper in PAPER_TABLE_4_1.items():
        model = cost.Model(8000, 20000, visible=vis, precision=prec)
        for K, mb in zip((1, 2, 4, 8), paper):
            ours = cost.bytes_for_cases("unit-partitioned", model, 8000, K, 8000) / 1e6
            rows.append([f"{vis}, {prec}", str(K), f"{mb}", f"{ours:g}"])
    return {"head": head, "rows": rows}


def _advice_rows(profile) -> dict | None:
    if profile is None:
        return None
    from parrbm.analysis.timemodel import advise

    prof = profile.with_network("paper", *PAPER_NETWORK)
    head = ["visible", "m", "K", "best", "predicted ms / step", "speedup", "runner-up (slower by)"]
    rows = []
    for vis in ("binary", "gaussian"):
        for m in (100, 1000):
            for r in advise(
                cost.Model(8000, 20000, visible=vis),
                m,
                [1, 2, 4, 8, 16, 64, 256],
                prof,
                transport="paper",
                sync_every=8000 // m,
            ):
                rows.append(
                    [
                        vis,
                        str(m),
                        str(r["workers"]),
                        r["best"],
                        f"{r['step_seconds'] * 1e3:.0f}",
                        f"{r['speedup']:.2f}",
                        f"{r['runner_up']} (+{r['margin_percent']:.1f}%)" if r["runner_up"] else "-",
                    ]
                )
    return {"head": head, "rows": rows}


def _network_rows(records: list[dict], profile) -> dict | None:
    """The emulated links of the runs (configured, and as calibrated) and the crossovers."""
    from parrbm.analysis.compare import network_transport
    from parrbm.analysis.plots import bandwidth_crossovers

    links = {}
    for r in records:
        n = r.get("network")
        if r.get("status") == "ok" and n:
            links.setdefault((r["transport"], n.get("bandwidth")), n)
    if not links:
        return None
    rows = []
    for (transport, bw), n in sorted(links.items(), key=lambda kv: (kv[0][0], kv[0][1] or float("inf"))):
        cal = profile.links.get(network_transport(transport, bw)) if (profile is not None and bw) else None
        a = (cal or {}).get("allgather")
        rows.append(
            [
                transport,
                "unshaped" if bw is None else f"{bw / 1e6:g} MB/s",
                "-" if n.get("latency") is None else f"{n['latency'] * 1e3:g} ms",
                "yes" if n.get("latency_emulated") else "no (no netem)",
                "-" if a is None else f"{a.bandwidth / 1e6:.1f} MB/s",
                "-" if a is None else f"{a.latency * 1e3:.3f} ms",
            ]
        )
    cross = []
    for c in bandwidth_crossovers(records, profile):
        where = f"{c['transport']}, K = {c['workers']}, {c['setting']}"
        measured = (
            "; ".join(
                f"{a} -> {b} between {lo / 1e6:g} and {hi / 1e6:g} MB/s (about {at / 1e6:.3g})"
                for lo, hi, a, b, at in c["measured"]
            )
            or "none"
        )
        model = "; ".join(f"{a} -> {b} at {x / 1e6:.3g} MB/s" for x, a, b in c["model"]) or (
            "none" if profile is not None else "-"
        )
        # the model's crossing of the same pair, as a factor of the measured estimate
        factors = [
            max(x / at, at / x) for lo, hi, a, b, at in c["measured"] for x, ma, mb in c["model"] if {ma, mb} == {a, b}
        ]
        cross.append([where, measured, model, " ".join(f"{f:.2f}x" for f in factors) or "-"])
    return {
        "links": {
            "head": [
                "transport",
                "link (wire)",
                "latency",
                "latency emulated",
                "calibrated payload rate",
                "calibrated latency",
            ],
            "rows": rows,
        },
        "crossovers": {
            "head": ["runs", "measured crossovers", "model's crossovers", "model / measured"],
            "rows": cross,
        },
    }


def _summary(records: list[dict], profile, flags: dict) -> list[str]:
    ok = [r for r in records if r.get("status") == "ok"]
    lines = []
    exact = sum(r["metrics"]["bytes_per_step"] == r["metrics"].get("bytes_per_step_formula") for r in ok)
    lines.append(
        f"{len(ok)} runs recorded ({len(records) - len(ok)} failed); measured bytes equal the closed "
        f"form in {exact} of {len(ok)}."
    )
    if flags:
        lines.append(
            f'{len(flags)} run(s) flagged: this machine may have skewed their times (see "Flagged runs"); '
            f"no speedup below rests on them."
        )
    best = {}
    for r in ok:
        mt = r["metrics"]
        if r["strategy"] == "serial" or r["workers"] == 1 or not mt.get("speedup_meaningful", True) or id(r) in flags:
            continue
        k = (r["model"]["visible_type"], r["model"]["precision"], r["batch_size"], r["workers"])
        if mt["speedup_vs_serial"] and (k not in best or mt["speedup_vs_serial"] > best[k][1]):
            best[k] = (
                f"{r['strategy']} on {where_label(r)}",
                mt["speedup_vs_serial"],
                mt.get("speedup_vs_serial_all_cores"),
                mt.get("serial_all_cores_threads"),
            )
    for (vis, prec, m, K), (who, sp, sp_all, threads) in sorted(best.items()):
        against_all = (
            "" if sp_all is None else f", {sp_all:.2f}x the serial trainer on {threads} BLAS threads (the same cores)"
        )
        lines.append(
            f"Fastest at K = {K} ({vis}, {prec}, m = {m}): {who}, {sp:.2f}x the serial trainer "
            f"on one core{against_all}."
        )
    if profile is not None:
        rows = predicted_vs_measured(records, profile)
        e = error_summary(rows)
        if e["runs"]:
            lines.append(
                f"Time model vs measured median step (runs with K <= cores): median error "
                f"{100 * e['median']:.1f}%, worst {100 * e['worst']:.1f}% over {e['runs']} runs; "
                f"{e['within_spread']} predictions inside their run's measured p10-p90 steps, "
                f"the worst {100 * e['worst_beyond_spread']:.1f}% beyond it."
            )
        speed = speed_line(rows)
        if speed:
            lines.append(speed[0].upper() + speed[1:] + ".")
        emulated = [r for r in rows if r.get("predicted_emulation_seconds")]
        if emulated:
            line = emulation_line(emulated)
            lines.append(line[0].upper() + line[1:] + ".")
        for g in ranking_agreement(rows):
            noise = {(a, b) for a, b, _ in g["discordant_within_noise"]}
            gaps = ", ".join(
                f"{a} / {b} ({gap:.1f}% apart" + (", within the p10-p90 noise)" if (a, b) in noise else ")")
                for a, b, gap in g["discordant"]
            )
            lines.append(
                f"Ranking at K = {g['workers']} on {g['transport']}: "
                + (
                    "the model orders the strategies as measured."
                    if g["same"]
                    else "the model orders the strategies as measured, up to pairs within the noise"
                    if g["same_within_noise"]
                    else f"model and measurement agree on the best ({g['measured'][0]})"
                    if g["same_best"]
                    else f"measured best {g['measured'][0]}, model's {g['predicted'][0]}"
                )
                + (f"; pairs ordered differently: {gaps}" if gaps else "")
            )
    else:
        lines.append("No machine profile beside the results: run 'parrbm run' (it calibrates) or give --profile.")
    return lines


def _environment(records: list[dict]) -> list[tuple[str, str]]:
    env = next((r["environment"] for r in records if r.get("environment")), {})
    return [(k, str(v)) for k, v in env.items()]


def write_report(
    records: list[dict], out: Path, *, profile=None, title: str | None = None, divergence: bool = True
) -> Path:
    out = Path(out)
    if out.suffix not in (".html", ".md"):
        raise ValueError(f"--out {out}: the report is .html or .md")
    files = out.with_name(out.stem + "_files")
    figs = plot_all(records, files, profile=profile, divergence=divergence)
    config = next((r.get("config") for r in records if r.get("config")), "results")
    title = title or f"parrbm comparison: {config}"
    from parrbm.analysis.dilation import dilation_check
    from parrbm.analysis.dilation import summary as dilation_summary
    from parrbm.analysis.flags import record_flags
    from parrbm.analysis.scaling import paper_claims, scaling_rows, scaling_table
    from parrbm.analysis.table import _run_name

    flags = record_flags(records)
    scaling = scaling_rows(records)
    checks = dilation_check(records)
    parts = {
        "summary": _summary(records, profile, flags),
        "env": _environment(records),
        "flagged": [(_run_name(r), "; ".join(flags[id(r)])) for r in records if id(r) in flags],
        "scaling": scaling_table(scaling) if any(len(r["speedup"]) > 2 for r in scaling) else None,
        "claims": paper_claims(scaling),
        "dilation": {
            "head": ["run", "against", "ms a step", "dilated", "ms a step (divided)", "ratio"],
            "rows": [
                [
                    c["strategy"] + f", K = {c['workers']}, {c['visible_type']} {c['precision']} m={c['batch_size']}",
                    c["reference"],
                    f"{c['reference_seconds'] * 1e3:.1f}",
                    f"x{c['dilation']:g}",
                    f"{c['seconds'] * 1e3:.1f}",
                    f"{c['ratio']:.3f}",
                ]
                for c in checks
            ],
        }
        if checks
        else None,
        "dilation_summary": dilation_summary([c for c in checks if c["reference"] == "undilated" and c["workers"] > 1]),
        "table": _tables(records, profile, flags),
        "paper": _paper_rows(),
        "advice": _advice_rows(profile),
        "network": _network_rows(records, profile),
        "failed": [(r.get("run_id", "?"), r.get("error", "")) for r in records if r.get("status") == "error"],
        "mismatch": [
            (r.get("run_id", "?"), "; ".join(r["metrics"]["formula_mismatch"]))
            for r in records
            if r.get("status") == "ok" and (r.get("metrics") or {}).get("formula_mismatch")
        ],
    }
    parts["captions"] = _captions(records)
    text = _html(title, parts, figs) if out.suffix == ".html" else _markdown(title, parts, figs, out)
    from parrbm._files import write_atomic

    write_atomic(out, text)
    return out


def _dilation_note(p: dict) -> str:
    s = p["dilation_summary"]
    held = (
        ""
        if not s["runs"]
        else (
            f" K >= 2 against undilated: |ratio - 1| median {100 * s['median']:.1f}%, worst {100 * s['worst']:.1f}% over "
            f"{s['runs']} runs (bounds 5% / 10%: " + ("met" if s["within_bounds"] else "NOT met") + ")."
        )
    )
    return (
        "Each dilated run (its hosts on 1/F of a core, their links at 1/F of the bandwidth, its times "
        "divided by F) beside the same run undilated, and one worker dilated beside one undilated." + held
    )


def _md_table(t: dict) -> str:
    lines = ["| " + " | ".join(t["head"]) + " |", "|" + "---|" * len(t["head"])]
    lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def _markdown(title: str, p: dict, figs: dict, out: Path) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    s = [f"# {title}", "", f"Written {now}.", ""]
    s += [f"- {line}" for line in p["summary"]]
    s += ["", "## Runs", "", _md_table(p["table"]), ""] + [x + "\n" for x in _table_notes(p["table"])]
    if p["flagged"]:
        s += (
            [
                "## Flagged runs",
                "",
                "Their figures may be skewed by what else this machine did; read them with care "
                "or run them again on a quiet machine.",
                "",
            ]
            + [f"- {who}: {why}" for who, why in p["flagged"]]
            + [""]
        )
    for name, paths in figs.items():
        png = next(x for x in paths if x.suffix == ".png")
        s += [f"![{name}]({png.relative_to(out.parent)})", "", f"*{p['captions'][name]}*", ""]
    if p["network"]:
        s += [
            "## The emulated network",
            "",
            "Each tcp or mpi worker on a host of its own, its link shaped (tbf) "
            "in both directions. The rate is the wire's; TCP's payload gets 1448 of every 1514 bytes.",
            "",
            _md_table(p["network"]["links"]),
            "",
        ]
        if p["network"]["crossovers"]["rows"]:
            s += [
                "Where the fastest strategy changes with the bandwidth:",
                "",
                _md_table(p["network"]["crossovers"]),
                "",
            ]
    if p["scaling"]:
        s += ["## Speedup as the machines double", "", _md_table(p["scaling"]), ""]
        s += [f"- {c}" for c in p["claims"]] + [""]
    if p["dilation"]:
        s += ["## Time dilation against undilated runs", "", _dilation_note(p), "", _md_table(p["dilation"]), ""]
    s += [
        "## The paper's Table 4.1 beside ours",
        "",
        "Unit-partitioned, 8000 x 20000 RBM, bytes per 8000 cases.",
        "",
        _md_table(p["paper"]),
        "",
    ]
    if p["advice"]:
        s += [
            "## Advice for the paper's model on the paper's network (105 MB/s, 0.091 ms)",
            "",
            "Compute priced with this machine's profile, one worker per machine.",
            "",
            _md_table(p["advice"]),
            "",
        ]
    s += ["## Environment", ""] + [f"- {k}: {v}" for k, v in p["env"]]
    if p["mismatch"]:
        s += ["", "## Runs whose bytes differ from their strategy's declared closed form", ""] + [
            f"- `{rid}`: {what}" for rid, what in p["mismatch"]
        ]
    if p["failed"]:
        s += ["", "## Failed runs", ""] + [f"- `{rid}`: {err}" for rid, err in p["failed"]]
    return "\n".join(s) + "\n"


# ---- the one HTML page builder (this report and parrbm train's) -------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}"
    "figcaption{color:#555;font-size:14px}img{max-width:100%}"
)


def html_page(title: str, body: list[str]) -> str:
    """A self-contained page: ``body`` is HTML already escaped."""
    return "\n".join(
        [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>",
            *body,
            "</body></html>",
        ]
    )


def html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    top = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def html_figure(png: Path, caption: str) -> str:
    """A PNG embedded in the page (base64), with its caption."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _html_table(t: dict) -> str:
    return html_table(t["head"], t["rows"])


def _html(title: str, p: dict, figs: dict) -> str:
    e = html.escape
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    s = [
        f"<h1>{e(title)}</h1><p>Written {now}.</p><ul>",
        "".join(f"<li>{e(line)}</li>" for line in p["summary"]),
        "</ul>",
        "<h2>Runs</h2>",
        _html_table(p["table"]),
    ] + [f"<p>{e(x)}</p>" for x in _table_notes(p["table"])]
    if p["flagged"]:
        s += [
            "<h2>Flagged runs</h2><p>Their figures may be skewed by what else this machine did; read them with "
            "care or run them again on a quiet machine.</p><ul>",
            "".join(f"<li>{e(who)}: {e(why)}</li>" for who, why in p["flagged"]),
            "</ul>",
        ]
    for name, paths in figs.items():
        s.append(html_figure(next(x for x in paths if x.suffix == ".png"), p["captions"][name]))
    if p["network"]:
        s += [
            "<h2>The emulated network</h2>",
            "<p>Each tcp or mpi worker on a host of its own, its link shaped (tbf) in both directions. "
            "The rate is the wire's; TCP's payload gets 1448 of every 1514 bytes.</p>",
            _html_table(p["network"]["links"]),
        ]
        if p["network"]["crossovers"]["rows"]:
            s += [
                "<h3>Where the fastest strategy changes with the bandwidth</h3>",
                _html_table(p["network"]["crossovers"]),
            ]
    if p["scaling"]:
        s += ["<h2>Speedup as the machines double</h2>", _html_table(p["scaling"])]
        s += ["<ul>", "".join(f"<li>{e(c)}</li>" for c in p["claims"]), "</ul>"]
    if p["dilation"]:
        s += [
            "<h2>Time dilation against undilated runs</h2>",
            f"<p>{e(_dilation_note(p))}</p>",
            _html_table(p["dilation"]),
        ]
    s += [
        "<h2>The paper's Table 4.1 beside ours</h2>",
        "<p>Unit-partitioned, 8000 x 20000 RBM, bytes per 8000 cases.</p>",
        _html_table(p["paper"]),
    ]
    if p["advice"]:
        s += [
            "<h2>Advice for the paper's model on the paper's network (105 MB/s, 0.091 ms)</h2>",
            "<p>Compute priced with this machine's profile, one worker per machine.</p>",
            _html_table(p["advice"]),
        ]
    s += ["<h2>Environment</h2><ul>", "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in p["env"]), "</ul>"]
    if p["mismatch"]:
        s += [
            "<h2>Runs whose bytes differ from their strategy's declared closed form</h2><ul>",
            "".join(f"<li><code>{e(r)}</code>: {e(x)}</li>" for r, x in p["mismatch"]),
            "</ul>",
        ]
    if p["failed"]:
        s += [
            "<h2>Failed runs</h2><ul>",
            "".join(f"<li><code>{e(r)}</code>: {e(str(x))}</li>" for r, x in p["failed"]),
            "</ul>",
        ]
    return html_page(title, s)
