"""The commands that train and look at models: ``info``, ``train``, ``plot-filters``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from parrbm.cli.errors import UsageError


def _load_data(args) -> tuple[np.ndarray, np.ndarray | None, str, tuple | None]:
    """(X, y, description, image shape) for ``parrbm train``."""
    from parrbm import datasets

    spec = args.data
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples: give a number of samples >= 1, got {args.samples}")
    try:
        if spec.endswith(".npy"):
            X, y = datasets.load_npy(spec, args.labels)
            name, shape = spec, None
        elif spec in ("digits", "nudged-digits"):
            X, y = datasets.load_digits(nudged=spec == "nudged-digits")
            name, shape = f"scikit-learn {spec} (8x8, scaled to [0, 1])", (8, 8)
        elif spec == "fashion-mnist":
            X, y = datasets.load_fashion_mnist(args.data_path)
            where = args.data_path or datasets.FASHION_MNIST_PATH
            name, shape = f"Fashion-MNIST training images from {where} (28x28, scaled to [0, 1])", (28, 28)
        elif spec == "cifar10":
            X, y = datasets.load_cifar10(args.data_path or ".", subset="train")
            name, shape = f"CIFAR-10 training images from {args.data_path or '.'}", (32, 32, 3)
        elif spec == "random-binary":
            X, y = datasets.random_binary(args.samples or 2000, 256, seed=args.seed)
            name, shape = "random binary (256 features, p = 0.5)", (16, 16)
        else:
            raise UsageError(
                f"--data: expected digits, nudged-digits, fashion-mnist, cifar10, random-binary or "
                f"a .npy file, got {spec!r}"
            )
    except datasets.DatasetError as exc:
        raise UsageError(f"--data {spec}: {exc}") from exc
    if args.samples and X.shape[0] > args.samples:
        pick = np.sort(np.random.default_rng(args.seed).permutation(X.shape[0])[: args.samples])
        X, y = X[pick], None if y is None else y[pick]
        name += f", {args.samples} random samples"
    if args.binarize:
        X = (X > 0.5).astype(np.float64)
        name += ", binarised at 0.5"
    return X, y, name, shape


def _cmd_info(args) -> int:
    import parrbm
    from parrbm import _core

    info = _core.blas_info()
    print(f"parrbm {parrbm.__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"BLAS: {info['name']} ({info['config']}), threads {info['threads']}")
    print(f"cores available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}")
    return 0


def _learning_rate(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None


def _image_shape(args, X: np.ndarray, shape):
    """--shape, checked against the data's features; else the data set's own shape."""
    if not args.shape:
        return shape
    from parrbm.pictures import parse_shape

    try:
        shape = parse_shape(args.shape)
    except ValueError as exc:
        raise UsageError(f"--shape: {exc}") from exc
    if int(np.prod(shape)) != X.shape[1]:
        raise UsageError(
            f"--shape {args.shape}: {int(np.prod(shape))} pixels, but the data have {X.shape[1]} features per sample"
        )
    return shape


def _check_out(args) -> None:
    """Where the results go must exist before the training, not after it, and a model
    trained before is not replaced without --overwrite (or --resume: the same fit)."""
    if not args.out:
        return
    out = Path(args.out)
    try:
        (out.parent if out.suffix == ".npz" else out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot create the directory ({exc.strerror or exc})") from None
    if out.suffix == ".npz" and out.is_dir():
        raise UsageError(f"--out {args.out}: is a directory; give a .npz file or a directory without .npz")
    written = [out] if out.suffix == ".npz" else [out / "model.npz", out / "report.html"]
    there = [p for p in written if p.exists()]
    if there and not (args.overwrite or args.resume):
        raise UsageError(
            f"--out {args.out}: {there[0]} already exists (a model trained before); give "
            f"--overwrite to replace it, or another --out"
        )


def _split_and_preprocess(args, X: np.ndarray):
    """(X_train, X_valid or None, the fitted preprocessor or None): --valid-fraction held
    out at random, the preprocessor fitted on the training part only."""
    from parrbm import preprocessing

    if not 0.0 <= args.valid_fraction < 1.0:
        raise UsageError(f"--valid-fraction must be in [0, 1), got {args.valid_fraction}")
    n_valid = int(round(args.valid_fraction * X.shape[0]))
    if n_valid and X.shape[0] - n_valid < max(1, args.batch_size) <= X.shape[0]:
        raise UsageError(
            f"--valid-fraction {args.valid_fraction:g} holds out {n_valid} of the {X.shape[0]} samples, "
            f"leaving {X.shape[0] - n_valid} to train on, fewer than one minibatch "
            f"(--batch-size {args.batch_size}); give a smaller fraction"
        )
    perm = np.random.default_rng([args.seed, 0x7A11D]).permutation(X.shape[0])
    X_train, X_valid = X[perm[n_valid:]], (X[perm[:n_valid]] if n_valid else None)
    pre = preprocessing.make(args.preprocess)
    if pre is not None:
        X_train = pre.fit_transform(X_train)
        X_valid = None if X_valid is None else pre.transform(X_valid)
        print(f"preprocessing: {args.preprocess} (fitted on the {X_train.shape[0]} training samples)")
    if args.visible == "binary" and pre is not None:
        raise UsageError(f"--preprocess {args.preprocess} gives real-valued data: use --visible gaussian")
    return X_train, X_valid, pre


def _estimator(args):
    """The RBM the arguments ask for; with --resume, the newest checkpoint's, carried on."""
    from parrbm import RBM
    from parrbm.rbm import latest_checkpoint

    params = dict(
        n_hidden=args.hidden,
        visible=args.visible,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        n_iter=args.epochs,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        cd_k=args.cd_k,
        persistent=args.persistent,
        statistics=args.statistics,
        sample_visible=args.sample_visible,
        dtype=args.dtype,
        random_state=args.seed,
        strategy=args.strategy,
        workers=args.workers,
        transport=args.transport,
        learning_rate_schedule=args.schedule,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        verbose=True,
        strategy_options={
            **({"hosts": args.hosts.split(",")} if args.hosts else {}),
            **({"overlap_chunks": args.overlap_chunks} if args.overlap_chunks != 1 else {}),
            **({"overlap": True} if args.overlap else {}),
        }
        or None,
    )
    rbm = RBM(**params)
    if not args.resume:
        return rbm
    if not args.checkpoint_dir:
        raise UsageError("--resume continues from --checkpoint-dir: give it")
    last = latest_checkpoint(args.checkpoint_dir) if Path(args.checkpoint_dir).is_dir() else None
    if last is None:
        print(f"no checkpoint in {args.checkpoint_dir}: starting from the beginning")
        return rbm
    try:
        rbm = RBM.load(last)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rbm.set_params(**{**params, "warm_start": True})
    print(f"resuming from {last} (epoch {rbm.epochs_done_} of {args.epochs})")
    return rbm


