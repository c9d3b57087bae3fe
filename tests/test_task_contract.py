"""The task contract: every task module provides it, and the stages read it instead of branching on task names."""

import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.sampling import look
from vrlhf.errors import ConfigError
from vrlhf.shapes import make_shapes, write_imagefolder
from vrlhf.tasks import CONTRACT, KINDS, ORACLE_CONTRACT, get_oracle, get_task, task_names

ROWS = make_shapes(8, seed=6, size=24)
TINY = dict(image_size=24, patch_size=6, hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)


def test_the_tasks_are_discovered_from_their_modules():
    names = set(task_names())
    assert {"captioning", "colorization"} <= names  # not the oracles, writers or Bradley–Terry helpers
    assert not names & {"caption_oracle", "colorization_oracle", "caption_writers", "bradley_terry", "simulated_marks"}


@pytest.mark.parametrize("name", ["captioning", "colorization", "detection"])
def test_every_task_module_provides_the_contract(name):
    task = get_task(name)
    assert task.NAME == name and task.STORED in KINDS and task.SHOWN in KINDS
    assert all(hasattr(task, member) for member in CONTRACT)
    specs = [spec.split("=")[0] for spec in task.DEFAULT_REWARDS]
    assert set(specs) <= set(task.METRIC_REWARDS)
    assert Path(task.DEMO_POLICY).is_dir() and get_oracle(task).__name__ == f"vrlhf.tasks.{task.ORACLE}"
    assert all(hasattr(get_oracle(task), member) for member in ORACLE_CONTRACT)
    assert all(task.row_problem(row) is None for row in ROWS)

    policy = task.new_policy(ROWS, **TINY)
    tokens, mask, k = task.heldout_targets(policy, ROWS)
    assert tokens.shape[0] == len(ROWS) * k and mask.shape == tokens.shape and mask.any(dim=1).all()
    outputs = task.decode(policy, ROWS, policy.greedy(task.pixel_values(policy, [r["image"] for r in ROWS])).tokens)
    assert len(outputs) == len(ROWS)
    kind = {"text": str, "image": Image.Image}
    assert all(isinstance(task.render(row, o), kind[task.SHOWN]) for row, o in zip(ROWS, outputs))
    stored = [task.to_stored(o) for o in outputs]
    assert all(isinstance(value, kind[task.STORED]) for value in stored)
    back = [task.from_stored(value, row) for value, row in zip(stored, ROWS)]  # what the oracle reads from the DB
    assert [look(task.render(r, o)) for r, o in zip(ROWS, back)] == [look(task.render(r, o)) for r, o in
                                                                      zip(ROWS, outputs)]
    for metric in task.METRIC_REWARDS:
        assert task.metric_reward(metric, ROWS)(ROWS, outputs).shape == (len(ROWS),)
    ideal = task.ideal_outputs(policy, ROWS, np.random.default_rng(0))
    oracle = get_oracle(task)
    assert np.mean([oracle.score(r, o) for r, o in zip(ROWS, ideal)]) > np.mean(
        [oracle.score(r, o) for r, o in zip(ROWS, outputs)])  # the ideal output beats an untrained policy's
    shown = task.show_input(ROWS[0]["image"])
    assert shown.size == ROWS[0]["image"].size
    gray = np.asarray(shown.convert("RGB"), dtype=int)
    assert (np.ptp(gray, axis=2).max() <= 2) == (name == "colorization")  # people see what the policy sees


def test_captioning_heldout_targets_are_every_row_s_first_k_references():
    task = get_task("captioning")
    policy = task.new_policy(ROWS, **TINY)
    rows = [dict(ROWS[0], captions=["a red circle", "a circle", "red"]),
            dict(ROWS[1], captions=["a blue square", "square"])]
    tokens, mask, k = task.heldout_targets(policy, rows)
    assert k == 2 and task.decode(policy, rows * 2, tokens) == ["a red circle", "a circle", "a blue square", "square"]


