"""Files parrbm reads are data, and files it writes survive whatever happens: a results file
or a model file never runs code, a planted symlink is never followed, a write cut short
leaves the old file readable, and what a run leaves on failure is named."""

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from parrbm import DBN, RBM
from parrbm.cli import main
from parrbm.harness.comparison_config import ConfigError, load_config
from parrbm.harness.experiment import run_config
from parrbm.strategies import registry

TINY = """
name: tiny
model: {visible: 12, hidden: 8}
data: {kind: random-binary, cases: 40}
training: {batch_size: 4, steps: 2, warmup: 1, timeout: 20}
grid:
  strategy: [serial, unit-partitioned]
  workers: [1, 2]
  transport: threads
"""

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
from parrbm.strategies.unit_partitioned import UnitPartitioned


class Evil(UnitPartitioned):
    name = "evil"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A plug-in file that leaves a marker when imported, also importable as a module."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    write(folder / "evilmod.py", EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(folder))
    yield {"file": f"{folder / 'evilmod.py'}:Evil", "module": "evilmod:Evil", "marker": marker}
    sys.modules.pop("evilmod", None)
    registry._by_reference.pop(f"{folder / 'evilmod.py'}:Evil", None)
    registry._by_reference.pop("evilmod:Evil", None)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    cfg = load_config(write(out / "tiny.yaml", TINY))
    return run_config(cfg, out, progress=lambda *a: None)


def _rewrite_strategy(src: Path, dst: Path, strategy: str) -> Path:
    lines = []
    for line in src.read_text().splitlines():
        rec = json.loads(line)
        if rec["strategy"] != "serial":
            rec["strategy"] = strategy
        lines.append(json.dumps(rec))
    dst.write_text("\n".join(lines) + "\n")
    return dst


# ---- item 1: reading a file never imports ---------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "module"])
def test_reading_results_never_imports_the_strategy_they_name(evil, kind, tiny_results, tmp_path, capsys):
    path = _rewrite_strategy(tiny_results, tmp_path / "tiny.jsonl", evil[kind])
    assert main(["table", str(path)]) == 0
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--no-divergence"]) == 0
    assert main(["plot", str(path), "--out", str(tmp_path / "figs")]) == 0
    capsys.readouterr()
    assert not evil["marker"].exists()


def test_resume_never_imports_the_strategy_a_record_names(evil, tiny_results, tmp_path):
    _rewrite_strategy(tiny_results, tmp_path / "tiny.jsonl", evil["file"])
    cfg = load_config(write(tmp_path / "tiny.yaml", TINY))
    with pytest.raises(ConfigError):
        run_config(cfg, tmp_path, resume=True, progress=lambda *a: None)
    assert not evil["marker"].exists()


def _model_file(tmp_path: Path, named: str, **params) -> Path:
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    rbm = RBM(n_hidden=8, n_iter=1, batch_size=4, random_state=0, progress=False, **params).fit(X)
    path = tmp_path / "model.npz"
    rbm.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["parrbm_meta"]))
    meta["params"]["strategy"] = named
    meta["params"]["checkpoint_dir"] = str(tmp_path / "chosen-by-the-file")
    arrays["parrbm_meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind", ["file", "module"])
def test_loading_a_model_never_imports_its_strategy(evil, kind, tmp_path):
    path = _model_file(tmp_path, evil[kind])
    rbm = RBM.load(path)
    assert not evil["marker"].exists()
    assert rbm.strategy == evil[kind] and rbm.checkpoint_dir is None  # paths in a file are not restored
    X = (np.random.default_rng(1).random((5, 12)) > 0.5).astype(np.float32)
    assert rbm.transform(X).shape == (5, 8)
    rbm.save(tmp_path / "again.npz")  # its parameters round-trip without the plug-in
    assert RBM.load(tmp_path / "again.npz").strategy == evil[kind]
    with pytest.raises(ValueError, match="parameter 'strategy'.*the model file names it"):
        rbm.set_params(warm_start=True, n_iter=2).fit(np.vstack([X] * 8))
    assert not evil["marker"].exists()
    assert main(["plot-filters", str(path), "--out", str(tmp_path / "f.png")]) == 0
    assert not evil["marker"].exists() and not (tmp_path / "chosen-by-the-file").exists()


def test_a_loaded_model_trains_on_when_the_user_names_its_strategy(evil, tmp_path):
    path = _model_file(tmp_path, evil["module"], strategy="unit-partitioned", workers=2)
    rbm = RBM.load(path)
    assert not evil["marker"].exists()
    X = (np.random.default_rng(1).random((40, 12)) > 0.5).astype(np.float32)
    rbm.set_params(strategy="unit-partitioned", warm_start=True, n_iter=2).fit(X)
    assert rbm.epochs_done_ == 2 and not evil["marker"].exists()


