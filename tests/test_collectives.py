"""Every collective goes through vrlhf.collectives, which refuses a tensor off the accelerator's device (under NCCL a
CPU tensor fails or hangs; on gloo it would pass unseen). On the CPU the 'meta' device stands in for another device."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tuner.rewards import RewardMix
from vrlhf import collectives
from vrlhf.collectives import CollectiveDeviceError

ROOT = Path(__file__).resolve().parents[1]


def fake_accelerator(device: str):
    """An accelerator whose device is `device` and whose collectives are those of one process (identity)."""
    return SimpleNamespace(device=torch.device(device), num_processes=1, gather=lambda t: t,
                           gather_for_metrics=lambda t: t, reduce=lambda t, reduction="mean": t)


def test_the_guard_refuses_a_tensor_off_the_accelerators_device():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    elsewhere = torch.zeros(3, device="meta")  # on a GPU run: the CPU tensor NCCL cannot take
    with pytest.raises(CollectiveDeviceError, match=r"gather: a \(3,\) tensor on meta .* device is cpu"):
        collectives.gather(accelerator, elsewhere)
    with pytest.raises(CollectiveDeviceError, match="reduce"):
        collectives.reduce(accelerator, elsewhere, "sum")
    with pytest.raises(CollectiveDeviceError, match="gather_for_metrics"):  # nested: every tensor is checked
        collectives.gather_for_metrics(accelerator, (torch.zeros(2), {"label": elsewhere}))
    with pytest.raises(CollectiveDeviceError, match="all_reduce"):
        collectives.all_reduce_mean_(SimpleNamespace(device=torch.device("cpu"), num_processes=2), [elsewhere])
    # on the accelerator's device they pass, and are counted
    before = collectives.CALLS["gather"]
    assert collectives.gather(accelerator, torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    assert collectives.reduce(accelerator, torch.tensor([2.0]), "sum").item() == 2.0
    assert collectives.CALLS["gather"] == before + 1 and not collectives.inside()


def test_no_collective_bypasses_the_guard():
    """Outside vrlhf/collectives.py no code calls Accelerate's or torch.distributed's collectives directly (the
    2-process test checks the same at run time, with a tripwire on torch.distributed)."""
    direct = re.compile(r"accelerator\.(gather|gather_for_metrics|reduce|pad_across_processes)\(|"
                        r"(torch\.)?distributed\.(all_reduce|all_gather\w*|broadcast\w*|reduce\w*|gather\w*|scatter)\(")
    offenders = []
    for folder in ("vrlhf", "tuner", "reward_model", "labeler", "loop"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "collectives.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if direct.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "collectives outside vrlhf.collectives:\n" + "\n".join(offenders)


def test_rewards_are_built_on_the_mix_device_before_any_gather():
    """Metric rewards come back as CPU numbers; the mix moves them to its device (the policy's) before normalising,
    so `batch` normalisation hands the guard tensors on the accelerator's device."""
    seen = []
    accelerator = fake_accelerator("meta")

    def gather(values):
        seen.append(values.device)
        return collectives.gather(accelerator, values)

    fns = {"a": lambda rows, outs: [1.0, 2.0, 4.0], "b": lambda rows, outs: torch.tensor([3.0, 0.0, 1.0])}
    for normalize in ("none", "batch"):  # (running statistics read numbers back: not on 'meta')
        mix = RewardMix(fns, {"a": 1.0, "b": 0.5}, normalize, device="meta")
        total, components = mix([{}] * 3, ["x"] * 3, gather=gather)
        assert total.device.type == "meta" and total.shape == (3,)
        assert all(v.device.type == "meta" for v in components.values())
    assert seen and all(device.type == "meta" for device in seen)
    # and the guard would have refused the CPU values the old mix gathered
    with pytest.raises(CollectiveDeviceError):
        collectives.gather(accelerator, torch.tensor([1.0, 2.0, 4.0]))


def test_gradients_are_averaged_in_buckets_not_one_copy_of_everything():
    """Buckets hold one dtype and at most the bucket size (a bigger tensor is alone and reduced in place)."""
    grads = [torch.zeros(10), torch.zeros(20), torch.zeros(100), torch.zeros(5, dtype=torch.float16), torch.zeros(5)]
    groups = collectives.buckets(grads, bucket_bytes=30 * 4)
    assert [[g.numel() for g in group] for group in groups] == [[10, 20], [100], [5], [5]]
    assert all(len({g.dtype for g in group}) == 1 for group in groups)