def test_both_demo_architectures_come_from_one_builder():
    captioner = get_task("captioning").new_policy(ROWS, **TINY, seed=1)
    colorizer = get_task("colorization").build_policy(**TINY, seed=1)
    assert captioner.model.config.encoder.num_channels == 3 and colorizer.model.config.encoder.num_channels == 1
    assert colorizer.model.config.decoder.vocab_size == len(colorizer.meta["ab_bins"]) + 2
    assert captioner.model.config.eos_token_id == captioner.eos_token_id and colorizer.eos_token_id is None
    again = get_task("colorization").build_policy(**TINY, seed=1)
    for (name, a), b in zip(colorizer.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name  # the seed fixes the initialisation


def test_a_module_that_is_not_a_task_or_lacks_part_of_the_contract_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="unknown task 'bradley_terry'"):
        get_task("bradley_terry")
    half = types.ModuleType("vrlhf.tasks.half")
    half.__spec__ = importlib.machinery.ModuleSpec("vrlhf.tasks.half", None)
    half.NAME = "half"
    monkeypatch.setitem(sys.modules, "vrlhf.tasks.half", half)
    with pytest.raises(ConfigError, match="lacks STORED, SHOWN, METRIC_REWARDS, DEFAULT_REWARDS, REPORT_METRICS"):
        get_task("half")


def test_a_dotted_path_names_a_task_whose_name_is_that_path():
    with pytest.raises(ConfigError, match=r"unknown task 'no_such_package\.task'; .* the dotted import path"):
        get_task("no_such_package.task")
    with pytest.raises(ConfigError) as refused:  # exports record NAME: it must lead back to the module
        get_task("vrlhf.tasks.captioning")
    assert str(refused.value) == ("task module vrlhf.tasks.captioning: NAME is 'captioning', not "
                                  "'vrlhf.tasks.captioning' (a task outside vrlhf/tasks is named by its import path)")


def test_an_oracle_module_that_lacks_part_of_its_contract_is_refused_in_one_line(monkeypatch):
    half = types.ModuleType("vrlhf.tasks.half_oracle")
    half.__dict__.update({k: v for k, v in vars(get_oracle(get_task("captioning"))).items() if not k.startswith("__")})
    del half.rank, half.self_agreement
    monkeypatch.setitem(sys.modules, "vrlhf.tasks.half_oracle", half)
    task = types.SimpleNamespace(NAME="captioning", ORACLE="half_oracle")
    with pytest.raises(ConfigError) as refused:
        get_oracle(task)
    assert str(refused.value) == ("oracle module vrlhf.tasks.half_oracle (task captioning): lacks rank, self_agreement "
                                  "(docs/ARCHITECTURE.md: the oracle contract)")


@pytest.fixture
def relabelled(monkeypatch):
    """Captioning under another name: a task module the stages have never heard of."""
    module = types.ModuleType("vrlhf.tasks.relabel")
    module.__dict__.update({k: v for k, v in vars(get_task("captioning")).items() if not k.startswith("__")})
    module.NAME = "relabel"
    module.__spec__ = importlib.machinery.ModuleSpec("vrlhf.tasks.relabel", None)
    monkeypatch.setitem(sys.modules, "vrlhf.tasks.relabel", module)
    return module


def test_stages_read_the_contract_not_the_task_name(relabelled, tmp_path):
    from reward_model import build_reward_model
    from reward_model.caption_model import CaptionRewardModel
    from tuner.config import TuneConfig
    from tuner.train import tune
    from vrlhf.pretrain import PretrainConfig, pretrain

    rows = make_shapes(40, seed=7, size=24)
    write_imagefolder(rows[:32], tmp_path / "data" / "train")
    write_imagefolder(rows[32:], tmp_path / "data" / "test")
    pretrain(PretrainConfig(task="relabel", data=str(tmp_path / "data"), out=str(tmp_path / "policy"), steps=2,
                            batch_size=8, eval_every=2, eval_images=4, image_size=24, patch_size=6, hidden_size=32,
                            layers=1))
    policy, metrics = tune(TuneConfig(task="relabel", policy=str(tmp_path / "policy"), data=str(tmp_path / "data"),
                                      out=str(tmp_path / "tune"), k=2, batch_size=4, steps=1, eval_every=0,
                                      save_every=0, eval_size=4, num_show=2, log_with="none"))
    assert "cider_d" in metrics and (tmp_path / "tune" / "samples_after.json").is_file()  # text: a JSON of samples
    reward_model = build_reward_model(relabelled, encoder="vit", image_size=24, vit_hidden=24, vit_layers=1,
                                      hidden_size=16)
    assert isinstance(reward_model, CaptionRewardModel) and reward_model.task == "relabel"