def test_loading_a_dbn_never_imports_its_strategy(evil, tmp_path):
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    path = tmp_path / "dbn.npz"
    DBN(hidden_layer_sizes=(8, 4), n_iter=1, batch_size=4, random_state=0, progress=False).fit(X).save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["parrbm_dbn"]))
    meta["params"]["strategy"] = evil["module"]
    for layer in meta["layers"]:
        layer["params"]["strategy"] = evil["module"]
    arrays["parrbm_dbn"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    dbn = DBN.load(path)
    assert dbn.transform(X).shape == (40, 4)
    with pytest.raises(ValueError, match="parameter 'strategy'"):
        dbn.fit(X)
    assert not evil["marker"].exists()


# ---- item 5 and 13: what a plug-in is -----------------------------------------------------


def test_a_plugins_identity_covers_the_modules_it_inherits_from(tmp_path, monkeypatch):
    folder = tmp_path / "p"
    folder.mkdir()
    write(
        folder / "basemod.py",
        """
        from parrbm.strategies.unit_partitioned import UnitPartitioned
        class Base(UnitPartitioned):
            name = "base-of-derived"
    """,
    )
    write(
        folder / "derivedmod.py",
        """
        from basemod import Base
        class Derived(Base):
            name = "derived"
    """,
    )
    monkeypatch.syspath_prepend(str(folder))
    try:
        before = registry.source_digest(registry.load("derivedmod:Derived"))
        (folder / "basemod.py").write_text((folder / "basemod.py").read_text() + "\n# the step changed\n")
        for m in ("basemod", "derivedmod"):
            sys.modules.pop(m, None)
        registry._by_reference.pop("derivedmod:Derived", None)
        after = registry.source_digest(registry.load("derivedmod:Derived"))
        assert before != after
    finally:
        for m in ("basemod", "derivedmod"):
            sys.modules.pop(m, None)
        registry._by_reference.pop("derivedmod:Derived", None)


def test_two_plugin_files_of_one_name_are_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write(
            tmp_path / sub / "twin.py",
            f"""
            from parrbm.strategies.unit_partitioned import UnitPartitioned
            class P(UnitPartitioned):
                name = "twin-{sub}"
        """,
        )
    try:
        registry.load(f"{tmp_path / 'a' / 'twin.py'}:P")
        with pytest.raises(registry.StrategyError, match="already imported from .*a/twin.py.*rename one"):
            registry.load(f"{tmp_path / 'b' / 'twin.py'}:P")
    finally:
        sys.modules.pop("twin", None)
        registry._by_reference.pop(f"{tmp_path / 'a' / 'twin.py'}:P", None)


def test_a_plugin_cannot_take_a_builtins_name_or_another_plugins(tmp_path):
    write(
        tmp_path / "imposter.py",
        """
        from parrbm.strategies.unit_partitioned import UnitPartitioned
        class GreenAgain(UnitPartitioned):
            name = "green-only"
        class Same1(UnitPartitioned):
            name = "same"
        class Same2(UnitPartitioned):
            name = "same"
    """,
    )
    try:
        with pytest.raises(registry.StrategyError, match="'green-only' is a built-in strategy's"):
            registry.load(f"{tmp_path / 'imposter.py'}:GreenAgain")
        cfg = write(
            tmp_path / "c.yaml",
            """
            model: {visible: 12, hidden: 8}
            grid: {strategy: [imposter.py:Same1, imposter.py:Same2], workers: 2}
        """,
        )
        with pytest.raises(ConfigError, match=r"grid.strategy\[1\].*is named 'same', as is grid.strategy\[0\]"):
            load_config(cfg)
    finally:
        sys.modules.pop("imposter", None)
        for k in [k for k in registry._by_reference if "imposter" in k]:
            registry._by_reference.pop(k)


# ---- items 3, 4, 7: what parrbm writes ------------------------------------------------------


def test_a_planted_symlink_is_never_followed(tiny_results, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tiny.jsonl.lock").symlink_to(victim)
    cfg = load_config(write(tmp_path / "tiny.yaml", TINY))
    with pytest.raises((ConfigError, OSError), match="symbolic link"):
        run_config(cfg, out, progress=lambda *a: None)
    (out / ".tiny.jsonl.lock").unlink()
    (out / "tiny.jsonl").symlink_to(victim)  # the results file itself
    with pytest.raises((ConfigError, OSError)):
        run_config(cfg, out, resume=True, progress=lambda *a: None)
    assert victim.read_text() == "precious\n"
    # the report, figures, a model, a profile: a link where they go is replaced, never written through
    figs = tmp_path / "figs"
    figs.mkdir()
    for target in (tmp_path / "r.html", figs / "bytes.png", tmp_path / "m.npz", tmp_path / "p.json"):
        target.symlink_to(victim)
    assert main(["report", str(tiny_results), "--out", str(tmp_path / "r.html"), "--no-divergence"]) == 0
    assert main(["plot", str(tiny_results), "--out", str(figs)]) == 0
    X = (np.random.default_rng(0).random((20, 12)) > 0.5).astype(np.float32)
    RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False).fit(X).save(tmp_path / "m.npz")
    from parrbm.analysis.timemodel import Profile

    Profile(cores=2).save(tmp_path / "p.json")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "r.html").is_symlink() and not (tmp_path / "m.npz").is_symlink()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB file system (tmpfs, as root), to fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path) -> None:
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_keeps_every_old_file(tiny_disk, tiny_results, tmp_path):
    from parrbm.analysis.timemodel import Profile

    X = (np.random.default_rng(0).random((20, 12)) > 0.5).astype(np.float32)
    rbm = RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False).fit(X)
    rbm.save(tiny_disk / "m.npz")
    Profile(cores=2).save(tiny_disk / "p.json")
    assert main(["report", str(tiny_results), "--out", str(tiny_disk / "r.html"), "--no-divergence"]) == 0
    results = tiny_disk / "tiny.jsonl"
    results.write_bytes(tiny_results.read_bytes())
    before = {p.name: p.read_bytes() for p in tiny_disk.iterdir() if p.is_file()}
    _fill(tiny_disk)
    with pytest.raises(OSError, match="m.npz"):
        RBM(n_hidden=64, n_iter=1, batch_size=4, progress=False).fit(np.tile(X, (1, 100))).save(tiny_disk / "m.npz")
    with pytest.raises(OSError, match="p.json"):
        Profile(cores=2, gemm={"float32": [[i, 1.0] for i in range(100000)]}).save(tiny_disk / "p.json")
    from parrbm.harness.results import append_record, scan

    with pytest.raises(OSError, match="tiny.jsonl"):
        append_record(results, {**json.loads(results.read_text().splitlines()[0]), "pad": "x" * 2_000_000})
    assert main(["report", str(tiny_results), "--out", str(tiny_disk / "r.html"), "--no-divergence"]) == 1
    for name, data in before.items():
        assert (tiny_disk / name).read_bytes() == data, name
    assert len(scan(results).records) == len(before["tiny.jsonl"].splitlines())
    assert RBM.load(tiny_disk / "m.npz").n_hidden == 4 and Profile.load(tiny_disk / "p.json").cores == 2
    assert not [p for p in tiny_disk.iterdir() if p.name.endswith(".tmp")]


