"""Pascal VOC datasets from local files (nothing is downloaded).

Expected layout (VOC2007 / VOC2012 as distributed): ``root/Annotations/<id>.xml``,
``root/ImageSets/Main/<split>.txt`` (one image id per line) and ``root/JPEGImages/<file>``.
``root`` may also be a ``VOCdevkit`` directory that holds exactly one ``VOC*`` year directory.

Decisions:

* Categories are the 20 VOC classes in their usual order, COCO ids 1..20 = training labels 1..20
  (``classes=`` replaces the list for VOC-format sets with other classes).
* Objects marked ``difficult`` are kept out of the training targets and written to ``coco_gt()`` with
  ``iscrowd=1``: pycocotools then ignores detections matched to them, as VOC's own evaluation ignores
  difficult objects.
* VOC pixel coordinates are 1-based and inclusive; boxes become 0-based continuous xyxy:
  ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (a one-pixel box has width 1).
* Image ids are 1..N in the order of the split file; file names are relative to ``JPEGImages``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import torch

from .dataset import DetectionDataset
from .io import read_image

__all__ = ["VOC_CLASSES", "load_voc", "find_voc_root"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def find_voc_root(root: str | os.PathLike[str]) -> Path | None:
    """The VOC year directory under ``root`` (``root`` itself or its single ``VOC*`` child), or None."""
    root = Path(root)
    if (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir():
        return root
    if root.is_dir():
        years = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.upper().startswith("VOC")
                 and (p / "Annotations").is_dir()]
        if len(years) == 1:
            return years[0]
    return None


def _text(node: ET.Element, tag: str, xml_file: Path, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{xml_file}: {where} is missing the <{tag}> element")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_file: Path, where: str) -> float:
    txt = _text(node, tag, xml_file, where)
    try:
        return float(txt)
    except ValueError:
        raise ValueError(f"{xml_file}: {where} <{tag}> = {txt!r} is not a number") from None


def load_voc(
    root: str | os.PathLike[str],
    split: str = "trainval",
    *,
    classes: Sequence[str] = VOC_CLASSES,
    name: str | None = None,
) -> DetectionDataset:
    """Load a Pascal VOC split into memory.

    Args:
        root: VOC year directory (holding Annotations/, ImageSets/Main/, JPEGImages/) or a VOCdevkit
            directory with exactly one year directory.
        split: name of the image-set file ``ImageSets/Main/<split>.txt`` ("train", "val", "trainval",
            "test"; "valid" means "val").
        classes: class names; their order gives labels 1..C.
        name: dataset name (default ``"voc-<split>"``).

    Raises:
        FileNotFoundError: the layout, the split file, an annotation XML or an image is missing
            (the message names the path).
        ValueError: malformed XML, a missing tag, an unknown class name (naming the accepted ones),
            a box with xmax < xmin or ymax < ymin (naming the file and the object).
    """
    vroot = _voc_root(root)
    split = {"valid": "val", "validation": "val"}.get(split, split)
    ids = _read_split(vroot, split)
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be a non-empty list of unique names, got {classes}")
    cls_to_label = {c: k + 1 for k, c in enumerate(classes)}

    images, targets, ignored, file_names = [], [], [], []
    for vid in ids:
        xml_file, ann = _read_annotation(vroot, vid, split)
        fname = _image_file_name(vroot, vid, ann)
        img = read_image(vroot / "JPEGImages" / fname, context=f"referenced by {xml_file}")
        target, ign = _image_targets(ann, img, cls_to_label, xml_file)
        images.append(img)
        targets.append(target)
        ignored.append(ign)
        file_names.append(fname)

    return DetectionDataset(
        images,
        targets,
        categories=[{"id": k + 1, "name": c} for k, c in enumerate(classes)],
        image_ids=list(range(1, len(ids) + 1)),
        file_names=file_names,
        name=name if name is not None else f"voc-{split}",
        ignored=ignored,
        info={"source": "voc", "root": str(vroot), "split": split, "voc_ids": ids},
    )


def _voc_root(root: str | os.PathLike[str]) -> Path:
    """The VOC year directory under ``root``; FileNotFoundError naming ``root`` when there is none."""
    given = Path(root)
    vroot = find_voc_root(given)
    if vroot is None:
        raise FileNotFoundError(
            f"no Pascal VOC tree at {given}: expected Annotations/, ImageSets/Main/ and JPEGImages/ in it "
            f"(or in its single VOC* subdirectory)"
        )
    return vroot


def _set_file(vroot: Path, split: str) -> Path:
    return vroot / "ImageSets" / "Main" / f"{split}.txt"


def _read_split(vroot: Path, split: str) -> list[str]:
    """The image ids listed in the split file (the first word of each non-empty line)."""
    set_file = _set_file(vroot, split)
    if not set_file.is_file():
        avail = sorted(p.stem for p in (vroot / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"VOC split file not found: {set_file}; splits available here: {avail}")
    return [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]


def _read_annotation(vroot: Path, vid: str, split: str) -> tuple[Path, ET.Element]:
    """The annotation XML of image ``vid``: its path and its parsed root element."""
    xml_file = vroot / "Annotations" / f"{vid}.xml"
    if not xml_file.is_file():
        raise FileNotFoundError(
            f"VOC annotation file not found: {xml_file} (image id {vid!r} in {_set_file(vroot, split)})"
        )
    try:
        return xml_file, ET.parse(xml_file).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_file}: malformed XML: {exc}") from exc


def _image_file_name(vroot: Path, vid: str, ann: ET.Element) -> str:
    """The image's file name in JPEGImages/: the annotation's <filename>, else ``<vid>.jpg``."""
    fname = ann.findtext("filename")
    fname = fname.strip() if fname and fname.strip() else f"{vid}.jpg"
    if not (vroot / "JPEGImages" / fname).is_file() and (vroot / "JPEGImages" / f"{vid}.jpg").is_file():
        fname = f"{vid}.jpg"  # some VOC-format exports write a stale <filename>
    return fname


def _image_targets(
    ann: ET.Element, img: torch.Tensor, cls_to_label: dict[str, int], xml_file: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One image's training target and its ignored (difficult) objects."""
    H, W = int(img.shape[1]), int(img.shape[2])
    tb, tl, ib, il = [], [], [], []
    for k, obj in enumerate(ann.findall("object")):
        box, label = _read_object(obj, f"<object> #{k}", W, H, cls_to_label, xml_file)
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false", "False")
        (ib if difficult else tb).append(box)
        (il if difficult else tl).append(label)
    target = {"boxes": torch.tensor(tb, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(tl, dtype=torch.int64)}
    ignored = {"boxes": torch.tensor(ib, dtype=torch.float32).reshape(-1, 4),
               "labels": torch.tensor(il, dtype=torch.int64)}
    return target, ignored


def _read_object(
    obj: ET.Element, where: str, W: int, H: int, cls_to_label: dict[str, int], xml_file: Path
) -> tuple[list[float], int]:
    """One <object>'s box (0-based continuous xyxy, clipped to the W x H image) and training label."""
    cname = _text(obj, "name", xml_file, where)
    if cname not in cls_to_label:
        raise ValueError(f"{xml_file}: {where} has class {cname!r}, which is out of range; "
                         f"accepted classes: {list(cls_to_label)}")
    bnd = obj.find("bndbox")
    if bnd is None:
        raise ValueError(f"{xml_file}: {where} ({cname}) is missing the <bndbox> element")
    xmin, ymin, xmax, ymax = (_number(bnd, t, xml_file, f"{where} ({cname}) <bndbox>")
                              for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise ValueError(f"{xml_file}: {where} ({cname}) has bndbox xmin={xmin}, ymin={ymin}, xmax={xmax}, "
                         f"ymax={ymax}: x2 < x1 or y2 < y1; VOC boxes need xmin <= xmax and ymin <= ymax")
    box = [max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0), min(xmax, float(W)), min(ymax, float(H))]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"{xml_file}: {where} ({cname}) bndbox lies outside the {W} x {H} image")
    return box, cls_to_label[cname]
