"""The observation layout of the DetSampleSelect envs: one row per candidate image, named columns after the embedding.

Row ``j`` describes candidate ``j``; its first ``D`` columns are the current detector's ``embed()`` vector
(Φ(I) of MGRAL, pooled FPN features), the next :data:`N_EXTRA` columns are named in :data:`COLUMNS`. The last
four are the same on every row (the env's state, repeated so a per-candidate model such as MGRAL's LSTM sees it
beside each image). Agents read columns through :func:`column` instead of hard-coding offsets.

NumPy only: agents import this module without loading torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLUMNS", "DETECTION_STATS", "GLOBAL_COLUMNS", "N_EXTRA", "column", "embed_dim", "row_features"]

#: Per-image detection statistics of the current detector, in this order (see :mod:`.features`).
DETECTION_STATS: tuple[str, ...] = ("n_detections", "mean_score", "max_score", "mean_entropy", "sum_entropy")

#: Columns that hold the env's state (equal on every row).
GLOBAL_COLUMNS: tuple[str, ...] = ("cycle_progress", "labeled_fraction", "current_map", "picks_left")

#: Names of the columns after the embedding, in order.
COLUMNS: tuple[str, ...] = (
    *DETECTION_STATS,
    "nearest_distance",  # L2 distance (embedding) to the nearest labeled or already-picked image
    "picked",  # 1 when the sequential variant already picked this candidate in the current cycle
    "valid",  # 0 on padding rows (candidates=None shows the whole pool, which shrinks every cycle)
    *GLOBAL_COLUMNS,
)

#: Number of named columns after the embedding.
N_EXTRA: int = len(COLUMNS)


def embed_dim(obs: np.ndarray) -> int:
    """``D``, the embedding length of an observation ``[M, D + N_EXTRA]`` (or a batch of them)."""
    return int(np.shape(obs)[-1]) - N_EXTRA


def column(obs: np.ndarray, name: str) -> np.ndarray:
    """Column ``name`` of an observation ``[..., M, D + N_EXTRA]`` -> ``[..., M]``; ``"embed"`` gives
    ``[..., M, D]``."""
    obs = np.asarray(obs)
    d = embed_dim(obs)
    if name == "embed":
        return obs[..., :d]
    if name not in COLUMNS:
        raise ValueError(f"unknown observation column {name!r}; accepted: 'embed', {', '.join(map(repr, COLUMNS))}")
    return obs[..., d + COLUMNS.index(name)]


def row_features(
    embed: np.ndarray,
    stats: np.ndarray,
    nearest: np.ndarray,
    picked: np.ndarray,
    valid: np.ndarray,
    state: tuple[float, float, float, float],
) -> np.ndarray:
    """Assemble an observation ``[M, D + N_EXTRA]`` (float32) from its parts (``state`` = :data:`GLOBAL_COLUMNS`)."""
    m = embed.shape[0]
    glob = np.broadcast_to(np.asarray(state, dtype=np.float32), (m, len(GLOBAL_COLUMNS)))
    parts = [embed, stats, nearest[:, None], picked[:, None], valid[:, None], glob]
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
