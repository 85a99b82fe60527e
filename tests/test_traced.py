"""A strategy that declares no closed form of its traffic is traced: a dry run of its step
on K threads over counting Comms gives its bytes, phase by phase. The tracer is held to
the built-ins' closed forms, and a plug-in without one runs, is held to its trace and is
labelled "traced"."""

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from parrbm.accounting import Model
from parrbm.analysis import cost
from parrbm.cli import main
from parrbm.harness.comparison_config import load_config
from parrbm.harness.experiment import read_results, run_config
from parrbm.harness.traced import declares_traffic, trace_step, traffic_source
from parrbm.strategies import PARALLEL_STRATEGIES, registry
from parrbm.strategies.base import StrategyOptions
from parrbm.strategies.declared import step_traffic as declared

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "skip_visible_exchange.py"


@pytest.mark.parametrize("strategy", PARALLEL_STRATEGIES)
@pytest.mark.parametrize(
    "model,m,K,options",
    [
        (Model(24, 18), 8, 2, {}),
        (Model(23, 17, visible="gaussian", precision="float64"), 7, 3, {"partition": "random"}),
        (Model(20, 30, statistics="probabilities", cd_k=2), 6, 3, {"average": "gradients", "reduce": "master"}),
        (Model(16, 12, persistent=True), 5, 2, {}),
    ],
)
def test_the_trace_of_every_builtin_is_its_closed_form(strategy, model, m, K, options):
    opts = StrategyOptions(**options)
    chains = 9 if model.persistent else m
    traced = trace_step(strategy, model, m, K, opts, chains=chains)
    closed = declared(strategy, model, m, K, batch_size=chains, options=opts)
    assert traced.phases == closed.phases, strategy
    assert traced.total == closed.total > 0


@pytest.fixture
def undeclared(tmp_path, monkeypatch):
    """A plug-in that writes its own step (the example's, plus an allreduce of four hidden
    biases) and no closed form: it inherits the example's, which no longer describes it."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    (folder / "chatty.py").write_text(
        textwrap.dedent("""
        from skip_visible_exchange import SkipVisibleExchange

        class Chatty(SkipVisibleExchange):
            name = "chatty"

            def step(self, X, step):
                self.comm.allreduce(self.c[:4].copy(), phase="chatter")
                return super().step(X, step)
        """)
    )
    monkeypatch.syspath_prepend(str(folder))
    yield "chatty:Chatty"
    import sys

    for mod in ("chatty", "skip_visible_exchange"):
        sys.modules.pop(mod, None)
    registry._by_reference.clear()


def test_only_a_closed_form_written_for_its_step_counts(undeclared):
    assert all(declares_traffic(s) for s in ["serial", *PARALLEL_STRATEGIES])
    registry.load(undeclared)
    assert declares_traffic(registry.load("skip_visible_exchange:SkipVisibleExchange"))
    assert not declares_traffic(undeclared) and traffic_source(undeclared) == "traced"


def test_a_plugin_without_a_closed_form_is_held_to_its_trace_and_labelled(undeclared, tmp_path, capsys):
    model = Model(16, 12, visible="gaussian", precision="float64")
    registry.load(undeclared)
    registry.load("skip_visible_exchange:SkipVisibleExchange")
    traced = cost.step_traffic(undeclared, model, 10, 2)
    example = cost.step_traffic("skip_visible_exchange:SkipVisibleExchange", model, 10, 2)
    # the extra allreduce of 4 float64 at K = 2 (reduce-scatter and allgather of halves)
    assert traced.phases["chatter"] == cost.allreduce(4, 2, 8) == [32, 32]
    assert traced.total == example.total + 64
    (tmp_path / "c.yaml").write_text(
        textwrap.dedent(f"""
        name: traced
        model: {{visible: 16, hidden: 12, precision: float64, visible_type: gaussian}}
        data: {{kind: random-gaussian, cases: 60}}
        training: {{batch_size: 10, steps: 4, warmup: 1, timeout: 20, learning_rate: 0.01}}
        grid:
          strategy: [green-only, "{undeclared}"]
          workers: [2]
          transport: [threads, tcp]
        """)
    )
    path = run_config(load_config(tmp_path / "c.yaml"), tmp_path / "out", progress=lambda m: None)
    recs = [r for r in read_results(path)[0] if r["strategy"] == undeclared]
    assert len(recs) == 2
    for r in recs:
        mt = r["metrics"]
        assert r["status"] == "ok", r.get("error")
        assert mt["traffic_source"] == "traced"
        assert mt["bytes_per_step"] == mt["bytes_per_step_formula"] == traced.total
        assert not mt["formula_mismatch"]
    green = next(r for r in read_results(path)[0] if r["strategy"] == "green-only")
    assert green["metrics"]["traffic_source"] == "declared"
    assert main(["table", str(path)]) == 0
    assert "bytes traced from a dry run of the step (no closed form declared): chatty" in capsys.readouterr().out
    code = main(
        [
            "cost",
            "--visible",
            "16",
            "--hidden",
            "12",
            "--batch",
            "10",
            "--workers",
            "2",
            "--strategy",
            undeclared,
            "--visible-type",
            "gaussian",
            "--precision",
            "float64",
            "--json",
        ]
    )
    import json

    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and rows[0]["bytes_per_step"] == traced.total
    assert np.isfinite(rows[0]["bytes_per_step"])
