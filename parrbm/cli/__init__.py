"""The ``parrbm`` command line: one subcommand per function, each module of this package
adding its own (``train``: info, train, plot-filters; ``experiment``: run, table,
network; ``analysis``: cost, calibrate, predict, advise, plot, report)."""

from __future__ import annotations

import argparse
import os
import sys

from parrbm.cli.errors import UsageError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    import parrbm
    from parrbm.cli import analysis, experiment, train

    p = argparse.ArgumentParser(
        prog="parrbm",
        description="Train Restricted Boltzmann Machines with interchangeable parallelization "
        "strategies and compare them.",
    )
    p.add_argument("--version", action="version", version=f"parrbm {parrbm.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (train, experiment, analysis):
        module.add_parsers(sub)
    return p


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C: workers are stopped, job folders removed, and every
    # result recorded so far is kept
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    on_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"parrbm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parrbm: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "parrbm: error: out of memory: the data or the model do not fit in this machine's memory "
            "(fewer samples, a smaller model or float32)",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # the reader went away (| head): no traceback, no more output
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # the file system said no: name the file and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"parrbm: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