def test_appending_starts_on_a_new_line(tiny_results, tmp_path):
    from parrbm.harness.results import append_record, scan

    path = tmp_path / "tiny.jsonl"
    path.write_bytes(tiny_results.read_bytes().rstrip(b"\n"))  # an editor dropped the final newline
    n = len(scan(path).records)
    append_record(path, json.loads(path.read_text().splitlines()[-1]))
    assert len(scan(path).records) == n + 1 and scan(path).torn is None


# ---- item 6: one fit per checkpoint folder --------------------------------------------------


def test_two_fits_cannot_share_a_checkpoint_dir(tmp_path):
    import threading

    X = (np.random.default_rng(0).random((400, 12)) > 0.5).astype(np.float32)
    started, release = threading.Event(), threading.Event()

    def slow(epoch):
        started.set()
        release.wait(30)
        return 0.01

    first = RBM(
        n_hidden=4, n_iter=2, batch_size=4, progress=False, checkpoint_dir=tmp_path / "ck", learning_rate_schedule=slow
    )
    t = threading.Thread(target=first.fit, args=(X,))
    t.start()
    try:
        assert started.wait(30)
        with pytest.raises(ValueError, match=r"checkpoint_dir.*in use by another fit \(process \d+\)"):
            RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False, checkpoint_dir=tmp_path / "ck").fit(X)
    finally:
        release.set()
        t.join()
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.npz")) == ["epoch-0001.npz", "epoch-0002.npz"]


# ---- item 9: parameters changed after a fit ----------------------------------------------------


@pytest.mark.parametrize(
    "param,value",
    [
        ("n_hidden", 5),
        ("visible", "gaussian"),
        ("dtype", "float64"),
        ("cd_k", 2),
        ("persistent", True),
        ("statistics", "probabilities"),
        ("batch_size", 8),
    ],
)
def test_a_changed_model_parameter_is_refused_by_a_continued_fit(param, value):
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    rbm = RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False).fit(X)
    rbm.set_params(**{param: value})
    with pytest.raises(ValueError, match=f"parameter '{param}' changed since the model was fitted.*call fit"):
        rbm.partial_fit(X)
    with pytest.raises(ValueError, match=f"parameter '{param}' changed"):
        rbm.set_params(warm_start=True, n_iter=2).fit(X)


def test_a_changed_step_parameter_applies_to_the_next_steps():
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    a = RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False, random_state=0).fit(X)
    b = RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False, random_state=0).fit(X)
    a.set_params(learning_rate=0.5).partial_fit(X)
    b.partial_fit(X)
    assert not np.array_equal(a.components_, b.components_)
    a.set_params(strategy="green-only", workers=2, momentum=0.5).partial_fit(X)
    assert a._strategy.K == 2 and a.spec_.momentum == 0.5 and a._state.W_inc is not None


@pytest.mark.parametrize("sizes", ["16", {16: 1}, 16, (), [[4]]])
def test_dbn_layer_sizes_are_a_list_of_integers(sizes):
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        DBN(hidden_layer_sizes=sizes, n_iter=1, batch_size=4, progress=False).fit(X)


def test_dbn_transform_refuses_layers_changed_after_fit():
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    dbn = DBN(hidden_layer_sizes=(8, 4), n_iter=1, batch_size=4, progress=False).fit(X)
    dbn.set_params(hidden_layer_sizes=(8, 6))
    with pytest.raises(ValueError, match="hidden_layer_sizes.*call fit"):
        dbn.transform(X)


