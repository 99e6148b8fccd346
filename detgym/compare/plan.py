"""From a comparison's options to its runs, in one step: :func:`make_plan`.

Per env: its constructor arguments (``env_kwargs``: for every env, or per env id), the agents compared, the
baseline, the learning agents' training budget and the evaluated episodes per run (each: the option, else the env
class's ``compare_defaults``, :class:`detgym.envs.base.CompareDefaults`), the env learners train in when the class
trains them elsewhere than it evaluates (another split); then every run of the grid
(:func:`detgym.compare.grid.build_grid`). Every check of the options happens here, before any run starts, with
one-line errors naming the option.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from detgym.compare.grid import ResolvedEnv, RunSpec, build_grid, check_agents, resolve_env

if TYPE_CHECKING:
    from detgym.agents.registry import AgentSpec

__all__ = ["EnvPlan", "Plan", "env_kwargs_for", "make_plan", "resolve_agents"]


@dataclass(frozen=True)
class EnvPlan:
    """What a comparison runs on one env."""

    env: ResolvedEnv
    agents: tuple[str, ...]
    baseline: str
    train_budget: int
    eval_episodes: int

    def settings(self) -> dict[str, Any]:
        """The plain-data form written to ``summary.json``."""
        return {"agents": list(self.agents), "baseline": self.baseline, "train_budget": self.train_budget,
                "eval_episodes": self.eval_episodes}


@dataclass(frozen=True)
class Plan:
    """Every env's plan and every run of the grid."""

    envs: tuple[EnvPlan, ...]
    specs: tuple[RunSpec, ...]

    @property
    def agents(self) -> dict[str, list[str]]:
        return {p.env.id: list(p.agents) for p in self.envs}

    @property
    def baselines(self) -> dict[str, str]:
        return {p.env.id: p.baseline for p in self.envs}


def env_kwargs_for(env_id: str, env_kwargs: Mapping[str, Any], env_ids: Sequence[str]) -> dict[str, Any]:
    """``env_kwargs`` for one env: per id when every key names an env of the comparison, else for every env."""
    if env_kwargs and all(k in env_ids for k in env_kwargs):
        value = env_kwargs.get(env_id, {})
        if not isinstance(value, Mapping):
            raise ValueError(f"--env-kwargs for {env_id} must be a JSON object, got {value!r}")
        return dict(value)
    return dict(env_kwargs)


def resolve_agents(names: Sequence[str]) -> dict[str, AgentSpec]:
    """Agent names (case-insensitive) and import paths (as given) -> their specs.

    Raises:
        ValueError: ``--agents: ...`` naming the unknown name or the path that does not import.
    """
    from detgym.agents.registry import find_agent

    specs = {}
    for name in names:
        try:
            spec = find_agent(name)
        except ValueError as err:
            raise ValueError(f"--agents: {err}") from None
        specs[spec.name] = spec
    return specs


def _check_workers_find(agents: Sequence[AgentSpec], workers: int, backend: str) -> None:
    """Refuse, before any run, a registered agent that worker processes could not import again."""
    if workers == 1 and backend != "ray":
        return
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    for agent in agents:
        if agent.kind != "user" or agent.source == agent.name:
            continue
        # worker processes re-run a script's top level (a spawned or forkserver child), never a notebook's or
        # Ray's; a lambda or closure has no importable name at all
        in_main = agent.source is not None and agent.source.startswith("__main__:")
        if agent.source is None or (in_main and (backend == "ray" or main_file is None)):
            raise ValueError(
                f"--agents: agent {agent.name!r} was registered with a builder that worker processes cannot import "
                f"({agent.source or 'a lambda or closure'}): define it at the top level of an importable module, "
                "or run with workers=1"
            )


