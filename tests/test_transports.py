"""The tcp and mpi transports: the same bytes and the same weights as threads, exact wire
accounting, faults that end a run with the worker's name, and a fuzzed frame parser."""

import gc
import io
import os
import socket
import struct
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import has_mpi, mpi_param

from parrbm.config import CDSpec, ModelState
from parrbm.harness import frames as F
from parrbm.harness.comm import CommError
from parrbm.harness.runner import ParallelRunner
from parrbm.strategies import PARALLEL_STRATEGIES, StrategyOptions

TRANSPORTS = ["tcp", mpi_param()]


def run(strategy, transport, K=3, steps=3, visible="binary", **options):
    V, H, m = 21, 15, 7
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float64", seed=5, visible=visible, learning_rate=0.05)
    rng = np.random.default_rng(1)
    X = (rng.random((steps * m, V)) < 0.5) if visible == "binary" else rng.standard_normal((steps * m, V))
    r = ParallelRunner(
        spec,
        ModelState.initial(spec),
        strategy,
        K,
        transport=transport,
        options=StrategyOptions(**options),
        timeout=20.0,
    )
    r.run(X.astype(np.float64), np.arange(steps * m, dtype=np.int64), 0)
    return r


@pytest.mark.parametrize("transport", ["threads", *TRANSPORTS])
def test_compute_communication_and_waiting_mean_the_same_on_every_transport(transport, monkeypatch):
    """Worker 1 sleeps 30 ms before every step: worker 0 waits for it in the step's first
    collective (inside its step), worker 1 waits for nobody. Communication is each call's time on the worker
    that came last, the same figure for both; compute + communication + waiting is the
    step's time, on every transport."""
    monkeypatch.setenv("PARRBM_FAULT", "slow:1:30")
    steps = 6
    r = run("green-only", transport, K=2, steps=steps)
    w0, w1 = r.comm_stats()["by_worker"]
    assert w0["wait_seconds"] > steps * 0.025  # the straggler's 30 ms, less its own waits
    assert w1["wait_seconds"] < steps * 0.005
    assert w0["comm_seconds"] == pytest.approx(w1["comm_seconds"], rel=1e-9) and w0["comm_seconds"] > 0
    for w in (w0, w1):
        assert w["compute_seconds"] + w["comm_seconds"] + w["wait_seconds"] == pytest.approx(
            w["step_seconds"], rel=1e-9
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("strategy", list(PARALLEL_STRATEGIES))
def test_same_bytes_and_weights_as_threads(strategy, transport):
    ref = run(strategy, "threads")
    got = run(strategy, transport)
    a, b = ref.comm_stats(), got.comm_stats()
    assert b["bytes_per_step"] == a["bytes_per_step"] and b["bytes_per_sync"] == a["bytes_per_sync"]
    assert {p: v["bytes_sent"] for p, v in b["by_phase"].items()} == {
        p: v["bytes_sent"] for p, v in a["by_phase"].items()
    }
    np.testing.assert_array_equal(got.state.W, ref.state.W)  # float64, bit for bit
    np.testing.assert_array_equal(got.state.c, ref.state.c)


def test_tcp_wire_bytes_are_payload_plus_framing():
    r = run("unit-partitioned", "tcp", visible="gaussian")
    stats = r.comm_stats()
    for phase, s in stats["by_phase"].items():
        assert s["wire_bytes_sent"] == s["bytes_sent"] + F.HEADER_SIZE * s["wire_frames"], phase
    # every exchange sends one frame to each peer: K (K-1) frames per collective
    assert stats["by_phase"]["hidden"]["wire_frames"] == 3 * 3 * 2
    assert stats["wire_bytes_per_step"] == stats["bytes_per_step"] + F.HEADER_SIZE * 3 * 2 * 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_killed_worker_ends_the_run_naming_it(transport, monkeypatch):
    """Worker 1 dies at the start of step 2, inside the minibatch loop, after two steps'
    collectives."""
    monkeypatch.setenv("PARRBM_FAULT", "kill:1:2")
    spec = CDSpec(n_visible=21, n_hidden=15, batch_size=7, dtype="float64", seed=5)
    r = ParallelRunner(spec, ModelState.initial(spec), "green-only", 3, transport=transport, timeout=20.0)
    X = (np.random.default_rng(1).random((28, 21)) < 0.5).astype(np.float64)
    t0 = time.monotonic()
    with pytest.raises(CommError, match="worker 1"):
        r.run(X, np.arange(28, dtype=np.int64), 0)
    assert time.monotonic() - t0 < 60


def test_hung_tcp_worker_times_out_naming_it_and_the_phase(monkeypatch):
    monkeypatch.setenv("PARRBM_FAULT", "hang:2:1")
    spec = CDSpec(n_visible=12, n_hidden=9, batch_size=4, seed=1)
    r = ParallelRunner(spec, ModelState.initial(spec), "purple-only", 3, transport="tcp", timeout=3.0)
    X = (np.random.default_rng(0).random((16, 12)) < 0.5).astype(np.float32)
    t0 = time.monotonic()
    with pytest.raises(
        CommError,
        match=r"worker 2 did not respond within 3 s \(stopped or hung\); its peers "
        r"saw: worker 2 sent nothing for 3 s in phase 'hidden-input'",
    ):
        r.run(X, np.arange(16, dtype=np.int64), 0)
    assert time.monotonic() - t0 < 20


@pytest.mark.skipif(not has_mpi(), reason="pip install '.[mpi]'")
def test_hung_mpi_worker_is_named_within_the_timeout(monkeypatch):
    monkeypatch.setenv("PARRBM_FAULT", "hang:1:1")
    spec = CDSpec(n_visible=12, n_hidden=9, batch_size=4, seed=1)
    r = ParallelRunner(spec, ModelState.initial(spec), "unit-partitioned", 3, transport="mpi", timeout=3.0)
    X = (np.random.default_rng(0).random((16, 12)) < 0.5).astype(np.float32)
    t0 = time.monotonic()
    with pytest.raises(CommError, match=r"worker 1 did not respond within 3 s \(stopped or hung\): last in phase"):
        r.run(X, np.arange(16, dtype=np.int64), 0)
    assert time.monotonic() - t0 < 30


# ---- frames and the handshake ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_headers_are_parsed_or_refused(raw):
    try:
        kind, tag, length = F.parse_header(raw, max_length=1 << 20)
    except F.FrameError as exc:
        assert str(exc)
    else:
        assert raw[:4] == F.MAGIC and kind in F.KINDS and length <= 1 << 20


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(sorted(F.KINDS)), payload=st.binary(max_size=200), cut=st.integers(0, 240))
def test_truncated_frames_never_hang(kind, payload, cut):
    if kind == F.EMPTY:
        payload = b""
    frame = F.pack_header(kind, 7, len(payload)) + payload
    a, b = socket.socketpair()
    try:
        a.sendall(frame[:cut])
        a.shutdown(socket.SHUT_WR)
        b.settimeout(2)
        if cut >= len(frame):
            assert F.read_frame(b) == (kind, 7, payload)
        else:
            with pytest.raises((ConnectionError, F.FrameError)):
                F.read_frame(b)
    finally:
        a.close()
        b.close()


