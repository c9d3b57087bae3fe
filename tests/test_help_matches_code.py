"""Help lines say what the code accepts: every export format `vrlhf export` takes is listed in its --help and in
the `vrlhf` command list, and the reward model's --image_encoder help names each value train-reward resolves."""

import dataclasses

from labeler.export import EXPORT_FORMATS, ExportConfig
from reward_model.config import TrainRewardConfig
from vrlhf.cli import COMMANDS


def test_export_help_lists_every_format_export_accepts():
    assert set(EXPORT_FORMATS) == {"hf", "jsonl", "parquet", "trl"}
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ExportConfig)}
    for name in EXPORT_FORMATS:
        assert f"{name}:" in helps["format"], name
        assert name in COMMANDS["export"][1].split("(")[1], name


def test_image_encoder_help_names_the_values_train_reward_resolves():
    text = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainRewardConfig)}["image_encoder"]
    # 'default': the task's REWARD_IMAGE_ENCODER; '': the tiny encoder --encoder picks (cnn or vit), not always a ViT
    assert "'default'" in text and "REWARD_IMAGE_ENCODER" in text and "empty: the tiny encoder of --encoder" in text
    assert "image-to-sequence policy directory" in text and "hub id" in text
