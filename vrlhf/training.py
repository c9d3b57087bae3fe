"""Small training helpers shared by every trainer: gradient averaging across processes, atomic file writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def average_gradients(accelerator, params) -> None:
    """Average gradients over processes.

    The policy calls into the HF model's sub-modules (encoder, decoder) rather than one `forward`, so we do not wrap
    it in DDP; instead we all-reduce the gradients ourselves, in one flat buffer to keep it to a single collective.
    """
    if accelerator.num_processes == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


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
