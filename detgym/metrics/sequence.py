"""Digit-sequence accuracy of paper 004 (task 2): detections read left to right as a number string.

Paper 004 sorts the detected digits of an image by the x coordinate of their boxes, left to right,
after a confidence threshold, and scores the resulting strings by exact-match accuracy against the
ground-truth strings; an image with no detection above the threshold is written as ``-1`` in its
``pred.csv``. detgym's digits set uses categories 1..10 for digits 0..9 (label k is digit k - 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ._boxes import check_boxes, to_numpy

__all__ = ["NO_DIGITS", "detections_to_string", "predictions_to_strings", "sequence_accuracy"]

NO_DIGITS = "-1"
"""The string of an image without any kept detection (paper 004's pred.csv convention)."""


def _digit_fn(label_to_digit: Mapping | Callable[[int], Any] | None) -> Callable[[int], str]:
    if label_to_digit is None:
        def default(label: int) -> str:
            if not 1 <= label <= 10:
                raise ValueError(f"label {label} is not a digit label: the default label_to_digit maps "
                                 "labels 1..10 to digits 0..9; pass label_to_digit for other label spaces")
            return str(label - 1)
        return default
    if isinstance(label_to_digit, Mapping):
        def lookup(label: int) -> str:
            try:
                return str(label_to_digit[label])
            except KeyError:
                raise ValueError(f"label {label} is missing from label_to_digit "
                                 f"(keys: {sorted(label_to_digit)})") from None
        return lookup
    if callable(label_to_digit):
        return lambda label: str(label_to_digit(label))
    raise ValueError(f"label_to_digit must be None, a mapping or a callable, got {type(label_to_digit).__name__}")


def detections_to_string(boxes: Any, labels: Any, scores: Any = None, threshold: float = 0.5,
                         label_to_digit: Mapping | Callable[[int], Any] | None = None) -> str:
    """The digit string of one image's detections, read left to right (paper 004, task 2).

    Detections with ``score >= threshold`` are kept (all of them when ``scores`` is None), sorted by
    the x-centre ``(x1 + x2) / 2`` of their xyxy boxes (ties keep the input order) and their labels
    mapped to digits.

    Args:
        boxes: [N, 4] xyxy boxes (tensor, array or list).
        labels: [N] integer labels.
        scores: optional [N] confidences.
        threshold: confidence threshold (inclusive).
        label_to_digit: mapping or callable from label to digit (anything ``str()`` turns into the
            digit text); default: label k -> digit k - 1 (detgym digits, categories 1..10).

    Returns:
        The digits concatenated, or ``NO_DIGITS`` ("-1") when no detection is kept.

    Raises:
        ValueError: mismatched lengths, bad boxes, NaN scores, a label without a digit.
    """
    b = check_boxes(boxes, "boxes", "xyxy")
    lab = to_numpy(labels).reshape(-1)
    if lab.shape[0] != b.shape[0]:
        raise ValueError(f"labels must have one entry per box ({b.shape[0]}), got {lab.shape[0]}")
    keep = np.ones(b.shape[0], dtype=bool)
    if scores is not None:
        sc = np.asarray(to_numpy(scores), dtype=np.float64).reshape(-1)
        if sc.shape[0] != b.shape[0]:
            raise ValueError(f"scores must have one entry per box ({b.shape[0]}), got {sc.shape[0]}")
        if np.isnan(sc).any():
            raise ValueError("scores contain NaN")
        keep = sc >= threshold
    if not keep.any():
        return NO_DIGITS
    xc = (b[keep, 0] + b[keep, 2]) / 2
    order = np.argsort(xc, kind="stable")
    digit = _digit_fn(label_to_digit)
    kept = lab[keep][order]
    return "".join(digit(int(v)) for v in kept)


def predictions_to_strings(predictions: Iterable[Mapping[str, Any]], threshold: float = 0.5,
                           label_to_digit: Mapping | Callable[[int], Any] | None = None) -> list[str]:
    """``detections_to_string`` for each torchvision-style prediction dict (boxes, labels, scores)."""
    out = []
    for i, p in enumerate(predictions):
        try:
            boxes, labels = p["boxes"], p["labels"]
        except KeyError as e:
            raise ValueError(f"predictions[{i}] has no {e.args[0]!r} key (need boxes, labels, scores)") from None
        out.append(detections_to_string(boxes, labels, p.get("scores"), threshold, label_to_digit))
    return out


def _normalise(x: Any) -> str:
    return str(x).strip()


def sequence_accuracy(pred_strings: Sequence[Any] | Mapping[Any, Any],
                      true_strings: Sequence[Any] | Mapping[Any, Any]) -> float:
    """Exact-match accuracy of predicted digit strings (paper 004, task 2).

    Args:
        pred_strings: predicted strings (e.g. from ``detections_to_string``; "-1" for no digit), as a
            sequence aligned with ``true_strings`` or a mapping image id -> string.
        true_strings: ground-truth strings, same form. Values are compared as ``str(v).strip()``, so
            keep digit strings as strings: an int loses leading zeros ("07" vs 7).

    Returns:
        The fraction of images whose predicted string equals the true one, in [0, 1].

    Raises:
        ValueError: empty inputs, different lengths, or mappings with different keys.
    """
    if isinstance(pred_strings, Mapping) or isinstance(true_strings, Mapping):
        if not (isinstance(pred_strings, Mapping) and isinstance(true_strings, Mapping)):
            raise ValueError("pred_strings and true_strings must both be sequences or both be mappings")
        if set(pred_strings) != set(true_strings):
            missing = sorted(map(str, set(true_strings) - set(pred_strings)))[:5]
            extra = sorted(map(str, set(pred_strings) - set(true_strings)))[:5]
            raise ValueError(f"pred_strings and true_strings have different keys (missing from pred: {missing}, "
                             f"extra in pred: {extra})")
        keys = list(true_strings)
        preds, trues = [pred_strings[k] for k in keys], [true_strings[k] for k in keys]
    else:
        if isinstance(pred_strings, str) or isinstance(true_strings, str):
            raise ValueError("pred_strings and true_strings must be sequences of strings, not one string")
        preds, trues = list(pred_strings), list(true_strings)
        if len(preds) != len(trues):
            raise ValueError(f"pred_strings has {len(preds)} entries but true_strings has {len(trues)}")
    if len(trues) == 0:
        raise ValueError("sequence_accuracy needs at least one image (got empty inputs)")
    hits = sum(_normalise(p) == _normalise(t) for p, t in zip(preds, trues))
    return hits / len(trues)
