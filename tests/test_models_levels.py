"""Per-level losses of the level-aware detectors sum to torchvision's own losses.

The reference is the same model object "demoted" to torchvision's classes (a deep copy whose modules
get their first torchvision base class back), so it runs torchvision's untouched forward and loss code
on an identical state dict; Faster R-CNN samples anchors / RoIs randomly, so both runs are seeded alike.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet

from detgym.models import LevelFasterRCNN, LevelFCOS, LevelRetinaNet, as_torchvision, build_detector

TOL = 1e-5


def torchvision_copy(model: torch.nn.Module) -> torch.nn.Module:
    stock = as_torchvision(model)
    assert not any(type(m).__module__.startswith("detgym.models.") and type(m).__name__.startswith("Level")
                   for m in stock.modules())
    return stock


def synthetic_batch(n: int = 3, size: int = 128, num_classes: int = 10, seed: int = 0):
    """Random digit-like boxes (tall, 8..0.75*size px); image 1 has no objects."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(n):
        images.append(torch.rand(3, size, size, generator=g))
        k = 0 if i == 1 else int(torch.randint(1, 5, (1,), generator=g))
        h = 8 + torch.rand(k, generator=g) * (0.75 * size - 8)
        w = h * (0.5 + 0.3 * torch.rand(k, generator=g))
        x1 = torch.rand(k, generator=g) * (size - w)
        y1 = torch.rand(k, generator=g) * (size - h)
        targets.append({
            "boxes": torch.stack([x1, y1, x1 + w, y1 + h], dim=1),
            "labels": torch.randint(1, num_classes + 1, (k,), generator=g),
        })
    return images, targets


KEYS = {
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "fasterrcnn": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"},
}
BASE = {"retinanet": RetinaNet, "fcos": FCOS, "fasterrcnn": FasterRCNN}
CASES = [
    ("retinanet", "tiny", {}),
    ("fcos", "tiny", {}),
    ("fasterrcnn", "tiny", {}),
    ("fasterrcnn", "tiny", {"res_fpn": True}),
    ("fcos", "mobilenet_v3", {"image_size": 64}),
]


@pytest.mark.parametrize("family,backbone,kw", CASES, ids=[f"{f}-{b}{'-resfpn' if k.get('res_fpn') else ''}"
                                                           for f, b, k in CASES])
