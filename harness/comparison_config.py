"""A comparison's YAML config: read strictly (no code, no aliases, no duplicate keys),
checked against its schema and between fields, every check that needs no measurement
made before anything runs; ConfigError names the file and the field."""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from parrbm.config import TRANSPORTS
from parrbm.harness.grid import UNSHAPED, grid_points, mpi_hosts, overlaps, point_options, spec_for
from parrbm.harness.job import job_world
from parrbm.strategies.base import OPTION, OPTIONS


class ConfigError(ValueError):
    """A config that cannot be run, with the file, the field's path and what is allowed."""


def _list_of(item: dict) -> dict:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1, "uniqueItems": True}]}


_POS_INT = {"type": "integer", "minimum": 1}
_SEED = {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model", "grid"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "model": {
            "type": "object",
            "additionalProperties": False,
            "required": ["visible", "hidden"],
            "properties": {
                "visible": _POS_INT,
                "hidden": _POS_INT,
                "visible_type": {"enum": ["binary", "gaussian"]},
                "precision": {"enum": ["float32", "float64"]},
                "statistics": {"enum": ["samples", "probabilities"]},
                "cd_k": {"type": "integer", "minimum": 1, "maximum": 10000},  # rules.MAX_CD_K
                "gaussian_noise": {"type": "boolean"},
            },
        },
        "data": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["random-binary", "random-gaussian", "digits", "npy"]},
                "path": {"type": "string"},
                "cases": _POS_INT,
                "seed": _SEED,
            },
        },
        "training": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "batch_size": _POS_INT,
                "steps": _POS_INT,
                "cases": _POS_INT,
                "warmup": {"type": "integer", "minimum": 0},
                "learning_rate": {"type": "number", "exclusiveMinimum": 0},
                "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "weight_decay": {"type": "number", "minimum": 0},
                "sync_every": OPTION["sync_every"].schema(),
                "seed": _SEED,
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "blas_threads": _POS_INT,
                "repeats": _POS_INT,
                "engine": {},  # gone: refused by name in _check_sections
            },
        },
        "tcp": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "listen": {"type": "string", "minLength": 1},
                "hosts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "launcher": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "python": {"type": "string", "minLength": 1},
                "job_root": {"type": "string", "minLength": 1},
            },
        },
        "mpi": {
            "type": "object",
            "additionalProperties": False,
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
            "type": "object",
            "additionalProperties": False,
            "required": ["emulate"],
            "properties": {
                "emulate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["bandwidth"],
                    "properties": {
                        # a rate with its unit (105MB/s), or "unshaped"; a list is a grid axis
                        "bandwidth": _list_of({"type": "string", "minLength": 1}),
                        "latency": {"type": "string", "minLength": 1},
                        # off, auto or a factor F >= 1; a list is a grid axis (YAML reads
                        # a bare off as false)
                        "dilation": _list_of({"type": ["string", "number", "boolean"]}),
                    },
                },
            },
        },
        "options": {  # the strategy options' table (sync_every is a training setting here)
            "type": "object",
            "additionalProperties": False,
            "properties": {o.name: o.schema() for o in OPTIONS if o.name != "sync_every"},
        },
        "grid": {
            "type": "object",
            "additionalProperties": False,
            "required": ["strategy", "workers"],
            "properties": {
                "strategy": _list_of({"type": "string", "minLength": 1}),
                "workers": _list_of(_POS_INT),
                "batch_size": _list_of(_POS_INT),
                "precision": _list_of({"enum": ["float32", "float64"]}),
                "visible_type": _list_of({"enum": ["binary", "gaussian"]}),
                "transport": _list_of({"enum": list(TRANSPORTS)}),
                "overlap_chunks": _list_of(OPTION["overlap_chunks"].schema()),
                "overlap": _list_of(OPTION["overlap"].schema()),
            },
        },
    },
}

#: timed minibatch steps of a run when the config gives neither training.steps nor training.cases
DEFAULT_STEPS = 20

DEFAULTS = {
    "model": {
        "visible_type": "binary",
        "precision": "float32",
        "statistics": "samples",
        "cd_k": 1,
        "gaussian_noise": False,
    },
    "data": {"kind": "random-binary", "seed": 0},
    "training": {
        "batch_size": 100,
        "warmup": 1,
        "learning_rate": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "sync_every": 1,
        "seed": 0,
        "timeout": 60.0,
        "blas_threads": 1,
        "repeats": 1,
    },
    "options": {},
    "tcp": {},
}


