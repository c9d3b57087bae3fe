"""The flags `vrlhf pretrain`, `tune` and `dpo` share are defined once (vrlhf.run_config); each command keeps its
own defaults where they differ."""

import dataclasses

from tuner.config import TuneConfig
from tuner.dpo import DPOTuneConfig
from vrlhf.config import parse_config
from vrlhf.pretrain_config import PretrainConfig
from vrlhf.run_config import PolicyRunConfig, RunConfig


def test_each_command_keeps_its_own_defaults_of_the_shared_flags():
    tune, dpo, pretrain = TuneConfig(), DPOTuneConfig(), PretrainConfig()
    assert (tune.out, tune.steps, tune.batch_size, tune.lr, tune.weight_decay, tune.save_every, tune.log_with) == (
        "runs/tune", 60, 32, 5e-5, 0.0, 20, "auto")
    assert (dpo.out, dpo.steps, dpo.batch_size, dpo.lr, dpo.weight_decay, dpo.save_every, dpo.log_with) == (
        "runs/dpo", 100, 8, 5e-6, 0.0, 0, "none")
    assert (pretrain.data, pretrain.out, pretrain.steps, pretrain.batch_size, pretrain.lr, pretrain.weight_decay) == (
        "data/shapes", "runs/pretrain", 4000, 64, 1e-3, 0.01)
    assert parse_config(DPOTuneConfig, ["--lr", "1e-4", "--grad_accum", "2"]).lr == 1e-4


def test_shared_flags_keep_the_shared_help_unless_the_command_means_something_else():
    shared = {f.name: f.metadata["help"] for f in dataclasses.fields(PolicyRunConfig)}
    own_meaning = {TuneConfig: {"steps"},
                   DPOTuneConfig: {"task", "policy", "data", "batch_size", "eval_data", "log_with"},
                   PretrainConfig: {"out", "steps", "batch_size", "lr"}}
    for cls, base in ((TuneConfig, PolicyRunConfig), (DPOTuneConfig, PolicyRunConfig), (PretrainConfig, RunConfig)):
        assert issubclass(cls, base)
        fields = {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}
        differing = {name for name in (f.name for f in dataclasses.fields(base)) if fields[name] != shared[name]}
        assert differing == own_meaning[cls], cls.__name__
