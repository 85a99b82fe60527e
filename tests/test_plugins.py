"""Strategies as plug-ins: the registry, naming a strategy by module:Class, by file, by class
and by entry point, and the example plug-in (examples/skip_visible_exchange.py) run from a
folder outside the source tree on every transport."""

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support import has_mpi, mpi_param

from parrbm import RBM
from parrbm.analysis import cost
from parrbm.cli import main
from parrbm.harness.comparison_config import load_config
from parrbm.harness.experiment import read_results, run_config
from parrbm.strategies import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "skip_visible_exchange.py"
REF = "skip_visible_exchange:SkipVisibleExchange"


TRANSPORTS = ["threads", "tcp", mpi_param()]


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """The example plug-in copied to a folder outside the source tree, importable here."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    import sys

    sys.modules.pop("skip_visible_exchange", None)
    registry._by_reference.clear()


def test_the_registry_lists_the_builtins_in_order():
    assert registry.names() == [
        "serial",
        "unit-partitioned",
        "per-update-sync",
        "purple-only",
        "green-only",
        "parameter-averaging",
    ]
    assert registry.names(parallel_only=True)[0] == "unit-partitioned"
    for name in registry.names():
        assert registry.resolve(name).name == name and registry.reference(name) == name


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("no_such_module_xyz:Thing", "cannot import 'no_such_module_xyz'"),
        ("os:path", "not a strategy class"),
        ("json:nope", "has no 'nope'"),
        ("magic", "unknown strategy 'magic'; registered: serial"),
        (":X", "a reference is 'module:Class'"),
        (42, "a strategy is a registered name"),
    ],
)
def test_bad_references_say_what_is_wrong(bad, needle):
    with pytest.raises(registry.StrategyError, match=needle):
        registry.load(bad)
    with pytest.raises(ValueError, match=needle):
        RBM(n_hidden=4, strategy=bad, workers=2).fit(np.random.default_rng(0).random((20, 6)))


def test_a_strategy_class_must_name_itself(plugin_dir):
    from skip_visible_exchange import SkipVisibleExchange

    class Nameless(SkipVisibleExchange):
        name = ""

    with pytest.raises(registry.StrategyError, match="must set 'name'"):
        registry.resolve(Nameless)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("visible", ["binary", "gaussian"])
def test_the_example_plugin_reproduces_serial_cd_on_every_transport(plugin_dir, transport, visible):
    rng = np.random.default_rng(3)
    X = (rng.random((90, 20)) < 0.5).astype(float) if visible == "binary" else rng.standard_normal((90, 20))
    kw = dict(
        n_hidden=14,
        visible=visible,
        batch_size=15,
        n_iter=2,
        learning_rate=0.01,
        random_state=4,
        dtype="float64",
        momentum=0.5,
    )
    ref = RBM(**kw).fit(X)
    got = RBM(**kw, strategy=REF, workers=3, transport=transport).fit(X)
    np.testing.assert_allclose(got.components_, ref.components_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.intercept_visible_, ref.intercept_visible_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.intercept_hidden_, ref.intercept_hidden_, rtol=0, atol=1e-10)
    model = cost.Model(20, 14, visible=visible, precision="float64")
    stats = got.comm_stats_
    assert stats["bytes_per_step"] == cost.step_traffic(REF, model, 15, 3).total
    assert stats["bytes_per_sync"] == cost.sync_traffic(REF, model, 3).total
    assert stats["syncs"] == 2 * 90 // 15


def test_a_plugin_class_passed_directly_saves_and_loads(plugin_dir, tmp_path):
    from skip_visible_exchange import SkipVisibleExchange

    X = np.random.default_rng(0).random((40, 8))
    rbm = RBM(n_hidden=6, batch_size=10, n_iter=1, random_state=0, strategy=SkipVisibleExchange, workers=2).fit(X)
    rbm.save(tmp_path / "m.npz")
    back = RBM.load(tmp_path / "m.npz")
    assert back.strategy == REF
    np.testing.assert_array_equal(back.components_, rbm.components_)


def _config(tmp_path, strategy, transports="[threads, tcp]"):
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: plug
        model: {{visible: 16, hidden: 12, precision: float64, visible_type: gaussian}}
        data: {{kind: random-gaussian, cases: 60}}
        training: {{batch_size: 10, steps: 4, warmup: 1, timeout: 20, learning_rate: 0.01}}
        grid:
          strategy: [serial, green-only, "{strategy}"]
          workers: [1, 2]
          transport: {transports}
        """)
    )
    return path


