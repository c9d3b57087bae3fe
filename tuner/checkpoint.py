"""Atomic, verified checkpoints through Accelerate: write `step_N.tmp/`, then a manifest, then rename to `step_N/`.

What a checkpoint holds (`accelerator.save_state`): the optimiser, every process's RNG state, and the objects
registered with `accelerator.register_for_checkpointing` (the policy's weights, the scheduler, the train state).
`manifest.json` (every file's name, size and SHA-256) is written last, once every process's files are complete.
Resuming takes the newest checkpoint whose files match their manifest, and says which it skipped and why: a crash
mid-write, a truncated copy or a full disk then costs the steps since the previous checkpoint, never the run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

PREFIX = "step_"
MANIFEST = "manifest.json"


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


def checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The renamed (not `.tmp`) checkpoint folders, newest first."""
    done = [p for p in Path(ckpt_dir).glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX) :].isdigit()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]), reverse=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file of a finished checkpoint; written last, so its presence means the rest is complete."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in sorted(folder.iterdir())
             if p.is_file() and p.name != MANIFEST}
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    tmp.rename(folder / MANIFEST)


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint (a missing manifest, a missing, resized or altered file), or None."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST}"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, expected {expected['size']}"
        if sha256(path) != expected["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def latest_checkpoint(ckpt_dir: str | Path, say=print) -> Path | None:
    """The newest complete checkpoint, or None. Every incomplete one skipped on the way is named in one line."""
    skipped = []
    for folder in checkpoints(ckpt_dir):
        why = problem(folder)
        if why is None:
            if skipped:
                say(f"skipping incomplete checkpoint(s) {'; '.join(skipped)}: resuming from {folder.name}")
            return folder
        skipped.append(f"{folder.name} ({why})")
    if skipped:
        say(f"skipping incomplete checkpoint(s) {'; '.join(skipped)}: no complete checkpoint left")
    return None


def save_checkpoint(accelerator, ckpt_dir: str | Path, step: int, keep: int = 2) -> Path:
    """Every process calls this (each saves its RNG state); the main process seals, renames and prunes."""
    ckpt_dir = Path(ckpt_dir)
    final, tmp = ckpt_dir / f"{PREFIX}{step:06d}", ckpt_dir / f"{PREFIX}{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files are in tmp before the manifest seals them
    if accelerator.is_main_process:
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # atomic on one filesystem: a checkpoint is either complete or absent
        for old in checkpoints(ckpt_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
