"""The detection task (vrlhf/tasks/detection.py) and its simulated annotator (detection_oracle.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vrlhf.errors import DataError, ModelError
from vrlhf.shapes import make_shapes
from vrlhf.tasks import detection as task
from vrlhf.tasks import detection_oracle as oracle
from vrlhf.tasks.box_annotators import annotated_boxes
from vrlhf.tasks.detection_boxes import true_boxes

ROWS = make_shapes(12, seed=6)
TINY = dict(patch_size=8, hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)


@pytest.fixture(scope="module")
def policy():
    return task.new_policy(ROWS, **TINY)


def test_reference_tokens_decode_to_the_annotated_boxes(policy):
    tokens, mask = task.reference_tokens(policy, ROWS)
    drawn = [annotated_boxes(r) for r in ROWS]  # the MLE target: what the simulated annotators drew
    assert tokens.shape[1] == 6 * max(map(len, drawn)) + 1
    assert mask.sum(1).tolist() == [6 * len(d) + 1 for d in drawn]  # six per box, then EOS
    decoded = task.decode(policy, ROWS, tokens)
    for boxes, expected in zip(decoded, drawn):
        assert boxes.finished
        assert sorted(map(str, boxes)) == sorted(map(str, expected))  # exact: every pixel edge is a bin
    assert any(sorted(map(str, d)) != sorted(map(str, true_boxes(r))) for r, d in zip(ROWS, drawn))


def test_sampled_tokens_decode_and_log_probs_are_exact(policy):
    pixels = task.pixel_values(policy, [r["image"] for r in ROWS[:3]])
    assert pixels.shape == (3, 3, 48, 48) and -1 <= pixels.min() and pixels.max() <= 1
    samples = policy.sample(pixels, k=2)
    outputs = task.decode(policy, ROWS[:3], samples.tokens, k=2)
    assert len(outputs) == 6 and all(isinstance(o, task.Detections) for o in outputs)
    again = policy.log_prob(pixels, samples.tokens, samples.mask, k=2)
    assert torch.allclose(again, samples.log_probs, atol=1e-4)


def test_ideal_outputs_score_best_with_the_oracle_and_the_metrics(policy):
    ideal = task.ideal_outputs(policy, ROWS)
    rng = np.random.default_rng(0)
    worse = [oracle.corrupt(r, rng) for r in ROWS]
    assert [oracle.score(r, o) for r, o in zip(ROWS, ideal)] == [len(true_boxes(r)) for r in ROWS]
    assert all(oracle.score(r, i) >= oracle.score(r, w) for r, i, w in zip(ROWS, ideal, worse))
    metrics = task.eval_metrics(ROWS, ideal)
    assert metrics["map"] == pytest.approx(1.0) and metrics["ar"] == 1.0
    assert metrics["oracle_score"] == pytest.approx(np.mean([len(true_boxes(r)) for r in ROWS]))
    assert task.eval_metrics(ROWS, worse)["map"] < 0.9


def test_stored_text_round_trips_and_bad_text_is_one_line():
    boxes = task.Detections([{"box": [1.0, 2.0, 3.5, 4.0], "label": "red circle", "score": 0.7}])
    assert task.from_stored(task.to_stored(boxes), ROWS[0]) == boxes
    with pytest.raises(DataError, match="not a stored box set"):
        task.from_stored("a red circle", ROWS[0])


def test_render_draws_the_boxes_over_an_upscaled_input():
    row = ROWS[0]
    plain, drawn = task.render(row, []), task.render(row, true_boxes(row)[:1])
    assert plain.size == (384, 384) and drawn.size == plain.size  # 8x: readable on a phone
    assert np.array_equal(np.asarray(plain), np.asarray(row["image"].resize((384, 384), 0)))
    changed = np.any(np.asarray(drawn) != np.asarray(plain), axis=2)
    x0, y0, x1, y1 = (int(v * 8) for v in true_boxes(row)[0]["box"])
    assert changed[y0 + 4 : y1 - 4, x0].all() and not changed[y0 + 4 : y1 - 4, x0 + 6 : x1 - 6].any()  # an outline


def test_render_labels_each_box_as_the_font_draws_it():
    """The labels come from a cache of drawn patches: the pixels must be the font's own text on a black plate, in the
    box's colour, wherever the box is (near the top edge the label goes below it)."""
    from PIL import ImageDraw, ImageFont

    row = ROWS[0]
    boxes = [{"box": [6, 12, 30, 40], "label": "red circle", "score": 0.7},
             {"box": [2, 0, 20, 9], "label": "blue square", "score": 1.0}]
    expected = row["image"].convert("RGB").resize((384, 384), 0)
    draw, font = ImageDraw.Draw(expected), ImageFont.load_default(size=16)
    for b, colour in zip(boxes, task.BOX_COLOURS):
        x0, y0, x1, y1 = (v * 8 for v in b["box"])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        tx, ty = x0, (y0 - 20 if y0 >= 20 else y1 + 2)
        text = f"{b['label']} {b['score']:.1f}"
        plate = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([plate[0] - 2, plate[1] - 2, plate[2] + 2, plate[3] + 2], fill="black")
        draw.text((tx, ty), text, fill=colour, font=font)
    for _ in range(2):  # drawn, then from the cache
        assert np.array_equal(np.asarray(task.render(row, boxes)), np.asarray(expected))


