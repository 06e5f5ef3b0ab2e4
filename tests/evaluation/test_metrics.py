"""mIoU, mAcc, aAcc and per-class values against a confusion matrix written out by hand (mmseg's rules)."""

import math

import pytest
import torch

from groupvit_fast.evaluation import segmentation_metrics
from groupvit_fast.segmentation import ConfusionMatrix

NAMES = ("background", "cat", "dog", "bird")

# two images; 255 = ignored (its prediction, a 'bird' in image B, must not count);
# 'dog' (2) only ever predicted, 'bird' (3) in no ground truth and no counted prediction
GT_A = [[0, 0, 1, 1], [255, 1, 1, 0]]
PRED_A = [[0, 1, 1, 2], [2, 1, 0, 0]]
GT_B = [[1, 255, 0]]
PRED_B = [[1, 3, 2]]

# counts[gt, pred], counted pixel by pixel from the four lists above
EXPECTED_COUNTS = [[2, 1, 1, 0], [1, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
# IoU = TP / (row + column - TP): bg 2/(4+3-2), cat 3/(5+4-3), dog 0/(0+2-0), bird 0/0
EXPECTED_IOU = [2 / 5, 3 / 6, 0.0, math.nan]
EXPECTED_ACC = [2 / 4, 3 / 5, math.nan, math.nan]  # TP / row


@pytest.fixture
def confusion():
    cm = ConfusionMatrix(len(NAMES))
    cm.update(torch.tensor(PRED_A), torch.tensor(GT_A))
    cm.update(torch.tensor(PRED_B), torch.tensor(GT_B))
    return cm


def test_counts_skip_ignored_pixels(confusion):
    assert confusion.counts.tolist() == EXPECTED_COUNTS


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_per_class_iou_and_accuracy(confusion):
    assert all(_same(a, b) for a, b in zip(confusion.iou(), EXPECTED_IOU, strict=True))
    assert all(_same(a, b) for a, b in zip(confusion.class_accuracy(), EXPECTED_ACC, strict=True))


def test_summary_leaves_absent_class_out_of_the_means(confusion):
    m = segmentation_metrics(confusion, NAMES)
    # the prediction-only class counts (IoU 0); the absent class does not
    assert m["mIoU"] == pytest.approx(100 * (0.4 + 0.5 + 0.0) / 3, abs=1e-9)
    assert m["mAcc"] == pytest.approx(100 * (0.5 + 0.6) / 2, abs=1e-9)
    assert m["aAcc"] == pytest.approx(100 * 5 / 9, abs=1e-9)
    assert m["per_class"]["bird"] == {"IoU": None, "Acc": None}
    assert m["per_class"]["dog"] == {"IoU": 0.0, "Acc": None}


def test_summing_per_image_counts_is_not_averaging_per_image_mious():
    # mmseg sums intersections and unions over the dataset: a tiny image with a wrong pixel weighs little
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(10, 10, dtype=torch.long), torch.zeros(10, 10, dtype=torch.long))
    cm.update(torch.tensor([[1]]), torch.tensor([[0]]))
    assert cm.iou()[0] == pytest.approx(100 / 101)
    assert cm.iou()[1] == 0.0


@pytest.mark.parametrize("gt, what", [([[0, 4]], "ground truth holds label 4"), ([[0, -1]], "label -1")])
def test_labels_outside_the_classes_are_refused(gt, what):
    with pytest.raises(ValueError, match=what):
        ConfusionMatrix(4).update(torch.zeros(1, 2, dtype=torch.long), torch.tensor(gt))
