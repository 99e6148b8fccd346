"""Every agent of every env family by name: what :func:`detgym.agents.make_agent` and ``detgym compare --list`` read.

Each row is an :class:`AgentSpec`: a name, which envs it fits (family and action space), whether it learns, and
how to build it. Agents are built lazily, so listing them imports no torch. A family adds its agents by adding
rows to :data:`AGENTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym

from detgym.agents.base import Agent

__all__ = ["AGENTS", "AgentSpec", "agent_names", "make_agent"]


@dataclass(frozen=True)
class AgentSpec:
    """One agent name: what it is, where it fits and how to build it."""

    name: str
    #: One line for listings.
    summary: str
    #: ``"paper"`` (an agent of one of the papers), ``"baseline"`` (a heuristic) or ``"sb3"`` (an RL library).
    kind: str
    #: ``fits(env)``: whether the agent can act in ``env``.
    fits: Callable[[gym.Env], bool]
    #: ``build(env, seed, **kwargs)``; ``env`` may be None for agents that need none.
    build: Callable[..., Agent]
    #: Whether the agent has ``learn(total_timesteps)`` and must be trained before it is evaluated.
    learns: bool = False


# ------------------------------------------------------------------------------------------- builders
def _loss_weight_fits(env: gym.Env) -> bool:
    from detgym.agents.constant import fits_loss_weight_schemes

    return fits_loss_weight_schemes(env)


def _constant(action: int) -> Callable[..., Agent]:
    def build(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
        from detgym.agents.constant import ConstantAgent

        return ConstantAgent(action, **kwargs)

    return build


def _avw(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.avw import AVWAgent

    return AVWAgent(**kwargs)


def _uniform(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.uniform import UniformAgent

    return UniformAgent(**kwargs)


def _rlo(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.rlo import RLOAgent

    return RLOAgent(seed=seed, **kwargs)


def _random(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.random_agent import RandomAgent

    if env is None:
        return RandomAgent(seed=seed, **kwargs)
    return RandomAgent(seed=seed, action_space=env.action_space, observation_space=env.observation_space, **kwargs)


def _sb3(algo: str) -> Callable[..., Agent]:
    def build(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
        from detgym.agents.sb3 import SB3Agent

        if env is None:
            raise ValueError(f"agent {algo!r} learns on an env: pass env=...")
        return SB3Agent(algo, env, seed=seed, **kwargs)

    return build


def _sb3_fits(algo: str) -> Callable[[gym.Env], bool]:
    def fits(env: gym.Env) -> bool:
        from detgym.agents.sb3 import algo_fits

        return algo_fits(algo, env)

    return fits


def _any_env(env: gym.Env) -> bool:
    return True


_SCHEMES = ("AVW's scheme (largest variance drop)", "smallest loss", "largest loss", "all weights 1")


def _box_rule_fits(rule: str) -> Callable[[gym.Env], bool]:
    def fits(env: gym.Env) -> bool:
        from detgym.agents.box_heuristics import rule_fits

        return rule_fits(rule, env)

    return fits


def _box_rule(rule: str) -> Callable[..., Agent]:
    def build(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
        from detgym.agents.box_heuristics import BoxRuleAgent, OracleAgent

        if env is None:
            raise ValueError(f"agent {rule!r} reads the DetBoxSelect env's layout: pass env=...")
        return OracleAgent(env, **kwargs) if rule == "oracle" else BoxRuleAgent(env, rule, **kwargs)

    return build


_BOX_RULES = (
    ("nms", "greedy NMS, class-wise, IoU 0.5 (paper 001's baseline)"),
    ("soft_nms_linear", "soft-NMS, linear decay, N_t 0.3 (Bodla et al.); DetBoxRescore"),
    ("soft_nms_gaussian", "soft-NMS, Gaussian decay, sigma 0.5 (Bodla et al.); DetBoxRescore"),
    ("topk", "keep the k (5) highest-scored candidates"),
    ("threshold", "keep candidates scoring >= 0.5"),
    ("keep_all", "keep every candidate (no NMS)"),
    ("oracle", "per ground-truth box its best same-class candidate: the headroom (sees the GT)"),
)

def _sample_select_fits(env: gym.Env) -> bool:
    from detgym.agents.active_learning import fits_sample_select

    return fits_sample_select(env)


def _mgral_fits(env: gym.Env) -> bool:
    from detgym.agents.mgral import MGRALAgent

    return MGRALAgent.fits(env)


def _al_strategy(name: str) -> Callable[..., Agent]:
    def build(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
        from detgym.agents.active_learning import STRATEGIES
        from detgym.agents.coreset import CoreSetAgent

        spaces = {} if env is None else {"observation_space": env.observation_space, "action_space": env.action_space}
        factory = CoreSetAgent if name == "coreset" else STRATEGIES[name]
        return factory(**spaces, **kwargs)

    return build


def _mgral(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.mgral import MGRALAgent

    return MGRALAgent(env, seed=seed, **kwargs)


_AL_STRATEGIES = (
    ("entropy_mean", "mean class entropy of the image's detections (paper 002, Fig. 4)"),
    ("entropy_sum", "summed class entropy of the image's detections (paper 002, Fig. 4)"),
    ("score_uncertainty", "least confidence: 1 - the image's highest detection score"),
    ("coreset", "core-set: k-center greedy on embed() (Sener & Savarese 2018)"),
)

AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        # DetLossWeight (paper 000)
        AgentSpec("uniform", "all level weights 1 (a3): ordinary training", "baseline", _loss_weight_fits, _uniform),
        AgentSpec("avw", "AVW, paper 000 sec. 3.2: always a0", "paper", _loss_weight_fits, _avw),
        AgentSpec("rlo", "RLO, paper 000 eq. 8-9: online probabilities over a0..a3", "paper", _loss_weight_fits, _rlo),
        *(AgentSpec(f"a{k}", f"always a{k}: {_SCHEMES[k]}", "baseline", _loss_weight_fits, _constant(k))
          for k in range(4)),
        # DetBoxSelect / DetBoxSelectSeq / DetBoxRescore (paper 001)
        *(AgentSpec(rule, summary, "baseline", _box_rule_fits(rule), _box_rule(rule)) for rule, summary in _BOX_RULES),
        # DetSampleSelect / DetSampleSelectSeq (papers 002/003)
        AgentSpec("mgral", "MGRAL, paper 002 III-C..E: LSTM over the candidates, REINFORCE on mAP", "paper",
                  _mgral_fits, _mgral, learns=True),
        *(AgentSpec(name, summary, "baseline", _sample_select_fits, _al_strategy(name))
          for name, summary in _AL_STRATEGIES),
        # every env
        AgentSpec("random", "uniformly random actions (masks respected)", "baseline", _any_env, _random),
        AgentSpec("ppo", "Stable-Baselines3 PPO", "sb3", _sb3_fits("ppo"), _sb3("ppo"), learns=True),
        AgentSpec("a2c", "Stable-Baselines3 A2C", "sb3", _sb3_fits("a2c"), _sb3("a2c"), learns=True),
        AgentSpec("dqn", "Stable-Baselines3 DQN (Discrete actions)", "sb3", _sb3_fits("dqn"), _sb3("dqn"), learns=True),
        AgentSpec("maskable_ppo", "sb3-contrib MaskablePPO (envs with action_masks)", "sb3",
                  _sb3_fits("maskable_ppo"), _sb3("maskable_ppo"), learns=True),
        AgentSpec("recurrent_ppo", "sb3-contrib RecurrentPPO (LSTM policy)", "sb3", _sb3_fits("recurrent_ppo"),
                  _sb3("recurrent_ppo"), learns=True),
    )
}


def agent_names(env: gym.Env | None = None) -> list[str]:
    """Every agent name, or those that fit ``env``."""
    return [name for name, spec in AGENTS.items() if env is None or spec.fits(env)]


def make_agent(name: str, env: gym.Env | None = None, seed: int | None = None, **kwargs: Any) -> Agent:
    """Build agent ``name`` for ``env`` (see :data:`AGENTS`; ``detgym compare --list`` prints them).

    Args:
        name: an agent name (case-insensitive).
        env: the env the agent will act in; when given, an agent that does not fit it is refused. Learning
            agents (SB3) need it: they train on it.
        seed: the agent's seed (sampling, network initialisation).
        **kwargs: the agent class's own arguments.

    Raises:
        ValueError: an unknown name (listing the known ones), or an agent that does not fit ``env`` (listing those
            that do).
    """
    key = str(name).lower()
    if key not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; accepted: {', '.join(AGENTS)}")
    spec = AGENTS[key]
    if env is not None and not spec.fits(env):
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise ValueError(
            f"agent {key!r} does not fit {env_id} (action space {env.action_space}); "
            f"agents that fit: {', '.join(agent_names(env))}"
        )
    return spec.build(env, seed, **kwargs)
