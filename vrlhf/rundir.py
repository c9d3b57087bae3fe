"""A run directory, as every trainer (pretrain, train-reward, tune) writes it: config, metrics, progress.

    run = RunDir(out, resume_step=state.step, enabled=accelerator.is_main_process)
    run.save_config(cfg)                     # config.yaml: the resolved config
    run.log({"step": 3, "loss": 0.5})        # metrics.jsonl: one JSON object per line, appended and flushed
    run.progress(3, total=60)                # progress.json: {"step", "total", "updated"}, replaced atomically

A directory that holds an earlier run (its config.yaml) is never silently replaced: `check_out` (called by RunDir,
and by each command before it loads anything) refuses it unless the run is continued (`--resume`) or replaced on
purpose (`--overwrite`). A command that fails before its run holds anything to resume from removes the directory it
created (`removed_on_failure`): a failed command leaves nothing new behind.

A fresh run starts an empty metrics.jsonl. A resumed run keeps the lines up to the step it resumes from and drops
the rest: what the interrupted run logged after its last checkpoint, and a last line cut in the middle of a write
(the only line a crash can tear: each line is written whole and flushed). Non-finite numbers are written as null.
Only the main process writes (`enabled`), so every process can call these.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from vrlhf.errors import ConfigError, DataError

CONFIG, METRICS, PROGRESS = "config.yaml", "metrics.jsonl", "progress.json"
KEPT = ("checkpoints", "final")  # what makes a failed run worth keeping: something to resume from, or its result


def check_out(path: str | Path, overwrite: bool = False, resume: bool | None = None) -> None:
    """ConfigError (one line, naming the flags) when `path` holds an earlier run and this one would replace it: only
    `overwrite`, or `resume` (None: the command has no --resume), lets a run write there."""
    path = Path(path)
    if overwrite or resume or not (path / CONFIG).is_file():
        return
    found = ", ".join(name for name in (CONFIG, METRICS, *KEPT) if (path / name).exists())
    hint = "pass --overwrite to replace it" + ("" if resume is None else ", or --resume to continue it")
    raise ConfigError(f"--out {path} already holds a run ({found}): {hint}")


@contextmanager
def removed_on_failure(path: str | Path, enabled: bool = True):
    """Within: if the body fails (an error, Ctrl-C) and `path` did not exist before it, `path` is removed again,
    unless it holds something to resume from or a result (KEPT)."""
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except BaseException:
        if enabled and not existed and path.is_dir() and not any(_holds(path / name) for name in KEPT):
            shutil.rmtree(path, ignore_errors=True)
        raise


def _holds(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


class RunDir:
    def __init__(self, path: str | Path, resume_step: int = 0, enabled: bool = True, overwrite: bool = False,
                 resume: bool | None = None):
        """`overwrite`, `resume`: the command's flags (resume None: it has none), checked by `check_out`."""
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        check_out(self.path, overwrite, resume)
        self.path.mkdir(parents=True, exist_ok=True)
        kept = [line for line, record in read_metrics(self.path / METRICS)
                if record.get("step", math.inf) <= resume_step] if resume_step else []
        (self.path / METRICS).write_text("".join(line + "\n" for line in kept))

    def save_config(self, cfg) -> None:
        if self.enabled:
            save_config(cfg, self.path)

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl, flushed to the file before returning."""
        if not self.enabled:
            return
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")
            f.flush()

    def progress(self, step: int, total: int) -> None:
        """Replace progress.json: how far the run is, for anyone watching (a dashboard, `cat`)."""
        if not self.enabled:
            return
        tmp = self.path / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps({"step": step, "total": total,
                                   "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        os.replace(tmp, self.path / PROGRESS)


def save_config(cfg, out_dir: str | Path) -> Path:
    """Write the resolved config (a dataclass) into a run directory as config.yaml."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path


def read_metrics(path: str | Path) -> list[tuple[str, dict]]:
    """(line, record) of each line of a metrics.jsonl; a torn last line is left out, a bad line elsewhere is a
    DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if number < len(lines):
                raise DataError(f"{path}: line {number} is not valid JSON") from None
    return out


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
