"""Jobs started by a launcher without MPI (torchrun-style RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT, ``srun`` without an MPI plug-in): the ranks meet at rank 0's rendezvous and
keep their books over TCP. A comparison runs once across them, a fit on them is the fit on
threads, a rank that dies ends the job naming it, and nothing a stranger sends runs code."""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from parrbm import RBM
from parrbm.harness.world import TCPWorld, _loads
from parrbm.strategies import PARALLEL_STRATEGIES

LAUNCHER_VARS = ("PMI_", "PMIX_", "OMPI_", "SLURM_", "HYDRA_", "MPIR_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(n: int, args: list[str], cwd, *, extra: dict | None = None) -> list[subprocess.Popen]:
    """n copies of one command, as a torchrun-style launcher starts them."""
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    return [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={
                **base,
                "RANK": str(r),
                "WORLD_SIZE": str(n),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                **(extra or {}),
            },
        )
        for r in range(n)
    ]


def finish(procs, timeout: float = 300) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, so, se))
    return out


RUN = """
name: rendezvous
model: {visible: 24, hidden: 16}
data: {kind: random-binary, cases: 64}
training: {batch_size: 8, steps: 3, warmup: 1, timeout: 30}
grid:
  strategy: [serial, unit-partitioned, per-update-sync, purple-only, green-only, parameter-averaging]
  workers: [2, 3]
  transport: [threads, tcp]
"""


def test_a_comparison_started_without_mpi_runs_once_across_its_ranks(tmp_path):
    (tmp_path / "c.yaml").write_text(RUN)
    done = finish(start(3, ["-m", "parrbm.cli", "run", "c.yaml", "--out", "out", "--no-calibrate"], tmp_path))
    for r, (code, so, se) in enumerate(done):
        assert code == 0, (r, se[-3000:])
    assert sum(so.count("results: ") for _, so, _ in done) == 1  # rank 0 reports; the others served
    records = [json.loads(x) for x in (tmp_path / "out" / "rendezvous.jsonl").read_text().splitlines()]
    threads = {(r["strategy"], r["workers"]): r["metrics"] for r in records if r["transport"] == "threads"}
    tcp = [r for r in records if r["transport"] == "tcp"]
    assert len(tcp) == 10
    for r in tcp:
        assert r["status"] == "ok", r.get("error")
        assert r["metrics"]["model_sha256"] == threads[(r["strategy"], r["workers"])]["model_sha256"], r["run_id"]
        assert r["metrics"]["bytes_per_step"] == r["metrics"]["bytes_per_step_formula"], r["run_id"]
        assert len(r["hosts"]) == r["workers"], r["run_id"]  # on the job's ranks, not workers of rank 0
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == [".rendezvous.jsonl.lock", "rendezvous.jsonl"]


def test_mpi_points_are_refused_before_anything_runs_when_the_ranks_have_no_mpi(tmp_path):
    (tmp_path / "c.yaml").write_text(RUN.replace("[threads, tcp]", "[threads, mpi]").replace("[2, 3]", "[2]"))
    done = finish(
        start(2, ["-m", "parrbm.cli", "run", "c.yaml", "--out", "out", "--no-calibrate"], tmp_path), timeout=120
    )
    assert done[0][0] == 2, done[0][2][-2000:]
    assert "grid.transport: 'mpi', but this job's ranks were started without MPI" in done[0][2]
    assert "RANK/WORLD_SIZE" in done[0][2]
    assert done[1][0] == 0  # the serving rank was released
    assert not (tmp_path / "out").exists()


FIT = """
import sys
import numpy as np
from parrbm import RBM
from parrbm.strategies import PARALLEL_STRATEGIES

rank = int(__import__("os").environ["RANK"])
X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
held = {}
for strategy in PARALLEL_STRATEGIES:
    rbm = RBM(n_hidden=12, batch_size=10, n_iter=2, learning_rate=0.05, dtype="float64", random_state=1,
              strategy=strategy, workers=2, transport="tcp", progress=False).fit(X)
    held[strategy] = rbm.components_
    held[strategy + "/bytes"] = np.array([rbm.comm_stats_["bytes_total"], rbm.comm_stats_["bytes_per_step"]])
np.savez(f"held-{rank}.npz", **held)
try:
    RBM(n_hidden=4, batch_size=10, n_iter=1, strategy="green-only", workers=2, transport="mpi",
        progress=False).fit(X)
except ValueError as exc:
    open(f"said-{rank}.txt", "w").write(str(exc))
"""


