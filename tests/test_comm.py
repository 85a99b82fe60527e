"""The Comm collectives on the threads transport: values, summation order, accounting."""

import numpy as np
import pytest

from parrbm.harness.threads import run_threads
from parrbm.partition import Partition


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("kind", ["contiguous", "random"])
def test_collectives(K, kind):
    m, N = 5, 11
    parts = Partition.make(kind, N, K, seed=3)
    rng = np.random.default_rng(K)
    addends = [rng.standard_normal((m, N)) for _ in range(K)]
    full = rng.standard_normal((m, N))
    bits = (rng.random((m, N)) < 0.5).astype(np.float32)

    def work(comm):
        k = comm.rank
        out = {}
        g = np.zeros((m, N))
        comm.allgather(np.ascontiguousarray(parts.take(full, k)), g, parts, phase="ag")
        out["ag"] = g
        gb = np.zeros((m, N), np.float32)
        comm.allgather_bits(np.ascontiguousarray(parts.take(bits, k)), gb, parts, phase="bits")
        out["bits"] = gb
        rs = np.zeros((m, parts.size(k)))
        comm.reduce_scatter(addends[k], rs, parts, phase="rs")
        out["rs"] = rs
        a = addends[k].copy()
        comm.allreduce(a, phase="ar")
        out["ar"] = a
        sends = [np.full((1, 2), 10 * k + j, float) for j in range(K)]
        outs = [np.zeros((1, 2)) for _ in range(K)]
        comm.alltoall(sends, outs, phase="a2a")
        out["a2a"] = [o[0, 0] for o in outs]
        got = comm.gather(np.full(k + 1, float(k)), phase="gather")
        out["gather"] = got
        b = np.full(3, float(k))
        comm.bcast(b, root=1, phase="bcast")
        out["bcast"] = b
        out["stats"] = comm.stats
        return out

    res = run_threads(K, work)
    ordered_sum = addends[0].copy()
    for a in addends[1:]:
        ordered_sum += a
    pb = 8
    for k, r in enumerate(res):
        np.testing.assert_array_equal(r["ag"], full)
        np.testing.assert_array_equal(r["bits"], bits)
        np.testing.assert_array_equal(r["rs"], parts.take(ordered_sum, k))  # bit for bit, rank order
        np.testing.assert_allclose(r["ar"], ordered_sum, rtol=1e-15)
        assert r["a2a"] == [10 * j + k for j in range(K)]
        np.testing.assert_array_equal(r["bcast"], np.full(3, 1.0))
        st = r["stats"]
        assert st["ag"].bytes_sent == (K - 1) * m * parts.size(k) * pb
        assert st["bits"].bytes_sent == (K - 1) * ((m * parts.size(k) + 7) // 8)
        assert st["rs"].bytes_sent == m * (N - parts.size(k)) * pb
        assert st["a2a"].bytes_sent == (K - 1) * 2 * pb
        assert st["gather"].bytes_sent == (0 if k == 0 else (k + 1) * pb)
        assert st["bcast"].bytes_sent == ((K - 1) * 3 * pb if k == 1 else 0)
        assert st["ag"].messages == K - 1 and st["ag"].calls == 1
    assert [list(a) for a in res[0]["gather"]] == [[float(j)] * (j + 1) for j in range(K)]
    assert all(r["gather"] is None for r in res[1:])
    # everything sent is received by someone
    for phase in ("ag", "bits", "rs", "ar", "a2a", "gather", "bcast"):
        assert sum(r["stats"][phase].bytes_sent for r in res) == sum(r["stats"][phase].bytes_recv for r in res)


def test_core_barrier_passes_every_party_each_generation():
    import threading

    from parrbm import _core

    K, rounds = 3, 200
    barrier = _core.Barrier(K, spin_seconds=1e-5)  # short spin: most waits sleep and wake
    arrived = [0] * K
    seen: list[list[int]] = [[] for _ in range(K)]

    def party(r):
        for i in range(rounds):
            arrived[r] = i + 1
            assert barrier.wait(10.0) == "passed"
            seen[r].append(min(arrived))  # nobody leaves generation i before all reached it

    threads = [threading.Thread(target=party, args=(r,)) for r in range(K)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(s) == rounds and all(v >= i + 1 for i, v in enumerate(s)) for s in seen)
    assert not barrier.broken


def test_core_barrier_timeout_and_abort_break_it_for_everyone():
    import threading

    from parrbm import _core

    barrier = _core.Barrier(2)
    assert barrier.wait(0.05) == "timeout"  # the peer never came
    assert barrier.broken and barrier.wait(5.0) == "broken"

    barrier = _core.Barrier(2)
    result = []
    t = threading.Thread(target=lambda: result.append(barrier.wait(30.0)))
    t.start()
    barrier.abort()
    t.join(5.0)
    assert not t.is_alive() and result == ["broken"]
    with pytest.raises(ValueError, match="parties"):
        _core.Barrier(0)


def test_a_worker_whose_start_was_interrupted_never_begins(monkeypatch):
    """Ctrl-C inside Thread.start: the thread runs later, unseen by is_alive when the run
    stops. It must not begin its work (into the core, where interpreter finalization
    would abort the process): run_threads returns with no worker inside, and none after."""
    import threading
    import time

    from parrbm.harness.threads import run_threads

    original = threading.Thread.start
    began: list[int] = []

    def start(self):
        if self.name == "parrbm-worker-1":  # the second worker: started late, its start() interrupted
            original(threading.Timer(0.3, original, (self,)))
            raise KeyboardInterrupt
        original(self)

    def target(comm):
        began.append(comm.rank)
        comm.barrier(phase="sync")  # waits for worker 1, until the run is stopped

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        run_threads(2, target, timeout=5.0)
    monkeypatch.setattr(threading.Thread, "start", original)
    at_return = list(began)  # worker 0 began, unless the stop came before it reached its work
    assert at_return in ([0], [])
    time.sleep(0.6)  # worker 1's thread has run by now
    assert began == at_return
