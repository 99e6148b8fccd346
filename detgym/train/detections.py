"""Detections as COCO results: the one batched eval loop of ``Trainer.predict``, ``find-threshold`` and ``predict``."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["detections_to_coco", "predict_batches", "predict_coco"]


def _category_lookup(label_to_category_id: Mapping[int, int]) -> np.ndarray:
    lookup = np.zeros(max(label_to_category_id) + 1, dtype=np.int64)
    for label, cat in label_to_category_id.items():
        lookup[int(label)] = int(cat)
    return lookup


def detections_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_category_id: Mapping[int, int] | np.ndarray,
) -> list[dict[str, Any]]:
    """torchvision detections (``boxes`` x1y1x2y2, ``scores``, ``labels``), one per image, as COCO results.

    Each result is ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}`` with Python numbers; labels are
    mapped to COCO category ids by ``label_to_category_id`` (a mapping, or a lookup array indexed by label).
    """
    lookup = label_to_category_id
    if not isinstance(lookup, np.ndarray):
        lookup = _category_lookup(lookup)
    results: list[dict[str, Any]] = []
    for image_id, out in zip(image_ids, outputs):
        boxes = out["boxes"].float().cpu().numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        scores = out["scores"].float().cpu().numpy()
        cats = lookup[out["labels"].cpu().numpy()]
        iid = int(image_id)
        results.extend(
            {"image_id": iid, "bbox": [float(v) for v in b], "score": float(s), "category_id": int(c)}
            for b, s, c in zip(xywh, scores, cats)
        )
    return results


def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[Sequence[int], list[torch.Tensor]]],
    label_to_category_id: Mapping[int, int],
    *,
    on_batch: Callable[[int, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``model`` in eval mode over ``(image_ids, images)`` batches and return its detections as COCO results.

    ``images`` are float tensors in 0..1 on the model's device. ``on_batch(n_images, forward_seconds)`` is called
    after each batch with the time of the forward pass alone (synchronised on CUDA). The model's train / eval
    mode is restored afterwards.
    """
    lookup = _category_lookup(label_to_category_id)
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for ids, images in batches:
                t0 = time.perf_counter()
                outputs = model(images)
                if on_batch is not None and images and images[0].is_cuda:
                    torch.cuda.synchronize(images[0].device)
                seconds = time.perf_counter() - t0
                results.extend(detections_to_coco(outputs, ids, lookup))
                if on_batch is not None:
                    on_batch(len(images), seconds)
    finally:
        model.train(was_training)
    return results


def predict_coco(
    model: nn.Module, dataset: Any, *, batch_size: int = 16, device: torch.device | str | None = None
) -> list[dict[str, Any]]:
    """Run ``model`` in eval mode over ``dataset`` and return its detections as a COCO results list.

    Labels are mapped back to the dataset's COCO category ids and boxes written as ``[x, y, w, h]``.
    The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device

    def batches() -> Iterable[tuple[list[int], list[torch.Tensor]]]:
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            images, _ = dataset.batch(idx, device=device)
            yield [int(dataset.image_ids[i]) for i in idx], images

    return predict_batches(model, batches(), dataset.label_to_category_id)
