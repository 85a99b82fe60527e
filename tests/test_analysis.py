"""Analysis: the compute account against what the strategies really call, the cost
command (Table 4.1), the time model's arithmetic, calibration, predictions beside
measurements."""

import json
import time
from collections import Counter

import numpy as np
import pytest

from parrbm import _core
from parrbm.analysis import cost
from parrbm.analysis.compute import step_work
from parrbm.analysis.timemodel import Link, Profile, advise, parse_bandwidth, parse_latency, predict
from parrbm.cli import main
from parrbm.config import CDSpec, ModelState
from parrbm.harness.runner import ParallelRunner
from parrbm.strategies import PARALLEL_STRATEGIES, StrategyOptions

# ---- the compute account == the kernels the strategies call --------------------------------


class Tracer:
    def __init__(self, monkeypatch):
        self.gemms: list = []
        self.counts: Counter = Counter()
        for name in (
            "gemm",
            "sample_sigmoid",
            "sample_bernoulli",
            "visible_activation",
            "pack_columns",
            "bit_statistics_update",
            "apply_increment",
            "apply_gradient",
        ):
            monkeypatch.setattr(_core, name, self._wrap(name, getattr(_core, name)))

    def _wrap(self, name, fn):
        def traced(*a, **kw):
            self.record(name, a, kw)
            return fn(*a, **kw)

        return traced

    def record(self, name, a, kw):
        if name == "gemm":
            A, _, C = a[:3]
            depth = A.shape[0] if kw.get("trans_a") else A.shape[1]
            self.gemms.append((C.shape[0], C.shape[1], depth))
        elif name == "sample_sigmoid":
            self.counts["sample"] += a[0].size
        elif name == "sample_bernoulli":
            self.counts["bernoulli"] += a[0].size
        elif name == "visible_activation":
            kind = a[3] if len(a) > 3 else kw.get("kind", "binary")
            self.counts["visible" if kind == "binary" else "visible-gaussian"] += a[0].size
        elif name == "pack_columns":
            self.counts["pack"] += a[0].size
        elif name == "bit_statistics_update":
            W, _, x_bits, h_bits = a[:4]
            self.counts["bitstat"] += W.size * h_bits.shape[1] * (2 if x_bits is not None else 1)
        elif name in ("apply_increment", "apply_gradient"):
            self.counts["update"] += a[0].size


@pytest.mark.parametrize("strategy", list(PARALLEL_STRATEGIES))
@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize(
    "visible,statistics,momentum",
    [
        ("binary", "samples", False),
        ("binary", "probabilities", True),
        ("gaussian", "samples", True),
    ],
)
def test_compute_account_equals_the_kernels_called(monkeypatch, strategy, K, visible, statistics, momentum):
    V, H, m = 23, 17, 9
    spec = CDSpec(
        n_visible=V,
        n_hidden=H,
        batch_size=m,
        dtype="float64",
        visible=visible,
        statistics=statistics,
        momentum=0.5 if momentum else 0.0,
        seed=3,
    )
    rng = np.random.default_rng(0)
    X = (rng.random((m, V)) < 0.5).astype(np.float64) if visible == "binary" else rng.standard_normal((m, V))
    runner = ParallelRunner(spec, ModelState.initial(spec), strategy, K, options=StrategyOptions(sync_every=0))
    tracer = Tracer(monkeypatch)
    runner.run(X, np.arange(m, dtype=np.int64), 0)
    model = cost.Model(V, H, visible=visible, precision="float64", statistics=statistics)
    want_gemms, want_counts = [], Counter()
    for r in range(K):
        w = step_work(strategy, model, m, K, r, momentum=momentum)
        want_gemms += w.gemms
        want_counts.update(w.counts)
    want_counts.pop("copy", None)
    assert sorted(tracer.gemms) == sorted(want_gemms)
    assert dict(tracer.counts) == dict(want_counts)


def test_phase_calls_of_the_closed_form_equal_the_measured_ones():
    V, H, m = 20, 12, 6
    for strategy in PARALLEL_STRATEGIES:
        spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float32", visible="gaussian", cd_k=2)
        r = ParallelRunner(spec, ModelState.initial(spec), strategy, 3, options=StrategyOptions(sync_every=0))
        r.run(
            np.random.default_rng(0).standard_normal((2 * m, V)).astype(np.float32), np.arange(2 * m, dtype=np.int64), 0
        )
        measured = {
            p: s["calls"]
            for p, s in r.comm_stats()["by_phase"].items()
            if s["bytes_sent"] and p not in ("weight-sync", "gather-model")
        }
        t = cost.step_traffic(strategy, cost.Model(V, H, visible="gaussian", cd_k=2), m, 3)
        assert measured == {p: 3 * 2 * c for p, c in t.calls.items()}, strategy  # 3 workers, 2 steps


# ---- cost command -----------------------------------------------------------------------------


