"""What a comparison runs: the grid env x agent x seed, each cell a :class:`RunSpec` with its key and seeds.

A run's key is ``ENV_ID/ENV_KEY/AGENT/AGENT_KEY/seedS``: ``ENV_KEY`` hashes the env's resolved configuration
(``env.unwrapped.config.config_key()`` plus any constructor argument that is not a preset field), ``AGENT_KEY``
the agent's arguments, its training budget (learning agents only), the evaluation protocol and the torch thread
count (CPU results are deterministic for a given count). Two runs with the same key are the same experiment; any
change of configuration gives new keys, so a results file is never reused for another configuration by accident.

Seeds: run seed ``s`` gives, through ``numpy.random.SeedSequence(s)``, one training seed (the learning agents'
training episodes and every agent's own seed) and ``eval_episodes`` evaluation seeds (``reset(seed=...)`` of the
evaluated episodes). They are distinct, so no agent is evaluated on an episode it trained on, and they do not
depend on the agent, so every agent meets the same evaluation episodes (the same detector initialisations and
data orders): the comparison is paired by seed.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from detgym._hashing import stable_hash
from detgym.envs.base import CompareDefaults

if TYPE_CHECKING:
    from detgym.agents.registry import AgentSpec

__all__ = [
    "PROTOCOL",
    "ResolvedEnv",
    "RunSpec",
    "build_grid",
    "check_agents",
    "check_same_configuration",
    "derive_seeds",
    "env_class",
    "env_config",
    "resolve_env",
]

#: Version of how runs are keyed and seeded; part of every agent key, so a change never mixes with old runs.
PROTOCOL = 1


def derive_seeds(run_seed: int, eval_episodes: int) -> tuple[int, tuple[int, ...]]:
    """``(train_seed, eval_seeds)`` of run seed ``run_seed`` (see the module docstring).

    The evaluation seeds of ``n`` episodes are the first ``n`` of any larger ``eval_episodes``.
    """
    words = [int(w) for w in np.random.SeedSequence(int(run_seed)).generate_state(1 + int(eval_episodes))]
    if len(set(words)) != len(words):  # 32-bit words: a collision is a 1-in-a-billion event, but never silent
        raise ValueError(f"seed {run_seed}: derived training and evaluation seeds collide; use other seeds")
    return words[0], tuple(words[1:])


@dataclass(frozen=True)
class ResolvedEnv:
    """One env of the comparison, checked by building it once in the parent."""

    id: str
    #: Its constructor arguments: ``--env-kwargs`` over the env class's ``compare_defaults.eval_env_kwargs`` (or,
    #: for the env learners train in, ``compare_defaults.train_env_kwargs`` over ``--env-kwargs``).
    kwargs: Mapping[str, Any]
    family: str | None
    #: ``env.unwrapped.config.to_dict()`` (``None`` for an env without a preset).
    config: Mapping[str, Any] | None
    #: ``config.config_key()``, or a hash of the kwargs.
    config_key: str
    #: The key of the env in run keys: ``config_key`` plus the arguments that are not preset fields.
    key: str
    #: Agent names (:data:`detgym.agents.registry.AGENTS`) that fit it.
    agents: tuple[str, ...]
    #: Whether its constructor takes ``log_dir`` (TensorBoard) and ``num_threads`` (set to the run's thread count).
    takes_log_dir: bool
    takes_num_threads: bool = False
    #: The env class's ``compare_defaults``: what a comparison of it runs when the options do not say.
    defaults: CompareDefaults = field(default_factory=CompareDefaults)
    #: The env learning agents train in, when the env class trains them on another configuration (another split).
    train: ResolvedEnv | None = None

    def record(self) -> dict[str, Any]:
        """The env part of a run record."""
        record = {"id": self.id, "kwargs": dict(self.kwargs), "family": self.family, "config": self.config,
                  "config_key": self.config_key, "key": self.key}
        if self.train is not None:
            record["train"] = {"kwargs": dict(self.train.kwargs), "config_key": self.train.config_key,
                               "key": self.train.key}
        return record

    def make_kwargs(self, threads: int, log_dir: str | None = None) -> dict[str, Any]:
        """The constructor arguments of a run's env: ``kwargs``, the run's thread count and log directory (neither
        is part of the env's key: the thread count is in the agent's)."""
        kwargs = dict(self.kwargs)
        if self.takes_num_threads:
            kwargs.setdefault("num_threads", threads)
        if log_dir is not None and self.takes_log_dir:
            kwargs["log_dir"] = log_dir
        return kwargs


def env_class(env_id: str) -> tuple[Any, Mapping[str, inspect.Parameter]]:
    """The registered constructor of ``env_id`` (an env class) and its parameters, without building the env."""
    entry = gym.spec(env_id).entry_point
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return creator, inspect.signature(creator).parameters


def resolve_env(env_id: str, kwargs: Mapping[str, Any], extra_agents: Sequence[AgentSpec] = (), *,
                train: bool = False) -> ResolvedEnv:
    """Build ``env_id`` once: its configuration, key and fitting agents (the registered ones, and those of
    ``extra_agents`` that fit: agents given by import path).

    Args:
        env_id: a detgym env id.
        kwargs: ``--env-kwargs`` for it.
        extra_agents: agents outside the registry to check.
        train: resolve the env learning agents train in (``compare_defaults.train_env_kwargs`` over ``kwargs``)
            instead of the evaluated one (``kwargs`` over ``compare_defaults.eval_env_kwargs``).

    Raises:
        ValueError: an unknown id (listing detgym's ids), ``log_dir`` among the kwargs (the harness sets it), or
            whatever the env's constructor refuses.
    """
    import detgym  # noqa: F401  registers the ids
    from detgym.agents.registry import agent_names
    from detgym.envs import ENV_IDS

    if env_id not in ENV_IDS:
        raise ValueError(f"unknown env {env_id!r}; accepted: {', '.join(ENV_IDS)}")
    if "log_dir" in kwargs:
        raise ValueError("--env-kwargs must not set log_dir: each run logs to OUT/tb/<run key>")
    creator, parameters = env_class(env_id)
    defaults = getattr(creator, "compare_defaults", None) or CompareDefaults()
    kwargs = {**kwargs, **defaults.train_env_kwargs} if train else {**defaults.eval_env_kwargs, **kwargs}
    # a cache built here (a detector trained for the first time) shows its progress; not part of the env's key
    progress = {"progress": True} if "progress" in parameters and "progress" not in kwargs else {}
    env = gym.make(env_id, **kwargs, **progress)
    try:
        config = env_config(env)
        fields = set(config.to_dict()) if config is not None else set()
        extras = {k: v for k, v in kwargs.items() if k not in fields and k != "preset"}
        if config is not None:
            config_dict, config_key = config.to_dict(), config.config_key()
        else:
            config_dict, config_key = None, stable_hash({"id": env_id, "kwargs": dict(kwargs)})
        key = config_key if not extras else stable_hash({"config_key": config_key, "extras": extras})
        return ResolvedEnv(
            id=env_id, kwargs=kwargs, family=getattr(env.unwrapped, "family", None), config=config_dict,
            config_key=config_key, key=key,
            agents=(*agent_names(env), *(a.name for a in extra_agents if a.fits(env))),
            takes_log_dir="log_dir" in parameters, takes_num_threads="num_threads" in parameters, defaults=defaults,
        )
    finally:
        env.close()


def env_config(env: gym.Env) -> Any:
    """The env's resolved configuration (``env.unwrapped.config``) when it can say its key (``to_dict`` and
    ``config_key``, as every :class:`~detgym.envs.substrate.Substrate` preset); else None: the env is then keyed
    by its constructor arguments."""
    config = getattr(env.unwrapped, "config", None)
    return config if callable(getattr(config, "config_key", None)) and callable(getattr(config, "to_dict", None)) \
        else None


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: everything a worker needs to run it (picklable; plain data)."""

    env: ResolvedEnv
    agent: str
    agent_kwargs: Mapping[str, Any]
    learns: bool
    #: Training timesteps (learning agents; ``None`` otherwise).
    train_budget: int | None
    seed: int
    train_seed: int
    eval_seeds: tuple[int, ...]
    agent_key: str
    #: TensorBoard directory of the run (``None``: no logs).
    tb_dir: str | None = None
    #: torch threads in the worker.
    threads: int = 1
    #: Where a worker finds an agent that is not one of detgym's own (:attr:`AgentSpec.source`).
    agent_source: str | None = None

    @property
    def key(self) -> str:
        return f"{self.env.id}/{self.env.key}/{self.agent}/{self.agent_key}/seed{self.seed}"

    def agent_record(self) -> dict[str, Any]:
        """The agent part of a run record."""
        record = {"name": self.agent, "kwargs": dict(self.agent_kwargs), "learns": self.learns,
                  "train_budget": self.train_budget, "eval_episodes": len(self.eval_seeds), "key": self.agent_key}
        return record if self.agent_source is None else {**record, "source": self.agent_source}