#: a config's ``name`` is the stem of its results file: a plain name, never a path
NAME_RULE = (
    "a plain file stem of letters, digits, '.', '_', '+' and '-', starting with a letter "
    "or digit (no path separators, no '..', not empty or hidden), at most 100 characters"
)
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
    the last one would win), and aliases."""

    def compose_node(self, parent, index):
        # An alias (*name) repeats a node by reference; nested ones expand exponentially when
        # the config is walked. A config has no need of them.
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"line {event.start_mark.line + 1}: aliases (*{event.anchor}) are not supported "
                f"in a config; write the values out"
            )
        return super().compose_node(parent, index)


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
            raise _Refused(
                f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on "
                f"line {first}); give each key once"
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: Path):
    """The YAML document of a file, or ConfigError naming the file and what is wrong."""
    from parrbm.harness.results import read_input

    raw_bytes = read_input(path, "a config file", ConfigError)
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML text file (not UTF-8: byte {exc.start} is 0x{raw_bytes[exc.start]:02x})"
        ) from None
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
        items = schema.get("items") or next(
            (b.get("items") for b in schema.get("oneOf", ()) if b.get("type") == "array"), None
        )
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
    cfg: dict[str, Any] = copy.deepcopy(DEFAULTS)
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
            raise ConfigError(
                f"{path}: the file's name {path.stem!r} cannot name the results file: give 'name:', {NAME_RULE}"
            )
    _check_sections(path, cfg, given_data=raw.get("data") or {})
    cfg["source"] = str(path)
    return cfg


def _check_sections(path: Path, cfg: dict, *, given_data: dict) -> None:
    """The rules between fields that a schema cannot say."""
    training = cfg["training"]
    if "engine" in training:
        raise ConfigError(
            f"{path}: training.engine: no longer an option: every strategy has one description, "
            f"its Python module over the core's kernels, and runs it on every transport; remove it"
        )
    if "steps" in training and "cases" in training:
        raise ConfigError(f"{path}: training: give 'steps' or 'cases', not both")
    if "steps" not in training and "cases" not in training:
        training["steps"] = DEFAULT_STEPS
    _check_data(path, cfg["data"], given_data)
    _resolve_strategies(path, cfg["grid"])
    if "network" in cfg:
        _check_dilation_values(path, cfg)
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
            raise ConfigError(
                f"{path}: grid.transport: 'mpi' needs mpi4py and mpiexec on this machine: "
                f"pip install 'parrbm[mpi]' (or leave mpi out of the grid)"
            ) from None
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
        raise ConfigError(
            f"{path}: data.path: is read only with kind 'npy' (data.kind is "
            f"{data['kind']!r}{'' if given_kind else ' by default'}); "
            f"add 'kind: npy' or remove the path"
        )
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
            raise ConfigError(f"{path}: data.{key}: is for the random data kinds; {own} the cases (remove '{key}')")


def _resolve_strategies(path: Path, grid: dict) -> None:
    """grid.strategy as the workers import it: a registered name, or module:Class (a
    plug-in file beside the config made absolute)."""
    from parrbm.strategies.registry import StrategyError, load, reference

    listed = grid["strategy"] if isinstance(grid["strategy"], list) else [grid["strategy"]]
    named: list[str] = []
    by_name: dict[str, tuple[str, str]] = {}
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
            raise ConfigError(
                f"{path}: grid.strategy{at}: {named[-1]!r} is named {strategy.name!r}, as is "
                f"grid.strategy{other[0]} ({other[1]!r}); the strategies of a grid have names "
                f"of their own"
            )
    grid["strategy"] = named if isinstance(grid["strategy"], list) else named[0]


def _check_sizes(path: Path, cfg: dict, points: list[dict]) -> None:
    """At least one minibatch of cases, and the digits data set's own sizes."""
    data, training, model, grid = cfg["data"], cfg["training"], cfg["model"], cfg["grid"]
    batches = sorted({p["batch_size"] for p in points})
    where_m = "grid.batch_size" if "batch_size" in grid else "training.batch_size"
    if "cases" in data and data["cases"] < batches[-1]:
        raise ConfigError(
            f"{path}: data.cases: {data['cases']} cases are fewer than one minibatch "
            f"({where_m} {batches[-1]}); give at least {batches[-1]} cases"
        )
    if "cases" in training and training["cases"] < batches[-1]:
        raise ConfigError(
            f"{path}: training.cases: {training['cases']} cases are fewer than one minibatch "
            f"({where_m} {batches[-1]}); give at least {batches[-1]}, or 'steps'"
        )
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
        why = split_refusal(
            p["strategy"],
            n_visible=model["visible"],
            n_hidden=model["hidden"],
            batch_size=p["batch_size"],
            workers=p["workers"],
        )
        if why:
            raise ConfigError(
                f"{path}: grid.workers: {p['strategy']} at K = {p['workers']}, minibatch {p['batch_size']}: {why}"
            )
    for p in points:
        if p["strategy"] == "serial":
            continue
        try:
            check_options(spec_for(cfg, p), p["strategy"], p["workers"], p["transport"], point_options(cfg, p))
        except ValueError as exc:
            raise ConfigError(f"{path}: {p['strategy']} at K = {p['workers']} on {p['transport']}: {exc}") from None
    from parrbm.strategies.rules import unused_options

    strategies = list(dict.fromkeys(p["strategy"] for p in points if not p.get("baseline")))
    unused = unused_options(StrategyOptions(sync_every=training["sync_every"], **cfg["options"]), strategies)
    if unused:
        field = (
            "training.sync_every" if unused[0].startswith("'sync_every'") else f"options.{unused[0].split(chr(39))[1]}"
        )
        raise ConfigError(
            f"{path}: {field}: the option {unused[0]} is read by no strategy of this grid "
            f"({', '.join(strategies)}); remove it, or add a strategy that reads it"
        )
    for axis in ("overlap_chunks", "overlap"):
        if axis in cfg["grid"] and not any(overlaps(s) for s in strategies):
            from parrbm.strategies.registry import names

            raise ConfigError(
                f"{path}: grid.{axis}: no strategy of this grid ({', '.join(strategies)}) "
                f"overlaps its exchanges; those that do: "
                f"{', '.join(s for s in names() if s != 'serial' and overlaps(s))}"
            )


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
            raise ConfigError(
                f"{path}: {where}: {tr['warmup']} warm-up + {steps} timed steps x "
                f"{tr['repeats']} repeats of CD-{cfg['model']['cd_k']} on {V} x {H}, minibatch {m}, "
                f"is {flops:.3g} floating-point operations: more than {MAX_RUN_SECONDS // 86400} days "
                f"at {FAST_MACHINE_FLOPS:.0e} flop/s; give fewer steps (or cases, warmup, "
                f"repeats, model.cd_k)"
            )
        cases = data.get("cases", (tr["warmup"] + steps) * m) if data["kind"] != "npy" else 0
        # W and its increment or second copy, per worker (at most two full copies in all),
        # the data set in float64 while it is made, the minibatch buffers, and the order
        # of the cases (8 bytes each)
        parts = {
            "model.visible x model.hidden": 3 * V * H * pb + 4 * m * (V + H) * pb,
            "data.cases" if "cases" in data else where: cases * V * 8,
        }
        parts[where] = parts.get(where, 0) + (tr["warmup"] + steps) * m * 8
        need = sum(parts.values())
        if need > total:
            field = max(parts, key=lambda k: parts[k])
            raise ConfigError(
                f"{path}: {field}: model.visible x model.hidden ({V} x {H}) with {cases:g} cases of "
                f"data and {tr['warmup'] + steps:g} minibatch steps of {m} needs about "
                f"{need / 2**30:.3g} GiB, more than this machine's {total / 2**30:.1f} GiB"
            )


