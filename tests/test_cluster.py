"""Comparisons and fits across hosts, on an emulated cluster (harness.cluster): a login node
and compute nodes, each with its own sshd, host name, /tmp and /dev/shm. The user's own
``mpiexec -hosts`` starts the job from the login node, as on a cluster; nothing of the job
passes through a shared temporary folder (the config and the results live in node0's /tmp
alone), and nothing of it is left on any host, however it ends."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import has_mpi

WHY = None
if not has_mpi():
    WHY = "pip install '.[mpi]'"
else:
    from parrbm.harness.cluster import missing

    WHY = missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
PARRBM = str(BIN / "parrbm")

ACROSS = """
name: across
model: {visible: 48, hidden: 40}
data: {kind: random-binary, cases: 240}
training: {batch_size: 20, steps: 6, warmup: 1, repeats: 1, timeout: 30, sync_every: 3}
grid:
  strategy: [serial, unit-partitioned, per-update-sync, purple-only, green-only, parameter-averaging]
  workers: [2, 3]
  transport: [threads, mpi]
"""

LONG = """
name: long
model: {visible: 256, hidden: 512}
data: {kind: random-binary, cases: 2000}
training: {batch_size: 100, steps: 300, warmup: 1, repeats: 1, timeout: 20}
grid:
  strategy: [green-only, unit-partitioned, purple-only]
  workers: [3]
  transport: [mpi]
"""


@pytest.fixture
def cluster():
    from parrbm.harness.cluster import EmulatedCluster
    from parrbm.harness.network import LinkSpec

    with EmulatedCluster(3, LinkSpec(50e6)) as c:
        yield c


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _held_to_threads(records: list[dict], transports: tuple[str, ...]) -> list[dict]:
    """The runs on ``transports``, each held to its threads point: ok, the same model bit
    for bit, the closed form's bytes, its workers on node0, node1, ... in rank order."""
    threads = {(r["strategy"], r["workers"]): r for r in records if r["transport"] == "threads"}
    runs = [r for r in records if r["transport"] in transports]
    for r in runs:
        m, ref = r["metrics"], threads[(r["strategy"], r["workers"])]["metrics"]
        assert r["status"] == "ok", r.get("error")
        assert m["model_sha256"] == ref["model_sha256"], r["run_id"]
        assert m["bytes_per_step"] == m["bytes_per_step_formula"] == ref["bytes_per_step"], r["run_id"]
        assert r["hosts"] == ["node0", "node1", "node2"][: r["workers"]], r["hosts"]
    return runs


