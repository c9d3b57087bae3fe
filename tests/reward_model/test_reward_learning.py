"""A reward model trained on ≤ 800 oracle-labelled pairs reaches ≥ 85% of the oracle's self-agreement on
pairs over new images, for each task, through the real export → train → load → evaluate path."""

from pathlib import Path

import pytest

from reward_model import load_reward_model
from reward_model.evaluate import evaluate_reward
from reward_model.simulate import oracle_self_agreement, save_export, simulated_pairs
from reward_model.train import TrainRewardConfig, train_reward
from vrlhf.tasks import get_task

# pairs, training steps (batch 32); MiniLM on ~1.6k captions dominates the captioning test's time
BUDGET = {"captioning": (800, 60), "colorization": (800, 100)}




@pytest.mark.parametrize("task", ["captioning", "colorization"])
def test_reward_model_learns_the_oracle(tmp_path, task):
    n, steps = BUDGET[task]
    save_export(simulated_pairs(get_task(task), n, seed=0), tmp_path / "train")
    held = simulated_pairs(get_task(task), 300, seed=7)  # other images than the training pairs
    save_export(held, tmp_path / "eval")
    # The embedded defaults: the caption model starts its image encoder from the demo captioner's ViT.
    cfg = TrainRewardConfig(task=task, data=str(tmp_path / "train"), out=str(tmp_path / "rm"), eval_fraction=0.0,
                            max_steps=steps, eval_every=steps, progress=False)
    summary = train_reward(cfg)
    if task == "captioning":
        assert Path(load_reward_model(tmp_path / "rm").cfg.image_encoder).name == "captioner"
    assert summary["pairs_per_sec"] > 0 and (tmp_path / "rm" / "metrics.jsonl").read_text()
    metrics = evaluate_reward(load_reward_model(tmp_path / "rm"), tmp_path / "eval")
    ceiling = oracle_self_agreement(get_task(task), held)
    assert metrics["accuracy"] >= 0.85 * ceiling, (metrics, ceiling)