def test_cost_prints_table_4_1(capsys):
    assert (
        main(
            [
                "cost",
                "--visible",
                "8000",
                "--hidden",
                "20000",
                "--batch",
                "100",
                "--cases",
                "8000",
                "--workers",
                "1",
                "2",
                "4",
                "8",
                "--strategy",
                "unit-partitioned",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("unit-partitioned")]
    # the paper's Table 4.1 leaves the weight syncs out: the total less their share
    assert [round(float(r[2]) - float(r[3]), 6) for r in rows] == [
        0,
        48,
        144,
        336,
        0,
        296,
        888,
        2072,
        0,
        552,
        1656,
        3864,
    ]
    assert "crossovers at K = 8" in out


def test_cost_json_gives_exact_integers(capsys):
    assert (
        main(
            [
                "cost",
                "--visible",
                "1000",
                "--hidden",
                "3000",
                "--batch",
                "130",
                "--cases",
                "1000",
                "--workers",
                "1..8",
                "--visible-type",
                "gaussian",
                "--precision",
                "float64",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert {r["workers"] for r in rows} == {1, 2, 4, 8}
    assert {r["strategy"] for r in rows} == set(PARALLEL_STRATEGIES)
    model = cost.Model(1000, 3000, visible="gaussian", precision="float64")
    for r in rows:
        for key in ("bytes_per_step", "bytes_per_sync", "bytes"):
            assert isinstance(r[key], int)
        assert r["step_bytes"] == cost.bytes_for_cases(r["strategy"], model, 130, r["workers"], 1000)
        assert r["bytes"] == r["step_bytes"] + r["sync_bytes"]
        assert r["sync_bytes"] == r["syncs"] * r["bytes_per_sync"]
        assert r["bytes_per_step"] == cost.step_traffic(r["strategy"], model, 130, r["workers"]).total
        assert r["bytes_per_sync"] == cost.sync_traffic(r["strategy"], model, r["workers"]).total


def test_cost_counts_a_sync_every_step_as_step_traffic(capsys):
    """The paper's model, m = 100, K = 2, 8000 cases (80 steps), written out by hand:
    per-update sync sends (K-1)(m H/8 + m V/8) = 350 kB a step and, every step, the
    weight exchange sum |V_j||H_k| pb = 2 x 4000 x 10000 x 4 = 320 MB; unit-partitioned
    48 MB of bits and, at sync_every 80, one such sync. Left apart, per-update sync's
    syncs made it look the cheapest (28 MB)."""
    assert (
        main(
            [
                "cost",
                "--visible",
                "8000",
                "--hidden",
                "20000",
                "--batch",
                "100",
                "--cases",
                "8000",
                "--workers",
                "2",
                "--visible-type",
                "binary",
                "--precision",
                "float32",
                "--json",
            ]
        )
        == 0
    )
    rows = {r["strategy"]: r for r in json.loads(capsys.readouterr().out)}
    pus, up = rows["per-update-sync"], rows["unit-partitioned"]
    assert pus["step_bytes"] == 80 * 350_000 and pus["sync_bytes"] == 80 * 320_000_000
    assert pus["bytes"] == 80 * 350_000 + 80 * 320_000_000
    assert pus["bytes_per_step_with_syncs"] == 350_000 + 320_000_000
    assert up["step_bytes"] == 48_000_000 and up["sync_bytes"] == 320_000_000 and up["syncs"] == 1
    assert min(rows, key=lambda s: rows[s]["bytes"]) != "per-update-sync"
    assert (
        main(
            [
                "cost",
                "--visible",
                "8000",
                "--hidden",
                "20000",
                "--batch",
                "100",
                "--workers",
                "2",
                "--visible-type",
                "binary",
                "--precision",
                "float32",
            ]
        )
        == 0
    )
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("per-update-sync"))
    assert line.split()[2:4] == ["25628.000", "25600.000"] and line.endswith("every step")
    # parameter averaging of weights every 4 steps: 20 rounds of 2 (K-1)(V H + V + H) pb
    assert (
        main(
            [
                "cost",
                "--visible",
                "8000",
                "--hidden",
                "20000",
                "--batch",
                "100",
                "--cases",
                "8000",
                "--workers",
                "2",
                "--visible-type",
                "binary",
                "--precision",
                "float32",
                "--average",
                "weights",
                "--average-every",
                "4",
                "--strategy",
                "parameter-averaging",
                "--json",
            ]
        )
        == 0
    )
    (pa,) = json.loads(capsys.readouterr().out)
    assert pa["syncs"] == 20 and pa["step_bytes"] == 0
    assert pa["bytes"] == 20 * 2 * (8000 * 20000 + 8000 + 20000) * 4


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--visible", "0", "--hidden", "5", "--batch", "2"], "must be >= 1"),
        (["--visible", "5", "--hidden", "5", "--batch", "2", "--workers", "8..2"], "runs backwards"),
        (
            ["--visible", "5", "--hidden", "5", "--batch", "2", "--strategy", "magic"],
            "unknown strategy 'magic'; registered: serial, unit-partitioned",
        ),
    ],
)
def test_cost_bad_arguments_exit_2(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(["cost", *argv])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


# ---- time model ---------------------------------------------------------------------------------


def flat_profile(rate=1e9, element=1e-9, latency=1e-4, bandwidth=1e8) -> Profile:
    kinds = ("sample", "bernoulli", "visible", "visible-gaussian", "pack", "bitstat", "update", "copy")
    return Profile(
        cores=64,
        gemm={p: [[1, rate], [4096, rate]] for p in ("float32", "float64")},
        element={p: {k: element for k in kinds} for p in ("float32", "float64")},
        links={
            "net": {
                k: Link(latency, bandwidth)
                for k in ("allgather", "allgather_bits", "reduce_scatter", "allreduce", "alltoall")
            }
        },
    )


def test_prediction_is_compute_plus_latency_and_busiest_bytes():
    model = cost.Model(1000, 2000, visible="gaussian")
    m, K = 100, 4
    p = predict("green-only", model, m, K, flat_profile(), transport="net")
    works = [step_work("green-only", model, m, K, r) for r in range(K)]
    compute = max(w.flops / 1e9 + sum(w.counts.values()) * 1e-9 for w in works)
    traffic = cost.step_traffic("green-only", model, m, K)
    comm = sum(1e-4 * traffic.calls[ph] * (K - 1) + max(b) / 1e8 for ph, b in traffic.phases.items())
    assert p.compute_seconds == pytest.approx(compute, rel=1e-12)
    assert p.comm_seconds == pytest.approx(comm, rel=1e-12)
    assert p.step_seconds == pytest.approx(compute + comm, rel=1e-12)
    assert set(p.phases) == {"visible-input", "visible"}


def test_prediction_matches_figures_written_out_by_hand():
    """Green-only, Gaussian 1000 x 2000, m = 100, K = 4, on a flat profile (1 GFLOP/s,
    free element-wise work, 0.1 ms and 100 MB/s a link), from docs/design.md 5.4 by hand:
    worker k's GEMMs are x G_k, h_k G_k^T, v' G_k (2 m V H/K flops each) and the stacked
    statistics of depth 2m (4 m V H/K): 10 m V H / K = 5e8 flops, 0.5 s. It sends the
    other workers' visible slices of its partial inputs (m x 750 floats, 300 kB) and its
    own slice of v' to 3 peers (3 x m x 250 floats, 300 kB): 3 messages and 300 kB a phase."""
    model = cost.Model(1000, 2000, visible="gaussian")
    p = predict("green-only", model, 100, 4, flat_profile(element=0.0), transport="net")
    assert p.compute_seconds == pytest.approx(0.5, rel=1e-12)
    assert p.phases["visible-input"] == pytest.approx(3 * 1e-4 + 300_000 / 1e8, rel=1e-12)
    assert p.phases["visible"] == pytest.approx(3 * 1e-4 + 300_000 / 1e8, rel=1e-12)


def test_efficiency_scales_the_kernels_not_the_driver_overhead():
    model = cost.Model(500, 800)
    prof = flat_profile()
    prof.overhead = {"green-only": 1e-3}
    plain = predict("green-only", model, 50, 2, prof, transport="net")
    kernels = plain.compute_seconds - 1e-3
    prof.efficiency = {"green-only": 1.2, "serial": 1.5}
    slower = predict("green-only", model, 50, 2, prof, transport="net")
    assert slower.compute_seconds == pytest.approx(1.2 * kernels + 1e-3, rel=1e-12)
    assert slower.comm_seconds == plain.comm_seconds
    assert (
        predict("purple-only", model, 50, 2, prof, transport="net").compute_seconds
        == predict("purple-only", model, 50, 2, flat_profile(), transport="net").compute_seconds
    )


def test_gaussian_steps_take_their_own_efficiency():
    """Gaussian units' statistics are a GEMM, binary units' the bit statistics: each has
    its figure; a profile without the Gaussian one prices both with the strategy's."""
    model_b, model_g = cost.Model(500, 800), cost.Model(500, 800, visible="gaussian")
    prof = flat_profile()
    base_b = predict("green-only", model_b, 50, 2, prof, transport="net").compute_seconds
    base_g = predict("green-only", model_g, 50, 2, prof, transport="net").compute_seconds
    prof.efficiency = {"green-only": 1.2, "green-only/gaussian": 1.05}
    assert predict("green-only", model_b, 50, 2, prof, transport="net").compute_seconds == pytest.approx(
        1.2 * base_b, rel=1e-12
    )
    assert predict("green-only", model_g, 50, 2, prof, transport="net").compute_seconds == pytest.approx(
        1.05 * base_g, rel=1e-12
    )
    prof.efficiency = {"green-only": 1.2}  # an older profile
    assert predict("green-only", model_g, 50, 2, prof, transport="net").compute_seconds == pytest.approx(
        1.2 * base_g, rel=1e-12
    )


def test_float64_steps_take_their_own_efficiency():
    """A float64 step's excess in sequence is measured apart from float32's; a profile
    without it prices float64 with the float32 figure of the same units."""
    model32, model64 = cost.Model(500, 800), cost.Model(500, 800, precision="float64")
    gauss64 = cost.Model(500, 800, visible="gaussian", precision="float64")
    prof = flat_profile()
    base = {
        id(mo): predict("green-only", mo, 50, 2, prof, transport="net").compute_seconds
        for mo in (model32, model64, gauss64)
    }
    prof.efficiency = {
        "green-only": 1.2,
        "green-only/float64": 1.1,
        "green-only/gaussian": 1.05,
        "green-only/gaussian/float64": 1.02,
    }
    for mo, eff in ((model32, 1.2), (model64, 1.1), (gauss64, 1.02)):
        assert predict("green-only", mo, 50, 2, prof, transport="net").compute_seconds == pytest.approx(
            eff * base[id(mo)], rel=1e-12
        )
    prof.efficiency = {"green-only": 1.2, "green-only/gaussian": 1.05}  # an older profile
    assert predict("green-only", gauss64, 50, 2, prof, transport="net").compute_seconds == pytest.approx(
        1.05 * base[id(gauss64)], rel=1e-12
    )


def test_a_gemm_pays_for_an_operand_from_memory_by_its_elements():
    """A 100 x 1600 @ 1600 x 4000 float32 product at 1e11 flop/s takes 12.8 ms from the
    cache. Its 1600 x 4000 operand (25.6 MB) costs, per element, the streamed table
    interpolated in log bytes between 1 MB (0) and 64 MB (1 ns): ln 25.6 / ln 64 =
    0.77970 ns, 4.9901 ms for 6.4e6 elements. A product whose inputs fit the cache pays
    nothing, whatever its output (the Gaussian statistics' V x H result)."""
    prof = flat_profile(element=0.0)
    prof.gemm = {"float32": [[8, 1e11], [512, 1e11]]}
    prof.gemm_stream = {"float32": [[1e6, 0.0], [64e6, 1e-9]]}
    assert prof.gemm_seconds("float32", 100, 4000, 1600) == pytest.approx(12.8e-3 + 4.9901e-3, rel=1e-4)
    assert prof.gemm_seconds("float32", 1600, 4000, 20) == pytest.approx(2 * 1600 * 4000 * 20 / 1e11, rel=1e-12)
    assert prof.gemm_seconds("float32", 100, 500, 500) == pytest.approx(2 * 100 * 500 * 500 / 1e11, rel=1e-12)
    prof.gemm_stream = {}  # an older profile: the table alone
    assert prof.gemm_seconds("float32", 100, 4000, 1600) == pytest.approx(12.8e-3, rel=1e-12)


def test_bit_statistics_are_priced_at_their_words():
    """A serial step of 64 x 128 binary units at m = 100 updates 64 x 128 cells over two
    64-case words a term, two terms (data and reconstruction): 32768 cell-word-terms. The
    table says 4e-10 s at 1 word and 1e-10 s at 4; at 2 words, halfway in log words,
    2.5e-10 s: 8.192 us. Without the table, the flat element figure."""
    prof = flat_profile(element=0.0)
    w = step_work("serial", cost.Model(64, 128), 100, 1)
    assert dict(w.bitstat_words) == {2: 32768}
    gemm_only = prof.kernel_seconds(w, "float32")
    prof.bitstat = {"float32": [[1, 4e-10], [4, 1e-10], [16, 2e-10]]}
    assert prof.kernel_seconds(w, "float32") - gemm_only == pytest.approx(32768 * 2.5e-10, rel=1e-12)
    assert prof.bitstat_cost("float32", 64) == 2e-10 and prof.bitstat_cost("float32", 1) == 4e-10
    prof.bitstat = {}
    prof.element["float32"]["bitstat"] = 3e-10
    assert prof.kernel_seconds(w, "float32") - gemm_only == pytest.approx(32768 * 3e-10, rel=1e-12)


def test_the_kernels_excess_in_sequence_is_held_at_any_size(tmp_path):
    """Efficiency 1.2 measured on the calibration model prices a step ten times bigger
    at 1.2 too (its weight's cost from memory is in the kernels' price); a profile saved
    when the excess was scaled by traffic per flop still loads, and prices the same."""
    prof = flat_profile()
    prof.efficiency = {"green-only": 1.2}
    big = step_work("green-only", cost.Model(5000, 8000), 500, 2, 0)
    assert prof.step_efficiency(big, "green-only") == 1.2
    path = tmp_path / "old.json"
    prof.save(path)
    raw = json.loads(path.read_text())
    raw["efficiency_traffic"] = {"green-only": 0.007}
    path.write_text(json.dumps(raw))
    assert Profile.load(path).step_efficiency(big, "green-only") == 1.2


def test_syncs_are_typical_or_amortised():
    model = cost.Model(500, 800)
    prof = flat_profile()
    every = predict("per-update-sync", model, 50, 2, prof, transport="net")
    rare = predict("unit-partitioned", model, 50, 2, prof, transport="net", sync_every=10)
    assert every.sync_seconds == 0 and every.step_seconds == every.mean_step_seconds
    assert rare.sync_seconds > 0
    assert rare.mean_step_seconds == pytest.approx(rare.step_seconds + rare.sync_seconds / 10)


def test_workers_sharing_cores_wait_by_the_measured_factor(tmp_path):
    model = cost.Model(500, 800)
    prof = flat_profile()
    prof.cores = 2
    prof.contention = {"net": {"2": 1.25}}
    alone = predict("green-only", model, 50, 2, prof, transport="net")
    shared = predict("green-only", model, 50, 2, prof, transport="net", cores=2)
    assert alone.wait_seconds == 0
    assert shared.step_seconds == pytest.approx(1.25 * alone.step_seconds, rel=1e-12)
    assert shared.wait_seconds == pytest.approx(0.25 * alone.step_seconds, rel=1e-12)
    over = predict("green-only", model, 50, 4, prof, transport="net", cores=2)  # K > cores: K / cores as well
    flat4 = predict("green-only", model, 50, 4, prof, transport="net")
    assert over.compute_seconds == pytest.approx(2 * flat4.compute_seconds, rel=1e-12)
    assert over.step_seconds == pytest.approx(1.25 * (over.compute_seconds + over.comm_seconds), rel=1e-12)
    prof.links["other"] = prof.links["net"]  # not measured for this transport: no factor
    assert predict("green-only", model, 50, 2, prof, transport="other", cores=2).wait_seconds == 0
    # an older profile's single table applies to every transport
    raw = json.loads(json.dumps(__import__("dataclasses").asdict(prof)))
    raw["contention"] = {"2": 1.5}
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert Profile.load(tmp_path / "old.json").sharing("tcp", 2) == 1.5


def test_dilated_hosts_add_what_the_emulation_measured_at_their_k_and_factor(tmp_path):
    """A dilated run's step is the K machines' step times the factor measured for hosts
    dilated by the same F (at that K, else the nearest K measured), the strategy's own
    figure else the strategies' median, interpolated in a worker's weight bytes between
    the calibration models; machines of their own, an unmeasured F or transport, and the
    serial trainer get none; the profile keeps the table."""
    model = cost.Model(500, 800)  # 400 kB of weights a worker at K = 4
    prof = flat_profile()
    prof.dilated = {"net": {"4x2": [[1e5, {"green-only": 1.3, "*": 1.2}]], "8x4": [[1e5, {"*": 1.5}]]}}
    own = predict("green-only", model, 40, 4, prof, transport="net")
    dil = predict("green-only", model, 40, 4, prof, transport="net", dilation=2.0)
    assert own.emulation_seconds == 0 and dil.wait_seconds == 0
    assert dil.step_seconds == pytest.approx(1.3 * own.step_seconds, rel=1e-12)
    assert dil.emulation_seconds == pytest.approx(0.3 * own.step_seconds, rel=1e-12)
    assert dil.compute_seconds == own.compute_seconds and dil.comm_seconds == own.comm_seconds
    other = predict("unit-partitioned", model, 40, 4, prof, transport="net", dilation=2.0)
    base = predict("unit-partitioned", model, 40, 4, prof, transport="net")
    assert other.step_seconds == pytest.approx(1.2 * base.step_seconds, rel=1e-12)  # the median
    assert prof.dilation_factor("net", 8, 2.0, "green-only") == 1.3  # nearest K with F = 2
    assert prof.dilation_factor("net", 2, 4.0, "green-only") == 1.5
    assert prof.dilation_factor("net", 4, 3.0, "green-only") == 1.0  # F = 3 never measured
    assert prof.dilation_factor("other", 4, 2.0, "green-only") == 1.0
    assert predict("serial", model, 40, 1, prof, transport="net", dilation=2.0).emulation_seconds == 0
    # measured at 100 kB and 1.6 MB a worker: 400 kB is halfway in log size
    prof.dilated["net"]["4x2"].append([1.6e6, {"green-only": 1.5, "*": 1.4}])
    assert prof.dilation_factor("net", 4, 2.0, "green-only", 4e5) == pytest.approx(1.4, rel=1e-12)
    assert prof.dilation_factor("net", 4, 2.0, "green-only", 1e9) == pytest.approx(1.5, rel=1e-12)
    assert prof.dilation_factor("net", 4, 2.0, "green-only") == 1.3  # no size: the first model's
    half = predict("green-only", model, 40, 4, prof, transport="net", dilation=2.0)
    assert half.step_seconds == pytest.approx(1.4 * own.step_seconds, rel=1e-12)
    prof.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json").dilated == prof.dilated


def test_a_dilated_record_is_priced_with_its_factor():
    from parrbm.analysis.compare import predict_record

    prof = flat_profile()
    prof.links["tcp"] = prof.links["net"]
    prof.dilated = {"tcp": {"4x2": [[1e5, {"*": 1.4}]]}}
    rec = {
        "strategy": "green-only",
        "workers": 4,
        "transport": "tcp",
        "batch_size": 40,
        "blas_threads": 1,
        "model": {"visible": 500, "hidden": 800, "visible_type": "binary", "precision": "float32"},
        "training": {},
        "environment": {"cores": 2},
    }
    undilated = predict_record({**rec, "time_dilation": 1.0}, prof)
    dilated = predict_record({**rec, "time_dilation": 2.0}, prof)
    assert undilated.emulation_seconds == 0 and dilated.wait_seconds == 0
    assert dilated.emulation_seconds > 0
    assert dilated.step_seconds == pytest.approx(1.4 * (dilated.compute_seconds + dilated.comm_seconds), rel=1e-12)


def test_a_profile_at_another_speed_scales_its_kernels_not_its_links():
    prof = flat_profile()
    prof.overhead = {"green-only": 1e-4}
    prof.bitstat = {"float32": [[1, 2e-9], [4, 1e-9]]}
    slow = prof.at_speed(1.25)
    model = cost.Model(500, 800)
    work = step_work("green-only", model, 40, 4, 0)
    assert slow.kernel_seconds(work, "float32") == pytest.approx(1.25 * prof.kernel_seconds(work, "float32"), rel=1e-12)
    assert slow.compute_seconds(work, "float32", "green-only") == pytest.approx(
        1.25 * prof.compute_seconds(work, "float32", "green-only"), rel=1e-12
    )
    assert slow.links == prof.links and prof.gemm["float32"][0][1] == 1e9  # the profile itself untouched
    fast = predict("green-only", model, 40, 4, prof, transport="net")
    slowed = predict("green-only", model, 40, 4, slow, transport="net")
    assert slowed.comm_seconds == fast.comm_seconds
    assert slowed.compute_seconds == pytest.approx(1.25 * fast.compute_seconds, rel=1e-12)


def _priced_record(strategy: str, K: int, step: float, **kw) -> dict:
    return {
        "strategy": strategy,
        "workers": K,
        "transport": "tcp" if K > 1 else None,
        "batch_size": 40,
        "blas_threads": 1,
        "status": "ok",
        "model": {"visible": 500, "hidden": 800, "visible_type": "binary", "precision": "float32"},
        "training": {},
        "environment": {"cores": 64},
        "metrics": {"step_seconds": {"median": step, "p10": step, "p90": step}, "bytes_per_step": 0},
        **kw,
    }


def test_beside_the_model_the_run_priced_at_the_speed_its_serial_trainer_measured():
    """A machine running 30 % slower than when it was calibrated: the serial trainer's
    step says so, and priced at that speed the other runs of its model are as measured;
    the model's own figures stay the profile's. The serial run is the yardstick there, not
    a prediction; a model without a serial run has no such figure."""
    from parrbm.analysis.compare import error_summary, predict_record, predicted_vs_measured, run_speed, speed_line

    prof = flat_profile()
    prof.links["tcp"] = prof.links["net"]
    serial_priced = predict_record(_priced_record("serial", 1, 1.0), prof).step_seconds
    green_priced = predict_record(_priced_record("green-only", 4, 1.0), prof)
    other = {"visible": 400, "hidden": 800, "visible_type": "binary", "precision": "float32"}
    other_priced = predict_record(_priced_record("green-only", 2, 1.0, model=other), prof).step_seconds
    records = [
        _priced_record("serial", 1, 1.3 * serial_priced),
        _priced_record("green-only", 4, 1.3 * green_priced.compute_seconds + green_priced.comm_seconds),
        _priced_record("green-only", 2, other_priced, model=other),  # no serial run of this model
    ]
    (slowdown,) = run_speed(records, prof).values()
    assert slowdown == pytest.approx(1.3, rel=1e-12)
    rows = {(r["workers"], r["anchor"]): r for r in predicted_vs_measured(records, prof)}
    serial, green, unanchored = rows[(1, True)], rows[(4, False)], rows[(2, False)]
    assert serial["error"] == pytest.approx(1 / 1.3 - 1, rel=1e-12)  # the model: the profile's speed
    assert serial["error_run_speed"] == pytest.approx(0.0, abs=1e-12)
    assert green["error_run_speed"] == pytest.approx(0.0, abs=1e-12)  # its kernels 30 % slower, its links not
    assert green["error"] < -0.01 and green["predicted_seconds"] == green_priced.step_seconds
    assert unanchored["run_slowdown"] is None and unanchored["error_run_speed"] is None
    e = error_summary(list(rows.values()))
    assert e["runs"] == 3 and e["worst"] == pytest.approx(abs(serial["error"]), rel=1e-12)
    assert e["worst_run_speed"] == pytest.approx(0.0, abs=1e-12)  # the yardstick left out
    line = speed_line(list(rows.values()))
    assert "x1.30" in line and "median 0.0%, worst 0.0%" in line
    assert speed_line([unanchored]) is None


def test_the_table_says_what_the_emulation_adds_to_dilated_runs():
    from parrbm.analysis.compare import emulation_line

    rows = [
        {"predicted_seconds": 0.030, "predicted_emulation_seconds": 0.010, "measured_seconds": 0.032},
        {"predicted_seconds": 0.120, "predicted_emulation_seconds": 0.020, "measured_seconds": 0.125},
    ]
    line = emulation_line(rows)
    # factors 1.5 and 1.2; the machines alone 20 / 32 - 1 = -37.5 % and 100 / 125 - 1 = -20 %
    assert "(1.20-1.50 x the machines' step)" in line and "29% off the measured steps (median)" in line
    # the model with the term: 30 / 32 - 1 = -6.25 %, 120 / 125 - 1 = -4 %
    assert "median error 5.1%, worst 6.2% over 2 runs" in line


def test_co_scheduling_grows_with_the_workers_weight_blocks_between_measured_sizes():
    """Measured 1.1 with 1 MB of weights a worker and 1.3 with 16 MB: 4 MB (halfway in
    log size) gets 1.2, smaller and larger blocks the ends; a step's wait follows."""
    from parrbm.analysis.timemodel import working_set

    prof = flat_profile()
    prof.cores = 2
    prof.contention = {"net": {"2": 1.1}}
    prof.contention_memory = {"net": [[1e6, 1.1], [16e6, 1.3]]}
    assert prof.sharing("net", 2, 4e6) == pytest.approx(1.2, rel=1e-12)
    assert prof.sharing("net", 2, 1e3) == pytest.approx(1.1) and prof.sharing("net", 2, 1e9) == pytest.approx(1.3)
    assert prof.sharing("net", 2) == 1.1  # no size given: the calibration model's factor
    model = cost.Model(2000, 4000)  # 16 MB of float32 weights, 8 MB a worker at K = 2
    assert working_set(model, 2) == 16e6
    p = predict("green-only", model, 100, 2, prof, transport="net", cores=2)
    assert p.wait_seconds == pytest.approx((p.compute_seconds + p.comm_seconds) * 0.3, rel=1e-12)
    # an emulated link's transport finds the hosts' (or the transport's) figures
    prof.contention_memory = {"tcp@unshaped": [[1e6, 1.0], [16e6, 1.5]]}
    assert prof.sharing("tcp@105MB/s", 2, 4e6) == pytest.approx(1.25, rel=1e-12)


def test_ranking_pairs_within_the_noise_do_not_count_against_the_model():
    from parrbm.analysis.compare import ranking_agreement

    def row(s, measured, p10, p90, predicted):
        return {
            "strategy": s,
            "workers": 2,
            "transport": "tcp",
            "batch_size": 10,
            "visible_type": "binary",
            "precision": "float32",
            "meaningful": True,
            "measured_seconds": measured,
            "measured_p10": p10,
            "measured_p90": p90,
            "predicted_seconds": predicted,
        }

    close = [row("a", 1.00, 0.95, 1.05, 1.1), row("b", 1.02, 0.98, 1.06, 1.0), row("c", 2.0, 1.9, 2.1, 2.0)]
    (g,) = ranking_agreement(close)
    assert g["measured"] == ["a", "b", "c"] and g["predicted"] == ["b", "a", "c"]
    assert not g["same"] and g["same_within_noise"] and g["discordant_beyond_noise"] == []
    apart = [row("a", 1.0, 0.99, 1.01, 1.1), row("b", 1.2, 1.19, 1.21, 1.0)]
    (g,) = ranking_agreement(apart)
    assert not g["same_within_noise"] and [(a, b) for a, b, _ in g["discordant_beyond_noise"]] == [("a", "b")]


def test_error_summary_states_the_error_beyond_each_runs_own_spread():
    from parrbm.analysis.compare import error_summary

    def row(measured, p10, p90, predicted, meaningful=True):
        return {
            "meaningful": meaningful,
            "measured_seconds": measured,
            "measured_p10": p10,
            "measured_p90": p90,
            "predicted_seconds": predicted,
            "error": predicted / measured - 1,
        }

    rows = [
        row(1.0, 0.9, 1.2, 1.15),  # +15 %, inside its band
        row(2.0, 1.9, 2.1, 1.6),  # -20 %: 0.3 s below p10, 15 % of the median
        row(1.0, 0.95, 1.05, 1.05),  # +5 %: on p90, inside
        row(1.0, 0.9, 1.1, 3.0, meaningful=False),
    ]  # K > cores: not counted
    e = error_summary(rows)
    assert e["runs"] == 3 and e["within_spread"] == 2
    assert e["median"] == pytest.approx(0.15, rel=1e-12) and e["worst"] == pytest.approx(0.20, rel=1e-12)
    assert e["worst_beyond_spread"] == pytest.approx(0.15, rel=1e-12)
    assert error_summary([row(1.0, 0.9, 1.1, 3.0, meaningful=False)])["runs"] == 0


def test_slower_network_favours_fewer_bytes():
    """On a fast network the strategy with the least compute wins; on a slow one, for the
    paper's model, the one with the least traffic."""
    model = cost.Model(8000, 20000)
    fast = advise(model, 100, [8], flat_profile(rate=5e11, bandwidth=1e12, latency=0), transport="net")[0]
    slow = advise(model, 100, [8], flat_profile(rate=5e11, bandwidth=1e6, latency=0), transport="net")[0]
    traffic = {
        s: cost.step_traffic(s, model, 100, 8).total
        + cost.sync_traffic(s, model, 8).total * cost.syncs_per_step(s, sync_every=1)
        for s in PARALLEL_STRATEGIES
    }
    assert slow["best"] == min(traffic, key=traffic.get)
    assert fast["best"] != "parameter-averaging"
    assert slow["margin_percent"] > 0
    assert [s for s, *_ in slow["ranking"]][0] == slow["best"]


def test_advise_at_one_worker_includes_serial():
    rows = advise(cost.Model(100, 100), 10, [1, 2], flat_profile(), transport="net")
    assert "serial" in [s for s, *_ in rows[0]["ranking"]]
    assert "serial" not in [s for s, *_ in rows[1]["ranking"]]


@pytest.mark.parametrize(
    "text,value", [("105MB/s", 105e6), ("1.25 GB/s", 1.25e9), ("10Gbit/s", 1.25e9), ("100 MiB/s", 100 * 2**20)]
)
def test_parse_bandwidth(text, value):
    assert parse_bandwidth(text) == pytest.approx(value)


def test_parse_latency_and_bad_figures():
    assert parse_latency("0.091ms") == pytest.approx(91e-6)
    assert parse_latency("50us") == pytest.approx(50e-6)
    with pytest.raises(ValueError, match="bandwidth 'fast'"):
        parse_bandwidth("fast")
    with pytest.raises(ValueError, match="latency '-1ms'"):
        parse_latency("-1ms")


# ---- calibration and the commands that use it ------------------------------------------------------------


@pytest.fixture(scope="module")
def measured_profile(tmp_path_factory):
    from parrbm.analysis.calibrate import calibrate

    path = tmp_path_factory.mktemp("profile") / "machine.json"
    calibrate(quick=True, transports=["threads"], progress=lambda m: None).save(path)
    return path


@pytest.mark.slow
def test_calibration_measures_every_figure(measured_profile):
    """Every figure the time model needs is measured, at the sizes it needs, as a positive
    finite number. How large each is depends on the machine and its load at the time: the
    figures' accuracy is held by the model-vs-measured tests below (which time both sides
    together) and by the benchmarks, never by bounds on one timing."""
    import math

    def positive(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    p = Profile.load(measured_profile)
    for precision in ("float32", "float64"):
        assert all(positive(r) for _, r in p.gemm[precision])
        assert all(positive(v) for v in p.element[precision].values())
    assert set(p.overhead) == {"serial", *PARALLEL_STRATEGIES}
    names = {"serial", *PARALLEL_STRATEGIES}
    assert set(p.efficiency) == {f"{n}{v}{d}" for n in names for v in ("", "/gaussian") for d in ("", "/float64")}
    assert all(positive(e) for e in p.efficiency.values())
    for precision in ("float32", "float64"):  # the bit statistics at every timed width
        assert [w for w, _ in p.bitstat[precision]] == [1, 2, 4, 8, 16]
        assert all(positive(c) for _, c in p.bitstat[precision])
        # an operand from memory: nothing at the table's own size, sizes ascending to
        # well beyond the shared cache
        stream = p.gemm_stream[precision]
        assert stream[0][1] == 0.0 and stream[-1][0] > 64e6
        assert [b for b, _ in stream] == sorted(b for b, _ in stream)
        assert all(c >= 0 and math.isfinite(c) for _, c in stream)
    link = p.links["threads"]["allgather"]
    assert positive(link.bandwidth) and link.latency >= 0 and math.isfinite(link.latency)
    assert positive(p.contention["threads"][str(max(2, p.cores))])


@pytest.mark.slow
def test_calibration_prices_a_step_it_was_not_measured_on(measured_profile):
    """The profile's figures put a serial CD-1 step of a model the calibration never ran
    within a factor of 2 of its measured median: a rate or cost off by 10x fails."""
    from parrbm.config import CDSpec, ModelState
    from parrbm.strategies import SerialStrategy

    p = Profile.load(measured_profile)
    spec = CDSpec(n_visible=600, n_hidden=900, batch_size=120, dtype="float32", visible="gaussian")
    X = np.random.default_rng(0).standard_normal((120, 600)).astype(np.float32)
    s = SerialStrategy(spec, ModelState.initial(spec))
    s.step(X, 0)
    times = []
    for i in range(1, 8):
        t0 = time.perf_counter()
        s.step(X, i)
        times.append(time.perf_counter() - t0)
    predicted = predict("serial", cost.Model(600, 900, visible="gaussian"), 120, 1, p).step_seconds
    assert 0.5 < predicted / float(np.median(times)) < 2.0


@pytest.mark.slow
def test_predict_and_advise_commands(measured_profile, capsys):
    base = [
        "--visible",
        "8000",
        "--hidden",
        "20000",
        "--batch",
        "100",
        "--workers",
        "1..64",
        "--profile",
        str(measured_profile),
        "--bandwidth",
        "105MB/s",
        "--latency",
        "0.091ms",
    ]
    assert main(["advise", *base]) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines()[2:]]
    assert "best strategy" in out and [int(r[0]) for r in rows] == [1, 2, 4, 8, 16, 32, 64]
    assert rows[0][1] in ("serial", *PARALLEL_STRATEGIES)
    assert main(["predict", *base, "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 5 * 7 and all(p["step_seconds"] > 0 for p in preds)
    assert (
        main(
            [
                "predict",
                "--visible",
                "64",
                "--hidden",
                "32",
                "--batch",
                "10",
                "--profile",
                str(measured_profile),
                "--transport",
                "threads",
                "--workers",
                "2",
            ]
        )
        == 0
    )


def test_predict_without_a_profile_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARRBM_PROFILE", str(tmp_path / "none.json"))
    assert main(["advise", "--visible", "8", "--hidden", "8", "--batch", "2"]) == 2
    assert "run 'parrbm calibrate' first" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["advise", "--visible", "8", "--hidden", "8", "--batch", "2", "--profile", str(bad)]) == 2
    assert "not a parrbm machine profile" in capsys.readouterr().err


# ---- predictions beside measurements, figures, report ------------------------------------------------


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """The shipped quick config, every grid point, one timed step each, calibrated."""
    import yaml

    from parrbm.harness.comparison_config import load_config
    from parrbm.harness.experiment import run_config

    tmp = tmp_path_factory.mktemp("quick")
    raw = yaml.safe_load(open("configs/quick.yaml"))
    raw["training"].update(steps=1, warmup=0, repeats=1)
    raw["data"]["cases"] = 200
    (tmp / "quick.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp / "quick.yaml")
    from parrbm.analysis.calibrate import calibrate_for_config

    return run_config(cfg, tmp / "out", progress=lambda m: None, calibrate=calibrate_for_config)


@pytest.mark.slow
def test_cost_module_equals_measured_bytes_for_every_quick_record(quick_results):
    from parrbm.analysis.compare import load_profile_for, predicted_vs_measured
    from parrbm.harness.experiment import read_records
    from parrbm.harness.grid import is_all_cores_baseline

    records = read_records(quick_results)
    baselines = [r for r in records if is_all_cores_baseline(r)]
    assert len(records) == 1 + len(baselines) + 5 * (1 + 2 * 3) and all(r["status"] == "ok" for r in records)
    rows = predicted_vs_measured(records, load_profile_for(quick_results))
    assert len(rows) == len(records) - len(baselines)  # the model prices one BLAS thread a worker
    for r in rows:
        assert r["bytes_per_step"] == r["bytes_per_step_formula"], r
        assert r["predicted_seconds"] > 0


@pytest.mark.slow
def test_table_plot_and_report(quick_results, tmp_path, capsys):
    assert main(["table", str(quick_results)]) == 0
    out = capsys.readouterr().out
    assert "model ms" in out and "time model vs measured" in out
    assert main(["plot", str(quick_results), "--out", str(tmp_path / "figs"), "--no-divergence"]) == 0
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {f"{n}.{e}" for n in ("speedup", "bytes", "breakdown", "predicted") for e in ("png", "svg")} <= names
    for png in (tmp_path / "figs").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = tmp_path / "r" / "report.html"
    report.parent.mkdir()
    assert main(["report", str(quick_results), "--out", str(report)]) == 0
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 5  # four figures + divergence
    from parrbm.harness.experiment import read_records

    n = len(read_records(quick_results))
    assert f"measured bytes equal the closed form in {n} of {n}" in page
    assert "<td>48</td><td>48</td>" in page and "<td>3864</td><td>3864</td>" in page  # Table 4.1 beside ours
    md = tmp_path / "r" / "report.md"
    assert main(["report", str(quick_results), "--out", str(md), "--no-divergence"]) == 0
    assert "![speedup](report_files/speedup.png)" in md.read_text()


def test_divergence_is_zero_for_binary_and_small_for_gaussian():
    from parrbm.analysis.plots import divergence_curves

    curves = divergence_curves(steps=5, V=40, H=60, m=20)
    binary = [c["divergence"] for c in curves if c["setting"] == "binary, float32"]
    gauss = [c["divergence"] for c in curves if c["setting"] == "gaussian, float32"]
    assert binary == [0.0] * 5
    assert max(gauss) < 1e-4


def test_report_and_plot_refuse_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.jsonl")]) == 2
    assert "no such results file" in capsys.readouterr().err
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"status": "ok"}\n')
    assert main(["plot", str(bad)]) == 2
    assert "not a parrbm results file" in capsys.readouterr().err


def test_an_emulated_link_passes_its_bucket_at_once_and_its_wire_time_is_no_cores_wait():
    """On tcp@10MB/s: each collective's first ``burst`` payload bytes pass at once (the
    token bucket refilled by the compute before it), the rest at the link's payload rate;
    workers sharing the cores wait in proportion to their kernels and the transfers'
    loopback (CPU) time, not to the wire's."""
    from parrbm.analysis.compare import network_profile
    from parrbm.harness.network import bucket_bytes, payload_rate

    model = cost.Model(500, 800)
    prof = flat_profile()
    prof.cores = 2
    prof.links["tcp"] = {k: Link(1e-5, 1e9) for k in prof.links["net"]}
    prof.contention = {"tcp": {"2": 1.5}}
    net = {"bandwidth": 10e6, "latency": None, "latency_emulated": False}
    p, name = network_profile(prof, "tcp", net)
    assert name == "tcp@10MB/s"
    burst = bucket_bytes(10e6) * payload_rate(10e6) / 10e6
    link = p.links[name]["reduce_scatter"]
    assert (link.bandwidth, link.latency, link.burst) == (payload_rate(10e6), 1e-5, burst)
    traffic = cost.step_traffic("green-only", model, 50, 2)
    pred = predict("green-only", model, 50, 2, p, transport=name, cores=2)
    for phase, per_worker in traffic.phases.items():
        calls = traffic.calls.get(phase, 1)
        want = 1e-5 * calls + max(0.0, max(per_worker) - burst * calls) / payload_rate(10e6)
        assert pred.phases[phase] == pytest.approx(want, rel=1e-12)
    assert pred.phases["visible-input"] > 1e-3  # 50 kB a worker, 31 kB of it at once
    # a phase's CPU part: its loopback time, at most the link's (a transfer the bucket passes
    # at once costs no more than its latency)
    loopback = sum(
        min(pred.phases[ph], 1e-5 * traffic.calls.get(ph, 1) + max(b) / 1e9) for ph, b in traffic.phases.items()
    )
    assert pred.wait_seconds == pytest.approx(0.5 * (pred.compute_seconds + loopback), rel=1e-12)
    # the emulated hosts' own (unshaped) links, once calibrated, are the base instead of loopback
    prof.links["tcp@unshaped"] = {k: Link(2e-5, 5e8) for k in prof.links["net"]}
    prof.contention["tcp@unshaped"] = {"2": 1.2}
    p, name = network_profile(prof, "tcp", net)
    assert p.links[name]["allgather"].latency == 2e-5
    pred = predict("green-only", model, 50, 2, p, transport=name, cores=2)
    hosts = sum(
        min(pred.phases[ph], 2e-5 * traffic.calls.get(ph, 1) + max(b) / 5e8) for ph, b in traffic.phases.items()
    )
    assert pred.wait_seconds == pytest.approx(0.2 * (pred.compute_seconds + hosts), rel=1e-12)
    assert network_profile(prof, "tcp", {**net, "bandwidth": None}) == (prof, "tcp@unshaped")


def test_a_run_on_named_hosts_is_priced_with_the_collectives_calibrated_between_them():
    from parrbm.analysis.compare import predict_record

    prof = flat_profile().with_network("mpi", 1e9, 1e-5).with_network("mpi@hosts", 1e7, 1e-3)
    rec = {
        "strategy": "parameter-averaging",
        "workers": 2,
        "transport": "mpi",
        "batch_size": 100,
        "model": {"visible": 500, "hidden": 500, "visible_type": "binary", "precision": "float32"},
        "training": {"sync_every": 1},
        "options": {},
    }
    here = predict_record(rec, prof)
    across = predict_record({**rec, "hosts": ["node0", "node1"]}, prof)
    assert here.transport == "mpi" and across.transport == "mpi@hosts"
    assert across.step_seconds > here.step_seconds + 0.02  # 1 MB a step at 10 MB/s, not at 1 GB/s
    del prof.links["mpi@hosts"]  # not calibrated (a job the user started): this machine's figures
    assert predict_record({**rec, "hosts": ["node0", "node1"]}, prof).transport == "mpi"


def test_runs_on_slower_hosts_are_priced_at_the_slowest_hosts_speed():
    model = cost.Model(500, 500)
    prof = flat_profile().with_network("mpi@hosts", 1e9, 1e-5)
    base = predict("green-only", model, 100, 2, prof, transport="mpi@hosts")
    prof.host_slowdown["mpi@hosts"] = 2.0
    slow = predict("green-only", model, 100, 2, prof, transport="mpi@hosts")
    assert slow.compute_seconds == pytest.approx(2 * base.compute_seconds)
    assert slow.comm_seconds == pytest.approx(base.comm_seconds)


def test_an_overlapped_step_is_priced_as_a_two_stage_pipeline():
    """Per-update sync, Gaussian 1000 x 2000, m = 100, K = 2, a machine each, flat profile:
    the update of green (a 1000 x 1000 product of depth 200, 0.4 s) runs while the sync's
    chunks (500 x 1000 floats, 2 MB at 100 MB/s: 0.02 s, and 0.1 ms a chunk) go, so N
    chunks hide min(0.4, T) (1 - 1/N) of the lockstep step; at a flat GEMM rate cutting
    the products costs nothing."""
    model = cost.Model(1000, 2000, visible="gaussian")
    prof = flat_profile(element=0.0)
    lock = predict("per-update-sync", model, 100, 2, prof, transport="net")
    for N in (2, 4):
        p = predict("per-update-sync", model, 100, 2, prof, transport="net", overlap_chunks=N)
        transfer = 2e6 / 1e8 + N * 1e-4
        assert p.hidden_seconds == pytest.approx(transfer * (1 - 1 / N), rel=1e-12)
        assert p.step_seconds == pytest.approx(lock.step_seconds + (N - 1) * 1e-4 - transfer * (1 - 1 / N), rel=1e-12)
    # chunking is not free where small products run slower: cut into 8, the rate of the
    # 125-row products is the table's at 125, the hidden time the same rule's
    slow_small = Profile(**{**vars(prof), "gemm": {p: [[1, 1e7], [1000, 1e9]] for p in ("float32", "float64")}})
    whole = predict("per-update-sync", model, 100, 2, slow_small, transport="net")
    cut = predict("per-update-sync", model, 100, 2, slow_small, transport="net", overlap_chunks=8)
    assert cut.compute_seconds > whole.compute_seconds


def test_lockstep_is_priced_as_before_and_workers_on_busy_cores_hide_only_the_wire():
    model = cost.Model(1000, 2000)
    prof = flat_profile()
    for s in ("unit-partitioned", "green-only", "purple-only", "per-update-sync", "parameter-averaging"):
        p = predict(s, model, 100, 2, prof, transport="net")
        assert p.hidden_seconds == 0.0 and p.overlap_chunks == 1
        # threads: every second of a transfer is a core's, so none of it is hidden
        threads = Profile(**{**vars(prof), "links": {"threads": prof.links["net"]}})
        assert predict(s, model, 100, 2, threads, transport="threads", cores=2, overlap_chunks=4).hidden_seconds == 0.0
        assert predict(s, model, 100, 2, prof, transport="net", overlap_chunks=4).hidden_seconds > 0.0


def test_advise_chooses_the_chunk_count():
    """On a slow link with compute to hide it behind, the advice overlaps and says how (the
    cases whole, or in how many chunks); lockstep rows say no overlap and 1."""
    model = cost.Model(1000, 2000)
    rows = advise(
        model, 100, [2], flat_profile(bandwidth=2e7), strategies=["per-update-sync", "green-only"], transport="net"
    )
    assert rows[0]["overlap"] is True
    assert all(len(entry) == 3 for entry in rows[0]["ranking"])
    lock = advise(
        model,
        100,
        [2],
        flat_profile(bandwidth=2e7),
        strategies=["per-update-sync", "green-only"],
        chunk_choices=(),
        transport="net",
    )
    assert lock[0]["overlap"] is False and lock[0]["overlap_chunks"] == 1
    assert lock[0]["step_seconds"] > rows[0]["step_seconds"]
    assert all(chunks == 0 for _, _, chunks in lock[0]["ranking"])


def test_an_emulated_links_burst_is_credited_once_a_phase_not_once_a_chunk():
    """The token bucket refills while a lockstep step computes; an overlapped phase's chunks
    follow one another on a busy link, so only its first finds the bucket full."""
    model = cost.Model(1000, 2000, visible="gaussian")
    burst = Profile(
        **{
            **vars(flat_profile(element=0.0)),
            "links": {
                "net": {
                    k: Link(1e-4, 1e8, burst=5e4)
                    for k in ("allgather", "allgather_bits", "reduce_scatter", "allreduce", "alltoall")
                }
            },
        }
    )
    lock = predict("green-only", model, 96, 2, burst, transport="net")
    cut = predict("green-only", model, 96, 2, burst, transport="net", overlap_chunks=4)
    for phase, t in cut.phases.items():
        calls = cost.step_traffic("green-only", model, 96, 2, options=StrategyOptions(overlap_chunks=4)).calls[phase]
        assert t == pytest.approx(lock.phases[phase] + (calls - 1) * 1e-4, rel=1e-12)
