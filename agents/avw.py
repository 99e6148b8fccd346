"""AVW (Adaptive Variance Weighting, sec. 3.2 of paper 000): always action a0."""

from __future__ import annotations

from detgym.agents.constant import ConstantAgent

__all__ = ["AVWAgent"]


class AVWAgent(ConstantAgent):
    """Always a0: enhance the two levels whose interval variance dropped fastest (eq. 4-5 of paper 000).

    The env computes the weights; the agent only names the scheme ("AVW is a specific case of RLO, which
    constantly performs action 0 with a 100% probability", paper 000 sec. 3.3).
    """

    def __init__(self) -> None:
        super().__init__(0)

    def __repr__(self) -> str:
        return "AVWAgent()"