def check_agents(env: ResolvedEnv, agents: Sequence[str]) -> None:
    """Raise ValueError for an agent that does not fit ``env`` (listing those that do)."""
    for name in agents:
        if name not in env.agents:
            raise ValueError(f"agent {name!r} does not fit {env.id}; agents that fit: {', '.join(env.agents)}")


def _agent_key(agent: str, kwargs: Mapping[str, Any], budget: int | None, eval_episodes: int, threads: int,
               source: str | None = None, train_env: str | None = None) -> str:
    # a non-learning agent's runs do not depend on the training budget: its budget is None in the key; CPU results
    # depend on the torch thread count, so it is in the key too; a user's agent adds its source, a learner trained
    # in another env than the evaluated one that env's key (absent otherwise: the published keys stay valid)
    data = {"protocol": PROTOCOL, "agent": agent, "kwargs": dict(kwargs), "eval_episodes": eval_episodes,
            "train_budget": budget, "threads": threads}
    extra = {"source": source, "train_env": train_env}
    return stable_hash({**data, **{k: v for k, v in extra.items() if v is not None}}, 8)


def build_grid(envs: Sequence[ResolvedEnv], agents: Mapping[str, Sequence[AgentSpec]], seeds: Sequence[int], *,
               train_budget: Mapping[str, int], eval_episodes: Mapping[str, int],
               agent_kwargs: Mapping[str, Mapping[str, Any]] | None = None, tb_root: str | None = None,
               threads: int = 1) -> list[RunSpec]:
    """Every (env, agent, seed) run, seed-major (a comparison stopped half-way has every agent's first seeds), the
    learning agents first within a seed (the longest runs start first: better packing on the workers).

    Args:
        envs: the resolved envs.
        agents, train_budget, eval_episodes: per env id, its agents (:func:`detgym.agents.find_agent`), learning
            agents' training timesteps and evaluated episodes per run.
        seeds: run seeds.
        agent_kwargs: per agent name, its arguments.
        tb_root: TensorBoard root (each run logs to ``tb_root/<run key>``); ``None``: no logs.
        threads: torch threads per run.

    Raises:
        ValueError: an agent that does not fit an env (listing those that do).
    """
    for env in envs:
        check_agents(env, [a.name for a in agents[env.id]])
    specs = []
    for seed in seeds:
        for env in envs:
            train_seed, eval_seeds = derive_seeds(seed, eval_episodes[env.id])
            for agent in sorted(agents[env.id], key=lambda a: not a.learns):
                budget = train_budget[env.id] if agent.learns else None
                kwargs = dict((agent_kwargs or {}).get(agent.name, {}))
                train_env = env.train.key if agent.learns and env.train is not None else None
                key = _agent_key(agent.name, kwargs, budget, len(eval_seeds), threads, agent.source, train_env)
                spec = RunSpec(env=env, agent=agent.name, agent_kwargs=kwargs, learns=agent.learns,
                               train_budget=budget, seed=int(seed), train_seed=train_seed, eval_seeds=eval_seeds,
                               agent_key=key, threads=threads, agent_source=agent.source)
                specs.append(spec if tb_root is None else _with_tb(spec, tb_root))
    return specs


