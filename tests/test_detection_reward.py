"""The paper's detection reward (vrlhf/tasks/detection_reward.py) on hand-made cases, with the values its definition
gives (big_vision detection_reward.py: recall over IoU thresholds .5:.05:.95, duplicates at -0.3, nothing for a box
on nothing, class weights from smoothed frequencies), and the metric rewards as `vrlhf tune` calls them."""

from __future__ import annotations

import pytest
import torch

from vrlhf.tasks.detection_reward import class_weights, detection_reward, metric_reward


def box(coords, label="red circle", score=1.0):
    return {"box": [float(v) for v in coords], "label": label, "score": score}


TRUTH = [box([0, 0, 10, 10]), box([20, 20, 30, 30], "blue square")]


def test_perfect_set_earns_one_per_box():
    assert detection_reward(TRUTH, TRUTH) == pytest.approx(2.0)


def test_missed_box_earns_nothing_for_it():
    assert detection_reward(TRUTH[:1], TRUTH) == pytest.approx(1.0)
    assert detection_reward([], TRUTH) == 0.0


def test_duplicate_costs_0_3_where_it_overlaps_above_the_threshold():
    """A second box of IoU 0.72 on a found object: at the 5 thresholds below 0.72 it is a duplicate (1 - 0.3), at the
    5 above it is not counted (1): (5 * 0.7 + 5 * 1) / 10 = 0.85, whichever of the two comes first."""
    duplicate = box([0, 0, 10, 7.2])
    assert detection_reward([TRUTH[0], duplicate], TRUTH[:1]) == pytest.approx(0.85)
    assert detection_reward([duplicate, TRUTH[0]], TRUTH[:1]) == pytest.approx(0.85)
    assert detection_reward([TRUTH[0], TRUTH[0]], TRUTH[:1]) == pytest.approx(0.7)  # an exact copy: every threshold


def test_loose_box_earns_the_share_of_thresholds_below_its_iou():
    """IoU 100/130 = 0.769 clears .5, .55, .6, .65, .7, .75: 6 of 10 thresholds."""
    assert detection_reward([box([0, 0, 10, 13])], TRUTH[:1]) == pytest.approx(0.6)
    assert detection_reward([box([0, 0, 10, 19])], TRUTH[:1]) == pytest.approx(1 / 10)  # IoU .526: only .5
    assert detection_reward([box([0, 0, 10, 20])], TRUTH[:1]) == 0.0  # IoU .5 is not above .5


def test_wrong_class_and_a_box_on_nothing():
    assert detection_reward([box([0, 0, 10, 10], "green circle")], TRUTH[:1]) == 0.0
    assert detection_reward([TRUTH[0], box([40, 40, 45, 45])], TRUTH[:1]) == pytest.approx(1.0)  # recall-oriented


def test_class_weights_from_smoothed_frequencies():
    """3 boxes of A and 1 of B, smoothing 0.05 of 4: 1/3.2 and 1/1.2, scaled to mean 1: 2.4/4.4 and 6.4/4.4."""
    rows = [{"attributes": {"boxes": [{"bbox": [0, 0, 1, 1], "category": c}]}} for c in "AAAB"]
    weights = class_weights(rows)
    assert weights == pytest.approx({"A": 2.4 / 4.4, "B": 6.4 / 4.4})
    truth = [box([0, 0, 10, 10], "A"), box([20, 20, 30, 30], "B")]
    assert detection_reward(truth[1:], truth, weights) == pytest.approx(6.4 / 4.4)
    # a duplicate costs its own class's weight: 0.3 * w(A) at every threshold
    assert detection_reward([truth[0], truth[0]], truth, weights) == pytest.approx(2.4 / 4.4 * 0.7)


def test_confidence_target_is_the_iou_at_0_5():
    exact, loose = box([0, 0, 10, 10], score=0.5), box([0, 0, 10, 13], score=1.0)
    assert detection_reward([exact], TRUTH[:1], conf_w=0.3) == pytest.approx(1.0 - 0.3 * 0.25)
    assert detection_reward([loose], TRUTH[:1], conf_w=0.3) == pytest.approx(0.6 - 0.3 * (1 - 100 / 130) ** 2)
    on_nothing = box([40, 40, 45, 45], score=0.8)  # no match: its target is 0
    assert detection_reward([on_nothing], TRUTH[:1], conf_w=0.3) == pytest.approx(-0.3 * 0.64)


def test_metric_rewards_score_each_sample_against_its_row():
    rows = [{"id": "a", "attributes": {"boxes": [{"bbox": [0, 0, 10, 10], "category": "red circle"}]}},
            {"id": "b", "attributes": {"boxes": [{"bbox": [20, 20, 10, 10], "category": "red circle"}]}}]
    outputs = [[box([0, 0, 10, 10])], [box([0, 0, 10, 13])], [box([0, 0, 10, 10])], [box([20, 20, 30, 30])]]
    paper = metric_reward("detection_reward")(rows, outputs)  # k = 2 samples per row, image-major
    assert paper.dtype == torch.float32 and paper.tolist() == pytest.approx([1.0, 0.6, 0.0, 1.0])
    assert metric_reward("map")(rows, outputs).tolist() == pytest.approx([1.0, 0.6, 0.0, 1.0])
    with pytest.raises(Exception, match="unknown detection metric reward 'cider_d'"):
        metric_reward("cider_d")
