"""Parallelization strategies: one module per algorithm of DESIGN.md section 5.

Every strategy trains the same model with CD-k and can hand back the full model; none
knows which transport moves its data.
"""

from parrbm.strategies.serial import SerialStrategy

STRATEGIES = {
    "serial": SerialStrategy,
}
# Strategies described in DESIGN.md section 5 whose modules are not in this release yet.
PLANNED = ("unit-partitioned", "per-update-sync", "purple-only", "green-only", "parameter-averaging")

__all__ = ["STRATEGIES", "PLANNED", "SerialStrategy"]
