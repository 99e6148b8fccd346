"""One run of a comparison, as a worker executes it: train (learning agents), evaluate, return the run record.

A learning agent trains for its budget on a fresh env whose episodes start from the run's training seed; every
agent is then evaluated on a fresh env, one :func:`detgym.rollout.run_episode` per evaluation seed. The record
(plain JSON data, see :func:`run_one`) holds everything :mod:`detgym.compare.reproduce` needs to re-execute the
evaluation episodes, and what the plots need: the training episodes' returns and actions (the learning curve and
the action frequencies over training), and the probabilities of agents that expose them (RLO) at every decision.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from importlib import metadata
from typing import Any

import gymnasium as gym
import numpy as np

from detgym._hashing import jsonable
from detgym.agents.registry import AgentSpec, find_agent
from detgym.compare.grid import RunSpec, env_config
from detgym.parallel import torch_threads
from detgym.rollout import Episode, run_episode
from detgym.tensorboard import TensorBoardLogger

__all__ = ["EpisodeLog", "RECORD_FORMAT", "package_versions", "run_one"]

#: Version of the run record layout.
RECORD_FORMAT = 1

#: Distributions whose versions every record carries.
_PACKAGES = ("detgym", "torch", "torchvision", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy", "scipy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run's numbers depend on (``None`` when one is missing)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class EpisodeLog(gym.Wrapper):
    """Records every episode that passes through the env (innermost wrapper: the actions as the env receives
    them): ``episodes`` lists finished ones as ``{"return", "length", "timesteps", "actions", "final_AP"}``
    (``timesteps``: steps through this env when the episode ended; ``final_AP``: ``info["final_metrics"]["AP"]``
    when the env reports it; ``actions`` only for a Discrete action, what the action-frequency plot reads: a
    box-selection learner's 200k training episodes of 100 scores each would be hundreds of MB); ``timesteps``
    counts every step."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._record_actions = isinstance(env.action_space, gym.spaces.Discrete)
        self.episodes: list[dict[str, Any]] = []
        self.timesteps = 0
        self._current: dict[str, Any] | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self._current = {"return": 0.0, "length": 0, "actions": []}
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.timesteps += 1
        if self._current is not None:
            cur = self._current
            cur["return"] += float(reward)
            cur["length"] += 1
            if self._record_actions:
                cur["actions"].append(jsonable(np.asarray(action)))
            if terminated or truncated:
                final = info.get("final_metrics") or {}
                cur.update(timesteps=self.timesteps, final_AP=final.get("AP"))
                self.episodes.append(cur)
                self._current = None
        return obs, reward, terminated, truncated, info


class _ProbsProbe:
    """An agent seen through a probe: every ``predict`` also records the agent's ``probs`` (RLO's action
    probabilities, eq. 8-9 of paper 000) when it has them; everything else is the agent's."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent
        self.probs: list[list[float]] = []

    def predict(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, Any]:
        out = self._agent.predict(*args, **kwargs)
        if hasattr(self._agent, "probs"):
            self.probs.append(np.asarray(self._agent.probs, dtype=float).reshape(-1).tolist())
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)


def _make_env(spec: RunSpec, role: str) -> gym.Env:
    """A fresh env of the run: the one learners train in (``role="train"``: the env class's training configuration,
    when it has one) or the evaluated one, checked against the configuration resolved in the parent."""
    resolved = spec.env.train if role == "train" and spec.env.train is not None else spec.env
    log_dir = os.path.join(spec.tb_dir, f"{role}_env") if spec.tb_dir is not None else None
    env = gym.make(resolved.id, **resolved.make_kwargs(spec.threads, log_dir))
    config = env_config(env)
    if config is not None and config.config_key() != resolved.config_key:
        env.close()
        raise RuntimeError(f"{resolved.id} resolved to another configuration in the worker than in the parent")
    return env


def _agent(spec: RunSpec) -> AgentSpec:
    """The run's agent: detgym's own by name; a user's imported again from its recorded source (this may be a
    fresh worker process)."""
    return find_agent(spec.agent, spec.agent_source)


def _train(spec: RunSpec, log: TensorBoardLogger) -> tuple[Any, dict[str, Any]]:
    agent_spec = _agent(spec)
    kwargs = dict(spec.agent_kwargs)
    if spec.tb_dir is not None and agent_spec.kind == "sb3":
        kwargs.setdefault("tensorboard_log", os.path.join(spec.tb_dir, "sb3"))
    env = EpisodeLog(_make_env(spec, "train"))
    start = time.perf_counter()
    try:
        agent = agent_spec.make(env, seed=spec.train_seed, **kwargs)
        if not callable(getattr(agent, "learn", None)):
            raise TypeError(f"agent {spec.agent!r} counts as a learning agent, but {agent!r} has no learn()")
        agent.learn(spec.train_budget)
    finally:
        env.close()
    for ep in env.episodes:
        log.scalar("train/episode_return", ep["return"], ep["timesteps"])
    return agent, {"timesteps": env.timesteps, "episodes": env.episodes, "wall_s": time.perf_counter() - start}


def _episode_record(ep: Episode, probs: list[list[float]]) -> dict[str, Any]:
    return {
        "seed": ep.seed, "actions": ep.actions, "rewards": ep.rewards, "return": ep.episode_return,
        "length": ep.length, "terminated": ep.terminated, "truncated": ep.truncated,
        "final_metrics": ep.final_metrics, "diverged": bool(ep.last_info.get("diverged", False)),
        "probs": probs or None, "wall_s": ep.wall_s,
    }


def dataset_metrics(env: gym.Env, last_infos: list[dict[str, Any]]) -> dict[str, float] | None:
    """COCO stats over all evaluated episodes together, for envs whose episode is one image's decision
    (``evaluate_episodes`` of the unwrapped env, e.g. DetBoxSelect's dataset-level AP); None for the others."""
    evaluate = getattr(env.unwrapped, "evaluate_episodes", None)
    return None if evaluate is None else {k: float(v) for k, v in evaluate(last_infos).items()}


def _info_metrics(env: gym.Env, last_infos: list[dict[str, Any]]) -> dict[str, float]:
    """The means over the episodes of the last-info scalars the env class asks compare to report
    (``compare_defaults.info_metrics``, e.g. the tabular env's regret)."""
    names = getattr(getattr(env.unwrapped, "compare_defaults", None), "info_metrics", ())
    return {name: float(np.mean([info[name] for info in last_infos])) for name in names}


def _evaluate(spec: RunSpec, agent: Any, log: TensorBoardLogger) -> tuple[list[dict[str, Any]], dict | None]:
    """The evaluation episodes' records, and the env's dataset-level metrics over them (or None) with its info
    metrics (:func:`_info_metrics`) under ``"info"``."""
    env = _make_env(spec, "eval")
    try:
        if agent is None:
            agent = _agent(spec).make(env, seed=spec.train_seed, **spec.agent_kwargs)
        episodes, last_infos = [], []
        for i, seed in enumerate(spec.eval_seeds):
            probe = _ProbsProbe(agent)
            ep = run_episode(env, probe, seed=seed)
            episodes.append(_episode_record(ep, probe.probs))
            last_infos.append(ep.last_info)
            log.scalar("eval/return", ep.episode_return, i)
            for name, value in (ep.final_metrics or {}).items():
                log.scalar(f"eval/{name}", value, i)
        metrics = dataset_metrics(env, last_infos)
        for name, value in (metrics or {}).items():
            log.scalar(f"eval/dataset_{name}", value, 0)
        info = _info_metrics(env, last_infos)
        return episodes, {"dataset": metrics, "info": info}
    finally:
        env.close()


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` and return its record (one JSON line of ``runs.jsonl``).

    Record fields: ``format``, ``key``, ``env`` (id, kwargs, family, resolved ``config``, ``config_key``, ``key``),
    ``agent`` (name, kwargs, learns, train_budget, eval_episodes, key; ``source`` for an agent that is not one of
    detgym's own: its import path, or its registered builder's ``module:qualname``), ``seeds`` (run, train, eval),
    ``episodes`` (per evaluation episode: seed, actions as the unwrapped env received them, rewards, return,
    length, terminated, truncated, ``final_metrics``, diverged, ``probs``, wall_s), ``return`` (mean over the
    evaluation episodes), ``AP`` (mean final COCO AP, when the env reports final metrics; else, for envs with
    ``evaluate_episodes`` such as DetBoxSelect, the COCO AP of all evaluated episodes together, whose stats are
    ``dataset_metrics``), the env's info metrics (``compare_defaults.info_metrics``: each a mean over the evaluation
    episodes' last info, e.g. ``regret``), ``train`` (learning agents: timesteps, finished training episodes with
    return / length / timesteps / actions / final_AP, wall_s), ``wall_s`` and ``cpu_s`` (this process's CPU time
    during the run),
    ``torch_threads``, ``versions``, ``host``, ``finished_at``. ``env.train`` (kwargs, config_key, key) names the
    env learners trained in when it is not the evaluated one.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    log = TensorBoardLogger(spec.tb_dir)
    try:
        with torch_threads(spec.threads):
            agent, train = _train(spec, log) if spec.learns else (None, None)
            episodes, measured = _evaluate(spec, agent, log)
    finally:
        log.close()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "key": spec.key,
        "env": spec.env.record(),
        "agent": spec.agent_record(),
        "seeds": {"run": spec.seed, "train": spec.train_seed, "eval": list(spec.eval_seeds)},
        "episodes": episodes,
        "return": float(np.mean([ep["return"] for ep in episodes])),
    }
    finals = [ep["final_metrics"] for ep in episodes]
    if all(f is not None and "AP" in f for f in finals):
        record["AP"] = float(np.mean([f["AP"] for f in finals]))
    metrics = measured["dataset"]
    if metrics is not None:
        record["dataset_metrics"] = metrics
        record.setdefault("AP", metrics["AP"])
    record.update(measured["info"])
    if measured["info"]:
        record["info_metrics"] = list(measured["info"])
    record.update(
        train=train, wall_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu_start,
        torch_threads=spec.threads, versions=package_versions(),
        host=platform.node(), finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record
