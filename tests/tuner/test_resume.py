"""Resuming from damaged run directories: a torn checkpoint or a torn metrics line never stops `--resume`."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuner import train as train_module
from tuner.train import tune


def final_weights(run_dir):
    return load_file(str(next((Path(run_dir) / "final").glob("*.safetensors"))))


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def interrupt_after_checkpoint(cfg, monkeypatch, at_step: int):
    """Run `cfg` until the checkpoint of `at_step` is written, then die as a killed process would."""
    real_save = train_module.save_checkpoint

    def save_then_die(accelerator, ckpt_dir, step, **kw):
        real_save(accelerator, ckpt_dir, step, **kw)
        if step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tune(cfg)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)


@pytest.fixture(scope="module")
def straight_weights(shapes_dir, captioner_dir, tmp_path_factory):
    """4 uninterrupted steps of the tiny config, checkpointing every step."""
    from tuner.config import TuneConfig

    out = tmp_path_factory.mktemp("straight")
    tune(TuneConfig(task="captioning", policy=str(captioner_dir), data=str(shapes_dir), out=str(out), k=2,
                    batch_size=4, steps=4, lr=1e-3, eval_every=0, save_every=1, eval_size=8, num_show=0,
                    log_with="none", seed=0))
    return final_weights(out)


@pytest.mark.parametrize("damage", ["truncated model file", "empty optimizer file"])
def test_resume_falls_back_to_the_newest_complete_checkpoint(tiny_config, monkeypatch, capsys, straight_weights,
                                                              damage):
    cfg = tiny_config
    cfg.steps, cfg.save_every = 4, 1
    interrupt_after_checkpoint(cfg, monkeypatch, at_step=3)
    newest = Path(cfg.out) / "checkpoints" / "step_000003"
    if damage == "truncated model file":
        model_file = newest / "custom_checkpoint_0.pkl"  # the policy's weights: registered first
        model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    else:
        (newest / "optimizer.bin").write_bytes(b"")
    capsys.readouterr()

    cfg.resume = True
    tune(cfg)
    said = capsys.readouterr().out
    assert "step_000003" in said and "step_000002" in said  # one line names the damaged and the used checkpoint
    resumed = final_weights(cfg.out)
    for name in straight_weights:  # resumed from step 2, the run still ends exactly where the straight one did
        torch.testing.assert_close(resumed[name], straight_weights[name], atol=0, rtol=0, msg=name)
    assert [r["step"] for r in read_metrics(cfg.out) if "reward" in r] == [1, 2, 3, 4]


def test_resume_drops_a_torn_last_metrics_line(tiny_config, monkeypatch):
    cfg = tiny_config
    cfg.steps, cfg.save_every = 4, 2
    interrupt_after_checkpoint(cfg, monkeypatch, at_step=2)
    with open(Path(cfg.out) / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rew')  # the process died in the middle of a write
    cfg.resume = True
    tune(cfg)
    assert [r["step"] for r in read_metrics(cfg.out) if "reward" in r] == [1, 2, 3, 4]
