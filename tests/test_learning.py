"""The RBM as a learner: data sets, preprocessing, monitors, the divergence guard,
schedules, checkpoints and resume, DBN stacking, pictures and ``parrbm train``."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from parrbm import DBN, RBM, DivergenceError, datasets, latest_checkpoint
from parrbm.cli import main
from parrbm.pictures import as_images, guess_shape, parse_shape, plot_filters, tile
from parrbm.preprocessing import Standardizer, ZCAWhitener

PNG = b"\x89PNG\r\n\x1a\n"


# ---- data sets --------------------------------------------------------------------------------


def test_digits_and_their_nudged_copies():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,) and X.min() == 0 and X.max() == 1
    Xn, yn = datasets.load_digits(nudged=True)
    assert Xn.shape == (5 * 1797, 64) and np.array_equal(yn, np.tile(y, 5))
    assert np.array_equal(Xn[:1797], X)
    img, moved = X[0].reshape(8, 8), Xn[1797:].reshape(4, 1797, 8, 8)[:, 0]
    up = np.vstack([img[1:], np.zeros((1, 8))])  # shift (-1, 0): row r takes row r + 1
    right = np.hstack([np.zeros((8, 1)), img[:, :-1]])  # shift (0, 1)
    assert np.array_equal(moved[0], up) and np.array_equal(moved[3], right)


def make_cifar(root, n=6, seed=0):
    """A CIFAR-10 archive in the real format (pickled dicts of uint8 rows), n images a batch."""
    rng = np.random.default_rng(seed)
    folder = root / datasets.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    batches = {}
    for name in (*datasets.CIFAR10_TRAIN, datasets.CIFAR10_TEST):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        (folder / name).write_bytes(pickle.dumps({b"batch_label": name.encode(), b"data": data, b"labels": labels}))
        batches[name] = (data, labels)
    archive = root / datasets.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=datasets.CIFAR10_FOLDER)
    return folder, archive, batches


def _write_idx(path, array, *, gz):
    import gzip

    raw = (
        bytes([0, 0, 0x08, array.ndim])
        + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        + array.astype(np.uint8).tobytes()
    )
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 5), ("test", 3))}
    labels = {s: rng.integers(0, 10, len(images[s])) for s in images}
    for s, (img, lab) in datasets.FASHION_MNIST_FILES.items():
        _write_idx(tmp_path / (img + (".gz" if gz else "")), images[s], gz=gz)
        _write_idx(tmp_path / (lab + (".gz" if gz else "")), labels[s], gz=gz)
    X, y = datasets.load_fashion_mnist(tmp_path)
    assert X.shape == (5, 784) and X.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(X, images["train"].reshape(5, 784) / 255.0)
    np.testing.assert_array_equal(y, labels["train"])
    X, y = datasets.load_fashion_mnist(tmp_path, subset="all")
    assert X.shape == (8, 784) and list(y[5:]) == list(labels["test"])


def test_fashion_mnist_errors_say_where_and_how_to_install(tmp_path):
    with pytest.raises(
        datasets.DatasetError,
        match=r"is not a folder; install it with 'apt-get install "
        r"dataset-fashion-mnist'",
    ):
        datasets.load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(datasets.DatasetError, match="lacks train-images-idx3-ubyte"):
        datasets.load_fashion_mnist(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)), gz=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4), gz=False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(datasets.DatasetError, match="truncated or damaged"):
        datasets.load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(datasets.DatasetError, match="not an idx file of unsigned bytes"):
        datasets.load_fashion_mnist(tmp_path)
    with pytest.raises(datasets.DatasetError, match="subset must be"):
        datasets.load_fashion_mnist(tmp_path, subset="validation")


@pytest.mark.skipif(
    not __import__("pathlib").Path(datasets.FASHION_MNIST_PATH).is_dir() and not __import__("os").environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_as_debian_installs_it():
    """Where Debian's package puts it (CI installs the package: there it must be found)."""
    X, y = datasets.load_fashion_mnist()
    assert X.shape == (60000, 784) and y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    assert 0.0 <= X.min() and X.max() == 1.0
    X_test, y_test = datasets.load_fashion_mnist(subset="test")
    assert X_test.shape == (10000, 784) and np.bincount(y_test).tolist() == [1000] * 10