def _settled(cluster, seconds: float = 15.0) -> dict:
    """What is left on each host once the job's processes had ``seconds`` to end."""
    deadline = time.monotonic() + seconds
    while True:
        left = {h: cluster.leftovers(h) for h in cluster.hosts}
        if not any(p.startswith("process") for v in left.values() for p in v) or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_hosts_reach_each_other_by_ssh_and_share_no_tmp(cluster):
    p = cluster.run(
        "login",
        ["sh", "-c", "hostname; ssh node1 'hostname; echo here > /tmp/mark'; ls /tmp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["login", "node1"]  # login's /tmp is empty: the file went to node1's
    assert (cluster.tmp("node1") / "mark").read_text() == "here\n"
    assert [cluster.leftovers(h) for h in ("node0", "node2", "login")] == [[], [], []]


def test_a_comparison_started_by_mpiexec_across_hosts_is_the_threads_comparison(cluster):
    """The config and the results exist on node0 alone (rank 0 reads and writes; the other
    ranks get the config and the data over MPI): every mpi and tcp point (tcp: connections
    between the ranks) trains the model its threads point trains, bit for bit, moving the
    closed form's bytes over the links."""
    (cluster.tmp("node0") / "c.yaml").write_text(
        ACROSS.replace("transport: [threads, mpi]", "transport: [threads, tcp, mpi]")
    )
    before = {h: cluster.network.counters(cluster.hosts.index(h))["tx_bytes"] for h in cluster.node_names}
    p = cluster.run(
        "login",
        [
            MPIEXEC,
            "-hosts",
            "node0,node1,node2",
            "-n",
            "3",
            PARRBM,
            "run",
            "/tmp/c.yaml",
            "--out",
            "/tmp/out",
            "--no-calibrate",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    records = _records(cluster.tmp("node0") / "out" / "across.jsonl")
    mpi = _held_to_threads(records, ("tcp", "mpi"))
    assert len(mpi) == 20 and sum(r["transport"] == "threads" for r in records) == 10
    sent = sum(
        r["metrics"]["bytes_per_step"] * (r["training"]["steps"] + r["training"]["warmup"])
        for r in mpi
        if r["workers"] == 3
    )
    # the ranks' traffic crossed node2's link (at least a third of the K = 3 points' bytes
    # left it: no strategy sends less than that from one worker of three)
    after = cluster.network.counters(cluster.hosts.index("node2"))["tx_bytes"]
    assert after - before["node2"] >= sent / 3 > 0
    left = _settled(cluster)
    assert left == {"node0": ["/tmp/c.yaml", "/tmp/out"], "node1": [], "node2": [], "login": []}


def test_a_comparison_started_over_ssh_without_mpi_is_the_threads_comparison(cluster):
    """A launcher without MPI (one ssh a rank, torchrun's variables): the ranks meet at
    node0's rendezvous; the config and the results stay on node0; every tcp point is its
    threads point, bit for bit, and nothing is left on any host."""
    (cluster.tmp("node0") / "c.yaml").write_text(
        ACROSS.replace("transport: [threads, mpi]", "transport: [threads, tcp]")
    )
    start = (
        "pids=''; for r in 0 1 2; do "
        f'ssh node$r "cd /tmp && RANK=$r WORLD_SIZE=3 MASTER_ADDR=node0 MASTER_PORT=29511 {PARRBM} run '
        '/tmp/c.yaml --out /tmp/out --no-calibrate" & pids="$pids $!"; done; '
        "rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc"
    )
    p = cluster.run("login", ["sh", "-c", start], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("results: ") == 1
    records = _records(cluster.tmp("node0") / "out" / "across.jsonl")
    assert len(_held_to_threads(records, ("tcp",))) == 10
    left = _settled(cluster)
    assert left == {"node0": ["/tmp/c.yaml", "/tmp/out"], "node1": [], "node2": [], "login": []}


def _own(transport: str, config: str = ACROSS) -> str:
    """A config whose ``transport`` workers parrbm starts on node0 .. node2."""
    return (
        config.replace("grid:", f"{transport}: {{hosts: [node0, node1, node2]}}\ngrid:")
        .replace("transport: [threads, mpi]", f"transport: [threads, {transport}]")
        .replace("transport: [mpi]", f"transport: [{transport}]")
    )


@pytest.mark.parametrize("transport", ["mpi", "tcp"])
def test_a_comparison_parrbm_starts_on_the_hosts_is_the_threads_comparison(cluster, transport):
    """``parrbm run`` on the login node with an ``mpi`` or ``tcp`` section naming the
    nodes: parrbm starts the workers there (mpiexec over ssh, or ssh itself) and sends them
    the job, the data and each command over one connection (rank 0's, or each worker's
    ssh session); the config and the results exist on login alone."""
    # started in a folder the nodes do not have (login's own /tmp/work)
    (cluster.tmp("login") / "work").mkdir()
    (cluster.tmp("login") / "work" / "c.yaml").write_text(_own(transport))
    p = cluster.run(
        "login",
        [PARRBM, "run", "c.yaml", "--out", "out", "--no-calibrate"],
        cwd="/tmp/work",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    records = _records(cluster.tmp("login") / "work" / "out" / "across.jsonl")
    assert len(_held_to_threads(records, (transport,))) == 10
    left = _settled(cluster)
    assert left == {"login": ["/tmp/work"], "node0": [], "node1": [], "node2": []}


CALIBRATE = """
from parrbm.analysis.calibrate import mpi_links
from parrbm.harness.remote import MPIHosts

import sys

from parrbm.analysis.calibrate import host_speeds, tcp_host_links, tcp_host_speeds
from parrbm.harness.grid import tcp_hosts

if sys.argv[1] == "mpi":
    links = mpi_links(quick=True, where=MPIHosts(hosts=["node0", "node1"]))
    speeds = host_speeds(MPIHosts(hosts=["node0", "node1"]))
else:
    links = tcp_host_links(tcp_hosts({"hosts": ["node0", "node1"]}), quick=True)
    speeds = tcp_host_speeds(tcp_hosts({"hosts": ["node0", "node1"]}))
print(sorted(speeds), min(speeds.values()) > 0)
print(sorted(links), links["alltoall"].bandwidth)
"""


@pytest.mark.parametrize("transport", ["mpi", "tcp"])
def test_the_collectives_between_the_hosts_are_calibrated_over_their_link(cluster, transport):
    """mpi@hosts and tcp@hosts: two ranks on node0 and node1 (started by mpiexec, or by
    ssh), their figures back through the launcher's output: the rate of the 50 MB/s
    links between them; and each host's kernels timed there."""
    (cluster.tmp("login") / "work").mkdir()
    (cluster.tmp("login") / "work" / "cal.py").write_text(textwrap.dedent(CALIBRATE))
    p = cluster.run(
        "login", [sys.executable, "cal.py", transport], cwd="/tmp/work", capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-2000:]
    first, second = p.stdout.strip().splitlines()
    assert first == "['node0', 'node1'] True"  # each host's kernels timed there
    kinds, rate = second.rsplit("]", 1)
    assert kinds + "]" == "['allgather', 'allgather_bits', 'allreduce', 'alltoall', 'reduce_scatter']"
    # the hosts' link, not shared memory nor an unshaped veth (GB/s): of the order of its
    # 50 MB/s (a fit over message sizes that the token bucket's burst flatters for the small ones)
    assert 20e6 < float(rate) < 100e6, rate
    assert _settled(cluster)["node0"] == []


FIT = """
import sys
import numpy as np
from mpi4py import MPI
from parrbm import RBM

X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
rbm = RBM(n_hidden=12, batch_size=10, n_iter=2, learning_rate=0.05, dtype="float64", random_state=1,
          strategy=sys.argv[1], workers=2, transport="mpi", progress=False).fit(X)
np.save("/tmp/held.npy", rbm.components_)
"""


@pytest.mark.parametrize("strategy", ["unit-partitioned", "green-only"])
def test_an_estimator_fit_across_hosts_is_the_fit_on_threads(cluster, strategy):
    from parrbm import RBM

    for host in cluster.node_names[:2]:  # the script copied to each node, as with scp
        (cluster.tmp(host) / "fit.py").write_text(textwrap.dedent(FIT))
    p = cluster.run(
        "login",
        [MPIEXEC, "-hosts", "node0,node1", "-n", "2", sys.executable, "/tmp/fit.py", strategy],
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
            strategy=strategy,
            workers=2,
            progress=False,
        )
        .fit(X)
        .components_
    )
    for host in ("node0", "node1"):  # every rank holds the model
        np.testing.assert_array_equal(np.load(cluster.tmp(host) / "held.npy"), ref, err_msg=host)
    left = _settled(cluster)
    assert left == {
        "node0": ["/tmp/fit.py", "/tmp/held.npy"],
        "node1": ["/tmp/fit.py", "/tmp/held.npy"],
        "node2": [],
        "login": [],
    }


OWN_FIT = """
import sys
import numpy as np
from parrbm import RBM

X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
rbm = RBM(n_hidden=12, batch_size=10, n_iter=2, learning_rate=0.05, dtype="float64", random_state=1,
          strategy=sys.argv[1], workers=2, transport="mpi", strategy_options={"hosts": ["node0", "node1"]},
          progress=False).fit(X)
np.save("/tmp/held.npy", rbm.components_)
print(rbm.comm_stats_["hosts"])
"""


def test_an_estimator_and_parrbm_train_fit_on_the_hosts_they_name(cluster):
    """A script on login fits with strategy_options={"hosts": [...]}: the workers run on
    the nodes and the model is the threads fit's; ``parrbm train --hosts`` the same."""
    from parrbm import RBM

    (cluster.tmp("login") / "fit.py").write_text(textwrap.dedent(OWN_FIT))
    p = cluster.run(
        "login", [sys.executable, "/tmp/fit.py", "unit-partitioned"], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "['node0', 'node1']"
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
    np.testing.assert_array_equal(np.load(cluster.tmp("login") / "held.npy"), ref)
    p = cluster.run(
        "login",
        [
            PARRBM,
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
            "--hosts",
            "node0,node1",
            "--out",
            "/tmp/m",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (cluster.tmp("login") / "m" / "model.npz").exists()
    left = _settled(cluster)
    assert left["node0"] == left["node1"] == left["node2"] == [], left


UNREACHABLE = """
import sys, time
import numpy as np
from parrbm import RBM

X = (np.random.default_rng(3).random((60, 12)) < 0.4).astype(np.float64)
t0 = time.monotonic()
try:
    RBM(n_hidden=8, batch_size=10, n_iter=1, strategy="green-only", workers=2, transport=sys.argv[1],
        strategy_options={"hosts": ["node0", "nosuch"]}, progress=False).fit(X)
except Exception as exc:
    print(f"{time.monotonic() - t0:.1f} {type(exc).__name__}: {exc}")
"""


@pytest.mark.parametrize("transport", ["mpi", "tcp"])
def test_a_host_that_cannot_be_reached_is_named_at_once(cluster, transport):
    (cluster.tmp("login") / "u.py").write_text(textwrap.dedent(UNREACHABLE))
    p = cluster.run("login", [sys.executable, "/tmp/u.py", transport], capture_output=True, text=True, timeout=120)
    seconds, said = p.stdout.split(" ", 1)
    assert float(seconds) < 10 and said.startswith("CommError"), p.stdout + p.stderr
    assert "Could not resolve hostname nosuch" in said
    if transport == "tcp":
        assert "worker 1 (on nosuch) exited with code 255" in said
    assert _settled(cluster)["node0"] == []


def _start_long(cluster) -> subprocess.Popen:
    (cluster.tmp("node0") / "c.yaml").write_text(LONG)
    p = cluster.popen(
        "login",
        [
            MPIEXEC,
            "-hosts",
            "node0,node1,node2",
            "-n",
            "3",
            PARRBM,
            "run",
            "/tmp/c.yaml",
            "--out",
            "/tmp/out",
            "--no-calibrate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = cluster.tmp("node0") / "out" / "long.jsonl"
    deadline = time.monotonic() + 120
    # under way: its first mpi point recorded, the next one training
    while not (results.exists() and any(json.loads(x)["transport"] == "mpi" for x in results.read_text().splitlines())):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the job recorded no mpi point in 120 s"
        time.sleep(0.1)
    return p


def _start_own(cluster, transport: str) -> subprocess.Popen:
    (cluster.tmp("login") / "c.yaml").write_text(_own(transport, LONG))
    p = cluster.popen(
        "login",
        [PARRBM, "run", "/tmp/c.yaml", "--out", "/tmp/out", "--no-calibrate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = cluster.tmp("login") / "out" / "long.jsonl"
    deadline = time.monotonic() + 120
    while not (
        results.exists() and any(json.loads(x)["transport"] == transport for x in results.read_text().splitlines())
    ):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, f"the run recorded no {transport} point in 120 s"
        time.sleep(0.1)
    # the next point's workers have started: its steps are under way
    deadline = time.monotonic() + 60
    while not [pid for pid, cmd in cluster.processes("node2") if "parrbm.harness.remote" in cmd]:
        assert time.monotonic() < deadline, "the next point's ranks did not start"
        time.sleep(0.05)
    time.sleep(2.0)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["mpi", "tcp"])
@pytest.mark.parametrize("victim", ["remote rank", "driver"])
def test_a_run_parrbm_started_on_the_hosts_survives_a_kill_cleanly(cluster, victim, transport):
    """A worker killed on node2: the point is recorded failed, naming the worker and its
    host, and the comparison goes on; the driver killed on login: rank 0 (mpi) or each
    worker (tcp) sees its connection close and ends. Either way nothing of the run is
    left on any host."""
    p = _start_own(cluster, transport)
    host, needle = ("node2", "parrbm.harness.remote") if victim == "remote rank" else ("login", "parrbm run")
    target = [pid for pid, cmd in cluster.processes(host) if needle in cmd and "nsenter" not in cmd]
    assert target, cluster.processes(host)
    os.kill(target[0], signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"the run went on for 120 s after the {victim} was killed")
    records = _records(cluster.tmp("login") / "out" / "long.jsonl")
    if victim == "remote rank":
        assert p.returncode == 0, err[-2000:]
        failed = [r for r in records if r["status"] != "ok"]
        assert len(failed) == 1 and len(records) == 5, [(r["strategy"], r["status"]) for r in records]
        said = "worker 2 (on node2, PID" if transport == "mpi" else "worker 2 (on node2)"
        assert said in failed[0]["error"], failed[0]
        assert "SIGKILL" in failed[0]["error"] or transport == "tcp", failed[0]
    left = _settled(cluster)
    assert left == {"login": ["/tmp/c.yaml", "/tmp/out"], "node0": [], "node1": [], "node2": []}, left


@pytest.mark.slow
@pytest.mark.parametrize("how", ["parrbm's start", "user's mpiexec"])
def test_a_stopped_remote_rank_is_named_within_the_timeout(cluster, how):
    """SIGSTOP of the rank on node2: the job's watch names worker 2 within the timeout and
    ends the job; nothing is left on any host."""
    config = LONG.replace("timeout: 20", "timeout: 5")
    if how == "parrbm's start":
        where, needle = "login", "parrbm.harness.remote"
        (cluster.tmp(where) / "c.yaml").write_text(
            config.replace("grid:", "mpi: {hosts: [node0, node1, node2]}\ngrid:")
        )
        cmd = [PARRBM, "run", "/tmp/c.yaml", "--out", "/tmp/out", "--no-calibrate"]
    else:
        where, needle = "node0", "parrbm run"
        (cluster.tmp(where) / "c.yaml").write_text(config)
        cmd = [
            MPIEXEC,
            "-hosts",
            "node0,node1,node2",
            "-n",
            "3",
            PARRBM,
            "run",
            "/tmp/c.yaml",
            "--out",
            "/tmp/out",
            "--no-calibrate",
        ]
    p = cluster.popen("login", cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = cluster.tmp(where) / "out" / "long.jsonl"
    deadline = time.monotonic() + 120
    while not (results.exists() and any(json.loads(x)["transport"] == "mpi" for x in results.read_text().splitlines())):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate() if p.poll() is not None else "slow"
        time.sleep(0.1)
    while not [pid for pid, c in cluster.processes("node2") if needle in c]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.0)
    target = [pid for pid, c in cluster.processes("node2") if needle in c]
    os.kill(target[0], signal.SIGSTOP)
    try:
        out, err = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.kill(target[0], signal.SIGCONT)
        p.kill()
        pytest.fail("the job went on for 90 s after a rank was stopped")
    said = "worker 2 did not respond within 5 s (stopped or hung)"
    if how == "parrbm's start":
        records = _records(results)
        assert [r["status"] for r in records].count("error") == 1 and said in next(
            r["error"] for r in records if r["status"] == "error"
        ), records
    else:
        assert said in err, err[-2000:]
    left = _settled(cluster)
    assert left == {h: (["/tmp/c.yaml", "/tmp/out"] if h == where else []) for h in cluster.hosts}, left


@pytest.mark.parametrize("victim", ["remote rank", "mpiexec"])
def test_a_job_killed_outright_leaves_nothing_on_any_host(cluster, victim):
    """SIGKILL of a rank on another host, or of the user's mpiexec on the login node: the
    job ends within the timeout (a rank's death named by the launcher), what was recorded
    stays, and no process and no file of the job is left on any host."""
    from parrbm.harness.experiment import read_results

    p = _start_long(cluster)
    host, needle = ("node2", "parrbm run") if victim == "remote rank" else ("login", "mpiexec")
    target = [pid for pid, cmd in cluster.processes(host) if needle in cmd and "nsenter" not in cmd]
    assert target, cluster.processes(host)
    os.kill(target[0], signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"the job went on for 60 s after the {victim} was killed")
    assert p.returncode != 0
    if victim == "remote rank":  # hydra names the rank that ended badly, with its host
        assert "BAD TERMINATION" in out + err and "RUNNING AT node" in out + err, (out + err)[-2000:]
    left = _settled(cluster)
    assert left == {"node0": ["/tmp/c.yaml", "/tmp/out"], "node1": [], "node2": [], "login": []}, left
    recorded, notes = read_results(cluster.tmp("node0") / "out" / "long.jsonl")
    assert recorded and all(r["status"] == "ok" for r in recorded) and not notes, notes
    assert sorted(x.name for x in (cluster.tmp("node0") / "out").iterdir()) == [".long.jsonl.lock", "long.jsonl"]


def test_parrbm_network_cluster_runs_a_command_on_login_and_removes_the_cluster():
    import tempfile

    from parrbm.harness.network import FOLDER_PREFIX, PREFIX, namespaces

    p = subprocess.Popen(
        [PARRBM, "network", "cluster", "--nodes", "2", "--", "sh", "-c", "hostname; ssh node1 hostname; exit 7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = p.communicate(timeout=120)
    assert p.returncode == 7, err
    assert out.split() == ["login", "node1"]
    assert "node0, node1 and login" in err
    assert not [n for n in namespaces() if n.startswith(f"{PREFIX}{p.pid}-")]
    assert not list(Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}{p.pid}-*"))