def test_level_losses_sum_to_torchvision(family, backbone, kw):
    torch.manual_seed(0)
    model = build_detector(family, backbone, num_classes=10, **kw).train()
    stock = torchvision_copy(model).train()
    assert type(stock) is BASE[family]
    size = kw.get("image_size", 128)
    images, targets = synthetic_batch(size=size)

    torch.manual_seed(123)
    levels = model.level_losses(images, targets)
    torch.manual_seed(123)
    reference = stock(images, targets)

    assert set(levels) == set(reference) == KEYS[family]
    for key, ref in reference.items():
        per_level = levels[key]
        assert per_level.shape == (model.num_levels,), key
        assert per_level.requires_grad, key
        assert abs(per_level.sum().item() - ref.item()) <= TOL * max(1.0, abs(ref.item())), (key, per_level, ref)

    # plain forward in training mode is torchvision's scalar dict
    torch.manual_seed(123)
    scalars = model(images, targets)
    for key, ref in reference.items():
        assert scalars[key].dim() == 0
        assert abs(scalars[key].item() - ref.item()) <= TOL * max(1.0, abs(ref.item()))

    total = sum(v.sum() for v in levels.values())
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_weighted_levels_change_gradients():
    """The per-level terms are separate graph nodes: weighting one level changes the gradient."""
    torch.manual_seed(0)
    model = build_detector("fcos").train()
    images, targets = synthetic_batch()
    grads = []
    for w in (torch.ones(5), torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0])):
        model.zero_grad()
        losses = model.level_losses(images, targets)
        sum((v * w).sum() for v in losses.values()).backward()
        grads.append(model.head.classification_head.cls_logits.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("family", ["retinanet", "fcos", "fasterrcnn"])
def test_tiny_structure_and_eval(family):
    torch.manual_seed(0)
    model = build_detector(family)
    assert isinstance(model, BASE[family])
    assert isinstance(model, {"retinanet": LevelRetinaNet, "fcos": LevelFCOS, "fasterrcnn": LevelFasterRCNN}[family])
    assert model.num_levels == len(model.level_names) == 5
    assert model.level_names == (("P2", "P3", "P4", "P5", "P6") if family == "fasterrcnn"
                                 else ("P3", "P4", "P5", "P6", "P7"))
    assert model.num_object_classes == 10
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 2.0e6, n_params

    model.eval()
    images, _ = synthetic_batch(n=2)
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2
    for d in dets:
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape[1:] == (4,)
        assert bool(((d["labels"] >= 1) & (d["labels"] <= 10)).all())
    with pytest.raises(ValueError, match="training mode"):
        model.level_losses(images, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2)


def test_background_logit_never_detected():
    """RetinaNet / FCOS have a spare logit 0; even when it dominates it never yields a detection."""
    torch.manual_seed(0)
    model = build_detector("retinanet").eval()
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.view(-1, 11)[:, 0] = 10.0
        dets = model([torch.rand(3, 128, 128)])
    assert bool((dets[0]["labels"] >= 1).all())


@pytest.mark.parametrize(
    "targets,match",
    [
        ([{"boxes": torch.tensor([[1.0, 1.0, 20.0, 30.0]]), "labels": torch.tensor([11])}], r"labels.*1\.\.10"),
        ([{"boxes": torch.tensor([[1.0, 1.0, 20.0, 30.0]]), "labels": torch.tensor([0])}], r"labels.*1\.\.10"),
        ([{"boxes": torch.tensor([[20.0, 1.0, 10.0, 30.0]]), "labels": torch.tensor([3])}], r"x2 > x1"),
        ([{"boxes": torch.tensor([[1.0, 30.0, 20.0, 30.0]]), "labels": torch.tensor([3])}], r"y2 > y1"),
        ([{"boxes": torch.tensor([[1.0, 1.0, 20.0]]), "labels": torch.tensor([3])}], r"boxes.*\[N, 4\]"),
        ([{"boxes": torch.tensor([[1.0, 1.0, 20.0, 30.0]]), "labels": torch.tensor([3.0])}], r"int64"),
        ([{"boxes": torch.tensor([[1.0, 1.0, 20.0, 30.0]])}], r"'labels'"),
        ([], r"one dict per image"),
    ],
)
def test_bad_targets_raise(targets, match):
    model = build_detector("fcos").train()
    with pytest.raises(ValueError, match=match):
        model.level_losses([torch.rand(3, 64, 64)], targets)
    with pytest.raises(ValueError, match=match):
        model([torch.rand(3, 64, 64)], targets)


def test_bad_names_raise():
    with pytest.raises(ValueError, match=r"family must be one of 'retinanet', 'fcos', 'fasterrcnn'"):
        build_detector("yolo")
    with pytest.raises(ValueError, match=r"backbone must be one of 'tiny', 'mobilenet_v3', 'resnet50', 'resnet50_v2'"):
        build_detector("fcos", "vgg16")
    with pytest.raises(ValueError, match=r"'resnet50_v2' is not available for family 'fcos'; accepted: tiny"):
        build_detector("fcos", "resnet50_v2")
    with pytest.raises(ValueError, match=r"num_classes"):
        build_detector("fcos", num_classes=0)
    with pytest.raises(ValueError, match=r"image_size"):
        build_detector("fcos", image_size=8)
    with pytest.raises(ValueError, match=r"unknown override.*scor_thresh.*accepted:.*score_thresh"):
        build_detector("fcos", scor_thresh=0.1)
    with pytest.raises(ValueError, match=r"tiny backbone"):
        build_detector("retinanet", weights="DEFAULT")


def test_overrides_reach_the_model():
    model = build_detector("retinanet", score_thresh=0.01, head_num_convs=1, aspect_ratios=(1.5,), image_size=96)
    assert model.score_thresh == 0.01
    assert len(model.head.classification_head.conv) == 1
    assert model.anchor_generator.num_anchors_per_location()[0] == 3
    assert model.transform.min_size == (96,)
    frcnn = build_detector("fasterrcnn", rpn_batch_size_per_image=64, box_score_thresh=0.2)
    assert frcnn.rpn.fg_bg_sampler.batch_size_per_image == 64
    assert frcnn.roi_heads.score_thresh == 0.2


def test_resnet50_builds_without_download(monkeypatch):
    """Default weights are None: building the torchvision-backed models never touches the network."""

    def no_download(*args, **kwargs):
        raise AssertionError("attempted to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    from torchvision.models.detection import retinanet_resnet50_fpn_v2

    model = build_detector("retinanet", "resnet50_v2", num_classes=3, image_size=64)
    reference = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=4)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    theirs = {k: v.shape for k, v in reference.state_dict().items()}
    assert ours == theirs
    assert model.head.regression_head._loss_type == "giou"
    assert model.num_object_classes == 3

    model.train()
    images, targets = synthetic_batch(n=2, size=64, num_classes=3)
    stock = torchvision_copy(model).train()
    levels = model.level_losses(images, targets)
    reference_losses = stock(images, targets)
    for key, ref in reference_losses.items():
        assert abs(levels[key].sum().item() - ref.item()) <= TOL * max(1.0, abs(ref.item()))


def test_mobilenet_fasterrcnn_default_has_no_backbone_download(monkeypatch):
    """torchvision's fasterrcnn_mobilenet_v3_large_fpn defaults to ImageNet weights; ours must not."""

    def no_download(*args, **kwargs):
        raise AssertionError("attempted to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = build_detector("fasterrcnn", "mobilenet_v3", image_size=64)
    assert model.level_names == ("C5a", "C5b", "pool")
    assert model.roi_heads.box_predictor.cls_score.out_features == 11


@pytest.mark.parametrize("family,backbone", [("retinanet", "resnet50"), ("fasterrcnn", "mobilenet_v3")])
def test_pretrained_weights_are_adapted_to_num_classes(monkeypatch, family, backbone):
    """weights="DEFAULT" loads the COCO state dict (faked here: no download) and re-heads it for num_classes."""
    from torchvision.models._api import WeightsEnum

    from detgym.models.builder import _TORCHVISION_BUILDERS

    builder = _TORCHVISION_BUILDERS[(family, backbone)]
    coco = builder(weights=None, weights_backbone=None, num_classes=91).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: coco)
    model = build_detector(family, backbone, num_classes=4, weights="DEFAULT", image_size=64)
    sd = model.state_dict()
    # pretrained models use FrozenBatchNorm2d (as torchvision), which has no num_batches_tracked
    assert all(k.endswith("num_batches_tracked") for k in set(coco) - set(sd))
    changed = [k for k in coco if k in sd and not (sd[k].shape == coco[k].shape and torch.equal(sd[k], coco[k]))]
    assert changed and all("cls_logits" in k or "box_predictor" in k for k in changed), changed
    assert model.num_object_classes == 4


@pytest.mark.parametrize("family", ["retinanet", "fcos", "fasterrcnn"])
def test_batch_without_objects(family):
    torch.manual_seed(0)
    model = build_detector(family, image_size=64).train()
    stock = torchvision_copy(model).train()
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(2)]
    torch.manual_seed(5)
    levels = model.level_losses(images, targets)
    torch.manual_seed(5)
    reference = stock(images, targets)
    for key, ref in reference.items():
        assert torch.isfinite(levels[key]).all()
        assert abs(levels[key].sum().item() - ref.item()) <= TOL * max(1.0, abs(ref.item())), key
