"""The ``parrbm`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """A bad argument, file or config: reported in one line, exit code 2."""


def _load_data(spec: str, binarize: bool) -> tuple[np.ndarray, str]:
    if spec == "digits":
        from sklearn.datasets import load_digits

        X = load_digits().data / 16.0
        name = "scikit-learn digits (8x8, scaled to [0, 1])"
    else:
        path = Path(spec)
        if path.suffix != ".npy":
            raise UsageError(f"--data: expected 'digits' or a .npy file, got {spec!r}")
        if not path.is_file():
            raise UsageError(f"--data: no such file: {path}")
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--data: {path} is not a readable .npy array ({exc})") from exc
        name = str(path)
    if binarize:
        X = (X > 0.5).astype(np.float64)
        name += ", binarised at 0.5"
    return X, name


def _cmd_info(args) -> int:
    import parrbm
    from parrbm import _core

    info = _core.blas_info()
    print(f"parrbm {parrbm.__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"BLAS: {info['name']} ({info['config']}), threads {info['threads']}")
    print(f"cores available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}")
    return 0


def _cmd_train(args) -> int:
    from parrbm import RBM

    X, name = _load_data(args.data, args.binarize)
    rbm = RBM(n_hidden=args.hidden, visible=args.visible, learning_rate=args.learning_rate,
              batch_size=args.batch_size, n_iter=args.epochs, momentum=args.momentum,
              weight_decay=args.weight_decay, cd_k=args.cd_k, persistent=args.persistent,
              statistics=args.statistics, dtype=args.dtype, random_state=args.seed,
              strategy=args.strategy, workers=args.workers, verbose=True)
    print(f"data: {name}, {X.shape[0]} samples x {X.shape[1]} features")
    t0 = time.perf_counter()
    try:
        rbm.fit(X)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    fit_seconds = time.perf_counter() - t0
    rows = [("parrbm", fit_seconds, rbm.reconstruction_error_[-1] if rbm.reconstruction_error_ else float("nan"),
             float(np.mean(rbm.score_samples(X))) if args.visible == "binary" else float("nan"))]
    if args.compare_sklearn:
        from sklearn.neural_network import BernoulliRBM

        sk = BernoulliRBM(n_components=args.hidden, learning_rate=args.learning_rate,
                          batch_size=args.batch_size, n_iter=args.epochs, random_state=args.seed)
        t0 = time.perf_counter()
        sk.fit(X)
        sk_seconds = time.perf_counter() - t0
        recon = 1 / (1 + np.exp(-(sk.transform(X) @ sk.components_ + sk.intercept_visible_)))
        rows.append(("sklearn BernoulliRBM", sk_seconds, float(np.mean((X - recon) ** 2)),
                     float(np.mean(sk.score_samples(X)))))
    print()
    print(f"{'trainer':<22}{'fit s':>9}{'recon err':>12}{'pseudo-LL':>12}")
    for trainer, secs, err, pll in rows:
        print(f"{trainer:<22}{secs:>9.3f}{err:>12.5f}{pll:>12.3f}")
    if args.compare_sklearn:
        ratio = rows[1][1] / rows[0][1]
        verdict = f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
        print(f"\nparrbm fit ({args.strategy}, {args.workers} worker(s)) is {verdict} BernoulliRBM "
              f"(same epochs, batch size and learning rate)")
    if args.out:
        rbm.save(args.out)
        print(f"model saved to {args.out}")
    return 0


def _cmd_run(args) -> int:
    from parrbm.harness.experiment import ConfigError, load_config, read_records, run_config, summary_table

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        path = run_config(cfg, Path(args.out), resume=args.resume, progress=progress,
                          calibrate=not args.no_calibrate)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        print("interrupted: the results recorded so far are kept; --resume continues", file=sys.stderr)
        return 130
    from parrbm.analysis.compare import load_profile_for

    print(summary_table(read_records(path), load_profile_for(path)))
    print(f"\nresults: {path}")
    return 0


def _cmd_table(args) -> int:
    from parrbm.analysis.commands import load_results
    from parrbm.harness.experiment import summary_table

    records, profile = load_results(args.results, args.profile, need_ok=False)
    try:
        print(summary_table(records, profile))
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{args.results}: not a parrbm results file (missing {exc})") from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    import parrbm

    p = argparse.ArgumentParser(
        prog="parrbm",
        description="Train Restricted Boltzmann Machines with interchangeable parallelization "
                    "strategies and compare them.")
    p.add_argument("--version", action="version", version=f"parrbm {parrbm.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="show the build: version, BLAS, cores")
    info.set_defaults(func=_cmd_info)

    run = sub.add_parser("run", help="run a YAML-defined comparison and record every run")
    run.add_argument("config", help="YAML file (see configs/)")
    run.add_argument("--out", default="results", help="directory for <config name>.jsonl")
    run.add_argument("--resume", action="store_true", help="skip the runs already recorded")
    run.add_argument("--no-calibrate", action="store_true",
                     help="do not measure this machine for the time model first")
    run.set_defaults(func=_cmd_run)

    table = sub.add_parser("table", help="print the comparison of a results file")
    table.add_argument("results", help="a .jsonl file written by 'parrbm run'")
    table.add_argument("--profile", help="machine profile for the predictions (default: the one "
                                          "beside the results, <name>.profile.json)")
    table.set_defaults(func=_cmd_table)

    from parrbm.analysis.commands import add_parsers

    add_parsers(sub)

    tr = sub.add_parser("train", help="train an RBM on a data set and report its learning",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--data", default="digits", help="'digits' or a .npy file (n_samples, n_features)")
    tr.add_argument("--binarize", action="store_true", help="threshold the data at 0.5")
    tr.add_argument("--hidden", type=int, default=100)
    tr.add_argument("--visible", default="binary", choices=["binary", "gaussian"])
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=10)
    tr.add_argument("--learning-rate", type=float, default=0.06)
    tr.add_argument("--momentum", type=float, default=0.0)
    tr.add_argument("--weight-decay", type=float, default=0.0)
    tr.add_argument("--cd-k", type=int, default=1)
    tr.add_argument("--persistent", action="store_true")
    tr.add_argument("--statistics", default="samples", choices=["samples", "probabilities"])
    tr.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    tr.add_argument("--strategy", default="serial")
    tr.add_argument("--workers", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", help="save the fitted model to this .npz file")
    tr.add_argument("--compare-sklearn", action="store_true",
                    help="also fit scikit-learn's BernoulliRBM with the same settings")
    tr.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"parrbm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
