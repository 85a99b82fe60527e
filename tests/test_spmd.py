"""Fits started by the user's MPI launcher: ``mpiexec -n N python script.py`` with
``RBM(transport="mpi", workers=K)`` fits on the job's own ranks (rank k is worker k; ranks
beyond K wait), every rank returns the same model, and it is the fit on threads, bit for
bit, with the same bytes."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support import has_mpi

from parrbm import DBN, RBM
from parrbm.strategies import PARALLEL_STRATEGIES

pytestmark = pytest.mark.skipif(not has_mpi(), reason="pip install '.[mpi]'")
HERE = Path(__file__).resolve().parent


def mpiexec(n: int, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    from parrbm.harness.launch import mpiexec as find

    return subprocess.run(
        [find(), "-n", str(n), sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def threads_fits():
    X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
    out = {}
    for strategy in PARALLEL_STRATEGIES:
        rbm = RBM(
            n_hidden=12,
            batch_size=10,
            n_iter=2,
            learning_rate=0.05,
            dtype="float64",
            random_state=1,
            strategy=strategy,
            workers=2,
            progress=False,
        ).fit(X)
        out[strategy] = (rbm.components_, rbm.comm_stats_["bytes_total"], rbm.comm_stats_["bytes_per_step"])
    out["dbn"] = (
        DBN(
            hidden_layer_sizes=(10, 6),
            n_iter=1,
            batch_size=10,
            random_state=2,
            strategy="purple-only",
            workers=2,
            dtype="float64",
            progress=False,
        )
        .fit(X)
        .transform(X)
    )
    return out


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_fit_on_the_ranks_of_an_mpi_job_is_the_fit_on_threads(tmp_path, threads_fits, ranks):
    p = mpiexec(ranks, str(HERE / "spmd_fit.py"), str(tmp_path / "held"), "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    held = [np.load(tmp_path / f"held-{r}.npz") for r in range(ranks)]
    for strategy in PARALLEL_STRATEGIES:
        W, total, per_step = threads_fits[strategy]
        for r in range(ranks):  # every rank, the idle one of 3 too, holds the model
            np.testing.assert_array_equal(held[r][strategy], W, err_msg=f"{strategy} {r}")
            assert list(held[r][f"{strategy}/bytes"]) == [total, per_step], (strategy, r)
    for r in range(1, ranks):
        np.testing.assert_array_equal(held[r]["unseeded"], held[0]["unseeded"])  # one seed: rank 0's
        np.testing.assert_array_equal(held[r]["dbn"], held[0]["dbn"])
    np.testing.assert_allclose(held[0]["dbn"], threads_fits["dbn"], rtol=0, atol=0)


SCRIPT = """
import sys
import numpy as np
from mpi4py import MPI
from parrbm import RBM

rank = MPI.COMM_WORLD.Get_rank()
X = (np.random.default_rng(rank if sys.argv[1] == "other-data" else 0).random((40, 8)) < 0.5).astype(np.float32)
try:
    RBM(n_hidden=4, batch_size=10, n_iter=1, strategy="green-only", workers=int(sys.argv[2]), transport="mpi",
        progress=False).fit(X)
except ValueError as exc:
    with open(f"said-{rank}.txt", "w") as fh:  # ranks print at once: one file each
        fh.write(str(exc))
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "case,workers,needle",
    [
        ("same-data", 3, "workers=3, but the launcher started 2 ranks"),
        ("other-data", 2, r"needs the same X on every rank .* ranks \[1\] passed other data"),
    ],
)
def test_what_an_mpi_job_cannot_fit_is_refused_on_every_rank(tmp_path, case, workers, needle):
    import re

    (tmp_path / "s.py").write_text(textwrap.dedent(SCRIPT))
    p = mpiexec(2, "s.py", case, str(workers), cwd=tmp_path, timeout=120)
    assert p.returncode != 0
    said = [(tmp_path / f"said-{r}.txt") for r in (0, 1)]
    assert all(s.exists() for s in said), p.stdout + p.stderr
    assert all(re.search(needle, s.read_text()) for s in said), [s.read_text() for s in said]


