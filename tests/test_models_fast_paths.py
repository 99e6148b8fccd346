"""The fixed-size fast paths and the batched matching give torchvision's values bit for bit.

References are torchvision's own methods called on the same inputs: ``RetinaNet.compute_loss`` / ``FCOS.compute_loss``
(per-image matching loops, captured before their head loss), ``RegionProposalNetwork.assign_targets_to_anchors``,
``GeneralizedRCNNTransform`` and ``AnchorGenerator``.
"""

from __future__ import annotations

import types

import pytest
import torch
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detgym.models import build_detector
from detgym.models._fixed_size import CachedAnchorGenerator, FixedSizeTransform
from detgym.models._matching import match_batch


def random_targets(n: int, size: int, seed: int, max_objects: int = 6) -> list[dict[str, torch.Tensor]]:
    """Random boxes (some images empty, some boxes duplicated so that IoU ties occur)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = 0 if i % 4 == 1 else int(torch.randint(1, max_objects + 1, (1,), generator=g))
        wh = 3 + torch.rand(k, 2, generator=g) * (0.6 * size)
        xy = torch.rand(k, 2, generator=g) * (size - wh)
        boxes = torch.cat([xy, xy + wh], dim=1)
        if k >= 2 and i % 3 == 0:
            boxes[1] = boxes[0]  # a duplicated box: equal IoUs everywhere, the first index must win
        out.append({"boxes": boxes, "labels": torch.randint(1, 11, (k,), generator=g)})
    return out


def capture_matches(method, owner_fields: dict, targets, anchors, *extra):
    """Run torchvision's detector ``compute_loss`` on a stand-in whose head returns the matches it is given."""
    stub = types.SimpleNamespace(**owner_fields, head=types.SimpleNamespace(compute_loss=lambda t, h, a, m: m))
    return method(stub, targets, None, anchors, *extra)


def model_anchors(model, size: int, n: int) -> tuple[list[torch.Tensor], list[int]]:
    images = ImageList(torch.zeros(n, 3, size, size), [(size, size)] * n)
    with torch.no_grad():
        feats = list(model.backbone(images.tensors).values())
    return model.anchor_generator(images, feats), [f.shape[-2] * f.shape[-1] for f in feats]


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retinanet_matching_is_torchvision(low_quality, seed):
    model = build_detector("retinanet", image_size=96)
    model.proposal_matcher = det_utils.Matcher(0.4, 0.3, allow_low_quality_matches=low_quality)
    anchors, sizes = model_anchors(model, 96, 8)
    targets = random_targets(8, 96, seed)
    reference = capture_matches(RetinaNet.compute_loss, {"proposal_matcher": model.proposal_matcher}, targets, anchors)
    ours = model.match_targets(targets, anchors, sizes)
    assert all(torch.equal(a, b) for a, b in zip(reference, ours))
    assert any(bool((m == -2).any()) for m in ours) and any(bool((m >= 0).any()) for m in ours)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fcos_matching_is_torchvision(seed):
    model = build_detector("fcos", image_size=96)
    anchors, sizes = model_anchors(model, 96, 8)
    targets = random_targets(8, 96, seed)
    fields = {"center_sampling_radius": model.center_sampling_radius}
    reference = capture_matches(FCOS.compute_loss, fields, targets, anchors, sizes)
    ours = model.match_targets(targets, anchors, sizes)
    assert all(torch.equal(a, b) for a, b in zip(reference, ours))
    # images whose anchors differ (not one shared tensor) take the per-image path: same result
    distinct = [a.clone() for a in anchors]
    assert all(torch.equal(a, b) for a, b in zip(reference, model.match_targets(targets, distinct, sizes)))


def test_batch_without_objects_matches_nothing():
    matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]])] * 2
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    assert all(torch.equal(m, torch.tensor([-1, -1])) for m in match_batch(matcher, empty, anchors))


@pytest.mark.parametrize("seed", [0, 1])
def test_rpn_assignment_is_torchvision(seed):
    model = build_detector("fasterrcnn", image_size=96)
    rpn = model.rpn
    anchors, _ = model_anchors(types.SimpleNamespace(backbone=model.backbone, anchor_generator=rpn.anchor_generator),
                               96, 6)
    targets = random_targets(6, 96, seed)
    ref_labels, ref_boxes = RegionProposalNetwork.assign_targets_to_anchors(rpn, anchors, targets)
    labels, boxes = rpn.assign_targets_to_anchors(anchors, targets)
    assert all(torch.equal(a, b) for a, b in zip(ref_labels, labels))
    assert all(torch.equal(a, b) for a, b in zip(ref_boxes, boxes))


def test_cached_anchors_equal_torchvision_and_are_reused():
    sizes, ratios = ((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3
    cached, plain = CachedAnchorGenerator(sizes, ratios), AnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros(3, 3, 64, 64), [(64, 64)] * 3)
    feats = [torch.zeros(3, 8, 64 // s, 64 // s) for s in (8, 16, 32)]
    first, reference = cached(images, feats), plain(images, feats)
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, reference))
    assert cached(images, feats)[0] is first[0]  # no recomputation for the same sizes
    other = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32)] * 2)
    small = [torch.zeros(2, 8, 32 // s, 32 // s) for s in (8, 16, 32)]
    assert torch.equal(cached(other, small)[0], plain(other, small)[0])
    assert CachedAnchorGenerator.from_generator(plain).sizes == plain.sizes
    assert "_anchor_cache" not in str(cached.state_dict())


@pytest.mark.parametrize("training", [True, False])
def test_fixed_size_transform_is_torchvision(training):
    plain = GeneralizedRCNNTransform(64, 64, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).train(training)
    fast = FixedSizeTransform.from_transform(plain)
    assert type(fast) is FixedSizeTransform and fast.training == training
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(4)]
    targets = random_targets(4, 64, 0)
    torch.manual_seed(7)
    ref, ref_targets = plain(images, targets)
    after_ref = torch.rand(1)
    torch.manual_seed(7)
    out, out_targets = fast(images, targets)
    assert torch.equal(torch.rand(1), after_ref)  # the same random numbers were drawn
    assert torch.equal(out.tensors, ref.tensors) and out.image_sizes == ref.image_sizes
    for a, b, original in zip(out_targets, ref_targets, targets):
        assert torch.equal(a["boxes"], b["boxes"]) and a["boxes"] is not original["boxes"]
    # another size takes torchvision's path (resize to 64 px)
    big = [torch.rand(3, 80, 80, generator=g) for _ in range(2)]
    assert torch.equal(fast(big)[0].tensors, plain(big)[0].tensors)


def test_dense_training_pass_shares_its_batch():
    """batch_level_losses on one prepared batch gives each detector its own level_losses, bit for bit."""
    from tests.test_models_levels import synthetic_batch

    torch.manual_seed(0)
    first, second = build_detector("retinanet").train(), build_detector("retinanet").train()
    images, targets = synthetic_batch()
    batch = first.prepare_batch(images, targets)
    shared = [first.batch_level_losses(batch), second.batch_level_losses(batch)]
    assert batch.matched_idxs is not None
    for model, losses in zip((first, second), shared):
        own = model.level_losses(images, targets)
        assert all(torch.equal(own[k], losses[k]) for k in own)
