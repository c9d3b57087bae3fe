"""Reward mixing: parse `name=weight` specs, build metric and learned rewards, normalise each, sum with weights.

    --reward cider_d=1.0 --reward learned:runs/rm=0.5

A spec is `NAME[=WEIGHT]` (weight 1 when left out): NAME is a metric reward of the task (`cider_d`,
`colorfulness`, `fidelity`), `learned:DIR`, a reward-model directory read by
`reward_model.load_reward_model`, or `oracle`, the simulated annotator's own score (shapes data: the bound).
Every problem (bad syntax, unknown metric, missing directory) is raised as a `RewardSpecError` before any training
work starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vrlhf.errors import ConfigError, ModelError

NORMALIZATIONS = ("none", "batch", "running")
LEARNED = "learned:"
ORACLE = "oracle"  # the simulated annotator itself (shapes data): the bound of learned rewards


class RewardSpecError(ConfigError):
    """A reward spec that cannot be honoured; the message says which spec and why."""


@dataclass
class RewardSpec:
    name: str  # the key logged for this component: the metric name, or `learned:<dir name>`
    weight: float
    path: str | None = None  # reward-model directory for learned rewards


def parse_reward_spec(text: str) -> RewardSpec:
    """`cider_d=1.0` / `cider_d` / `learned:runs/rm=0.5` -> RewardSpec; checks syntax and that a RM dir exists."""
    text = text.strip()
    name, weight = text, 1.0
    if "=" in text:
        name, raw = text.rsplit("=", 1)
        try:
            weight = float(raw)
        except ValueError:
            raise RewardSpecError(f"reward spec {text!r}: weight {raw!r} is not a number (expected NAME=WEIGHT)"
                                  ) from None
        if not math.isfinite(weight):
            raise RewardSpecError(f"reward spec {text!r}: weight must be finite")
    if not name:
        raise RewardSpecError(f"reward spec {text!r}: empty name (expected e.g. cider_d=1.0 or learned:DIR=0.5)")
    if name.startswith(LEARNED):
        path = name[len(LEARNED) :]
        if not path:
            raise RewardSpecError(f"reward spec {text!r}: learned reward needs a directory, e.g. learned:runs/rm=0.5")
        if not Path(path).is_dir():
            raise RewardSpecError(f"reward spec {text!r}: reward-model directory {path!r} does not exist")
        return RewardSpec(name=LEARNED + Path(path).name, weight=weight, path=path)
    return RewardSpec(name=name, weight=weight)


def parse_reward_specs(texts: list[str]) -> list[RewardSpec]:
    if not texts:
        raise RewardSpecError("no reward given: pass at least one --reward NAME=WEIGHT")
    specs = [parse_reward_spec(t) for t in texts]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RewardSpecError(f"reward(s) given twice: {', '.join(duplicates)}")
    return specs


class RunningMeanStd:
    """Mean and variance of everything seen so far (Chan et al.'s parallel update), checkpointable."""

    def __init__(self):
        self.count, self.mean, self.var = 0, 0.0, 1.0

    def update(self, values: torch.Tensor) -> None:
        n = values.numel()
        if n == 0:
            return
        mean, var = values.mean().item(), values.var(unbiased=False).item()
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.count, self.mean, self.var = total, self.mean + delta * n / total, m2 / total

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]


