"""DetLossWeightTabular-v0: DetLossWeight episodes looked up in a tree of real trainings, at CartPole speed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from detgym.data.io import cache_root
from detgym.envs.base import CompareDefaults, DetectorEnv
from detgym.envs.substrate import PresetTable
from detgym.metrics import STAT_NAMES

from .tree import TreeSpec, TreeTable, packaged_table
from .weighting import N_ACTIONS
from .wrappers import LogScaleObservation

__all__ = ["DetLossWeightTabularEnv", "TABULAR_PRESETS", "TABULAR_REWARDS", "TabularPreset"]

#: Accepted ``reward`` values: the change of val ``metric`` over the step (default), the real env's eq. 7 reward,
#: the real env's ``reward="map"`` (change since the last evaluation, 0 before the first: the return is the final
#: value).
TABULAR_REWARDS: tuple[str, ...] = ("delta_ap", "loss", "map")


@dataclass(frozen=True)
class TabularPreset:
    """Which tree a tabular env looks up: a DetLossWeight preset (plus overrides), its number of decisions T and
    the thread count its trainings ran with."""

    loss_weight_preset: str
    decisions: int
    overrides: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 1

    def tree_spec(self) -> TreeSpec:
        return TreeSpec(self.loss_weight_preset, self.decisions, self.threads, dict(self.overrides))


#: The shipped trees: ``DetLossWeight-v0``'s preset (T = 3, seeds 0-2: ``detgym build-tree`` extends it), and the
#: test preset's (T = 2 of the 32 px test preset with 96 iterations, seeds 0-1: what the test suite reads).
TABULAR_PRESETS: PresetTable[Any] = PresetTable(
    {
        "default": TabularPreset("default", 3),
        "test": TabularPreset("test", 2, {"iterations": 96}),
    },
    default="default",
)


class DetLossWeightTabularEnv(DetectorEnv):
    """
    ## Description

    ``DetLossWeight-v0`` with ``T`` coarse decisions, every schedule trained once in advance
    (:mod:`detgym.envs.loss_weight.tree`): an episode walks one path of a seed's tree of real trainings, so a step
    is a look-up (microseconds) instead of ``alpha`` training iterations (minutes). The real episode is
    ``gym.make(env_id, **env_kwargs)`` with ``alpha = iterations // (T + 1)``: ``reset(seed)`` trains the first
    interval with all weights 1, then each of the ``T`` steps trains one interval under the chosen scheme of
    paper 000 (eq. 5). ``info["recipe"]`` names that episode, so any result can be re-run for real.

    ## Action Space

    ``Discrete(4)``: the weighting scheme of the next interval, as in ``DetLossWeight-v0`` (a0 AVW, a1 smallest
    loss, a2 largest loss, a3 all weights 1).

    ## Observation Space

    The real env's ``Box(float32, (5 n + 1,))`` with its bounds: interval losses and variances of the last two
    intervals (eq. 6), progress ``t / (T + 1)``, the weights of the last interval (see ``DetLossWeight-v0``).

    ## Rewards

    ``reward="delta_ap"`` (default): the change of the val ``metric`` (COCO AP) over the step's interval; the
    return telescopes to the final minus the initial (after-reset) value. ``"loss"``: the real env's eq. 7 reward
    (sign of the drop of the interval loss). ``"map"``: the real env's ``reward="map"`` (the first step counts
    from 0, so the return is the final value).

    ## Starting State

    ``reset(seed=...)`` draws one of the table's complete seeds from ``np_random``;
    ``options={"tree_seed": s}`` picks seed ``s`` (ValueError naming the seeds the table holds otherwise).

    ## Episode End

    Truncation after ``T`` steps (the schedule is complete); never termination. The last ``info`` holds
    ``final_metrics`` (the leaf's val COCO stats), ``best_leaf`` (``{"actions", metric}`` of the seed's best
    schedule), ``regret`` (best leaf's metric minus this episode's) and ``recipe`` (``env_id``, ``env_kwargs``,
    ``seed``, ``actions``, ``threads``: the real-env re-run).

    ## Arguments

    * ``preset``: ``"default"`` (the shipped T = 3 tree of ``DetLossWeight-v0``'s preset) or ``"test"``.
    * ``reward``: one of :data:`TABULAR_REWARDS`; ``metric``: a COCO stat name (default ``"AP"``).
    * ``table``: a table file to read instead of the preset's (e.g. one ``detgym build-tree --out`` wrote).
    * ``cache_dir``: where a table ``detgym build-tree --out`` left in the cache is looked for (default
      ``$DETGYM_CACHE``).
    * ``render_mode``: ``None`` or ``"ansi"``.
    """

    family = "loss_weight"
    presets = TABULAR_PRESETS
    reset_options = ("tree_seed",)
    # a step reads the tree table: no torch
    steps_use_torch = False
    compare_defaults = CompareDefaults(
        "uniform", ("uniform", "avw", "rlo", "a0", "a1", "a2", "a3", "random", "ppo", "a2c", "dqn", "recurrent_ppo"),
        train_budget=10_000, eval_episodes=10, info_metrics=("regret",),
    )
    sb3_wrappers = (LogScaleObservation,)
    # a step is a look-up: SB3's own per-step cost dominates, so learners collect from 8 copies at once (3-10x fewer
    # policy calls per step); rollouts of 64 steps as the real env's defaults
    sb3_options = {
        "ppo": {"n_envs": 8, "n_steps": 8}, "a2c": {"n_envs": 8, "n_steps": 1},
        "dqn": {"n_envs": 8, "train_freq": 1}, "recurrent_ppo": {"n_envs": 8, "n_steps": 8},
    }

    def __init__(self, preset: str = "default", *, reward: str = "delta_ap", metric: str = "AP",
                 table: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 render_mode: str | None = None, num_threads: int = 1) -> None:
        super().__init__(preset, cache_dir=cache_dir, render_mode=render_mode, num_threads=num_threads)
        if reward not in TABULAR_REWARDS:
            raise ValueError(f"reward={reward!r} is not supported; accepted: {', '.join(TABULAR_REWARDS)}")
        if metric not in STAT_NAMES:
            raise ValueError(f"metric={metric!r} is not a COCO stat; accepted: {', '.join(STAT_NAMES)}")
        self.reward_mode, self.metric = reward, metric
        with self.own_threads():
            self.table = _load_table(self.config, table, self.cache_dir)
        self.seeds = self.table.complete_seeds()
        if not self.seeds:
            raise ValueError(f"the tree table of preset {preset!r} holds no complete tree; extend it with "
                             f"detgym build-tree")
        self.decisions = self.table.spec.decisions
        meta = self.table.meta
        self.level_names = tuple(meta["level_names"])
        #: Training iterations per step of the real episode (what observation scaling divides losses by).
        self.alpha = int(meta["alpha"])
        self.observation_space = spaces.Box(np.asarray(meta["observation_low"], dtype=np.float32),
                                            np.asarray(meta["observation_high"], dtype=np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        # per seed: action prefix -> (observation, value of metric, step info); per seed: (best actions, best value)
        self._nodes = {s: {tuple(r["prefix"]): (np.asarray(r["obs"], dtype=np.float32), float(r["stats"][metric]),
                                                self._node_info(r))
                           for r in self.table.nodes[s].values()} for s in self.seeds}
        self._best = {s: self.table.best_leaf(s, metric) for s in self.seeds}
        self._prefix: tuple[int, ...] | None = None
        self._last_map = 0.0

    # ------------------------------------------------------------------ gym API
    def _reset(self, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
        drawn = self.seeds[int(self.np_random.integers(len(self.seeds)))]
        self.tree_seed = drawn if options.get("tree_seed") is None else self._check_tree_seed(options["tree_seed"])
        self._prefix, self._last_map = (), 0.0
        obs, _, info = self._nodes[self.tree_seed][()]
        root = self.table.node(self.tree_seed, ())
        info = {**_fresh(info), "tree_seed": self.tree_seed, "model_seed": root["model_seed"],
                "train_seed": root["train_seed"]}
        return obs.copy(), info

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = _check_action(action)
        nodes = self._nodes[self.tree_seed]
        before = nodes[self._prefix][1]
        self._prefix += (a,)
        obs, value, info = nodes[self._prefix]
        reward = self._reward(before, value, info)
        truncated = len(self._prefix) == self.decisions
        info = {**_fresh(info), "action": a}
        if truncated:
            info.update(self._final_info(info, value))
        return obs.copy(), reward, False, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._prefix is None:
            return None
        value = self._nodes[self.tree_seed][self._prefix][1]
        return f"seed {self.tree_seed} actions {list(self._prefix)} val {self.metric} {value:.4f}"

    # ---------------------------------------------------------------- internals
    def _check_tree_seed(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in self.seeds:
            raise ValueError(f"options['tree_seed'] must be one of the table's seeds {self.seeds}, got {value!r}")
        return int(value)

    def _reward(self, before: float, value: float, info: Mapping[str, Any]) -> float:
        if self.reward_mode == "loss":
            return info["reward_loss"]
        if self.reward_mode == "map":
            reward, self._last_map = value - self._last_map, value
            return reward
        return value - before

    def _node_info(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """The info of the step into ``node``, built once (each step hands out a copy: :func:`_fresh`)."""
        arrays = {name: np.asarray(node[name], dtype=np.float64) for name in
                  ("interval_losses", "variances", "rates", "weights")}
        return {
            **arrays, "action": None, "interval": len(node["prefix"]) + 1, "iteration": int(node["iteration"]),
            "lr": float(node["lr"]), "reward_loss": float(node["reward_loss"]), "stats": dict(node["stats"]),
            "level_names": self.level_names,
        }

    def _final_info(self, leaf_info: Mapping[str, Any], value: float) -> dict[str, Any]:
        best_actions, best = self._best[self.tree_seed]
        return {
            "final_metrics": dict(leaf_info["stats"]),
            "best_leaf": {"actions": list(best_actions), self.metric: best},
            "regret": best - value,
            "recipe": self.table.recipe(self.tree_seed, self._prefix),
        }


def _fresh(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a prebuilt info that shares no mutable object with it (users keep what ``step`` returns)."""
    return {k: v.copy() if isinstance(v, (np.ndarray, dict)) else v for k, v in info.items()}


def _check_action(action: Any) -> int:
    """``action`` as a scheme index; ValueError naming the accepted values otherwise."""
    try:
        a = int(action)
        ok = a == action and 0 <= a < N_ACTIONS and not isinstance(action, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"action must be one of 0..{N_ACTIONS - 1} (a0..a3), got {action!r}")
    return a


def _load_table(preset: TabularPreset, table: str | os.PathLike | None, cache_dir: Any) -> TreeTable:
    """The preset's table: ``table``, else the shipped one, else one ``detgym build-tree`` left in the cache.
    ValueError naming the path for a damaged or stale file, or the command that builds a missing one."""
    spec = preset.tree_spec()
    if table is not None:
        return TreeTable.load(table, spec)
    for path in (packaged_table(spec.preset, spec.decisions), _cached_table(spec, cache_dir)):
        if path.is_file():
            return TreeTable.load(path, spec)
    raise ValueError(f"no tree table of DetLossWeight preset {spec.preset!r} with {spec.decisions} decisions: build it "
                     f"with `detgym build-tree --env {spec.env_id()} --decisions {spec.decisions} --out "
                     f"{_cached_table(spec, cache_dir)}`")


def _cached_table(spec: TreeSpec, cache_dir: Any) -> Path:
    return cache_root(cache_dir) / "loss_weight_trees" / spec.key() / "table.json"
