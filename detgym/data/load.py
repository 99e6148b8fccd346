"""`load_dataset`: one entry point for the ``digits`` preset, COCO-layout directories and VOC roots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .coco import load_coco
from .dataset import DetectionDataset
from .digits import SPLIT_DIRS, canonical_split, digits_dataset
from .voc import find_voc_root, load_voc

__all__ = ["DATASET_NAMES", "load_dataset", "coco_split_files"]

#: Built-in dataset names (everything else must be a path).
DATASET_NAMES = ("digits",)

_ACCEPTED = (
    "accepted: 'digits' (the embedded synthetic set), a COCO-layout directory (train/ + train.json, "
    "valid/ + valid.json, test/ + test.json as written by `detgym data digits`; or COCO's "
    "annotations/instances_<split>2017.json + <split>2017/; or <split>/_annotations.coco.json), "
    "or a Pascal VOC root (Annotations/, ImageSets/Main/, JPEGImages/)"
)


def coco_split_files(root: str | os.PathLike[str], split: str) -> tuple[Path, Path] | None:
    """``(image_dir, ann_file)`` of ``split`` in a COCO-layout directory, or None if none is there.

    Looked for, in order: ``<d>/`` + ``<d>.json`` with d = train / valid / test (paper 004; "val" also
    accepts ``val/`` + ``val.json``), COCO's ``annotations/instances_<s>2017.json`` + ``<s>2017/``, and
    Roboflow's ``<d>/_annotations.coco.json``.
    """
    root = Path(root)
    s = canonical_split(split)
    stems = [SPLIT_DIRS[s]] + (["val"] if s == "val" else [])
    for d in stems:
        if (root / f"{d}.json").is_file() and (root / d).is_dir():
            return root / d, root / f"{d}.json"
    official = {"train": "train", "val": "val", "test": "test"}[s]
    ann = root / "annotations" / f"instances_{official}2017.json"
    if ann.is_file() and (root / f"{official}2017").is_dir():
        return root / f"{official}2017", ann
    for d in stems:
        if (root / d / "_annotations.coco.json").is_file():
            return root / d, root / d / "_annotations.coco.json"
    return None


def load_dataset(name_or_path: str | os.PathLike[str], split: str = "train", **kwargs: Any) -> DetectionDataset:
    """Load split ``split`` ("train", "val", "test") of a named dataset or a dataset directory.

    * ``"digits"``: :func:`detgym.data.digits_dataset` (kwargs: seed, cache_dir, config).
    * a COCO-layout directory: :func:`detgym.data.load_coco` (kwargs: name, strict).
    * a Pascal VOC root: :func:`detgym.data.load_voc` (kwargs: classes, name); ``split`` may also be
      any image-set name there, e.g. "trainval".

    Raises:
        ValueError: an unknown dataset name or an unknown split, naming what is accepted.
        FileNotFoundError: a path that does not exist, or a directory without the split's files.
    """
    key = str(name_or_path)
    if key.lower() in DATASET_NAMES:
        return digits_dataset(split, **kwargs)
    path = Path(key).expanduser()
    if not path.exists():
        if os.sep not in key and "/" not in key and not key.startswith("."):
            raise ValueError(f"unknown dataset name {key!r}; {_ACCEPTED}")
        raise FileNotFoundError(f"dataset path not found: {path}; {_ACCEPTED}")
    if not path.is_dir():
        raise ValueError(f"dataset path {path} is a file, not a directory; {_ACCEPTED}")
    if find_voc_root(path) is not None:
        voc_split = split if split not in ("valid", "validation") else "val"
        return load_voc(path, voc_split, **kwargs)
    files = coco_split_files(path, split)
    if files is None:
        s = canonical_split(split)
        raise FileNotFoundError(f"no files for split {s!r} in {path} (looked for {SPLIT_DIRS[s]}/ + "
                                f"{SPLIT_DIRS[s]}.json and the other COCO layouts); {_ACCEPTED}")
    kwargs.setdefault("name", path.name)
    return load_coco(*files, **kwargs)
