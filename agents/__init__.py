"""Agents for the detgym environments, all with SB3's ``predict`` interface (see :class:`detgym.agents.base.Agent`).

:func:`make_agent` builds any of them by name for an env (``detgym.agents.registry.AGENTS`` lists them, with the envs
they fit; ``detgym compare --list`` prints that table), or a user's agent by import path (``"pkg.module:Factory"``,
an SB3 algorithm class such as ``"sb3_contrib.TQC"``); :func:`register` adds a named agent in this process.
:func:`run_episode` / :func:`run_vector_episode` (:mod:`detgym.rollout`) are the episode loops.

* Paper 000 (DetLossWeight): :class:`AVWAgent`, :class:`RLOAgent`; baselines :class:`UniformAgent`,
  :class:`ConstantAgent`.
* Paper 001 (DetBoxSelect): the NMS family (:mod:`detgym.agents.nms`: greedy NMS, soft-NMS, top-k, threshold, keep-all,
  oracle) as agents (:mod:`detgym.agents.box_heuristics`); the policy-gradient detector
  (:mod:`detgym.agents.pg_detector`).
* Papers 002/003 (DetSampleSelect): :class:`detgym.agents.mgral.MGRALAgent`; entropy / score-uncertainty
  (:mod:`detgym.agents.active_learning`) and core-set (:mod:`detgym.agents.coreset`) baselines.
* Every env: :class:`RandomAgent`; SB3 / sb3-contrib algorithms (:class:`detgym.agents.sb3.SB3Agent`).
"""

from detgym.agents.avw import AVWAgent
from detgym.agents.base import Agent
from detgym.agents.constant import ConstantAgent
from detgym.agents.random_agent import RandomAgent
from detgym.agents.registry import AGENTS, AgentSpec, agent_names, find_agent, make_agent, register
from detgym.agents.rlo import RLOAgent
from detgym.agents.uniform import UniformAgent
from detgym.rollout import Episode, Step, evaluate, run_episode, run_vector_episode

__all__ = [
    "AGENTS",
    "AVWAgent",
    "Agent",
    "AgentSpec",
    "ConstantAgent",
    "Episode",
    "RLOAgent",
    "RandomAgent",
    "Step",
    "UniformAgent",
    "agent_names",
    "evaluate",
    "find_agent",
    "make_agent",
    "register",
    "run_episode",
    "run_vector_episode",
]