#: what BernoulliRBM runs: persistent CD-1, probabilities for the statistics, sampled
#: negative visible states
_BERNOULLI_ALGORITHM = {"cd_k": 1, "persistent": True, "statistics": "probabilities", "sample_visible": True}


def _print_comparison(args, rbm, X_train: np.ndarray, fit_seconds: float) -> None:
    """The fit's time, reconstruction error and pseudo-likelihood, all measured after the
    fit on the training data; with --compare-sklearn, BernoulliRBM's beside them, measured
    alike (its mean-field reconstruction, its pseudo-likelihood), and whether the two ran
    the same algorithm."""
    rows = [
        (
            f"parrbm ({args.strategy}, K={args.workers})",
            fit_seconds,
            float(np.mean((X_train.astype(np.float64) - rbm.reconstruct(X_train)) ** 2)),
            float(np.mean(rbm.score_samples(X_train))) if args.visible == "binary" else float("nan"),
        )
    ]
    if args.compare_sklearn:
        from sklearn.neural_network import BernoulliRBM

        if args.visible != "binary":
            raise UsageError("--compare-sklearn: scikit-learn's BernoulliRBM has binary visible units only")
        sk = BernoulliRBM(
            n_components=args.hidden,
            learning_rate=rbm.base_learning_rate(),
            batch_size=args.batch_size,
            n_iter=args.epochs,
            random_state=args.seed,
        )
        t0 = time.perf_counter()
        sk.fit(X_train)
        sk_seconds = time.perf_counter() - t0
        recon = 1 / (1 + np.exp(-(sk.transform(X_train) @ sk.components_ + sk.intercept_visible_)))
        rows.append(
            (
                "sklearn BernoulliRBM",
                sk_seconds,
                float(np.mean((X_train - recon) ** 2)),
                float(np.mean(sk.score_samples(X_train))),
            )
        )
    print()
    print("after the fit, on the training data (mean-field reconstruction error per element, mean pseudo-likelihood):")
    print(f"{'trainer':<30}{'fit s':>9}{'recon err':>12}{'pseudo-LL':>12}")
    for trainer, secs, err, pll in rows:
        print(f"{trainer:<30}{secs:>9.3f}{err:>12.5f}{pll:>12.3f}")
    if args.compare_sklearn:
        ratio = rows[1][1] / rows[0][1]
        verdict = f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
        ran = {
            "cd_k": args.cd_k,
            "persistent": bool(args.persistent),
            "statistics": args.statistics,
            "sample_visible": bool(args.sample_visible),
        }
        differ = [f"{k}={ran[k]!r} (BernoulliRBM: {v!r})" for k, v in _BERNOULLI_ALGORITHM.items() if ran[k] != v]
        same = "same algorithm (persistent CD-1, probability statistics, sampled negative visible states), "
        print(
            f"\nparrbm fit ({args.strategy}, {args.workers} worker(s)) is {verdict} BernoulliRBM "
            f"({'' if not differ else 'NOT the same algorithm, '}"
            f"{same if not differ else ''}same epochs, batch size and learning rate)"
        )
        if differ:
            print(
                "  parrbm ran " + ", ".join(differ) + "; for BernoulliRBM's algorithm give "
                "--cd-k 1 --persistent --statistics probabilities --sample-visible"
            )