def test_render_draws_boxes_of_zero_width_and_outside_the_image():
    boxes = [{"box": [10.0, 10.0, 10.0, 20.0], "label": "red circle", "score": 0.5},
             {"box": [40.0, -3.0, 60.0, 5.0], "label": "blue square", "score": 1.0}]
    assert task.render(ROWS[0], boxes).size == (384, 384)


def test_model_view_outlines_each_box_on_its_edge_pixels_at_the_input_resolution():
    row = ROWS[0]
    box = {"box": [5.0, 8.0, 20.0, 30.0], "label": "red circle", "score": 0.7}  # pixels 5..19 x 8..29
    plain, view = np.asarray(row["image"].convert("RGB"), dtype=float), np.asarray(task.model_view(row, [box]), float)
    assert view.shape == plain.shape  # the input's own 48 px: no upscaling, no text
    changed = np.any(view != plain, axis=2)
    expected = np.zeros_like(changed)
    expected[[8, 29], 5:20] = expected[8:30, [5, 19]] = True
    assert np.array_equal(changed, expected)
    odd = (np.add.outer(np.arange(48), np.arange(48)) % 2).astype(bool)
    red, white = np.array([255.0, 0, 0]), np.array([255.0, 255, 255])  # "red", then a circle's white, alternating
    assert np.allclose(view[expected & ~odd], np.rint(0.5 * plain[expected & ~odd] + 0.5 * red))
    assert np.allclose(view[expected & odd], np.rint(0.5 * plain[expected & odd] + 0.5 * white))


def test_model_view_tells_the_classes_and_a_duplicate_apart_and_ignores_the_confidence():
    row = ROWS[0]
    box = {"box": [5.0, 8.0, 20.0, 30.0], "label": "red circle", "score": 0.7}
    view = lambda *boxes: np.asarray(task.model_view(row, list(boxes)))  # noqa: E731
    base = view(box)
    for other in ({**box, "label": "blue circle"}, {**box, "label": "red square"}, {**box, "label": "dog"}):
        assert not np.array_equal(view(other), base), other["label"]
    assert not np.array_equal(view(box, box), base)  # the second box darkens the outline towards its colours
    assert np.array_equal(view({**box, "score": 0.1}), base)
    outside = {"box": [40.0, -3.0, 60.0, 5.0], "label": "blue square", "score": 1.0}
    assert task.model_view(row, [outside, {**box, "box": [10.0, 10.0, 10.0, 20.0]}]).size == (48, 48)


def test_transplant_keeps_the_boxes():
    other = true_boxes(ROWS[1])
    assert list(task.transplant(other, ROWS[0])) == other


def test_a_colorizer_is_refused_in_one_line():
    from vrlhf import REPO

    with pytest.raises(ModelError, match="this policy is a colorization policy; the detection task needs a detector"):
        task.load_policy(REPO / "data/demo/colorizer")


def test_rows_without_boxes_are_named():
    assert task.row_problem({"id": "x", "attributes": None}).startswith("no boxes")
    assert task.row_problem(ROWS[0]) is None


# ---- the oracle -------------------------------------------------------------------------------------------------
def _box(coords, label):
    return {"box": [float(v) for v in coords], "label": label, "score": 1.0}


def test_oracle_terms_by_hand():
    """One shape: a perfect box 1; IoU 0.8 costs 2 * 0.2; a wrong colour 0.75; a duplicate 0.75; a box on nothing
    0.5; no box at all 1 (the missed shape)."""
    row = make_shapes(40, seed=2)[[len(r["attributes"]["shapes"]) for r in make_shapes(40, seed=2)].index(1)]
    (truth,) = true_boxes(row)
    x0, y0, x1, y1 = truth["box"]
    colour, kind = truth["label"].split()
    assert oracle.score(row, [truth]) == 1.0
    loose = _box([x0, y0, x1, y1 + (y1 - y0) / 4], truth["label"])  # IoU 1 / 1.25 = 0.8
    assert oracle.score(row, [loose]) == pytest.approx(1 - 2 * 0.2)
    other = "blue" if colour != "blue" else "red"
    assert oracle.score(row, [_box(truth["box"], f"{other} {kind}")]) == pytest.approx(0.25)
    assert oracle.score(row, [truth, loose]) == pytest.approx(1 - 0.75)
    far = [0.0, 0.0, 3.0, 3.0] if x0 > 10 or y0 > 10 else [44.0, 44.0, 47.0, 47.0]
    assert oracle.score(row, [truth, _box(far, truth["label"])]) == pytest.approx(0.5)
    assert oracle.score(row, []) == -1.0
    assert oracle.components(row, [truth, loose]) == {"matched": 1, "mean_iou": 1.0, "wrong_attributes": 0,
                                                      "missed": 0, "duplicates": 1, "spurious": 0}


