"""YAML comparisons: validation, the results file, --resume, faults, the CLI."""

import textwrap

import pytest
from support import sigint_default

from parrbm.cli import main
from parrbm.harness.comparison_config import ConfigError, load_config
from parrbm.harness.experiment import read_records, run_config
from parrbm.harness.grid import all_cores_threads, environment_cores, grid_points

REQUIRED_METRICS = {
    "bytes_per_step",
    "bytes_per_sync",
    "wire_bytes_per_step",
    "step_seconds",
    "compute_seconds",
    "comm_seconds",
    "wait_seconds",
    "cases_per_second",
    "speedup_vs_serial",
    "speedup_vs_k1",
    "efficiency",
    "replica_divergence",
    "reconstruction_error",
    "peak_rss_bytes",
}

SMALL = """
name: small
model: {visible: 24, hidden: 16}
data: {kind: random-binary, cases: 64}
training: {batch_size: 8, steps: 3, warmup: 1, timeout: 10}
grid:
  strategy: [serial, unit-partitioned, parameter-averaging]
  workers: [1, 2]
  transport: [threads, tcp]
"""


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize(
    "text,match",
    [
        (
            "model: {visible: 4, hidden: 4}\ngrid: {strategy: serial, workers: 1}\ncolour: red\n",
            r"\(top level\): Additional properties are not allowed \('colour'",
        ),
        (
            "model: {visible: 4, hidden: 4, visble_type: binary}\ngrid: {strategy: serial, workers: 1}\n",
            r"model: .*'visble_type'.*allowed: .*visible_type",
        ),
        ("model: {visible: 0, hidden: 4}\ngrid: {strategy: serial, workers: 1}\n", r"model\.visible: 0"),
        ("model: {visible: 4, hidden: 4}\ngrid: {strategy: [serial, magic], workers: 1}\n", r"grid\.strategy"),
        ("model: {visible: 4, hidden: 4}\ngrid: {strategy: serial, workers: [1, -2]}\n", r"grid\.workers"),
        (
            "model: {visible: 4, hidden: 4, precision: float16}\ngrid: {strategy: serial, workers: 1}\n",
            r"model\.precision: 'float16' is not allowed; allowed: 'float32', 'float64'",
        ),
        ("model: {visible: 4, hidden: 4}\n", r"'grid' is a required property"),
        (
            "model: {visible: 4, hidden: 4}\ndata: {kind: npy, path: nowhere.npy}\ngrid: {strategy: serial, workers: 1}\n",
            r"data\.path: no such file",
        ),
        (
            "model: {visible: 4, hidden: 4}\ntcp: {hosts: []}\ngrid: {strategy: serial, workers: 1}\n",
            r"tcp\.hosts: \[\]",
        ),
        (
            "model: {visible: 4, hidden: 4}\ntcp: {hosts: [a], user: me}\ngrid: {strategy: serial, workers: 1}\n",
            r"tcp: .*'user'.*allowed: .*hosts",
        ),
        ("- just\n- a list\n", "must be a mapping"),
        ("model: {visible: 4\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_config(path)
    assert str(path) in str(exc.value)


def test_grid_and_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {
        "quick.yaml",
        "paper-binary.yaml",
        "paper-gaussian.yaml",
        "paper-binary-small.yaml",
        "paper-gaussian-small.yaml",
    } <= set(names)
    for p in root.glob("*.yaml"):
        load_config(p)
    quick = load_config(root / "quick.yaml")
    pts = grid_points(quick)
    # serial once on one core and once on each K's cores (K = 2, 4: up to the cores here),
    # each strategy at K=1 on threads and at K=2, 4 on three transports
    all_cores = all_cores_threads(quick)
    assert all_cores == sorted({min(2, environment_cores()), min(4, environment_cores())} - {1})
    assert len(pts) == 1 + len(all_cores) + 5 * (1 + 2 * 3)
    assert [p["blas_threads"] for p in pts if p.get("baseline") == "all-cores"] == all_cores
    paper = grid_points(load_config(root / "paper-binary.yaml"))
    assert {(p["batch_size"], p["precision"]) for p in paper} == {
        (100, "float32"),
        (100, "float64"),
        (1000, "float32"),
        (1000, "float64"),
    }


def test_run_writes_records_and_resume_skips(tmp_path):
    cfg = load_config(write(tmp_path, SMALL))
    out = tmp_path / "out"
    path = run_config(cfg, out, progress=lambda m: None)
    recs = read_records(path)
    assert len(recs) == len(grid_points(cfg)) == 1 + len(all_cores_threads(cfg)) + 2 * (1 + 2)
    for r in recs:
        assert r["status"] == "ok", r.get("error")
        assert REQUIRED_METRICS <= set(r["metrics"])
        assert {"strategy", "workers", "transport", "batch_size", "model", "environment"} <= set(r)
        assert {"visible", "hidden", "visible_type", "precision"} <= set(r["model"])
        assert r["metrics"]["bytes_per_step"] == r["metrics"]["bytes_per_step_formula"]
        assert set(r["metrics"]["step_seconds"]) == {"median", "p10", "p90", "repeat_medians", "repeat_p10_p90"}
        assert len(r["metrics"]["step_seconds"]["repeat_medians"]) == r["training"]["repeats"] == 1
    tcp = [r for r in recs if r["transport"] == "tcp"]
    assert tcp and all(r["metrics"]["wire_bytes_per_step"] > r["metrics"]["bytes_per_step"] for r in tcp)
    same = {(r["strategy"], r["transport"]): r["metrics"]["bytes_per_step"] for r in recs if r["workers"] == 2}
    assert same[("unit-partitioned", "tcp")] == same[("unit-partitioned", "threads")]
    # both baselines, as the records define them: the serial run's median over this run's,
    # on one core and on the cores the run's workers use in all
    serial = {
        r.get("blas_threads", 1): r["metrics"]["step_seconds"]["median"] for r in recs if r["strategy"] == "serial"
    }
    assert sorted(serial) == sorted({1, *all_cores_threads(cfg)})
    for r in recs:
        mt = r["metrics"]
        assert mt["speedup_vs_serial"] == pytest.approx(serial[1] / mt["step_seconds"]["median"], rel=1e-12)
        threads = r.get("blas_threads") if r.get("baseline") == "all-cores" else min(r["workers"], environment_cores())
        assert mt["serial_all_cores_threads"] == threads
        assert mt["speedup_vs_serial_all_cores"] == pytest.approx(
            serial[threads] / mt["step_seconds"]["median"], rel=1e-12
        )
    # --resume: nothing new to run, the file is unchanged
    before = path.read_text()
    seen = []
    run_config(cfg, out, resume=True, progress=seen.append)
    assert path.read_text() == before and all("skipped" in s for s in seen if s.startswith("["))


def test_repeats_go_round_the_grid_and_pool_their_steps(tmp_path):
    cfg = load_config(write(tmp_path, SMALL.replace("transport: [threads, tcp]", "transport: [threads]")))
    cfg["training"]["repeats"] = 3
    seen = []
    path = run_config(cfg, tmp_path / "out", progress=seen.append)
    lines = [s for s in seen if s.startswith("[")]
    n = len(grid_points(cfg))
    # every point's first repeat before any point's second
    assert [("repeat 1/3" in s, "repeat 2/3" in s, "repeat 3/3" in s) for s in lines] == [(True, False, False)] * n + [
        (False, True, False)
    ] * n + [(False, False, True)] * n
    for r in read_records(path):
        st = r["metrics"]["step_seconds"]
        assert r["training"]["repeats"] == 3 and len(st["repeat_medians"]) == 3
        assert min(st["repeat_medians"]) <= st["median"] <= max(st["repeat_medians"])
        assert r["metrics"]["bytes_per_step"] == r["metrics"]["bytes_per_step_formula"]


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PARRBM_FAULT", "kill:1:1")
    cfg = load_config(write(tmp_path, SMALL))
    path = run_config(cfg, tmp_path / "out", progress=lambda m: None)
    recs = read_records(path)  # still valid JSONL
    failed = [r for r in recs if r["status"] == "error"]
    assert failed and all(r["transport"] == "tcp" for r in failed)
    assert all("worker 1" in r["error"] for r in failed)
    assert len(recs) == len(grid_points(cfg))
    # after fixing the cause, --resume reruns only the failed ones
    monkeypatch.delenv("PARRBM_FAULT")
    run_config(cfg, tmp_path / "out", resume=True, progress=lambda m: None)
    final = read_records(path)
    assert sum(r["status"] == "ok" for r in final) == len(grid_points(cfg))


def test_cli_run_and_table(tmp_path, capsys):
    path = write(tmp_path, SMALL.replace("transport: [threads, tcp]", "transport: [threads]"))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "MB/8000 cases" in out and "unit-partitioned" in out
    assert main(["table", str(tmp_path / "r" / "small.jsonl")]) == 0
    table = capsys.readouterr().out
    assert "vs 1 core" in table and "vs cores" in table  # both baselines, named


def test_cli_bad_config_and_results_exit_2(tmp_path, capsys):
    bad = write(tmp_path, "model: {visible: 4, hidden: 4}\ngrid: {strategy: serial, workers: 1, K: 2}\n")
    assert main(["run", str(bad)]) == 2
    assert "grid" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"ok": 1}\nnot json\n')
    assert main(["table", str(junk)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["table", str(tmp_path / "none.jsonl")]) == 2


@pytest.mark.slow
def test_ctrl_c_leaves_valid_results(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cfg = write(tmp_path, SMALL.replace("steps: 3", "steps: 40").replace("cases: 64", "cases: 400"))
    out = tmp_path / "out"
    # without the calibration: the interrupt must land among the runs' records
    proc = subprocess.Popen(
        [sys.executable, "-m", "parrbm.cli", "run", str(cfg), "--out", str(out), "--no-calibrate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        preexec_fn=sigint_default,
    )
    results = out / "small.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\n") >= 2):
        time.sleep(0.05)
    assert time.monotonic() < deadline, "no two records within 120 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert (
        "interrupted: the results recorded so far are kept (with the repeats each run finished); "
        "--resume continues" in err.decode()
    ), (
        proc.returncode,
        err.decode()[-500:],
    )
    assert proc.returncode == 130, (proc.returncode, err.decode()[-500:])  # not an abort at exit
    recs = read_records(results)  # every line whole
    assert len(recs) >= 2 and all(r["status"] == "ok" for r in recs)
