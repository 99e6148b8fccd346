"""``detgym replay``: re-execute the recorded actions of finished runs and check that the env gives the same
rewards and final metrics (CompilerGym's ``validate``: a results file is evidence only if it can be re-run).

For every evaluated episode of a run: a fresh env from the recorded id and arguments (its resolved configuration
must hash to the recorded ``config_key``), ``reset(seed=<the recorded evaluation seed>)``, then the recorded
actions (as the unwrapped env received them) one by one, with the recorded number of torch threads (CPU results
are deterministic for a given thread count). Rewards, the end of the episode and ``info["final_metrics"]`` must be
equal exactly (NaN equals NaN), and so must the dataset-level metrics of envs that report them (DetBoxSelect).

The run's agent must be found again too: a user's agent is imported from its recorded source (an import path, or
a registered builder's ``module:qualname``), so a results file names code that still exists; a run whose agent
cannot be found is not reproduced, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from detgym.compare.grid import env_class, env_config
from detgym.compare.worker import dataset_metrics
from detgym.parallel import torch_threads
from detgym.rollout import Step, run_episode

__all__ = ["ReplayResult", "replay_file", "replay_record", "select_runs"]


@dataclass(frozen=True)
class ReplayResult:
    """The verdict on one run."""

    key: str
    reproduced: bool
    #: One line: what was checked, or the first difference.
    message: str


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


class _Recorded:
    """Replay's agent: the recorded actions, in order, as the env's action space holds them."""

    def __init__(self, actions: list[Any], space: gym.Space) -> None:
        self._actions, self._space = iter(actions), space

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        return np.asarray(next(self._actions), dtype=self._space.dtype).reshape(self._space.shape), state


def _replay_episode(env: gym.Env, episode: Mapping[str, Any], last_infos: list[dict[str, Any]]) -> str | None:
    """The first difference between the episode's record and its re-execution, or None (then its last ``info`` is
    appended to ``last_infos``)."""
    steps: list[Step] = []
    n = len(episode["actions"])
    ep = run_episode(env, _Recorded(episode["actions"], env.action_space), seed=episode["seed"], max_steps=n,
                     callback=steps.append)
    for step, (reward, recorded) in enumerate(zip(ep.rewards, episode["rewards"])):
        if not _same(reward, float(recorded)):
            return f"step {step}: reward {reward!r}, recorded {recorded!r}"
    if ep.length < n:
        return f"step {ep.length}: the replayed episode ended earlier ({ep.length} steps, recorded {n})"
    last = steps[-1]  # the env's own end flags (run_episode marks a max_steps stop as truncated)
    if last.terminated or last.truncated:
        if (bool(last.terminated), bool(last.truncated)) != (episode["terminated"], episode["truncated"]):
            return f"step {n - 1}: terminated={last.terminated} truncated={last.truncated}, recorded " \
                   f"terminated={episode['terminated']} truncated={episode['truncated']}"
    elif episode["terminated"] or episode["truncated"]:
        return f"the replayed episode did not end after the recorded {n} steps"
    info = last.info
    replayed = info.get("final_metrics")
    recorded = episode["final_metrics"]
    if (replayed is None) != (recorded is None):
        return f"final metrics {replayed!r}, recorded {recorded!r}"
    if recorded is not None:
        for name in sorted(set(recorded) | set(replayed)):
            if not _same(replayed.get(name), recorded.get(name)):
                return f"final {name} {replayed.get(name)!r}, recorded {recorded.get(name)!r}"
    last_infos.append(info)
    return None


def replay_record(record: Mapping[str, Any]) -> ReplayResult:
    """Replay every evaluated episode of one run record (see the module docstring)."""
    import torch

    import detgym  # noqa: F401  registers the ids
    from detgym.agents.registry import find_agent

    key, env_rec = record["key"], record["env"]
    try:
        find_agent(record["agent"]["name"], record["agent"].get("source"))
    except ValueError as err:
        return ReplayResult(key, False, str(err))
    threads = int(record.get("torch_threads") or torch.get_num_threads())
    kwargs = dict(env_rec["kwargs"])
    if "num_threads" in env_class(env_rec["id"])[1]:  # the env runs at the run's thread count, as it did
        kwargs.setdefault("num_threads", threads)
    with torch_threads(threads):
        env = gym.make(env_rec["id"], **kwargs)
        try:
            config = env_config(env)
            if config is not None and config.config_key() != env_rec["config_key"]:
                return ReplayResult(key, False, f"{env_rec['id']} with the recorded arguments now resolves to config "
                                    f"key {config.config_key()}, recorded {env_rec['config_key']}: presets or "
                                    "defaults changed")
            last_infos: list[dict[str, Any]] = []
            for i, episode in enumerate(record["episodes"]):
                problem = _replay_episode(env, episode, last_infos)
                if problem is not None:
                    return ReplayResult(key, False, f"episode {i} (seed {episode['seed']}), {problem}")
            # records written before the harness scored box-selection runs over their images have no dataset
            # metrics
            replayed = dataset_metrics(env, last_infos) if "dataset_metrics" in record else None
            if replayed != record.get("dataset_metrics"):
                return ReplayResult(key, False,
                                    f"dataset metrics {replayed!r}, recorded {record['dataset_metrics']!r}")
        finally:
            env.close()
    steps = sum(ep["length"] for ep in record["episodes"])
    return ReplayResult(key, True, f"{len(record['episodes'])} episode(s), {steps} steps: rewards and final metrics "
                                   "identical")


def select_runs(records: Mapping[str, Mapping[str, Any]], run: str | None) -> list[Mapping[str, Any]]:
    """Every record, or the one whose key is ``run`` (or starts with it, when only one does).

    Raises:
        ValueError: no record, or ``run`` matches none or several (listing some keys).
    """
    if not records:
        raise ValueError("the runs file holds no readable run")
    if run is None:
        return list(records.values())
    if run in records:
        return [records[run]]
    matches = [k for k in records if k.startswith(run)]
    if len(matches) == 1:
        return [records[matches[0]]]
    shown = ", ".join((matches or list(records))[:5]) + (" ..." if len(matches or records) > 5 else "")
    what = "matches several runs" if matches else "matches no run"
    raise ValueError(f"--run {run!r} {what}; keys: {shown}")


def replay_file(path: str | Path, run: str | None = None) -> tuple[list[ReplayResult], list[str]]:
    """Replay the runs of ``path`` (a ``runs.jsonl``), or one of them; returns the verdicts and the file's
    damaged lines (reported, skipped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: see :func:`select_runs`.
    """
    from detgym.compare.store import read_runs

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a runs.jsonl written by detgym compare)")
    read = read_runs(path)
    return [replay_record(r) for r in select_runs(read.records, run)], read.problems

