"""Dense reward models: a score map whose mean is the reward, marks that train it where they were made, and the
plain-comparison path (and old saved models) unchanged."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from reward_model import build_reward_model, load_reward_model
from reward_model.base import CONFIG_NAME
from reward_model.data import DIHEDRAL, PairDataset, collate_pairs, load_export
from reward_model.losses import marks_loss
from reward_model.simulate import save_export, simulated_pairs
from reward_model.train import TrainRewardConfig, train_reward
from vrlhf.errors import DataError, ModelError
from vrlhf.shapes import make_shapes
from vrlhf.tasks import colorization_oracle, get_task
from vrlhf.tasks.simulated_marks import bad_cells


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests train small models: on a shared 2-core machine two torch threads spin against each other (a
    training test ran 6× slower with 2 than with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_dense_reward_is_the_mean_of_its_map_and_its_regions_sum_to_it():
    torch.manual_seed(0)
    model = build_reward_model(get_task("colorization"), dense=True, map_grid=8).eval()
    rows = [{"image": im} for im in _images(2, seed=1)]
    outputs = _images(6, seed=2)  # k = 3 per row
    reward = model.score(rows, outputs)
    batch = model.inputs(rows, outputs)
    with torch.no_grad():
        score_map = model.score_map(batch["pixel_values"])  # (6, 8, 8)
        r, cells, valid = model(**batch, dense=True)
    assert score_map.shape == (6, 8, 8) and valid is None
    torch.testing.assert_close(reward, score_map.mean(dim=(1, 2)))
    torch.testing.assert_close(r, reward)
    torch.testing.assert_close(cells, score_map.flatten(1))  # raster order: the colorizer's token order
    dense = model.score_dense(rows, outputs)
    assert dense.shape == (6, 64)
    torch.testing.assert_close(dense.sum(dim=1), reward)
    assert score_map.std() > 0  # the cells differ: a map, not one number repeated


def test_a_scalar_model_has_no_dense_scores():
    model = build_reward_model(get_task("colorization"))
    with pytest.raises(ModelError, match="not dense"):
        model.score_dense([{"image": _images(1)[0]}], _images(1))


def test_marks_loss_by_hand():
    regions = torch.tensor([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    marked = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    # only the first output has marked and unmarked regions: mean of -log σ(s_u - s_m) over (m=0, u=1), (m=0, u=2)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    assert marks_loss(regions, marked).item() == pytest.approx(expected, rel=1e-6)
    # a caption's padding is not a region; marks shorter than the regions are padded with "unmarked"
    valid = torch.tensor([[True, True, False]] * 3)
    assert marks_loss(regions, marked[:, :2], valid).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert marks_loss(regions, torch.zeros(3, 3, dtype=torch.bool)).item() == 0.0


def _train(tmp_path, name, cols, steps, **options):
    """A small dense-capable colorization model (narrow CNN and head, batch 16) trained for `steps`."""
    save_export(cols, tmp_path / f"{name}-data")
    options = {"hidden_size": 64, "vit_hidden": 48, "batch_size": 16} | options
    cfg = TrainRewardConfig(task="colorization", data=str(tmp_path / f"{name}-data"), out=str(tmp_path / name),
                            eval_fraction=0.0, max_steps=steps, eval_every=steps, progress=False, seed=0, **options)
    return train_reward(cfg), load_reward_model(tmp_path / name)


def _marked_below_unmarked(model, n_images=40, seed=7) -> float:
    """Share of held-out model-like colorizations (other images) whose clearly bad cells score lower on average
    than their other cells."""
    rows, rng = make_shapes(n_images, seed=seed), np.random.default_rng(seed)
    outputs = [colorization_oracle.corrupt(r, rng, edits=("mute", "tint")) for r in rows]
    maps = model.score_dense(rows, outputs).view(-1, 8, 8).numpy()
    below = []
    for row, output, cells in zip(rows, outputs, maps):
        bad = bad_cells(row, output)
        if bad.any() and not bad.all():
            below.append(cells[bad].mean() < cells[~bad].mean())
    assert len(below) >= n_images // 2
    return float(np.mean(below))


def test_dense_model_trained_on_marks_scores_marked_cells_lower_on_held_out_outputs(tmp_path):
    cols = simulated_pairs(get_task("colorization"), 320, seed=0, marks=True)
    assert sum(bool(m) for m in cols["rejected_marks"]) > 200  # most rejected candidates carry marks
    _, with_marks = _train(tmp_path, "marks", cols, 40, dense=True)
    _, without = _train(tmp_path, "plain", cols, 40, dense=True, marks_coef=0.0)
    marked, plain = _marked_below_unmarked(with_marks), _marked_below_unmarked(without)
    assert marked >= 0.9 and plain < 0.7, (marked, plain)  # measured: 0.97 with marks, 0.43 from the pairs alone


def test_plain_comparisons_still_train_dense_and_scalar_models(tmp_path):
    cols = simulated_pairs(get_task("colorization"), 64, seed=0)  # no marks columns
    summary, dense = _train(tmp_path, "dense", cols, 4, dense=True)
    assert dense.cfg.dense and summary["best"]["step"] == 4
    marked = simulated_pairs(get_task("colorization"), 64, seed=0, marks=True)
    _, scalar = _train(tmp_path, "scalar", marked, 4)  # a scalar model trains on an export with marks, ignoring them
    assert not scalar.cfg.dense


def test_models_saved_before_dense_existed_still_load(tmp_path):
    model = build_reward_model(get_task("colorization")).eval()
    model.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    for key in ("dense", "map_grid"):  # what a reward_config.json written before this change lacks
        config.pop(key)
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(config))
    rows, outputs = [{"image": _images(1)[0]}], _images(2, seed=3)
    torch.testing.assert_close(load_reward_model(tmp_path / "old").score(rows, outputs), model.score(rows, outputs))


def test_augmentation_turns_the_marks_with_the_image(tmp_path):
    black = Image.new("RGB", (48, 48))
    chosen = black.copy()
    chosen.paste((255, 0, 0), (0, 0, 6, 6))  # the top-left cell of the 8x8 grid is red, and marked
    cols = {"task": ["colorization"] * 16, "image": [black] * 16, "chosen": [chosen] * 16, "rejected": [black] * 16,
            "label": [1.0] * 16, "item_id": [str(i) for i in range(16)], "comparison_id": list(range(16)),
            "chosen_marks": ['{"grid":8,"cells":[[0,0]]}'] * 16, "rejected_marks": [""] * 16}
    save_export(cols, tmp_path / "export")
    ds = load_export(tmp_path / "export")
    data = PairDataset(ds, list(range(16)), get_task("colorization"), augment=True, marks=True)
    turns = set()
    for epoch in range(4):
        data.epoch = epoch
        for j in range(16):
            pair = data[j]
            shown = pair["chosen"] if pair["turn"] is None else pair["chosen"].transpose(pair["turn"])  # as collated
            red = np.asarray(shown.resize((8, 8), Image.BOX))[:, :, 0] > 100
            assert pair["chosen_marks"].astype(bool).tolist() == red.tolist() and red.sum() == 1
            assert not pair["rejected_marks"].any()
            turns.add(tuple(np.argwhere(red)[0]))
    assert len(turns) == 4  # the red cell went to every corner: the marks followed it
    model, pairs = build_reward_model(get_task("colorization"), dense=True), [data[0], data[1]]
    batch = collate_pairs(model, pairs)
    assert batch["marks"].shape == (4, 64) and batch["marks"].sum() == 2
    turned = lambda p, im: im if p["turn"] is None else im.transpose(p["turn"])  # noqa: E731
    expected = model.inputs([{"image": turned(p, p["image"])} for p in pairs],
                            [turned(p, p[key]) for p in pairs for key in ("chosen", "rejected")])
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])  # the model sees the input and outputs turned
    assert len(DIHEDRAL) == 8


def test_marks_outside_the_image_are_refused_naming_the_row(tmp_path):
    cols = simulated_pairs(get_task("colorization"), 4, seed=0, marks=True)
    cols["rejected_marks"][2] = '{"grid":8,"cells":[[3,9]]}'
    save_export(cols, tmp_path / "export")
    cfg = TrainRewardConfig(task="colorization", data=str(tmp_path / "export"), out=str(tmp_path / "rm"),
                            progress=False)
    with pytest.raises(DataError, match=r"row 2 \(comparison_id 2\) column 'rejected_marks': marked cell \[3, 9\] "
                                        r"is outside the 8x8 grid"):
        train_reward(cfg)


def test_dense_caption_reward_is_the_sum_of_its_words_and_the_end():
    torch.manual_seed(0)
    model = build_reward_model(get_task("captioning"), dense=True, image_encoder="").eval()
    rows = [{"image": im} for im in _images(2, seed=4)]
    captions = ["a red circle on the left", "a square", "", "a big blue triangle in the middle and a circle"]
    reward = model.score(rows, captions)
    dense = model.score_dense(rows, captions)
    assert dense.shape == (4, 1 + 10)
    torch.testing.assert_close(dense.sum(dim=1), reward)
    assert dense[1, 3:].abs().max() == 0 and dense[2, 1:].abs().max() == 0  # nothing past a caption's end
    regions = model.regions(rows, captions)  # the oracle's layout: each word, then the end
    assert [len(r) for r in regions] == [7, 3, 1, 11]
    torch.testing.assert_close(torch.tensor([r.sum() for r in regions]), reward)
    # the caption oracle's words (letter runs), which the tuner's captioning.token_rewards reads: "red-circle" is two
    # words there, "2" none (its score goes to the end)
    odd = model.regions(rows[:1], ["a red-circle on 2 left"])[0]
    assert len(odd) == 5 + 1 and odd.sum() == pytest.approx(model.score(rows[:1], ["a red-circle on 2 left"]).item(),
                                                            abs=1e-5)
    scalar = build_reward_model(get_task("captioning"), image_encoder="")
    assert scalar.regions is None  # a scalar model has no dense form


def test_caption_marks_train_a_dense_caption_model(tmp_path):
    cols = simulated_pairs(get_task("captioning"), 32, seed=0, marks=True)
    assert any(cols["rejected_marks"])
    save_export(cols, tmp_path / "data")
    cfg = TrainRewardConfig(task="captioning", data=str(tmp_path / "data"), out=str(tmp_path / "rm"), dense=True,
                            image_encoder="", eval_fraction=0.0, max_steps=2, eval_every=2, batch_size=16,
                            progress=False)
    summary = train_reward(cfg)
    assert summary["best"]["step"] == 2 and load_reward_model(tmp_path / "rm").cfg.dense


def test_the_tuner_credits_each_colour_token_with_its_cells_share():
    """A dense reward model's `regions` go through the task's token_rewards (what `vrlhf tune` does with a dense
    reward): token t of the colorizer colours cell t and gets that cell's share; each row sums to the reward."""
    from vrlhf.tasks import get_task

    task = get_task("colorization")
    policy = task.load_policy(task.DEMO_POLICY)
    torch.manual_seed(0)
    model = build_reward_model(get_task("colorization"), dense=True).eval()
    rows, outputs = [{"image": _images(1)[0]}], _images(3, seed=5)
    tokens = torch.zeros(3, 64, dtype=torch.long)
    per_token = task.token_rewards(policy, tokens, outputs, model.regions(rows, outputs))
    torch.testing.assert_close(per_token, model.score_dense(rows, outputs))
    torch.testing.assert_close(per_token.sum(1), model.score(rows, outputs))
