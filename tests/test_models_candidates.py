"""Pre-NMS candidates, the model's NMS on them, and pooled FPN embeddings of the level-aware detectors.

The reference for ``postprocess(candidates(images))`` is the same model demoted to torchvision's classes
(``as_torchvision``: torchvision's untouched forward and post-processing on an identical state dict). RetinaNet
and FCOS have a spare background logit 0 that the level-aware models never report; the reference gets the same
behaviour from a -inf bias on that output (score 0, which no score threshold >= 0 lets through).
Models are randomly initialised and built with a zero score threshold, so that thousands of candidates pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from detgym.models import as_torchvision, build_detector
from detgym.models._candidates import nms_candidates

NUM_CLASSES = 10
ZERO_THRESH = {"retinanet": "score_thresh", "fcos": "score_thresh", "fasterrcnn": "box_score_thresh"}


def images_of(*sizes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


# A square image at the model size and one that the transform resizes (anisotropically, after rounding).
IMAGES = ((64, 64), (56, 80))


def build(family: str, backbone: str = "tiny", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {ZERO_THRESH[family]: 0.0, "image_size": 64, **kw}
    return build_detector(family, backbone, num_classes=NUM_CLASSES, **kw).eval()


def reference_of(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's classes on the same weights, background logit 0 switched off for RetinaNet / FCOS."""
    stock = as_torchvision(model).eval()
    assert type(stock).__module__.startswith("torchvision")
    if hasattr(stock, "head"):
        cls_head = stock.head.classification_head
        with torch.no_grad():
            cls_head.cls_logits.bias[0 :: cls_head.num_classes] = float("-inf")
    return stock


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w) == {"boxes", "scores", "labels"}
        for key in w:
            assert g[key].dtype == w[key].dtype, key
            assert torch.equal(g[key], w[key]), key


# (family, backbone, build overrides); tiny cases cover both batched_nms paths (more / fewer than 1000 boxes).
CASES = [
    ("retinanet", "tiny", {"detections_per_img": 40}),
    ("retinanet", "tiny", {"topk_candidates": 40, "res_fpn": True}),
    ("fcos", "tiny", {"detections_per_img": 40}),
    ("fcos", "tiny", {"topk_candidates": 40}),
    ("fasterrcnn", "tiny", {"box_detections_per_img": 40}),
    ("fasterrcnn", "tiny", {"res_fpn": True, "rpn_post_nms_top_n_test": 30}),
    ("retinanet", "mobilenet_v3", {}),
    ("fcos", "mobilenet_v3", {}),
    ("fasterrcnn", "mobilenet_v3", {}),
    # ResNet-50 models build and run in about a second each at 64 px (no weights): cheap enough to check, and
    # the two with exactly tied scores among > 1000 boxes (retinanet v2, fasterrcnn) need "nms_order".
    # fasterrcnn resnet50_v2 is left out: 3.5 s on one thread (its 4conv1fc box head), and it shares its
    # from_torchvision path and post-processing with fasterrcnn resnet50.
    ("retinanet", "resnet50", {}),
    ("retinanet", "resnet50_v2", {}),
    ("fcos", "resnet50", {}),
    ("fasterrcnn", "resnet50", {"rpn_post_nms_top_n_test": 300}),
]
EMBED_DIM = {"tiny": 64 * 5, "mobilenet_v3": 256 * 5, "resnet50": 256 * 5, "resnet50_v2": 256 * 5}


