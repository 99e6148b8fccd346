"""Digit strings read left to right and their exact-match accuracy (paper 004, task 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detgym.metrics import NO_DIGITS, detections_to_string, predictions_to_strings, sequence_accuracy


def test_left_to_right_by_x_centre_with_threshold():
    boxes = [[10, 0, 20, 10], [0, 0, 8, 10], [30, 0, 40, 10], [22, 0, 26, 10]]
    labels = [3, 1, 10, 5]  # digits 2, 0, 9, 4 (label k is digit k - 1)
    scores = [0.9, 0.6, 0.4, 0.5]
    assert detections_to_string(boxes, labels, scores, threshold=0.5) == "024"  # 0.5 is kept (inclusive)
    assert detections_to_string(boxes, labels, scores, threshold=0.3) == "0249"
    assert detections_to_string(boxes, labels) == "0249"  # no scores: everything kept
    # x-centre, not x1: a wide box starting left of a narrow one can still come second.
    assert detections_to_string([[0, 0, 100, 10], [10, 0, 20, 10]], [2, 3]) == "21"


def test_nothing_kept_is_minus_one():
    assert NO_DIGITS == "-1"
    assert detections_to_string([[0, 0, 1, 1]], [2], [0.1], threshold=0.5) == "-1"
    assert detections_to_string(np.zeros((0, 4)), np.zeros(0, dtype=int)) == "-1"


def test_label_to_digit_mapping_and_callable():
    boxes = torch.tensor([[5.0, 0, 6, 1], [0.0, 0, 1, 1]])
    labels = torch.tensor([0, 9])
    assert detections_to_string(boxes, labels, label_to_digit={0: 7, 9: "3"}) == "37"
    assert detections_to_string(boxes, labels, label_to_digit=lambda k: k) == "90"
    with pytest.raises(ValueError, match="label 0 is not a digit label"):
        detections_to_string(boxes, labels)
    with pytest.raises(ValueError, match="missing from label_to_digit"):
        detections_to_string(boxes, labels, label_to_digit={9: 1})


def test_predictions_to_strings():
    preds = [{"boxes": torch.tensor([[10.0, 0, 20, 10], [0.0, 0, 8, 10]]), "labels": torch.tensor([2, 5]),
              "scores": torch.tensor([0.9, 0.8])},
             {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}]
    assert predictions_to_strings(preds, threshold=0.5) == ["41", "-1"]
    with pytest.raises(ValueError, match="no 'labels' key"):
        predictions_to_strings([{"boxes": torch.zeros((0, 4))}])


def test_sequence_accuracy():
    assert sequence_accuracy(["12", "-1", "7"], ["12", "3", "7"]) == pytest.approx(2 / 3)
    assert sequence_accuracy(["07"], ["7"]) == 0.0  # strings, not numbers
    assert sequence_accuracy([49, "5 "], ["49", "5"]) == 1.0
    assert sequence_accuracy({1: "3", 2: "45"}, {2: "45", 1: "4"}) == 0.5


def test_sequence_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="2 entries but true_strings has 1"):
        sequence_accuracy(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="at least one"):
        sequence_accuracy([], [])
    with pytest.raises(ValueError, match="different keys"):
        sequence_accuracy({1: "3"}, {2: "3"})
    with pytest.raises(ValueError, match="both be sequences or both be mappings"):
        sequence_accuracy({1: "3"}, ["3"])
    with pytest.raises(ValueError, match="not one string"):
        sequence_accuracy("123", "123")
    with pytest.raises(ValueError, match="x2 < x1"):
        detections_to_string([[5, 0, 1, 1]], [1])
    with pytest.raises(ValueError, match="one entry per box"):
        detections_to_string([[0, 0, 1, 1]], [1, 2])
