"""Agents for the detgym environments, all with SB3's ``predict`` interface (see :class:`detgym.agents.base.Agent`).

:func:`make_agent` builds any of them by name for an env (``detgym.agents.registry.AGENTS`` lists them, with the envs
they fit; ``detgym compare --list`` prints that table); :func:`run_episode` is the one episode loop.

* Paper 000 (DetLossWeight): :class:`AVWAgent`, :class:`RLOAgent`; baselines :class:`UniformAgent`,
  :class:`ConstantAgent`.
* Paper 001 (DetBoxSelect): the NMS family (:mod:`detgym.agents.nms`: greedy NMS, soft-NMS, top-k, threshold, keep-all,
  oracle) as agents (:mod:`detgym.agents.box_heuristics`); the policy-gradient detector (:mod:`detgym.agents.pg_detector`).
* Papers 002/003 (DetSampleSelect): :class:`detgym.agents.mgral.MGRALAgent`; entropy / score-uncertainty
  (:mod:`detgym.agents.active_learning`) and core-set (:mod:`detgym.agents.coreset`) baselines.
* Every env: :class:`RandomAgent`; SB3 / sb3-contrib algorithms (:class:`detgym.agents.sb3.SB3Agent`).
"""

from detgym.agents.avw import AVWAgent
from detgym.agents.base import Agent
from detgym.agents.constant import ConstantAgent
from detgym.agents.random_agent import RandomAgent
from detgym.agents.registry import AGENTS, AgentSpec, agent_names, make_agent
from detgym.agents.rlo import RLOAgent
from detgym.agents.rollout import Episode, evaluate, run_episode
from detgym.agents.uniform import UniformAgent

__all__ = [
    "AGENTS",
    "AVWAgent",
    "Agent",
    "AgentSpec",
    "ConstantAgent",
    "Episode",
    "RLOAgent",
    "RandomAgent",
    "UniformAgent",
    "agent_names",
    "evaluate",
    "make_agent",
    "run_episode",
]
