"""YAML-defined comparisons: validate a config, expand its grid, run every point, and
append one JSON record per run to a results file (docs/design.md section 6).

Record schema (one JSON object per line):

    run_id        stable key of the grid point (``--resume`` skips ids already recorded)
    config        the config's name;  status  "ok" | "error";  error  message or null
    identity      the experiment: resolved model, data (an npy file by its sha256), training
                  (but timeout) and options; ``--resume`` refuses a file of another identity
    nulls         where a value was NaN or infinite: field -> why it is null (absent if none)
    strategy, workers, transport, batch_size
    model         {visible, hidden, visible_type, precision, statistics, cd_k}
    training      {steps, warmup, repeats, learning_rate, momentum, weight_decay, sync_every, seed}
    options       the strategy options;  data  {kind, cases, path}
    environment   {cpu, cores, blas, python, numpy, parrbm, platform}
    metrics       {bytes_per_step, bytes_per_sync, bytes_per_step_formula, bytes_per_sync_formula,
                   formula_mismatch (what moved unlike the declared closed form), wire_bytes_per_step,
                   step_seconds {median, p10, p90 over the timed steps of all repeats,
                   repeat_medians}, compute_seconds, comm_seconds, wait_seconds
                   (per step, slowest worker), cases_per_second, speedup_vs_serial, speedup_vs_k1,
                   efficiency, speedup_meaningful, replica_divergence, reconstruction_error,
                   peak_rss_bytes [per worker], memory_bytes [per worker]}
    started, finished   ISO times
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from parrbm.config import TRANSPORTS
from parrbm.harness.results import ResultsError
from parrbm.strategies.base import OPTION, OPTIONS



class ConfigError(ValueError):
    """A config that cannot be run, with the file, the field's path and what is allowed."""


def _list_of(item: dict) -> dict:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1, "uniqueItems": True}]}


