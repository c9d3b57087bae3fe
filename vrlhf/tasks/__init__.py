"""Vision tasks, one module each: what a task's rows, outputs, policies, rewards and annotators are.

A task module is any module of this package that declares `OUTPUT` (the kind of its outputs); docs/ARCHITECTURE.md
lists what it provides. Adding a task is adding its module: stages look up what differs, never the task's name.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from functools import cache
from types import ModuleType

from vrlhf.errors import ConfigError

# What every task module provides (docs/ARCHITECTURE.md says what each one is).
CONTRACT = (
    # constants
    "NAME", "OUTPUT", "METRIC_REWARDS", "DEFAULT_REWARDS", "DEMO_POLICY", "ORACLE",
    "REWARD_IMAGE_ENCODER", "FLIPS_KEEP_PREFERENCES",
    # rows and policies
    "row_problem", "new_policy", "load_policy", "pixel_values",
    # outputs: tokens <-> outputs, teacher-forcing targets, what people see
    "decode", "reference_tokens", "heldout_targets", "ideal_outputs", "render", "show_input", "transplant",
    # rewards and metrics
    "metric_reward", "eval_metrics",
)
OUTPUT_KINDS = ("text", "image")


@cache
def task_names() -> tuple[str, ...]:
    """The names of every task module, sorted."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if _is_task(info.name)))


def _is_task(module_name: str) -> bool:
    if importlib.util.find_spec(f"{__name__}.{module_name}") is None:
        return False
    return hasattr(importlib.import_module(f"{__name__}.{module_name}"), "OUTPUT")


def get_task(name: str) -> ModuleType:
    """The task module for `name` (see docs/ARCHITECTURE.md for the interface every task module provides)."""
    if not isinstance(name, str) or not name.isidentifier() or not _is_task(name):
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    task = importlib.import_module(f"{__name__}.{name}")
    missing = [member for member in CONTRACT if not hasattr(task, member)]
    if missing or task.OUTPUT not in OUTPUT_KINDS:
        problem = f"lacks {', '.join(missing)}" if missing else f"OUTPUT {task.OUTPUT!r} is not one of {OUTPUT_KINDS}"
        raise ConfigError(f"task module {task.__name__}: {problem} (docs/ARCHITECTURE.md: the task contract)")
    return task


def get_oracle(name: str) -> ModuleType:
    """The simulated annotator for task `name` (deterministic preferences over the shapes ground truth)."""
    return importlib.import_module(f"{__name__}.{get_task(name).ORACLE}")