def test_a_failing_worker_ends_the_mpi_job_naming_itself(tmp_path):
    (tmp_path / "boom.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from parrbm import RBM
        from parrbm.strategies.green_only import GreenOnly

        class Boom(GreenOnly):
            name = "boom"

            def step(self, X, i):
                if self.rank == 1 and i == 2:
                    raise RuntimeError("the plug-in broke")
                return super().step(X, i)

        X = (np.random.default_rng(0).random((40, 8)) < 0.5).astype(np.float32)
        RBM(n_hidden=4, batch_size=10, n_iter=1, strategy=Boom, workers=2, transport="mpi", progress=False).fit(X)
    """)
    )
    p = mpiexec(2, "boom.py", cwd=tmp_path, timeout=120)
    assert p.returncode != 0
    assert "parrbm: worker 1 of 2 failed: RuntimeError: the plug-in broke" in p.stderr


def test_parrbm_train_on_the_ranks_of_an_mpi_job_writes_once(tmp_path):
    p = mpiexec(
        2,
        "-m",
        "parrbm.cli",
        "train",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--strategy",
        "green-only",
        "--workers",
        "2",
        "--transport",
        "mpi",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "out" / "model.npz").exists()
    assert p.stdout.count("model saved to") == 1  # rank 0 reports and writes


RUN = """
name: across
model: {visible: 24, hidden: 16}
data: {kind: random-binary, cases: 64}
training: {batch_size: 8, steps: 3, warmup: 1, timeout: 30}
grid:
  strategy: [serial, unit-partitioned, green-only]
  workers: [1, 2]
  transport: [threads, tcp, mpi]
"""


def test_a_comparison_started_by_mpiexec_runs_its_mpi_points_on_the_jobs_ranks(tmp_path):
    import json

    from parrbm.harness.comparison_config import load_config
    from parrbm.harness.experiment import run_config

    (tmp_path / "c.yaml").write_text(RUN)
    p = mpiexec(3, "-m", "parrbm.cli", "run", "c.yaml", "--out", "spmd", "--no-calibrate", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("results: ") == 1  # rank 0 reports; the others served
    spmd = {r["run_id"]: r for r in map(json.loads, (tmp_path / "spmd" / "across.jsonl").read_text().splitlines())}
    alone = run_config(load_config(tmp_path / "c.yaml"), tmp_path / "alone", progress=lambda *a: None)
    ref = {r["run_id"]: r for r in map(json.loads, alone.read_text().splitlines())}
    assert set(spmd) == set(ref)
    for rid, r in spmd.items():
        assert r["status"] == "ok", (rid, r["error"])
        assert (
            r["metrics"]["bytes_per_step"]
            == ref[rid]["metrics"]["bytes_per_step"]
            == r["metrics"]["bytes_per_step_formula"]
        ), rid
        assert r["metrics"]["reconstruction_error"] == ref[rid]["metrics"]["reconstruction_error"], rid
        assert r["metrics"]["model_sha256"] == ref[rid]["metrics"]["model_sha256"], rid
        if r["transport"] in ("tcp", "mpi") and r["workers"] > 1:  # on the job's ranks, not workers of rank 0
            assert len(r["hosts"]) == r["workers"], rid
    # one writer: rank 0's results (and its writer's lock), nothing from the other ranks
    assert sorted(x.name for x in (tmp_path / "spmd").iterdir()) == [".across.jsonl.lock", "across.jsonl"]


def test_a_comparison_needing_more_ranks_than_started_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(RUN.replace("workers: [1, 2]", "workers: [1, 3]"))
    p = mpiexec(2, "-m", "parrbm.cli", "run", "c.yaml", "--out", "out", "--no-calibrate", cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "grid.workers: 3 workers on the job's ranks, but its launcher started 2 ranks" in p.stderr
    assert not (tmp_path / "out").exists()


def test_an_mpi_jobs_checkpoints_resume_it_exactly(tmp_path):
    (tmp_path / "ck.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from mpi4py import MPI
        from parrbm import RBM, latest_checkpoint

        world = MPI.COMM_WORLD
        X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
        kw = dict(n_hidden=12, batch_size=10, learning_rate=0.05, dtype="float64", random_state=1,
                  strategy="unit-partitioned", workers=2, transport="mpi", progress=False,
                  strategy_options={"sync_every": 5})
        whole = RBM(n_iter=3, **kw).fit(X)
        RBM(n_iter=1, checkpoint_dir="ck", **kw).fit(X)   # rank 0 writes the checkpoint
        world.Barrier()
        resumed = RBM.load(latest_checkpoint("ck")).set_params(warm_start=True, n_iter=3).fit(X)
        assert np.array_equal(resumed.components_, whole.components_), world.Get_rank()
        if world.Get_rank() == 0:
            resumed.save("final.npz")
        open(f"ok-{world.Get_rank()}", "w").close()  # ranks print at once: a file each
    """)
    )
    p = mpiexec(2, "ck.py", cwd=tmp_path, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "ok-0").exists() and (tmp_path / "ok-1").exists()
    assert sorted(x.name for x in (tmp_path / "ck").iterdir()) == ["epoch-0001.npz"]
    assert (tmp_path / "final.npz").exists()


