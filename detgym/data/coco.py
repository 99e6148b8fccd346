"""COCO-format datasets: load (with validation) and write.

A COCO-format dataset is an image directory plus an annotation JSON with ``images`` (id, file_name,
optional width/height), ``annotations`` (id, image_id, category_id, bbox [x, y, w, h], optional area
and iscrowd) and ``categories`` (id, name). The JSON is parsed with the standard library so that every
problem can be reported with the file, the entry and what is accepted; the dict that
:meth:`DetectionDataset.coco_gt` returns loads into ``pycocotools.coco.COCO`` as it is.

Decisions:

* Category ids may be anything (0-based, sparse); they are sorted and mapped to contiguous training
  labels 1..C, kept in ``label_to_category_id``.
* Crowd annotations (``iscrowd=1``) are kept out of the training targets but stay in ``coco_gt()``.
* Degenerate boxes (w <= 0 or h <= 0, i.e. x2 <= x1 or y2 <= y1, or non-finite numbers) raise a
  ValueError naming the annotation id and the file (``strict=True``, the default); ``strict=False``
  skips them with one warning.
* Boxes that stick out of the image are clipped to it (one warning with the count); a box that is
  empty after clipping is degenerate.
* A file without an ``annotations`` key is an image-info file (like COCO's test-dev): every image
  gets an empty target.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .dataset import DetectionDataset
from .io import atomic_write_json, read_image, write_image

__all__ = ["load_coco", "write_coco"]


def _fail(ann_file: Path, msg: str) -> ValueError:
    return ValueError(f"{ann_file}: {msg}")


def _read_json(ann_file: Path) -> Any:
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with open(ann_file, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise _fail(ann_file, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise _fail(ann_file, f"malformed JSON: not UTF-8 text ({exc})") from exc


def _require(entry: Any, key: str, types: type | tuple[type, ...], ann_file: Path, where: str) -> Any:
    if not isinstance(entry, dict):
        raise _fail(ann_file, f"{where} must be a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise _fail(ann_file, f"{where} is missing the required key {key!r}")
    val = entry[key]
    # bool is an int subclass in Python; an id of true/false is certainly a mistake.
    if isinstance(val, bool) or not isinstance(val, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise _fail(ann_file, f"{where} key {key!r} must be {names}, got {val!r}")
    return val


def load_coco(
    image_dir: str | os.PathLike[str],
    ann_file: str | os.PathLike[str],
    *,
    name: str | None = None,
    strict: bool = True,
) -> DetectionDataset:
    """Load a COCO-format dataset (image directory + annotation JSON) into memory.

    Args:
        image_dir: directory that ``images[*].file_name`` are relative to.
        ann_file: COCO annotation JSON.
        name: dataset name (default: the annotation file's stem).
        strict: raise on degenerate boxes (default) instead of skipping them with a warning.

    Returns:
        A :class:`DetectionDataset` with images in the JSON's order, labels 1..C in sorted category-id
        order, crowd annotations in ``ignored``.

    Raises:
        FileNotFoundError: the annotation file, the image directory or an image file is missing
            (the message names the path and the image id).
        ValueError: malformed JSON, a missing or mistyped key, duplicate ids, an annotation whose
            image_id or category_id is not listed, a degenerate box (strict) -- each naming the file,
            the entry and what is accepted.
    """
    image_dir = Path(image_dir)
    ann_file = Path(ann_file)
    data = _read_json(ann_file)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image directory not found: {image_dir} (for annotation file {ann_file})")
    anns_raw = _check_top_level(data, ann_file)
    categories, cat_to_label = _read_categories(data["categories"], ann_file)
    img_entries, img_index = _read_images(data["images"], ann_file)
    per_image, skipped = _group_annotations(anns_raw, img_index, cat_to_label, ann_file, strict)
    if skipped:
        warnings.warn(f"{ann_file}: skipped {len(skipped)} annotations with degenerate boxes "
                      f"(first annotation id {skipped[0]})", stacklevel=2)
    images: list[torch.Tensor] = []
    targets: list[dict[str, torch.Tensor]] = []
    ignored: list[dict[str, torch.Tensor]] = []
    areas: list[torch.Tensor] = []
    n_clipped = 0
    for k, im in enumerate(img_entries):
        img = _read_entry_image(im, k, image_dir, ann_file)
        target, ign, area, clipped = _image_targets(per_image[k], im["id"], img, ann_file, strict)
        images.append(img)
        targets.append(target)
        ignored.append(ign)
        areas.append(area)
        n_clipped += clipped
    if n_clipped:
        warnings.warn(f"{ann_file}: clipped {n_clipped} boxes that extended beyond their image", stacklevel=2)

    return DetectionDataset(
        images,
        targets,
        categories=categories,
        image_ids=[im["id"] for im in img_entries],
        file_names=[im["file_name"] for im in img_entries],
        label_to_category_id={lab: cid for cid, lab in cat_to_label.items()},
        name=name if name is not None else ann_file.stem,
        ignored=ignored,
        areas=areas,
        info={"source": "coco", "image_dir": str(image_dir), "ann_file": str(ann_file)},
    )


def _check_top_level(data: Any, ann_file: Path) -> list[Any]:
    """Check the top-level object's keys; return its annotations (none for an image-info file)."""
    if not isinstance(data, dict):
        raise _fail(ann_file, f"top level must be a JSON object with keys 'images', 'annotations', 'categories', "
                              f"got {type(data).__name__}")
    for key in ("images", "categories"):
        if key not in data:
            raise _fail(ann_file, f"missing the required top-level key {key!r} "
                                  f"(COCO needs 'images', 'annotations', 'categories')")
        if not isinstance(data[key], list):
            raise _fail(ann_file, f"top-level key {key!r} must be a list, got {type(data[key]).__name__}")
    anns_raw = data.get("annotations", [])
    if not isinstance(anns_raw, list):
        raise _fail(ann_file, f"top-level key 'annotations' must be a list, got {type(anns_raw).__name__}")
    return anns_raw


def _read_categories(entries: list[Any], ann_file: Path) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The categories in sorted id order and the map category id -> contiguous label 1..C."""
    cats: dict[int, dict[str, Any]] = {}
    for k, c in enumerate(entries):
        cid = _require(c, "id", int, ann_file, f"categories[{k}]")
        if cid in cats:
            raise _fail(ann_file, f"duplicate category id {cid} in categories[{k}]")
        cname = c.get("name", str(cid))
        cats[cid] = {"id": cid, "name": str(cname)}
    if not cats:
        raise _fail(ann_file, "'categories' is empty; at least one category is needed")
    cat_ids = sorted(cats)
    return [cats[c] for c in cat_ids], {cid: k + 1 for k, cid in enumerate(cat_ids)}


def _read_images(entries: list[Any], ann_file: Path) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The image entries (checked for an id and a file name) and the map image id -> position."""
    img_index: dict[int, int] = {}
    img_entries: list[dict[str, Any]] = []
    for k, im in enumerate(entries):
        iid = _require(im, "id", int, ann_file, f"images[{k}]")
        _require(im, "file_name", str, ann_file, f"images[{k}] (id {iid})")
        if iid in img_index:
            raise _fail(ann_file, f"duplicate image id {iid} in images[{k}]")
        img_index[iid] = k
        img_entries.append(im)
    return img_entries, img_index


#: One checked annotation: xyxy box, training label, area, crowd flag, annotation id.
_Annotation = tuple[list[float], int, float, bool, Any]


def _group_annotations(
    anns_raw: list[Any], img_index: dict[int, int], cat_to_label: dict[int, int], ann_file: Path, strict: bool
) -> tuple[list[list[_Annotation]], list[Any]]:
    """The checked annotations grouped by image position, and the ids of skipped degenerate ones."""
    per_image: list[list[_Annotation]] = [[] for _ in img_index]
    skipped: list[Any] = []
    for k, a in enumerate(anns_raw):
        ann = _read_annotation(a, k, img_index, cat_to_label, ann_file, strict)
        if ann is None:
            skipped.append(a["id"])
            continue
        per_image[img_index[a["image_id"]]].append(ann)
    return per_image, skipped


def _read_annotation(
    a: Any, k: int, img_index: dict[int, int], cat_to_label: dict[int, int], ann_file: Path, strict: bool
) -> _Annotation | None:
    """Check annotation ``k``; None for a degenerate box when not ``strict``."""
    aid = _require(a, "id", (int, str), ann_file, f"annotations[{k}]")
    where = f"annotation id {aid} (annotations[{k}])"
    iid = _require(a, "image_id", int, ann_file, where)
    cid = _require(a, "category_id", int, ann_file, where)
    bbox = _require(a, "bbox", list, ann_file, where)
    if iid not in img_index:
        raise _fail(ann_file, f"{where} has image_id {iid}, which is not listed in 'images'")
    if cid not in cat_to_label:
        raise _fail(ann_file, f"{where} has category_id {cid}, which is out of range: accepted category ids "
                              f"are those listed in 'categories': {sorted(cat_to_label)}")
    xywh = _read_bbox(bbox, where, ann_file, strict)
    if xywh is None:
        return None
    x, y, w, h = xywh
    crowd = a.get("iscrowd", 0)
    if crowd not in (0, 1, True, False):
        raise _fail(ann_file, f"{where} has iscrowd {crowd!r}; accepted: 0 or 1")
    area = a.get("area", w * h)
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area):
        raise _fail(ann_file, f"{where} has area {area!r}; expected a finite number")
    return [x, y, x + w, y + h], cat_to_label[cid], float(area), bool(crowd), aid