def test_oversized_and_foreign_frames_are_refused():
    with pytest.raises(F.FrameError, match="exceeds the bound"):
        F.parse_header(F.pack_header(F.DATA, 1, 1 << 40))
    with pytest.raises(F.FrameError, match="bad magic"):
        F.parse_header(b"GET / HTTP/1.1\r\nHost:"[: F.HEADER_SIZE])
    with pytest.raises(F.FrameError, match="version"):
        F.parse_header(struct.pack("!4sBBHIQ", F.MAGIC, 9, F.DATA, 0, 1, 0))


def test_stranger_is_refused_and_the_run_goes_on():
    """A process without the run's secret connects first; the worker refuses it and
    still connects to its real peer."""
    import threading

    from parrbm.harness.tcp import TCPTransport

    secret = b"s" * 32
    l0, l1 = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    addrs = [l0.getsockname(), l1.getsockname()]
    out = {}

    def stranger():
        s = socket.create_connection(addrs[0])
        s.sendall(F.pack_header(F.HELLO, 1, 32) + b"x" * 32)
        try:
            F.read_frame(s)  # the challenge
            s.sendall(F.pack_header(F.RESPONSE, 1, 32) + b"\0" * 32)  # a wrong proof
        finally:
            s.close()

    t = threading.Thread(target=stranger)
    t.start()
    time.sleep(0.2)  # the stranger is first in the listen queue
    t0 = threading.Thread(target=lambda: out.setdefault(0, TCPTransport(0, 2, secret, l0, addrs, timeout=10)))
    t0.start()
    t.join()
    out[1] = TCPTransport(1, 2, secret, l1, addrs, timeout=10)
    t0.join()
    assert any("wrong proof" in r for r in out[0].rejected)
    got = {}
    threads = [
        threading.Thread(
            target=lambda k=k: out[k].exchange(
                [None, np.arange(3.0)] if k == 0 else [np.arange(3.0) * 2, None],
                lambda j, b: got.setdefault(k, b.view(np.float64).copy()),
            )
        )
        for k in (0, 1)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    np.testing.assert_array_equal(got[0], np.arange(3.0) * 2)
    np.testing.assert_array_equal(got[1], np.arange(3.0))
    for k in (0, 1):
        out[k].close()


FAKE_SSH = """#!/bin/sh
# Stands in for ssh: records the host, then runs the remote command line here.
echo "$1" >> "$FAKE_SSH_LOG"
if [ "$1" = "unreachable" ]; then
  echo "ssh: Could not resolve hostname unreachable: Name or service not known" >&2
  exit 255
fi
shift
exec /bin/sh -c "$*"
"""


def _fake_ssh(tmp_path, monkeypatch):
    script = tmp_path / "fake-ssh"
    script.write_text(FAKE_SSH)
    script.chmod(0o755)
    log = tmp_path / "hosts.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return script, log


def test_tcp_workers_start_on_the_listed_hosts_through_the_launcher(tmp_path, monkeypatch):
    from parrbm.harness.grid import tcp_hosts

    script, log = _fake_ssh(tmp_path, monkeypatch)
    ref = run("green-only", "threads")
    hosts = tcp_hosts({"hosts": ["127.0.0.1", "localhost"], "launcher": [str(script)]})
    assert hosts.listen == "0.0.0.0"
    V, H, m, steps = 21, 15, 7, 3
    spec = CDSpec(n_visible=V, n_hidden=H, batch_size=m, dtype="float64", seed=5, learning_rate=0.05)
    X = (np.random.default_rng(1).random((steps * m, V)) < 0.5).astype(np.float64)
    r = ParallelRunner(spec, ModelState.initial(spec), "green-only", 3, transport="tcp", timeout=20.0, tcp=hosts)
    r.run(X, np.arange(steps * m, dtype=np.int64), 0)
    # worker r runs on hosts[r % 2], started through the launcher
    assert sorted(log.read_text().split()) == sorted(["127.0.0.1", "localhost", "127.0.0.1"])
    np.testing.assert_array_equal(r.state.W, ref.state.W)
    assert r.comm_stats()["bytes_per_step"] == ref.comm_stats()["bytes_per_step"]
    assert r.comm_stats()["hosts"] == ["127.0.0.1", "localhost", "127.0.0.1"]
    r.close()  # the workers live for the whole fit; closing stops them
    assert not r._where.group


def test_unreachable_host_is_named_with_the_launchers_message(tmp_path, monkeypatch):
    from parrbm.harness.grid import tcp_hosts

    script, _ = _fake_ssh(tmp_path, monkeypatch)
    hosts = tcp_hosts({"hosts": ["127.0.0.1", "unreachable"], "launcher": [str(script)]})
    spec = CDSpec(n_visible=8, n_hidden=6, batch_size=4, dtype="float64")
    r = ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, transport="tcp", timeout=10.0, tcp=hosts)
    t0 = time.monotonic()
    with pytest.raises(
        CommError, match=r"(?s)worker 1 \(on unreachable\) exited with code 255.*Could not resolve hostname"
    ):
        r.run(np.zeros((4, 8)), np.arange(4, dtype=np.int64), 0)
    assert time.monotonic() - t0 < 10.0


