"""Every agent of every env family by name: what :func:`detgym.agents.make_agent` and ``detgym compare --list`` read.

Each row is an :class:`AgentSpec`: a name, which envs it fits (family and action space), whether it learns, and
how to build it. Agents are built lazily, so listing them imports no torch. A family adds its agents by adding
rows to :data:`AGENTS`.

A user's own agent comes in two ways (:func:`find_agent` resolves both):

* by import path, ``"package.module:Factory"`` (or ``"package.module.Factory"``): ``Factory(env=env, seed=seed,
  **kwargs)`` returns an object with SB3's ``predict(observation, state=None, episode_start=None,
  deterministic=False) -> (action, state)``; it learns when it has ``learn(total_timesteps)`` (a class is
  inspected; a factory function says so with an attribute ``Factory.learns = True``), and fits the envs for which
  ``Factory.fits(env)`` is true (every env when it has no ``fits``). A Stable-Baselines3 / sb3-contrib algorithm
  class (``"sb3_contrib.TQC"``, ``"stable_baselines3:SAC"``) is built on the env as :mod:`detgym.agents.sb3`
  wraps it, with ``policy="MlpPolicy"`` unless the kwargs say otherwise;
* by name, after :func:`register` in the running process.

Either way the agent's ``source`` (the import path, or the registered builder's ``module:qualname``) goes into
``runs.jsonl``, so worker processes and ``detgym replay`` import it again.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym

from detgym.agents.base import Agent, import_object

__all__ = ["AGENTS", "AgentSpec", "agent_names", "find_agent", "is_import_path", "make_agent", "register"]


@dataclass(frozen=True)
class AgentSpec:
    """One agent name: what it is, where it fits and how to build it."""

    name: str
    #: One line for listings.
    summary: str
    #: ``"paper"`` (an agent of one of the papers), ``"baseline"`` (a heuristic), ``"sb3"`` (an RL library) or
    #: ``"user"`` (registered, or given by import path).
    kind: str
    #: ``fits(env)``: whether the agent can act in ``env``.
    fits: Callable[[gym.Env], bool]
    #: ``build(env=env, seed=seed, **kwargs)``; ``env`` may be None for agents that need none.
    build: Callable[..., Agent]
    #: Whether the agent has ``learn(total_timesteps)`` and must be trained before it is evaluated.
    learns: bool = False
    #: Where another process finds the agent again (recorded in ``runs.jsonl``): its import path, or the
    #: ``module:qualname`` of a registered builder (``None``: detgym's own agents, and builders no other process
    #: can import, such as lambdas).
    source: str | None = None

    def make(self, env: gym.Env | None = None, seed: int | None = None, **kwargs: Any) -> Agent:
        """Build the agent for ``env`` (refused with the agents that fit when it does not fit)."""
        if env is not None and not self.fits(env):
            env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
            raise ValueError(
                f"agent {self.name!r} does not fit {env_id} (action space {env.action_space}); "
                f"agents that fit: {', '.join(agent_names(env))}"
            )
        return self.build(env=env, seed=seed, **kwargs)


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


def _sb3_fits(algo: str | type) -> Callable[[gym.Env], bool]:
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


def _learned_nms(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.learned_nms import LearnedNMSAgent

    if env is None:
        raise ValueError("agent 'learned_nms' learns from a DetBoxSelect env's split: pass env=...")
    return LearnedNMSAgent(env, seed=seed, **kwargs)


_BOX_RULES = (
    ("nms", "greedy NMS, class-wise, IoU 0.5 (paper 001's baseline); score_thresh / detections_per_img: a "
            "detector's post-processing"),
    ("soft_nms_linear", "soft-NMS, linear decay, N_t 0.3 (Bodla et al.); DetBoxRescore"),
    ("soft_nms_gaussian", "soft-NMS, Gaussian decay, sigma 0.5 (Bodla et al.); DetBoxRescore"),
    ("topk", "keep the k (5) highest-scored candidates"),
    ("threshold", "keep candidates scoring >= 0.5"),
    ("keep_all", "keep every candidate (no NMS)"),
    ("oracle", "per ground-truth box its highest-IoU same-class candidate (match='score': the highest-scored): the "
               "headroom (sees the GT)"),
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


def _al_oracle(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
    from detgym.agents.al_oracle import BalanceOracle

    if env is None:
        raise ValueError("agent 'oracle_balance' reads the DetSampleSelect env's hidden labels: pass env=...")
    return BalanceOracle(env, **kwargs)


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
        AgentSpec("learned_nms", "supervised learned NMS: GossipNet-style re-scorer trained on the env's split",
                  "baseline", _box_rule_fits("nms"), _learned_nms, learns=True),
        # DetSampleSelect / DetSampleSelectSeq (papers 002/003)
        AgentSpec("mgral", "MGRAL, paper 002 III-C..E: LSTM over the candidates, REINFORCE on mAP", "paper",
                  _mgral_fits, _mgral, learns=True),
        *(AgentSpec(name, summary, "baseline", _sample_select_fits, _al_strategy(name))
          for name, summary in _AL_STRATEGIES),
        AgentSpec("oracle_balance", "label-aware oracle: evens out the labeled set's (class, size) cells; the "
                  "headroom (sees hidden labels)", "baseline", _sample_select_fits, _al_oracle),
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


# ------------------------------------------------------------------------------------------- users' agents
_BUILTIN = frozenset(AGENTS)
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _source(obj: Any) -> str | None:
    """``module:qualname`` of a module-level callable, else None (lambdas, closures)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _any_env_or(fits: Any) -> Callable[[gym.Env], bool]:
    return fits if callable(fits) else _any_env


