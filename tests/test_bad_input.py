"""Bad input is refused with a message naming the field, and recorded results are never
lost: each case through the command line (exit code and message) and, where it applies,
through the estimator (exception type and message)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from support import mpi_param

from parrbm import RBM
from parrbm.cli import main
from parrbm.harness.comparison_config import load_config
from parrbm.harness.experiment import read_results, run_config
from parrbm.harness.grid import all_cores_threads

SMALL = """
name: small
model: {visible: 12, hidden: 8}
data: {kind: random-binary, cases: 32}
training: {batch_size: 8, steps: 2, warmup: 1, timeout: 10}
grid:
  strategy: [serial, unit-partitioned]
  workers: [1, 2]
"""


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def cli(capsys, *args):
    """(exit code, stderr) of the command line, run in this process."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def run_small(tmp_path, text=SMALL, *flags):
    return main(["run", str(write(tmp_path, text)), "--out", str(tmp_path / "out"), "--no-calibrate", *flags])


# ---- 1. a config's name is a plain file stem -------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../victim/important", "a/b", "/etc/passwd", "..", ".hidden", "''", "'a\\\\b'", "x..y"]
)
def test_name_never_leaves_out(tmp_path, capsys, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.jsonl").write_text("precious\n")
    code, err = cli(
        capsys,
        "run",
        write(tmp_path, f"name: {name}\n" + SMALL.replace("name: small\n", "")),
        "--out",
        tmp_path / "a" / "b",
        "--no-calibrate",
    )
    assert code == 2 and "name" in err and "plain file stem" in err
    assert (victim / "important.jsonl").read_text() == "precious\n"
    assert not (tmp_path / "a").exists()


def test_run_config_refuses_a_bad_name_given_in_code(tmp_path):
    cfg = load_config(write(tmp_path, SMALL))
    cfg["name"] = "../escape"
    with pytest.raises(ValueError, match="name: '../escape' is not allowed"):
        run_config(cfg, tmp_path / "out", progress=lambda m: None)


# ---- 2. an existing results file is never deleted implicitly ---------------------------------------------


def test_run_refuses_an_existing_results_file(tmp_path, capsys):
    assert run_small(tmp_path) == 0
    results = tmp_path / "out" / "small.jsonl"
    before = results.read_bytes()
    # the same grid, another grid: both refused, naming --resume and --overwrite
    for text in (SMALL, SMALL.replace("workers: [1, 2]", "workers: [1]")):
        code, err = cli(capsys, "run", write(tmp_path, text), "--out", tmp_path / "out", "--no-calibrate")
        assert code == 2 and "--resume" in err and "--overwrite" in err
        assert f"holds {len(before.splitlines())} record(s)" in err
        assert results.read_bytes() == before
    # --overwrite starts again and keeps the old file beside it
    assert run_small(tmp_path, SMALL, "--overwrite") == 0
    kept = list((tmp_path / "out").glob("small.jsonl.replaced-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    assert len(read_results(results)[0]) == len(before.splitlines())
    code, err = cli(capsys, "run", write(tmp_path, SMALL), "--out", tmp_path / "out", "--resume", "--overwrite")
    assert code == 2 and "give one of them" in err


def test_a_torn_last_line_is_set_aside_and_resume_continues(tmp_path, capsys):
    assert run_small(tmp_path) == 0
    results = tmp_path / "out" / "small.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    results.write_text("".join(lines[:-1]) + torn)
    capsys.readouterr()
    # without --resume: refused, nothing changed
    code, err = cli(capsys, "run", write(tmp_path, SMALL), "--out", tmp_path / "out", "--no-calibrate")
    assert code == 2 and "--resume" in err
    assert results.read_text() == "".join(lines[:-1]) + torn
    # table shows the good records and says what it left out
    code = main(["table", str(results)])
    out = capsys.readouterr().out
    assert code == 0 and "incomplete" in out and f"line {len(lines)}" in out
    # --resume: the torn line goes to a side file, the good ones stay, the missing run is redone
    assert run_small(tmp_path, SMALL, "--resume") == 0
    side = list((tmp_path / "out").glob("small.jsonl.torn-*"))
    assert len(side) == 1 and side[0].read_text() == torn
    recs = read_results(results)[0]
    assert results.read_text().startswith("".join(lines[:-1]))
    assert len(recs) == len(lines) and all(r["status"] == "ok" for r in recs)


def test_a_damaged_line_before_the_end_is_an_error_not_a_loss(tmp_path, capsys):
    assert run_small(tmp_path) == 0
    results = tmp_path / "out" / "small.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    damaged = lines[0] + "garbage\n" + "".join(lines[1:])
    results.write_text(damaged)
    code, err = cli(capsys, "run", write(tmp_path, SMALL), "--out", tmp_path / "out", "--no-calibrate", "--resume")
    assert code == 2 and "line 2" in err
    assert results.read_text() == damaged


def test_a_second_writer_is_refused(tmp_path, capsys):
    from parrbm.harness.results import WriterLock

    cfg = write(tmp_path, SMALL)
    (tmp_path / "out").mkdir()
    with WriterLock(tmp_path / "out" / "small.jsonl"):
        code, err = cli(capsys, "run", cfg, "--out", tmp_path / "out", "--no-calibrate")
    assert code == 2 and "another 'parrbm run' is writing it" in err
    assert not (tmp_path / "out" / "small.jsonl").exists()


def test_a_run_whose_folder_was_taken_over_stops_before_mixing_records(tmp_path, capsys, monkeypatch):
    """The results folder removed under a running experiment, and a second run writing a
    new one at the same path: the first run stops at its next record, naming why, and the
    second run's file holds the second run's records alone."""
    import shutil

    from parrbm.harness import results as results_mod

    out = tmp_path / "out"
    second: list = []
    real = results_mod.finite_record

    def take_over(record):
        if not second:  # before the first run's first record: another run takes the path
            shutil.rmtree(out)
            out.mkdir()
            second.append(results_mod.WriterLock(out / "small.jsonl").__enter__())
            (out / "small.jsonl").write_text('{"run_id": "the second run"}\n')
        return real(record)

    monkeypatch.setattr(results_mod, "finite_record", take_over)
    code, err = cli(capsys, "run", write(tmp_path, SMALL), "--out", out, "--no-calibrate")
    second[0].__exit__(None, None, None)
    assert code == 2 and "its folder was removed" in err and "do not mix with another run's" in err
    assert (out / "small.jsonl").read_text() == '{"run_id": "the second run"}\n'


# ---- 3. --resume never mixes experiments ---------------------------------------------------------------


def test_resume_refuses_another_configuration_naming_the_fields(tmp_path, capsys):
    assert run_small(tmp_path) == 0
    results = tmp_path / "out" / "small.jsonl"
    before = results.read_bytes()
    changed = SMALL.replace("hidden: 8", "hidden: 6").replace("steps: 2", "steps: 2, learning_rate: 0.05")
    code, err = cli(capsys, "run", write(tmp_path, changed), "--out", tmp_path / "out", "--no-calibrate", "--resume")
    assert code == 2
    assert "model.hidden: 8 in the file, 6 now" in err and "training.learning_rate: 0.1 in the file, 0.05 now" in err
    assert results.read_bytes() == before
    # growing the grid is the same experiment: --resume adds the new runs only
    grown = SMALL.replace("[serial, unit-partitioned]", "[serial, unit-partitioned, green-only]")
    code, err = cli(capsys, "run", write(tmp_path, grown), "--out", tmp_path / "out", "--no-calibrate", "--resume")
    n = len(before.splitlines())
    assert code == 0 and err.count("recorded, skipped") == n
    assert len(read_results(results)[0]) == n + 2  # green-only at K = 1 and 2


def test_resume_sees_a_changed_npy_file(tmp_path, capsys):
    X = (np.random.default_rng(0).random((32, 12)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    text = SMALL.replace("data: {kind: random-binary, cases: 32}", "data: {kind: npy, path: x.npy}")
    assert run_small(tmp_path, text) == 0
    np.save(tmp_path / "x.npy", 1 - X)
    code, err = cli(capsys, "run", write(tmp_path, text), "--out", tmp_path / "out", "--no-calibrate", "--resume")
    assert code == 2 and "data.sha256" in err


def test_table_and_report_show_a_run_once(tmp_path, capsys):
    assert run_small(tmp_path) == 0
    results = tmp_path / "out" / "small.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    i = next(
        i
        for i, ln in enumerate(lines)
        if json.loads(ln)["strategy"] == "unit-partitioned" and json.loads(ln)["workers"] == 2
    )
    results.write_text("".join(lines) + lines[i])  # a run recorded twice
    capsys.readouterr()
    code = main(["table", str(results)])
    out = capsys.readouterr().out
    assert code == 0 and "recorded 2 times; shown once" in out
    assert sum(1 for ln in out.splitlines() if ln.split()[:2] == ["unit-partitioned", "2"]) == 1
    # the same run under two experiments: an error, not a table
    other = json.loads(lines[i])
    other["identity"]["model"]["hidden"] = 99
    results.write_text("".join(lines) + json.dumps(other) + "\n")
    for cmd in ("table", "report"):
        code, err = cli(capsys, cmd, results)
        assert code == 2 and "mixes experiments" in err and "model.hidden" in err


# ---- 4. units ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,bytes_per_second",
    [
        ("105MB/s", 105e6),
        ("100Mb/s", 12.5e6),
        ("100MBps", 100e6),
        ("100Mbps", 12.5e6),
        ("10Gbps", 1.25e9),
        ("1Gbit/s", 125e6),
        ("800MiB/s", 800 * 2**20),
        ("1 KiB/s", 1024),
        ("2.5 GB/s", 2.5e9),
        ("64kbit/s", 8000),
    ],
)
def test_bandwidth_units_as_people_write_them(text, bytes_per_second):
    from parrbm.analysis.timemodel import parse_bandwidth

    assert parse_bandwidth(text) == pytest.approx(bytes_per_second, rel=1e-12)


@pytest.mark.parametrize("text", ["100", "100 furlongs/s", "1e400MB/s", "nanMB/s", "-5MB/s", "0Gbps", "MB/s"])
def test_bad_bandwidths_are_refused_listing_the_forms(text, capsys, tmp_path):
    from parrbm.analysis.timemodel import parse_bandwidth

    with pytest.raises(ValueError, match="bandwidth"):
        parse_bandwidth(text)
    prof = _profile(tmp_path)
    code, err = cli(
        capsys,
        "advise",
        "--visible",
        "80",
        "--hidden",
        "200",
        "--batch",
        "10",
        f"--bandwidth={text}",
        "--latency",
        "0.1ms",
        "--profile",
        prof,
    )
    assert code == 2 and "bandwidth" in err


@pytest.mark.parametrize("text", ["5", "1e400ms", "-1ms", "3 hours", "nan s"])
def test_bad_latencies_are_refused(text):
    from parrbm.analysis.timemodel import parse_latency

    with pytest.raises(ValueError, match="latency"):
        parse_latency(text)


def _profile(tmp_path):
    from parrbm.analysis.timemodel import Link, Profile

    p = Profile(
        cores=2,
        gemm={d: [[8, 1e9], [512, 2e10]] for d in ("float32", "float64")},
        element={
            d: {
                k: 1e-9
                for k in ("sample", "bernoulli", "visible", "visible-gaussian", "pack", "bitstat", "update", "copy")
            }
            for d in ("float32", "float64")
        },
        links={"tcp": {"allgather": Link(1e-5, 1e9)}},
    )
    path = tmp_path / "prof.json"
    p.save(path)
    return path


# ---- 5, 6. data and config values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "values,needle",
    [
        (np.array([[0.5, np.nan]] * 20), "NaN or infinity"),
        (np.array([[0.5, np.inf]] * 20), "NaN or infinity"),
        (np.array([[3.0, 0.0]] * 20), "must lie in [0, 1]"),
        (np.array([["a", "b"]] * 20), "real numbers"),
        (np.zeros((20, 3)), "model has 2 visible units"),
    ],
)
def test_run_checks_data_as_the_estimator_does(tmp_path, capsys, values, needle):
    np.save(tmp_path / "x.npy", values)
    cfg = write(
        tmp_path,
        """
        model: {visible: 2, hidden: 4}
        data: {kind: npy, path: x.npy}
        training: {batch_size: 5, steps: 2}
        grid: {strategy: serial, workers: 1}
        """,
    )
    code, err = cli(capsys, "run", cfg, "--out", tmp_path / "out", "--no-calibrate")
    assert code == 2 and "data.path" in err and needle in err
    assert not (tmp_path / "out" / "c.jsonl").exists()
    if values.dtype.kind == "f" and values.shape[1] == 2:
        with pytest.raises(ValueError, match=r"'X'"):
            RBM(n_hidden=3, n_iter=1).fit(values)


def test_no_record_holds_nan(tmp_path):
    from parrbm.harness.results import append_record

    path = tmp_path / "r.jsonl"
    append_record(
        path,
        {
            "run_id": "x",
            "metrics": {"reconstruction_error": float("nan"), "step_seconds": {"median": np.float32("inf")}},
        },
    )

    def no_constants(name):
        raise AssertionError(f"{name} in a record")

    rec = json.loads(path.read_text(), parse_constant=no_constants)
    assert rec["metrics"]["reconstruction_error"] is None and rec["metrics"]["step_seconds"]["median"] is None
    assert "not a finite number" in rec["nulls"]["metrics.reconstruction_error"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("data: {path: x.npy}\n", "data.path: is read only with kind 'npy'"),
        ("data: {kind: random-binary, path: x.npy}\n", "data.path: is read only with kind 'npy'"),
        ("data: {cases: 5}\ntraining: {batch_size: 8}\n", "data.cases: 5 cases are fewer than one minibatch"),
        ("training: {cases: 5, batch_size: 8}\n", "training.cases: 5 cases are fewer than one minibatch"),
        ("data: {kind: random-gaussian}\n", "must lie in [0, 1]"),
        ("tcp: {python: /no/such/python3}\n", "tcp.python"),
        ("tcp: {job_root: /no/such/dir}\n", "tcp.job_root: no longer needed"),
        ("grid: {strategy: serial, workers: 1}\n", "key 'grid' is given twice"),
        ("model: {visible: 4, hidden: 4}\n", "key 'model' is given twice"),
    ],
)
def test_silently_accepted_values_are_refused(tmp_path, capsys, text, needle):
    np.save(tmp_path / "x.npy", np.zeros((16, 4)))
    base = "model: {visible: 4, hidden: 4}\ngrid: {strategy: serial, workers: 1}\n"
    code, err = cli(capsys, "run", write(tmp_path, base + text), "--out", tmp_path / "out", "--no-calibrate")
    assert code == 2 and needle in err, err


@pytest.mark.parametrize("cmd", ["advise", "predict", "cost"])
def test_sync_every_must_not_be_negative(tmp_path, capsys, cmd):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--visible", "80", "--hidden", "200", "--sync-every", "-1", "--profile", str(_profile(tmp_path))])
    assert exc.value.code == 2 and "--sync-every" in capsys.readouterr().err


# ---- 7. one rule set for the trainer and the analysis -------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--strategy", "parameter-averaging", "--workers", "256", "--batch", "100"], "larger than batch_size=100"),
        (["--strategy", "green-only", "--workers", "16", "--hidden", "8"], "larger than the 8 hidden units"),
        (["--workers", "100000"], "no strategy can run 100000 workers"),
        (["--strategy", "serial"], "'serial' runs on one worker"),
    ],
)
@pytest.mark.parametrize("cmd", ["advise", "predict", "cost"])
def test_analysis_refuses_what_the_trainer_refuses(tmp_path, capsys, cmd, args, needle):
    base = {"--visible": "8000", "--hidden": "20000", "--batch": "100"}
    for k in ("--hidden", "--batch"):
        if k in args:
            base.pop(k)
    argv = [cmd] + [x for kv in base.items() for x in kv] + args
    if cmd != "cost":
        argv += ["--profile", str(_profile(tmp_path)), "--transport", "tcp"]
    t0 = time.perf_counter()
    code, err = cli(capsys, *argv)
    assert code == 2 and needle in err
    assert time.perf_counter() - t0 < 5


