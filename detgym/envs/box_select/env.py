"""DetBoxSelect, DetBoxSelectSeq, DetBoxRescore: choose a detector's final boxes instead of NMS (paper 001).

The -v0 ids reward paper 001's per-image AP, the -v1 ids the change of COCO AP over a fixed pool of images
(``reward="pool_ap"``). The three envs share everything but their action: :class:`BoxSelectEnvBase` loads the
candidate cache, draws an image per episode, builds observations and ``info``, and computes rewards; each variant
only turns its action into a kept set (and scores) and says when the episode ends.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from gymnasium import spaces

from detgym.envs.base import CompareDefaults, DetectorEnv
from detgym.envs.cache import LRU
from detgym.metrics import coco_evaluate
from detgym.metrics.pool_ap import PoolAP

from .candidates import cache_paths, load_candidates
from .features import feature_layout, n_features
from .presets import DEFAULT_POOL_SIZE, PRESETS, BoxSelectPreset
from .table import ImageTable

_SET_POLICY = "detgym.agents.set_policy"

__all__ = ["BoxSelectEnvBase", "DetBoxRescoreEnv", "DetBoxSelectEnv", "DetBoxSelectSeqEnv", "load_table"]

#: Tables of different configurations held per process (the envs of a vector env share one).
_TABLES: LRU[tuple, ImageTable] = LRU(4)


def load_table(config: BoxSelectPreset, substrate: Any, *, cache_dir: str | os.PathLike | None = None,
               progress: bool = False) -> ImageTable:
    """The :class:`ImageTable` of ``config.split`` (cache built on first use; shared by the envs of a process)."""
    _, directory = cache_paths(config, cache_dir)

    def build() -> ImageTable:
        splits, manifest = load_candidates(config, substrate, cache_dir=cache_dir, progress=progress)
        if config.split not in splits:
            raise ValueError(f"split={config.split!r} has no images in this dataset; accepted: {', '.join(splits)}")
        l2c = {int(k): int(v) for k, v in manifest["label_to_category_id"].items()}
        return ImageTable.build(splits[config.split], int(config.n_max), int(manifest["num_classes"]),
                                float(config.nms_iou), l2c)

    return _TABLES.get((str(directory.resolve()), config.split, float(config.nms_iou)), build)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class BoxSelectEnvBase(DetectorEnv):
    """The shared part of the three box-selection envs (see :class:`DetBoxSelectEnv` for the full description).

    Subclasses set the action space (:meth:`_make_action_space`) and implement :meth:`step`; the episode's image,
    its observation, ``info`` and the AP reward are here.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    family = "box_select"
    presets = PRESETS
    reset_options = ("image_index",)
    # paper 001: greedy NMS is the baseline. An episode is one image (milliseconds): many of both. Learners train on
    # the train split's images (2000 in the default preset) and every agent is evaluated on the val split's, which
    # none of them trained on; 160000 steps: about 7.5 CPU-minutes of the default PPO (set policy) on DetBoxRescore.
    compare_defaults = CompareDefaults("nms", ("nms", "random", "ppo"), train_budget=160_000, eval_episodes=200,
                                       train_env_kwargs={"split": "train"}, eval_env_kwargs={"split": "val"})

    # An observation is a set of candidates: SB3 learners get the permutation-equivariant set policy
    # (detgym.agents.set_policy, named by import path: envs do not import agents), rollouts of 512 images, a learning
    # rate decaying from 1e-3, and for new scores a start at the detector's scores with std 0.14 in SB3's [-1, 1] action
    # scale (0.07 in score). Measured on DetBoxRescore-v1 (default preset; COCO AP of the deterministic policy over the
    # 200 val images; greedy NMS 0.498): with std 1 (SB3's default) it fell from 0.30 to 0.18 in 20k steps, with std
    # 0.14 it rose to 0.36; learning rate 1e-3 with 10 epochs reached 0.48 at 30k steps (3e-4 with 5 epochs: 0.36 at
    # 20k); Deep Sets alone cost 2.5x less CPU per step than with 4 attention heads for about the same AP at 30k steps
    # (0.480 / 0.484); 5 epochs instead of 10 halved the CPU per step for the same AP at 45k; a constant 1e-3 wandered
    # (0.506 at 100k steps, 0.499 at 200k), decaying to 0 over 160k steps ended at 0.506 after 7.4 CPU-minutes.
    sb3_options = {
        "ppo": {"policy": f"{_SET_POLICY}:SetPolicy", "n_steps": 512, "batch_size": 128, "n_epochs": 5,
                "learning_rate": f"{_SET_POLICY}:decaying_learning_rate", "policy_kwargs": {"log_std_init": -2.0}},
        # A2C at PPO's learning rate (1e-3) drove every score to 0 in 1-2 of 3 seeds on DetBoxRescore-v1, with or
        # without advantage normalisation or Adam (a dead zone: every sample clips to "drop", so no gradient comes
        # back); at 3e-4 with normalised advantages none of 10 seeds did (README, DetBoxSelect-v1)
        "a2c": {"policy": f"{_SET_POLICY}:SetPolicy", "n_steps": 32, "learning_rate": 3e-4,
                "normalize_advantage": True, "policy_kwargs": {"log_std_init": -2.0}},
        "maskable_ppo": {"policy": f"{_SET_POLICY}:MaskableSetPolicy", "n_steps": 512, "batch_size": 128,
                         "n_epochs": 5, "learning_rate": f"{_SET_POLICY}:decaying_learning_rate"},
    }
    # SB3's vector env deep-copies every info; the per-candidate COCO dicts cost more to copy than the step
    sb3_unread_info = ("candidates",)
    # a step is compiled AP kernels over the cached candidates
    steps_use_torch = False

    def __init__(self, preset: str = "default", *, strict: bool = False, progress: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        self.config: BoxSelectPreset
        self.strict = _check_bool("strict", strict)
        with self.own_threads():
            self.table = load_table(self.config, self.substrate, cache_dir=self.cache_dir,
                                    progress=_check_bool("progress", progress))
        self.n_max = int(self.config.n_max)
        self.num_classes = self.table.num_classes
        self.split = self.config.split
        self.baseline = self.config.baseline
        self.absent_classes = self.config.absent_classes
        self.reward_mode = self.config.reward
        #: ``reward="pool_ap"``: the :class:`~detgym.metrics.pool_ap.PoolAP` of the reference pool (else None).
        self.pool = self._load_pool()
        #: Per image, the AP of greedy NMS as the reward counts it (the baseline of ``baseline="nms"``; with
        #: ``reward="pool_ap"``: the pool AP with the image's NMS result, which the reward is relative to).
        self.nms_reward_ap = (self.pool.reference_ap if self.pool is not None else
                              self._reward_ap(np.arange(len(self.table)), self.table.nms_keep, self.table.nms_ap))
        #: Column ranges of a candidate's features (see :mod:`detgym.envs.box_select.features`).
        self.feature_layout = feature_layout(self.num_classes)
        self.observation_space = spaces.Box(0.0, 1.0, (self.n_max, self._n_columns()), dtype=np.float32)
        self.action_space = self._make_action_space()
        self._image = -1
        self._images = np.zeros(1, dtype=np.int64)  # the episode's image as the [B] array the AP kernel takes
        self._info: dict[str, Any] = {}

    # ---------------------------------------------------------------- for subclasses
    def _make_action_space(self) -> spaces.Space:  # pragma: no cover - abstract
        raise NotImplementedError

    def _n_columns(self) -> int:
        return n_features(self.num_classes)

    def _begin_episode(self) -> None:
        """Per-episode state of the variant (called by reset once the image is chosen)."""

    # ------------------------------------------------------------------ episodes
    @property
    def n_images(self) -> int:
        """Images of the env's split (``reset(options={"image_index": i})`` accepts ``0 <= i < n_images``)."""
        return len(self.table)

    @property
    def image_index(self) -> int:
        """Index of the current episode's image in the split (-1 before the first reset)."""
        return self._image

    def _reset(self, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
        i = self._image_from_options(options)
        if i is None:
            i = int(self.np_random.integers(len(self.table)))
        self._image = i
        self._images[0] = i
        self._begin_episode()
        n = int(self.table.counts[i])
        self._info = {"image_id": int(self.table.image_ids[i]), "image_index": i, "n_candidates": n,
                      "candidates": self.table.coco_results(i)}
        return self._observation(), dict(self._info)

    def _image_from_options(self, options: dict[str, Any]) -> int | None:
        index = options.get("image_index")
        if index is None:
            return None
        n = len(self.table)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ValueError(f"image_index must be an integer in 0..{n - 1} (images of split {self.split!r}), "
                             f"got {index!r}")
        return int(index)

    def _observation(self) -> np.ndarray:
        return self.table.features[self._image].copy()

    def _load_pool(self) -> PoolAP | None:
        if self.reward_mode != "pool_ap":
            return None
        n, size = len(self.table), self.config.pool_size
        if size is None:
            size = min(DEFAULT_POOL_SIZE, n)
        elif size > n:
            raise ValueError(f"pool_size must be at most {n} (the images of split {self.split!r}), got {size}")
        return self.table.pool_ap(size, int(self.config.pool_seed))

    def rewards(self, images: np.ndarray, keep: np.ndarray, ap: np.ndarray,
                scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rewards of kept sets ``keep`` (bool ``[B, n_max]``, ranked by ``scores`` or the candidates' own) of images
        ``images`` whose per-image APs are ``ap``, and the AP each reward counts (``info["reward_ap"]``)."""
        if self.pool is not None:
            pool_ap, delta = self.pool(images, keep, scores)
            return self.pool.pool.size * delta, pool_ap
        reward_ap = self._reward_ap(images, keep, ap)
        return (reward_ap - self.nms_reward_ap[images] if self.baseline == "nms" else reward_ap), reward_ap

    def pool_image_ids(self) -> list[int]:
        """COCO ids of the reference pool's images (``reward="pool_ap"``; ValueError otherwise)."""
        return self.table.image_ids[self._pool().pool].tolist()

    def pool_detections(self) -> list[dict]:
        """The reference pool's detections, its images' greedy NMS results, as COCO result dicts: with an episode's
        kept boxes in place of its image's, pycocotools over :meth:`pool_image_ids` and the episode's image gives
        ``info["pool_ap"]`` (``reward="pool_ap"``; ValueError otherwise)."""
        out = []
        for i in self._pool().pool:
            results = self.table.coco_results(int(i))
            out += [dict(results[k]) for k in np.flatnonzero(self.table.nms_keep[i, :len(results)])]
        return out

    def _pool(self) -> PoolAP:
        if self.pool is None:
            raise ValueError(f"this env has reward={self.reward_mode!r}: a pool belongs to reward='pool_ap'")
        return self.pool

    def _reward_ap(self, images: np.ndarray, keep: np.ndarray, ap: np.ndarray) -> np.ndarray:
        """The AP the reward counts: ``ap`` itself, or with absent classes penalised (``absent_classes``)."""
        return ap if self.absent_classes == "ignore" else self.table.penalize_absent(images, keep, ap)

    def _finish(self, keep: np.ndarray, scores: np.ndarray | None, ignored: int) -> tuple[float, dict]:
        """End the episode with the kept set ``keep`` (bool ``[n_max]``, ranked by ``scores`` or the candidates'):
        its reward and the step's info."""
        ranks = None if scores is None else scores[None]
        ap = self.table.ap(self._images, keep[None], ranks)
        rewards, reward_ap = self.rewards(self._images, keep[None], ap, ranks)
        reward = float(rewards[0])
        info = self._step_info(keep, float(ap[0]), ignored)
        info["reward_ap"] = float(reward_ap[0])
        if self.pool is not None:
            info["pool_ap"] = info["reward_ap"]
        if self.logger.enabled:
            self.logger.scalars("box_select", {"reward": reward, "ap": info["ap"], "nms_ap": info["nms_ap"]},
                                self._episode)
        return reward, info

    def _step_info(self, keep: np.ndarray, ap: float, ignored: int) -> dict[str, Any]:
        n = int(self.table.counts[self._image])
        return {**self._info, "kept": np.flatnonzero(keep[:n]).tolist(), "ap": ap,
                "nms_ap": float(self.table.nms_ap[self._image]), "ignored_slots": int(ignored)}

    def _ignored(self, selected_padding: int, what: str) -> int:
        if selected_padding and self.strict:
            n = int(self.table.counts[self._image])
            raise ValueError(f"action {what} {selected_padding} padded slot(s) (this image has {n} candidates in slots "
                             f"0..{n - 1}; strict=True)")
        return int(selected_padding)

    # ----------------------------------------------------------------- access
    def candidate_arrays(self, index: int | None = None) -> dict[str, np.ndarray]:
        """An image's real candidates (default: the current one): ``boxes`` xyxy pixels, ``scores``, ``labels``."""
        return self.table.candidates(self._image if index is None else index)

    def ground_truth(self, index: int | None = None) -> dict[str, np.ndarray]:
        """An image's ground truth (default: the current one): ``boxes`` xyxy pixels, ``labels``, ``crowd``."""
        return self.table.ground_truth(self._image if index is None else index)

    def coco_gt(self) -> dict[str, Any]:
        """The split's COCO ground truth (pycocotools / :func:`detgym.metrics.coco_evaluate` format).

        With ``info["candidates"]`` (or the kept subset of them) anyone can recheck a reward:
        pycocotools on this dict restricted to ``info["image_id"]`` gives ``info["ap"]``.
        """
        if self.table._coco is None:
            dataset = self.substrate.split(self.split)
            if [int(i) for i in dataset.image_ids] != self.table.image_ids.tolist():
                raise RuntimeError(f"the {self.split} split's images differ from the cached candidates'; "
                                   "delete the box_select cache entry")
            self.table._coco = dataset.coco_gt()
        return self.table._coco

    def evaluate_episodes(self, infos: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """COCO stats (:func:`detgym.metrics.coco_evaluate`) of the boxes finished episodes kept, over their images.

        The dataset-level AP that paper 001's table 1 reports and that per-image rewards do not add up to (a kept
        box of a class the image has no ground truth of costs nothing in its per-image AP, but costs here). Each
        image counts once, with the boxes of its first episode; DetBoxRescore's new scores rank its boxes.

        Args:
            infos: the last ``info`` of each episode (its ``image_id``, ``candidates``, ``kept``, ``scores``).
        """
        results, seen = [], set()
        for info in infos:
            image_id = int(info["image_id"])
            if image_id in seen:
                continue
            seen.add(image_id)
            scores = info.get("scores")
            for k in info["kept"]:
                det = dict(info["candidates"][k])
                if scores is not None:
                    det["score"] = float(scores[k])
                results.append(det)
        if not seen:
            raise ValueError("infos must hold at least one finished episode's info")
        gt = self.coco_gt()
        subset = {**gt, "images": [im for im in gt["images"] if int(im["id"]) in seen],
                  "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in seen]}
        return coco_evaluate(subset, results)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._image < 0:
            return None
        return (f"image {self._info['image_id']} (index {self._image}): {self._info['n_candidates']} candidates, "
                f"NMS AP {self.table.nms_ap[self._image]:.3f}")


class DetBoxSelectEnv(BoxSelectEnvBase):
    """
    ## Description

    Replace non-maximum suppression by a learned choice (paper 001, "Learning Globally Optimized Object Detector via
    Policy Gradient", sec. 3.3): an episode is one image of the chosen split; the agent sees the candidate
    detections of a trained detector (the boxes its post-processing would run NMS on) and keeps a subset of them
    in one step. The reward is the per-image COCO AP of the kept set (eq. 5: ``r_I = mAP_I``), optionally minus
    that of greedy NMS on the same candidates. The detector of the preset is trained once and its candidates for
    every image are cached on disk (:mod:`detgym.envs.box_select.candidates`), so an episode costs one AP call.

    ## Action Space

    ``MultiBinary(n_max)``: 1 keeps the candidate in that slot. Integer or boolean arrays, and float arrays holding
    only 0.0 / 1.0 (what SB3 samples), are accepted; any other shape, dtype or value raises ValueError naming
    ``action``. Padded slots (``slot >= n_candidates``) that an action keeps are ignored and counted in
    ``info["ignored_slots"]``; with ``strict=True`` they raise ValueError instead.

    ## Observation Space

    ``Box(0, 1, (n_max, 9 + C), float32)``, one row per candidate slot, candidates sorted by score (descending),
    padded rows all zero (layout: ``env.unwrapped.feature_layout``; ``C`` classes):

    | Column          | Observation                                                                 | Min | Max |
    |-----------------|-----------------------------------------------------------------------------|-----|-----|
    | 0               | valid: 1 for a real candidate, 0 for padding                                | 0   | 1   |
    | 1 .. 4          | box x1 / W, y1 / H, x2 / W, y2 / H (image width W, height H)                 | 0   | 1   |
    | 5               | score                                                                       | 0   | 1   |
    | 6 .. 5 + C      | class, one-hot (labels 1..C)                                                | 0   | 1   |
    | 6 + C           | highest IoU with a higher-scored candidate of the same class (0: none)     | 0   | 1   |
    | 7 + C           | rank within its class (higher-scored same-class candidates) / n_max         | 0   | 1   |
    | 8 + C           | same-class candidates overlapping it at IoU >= 0.5, / n_max                 | 0   | 1   |

    ## Rewards

    ``reward="pool_ap"`` (the -v1 ids): the change of COCO AP over a dataset that the kept set makes. A fixed reference
    pool ``P`` of ``pool_size`` images of the split (drawn with ``pool_seed``: fixed per preset and seed, so the MDP
    is stationary) holds each image's class-wise greedy NMS result at ``nms_iou``; for the episode's image ``i`` with
    kept set ``K_i``, ``r = pool_size * (AP(P without i, plus K_i) - AP(P without i, plus NMS_i))``, AP being
    pycocotools' COCO AP (IoU .50:.05:.95, maxDets 100, area all) over the pool's images and ``i``, every category of
    the dataset (:class:`detgym.metrics.pool_ap.PoolAP`, exact and incremental). Greedy NMS scores exactly 0; a kept
    box of a class absent from the image is a false positive, and a duplicate that outranks another image's true
    positive costs precision, as in the COCO AP of a dataset (``python -m benchmarks.box_select_reward``: keep-all
    scores -0.60 on the default's val images, NMS 0). ``info["pool_ap"]`` (and ``info["reward_ap"]``) is the pool AP
    with the kept set; ``env.unwrapped.pool_detections()`` and ``pool_image_ids()`` give the pool as COCO results and
    image ids, so pycocotools rechecks a reward. ``baseline`` and ``absent_classes`` belong to ``image_ap``.

    ``reward="image_ap"`` (the -v0 ids; paper 001's eq. 5, ``r_I = mAP_I``, what its table 1 trains with):
    :func:`detgym.metrics.image_ap` (pycocotools' AP of this image alone, IoU .50:.05:.95) of the
    kept candidates with their own scores; ``baseline="nms"`` subtracts the AP of class-wise greedy NMS at
    ``nms_iou`` (0.5) on the same candidates (``info["nms_ap"]`` either way). pycocotools' per-image AP leaves out
    the classes without ground truth in the image, so kept boxes of such classes cost nothing there (keeping every
    candidate scores about as well as NMS per image, and much worse over a dataset); ``absent_classes="penalize"``
    adds each such class to the per-class mean with AP 0 (``info["reward_ap"]`` is the AP the reward counts,
    ``info["ap"]`` pycocotools' either way); ``env.unwrapped.evaluate_episodes(infos)`` gives the COCO stats of
    finished episodes' kept boxes over their images together. An image without ground truth scores ``image_ap``'s
    documented no-GT value: the fraction of the 10 IoU thresholds at which the kept set has no false positive (1.0
    for an empty set, 0.0 if any box is kept). An image without candidates still gives an episode: every action
    keeps nothing (its slots are padding) and scores the AP of the empty set (0, or 1 without GT).

    ## Starting State

    ``reset(seed=...)`` draws the image uniformly from the split with the env's ``np_random`` (same seed, same
    image); ``reset(options={"image_index": i})`` picks image ``i`` (``0 <= i < env.unwrapped.n_images``, else
    ValueError naming ``image_index``).

    ## Episode End

    Terminates after the one step. Stepping again without ``reset`` raises ``gymnasium.error.ResetNeeded``.

    ## Info

    ``reset`` and ``step``: ``image_id`` (COCO id), ``image_index``, ``n_candidates`` and ``candidates`` (the
    real candidates as COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in image
    pixels, in slot order). ``step`` adds ``kept`` (the kept slot indices, a list of ints), ``ap`` (the kept set's AP),
    ``reward_ap`` (see Rewards), ``nms_ap``, ``ignored_slots`` and, with ``reward="pool_ap"``, ``pool_ap``.
    Variable-length entries are lists, never arrays, so gymnasium's vector envs can stack the infos of several envs.
    ``env.unwrapped.coco_gt()`` is the split's COCO ground truth: pycocotools on it and the kept dicts, restricted to
    ``image_id``, gives ``ap``.

    ## Arguments

    ``gymnasium.make("DetBoxSelect-v1", **kwargs)`` (``-v0``: paper 001's reward); ``-RetinaNet``, ``-FCOS``,
    ``-FasterRCNN-R50`` (GPU) and ``-Test`` ids pick other presets (:mod:`detgym.envs.box_select.presets`). Every
    :class:`~detgym.envs.box_select.presets.BoxSelectPreset` field is a keyword argument: the substrate fields
    (``recipe``, ``image_size``, ``dataset``, ``dataset_kwargs``, ``train_size``, ``val_size``, ``train_overrides``,
    ``model_overrides``, ``device``) and ``n_max`` (100), ``split`` (``"train"``, ``"val"``, ``"test"``),
    ``reward`` (``"image_ap"``: -v0, ``"pool_ap"``: -v1), ``pool_size`` (None: 200, or every image of a smaller split),
    ``pool_seed`` (0), ``baseline`` (``"none"``, ``"nms"``), ``absent_classes`` (``"ignore"``, ``"penalize"``),
    ``nms_iou`` (0.5), ``detector_iterations``, ``detector_seed``. The reward's fields do not key the candidate cache:
    the -v0 and -v1 ids share the trained detector and its candidates. Also:

    * ``strict``: raise on padded slots instead of ignoring them (False);
    * ``cache_dir``: root of the candidate cache (default ``$DETGYM_CACHE`` or ``~/.cache/detgym``);
    * ``progress``: show the detector's training progress when the cache is built;
    * ``log_dir``: TensorBoard directory (per-episode reward, AP, NMS AP under ``box_select/``);
    * ``render_mode``: ``None`` or ``"ansi"``.

    ``gymnasium.make_vec("DetBoxSelect-v1", num_envs, vectorization_mode="vector_entry_point")`` builds the native
    vector env :class:`~detgym.envs.box_select.vector.DetBoxSelectVectorEnv` (one AP call per batch).
    """

    def _make_action_space(self) -> spaces.Space:
        return spaces.MultiBinary(self.n_max)

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        keep = keep_mask(action, (self.n_max,))
        n = int(self.table.counts[self._image])
        ignored = self._ignored(int(keep[n:].sum()), "keeps")
        reward, info = self._finish(keep, None, ignored)
        return self._observation(), reward, True, False, info


def keep_mask(action: Any, shape: tuple[int, ...], name: str = "action") -> np.ndarray:
    """A keep-mask action (or a batch of them) as bool ``shape``; ValueError naming ``name`` for a wrong shape,
    dtype or value (bool, integer, or float arrays holding only 0 and 1 are accepted)."""
    a = np.asarray(action)
    if a.shape != shape or a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a keep-mask of shape {shape} with 0/1 entries (MultiBinary), got "
                         f"{a.dtype} {a.shape}")
    if a.dtype.kind == "b":
        return a
    # one pass for the usual int8 (MultiBinary.sample) / uint8 masks: negatives wrap to >= 128, and bytes 0 / 1 are
    # already a bool mask (a view: the step reads it and keeps nothing of it)
    if a.dtype.itemsize == 1 and a.dtype.kind != "f":
        if a.view(np.uint8).max(initial=0) <= 1:
            return a.view(np.bool_)
    elif ((a == 0) | (a == 1)).all():
        return a != 0
    raise ValueError(f"{name} must hold only 0 and 1 (a keep-mask), got values {np.unique(a)[:5].tolist()}")


class DetBoxSelectSeqEnv(BoxSelectEnvBase):
    """
    ## Description

    :class:`DetBoxSelectEnv` one decision at a time: each step keeps one more candidate, or stops. What sb3-contrib's
    MaskablePPO (with :meth:`action_masks`) and heuristics that add boxes in order (greedy NMS picks the next box it
    would keep) act in.

    ## Action Space

    ``Discrete(n_max + 1)``: ``k < n_max`` keeps the candidate in slot ``k``; ``n_max`` stops. :meth:`action_masks`
    allows the real candidates not kept yet, and "stop" always. A masked action (a padded or already kept slot) is
    ignored (the kept set stays) and counted in ``info["ignored_actions"]``; ``strict=True`` raises instead.
    Anything that is not an integer in ``0..n_max`` raises ValueError naming ``action``.

    ## Observation Space

    ``Box(0, 1, (n_max, 10 + C), float32)``: :class:`DetBoxSelectEnv`'s table plus column ``9 + C``: 1 for the
    candidates kept so far.

    ## Rewards

    The change per step of :class:`DetBoxSelectEnv`'s reward of the kept set, so the undiscounted return telescopes
    to the one-step reward of the final set. ``reward="pool_ap"``: ``r_t = R(S_t) - R(S_{t-1})`` with ``R`` the pool
    reward and ``R(S_0) := 0``. ``reward="image_ap"``: ``r_t = AP(S_t) - AP(S_{t-1})`` with ``AP(S_0) := 0``, so the
    return is the final set's AP (with ``baseline="nms"``, the last step also subtracts the NMS AP, and the return is
    ``AP - AP_NMS``). Same AP and no-GT rule as :class:`DetBoxSelectEnv`.

    ## Starting State

    As :class:`DetBoxSelectEnv`, with nothing kept.

    ## Episode End

    Terminates on "stop" or when every real candidate is kept; truncates after ``n_max + 1`` steps (only reachable
    with ignored actions). ``info["ap"]`` (every step) is the current set's AP.

    ## Info

    As :class:`DetBoxSelectEnv` (``kept`` is the kept set so far), plus ``ignored_actions`` (count in the episode).

    ## Arguments

    As :class:`DetBoxSelectEnv` (``gymnasium.make("DetBoxSelectSeq-v1", ...)``, or ``-v0``).
    """

    def _make_action_space(self) -> spaces.Space:
        return spaces.Discrete(self.n_max + 1)

    def _n_columns(self) -> int:
        return n_features(self.num_classes) + 1

    def _begin_episode(self) -> None:
        i = self._image
        self._obs = np.zeros((self.n_max, self._n_columns()), dtype=np.float32)
        self._obs[:, :-1] = self.table.features[i]
        self._kept = np.zeros(self.n_max, dtype=bool)
        self._ap_prev = 0.0
        self._steps = 0
        self._ignored_actions = 0

    def _observation(self) -> np.ndarray:
        return self._obs.copy()

    def action_masks(self) -> np.ndarray:
        """Bool ``[n_max + 1]``: the real candidates not kept yet, and "stop" (always)."""
        mask = np.zeros(self.n_max + 1, dtype=bool)
        if self._image >= 0:
            n = int(self.table.counts[self._image])
            mask[:n] = ~self._kept[:n]
        mask[-1] = True
        return mask

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action)
        if a.size != 1 or a.dtype.kind not in "iu" or not 0 <= int(a.reshape(())) <= self.n_max:
            raise ValueError(f"action must be an integer in 0..{self.n_max} (a slot, or {self.n_max} = stop), "
                             f"got {action!r}")
        k = int(a.reshape(()))
        n = int(self.table.counts[self._image])
        self._steps += 1
        stop = k == self.n_max
        if not stop:
            if k >= n or self._kept[k]:
                self._ignored_actions += self._ignored(1, "keeps a padded or already kept slot:")
            else:
                self._kept[k] = True
                self._obs[k, -1] = 1.0
        ap = self.table.ap(self._images, self._kept[None])
        value, reward_ap = self.rewards(self._images, self._kept[None], ap)
        value, reward_ap, ap = float(value[0]), float(reward_ap[0]), float(ap[0])
        terminated = stop or bool(self._kept[:n].all())
        truncated = not terminated and self._steps >= self.n_max + 1
        if self.pool is not None:  # the change of the kept set's one-step reward (pool AP: relative to NMS already)
            reward, self._ap_prev = value - self._ap_prev, value
        else:  # the change of the kept set's AP; the NMS baseline subtracted once, at the end
            reward, self._ap_prev = reward_ap - self._ap_prev, reward_ap
            if (terminated or truncated) and self.baseline == "nms":
                reward -= float(self.nms_reward_ap[self._image])
        if terminated or truncated:
            if self.logger.enabled:
                self.logger.scalars("box_select", {"ap": ap, "nms_ap": float(self.table.nms_ap[self._image])},
                                    self._episode)
        info = {**self._info, "kept": np.flatnonzero(self._kept[:n]).tolist(), "ap": ap, "reward_ap": reward_ap,
                "nms_ap": float(self.table.nms_ap[self._image]), "ignored_actions": self._ignored_actions}
        if self.pool is not None:
            info["pool_ap"] = reward_ap
        return self._observation(), reward, terminated, truncated, info


class DetBoxRescoreEnv(BoxSelectEnvBase):
    """
    ## Description

    :class:`DetBoxSelectEnv` with new scores instead of a keep-mask: the agent re-scores every candidate, which is
    what soft-NMS (Bodla et al.) and learned re-scorers (GossipNet, Hosang et al.) do; the AP ranks the boxes by the
    new scores.

    ## Action Space

    ``Box(0, 1, (n_max,), float32)``: the new score of each slot; 0 drops the box. Values outside [0, 1] are
    clipped; NaN, or a wrong shape or dtype, raises ValueError naming ``action``. Nonzero scores on padded slots are
    ignored and counted in ``info["ignored_slots"]`` (``strict=True`` raises). Ties keep slot order (the stable
    sort of pycocotools).

    ## Observation Space

    As :class:`DetBoxSelectEnv`.

    ## Rewards

    :class:`DetBoxSelectEnv`'s reward of the boxes with a nonzero new score, ranked by the new scores: with
    ``reward="pool_ap"`` they are ranked among the pool's detections too, so scores must be calibrated across images
    (as soft-NMS's are); with ``image_ap`` only the order inside the image counts (minus the NMS AP with
    ``baseline="nms"``). The pool holds the detector's scores, so the pool reward is anchored to the detector's
    score scale: on the default's val images, NMS's own boxes with their scores mapped by 0.9 s, s^2 or sqrt(s)
    (COCO AP over images all mapped alike: unchanged) earn -0.017, -0.10 and -0.44; a re-scorer whose scores are
    on another scale pays for it even where it raises that COCO AP (README, DetBoxSelect-v1).

    ## Starting State, Episode End

    As :class:`DetBoxSelectEnv` (one step).

    ## Info

    As :class:`DetBoxSelectEnv`, plus ``scores``: the new scores of the real candidates (a list of floats)
    (with ``kept`` and ``candidates``: the COCO dicts that reproduce ``ap``).

    ## Arguments

    As :class:`DetBoxSelectEnv` (``gymnasium.make("DetBoxRescore-v1", ...)``, or ``-v0``).
    """

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(0.0, 1.0, (self.n_max,), dtype=np.float32)

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action)
        if a.shape != (self.n_max,) or a.dtype.kind not in "biuf":
            raise ValueError(f"action must be scores of shape ({self.n_max},) in [0, 1], got {a.dtype} {a.shape}")
        scores = a.astype(np.float64)
        if np.isnan(scores).any():
            raise ValueError(f"action has NaN scores at slots {np.flatnonzero(np.isnan(scores))[:5].tolist()}")
        np.minimum(np.maximum(scores, 0.0, out=scores), 1.0, out=scores)  # half the time of np.clip on 100 slots
        keep = scores > 0
        n = int(self.table.counts[self._image])
        ignored = self._ignored(int(keep[n:].sum()), "gives nonzero scores to")
        reward, info = self._finish(keep, scores, ignored)
        info["scores"] = scores[:n].tolist()
        return self._observation(), reward, True, False, info