_POS_INT = {"type": "integer", "minimum": 1}
_SEED = {"type": "integer", "minimum": 0, "maximum": 2 ** 64 - 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model", "grid"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "model": {
            "type": "object", "additionalProperties": False, "required": ["visible", "hidden"],
            "properties": {
                "visible": _POS_INT, "hidden": _POS_INT,
                "visible_type": {"enum": ["binary", "gaussian"]},
                "precision": {"enum": ["float32", "float64"]},
                "statistics": {"enum": ["samples", "probabilities"]},
                "cd_k": {"type": "integer", "minimum": 1, "maximum": 10000},  # rules.MAX_CD_K
                "gaussian_noise": {"type": "boolean"},
            },
        },
        "data": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["random-binary", "random-gaussian", "digits", "npy"]},
                "path": {"type": "string"}, "cases": _POS_INT, "seed": _SEED,
            },
        },
        "training": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "batch_size": _POS_INT, "steps": _POS_INT, "cases": _POS_INT,
                "warmup": {"type": "integer", "minimum": 0},
                "learning_rate": {"type": "number", "exclusiveMinimum": 0},
                "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "weight_decay": {"type": "number", "minimum": 0},
                "sync_every": OPTION["sync_every"].schema(),
                "seed": _SEED,
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "blas_threads": _POS_INT, "repeats": _POS_INT,
                "engine": {},  # gone: refused by name in _check_sections
            },
        },
        "tcp": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "listen": {"type": "string", "minLength": 1},
                "hosts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "launcher": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "python": {"type": "string", "minLength": 1},
                "job_root": {"type": "string", "minLength": 1},
            },
        },
        "mpi": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "hosts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "hostfile": {"type": "string", "minLength": 1},
                "mpiexec": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "listen": {"type": "string", "minLength": 1},
                "python": {"type": "string", "minLength": 1},
            },
        },
        "network": {
            "type": "object", "additionalProperties": False, "required": ["emulate"],
            "properties": {
                "emulate": {
                    "type": "object", "additionalProperties": False, "required": ["bandwidth"],
                    "properties": {
                        # a rate with its unit (105MB/s), or "unshaped"; a list is a grid axis
                        "bandwidth": _list_of({"type": "string", "minLength": 1}),
                        "latency": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
        "options": {  # the strategy options' table (sync_every is a training setting here)
            "type": "object", "additionalProperties": False,
            "properties": {o.name: o.schema() for o in OPTIONS if o.name != "sync_every"},
        },
        "grid": {
            "type": "object", "additionalProperties": False, "required": ["strategy", "workers"],
            "properties": {
                "strategy": _list_of({"type": "string", "minLength": 1}),
                "workers": _list_of(_POS_INT),
                "batch_size": _list_of(_POS_INT),
                "precision": _list_of({"enum": ["float32", "float64"]}),
                "visible_type": _list_of({"enum": ["binary", "gaussian"]}),
                "transport": _list_of({"enum": list(TRANSPORTS)}),
                "overlap_chunks": _list_of(OPTION["overlap_chunks"].schema()),
            },
        },
    },
}

#: timed minibatch steps of a run when the config gives neither training.steps nor training.cases
DEFAULT_STEPS = 20

DEFAULTS = {
    "model": {"visible_type": "binary", "precision": "float32", "statistics": "samples", "cd_k": 1,
              "gaussian_noise": False},
    "data": {"kind": "random-binary", "seed": 0},
    "training": {"batch_size": 100, "warmup": 1, "learning_rate": 0.1, "momentum": 0.0,
                 "weight_decay": 0.0, "sync_every": 1, "seed": 0, "timeout": 60.0, "blas_threads": 1,
                 "repeats": 1},
    "options": {},
    "tcp": {},
}


#: a config's ``name`` is the stem of its results file: a plain name, never a path
NAME_RULE = ("a plain file stem of letters, digits, '.', '_', '+' and '-', starting with a letter "
             "or digit (no path separators, no '..', not empty or hidden), at most 100 characters")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_name(name) -> str | None:
    """Why ``name`` cannot name a results file (None if it can)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        return f"{name!r} is not allowed: a name is {NAME_RULE}"
    return None


class _Refused(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML allows it silently:
    the last one would win)."""


def _no_duplicates(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader reports it
            break
        if first is not None:
            raise _Refused(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on "
                                f"line {first}); give each key once")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _no_aliases(self, *a, **kw):
    # An alias (*name) repeats a node by reference; nested ones expand exponentially when
    # the config is walked. A config has no need of them.
    if self.check_event(yaml.events.AliasEvent):
        event = self.peek_event()
        raise _Refused(f"line {event.start_mark.line + 1}: aliases (*{event.anchor}) are not supported "
                            f"in a config; write the values out")
    return yaml.composer.Composer.compose_node(self, *a, **kw)


_StrictLoader.compose_node = _no_aliases


def read_yaml(path: Path):
    """The YAML document of a file, or ConfigError naming the file and what is wrong."""
    from parrbm.harness.results import read_input

    raw_bytes = read_input(path, "a config file", ConfigError)
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8: byte {exc.start} is "
                          f"0x{raw_bytes[exc.start]:02x})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a YAML text file (it holds NUL bytes)")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None


def _integers(value, schema: dict):
    """Integral floats (20.0, 2e3) where the schema wants an integer become ints; any
    other float stays and the schema refuses it."""
    if isinstance(value, float) and value.is_integer() and _wants_integer(schema):
        return int(value)
    if isinstance(value, dict) and "properties" in schema:
        return {k: _integers(v, schema["properties"].get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items") or next((b.get("items") for b in schema.get("oneOf", ())
                                            if b.get("type") == "array"), None)
        if items is not None:
            return [_integers(v, items) for v in value]
    return value


def _non_finite(value, at=()):
    """(path, value) of the first NaN or infinity in a config (the schema's bounds do not
    catch them: NaN compares false with everything)."""
    if isinstance(value, float) and not math.isfinite(value):
        return list(at), value
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, at + (k,))
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _non_finite(v, at + (i,))
            if found:
                return found
    return None


def _wants_integer(schema: dict) -> bool:
    return schema.get("type") == "integer" or any(b.get("type") == "integer" for b in schema.get("oneOf", ()))


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config; ConfigError names the file and the field. Every
    check that needs no measurement is made here, before anything runs."""
    import jsonschema

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with 'model' and 'grid', got {type(raw).__name__}")
    where = _non_finite(raw)
    if where is not None:
        raise ConfigError(f"{path}: {_where(where[0])}: {where[1]!r} is not allowed: numbers must be finite")
    raw = _integers(raw, SCHEMA)
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw), key=lambda e: list(e.path))
    if errors:
        parts, e = _deepest(errors[0])
        raise ConfigError(f"{path}: {_where(parts)}: {_explain(e)}")
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if isinstance(values, dict) and section in cfg:
            cfg[section].update(values)
        else:
            cfg[section] = values
    if "name" in cfg:
        why = check_name(cfg["name"])
        if why:
            raise ConfigError(f"{path}: name: {why}")
    else:
        cfg["name"] = path.stem
        why = check_name(cfg["name"])
        if why:
            raise ConfigError(f"{path}: the file's name {path.stem!r} cannot name the results file: "
                              f"give 'name:', {NAME_RULE}")
    _check_sections(path, cfg, given_data=raw.get("data") or {})
    cfg["source"] = str(path)
    return cfg


def _check_sections(path: Path, cfg: dict, *, given_data: dict) -> None:
    """The rules between fields that a schema cannot say."""
    training = cfg["training"]
    if "engine" in training:
        raise ConfigError(f"{path}: training.engine: no longer an option: every strategy has one description, "
                          f"its Python module over the core's kernels, and runs it on every transport; remove it")
    if "steps" in training and "cases" in training:
        raise ConfigError(f"{path}: training: give 'steps' or 'cases', not both")
    if "steps" not in training and "cases" not in training:
        training["steps"] = DEFAULT_STEPS
    _check_data(path, cfg["data"], given_data)
    _resolve_strategies(path, cfg["grid"])
    points = grid_points(cfg)
    _check_sizes(path, cfg, points)
    _check_points(path, cfg, points)
    _check_memory(path, cfg, points)
    if any(p["transport"] == "mpi" for p in points):
        from parrbm.harness.comm import CommError
        from parrbm.harness.launch import mpiexec

        try:
            mpiexec()
            import mpi4py  # noqa: F401
        except (CommError, ImportError):
            raise ConfigError(f"{path}: grid.transport: 'mpi' needs mpi4py and mpiexec on this machine: "
                              f"pip install 'parrbm[mpi]' (or leave mpi out of the grid)") from None
    _check_tcp(path, cfg["tcp"], uses_tcp=any(p["transport"] == "tcp" for p in points))
    if "mpi" in cfg:
        _check_mpi(path, cfg, points)
    if "network" in cfg:
        _check_network(path, cfg, points)


def _check_data(path: Path, data: dict, given_data: dict) -> None:
    """data.path only with kind npy (resolved beside the config, and a .npy file that
    exists); cases and seed only for the random kinds."""
    given_kind = "kind" in given_data
    if "path" in data and data["kind"] != "npy":
        raise ConfigError(f"{path}: data.path: is read only with kind 'npy' (data.kind is "
                          f"{data['kind']!r}{'' if given_kind else ' by default'}); "
                          f"add 'kind: npy' or remove the path")
    if data["kind"] == "npy":
        if "path" not in data:
            raise ConfigError(f"{path}: data.path: required for kind 'npy'")
        npy = (path.parent / data["path"]) if not Path(data["path"]).is_absolute() else Path(data["path"])
        if npy.suffix != ".npy":
            raise ConfigError(f"{path}: data.path: {npy} is not a .npy file (an array saved with numpy.save)")
        if not npy.is_file():
            raise ConfigError(f"{path}: data.path: no such file: {npy}")
        data["path"] = str(npy.resolve())
    for key in ("cases", "seed"):
        if data["kind"] in ("npy", "digits") and key in given_data:
            own = "the rows of the .npy file are" if data["kind"] == "npy" else "the digits data set has"
            raise ConfigError(f"{path}: data.{key}: is for the random data kinds; {own} the cases "
                              f"(remove '{key}')")


def _resolve_strategies(path: Path, grid: dict) -> None:
    """grid.strategy as the workers import it: a registered name, or module:Class (a
    plug-in file beside the config made absolute)."""
    from parrbm.strategies.registry import StrategyError, load, reference

    listed = grid["strategy"] if isinstance(grid["strategy"], list) else [grid["strategy"]]
    named, by_name = [], {}
    for i, s in enumerate(listed):
        module, _, cls = s.rpartition(":")
        if module.endswith(".py") and not Path(module).is_absolute():
            s = f"{(path.parent / module).resolve()}:{cls}"
        at = f"[{i}]" if isinstance(grid["strategy"], list) else ""
        try:
            strategy = load(s)  # the config names it: a plug-in is imported
            named.append(reference(strategy))
        except StrategyError as exc:
            raise ConfigError(f"{path}: grid.strategy{at}: {exc}") from None
        other = by_name.setdefault(strategy.name, (at, named[-1]))
        if other[1] != named[-1]:
            raise ConfigError(f"{path}: grid.strategy{at}: {named[-1]!r} is named {strategy.name!r}, as is "
                              f"grid.strategy{other[0]} ({other[1]!r}); the strategies of a grid have names "
                              f"of their own")
    grid["strategy"] = named if isinstance(grid["strategy"], list) else named[0]


def _check_sizes(path: Path, cfg: dict, points: list[dict]) -> None:
    """At least one minibatch of cases, and the digits data set's own sizes."""
    data, training, model, grid = cfg["data"], cfg["training"], cfg["model"], cfg["grid"]
    batches = sorted({p["batch_size"] for p in points})
    where_m = "grid.batch_size" if "batch_size" in grid else "training.batch_size"
    if "cases" in data and data["cases"] < batches[-1]:
        raise ConfigError(f"{path}: data.cases: {data['cases']} cases are fewer than one minibatch "
                          f"({where_m} {batches[-1]}); give at least {batches[-1]} cases")
    if "cases" in training and training["cases"] < batches[-1]:
        raise ConfigError(f"{path}: training.cases: {training['cases']} cases are fewer than one minibatch "
                          f"({where_m} {batches[-1]}); give at least {batches[-1]}, or 'steps'")
    if data["kind"] == "digits" and batches[-1] > 1797:
        raise ConfigError(f"{path}: {where_m}: {batches[-1]} is larger than the 1797 cases of the digits data set")
    if data["kind"] == "digits" and model["visible"] != 64:
        raise ConfigError(f"{path}: model.visible: the digits data set has 64 features, got {model['visible']}")


def _check_points(path: Path, cfg: dict, points: list[dict]) -> None:
    """Every grid point's split of the units and its strategy's options."""
    from parrbm.harness.runner import check_options
    from parrbm.strategies import StrategyOptions
    from parrbm.strategies.rules import split_refusal

    model, training = cfg["model"], cfg["training"]
    for p in points:
        why = split_refusal(p["strategy"], n_visible=model["visible"], n_hidden=model["hidden"],
                            batch_size=p["batch_size"], workers=p["workers"])
        if why:
            raise ConfigError(f"{path}: grid.workers: {p['strategy']} at K = {p['workers']}, minibatch "
                              f"{p['batch_size']}: {why}")
    for p in points:
        if p["strategy"] == "serial":
            continue
        try:
            check_options(_spec_for(cfg, p), p["strategy"], p["workers"], p["transport"], point_options(cfg, p))
        except ValueError as exc:
            raise ConfigError(f"{path}: {p['strategy']} at K = {p['workers']} on {p['transport']}: {exc}") from None
    from parrbm.strategies.rules import unused_options

    strategies = list(dict.fromkeys(p["strategy"] for p in points if not p.get("baseline")))
    unused = unused_options(StrategyOptions(sync_every=training["sync_every"], **cfg["options"]), strategies)
    if unused:
        field = "training.sync_every" if unused[0].startswith("'sync_every'") else f"options.{unused[0].split(chr(39))[1]}"
        raise ConfigError(f"{path}: {field}: the option {unused[0]} is read by no strategy of this grid "
                          f"({', '.join(strategies)}); remove it, or add a strategy that reads it")
    if "overlap_chunks" in cfg["grid"] and not any(_overlaps(s) for s in strategies):
        raise ConfigError(f"{path}: grid.overlap_chunks: no strategy of this grid ({', '.join(strategies)}) "
                          f"overlaps its exchanges; those that do: unit-partitioned, green-only")


#: a run this long is refused before anything runs, priced at FAST_MACHINE_FLOPS
MAX_RUN_SECONDS = 7 * 86400
FAST_MACHINE_FLOPS = 1e13


def _check_memory(path: Path, cfg: dict, points: list[dict]) -> None:
    """Refuse a model or data set that cannot fit in this machine's memory, before
    anything is allocated."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    V, H = cfg["model"]["visible"], cfg["model"]["hidden"]
    tr, data = cfg["training"], cfg["data"]
    for p in points:
        pb = 8 if p["precision"] == "float64" else 4
        m = p["batch_size"]
        steps = tr.get("steps") or max(1, tr.get("cases", m) // m)
        where = "training.steps" if tr.get("steps") else "training.cases" if tr.get("cases") else "training.warmup"
        # every step's GEMMs, on a machine far faster than this one: a run this long is a typo
        flops = (tr["warmup"] + steps) * tr["repeats"] * 2.0 * m * V * H * (2 * cfg["model"]["cd_k"] + 1)
        if flops / FAST_MACHINE_FLOPS > MAX_RUN_SECONDS:
            raise ConfigError(f"{path}: {where}: {tr['warmup']} warm-up + {steps} timed steps x "
                              f"{tr['repeats']} repeats of CD-{cfg['model']['cd_k']} on {V} x {H}, minibatch {m}, "
                              f"is {flops:.3g} floating-point operations: more than {MAX_RUN_SECONDS // 86400} days "
                              f"at {FAST_MACHINE_FLOPS:.0e} flop/s; give fewer steps (or cases, warmup, "
                              f"repeats, model.cd_k)")
        cases = data.get("cases", (tr["warmup"] + steps) * m) if data["kind"] != "npy" else 0
        # W and its increment or second copy, per worker (at most two full copies in all),
        # the data set in float64 while it is made, the minibatch buffers, and the order
        # of the cases (8 bytes each)
        parts = {"model.visible x model.hidden": 3 * V * H * pb + 4 * m * (V + H) * pb,
                 "data.cases" if "cases" in data else where: cases * V * 8}
        parts[where] = parts.get(where, 0) + (tr["warmup"] + steps) * m * 8
        need = sum(parts.values())
        if need > total:
            field = max(parts, key=parts.get)
            raise ConfigError(f"{path}: {field}: model.visible x model.hidden ({V} x {H}) with {cases:g} cases of "
                              f"data and {tr['warmup'] + steps:g} minibatch steps of {m} needs about "
                              f"{need / 2**30:.3g} GiB, more than this machine's {total / 2**30:.1f} GiB")


def _check_tcp(path: Path, tcp: dict, *, uses_tcp: bool) -> None:
    import shutil

    if "python" in tcp and not tcp.get("hosts"):
        found = shutil.which(tcp["python"])
        if not found:
            raise ConfigError(f"{path}: tcp.python: {tcp['python']!r} is not an executable on this machine "
                              f"(the tcp workers run it here: give a Python with parrbm installed)")
    if tcp.get("hosts"):
        launcher = tcp.get("launcher", ["ssh"])[0]
        if not shutil.which(launcher):
            raise ConfigError(f"{path}: tcp.launcher: {launcher!r} is not an executable on this machine")
    if "job_root" in tcp:
        raise ConfigError(f"{path}: tcp.job_root: no longer needed: tcp workers on other hosts get their job, "
                          f"data and commands over their ssh session, and no folder is shared; remove it")


def _check_mpi(path: Path, cfg: dict, points: list[dict]) -> None:
    """The ``mpi`` section: where parrbm starts its mpi workers (hosts or a hostfile)."""
    import shutil

    section = cfg["mpi"]
    if not any(p["transport"] == "mpi" for p in points):
        raise ConfigError(f"{path}: mpi: says where the mpi workers run, but the grid runs none (give "
                          f"grid.transport mpi)")
    if "hostfile" in section:  # beside the config, as data.path
        hostfile = Path(section["hostfile"])
        section["hostfile"] = str(hostfile if hostfile.is_absolute() else (path.parent / hostfile).resolve())
    try:
        mpi_hosts(section)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if section.get("mpiexec") and not shutil.which(section["mpiexec"][0]):
        raise ConfigError(f"{path}: mpi.mpiexec: {section['mpiexec'][0]!r} is not an executable on this machine")
    if "network" in cfg:
        raise ConfigError(f"{path}: mpi: the mpi workers run on the hosts it names; network.emulate puts them "
                          f"on emulated hosts of this machine: give one of the two")
    if _job_world() is not None:
        raise ConfigError(f"{path}: mpi: this comparison runs on the ranks your MPI launcher started, where it "
                          f"put them; leave out the mpi section (or start parrbm run without mpiexec)")


def mpi_hosts(section: dict | None):
    """The config's ``mpi`` section as :class:`parrbm.harness.remote.MPIHosts`, or None."""
    if not section:
        return None
    from parrbm.harness.remote import MPIHosts

    return MPIHosts(**section)


def _check_network(path: Path, cfg: dict, points: list[dict]) -> None:
    from parrbm.units import parse_bandwidth, parse_latency
    from parrbm.harness.network import missing

    emulate = cfg["network"]["emulate"]
    listed = emulate["bandwidth"] if isinstance(emulate["bandwidth"], list) else [emulate["bandwidth"]]
    rates = []
    for i, bw in enumerate(listed):
        at = f"[{i}]" if isinstance(emulate["bandwidth"], list) else ""
        from parrbm.harness.network import shaping_refusal

        try:
            rates.append(None if bw == UNSHAPED else parse_bandwidth(bw))
        except ValueError as exc:
            raise ConfigError(f"{path}: network.emulate.bandwidth{at}: {exc} (or {UNSHAPED!r})") from None
        why = shaping_refusal(rates[-1])
        if why:
            raise ConfigError(f"{path}: network.emulate.bandwidth{at}: {bw!r}: {why}")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"{path}: network.emulate.bandwidth: {listed} names a bandwidth twice")
    if "latency" in emulate:
        from parrbm.harness.network import shaping_refusal

        try:
            why = shaping_refusal(None, parse_latency(emulate["latency"]))
        except ValueError as exc:
            raise ConfigError(f"{path}: network.emulate.latency: {exc}") from None
        if why:
            raise ConfigError(f"{path}: network.emulate.latency: {emulate['latency']!r}: {why}")
    if not any(p["bandwidth"] is not None for p in points):
        raise ConfigError(f"{path}: network.emulate: puts tcp and mpi workers on emulated hosts, but the grid "
                          f"runs none (give grid.transport tcp or mpi, and workers >= 2)")
    if cfg["tcp"].get("hosts"):
        raise ConfigError(f"{path}: network.emulate: the workers run on emulated hosts of this machine; "
                          f"tcp.hosts says they run elsewhere: give one of the two")
    why = missing()
    if why:
        raise ConfigError(f"{path}: network.emulate: {why}")