def _env_plan(env: ResolvedEnv, agents: Sequence[str] | None, baseline: str | None, train_budget: int | None,
              eval_episodes: int | None) -> EnvPlan:
    defaults = env.defaults
    names = tuple(agents) if agents is not None else tuple(defaults.agents)
    if not names:
        raise ValueError(f"--agents is required for {env.id} (it has no default agents); agents that fit: "
                         f"{', '.join(env.agents)}")
    check_agents(env, names)
    if baseline is not None and baseline not in names:
        raise ValueError(f"--baseline {baseline!r} is not among the agents of {env.id}; accepted: {', '.join(names)}")
    preferred = baseline or defaults.baseline
    return EnvPlan(env=env, agents=names, baseline=preferred if preferred in names else names[0],
                   train_budget=train_budget or defaults.train_budget,
                   eval_episodes=eval_episodes or defaults.eval_episodes)


def _with_train_env(plan: EnvPlan, kwargs: Mapping[str, Any], specs: Mapping[str, AgentSpec]) -> EnvPlan:
    """The plan with the env its learning agents train in, when its class trains them on another configuration
    (``compare_defaults.train_env_kwargs``, e.g. the train split while every agent is evaluated on val)."""
    if not plan.env.defaults.train_env_kwargs or not any(specs[a].learns for a in plan.agents):
        return plan
    return replace(plan, env=replace(plan.env, train=resolve_env(plan.env.id, kwargs, train=True)))


def make_plan(envs: Sequence[str], agents: Sequence[str] | None, seeds: Sequence[int], *,
              train_budget: int | None = None, eval_episodes: int | None = None,
              env_kwargs: Mapping[str, Any] | None = None, agent_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
              baseline: str | None = None, threads: int = 1, workers: int = 1, backend: str = "process",
              tb_root: str | None = None) -> Plan:
    """Resolve the envs (each built once here) and agents, fill in each env's defaults, and list every run.

    Args:
        envs: env ids.
        agents: agent names or import paths, for every env (``None``: each env's default agents).
        seeds: run seeds.
        train_budget, eval_episodes: for every env (``None``: each env's default).
        env_kwargs: constructor arguments for every env, or per env id (``{"DetLossWeight-v0": {...}}``).
        agent_kwargs: per agent name (or import path), its arguments.
        baseline: the agent the others are compared with (``None``: each env's default when compared, else the
            first agent).
        threads: torch threads per run.
        workers, backend: how the runs will execute (a registered agent must be importable by workers).
        tb_root: TensorBoard root of the runs (``None``: no logs).

    Raises:
        ValueError: one line naming the option: an unknown env or agent, an agent path that does not import, an
            agent that does not fit an env, a baseline not compared, agent kwargs of an agent not compared.
    """
    env_kwargs, agent_kwargs = dict(env_kwargs or {}), dict(agent_kwargs or {})
    specs = resolve_agents(agents) if agents is not None else {}
    extra = [s for s in specs.values() if s.source == s.name]  # import paths: the registry does not list them
    given = {e: env_kwargs_for(e, env_kwargs, envs) for e in envs}
    resolved = [resolve_env(e, given[e], extra) for e in envs]
    plans = tuple(_env_plan(env, list(specs) if agents is not None else None, baseline, train_budget, eval_episodes)
                  for env in resolved)
    if agents is None:
        specs = resolve_agents(list(dict.fromkeys(a for p in plans for a in p.agents)))
    plans = tuple(_with_train_env(p, given[p.env.id], specs) for p in plans)
    resolved = [p.env for p in plans]
    unknown = set(agent_kwargs) - {a for p in plans for a in p.agents}
    if unknown:
        raise ValueError(f"--agent-kwargs names agents not compared: {', '.join(sorted(unknown))}")
    _check_workers_find(list(specs.values()), workers, backend)
    grid = build_grid(resolved, {p.env.id: [specs[a] for a in p.agents] for p in plans}, seeds,
                      train_budget={p.env.id: p.train_budget for p in plans},
                      eval_episodes={p.env.id: p.eval_episodes for p in plans},
                      agent_kwargs=agent_kwargs, tb_root=tb_root, threads=threads)
    return Plan(envs=plans, specs=tuple(grid))
