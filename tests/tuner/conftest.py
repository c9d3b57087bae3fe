"""Shared fixtures: a small shapes dataset and a tiny captioner briefly MLE-trained on it (built once per session)."""

import random

import pytest
import torch

from tuner.config import TuneConfig


def pretrain_tiny_captioner(data_dir, out_dir, steps: int = 60, seed: int = 0):
    """A 1-layer, width-32 ViT+GPT2 captioner, MLE-trained for a few steps: a sampler worth tuning, in seconds."""
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    task = get_task("captioning")
    rows = load_rows(data_dir / "train")
    tokenizer = task.build_tokenizer([c for r in rows for c in r["captions"]])
    policy = task.build_policy(tokenizer, image_size=24, patch_size=6, hidden_size=32, encoder_layers=1,
                               decoder_layers=1, heads=2, max_new_tokens=24, seed=seed)
    pixels = task.pixel_values(policy, [r["image"] for r in rows])
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    for _ in range(steps):
        idx = rng.sample(range(len(rows)), 32)
        tokens, mask = task.reference_tokens(policy, [rows[i] for i in idx], rng)
        loss = -policy.token_log_probs(pixels[idx], tokens, mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    policy.eval().save(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    from vrlhf.shapes import make_shapes, write_imagefolder

    root = tmp_path_factory.mktemp("shapes")
    rows = make_shapes(240, seed=0, size=24)
    write_imagefolder(rows[:200], root / "train")
    write_imagefolder(rows[200:], root / "test")
    return root


@pytest.fixture(scope="session")
def captioner_dir(shapes_dir, tmp_path_factory):
    return pretrain_tiny_captioner(shapes_dir, tmp_path_factory.mktemp("captioner"))


@pytest.fixture
def tiny_config(shapes_dir, captioner_dir, tmp_path):
    """A few cheap steps: 4 images × k=2 per step, no evaluation or checkpoint unless a test asks."""
    return TuneConfig(task="captioning", policy=str(captioner_dir), data=str(shapes_dir), out=str(tmp_path / "run"),
                      k=2, batch_size=4, steps=4, lr=1e-3, eval_every=0, save_every=0, eval_size=8, num_show=0,
                      log_with="none", seed=0)