def _deepest(e):
    """(path, error) of the error to report: for 'one value or a list of them', the
    error inside the branch the value was meant for."""
    parts = list(e.path)
    while e.validator == "oneOf" and e.context:
        branch = 1 if isinstance(e.instance, list) else 0
        inner = [c for c in e.context if c.schema_path and c.schema_path[0] == branch]
        if not inner:
            break
        c = max(inner, key=lambda c: len(c.path))
        parts += list(c.path)
        e = c
    return parts, e


def _where(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _explain(e) -> str:
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        return f"{e.message}; allowed: {', '.join(allowed)}"
    if e.validator == "enum":
        return f"{e.instance!r} is not allowed; allowed: {', '.join(map(repr, e.validator_value))}"
    if e.validator == "oneOf":
        return f"{e.instance!r} is not allowed here: give one value or a list of them"
    if e.validator == "minimum" and e.schema.get("type") == "integer":
        return f"{e.instance!r} is not allowed: give an integer >= {e.validator_value}"
    if e.validator == "type" and e.validator_value == "integer":
        return f"{e.instance!r} is not an integer"
    if e.validator == "uniqueItems":
        dup = next(x for i, x in enumerate(e.instance) if x in e.instance[:i])
        return f"{dup!r} is listed twice; list each value once"
    if e.validator == "maximum":
        return f"{e.instance!r} is not allowed: at most {e.validator_value}"
    if e.validator == "pattern":
        return f"{e.instance!r} is not allowed"
    return f"{e.instance!r}: {e.message}"


def grid_points(cfg: dict) -> list[dict]:
    """Every run of the grid, serial baselines first: the serial trainer with each
    worker's BLAS threads (one core), and with as many as the K workers use in all, up
    to the cores here (the baseline a user with K cores would pick: ``baseline:
    all-cores``). K = 1 runs once per strategy, on threads (with one worker the transport
    moves nothing)."""
    g = {k: (v if isinstance(v, list) else [v]) for k, v in cfg["grid"].items()}
    emulate = (cfg.get("network") or {}).get("emulate")
    bandwidths = (emulate["bandwidth"] if isinstance(emulate["bandwidth"], list) else [emulate["bandwidth"]]) \
        if emulate else [None]
    batch = g.get("batch_size", [cfg["training"]["batch_size"]])
    prec = g.get("precision", [cfg["model"]["precision"]])
    vis = g.get("visible_type", [cfg["model"]["visible_type"]])
    transports = g.get("transport", ["threads"])
    chunk_counts = g.get("overlap_chunks", [cfg.get("options", {}).get("overlap_chunks", 1)])
    points = []
    for m, p, v in itertools.product(batch, prec, vis):
        base = {"batch_size": m, "precision": p, "visible_type": v}
        points.append({**base, "strategy": "serial", "workers": 1, "transport": None})
        for threads in all_cores_threads(cfg):
            points.append({**base, "strategy": "serial", "workers": 1, "transport": None,
                           "baseline": ALL_CORES, "blas_threads": threads})
        for s in g["strategy"]:
            if _is_serial(s):
                continue
            for K in g["workers"]:
                for t in (["threads"] if K == 1 else transports):
                    # on emulated hosts (tcp, mpi), one run per link bandwidth
                    for bw in (bandwidths if t in NETWORK_TRANSPORTS else [None]):
                        # chunk counts for a strategy that overlaps, at K > 1 (one worker moves nothing)
                        for chunks in (chunk_counts if K > 1 and _overlaps(s) else [1]):
                            points.append({**base, "strategy": s, "workers": K, "transport": t, "bandwidth": bw,
                                           "overlap_chunks": chunks})
    for pt in points:
        pt.setdefault("bandwidth", None)
        pt.setdefault("overlap_chunks", 1)
        pt["run_id"] = "|".join(f"{k}={pt[k]}" for k in ("strategy", "workers", "transport", "batch_size",
                                                          "precision", "visible_type")) \
            + (f"|bandwidth={pt['bandwidth']}" if pt["bandwidth"] is not None else "") \
            + (f"|blas_threads={pt['blas_threads']}" if pt.get("baseline") == ALL_CORES else "") \
            + (f"|overlap_chunks={pt['overlap_chunks']}" if pt["overlap_chunks"] != 1 else "")
    return points


def _overlaps(strategy: str) -> bool:
    """The strategy reads ``overlap_chunks`` (its exchanges can be chunked)."""
    from parrbm.strategies.registry import resolve

    return "overlap_chunks" in getattr(resolve(strategy), "options_used", ())


#: a serial run with the BLAS threads of K workers in all: the other speedup baseline
ALL_CORES = "all-cores"


def all_cores_threads(cfg: dict) -> list[int]:
    """The BLAS thread counts of the all-cores serial baselines: K x the workers' BLAS
    threads for each K of the grid, capped at this machine's cores (nobody runs a serial
    trainer with more BLAS threads than cores), beyond the one-core baseline's."""
    per_worker = cfg["training"]["blas_threads"]
    workers = cfg["grid"]["workers"] if isinstance(cfg["grid"]["workers"], list) else [cfg["grid"]["workers"]]
    cores = environment_cores()
    return sorted({min(K * per_worker, cores) for K in workers} - {per_worker} - set(range(per_worker)))


def is_all_cores_baseline(rec: dict) -> bool:
    """A serial run with more BLAS threads: a baseline, not a strategy's run."""
    return rec.get("baseline") == ALL_CORES


#: the transports whose workers an emulated network puts on hosts of their own
NETWORK_TRANSPORTS = ("tcp", "mpi")
#: a network.emulate.bandwidth that leaves the links unshaped (the hosts and links stay)
UNSHAPED = "unshaped"


def network_links_of(cfg: dict) -> list:
    """The distinct shaped links (LinkSpec) a config's runs use."""
    pts = [p for p in grid_points(cfg) if p.get("bandwidth") not in (None, UNSHAPED)]
    return list({link_of(cfg, p): None for p in pts})


def link_of(cfg: dict, pt: dict):
    """The emulated link a grid point runs on (a LinkSpec), or None."""
    from parrbm.units import parse_bandwidth, parse_latency
    from parrbm.harness.network import LinkSpec

    if pt.get("bandwidth") is None:
        return None
    latency = cfg["network"]["emulate"].get("latency")
    return LinkSpec(None if pt["bandwidth"] == UNSHAPED else parse_bandwidth(pt["bandwidth"]),
                    None if latency is None else parse_latency(latency))


def display_name(strategy: str) -> str:
    """A strategy as tables show it: its own name (a plug-in's ``module:Class`` reference
    is the name it declares, when it can be imported here)."""
    from parrbm.strategies.registry import StrategyError, name_of

    try:
        return name_of(strategy)
    except StrategyError:
        return strategy


def _is_serial(strategy: str) -> bool:
    from parrbm.strategies.registry import resolve

    return resolve(strategy).name == "serial"


def environment() -> dict:
    from parrbm import __version__, _core

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "blas": _core.blas_info()["config"], "python": sys.version.split()[0], "numpy": np.__version__,
            "parrbm": __version__, "platform": platform.platform()}


