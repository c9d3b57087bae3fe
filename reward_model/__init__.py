"""Reward models from preference pairs: caption and colorization models, Bradley–Terry training, loading.

`load_reward_model(path)` returns a scorer whose `score(rows, outputs)` is a RewardFn for the tuner.
"""

from reward_model.base import TASKS, RewardModel, RewardModelConfig, build_reward_model, load_reward_model
from reward_model.losses import bradley_terry_loss
from reward_model.metrics import pair_metrics

__all__ = ["TASKS", "RewardModel", "RewardModelConfig", "bradley_terry_loss", "build_reward_model",
           "load_reward_model", "pair_metrics"]
