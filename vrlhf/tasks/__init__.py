"""Vision tasks, one module each: what a task's rows, outputs, policies, rewards and annotators are.

A task module is any module of this package that declares `NAME`, or any importable module named by its dotted path
(`--task mypackage.mytask`, whose `NAME` is that path: a task of your own, outside this package). docs/ARCHITECTURE.md
lists what it provides. Adding a task is adding its module: stages look up what differs, never the task's name.
Each command resolves its task once (`get_task`) and passes the module down.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from functools import cache
from types import ModuleType

from vrlhf.errors import ConfigError

# The task a command runs when --task is not given (the first thing the product did; any task name works).
DEFAULT_TASK = "captioning"

# What every task module provides (docs/ARCHITECTURE.md says what each one is).
CONTRACT = (
    # constants
    "NAME", "STORED", "SHOWN", "METRIC_REWARDS", "DEFAULT_REWARDS", "REPORT_METRICS", "DEMO_POLICY", "ORACLE",
    "REWARD_IMAGE_ENCODER", "FLIPS_KEEP_PREFERENCES",
    # rows and policies
    "row_problem", "new_policy", "load_policy", "pixel_values",
    # outputs: tokens <-> outputs, teacher-forcing targets, storage, what people see
    "decode", "reference_tokens", "heldout_targets", "ideal_outputs", "to_stored", "from_stored", "render",
    "show_input", "transplant",
    # rewards and metrics
    "metric_reward", "eval_metrics",
)
KINDS = ("text", "image")  # STORED and SHOWN: str or PIL RGB image
# What every simulated annotator (a task's ORACLE module) provides: what the stages call (docs/ARCHITECTURE.md).
ORACLE_CONTRACT = ("score", "prefer", "judge", "rank", "corrupt", "self_agreement", "regions", "mark")


@cache
def task_names() -> tuple[str, ...]:
    """The names of every task module of this package, sorted (tasks outside it are named by their dotted path)."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if _is_task(info.name)))


def _is_task(module_name: str) -> bool:
    if importlib.util.find_spec(f"{__name__}.{module_name}") is None:
        return False
    return hasattr(importlib.import_module(f"{__name__}.{module_name}"), "NAME")


def _import(name: str) -> ModuleType | None:
    """The module `name` names: a module of this package, or a dotted import path; None when there is none."""
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        return None
    if "." not in name:
        return importlib.import_module(f"{__name__}.{name}") if _is_task(name) else None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def get_task(name: str) -> ModuleType:
    """The task module for `name` (see docs/ARCHITECTURE.md for the interface every task module provides): a module
    of vrlhf/tasks, or a dotted import path. Call it once per command and pass the module down."""
    task = _import(name)
    if task is None:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(task_names())} (or the dotted import "
                          "path of a task module of your own, e.g. mypackage.mytask, on PYTHONPATH)")
    missing = [member for member in CONTRACT if not hasattr(task, member)]
    where = f"task module {task.__name__}"
    if missing:
        raise ConfigError(f"{where}: lacks {', '.join(missing)} (docs/ARCHITECTURE.md: the task contract)")
    bad = next((m for m in ("STORED", "SHOWN") if getattr(task, m) not in KINDS), None)
    if bad:
        raise ConfigError(f"{where}: {bad} {getattr(task, bad)!r} is not one of {KINDS}")
    if task.NAME != name:  # exports and the labeling DB record NAME: it must lead back to this module
        raise ConfigError(f"{where}: NAME is {task.NAME!r}, not {name!r} (a task outside vrlhf/tasks is named by "
                          "its import path)")
    return task


def get_oracle(task: ModuleType | str) -> ModuleType:
    """The simulated annotator of `task` (the task module; a name is resolved first, for scripts and tests): its
    `ORACLE`, a module of this package or a dotted path, checked against `ORACLE_CONTRACT`."""
    task = get_task(task) if isinstance(task, str) else task
    name = task.ORACLE
    oracle = importlib.import_module(name if "." in name else f"{__name__}.{name}")
    missing = [member for member in ORACLE_CONTRACT if not hasattr(oracle, member)]
    if missing:
        raise ConfigError(f"oracle module {oracle.__name__} (task {task.NAME}): lacks {', '.join(missing)} "
                          "(docs/ARCHITECTURE.md: the oracle contract)")
    return oracle
