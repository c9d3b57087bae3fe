"""Vision tasks, one module each: policy construction, pre/post-processing, metric rewards, evaluation metrics."""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS = ("captioning", "colorization")


def get_task(name: str) -> ModuleType:
    """The task module for `name` (see docs/ARCHITECTURE.md for the interface every task module provides)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return importlib.import_module(f"vrlhf.tasks.{name}")


def get_oracle(name: str) -> ModuleType:
    """The simulated annotator for task `name` (deterministic preferences over the shapes ground truth)."""
    get_task(name)
    return importlib.import_module(f"vrlhf.tasks.{'caption' if name == 'captioning' else name}_oracle")