class RewardMix:
    """Weighted sum of reward functions, each optionally normalised first.

    `normalize`: `none` (raw values), `batch` (whiten each component over the batch, gathered over processes),
    `running` (subtract the running mean, divide by the running std; the statistics are checkpointed).
    Normalising before summing keeps one reward on a large scale from drowning the others.

    Every value lives on `device` (the policy's, the accelerator's): a metric computed on the CPU is moved there
    before it meets a collective (NCCL takes no CPU tensor) or the policy's log-probs.
    """

    def __init__(self, fns: dict[str, Callable], weights: dict[str, float], normalize: str = "none", eps: float = 1e-6,
                 device: str | torch.device = "cpu"):
        if normalize not in NORMALIZATIONS:
            raise RewardSpecError(f"unknown reward normalisation {normalize!r}; "
                                  f"choose one of {', '.join(NORMALIZATIONS)}")
        self.fns, self.weights, self.normalize, self.eps = fns, weights, normalize, eps
        self.device = torch.device(device)
        self.stats = {name: RunningMeanStd() for name in fns}
        # name -> the reward's dense form, where it has one: regions(rows, outputs) -> per output, what each of its
        # regions adds (sums to the reward; docs/ARCHITECTURE.md, RewardFn). build_reward fills it.
        self.regions: dict[str, Callable] = {}

    def score(self, rows: list[dict], outputs: list) -> dict[str, torch.Tensor]:
        """Raw value of every component: name -> (len(outputs),) float32 on `self.device`."""
        return {name: torch.as_tensor(fn(rows, outputs), dtype=torch.float32).reshape(-1).to(self.device)
                for name, fn in self.fns.items()}

    def combine(self, components: dict[str, torch.Tensor], gather: Callable = lambda t: t) -> torch.Tensor:
        """Normalise each component, then sum with the weights -> (N,) on `self.device`. `gather` collects a tensor
        from all ranks (vrlhf.collectives.gather: it refuses a tensor off the accelerator's device)."""
        total = torch.zeros((), device=self.device)
        for name, values in components.items():
            values = values.to(self.device)
            if self.normalize == "batch":
                everyone = gather(values)
                values = (values - everyone.mean()) / (everyone.std(unbiased=False) + self.eps)
            elif self.normalize == "running":
                stats = self.stats[name]
                stats.update(gather(values))
                values = (values - stats.mean) / (math.sqrt(stats.var) + self.eps)
            total = total + self.weights[name] * values
        return total

    def __call__(self, rows: list[dict], outputs: list, gather: Callable = lambda t: t):
        """-> (total (N,), raw components {name: (N,)})."""
        components = self.score(rows, outputs)
        return self.combine(components, gather), components

    def dense(self, rows: list[dict], outputs: list, to_tokens: Callable, gather: Callable = lambda t: t):
        """-> (total (N,), token rewards (N, T) or None, raw components {name: (N,)}): the total as `__call__` gives
        it, and the share of it that the components with a dense form earned, per token. `to_tokens(regions)` spreads
        a component's region values onto the sampled tokens (the task's `token_rewards`). A component is normalised
        as in `combine` (an affine map a·v + c per component): its tokens get a·value and token 0 gets c, so each row
        of the token rewards sums to the dense components' part of the total; the rest has no per-token form."""
        total, tokens, components = torch.zeros((), device=self.device), None, {}
        for name, fn in self.fns.items():
            if name in self.regions:
                per_token = to_tokens(self.regions[name](rows, outputs)).to(self.device)  # (N, T)
                values = per_token.sum(1)
            else:
                values = torch.as_tensor(fn(rows, outputs), dtype=torch.float32).reshape(-1).to(self.device)
            components[name] = values
            weighted = self.combine({name: values}, gather)  # w · normalised values, exactly as __call__
            total = total + weighted
            if name in self.regions:
                scale = self.weights[name] / self._spread(name, values, gather)
                per_token = scale * per_token
                per_token[:, 0] += weighted - scale * values  # the normalisation's shift: the same for every sample
                tokens = per_token if tokens is None else tokens + per_token
        return total, tokens, components

    def _spread(self, name: str, values: torch.Tensor, gather: Callable) -> float:
        """What `combine` divided the component by (after it updated the running statistics)."""
        if self.normalize == "batch":
            return gather(values).std(unbiased=False).item() + self.eps
        if self.normalize == "running":
            return math.sqrt(self.stats[name].var) + self.eps
        return 1.0

    def state_dict(self) -> dict:
        return {name: stats.state_dict() for name, stats in self.stats.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, stats in state.items():
            self.stats[name].load_state_dict(stats)


def oracle_reward(task, train_rows: list[dict]):
    """The task's simulated annotator's latent score as a reward (shapes data only). Tuning on it bounds what any
    learned reward model of those annotators can reach with the same budget."""
    from vrlhf.tasks import get_oracle

    if not all(row.get("attributes") for row in train_rows):
        raise RewardSpecError("reward 'oracle' needs rows with the shapes ground truth (attributes), as "
                              "`vrlhf data shapes` writes them")
    oracle = get_oracle(task)

    def oracle_score(rows: list[dict], outputs: list) -> torch.Tensor:
        k = len(outputs) // len(rows)
        return torch.tensor([oracle.score(rows[i // k], o) for i, o in enumerate(outputs)], dtype=torch.float32)

    def oracle_regions(rows: list[dict], outputs: list) -> list:
        """Where each output's score comes from (the oracle's `regions`): they sum to `oracle_score`."""
        k = len(outputs) // len(rows)
        return [oracle.regions(rows[i // k], o) for i, o in enumerate(outputs)]

    oracle_score.regions = oracle_regions
    return oracle_score


def build_reward(task, specs: list[RewardSpec], train_rows: list[dict], normalize: str = "none",
                 device="cpu") -> RewardMix:
    """Metric rewards from the task module (document frequencies etc. from `train_rows`), learned ones from disk
    (on `device`, where the mix puts every value too)."""
    fns, weights, regions = {}, {}, {}
    for spec in specs:
        if spec.path is not None:
            from reward_model import load_reward_model  # lazily: the tuner works without reward models

            try:  # a directory that is not a reward model must fail here, not mid-run
                model = load_reward_model(spec.path, device=device, task=task)  # of this task's outputs
                fns[spec.name] = model.score
                if getattr(model, "regions", None) is not None:  # a dense reward model
                    regions[spec.name] = model.regions
            except (ModelError, ConfigError) as err:  # not a reward model; a task with no reward-model architecture
                raise RewardSpecError(f"reward {spec.name}: cannot load reward model from {spec.path!r}: {err}"
                                      ) from err
        elif spec.name == ORACLE:
            fns[spec.name] = oracle_reward(task, train_rows)
        else:
            try:
                fns[spec.name] = task.metric_reward(spec.name, train_rows)
            except ConfigError as err:
                raise RewardSpecError(f"unknown metric reward {spec.name!r} for task {task.NAME!r}: {err}") from err
        weights[spec.name] = spec.weight
        if getattr(fns[spec.name], "regions", None) is not None:  # a function with a dense form (the oracle)
            regions[spec.name] = fns[spec.name].regions
    mix = RewardMix(fns, weights, normalize, device=device)
    mix.regions = regions
    return mix