def test_the_same_rule_in_the_trainer_and_the_grid(tmp_path, capsys):
    X = (np.random.default_rng(0).random((40, 6)) < 0.5).astype(np.float32)
    with pytest.raises(ValueError, match="larger than batch_size=4"):
        RBM(n_hidden=8, batch_size=4, n_iter=1, strategy="parameter-averaging", workers=5).fit(X)
    with pytest.raises(ValueError, match="larger than the 6 visible units"):
        RBM(n_hidden=8, batch_size=4, n_iter=1, strategy="green-only", workers=7).fit(X)
    code, err = cli(
        capsys,
        "run",
        write(
            tmp_path,
            "model: {visible: 6, hidden: 8}\ntraining: {batch_size: 4}\n"
            "grid: {strategy: parameter-averaging, workers: [2, 5]}\n",
        ),
        "--no-calibrate",
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "grid.workers" in err and "larger than batch_size=4" in err


def test_default_strategies_are_left_out_where_they_cannot_run(tmp_path, capsys):
    code = main(["cost", "--visible", "8000", "--hidden", "20000", "--batch", "100", "--workers", "64..256", "--json"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert code == 0 and "parameter-averaging is left out at K = 128, 256" in captured.err
    assert {(r["strategy"], r["workers"]) for r in rows if r["strategy"] == "parameter-averaging"} == {
        ("parameter-averaging", 64)
    }


# ---- 8. model files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    X = np.random.default_rng(0).random((40, 6))
    RBM(n_hidden=4, n_iter=1, random_state=0, momentum=0.5).fit(X).save(path)
    return path


def _tampered(model_file, tmp_path, meta_edit=None, array_edit=None):
    arrays = dict(np.load(model_file))
    meta = json.loads(str(arrays["parrbm_meta"]))
    if meta_edit:
        meta_edit(meta)
    if array_edit:
        array_edit(arrays)
    arrays["parrbm_meta"] = np.array(json.dumps(meta))
    out = tmp_path / "t.npz"
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize(
    "meta_edit,array_edit,field",
    [
        (None, lambda a: a.__setitem__("state_W", np.full_like(a["state_W"], np.nan)), "state_W"),
        (None, lambda a: a.__setitem__("state_c", np.full_like(a["state_c"], np.inf)), "state_c"),
        (None, lambda a: a.__setitem__("state_b", a["state_b"][:3]), "state_b"),
        (None, lambda a: a.__setitem__("state_c", a["state_c"].astype(np.float64)), "state_c"),
        (None, lambda a: a.pop("state_W_inc"), "state_W_inc"),
        (lambda m: m.pop("spec"), None, "spec"),
        (lambda m: m.pop("n_steps"), None, "n_steps"),
        (lambda m: m.__setitem__("seed", "x"), None, "seed"),
        (lambda m: m["spec"].__setitem__("n_hidden", "4"), None, "spec.n_hidden"),
        (lambda m: m["spec"].__setitem__("dtype", "float16"), None, "spec.dtype"),
        (lambda m: m["spec"].__setitem__("colour", 1), None, "spec.colour"),
        (lambda m: m["params"].__setitem__("momentum", 5), None, "params"),
        (lambda m: m["params"].__setitem__("n_hidden", 7), None, "params.n_hidden"),
        (lambda m: m.__setitem__("history", 5), None, "history"),
        (lambda m: m.__setitem__("params", []), None, "params"),
    ],
)
def test_a_hand_edited_model_file_names_the_field(model_file, tmp_path, capsys, meta_edit, array_edit, field):
    bad = _tampered(model_file, tmp_path, meta_edit, array_edit)
    with pytest.raises(ValueError, match=rf"{bad}.*'{field}'") as exc:
        RBM.load(bad)
    assert type(exc.value) is ValueError
    code, err = cli(capsys, "plot-filters", bad, "--out", tmp_path / "f.png")
    assert code == 2 and field in err


# ---- 9. a stopped or hung worker is named, within the timeout ------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", mpi_param()])
@pytest.mark.parametrize(
    "fault", ["stop:1:1", "stop-in:1:1", "stop-in:2:2", "hang:1:2"] + [f"stop-in:1:{s}" for s in (0, 2, 3)]
)
@pytest.mark.slow
def test_a_stopped_worker_is_named_every_time(monkeypatch, transport, fault):
    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.comm import CommError
    from parrbm.harness.runner import ParallelRunner

    monkeypatch.setenv("PARRBM_FAULT", fault)
    rank = fault.split(":")[1]
    spec = CDSpec(n_visible=12, n_hidden=9, batch_size=4, seed=1)
    r = ParallelRunner(spec, ModelState.initial(spec), "unit-partitioned", 3, transport=transport, timeout=3.0)
    X = (np.random.default_rng(0).random((16, 12)) < 0.5).astype(np.float32)
    t0 = time.monotonic()
    with pytest.raises(CommError, match=rf"^worker {rank} did not respond within 3 s \(stopped or hung") as exc:
        r.run(X, np.arange(16, dtype=np.int64), 0)
    elapsed = time.monotonic() - t0
    assert ("the kernel shows it stopped" in str(exc.value)) == fault.startswith("stop")
    assert "SIGKILL" not in str(exc.value)  # parrbm's own kill is not the cause
    assert elapsed < 3.0 + 6.0, elapsed  # the timeout, plus start-up and the kill


# ---- 10-13. files that are not what they claim ---------------------------------------------------------------


def test_binary_garbage_config(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(os.urandom(200) + b"\xff")
    code, err = cli(capsys, "run", bad)
    assert code == 2 and "not a YAML text file" in err and str(bad) in err
    (tmp_path / "d.yaml").write_bytes(b"model: {visible: 4\x00}")
    code, err = cli(capsys, "run", tmp_path / "d.yaml")
    assert code == 2 and "d.yaml" in err
    code, err = cli(capsys, "run", tmp_path)
    assert code == 2 and "is a directory" in err


@pytest.mark.parametrize(
    "content", [b"[1, 2]\n", b'"text"\n', b"42\n", os.urandom(300) + b"\n", b'{"run_id": 1}\n[]\n', b"", b"\n\n"]
)
@pytest.mark.parametrize("cmd", ["table", "report", "plot"])
def test_table_report_plot_on_foreign_files(tmp_path, capsys, content, cmd):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    code, err = cli(capsys, cmd, path, *(["--out", tmp_path / "x.html"] if cmd == "report" else []))
    assert code == 2 and str(path) in err


def test_a_truncated_profile_is_refused_before_anything_runs(tmp_path, capsys):
    cfg = write(tmp_path, SMALL.replace("workers: [1, 2]", "workers: [1]"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-calibrate"]) == 0
    results = tmp_path / "out" / "small.jsonl"
    results.write_text(results.read_text().splitlines(keepends=True)[0])  # one run left to do
    (tmp_path / "out" / "small.profile.json").write_text('{"cpu": "x", "gem')
    before = results.read_bytes()
    code, err = cli(capsys, "run", cfg, "--out", tmp_path / "out", "--resume")
    assert code == 2 and "small.profile.json" in err and "not a parrbm machine profile" in err
    assert results.read_bytes() == before  # nothing ran


def test_advise_strategy_serial_and_a_slash_in_the_name(tmp_path, capsys):
    code, err = cli(
        capsys,
        "advise",
        "--visible",
        "80",
        "--hidden",
        "200",
        "--batch",
        "10",
        "--strategy",
        "serial",
        "--profile",
        _profile(tmp_path),
        "--transport",
        "tcp",
    )
    assert code == 2 and "'serial' runs on one worker" in err
    code, err = cli(
        capsys,
        "advise",
        "--visible",
        "80",
        "--hidden",
        "200",
        "--batch",
        "10",
        "--strategy",
        "serial",
        "--workers",
        "1",
        "--profile",
        _profile(tmp_path),
        "--transport",
        "tcp",
    )
    assert code == 0
    code, err = cli(capsys, "run", write(tmp_path, "name: a/b\n" + SMALL.replace("name: small\n", "")))
    assert code == 2 and "name" in err


def test_a_string_npy(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    code, err = cli(capsys, "train", "--data", tmp_path / "s.npy")
    assert code == 2 and "real numbers" in err


# ---- 14. saving where there is no directory ----------------------------------------------------------


def test_saving_to_a_missing_directory(tmp_path, capsys):
    rbm = RBM(n_hidden=3, n_iter=1, random_state=0).fit(np.random.default_rng(0).random((20, 4)))
    with pytest.raises(FileNotFoundError, match="directory .*missing does not exist"):
        rbm.save(tmp_path / "missing" / "m.npz")
    # the command line makes the directory, before training
    code, err = cli(capsys, "train", "--epochs", "1", "--hidden", "4", "--out", tmp_path / "new" / "dir" / "m.npz")
    assert code == 0 and (tmp_path / "new" / "dir" / "m.npz").is_file()
    (tmp_path / "file").write_text("x")
    code, err = cli(capsys, "train", "--epochs", "1", "--out", tmp_path / "file" / "m.npz")
    assert code == 2 and "--out" in err


# ---- 15, 16. integers and the messages of the schema -----------------------------------------------------


def test_integral_floats_are_taken_as_integers(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            SMALL.replace("batch_size: 8", "batch_size: 8.0").replace("workers: [1, 2]", "workers: [1.0, 2.0]"),
        )
    )
    assert cfg["training"]["batch_size"] == 8 and type(cfg["training"]["batch_size"]) is int
    assert cfg["grid"]["workers"] == [1, 2] and all(type(k) is int for k in cfg["grid"]["workers"])


@pytest.mark.parametrize(
    "edit,needle",
    [
        (("batch_size: 8", "batch_size: 8.5"), "training.batch_size: 8.5 is not an integer"),
        (("workers: [1, 2]", "workers: [0]"), "grid.workers[0]: 0 is not allowed: give an integer >= 1"),
        (("workers: [1, 2]", "workers: 0"), "grid.workers: 0 is not allowed: give an integer >= 1"),
        (("workers: [1, 2]", "workers: [1, two]"), "grid.workers[1]: 'two' is not an integer"),
        (
            ("[serial, unit-partitioned]", "[serial, magic]"),
            "grid.strategy[1]: unknown strategy 'magic'; registered: serial, unit-partitioned",
        ),
        (
            ("workers: [1, 2]", "workers: [1, 2]\n  transport: [threads, pigeon]"),
            "grid.transport[1]: 'pigeon' is not allowed; allowed: 'threads', 'tcp', 'mpi'",
        ),
        (("workers: [1, 2]", "workers: [1, 2]\n  transport: pigeon"), "grid.transport: 'pigeon' is not allowed"),
        (("steps: 2", "steps: 1e400"), "training.steps"),
    ],
)
def test_schema_messages_say_why(tmp_path, capsys, edit, needle):
    code, err = cli(capsys, "run", write(tmp_path, SMALL.replace(*edit)), "--no-calibrate", "--out", tmp_path / "o")
    assert code == 2 and needle in err, err


# ---- 17. train's arguments are checked before training ---------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--samples", "-5"], "--samples"),
        (["--samples", "0"], "--samples"),
        (["--shape", "7x7"], "--shape 7x7: 49 pixels, but the data have 64 features"),
        (["--shape", "8x8x2"], "--shape"),
    ],
)
def test_train_arguments(capsys, args, needle):
    code = main(["train", "--epochs", "1", *args])
    captured = capsys.readouterr()
    assert code == 2 and needle in captured.err and "epoch 1/1" not in captured.out


# ---- siblings ------------------------------------------------------------------------------------------


def test_train_never_replaces_a_model_unasked(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--epochs", "1", "--hidden", "4", "--out", str(model)]) == 0
    before = model.read_bytes()
    code, err = cli(capsys, "train", "--epochs", "1", "--hidden", "5", "--out", model)
    assert code == 2 and "--overwrite" in err and model.read_bytes() == before
    assert main(["train", "--epochs", "1", "--hidden", "5", "--out", str(model), "--overwrite"]) == 0
    assert RBM.load(model).n_hidden == 5


@pytest.mark.parametrize(
    "text,needle",
    [
        ("training: {learning_rate: .nan}\n", "training.learning_rate: nan is not allowed: numbers must be finite"),
        ("training: {momentum: .nan}\n", "training.momentum: nan"),
        ("training: {timeout: .inf}\n", "training.timeout: inf"),
        ("training: {seed: 18446744073709551616}\n", "training.seed: 18446744073709551616 is not allowed"),
        ("anchor: &x [1]\nalso: *x\n", "aliases (*x) are not supported"),
        ("data: {kind: digits, seed: 3}\n", "data.seed: is for the random data kinds"),
        ("data: {kind: npy, path: x.npy, cases: 3}\n", "data.cases: is for the random data kinds"),
        (
            "options: {shared_weights: true}\n",
            "options.shared_weights: the option 'shared_weights' (read by: per-update-sync)",
        ),
    ],
)
def test_more_values_refused_before_anything_runs(tmp_path, capsys, text, needle):
    np.save(tmp_path / "x.npy", np.zeros((16, 4)))
    base = "model: {visible: 4, hidden: 4}\ngrid: {strategy: [serial, unit-partitioned], workers: 2, transport: tcp}\n"
    code, err = cli(capsys, "run", write(tmp_path, base + text), "--out", tmp_path / "out", "--no-calibrate")
    assert code == 2 and needle in err, err
    assert not (tmp_path / "out" / "c.jsonl").exists()


@pytest.mark.parametrize(
    "grid,needle",
    [
        ("strategy: [serial, serial], workers: 1", "grid.strategy: 'serial' is listed twice"),
        ("strategy: serial, workers: [2, 2]", "grid.workers: 2 is listed twice"),
        ("strategy: serial, workers: 1, batch_size: [8, 8.0]", "grid.batch_size: 8 is listed twice"),
    ],
)
def test_a_grid_lists_each_value_once(tmp_path, capsys, grid, needle):
    code, err = cli(
        capsys,
        "run",
        write(tmp_path, "model: {visible: 4, hidden: 4}\ngrid: {" + grid + "}\n"),
        "--out",
        tmp_path / "out",
        "--no-calibrate",
    )
    assert code == 2 and needle in err, err


def test_a_model_larger_than_memory_is_refused_before_it_is_allocated(tmp_path, capsys):
    code, err = cli(
        capsys,
        "run",
        write(tmp_path, "model: {visible: 200000, hidden: 200000}\ngrid: {strategy: serial, workers: 1}\n"),
        "--no-calibrate",
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "model.visible x model.hidden" in err and "GiB" in err


def test_steps_default_when_neither_steps_nor_cases_is_given(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "model: {visible: 4, hidden: 4}\ndata: {cases: 8}\n"
            "training: {batch_size: 4}\ngrid: {strategy: serial, workers: 1}\n",
        )
    )
    path = run_config(cfg, tmp_path / "out", progress=lambda m: None)
    rec = read_results(path)[0][0]
    assert rec["status"] == "ok" and rec["training"]["steps"] == 20


def test_a_new_fit_never_overwrites_checkpoints(tmp_path):
    X = np.random.default_rng(0).random((30, 5))
    RBM(n_hidden=3, n_iter=2, random_state=0, checkpoint_dir=tmp_path).fit(X)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")}
    with pytest.raises(ValueError, match="checkpoint_dir.*already holds the checkpoints"):
        RBM(n_hidden=3, n_iter=2, random_state=1, checkpoint_dir=tmp_path).fit(X)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")} == before
    # continuing the fit that wrote them is fine
    from parrbm.rbm import latest_checkpoint

    rbm = RBM.load(latest_checkpoint(tmp_path))
    rbm.set_params(n_iter=3, warm_start=True, checkpoint_dir=tmp_path).fit(X)
    assert rbm.epochs_done_ == 3
    with pytest.raises(ValueError, match="checkpoint_dir.*cannot create"):
        RBM(n_hidden=3, n_iter=1, checkpoint_dir=tmp_path / "epoch-0003.npz").fit(X)


def test_calibrate_never_overwrites_another_file(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    results.write_text('{"run_id": "x"}\n')
    code, err = cli(capsys, "calibrate", "--quick", "--transports", "threads", "--out", results)
    assert code == 2 and "not a machine profile" in err
    assert results.read_text() == '{"run_id": "x"}\n'


@pytest.mark.parametrize(
    "args, says",
    [
        (["--dilated", "4"], "--dilated '4': give K hosts x a factor F"),
        (["--dilated", "1x2"], "K at least 2"),
        (["--dilated", "4x0.5"], "--dilated '4x0.5': time dilation 0.5"),
        (["--dilated", "4x1"], "a factor of 1 is undilated"),
        (["--dilated", "4x2", "--transports", "mpi"], "give --network BANDWIDTH and tcp"),
    ],
)
def test_calibrate_refuses_a_bad_dilated_point_before_measuring(tmp_path, capsys, args, says):
    from parrbm.harness.network import dilation_missing, missing

    if missing() or dilation_missing():
        pytest.skip(missing() or dilation_missing())
    transports = [] if "--transports" in args else ["--transports", "tcp"]
    out = tmp_path / "p.json"
    code, err = cli(capsys, "calibrate", "--quick", "--network", "105MB/s", *transports, *args, "--out", out)
    assert code == 2 and says in err, err
    assert not out.exists()


def test_stale_job_folders_are_swept(tmp_path):
    from parrbm.harness.launch import JOB_PREFIX, sweep_stale_jobs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{JOB_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{JOB_PREFIX}{os.getpid()}-def"
    foreign = tmp_path / f"{JOB_PREFIX}xyz"
    for d in (stale, live, foreign):
        d.mkdir()
        (d / "data.npy").write_bytes(b"x" * 100)
    old = time.time() - 60
    os.utime(stale, (old, old))
    assert sweep_stale_jobs(str(tmp_path)) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


def test_sigterm_keeps_results_and_leaves_no_job_folder(tmp_path):
    import tempfile

    cfg = write(
        tmp_path,
        SMALL.replace("steps: 2", "steps: 40000").replace("workers: [1, 2]", "workers: [2]") + "  transport: [tcp]\n",
    )
    before = set(os.listdir(tempfile.gettempdir()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "parrbm.cli", "run", str(cfg), "--out", str(tmp_path / "out"), "--no-calibrate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    results = tmp_path / "out" / "small.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
        time.sleep(0.05)
    time.sleep(1.0)  # the tcp run is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-400:]
    # the serial baselines (one core, and the two workers' cores) ran before the tcp run
    assert [r["strategy"] for r in read_results(results)[0]] == ["serial"] * (
        1 + len(all_cores_threads(load_config(cfg)))
    )
    # its own job folders only: other runs on this machine may have theirs
    mine = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"parrbm-job-{proc.pid}-")}
    assert not (mine - before)
    ps = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert not ps.stdout.strip()  # no worker outlives its run
