"""Simulated box annotators (vrlhf/tasks/box_annotators.py): people's habits, measured, deterministic per row."""

from __future__ import annotations

import numpy as np
import pytest

from vrlhf.shapes import make_shapes, shapes_row
from vrlhf.tasks.box_annotators import CONFUSIONS, annotated_boxes
from vrlhf.tasks.detection_boxes import true_boxes
from vrlhf.tasks.detection_metrics import box_iou

ROWS = make_shapes(600, seed=3)


@pytest.fixture(scope="module")
def stats():
    """Each exact box matched to the drawn box of the highest IoU (> 0.3): edge moves, misses, hues, duplicates."""
    moves, ious, small, missed, hue, dups, boxes = [], [], [], [], [], 0, 0
    for row in ROWS:
        drawn = annotated_boxes(row)
        boxes += len(drawn)
        for shape, exact in zip(row["attributes"]["shapes"], true_boxes(row), strict=True):
            overlap = box_iou([b["box"] for b in drawn], [exact["box"]])[:, 0] if drawn else np.zeros(0)
            small.append(shape["size"] == "small")
            missed.append(not (overlap > 0.3).any())
            if missed[-1]:
                continue
            dups += int((overlap > 0.3).sum()) - 1
            b = drawn[int(overlap.argmax())]
            ious.append(overlap.max())
            (x0, y0, x1, y1), (e0, f0, e1, f1) = b["box"], exact["box"]
            moves += [e0 - x0, f0 - y0, x1 - e1, y1 - f1]  # > 0: the edge lies outside the shape
            if b["label"] != exact["label"]:
                hue.append((exact["label"].split()[0], b["label"].split()[0], b["label"].split()[1] == shape["kind"]))
    return dict(moves=np.array(moves), ious=np.array(ious), small=np.array(small), missed=np.array(missed), hue=hue,
                dups=dups, shapes=len(small))


def test_annotation_is_deterministic_per_row_id():
    row = ROWS[17]
    again = shapes_row(17, seed=3)
    assert annotated_boxes(row) == annotated_boxes(again) == annotated_boxes(dict(row))
    # other ids, other drags: the same shapes under another id are (almost surely somewhere) drawn differently
    renamed = [dict(r, id=f"other-{r['id']}") for r in ROWS[:50]]
    assert [annotated_boxes(r) for r in renamed] != [annotated_boxes(r) for r in ROWS[:50]]


def test_edges_are_loose_more_often_than_tight(stats):
    moves = stats["moves"]
    share = {m: float((moves == m).mean()) for m in (-1, 0, 1, 2)}
    assert moves.min() >= -1 and moves.max() <= 2  # at most 1 px into the shape, 2 px out (less at the image edge)
    assert 0.45 < share[1] < 0.6 and 0.1 < share[2] < 0.22 and 0.18 < share[0] < 0.32 and 0.03 < share[-1] < 0.1
    assert max(share, key=share.get) == 1  # the mode is one pixel loose: greedy decoding of an MLE model is loose
    assert 0.72 < stats["ious"].mean() < 0.83


def test_small_shapes_are_left_out_far_more_often(stats):
    small, missed = stats["small"], stats["missed"]
    assert 0.12 < missed[small].mean() < 0.3
    assert missed[~small].mean() < 0.04


def test_hue_confusions_are_rare_and_neighbouring(stats):
    assert 0.02 < len(stats["hue"]) / stats["shapes"] < 0.09
    assert all(kind_kept and wrong in CONFUSIONS["colour"][right] for right, wrong, kind_kept in stats["hue"])


def test_duplicates_are_rare_but_present(stats):
    assert 0.005 < stats["dups"] / stats["shapes"] < 0.05


def test_rows_without_shapes_keep_their_boxes():
    row = {"id": "coco-1", "attributes": {"boxes": [{"bbox": [1, 2, 3, 4], "category": "cat"}]}}
    assert annotated_boxes(row) == true_boxes(row) == [{"box": [1, 2, 4, 6], "label": "cat", "score": 1.0}]
