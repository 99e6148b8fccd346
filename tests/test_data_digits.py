"""Tests of the synthetic digits set: determinism, exact boxes, size spread, caching, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch

from detgym.data import (
    DIGIT_CATEGORIES,
    DigitsConfig,
    clear_memory_cache,
    digits_cache_dir,
    digits_dataset,
    generate_digits,
    load_coco,
    render_digits_image,
    write_digits,
)
from detgym.data.digits import POOL_FIELDS, pool_plan

TINY = DigitsConfig(train_size=20, val_size=6, test_size=6)

pytestmark = pytest.mark.usefixtures("private_digits_cache")


def _same(a, b) -> bool:
    return (
        len(a) == len(b)
        and all(torch.equal(x, y) for x, y in zip(a.images, b.images))
        and all(torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])
                for x, y in zip(a.targets, b.targets))
    )


def test_same_seed_same_output_different_seed_different():
    a = generate_digits("train", seed=3, config=TINY)
    b = generate_digits("train", seed=3, config=TINY)
    c = generate_digits("train", seed=4, config=TINY)
    assert _same(a, b)
    assert a.coco_gt() == b.coco_gt()
    assert not any(torch.equal(x, y) for x, y in zip(a.images, c.images))
    # Splits are different images, and a smaller split is a prefix of a larger one.
    v = generate_digits("val", seed=3, config=TINY)
    assert not torch.equal(a.images[0], v.images[0])
    big = generate_digits("train", seed=3, config=DigitsConfig(train_size=25, val_size=0, test_size=0))
    assert _same(a, big.subset(range(20)))


def test_written_files_are_byte_identical(tmp_path):
    p1 = write_digits(tmp_path / "a", seed=1, config=TINY)
    p2 = write_digits(tmp_path / "b", seed=1, config=TINY)
    files1 = sorted(p.relative_to(p1) for p in p1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(p2) for p in p2.rglob("*") if p.is_file())
    assert files1 == files2
    assert len([f for f in files1 if f.suffix == ".png"]) == 32
    for f in files1:
        assert (p1 / f).read_bytes() == (p2 / f).read_bytes(), f


def test_boxes_inside_image_and_tight_around_ink():
    cfg = DigitsConfig()
    for i in range(40):
        r = render_digits_image(np.random.default_rng(i), cfg, return_masks=True)
        S = cfg.image_size
        assert r["image"].shape == (S, S, 3) and r["image"].dtype == np.uint8
        boxes, masks = r["boxes"], r["masks"]
        assert 1 <= len(boxes) <= 5 and len(r["digits"]) == len(boxes)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= S).all() and (boxes[:, 3] <= S).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        # Left to right, not overlapping.
        assert (boxes[1:, 0] >= boxes[:-1, 2]).all()
        for (x1, y1, x2, y2), m in zip(boxes.astype(int), masks):
            ys, xs = np.nonzero(m)
            # Every ink pixel is inside the box and each border row/column of the box holds ink.
            assert ys.min() == y1 and ys.max() == y2 - 1 and xs.min() == x1 and xs.max() == x2 - 1


def test_ink_is_visible_where_the_box_is():
    # Without blur/noise/clutter, pixels under the ink differ from the pixels just outside the box.
    cfg = DigitsConfig(blur_prob=0, noise_std_range=(0, 0), clutter=0, clutter_letters=0, texture_prob=0,
                       background_variation=0, contrast_range=(0.5, 0.9))
    r = render_digits_image(np.random.default_rng(0), cfg, return_masks=True)
    img = r["image"].astype(int)
    for m in r["masks"]:
        inside = img[m].mean(axis=0)
        bg = img[~r["masks"].any(axis=0)].mean(axis=0)
        assert np.abs(inside - bg).sum() > 50


def test_heights_span_small_and_large_and_labels():
    ds = generate_digits("train", seed=0, config=DigitsConfig(train_size=300, val_size=0, test_size=0))
    h = torch.cat([t["boxes"][:, 3] - t["boxes"][:, 1] for t in ds.targets])
    assert (h < 16).float().mean() > 0.1
    assert (h > 64).sum() >= 10
    assert h.min() >= 6 and h.max() <= 106
    labels = torch.cat([t["labels"] for t in ds.targets])
    assert labels.min() >= 1 and labels.max() <= 10
    assert set(labels.tolist()) == set(range(1, 11))
    counts = {len(t["labels"]) for t in ds.targets}
    assert counts == {1, 2, 3, 4, 5}
    assert ds.categories == DIGIT_CATEGORIES
    assert ds.label_to_category_id == {k: k for k in range(1, 11)}
    assert ds.num_classes == 10
    # Digit strings read the labels left to right.
    s = ds.digit_strings()
    t0 = ds.targets[0]
    order = torch.argsort(t0["boxes"][:, 0])
    assert s[0] == "".join(str(int(t0["labels"][j]) - 1) for j in order)
    assert all(1 <= len(x) <= 5 and x.isdigit() for x in s)


def test_image_size_is_configurable():
    cfg = DigitsConfig(train_size=5, val_size=0, test_size=0, image_size=64, max_digit_height=40)
    ds = generate_digits("train", seed=0, config=cfg)
    assert all(img.shape == (3, 64, 64) for img in ds.images)
    assert all(float(t["boxes"].max()) <= 64 for t in ds.targets)


def test_round_trip_write_then_load_coco(tmp_path):
    out = write_digits(tmp_path / "set", seed=5, config=TINY)
    for split, d in (("train", "train"), ("val", "valid"), ("test", "test")):
        loaded = load_coco(out / d, out / f"{d}.json")
        gen = digits_dataset(split, seed=5, config=TINY)
        assert _same(loaded, gen)
        assert loaded.image_ids == gen.image_ids and loaded.file_names == gen.file_names
        assert loaded.coco_gt() == gen.coco_gt()
    gt = json.loads((out / "train.json").read_text())
    assert gt["categories"] == [{"id": k + 1, "name": str(k)} for k in range(10)]
    assert gt["annotations"][0]["id"] == 1 and gt["annotations"][0]["iscrowd"] == 0
    assert set(gt["images"][0]) == {"id", "file_name", "width", "height"}


def test_cache_written_once_and_reused(tmp_path):
    a = digits_dataset("val", seed=2, config=TINY)
    root = digits_cache_dir(seed=2, config=TINY)
    assert root.parent == tmp_path / "cache"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train", "valid", "test", "train.json", "valid.json", "test.json", "detgym_digits.json"])
    # No temporary leftovers beside the cache.
    assert [p.name for p in root.parent.iterdir()] == [root.name]
    mtime = (root / "valid.json").stat().st_mtime_ns
    clear_memory_cache()
    b = digits_dataset("val", seed=2, config=TINY)  # loaded from disk
    c = digits_dataset("val", seed=2, config=TINY)  # from memory
    assert _same(a, b) and _same(b, c)
    assert (root / "valid.json").stat().st_mtime_ns == mtime
    assert c.images[0] is b.images[0] and c.targets is not b.targets
    # A different seed or config gets its own directory.
    assert digits_cache_dir(seed=3, config=TINY) != root
    assert digits_cache_dir(seed=2, config=DigitsConfig(train_size=21, val_size=6, test_size=6)) != root
    # cache_dir overrides the environment.
    digits_dataset("test", seed=2, config=TINY, cache_dir=tmp_path / "other")
    assert (tmp_path / "other").is_dir()


def test_crash_during_build_leaves_nothing(tmp_path, monkeypatch):
    import detgym.data.digits as digits_mod

    calls = {"n": 0}
    real = digits_mod.write_coco

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(digits_mod, "write_coco", failing)
    with pytest.raises(OSError):
        write_digits(tmp_path / "out", seed=0, config=TINY)
    assert list(tmp_path.iterdir()) == []
    # The cache path warns and falls back to memory; no half-written cache directory appears.
    with pytest.warns(UserWarning, match="could not write the cache"):
        calls["n"] = 0
        ds = digits_dataset("train", seed=0, config=TINY)
    assert len(ds) == 20
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_concurrent_builders_share_one_cache():
    results, errors = [], []

    def build():
        try:
            results.append(digits_dataset("train", seed=9, config=TINY))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # Two builders racing on the same directory (memo cleared between them has no effect on the race).
    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _same(results[0], results[1])
    root = digits_cache_dir(seed=9, config=TINY)
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_write_digits_refuses_to_clobber(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a digits set"):
        write_digits(other, config=TINY)
    out = write_digits(tmp_path / "d", seed=0, config=TINY)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_digits(out, seed=1, config=TINY)
    write_digits(out, seed=1, config=TINY, overwrite=True)
    meta = json.loads((out / "detgym_digits.json").read_text())
    assert meta["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "mine"]
    # An existing empty directory is fine.
    (tmp_path / "empty").mkdir()
    write_digits(tmp_path / "empty", config=TINY)
    assert (tmp_path / "empty" / "test.json").is_file()


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"train_size": -1}, "train_size"),
        ({"image_size": 8}, "image_size"),
        ({"max_digit_height": 200}, "max_digit_height"),
        ({"min_digit_height": 50, "max_digit_height": 20}, "min_digit_height"),
        ({"min_digits": 0}, "min_digits"),
        ({"contrast_range": (0.5, 0.2)}, "contrast_range"),
        ({"contrast_range": (0.0, 0.5)}, "contrast_range"),
        ({"blur_prob": 1.5}, "blur_prob"),
        ({"clutter": -1}, "clutter"),
        ({"class_frequencies": (0.5, 0.5)}, "class_frequencies"),
        ({"class_frequencies": (0.2,) * 10}, "class_frequencies"),
        ({"class_frequencies": (-0.1, 0.3) + (0.1,) * 8}, "class_frequencies"),
        ({"class_frequencies": {"7": 0.5, "x": 0.5}}, "class_frequencies"),
        ({"class_frequencies": {10: 1.0}}, "class_frequencies"),
        ({"duplicate_fraction": 1.0}, "duplicate_fraction"),
        ({"duplicate_fraction": -0.1}, "duplicate_fraction"),
        ({"empty_fraction": 1.0}, "empty_fraction"),
        ({"hard_fraction": 1.5}, "hard_fraction"),
        ({"duplicate_cluster_size": 1}, "duplicate_cluster_size"),
        ({"duplicate_fraction": 0.5, "empty_fraction": 0.4}, "duplicate_fraction"),
    ],
)
def test_bad_config_names_the_parameter(kwargs, param):
    with pytest.raises(ValueError, match=param):
        DigitsConfig(**kwargs)


def test_bad_split_and_seed():
    with pytest.raises(ValueError, match="accepted: 'train', 'val'"):
        digits_dataset("training", config=TINY)
    with pytest.raises(ValueError, match="seed"):
        digits_dataset("train", seed=-1, config=TINY)
    assert len(digits_dataset("valid", config=TINY)) == 6  # alias of "val"


def test_config_dict_round_trip():
    cfg = DigitsConfig(clutter=2.0, contrast_range=(0.3, 0.8))
    assert DigitsConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown DigitsConfig parameters"):
        DigitsConfig.from_dict({"noise": 1})


def test_default_heights_fit_smaller_images():
    assert (DigitsConfig().min_digit_height, DigitsConfig().max_digit_height) == (12.0, 100.0)
    small = DigitsConfig(image_size=64)
    assert small.max_digit_height == 60.0 and small.min_digit_height == 12.0
    tiny = DigitsConfig(image_size=16)
    assert tiny.max_digit_height == tiny.min_digit_height == 12.0


# ------------------------------------------------------------------------------------------- pool structure
LONG_TAIL = tuple(0.5**k / sum(0.5**j for j in range(10)) for k in range(10))
POOL = DigitsConfig(train_size=60, val_size=20, test_size=0, image_size=48, max_digits=3, class_frequencies=LONG_TAIL,
                    duplicate_fraction=0.3, duplicate_cluster_size=3, empty_fraction=0.2)


def test_pool_fields_at_defaults_leave_the_config_dict_and_images_unchanged():
    plain = DigitsConfig(train_size=8, val_size=0, test_size=0)
    assert not set(POOL_FIELDS) & set(plain.to_dict()) and not plain.has_pool_structure
    assert pool_plan("train", config=plain) is None
    assert POOL.to_dict()["empty_fraction"] == 0.2 and POOL.has_pool_structure
    assert DigitsConfig.from_dict(json.loads(json.dumps(POOL.to_dict()))) == POOL
    assert digits_cache_dir(config=POOL) != digits_cache_dir(config=dataclasses.replace(POOL, empty_fraction=0.0))
    # a plan with nothing to do for val: the val images are those of the config without pool structure
    val = generate_digits("val", config=POOL)
    assert pool_plan("val", config=POOL) is None
    assert _same(val, generate_digits("val", config=dataclasses.replace(POOL, class_frequencies=None,
                                                                        duplicate_fraction=0.0, empty_fraction=0.0)))


def test_pool_plan_counts_clusters_and_seeds():
    plan = pool_plan("train", seed=1, config=POOL)
    assert plan.empty.sum() == 12 and (plan.duplicate_of >= 0).sum() == 18
    sources = plan.duplicate_of[plan.duplicate_of >= 0]
    assert not plan.empty[sources].any() and (plan.duplicate_of[sources] == -1).all()
    assert sorted(np.bincount(sources).tolist())[-9:] == [2] * 9  # 18 copies over 9 clusters of 3 images
    assert not (plan.empty & (plan.duplicate_of >= 0)).any()
    again, other = pool_plan("train", seed=1, config=POOL), pool_plan("train", seed=2, config=POOL)
    assert np.array_equal(plan.duplicate_of, again.duplicate_of) and not np.array_equal(plan.empty, other.empty)
    hard = pool_plan("val", config=dataclasses.replace(POOL, val_size=400, hard_fraction=0.25))
    assert 0.18 < hard.hard.mean() < 0.32 and not hard.empty.any() and (hard.duplicate_of == -1).all()


def test_pool_images_follow_the_plan():
    ds = generate_digits("train", seed=1, config=POOL)
    plan = pool_plan("train", seed=1, config=POOL)
    assert _same(ds, generate_digits("train", seed=1, config=POOL))
    counts = [len(t["labels"]) for t in ds.targets]
    assert all((c == 0) == e for c, e in zip(counts, plan.empty))
    for i in np.flatnonzero(plan.duplicate_of >= 0):
        src = int(plan.duplicate_of[i])
        a, b = ds.targets[i], ds.targets[src]
        assert torch.equal(a["labels"], b["labels"])
        shift = a["boxes"] - b["boxes"]
        assert torch.equal(shift, shift[:1].expand_as(shift)) and shift.abs().max() <= 2  # 4% of 48 px
        assert (a["boxes"] >= 0).all() and (a["boxes"] <= 48).all()
        assert not torch.equal(ds.images[i], ds.images[src])
    val_labels = torch.cat([t["labels"] for t in generate_digits("val", seed=1, config=dataclasses.replace(
        POOL, val_size=200)).targets])
    train_labels = torch.cat([t["labels"] for t in ds.targets])
    assert (train_labels == 1).float().mean() > 0.3 and (val_labels == 1).float().mean() < 0.15


def test_hard_images_are_small_and_blurred():
    cfg = DigitsConfig(train_size=40, val_size=0, test_size=0, image_size=64, min_digit_height=16.0,
                       max_digit_height=56.0, hard_fraction=0.5)
    ds, plan = generate_digits("train", config=cfg), pool_plan("train", config=cfg)
    heights = [float((t["boxes"][:, 3] - t["boxes"][:, 1]).max()) for t in ds.targets]
    hard = [h for h, k in zip(heights, plan.hard) if k]
    assert hard and max(hard) <= 16 * 3.5 ** (1 / 3) * 1.3 and np.median(hard) < np.median(heights)


def test_class_frequencies_as_a_mapping():
    cfg = DigitsConfig(train_size=30, val_size=0, test_size=0, class_frequencies={7: 0.75, "3": 0.25})
    assert cfg.class_frequencies == (0, 0, 0, 0.25, 0, 0, 0, 0.75, 0, 0)
    labels = torch.cat([t["labels"] for t in generate_digits("train", config=cfg).targets])
    assert set(labels.tolist()) == {4, 8}