# ---- item 2: a stranger at the tcp rendezvous ------------------------------------------------


def _silent_strangers(address, hold: float):
    """Two local connections to a worker's port that never finish a handshake: one says
    nothing, one sends a valid-looking hello and then nothing."""
    import socket
    import threading

    from parrbm.harness import frames as F

    def stranger(hello: bool):
        s = socket.create_connection(address)
        if hello:
            s.sendall(F.pack_header(F.HELLO, 1, 32) + b"x" * 32)
        time.sleep(hold)
        s.close()

    import time

    threads = [threading.Thread(target=stranger, args=(h,), daemon=True) for h in (False, True)]
    for t in threads:
        t.start()
    return threads


def test_silent_strangers_do_not_stall_the_tcp_rendezvous():
    import socket
    import threading
    import time

    from parrbm.harness.tcp import TCPTransport

    secret = b"s" * 32
    l0, l1 = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    addrs = [l0.getsockname(), l1.getsockname()]
    strangers = _silent_strangers(addrs[0], hold=40)
    time.sleep(0.3)  # the strangers are first in the listen queue, and stay connected
    out = {}
    t0 = threading.Thread(target=lambda: out.setdefault(0, TCPTransport(0, 2, secret, l0, addrs, timeout=30)))
    t0.start()
    out[1] = TCPTransport(1, 2, secret, l1, addrs, timeout=30)
    t0.join()
    assert set(out[0].socks) == {1} and set(out[1].socks) == {0}
    for t in out.values():
        t.close()
    del strangers


def test_a_rendezvous_without_its_peer_names_the_strangers(monkeypatch):
    import socket

    from parrbm.harness import tcp
    from parrbm.harness.comm import CommError

    monkeypatch.setattr(tcp, "HANDSHAKE_SECONDS", 0.5)
    l0, l1 = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    addrs = [l0.getsockname(), l1.getsockname()]
    _silent_strangers(addrs[0], hold=10)
    with pytest.raises(
        CommError,
        match=r"workers \[1\] did not connect within 3 s; 2 other connection\(s\) "
        r"to its port were refused .*no valid handshake within 0.5 s",
    ):
        tcp.TCPTransport(0, 2, b"s" * 32, l0, addrs, timeout=3)
    l1.close()


# ---- item 8: the data of a run, and where it runs --------------------------------------------


def test_data_replaced_during_a_run_stops_it_naming_the_file(tmp_path):
    from parrbm.harness.experiment import read_records

    data = tmp_path / "x.npy"
    np.save(data, (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32))
    cfg = load_config(
        write(tmp_path / "c.yaml", TINY.replace("{kind: random-binary, cases: 40}", "{kind: npy, path: x.npy}"))
    )
    said = []

    def progress(msg):
        said.append(msg)
        if "ms/step" in msg and len([m for m in said if "ms/step" in m]) == 1:
            np.save(data, np.ones((40, 12), np.float32))  # another data set, between two points

    with pytest.raises(ConfigError, match=r"data.path: .*x.npy changed while the run was going"):
        run_config(cfg, tmp_path / "out", progress=progress)
    assert len(read_records(tmp_path / "out" / "tiny.jsonl")) == 1  # the first point's record only


def test_where_the_runs_happen_is_part_of_a_runs_identity():
    from parrbm.harness.experiment import run_identity

    base = {"model": {"visible": 4}, "training": {}, "data": {"kind": "random-binary"}, "options": {}}
    a = run_identity({**base, "tcp": {"hosts": ["a", "b"]}})
    b = run_identity({**base, "tcp": {"hosts": ["a", "c"]}})
    assert a != b and run_identity({**base, "tcp": {}}) == run_identity(base)


# ---- item 14: an option for another strategy ---------------------------------------------------


@pytest.mark.parametrize(
    "options,field",
    [
        ("{reduce: master}", "options.reduce"),
        ("{average: weights}", "options.average"),
        ("{average_every: 4}", "options.average_every"),
        ("{shared_weights: true}", "options.shared_weights"),
    ],
)
def test_an_option_no_strategy_of_the_grid_reads_is_refused(tmp_path, options, field):
    cfg = write(tmp_path / "c.yaml", TINY + f"options: {options}\n")
    with pytest.raises(
        ConfigError,
        match=rf"{field}: the option .* is read by no strategy of this grid "
        rf"\(serial, unit-partitioned\)",
    ):
        load_config(cfg)


def test_sync_every_without_unit_partitioned_is_refused(tmp_path):
    cfg = write(
        tmp_path / "c.yaml",
        TINY.replace("[serial, unit-partitioned]", "[serial, green-only]").replace(
            "timeout: 20}", "timeout: 20, sync_every: 5}"
        ),
    )
    with pytest.raises(ConfigError, match=r"training.sync_every: .*read by: unit-partitioned"):
        load_config(cfg)


