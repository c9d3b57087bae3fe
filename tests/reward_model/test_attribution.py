"""A scalar image reward model's dense form: its first-order attribution, which the tuner credits cell by cell."""

import numpy as np
import pytest
import torch
from PIL import Image

from reward_model import build_reward_model, load_reward_model
from vrlhf.tasks import get_task


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_reward_model(get_task("colorization"), image_encoder="").eval()


def _pair(step: int) -> tuple[Image.Image, Image.Image]:
    """Two colorizations of one image that differ only in the top-left quarter, by `step` levels of red."""
    rng = np.random.default_rng(3)
    a = rng.integers(40, 200, (48, 48, 3)).astype(np.int16)
    b = a.copy()
    b[:24, :24, 0] += step
    return Image.fromarray(a.astype(np.uint8)), Image.fromarray(b.astype(np.uint8))


def test_the_attribution_sums_to_the_score_and_lies_where_the_outputs_differ(model):
    rows = [{"image": Image.new("RGB", (48, 48), (120, 120, 120))}]
    a, b = _pair(step=6)
    maps = model.regions(rows, [a, b])
    scores = model.score(rows, [a, b])
    assert [m.shape for m in maps] == [(48, 48), (48, 48)]
    torch.testing.assert_close(torch.tensor([m.sum() for m in maps]), scores, rtol=1e-4, atol=1e-5)
    # outside the changed quarter (and the resize's one-pixel blur) each map is its even share of the rest only
    for m in maps:
        far = np.ones((48, 48), bool)
        far[:26, :26] = False
        assert np.ptp(m[far]) < 1e-7 and np.ptp(m[:24, :24]) > 1e-6
    # the first-order part (the map less its even share) of output i is the score's derivative along the way from
    # the mean output to it, as finite differences find it on the model's own inputs
    x = model.inputs(rows, [a, b])["pixel_values"]
    for i, m in enumerate(maps):
        way, eps = x[i] - x.mean(dim=0), 1e-2
        with torch.no_grad():
            ahead, behind = (model(pixel_values=(x[i] + sign * eps * way)[None]) for sign in (1, -1))
        slope = (ahead - behind) / (2 * eps)
        assert abs(slope.item()) > 1e-5
        assert float((m - m[-1, -1]).sum()) == pytest.approx(slope.item(), rel=0.05)

def test_a_saved_scalar_model_offers_cells_for_colorizations_and_nothing_for_drawn_boxes(model, tmp_path):
    model.save_pretrained(tmp_path / "col")
    assert load_reward_model(tmp_path / "col").regions is not None  # `vrlhf tune` credits colour tokens with it
    boxes = build_reward_model(get_task("detection"), image_encoder="")
    assert boxes.regions is None  # a drawing's pixels are not the detector's tokens
