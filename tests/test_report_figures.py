"""The report and the figures tell the truth about what ran: a skewed baseline is flagged,
each row carries its own record's prediction, each strategy keeps its colour and marker in
every figure, legends list only what ran, footnotes only what the table shows."""

from __future__ import annotations

import json

import pytest

from parrbm.analysis.timemodel import Link, Profile
from parrbm.cli import main

CONFIG = """
name: honesty
model: {visible: 512, hidden: 1024, visible_type: binary, precision: float32}
data: {kind: random-binary, cases: 500}
training: {batch_size: 100, steps: 3, warmup: 1, repeats: 3, learning_rate: 0.1, blas_threads: 1}
grid:
  strategy: [serial, green-only, parameter-averaging]
  workers: [1, 2]
  transport: [threads]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from parrbm.harness.comparison_config import load_config
    from parrbm.harness.experiment import run_config

    tmp = tmp_path_factory.mktemp("honesty")
    (tmp / "honesty.yaml").write_text(CONFIG)
    return run_config(load_config(tmp / "honesty.yaml"), tmp / "out", progress=lambda m: None, calibrate=None)


def _records(path):
    from parrbm.harness.experiment import read_records

    return read_records(path)


def _rewrite(path, out, change):
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for r in lines:
        change(r)
    out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return out


def _is_serial(r, threads=None):
    return r["strategy"] == "serial" and (r.get("baseline") is not None) == (threads is not None)


def _slow_baselines(r):
    """The serial trainer ran 4x slower in every repeat, and 65x slower on two BLAS threads
    in two of three: as on a machine another job loaded while the baselines ran."""
    st = r["metrics"]["step_seconds"]
    if _is_serial(r):
        factor = [4.0, 4.0, 4.0]
    elif _is_serial(r, threads=2):
        factor = [1.0, 65.0, 65.0]
    else:
        return
    st["repeat_medians"] = [x * f for x, f in zip(st["repeat_medians"], factor)]
    st["median"] = sorted(st["repeat_medians"])[1]
    st["p10"], st["p90"] = min(st["repeat_medians"]), max(st["repeat_medians"])


def test_a_skewed_baseline_is_flagged_in_the_table_and_the_report(results, tmp_path, capsys):
    assert any(_is_serial(r, threads=2) for r in _records(results))  # the config ran both baselines
    skewed = _rewrite(results, tmp_path / "honesty.jsonl", _slow_baselines)
    from parrbm.analysis.flags import record_flags

    records = _records(skewed)
    flags = record_flags(records)
    serial = next(r for r in records if _is_serial(r))
    two = next(r for r in records if _is_serial(r, threads=2))
    assert any(
        "K = 1 green-only (the same arithmetic) ran" in f and "the baseline ran slow" in f for f in flags[id(serial)]
    )
    assert any("its repeats disagree" in f for f in flags[id(two)])
    assert any("slower than on one" in f for f in flags[id(two)])
    k2 = next(r for r in records if r["strategy"] == "green-only" and r["workers"] == 2)
    assert "its speedup is against a flagged serial baseline" in flags[id(k2)]

    assert main(["table", str(skewed)]) == 0
    table = capsys.readouterr().out
    assert "run(s) flagged: their figures may be skewed by this machine" in table
    assert any(line.startswith("serial ") and line.rstrip().endswith("!") for line in table.splitlines())

    page = tmp_path / "report.md"
    assert main(["report", str(skewed), "--out", str(page), "--no-divergence"]) == 0
    text = page.read_text()
    assert "## Flagged runs" in text and "the baseline ran slow" in text
    assert "no speedup below rests on them" in text
    assert "Fastest at K" not in text  # every K = 2 run's speedup rests on the flagged baseline
    assert "| serial ! |" in text
    # nothing of K > cores ran: no footnote for it
    assert "more workers than cores" not in text


def test_the_table_rows_carry_their_own_records_prediction(results):
    from parrbm.analysis.report import _tables

    kinds = ("sample", "bernoulli", "visible", "visible-gaussian", "pack", "bitstat", "update", "copy")
    profile = Profile(
        cores=2,
        gemm={p: [[1, 1e9], [4096, 1e9]] for p in ("float32", "float64")},
        element={p: {k: 1e-9 for k in kinds} for p in ("float32", "float64")},
        links={
            "threads": {
                k: Link(1e-5, 1e9) for k in ("allgather", "allgather_bits", "reduce_scatter", "allreduce", "alltoall")
            }
        },
    )
    t = _tables(_records(results), profile, {})
    model = t["head"].index("model ms")
    rows = {r[0]: r for r in t["rows"]}
    assert rows["serial"][model] != "-"
    # the serial trainer on two BLAS threads is a yardstick: no prediction of its own, and
    # never the one-thread row's
    assert rows["serial (2 BLAS thr.)"][model] == "-"


def test_each_strategy_keeps_its_colour_and_marker_in_every_figure(results, tmp_path, monkeypatch):
    import matplotlib.colors as mcolors

    from parrbm.analysis import plots

    figures = {}
    real_save = plots._save

    def keep(fig, out, name):
        figures[name] = fig
        return real_save(fig, out, name)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    records = _records(results)
    plots.plot_all(records, tmp_path / "figs", divergence=True)
    assert {"speedup", "bytes", "breakdown", "divergence"} <= set(figures)
    ran = {"green-only", "parameter-averaging"}
    same = lambda a, b: mcolors.to_hex(a) == mcolors.to_hex(b)  # noqa: E731
    seen = set()
    for name, fig in figures.items():
        for ax in fig.axes:
            for artist in [*ax.lines, *ax.collections]:
                s = artist.get_gid()
                if s is None:
                    continue
                colour, marker = plots.strategy_style(s)
                rgba = artist.get_color() if hasattr(artist, "get_marker") else artist.get_facecolor()[0]
                assert same(rgba, colour), (name, s)
                if hasattr(artist, "get_marker") and artist.get_marker() not in (None, "None", ""):
                    assert artist.get_marker() == marker, (name, s)
                seen.add((name, s))
        labels = [
            t.get_text()
            for leg in [*fig.legends, *[a.get_legend() for a in fig.axes if a.get_legend()]]
            for t in leg.get_texts()
        ]
        handles = [h for leg in fig.legends for h in leg.legend_handles]
        for h in handles:
            if h.get_label() in plots._STYLE:
                assert same(h.get_color(), plots.strategy_style(h.get_label())[0])
        named = {x for x in labels if x in plots._STYLE or x in ("unit-partitioned", "purple-only")}
        assert named <= ran, (name, named)  # legends list only the strategies that ran
    assert {("speedup", s) for s in ran} <= seen and {("bytes", s) for s in ran} <= seen
    # the divergence figure shows the comparison's own setting only
    div = [t.get_text() for t in figures["divergence"].axes[0].get_legend().get_texts()]
    assert div == ["binary, float32"]
    # no two strategies share a colour
    styles = [plots.strategy_style(s) for s in plots._STYLE]
    assert len({c for c, _ in styles}) == len(styles) and len({m for _, m in styles}) == len(styles)


def test_interrupted_runs_keep_their_finished_repeats(tmp_path, monkeypatch):
    from parrbm.harness import experiment
    from parrbm.harness.comparison_config import load_config

    (tmp_path / "honesty.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "honesty.yaml")
    real, calls = experiment._measure, []

    def stop_in_the_second_round(cfg, pt):
        calls.append(pt["run_id"])
        if len(calls) > len(experiment.grid_points(cfg)):
            raise KeyboardInterrupt
        return real(cfg, pt)

    monkeypatch.setattr(experiment, "_measure", stop_in_the_second_round)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_config(cfg, tmp_path / "out", progress=lambda m: None, calibrate=None)
    records = _records(tmp_path / "out" / "honesty.jsonl")
    assert len(records) == len(experiment.grid_points(cfg))
    assert all(r["status"] == "ok" and r["training"]["repeats"] == 1 and r["repeats_planned"] == 3 for r in records)