@pytest.mark.parametrize(
    "strategy,options",
    [
        ("unit-partitioned", {"reduce": "master"}),
        ("unit-partitioned", {"average": "weights"}),
        ("green-only", {"average_every": 3}),
        ("serial", {"partition": "random"}),
    ],
)
def test_the_estimator_refuses_an_option_its_strategy_does_not_read(strategy, options):
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    with pytest.raises(ValueError, match=r"strategy_options.*is not read by strategy"):
        RBM(
            n_hidden=4,
            batch_size=4,
            strategy=strategy,
            workers=1 if strategy == "serial" else 2,
            strategy_options=options,
            progress=False,
        ).fit(X)


# ---- items 12, 15, 20: results files that no run wrote -------------------------------------------


def _edited(tiny_results: Path, tmp_path: Path, change) -> Path:
    lines = tiny_results.read_text().splitlines()
    rec = json.loads(
        next(ln for ln in lines if json.loads(ln)["strategy"] == "unit-partitioned" and json.loads(ln)["workers"] == 2)
    )
    change(rec)
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join(lines + [json.dumps(rec) if isinstance(rec, dict) else rec]) + "\n")
    return path


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda r: r.update(workers=0), "workers must be an integer >= 1"),
        (lambda r: r.update(workers=-3), "workers must be an integer >= 1"),
        (lambda r: r.update(workers=True), "workers must be an integer >= 1"),
        (lambda r: r.update(transport="pigeon"), "transport must be one of"),
        (lambda r: r.update(bandwidth={"rate": 1}), "bandwidth must be a string"),
        (lambda r: r.update(status="weird"), "status must be 'ok' or 'error'"),
        (lambda r: r["metrics"].update(bytes_per_step=10**400), "metrics.bytes_per_step must be a number"),
        (lambda r: r.update(network="x"), "network must be an object or null"),
        (lambda r: r["metrics"].pop("compute_seconds"), "metrics.compute_seconds must be a number"),
        (lambda r: r.update(strategy="green-only"), "its strategy 'green-only' is not its run_id's"),
        (lambda r: r.update(run_id=r["run_id"].replace("workers=2", "workers=4")), "its workers 2 is not its run_id's"),
    ],
)
def test_a_record_no_run_wrote_is_listed_apart(tiny_results, tmp_path, capsys, change, needle):
    path = _edited(tiny_results, tmp_path, change)
    capsys.readouterr()
    assert main(["table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "left out: " + needle in out.replace("\n", " ") or needle in out
    rows = [ln for ln in out.splitlines() if ln.startswith("unit-partitioned")]
    assert len(rows) == 2  # K = 1 and the real K = 2 run, the edited copy left out
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--no-divergence"]) == 0


def test_nan_and_infinity_literals_are_not_json(tiny_results, tmp_path, capsys):
    line = tiny_results.read_text().splitlines()[0]
    path = tmp_path / "nan.jsonl"
    path.write_text(line.replace('"median": ', '"median": NaN, "x": ', 1) + "\n" + line + "\n")
    assert main(["table", str(path)]) == 2
    assert "line 1 is not a parrbm record (not JSON: NaN is not a number in strict JSON)" in capsys.readouterr().err


def test_a_record_of_another_experiment_is_refused(tiny_results, tmp_path, capsys):
    path = _edited(
        tiny_results,
        tmp_path,
        lambda r: r["identity"]["model"].update(hidden=99) or r.update(run_id="x|" + r["run_id"]),
    )
    assert main(["table", str(path)]) == 2
    assert "mixes experiments" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["table"], ["run"]])
def test_an_endless_input_is_refused_not_read(cmd, capsys, tmp_path):
    code = main([*cmd, "/dev/zero"] + (["--out", str(tmp_path)] if cmd == ["run"] else []))
    assert code == 2 and "/dev/zero" in capsys.readouterr().err


def test_a_deeply_nested_record_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 200000 + "]" * 200000 + "\n")
    assert main(["table", str(path)]) == 2
    assert "nested deeper than" in capsys.readouterr().err


# ---- items 16, 17: values that pass a schema and fail every run ---------------------------------


@pytest.mark.parametrize(
    "emulate,needle",
    [
        ("{bandwidth: 0.0001B/s}", "outside what the emulated links shape"),
        ("{bandwidth: 1e12MB/s}", "outside what the emulated links shape"),
        ("{bandwidth: 105MB/s, latency: 1000s}", "network.emulate.latency: '1000s': latency 1000 s is outside"),
    ],
)
def test_bandwidths_tc_cannot_shape_are_refused_up_front(tmp_path, emulate, needle):
    cfg = write(
        tmp_path / "c.yaml", TINY.replace("transport: threads", "transport: tcp") + f"network: {{emulate: {emulate}}}\n"
    )
    with pytest.raises(ConfigError, match=needle):
        load_config(cfg)


@pytest.mark.parametrize(
    "training,needle",
    [
        ("steps: 1000000000", "training.steps: .* GiB, more than this machine"),
        ("steps: 1e30", "training.steps"),
        ("warmup: 1000000000000", "training.steps"),
        ("cases: 1000000000000000000", "training.cases"),
    ],
)
def test_runs_no_machine_finishes_are_refused_up_front(tmp_path, training, needle):
    text = TINY.replace("steps: 2, warmup: 1, ", "").replace("timeout: 20", f"timeout: 20, {training}")
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path / "c.yaml", text))


