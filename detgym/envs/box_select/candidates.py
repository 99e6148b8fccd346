"""The candidate cache: a preset's detector trained once, and its pre-NMS candidates for every image, on disk.

Paper 001's action is a choice among a trained detector's candidate boxes, so the DetBoxSelect envs never run a
detector during an episode: the preset's detector is trained once per configuration and seed, its candidates
(``model.candidates(images, max_candidates=n_max)``: the scored, class-labelled boxes its post-processing would
run NMS on, highest score first) are computed once for every image of every split, and both are stored under
``detgym.data.io.cache_root()/box_select/``:

* ``detector-<key>/``: ``detector.npz`` (the state dict as arrays) and ``manifest.json``;
* ``candidates-<key>/``: ``<split>.npz`` per split (candidates and ground truth, concatenated over images with
  offsets) and ``manifest.json``.

The keys hash the resolved fields that change the result (:func:`~detgym.envs.box_select.presets.detector_fields`,
the digits generator version and :data:`FORMAT_VERSIONS`), so a changed preset never reads stale arrays, and the
candidates of several ``n_max`` share one detector. A split's file also holds the observation features of its
candidates (:mod:`~detgym.envs.box_select.features`), so a later ``make`` only reads them. Everything is plain
arrays (``np.load(allow_pickle=False)``: a shared cache cannot run code) written atomically (a temporary directory
renamed into place). A reader checks the manifest (format, key, SHA-256 of every file) and the arrays' shapes before
using anything; a cache that fails a check is moved aside and rebuilt, never half-read. Builds of the same key in
several processes (a vector env's workers) wait for one another on a lock file instead of training the detector
twice.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from detgym._hashing import stable_hash as _hash
from detgym.data.io import cache_root
from detgym.envs.cache import CacheError, load_entry, load_state_arrays, state_arrays, write_arrays, write_manifest

from .presets import SPLITS, BoxSelectPreset, detector_fields

__all__ = [
    "FORMAT_VERSIONS",
    "CacheError",
    "SplitCandidates",
    "cache_paths",
    "candidates_key",
    "detector_key",
    "load_candidates",
    "load_detector",
    "split_features",
]

#: Version of each kind of entry's layout; bumping one invalidates the existing entries of that kind.
FORMAT_VERSIONS = {"detector": 1, "candidates": 2}
_SPLIT_ARRAYS = {
    "image_ids": (np.int64, 1), "image_hw": (np.int64, 2), "cand_offsets": (np.int64, 1),
    "boxes": (np.float32, 2), "scores": (np.float32, 1), "labels": (np.int64, 1),
    "gt_offsets": (np.int64, 1), "gt_boxes": (np.float32, 2), "gt_labels": (np.int64, 1), "gt_crowd": (np.bool_, 1),
    "features": (np.float32, 3),
}


@dataclass(frozen=True)
class SplitCandidates:
    """One split's candidates and ground truth, concatenated over images.

    Image ``i``'s candidates are rows ``cand_offsets[i]:cand_offsets[i+1]`` of ``boxes`` / ``scores`` / ``labels``
    (score-descending, at most ``n_max``), its ground truth rows ``gt_offsets[i]:gt_offsets[i+1]`` of the ``gt_*``
    arrays (crowd / ignored annotations flagged in ``gt_crowd``). Boxes are xyxy in the image's pixels.
    """

    image_ids: np.ndarray  # int64 [n]
    image_hw: np.ndarray  # int64 [n, 2] (height, width)
    cand_offsets: np.ndarray  # int64 [n + 1]
    boxes: np.ndarray  # float32 [M, 4]
    scores: np.ndarray  # float32 [M]
    labels: np.ndarray  # int64 [M], 1..num_classes
    gt_offsets: np.ndarray  # int64 [n + 1]
    gt_boxes: np.ndarray  # float32 [G, 4]
    gt_labels: np.ndarray  # int64 [G]
    gt_crowd: np.ndarray  # bool [G]
    features: np.ndarray  # float32 [n, n_max, 9 + num_classes]: the observation rows of every image

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _SPLIT_ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "SplitCandidates":
        """Check names, dtypes and shapes (raising :class:`CacheError`) and build the split."""
        missing = sorted(set(_SPLIT_ARRAYS) - set(arrays))
        if missing:
            raise CacheError(f"missing arrays {missing}")
        out = {}
        for name, (dtype, ndim) in _SPLIT_ARRAYS.items():
            arr = np.asarray(arrays[name])
            if arr.dtype != dtype or arr.ndim != ndim:
                raise CacheError(f"array {name!r} is {arr.dtype} with {arr.ndim} dims, expected {np.dtype(dtype)}")
            out[name] = arr
        split = cls(**out)
        split._check()
        return split

    def _check(self) -> None:
        n = len(self)
        for offsets, rows, what in ((self.cand_offsets, self.boxes, "cand"), (self.gt_offsets, self.gt_boxes, "gt")):
            if (offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != rows.shape[0]
                    or (np.diff(offsets) < 0).any()):
                raise CacheError(f"{what}_offsets do not index the {what} rows")
        m, g = self.boxes.shape[0], self.gt_boxes.shape[0]
        if self.boxes.shape != (m, 4) or self.scores.shape != (m,) or self.labels.shape != (m,):
            raise CacheError("candidate arrays disagree in length")
        if self.gt_boxes.shape != (g, 4) or self.gt_labels.shape != (g,) or self.gt_crowd.shape != (g,):
            raise CacheError("ground-truth arrays disagree in length")
        if self.image_hw.shape != (n, 2):
            raise CacheError("image_hw must be [n, 2]")
        if self.features.shape[0] != n or (n and np.diff(self.cand_offsets).max() > self.features.shape[1]):
            raise CacheError("features must hold one row per candidate slot of every image")
        if not (np.isfinite(self.boxes).all() and np.isfinite(self.scores).all() and np.isfinite(self.gt_boxes).all()):
            raise CacheError("non-finite boxes or scores")


# ------------------------------------------------------------------------------------------------- keys
def _generator_version(config: BoxSelectPreset) -> int | None:
    if config.dataset != "digits":
        return None
    from detgym.data import GENERATOR_VERSION

    return int(GENERATOR_VERSION)


def detector_key(config: BoxSelectPreset) -> str:
    """16 hex digits naming the trained detector of ``config`` (equal configs share it, whatever the preset name)."""
    return _hash({"format": FORMAT_VERSIONS["detector"], "kind": "detector", "generator": _generator_version(config),
                  **detector_fields(config)})


def candidates_key(config: BoxSelectPreset) -> str:
    """16 hex digits naming the candidates of ``config``'s detector cut to ``n_max`` per image."""
    return _hash({"format": FORMAT_VERSIONS["candidates"], "kind": "candidates", "detector": detector_key(config),
                  "n_max": int(config.n_max)})