def test_cifar10_from_archive_folder_and_parent(tmp_path):
    folder, archive, batches = make_cifar(tmp_path)
    expect = np.concatenate([batches[n][0] for n in datasets.CIFAR10_TRAIN]) / 255.0
    for where in (archive, folder, tmp_path):
        X, y = datasets.load_cifar10(where)
        assert X.shape == (30, 3072) and np.array_equal(X, expect)
        assert list(y) == sum((batches[n][1] for n in datasets.CIFAR10_TRAIN), [])
    Xt, yt = datasets.load_cifar10(archive, subset="test")
    assert Xt.shape == (6, 3072) and list(yt) == batches["test_batch"][1]
    # channel-major rows -> (h, w, 3) images: pixel (0, 1) red is value 1, green is 1024 + 1
    img = datasets.cifar10_images(X[:1])[0]
    assert img.shape == (32, 32, 3) and img[0, 1, 0] == X[0, 1] and img[0, 1, 1] == X[0, 1025]


def test_cifar10_errors_say_where_and_what(tmp_path):
    with pytest.raises(datasets.DatasetError, match="does not exist.*cifar-10-python.tar.gz"):
        datasets.load_cifar10(tmp_path / "nowhere")
    with pytest.raises(datasets.DatasetError, match=r"looked in .*no complete data set.*does not download"):
        datasets.load_cifar10(tmp_path)
    folder, archive, _ = make_cifar(tmp_path / "c")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(datasets.DatasetError, match="data_batch_3 is not a CIFAR-10 python batch"):
        datasets.load_cifar10(folder)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(
        datasets.DatasetError, match=r"data_batch_3 is not a .*carries (posix|os)\.system, which is not data"
    ):
        datasets.load_cifar10(folder)
    assert not marker.exists()  # read as data, never run
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(datasets.DatasetError, match=r"uint8 of shape \(n, 3072\)"):
        datasets.load_cifar10(folder)
    bad = tmp_path / "x.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(datasets.DatasetError, match="lacks data_batch_2"):
        datasets.load_cifar10(bad)
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(datasets.DatasetError, match="not a tar archive"):
        datasets.load_cifar10(tmp_path / "plain.txt")


