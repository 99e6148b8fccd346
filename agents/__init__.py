"""Agents for the detgym environments, all with SB3's ``predict`` interface (see :class:`agents.base.Agent`).

Paper 000 (DetLossWeight): :class:`AVWAgent` (always a0), :class:`RLOAgent` (eq. 8-9); baselines
:class:`UniformAgent` (always a3), :class:`RandomAgent`, :class:`ConstantAgent` (any single scheme).
SB3 PPO / A2C / DQN: :mod:`agents.sb3`.
"""

from agents.avw import AVWAgent
from agents.base import Agent
from agents.constant import ConstantAgent
from agents.random_agent import RandomAgent
from agents.rlo import RLOAgent
from agents.uniform import UniformAgent

__all__ = ["AVWAgent", "Agent", "ConstantAgent", "RLOAgent", "RandomAgent", "UniformAgent", "make_agent"]


def make_agent(name: str, seed: int | None = None, **kwargs) -> Agent:
    """Build a paper / baseline agent by name: ``uniform``, ``avw``, ``rlo``, ``random`` or ``a0`` .. ``a3``."""
    key = name.lower()
    if key == "uniform":
        return UniformAgent()
    if key == "avw":
        return AVWAgent()
    if key == "rlo":
        return RLOAgent(seed=seed, **kwargs)
    if key == "random":
        return RandomAgent(seed=seed)
    if key in ("a0", "a1", "a2", "a3"):
        return ConstantAgent(int(key[1]))
    raise ValueError(f"unknown agent {name!r}; accepted: uniform, avw, rlo, random, a0, a1, a2, a3")