def test_a_worker_without_its_driver_exits_at_once():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "parrbm.harness.remote", "--tcp", "0", "2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1


def test_a_worker_that_died_is_named_before_a_peer_slow_to_stop():
    """Worker 1 dies without a word; worker 0 notices, blames it, and is slow to exit (so
    the launcher kills it); worker 2 saw worker 0's connection close and blames worker 0.
    The run names worker 1, the cause."""
    from types import SimpleNamespace

    from parrbm.harness.remote import OutputTail, TCPGroup

    group = object.__new__(TCPGroup)
    group.K, group.timeout, group.hosts = 3, 20.0, None
    group.procs = [SimpleNamespace(poll=lambda: -9), SimpleNamespace(poll=lambda: -9), SimpleNamespace(poll=lambda: 1)]
    said_before = [b"", b"Traceback (most recent call last):\nMemoryError: out of memory\n", b""]
    group.stderr_tails = [OutputTail(io.BytesIO(b), f"t{r}") for r, b in enumerate(said_before)]
    got = {
        1: ({"op": "gone", "why": "closed"}, {}),
        2: ({"op": "error", "message": "worker 0 closed its connection in phase 'visible-input'", "blame": 0}, {}),
    }
    said = group._diagnose(got, stopped=[])
    assert said.startswith("worker 1 was killed by SIGKILL"), said
    assert said.endswith("--- worker 1 stderr ---\nTraceback (most recent call last):\nMemoryError: out of memory"), (
        said
    )
    assert "did not respond" not in said
    got[0] = ({"op": "error", "message": "worker 1 sent nothing", "blame": 1}, {})
    del got[1]  # now worker 1 never answered: the peers' blame names it
    assert group._diagnose(got, stopped=[]).startswith("worker 1 did not respond within 20 s (stopped or hung)")