def _save(args, rbm, *, name: str, X: np.ndarray, X_shown: np.ndarray, shape, pre, fit_seconds: float) -> None:
    """--out: the model alone (a .npz), or a folder with the model and the report."""
    out = Path(args.out)
    if out.suffix == ".npz":
        rbm.save(out)
        print(f"model saved to {out}")
        return
    from parrbm.pictures import guess_shape
    from parrbm.trainreport import write_train_report

    if shape is None:
        try:
            shape = guess_shape(X.shape[1])
        except ValueError:
            shape = None
    out.mkdir(parents=True, exist_ok=True)
    rbm.save(out / "model.npz")
    page = write_train_report(
        rbm, out, data_name=name, X=X_shown, shape=shape, preprocessor=pre, fit_seconds=fit_seconds
    )
    print(f"model saved to {out / 'model.npz'}; report: {page}")


def _cmd_train(args) -> int:
    from parrbm.rbm import DivergenceError

    X, y, name, shape = _load_data(args)
    shape = _image_shape(args, X, shape)
    _check_out(args)
    print(f"data: {name}, {X.shape[0]} samples x {X.shape[1]} features")
    X_train, X_valid, pre = _split_and_preprocess(args, X)
    rbm = _estimator(args)
    t0 = time.perf_counter()
    try:
        rbm.fit(X_train, X_valid=X_valid)
    except DivergenceError as exc:
        print(f"parrbm: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    fit_seconds = time.perf_counter() - t0
    from parrbm.harness.world import spmd_leader

    if not spmd_leader():  # the other ranks of an MPI job's fit: rank 0 reports and writes
        return 0
    _print_comparison(args, rbm, X_train, fit_seconds)
    if args.out:
        _save(
            args,
            rbm,
            name=name,
            X=X,
            X_shown=X_valid if X_valid is not None else X_train,
            shape=shape,
            pre=pre,
            fit_seconds=fit_seconds,
        )
    return 0


def _cmd_plot_filters(args) -> int:
    from parrbm.dbn import DBN
    from parrbm.pictures import parse_shape, plot_filters
    from parrbm.rbm import RBM

    try:
        try:
            model = RBM.load(args.model)
        except ValueError as first:
            try:
                model = DBN.load(args.model)
            except ValueError:
                raise first from None
        shape = parse_shape(args.shape) if args.shape else None
        plot_filters(model, args.out, shape=shape, n=args.n)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"filters: {args.out}")
    return 0


