"""The commands of comparisons: ``run``, ``table``, ``network``."""

from __future__ import annotations

import sys
from pathlib import Path

from parrbm.cli.errors import UsageError


def _cmd_run(args) -> int:
    from parrbm.analysis.table import summary_table
    from parrbm.harness.experiment import (ConfigError, load_config, read_results, release_servers, run_config,
                                          serve_grid)
    from parrbm.harness.mpi import spmd_world

    world = spmd_world()
    if world is not None and world[0] != 0:
        # one of the ranks of 'mpiexec -n N parrbm run': rank 0 drives, this rank serves
        serve_grid()
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        release_servers()
        raise UsageError(str(exc)) from exc
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        path = run_config(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite,
                          progress=progress, calibrate=not args.no_calibrate)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        print("interrupted: the results recorded so far are kept; --resume continues", file=sys.stderr)
        return 130
    from parrbm.analysis.compare import load_profile_for

    records, notes = read_results(path)
    print(summary_table(records, load_profile_for(path), notes=notes))
    print(f"\nresults: {path}")
    return 0


def _cmd_table(args) -> int:
    from parrbm.cli.analysis import load_results
    from parrbm.analysis.table import summary_table

    records, profile, notes = load_results(args.results, args.profile, need_ok=False, with_notes=True)
    try:
        print(summary_table(records, profile, notes=notes))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{args.results}: not a parrbm results file ({type(exc).__name__}: {exc})") from exc
    return 0


def _cmd_network_cleanup(args) -> int:
    from parrbm.harness.network import cleanup, missing

    why = missing()
    if why:
        print(f"parrbm network cleanup: {why}", file=sys.stderr)
        return 2
    removed = cleanup(every=args.all)
    print(f"removed {len(removed)} namespace(s)" + "".join(f"\n  {n}" for n in removed))
    return 0


def _cmd_network_show(args) -> int:
    from parrbm.harness.network import PREFIX, namespaces

    ours = [n for n in namespaces() if n.startswith(PREFIX)]
    print("\n".join(ours) if ours else "no emulated network on this machine")
    return 0


def add_parsers(sub) -> None:
    run = sub.add_parser("run", help="run a YAML-defined comparison and record every run")
    run.add_argument("config", help="YAML file (see configs/)")
    run.add_argument("--out", default="results", help="directory for <config name>.jsonl")
    run.add_argument("--resume", action="store_true",
                     help="continue the results file: skip the runs already recorded (the config must "
                          "be the one that wrote it)")
    run.add_argument("--overwrite", action="store_true",
                     help="start the results file again; the old one is kept beside it, renamed")
    run.add_argument("--no-calibrate", action="store_true",
                     help="do not measure this machine for the time model first")
    run.set_defaults(func=_cmd_run)

    table = sub.add_parser("table", help="print the comparison of a results file")
    table.add_argument("results", help="a .jsonl file written by 'parrbm run'")
    table.add_argument("--profile", help="machine profile for the predictions (default: the one "
                                          "beside the results, <name>.profile.json)")
    table.set_defaults(func=_cmd_table)

    net = sub.add_parser("network", help="the emulated hosts of tcp and mpi runs (network.emulate)")
    net_sub = net.add_subparsers(dest="network_command", metavar="ACTION", required=True)
    clean = net_sub.add_parser("cleanup", help="remove the namespaces, links and qdiscs of emulated networks "
                                               "whose run is gone (a run killed outright)")
    clean.add_argument("--all", action="store_true", help="also those of runs still going")
    clean.set_defaults(func=_cmd_network_cleanup)
    show = net_sub.add_parser("show", help="list the emulated networks' namespaces on this machine")
    show.set_defaults(func=_cmd_network_show)