def register(name: str, build: Callable[..., Any], *, fits: Callable[[gym.Env], bool] | None = None,
             learns: bool = False, summary: str | None = None) -> AgentSpec:
    """Add agent ``name`` in this process: ``make_agent(name, env, seed, **kwargs)`` and ``detgym.compare.run``
    then build it as ``build(env=env, seed=seed, **kwargs)``. Registering a name again replaces it.

    Worker processes (``workers > 1``, Ray) and ``detgym replay`` import ``build`` again by its module and name,
    so give a module-level function or class of an importable module there.

    Args:
        name: lower case letters, digits, ``_`` and ``-``; not one of detgym's own agents.
        build: the factory; returns an object with SB3's ``predict``.
        fits: ``fits(env)``, which envs it can act in (default ``build.fits`` when it has one, else every env).
        learns: whether the built agent has ``learn(total_timesteps)`` and must be trained before evaluation.
        summary: one line for listings.

    Raises:
        ValueError: a malformed name, one of detgym's own, or ``build`` / ``fits`` not callable.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"agent name {name!r} must be lower case letters, digits, '_' and '-', starting with a letter")
    if name in _BUILTIN:
        raise ValueError(f"agent name {name!r} is one of detgym's own agents; choose another name")
    if not callable(build) or (fits is not None and not callable(fits)):
        raise ValueError(f"register({name!r}): build and fits must be callable")
    spec = AgentSpec(name, summary or f"{_source(build) or repr(build)} (registered)", "user",
                     fits or _any_env_or(getattr(build, "fits", None)), build, learns=bool(learns),
                     source=_source(build))
    AGENTS[name] = spec
    return spec


def is_import_path(name: str) -> bool:
    """Whether an agent given as ``name`` is an import path (``pkg.module:Factory``, ``pkg.module.Factory``)."""
    return ":" in name or "." in name


def _is_sb3_class(obj: Any) -> bool:
    # a subclass of SB3's BaseAlgorithm was defined after importing it: nothing to import for any other class
    base = sys.modules.get("stable_baselines3.common.base_class")
    return isinstance(obj, type) and base is not None and issubclass(obj, base.BaseAlgorithm)


def _sb3_class_build(algo: type) -> Callable[..., Agent]:
    def build(env: gym.Env | None, seed: int | None, **kwargs: Any) -> Agent:
        from detgym.agents.sb3 import SB3Agent

        if env is None:
            raise ValueError(f"agent {algo.__name__!r} learns on an env: pass env=...")
        return SB3Agent(algo, env, seed=seed, **kwargs)

    return build


def _learns(factory: Any) -> bool:
    if isinstance(factory, type):
        return callable(getattr(factory, "learn", None))
    return bool(getattr(factory, "learns", False))


@functools.lru_cache(maxsize=None)
def _from_path(path: str) -> AgentSpec:
    obj = import_object(path, "agent")
    if _is_sb3_class(obj):
        return AgentSpec(path, f"{obj.__module__}.{obj.__qualname__} (SB3 algorithm)", "sb3", _sb3_fits(obj),
                         _sb3_class_build(obj), learns=True, source=path)
    return AgentSpec(path, f"{obj.__module__}.{obj.__qualname__}", "user", _any_env_or(getattr(obj, "fits", None)),
                     obj, learns=_learns(obj), source=path)


def find_agent(name: str, source: str | None = None) -> AgentSpec:
    """The agent called ``name``: an import path (imported), or a name of :data:`AGENTS` (case-insensitive).

    Args:
        name: an agent name or import path.
        source: the ``source`` recorded with a registered agent: its builder is imported from there when ``name``
            is not registered in this process (a worker process, ``detgym replay``).

    Raises:
        ValueError: one line naming the agent: an unknown name (listing the known ones), a module that does not
            import, an attribute it lacks, or a recorded builder that cannot be imported here.
    """
    if is_import_path(name):
        return _from_path(name)
    key = str(name).lower()
    if key in AGENTS:
        return AGENTS[key]
    if source is None:
        raise ValueError(f"unknown agent {name!r}; accepted: {', '.join(AGENTS)}, or an import path "
                         "'package.module:Factory'")
    try:
        build = import_object(source, "builder")
    except ValueError as err:
        raise ValueError(f"agent {name!r} was registered (detgym.agents.register) by the process that ran it, and "
                         f"this process cannot import it again: {err}; register it here first, or compare it by "
                         "import path") from None
    return AgentSpec(key, source, "user", _any_env_or(getattr(build, "fits", None)), build, source=source)


def make_agent(name: str, env: gym.Env | None = None, seed: int | None = None, **kwargs: Any) -> Agent:
    """Build agent ``name`` for ``env`` (see :data:`AGENTS`; ``detgym compare --list`` prints them).

    Args:
        name: an agent name (case-insensitive), or an import path (see the module docstring).
        env: the env the agent will act in; when given, an agent that does not fit it is refused. Learning
            agents (SB3) need it: they train on it.
        seed: the agent's seed (sampling, network initialisation).
        **kwargs: the agent class's own arguments.

    Raises:
        ValueError: an unknown name (listing the known ones), an import path that does not import, or an agent
            that does not fit ``env`` (listing those that do).
    """
    return find_agent(name).make(env, seed, **kwargs)
