"""Agents for the detgym environments, all with SB3's ``predict`` interface (see :class:`agents.base.Agent`).

:func:`make_agent` builds any of them by name for an env (``agents.registry.AGENTS`` lists them, with the envs
they fit; ``detgym compare --list`` prints that table); :func:`run_episode` is the one episode loop.

* Paper 000 (DetLossWeight): :class:`AVWAgent`, :class:`RLOAgent`; baselines :class:`UniformAgent`,
  :class:`ConstantAgent`.
* Paper 001 (DetBoxSelect): the NMS family (:mod:`agents.nms`: greedy NMS, soft-NMS, top-k, threshold, keep-all,
  oracle) as agents (:mod:`agents.box_heuristics`); the policy-gradient detector (:mod:`agents.pg_detector`).
* Papers 002/003 (DetSampleSelect): :class:`agents.mgral.MGRALAgent`; entropy / score-uncertainty
  (:mod:`agents.active_learning`) and core-set (:mod:`agents.coreset`) baselines.
* Every env: :class:`RandomAgent`; SB3 / sb3-contrib algorithms (:class:`agents.sb3.SB3Agent`).
"""

from agents.avw import AVWAgent
from agents.base import Agent
from agents.constant import ConstantAgent
from agents.random_agent import RandomAgent
from agents.registry import AGENTS, AgentSpec, agent_names, make_agent
from agents.rlo import RLOAgent
from agents.rollout import Episode, evaluate, run_episode
from agents.uniform import UniformAgent

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