def test_a_fit_on_ranks_started_without_mpi_is_the_fit_on_threads_on_every_rank(tmp_path):
    (tmp_path / "fit.py").write_text(textwrap.dedent(FIT))
    for r, (code, _, se) in enumerate(finish(start(3, ["fit.py"], tmp_path))):
        assert code == 0, (r, se[-3000:])
    X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
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
        for r in range(3):  # the idle third rank holds the model too
            held = np.load(tmp_path / f"held-{r}.npz")
            np.testing.assert_array_equal(held[strategy], rbm.components_, err_msg=f"{strategy} rank {r}")
            assert list(held[f"{strategy}/bytes"]) == [
                rbm.comm_stats_["bytes_total"],
                rbm.comm_stats_["bytes_per_step"],
            ]
    for r in range(3):
        said = (tmp_path / f"said-{r}.txt").read_text()
        assert "transport 'mpi': this job's ranks were started without MPI" in said, said


KILLED = """
import os, signal, time
import numpy as np
from parrbm import RBM

X = (np.random.default_rng(3).random((4000, 64)) < 0.4).astype(np.float32)
open(f"pid-{os.environ['RANK']}.txt", "w").write(str(os.getpid()))
RBM(n_hidden=64, batch_size=10, n_iter=50, strategy="green-only", workers=3, transport="tcp",
    progress=False).fit(X)
"""


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_ends_the_job_naming_it_and_leaves_nothing(tmp_path, victim):
    (tmp_path / "k.py").write_text(textwrap.dedent(KILLED))
    procs = start(3, ["k.py"], tmp_path)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"pid-{r}.txt").exists() for r in range(3)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.communicate()[1][-1500:] for p in procs if p.poll() is not None
        ]
        time.sleep(0.05)
    time.sleep(3.0)  # inside the fit
    killed_at = time.monotonic()
    os.kill(procs[victim].pid, signal.SIGKILL)
    done = finish(procs, timeout=60)
    took = time.monotonic() - killed_at
    assert took < 30, took  # the collectives' timeout (the estimator's default) bounds it
    others = [r for r in range(3) if r != victim]
    assert all(done[r][0] != 0 for r in others), done
    said = "".join(done[r][2] for r in others)
    assert f"rank {victim} of the job is gone" in said or f"worker {victim}" in said, said[-2000:]
    for p in procs:
        assert p.poll() is not None


def test_a_stranger_at_the_rendezvous_is_refused_and_cannot_run_code(tmp_path):
    """Rank 0 listens; a stranger that does not know the job's secret connects first, then
    the real rank 1: the world forms, and the stranger is dropped."""
    import threading

    port = _free_port()
    secret = os.urandom(32)
    worlds = {}

    def rank(r):
        worlds[r] = TCPWorld(r, 2, "127.0.0.1", port, secret, "test")

    t0 = threading.Thread(target=rank, args=(0,))
    t0.start()
    time.sleep(0.3)
    stranger = socket.create_connection(("127.0.0.1", port))
    stranger.recv(16)
    marker = tmp_path / "ran"
    stranger.sendall((1).to_bytes(4, "little") + b"x" * 32)  # a wrong proof
    t1 = threading.Thread(target=rank, args=(1,))
    t1.start()
    t0.join(30)
    t1.join(30)
    assert set(worlds) == {0, 1}
    assert stranger.recv(2) == b""  # dropped
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(1, worlds[1].allgather(("one", np.arange(3)))))
    t.start()
    got[0] = worlds[0].allgather(("zero", np.arange(2)))
    t.join(10)
    assert got[0][1][0] == "one" and list(got[1][0][1]) == [0, 1]
    assert not marker.exists()
    stranger.close()
    for w in worlds.values():
        w._leaving = True
        for sock in w._socks.values():
            sock.close()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch ran",))


def test_a_message_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="posix.system, which is not data|os.system, which is not data"):
        _loads(pickle.dumps(_Evil()))
    assert not (tmp_path / "ran").exists()
    from parrbm.harness.comm import PhaseStats

    data = {"a": np.ones((2, 3), np.float32)[:, :2], "s": PhaseStats(bytes_sent=3), "t": (1, np.int64(2))}
    back = _loads(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["s"] == data["s"] and back["t"] == data["t"]


@pytest.mark.parametrize(
    "env,needle",
    [
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "http"},
            "MASTER_PORT='http': a whole number",
        ),
        (
            {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
            "RANK=2 with WORLD_SIZE=2",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "70000"},
            "MASTER_PORT=70000: a TCP port",
        ),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "PARRBM_NO_MPI4PY": "1"}, "set MASTER_ADDR"),
    ],
)
def test_a_launchers_environment_that_cannot_form_a_world_is_named(tmp_path, env, needle):
    code = (
        "import sys\n"
        "if __import__('os').environ.get('PARRBM_NO_MPI4PY'): sys.modules['mpi4py'] = None\n"
        "from parrbm.harness.world import spmd_world\n"
        "try:\n    spmd_world()\nexcept ValueError as e:\n    print(e); sys.exit(3)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    p = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert p.returncode == 3, p.stdout + p.stderr
    assert needle in p.stdout, p.stdout
