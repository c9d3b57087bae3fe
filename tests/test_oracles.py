"""Simulated annotators: the truth wins, errors cost what docs/ORACLES.md says, judgements follow Bradley-Terry."""

import math

import numpy as np
import pytest
from PIL import Image

from vrlhf.shapes import caption, make_shapes, shape_mask
from vrlhf.tasks import caption_oracle as CO
from vrlhf.tasks import colorization_oracle as IO

ROWS = make_shapes(200, seed=3, references="complete")  # every reference states the whole truth
MULTI = [r for r in ROWS if len(r["attributes"]["shapes"]) > 1]


def edited(row, index=0, **changes):
    shapes = [dict(s) for s in row["attributes"]["shapes"]]
    shapes[index].update(changes)
    return shapes


# ------------------------------------------------------------------------------------------ captions
def test_reference_captions_score_one_per_shape():
    for row in ROWS:
        for text in row["captions"]:
            assert CO.score(row, text) == pytest.approx(len(row["attributes"]["shapes"])), text


@pytest.mark.parametrize("slot, other", [("colour", {"red": "blue"}), ("kind", {"circle": "square"}),
                                         ("size", {"small": "large"}), ("position", {"left": "right"})])
def test_one_false_attribute_costs_exactly_its_credit_plus_the_penalty(slot, other):
    rng = np.random.default_rng(0)
    for row in ROWS[:60]:
        value = row["attributes"]["shapes"][0][slot]
        wrong = other.get(value) or next(iter(other))
        if wrong == value:
            continue
        text = caption(edited(row, **{slot: wrong}), rng)
        truth = row["captions"][0]
        assert CO.score(row, truth) - CO.score(row, text) == pytest.approx(CO.TRUE + CO.FALSE), text
        assert CO.prefer(row, truth, text) > 0.85


def test_missing_shapes_repeats_and_stutters_lose():
    rng = np.random.default_rng(1)
    for row in MULTI[:40]:
        truth = row["captions"][0]
        dropped = caption(row["attributes"]["shapes"][1:], rng)
        assert CO.score(row, truth) - CO.score(row, dropped) == pytest.approx(4 * CO.TRUE + CO.MISSING)
        first = " ".join(truth.split()[:7])  # a 7-word phrase: some shape, possibly with its position cut
        assert CO.score(row, truth + " and " + truth) < CO.score(row, truth)
        stutter = truth.split()[0] + " " + truth
        extra = CO.components(row, stutter)["extra_words"]  # a 24-word caption also gets too long
        assert CO.score(row, truth) - CO.score(row, stutter) == pytest.approx(CO.STUTTER + CO.EXTRA * extra)
        assert CO.score(row, first) < CO.score(row, truth)


def test_garbage_never_crashes_and_never_beats_the_truth():
    row = MULTI[0]
    for text in ["", None, "a a a a", "zzz qq", "red red red red red", "circle " * 40, "a big", "\x00\n\t!?",
                 " ".join(np.random.default_rng(2).choice(["a", "red", "big", "circle", "left", "the"], 30))]:
        assert math.isfinite(CO.score(row, text)) and CO.score(row, text) < CO.score(row, row["captions"][0])


def test_caption_prefer_is_bradley_terry():
    row, rng = MULTI[0], np.random.default_rng(3)
    a, b = row["captions"][0], CO.corrupt(row, rng, ("attribute",))
    assert CO.prefer(row, a, b) + CO.prefer(row, b, a) == pytest.approx(1.0, abs=1e-12)
    expected = 1 / (1 + math.exp(-(CO.score(row, a) - CO.score(row, b)) / 0.3))
    assert CO.prefer(row, a, b, temperature=0.3) == pytest.approx(expected)
    assert CO.prefer(row, a, a) == 0.5


def test_judge_frequencies_match_prefer_and_ties_are_ties():
    rng = np.random.default_rng(4)
    row = MULTI[1]
    truth, one_error = row["captions"][0], CO.corrupt(row, rng, ("attribute",))
    for temperature in (0.6, 1.5, 3.0):
        p = CO.prefer(row, truth, one_error, temperature)
        draws = [CO.judge(row, truth, one_error, rng, temperature) for _ in range(3000)]
        assert set(draws) <= {0.0, 1.0} and np.mean(draws) == pytest.approx(p, abs=0.03)
    assert {CO.judge(row, truth, row["captions"][1], rng) for _ in range(50)} == {0.5}


