"""Small training helpers shared by every trainer: gradient averaging across processes, the mixed precision asked,
atomic file writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def average_gradients(accelerator, params) -> None:
    """Average gradients over processes.

    The policy calls into the HF model's sub-modules (encoder, decoder) rather than one `forward`, so we do not wrap
    it in DDP; instead we all-reduce the gradients ourselves, in DDP-sized buckets (vrlhf.collectives): no copy of
    every gradient at once, and big tensors reduced in place.
    """
    from vrlhf import collectives

    collectives.all_reduce_mean_(accelerator, [p.grad for p in params if p.grad is not None])


def resolve_mixed_precision(flag: str | None) -> str | None:
    """`--mixed_precision` for Accelerator(...): the flag when given, else None, so that Accelerate reads the
    launcher's choice (`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION; default: no)."""
    from vrlhf.errors import ConfigError

    if flag not in ("", None, "no", "bf16", "fp16"):
        raise ConfigError(f"--mixed_precision {flag!r} is not no, bf16 or fp16 (empty: the launcher's)")
    return flag or None


def launcher_mixed_precision(flag: str | None) -> str:
    """The precision a Trainer (TRL) runs in: the flag, else the launcher's ACCELERATE_MIXED_PRECISION, else no."""
    import os

    return resolve_mixed_precision(flag) or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")


def save_files_atomically(out_dir: str | Path, write) -> Path:
    """`write(tmp_dir)` then move each file into `out_dir` with os.replace: files are never seen half-written,
    and other files in `out_dir` (metrics.jsonl, config.yaml) stay."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for path in tmp.iterdir():
        os.replace(path, out / path.name)
    tmp.rmdir()
    return out