def case_id(case) -> str:
    family, backbone, kw = case
    return f"{family}-{backbone}" + "".join(f"-{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("family,backbone,kw", CASES, ids=[case_id(c) for c in CASES])
def test_postprocess_of_candidates_is_the_model_output(family, backbone, kw):
    model = build(family, backbone, **kw)
    images = images_of(*IMAGES)
    with torch.no_grad():
        detections = model(images)
        reference = reference_of(model)(images)
        candidates = model.candidates(images)
        again = model.postprocess(candidates)
    assert_same_detections(detections, reference)
    assert_same_detections(again, detections)
    # NMS and the detections_per_img cut have work to do
    assert all(len(c["scores"]) > len(d["scores"]) > 0 for c, d in zip(candidates, detections))
    assert all(not c["class_logits"].requires_grad for c in candidates)
    # one embedding width per family x backbone (Faster R-CNN mobilenet_v3: two stride-32 maps + pool)
    dim = 256 * 3 if (family, backbone) == ("fasterrcnn", "mobilenet_v3") else EMBED_DIM[backbone]
    assert model.embed_dim == dim
    assert model.embed(images[:1]).shape == (1, dim)


@pytest.mark.parametrize("family", ["retinanet", "fcos", "fasterrcnn"])
def test_candidates_layout(family):
    model = build(family)
    images = images_of(*IMAGES)
    with torch.no_grad():
        candidates = model.candidates(images)
    for c, image in zip(candidates, images):
        k = len(c["scores"])
        assert k > 0
        assert c["boxes"].shape == (k, 4) and c["boxes"].dtype == torch.float32
        assert c["labels"].dtype == c["logit_index"].dtype == torch.int64
        assert c["labels"].shape == c["logit_index"].shape == (k,)
        assert int(c["labels"].min()) >= 1 and int(c["labels"].max()) <= NUM_CLASSES
        # sorted by score, descending
        assert bool((c["scores"][:-1] >= c["scores"][1:]).all())
        # boxes in original image pixels (clipped to the image)
        h, w = image.shape[-2:]
        assert float(c["boxes"].min()) >= 0
        assert float(c["boxes"][:, 0::2].max()) <= w and float(c["boxes"][:, 1::2].max()) <= h
        logits = c["class_logits"]
        assert logits.shape[1] == NUM_CLASSES + 1
        assert int(c["logit_index"].min()) >= 0 and int(c["logit_index"].max()) < logits.shape[0]
        picked = logits[c["logit_index"], c["labels"]]
        if family == "retinanet":
            torch.testing.assert_close(torch.sigmoid(picked), c["scores"])
        elif family == "fcos":  # score = sqrt(sigmoid(cls) * sigmoid(ctrness)) <= sqrt(sigmoid(cls))
            assert bool((c["scores"] <= torch.sqrt(torch.sigmoid(picked)) + 1e-6).all())
        else:  # softmax over the proposal's row, background included
            probs = F.softmax(logits, dim=-1)[c["logit_index"], c["labels"]]
            torch.testing.assert_close(probs, c["scores"])
    if family != "fasterrcnn":  # one row per anchor / location over the concatenated levels
        with torch.no_grad():
            image_list, _ = model.transform(images)
            maps = list(model.backbone(image_list.tensors).values())
            head = model.head(maps)
        assert candidates[0]["class_logits"].shape == head["cls_logits"].shape[1:]
        torch.testing.assert_close(candidates[1]["class_logits"], head["cls_logits"][1])


@pytest.mark.parametrize("family", ["retinanet", "fcos", "fasterrcnn"])
def test_candidate_logits_carry_grad(family):
    model = build(family)
    candidates = model.candidates(images_of((64, 64)))
    c = candidates[0]
    assert c["class_logits"].requires_grad
    picked = c["class_logits"][c["logit_index"], c["labels"]]
    if family == "fasterrcnn":
        loss = F.cross_entropy(c["class_logits"][c["logit_index"]], c["labels"])
        weight = model.roi_heads.box_predictor.cls_score.weight
    else:
        loss = F.binary_cross_entropy_with_logits(picked, torch.ones_like(picked))
        weight = model.head.classification_head.cls_logits.weight
    loss.backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("family", ["retinanet", "fasterrcnn"])
def test_max_candidates_keeps_the_best(family):
    model = build(family)
    images = images_of(*IMAGES)
    with torch.no_grad():
        full = model.candidates(images)
        cut = model.candidates(images, max_candidates=25)
    for f, c in zip(full, cut):
        assert set(f) == set(c)
        for key, value in c.items():
            if key == "class_logits":
                assert torch.equal(value, f[key])
            else:
                assert len(value) == 25 and torch.equal(value, f[key][:25]), key
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_candidates"):
            model.candidates(images, max_candidates=bad)
    with pytest.raises(ValueError, match="images"):
        model.candidates(torch.rand(3, 64, 64))


def test_background_logit_is_never_a_candidate():
    model = build("retinanet")
    cls_head = model.head.classification_head
    with torch.no_grad():
        cls_head.cls_logits.bias[0 :: cls_head.num_classes] = 10.0  # background would win everywhere
        images = images_of(*IMAGES)
        candidates = model.candidates(images)
        detections = model(images)
        reference = reference_of(model)(images)
    assert all(int(c["labels"].min()) >= 1 for c in candidates)
    assert_same_detections(model.postprocess(candidates), detections)
    assert_same_detections(detections, reference)


@pytest.mark.parametrize("family", ["fcos", "fasterrcnn"])
def test_calls_keep_every_module_mode(family):
    model = build(family)
    images = images_of(*IMAGES)
    with torch.no_grad():
        want = model.candidates(images)
        want_embed = model.embed(images)
    model.train()
    frozen = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()
    with torch.no_grad():
        got = model.candidates(images)
    got_embed = model.embed(images)
    assert model.training and not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)
    assert_same_detections(model.postprocess(got), model.postprocess(want))
    torch.testing.assert_close(got_embed, want_embed, rtol=0, atol=0)
    assert not got_embed.requires_grad


