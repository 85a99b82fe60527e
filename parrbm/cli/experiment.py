"""The commands of comparisons: ``run``, ``table``, ``network``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from parrbm.cli.errors import UsageError


def _cmd_run(args) -> int:
    from parrbm.analysis.table import summary_table
    from parrbm.harness.comparison_config import ConfigError, load_config
    from parrbm.harness.experiment import read_results, run_config, serve_grid
    from parrbm.harness.job import release_servers
    from parrbm.harness.world import spmd_world

    world = spmd_world()
    if world is not None and world[0] != 0:
        # one of the ranks of 'mpiexec -n N parrbm run': rank 0 drives, this rank serves
        serve_grid()
        return 0
    from parrbm.shipped import find_config

    try:
        cfg = load_config(find_config(args.config))
    except (ConfigError, FileNotFoundError) as exc:
        release_servers()
        raise UsageError(str(exc)) from exc
    from parrbm.analysis.calibrate import calibrate_for_config
    from parrbm.cli.progress import RunProgress

    progress = RunProgress()
    calibrate = None if args.no_calibrate else (lambda *a, **kw: calibrate_for_config(*a, **kw, fresh=args.recalibrate))
    try:
        path = run_config(
            cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite, progress=progress, calibrate=calibrate
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        progress.close()
        print(
            "interrupted: the results recorded so far are kept (with the repeats each run finished); "
            "--resume continues",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.close()
    from parrbm.analysis.compare import load_profile_for

    records, notes = read_results(path)
    print(summary_table(records, load_profile_for(path), notes=notes))
    print(f"\nresults: {path}")
    return 0


def _cmd_configs(args) -> int:
    from parrbm.shipped import find_config, shipped_configs

    if args.name:
        try:
            print(find_config(args.name).read_text(), end="")
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        return 0
    rows = shipped_configs()
    width = max(len(n) for n, _, _ in rows)
    for name, description, _ in rows:
        print(f"{name:<{width}}  {description}")
    print(
        f"\nparrbm run NAME runs one; parrbm configs NAME > mine.yaml copies it to edit "
        f"(they are in {rows[0][2].parent})"
    )
    return 0


def _cmd_table(args) -> int:
    from parrbm.analysis.table import summary_table
    from parrbm.cli.analysis import load_results

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
    cgroups = [n for n in removed if n.startswith("cgroup ")]
    # a dilated network's cgroups: a CPU cap a host, and one keeping their CPUs busy
    spinners = [n for n in cgroups if n.endswith("-idle")]
    caps = len(cgroups) - len(spinners)
    print(
        f"removed {len(removed) - len(cgroups)} namespace(s)"
        + (f" and {caps} CPU cap(s)" if caps else "")
        + (f" and {len(spinners)} set(s) of loops keeping their CPUs busy" if spinners else "")
        + "".join(f"\n  {n}" for n in removed)
    )
    return 0


def _cmd_network_show(args) -> int:
    from parrbm.harness import cgroups
    from parrbm.harness.network import PREFIX, namespaces

    ours = [n for n in namespaces() if n.startswith(PREFIX)]
    # dilated hosts' CPU caps, and the loops keeping their CPUs busy
    ours += [
        f"cgroup {path}" + (" (keeps the hosts' CPUs busy)" if path.name.endswith("-idle") else "")
        for path, _ in cgroups.ours(PREFIX)
    ]
    print("\n".join(ours) if ours else "no emulated network on this machine")
    return 0


def _cmd_network_cluster(args) -> int:
    from parrbm.analysis.timemodel import parse_bandwidth
    from parrbm.harness.cluster import EmulatedCluster, missing
    from parrbm.harness.network import LinkSpec, NetworkError

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError(
            "network cluster: give the command to run on the login node after '--', e.g. "
            "parrbm network cluster --nodes 3 -- mpiexec -hosts node0,node1,node2 -n 3 "
            "parrbm run CONFIG"
        )
    if not 1 <= args.nodes <= 250:
        raise UsageError(f"network cluster --nodes: {args.nodes}; between 1 and 250 are possible")
    why = missing()
    if why:
        print(f"parrbm network cluster: {why}", file=sys.stderr)
        return 2
    try:
        link = LinkSpec(parse_bandwidth(args.bandwidth) if args.bandwidth else None)
    except ValueError as exc:
        raise UsageError(f"network cluster --bandwidth: {exc}") from None
    try:
        with EmulatedCluster(args.nodes, link) as cluster:
            shaped = f"links shaped to {args.bandwidth}" if args.bandwidth else "unshaped links"
            print(
                f"parrbm network cluster: {', '.join(cluster.node_names)} and login ({shaped}; each host its own "
                f"sshd, host name, /tmp and /dev/shm; the rest of the file system seen by all); running on login: "
                f"{' '.join(command)}",
                file=sys.stderr,
                flush=True,
            )
            return cluster.run("login", command, cwd=os.getcwd()).returncode
    except NetworkError as exc:
        print(f"parrbm network cluster: {exc}", file=sys.stderr)
        return 1


def add_parsers(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run a YAML-defined comparison and record every run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  parrbm run quick --out results            # a shipped config, by name\n"
        "  parrbm run mine.yaml --out results --resume # continue a results file\n"
        "  mpiexec -f hostfile -n 4 parrbm run quick   # on the ranks of an MPI job",
    )
    run.add_argument("config", help="a YAML file, or the name of a shipped config (parrbm configs lists them)")
    run.add_argument("--out", default="results", help="directory for <config name>.jsonl")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the results file: skip the runs already recorded (the config must be the one that wrote it)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="start the results file again; the old one is kept beside it, renamed"
    )
    run.add_argument("--no-calibrate", action="store_true", help="do not measure this machine for the time model first")
    run.add_argument(
        "--recalibrate",
        action="store_true",
        help="measure this machine again, though a calibration of it is kept in the cache "
        "(~/.cache/parrbm, or $XDG_CACHE_HOME/parrbm)",
    )
    run.set_defaults(func=_cmd_run)

    configs = sub.add_parser(
        "configs",
        help="list the shipped comparison configs, or print one",
        epilog="examples: parrbm configs; parrbm configs quick > mine.yaml",
    )
    configs.add_argument("name", nargs="?", help="print this config's YAML")
    configs.set_defaults(func=_cmd_configs)

    table = sub.add_parser(
        "table", help="print the comparison of a results file", epilog="example: parrbm table results/quick.jsonl"
    )
    table.add_argument("results", help="a .jsonl file written by 'parrbm run'")
    table.add_argument(
        "--profile",
        help="machine profile for the predictions (default: the one beside the results, <name>.profile.json)",
    )
    table.set_defaults(func=_cmd_table)

    net = sub.add_parser(
        "network",
        help="the emulated hosts of tcp and mpi runs (network.emulate)",
        epilog="examples: parrbm network show; sudo parrbm network cleanup",
    )
    net_sub = net.add_subparsers(dest="network_command", metavar="ACTION", required=True)
    clean = net_sub.add_parser(
        "cleanup",
        help="remove the namespaces, links and qdiscs of emulated networks whose run is gone (a run killed outright)",
        epilog="example: sudo parrbm network cleanup",
    )
    clean.add_argument("--all", action="store_true", help="also those of runs still going")
    clean.set_defaults(func=_cmd_network_cleanup)
    show = net_sub.add_parser(
        "show", help="list the emulated networks' namespaces on this machine", epilog="example: parrbm network show"
    )
    show.set_defaults(func=_cmd_network_show)
    cluster = net_sub.add_parser(
        "cluster",
        help="run a command on the login node of an emulated cluster, then remove the cluster",
        description="Emulated hosts node0 .. node{N-1} and login on one switch, each with its own sshd (key login "
        "between them), host name, /tmp and /dev/shm, so that a job started from login runs as on a "
        "cluster without a shared temporary folder. The command runs on login with this environment "
        "and working directory; the cluster goes when it ends. Needs root and openssh-server.",
        epilog="example: parrbm network cluster --nodes 3 --bandwidth 105MB/s -- "
        "mpiexec -hosts node0,node1,node2 -n 3 parrbm run configs/cluster-smoke.yaml --out results",
    )
    cluster.add_argument("--nodes", type=int, default=3, help="compute nodes (default: 3)")
    cluster.add_argument("--bandwidth", help="every host's link, e.g. 105MB/s, 1Gbit/s (default: unshaped)")
    cluster.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run on login")
    cluster.set_defaults(func=_cmd_network_cluster)
