"""`DetectionDataset`: one split of a detection dataset held in memory.

Images are kept as uint8 tensors [3, H, W] (4x smaller than float and what PNG/JPEG decode to);
:meth:`DetectionDataset.batch` converts a minibatch to float in 0..1 on the training hot path.
Targets follow torchvision's detection convention: ``"boxes"`` float32 [N, 4] xyxy in absolute pixel
coordinates (continuous: a box covering pixel columns c0..c1 inclusive is x1=c0, x2=c1+1) and
``"labels"`` int64 [N] contiguous training labels 1..num_classes (0 is background and never used).

Annotations that must not be trained on but still count in evaluation (COCO ``iscrowd=1``, VOC
``difficult``) live in :attr:`DetectionDataset.ignored` and are written by :meth:`coco_gt` with
``iscrowd=1``, which makes pycocotools ignore detections matched to them.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

__all__ = ["DetectionDataset"]

Target = dict[str, torch.Tensor]


def _empty_target() -> Target:
    return {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}


def _check_target(t: Any, i: int, num_classes: int, what: str) -> Target:
    """Validate one target dict (image index ``i``) and return it with canonical dtypes."""
    if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
        raise ValueError(f"{what}[{i}] must be a dict with keys 'boxes' and 'labels', got {type(t).__name__}")
    boxes = torch.as_tensor(t["boxes"], dtype=torch.float32)
    labels = torch.as_tensor(t["labels"], dtype=torch.int64)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}[{i}]['boxes'] must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
    if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{what}[{i}]['labels'] must have shape [N] matching {boxes.shape[0]} boxes, got {tuple(labels.shape)}"
        )
    if boxes.shape[0]:
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{what}[{i}]['boxes'] contains NaN or inf")
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ValueError(
                f"{what}[{i}]['boxes'][{j}] = {boxes[j].tolist()} has x2 < x1 or y2 < y1; boxes must be xyxy"
            )
        out = (labels < 1) | (labels > num_classes)
        if out.any():
            j = int(out.nonzero()[0])
            raise ValueError(
                f"{what}[{i}]['labels'][{j}] = {int(labels[j])} is out of range; accepted labels are "
                f"1..{num_classes} (0 is background)"
            )
    new = dict(t)
    new["boxes"] = boxes
    new["labels"] = labels
    return new


def _check_categories(
    categories: list[dict[str, Any]], label_to_category_id: dict[int, int] | None
) -> dict[int, int]:
    """Check the categories' ids and return the label -> category id map (default: categories' order)."""
    if not categories:
        raise ValueError("categories must list at least one category ({'id': int, 'name': str})")
    cat_ids = [c.get("id") for c in categories]
    if len(set(cat_ids)) != len(cat_ids) or not all(isinstance(c, int) for c in cat_ids):
        raise ValueError(f"categories must have unique integer 'id's, got {cat_ids}")
    if label_to_category_id is None:
        label_to_category_id = {k + 1: cid for k, cid in enumerate(cat_ids)}
    mapping = {int(k): int(v) for k, v in label_to_category_id.items()}
    if sorted(mapping) != list(range(1, len(cat_ids) + 1)) or set(mapping.values()) != set(cat_ids):
        raise ValueError(
            f"label_to_category_id must map labels 1..{len(cat_ids)} onto the category ids {cat_ids}, got {mapping}"
        )
    return mapping


def _check_images(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            desc = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"images[{i}] must be a uint8 tensor [3, H, W], got {desc}")
        out.append(img)
    return out


def _check_ignored(ignored: Sequence[Target] | None, n: int, num_classes: int) -> list[Target]:
    if ignored is None:
        return [_empty_target() for _ in range(n)]
    if len(ignored) != n:
        raise ValueError(f"ignored has {len(ignored)} entries but images has {n}")
    return [_check_target(t, i, num_classes, "ignored") for i, t in enumerate(ignored)]


def _check_areas(areas: Sequence[torch.Tensor], targets: list[Target]) -> list[torch.Tensor]:
    """``areas`` as float32 [N] tensors, one per target, with one entry per box."""
    if len(areas) != len(targets):
        raise ValueError(f"areas has {len(areas)} entries but images has {len(targets)}")
    out = [torch.as_tensor(a, dtype=torch.float32).reshape(-1) for a in areas]
    for i, a in enumerate(out):
        if a.shape[0] != targets[i]["boxes"].shape[0]:
            raise ValueError(f"areas[{i}] has {a.shape[0]} entries but targets[{i}] has "
                             f"{targets[i]['boxes'].shape[0]} boxes")
    return out


class DetectionDataset:
    """One split of a detection dataset, held in memory.

    Args:
        images: uint8 tensors [3, H, W] (sizes may differ between images).
        targets: per image ``{"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] in 1..C}``.
        categories: COCO categories ``[{"id": int, "name": str}, ...]``; their order defines the
            training labels (``categories[k]`` is label k+1). Required.
        image_ids: COCO image ids (default 1..len).
        file_names: image file names relative to the image directory (default ``"{id}.png"``).
        label_to_category_id: training label -> COCO category id (default: from ``categories`` order).
        name: dataset name used in logs and error messages.
        ignored: per image, annotations kept out of training but written to :meth:`coco_gt` with
            ``iscrowd=1`` (same dict layout as targets). Default: none.
        areas: per image, float32 [N] COCO areas of the targets (default: box areas). Kept so that a
            loaded COCO file with segmentation areas evaluates the same small/medium/large ranges.
        info: free-form metadata (seed, config, source path, ...).

    Raises:
        ValueError: on inconsistent lengths, non-uint8 / non-[3,H,W] images, boxes with x2 < x1 or
            y2 < y1, or labels outside 1..num_classes.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[Target],
        *,
        categories: Sequence[dict[str, Any]],
        image_ids: Sequence[int] | None = None,
        file_names: Sequence[str] | None = None,
        label_to_category_id: dict[int, int] | None = None,
        name: str = "dataset",
        ignored: Sequence[Target] | None = None,
        areas: Sequence[torch.Tensor] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        n = len(images)
        if len(targets) != n:
            raise ValueError(f"targets has {len(targets)} entries but images has {n}")
        self.name = str(name)
        self.categories: list[dict[str, Any]] = [dict(c) for c in categories]
        self.label_to_category_id: dict[int, int] = _check_categories(self.categories, label_to_category_id)
        C = self.num_classes
        self.images: list[torch.Tensor] = _check_images(images)
        self.targets: list[Target] = [_check_target(t, i, C, "targets") for i, t in enumerate(targets)]
        self.ignored: list[Target] = _check_ignored(ignored, n, C)
        self.image_ids: list[int] = list(range(1, n + 1)) if image_ids is None else [int(x) for x in image_ids]
        if len(self.image_ids) != n or len(set(self.image_ids)) != n:
            raise ValueError(f"image_ids must be {n} unique integers")
        self.file_names: list[str] = (
            [f"{i}.png" for i in self.image_ids] if file_names is None else [str(f) for f in file_names]
        )
        if len(self.file_names) != n:
            raise ValueError(f"file_names has {len(self.file_names)} entries but images has {n}")
        self.areas: list[torch.Tensor] | None = None if areas is None else _check_areas(areas, self.targets)
        self.info: dict[str, Any] = dict(info or {})

    # ------------------------------------------------------------------ basics
    @property
    def num_classes(self) -> int:
        """Number of object classes C (training labels are 1..C)."""
        return len(self.categories)

    @property
    def category_id_to_label(self) -> dict[int, int]:
        """COCO category id -> training label (inverse of :attr:`label_to_category_id`)."""
        return {v: k for k, v in self.label_to_category_id.items()}

    @property
    def class_names(self) -> list[str]:
        """Names of the classes in label order (``class_names[l-1]`` is the name of label l)."""
        by_id = {c["id"]: str(c.get("name", c["id"])) for c in self.categories}
        return [by_id[self.label_to_category_id[k]] for k in range(1, self.num_classes + 1)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        """``(uint8 image [3, H, W], target dict)`` of image ``i``."""
        return self.images[i], self.targets[i]

    def __repr__(self) -> str:
        n_obj = sum(int(t["labels"].shape[0]) for t in self.targets)
        return f"DetectionDataset(name={self.name!r}, images={len(self)}, objects={n_obj}, classes={self.num_classes})"

    # ------------------------------------------------------------------ hot path
    def batch(
        self, indices: Iterable[int], device: torch.device | str | None = None
    ) -> tuple[list[torch.Tensor], list[Target]]:
        """Images ``indices`` as float32 [3, H, W] in 0..1 and their targets, optionally on ``device``.

        The uint8 -> float conversion happens after the move, so a GPU transfer carries 4x fewer bytes.
        Target dicts are fresh dicts (the tensors are shared unless moved), so callers may add keys.
        """
        imgs: list[torch.Tensor] = []
        tgts: list[Target] = []
        for i in indices:
            img = self.images[i]
            t = self.targets[i]
            if device is not None:
                img = img.to(device, non_blocking=True)
                t = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
            else:
                t = dict(t)
            imgs.append(img.float().div_(255.0))
            tgts.append(t)
        return imgs, tgts

    # ------------------------------------------------------------------ derived datasets
    def subset(self, indices: Iterable[int]) -> "DetectionDataset":
        """A new dataset with images ``indices`` (in that order), sharing the tensors."""
        idx = [int(i) for i in indices]
        n = len(self)
        for i in idx:
            if not -n <= i < n:
                raise IndexError(f"subset index {i} out of range for dataset {self.name!r} of {n} images")
        return DetectionDataset(
            [self.images[i] for i in idx],
            [self.targets[i] for i in idx],
            categories=self.categories,
            image_ids=[self.image_ids[i] for i in idx],
            file_names=[self.file_names[i] for i in idx],
            label_to_category_id=self.label_to_category_id,
            name=self.name,
            ignored=[self.ignored[i] for i in idx],
            areas=None if self.areas is None else [self.areas[i] for i in idx],
            info=self.info,
        )

    def copy(self) -> "DetectionDataset":
        """Shallow copy: new lists and dicts, shared tensors (no re-validation, so it is cheap)."""
        new = object.__new__(DetectionDataset)
        new.__dict__.update(self.__dict__)
        for attr in ("images", "image_ids", "file_names", "categories"):
            setattr(new, attr, list(getattr(self, attr)))
        new.targets = [dict(t) for t in self.targets]
        new.ignored = [dict(t) for t in self.ignored]
        new.areas = None if self.areas is None else list(self.areas)
        new.label_to_category_id = dict(self.label_to_category_id)
        new.info = dict(self.info)
        return new

    def with_targets(self, targets: Sequence[Target], *, keep_ignored: bool = True) -> "DetectionDataset":
        """The same images with other targets (e.g. pseudo-labels from a detector)."""
        return DetectionDataset(
            self.images,
            targets,
            categories=self.categories,
            image_ids=self.image_ids,
            file_names=self.file_names,
            label_to_category_id=self.label_to_category_id,
            name=self.name,
            ignored=self.ignored if keep_ignored else None,
            areas=None,
            info=self.info,
        )

    # ------------------------------------------------------------------ evaluation views
    def coco_gt(self) -> dict[str, Any]:
        """COCO ground-truth dict for pycocotools / detgym.metrics.

        ``images`` (id, file_name, width, height), ``annotations`` (id from 1 in dataset order,
        image_id, category_id, bbox xywh, area, iscrowd: 0 for targets, 1 for :attr:`ignored`),
        ``categories``.
        """
        images = []
        anns = []
        ann_id = 1
        l2c = self.label_to_category_id
        for i, img in enumerate(self.images):
            img_id = self.image_ids[i]
            images.append(
                {"id": img_id, "file_name": self.file_names[i], "width": int(img.shape[2]), "height": int(img.shape[1])}
            )
            for group, crowd in ((self.targets[i], 0), (self.ignored[i], 1)):
                boxes = group["boxes"].tolist()
                labels = group["labels"].tolist()
                areas = (
                    self.areas[i].tolist() if (crowd == 0 and self.areas is not None) else [None] * len(boxes)
                )
                for (x1, y1, x2, y2), lab, area in zip(boxes, labels, areas):
                    w, h = x2 - x1, y2 - y1
                    anns.append(
                        {
                            "id": ann_id,
                            "image_id": img_id,
                            "category_id": l2c[int(lab)],
                            "bbox": [x1, y1, w, h],
                            "area": float(w * h) if area is None else float(area),
                            "iscrowd": crowd,
                        }
                    )
                    ann_id += 1
        return {"images": images, "annotations": anns, "categories": [dict(c) for c in self.categories]}

    def digit_strings(self) -> list[str]:
        """Per image, the class names of its targets read left to right (by box centre x), joined.

        For the digits set the class names are '0'..'9', so this is the house-number string used for
        sequence accuracy. Raises ValueError if a class name is not a single character.
        """
        names = self.class_names
        if any(len(n) != 1 for n in names):
            raise ValueError(
                f"digit_strings() needs single-character class names (like the digits set's '0'..'9'); "
                f"dataset {self.name!r} has {names[:5]}..."
            )
        out = []
        for t in self.targets:
            b = t["boxes"]
            if b.shape[0] == 0:
                out.append("")
                continue
            cx = (b[:, 0] + b[:, 2]) * 0.5
            order = torch.argsort(cx, stable=True)
            out.append("".join(names[int(t["labels"][j]) - 1] for j in order))
        return out
