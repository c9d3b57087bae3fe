"""Two CPU processes under torchrun: the ranks stay identical and equal one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from tuner.train import tune

DRIVER = textwrap.dedent(
    """
    import json, os, sys, torch
    import torch.distributed as dist
    import tuner.checkpoint as checkpoint
    from vrlhf import collectives
    from tuner.config import TuneConfig
    from tuner.train import tune

    # A tripwire: any torch.distributed collective made outside vrlhf.collectives (whose guard refuses a tensor off
    # the accelerator's device) fails the run. barrier carries no tensor of ours and is left alone.
    def tripwire(name):
        original = getattr(dist, name)
        def checked(*args, **kwargs):
            if not collectives.inside():
                raise AssertionError(f"torch.distributed.{name} called outside vrlhf.collectives")
            return original(*args, **kwargs)
        setattr(dist, name, checked)
    for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "all_gather_object",
                 "broadcast", "broadcast_object_list", "reduce", "gather", "gather_object", "scatter",
                 "reduce_scatter", "reduce_scatter_tensor", "all_to_all"):
        if hasattr(dist, name):
            tripwire(name)
    hashed = []  # the checkpoint files this rank hashed (only the main process picks the resume point)
    sha256 = checkpoint.sha256
    checkpoint.sha256 = lambda path: hashed.append(path.name) or sha256(path)

    policy, _ = tune(TuneConfig(**json.loads(sys.argv[1])))
    rank = int(os.environ["RANK"])  # set by torchrun
    torch.save({n: p.detach().clone() for n, p in policy.model.named_parameters()}, f"{sys.argv[2]}/rank{rank}.pt")
    with open(f"{sys.argv[2]}/rank{rank}.json", "w") as f:
        json.dump({"calls": dict(collectives.CALLS), "hashed": len(hashed)}, f)
    """
)


def torchrun(cfg, tmp_path, port: int) -> list[dict]:
    """Run `tune(cfg)` on 2 CPU processes; -> each rank's collective counts and number of files hashed."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port), str(driver),
                    json.dumps(asdict(cfg)), str(tmp_path)], check=True, env=env, timeout=300)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]


TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(TORCHRUN), reason="torchrun not installed")
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_config, tmp_path):
    """Also: every collective goes through the device guard (the driver's tripwire), the KL penalty included; a
    resume is decided by the main process alone and continues on both ranks, with batch normalisation gathered."""
    cfg = tiny_config
    cfg.steps, cfg.batch_size, cfg.num_show, cfg.kl_coef, cfg.save_every = 3, 4, 0, 0.1, 1

    # two processes × 1 micro-batch of 2 images
    cfg.out, cfg.grad_accum = str(tmp_path / "two"), 1
    ranks = torchrun(cfg, tmp_path, 29533)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in rank0:
        torch.testing.assert_close(rank1[name], rank0[name], atol=0, rtol=0, msg=name)
    for calls in (r["calls"] for r in ranks):  # gradients averaged, skip flags and logs reduced: all guarded
        assert calls["all_reduce"] == 3 and calls["reduce"] == 6, calls

    # one process × 2 accumulated micro-batches of 2 images: the same rows, the same sampling seeds
    cfg.out, cfg.grad_accum = str(tmp_path / "one"), 2
    policy, _ = tune(cfg)
    start = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    # Weights agree to ~1e-8; only attention key biases differ more (up to ~5e-5): their true gradient is zero
    # (softmax ignores a shift), so Adam scales float noise up to ±lr. A different batch would move weights ~1e-3.
    for name, param in policy.model.named_parameters():
        torch.testing.assert_close(param.detach(), rank0[name], atol=1e-4, rtol=0, msg=name)
    assert start  # the 2-process run also wrote its final model directory

    # resume the 2-process run for one more step, rewards whitened over both ranks: only rank 0 hashes checkpoints
    cfg.out, cfg.grad_accum, cfg.steps, cfg.resume, cfg.reward_norm = str(tmp_path / "two"), 1, 4, True, "batch"
    ranks = torchrun(cfg, tmp_path, 29534)
    assert ranks[0]["hashed"] > 0 and ranks[1]["hashed"] == 0
    assert all(r["calls"]["broadcast_object"] == 1 and r["calls"]["gather"] == 1 for r in ranks), ranks
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
             if "reward" in line]
    assert steps == [1, 2, 3, 4]  # resumed at 3 on both ranks (a rank starting at 0 would hang or log step 1 again)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in rank0:
        torch.testing.assert_close(rank1[name], rank0[name], atol=0, rtol=0, msg=name)