def _with_tb(spec: RunSpec, tb_root: str) -> RunSpec:
    return replace(spec, tb_dir=os.path.join(tb_root, *spec.key.split("/")))


def check_same_configuration(records: Mapping[str, Mapping[str, Any]], specs: Sequence[RunSpec], path: str) -> None:
    """Refuse a results file holding runs of this comparison's envs or agents made with another configuration
    (another preset field, training budget, agent argument, evaluation protocol): its numbers would not be this
    comparison's, and a directory holds one comparison.

    Raises:
        ValueError: naming the env or agent, both keys, and what to do.
    """
    env_keys = {s.env.id: s.env.key for s in specs}
    agent_keys = {(s.env.id, s.agent): s.agent_key for s in specs}
    for record in records.values():
        env_id, agent = record.get("env", {}).get("id"), record.get("agent", {}).get("name")
        env_key, agent_key = record.get("env", {}).get("key"), record.get("agent", {}).get("key")
        if env_id in env_keys and env_key != env_keys[env_id]:
            raise ValueError(
                f"{path} holds runs of {env_id} with another env configuration (key {env_key}, this comparison: "
                f"{env_keys[env_id]}): use another --out directory, or the same --env-kwargs as those runs"
            )
        if (env_id, agent) in agent_keys and agent_key != agent_keys[env_id, agent]:
            raise ValueError(
                f"{path} holds runs of {agent} on {env_id} with another agent configuration (key {agent_key}, this "
                f"comparison: {agent_keys[env_id, agent]}; budget, --agent-kwargs or --eval-episodes differ): use "
                "another --out directory, or the same options as those runs"
            )