def _read_bbox(bbox: list[Any], where: str, ann_file: Path, strict: bool) -> tuple[float, float, float, float] | None:
    """``bbox`` [x, y, w, h] as floats; None for a degenerate box when not ``strict``."""
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise _fail(ann_file, f"{where} has bbox {bbox!r}; expected [x, y, width, height] numbers")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        problem = "non-finite numbers"
    elif w <= 0:
        problem = "width <= 0 (x2 <= x1)"
    elif h <= 0:
        problem = "height <= 0 (y2 <= y1)"
    else:
        return x, y, w, h
    if strict:
        raise _fail(ann_file, f"{where} has a degenerate bbox {bbox!r} ([x, y, w, h]): {problem}; "
                              f"boxes need w > 0 and h > 0 (pass strict=False to skip such boxes)")
    return None


def _read_entry_image(im: dict[str, Any], k: int, image_dir: Path, ann_file: Path) -> torch.Tensor:
    """The image of entry ``images[k]``, checked against its optional width and height."""
    iid = im["id"]
    path = image_dir / im["file_name"]
    img = read_image(path, context=f"image id {iid} in {ann_file}")
    H, W = int(img.shape[1]), int(img.shape[2])
    jw, jh = im.get("width"), im.get("height")
    if (jw is not None and jw != W) or (jh is not None and jh != H):
        raise _fail(ann_file, f"images[{k}] (id {iid}) says width x height = {jw} x {jh}, but the image file "
                              f"{path} is {W} x {H}")
    return img