def make_data(cfg: dict, V: int, visible_type: str, dtype: str, cases: int) -> np.ndarray:
    """The training data of a run, checked as the estimator checks its X: numbers, 2-D,
    finite in ``dtype``, in [0, 1] for binary visible units. ConfigError names the field."""
    from parrbm._validation import check_data

    d = cfg["data"]
    rng = np.random.default_rng(d.get("seed", 0))
    n = d.get("cases", cases)
    where = f"data.path {d['path']}" if d["kind"] == "npy" else f"data.kind {d['kind']}"
    if d["kind"] == "random-binary":
        X = rng.random((n, V)) < 0.5
    elif d["kind"] == "random-gaussian":
        X = rng.standard_normal((n, V))
    elif d["kind"] == "digits":
        from sklearn.datasets import load_digits

        X = load_digits().data / 16.0
        if visible_type == "gaussian":
            X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    else:
        import hashlib
        import io

        try:
            raw = Path(d["path"]).read_bytes()
            X = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConfigError(f"{where}: not a readable .npy array ({exc})") from None
        then = cfg.get("_data_sha256")  # the data the run's records name
        now = hashlib.sha256(raw).hexdigest()
        if then is not None and now != then:
            raise ConfigError(f"data.path: {d['path']} changed while the run was going (sha256 {then[:12]}... "
                              f"at its start, {now[:12]}... now); the run stopped so that its records do not "
                              f"mix two data sets. Restore the file, or start a new run (--overwrite or "
                              f"another --out)")
        if not isinstance(X, np.ndarray):  # an .npz archive behind a .npy name
            raise ConfigError(f"{where}: not a .npy array (an archive of several arrays?)")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != V:
        raise ConfigError(f"{where}: the data have shape {X.shape}, the model has {V} visible units "
                          f"(model.visible): give (cases, {V})")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise ConfigError(f"{where}: the data must be real numbers, got dtype {X.dtype}")
    try:
        return check_data(where, X, dtype=np.dtype(dtype), name="data",
                          binary_range=visible_type == "binary")
    except ValueError as exc:
        raise ConfigError(f"{exc} ({visible_type} visible units, {dtype})") from None


