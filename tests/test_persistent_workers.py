"""tcp and mpi workers live for the whole fit: every worker-local state (replicas, step
counters behind sync_every and average_every, drift, chains, increments) carries over
from epoch to epoch exactly as in the threads of the threads transport."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import mpi_param

from parrbm import RBM
from parrbm.config import CDSpec, ModelState
from parrbm.harness.runner import ParallelRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


TRANSPORTS = ["tcp", mpi_param()]

CASES = [
    ("unit-partitioned", {"sync_every": 4}),
    ("per-update-sync", {}),
    ("purple-only", {"partition": "random"}),
    ("green-only", {}),
    ("parameter-averaging", {"average": "weights", "average_every": 4}),
    ("parameter-averaging", {"average": "gradients", "reduce": "master"}),
    ("skip_visible_exchange:SkipVisibleExchange", {}),
]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("setting", [("gaussian", "float32"), ("binary", "float64")])
@pytest.mark.parametrize("strategy,options", CASES)
def test_a_three_epoch_fit_is_the_same_on_every_transport(strategy, options, setting, transport):
    visible, dtype = setting
    rng = np.random.default_rng(7)
    X = rng.standard_normal((150, 18)) if visible == "gaussian" else (rng.random((150, 18)) < 0.4).astype(float)
    # 15 steps an epoch: sync_every and average_every (4) do not divide it
    kw = dict(
        n_hidden=12,
        visible=visible,
        batch_size=10,
        n_iter=3,
        learning_rate=0.01,
        random_state=3,
        dtype=dtype,
        momentum=0.5,
        strategy=strategy,
        workers=3,
    )
    ref = RBM(**kw, strategy_options=dict(options)).fit(X)
    got = RBM(**kw, transport=transport, strategy_options=dict(options)).fit(X)
    np.testing.assert_array_equal(got.components_, ref.components_)
    np.testing.assert_array_equal(got.intercept_visible_, ref.intercept_visible_)
    np.testing.assert_array_equal(got.intercept_hidden_, ref.intercept_hidden_)
    a, b = ref.comm_stats_, got.comm_stats_
    for key in ("bytes_per_step", "bytes_per_sync", "syncs", "steps", "replica_divergence"):
        assert a[key] == b[key], key
    assert {p: v["bytes_sent"] for p, v in a["by_phase"].items()} == {
        p: v["bytes_sent"] for p, v in b["by_phase"].items()
    }
    assert np.array_equal(ref.reconstruction_error_, got.reconstruction_error_)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_workers_and_the_data_are_started_once(transport, monkeypatch):
    from parrbm.harness import remote

    shipped = []
    send = remote.send_frame

    def counting(sock, header, arrays=None):
        shipped.extend(k for k in (arrays or {}) if k == "X")
        return send(sock, header, arrays)

    monkeypatch.setattr(remote, "send_frame", counting)
    spec = CDSpec(n_visible=12, n_hidden=9, batch_size=4, seed=1)
    r = ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, transport=transport, timeout=20.0)
    X = (np.random.default_rng(0).random((16, 12)) < 0.5).astype(np.float32)
    try:
        r.run(X, np.arange(16, dtype=np.int64), 0)
        group = r._where.group
        pids = group.worker_pids
        r.run(X, np.arange(16, dtype=np.int64)[::-1].copy(), 4)
        assert r._where.group is group and group.worker_pids == pids and group.alive
        # the data went once: to each tcp worker over its own pipe, to mpi's rank 0
        assert len(shipped) == (2 if transport == "tcp" else 1)
        scratch = getattr(group, "scratch", None)
    finally:
        r.close()
    assert not any(_running(p) for p in pids)
    assert scratch is None or not scratch.exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_workers_stop_when_their_launcher_is_killed(tmp_path, transport):
    script = tmp_path / "launcher.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, numpy as np
        from parrbm.config import CDSpec, ModelState
        from parrbm.harness.runner import ParallelRunner
        spec = CDSpec(n_visible=12, n_hidden=9, batch_size=4, seed=1)
        r = ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, transport="{transport}", timeout=20.0)
        X = (np.random.default_rng(0).random((16, 12)) < 0.5).astype(np.float32)
        r.run(X, np.arange(16, dtype=np.int64), 0)
        pids = r._where.group.worker_pids
        print(" ".join(map(str, pids)), flush=True)
        os.kill(os.getpid(), 9)
        """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr[-500:]
    pids = [int(p) for p in out.stdout.split()]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("transport", ["threads", *TRANSPORTS])