def test_caption_self_agreement_is_calibrated():
    rng = np.random.default_rng(5)
    a, b = [CO.corrupt(r, rng) for r in ROWS], [CO.corrupt(r, rng) for r in ROWS]
    agreement = CO.self_agreement(ROWS, a, b, seed=0)
    assert 0.8 <= agreement <= 0.92
    assert CO.self_agreement(ROWS, a, a, seed=0) == 1.0
    # one pair repeated: two draws agree with probability p^2 + (1-p)^2
    row, x, y = MULTI[0], MULTI[0]["captions"][0], CO.corrupt(MULTI[0], rng, ("attribute",))
    p = CO.prefer(row, x, y, temperature=2.0)
    estimate = CO.self_agreement([row] * 4000, [x] * 4000, [y] * 4000, seed=1, temperature=2.0)
    assert estimate == pytest.approx(p**2 + (1 - p) ** 2, abs=0.03)


def test_oracles_need_shapes_attributes():
    photo = {"id": "photo", "image": Image.new("RGB", (48, 48)), "captions": [], "attributes": None}
    with pytest.raises(ValueError, match="no shapes attributes"):
        CO.score(photo, "a red circle")
    with pytest.raises(ValueError, match="no shapes attributes"):
        IO.score(photo, photo["image"])


# ------------------------------------------------------------------------------------------ colorization
def test_truth_beats_tinted_grayscale_half_recoloured_noisy_and_coarse():
    rng = np.random.default_rng(6)
    for row in ROWS[:15]:
        truth = IO.score(row, row["image"])
        assert 0.4 < truth < 1.2 and IO.components(row, row["image"])["background"] < 0.5
        gray = row["image"].convert("L").convert("RGB")
        assert abs(IO.score(row, gray)) < 0.01
        for edit in ("tint", "gray", "hue", "noise", "coarse"):
            worse = IO.corrupt(row, rng, (edit,))
            assert IO.score(row, worse) < truth, (row["id"], edit)
            assert IO.prefer(row, row["image"], worse) > 0.5


def test_background_tint_costs_twice_its_chroma():
    row = ROWS[0]
    pixels = np.asarray(row["image"]).copy()
    background = ~shape_mask(row["attributes"])
    pixels[background] = np.clip(pixels[background].astype(int) + [20, 0, -20], 0, 255)  # a pink-blue cast
    tinted = Image.fromarray(pixels.astype(np.uint8))
    c = IO.components(row, tinted)
    assert c["background"] > 5
    assert IO.score(row, row["image"]) - IO.score(row, tinted) == pytest.approx(
        IO.BACKGROUND_WEIGHT * c["background"] / 100, abs=0.02)


def test_colorization_prefer_judge_and_other_sizes(monkeypatch):
    row, rng = ROWS[1], np.random.default_rng(7)
    muted = IO.corrupt(row, rng, ("mute",))
    assert IO.prefer(row, row["image"], muted) + IO.prefer(row, muted, row["image"]) == pytest.approx(1.0)
    big = row["image"].resize((96, 96), Image.Resampling.NEAREST)
    assert IO.score(row, big) == pytest.approx(IO.score(row, row["image"]), abs=0.05)
    scores = {id(x): IO.score(row, x) for x in (row["image"], muted)}
    p = IO.prefer(row, row["image"], muted, temperature=0.3)
    monkeypatch.setattr(IO, "score", lambda r, x: scores[id(x)])  # judge's sampling without 6000 Lab conversions
    draws = [IO.judge(row, row["image"], muted, rng, temperature=0.3) for _ in range(3000)]
    assert 0.05 < p < 0.95 and np.mean(draws) == pytest.approx(p, abs=0.03)


def test_colorization_self_agreement_is_calibrated():
    rng = np.random.default_rng(8)
    rows = ROWS[:120]
    a, b = [IO.corrupt(r, rng) for r in rows], [IO.corrupt(r, rng) for r in rows]
    assert 0.72 <= IO.self_agreement(rows, a, b, seed=0) <= 0.92


def test_plackett_luce_rankings_are_permutations_that_reduce_to_bradley_terry():
    from vrlhf.tasks.bradley_terry import plackett_luce, sigmoid

    rng = np.random.default_rng(0)
    draws = [plackett_luce([0.3, 0.0], rng, 0.25) for _ in range(4000)]
    assert np.mean([d[0] == 0 for d in draws]) == pytest.approx(sigmoid(0.3 / 0.25), abs=0.025)
    rankings = [plackett_luce([1.0, 0.0, 0.5, -1.0], rng, 0.5) for _ in range(2000)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rankings)
    firsts = np.bincount([r[0] for r in rankings], minlength=4) / len(rankings)
    expected = np.exp(np.array([1.0, 0.0, 0.5, -1.0]) / 0.5)
    np.testing.assert_allclose(firsts, expected / expected.sum(), atol=0.03)
    assert np.mean([r[-1] == 3 for r in rankings]) > 0.8  # the worst is ranked last most of the time


