"""parrbm's own mpi workers on named hosts (harness.remote): the driver starts
``mpiexec -hosts ...`` and talks to rank 0 over one authenticated connection. Here the
hosts are this machine (``localhost``, which hydra starts without ssh); the emulated
cluster's tests (test_cluster.py) run the same across hosts with no shared /tmp."""

import socket
import threading

import numpy as np
import pytest
from support import has_mpi

from parrbm import RBM
from parrbm.harness import remote
from parrbm.harness.remote import MPIHosts, recv_frame, send_frame
from parrbm.strategies import PARALLEL_STRATEGIES

LOCAL = {"mpi": {"hosts": ["localhost", "localhost"], "listen": "127.0.0.1"}}


_pairs: list[socket.socket] = []


def _pair():
    a, b = socket.socketpair()
    _pairs.extend((a, b))
    return a, b


@pytest.fixture(autouse=True)
def _close_pairs():
    yield
    while _pairs:
        _pairs.pop().close()


def test_frames_carry_numeric_arrays_exactly():
    a, b = _pair()
    arrays = {
        "W": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        "order": np.arange(5, dtype=np.int64),
        "bits": np.array([1, 0, 1], np.uint8),
        "empty": np.empty((0, 3), np.float32),
    }
    t = threading.Thread(target=send_frame, args=(a, {"op": "epoch", "n": np.int64(3)}, arrays))
    t.start()
    header, got = recv_frame(b)
    t.join()
    assert header == {"op": "epoch", "n": 3}
    assert set(got) == set(arrays)
    for k, x in arrays.items():
        assert got[k].dtype == x.dtype and got[k].shape == x.shape and np.array_equal(got[k], x), k


@pytest.mark.parametrize(
    "meta,needle",
    [
        ({"name": "x", "dtype": "object", "shape": [1]}, "not a numeric array"),
        ({"name": "x", "dtype": "float64", "shape": [-1]}, "not a numeric array"),
        ({"name": "x", "dtype": "float64", "shape": "3"}, "not a numeric array"),
    ],
)
def test_a_frame_with_anything_but_a_numeric_array_is_refused(meta, needle):
    import json
    import struct

    a, b = _pair()
    head = json.dumps({"op": "x", "arrays": [meta]}).encode()
    a.sendall(struct.pack("<Q", len(head)) + head)
    with pytest.raises(ConnectionError, match=needle):
        recv_frame(b)


def test_an_oversized_header_is_refused_before_it_is_read():
    import struct

    a, b = _pair()
    a.sendall(struct.pack("<Q", remote.MAX_HEADER + 1))
    with pytest.raises(ConnectionError, match="frame header"):
        recv_frame(b)


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({}, "give hosts"),
        ({"hosts": ["a"], "hostfile": "/etc/hostname"}, "not both"),
        ({"hosts": ["a;rm -rf /"]}, "mpi.hosts"),
        ({"hostfile": "/no/such/file"}, "is not a file"),
        ({"hosts": ["a"], "env": {"1X": "y"}}, "mpi.env"),
        ({"hosts": ["a"], "env": {"X": 3}}, "mpi.env"),
    ],
)
def test_mpi_hosts_are_checked(kw, needle):
    with pytest.raises(ValueError, match=needle):
        MPIHosts(**kw)


@pytest.mark.skipif(not has_mpi(), reason="pip install '.[mpi]'")
def test_a_fit_on_named_hosts_is_the_fit_on_threads():
    X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
    kw = dict(
        n_hidden=12,
        batch_size=10,
        n_iter=2,
        learning_rate=0.05,
        dtype="float64",
        random_state=1,
        workers=2,
        progress=False,
    )
    for strategy in PARALLEL_STRATEGIES:
        ref = RBM(strategy=strategy, **kw).fit(X)
        on_hosts = RBM(strategy=strategy, transport="mpi", strategy_options=LOCAL, **kw).fit(X)
        np.testing.assert_array_equal(on_hosts.components_, ref.components_, err_msg=strategy)
        assert on_hosts.comm_stats_["bytes_total"] == ref.comm_stats_["bytes_total"], strategy
        assert on_hosts.comm_stats_["hosts"] == [socket.gethostname()] * 2


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"hosts": "a,b"}, "non-empty list of host names"),
        ({"hosts": ["a"], "mpi": {"hosts": ["b"]}}, "both name the hosts"),
        ({"mpi": {"hostz": ["a"]}}, r"unknown keys \['hostz'\]"),
        ({"mpi": ["a"]}, "must be a dict"),
    ],
)
def test_bad_host_options_are_refused_naming_them(options, needle):
    X = (np.random.default_rng(3).random((40, 8)) < 0.4).astype(np.float64)
    with pytest.raises(ValueError, match=needle):
        RBM(
            n_hidden=4,
            batch_size=10,
            n_iter=1,
            strategy="green-only",
            workers=2,
            transport="mpi",
            strategy_options=options,
            progress=False,
        ).fit(X)


