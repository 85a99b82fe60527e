"""``srun -n N parrbm run CONFIG`` under a real Slurm (Debian's slurm-wlm and munge): a
controller and one slurmd on this machine, started by the test in a folder of its own and
stopped after it. Each rank finds its place through PMI-2 as under mpiexec; rank 0 writes;
the mpi and tcp points train the threads points' models, bit for bit."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import has_mpi

DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "sinfo")
WHY = None
if not has_mpi():
    WHY = "pip install '.[mpi]'"
elif os.geteuid() != 0:
    WHY = "a test Slurm runs its daemons as root"
elif any(shutil.which(d) is None and not os.access(f"/usr/sbin/{d}", os.X_OK) for d in DAEMONS):
    WHY = "apt-get install slurm-wlm munge"
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a one-node Slurm on this machine, for the module's tests."""
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    (d / "munge.key").write_bytes(os.urandom(1024))
    (d / "munge.key").chmod(0o400)
    sock = d / "munge" / "socket"
    host = socket.gethostname()
    conf = d / "slurm.conf"
    conf.write_text(f"""
ClusterName=parrbmtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "slurmctld.pid"}
SlurmdPidFile={d / "slurmd.pid"}
SlurmctldLogFile={d / "slurmctld.log"}
SlurmdLogFile={d / "slurmd.log"}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen(
            [
                _which("munged"),
                "-F",
                f"--key-file={d / 'munge.key'}",
                f"--socket={sock}",
                f"--pid-file={d / 'munge' / 'pid'}",
                f"--log-file={d / 'munge' / 'log'}",
                f"--seed-file={d / 'munge' / 'seed'}",
                "-f",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert time.monotonic() < deadline, "munged did not start"
            time.sleep(0.05)
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(
                subprocess.Popen([_which(daemon), "-D"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        while True:
            p = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if p.stdout.strip() == "idle":
                break
            assert time.monotonic() < deadline + 20, f"Slurm's node is not idle: {p.stdout} {p.stderr}"
            time.sleep(0.2)
        yield env
    finally:
        for p in reversed(daemons):
            p.terminate()
        for p in reversed(daemons):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


RUN = """
name: slurm
model: {visible: 24, hidden: 16}
data: {kind: random-binary, cases: 64}
training: {batch_size: 8, steps: 3, warmup: 1, timeout: 30}
grid:
  strategy: [serial, unit-partitioned, per-update-sync, purple-only, green-only, parameter-averaging]
  workers: [2]
  transport: [threads, tcp, mpi]
"""


def test_srun_runs_one_comparison_on_its_tasks(slurm, tmp_path):
    (tmp_path / "c.yaml").write_text(RUN)
    p = subprocess.run(
        ["srun", "-n", "2", str(BIN / "parrbm"), "run", "c.yaml", "--out", "out", "--no-calibrate"],
        env=slurm,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("results: ") == 1  # rank 0 reports; the other task served
    records = [json.loads(x) for x in (tmp_path / "out" / "slurm.jsonl").read_text().splitlines()]
    threads = {r["strategy"]: r["metrics"] for r in records if r["transport"] == "threads"}
    mpi = [r for r in records if r["transport"] in ("tcp", "mpi")]
    assert len(mpi) == 10
    for r in mpi:
        assert r["status"] == "ok", r.get("error")
        assert r["metrics"]["model_sha256"] == threads[r["strategy"]]["model_sha256"], r["run_id"]
        assert r["metrics"]["bytes_per_step"] == r["metrics"]["bytes_per_step_formula"], r["run_id"]
        assert r["hosts"] == [socket.gethostname()] * 2
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == [".slurm.jsonl.lock", "slurm.jsonl"]


def test_an_srun_fit_is_the_fit_on_threads_on_every_task(slurm, tmp_path):
    import numpy as np

    from parrbm import RBM

    (tmp_path / "fit.py").write_text(
        "import numpy as np\n"
        "from mpi4py import MPI\n"
        "from parrbm import RBM\n"
        "X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)\n"
        "rbm = RBM(n_hidden=12, batch_size=10, n_iter=2, learning_rate=0.05, dtype='float64', random_state=1,\n"
        "          strategy='unit-partitioned', workers=2, transport='mpi', progress=False).fit(X)\n"
        "np.save(f'held-{MPI.COMM_WORLD.Get_rank()}.npy', rbm.components_)\n"
    )
    p = subprocess.run(
        ["srun", "-n", "2", sys.executable, "fit.py"],
        env=slurm,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
    ref = (
        RBM(
            n_hidden=12,
            batch_size=10,
            n_iter=2,
            learning_rate=0.05,
            dtype="float64",
            random_state=1,
            strategy="unit-partitioned",
            workers=2,
            progress=False,
        )
        .fit(X)
        .components_
    )
    for r in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"held-{r}.npy"), ref, err_msg=f"task {r}")


def test_srun_without_an_mpi_plugin_runs_one_comparison_over_tcp(slurm, tmp_path):
    """Plain ``srun`` (no PMI): the tasks find their place in SLURM_PROCID and
    SLURM_STEP_NUM_TASKS and meet at the step's first host, as torchrun's ranks do."""
    (tmp_path / "c.yaml").write_text(RUN.replace("[threads, tcp, mpi]", "[threads, tcp]"))
    p = subprocess.run(
        ["srun", "--mpi=none", "-n", "2", str(BIN / "parrbm"), "run", "c.yaml", "--out", "out", "--no-calibrate"],
        env=slurm,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("results: ") == 1
    records = [json.loads(x) for x in (tmp_path / "out" / "slurm.jsonl").read_text().splitlines()]
    threads = {r["strategy"]: r["metrics"] for r in records if r["transport"] == "threads"}
    tcp = [r for r in records if r["transport"] == "tcp"]
    assert len(tcp) == 5
    for r in tcp:
        assert r["status"] == "ok", r.get("error")
        assert r["metrics"]["model_sha256"] == threads[r["strategy"]]["model_sha256"], r["run_id"]
        assert r["metrics"]["bytes_per_step"] == r["metrics"]["bytes_per_step_formula"], r["run_id"]
        assert r["hosts"] == [socket.gethostname()] * 2


def test_a_batch_script_is_one_process_not_a_job_of_its_tasks(slurm, tmp_path):
    """sbatch -n 2 runs its script once, with SLURM_NTASKS=2: that process is not one of
    two ranks (only srun's tasks are)."""
    probe = f"{sys.executable} -c 'from parrbm.harness.world import spmd_world; print(\"world\", spmd_world())'"
    p = subprocess.run(
        ["sbatch", "-n", "2", "-o", str(tmp_path / "out.txt"), "--wait", "--wrap", probe],
        env=slurm,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.txt").read_text().strip().splitlines()[-1] == "world None"