def test_oracle_rank_puts_the_truth_above_corruptions():
    row = ROWS[1]
    rng = np.random.default_rng(1)
    truth = caption(row["attributes"]["shapes"], np.random.default_rng(0))
    outputs = [CO.corrupt(row, rng, ("drop",)), truth, CO.corrupt(row, rng, ("invent", "attribute"))]
    ranks = [CO.rank(row, outputs, np.random.default_rng(s), temperature=0.05) for s in range(20)]
    assert all(r[0] == 1 for r in ranks)  # at a low temperature the complete true caption always wins


# ------------------------------------------------------------------------------------------ where a score comes from
def test_colorization_cell_contributions_sum_to_the_score():
    rng = np.random.default_rng(9)
    for row in ROWS[:12]:
        for output in (row["image"], IO.corrupt(row, rng), IO.corrupt(row, rng, ("noise", "tint", "hue"))):
            cells = IO.contributions(row, output)
            assert cells.shape == (64,)  # the colorizer's 8 x 8 grid, one cell per token, raster order
            assert cells.sum() == pytest.approx(IO.score(row, output), abs=1e-9)
        assert IO.contributions(row, row["image"].resize((96, 96)), grid=4).sum() == pytest.approx(
            IO.score(row, row["image"].resize((96, 96))), abs=1e-9)


def _paint(row, cell, ab, grid=8):
    """The row's true colours with one grid cell's ab set to `ab` (L kept)."""
    from skimage.color import lab2rgb, rgb2lab

    lab = rgb2lab(np.asarray(row["image"], dtype=np.float64) / 255.0)
    side = lab.shape[0] // grid
    y, x = divmod(cell, grid)
    lab[y * side : (y + 1) * side, x * side : (x + 1) * side, 1:] = ab
    return Image.fromarray(np.clip(np.rint(lab2rgb(lab) * 255), 0, 255).astype(np.uint8))


def test_a_tinted_background_cell_and_an_off_colour_shape_cell_get_the_lowest_values():
    from scipy import ndimage
    from skimage.color import rgb2lab

    from vrlhf.shapes import shape_masks

    for row in ROWS[:8]:
        masks = shape_masks(row["attributes"], 48)
        near = ndimage.binary_dilation(np.logical_or.reduce(masks), iterations=2).reshape(8, 6, 8, 6)
        background_cell = int(np.flatnonzero(~near.any(axis=(1, 3)).reshape(-1))[0])
        tinted = _paint(row, background_cell, (25.0, 25.0))
        cells = IO.contributions(row, tinted)
        assert cells.argmin() == background_cell and cells[background_cell] < -0.01, row["id"]
        # a cell wholly inside the largest shape turned to the opposite hue: the shape's spread lands on it
        inner = ndimage.binary_erosion(max(masks, key=np.sum), iterations=2).reshape(8, 6, 8, 6).all(axis=(1, 3))
        if inner.any():
            cell = int(np.flatnonzero(inner.reshape(-1))[0])
            lab = rgb2lab(np.asarray(row["image"], dtype=np.float64) / 255.0)
            true_ab = lab[cell // 8 * 6 + 3, cell % 8 * 6 + 3, 1:]
            cells = IO.contributions(row, _paint(row, cell, -true_ab))
            assert cells.argmin() == cell, row["id"]


def test_caption_word_contributions_sum_to_the_score():
    rng = np.random.default_rng(10)
    for row in make_shapes(150, seed=5):  # the writers' references: omissions, synonyms, a few mistakes
        soup = " ".join(rng.choice(CO.words(row["captions"][0]) + ["a", "the", "red", "left", "circle"], 14))
        for text in (*row["captions"][:2], CO.corrupt(row, rng), soup, ""):
            values = CO.contributions(row, text)
            assert values.shape == (len(CO.words(text)) + 1,)  # each word, then the end of the caption
            assert values.sum() == pytest.approx(CO.score(row, text), abs=1e-9), text


def test_a_false_word_gets_the_lowest_value_and_is_the_false_span():
    for row in ROWS[:40]:
        shape = row["attributes"]["shapes"][0]
        wrong = next(c for c in ("red", "blue") if c != shape["colour"])
        text = caption(edited(row, colour=wrong), np.random.default_rng(0))
        said = CO.words(text)
        values = CO.contributions(row, text)
        assert said[values.argmin()] == wrong and values.min() == -CO.FALSE
        spans = CO.false_spans(row, text)
        assert [said[a:b] for a, b in spans] == [[wrong]] and values[-1] == 0  # nothing left out
        assert CO.false_spans(row, row["captions"][0]) == [] and CO.missing_shapes(row, row["captions"][0]) == []


def test_a_shape_left_out_costs_at_the_end_and_is_named():
    for row in MULTI[:20]:
        shapes = row["attributes"]["shapes"]
        text = caption(shapes[1:], np.random.default_rng(0))
        values = CO.contributions(row, text)
        assert values[-1] == -CO.MISSING and CO.missing_shapes(row, text) == [shapes[0]]
