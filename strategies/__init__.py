"""Parallelization strategies: one module per algorithm of docs/DESIGN.md section 5.

Every strategy trains the same model with CD-k and can hand back the full model; none
knows which transport moves its data.
"""

from parrbm.strategies.base import StrategyOptions, Worker
from parrbm.strategies.green_only import GreenOnly
from parrbm.strategies.parameter_averaging import ParameterAveraging
from parrbm.strategies.per_update_sync import PerUpdateSync
from parrbm.strategies.purple_only import PurpleOnly
from parrbm.strategies.serial import SerialStrategy
from parrbm.strategies.unit_partitioned import UnitPartitioned

PARALLEL_STRATEGIES: dict[str, type[Worker]] = {
    cls.name: cls for cls in (UnitPartitioned, PerUpdateSync, PurpleOnly, GreenOnly, ParameterAveraging)
}
STRATEGIES = ("serial", *PARALLEL_STRATEGIES)

__all__ = ["PARALLEL_STRATEGIES", "STRATEGIES", "SerialStrategy", "StrategyOptions", "Worker",
           "UnitPartitioned", "PerUpdateSync", "PurpleOnly", "GreenOnly", "ParameterAveraging"]
