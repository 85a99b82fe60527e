"""The parrbm console script."""

import subprocess
import sys

import numpy as np
import pytest

import parrbm
from parrbm.cli import main


def run(*args):
    # From outside the checkout, as an installed command runs: the source tree must not
    # shadow the installed package.
    import tempfile

    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-m", "parrbm.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
        )


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "train" in r.stdout and "info" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"parrbm {parrbm.__version__}"


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    # the BLAS the core was built against and the threads it uses, whichever it is
    # (OpenBLAS from the wheel, MKL, a system BLAS): what _core reports, not a vendor
    from parrbm import _core

    info = _core.blas_info()
    assert info["name"] and f"BLAS: {info['name']} ({info['config']}), threads {info['threads']}" in out


def test_train_on_digits_and_save(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--out", str(model), "--compare-sklearn"]) == 0
    out = capsys.readouterr().out
    assert "[RBM] Iteration 2, pseudo-likelihood = " in out and "sklearn BernoulliRBM" in out
    # CD-1 with sampled statistics is not BernoulliRBM's algorithm: said, with the flags that are
    assert "NOT the same algorithm" in out and "--persistent --statistics probabilities --sample-visible" in out
    assert parrbm.RBM.load(model).components_.shape == (16, 64)


def test_train_on_npy(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((40, 7)) < 0.5).astype(np.float32))
    assert main(["train", "--data", str(path), "--epochs", "1", "--hidden", "3", "--batch-size", "8"]) == 0
    assert "40 samples x 7 features" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--data", "missing.npy"], "no such file"),
        (
            ["train", "--data", "data.csv"],
            "expected digits, nudged-digits, fashion-mnist, cifar10, random-binary or a .npy",
        ),
        (["train", "--hidden", "0"], "'n_hidden'"),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_corrupt_npy_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    assert main(["train", "--data", str(bad)]) == 2
    assert "not a readable .npy" in capsys.readouterr().err
