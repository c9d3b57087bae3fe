"""Where a command that is no training run (eval, best-of-n, `vrlhf sample`, the demo's evaluations) puts its model.

Training runs take their device from Accelerate; these commands load a policy themselves and would otherwise leave
it on the CPU beside an idle GPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_VARIABLE = "VRLHF_DEVICE"  # e.g. cpu, or cuda:1: overrides the choice below


def default_device() -> torch.device:
    """`VRLHF_DEVICE` when set; else this process's GPU (cuda:LOCAL_RANK under a launcher, as Accelerate picks it);
    else the CPU."""
    chosen = os.environ.get(DEVICE_VARIABLE, "").strip()
    if chosen:
        return torch.device(chosen)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def on_default_device(policy):
    """The policy with its model moved to `default_device()` (returned, for `policy = on_default_device(load(...))`)."""
    policy.model.to(default_device())
    return policy
