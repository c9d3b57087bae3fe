"""COCO box metrics in numpy: mAP@[.5:.95], AP50 and AR@100, computed exactly as pycocotools' COCOeval does.

Predictions and ground truth are per image lists of boxes `{"box": [x0, y0, x1, y1], "label", "score"}`
(vrlhf/tasks/detection_boxes.py). COCOeval's conventions, kept here (tests/test_detection_metrics.py compares
with pycocotools on random and adversarial sets to 1e-6):

* IoU of boxes as areas (COCO json `[x, y, w, h]`, no +1 pixel): boxes outside the image are not clipped;
* per image and class, detections by score (a stable sort: ties keep their order), at most `max_dets` (100);
  each detection in turn takes the unmatched true box of highest IoU >= the threshold (a tie: the later box);
* per class, detections of every image pooled by score (stable, images in order); precision made monotone and
  read at 101 recall points (0, 0.01, ..., 1), 0 past the last recall reached;
* AP is the mean over classes that have a true box and over the 10 IoU thresholds .5:.05:.95; AR@100 the mean of
  each class's final recall; a class with no true box is left out (no class at all: -1, as COCOeval prints).

Only the area range "all" ([0, 1e10]) is computed (the shapes are all small by COCO's 32² rule, and the paper
reports mAP); as in COCOeval, a box with x1 < x0 or y1 < y0 has a negative area outside that range, so it is ignored
(a true one, and a detection that matches nothing). Our decoded boxes always have their edges in order.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of boxes (x0, y0, x1, y1); widths below 0 count as 0, as COCO's [x, y, w, h] would."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area(boxes: list) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _match(ious: np.ndarray, truth_ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(matched, ignored), each (thresholds, detections) bool, by COCOeval's rule: detections in score order, true
    boxes with the ignored ones last; a detection matched to an ignored true box is ignored."""
    matched = np.zeros((len(IOU_THRESHOLDS), ious.shape[0]), bool)
    ignored = np.zeros_like(matched)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(ious.shape[1], bool)
        for d in range(ious.shape[0]):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(ious.shape[1]):
                if taken[g]:
                    continue
                if m > -1 and not truth_ignored[m] and truth_ignored[g]:
                    break  # a match to a counted box is never traded for an ignored one
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m], matched[t, d], ignored[t, d] = True, True, truth_ignored[m]
    return matched, ignored


def coco_metrics(truths: list[list[dict]], predictions: list[list[dict]], max_dets: int = 100) -> dict[str, float]:
    """{"map", "ap50", "ar"}: COCO mAP@[.5:.95], AP at IoU .5 and AR@max_dets over the images (lists in step)."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} images of true boxes but {len(predictions)} of predictions")
    classes = sorted({b["label"] for boxes in truths for b in boxes})
    precision = np.full((len(IOU_THRESHOLDS), len(RECALL_POINTS), len(classes)), np.nan)
    recall = np.full((len(IOU_THRESHOLDS), len(classes)), np.nan)
    for c, label in enumerate(classes):
        scores, counted, n_true = [], [], 0
        for truth, predicted in zip(truths, predictions):
            gt = [b["box"] for b in truth if b["label"] == label]
            # COCO's area range "all" is [0, 1e10]: an inverted box (negative area) lies outside it and is ignored
            gt_ignored = _area(gt) < 0
            gt = [gt[i] for i in np.argsort(gt_ignored, kind="mergesort")]
            gt_ignored = np.sort(gt_ignored, kind="mergesort")
            dt = [b for b in predicted if b["label"] == label]
            dt = [dt[i] for i in np.argsort([-b["score"] for b in dt], kind="mergesort")[:max_dets]]
            n_true += int((~gt_ignored).sum())
            if dt:
                matched, ignored = _match(box_iou([b["box"] for b in dt], gt), gt_ignored)
                ignored |= ~matched & (_area([b["box"] for b in dt]) < 0)  # unmatched and outside the area range
                scores.append([b["score"] for b in dt])
                counted.append(np.stack([matched & ~ignored, ~matched & ~ignored]))  # (2, thresholds, dets)
        if n_true == 0:
            continue  # COCOeval leaves the class out (-1)
        precision[..., c], recall[:, c] = 0.0, 0.0
        if not scores:
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        tps, fps = np.concatenate(counted, axis=2)[:, :, order]
        tp, fp = np.cumsum(tps, axis=1).astype(float), np.cumsum(fps, axis=1).astype(float)
        for t in range(len(IOU_THRESHOLDS)):
            if tp.shape[1] == 0:
                continue
            rc, pr = tp[t] / n_true, tp[t] / (fp[t] + tp[t] + np.spacing(1))
            recall[t, c] = rc[-1]
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision made monotone from the right
            at = np.searchsorted(rc, RECALL_POINTS, side="left")
            inside = at < len(pr)
            precision[t, inside, c] = pr[at[inside]]
    if np.isnan(recall).all():
        return {"map": -1.0, "ap50": -1.0, "ar": -1.0}
    return {"map": float(np.nanmean(precision)), "ap50": float(np.nanmean(precision[0])),
            "ar": float(np.nanmean(recall))}
