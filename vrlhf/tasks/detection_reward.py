"""The paper's detection reward (Pinto et al. 2023; big_vision `configs/proj/reward_tune/detection_reward.py`), and
COCO mAP per image, as the detection task's metric rewards for `vrlhf tune`.

At each IoU threshold t of .5:.05:.95, with IoU counted only above t and between boxes of the same class:

1. each predicted box keeps only its best true box (the first of equal IoUs);
2. each true box takes the predicted box of highest IoU left to it (the first of equal IoUs): a match;
3. reward_t = sum over matched true boxes of w(class)                       (recall, weighted by class rarity)
            - NMS_W · sum over the other (predicted, true) pairs left with IoU > t of w(predicted class)
                                                                                (duplicates: a second box on a found
                                                                                 object; a box on nothing costs 0)

and the reward is the mean over thresholds: a true box found with IoU u earns w · (number of thresholds below u)/10.
Class weights w = 1 / (count + CLS_SMOOTH · total count) over the training rows' boxes, scaled to average 1 over the
classes (all 1 without training rows). Confidence plays no part in the reward; the paper teaches it with a loss
towards each box's IoU at threshold .5 (match_iou). `detection_reward_conf` adds that target as a reward instead
(our tuner's loss is REINFORCE for every task): - CONF_W · sum over predicted boxes of (score - match_iou)², a
proper scoring rule, best in expectation when the score is the box's expected IoU.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from vrlhf.errors import ConfigError
from vrlhf.tasks.detection_boxes import true_boxes
from vrlhf.tasks.detection_metrics import IOU_THRESHOLDS, box_iou, coco_metrics

NMS_W = 0.3  # weight of a duplicate (the paper's nms_w)
CLS_SMOOTH = 0.05  # class-frequency smoothing (the paper's cls_smooth)
CONF_W = 0.3  # weight of the confidence target (the paper's conf_w)
CORRECT_THR = 0.5  # the threshold whose match_iou the confidence learns (the paper's correct_thr)
NAMES = ("map", "detection_reward", "detection_reward_conf")


def class_weights(train_rows: list[dict] | None, smooth: float = CLS_SMOOTH) -> dict[str, float]:
    """{class: weight}: inversely proportional to the smoothed frequency of its boxes in `train_rows`, mean 1."""
    counts = Counter(b["label"] for row in train_rows or [] for b in true_boxes(row))
    if not counts:
        return {}
    raw = {label: 1.0 / (n + smooth * sum(counts.values())) for label, n in counts.items()}
    scale = len(raw) / sum(raw.values())
    return {label: w * scale for label, w in raw.items()}


def reward_at(predicted: list[dict], truth: list[dict], threshold: float, weights: dict[str, float],
              nms_w: float = NMS_W) -> dict:
    """The reward's parts at one IoU threshold: `reward`, `matches`, `nms_penalty`, `match_iou` (per predicted box)."""
    weight = lambda label: weights.get(label, 1.0) if weights else 1.0  # noqa: E731
    ious = box_iou([b["box"] for b in predicted], [b["box"] for b in truth])  # (P, T)
    ious = np.where(ious > threshold, ious, 0.0)
    same_class = np.array([[p["label"] == t["label"] for t in truth] for p in predicted], bool).reshape(ious.shape)
    ious = ious * same_class
    if ious.size:
        keep = np.zeros_like(ious, bool)  # each predicted box keeps its best true box only
        keep[np.arange(len(predicted)), ious.argmax(axis=1)] = True
        ious = ious * keep
    best = ious.argmax(axis=0) if ious.size else np.zeros(len(truth), int)  # each true box's best predicted box
    matched = ious[best, np.arange(len(truth))] > 0 if ious.size else np.zeros(len(truth), bool)
    match_reward = sum(weight(t["label"]) for t, m in zip(truth, matched) if m)
    chosen = np.zeros_like(ious, bool)
    chosen[best[matched], np.nonzero(matched)[0]] = True
    penalty = sum(weight(predicted[p]["label"]) for p, _ in zip(*np.nonzero((ious > 0) & ~chosen)))
    return {"reward": match_reward - nms_w * penalty, "matches": int(matched.sum()), "nms_penalty": float(penalty),
            "match_iou": ious.sum(axis=1)}


def detection_reward(predicted: list[dict], truth: list[dict], weights: dict[str, float] | None = None,
                     nms_w: float = NMS_W, conf_w: float = 0.0) -> float:
    """The paper's reward of one box set (the mean over IoU thresholds), plus the confidence target if conf_w > 0."""
    parts = [reward_at(predicted, truth, t, weights or {}, nms_w) for t in IOU_THRESHOLDS]
    reward = float(np.mean([p["reward"] for p in parts]))
    if conf_w:
        match_iou = reward_at(predicted, truth, CORRECT_THR, weights or {}, nms_w)["match_iou"]
        scores = np.array([b["score"] for b in predicted], float)
        reward -= conf_w * float(((scores - match_iou) ** 2).sum())
    return reward


def image_map(predicted: list[dict], truth: list[dict]) -> float:
    """COCO mAP@[.5:.95] of one image's box set (0 for an image with no true box)."""
    return max(0.0, coco_metrics([truth], [list(predicted)])["map"])


def metric_reward(name: str, train_rows: list[dict] | None = None):
    """A RewardFn `fn(rows, outputs) -> Tensor[len(outputs)]`: `map`, `detection_reward` or `detection_reward_conf`."""
    if name not in NAMES:
        raise ConfigError(f"unknown detection metric reward {name!r}; available: {', '.join(NAMES)}")
    weights = class_weights(train_rows)

    def reward(rows, outputs):
        k = len(outputs) // len(rows)
        values = []
        for i, output in enumerate(outputs):
            truth = true_boxes(rows[i // k])
            if name == "map":
                values.append(image_map(output, truth))
            else:
                values.append(detection_reward(output, truth, weights, conf_w=CONF_W * (name.endswith("_conf"))))
        return torch.tensor(values, dtype=torch.float32)

    reward.__name__ = name
    return reward
