"""``detgym build-table``: fill MGRAL's look-up table with measured random selections (papers 002/003, III-F).

"We pre-compute and store model performances for a series of labeled dataset sizes, incrementing by the batch
size used in each active learning cycle": each build episode is a real-mode episode of the env whose every
cycle labels ``b`` uniformly random candidates, trains, and records (the selection's feature summary, the
measured val mAP) for that cycle, so ``episodes`` build episodes give ``episodes`` records per labeled-set size,
spread over the preset's initial sets (episode j starts from initial set ``j mod K``).

The table is saved after every finished episode (atomically), and a build resumes where it stopped: a finished
episode is never run again, an interrupted one is run again from its start. Episode ``j``'s seed depends only on
``(seed, j)``, so a resumed build records what an uninterrupted one would have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from detgym.rollout import Step, run_episode

from .lookup import LookupTable

__all__ = ["RandomScores", "build_episode_seed", "build_table"]


def build_episode_seed(seed: int, episode: int) -> int:
    """The reset seed of build episode ``episode`` (independent streams for distinct ``(seed, episode)``)."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


def build_table(
    preset: str = "default",
    *,
    episodes: int = 20,
    path: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> LookupTable:
    """Run the build episodes the table at ``path`` does not have yet, and return the table.

    Args:
        preset: a DetSampleSelect preset name.
        episodes: build episodes in total (records per cycle); those already in the table are skipped.
        path: the table file (default: the preset's ``table_file()``, where look-up envs find it).
        seed: base seed of the random selections and of the episodes' reset seeds.
        progress: show a tqdm bar.
        **overrides: preset fields (as the env takes them); ``reward_mode`` is ignored (builds measure).

    Raises:
        ValueError: bad ``episodes`` / overrides, or a table file built for another configuration or damaged.
    """
    from tqdm.auto import tqdm

    from .env import DetSampleSelectEnv

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    overrides = {**overrides, "reward_mode": "real"}
    env = DetSampleSelectEnv(preset, **overrides)
    cfg = env.config
    table_path = Path(path) if path is not None else cfg.table_file()
    table = LookupTable.open(table_path, cfg.table_key(), cfg.to_dict())
    todo = [j for j in range(int(episodes)) if j not in table.done]
    try:
        for j in tqdm(todo, desc="build-table", unit="episode", disable=not progress):
            _run_build_episode(env, table, j, int(seed))
            table.done.add(j)
            table.save()
    finally:
        env.close()
    return table


def _run_build_episode(env: Any, table: LookupTable, episode: int, seed: int) -> None:
    k = episode % len(env.initial_sets)
    if table.reference(k) is None:
        ref = env.reference(k)
        table.set_reference(k, ref.features, ref.stats, ref.initial_map)
    episode_seed = build_episode_seed(seed, episode)

    def record(step: Step) -> None:
        added = np.setdiff1d(env.labeled_indices, env.initial_sets[k])
        table.add(k, step.info["cycle"], env.selection_summary(), step.info["map"], source="build", episode=episode,
                  selection=added)

    run_episode(env, RandomScores(env.n_rows, episode_seed), seed=episode_seed, options={"initial_set": k},
                callback=record)


class RandomScores:
    """The build episodes' selection: uniform random scores in [-1, 1] for the ``n_rows`` candidates, drawn from
    ``seed`` (SB3's ``predict``)."""

    def __init__(self, n_rows: int, seed: int) -> None:
        self.n_rows, self.rng = n_rows, np.random.default_rng(seed)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        return self.rng.uniform(-1.0, 1.0, self.n_rows).astype(np.float32), state
