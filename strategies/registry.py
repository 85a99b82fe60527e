"""The strategy registry: every part of parrbm that needs the list of strategies, or one
strategy's declarations, asks here.

A strategy is named by

* a registered name: the built-in six, names registered with :func:`register`, and the
  strategies that installed packages declare in the ``parrbm.strategies`` entry-point
  group (``name = "mypkg.strategies:MyStrategy"``);
* a ``"module:Class"`` reference: the module is imported (it must be importable, also by
  the tcp and mpi workers, which import it by the same reference; a module loaded from a
  directory outside the installed packages is found through that directory, which the
  launcher puts on the workers' ``PYTHONPATH``);
* the class itself (``RBM(strategy=MyStrategy)``).

A strategy class is a subclass of :class:`parrbm.strategies.base.Worker` (or the serial
trainer) with a unique ``name``; see docs/design.md section 5 and the README's page on
writing a strategy.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

#: the built-in strategies, in the order tables and figures show them
BUILTIN = {
    "serial": "parrbm.strategies.serial:SerialStrategy",
    "unit-partitioned": "parrbm.strategies.unit_partitioned:UnitPartitioned",
    "per-update-sync": "parrbm.strategies.per_update_sync:PerUpdateSync",
    "purple-only": "parrbm.strategies.purple_only:PurpleOnly",
    "green-only": "parrbm.strategies.green_only:GreenOnly",
    "parameter-averaging": "parrbm.strategies.parameter_averaging:ParameterAveraging",
}
ENTRY_POINT_GROUP = "parrbm.strategies"

#: a strategy's class: a Worker subclass with its declarations (checked by _check_class)
StrategyClass = type[Any]

_registered: dict[str, str | StrategyClass] = {}
_entry_points: dict[str, object] | None = None
_by_reference: dict[str, StrategyClass] = {}


class StrategyError(ValueError):
    """A strategy that cannot be found or is not a strategy, with what is known."""


def register(cls: StrategyClass, name: str | None = None) -> StrategyClass:
    """Make ``cls`` known by its ``name`` (usable as a decorator)."""
    _check_class(cls, repr(cls))
    key = name or cls.name
    known = _known()
    there = known.get(key)
    if there is not None and there is not cls and not (isinstance(there, str) and _by_reference.get(there) is cls):
        raise StrategyError(f"a strategy named {key!r} is already registered ({known[key]})")
    _registered[key] = cls
    return cls


def names(*, parallel_only: bool = False) -> list[str]:
    """Every registered strategy name: the built-ins first, in their order."""
    out = list(_known())
    return [n for n in out if n != "serial"] if parallel_only else out


def _known() -> dict[str, Any]:
    """Every known name: a class, a reference ('module:Class') or an entry point."""
    global _entry_points
    if _entry_points is None:
        _entry_points = {}
        try:
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                _entry_points.setdefault(ep.name, ep)
        except Exception:  # noqa: BLE001 - a broken distribution must not hide the built-ins
            _entry_points = {}
    return {**BUILTIN, **{k: v for k, v in _entry_points.items() if k not in BUILTIN}, **_registered}


def resolve(strategy, *, load: bool = False) -> StrategyClass:
    """The strategy class named by ``strategy`` (a name, a ``module:Class`` reference or the
    class); StrategyError says what is known.

    Without ``load`` nothing is imported that is not parrbm's own: a name read from a file
    (a results record, a saved model) finds the built-ins, registered classes and the
    plug-ins this process already loaded, and nothing else, so that reading a file never
    runs code. ``load=True`` is for a strategy the user names (a config's grid, the
    estimator's parameter, the command line): it imports a ``module:Class`` reference and
    loads an entry point (see :func:`load`)."""
    if isinstance(strategy, type):
        _check_class(strategy, repr(strategy))
        _check_not_builtin_name(strategy, repr(strategy))
        _by_reference.setdefault(f"{strategy.__module__}:{strategy.__qualname__}", strategy)
        return strategy
    if not isinstance(strategy, str) or not strategy:
        raise StrategyError(
            f"a strategy is a registered name, a 'module:Class' reference or a class, "
            f"got {strategy!r}; registered: {', '.join(names())}"
        )
    known = _known()
    if strategy in known:
        return _load(known[strategy], strategy, load=load)
    if ":" in strategy:
        if strategy in _by_reference:
            return _by_reference[strategy]
        if not load:
            raise StrategyError(
                f"strategy {strategy!r} is a plug-in that this process has not loaded; parrbm "
                f"never imports code named by a file it reads (name it in a config, or pass "
                f"the class, to run it)"
            )
        return _import(strategy)
    raise StrategyError(
        f"unknown strategy {strategy!r}; registered: {', '.join(names())} "
        f"(or 'module:Class' for a strategy of your own)"
    )


def load(strategy) -> StrategyClass:
    """:func:`resolve` for a strategy the user named: a ``module:Class`` reference is
    imported, an entry point loaded."""
    return resolve(strategy, load=True)


def reference(strategy) -> str:
    """How another process names the same strategy: the registered name, else
    ``module:Class``."""
    cls = resolve(strategy)
    target = _known().get(cls.name)
    if target is not None and (
        target is cls
        or (isinstance(target, str) and _by_reference.get(target) is cls)
        or (not isinstance(target, (str, type)) and _entry_point_class(target) is cls)
    ):
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def name_of(strategy) -> str:
    """The strategy's own name (what records, tables and figures show)."""
    return resolve(strategy).name


def import_paths(strategy) -> list[str]:
    """Directories the workers need on ``sys.path`` to import the strategy's module (its
    top-level package's parent, when that is not already on every worker's path)."""
    cls = resolve(strategy)
    if cls.__module__.startswith("parrbm."):
        return []
    module = sys.modules.get(cls.__module__)
    where = getattr(module, "__file__", None)
    if not where:
        return []
    path = Path(where).resolve().parent
    for _ in range(cls.__module__.count(".")):
        path = path.parent
    return [str(path)]


def plugin_sources(strategy) -> list[list[str]]:
    """[module name, source] of every module outside parrbm in the strategy's class
    hierarchy, bases first: what workers on other hosts need to run it, sent with their
    job (no file system is shared). StrategyError when a module's source cannot be read,
    or the class lives in the driver's script (``__main__``: the workers would run it)."""
    cls = resolve(strategy)
    out: list[list[str]] = []
    for klass in reversed(cls.__mro__):
        mod = klass.__module__
        if mod == "builtins" or mod == "parrbm" or mod.startswith("parrbm.") or mod in [m for m, _ in out]:
            continue
        if mod == "__main__":
            raise StrategyError(
                f"strategy {cls.name!r}: defined in the script that runs the fit; workers on other "
                f"hosts import a strategy from a module: move the class into one"
            )
        where = getattr(sys.modules.get(mod), "__file__", None)
        try:
            if where is None:
                raise OSError(f"module {mod!r} has no file")
            out.append([mod, Path(where).read_text()])
        except (OSError, TypeError):
            raise StrategyError(
                f"strategy {cls.name!r}: the source of module {mod!r} cannot be read to send it to the workers"
            ) from None
    return out


def install_sources(sources: list[list[str]]) -> None:
    """On a worker on another host: the modules of a strategy's hierarchy from the source
    its driver sent (replacing any of the same name here: the driver's code is the one
    measured and recorded)."""
    import types

    for name, source in sources:
        module = types.ModuleType(name)
        module.__file__ = f"<parrbm job: {name}>"
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - the driver's named plug-in


def source_digest(strategy) -> str | None:
    """SHA-256 of the source that defines a strategy that is not built in (None when every
    class in its MRO is parrbm's own): a results file's identity changes when a plug-in's
    code does, also when the change is in a module the plug-in inherits its step from.

    One module: the SHA-256 of its file (as recorded since plug-ins were first hashed);
    several: the SHA-256 of their names and files' SHA-256, in MRO order. StrategyError
    when a class's source cannot be read (a class defined in no file)."""
    import hashlib

    cls = resolve(strategy)
    modules: list[str] = []
    for klass in cls.__mro__:
        mod = klass.__module__
        if mod == "builtins" or mod == "parrbm" or mod.startswith("parrbm.") or mod in modules:
            continue
        modules.append(mod)
    if not modules:
        return None
    digests = []
    for mod in modules:
        where = getattr(sys.modules.get(mod), "__file__", None)
        try:
            digests.append(hashlib.sha256(Path(where).read_bytes()).hexdigest() if where else None)
        except OSError:
            digests.append(None)
        if digests[-1] is None:
            raise StrategyError(
                f"strategy {cls.name!r}: the source of module {mod!r} (in its class hierarchy) "
                f"cannot be read, so the code that was measured cannot be identified"
            )
    if len(digests) == 1:
        return digests[0]
    h = hashlib.sha256()
    for mod, d in zip(modules, digests):
        h.update(f"{mod}\0{d}\n".encode())
    return h.hexdigest()


def builtin_order(name: str) -> tuple[int, str]:
    """A sort key: the built-ins in their order, then the rest by name."""
    order = list(BUILTIN)
    return (order.index(name), name) if name in order else (len(order), name)


def _load(target, name: str | None = None, *, load: bool = True) -> StrategyClass:
    if isinstance(target, type):
        return target
    if isinstance(target, str):
        if target.startswith("parrbm.") or target in _by_reference:
            return _import(target)
        if not load:
            raise StrategyError(
                f"strategy {name!r} ({target}) is a plug-in that this process has not loaded; "
                f"parrbm never imports code named by a file it reads"
            )
        return _import(target)
    if not load:  # an entry point: loading it imports its package, unless that already happened
        cls = _entry_point_class(target)
        if cls is None:
            raise StrategyError(
                f"strategy {name!r}: its entry point {target.value!r} is not loaded in this process; "
                f"parrbm never imports code named by a file it reads"
            )
        return cls
    try:
        cls = target.load()
    except Exception as exc:  # noqa: BLE001
        raise StrategyError(
            f"strategy {name!r}: its entry point {target.value!r} does not load ({type(exc).__name__}: {exc})"
        ) from None
    _check_class(cls, target.value)
    _by_reference.setdefault(target.value, cls)
    return cls


def _entry_point_class(ep) -> StrategyClass | None:
    """An entry point's class if its module is already imported (no code runs), else None."""
    module = sys.modules.get(getattr(ep, "module", "") or "")
    if module is None:
        return None
    obj: Any = module
    for part in (getattr(ep, "attr", "") or "").split("."):
        obj = getattr(obj, part, None) if part else obj
    return obj if isinstance(obj, type) else None


def _import(ref: str) -> StrategyClass:
    if ref in _by_reference:
        return _by_reference[ref]
    module_name, _, qualname = ref.rpartition(":")
    if not module_name or not qualname:
        raise StrategyError(
            f"strategy {ref!r}: a reference is 'module:Class', e.g. 'mypkg.mymodule:MyStrategy', "
            f"or 'path/to/file.py:Class'"
        )
    if module_name.endswith(".py"):  # a file: its folder goes on sys.path, the module is its stem
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise StrategyError(f"strategy {ref!r}: no such file: {path}")
        module_name = path.stem
        already = sys.modules.get(module_name)
        there = getattr(already, "__file__", None)
        if already is not None and (not there or Path(there).resolve() != path):
            raise StrategyError(
                f"strategy {ref!r}: a module named {module_name!r} is already imported from "
                f"{there or '(no file)'}; two plug-in files cannot share a name: rename one"
            )
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(
            f"strategy {ref!r}: cannot import {module_name!r} ({exc}); the module must be "
            f"importable here and on the workers (PYTHONPATH, or an installed package)"
        ) from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise StrategyError(f"strategy {ref!r}: module {module_name!r} has no {qualname!r}")
    _check_class(obj, ref)
    _check_not_builtin_name(obj, ref)
    _by_reference[ref] = obj
    _by_reference.setdefault(f"{obj.__module__}:{obj.__qualname__}", obj)  # as reference() names it
    return obj


def _check_not_builtin_name(cls: StrategyClass, where: str) -> None:
    """A plug-in named like a built-in would sit beside it as an indistinguishable row."""
    if cls.__module__ == "parrbm" or cls.__module__.startswith("parrbm."):
        return
    if cls.name in BUILTIN:
        raise StrategyError(
            f"strategy {where}: its name {cls.name!r} is a built-in strategy's; a plug-in sets "
            f"a name of its own (class attribute 'name')"
        )


def _check_class(cls, where: str) -> None:
    from parrbm.strategies.base import Worker
    from parrbm.strategies.serial import SerialStrategy

    if not isinstance(cls, type) or not issubclass(cls, (Worker, SerialStrategy)):
        raise StrategyError(
            f"strategy {where}: not a strategy class (a subclass of parrbm.strategies.Worker), got {cls!r}"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise StrategyError(f"strategy {where}: the class must set 'name' to a non-empty string")