def test_a_run_of_more_work_than_a_week_is_refused_up_front(tmp_path):
    text = """
        model: {visible: 2000, hidden: 2000, cd_k: 10000}
        data: {cases: 100}
        training: {batch_size: 100, steps: 1000000}
        grid: {strategy: serial, workers: 1}
    """
    with pytest.raises(ConfigError, match=r"training.steps: .* floating-point operations: more than 7 days"):
        load_config(write(tmp_path / "c.yaml", text))


def test_cd_k_is_bounded_everywhere(tmp_path, capsys):
    with pytest.raises(ConfigError, match="model.cd_k"):
        load_config(write(tmp_path / "c.yaml", TINY.replace("hidden: 8}", "hidden: 8, cd_k: 1000000000000}")))
    with pytest.raises(ValueError, match="cd_k.*<= 10000"):
        RBM(cd_k=10**12).fit(np.zeros((10, 4)))
    for cmd in ("cost", "predict"):
        with pytest.raises(SystemExit):
            main([cmd, "--visible", "8", "--hidden", "8", "--batch", "4", "--workers", "2", "--cd-k", "1000000000000"])
        assert "must be <= 10000" in capsys.readouterr().err


# ---- item 19: model files ------------------------------------------------------------------------


def _saved(tmp_path: Path) -> dict:
    X = (np.random.default_rng(0).random((20, 6)) > 0.5).astype(np.float32)
    RBM(n_hidden=4, n_iter=1, batch_size=4, progress=False).fit(X).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        return {k: z[k] for k in z.files}


