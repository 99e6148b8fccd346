"""The unweighted baseline: always action a3 (every level weight 1)."""

from __future__ import annotations

from detgym.agents.constant import ConstantAgent

__all__ = ["UniformAgent"]


class UniformAgent(ConstantAgent):
    """Always a3: all per-level weights 1, i.e. the detector's ordinary training (the baseline of table 3)."""

    def __init__(self) -> None:
        super().__init__(3)

    def __repr__(self) -> str:
        return "UniformAgent()"
