"""Task modules: captioning and colorization pre/post-processing, rewards, and the committed demo checkpoints."""

import numpy as np
import pytest
import torch

from vrlhf.metrics import colorfulness
from vrlhf.shapes import make_shapes
from vrlhf.tasks import get_task
from vrlhf.tasks.captioning import Caption

ROWS = make_shapes(6, seed=3)


@pytest.fixture(scope="module")
def captioning():
    task = get_task("captioning")
    tokenizer = task.build_tokenizer([c for r in make_shapes(50, seed=1) for c in r["captions"]])
    return task, task.build_policy(tokenizer, hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        get_task("segmentation")


def test_caption_tokens_round_trip_through_decode(captioning):
    task, policy = captioning
    tokens, mask = task.reference_tokens(policy, ROWS)
    last = mask.sum(1) - 1
    assert (tokens[torch.arange(len(ROWS)), last] == policy.eos_token_id).all()  # every target ends with EOS
    decoded = task.decode(policy, ROWS, tokens)
    assert decoded == [r["captions"][0] for r in ROWS]
    assert all(c.finished for c in decoded)


def test_decode_marks_captions_that_never_end(captioning):
    task, policy = captioning
    word = policy.tokenizer.convert_tokens_to_ids("red")
    (caption,) = task.decode(policy, ROWS[:1], torch.full((1, 5), word))
    assert caption == "red red red red red" and not caption.finished


def test_cider_reward_is_eos_aware():
    task = get_task("captioning")
    reward = task.metric_reward("cider_d", make_shapes(100, seed=2))
    row = ROWS[0]
    good, truncated = row["captions"][0], " ".join(row["captions"][0].split()[:-3])
    scores = reward([row], [Caption(good), Caption(truncated), Caption(good, finished=False)])
    assert scores[0] > scores[1] > 0  # a fragment earns less than the whole caption
    assert scores[2] == 0  # a caption that never emitted EOS earns nothing by default
    penalised = task.metric_reward("cider_d", make_shapes(100, seed=2), unfinished=-1.0)
    assert penalised([row], [Caption(good, finished=False)])[0] == -1.0
    with pytest.raises(ValueError, match="unknown captioning metric reward 'bleu'"):
        task.metric_reward("bleu", ROWS)


def test_colorization_reference_tokens_decode_close_to_the_truth():
    task = get_task("colorization")
    policy = task.build_policy(hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)
    tokens, mask = task.reference_tokens(policy, ROWS)
    assert tokens.shape == (len(ROWS), 64) and mask.all()
    decoded = task.decode(policy, ROWS, tokens)
    metrics = task.eval_metrics(ROWS, decoded)
    assert metrics["ab_error"] < 8  # an 8×8 grid of quantised colours, upsampled: close to the truth
    assert metrics["colorfulness"] > 0.5 * metrics["truth_colorfulness"]
    # L is the original's: the decoded image has the same lightness everywhere
    from skimage.color import rgb2lab

    for out, row in zip(decoded, ROWS):
        assert out.size == row["image"].size
        lightness = [rgb2lab(np.asarray(image) / 255.0)[..., 0] for image in (out, row["image"])]
        assert np.abs(lightness[0] - lightness[1]).mean() < 1.5


def test_colorization_sees_only_lightness():
    task = get_task("colorization")
    policy = task.build_policy(hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)
    image = ROWS[0]["image"]
    gray = task.grayscale(image)
    assert torch.allclose(task.pixel_values(policy, [image]), task.pixel_values(policy, [gray]), atol=0.02)
    assert colorfulness([gray])[0] < 1.0


def test_colorization_rewards():
    task = get_task("colorization")
    row = ROWS[0]
    gray = task.grayscale(row["image"])
    fidelity = task.metric_reward("fidelity")([row], [row["image"], gray])
    assert fidelity[0] == 0 and fidelity[1] < 0
    colourful = task.metric_reward("colorfulness")([row], [row["image"], gray])
    assert colourful[0] > 0.15 and colourful[1] < 0.01


@pytest.fixture(scope="module")
def demo_rows():
    return make_shapes(10000, seed=0)[-16:]  # held-out rows of the demo data (the last 10% are the test split)


def test_demo_captioner_says_what_the_writers_say(demo_rows):
    """The demo captioner is converged on references by simulated writers: it names one salient shape, truly, and
    leaves the others out: there is room for feedback on every multi-shape image."""
    from vrlhf.tasks import caption_oracle

    task = get_task("captioning")
    policy = task.load_policy("data/demo/captioner")
    pixels = task.pixel_values(policy, [r["image"] for r in demo_rows])
    captions = task.decode(policy, demo_rows, policy.greedy(pixels).tokens)
    counts = [caption_oracle.components(r, c) for r, c in zip(demo_rows, captions)]
    assert np.mean([c["false"] == 0 for c in counts]) >= 0.75, captions  # what it states is mostly true
    mentioned = [len(r["attributes"]["shapes"]) - c["missing"] for r, c in zip(demo_rows, counts)]
    assert all(m >= 1 for m in mentioned), captions
    several = [m for r, m in zip(demo_rows, mentioned) if len(r["attributes"]["shapes"]) > 1]
    assert several and np.mean(several) < 1.5, captions  # ... but not every shape


def test_demo_colorizer_samples_differ_but_stay_plausible(demo_rows):
    from vrlhf.tasks import colorization_oracle

    task = get_task("colorization")
    policy = task.load_policy("data/demo/colorizer")
    rows = demo_rows[:4]
    pixels = task.pixel_values(policy, [r["image"] for r in rows])
    samples = policy.sample(pixels, k=3, generator=torch.Generator().manual_seed(0))
    images = task.decode(policy, rows, samples.tokens, k=3)
    arrays = np.stack([np.asarray(im, dtype=float) for im in images]).reshape(4, 3, 48, 48, 3)
    spread = (np.abs(arrays[:, 0] - arrays[:, 1]).mean(axis=(1, 2, 3))
              + np.abs(arrays[:, 1] - arrays[:, 2]).mean(axis=(1, 2, 3)))
    assert (spread > 0.5).sum() >= 3  # k samples of one image are visibly different ...
    scores = [colorization_oracle.score(r, images[3 * i + j]) for i, r in enumerate(rows) for j in range(3)]
    gray = [colorization_oracle.score(r, task.grayscale(r["image"])) for r in rows]
    assert np.mean(scores) > np.mean(gray) + 0.1  # ... and better than no colour at all


def test_photo_crops_are_an_image_folder_for_colorization_eval(tmp_path):
    from vrlhf.data import load_rows
    from vrlhf.shapes import main as data_main

    assert data_main(["photos", "--out", str(tmp_path), "--crops", "2"]) == 0
    rows = load_rows(tmp_path)
    assert len(rows) == 14 and all(r["image"].size == (48, 48) and r["captions"] == [] for r in rows)
    assert colorfulness([r["image"] for r in rows]).mean() > 20  # real colour photos, not gray