def cache_paths(config: BoxSelectPreset, cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(detector directory, candidates directory)`` of ``config`` under ``cache_root(cache_dir)/box_select``."""
    root = cache_root(cache_dir) / "box_select"
    return root / f"detector-{detector_key(config)}", root / f"candidates-{candidates_key(config)}"


def _load_or_build(directory: Path, kind: str, key: str, build: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return load_entry(directory, kind, key, FORMAT_VERSIONS[kind], build)


def _manifest(directory: Path, kind: str, key: str, config: BoxSelectPreset, files: dict[str, str],
              **extra: Any) -> None:
    write_manifest(directory, kind, key, FORMAT_VERSIONS[kind], files, fields=detector_fields(config), **extra)


# ------------------------------------------------------------------------------------------ the detector
def load_detector(config: BoxSelectPreset, substrate: Any, *, cache_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> Any:
    """The preset's trained detector (eval mode, on the TrainConfig's device), trained once and cached.

    Training: ``substrate.build_trainer(detector_seed, detector_seed, iterations=detector_iterations).fit()``, the
    recipe's schedule on the preset's train split.

    Args:
        config: the resolved preset.
        substrate: its :class:`~detgym.envs.substrate.LoadedSubstrate`.
        cache_dir: cache root (default ``$DETGYM_CACHE`` or ``~/.cache/detgym``).
        progress: show the training progress bar.
    """

    directory, _ = cache_paths(config, cache_dir)
    key = detector_key(config)
    seed = int(config.detector_seed)

    def build(tmp: Path) -> None:
        trainer = substrate.build_trainer(seed, seed, iterations=config.detector_iterations)
        trainer.fit(progress=progress)
        files = {"detector.npz": write_arrays(tmp / "detector.npz", state_arrays(trainer.model))}
        _manifest(tmp, "detector", key, config, files, iterations=trainer.iteration)
        trainer.close()

    _, arrays = _load_or_build(directory, "detector", key, build)
    model = load_state_arrays(substrate.build_model(seed), arrays["detector.npz"], directory)
    from detgym.train.trainer import resolve_device

    return model.to(resolve_device(substrate.train_config.device)).eval()


# ------------------------------------------------------------------------------------------ the candidates
def _available_splits(substrate: Any) -> dict[str, Any]:
    """The splits of the preset's data that exist and are not empty (the training split must)."""
    out = {"train": substrate.split("train")}
    for name in SPLITS[1:]:
        try:
            out[name] = substrate.split(name)
        except (FileNotFoundError, ValueError):
            continue
    return out


