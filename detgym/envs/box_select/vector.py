"""The native vector env of DetBoxSelect-v0: B images per step, one batched AP call, no per-env Python.

``gymnasium.make_vec("DetBoxSelect-v0", num_envs=64, vectorization_mode="vector_entry_point")`` builds it (the
registration's ``vector_entry_point``). Every sub-env's episode is one step, so the env resets in the same step
(gymnasium's ``AutoresetMode.SAME_STEP``): ``step`` scores the B kept sets, returns ``terminated`` all True and
the observations of the next B images; the finished episodes' observations are in ``info["final_obs"]`` and their
step info in ``info["final_info"]``. Also the native vector env of the -v1 ids (``reward="pool_ap"``: one batched
pool-AP call).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .env import DetBoxSelectEnv, keep_mask

__all__ = ["DetBoxSelectVectorEnv"]


class DetBoxSelectVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~detgym.envs.box_select.env.DetBoxSelectEnv` stepped as one array program.

    Spaces, rewards and the image draw are those of the single env (one :class:`DetBoxSelectEnv` holds the
    configuration and the cached table); images are drawn with the vector env's ``np_random``. ``info`` holds
    arrays over the sub-envs (with gymnasium's ``_key`` masks): ``image_id`` and ``image_index`` of the current
    images, and in ``final_info`` the finished episodes' ``image_id``, ``image_index``, ``ap``, ``reward_ap``,
    ``nms_ap``, ``ignored_slots`` (and ``pool_ap`` with ``reward="pool_ap"``). The per-box COCO dicts of the single
    env's ``info["candidates"]`` are left out (they would cost more than the step); ``env.single_env.table`` and
    ``coco_gt()`` give the same data.

    Args:
        num_envs: images per step.
        **kwargs: :class:`DetBoxSelectEnv` arguments (``preset``, any preset field, ``strict``, ``cache_dir``, ...).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        kwargs.pop("max_episode_steps", None)  # gymnasium passes the spec's; every episode is one step anyway
        self.single_env = DetBoxSelectEnv(**kwargs)
        self.num_envs = int(num_envs)
        self.single_observation_space = self.single_env.observation_space
        self.single_action_space = self.single_env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.table = self.single_env.table
        self.n_max = self.single_env.n_max
        self.strict = self.single_env.strict
        self.baseline = self.single_env.baseline
        self._images = np.full(self.num_envs, -1, dtype=np.int64)
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """New images for every sub-env (``options={"image_index": [i_0, ..., i_{B-1}]}`` picks them)."""
        super().reset(seed=seed)
        images = self._images_from_options(options)
        self._images = images if images is not None else self._draw()
        self._obs = self.table.features[self._images]  # a new array (fancy indexing): the caller may keep it
        return self._obs, self._image_info(self._images)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._obs is None:
            raise ValueError("call reset() before step()")
        keep = np.ascontiguousarray(keep_mask(actions, (self.num_envs, self.n_max), "actions"))
        finished = self._images
        padding = np.arange(self.n_max)[None, :] >= self.table.counts[finished][:, None]
        ignored = (keep & padding).sum(axis=1)
        if self.strict and ignored.any():
            b = int(np.flatnonzero(ignored)[0])
            raise ValueError(f"actions[{b}] keeps {int(ignored[b])} padded slot(s) (strict=True)")
        ap = self.table.ap(finished, keep)
        nms_ap = self.table.nms_ap[finished]
        rewards, reward_ap = self.single_env.rewards(finished, keep, ap)
        final_obs = self._obs
        self._images = self._draw()
        self._obs = self.table.features[self._images]
        done = np.ones(self.num_envs, dtype=bool)
        final_info = {**self._image_info(finished), "ap": ap, "_ap": done, "reward_ap": reward_ap, "_reward_ap": done,
                      "nms_ap": nms_ap, "_nms_ap": done,
                      "ignored_slots": ignored, "_ignored_slots": done}
        if self.single_env.pool is not None:
            final_info.update(pool_ap=reward_ap, _pool_ap=done)
        info = {**self._image_info(self._images), "final_obs": final_obs, "_final_obs": done,
                "final_info": final_info, "_final_info": done}
        return self._obs, rewards, done, np.zeros(self.num_envs, dtype=bool), info

    def coco_gt(self) -> dict[str, Any]:
        """The split's COCO ground truth (see :meth:`DetBoxSelectEnv.coco_gt`)."""
        return self.single_env.coco_gt()

    def close_extras(self, **kwargs: Any) -> None:
        self.single_env.close()

    # ------------------------------------------------------------------ internals
    def _draw(self) -> np.ndarray:
        return self.np_random.integers(len(self.table), size=self.num_envs)

    def _images_from_options(self, options: dict[str, Any] | None) -> np.ndarray | None:
        if options is None or options.get("image_index") is None:
            if options is not None and set(options) - {"image_index"}:
                raise ValueError(f"options must be None or a dict with the key 'image_index', got {options!r}")
            return None
        if set(options) - {"image_index"}:
            raise ValueError(f"options must be None or a dict with the key 'image_index', got {options!r}")
        index = np.asarray(options["image_index"])
        n = len(self.table)
        if index.shape != (self.num_envs,) or index.dtype.kind not in "iu" or (index < 0).any() or (index >= n).any():
            raise ValueError(f"image_index must be {self.num_envs} integers in 0..{n - 1}, "
                             f"got {options['image_index']!r}")
        return index.astype(np.int64)

    def _image_info(self, images: np.ndarray) -> dict[str, np.ndarray]:
        done = np.ones(self.num_envs, dtype=bool)
        return {"image_id": self.table.image_ids[images], "_image_id": done, "image_index": images,
                "_image_index": done}
