"""Parallelization strategies: one module per algorithm of docs/design.md section 5.

Every strategy trains the same model with CD-k and can hand back the full model; none
knows which transport moves its data. Each declares its traffic, compute and rules in
its own class; :mod:`parrbm.strategies.registry` finds strategies by name, by
``module:Class`` and through the ``parrbm.strategies`` entry-point group.
"""

from parrbm.strategies.base import StrategyOptions, Worker
from parrbm.strategies.green_only import GreenOnly
from parrbm.strategies.parameter_averaging import ParameterAveraging
from parrbm.strategies.per_update_sync import PerUpdateSync
from parrbm.strategies.purple_only import PurpleOnly
from parrbm.strategies.registry import StrategyError, names, reference, register, resolve  # noqa: E402
from parrbm.strategies.serial import SerialStrategy
from parrbm.strategies.unit_partitioned import UnitPartitioned

#: the built-in parallel strategies (every registered one: :func:`names`)
PARALLEL_STRATEGIES: dict[str, type[Worker]] = {
    cls.name: cls for cls in (UnitPartitioned, PerUpdateSync, PurpleOnly, GreenOnly, ParameterAveraging)
}

__all__ = [
    "PARALLEL_STRATEGIES",
    "SerialStrategy",
    "StrategyError",
    "names",
    "reference",
    "register",
    "resolve",
    "StrategyOptions",
    "Worker",
    "UnitPartitioned",
    "PerUpdateSync",
    "PurpleOnly",
    "GreenOnly",
    "ParameterAveraging",
]
