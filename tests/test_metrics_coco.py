"""detgym.metrics.coco_evaluate against pycocotools (the reference) and its bad inputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from detgym.metrics import STAT_NAMES, coco_evaluate
from detgym.metrics.reference import pycocotools_stats

# Sizes on and around the small/medium/large edges (32**2, 96**2; both ends inclusive).
_SIDES = [31.0, 32.0, 33.0, 95.0, 96.0, 97.0, 10.0, 50.0, 150.0]


def _dataset(rng: np.random.Generator, n_img: int = 30, n_cat: int = 4, first_id: int = 1):
    """A random COCO GT + results pair: integer boxes (IoU and score ties), crowd GTs, areas on the
    range edges, GT areas that differ from w * h, images without GT or without detections, a category
    without GT, detections of wrong classes and of nothing, results in shuffled order."""
    images = [{"id": int(i), "width": 200, "height": 200} for i in rng.permutation(np.arange(100, 100 + n_img))]
    cats = [{"id": c, "name": str(c)} for c in range(1, n_cat + 1)] + [{"id": 99, "name": "no gt"}]
    anns, dets = [], []
    aid = first_id
    for im in images:
        for _ in range(int(rng.integers(0, 7))):
            w = _SIDES[rng.integers(len(_SIDES))]
            h = w if rng.random() < 0.5 else float(rng.integers(5, 150))
            x, y = float(rng.integers(0, 100)), float(rng.integers(0, 100))
            c = int(rng.integers(1, n_cat + 1))
            area = w * h if rng.random() < 0.8 else _SIDES[rng.integers(len(_SIDES))] ** 2
            anns.append({"id": aid, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": int(rng.random() < 0.1)})
            aid += 1
            for _ in range(int(rng.integers(0, 4))):
                b = [x + rng.integers(-4, 5), y + rng.integers(-4, 5), max(0, w + rng.integers(-6, 7)),
                     max(0, h + rng.integers(-6, 7))]
                cd = c if rng.random() < 0.85 else int(rng.integers(1, n_cat + 1))
                dets.append({"image_id": im["id"], "category_id": cd, "bbox": [float(v) for v in b],
                             "score": float(rng.integers(0, 10)) / 10})
        for _ in range(int(rng.integers(0, 5))):
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, n_cat + 2)) % (n_cat + 1) or 99,
                         "bbox": [float(rng.integers(0, 150)), float(rng.integers(0, 150)),
                                  float(rng.integers(1, 120)), float(rng.integers(1, 120))],
                         "score": float(rng.integers(0, 10)) / 10})
    rng.shuffle(dets)
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _values(stats: dict) -> np.ndarray:
    assert list(stats) == list(STAT_NAMES)
    return np.array(list(stats.values()))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_datasets_equal_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        gt, dets = _dataset(rng)
        # Bit-exact: same IoUs, same precision values, same np.mean over the same array.
        np.testing.assert_array_equal(_values(coco_evaluate(gt, dets)), pycocotools_stats(gt, dets))


def test_more_than_100_detections_per_image_and_category():
    rng = np.random.default_rng(7)
    gt, dets = _dataset(rng, n_img=8)
    im = gt["images"][0]["id"]
    for _ in range(160):
        dets.append({"image_id": im, "category_id": 1, "score": float(rng.integers(0, 10)) / 10,
                     "bbox": [float(rng.integers(0, 60)), float(rng.integers(0, 60)), 40.0, 40.0]})
    np.testing.assert_allclose(_values(coco_evaluate(gt, dets)), pycocotools_stats(gt, dets), rtol=0, atol=1e-12)


def test_perfect_detections_score_one():
    rng = np.random.default_rng(8)
    gt, _ = _dataset(rng, n_img=10)
    for a in gt["annotations"]:
        a["iscrowd"] = 0
        a["area"] = a["bbox"][2] * a["bbox"][3]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
            for a in gt["annotations"]]
    stats = coco_evaluate(gt, dets)
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert stats[name] == pytest.approx(1.0, abs=1e-12)


def test_ids_starting_at_zero_score_like_ids_starting_at_one():
    rng = np.random.default_rng(9)
    gt1, dets = _dataset(rng, n_img=12, first_id=1)
    gt0 = copy.deepcopy(gt1)
    for a in gt0["annotations"]:
        a["id"] -= 1
    assert min(a["id"] for a in gt0["annotations"]) == 0
    ref = pycocotools_stats(gt1, dets)
    np.testing.assert_allclose(_values(coco_evaluate(gt0, dets)), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_values(coco_evaluate(gt1, dets)), ref, rtol=0, atol=1e-12)


def test_id_zero_gt_is_matched():
    # pycocotools stores the matched GT id and reads 0 as "unmatched": with id 0 its AP here would be 0.
    gt = {"images": [{"id": 0}], "categories": [{"id": 1}],
          "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    dets = [{"image_id": 0, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    assert coco_evaluate(gt, dets)["AP"] == pytest.approx(1.0)


def test_empty_detections_give_zeros_not_a_crash():
    rng = np.random.default_rng(10)
    gt, _ = _dataset(rng, n_img=6)
    stats = coco_evaluate(gt, [])
    np.testing.assert_allclose(_values(stats), pycocotools_stats(gt, []), rtol=0, atol=0)
    assert all(v == 0.0 for v in stats.values())  # every area range has GT in this dataset
    # A stat without any GT to measure is -1, as in pycocotools (here: no small or medium objects).
    big = {"images": [{"id": 1}], "categories": [{"id": 1}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200], "iscrowd": 0}]}
    stats = coco_evaluate(big, [])
    assert stats["AP"] == 0.0 and stats["APl"] == 0.0 and stats["APs"] == -1.0 and stats["ARm"] == -1.0


def test_accepts_json_paths_and_coco_objects(tmp_path):
    from pycocotools.coco import COCO

    rng = np.random.default_rng(12)
    gt, dets = _dataset(rng, n_img=8)
    ref = _values(coco_evaluate(gt, dets))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    np.testing.assert_array_equal(_values(coco_evaluate(tmp_path / "gt.json", str(tmp_path / "dt.json"))), ref)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    np.testing.assert_array_equal(_values(coco_evaluate(coco, dets)), ref)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(13)
    gt, dets = _dataset(rng, n_img=5)
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    coco_evaluate(gt, dets)
    assert gt == gt0 and dets == dets0


def test_missing_area_and_iscrowd_default():
    rng = np.random.default_rng(14)
    gt, dets = _dataset(rng, n_img=10)
    for a in gt["annotations"]:
        a["iscrowd"] = 0
        a["area"] = a["bbox"][2] * a["bbox"][3]
    ref = pycocotools_stats(gt, dets)
    for a in gt["annotations"]:
        del a["iscrowd"], a["area"]
    np.testing.assert_allclose(_values(coco_evaluate(gt, dets)), ref, rtol=0, atol=1e-12)


def test_numba_disabled_gives_the_same(monkeypatch):
    rng = np.random.default_rng(15)
    gt, dets = _dataset(rng, n_img=10)
    a = _values(coco_evaluate(gt, dets))
    monkeypatch.setenv("DETGYM_NO_NUMBA", "1")
    np.testing.assert_array_equal(_values(coco_evaluate(gt, dets)), a)


def _small():
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    return gt, dets


def test_bad_detections():
    gt, dets = _small()
    for change, match in [({"category_id": 5}, "category_id=5"),
                          ({"image_id": 9}, "image_id=9"),
                          ({"bbox": [0, 0, float("nan"), 1]}, "NaN or inf"),
                          ({"bbox": [0, 0, -1, 1]}, "negative width"),
                          ({"bbox": [0, 0, 1]}, "4 numbers"),
                          ({"score": float("nan")}, "score NaN")]:
        bad = [dict(dets[0], **change)]
        with pytest.raises(ValueError, match=match):
            coco_evaluate(gt, bad)
    for key in ("image_id", "category_id", "bbox", "score"):
        bad = [{k: v for k, v in dets[0].items() if k != key}]
        with pytest.raises(ValueError, match=rf"detections\[0\] has no '{key}' key"):
            coco_evaluate(gt, bad)
    with pytest.raises(ValueError, match="list of COCO result dicts"):
        coco_evaluate(gt, {"image_id": 1})


def test_bad_ground_truth(tmp_path):
    gt, dets = _small()
    for key in ("images", "annotations", "categories"):
        bad = {k: v for k, v in gt.items() if k != key}
        path = tmp_path / f"no_{key}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=rf"no_{key}\.json: missing key '{key}'"):
            coco_evaluate(path, dets)
    bad = copy.deepcopy(gt)
    del bad["annotations"][0]["bbox"]
    path = tmp_path / "no_bbox.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"no_bbox\.json: annotations\[0\] has no 'bbox' key"):
        coco_evaluate(path, dets)
    bad = copy.deepcopy(gt)
    bad["annotations"][0]["category_id"] = 3
    with pytest.raises(ValueError, match="category_id=3"):
        coco_evaluate(bad, dets)
    bad = copy.deepcopy(gt)
    bad["annotations"][0]["bbox"] = [0, 0, 10, -10]
    with pytest.raises(ValueError, match="negative width or height"):
        coco_evaluate(bad, dets)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_evaluate(tmp_path / "missing.json", dets)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        coco_evaluate(tmp_path / "broken.json", dets)
    with pytest.raises(ValueError, match="gt must be"):
        coco_evaluate(42, dets)
