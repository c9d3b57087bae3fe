"""The REINFORCE loop end to end on a tiny captioner: it improves the reward, resumes exactly, survives NaN."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuner import train as train_module
from tuner.rewards import RewardSpecError
from tuner.train import tune
from vrlhf.tasks import get_task


def final_weights(run_dir):
    return load_file(str(next((run_dir / "final").glob("*.safetensors"))))


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def held_out_sample_cider(policy, rows, k=8, seed=123):
    """Mean CIDEr-D of k samples per held-out image (df from the held-out references): the tuned objective."""
    from vrlhf.tasks import get_task

    task = get_task("captioning")
    pixels = task.pixel_values(policy, [r["image"] for r in rows])
    samples = policy.sample(pixels, k, generator=torch.Generator().manual_seed(seed))
    return task.metric_reward("cider_d", rows)(rows, task.decode(policy, rows, samples.tokens, k)).mean().item()


def test_tuning_with_cider_d_raises_held_out_cider_d(tiny_config, shapes_dir, captioner_dir):
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    held_out = load_rows(shapes_dir / "test")
    before_policy = get_task("captioning").load_policy(captioner_dir)
    before = held_out_sample_cider(before_policy, held_out)
    cfg = tiny_config
    cfg.k, cfg.batch_size, cfg.steps, cfg.lr, cfg.eval_every = 4, 8, 12, 1e-3, 6
    policy, final = tune(cfg)
    after = held_out_sample_cider(policy, held_out)
    assert after > before * 1.05, (before, after)

    # every weight moved, and the run directory has what the issue promises
    start = {n: p for n, p in before_policy.model.named_parameters()}
    unchanged = [n for n, p in policy.model.named_parameters() if torch.equal(p, start[n]) and "pooler" not in n]
    # (the ViT pooler feeds nothing the decoder reads, so it has no gradient)
    assert not unchanged
    out = tiny_config.out
    records = read_metrics(Path(out))
    train_records = [r for r in records if "reward" in r]
    assert len(train_records) == 12
    for key in ("reward/cider_d", "tokens_per_seq", "eos_frac", "distinct_2", "time/sample", "time/reward",
                "time/forward_backward", "time/other", "loss", "adv_abs"):
        assert key in train_records[0], key
    assert [r["step"] for r in records if "eval/cider_d" in r] == [0, 6, 12]
    assert "cider_d" in final and "bleu4" in final  # bleu4: a held-out metric that is not the reward


def test_resumed_run_matches_uninterrupted(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config
    cfg.steps, cfg.save_every = 4, 2
    cfg.out = str(tmp_path / "straight")
    tune(cfg)

    # the same run, killed right after its step-2 checkpoint, then resumed
    real_save = train_module.save_checkpoint

    def save_then_die(accelerator, ckpt_dir, step, **kw):
        real_save(accelerator, ckpt_dir, step, **kw)
        raise KeyboardInterrupt

    cfg.out = str(tmp_path / "interrupted")
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tune(cfg)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert not (tmp_path / "interrupted" / "final").exists()
    cfg.resume = True
    tune(cfg)

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "interrupted")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=0, rtol=0, msg=name)
    # the resumed log holds each step once
    assert [r["step"] for r in read_metrics(tmp_path / "interrupted") if "reward" in r] == [1, 2, 3, 4]


def test_non_finite_reward_skips_the_step_and_saves_nothing_poisoned(tiny_config, monkeypatch):
    from vrlhf.tasks import captioning

    real = captioning.metric_reward
    calls = {"n": 0}

    def nan_once(name, train_rows, **opts):
        fn = real(name, train_rows, **opts)

        def reward(rows, outputs):
            calls["n"] += 1
            values = fn(rows, outputs)
            return values * float("nan") if calls["n"] == 1 else values

        return reward

    monkeypatch.setattr(captioning, "metric_reward", nan_once)
    cfg = tiny_config
    cfg.steps = 2
    policy, _ = tune(cfg)
    records = [r for r in read_metrics(Path(cfg.out)) if "reward" in r]
    assert [r["skipped"] for r in records] == [1, 1]
    assert all(torch.isfinite(p).all() for p in policy.model.parameters())
    assert all(torch.isfinite(t).all() for t in final_weights(Path(cfg.out)).values())


def test_lora_with_kl_penalty_saves_a_merged_standard_model(tiny_config):
    from vrlhf.policy import SequencePolicy

    cfg = tiny_config
    cfg.steps, cfg.lora_r, cfg.kl_coef, cfg.mle_coef, cfg.baseline = 2, 4, 0.1, 0.5, "greedy"
    tune(cfg)
    out = Path(cfg.out)
    loaded = SequencePolicy.from_pretrained(out / "final")  # a plain model directory: no adapter files needed
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    record = [r for r in read_metrics(out) if "reward" in r][0]
    assert "kl" in record and "mle" in record
    assert abs(record["kl"]) < 1e-3  # at the first step the policy is the reference


@pytest.mark.parametrize(
    "reward, message",
    [
        (["cider_d=lots"], "not a number"),
        (["bleu=1.0"], "unknown metric reward 'bleu'"),
        (["cider_d=1", "learned:/no/such/rm=0.5"], "does not exist"),
        (["cider_d=1", "cider_d=2"], "given twice"),
    ],
)
def test_bad_reward_spec_fails_before_any_work(tiny_config, reward, message, monkeypatch):
    from vrlhf.tasks import captioning

    monkeypatch.setattr(captioning, "load_policy",
                        lambda *a: pytest.fail("loaded a policy before checking the rewards"))
    tiny_config.reward = reward
    with pytest.raises(RewardSpecError, match=message):
        tune(tiny_config)


def test_bad_config_fails_with_the_field_named(tiny_config):
    from vrlhf.errors import ConfigError

    tiny_config.baseline = "critic"
    with pytest.raises(ConfigError, match="baseline 'critic'"):
        tune(tiny_config)


def test_repeated_reward_flags_are_merged():
    from tuner.config import TuneConfig
    from vrlhf.config import parse_config

    argv = ["--task", "captioning", "--reward", "cider_d=1", "--k=4", "--reward", "learned:rm=0.5"]
    cfg = parse_config(TuneConfig, argv)
    assert (cfg.task, cfg.k, cfg.reward) == ("captioning", 4, ["cider_d=1", "learned:rm=0.5"])


def test_colorization_with_a_learned_reward_logs_saturation_and_saves_sample_grids(shapes_dir, tiny_config, tmp_path):
    from vrlhf.tasks import colorization

    policy_dir = tmp_path / "colorizer"
    colorization.build_policy(image_size=24, grid=4, patch_size=6, hidden_size=32, encoder_layers=1,
                              decoder_layers=1, heads=2).save(policy_dir)
    from reward_model import build_reward_model

    rm_dir = build_reward_model(get_task("colorization"), image_size=24, vit_hidden=32, vit_layers=1,
                                hidden_size=32).save_pretrained(tmp_path / "rm")
    cfg = tiny_config
    cfg.task, cfg.policy, cfg.steps, cfg.eval_every, cfg.num_show = "colorization", str(policy_dir), 2, 2, 2
    cfg.reward, cfg.reward_norm = ["colorfulness=1", "fidelity=1", f"learned:{rm_dir}=0.5"], "running"
    _, final = tune(cfg)
    out = Path(cfg.out)
    step = [r for r in read_metrics(out) if "reward" in r][0]
    assert {"reward/colorfulness", "reward/fidelity", "reward/learned:rm", "saturation"} <= set(step)
    assert "ab_error" in final and "colorfulness" in final
    assert (out / "samples_before.png").is_file() and (out / "samples_after.png").is_file()


def test_cli_reports_a_bad_reward_spec_as_an_error_message(tiny_config, capsys):
    from vrlhf.cli import main

    argv = ["tune", "--task", "captioning", "--policy", tiny_config.policy, "--data", tiny_config.data,
            "--out", tiny_config.out, "--reward", "cider_d=1", "--reward", "bleu=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vrlhf tune: unknown metric reward 'bleu'") and err.count("\n") == 1


def test_a_directory_that_is_not_a_reward_model_fails_before_tuning(tiny_config, tmp_path):
    (tmp_path / "empty").mkdir()
    tiny_config.reward = [f"learned:{tmp_path / 'empty'}=1"]
    with pytest.raises(RewardSpecError, match="cannot load reward model"):
        tune(tiny_config)