def test_npy_and_random_binary(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1]))
    X, y = datasets.load_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    assert X.shape == (4, 3) and list(y) == [0, 1, 0, 1]
    np.save(tmp_path / "v.npy", np.arange(3.0))
    with pytest.raises(datasets.DatasetError, match="must be 2-D"):
        datasets.load_npy(tmp_path / "v.npy")
    with pytest.raises(datasets.DatasetError, match="4 labels expected"):
        datasets.load_npy(tmp_path / "x.npy", tmp_path / "v.npy")
    with pytest.raises(datasets.DatasetError, match="no such file"):
        datasets.load_npy(tmp_path / "missing.npy")
    # damaged files, every one refused by name and closed (numpy's own open of a damaged
    # archive is left open)
    np.savez(tmp_path / "z.npz", a=np.zeros(100), b=np.ones(100))
    raw = (tmp_path / "z.npz").read_bytes()
    fds = set(os.listdir("/proc/self/fd"))
    for name, content in [("half.npy", raw[: len(raw) // 2]), ("head.npy", raw[:40]), ("npz.npy", raw)]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(datasets.DatasetError, match=f"{name}: (not a readable .npy array|an .npz archive)"):
            datasets.load_npy(tmp_path / name)
    assert set(os.listdir("/proc/self/fd")) == fds
    R, _ = datasets.random_binary(4000, 50, density=0.3, seed=1)
    assert set(np.unique(R)) == {0.0, 1.0} and abs(R.mean() - 0.3) < 0.01
    with pytest.raises(datasets.DatasetError, match="unknown data set"):
        datasets.load("mnist")


# ---- preprocessing ----------------------------------------------------------------------------


def test_standardizer_and_zca_invert_exactly():
    X, _ = datasets.load_digits()
    s = Standardizer().fit(X)
    Z = s.transform(X)
    live = X.std(axis=0) > 1e-2
    assert np.allclose(Z.mean(axis=0), 0, atol=1e-12) and np.allclose(Z.std(axis=0)[live], 1)
    assert np.abs(Z).max() < 100  # the always-0 border pixels are not blown up
    assert np.allclose(s.inverse_transform(Z), X)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5000, 6)) @ rng.standard_normal((6, 6))
    zca = ZCAWhitener(epsilon=1e-8).fit(A)
    W = zca.transform(A)
    assert np.allclose(np.cov(W, rowvar=False), np.eye(6), atol=1e-5)
    assert np.allclose(zca.whiten_, zca.whiten_.T) and np.allclose(zca.inverse_transform(W), A)
    # on digits (64 pixels, some constant) epsilon keeps the whitened pixels finite and invertible
    d = ZCAWhitener().fit(X)
    assert np.all(np.isfinite(d.transform(X))) and np.allclose(d.inverse_transform(d.transform(X)), X)
    with pytest.raises(ValueError, match="'epsilon' must be a positive number"):
        ZCAWhitener(epsilon=0).fit(X)
    with pytest.raises(ValueError, match="'min_std' must be a positive number"):
        Standardizer(min_std=-1).fit(X)


# ---- monitors, guard, schedules --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return X[:1500], X[1500:], y


def test_history_has_every_monitor(digits):
    X, Xv, _ = digits
    rbm = RBM(n_hidden=32, n_iter=4, learning_rate=0.05, random_state=0, progress=False).fit(X, X_valid=Xv)
    h = rbm.history_
    assert [e["epoch"] for e in h] == [1, 2, 3, 4] and rbm.epochs_done_ == 4
    assert [e["reconstruction_error"] for e in h] == rbm.reconstruction_error_
    assert h[-1]["reconstruction_error"] < h[0]["reconstruction_error"]
    assert all(e["pseudo_likelihood"] < 0 and np.isfinite(e["free_energy_gap"]) for e in h)
    assert all(0 < e["valid_reconstruction_error"] < 1 and e["max_abs_weight"] > 0 for e in h)
    g = RBM(n_hidden=16, visible="gaussian", n_iter=2, random_state=0, progress=False)
    g.fit(Standardizer().fit_transform(X))
    assert g.history_[0]["pseudo_likelihood"] is None and g.history_[0]["free_energy_gap"] is None


@pytest.mark.parametrize("pre", [Standardizer(), ZCAWhitener()], ids=["standardised", "whitened"])
def test_gaussian_rbm_is_stable_at_the_default_learning_rate(digits, pre):
    X = pre.fit_transform(digits[0])
    rbm = RBM(n_hidden=64, visible="gaussian", n_iter=6, random_state=0, progress=False).fit(X)
    err = rbm.reconstruction_error_
    assert rbm.base_learning_rate() == 0.01 and all(np.isfinite(err))
    assert err[-1] < 0.9 * err[0] and all(b <= a * 1.02 for a, b in zip(err, err[1:]))


def test_the_guard_stops_an_absurd_learning_rate_and_keeps_the_last_good_model(digits, tmp_path):
    X = Standardizer().fit_transform(digits[0])
    rbm = RBM(
        n_hidden=32,
        visible="gaussian",
        learning_rate=0.01,
        n_iter=2,
        random_state=0,
        progress=False,
        checkpoint_dir=str(tmp_path / "ck"),
    ).fit(X)
    good_W = rbm.components_.copy()
    rbm.save(tmp_path / "good.npz")
    rbm.set_params(learning_rate=5.0, warm_start=True, n_iter=4)
    with pytest.raises(
        DivergenceError,
        match=r"diverged in epoch 3 at learning_rate=5.*left as after epoch 2"
        r".*no checkpoint was written for epoch 3.*Try learning_rate=0.5",
    ):
        rbm.fit(X)
    assert np.array_equal(rbm.components_, good_W) and rbm.epochs_done_ == 2
    assert latest_checkpoint(tmp_path / "ck").name == "epoch-0002.npz"
    assert np.array_equal(RBM.load(tmp_path / "good.npz").components_, good_W)
    # binary units saturate instead of overflowing: the weight bound catches them
    with pytest.raises(DivergenceError, match=r"epoch 1 .*a weight reached .*max_abs_weight=100"):
        RBM(n_hidden=16, learning_rate=1000.0, n_iter=3, random_state=0, progress=False).fit(digits[0])
    # and a broken model is never written
    rbm._state.W[0, 0] = np.nan
    with pytest.raises(DivergenceError, match="NaN or inf.*was not written"):
        rbm.save(tmp_path / "good.npz")
    assert np.array_equal(RBM.load(tmp_path / "good.npz").components_, good_W)


def test_learning_rate_schedules(digits):
    r = RBM(learning_rate=0.1, n_iter=4, learning_rate_schedule="linear")
    assert [r.learning_rate_at(e) for e in range(4)] == pytest.approx([0.1, 0.075, 0.05, 0.025])
    r.set_params(learning_rate_schedule="exponential", learning_rate_decay=0.5)
    assert [r.learning_rate_at(e) for e in range(3)] == pytest.approx([0.1, 0.05, 0.025])
    fit = RBM(n_hidden=8, n_iter=3, learning_rate_schedule=lambda e: 0.1 / (e + 1), random_state=0, progress=False).fit(
        digits[0]
    )
    assert [h["learning_rate"] for h in fit.history_] == pytest.approx([0.1, 0.05, 0.1 / 3])
    with pytest.raises(ValueError, match="'learning_rate_schedule' must be one of"):
        RBM(learning_rate_schedule="cosine").fit(digits[0])


# ---- checkpoints and resume ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(
            momentum=0.5,
            persistent=True,
            statistics="probabilities",
            sample_visible=True,
            learning_rate_schedule="linear",
        ),
        dict(strategy="green-only", workers=2, momentum=0.5),
    ],
    ids=["cd1", "pcd-momentum-schedule", "green-only-K2"],
)
def test_a_resumed_fit_equals_an_uninterrupted_one(digits, tmp_path, kw):
    X = digits[0][:600]
    params = dict(
        n_hidden=24, n_iter=4, batch_size=20, learning_rate=0.05, random_state=3, dtype="float64", progress=False, **kw
    )
    whole = RBM(**params).fit(X)
    cut = RBM(**params, checkpoint_dir=str(tmp_path), checkpoint_every=1)
    real = cut._train_epoch

    def interrupted(*a):  # the run is killed during its third epoch
        if cut.epochs_done_ == 2:
            raise KeyboardInterrupt
        return real(*a)

    cut._train_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        cut.fit(X)
    last = latest_checkpoint(tmp_path)
    assert last.name == "epoch-0002.npz" and sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0001.npz",
        "epoch-0002.npz",
    ]
    resumed = RBM.load(last).set_params(
        warm_start=True, n_iter=4, learning_rate_schedule=params.get("learning_rate_schedule", "constant")
    )
    resumed.fit(X)
    assert resumed.epochs_done_ == 4 and resumed.n_steps_ == whole.n_steps_
    for a, b in zip(resumed._state.arrays().values(), whole._state.arrays().values()):
        assert np.array_equal(a, b)
    assert [h["reconstruction_error"] for h in resumed.history_] == [h["reconstruction_error"] for h in whole.history_]