def test_a_model_entry_claiming_more_than_it_holds_is_refused_unread(tmp_path):
    import zipfile

    arrays = _saved(tmp_path)
    np.savez(tmp_path / "big.npz", **arrays)
    # a header claiming 10**12 elements in front of a few bytes
    with zipfile.ZipFile(tmp_path / "big.npz") as src, zipfile.ZipFile(tmp_path / "lie.npz", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "state_W.npy":
                header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
                buf = __import__("io").BytesIO()
                np.lib.format.write_array_header_1_0(buf, header)
                data = buf.getvalue() + b"\0" * 16
            dst.writestr(info, data)
    with pytest.raises(ValueError, match=r"lie.npz is not a readable parrbm model file \(entry 'state_W' claims"):
        RBM.load(tmp_path / "lie.npz")


def test_a_model_file_is_checked_before_it_is_read(tmp_path):
    arrays = _saved(tmp_path)
    np.savez(tmp_path / "junk.npz", **arrays, state_junk=np.zeros(10))
    with pytest.raises(ValueError, match="entry 'state_junk' is not one a parrbm model file holds"):
        RBM.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "wrong.npz", **{**arrays, "state_W": np.zeros((7, 4), np.float32)})
    with pytest.raises(ValueError, match=r"field 'state_W' has shape \(7, 4\); the metadata say \(6, 4\)"):
        RBM.load(tmp_path / "wrong.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"holds one array \(a .npy file\), not a parrbm model file"):
        RBM.load(tmp_path / "plain.npy")
    meta = "[" * 200000 + "]" * 200000
    np.savez(tmp_path / "deep.npz", **{**arrays, "parrbm_meta": np.array(meta)})
    with pytest.raises(ValueError, match="nested deeper than"):
        RBM.load(tmp_path / "deep.npz")
    np.savez(tmp_path / "dbn-junk.npz", **arrays)
    with pytest.raises(ValueError, match="not a parrbm DBN file"):
        DBN.load(tmp_path / "dbn-junk.npz")


# ---- item 21: a plug-in that breaks its contract ------------------------------------------------

BROKEN = """
import numpy as np
from parrbm.config import ModelState
from parrbm.strategies.unit_partitioned import UnitPartitioned


class WordyStep(UnitPartitioned):
    name = "wordy-step"

    def step(self, X, i):
        super().step(X, i)
        return "fine, thanks"


class SmallModel(UnitPartitioned):
    name = "small-model"

    def gather_model(self):
        m = super().gather_model()
        return None if m is None else ModelState(W=m.W[:, :2], b=m.b, c=m.c)
"""


@pytest.mark.parametrize(
    "cls,needle",
    [
        (
            "WordyStep",
            r"strategy 'wordy-step': step\(\) must return this worker's reconstruction error sum "
            r"\(a number\), got str",
        ),
        ("SmallModel", r"strategy 'small-model': gather_model\(\) must return W of shape \(12, 8\)"),
    ],
)
@pytest.mark.parametrize("transport", ["threads", "tcp"])
def test_a_plugin_breaking_its_contract_is_named(tmp_path, cls, needle, transport):
    write(tmp_path / "broken.py", BROKEN)
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    try:
        with pytest.raises(Exception, match=needle):
            RBM(
                n_hidden=8,
                n_iter=1,
                batch_size=4,
                strategy=f"{tmp_path / 'broken.py'}:{cls}",
                workers=2,
                transport=transport,
                progress=False,
            ).fit(X)
    finally:
        sys.modules.pop("broken", None)
        registry._by_reference.pop(f"{tmp_path / 'broken.py'}:{cls}", None)


# ---- items 18, 22: messages that name what is wrong ----------------------------------------------


@pytest.mark.parametrize("value", ["kill", "kill:1", "kill:x:2", "slow:0:-5", "boom:0:1", "hang:0:2.5", "slow:0:nan"])
def test_a_malformed_fault_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("PARRBM_FAULT", value)
    X = (np.random.default_rng(0).random((40, 12)) > 0.5).astype(np.float32)
    with pytest.raises(ValueError, match=r"PARRBM_FAULT=.* is malformed; accepted: kill:R:S"):
        RBM(n_hidden=8, n_iter=1, batch_size=4, strategy="green-only", workers=2, transport="tcp", progress=False).fit(
            X
        )


def test_data_messages_name_the_offending_value():
    with pytest.raises(ValueError, match="every row of one length"):
        RBM(n_hidden=4, progress=False).fit([[0, 1, 0], [1, 0]])
    X = np.zeros((10, 4))
    X[3, 2] = 1.000001
    with pytest.raises(ValueError, match=r"got 1\.000001\d* at row 3, column 2"):
        RBM(n_hidden=4, batch_size=2, dtype="float64", progress=False).fit(X)


def test_train_names_a_misnamed_archive_and_a_fraction_that_leaves_nothing(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", a=np.zeros((10, 4)))
    (tmp_path / "x.npz").rename(tmp_path / "x.npy")
    assert main(["train", "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "x.npy: an .npz archive of several arrays" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", (np.random.default_rng(0).random((100, 4)) > 0.5).astype(np.float64))
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "y.npy"),
                "--epochs",
                "1",
                "--valid-fraction",
                "0.999",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--valid-fraction 0.999 holds out 100 of the 100 samples" in capsys.readouterr().err


# ---- item 10: a step that never returns ------------------------------------------------------------

HANGING = """
import time
from parrbm.strategies.unit_partitioned import UnitPartitioned


class Hangs(UnitPartitioned):
    name = "hangs"

    def step(self, X, i):
        while self.rank == 0 and i == 1:
            time.sleep(0.05)
        return super().step(X, i)
"""


@pytest.mark.parametrize("transport", ["threads", "tcp"])
def test_a_step_that_never_returns_fails_its_run_and_the_grid_goes_on(tmp_path, transport):
    import threading

    write(tmp_path / "hangs.py", HANGING)
    cfg = write(
        tmp_path / "c.yaml",
        TINY.replace("[serial, unit-partitioned]", "[serial, hangs.py:Hangs, green-only]")
        .replace("timeout: 20", "timeout: 3")
        .replace("workers: [1, 2]", "workers: 2")
        .replace("transport: threads", f"transport: {transport}"),
    )
    try:
        path = run_config(load_config(cfg), tmp_path / "out", progress=lambda *a: None)
        recs = [json.loads(ln) for ln in path.read_text().splitlines()]
        hung = next(r for r in recs if "hangs" in r["strategy"])
        assert hung["status"] == "error" and "worker 0" in hung["error"], hung["error"]
        assert next(r for r in recs if r["strategy"] == "green-only")["status"] == "ok"  # the grid went on
        assert not [t for t in threading.enumerate() if t.name.startswith("parrbm-worker")]
    finally:
        sys.modules.pop("hangs", None)
        for k in [k for k in registry._by_reference if "hangs" in k]:
            registry._by_reference.pop(k)


# ---- item 11: nothing of an mpi run outlives it ---------------------------------------------------


def _tagged_processes() -> list[int]:
    from parrbm.harness.launch import JOB_TAG

    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    if f"{JOB_TAG}=".encode() in fh.read():
                        out.append(int(entry.name))
            except OSError:
                pass
    return out


def _hwloc_files() -> set:
    import glob
    import tempfile

    return set(
        glob.glob(os.path.join(tempfile.gettempdir(), "hydra_hwloc_xmlfile_*"))
        + glob.glob("/tmp/hydra_hwloc_xmlfile_*")
    )


def _mpi_or_skip():
    from support import has_mpi

    if not has_mpi():
        pytest.skip("pip install '.[mpi]'")


@pytest.mark.parametrize("emulated", [False, True])
def test_a_hung_mpi_run_leaves_no_process_and_no_file(monkeypatch, emulated):
    _mpi_or_skip()
    from parrbm.harness import network

    if emulated and network.missing():
        pytest.skip(network.missing())
    before = _hwloc_files()
    monkeypatch.setenv("PARRBM_FAULT", "hang:1:1")
    X = (np.random.default_rng(0).random((40, 8)) < 0.5).astype(np.float32)
    opts = {"timeout": 3}
    if emulated:
        opts["network"] = {"bandwidth": "50MB/s"}
    with pytest.raises(Exception, match="worker 1"):
        RBM(
            n_hidden=4,
            batch_size=10,
            n_iter=1,
            strategy="green-only",
            workers=2,
            transport="mpi",
            progress=False,
            strategy_options=opts,
        ).fit(X)
    assert _tagged_processes() == []
    assert _hwloc_files() <= before


def test_a_temporary_folder_with_a_space_works_and_leaves_nothing(monkeypatch, tmp_path):
    _mpi_or_skip()
    import tempfile

    spaced = tmp_path / "with space"
    spaced.mkdir()
    monkeypatch.setenv("TMPDIR", str(spaced))
    monkeypatch.setattr(tempfile, "tempdir", None)
    X = (np.random.default_rng(0).random((40, 8)) < 0.5).astype(np.float32)
    rbm = RBM(
        n_hidden=4, batch_size=10, n_iter=1, strategy="green-only", workers=2, transport="mpi", progress=False
    ).fit(X)
    assert rbm.epochs_done_ == 1
    assert _tagged_processes() == [] and list(spaced.iterdir()) == []


def test_network_cleanup_during_a_run_stops_it_and_says_why():
    _mpi_or_skip()
    import threading
    import time

    from parrbm.harness import network

    if network.missing():
        pytest.skip(network.missing())
    mine = f"{network.PREFIX}{os.getpid()}-"
    X = (np.random.default_rng(0).random((4000, 64)) < 0.5).astype(np.float32)
    failure = {}

    def fit():
        try:
            RBM(
                n_hidden=64,
                batch_size=10,
                n_iter=50,
                strategy="green-only",
                workers=2,
                transport="mpi",
                progress=False,
                strategy_options={"network": {"bandwidth": "1MB/s"}, "timeout": 30},
            ).fit(X)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            failure["exc"] = exc

    t = threading.Thread(target=fit)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [n for n in network.namespaces() if n.startswith(mine)]:
        time.sleep(0.1)
    time.sleep(3)  # the workers are training
    removed = network.cleanup(every=True, launcher=os.getpid())  # as --all does, to this process's hosts only
    assert [n for n in removed if n.startswith(mine)]
    t.join(90)
    assert not t.is_alive()
    assert "removed while it was going" in str(failure.get("exc")), failure
    assert _tagged_processes() == []


def test_a_profile_is_read_as_bounded_data(tmp_path):
    from parrbm.analysis.timemodel import Profile

    with pytest.raises(ValueError, match=r"/dev/zero: not a parrbm machine profile \(larger than"):
        Profile.load("/dev/zero")
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested deeper than"):
        Profile.load(tmp_path / "deep.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an object"):
        Profile.load(tmp_path / "list.json")
    # the emulation's table: checked on reading, not at the first prediction
    for bad, says in [
        ({"tcp@105MB/s": {"8": [[1e6, {"*": 1.2}]]}}, "'8' is not K hosts x a factor"),
        ({"tcp@105MB/s": {"8x0.5": [[1e6, {"*": 1.2}]]}}, "'8x0.5' is not K hosts x a factor"),
        ({"tcp@105MB/s": {"8x4": [[1e6, {"*": "1.2"}]]}}, "not rows of"),
        ({"tcp@105MB/s": {"8x4": []}}, "not rows of"),
        ({"tcp@105MB/s": [1]}, "not an object"),
    ]:
        (tmp_path / "d.json").write_text(json.dumps({"links": {}, "dilated": bad}))
        with pytest.raises(ValueError, match=r"d.json: not a parrbm machine profile \(dilated.*" + re.escape(says)):
            Profile.load(tmp_path / "d.json")
    (tmp_path / "d.json").write_text(json.dumps({"links": {}, "dilated": {"t": {"8x4": [[1e6, {"*": 1.2}]]}}}))
    assert Profile.load(tmp_path / "d.json").dilation_factor("t", 8, 4.0, "green-only") == 1.2


# ---- a stranger at an MPI job's watch -----------------------------------------------------------


class _RankZero:
    """The MPI world of rank 0, alone: what a Watch asks of it."""

    def Get_rank(self):
        return 0

    def bcast(self, value, root=0):
        return value

    def allgather(self, value):
        return [value]


def test_the_watch_of_an_mpi_job_drops_strangers_and_keeps_its_books():
    """A connection that sends a byte at a time cannot slip past the job's token, and one
    that closes leaves the watch running: once the real rank 1 reports from inside
    collective #5, the watch names rank 0 (itself, outside every collective) as the one
    that stopped the collectives."""
    import socket
    import time

    from parrbm.harness.mpi import Watch

    ended = []
    w = Watch(_RankZero())
    w._end = ended.append
    try:
        w.start_fit(2, timeout=0.3)
        port = w._listener.getsockname()[1]
        forged = Watch.RECORD.pack(1, w.generation, 5, 4, b"hidden")  # worker 1 stuck inside a collective
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"x")
        time.sleep(0.2)
        s.sendall(b"y" * 15 + forged)
        time.sleep(1.0)
        s.close()
        time.sleep(0.2)
        assert ended == [] and w._thread.is_alive()
        # the real rank 1, with the token: the books still work and name it
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(w._token + forged)
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
        s.close()
        assert ended and ended[0].startswith("worker 0 did not respond") and "its peers reached #5" in ended[0], ended
    finally:
        w.close()