def _check_tcp(path: Path, tcp: dict, *, uses_tcp: bool) -> None:
    import shutil

    if "python" in tcp and not tcp.get("hosts"):
        found = shutil.which(tcp["python"])
        if not found:
            raise ConfigError(
                f"{path}: tcp.python: {tcp['python']!r} is not an executable on this machine "
                f"(the tcp workers run it here: give a Python with parrbm installed)"
            )
    if tcp.get("hosts"):
        launcher = tcp.get("launcher", ["ssh"])[0]
        if not shutil.which(launcher):
            raise ConfigError(f"{path}: tcp.launcher: {launcher!r} is not an executable on this machine")
    if "job_root" in tcp:
        raise ConfigError(
            f"{path}: tcp.job_root: no longer needed: tcp workers on other hosts get their job, "
            f"data and commands over their ssh session, and no folder is shared; remove it"
        )


def _check_mpi(path: Path, cfg: dict, points: list[dict]) -> None:
    """The ``mpi`` section: where parrbm starts its mpi workers (hosts or a hostfile)."""
    import shutil

    section = cfg["mpi"]
    if not any(p["transport"] == "mpi" for p in points):
        raise ConfigError(
            f"{path}: mpi: says where the mpi workers run, but the grid runs none (give grid.transport mpi)"
        )
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
        raise ConfigError(
            f"{path}: mpi: the mpi workers run on the hosts it names; network.emulate puts them "
            f"on emulated hosts of this machine: give one of the two"
        )
    if job_world() is not None:
        raise ConfigError(
            f"{path}: mpi: this comparison runs on the ranks your MPI launcher started, where it "
            f"put them; leave out the mpi section (or start parrbm run without mpiexec)"
        )