def test_oracle_regions_sum_to_the_score_and_marks_point_at_bad_boxes():
    rng = np.random.default_rng(1)
    rows = make_shapes(30, seed=4)
    for row in rows:
        output = oracle.corrupt(row, rng)
        assert oracle.regions(row, output).sum() == pytest.approx(oracle.score(row, output))
        assert len(oracle.regions(row, output)) == len(output) + 1  # one per box, then the missed shapes
    row = rows[0]
    missing = oracle.corrupt(row, rng, ("drop",))
    points = oracle.mark(row, missing, np.random.default_rng(0)).get("points", [])
    centres = [[(b["box"][0] + b["box"][2]) / 96, (b["box"][1] + b["box"][3]) / 96] for b in true_boxes(row)]
    assert all(p in np.round(centres, 4).tolist() for p in points) and points  # the missed shapes' centres
    assert oracle.mark(row, true_boxes(row), rng) == {}


def test_oracle_is_calibrated_and_prefers_the_truth():
    rows = make_shapes(300, seed=1)
    rng = np.random.default_rng(0)
    a, b = [oracle.corrupt(r, rng) for r in rows], [oracle.corrupt(r, rng) for r in rows]
    assert 0.82 <= oracle.self_agreement(rows, a, b) <= 0.92  # docs/ORACLES.md: 0.87
    for edit in oracle.EDITS:
        worse = [oracle.corrupt(r, rng, (edit,)) for r in rows[:50]]
        assert np.mean([oracle.prefer(r, true_boxes(r), w) for r, w in zip(rows, worse)]) > 0.8, edit
    ranking = oracle.rank(rows[0], [b[0], true_boxes(rows[0]), []], rng)
    assert sorted(ranking) == [0, 1, 2] and ranking[-1] == 2 or oracle.score(rows[0], b[0]) < -1


def test_token_rewards_give_each_box_its_six_tokens_and_the_end_its_eos(policy):
    """Box j's value split over tokens 6j..6j+5, the missed shapes' cost on EOS; a box cut short by EOS gets
    nothing (decode drops it)."""
    eos = policy.eos_token_id
    ones = [[0, 0, 10, 10, 49, 67]] * 2
    tokens = torch.tensor([sum(ones, []) + [eos] + [policy.pad_token_id] * 4,
                           sum(ones, [])[:6] + [1, 2, 3, eos] + [policy.pad_token_id] * 7])
    outputs = task.decode(policy, [ROWS[0], ROWS[1]], tokens)
    assert [len(o) for o in outputs] == [2, 1]
    shares = task.token_rewards(policy, tokens, outputs, [np.array([0.6, -1.2, -1.0]), np.array([0.3, -2.0])])
    assert shares[0, :6].tolist() == pytest.approx([0.1] * 6) and shares[0, 6:12].tolist() == pytest.approx([-0.2] * 6)
    assert shares[0, 12] == pytest.approx(-1.0) and shares[1, 9] == pytest.approx(-2.0)
    assert shares[1, 6:9].tolist() == [0.0, 0.0, 0.0]
    assert shares.sum(1).tolist() == pytest.approx([-1.6, -1.7])


def test_rows_of_a_datasets_detection_dataset_load_with_their_boxes():
    """A `datasets.Dataset` with an `objects` column (the Hub's detection layout) loads through vrlhf.data as it is,
    and the task reads its boxes."""
    import datasets

    from vrlhf.data import load_rows

    features = datasets.Features({"image": datasets.Image(), "objects": {
        "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
        "category": datasets.Sequence(datasets.ClassLabel(names=["cat", "dog"]))}})
    data = datasets.Dataset.from_dict({"image": [ROWS[0]["image"]], "objects": [
        {"bbox": [[2.0, 3.0, 10.0, 12.0]], "category": [1]}]}, features=features)
    (row,) = load_rows(data, check=task.row_problem)
    assert true_boxes(row) == [{"box": [2.0, 3.0, 12.0, 15.0], "label": "dog", "score": 1.0}]  # ClassLabel: its name
