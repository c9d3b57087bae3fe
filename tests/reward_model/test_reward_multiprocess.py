"""`train_reward` under torchrun (2 CPU processes) and with bf16 autocast: the distributed path is the real one."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from reward_model import load_reward_model
from reward_model.evaluate import evaluate_reward
from reward_model.simulate import save_export, simulated_pairs
from reward_model.train import TrainRewardConfig, train_reward
from vrlhf.tasks import get_task

# A tiny ViT (LayerNorm, no BatchNorm: per-process batch statistics would differ from one process by design), and no
# in-batch contrastive term: its negatives come from each process's own batch, so it differs from one process too.
TINY = dict(task="colorization", encoder="vit", vit_hidden=32, vit_layers=1, hidden_size=16, eval_fraction=0.25,
            max_steps=4, eval_every=4, lr=1e-3, progress=False, contrastive_coef=0.0)

DRIVER = textwrap.dedent(
    """
    import json, sys
    from reward_model.train import TrainRewardConfig, train_reward
    from accelerate import PartialState
    summary = train_reward(TrainRewardConfig(**json.loads(sys.argv[1])))
    state = PartialState()  # the Accelerator's process group, still initialised
    assert state.num_processes == 2, state.num_processes
    json.dump(summary, open(f"{sys.argv[2]}/summary{state.process_index}.json", "w"))
    """
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "export"
    save_export(simulated_pairs(get_task("colorization"), 64, seed=5), path)
    return path


def test_two_processes_train_like_one_process_with_the_same_global_batch(pairs, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = dict(TINY, data=str(pairs), out=str(tmp_path / "two"), batch_size=8)  # 2 ranks × 8 pairs per step
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29541", str(driver), json.dumps(two),
                    str(tmp_path)], check=True, env=env, timeout=300)
    s0, s1 = (json.loads((tmp_path / f"summary{r}.json").read_text()) for r in (0, 1))
    assert s0["best"] == s1["best"]  # metrics gathered across ranks: both see every held-out pair
    assert s0["best"]["pairs"] == s0["eval_pairs"] > 0  # every held-out pair evaluated once, none twice

    one = train_reward(TrainRewardConfig(**dict(TINY, data=str(pairs), out=str(tmp_path / "one"), batch_size=16)))
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("two", "one"))
    train_reward(TrainRewardConfig(**dict(TINY, data=str(pairs), out=str(tmp_path / "start"), max_steps=1,
                                          eval_every=1, lr=1e-12)))
    moved = max((a[n] - load_file(str(tmp_path / "start" / "model.safetensors"))[n]).abs().max() for n in a)
    assert moved > 1e-3  # 4 steps at lr 1e-3 move the weights, so agreement below is not trivial
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=0, msg=name)
    assert abs(s0["best"]["accuracy"] - one["best"]["accuracy"]) < 1e-6


def test_bf16_autocast_trains_and_saves_float32(pairs, tmp_path):
    # its own process: Accelerate's state is per process, and bf16 is chosen when it starts
    vrlhf = os.path.join(os.path.dirname(sys.executable), "vrlhf")
    args = dict(TINY, data=str(pairs), out=str(tmp_path / "rm"), batch_size=16, mixed_precision="bf16", max_steps=8,
                eval_every=8)
    flags = [f"--{k}={v}" for k, v in args.items() if k != "progress"] + ["--no_progress"]
    subprocess.run([vrlhf, "train-reward", *flags], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    record = json.loads((tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert math.isfinite(record["best"]["loss"]) and record["pairs_per_sec"] > 0
    weights = load_file(str(tmp_path / "rm" / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())  # autocast computes in bf16, keeps fp32 weights
    metrics = evaluate_reward(load_reward_model(tmp_path / "rm"), pairs)
    assert metrics["pairs"] == 64 and 0.0 <= metrics["accuracy"] <= 1.0