@pytest.mark.parametrize("family,res_fpn", [("retinanet", False), ("fasterrcnn", True)])
def test_embed_pools_what_the_heads_see(family, res_fpn):
    model = build(family, res_fpn=res_fpn)
    images = images_of(*IMAGES, (64, 64), seed=1)
    emb = model.embed(images)
    assert emb.shape == (3, model.embed_dim) == (3, 64 * 5) and emb.dtype == torch.float32
    torch.testing.assert_close(model.embed(images), emb, rtol=0, atol=0)  # deterministic
    # per image: the transform, the backbone (with the ResFPN blocks), a mean over each map, levels in order
    for i, image in enumerate(images):
        with torch.no_grad():
            image_list, _ = model.transform([image])
            maps = model.backbone(image_list.tensors)
        want = torch.cat([f.mean(dim=(-2, -1))[0] for f in maps.values()])
        torch.testing.assert_close(emb[i], want)
    if res_fpn:  # the blocks are part of it: pooling the bare FPN gives something else
        with torch.no_grad():
            bare = model.backbone.body(model.transform(images[:1])[0].tensors)
        pooled = torch.cat([f.mean(dim=(-2, -1))[0] for f in bare.values()])
        assert not torch.allclose(pooled, emb[0])
    assert model.embed([]).shape == (0, model.embed_dim)


def test_nms_candidates_reproduces_torchvision_order_with_ties():
    # > 1000 boxes: batched_nms's per-class CPU path, which re-sorts the kept boxes with an unstable sort.
    g = torch.Generator().manual_seed(0)
    n = 1500
    xy = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 40], dim=1)
    scores = torch.randint(0, 20, (n,), generator=g).float() / 20  # many exact ties
    labels = torch.randint(1, 4, (n,), generator=g)
    keep = batched_nms(boxes, scores, labels, 0.5)[:100]
    order = torch.sort(scores, descending=True, stable=True).indices
    candidates = {"boxes": boxes[order], "scores": scores[order], "labels": labels[order], "nms_order": order}
    got = nms_candidates(candidates, 0.5, 100)
    assert torch.equal(got["boxes"], boxes[keep]) and torch.equal(got["labels"], labels[keep])
    assert torch.equal(got["scores"], scores[keep])