def test_hosts_need_a_process_transport():
    with pytest.raises(ValueError, match="needs transport 'tcp' or 'mpi', not 'threads'"):
        RBM(n_hidden=4, strategy="green-only", workers=2, strategy_options={"hosts": ["a", "b"]}, progress=False).fit(
            np.zeros((20, 4))
        )


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("mpi: {hosts: [a, b]}\n", None),
        ("mpi: {hosts: [a, b]}\nnetwork: {emulate: {bandwidth: 105MB/s}}\n", "give one of the two"),
        ("mpi: {hostfile: nowhere.txt}\n", "is not a file"),
        ("mpi: {hosts: [a], mpiexec: [no-such-launcher]}\n", "mpi.mpiexec"),
    ],
)
@pytest.mark.skipif(not has_mpi(), reason="pip install '.[mpi]'")
def test_the_mpi_section_of_a_config_is_checked(tmp_path, extra, needle):
    from parrbm.harness.comparison_config import ConfigError, load_config

    base = (
        "name: c\nmodel: {visible: 8, hidden: 4}\ndata: {kind: random-binary, cases: 40}\n"
        "training: {batch_size: 10, steps: 2}\ngrid: {strategy: [green-only], workers: [2], "
        "transport: [mpi]}\n"
    )
    (tmp_path / "c.yaml").write_text(base + extra)
    if needle is None:
        assert load_config(tmp_path / "c.yaml")["mpi"]["hosts"] == ["a", "b"]
        (tmp_path / "d.yaml").write_text(base.replace("transport: [mpi]", "transport: [threads]") + extra)
        with pytest.raises(ConfigError, match="the grid runs none"):
            load_config(tmp_path / "d.yaml")
    else:
        with pytest.raises(ConfigError, match=needle):
            load_config(tmp_path / "c.yaml")


PLUGIN = """
from parrbm.strategies.green_only import GreenOnly


class Shipped(GreenOnly):
    name = "shipped-green"
"""


def test_a_plug_in_goes_to_workers_on_other_hosts_with_the_job(tmp_path, monkeypatch):
    """The hosts need not have the plug-in's file: its source goes with the job (the
    workers start in /, without the driver's PYTHONPATH)."""
    (tmp_path / "shipped_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    from shipped_plugin import Shipped

    ssh = tmp_path / "fake-ssh"  # stands in for ssh: runs the remote command line here
    ssh.write_text('#!/bin/sh\nshift\nexec /bin/sh -c "$*"\n')
    ssh.chmod(0o755)
    X = (np.random.default_rng(3).random((60, 12)) < 0.4).astype(np.float64)
    kw = dict(
        n_hidden=8,
        batch_size=10,
        n_iter=2,
        learning_rate=0.05,
        dtype="float64",
        random_state=1,
        strategy=Shipped,
        workers=2,
        progress=False,
    )
    ref = RBM(**kw).fit(X).components_
    on_tcp = RBM(
        transport="tcp", strategy_options={"tcp": {"hosts": ["127.0.0.1", "localhost"], "launcher": [str(ssh)]}}, **kw
    ).fit(X)
    np.testing.assert_array_equal(on_tcp.components_, ref)
    if has_mpi():
        on_mpi = RBM(transport="mpi", strategy_options=LOCAL, **kw).fit(X)
        np.testing.assert_array_equal(on_mpi.components_, ref)


def test_a_driver_that_fails_talking_to_a_worker_says_so_at_once(monkeypatch):
    """Whatever ends the driver's exchange with a tcp worker (here a bug: a TypeError) ends
    the fit with its cause within seconds, not after the timeout, and no worker is left."""
    import time

    from parrbm.config import CDSpec, ModelState
    from parrbm.harness.comm import CommError
    from parrbm.harness.runner import ParallelRunner

    def broken(sock, *a, **k):
        raise TypeError("a bug in reading a frame")

    monkeypatch.setattr(remote, "recv_frame", broken)
    spec = CDSpec(n_visible=16, n_hidden=8, batch_size=8)
    t0 = time.monotonic()
    with pytest.raises(CommError, match="driver failed talking to worker .*TypeError: a bug in reading a frame"):
        ParallelRunner(spec, ModelState.initial(spec), "green-only", 2, "tcp", timeout=60.0).run(
            np.zeros((16, 16), np.float32), np.arange(16), 0
        )
    assert time.monotonic() - t0 < 30
    from test_untrusted_input import _tagged_processes

    assert _tagged_processes() == []


def test_connections_seen_closed_at_once_are_not_ordered_by_rank():
    """A rank's connection closes the moment it dies; on a busy machine the watch may wake
    after mpiexec has stopped the others too: those closes are one entry, and mpiexec's
    word decides among them (CI once named rank 0 for a killed rank 1 by rank order)."""
    import subprocess
    import time

    pairs = [socket.socketpair() for _ in range(3)]
    gone: list = []
    proc = subprocess.Popen(["sleep", "5"])
    try:
        pairs[1][1].close()
        pairs[0][1].close()  # both closed before the watch looks
        watch = threading.Thread(target=remote._watch_lifelines, args=([p[0] for p in pairs], gone, proc), daemon=True)
        watch.start()
        time.sleep(0.3)
        pairs[2][1].close()
        time.sleep(0.7)
    finally:
        proc.kill()
        proc.wait()
        for a, b in pairs:
            a.close()
            b.close()
    assert gone == [[0, 1], [2]]
    pids = [100, 101, 102]
    assert remote._first_closed(gone, pids, 101) is None  # mpiexec named rank 1: it decides
    assert remote._first_closed(gone, pids, None) == [0, 1]  # nothing tells them apart
    assert remote._first_closed([[2], [0, 1]], pids, 100) == 2  # alone first: the one that died