def _image_targets(
    anns: list[_Annotation], iid: int, img: torch.Tensor, ann_file: Path, strict: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, int]:
    """One image's training target, ignored (crowd) boxes and target areas, with boxes clipped to the image.

    Returns ``(target, ignored, areas, number of clipped boxes)``.
    """
    H, W = int(img.shape[1]), int(img.shape[2])
    train_b, train_l, train_a, ign_b, ign_l = [], [], [], [], []
    n_clipped = 0
    for box, lab, area, crowd, aid in anns:
        clipped = _clip_box(box, W, H)
        if clipped != box:
            n_clipped += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                if strict:
                    raise _fail(ann_file, f"annotation id {aid} (image id {iid}) has bbox xyxy {box}, which lies "
                                          f"outside the {W} x {H} image (pass strict=False to skip such boxes)")
                continue
        if crowd:
            ign_b.append(clipped)
            ign_l.append(lab)
        else:
            train_b.append(clipped)
            train_l.append(lab)
            train_a.append(area)
    target = {"boxes": torch.tensor(train_b, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(train_l, dtype=torch.int64)}
    ign = {"boxes": torch.tensor(ign_b, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(ign_l, dtype=torch.int64)}
    return target, ign, torch.tensor(train_a, dtype=torch.float32), n_clipped


def _clip_box(box: list[float], W: int, H: int) -> list[float]:
    x1, y1, x2, y2 = box
    return [min(max(x1, 0.0), W), min(max(y1, 0.0), H), min(max(x2, 0.0), W), min(max(y2, 0.0), H)]


def write_coco(
    dataset: DetectionDataset,
    image_dir: str | os.PathLike[str],
    ann_file: str | os.PathLike[str],
    *,
    fsync: bool = True,
) -> Path:
    """Write ``dataset`` as COCO: every image to ``image_dir/file_name``, then ``ann_file``.

    Each file is written atomically (temporary sibling + rename) and the annotation file is written
    last, so it never refers to images that are not there yet. For a whole tree that appears at once,
    call this inside :func:`detgym.data.io.atomic_directory` (as :func:`write_digits` does).
    The format follows each file name's suffix (.png lossless; .jpg re-encodes).
    """
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    for img, fname in zip(dataset.images, dataset.file_names):
        write_image(image_dir / fname, img)
    return atomic_write_json(ann_file, dataset.coco_gt(), fsync=fsync)
