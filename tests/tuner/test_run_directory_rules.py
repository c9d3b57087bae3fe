"""What a command may do to its --out (issue 21, row 12): a run already there is never replaced without --overwrite
(--resume continues it as before), the same rule for tune, pretrain, train-reward and dpo (vrlhf.rundir.check_out);
a tune that fails before it has anything to resume from leaves no new run directory."""

import copy
import json
from pathlib import Path

import pytest

import tuner.train as train_module
from tuner.train import tune
from vrlhf.cli import main
from vrlhf.errors import ConfigError
from vrlhf.rundir import RunDir, check_out


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under a run directory, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def argv(cfg) -> list[str]:
    """The `vrlhf tune` flags of a TuneConfig (the fields these tests use)."""
    names = ("task", "policy", "data", "out", "k", "batch_size", "steps", "lr", "eval_every", "save_every",
             "eval_size", "num_show", "log_with", "seed")
    return ["tune"] + [item for name in names for item in (f"--{name}", str(getattr(cfg, name)))]


def test_a_finished_run_is_replaced_only_with_overwrite(tiny_config, capsys):
    cfg = copy.deepcopy(tiny_config)
    cfg.steps = 2
    tune(cfg)
    out = Path(cfg.out)
    before = snapshot(out)
    assert "final/model.safetensors" in before and "metrics.jsonl" in before

    other = copy.deepcopy(cfg)
    other.steps, other.lr = 1, 3e-3  # another run's settings, the same --out
    capsys.readouterr()
    assert main(argv(other)) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"--out {out} already holds a run" in error
    assert "--overwrite" in error and "--resume" in error
    assert snapshot(out) == before  # final/, metrics.jsonl, config.yaml: every byte as the first run left it

    assert main(argv(other) + ["--overwrite"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "reward" in r] == [1]  # the new run's log, not appended to the old one
    assert "steps: 1" in (out / "config.yaml").read_text()


def test_resume_and_overwrite_are_the_only_ways_into_a_run(tmp_path):
    """The rule itself, as every trainer's RunDir applies it."""
    from tuner.config import TuneConfig

    RunDir(tmp_path / "empty")  # a fresh directory, or one holding no run: fine
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("mine")
    RunDir(tmp_path / "notes")
    run = RunDir(tmp_path / "run")
    run.save_config(TuneConfig())
    with pytest.raises(ConfigError, match="already holds a run .*pass --overwrite to replace it$"):
        RunDir(tmp_path / "run")  # a command without --resume names only --overwrite
    with pytest.raises(ConfigError, match="--overwrite to replace it, or --resume to continue it"):
        check_out(tmp_path / "run", overwrite=False, resume=False)
    check_out(tmp_path / "run", resume=True)
    RunDir(tmp_path / "run", overwrite=True)
    RunDir(tmp_path / "run", resume_step=3, resume=True)
    RunDir(tmp_path / "run", enabled=False)  # other processes never write, so never refuse


def test_a_tune_that_fails_leaves_no_new_run_directory(tiny_config, monkeypatch):
    """A failure inside the first step (after the run directory, its config and the step-0 evaluation were written)
    removes the directory; once a checkpoint exists the directory stays, for --resume."""
    def fail(*args, **kwargs):
        raise RuntimeError("injected: the device ran out of memory")

    real_step = train_module.optimizer_step
    cfg = copy.deepcopy(tiny_config)  # its step-0 evaluation writes metrics.jsonl before the failure
    monkeypatch.setattr(train_module, "optimizer_step", fail)
    with pytest.raises(RuntimeError, match="injected"):
        tune(cfg)
    assert not Path(cfg.out).exists()

    def fail_at_step_2(cfg_, t, finite, logs, step):
        if step == 2:
            raise RuntimeError("injected at step 2")
        real_step(cfg_, t, finite, logs, step)

    monkeypatch.setattr(train_module, "optimizer_step", fail_at_step_2)
    cfg.save_every = 1
    with pytest.raises(RuntimeError, match="injected at step 2"):
        tune(cfg)
    assert sorted(p.name for p in (Path(cfg.out) / "checkpoints").iterdir())[-1] == "step_000002"
    monkeypatch.setattr(train_module, "optimizer_step", real_step)
    cfg.resume = True
    tune(cfg)  # resumes from step 2 as it always did
    assert (Path(cfg.out) / "final").is_dir()


def test_a_failed_overwrite_keeps_the_directory_it_was_given(tiny_config, monkeypatch):
    """Only a directory the command created is removed: a run into an existing one that then fails leaves it."""
    cfg = copy.deepcopy(tiny_config)
    Path(cfg.out).mkdir(parents=True)
    (Path(cfg.out) / "notes.txt").write_text("the user's")
    monkeypatch.setattr(train_module, "optimizer_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        tune(cfg)
    assert (Path(cfg.out) / "notes.txt").read_text() == "the user's"


def test_pretrain_refuses_an_earlier_run_before_loading_anything(shapes_dir, tmp_path, capsys):
    flags = ["pretrain", "--task", "captioning", "--data", str(shapes_dir), "--out", str(tmp_path / "policy"),
             "--steps", "1", "--batch_size", "4", "--eval_every", "1", "--eval_images", "4", "--hidden_size", "16",
             "--layers", "1"]
    assert main(flags) == 0
    before = snapshot(tmp_path / "policy")
    capsys.readouterr()
    assert main(flags[:-2] + ["--layers", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "already holds a run" in error and "--overwrite" in error
    assert "--resume" not in error  # pretrain has no --resume: the line names only what exists
    assert snapshot(tmp_path / "policy") == before
    assert main(flags + ["--overwrite"]) == 0


def test_train_reward_and_dpo_refuse_an_earlier_run(tmp_path, capsys):
    from reward_model.train import TrainRewardConfig
    from tuner.dpo import DPOTuneConfig

    for command, config in (("train-reward", TrainRewardConfig), ("dpo", DPOTuneConfig)):
        out = tmp_path / command
        RunDir(out).save_config(config())  # what an earlier run of the command left
        before = snapshot(out)
        flags = ["--data", str(tmp_path), "--out", str(out)] + (["--policy", str(tmp_path)] if command == "dpo" else [])
        assert main([command, *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and f"--out {out} already holds a run" in error and "--overwrite" in error
        assert snapshot(out) == before