@pytest.mark.parametrize("strategy,options", CASES[:5] + CASES[6:])
def test_a_fit_resumed_from_a_checkpoint_is_the_uninterrupted_fit(tmp_path, strategy, options, transport):
    from parrbm.rbm import latest_checkpoint

    X = np.random.default_rng(7).standard_normal((150, 18))
    kw = dict(
        n_hidden=12,
        visible="gaussian",
        batch_size=10,
        learning_rate=0.01,
        random_state=3,
        momentum=0.5,
        strategy=strategy,
        workers=3,
        transport=transport,
        strategy_options=dict(options),
    )
    whole = RBM(**kw, n_iter=3).fit(X)
    RBM(**kw, n_iter=2, checkpoint_dir=tmp_path).fit(X)  # stopped after epoch 2 (of 15 steps each)
    resumed = RBM.load(latest_checkpoint(tmp_path))
    resumed.set_params(n_iter=3, warm_start=True).fit(X)
    np.testing.assert_array_equal(resumed.components_, whole.components_)
    np.testing.assert_array_equal(resumed.intercept_hidden_, whole.intercept_hidden_)
    assert resumed.reconstruction_error_ == whole.reconstruction_error_


@pytest.mark.parametrize("transport", ["threads", *TRANSPORTS])
def test_replicas_apart_between_syncs_survive_a_checkpoint(transport):
    """unit-partitioned keeps two copies of every weight; between syncs they may differ
    (by rounding; here by a planted amount). A runner rebuilt from the gathered model and
    the workers' local states goes on exactly as the original."""
    spec = CDSpec(n_visible=14, n_hidden=10, batch_size=5, seed=2, visible="gaussian", learning_rate=0.01)
    X = np.random.default_rng(0).standard_normal((40, 14)).astype(np.float32)
    from parrbm.strategies import StrategyOptions

    opts = StrategyOptions(sync_every=3)
    a = ParallelRunner(spec, ModelState.initial(spec), "unit-partitioned", 2, transport, opts, timeout=20.0)
    try:
        a.run(X, np.arange(40, dtype=np.int64), 0)  # 8 steps: 2 syncs, 2 steps since
        states = a.local_states()
        counters, arrays = states[1]
        arrays["green"] = arrays["green"] + np.float32(1e-3)  # replica 1 now apart from its purple twin
        a.restore_local(states)
        b = ParallelRunner(spec, a.state, "unit-partitioned", 2, transport, opts, timeout=20.0)
        b.restore_local(a.local_states())
        assert [c["steps_done"] for c, _ in b.local_states()] == [8, 8]
        for r in (a, b):
            r.run(X, np.arange(40, dtype=np.int64)[::-1].copy(), 8)
        np.testing.assert_array_equal(a.state.W, b.state.W)
        assert a.comm_stats()["replica_divergence"] >= 1e-3 - 1e-6
        assert b.comm_stats()["replica_divergence"] == pytest.approx(a.comm_stats()["replica_divergence"])
    finally:
        a.close()
        if "b" in locals():
            b.close()


def test_a_damaged_worker_state_in_a_model_file_names_the_field(tmp_path):
    import json

    X = np.random.default_rng(0).standard_normal((40, 8))
    RBM(
        n_hidden=6,
        visible="gaussian",
        batch_size=10,
        n_iter=1,
        random_state=0,
        strategy="unit-partitioned",
        workers=2,
        strategy_options={"sync_every": 3},
        learning_rate=0.01,
    ).fit(X).save(tmp_path / "m.npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    meta = json.loads(str(arrays["parrbm_meta"]))
    arrays["state_local1_green"] = arrays["state_local1_green"][:, :1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="field 'worker_local'.*'green'"):
        RBM.load(tmp_path / "bad.npz")
    meta["worker_local"]["counters"][0] = {"steps_done": -1}
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["parrbm_meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(ValueError, match=r"worker_local.counters\[0\]"):
        RBM.load(tmp_path / "bad2.npz")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reused_buffer_is_sent_again_when_its_contents_change(transport):
    """partial_fit on one buffer refilled in place (a streaming loader): the workers train
    on the new contents, as the threads do."""
    rng = np.random.default_rng(5)
    batches = [(rng.random((40, 10)) < 0.5).astype(np.float32) for _ in range(3)]
    fits = {}
    for t in ("threads", transport):
        rbm = RBM(n_hidden=6, batch_size=10, random_state=1, strategy="green-only", workers=2, transport=t)
        buf = np.empty((40, 10), np.float32)
        for b in batches:
            buf[...] = b
            rbm.partial_fit(buf)
        rbm._strategy.close()
        fits[t] = rbm.components_
    np.testing.assert_array_equal(fits[transport], fits["threads"])
