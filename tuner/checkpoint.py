"""Atomic checkpoints through Accelerate: write `step_N.tmp/`, then rename to `step_N/`; resume from the newest.

What a checkpoint holds (`accelerator.save_state`): the optimiser, every process's RNG state, and the objects
registered with `accelerator.register_for_checkpointing` (the policy's weights, the scheduler, the train state).
A crash mid-write leaves only a `.tmp` folder, which resuming ignores and the next save replaces.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PREFIX = "step_"


class TrainState:
    """The loop's own counters, plus any extra checkpointable objects (e.g. running reward statistics)."""

    def __init__(self, **extras):
        self.step, self.skipped, self.extras = 0, 0, extras

    def state_dict(self) -> dict:
        return {"step": self.step, "skipped": self.skipped, **{k: v.state_dict() for k, v in self.extras.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.skipped = state["step"], state["skipped"]
        for name, obj in self.extras.items():
            obj.load_state_dict(state[name])


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The completed checkpoint with the highest step, or None (temporary folders are not complete)."""
    done = [p for p in Path(ckpt_dir).glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX) :].isdigit()]
    return max(done, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def save_checkpoint(accelerator, ckpt_dir: str | Path, step: int, keep: int = 2) -> Path:
    """Every process calls this (each saves its RNG state); the main process renames and prunes old ones."""
    ckpt_dir = Path(ckpt_dir)
    final, tmp = ckpt_dir / f"{PREFIX}{step:06d}", ckpt_dir / f"{PREFIX}{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files are in tmp before it becomes visible
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # atomic on one filesystem: a checkpoint is either complete or absent
        done = sorted(p for p in ckpt_dir.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX) :].isdigit())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