def split_features(arrays: Mapping[str, np.ndarray], n_max: int, num_classes: int) -> np.ndarray:
    """The observation features (:func:`~detgym.envs.box_select.features.image_features`) of a split's candidates,
    padded to ``n_max`` slots: float32 ``[n, n_max, 9 + num_classes]``."""
    from .features import image_features, pad_split

    counts, boxes, scores, labels = pad_split(arrays["cand_offsets"], n_max, arrays["boxes"], arrays["scores"],
                                              arrays["labels"])
    return image_features(boxes.astype(np.float64), scores.astype(np.float64), labels, counts, arrays["image_hw"],
                          num_classes)


def _split_arrays(model: Any, dataset: Any, n_max: int, batch_size: int) -> dict[str, np.ndarray]:
    """Candidates (``model.candidates(..., max_candidates=n_max)``), ground truth and observation features of every
    image of ``dataset``."""
    import torch

    device = next(model.parameters()).device
    boxes, scores, labels, counts = [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            images, _ = dataset.batch(range(start, min(start + batch_size, len(dataset))), device=device)
            for c in model.candidates(images, max_candidates=n_max):
                boxes.append(c["boxes"].float().cpu().numpy().reshape(-1, 4))
                scores.append(c["scores"].float().cpu().numpy())
                labels.append(c["labels"].cpu().numpy().astype(np.int64))
                counts.append(len(scores[-1]))
    gt_boxes, gt_labels, gt_crowd, gt_counts = [], [], [], []
    for target, ignored in zip(dataset.targets, dataset.ignored):
        for group, crowd in ((target, False), (ignored, True)):
            gt_boxes.append(group["boxes"].float().numpy().reshape(-1, 4))
            gt_labels.append(group["labels"].numpy().astype(np.int64))
            gt_crowd.append(np.full(len(gt_labels[-1]), crowd))
        gt_counts.append(len(target["labels"]) + len(ignored["labels"]))
    arrays = {
        "image_ids": np.asarray(dataset.image_ids, dtype=np.int64),
        "image_hw": np.asarray([img.shape[-2:] for img in dataset.images], dtype=np.int64).reshape(-1, 2),
        "cand_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        "scores": np.concatenate(scores).astype(np.float32),
        "labels": np.concatenate(labels).astype(np.int64),
        "gt_offsets": np.concatenate([[0], np.cumsum(gt_counts)]).astype(np.int64),
        "gt_boxes": np.concatenate(gt_boxes).astype(np.float32).reshape(-1, 4),
        "gt_labels": np.concatenate(gt_labels).astype(np.int64),
        "gt_crowd": np.concatenate(gt_crowd).astype(np.bool_),
    }
    arrays["features"] = split_features(arrays, n_max, int(dataset.num_classes))
    return arrays


def load_candidates(config: BoxSelectPreset, substrate: Any, *, cache_dir: str | os.PathLike | None = None,
                    progress: bool = False) -> tuple[dict[str, SplitCandidates], dict[str, Any]]:
    """Every split's candidates of the preset's detector (built and cached on first use, see the module docstring).

    Returns:
        ``(splits, manifest)``: split name -> :class:`SplitCandidates`, and the manifest (``num_classes``,
        ``label_to_category_id``, ``detector_key``, ...).
    """
    _, directory = cache_paths(config, cache_dir)
    key = candidates_key(config)

    def build(tmp: Path) -> None:
        model = load_detector(config, substrate, cache_dir=cache_dir, progress=progress)
        batch = int(substrate.train_config.eval_batch_size)
        files, sizes = {}, {}
        for name, dataset in _available_splits(substrate).items():
            arrays = _split_arrays(model, dataset, int(config.n_max), batch)
            SplitCandidates.from_arrays(arrays)  # never write what a reader would refuse
            files[f"{name}.npz"] = write_arrays(tmp / f"{name}.npz", arrays)
            sizes[name] = len(dataset)
        train = substrate.train_set
        _manifest(tmp, "candidates", key, config, files, detector_key=detector_key(config), n_max=int(config.n_max),
                  num_classes=int(train.num_classes), splits=sizes,
                  label_to_category_id={str(k): int(v) for k, v in train.label_to_category_id.items()})

    manifest, arrays = _load_or_build(directory, "candidates", key, build)
    try:
        splits = {name[: -len(".npz")]: SplitCandidates.from_arrays(a) for name, a in arrays.items()}
    except CacheError:
        shutil.rmtree(directory, ignore_errors=True)
        manifest, arrays = _load_or_build(directory, "candidates", key, build)
        splits = {name[: -len(".npz")]: SplitCandidates.from_arrays(a) for name, a in arrays.items()}
    return splits, manifest