STOPPED = """
import os, signal, sys, threading
import numpy as np
from mpi4py import MPI
from parrbm import RBM

if MPI.COMM_WORLD.Get_rank() == int(sys.argv[1]):  # stopped (SIGSTOP) a second into the fit
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()
X = (np.random.default_rng(0).random((400, 64)) < 0.5).astype(np.float32)
RBM(n_hidden=64, batch_size=20, n_iter=100000, strategy="unit-partitioned", workers=3, transport="mpi",
    strategy_options={"timeout": 2}, progress=False).fit(X)
"""


@pytest.mark.parametrize(
    "victim,needle",
    [
        (
            2,
            r"parrbm: worker 2 did not respond within 2 s \(stopped or hung; the kernel shows it stopped, as by "
            r"SIGSTOP\): last in phase '[a-z-]+', collective #\d+",
        ),
        pytest.param(
            0,
            r"parrbm: worker [12] waited 12 s in collective #\d+ .* worker 0 is stopped or hung",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_stopped_rank_ends_the_mpi_job_naming_it(tmp_path, victim, needle):
    """MPI collectives wait forever; the job's watch names the stopped rank and ends the
    job within the timeout (rank 0 stopped: its peers, within the timeout and a grace)."""
    import re
    import time

    (tmp_path / "stop.py").write_text(textwrap.dedent(STOPPED))
    t0 = time.monotonic()
    p = mpiexec(3, "stop.py", str(victim), cwd=tmp_path, timeout=120)
    assert p.returncode != 0
    assert re.search(needle, p.stderr), p.stderr[-2000:]
    assert time.monotonic() - t0 < 60


def test_a_rank_whose_watch_went_silent_is_named_where_the_counts_cannot_tell():
    """Rank 2 stopped inside collective #724 on another host: every rank entered #724 and
    none left, so the counts name no one; its watch's silence does. The kernel's word, where
    it has one, comes first."""
    from parrbm.harness.mpi import Watch, hung_message

    beats = {r: (724, 723, "hidden") for r in range(3)}
    assert hung_message(beats, [], 3, 5.0).startswith("one of workers [0, 1, 2] did not respond")
    said = hung_message(beats, [], 3, 5.0, silent=[2])
    assert said.startswith(
        f"worker 2 did not respond within 5 s (stopped or hung): its watch silent for over {Watch.SILENT:g} s"
    )
    assert "collective #724" in said
    said = hung_message(beats, [1], 3, 5.0, silent=[2])
    assert said.startswith("worker 1 did not respond") and "the kernel shows it stopped" in said
    # a rank that stopped outside the collectives is still found by its count
    beats[1] = (723, 723, "visible")
    assert hung_message(beats, [], 3, 5.0).startswith("worker 1 did not respond")


TCP_FIT = """
import numpy as np
from mpi4py import MPI
from parrbm import RBM

X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
rbm = RBM(n_hidden=12, batch_size=10, n_iter=2, learning_rate=0.05, dtype="float64", random_state=1,
          strategy="unit-partitioned", workers=2, transport="tcp", progress=False).fit(X)
np.save(f"held-{MPI.COMM_WORLD.Get_rank()}.npy", rbm.components_)
if MPI.COMM_WORLD.Get_rank() == 0:  # ranks print at once: one speaks
    print(rbm.comm_stats_["bytes_total"], rbm.comm_stats_["hosts"] is not None, flush=True)
"""


def test_a_tcp_fit_on_the_ranks_of_an_mpi_job_is_the_fit_on_threads(tmp_path):
    """transport="tcp" under mpiexec: the worker ranks connect to one another over TCP (the
    addresses go round over MPI) and fit there; every rank holds the threads fit's model."""
    (tmp_path / "fit.py").write_text(textwrap.dedent(TCP_FIT))
    p = mpiexec(3, "fit.py", cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
    ref = RBM(
        n_hidden=12,
        batch_size=10,
        n_iter=2,
        learning_rate=0.05,
        dtype="float64",
        random_state=1,
        strategy="unit-partitioned",
        workers=2,
        progress=False,
    ).fit(X)
    for r in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / f"held-{r}.npy"), ref.components_, err_msg=str(r))
    assert p.stdout.split()[:2] == [str(ref.comm_stats_["bytes_total"]), "True"]