def test_checkpoints_keep_the_two_newest(digits, tmp_path):
    RBM(n_hidden=8, n_iter=5, checkpoint_dir=str(tmp_path), checkpoint_every=2, random_state=0, progress=False).fit(
        digits[0][:200]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0004.npz", "epoch-0005.npz"]


def test_progress_bar_only_when_asked_or_on_a_terminal(digits, capsys):
    RBM(n_hidden=8, n_iter=2, random_state=0, progress=True).fit(digits[0][:200])
    assert "epoch" in capsys.readouterr().err
    RBM(n_hidden=8, n_iter=2, random_state=0).fit(digits[0][:200])  # "auto", stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_sampled_visible_states_reproduce_serial_on_every_strategy(digits):
    from parrbm.strategies import PARALLEL_STRATEGIES

    X = digits[0][:400]
    params = dict(
        n_hidden=20,
        n_iter=2,
        batch_size=20,
        persistent=True,
        statistics="probabilities",
        sample_visible=True,
        dtype="float64",
        random_state=5,
        progress=False,
    )
    serial = RBM(**params).fit(X)
    plain = RBM(**{**params, "sample_visible": False}).fit(X)
    assert not np.array_equal(serial.components_, plain.components_)
    for s in PARALLEL_STRATEGIES:
        par = RBM(**params, strategy=s, workers=2).fit(X)
        assert np.allclose(par.components_, serial.components_, rtol=0, atol=1e-12), s
    with pytest.raises(ValueError, match="'sample_visible' is for binary visible units"):
        RBM(visible="gaussian", sample_visible=True).fit(X)


# ---- DBN --------------------------------------------------------------------------------------


def test_dbn_stacks_trains_any_strategy_and_round_trips(digits, tmp_path):
    X = digits[0][:600]
    dbn = DBN(
        hidden_layer_sizes=(32, 16),
        n_iter=3,
        learning_rate=0.05,
        random_state=0,
        progress=False,
        layer_params=[{}, {"strategy": "green-only", "workers": 2}],
    ).fit(X)
    assert [r.n_hidden for r in dbn.rbms_] == [32, 16] and dbn.rbms_[1].strategy == "green-only"
    top = dbn.transform(X)
    assert top.shape == (600, 16) and np.all((top >= 0) & (top <= 1))
    assert np.allclose(dbn.rbms_[1].transform(dbn.rbms_[0].transform(X)), top)
    assert dbn.reconstruct(X).shape == X.shape
    dbn.save(tmp_path / "dbn.npz")
    back = DBN.load(tmp_path / "dbn.npz")
    assert back.hidden_layer_sizes == (32, 16) and np.array_equal(back.transform(X), top)
    g = DBN(hidden_layer_sizes=(20, 10), visible="gaussian", n_iter=2, random_state=0, progress=False)
    g.fit(Standardizer().fit_transform(X))
    assert g.rbms_[0].visible == "gaussian" and g.rbms_[1].visible == "binary"
    # each layer's own default rate: 0.1 would make the Gaussian first layer diverge
    assert [r.base_learning_rate() for r in g.rbms_] == [0.01, 0.1]
    with pytest.raises(ValueError, match=r"layer_params\[1\] has unknown keys \['hidden'\]"):
        DBN(hidden_layer_sizes=(4, 4), layer_params=[{}, {"hidden": 3}]).fit(X)
    with pytest.raises(ValueError, match="must be a list of 2 dicts"):
        DBN(hidden_layer_sizes=(4, 4), layer_params=[{}]).fit(X)
    dbn.rbms_[0].save(tmp_path / "one.npz")
    with pytest.raises(ValueError, match="use RBM.load"):
        DBN.load(tmp_path / "one.npz")


# ---- pictures and the command line --------------------------------------------------------------


def test_filter_pictures(digits, tmp_path):
    assert guess_shape(64) == (8, 8) and guess_shape(3072) == (32, 32, 3)
    with pytest.raises(ValueError, match="give the image shape"):
        guess_shape(60)
    assert parse_shape("32x32x3") == (32, 32, 3)
    with pytest.raises(ValueError, match="expected HxW or HxWx3"):
        parse_shape("8by8")
    mosaic = tile(np.ones((5, 4, 4)), cols=3, pad=1)
    assert mosaic.shape == (2 * 5 + 1, 3 * 5 + 1) and mosaic[1:5, 1:5].min() == 1
    rbm = RBM(n_hidden=25, n_iter=2, random_state=0, progress=False).fit(digits[0])
    plot_filters(rbm, tmp_path / "grey.png")
    colour = RBM(n_hidden=9, n_iter=1, random_state=0, progress=False).fit(np.random.default_rng(0).random((40, 3072)))
    plot_filters(colour, tmp_path / "colour.png")
    for p in ("grey.png", "colour.png"):
        assert (tmp_path / p).read_bytes()[:8] == PNG
    assert as_images(colour.components_, (32, 32, 3)).shape == (9, 32, 32, 3)


def test_train_command_writes_model_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    ck = tmp_path / "ck"
    argv = [
        "train",
        "--data",
        "nudged-digits",
        "--samples",
        "1500",
        "--hidden",
        "25",
        "--epochs",
        "3",
        "--strategy",
        "green-only",
        "--workers",
        "2",
        "--checkpoint-dir",
        str(ck),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "1500 samples x 64 features" in text and "pseudo-likelihood = " in text and "free energy gap = " in text
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "green-only, K = 2" in page
    model = RBM.load(out / "model.npz")
    assert model.epochs_done_ == 3 and model.strategy == "green-only"
    assert main([*argv[: argv.index("--epochs") + 1], "5", *argv[argv.index("--epochs") + 2 :], "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out and RBM.load(out / "model.npz").epochs_done_ == 5
    assert main(["plot-filters", str(out / "model.npz"), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--visible",
                "gaussian",
                "--preprocess",
                "zca",
                "--epochs",
                "2",
                "--hidden",
                "16",
            ]
        )
        == 0
    )
    assert "preprocessing: zca" in capsys.readouterr().out


def test_train_command_on_cifar_and_bad_input(tmp_path, capsys):
    _, archive, _ = make_cifar(tmp_path, n=8)
    assert (
        main(
            [
                "train",
                "--data",
                "cifar10",
                "--data-path",
                str(archive),
                "--visible",
                "gaussian",
                "--preprocess",
                "standardize",
                "--epochs",
                "2",
                "--hidden",
                "8",
                "--batch-size",
                "4",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "filters.png").read_bytes()[:8] == PNG
    capsys.readouterr()
    assert main(["train", "--data", "cifar10", "--data-path", str(tmp_path / "none")]) == 2
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err
    assert main(["train", "--preprocess", "zca"]) == 2
    assert "use --visible gaussian" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--learning-rate", "1000", "--epochs", "2"]) == 1
    assert "diverged in epoch 1" in capsys.readouterr().err
    assert main(["plot-filters", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "x.png")]) == 2
