"""The pieces of `train_reward`, called directly on tiny reward models: one training step, the caption model's
in-batch contrastive term, and evaluate-and-checkpoint."""

import pytest
import torch

from reward_model import build_reward_model, load_reward_model
from reward_model.data import collate_pairs
from reward_model.losses import bradley_terry_loss
from reward_model.simulate import simulated_pairs
from reward_model.train import TrainRewardConfig, evaluate_and_checkpoint, pair_loss, train_step
from vrlhf.tasks import get_task

TINY = dict(encoder="vit", image_size=24, vit_hidden=24, vit_layers=1, hidden_size=16)


def pairs(task: str, n: int, seed: int = 0) -> list[dict]:
    cols = simulated_pairs(get_task(task), n, seed=seed)
    return [{key: cols[key][i] for key in ("image", "chosen", "rejected", "label")} for i in range(n)]


def test_train_step_lowers_the_loss_and_moves_every_trainable_weight():
    torch.manual_seed(0)
    model = build_reward_model(get_task("colorization"), **TINY)
    batch = pairs("colorization", 16)
    cfg = TrainRewardConfig(task="colorization")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = [train_step(model, collate_pairs(model, batch), cfg, False, optimizer, scheduler) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses  # the same 16 pairs: it fits them
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, start[n])]
    assert not unchanged


def test_text_outputs_add_the_in_batch_contrastive_term():
    torch.manual_seed(0)
    model = build_reward_model(get_task("captioning"), **TINY).eval()
    batch = pairs("captioning", 4, seed=1)
    cfg = TrainRewardConfig(task="captioning", contrastive_coef=0.5)
    with torch.no_grad():
        with_term = pair_loss(model, collate_pairs(model, batch), cfg, text_outputs=True)
        plain = pair_loss(model, collate_pairs(model, batch), cfg, text_outputs=False)
        images = model.pixels([p["image"] for p in batch])
        chosen = [p["chosen"] for p in batch]
        scores = model(images, [c for _ in batch for c in chosen]).view(4, 4)  # image i against every chosen caption
        label = torch.tensor([p["label"] for p in batch])
        rewards = model(images, [o for p in batch for o in (p["chosen"], p["rejected"])])
    torch.testing.assert_close(plain, bradley_terry_loss(rewards[0::2], rewards[1::2], label))
    torch.testing.assert_close(with_term, plain + 0.5 * torch.nn.functional.cross_entropy(scores, torch.arange(4)))


def test_evaluate_and_checkpoint_keeps_only_a_better_model(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = build_reward_model(get_task("colorization"), **TINY)
    loader = [collate_pairs(model, pairs("colorization", 8, seed=2))]
    unbeatable = {"step": 1, "accuracy": 1.01, "loss": 0.0}
    record, best = evaluate_and_checkpoint(model, loader, accelerator, tmp_path / "a", 5, [0.5, 0.7], unbeatable)
    assert best is unbeatable and not (tmp_path / "a").exists()
    assert record["step"] == 5 and record["train_loss"] == pytest.approx(0.6) and "eval_accuracy" in record

    loader = [collate_pairs(model, pairs("colorization", 8, seed=2))]  # a batch is consumed (its label popped)
    record, best = evaluate_and_checkpoint(model, loader, accelerator, tmp_path / "b", 5, [0.5], None)
    assert best["step"] == 5 and best["accuracy"] == record["eval_accuracy"]
    assert torch.isfinite(load_reward_model(tmp_path / "b").score([{"image": pairs("colorization", 1)[0]["image"]}],
                                                                   [pairs("colorization", 1)[0]["chosen"]])).all()

    _, best = evaluate_and_checkpoint(model, None, accelerator, tmp_path / "c", 7, [], unbeatable)
    assert best["step"] == 7 and (tmp_path / "c" / "reward_config.json").is_file()  # no held-out pairs: the latest


def test_image_outputs_add_a_transplanted_negative_per_pair():
    from vrlhf.tasks import get_task

    torch.manual_seed(0)
    model = build_reward_model(get_task("colorization"), **TINY).eval()
    batch = pairs("colorization", 4, seed=3)
    transplant = get_task("colorization").transplant
    collated = collate_pairs(model, batch, transplant=transplant)
    assert collated["pixel_values"].shape[0] == 3 * 4  # chosen, rejected, another pair's chosen carried over
    cfg = TrainRewardConfig(task="colorization", contrastive_coef=0.5)
    with torch.no_grad():
        with_term = pair_loss(model, collated, cfg, text_outputs=False)
        carried = [transplant(batch[(i + 1) % 4]["chosen"], {"image": p["image"]}) for i, p in enumerate(batch)]
        rows = [{"image": p["image"]} for p in batch]
        r = model(**model.inputs(rows, [o for p, c in zip(batch, carried) for o in (p["chosen"], p["rejected"], c)]))
        r = r.view(4, 3)
    label = torch.tensor([p["label"] for p in batch])
    expected = bradley_terry_loss(r[:, 0], r[:, 1], label) + 0.5 * bradley_terry_loss(r[:, 0], r[:, 2])
    torch.testing.assert_close(with_term, expected)


def test_colorization_transplant_keeps_this_inputs_light_and_the_others_colours():
    import numpy as np
    from skimage.color import rgb2lab

    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import get_task

    mine, other = make_shapes(2, seed=4)
    carried = get_task("colorization").transplant(other["image"], mine)
    lab, mine_lab, other_lab = (rgb2lab(np.asarray(im, dtype=float) / 255) for im in (carried, mine["image"],
                                                                                     other["image"]))
    assert np.abs(lab[..., 0] - mine_lab[..., 0]).mean() < 1.5  # this input's structure
    chroma = lambda x: np.hypot(x[..., 1], x[..., 2])  # noqa: E731
    assert np.corrcoef(chroma(lab).ravel(), chroma(other_lab).ravel())[0, 1] > 0.8  # colour where the other had it
    assert np.corrcoef(chroma(lab).ravel(), chroma(mine_lab).ravel())[0, 1] < 0.5
