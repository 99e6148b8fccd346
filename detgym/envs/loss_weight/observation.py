"""Layout of the DetLossWeight observation vector, shared by the env and the agents that read it.

For a detector with ``n`` pyramid levels the observation is a float32 vector of ``5 n + 1`` numbers::

    [ L_{.,t} (n) | L_{.,t-1} (n) | Var_{.,t} (n) | Var_{.,t-1} (n) | progress (1) | w (n) ]

the state ``S_t`` of eq. 6 of paper 000 (interval losses and variances of the last two intervals), the training
progress ``t / T`` in [0, 1] and the per-level weights that were used during interval ``t``.
Pure NumPy, so agents can import it without torch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["FIELDS", "build_observation", "n_levels_from_size", "observation_size", "split_observation"]

#: Field names in order, with their widths in units of levels (``progress`` is one number).
FIELDS: tuple[str, ...] = ("sums", "sums_prev", "var", "var_prev", "progress", "weights")


def observation_size(n_levels: int) -> int:
    """Length of the observation vector for ``n_levels`` pyramid levels: ``5 * n_levels + 1``."""
    if int(n_levels) < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels!r}")
    return 5 * int(n_levels) + 1


def n_levels_from_size(size: int) -> int:
    """Inverse of :func:`observation_size`."""
    if size < 6 or (size - 1) % 5:
        raise ValueError(
            f"a DetLossWeight observation has 5 * n_levels + 1 entries (6, 11, 16, 21, 26, ...), got {size}"
        )
    return (size - 1) // 5


def build_observation(
    sums: ArrayLike,
    sums_prev: ArrayLike,
    var: ArrayLike,
    var_prev: ArrayLike,
    progress: float,
    weights: ArrayLike,
) -> np.ndarray:
    """Concatenate the fields into the float32 observation vector (see the module docstring)."""
    parts = [np.asarray(x, dtype=np.float64).reshape(-1) for x in (sums, sums_prev, var, var_prev)]
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = parts[0].size
    if any(p.size != n for p in parts) or w.size != n:
        raise ValueError(f"every per-level field must have {n} entries, got {[p.size for p in parts] + [w.size]}")
    return np.concatenate(parts + [np.array([float(progress)]), w]).astype(np.float32)


def split_observation(obs: ArrayLike) -> dict[str, np.ndarray]:
    """Split one observation ``[5n+1]`` (or a batch ``[..., 5n+1]``) into its named fields.

    Returns float64 arrays: ``sums``, ``sums_prev``, ``var``, ``var_prev``, ``weights`` of shape ``[..., n]`` and
    ``progress`` of shape ``[...]``.
    """
    arr = np.asarray(obs, dtype=np.float64)
    if arr.ndim < 1:
        raise ValueError("obs must be an observation vector [5n+1] or a batch of them, got a scalar")
    n = n_levels_from_size(arr.shape[-1])
    return {
        "sums": arr[..., 0:n],
        "sums_prev": arr[..., n : 2 * n],
        "var": arr[..., 2 * n : 3 * n],
        "var_prev": arr[..., 3 * n : 4 * n],
        "progress": arr[..., 4 * n],
        "weights": arr[..., 4 * n + 1 : 5 * n + 1],
    }
