"""Tests of the Pascal VOC loader on a tiny VOC tree built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detgym.data import VOC_CLASSES, load_dataset, load_voc


def _obj(name: str, box: tuple[int, int, int, int], difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _voc(tmp_path: Path, objects: dict[str, list[str]] | None = None, split_ids=("000001", "000002")) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / d).mkdir(parents=True, exist_ok=True)
    objects = objects if objects is not None else {
        "000001": [_obj("dog", (10, 20, 30, 40)), _obj("person", (1, 1, 50, 60), difficult=1)],
        "000002": [_obj("car", (5, 5, 5, 9))],
    }
    rng = np.random.default_rng(0)
    for vid, objs in objects.items():
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{vid}.jpg")
        (root / "Annotations" / f"{vid}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{vid}.jpg</filename>"
            f"<size><width>80</width><height>64</height><depth>3</depth></size>{''.join(objs)}</annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(split_ids) + "\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text(split_ids[0] + "\n")
    return root


def test_load_voc(tmp_path):
    root = _voc(tmp_path)
    ds = load_voc(root, "trainval")
    assert len(ds) == 2 and ds.num_classes == 20
    assert ds.class_names == list(VOC_CLASSES)
    assert ds.images[0].shape == (3, 64, 80) and ds.images[0].dtype == torch.uint8
    dog = VOC_CLASSES.index("dog") + 1
    # 1-based inclusive VOC pixels -> 0-based continuous xyxy.
    assert ds.targets[0]["boxes"].tolist() == [[9, 19, 30, 40]]
    assert ds.targets[0]["labels"].tolist() == [dog]
    # Difficult objects: not trained on, ignored (iscrowd=1) in the ground truth.
    assert ds.ignored[0]["labels"].tolist() == [VOC_CLASSES.index("person") + 1]
    gt = ds.coco_gt()
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1, 0]
    # A one-pixel-wide VOC box (xmin == xmax) has width 1.
    assert ds.targets[1]["boxes"].tolist() == [[4, 4, 5, 9]]
    assert ds.file_names == ["000001.jpg", "000002.jpg"]
    # The VOCdevkit directory works too, and through load_dataset.
    assert len(load_voc(tmp_path / "VOCdevkit", "val")) == 1
    assert len(load_dataset(tmp_path / "VOCdevkit", "val")) == 1
    assert len(load_dataset(root, "valid")) == 1


def test_voc_errors(tmp_path):
    root = _voc(tmp_path, objects={"000001": [_obj("unicorn", (1, 1, 5, 5))]}, split_ids=("000001",))
    with pytest.raises(ValueError, match=r"000001\.xml.*'unicorn'.*accepted classes.*aeroplane"):
        load_voc(root, "trainval")
    root = _voc(tmp_path / "b", objects={"000001": [_obj("cat", (9, 1, 5, 5))]}, split_ids=("000001",))
    with pytest.raises(ValueError, match=r"000001\.xml.*x2 < x1"):
        load_voc(root, "trainval")
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*available.*trainval"):
        load_voc(root, "test")
    with pytest.raises(FileNotFoundError, match="no Pascal VOC tree"):
        load_voc(tmp_path / "nowhere")
    root = _voc(tmp_path / "c", objects={"000001": [_obj("cat", (1, 1, 5, 5))]}, split_ids=("000001", "000009"))
    with pytest.raises(FileNotFoundError, match=r"000009\.xml"):
        load_voc(root, "trainval")
    (root / "JPEGImages" / "000001.jpg").unlink()
    (root / "ImageSets" / "Main" / "one.txt").write_text("000001\n")
    with pytest.raises(FileNotFoundError, match=r"000001\.jpg"):
        load_voc(root, "one")
    root = _voc(tmp_path / "d", objects={"000001": []}, split_ids=("000001",))
    (root / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="malformed XML"):
        load_voc(root, "trainval")
    root = _voc(tmp_path / "e", objects={"000001": ["<object><name>cat</name></object>"]}, split_ids=("000001",))
    with pytest.raises(ValueError, match="bndbox"):
        load_voc(root, "trainval")
