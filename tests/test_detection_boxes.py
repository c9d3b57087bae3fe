"""Detection boxes: the shapes' tight boxes from their geometry, and boxes <-> tokens in the paper's layout."""

from __future__ import annotations

import numpy as np
import pytest

from vrlhf.shapes import make_shapes, shape_masks
from vrlhf.tasks.detection_boxes import SHAPE_CLASSES, box_tokens, tokens_to_boxes, true_boxes, vocabulary

META = {"coord_bins": 49, "classes": list(SHAPE_CLASSES), "conf_levels": 10}


@pytest.mark.parametrize("size", [48, 24, 64])
def test_boxes_are_the_drawn_masks_extent(size):
    """Every shape's box from its geometry is the bounding box of the pixels drawn for it, at any image size."""
    rows = make_shapes(300, seed=3, size=size)
    checked = 0
    for row in rows:
        for b, mask in zip(true_boxes(row), shape_masks(row["attributes"]), strict=True):
            ys, xs = np.nonzero(mask)
            assert b["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], (row["id"], b)
            checked += 1
    assert checked > 500


def test_classes_are_colour_and_kind():
    row = make_shapes(1, seed=0)[0]
    assert [b["label"] for b in true_boxes(row)] == [f"{s['colour']} {s['kind']}" for s in row["attributes"]["shapes"]]
    assert len(SHAPE_CLASSES) == 18


def test_coco_style_boxes_from_attributes():
    row = {"id": "x", "image": None, "captions": [],
           "attributes": {"boxes": [{"bbox": [10, 5, 20, 8], "category": "dog"}]}}
    assert true_boxes(row) == [{"box": [10, 5, 30, 13], "label": "dog", "score": 1.0}]


def test_tokens_in_the_papers_layout():
    """y0 x0 y1 x1 class confidence per box; coordinates in bins of the side, then the class, then the level."""
    vocab = vocabulary(META)
    boxes = [{"box": [2, 4, 12, 30], "label": "blue square", "score": 1.0},
             {"box": [0, 47, 48, 48], "label": "red circle", "score": 0.3}]
    tokens = box_tokens(boxes, META, 48, 48)
    assert tokens == [4, 2, 30, 12, vocab["class"] + SHAPE_CLASSES.index("blue square"), vocab["conf"] + 9,
                      47, 0, 48, 48, vocab["class"] + 0, vocab["conf"] + 2]
    decoded, finished = tokens_to_boxes(tokens + [vocab["eos"], vocab["pad"]], META, 48, 48)
    assert finished and decoded == [{**b, "box": [float(v) for v in b["box"]]} for b in boxes]


def test_decoding_stops_at_eos_and_drops_a_cut_box():
    vocab = vocabulary(META)
    one = box_tokens([{"box": [1, 2, 3, 4], "label": "red circle", "score": 1.0}], META, 48, 48)
    boxes, finished = tokens_to_boxes(one + one[:3] + [vocab["eos"]] + one, META, 48, 48)
    assert len(boxes) == 1 and finished
    boxes, finished = tokens_to_boxes(one + one[:2], META, 48, 48)  # the budget ran out: no EOS
    assert len(boxes) == 1 and not finished


def test_wrong_kind_of_token_is_clipped_into_its_slot():
    """As big_vision's seq2box: a class token as a coordinate reads as the last bin, a coordinate as a class the
    first class, and x1 < x0 is put in order."""
    vocab = vocabulary(META)
    tokens = [vocab["class"] + 3, 40, 0, 10, 5, 7]  # y0 = a class token, x0 = 40 > x1 = 10, class = a coordinate
    (b,), _ = tokens_to_boxes(tokens, META, 48, 48)
    assert b["box"] == [10.0, 0.0, 40.0, 48.0]
    assert b["label"] == SHAPE_CLASSES[0] and b["score"] == pytest.approx(0.1)


def test_coordinates_scale_to_other_image_sizes():
    meta = {**META, "coord_bins": 101}
    tokens = box_tokens([{"box": [64, 32, 128, 96], "label": "red circle", "score": 1.0}], meta, 256, 128)
    (b,), _ = tokens_to_boxes(tokens, meta, 256, 128)
    assert b["box"] == pytest.approx([64, 32, 128, 96], abs=256 / 200)


def test_a_datasets_objects_column_is_read_as_coco_boxes():
    """A Hugging Face detection dataset's row keeps its `objects` column (vrlhf.data passes columns through)."""
    row = {"id": "7", "attributes": None, "objects": {"bbox": [[1, 2, 3, 4], [10, 10, 5, 5]], "category": [2, 0]}}
    assert true_boxes(row) == [{"box": [1, 2, 4, 6], "label": "2", "score": 1.0},
                               {"box": [10, 10, 15, 15], "label": "0", "score": 1.0}]
