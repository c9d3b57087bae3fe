"""Reward models from preference pairs: caption and colorization models, Bradley–Terry training, loading.

`load_reward_model(path)` returns a scorer whose `score(rows, outputs)` is a RewardFn for the tuner.
"""

import importlib

# Imported when first used (PEP 562), not with the package: `reward_model.config` stays free of torch, so the CLI
# checks `vrlhf train-reward` / `eval-reward` flags before torch loads.
_WHERE = {"RewardModel": "base", "RewardModelConfig": "config", "build_reward_model": "models",
          "load_reward_model": "models", "bradley_terry_loss": "losses", "pair_metrics": "metrics"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'reward_model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"reward_model.{_WHERE[name]}"), name)