def check_data_of(cfg: dict) -> None:
    """Make and check the data of every (visible type, precision) of the grid before
    anything runs."""
    seen = set()
    for p in grid_points(cfg):
        key = (p["visible_type"], p["precision"])
        if key not in seen:
            seen.add(key)
            try:
                make_data(cfg, cfg["model"]["visible"], p["visible_type"], p["precision"], p["batch_size"])
            except ConfigError as exc:
                raise ConfigError(f"{cfg.get('source', 'config')}: {exc}") from None


def run_identity(cfg: dict) -> dict:
    """What makes two records measurements of the same experiment: the resolved model,
    data, training and options. The grid's own axes (strategy, K, transport, minibatch,
    precision, visible type) are in each run's ``run_id``; ``timeout`` is left out (it
    bounds a failure, it does not change a measurement). The data of an npy file count
    by their content (SHA-256), not by where the file lies."""
    from parrbm.harness.results import file_digest

    model = {k: v for k, v in cfg["model"].items() if k not in ("precision", "visible_type")}
    training = {k: v for k, v in cfg["training"].items() if k not in ("timeout", "batch_size")}
    data = {k: v for k, v in cfg["data"].items() if k != "path"}
    if cfg["data"]["kind"] == "npy":
        data["sha256"] = file_digest(cfg["data"]["path"])
    identity = {"model": model, "data": data, "training": training, "options": cfg["options"]}
    if (cfg.get("tcp") or {}).get("hosts"):  # where the runs happen is part of what was measured
        identity["tcp"] = {"hosts": list(cfg["tcp"]["hosts"])}
    if cfg.get("mpi"):
        identity["mpi"] = {k: cfg["mpi"].get(k) for k in ("hosts", "hostfile")}
    if "network" in cfg:  # the bandwidths are a grid axis (in run_id); the latency is not
        identity["network"] = {"latency": cfg["network"]["emulate"].get("latency")}
    return copy.deepcopy(identity)


def _spec_for(cfg: dict, pt: dict):
    from parrbm.config import CDSpec

    model, tr = cfg["model"], cfg["training"]
    return CDSpec(n_visible=model["visible"], n_hidden=model["hidden"], batch_size=pt["batch_size"],
                  visible=pt["visible_type"], gaussian_noise=model["gaussian_noise"],
                  statistics=model["statistics"], cd_k=model["cd_k"], learning_rate=tr["learning_rate"],
                  momentum=tr["momentum"], weight_decay=tr["weight_decay"], dtype=pt["precision"],
                  seed=tr["seed"])


# ---- started by the user's MPI launcher: mpiexec -n N parrbm run CONFIG ---------------------------

def _job_world():
    """(rank, size) when this comparison runs on the ranks of an MPI job, else None."""
    from parrbm.harness.mpi import spmd_world

    return spmd_world()


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def serve_grid() -> None:
    """The ranks beyond 0 of an MPI job running a comparison: take part in each mpi grid
    point rank 0 announces (as the workers it needs), until it says the grid is done. Rank
    0 alone reads the config and the data and writes every file; they reach the others
    over MPI, so no file system is shared."""
    world = _world()
    cfg = world.bcast(None, root=0)
    if cfg is None:
        return
    while True:
        pt = world.bcast(None, root=0)
        if pt is None:
            return
        _watch_point(cfg, pt)
        try:
            measure_point(cfg, pt)
        except Exception:  # noqa: BLE001 - rank 0 records why the point failed
            pass


def release_servers() -> None:
    """Rank 0, when the comparison stops before it began: the other ranks leave."""
    if _job_world() is not None:
        _world().bcast(None, root=0)


#: the transports whose points run on the ranks of the user's job (tcp: over connections
#: between the ranks, set up over MPI)
JOB_TRANSPORTS = ("mpi", "tcp")


def _on_the_job(pt: dict) -> bool:
    return _job_world() is not None and pt["transport"] in JOB_TRANSPORTS


def _measure(cfg: dict, pt: dict) -> dict:
    """:func:`measure_point`; on the ranks of an MPI job an mpi or tcp point runs on them all."""
    if _on_the_job(pt):
        _world().bcast(pt, root=0)
        _watch_point(cfg, pt)
    return measure_point(cfg, pt)


def _watch_point(cfg: dict, pt: dict) -> None:
    """Every rank of the job: the watch's books for this point start now, before its data
    go round (a rank stopped there is named as one stopped inside the fit)."""
    from parrbm.harness.mpi import Watch

    Watch.of(_world()).start_fit(pt["workers"], cfg["training"]["timeout"], ahead=True)


def _job_bcast(value):
    from parrbm.harness.mpi import Watch

    return Watch.of(_world()).books(_world().bcast, value, 0)