def _descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("closed", [True, False], ids=["closed", "dropped"])
def test_a_fit_leaves_no_connection_or_pipe_open(transport, closed):
    """The worker processes' connections and pipes close with their group: when the runner
    is closed, and when it is dropped without (its finalizer). None is left for the garbage
    collector to warn about, or to pile up over a sweep of many fits."""
    before = _descriptors()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        r = run("green-only", transport, K=2, steps=2)
        assert len(_descriptors() - before) >= 2  # the workers' pipes or connections, while they run
        if closed:
            r.close()
        del r
        gc.collect()
        deadline = time.monotonic() + 10  # the output readers close their pipes at the pipes' end
        while _descriptors() - before and time.monotonic() < deadline:
            time.sleep(0.05)
        gc.collect()
    assert _descriptors() - before == set()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


CHATTY = """
import sys

from parrbm.strategies.green_only import GreenOnly


class Chatty(GreenOnly):
    name = "chatty"

    def step(self, X, step):
        sys.stderr.write("worker says: " + "x" * 8000 + "\\n")
        sys.stderr.flush()
        return super().step(X, step)
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_worker_writing_more_than_a_pipe_holds_is_not_blocked(transport, tmp_path, monkeypatch):
    """A strategy that writes 8 kB to its standard error every step, 24 steps (three times
    what a pipe holds): the fit runs through, its workers never blocked on a full pipe,
    and is the fit of the quiet strategy it extends."""
    from parrbm.strategies import registry

    (tmp_path / "chatty_strategy.py").write_text(textwrap.dedent(CHATTY))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry.resolve("chatty_strategy:Chatty", load=True)  # loaded here, as naming it in a config does
        chatty = run("chatty_strategy:Chatty", transport, K=2, steps=24)
        quiet = run("green-only", "threads", K=2, steps=24)
        np.testing.assert_array_equal(chatty.state.W, quiet.state.W)
        assert chatty.step_bytes == quiet.step_bytes
        chatty.close()
    finally:
        sys.modules.pop("chatty_strategy", None)
        registry._by_reference.clear()
