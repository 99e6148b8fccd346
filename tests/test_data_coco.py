"""Tests of COCO-format loading/writing, `load_dataset` and `DetectionDataset` itself."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detgym.data import (
    DetectionDataset,
    DigitsConfig,
    atomic_write_json,
    generate_digits,
    load_coco,
    load_dataset,
    write_coco,
    write_digits,
)

pytestmark = pytest.mark.usefixtures("private_digits_cache")


def _make_coco(tmp_path: Path, anns=None, cats=None, images=None, sizes=((40, 30), (20, 20))) -> tuple[Path, Path]:
    """A tiny COCO dataset: two images, sparse 0-based category ids."""
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"im{k}.png")
    data = {
        "images": images if images is not None else [
            {"id": 7, "file_name": "im0.png", "width": 40, "height": 30},
            {"id": 0, "file_name": "im1.png", "width": 20, "height": 20},
        ],
        "categories": cats if cats is not None else [{"id": 5, "name": "cat"}, {"id": 0, "name": "dog"}],
        "annotations": anns if anns is not None else [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 5], "area": 40.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 0, "bbox": [5, 5, 3, 3], "iscrowd": 0},
            {"id": 3, "image_id": 0, "category_id": 5, "bbox": [0, 0, 20, 20], "iscrowd": 1},
        ],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return img_dir, ann


def test_sparse_zero_based_category_ids_map_to_contiguous_labels(tmp_path):
    ds = load_coco(*_make_coco(tmp_path))
    assert ds.num_classes == 2
    assert ds.categories == [{"id": 0, "name": "dog"}, {"id": 5, "name": "cat"}]
    assert ds.label_to_category_id == {1: 0, 2: 5}
    assert ds.category_id_to_label == {0: 1, 5: 2}
    assert ds.image_ids == [7, 0]
    assert ds.images[0].shape == (3, 30, 40) and ds.images[0].dtype == torch.uint8
    assert ds.targets[0]["boxes"].tolist() == [[1, 2, 11, 7], [5, 5, 8, 8]]
    assert ds.targets[0]["labels"].tolist() == [2, 1]
    # The crowd annotation is not a training target but is in the ground truth.
    assert ds.targets[1]["boxes"].shape == (0, 4)
    gt = ds.coco_gt()
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["image_id"] == 0 and crowd[0]["category_id"] == 5
    assert [a["area"] for a in gt["annotations"] if a["image_id"] == 7] == [40.0, 9.0]
    # pycocotools accepts it (image id 0 included).
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    assert sorted(coco.getImgIds()) == [0, 7] and sorted(coco.getCatIds()) == [0, 5]


def test_write_coco_round_trip(tmp_path):
    ds = load_coco(*_make_coco(tmp_path))
    write_coco(ds, tmp_path / "out", tmp_path / "out.json")
    again = load_coco(tmp_path / "out", tmp_path / "out.json")
    assert all(torch.equal(a, b) for a, b in zip(ds.images, again.images))
    assert ds.coco_gt() == again.coco_gt()


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(text)
    return p


def test_malformed_json_names_file(tmp_path):
    img_dir, _ = _make_coco(tmp_path)
    bad = _write(tmp_path, '{"images": [}')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON"):
        load_coco(img_dir, bad)
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        load_coco(img_dir, _write(tmp_path, "[1, 2]"))


def test_missing_key_is_named(tmp_path):
    img_dir, _ = _make_coco(tmp_path)
    with pytest.raises(ValueError, match="'categories'"):
        load_coco(img_dir, _write(tmp_path, json.dumps({"images": [], "annotations": []})))
    with pytest.raises(ValueError, match=r"images\[0\].*'file_name'"):
        load_coco(img_dir, _write(tmp_path, json.dumps({"images": [{"id": 1}], "categories": [{"id": 1}]})))
    anns = [{"id": 4, "image_id": 7, "category_id": 5}]
    with pytest.raises(ValueError, match=r"annotation id 4.*'bbox'"):
        load_coco(*_make_coco(tmp_path, anns=anns))


def test_image_info_file_without_annotations(tmp_path):
    img_dir, ann = _make_coco(tmp_path)
    data = json.loads(ann.read_text())
    del data["annotations"]
    ds = load_coco(img_dir, _write(tmp_path, json.dumps(data)))
    assert len(ds) == 2 and all(t["boxes"].shape == (0, 4) for t in ds.targets)


def test_missing_image_file_names_path(tmp_path):
    images = [{"id": 1, "file_name": "nope.png"}]
    with pytest.raises(FileNotFoundError, match=r"nope\.png.*image id 1"):
        load_coco(*_make_coco(tmp_path, images=images, anns=[]))
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_coco(tmp_path, tmp_path / "missing.json")
    _, ann = _make_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match="image directory not found"):
        load_coco(tmp_path / "no_dir", ann)


@pytest.mark.parametrize("bbox, what", [([10, 2, -3, 5], "width <= 0"), ([1, 2, 4, 0], "height <= 0"),
                                        ([1, 2, 3], "expected"), ([1, "a", 3, 4], "expected")])
def test_bad_boxes_name_annotation_and_file(tmp_path, bbox, what):
    anns = [{"id": 42, "image_id": 7, "category_id": 5, "bbox": bbox}]
    with pytest.raises(ValueError, match=rf"ann\.json: annotation id 42.*{what}"):
        load_coco(*_make_coco(tmp_path, anns=anns))


def test_non_strict_skips_degenerate_boxes_with_warning(tmp_path):
    anns = [{"id": 42, "image_id": 7, "category_id": 5, "bbox": [10, 2, -3, 5]},
            {"id": 43, "image_id": 7, "category_id": 5, "bbox": [1, 1, 3, 5]}]
    with pytest.warns(UserWarning, match="skipped 1 annotations"):
        ds = load_coco(*_make_coco(tmp_path, anns=anns), strict=False)
    assert ds.targets[0]["boxes"].tolist() == [[1, 1, 4, 6]]


def test_out_of_image_boxes_are_clipped(tmp_path):
    anns = [{"id": 1, "image_id": 0, "category_id": 5, "bbox": [15, -2, 10, 10]}]
    with pytest.warns(UserWarning, match="clipped 1 boxes"):
        ds = load_coco(*_make_coco(tmp_path, anns=anns))
    assert ds.targets[1]["boxes"].tolist() == [[15, 0, 20, 8]]
    anns = [{"id": 1, "image_id": 0, "category_id": 5, "bbox": [30, 30, 5, 5]}]
    with pytest.raises(ValueError, match="annotation id 1 .*outside"):
        load_coco(*_make_coco(tmp_path, anns=anns))


def test_unknown_category_and_image_ids(tmp_path):
    anns = [{"id": 9, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2]}]
    with pytest.raises(ValueError, match=r"annotation id 9.*category_id 3.*accepted category ids.*\[0, 5\]"):
        load_coco(*_make_coco(tmp_path, anns=anns))
    anns = [{"id": 9, "image_id": 99, "category_id": 5, "bbox": [1, 1, 2, 2]}]
    with pytest.raises(ValueError, match="image_id 99"):
        load_coco(*_make_coco(tmp_path, anns=anns))
    images = [{"id": 1, "file_name": "im0.png"}, {"id": 1, "file_name": "im1.png"}]
    with pytest.raises(ValueError, match="duplicate image id 1"):
        load_coco(*_make_coco(tmp_path, images=images, anns=[]))


def test_size_mismatch_is_reported(tmp_path):
    images = [{"id": 1, "file_name": "im0.png", "width": 41, "height": 30}]
    with pytest.raises(ValueError, match=r"41 x 30.*40 x 30"):
        load_coco(*_make_coco(tmp_path, images=images, anns=[]))


def test_load_dataset_dispatch_and_errors(tmp_path):
    tiny = DigitsConfig(train_size=4, val_size=3, test_size=2)
    out = write_digits(tmp_path / "set", seed=0, config=tiny)
    assert len(load_dataset(out, "val")) == 3
    assert len(load_dataset(str(out), "test")) == 2
    assert load_dataset(out, "train").name == "set"
    d = load_dataset("digits", "val", config=tiny)
    assert d.name == "digits" and len(d) == 3
    with pytest.raises(ValueError, match=r"unknown dataset name 'svhn'.*accepted: 'digits'"):
        load_dataset("svhn")
    with pytest.raises(FileNotFoundError, match="dataset path not found"):
        load_dataset(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files for split 'train'"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset(out, "dev")
    # Roboflow-style layout.
    rf = tmp_path / "rf"
    (rf / "valid").mkdir(parents=True)
    img_dir, ann = _make_coco(tmp_path)
    for p in img_dir.iterdir():
        (rf / "valid" / p.name).write_bytes(p.read_bytes())
    (rf / "valid" / "_annotations.coco.json").write_text(ann.read_text())
    assert len(load_dataset(rf, "val")) == 2


# ---------------------------------------------------------------------------------- DetectionDataset
def _ds() -> DetectionDataset:
    return generate_digits("train", seed=0, config=DigitsConfig(train_size=6, val_size=0, test_size=0))


def test_batch_subset_getitem():
    ds = _ds()
    imgs, tgts = ds.batch([2, 0])
    assert imgs[0].dtype == torch.float32 and imgs[0].shape == ds.images[2].shape
    assert torch.allclose(imgs[0] * 255, ds.images[2].float())
    assert 0.0 <= float(imgs[1].min()) and float(imgs[1].max()) <= 1.0
    assert torch.equal(tgts[1]["boxes"], ds.targets[0]["boxes"])
    tgts[0]["extra"] = 1
    assert "extra" not in ds.targets[2]
    imgs, _ = ds.batch([1], device="cpu")
    assert imgs[0].device.type == "cpu"
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.image_ids == [ds.image_ids[3], ds.image_ids[1]]
    assert [i["id"] for i in sub.coco_gt()["images"]] == sub.image_ids
    img, tgt = ds[4]
    assert img.dtype == torch.uint8 and tgt["labels"].dtype == torch.int64
    with pytest.raises(IndexError):
        ds.subset([6])
    cp = ds.copy()
    assert cp.images[0] is ds.images[0] and cp.targets[0] is not ds.targets[0]
    pseudo = ds.with_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 6)
    assert all(t["boxes"].shape == (0, 4) for t in pseudo.targets)


def test_dataset_validates_boxes_and_labels():
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    ok = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([2])}
    DetectionDataset([img], [ok], categories=cats)
    with pytest.raises(ValueError, match=r"x2 < x1"):
        DetectionDataset([img], [{"boxes": torch.tensor([[5.0, 0, 4, 4]]), "labels": torch.tensor([1])}],
                         categories=cats)
    with pytest.raises(ValueError, match=r"labels.*out of range.*1\.\.2"):
        DetectionDataset([img], [{"boxes": ok["boxes"], "labels": torch.tensor([3])}], categories=cats)
    with pytest.raises(ValueError, match=r"labels.*out of range"):
        DetectionDataset([img], [{"boxes": ok["boxes"], "labels": torch.tensor([0])}], categories=cats)
    with pytest.raises(ValueError, match="uint8"):
        DetectionDataset([img.float()], [ok], categories=cats)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        DetectionDataset([img], [{"boxes": torch.zeros(1, 3), "labels": torch.tensor([1])}], categories=cats)
    with pytest.raises(ValueError, match="targets has 2 entries"):
        DetectionDataset([img], [ok, ok], categories=cats)


def test_atomic_write_json_leaves_no_temp(tmp_path):
    p = atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "y.json", {"a": float("nan")})
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.json"]
