"""COCO box metrics (vrlhf/tasks/detection_metrics.py) against pycocotools' COCOeval on the same data, to 1e-6."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vrlhf.tasks.detection_metrics import box_iou, coco_metrics

CLASSES = ("red circle", "blue square", "green triangle", "purple circle")


def cocoeval(truths: list[list[dict]], predictions: list[list[dict]]) -> dict[str, float]:
    """mAP, AP50 and AR@100 from pycocotools on the same boxes, as COCO json ([x, y, w, h], image ids 1..N)."""
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    cat_id = {c: i + 1 for i, c in enumerate(CLASSES)}
    images = [{"id": i + 1, "width": 48, "height": 48} for i in range(len(truths))]
    flat = [(i + 1, b) for i, boxes in enumerate(truths) for b in boxes]
    anns = [{"id": n + 1, "image_id": image_id, "category_id": cat_id[b["label"]], "iscrowd": 0,
             "bbox": xywh(b["box"]), "area": area(b["box"])} for n, (image_id, b) in enumerate(flat)]
    results = [{"image_id": i + 1, "category_id": cat_id[b["label"]], "bbox": xywh(b["box"]), "score": b["score"]}
               for i, boxes in enumerate(predictions) for b in boxes]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:  # loadRes refuses an empty list: an empty result set, as COCOeval sees one
            dt.dataset = {"images": images, "annotations": [], "categories": cats}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": evaluator.stats[0], "ap50": evaluator.stats[1], "ar": evaluator.stats[8]}


def xywh(box):
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def random_box(rng, size=48.0):
    x0, y0 = rng.uniform(0, size - 4, 2)
    w, h = rng.uniform(2, 20, 2)
    return [float(x0), float(y0), float(x0 + w), float(y0 + h)]


def jitter(box, rng, amount):
    return [float(v + rng.normal(0, amount)) for v in box]


def random_set(rng, n_images=30):
    """True boxes and noisy predictions of them: jittered, reclassed, missed, duplicated, invented, quantised scores
    (ties), some images with no true box or no prediction."""
    truths, predictions = [], []
    for _ in range(n_images):
        truth = [{"box": random_box(rng), "label": CLASSES[rng.integers(len(CLASSES))], "score": 1.0}
                 for _ in range(rng.integers(0, 5))]
        predicted = []
        for b in truth:
            if rng.random() < 0.8:
                label = b["label"] if rng.random() < 0.85 else CLASSES[rng.integers(len(CLASSES))]
                predicted.append({"box": jitter(b["box"], rng, rng.uniform(0, 3)), "label": label,
                                  "score": float(np.round(rng.random(), 1))})
                if rng.random() < 0.3:  # a duplicate
                    predicted.append({**predicted[-1], "box": jitter(b["box"], rng, 1.0),
                                      "score": float(rng.random())})
        predicted += [{"box": random_box(rng), "label": CLASSES[rng.integers(len(CLASSES))],
                       "score": float(rng.random())} for _ in range(rng.integers(0, 3))]
        truths.append(truth)
        predictions.append(predicted)
    return truths, predictions


@pytest.mark.parametrize("seed", range(6))
def test_random_predictions_match_pycocotools(seed):
    truths, predictions = random_set(np.random.default_rng(seed))
    ours, theirs = coco_metrics(truths, predictions), cocoeval(truths, predictions)
    assert 0.05 < ours["map"] < 0.95  # a set where the numbers mean something, not all 0 or 1
    for key in ("map", "ap50", "ar"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def box(coords, label="red circle", score=1.0):
    return {"box": [float(v) for v in coords], "label": label, "score": score}


ADVERSARIAL = {
    "perfect": ([[box([1, 1, 10, 10]), box([20, 20, 30, 34], "blue square")]],
                [[box([1, 1, 10, 10], score=0.9), box([20, 20, 30, 34], "blue square", 0.8)]]),
    "duplicates of one box, equal scores": ([[box([1, 1, 10, 10])]],
                                            [[box([1, 1, 10, 10], score=0.5)] * 4 + [box([2, 1, 10, 10], score=0.5)]]),
    "a duplicate scored above the match": ([[box([1, 1, 10, 10])], [box([5, 5, 15, 15])]],
                                           [[box([3, 3, 12, 12], score=0.9), box([1, 1, 10, 10], score=0.3)],
                                            [box([5, 5, 15, 15], score=0.6)]]),
    "empty predictions": ([[box([1, 1, 10, 10])], [box([5, 5, 15, 15], "blue square")]], [[], []]),
    "empty ground truth in one image": ([[], [box([5, 5, 15, 15])]],
                                        [[box([1, 1, 10, 10], score=0.95)], [box([5, 5, 15, 16], score=0.5)]]),
    "out-of-image boxes": ([[box([40, 40, 48, 48]), box([0, 0, 6, 6], "blue square")]],
                           [[box([40, 40, 60, 55], score=0.7), box([-5, -4, 6, 6], "blue square", 0.6),
                             box([-20, -20, -5, -5], score=0.9)]]),
    "degenerate boxes": ([[box([1, 1, 10, 10])]], [[box([3, 3, 3, 9], score=0.9), box([1, 1, 10, 10], score=0.2),
                                                    box([12, 12, 8, 8], score=0.5)]]),
    "two true boxes tied for one detection": ([[box([0, 0, 10, 10]), box([10, 0, 20, 10])]],
                                              [[box([5, 0, 15, 10], score=0.9), box([0, 0, 10, 10], score=0.8)]]),
    "many classes, one found": ([[box([1, 1, 10, 10]), box([1, 20, 10, 30], "blue square"),
                                  box([20, 1, 30, 10], "green triangle")]], [[box([1, 1, 10, 10], score=0.5)]]),
    "over 100 detections in an image": ([[box([1, 1, 10, 10])]],
                                        [[box([30, 30, 35, 35], score=0.9)] * 100 + [box([1, 1, 10, 10], score=0.1)]]),
}


@pytest.mark.parametrize("case", ADVERSARIAL)
def test_adversarial_predictions_match_pycocotools(case):
    truths, predictions = ADVERSARIAL[case]
    ours, theirs = coco_metrics(truths, predictions), cocoeval(truths, predictions)
    for key in ("map", "ap50", "ar"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), (case, key)


def test_hand_computed_values():
    """Numbers from the definition: a perfect set scores 1; every box missed, 0; one of two classes found
    perfectly, 0.5; the 101-point interpolation of a detection ranked after a false positive."""
    truth = [[box([1, 1, 10, 10]), box([20, 20, 30, 34], "blue square")]]
    # (precision is tp / (tp + fp + machine epsilon), as COCOeval divides: 1 - 1e-16, not 1)
    assert coco_metrics(truth, truth) == pytest.approx({"map": 1.0, "ap50": 1.0, "ar": 1.0}, abs=1e-12)
    assert coco_metrics(truth, [[]]) == {"map": 0.0, "ap50": 0.0, "ar": 0.0}
    assert coco_metrics(truth, [[box([1, 1, 10, 10])]])["map"] == pytest.approx(0.5)
    # one class, one true box; a false positive scored above the match: precision 1/2 at every recall point
    ranked = coco_metrics([[box([1, 1, 10, 10])]], [[box([30, 30, 40, 40], score=0.9), box([1, 1, 10, 10], score=0.5)]])
    assert ranked == pytest.approx({"map": 0.5, "ap50": 0.5, "ar": 1.0})
    # IoU 0.64 (the box covers 64% of the true one): a match at thresholds .5, .55, .6 only: AP = 3/10
    loose = coco_metrics([[box([0, 0, 10, 10])]], [[box([0, 0, 10, 6.4])]])
    assert loose["map"] == pytest.approx(0.3) and loose["ap50"] == pytest.approx(1.0)


def test_box_iou_by_hand():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 10, 10]], [[20, 20, 30, 30]])[0, 0] == 0.0
    assert box_iou([[3, 3, 3, 9]], [[3, 3, 3, 9]])[0, 0] == 0.0  # zero area: no IoU, as COCO's masks API
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