class _DefaultsAndExamples(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help, and the examples as they are written."""


def add_parsers(sub) -> None:
    from parrbm.config import TRANSPORTS

    info = sub.add_parser("info", help="show the build: version, BLAS, cores", epilog="example: parrbm info")
    info.set_defaults(func=_cmd_info)

    tr = sub.add_parser(
        "train",
        help="train an RBM on a data set: monitors, checkpoints, model and report",
        formatter_class=_DefaultsAndExamples,
        epilog="examples:\n"
        "  parrbm train --data digits --hidden 100 --epochs 20 --out run/\n"
        "  parrbm train --data fashion-mnist --visible-type gaussian --preprocess zca "
        "--strategy green-only --workers 2\n"
        "  parrbm train --persistent --statistics probabilities --sample-visible "
        "--compare-sklearn   # BernoulliRBM's algorithm, beside it",
    )
    tr.add_argument(
        "--data",
        default="digits",
        help="digits, nudged-digits, fashion-mnist, cifar10 (with --data-path), random-binary, or a "
        ".npy file (n_samples, n_features)",
    )
    tr.add_argument(
        "--data-path",
        help="cifar10: the cifar-10-python.tar.gz archive or its extracted folder; "
        "fashion-mnist: the folder of its idx files (default: Debian's "
        "/usr/share/datasets/fashion-mnist)",
    )
    tr.add_argument("--labels", help="with a .npy --data: a .npy file of labels (n_samples,)")
    tr.add_argument("--samples", type=int, help="train on this many randomly chosen samples")
    tr.add_argument("--binarize", action="store_true", help="threshold the data at 0.5")
    tr.add_argument(
        "--preprocess",
        default="none",
        choices=["none", "standardize", "zca"],
        help="per-dimension standardisation or ZCA whitening (Gaussian visible units)",
    )
    tr.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="held out for the free-energy gap and held-out reconstruction error",
    )
    tr.add_argument("--hidden", type=int, default=100, metavar="H", help="hidden units")
    tr.add_argument(
        "--visible-type",
        "--visible",
        dest="visible",
        default="binary",
        choices=["binary", "gaussian"],
        help="the visible units' type (--visible: the same, as earlier releases spelt it)",
    )
    tr.add_argument("--epochs", type=int, default=20, help="passes over the training data")
    tr.add_argument("--batch-size", "--batch", type=int, default=10, metavar="M", help="cases per minibatch")
    tr.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default="auto",
        help="a positive number, or auto: 0.1 for binary visible units, 0.01 for Gaussian",
    )
    tr.add_argument(
        "--schedule",
        default="constant",
        choices=["constant", "linear", "exponential"],
        help="learning-rate schedule over the epochs",
    )
    tr.add_argument("--momentum", type=float, default=0.0, help="momentum of the weight updates, in [0, 1)")
    tr.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight cost on the weights")
    tr.add_argument("--cd-k", type=int, default=1, help="Gibbs steps of the negative phase (CD-k)")
    tr.add_argument(
        "--persistent", action="store_true", help="persistent CD: batch-size chains carried from minibatch to minibatch"
    )
    tr.add_argument(
        "--statistics",
        default="samples",
        choices=["samples", "probabilities"],
        help="learning statistics from sampled hidden states (one bit per unit on the wire) or from probabilities",
    )
    tr.add_argument(
        "--sample-visible",
        action="store_true",
        help="with --statistics probabilities: sample the negative visible states "
        "(with --persistent: scikit-learn BernoulliRBM's algorithm)",
    )
    tr.add_argument(
        "--precision",
        "--dtype",
        dest="dtype",
        default="float32",
        choices=["float32", "float64"],
        help="floating-point precision of the model and the arithmetic (--dtype: the same)",
    )
    tr.add_argument(
        "--strategy",
        default="serial",
        help="serial, unit-partitioned, per-update-sync, purple-only, green-only, parameter-averaging, "
        "or a plug-in (module:Class)",
    )
    tr.add_argument("--workers", type=int, default=1, metavar="K", help="workers of a parallel strategy")
    tr.add_argument(
        "--transport",
        default="threads",
        choices=list(TRANSPORTS),
        help="threads of this process, tcp processes, or mpi ranks",
    )
    tr.add_argument(
        "--hosts",
        help="with --transport tcp or mpi: the hosts to start the workers on, one a "
        "host in order, e.g. node0,node1 (ssh key login; the same environment "
        "at the same path on each)",
    )
    tr.add_argument(
        "--overlap",
        action="store_true",
        help="each exchange in flight while the workers compute what does not need it "
        "(lockstep's results, bit for bit)",
    )
    tr.add_argument(
        "--overlap-chunks",
        type=int,
        default=1,
        help="the minibatch's cases in this many chunks, each chunk's exchange on the wire while the "
        "next computes (more than 1 implies --overlap; default: %(default)s)",
    )
    tr.add_argument("--seed", type=int, default=0, help="the seed of every random draw and of the data's split")
    tr.add_argument("--checkpoint-dir", help="save epoch-NNNN.npz here every --checkpoint-every epochs")
    tr.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
    tr.add_argument("--shape", help="image shape for the pictures, e.g. 8x8 or 32x32x3 (default: guessed)")
    tr.add_argument(
        "--out",
        help="a directory for model.npz and report.html (curves, filters, "
        "reconstructions), or a .npz file for the model alone",
    )
    tr.add_argument("--overwrite", action="store_true", help="replace a model and report already in --out")
    tr.add_argument(
        "--compare-sklearn",
        action="store_true",
        help="also fit scikit-learn's BernoulliRBM (same epochs, batch size and learning rate) and "
        "measure both alike after the fit; it runs persistent CD-1 with probability statistics: "
        "give --persistent --statistics probabilities --sample-visible to run its algorithm",
    )
    tr.set_defaults(func=_cmd_train)

    pf = sub.add_parser(
        "plot-filters",
        help="an RBM's (or a DBN's first layer's) filters as image tiles",
        epilog="example: parrbm plot-filters run/model.npz --out filters.png --shape 8x8",
    )
    pf.add_argument("model", help="a model .npz written by 'parrbm train' or RBM.save / DBN.save")
    pf.add_argument("--out", required=True, help="the PNG (or SVG, PDF) to write")
    pf.add_argument("--shape", help="image shape, e.g. 8x8 or 32x32x3 (default: guessed from the features)")
    pf.add_argument("--n", type=int, default=100, help="how many filters")
    pf.set_defaults(func=_cmd_plot_filters)