def test_a_plugin_file_named_in_yaml_runs_on_every_transport(tmp_path, capsys):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    transports = "[threads, tcp, mpi]" if has_mpi() else "[threads, tcp]"
    cfg = load_config(_config(tmp_path, "elsewhere/skip_visible_exchange.py:SkipVisibleExchange", transports))
    assert REF in cfg["grid"]["strategy"]
    path = run_config(cfg, tmp_path / "out", progress=lambda m: None)
    recs = [r for r in read_results(path)[0] if r["strategy"] == REF]
    assert len(recs) == 1 + len(transports.split(","))
    for r in recs:
        assert r["status"] == "ok", r.get("error")
        mt = r["metrics"]
        assert mt["bytes_per_step"] == mt["bytes_per_step_formula"] and not mt["formula_mismatch"]
        if r["workers"] > 1:
            assert mt["bytes_per_sync"] == mt["bytes_per_sync_formula"] > 0
        assert len(r["strategy_sha256"]) == 64
    assert main(["table", str(path)]) == 0
    assert "skip-visible-exchange" in capsys.readouterr().out


def test_resume_refuses_a_changed_plugin(tmp_path, capsys):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    target = folder / "skip_visible_exchange_v.py"
    shutil.copy(EXAMPLE, target)
    ref = "elsewhere/skip_visible_exchange_v.py:SkipVisibleExchange"
    cfg = _config(tmp_path, ref, "[threads]")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-calibrate"]) == 0
    target.write_text(target.read_text() + "\n# changed\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-calibrate", "--resume"])
    assert code == 2 and "the code of strategy" in capsys.readouterr().err


def test_declared_bytes_that_differ_are_reported_not_hidden(plugin_dir, tmp_path, capsys):
    (plugin_dir / "lying.py").write_text(
        textwrap.dedent("""
        from skip_visible_exchange import SkipVisibleExchange

        class Lying(SkipVisibleExchange):
            name = "lying"

            @classmethod
            def step_traffic(cls, model, m, K, options, *, chains):
                t = super().step_traffic(model, m, K, options, chains=chains)
                t.add("hidden", [1] * K)   # claims K bytes more than it sends
                return t
        """)
    )
    cfg = load_config(_config(tmp_path, "lying:Lying", "[threads]"))
    path = run_config(cfg, tmp_path / "out", progress=lambda m: None)
    rec = next(r for r in read_results(path)[0] if r["strategy"] == "lying:Lying" and r["workers"] == 2)
    assert rec["status"] == "ok"
    assert rec["metrics"]["formula_mismatch"] == [
        f"per step: measured {rec['metrics']['bytes_per_step']} bytes, declared {rec['metrics']['bytes_per_step'] + 2}"
    ]
    assert main(["table", str(path)]) == 0
    assert "moved other bytes than their strategy declares" in capsys.readouterr().out
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--no-divergence"]) == 0
    assert "differ from their strategy" in (tmp_path / "r.html").read_text()


def test_an_installed_package_registers_through_its_entry_point(plugin_dir, monkeypatch, capsys):
    dist = plugin_dir / "parrbm_example_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: parrbm-example-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[parrbm.strategies]\nskip-visible = {REF}\n")
    monkeypatch.setattr(registry, "_entry_points", None)
    try:
        assert "skip-visible" in registry.names()
        assert registry.load("skip-visible").name == "skip-visible-exchange"
        code = main(
            [
                "cost",
                "--visible",
                "64",
                "--hidden",
                "32",
                "--batch",
                "10",
                "--workers",
                "2",
                "--strategy",
                "skip-visible",
                "--json",
            ]
        )
        rows = json.loads(capsys.readouterr().out)
        model = cost.Model(64, 32)
        assert code == 0 and rows[0]["bytes_per_step"] == cost.step_traffic(REF, model, 10, 2).total
    finally:
        monkeypatch.setattr(registry, "_entry_points", None)


def test_the_analysis_prices_a_plugin_by_its_declarations(plugin_dir):
    from parrbm.analysis.timemodel import Link, Profile, predict

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
    model = cost.Model(800, 2000)
    with pytest.raises(ValueError, match="not loaded"):  # the analysis imports nothing by itself
        predict(REF, model, 100, 4, p, transport="tcp")
    registry.load(REF)
    pred = predict(REF, model, 100, 4, p, transport="tcp")
    sync = cost.sync_traffic(REF, model, 4)
    assert pred.phases["hidden"] > 0 and pred.step_seconds > pred.compute_seconds
    # every step syncs: the sync's bytes are in the step (all of W[:, H_k] to each peer)
    assert sync.busiest == 3 * 800 * 500 * 4
    from parrbm.analysis.timemodel import phase_kind

    assert phase_kind("weight-sync", model, REF) == "allgather"  # as the plug-in declares
    assert phase_kind("weight-sync", model, "unit-partitioned") == "alltoall"
    with pytest.raises(ValueError, match="larger than the 2000 hidden units"):
        predict(REF, model, 100, 2001, p, transport="tcp")