def _data_for(cfg: dict, pt: dict, spec, cases: int) -> np.ndarray:
    """A run's data: made here, or on the ranks of an MPI job made by rank 0 and sent."""
    if not _on_the_job(pt):
        return make_data(cfg, spec.n_visible, spec.visible, spec.dtype, cases)
    world = _world()
    if world.Get_rank() == 0:
        try:
            X = make_data(cfg, spec.n_visible, spec.visible, spec.dtype, cases)
        except Exception as exc:
            _job_bcast(("error", str(exc)))
            raise
        _job_bcast(("ok", X))
        return X
    kind, X = _job_bcast(None)
    if kind == "error":
        raise RuntimeError(f"rank 0 could not make the data: {X}")
    return X


def measure_point(cfg: dict, pt: dict) -> dict:
    """One training run of a grid point from the initial model: its timed steps'
    seconds (slowest worker), the per-step compute / communication / wait of the
    slowest worker, the communication statistics and the reconstruction errors."""
    from parrbm.config import ModelState
    from parrbm.harness.runner import ParallelRunner
    from parrbm.strategies import SerialStrategy

    tr = cfg["training"]
    spec = _spec_for(cfg, pt)
    m = spec.batch_size
    steps = tr.get("steps") or max(1, tr["cases"] // m)
    warmup = tr["warmup"]
    X = _data_for(cfg, pt, spec, (warmup + steps) * m)
    order = np.arange((warmup + steps) * m, dtype=np.int64) % X.shape[0]
    state = ModelState.initial(spec)
    K = pt["workers"]
    if pt["strategy"] == "serial":
        from parrbm import _core

        # one worker's resources; or, for the all-cores baseline, all the workers' in all
        _core.set_blas_threads(pt.get("blas_threads") or tr["blas_threads"])
        s = SerialStrategy(spec, state)
        # timed inside the core, step by step, as the workers' steps are
        errs, times = s.run_timed(X, order, 0)
        step_times = np.asarray(times[warmup:])
        stats = s.comm_stats()
        per_step = {"compute": float(step_times.mean()), "comm": 0.0, "wait": 0.0, "busy": 0.0, "exposed": 0.0}
        extra = {"peak_rss_bytes": [_rss()], "memory_bytes": [int(spec.n_visible * spec.n_hidden
                                                                   * spec.np_dtype.itemsize)]}
        errors = np.array(errs)
        model = s.gather_model()
    else:
        opts = point_options(cfg, pt)
        r = ParallelRunner(spec, state, pt["strategy"], K, pt["transport"], opts,
                           blas_threads=tr["blas_threads"], timeout=tr["timeout"],
                           tcp=tcp_hosts(cfg["tcp"]), network=link_of(cfg, pt),
                           mpi=mpi_hosts(cfg.get("mpi")) if pt["transport"] == "mpi" else None)
        try:
            errors = r.run(X, order, 0)
            model = r.state
        finally:
            r.close()
        step_times = np.max(np.array(r.step_seconds), axis=0)[warmup:]
        stats = r.comm_stats()
        slow = max(stats["by_worker"], key=lambda w: w["step_seconds"])
        n = warmup + steps
        per_step = {"compute": slow["compute_seconds"] / n, "comm": slow["comm_seconds"] / n,
                    "wait": slow["wait_seconds"] / n, "busy": stats["overlap"]["busy_seconds"] / n,
                    "exposed": stats["overlap"]["exposed_seconds"] / n}
        extra = {"peak_rss_bytes": [w["peak_rss_bytes"] or _rss() for w in stats["by_worker"]],
                 "memory_bytes": [w["memory_bytes"] for w in stats["by_worker"]]}
    extra["model_sha256"] = model_digest(model)
    return {"step_times": step_times, "per_step": per_step, "stats": stats, "extra": extra,
            "errors": errors, "steps": steps, "warmup": warmup}


def model_digest(state) -> str:
    """sha256 of a model's weights and biases (W, b, c: their dtype, shape and bytes): two
    runs that trained the same model bit for bit have the same digest."""
    import hashlib

    h = hashlib.sha256()
    for a in (state.W, state.b, state.c):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def point_record(cfg: dict, pt: dict, runs: list[dict], baselines: dict) -> dict:
    """The record of a grid point from its repeated runs: the step times of all repeats
    pooled (a busy moment of a shared machine spoils one repeat, not the median)."""
    from parrbm.accounting import Model
    from parrbm.strategies.declared import step_traffic, sync_traffic

    from parrbm.harness.runner import hidden_fraction

    tr = cfg["training"]
    spec = _spec_for(cfg, pt)
    m, K = spec.batch_size, pt["workers"]
    first, steps, warmup = runs[0], runs[0]["steps"], runs[0]["warmup"]
    stats, errors = first["stats"], first["errors"]
    if any(r["stats"]["bytes_per_step"] != stats["bytes_per_step"] for r in runs):
        raise RuntimeError(f"{pt['run_id']}: the repeats moved different numbers of bytes "
                           f"({[r['stats']['bytes_per_step'] for r in runs]})")
    step_times = np.concatenate([r["step_times"] for r in runs])
    per_step = {k: float(np.mean([r["per_step"].get(k, 0.0) for r in runs]))
                for k in ("compute", "comm", "wait", "busy", "exposed")}
    median = float(np.median(step_times))
    cores = environment_cores()
    key = (m, pt["precision"], pt["visible_type"])
    all_cores = pt.get("baseline") == ALL_CORES
    serial = median if pt["strategy"] == "serial" and not all_cores else baselines.get(("serial",) + key)
    k1 = median if K == 1 else baselines.get((pt["strategy"],) + key)
    threads = pt.get("blas_threads") or tr["blas_threads"]
    # the workers' BLAS threads in all (an all-cores baseline is its own)
    wanted = threads if all_cores else max(tr["blas_threads"], min(K * tr["blas_threads"], cores))
    serial_all = (median if all_cores else
                  serial if wanted == tr["blas_threads"] else baselines.get(("serial", wanted) + key))

    opts = point_options(cfg, pt)
    model = Model(spec.n_visible, spec.n_hidden, visible=spec.visible, precision=spec.dtype,
                  statistics=spec.statistics, cd_k=spec.cd_k)
    formula = step_traffic(pt["strategy"], model, m, K, options=opts).total
    sync_formula = sync_traffic(pt["strategy"], model, K, options=opts).total
    # what the strategy declares against what moved (a plug-in's closed form is held to it too)
    mismatch = []
    if stats["bytes_per_step"] != formula:
        mismatch.append(f"per step: measured {stats['bytes_per_step']} bytes, declared {formula}")
    sync_measured = stats.get("logical_bytes_per_sync", 0) if opts.shared_weights else stats["bytes_per_sync"]
    if stats.get("syncs") and sync_measured != sync_formula:
        mismatch.append(f"per sync: measured {sync_measured} bytes, declared {sync_formula}")
    metrics = {
        "bytes_per_step": stats["bytes_per_step"], "bytes_per_sync": stats["bytes_per_sync"],
        "bytes_per_step_formula": formula, "bytes_per_sync_formula": sync_formula,
        "formula_mismatch": mismatch,
        "wire_bytes_per_step": stats.get("wire_bytes_per_step"),
        "step_seconds": {"median": median, "p10": float(np.percentile(step_times, 10)),
                         "p90": float(np.percentile(step_times, 90)),
                         "repeat_medians": [float(np.median(r["step_times"])) for r in runs]},
        "compute_seconds": per_step["compute"], "comm_seconds": per_step["comm"],
        "wait_seconds": per_step["wait"],
        # communication overlapped with computation, per step, the workers' mean
        # (definitions: harness/comm.py): in progress, waited for, hidden
        "comm_busy_seconds": per_step["busy"], "comm_exposed_seconds": per_step["exposed"],
        "hidden_fraction": hidden_fraction(per_step["exposed"], per_step["busy"]),
        "hidden_fraction_by_phase": {p: v.get("hidden_fraction", 0.0) for p, v in stats.get("by_phase", {}).items()},
        "chunks_used": stats.get("overlap", {}).get("chunks_used", 1),
        "cases_per_second": m / median,
        "speedup_vs_serial": serial / median if serial else None,
        # against the serial trainer given every core the K workers use (K x their BLAS
        # threads, up to the cores): the baseline a user with those cores would pick
        "speedup_vs_serial_all_cores": serial_all / median if serial_all else None,
        "serial_all_cores_threads": wanted,
        "speedup_vs_k1": k1 / median if k1 else None,
        "efficiency": (serial / median) / K if serial else None,
        "speedup_meaningful": K <= cores,
        "replica_divergence": stats.get("replica_divergence", 0.0),
        "reconstruction_error": float(np.sum(errors[-steps:]) / (steps * m * spec.n_visible)),
        **first["extra"],
    }
    return {"strategy": pt["strategy"], "workers": K, "transport": pt["transport"], "batch_size": m,
            **({"baseline": ALL_CORES} if all_cores else {}), "blas_threads": threads,
            "bandwidth": pt.get("bandwidth"), "overlap_chunks": pt.get("overlap_chunks", 1),
            "network": stats.get("network"),
            **({"hosts": stats["hosts"]} if stats.get("hosts") else {}),
            "model": {"visible": spec.n_visible, "hidden": spec.n_hidden, "visible_type": spec.visible,
                      "precision": spec.dtype, "statistics": spec.statistics, "cd_k": spec.cd_k},
            "training": {"steps": steps, "warmup": warmup, "repeats": len(runs), **{k: tr[k] for k in (
                "learning_rate", "momentum", "weight_decay", "sync_every", "seed", "blas_threads")}},
            "options": cfg["options"], "data": {k: cfg["data"].get(k) for k in ("kind", "cases", "path")},
            "metrics": metrics}


def point_options(cfg: dict, pt: dict):
    """The strategy options of a grid point: the config's, with the point's chunk count."""
    from parrbm.strategies import StrategyOptions

    return StrategyOptions(**{**cfg["options"], "sync_every": cfg["training"]["sync_every"],
                              "overlap_chunks": pt.get("overlap_chunks", cfg["options"].get("overlap_chunks", 1))})


def tcp_hosts(section: dict):
    """The config's ``tcp`` section as the launcher's :class:`TCPHosts`; with ``hosts``
    the workers listen on every interface unless ``listen`` says otherwise."""
    from parrbm.harness.launch import TCPHosts

    kw = dict(section)
    if "hosts" in kw and "listen" not in kw:
        kw["listen"] = "0.0.0.0"
    kw.setdefault("listen", "127.0.0.1")
    return TCPHosts(**kw)


def environment_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_records(path: Path) -> list[dict]:
    """The records of a results file, each run once (see :func:`read_results`)."""
    return read_results(path)[0]


def read_results(path: Path) -> tuple[list[dict], list[str]]:
    """(records, notes): each run once, with notes on what was left out (a torn last
    line, a run recorded twice). ResultsError names the file and line of anything that
    is not a parrbm record."""
    from parrbm.harness.results import file_identity, identity_diff, one_per_run, record_problem, scan

    rf = scan(path)
    notes = []
    if rf.torn is not None:
        notes.append(f"{path}: line {rf.torn_line} is incomplete (an interrupted write) and was left out; "
                     f"'parrbm run --resume' sets it aside and continues")
    # a record that is not one 'parrbm run' writes is listed apart, with a note; one of
    # another experiment (pasted from another file) makes the file a mix: refused
    fitting = []
    name, identity = file_identity([r for r in rf.records if record_problem(r) is None])
    for i, r in enumerate(rf.records, 1):
        why = record_problem(r)
        if why is not None:
            notes.append(f"{path}: record {i} ({str(r.get('run_id', '?'))[:80]}) left out: {why}")
            continue
        if r.get("config") != name or r.get("identity") != identity:
            diff = identity_diff(identity, r.get("identity")) if r.get("identity") != identity else []
            raise ResultsError(f"{path}: record {i} ({str(r.get('run_id'))[:80]}) is of another experiment than "
                               f"the file's first record ("
                               + (f"experiment {r.get('config')!r}, not {name!r}" if r.get("config") != name
                                  else "; ".join(diff[:4])) + "): the file mixes experiments")
        fitting.append(r)
    records, more = one_per_run(fitting, path)
    return records, notes + more


def run_config(cfg: dict, out_dir: Path, *, resume: bool = False, overwrite: bool = False,
               progress=print, calibrate=None) -> Path:
    """Run every grid point of a validated config; returns the results file. With
    ``calibrate`` (``calibrate(cfg, where, resume=, progress=, lock=)``, such as
    :func:`parrbm.analysis.calibrate.calibrate_for_config`), first measure this machine for
    the time model and keep the profile beside the results (``where``:
    ``<name>.profile.json``) for the table and the report.

    An existing results file is continued with ``resume`` (only if it was written under
    the same configuration), set aside and started afresh with ``overwrite``, and
    otherwise refused: recorded results are never deleted."""
    world = _job_world()
    if world is None:
        return _run_config(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, calibrate=calibrate)
    # rank 0 of an MPI job: the other ranks serve the grid's mpi points as workers
    try:
        points = grid_points(cfg)
        big = max((p["workers"] for p in points if p["transport"] in JOB_TRANSPORTS), default=0)
        if big > world[1]:
            raise ConfigError(f"grid.workers: {big} mpi workers, but the MPI launcher started {world[1]} ranks: "
                              f"start at least {big} (mpiexec -n {big}), or give fewer workers")
        if (cfg.get("tcp") or {}).get("hosts"):
            raise ConfigError("tcp.hosts: the tcp points run on the MPI job's ranks, where its launcher put them; "
                              "leave out tcp.hosts (or start the comparison without mpiexec)")
        if "network" in cfg:
            raise ConfigError("network.emulate: the runs go on the MPI job's ranks, where its launcher put them; "
                              "emulated hosts do not apply (start the comparison without mpiexec to emulate them)")
    except BaseException:
        release_servers()
        raise
    _world().bcast(cfg, root=0)
    try:
        return _run_config(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, calibrate=calibrate)
    finally:
        _world().bcast(None, root=0)


def _run_config(cfg: dict, out_dir: Path, *, resume: bool, overwrite: bool, progress, calibrate) -> Path:
    from parrbm.harness.results import WriterLock, profile_path

    if resume and overwrite:
        raise ConfigError("--resume continues a results file and --overwrite starts a new one: give one of them")
    why = check_name(cfg.get("name"))
    if why:
        raise ConfigError(f"name: {why}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})") from None
    results = out_dir / f"{cfg['name']}.jsonl"
    if results.resolve().parent != out_dir.resolve():
        raise ConfigError(f"name: {cfg['name']!r} would write outside {out_dir}")
    identity = run_identity(cfg)
    if cfg["data"]["kind"] == "npy":
        cfg = {**cfg, "_data_sha256": identity["data"]["sha256"]}  # every point trains on these data
    check_data_of(cfg)
    where = profile_path(results)
    try:
        lock = WriterLock(results).__enter__()
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    try:
        done = _results_to_continue(results, where, identity, resume=resume, overwrite=overwrite,
                                    progress=progress)
        if calibrate is not None:
            calibrate(cfg, where, resume=resume, progress=progress, lock=lock)
        _run_points(cfg, results, identity, done, progress, lock)
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        lock.__exit__(None, None, None)
    return results


def _results_to_continue(results: Path, where: Path, identity: dict, *, resume: bool, overwrite: bool,
                         progress) -> dict[str, dict]:
    """The finished records of ``results`` by run_id, for ``resume``; with ``overwrite``
    the old file (and its profile) set aside; otherwise an existing file refused."""
    from parrbm.harness.results import scan, set_aside, set_aside_torn

    if results.exists() and not results.is_file():
        raise ConfigError(f"{results}: exists and is not a file")
    if not results.exists() or results.stat().st_size == 0:
        return {}
    if overwrite:
        kept = set_aside(results, "replaced")
        progress(f"note: the previous results were moved to {kept}")
        if where.exists():
            set_aside(where, "replaced")
        return {}
    if not resume:
        try:
            n = len(scan(results).records)
        except ResultsError:
            n = None
        held = f"holds {n} record(s)" if n is not None else "exists (and is not a clean results file)"
        raise ConfigError(f"{results} already {held}: give --resume to continue it (same config), "
                          f"--overwrite to start again (the old file is kept beside it, renamed), "
                          f"or another --out or name")
    try:
        rf = scan(results)
    except ResultsError as exc:
        raise ConfigError(str(exc)) from None
    from parrbm.harness.results import record_problem

    for i, r in enumerate(rf.records, 1):
        why = record_problem(r)
        if why is not None:
            raise ConfigError(f"{results}: record {i} is not a record of 'parrbm run' ({why}); --resume "
                              f"would continue a file that holds what no run wrote. Use --overwrite (the old "
                              f"file is kept beside it) or another --out or name")
        _check_same_experiment(r, results, identity)
    if rf.torn is not None:
        side = set_aside_torn(rf)
        progress(f"note: {results} line {rf.torn_line} was incomplete (an interrupted write); "
                 f"it was moved to {side} and the {len(rf.records)} good record(s) kept")
    return {r["run_id"]: r for r in rf.records if r.get("status") == "ok" and "run_id" in r}


#: strategy_sha256 of a plug-in whose source could not be read (defined in no file)
UNKNOWN_SOURCE = "unknown"


def _check_same_experiment(record: dict, results: Path, identity: dict) -> None:
    """Refuse to --resume into a file whose record ran under another configuration or
    another version of its strategy's code."""
    from parrbm.harness.results import identity_diff
    from parrbm.strategies.registry import StrategyError, source_digest

    try:
        now = source_digest(record.get("strategy"))
    except StrategyError:
        now = None
    then = record.get("strategy_sha256")
    if then == UNKNOWN_SOURCE:
        raise ConfigError(f"{results}: the code of strategy {record['strategy']!r} in run {record.get('run_id')} "
                          f"could not be identified when it was recorded; --resume cannot tell whether it "
                          f"changed. Use --overwrite (the old file is kept beside it) or another --out or name")
    if then and now and then != now:
        raise ConfigError(f"{results}: the code of strategy {record['strategy']!r} changed since run "
                          f"{record.get('run_id')} was recorded (sha256 {then[:12]}... then, {now[:12]}... "
                          f"now); --resume would mix two versions. Use --overwrite (the old file is kept "
                          f"beside it) or another --out or name")
    diff = identity_diff(record.get("identity"), identity)
    if diff:
        raise ConfigError(
            f"{results} was written under another configuration; --resume would mix two "
            f"experiments. Differing fields: {'; '.join(diff[:8])}"
            + (f" (and {len(diff) - 8} more)" if len(diff) > 8 else "")
            + ". Use --overwrite (the old file is kept beside it) or another --out or name")


def _run_points(cfg: dict, results: Path, identity: dict, done: dict, progress, lock=None) -> None:
    from parrbm.harness.results import append_record
    from parrbm.strategies.registry import StrategyError, source_digest

    env = environment()
    points = grid_points(cfg)
    baselines: dict = {}
    for r in done.values():
        _note_baseline(baselines, r)
    if max(p["workers"] for p in points) > env["cores"]:
        progress(f"note: some runs use more workers than the {env['cores']} cores here: their measured "
                 f"speedup is not meaningful (speedup_meaningful=false); the cost model still holds")
    repeats = cfg["training"]["repeats"]
    runs: dict[str, list[dict]] = {}
    started: dict[str, tuple[str, float]] = {}
    failed: set[str] = set()
    # The repeats go round the whole grid: a busy spell of a shared machine then lands on
    # one repeat of several points, not on every repeat of one point.
    for rep in range(repeats):
        for i, pt in enumerate(points, 1):
            label = f"[{i}/{len(points)}] {pt['strategy']} K={pt['workers']} {pt['transport'] or ''} " \
                    f"m={pt['batch_size']} {pt['precision']} {pt['visible_type']}" \
                    + (f" at {pt['bandwidth']}" if pt.get("bandwidth") else "") \
                    + (f" on {pt['blas_threads']} BLAS threads" if pt.get("baseline") == ALL_CORES else "") \
                    + (f" (repeat {rep + 1}/{repeats})" if repeats > 1 else "")
            rid = pt["run_id"]
            if rid in done or rid in failed:
                if rep == 0 and rid in done:
                    progress(f"{label}: recorded, skipped")
                continue
            started.setdefault(rid, (datetime.now(timezone.utc).isoformat(), time.perf_counter()))
            t0 = time.perf_counter()
            try:
                runs.setdefault(rid, []).append(_measure(cfg, pt))
                if rep + 1 < repeats:
                    progress(f"{label}: {np.median(runs[rid][-1]['step_times']) * 1e3:.1f} ms/step "
                             f"({time.perf_counter() - t0:.1f} s)")
                    continue
                rec = point_record(cfg, pt, runs.pop(rid), baselines)
                rec.update(status="ok", error=None)
                _note_baseline(baselines, {**rec, "run_id": rid})
                msg = f"{rec['metrics']['step_seconds']['median'] * 1e3:.1f} ms/step"
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - the grid goes on; the record says why
                rec = {"strategy": pt["strategy"], "workers": pt["workers"], "transport": pt["transport"],
                       "batch_size": pt["batch_size"], "status": "error", "error": str(exc), "metrics": None}
                msg = f"FAILED: {exc}"
                failed.add(rid)
                runs.pop(rid, None)
            # the plug-in's own name: a reader shows it without importing the plug-in
            rec.update(strategy_name=display_name(pt["strategy"]))
            rec.update(run_id=rid, config=cfg["name"], identity=identity, environment=env,
                       started=started[rid][0], finished=datetime.now(timezone.utc).isoformat())
            try:
                digest = source_digest(pt["strategy"])
            except StrategyError:
                digest = UNKNOWN_SOURCE  # a --resume refuses to continue what it cannot identify
            if digest:  # a plug-in: its code is part of what was measured
                rec["strategy_sha256"] = digest
            append_record(results, rec, lock)
            progress(f"{label}: {msg} ({time.perf_counter() - t0:.1f} s)")


def _note_baseline(baselines: dict, rec: dict) -> None:
    if rec.get("status", "ok") != "ok" or not rec.get("metrics"):
        return
    key = (rec["batch_size"], rec["model"]["precision"], rec["model"]["visible_type"])
    median = rec["metrics"]["step_seconds"]["median"]
    if is_all_cores_baseline(rec):
        baselines[("serial", rec["blas_threads"]) + key] = median
    elif rec["strategy"] == "serial":
        baselines[("serial",) + key] = median
    elif rec["workers"] == 1:
        baselines[(rec["strategy"],) + key] = median