def _check_network(path: Path, cfg: dict, points: list[dict]) -> None:
    from parrbm.harness.network import missing
    from parrbm.units import parse_bandwidth, parse_latency

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
    _check_dilation(path, cfg, points)
    if not any(p["bandwidth"] is not None for p in points):
        raise ConfigError(
            f"{path}: network.emulate: puts tcp and mpi workers on emulated hosts, but the grid "
            f"runs none (give grid.transport tcp or mpi, and workers >= 2)"
        )
    if cfg["tcp"].get("hosts"):
        raise ConfigError(
            f"{path}: network.emulate: the workers run on emulated hosts of this machine; "
            f"tcp.hosts says they run elsewhere: give one of the two"
        )
    why = missing()
    if why:
        raise ConfigError(f"{path}: network.emulate: {why}")


def _check_dilation_values(path: Path, cfg: dict) -> None:
    """network.emulate.dilation: each 'off', 'auto' or a factor in [1, MAX_DILATION], none
    twice."""
    from parrbm.harness.grid import AUTO, OFF
    from parrbm.harness.network import dilation_refusal

    emulate = cfg["network"]["emulate"]
    if "dilation" not in emulate:
        return
    listed = emulate["dilation"] if isinstance(emulate["dilation"], list) else [emulate["dilation"]]
    for i, d in enumerate(listed):
        at = f"[{i}]" if isinstance(emulate["dilation"], list) else ""
        if d is True or (isinstance(d, str) and d not in (OFF, AUTO)):
            raise ConfigError(
                f"{path}: network.emulate.dilation{at}: {d!r}: give {OFF!r}, {AUTO!r} or a factor "
                f"F >= 1 (each emulated host then gets 1/F of its cores, its link 1/F of the "
                f"bandwidth, and every time is divided by F)"
            )
        why = None if isinstance(d, (str, bool)) else dilation_refusal(d)
        if why:
            raise ConfigError(f"{path}: network.emulate.dilation{at}: {why}")
    if len({OFF if d is False else str(float(d)) if not isinstance(d, str) else d for d in listed}) != len(listed):
        raise ConfigError(f"{path}: network.emulate.dilation: {listed} names a dilation twice")


def _check_dilation(path: Path, cfg: dict, points: list[dict]) -> None:
    """An explicit dilation only with transports that can be dilated, on a machine that
    can cap a host's CPU."""
    from parrbm.harness.grid import DILATABLE
    from parrbm.harness.network import dilation_missing

    undilatable = sorted(
        {p["transport"] for p in points if p.get("dilation", 1.0) != 1.0 and p["transport"] not in DILATABLE}
    )
    if undilatable:
        raise ConfigError(
            f"{path}: network.emulate.dilation: transport {undilatable[0]!r} cannot be dilated: MPICH's "
            f"collectives poll for progress while they wait (a rank waiting in a barrier uses a whole core), "
            f"which would burn its host's capped CPU and slow the step it waits for; dilate tcp only "
            f"('auto' leaves mpi undilated), or give mpi a config of its own"
        )
    if any(p.get("dilation", 1.0) != 1.0 for p in points):
        why = dilation_missing()
        if why:
            raise ConfigError(f"{path}: network.emulate.dilation: {why}")


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
