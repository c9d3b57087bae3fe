"""Preference exports in, validated pairs out: load (HF dataset dir, .jsonl, .parquet), check, split by item.

A pair is the contract's rows/outputs with k = 2: `rows = [{"image": input}]`, `outputs = [chosen, rejected]`,
so one batch of pairs is scored by the same `inputs`/`forward` code that scores the tuner's samples.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reward_model.base import TASKS
from vrlhf.errors import DataError
from vrlhf.exports import check_pairs, read_manifest

REQUIRED = ("task", "image", "chosen", "rejected", "label")


def load_export(path: str | Path):
    """A preference export as a `datasets.Dataset` (a DatasetDict's splits are concatenated).

    `path` is an export directory or a pairs file in one; the directory must hold the manifest of
    `vrlhf.exports` (an interrupted export has none) and as many pairs as it says, else DataError.
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise DataError(f"export {path} does not exist")
    manifest = read_manifest(path)
    if path.is_dir():
        state = path / "state.json"
        if state.is_file() and not json.loads(state.read_text()).get("_data_files", [None]):
            raise DataError(f"export {path} is empty: no preference pairs")  # 0 shards: unloadable
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as e:
            raise DataError(f"export {path} is not a saved HF dataset ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = datasets.concatenate_datasets(list(ds.values()))
    elif path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    elif path.suffix in {".jsonl", ".json"}:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        base = path.parent
        for r in records:  # images in JSONL are file paths (relative to the file) or base64 data URIs
            for key in ("image", "chosen", "rejected"):
                if isinstance(r.get(key), str) and _looks_like_image_ref(r[key]) and (r.get("task") != "captioning"
                                                                                     or key == "image"):
                    r[key] = to_image(r[key], base)
        ds = datasets.Dataset.from_list(records) if records else datasets.Dataset.from_dict({})
    else:
        raise DataError(f"export {path}: expected a saved HF dataset directory, .jsonl or .parquet")
    check_pairs(path, manifest, len(ds))
    return ds.flatten_indices() if ds._indices is not None else ds


def column(ds, name: str) -> list:
    """A column as a Python list, straight from Arrow (images stay encoded)."""
    return ds.data.column(name).to_pylist()


def _looks_like_image_ref(s: str) -> bool:
    return s.startswith("data:image") or s.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp"))


def to_image(value, base: Path | None = None) -> Image.Image | None:
    """PIL image from a PIL image, a datasets Image dict ({bytes, path}), a file path or a data URI."""
    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, str):
        if value.startswith("data:image"):
            return Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
        p = Path(value)
        return Image.open(p if p.is_absolute() or base is None else base / p)
    raise TypeError(f"cannot read an image from {type(value).__name__}")


def _where(ds, i: int) -> str:
    cid = column(ds, "comparison_id")[i] if "comparison_id" in ds.column_names else None
    return f"row {i}" + (f" (comparison_id {cid})" if cid is not None else "")


def validate(ds, path, task: str = "") -> tuple[str, list[int], list[str]]:
    """Check an export; returns (task, indices of the usable pairs, notes). Problems exit with one line.

    Errors: empty export, missing columns, an unknown task, a label outside [0, 1], a missing input image or
    a missing chosen/rejected output, no pairs of the requested task, and an export with no preference to
    learn (every pair a tie or chosen == rejected: Bradley–Terry sees only differences, so such a
    "single-class" export carries no signal). Pairs with chosen == rejected are dropped with a note; labels
    that are all 1.0 are the normal case (chosen always listed first).
    """
    if len(ds) == 0:
        raise DataError(f"export {path} is empty: no preference pairs")
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise DataError(f"export {path} lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    tasks = column(ds, "task")
    for i, t in enumerate(tasks):
        if t not in TASKS:
            raise DataError(f"export {path} {_where(ds, i)}: unknown task {t!r} (known: {', '.join(TASKS)})")
    found = Counter(tasks)
    if not task:
        if len(found) > 1:
            raise DataError(f"export {path} mixes tasks {dict(found)}: choose one with --task")
        task = tasks[0]
    if task not in TASKS:
        raise DataError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    keep = [i for i, t in enumerate(tasks) if t == task]
    notes = [f"skipped {len(ds) - len(keep)} pairs of other tasks"] if len(keep) < len(ds) else []
    if not keep:
        raise DataError(f"export {path} has no {task} pairs (tasks found: {', '.join(found)})")
    nulls = {c: ds.data.column(c).is_null().to_pylist() for c in ("image", "chosen", "rejected", "label")}
    labels = column(ds, "label")
    for i in keep:
        for col in ("image", "chosen", "rejected", "label"):
            if nulls[col][i]:
                what = {"image": "input image", "label": "label"}.get(col, f"{col} output")
                raise DataError(f"export {path} {_where(ds, i)}: missing {what} (column {col!r})")
        if not 0.0 <= float(labels[i]) <= 1.0:
            raise DataError(f"export {path} {_where(ds, i)}: label {labels[i]} is outside [0, 1]")
    same = set(_identical(ds, keep))
    if same:
        notes.append(f"dropped {len(same)} pairs with chosen == rejected")
        keep = [i for i in keep if i not in same]
    if not any(float(labels[i]) != 0.5 for i in keep):
        raise DataError(f"export {path} has no preference to learn: all {len(ds)} {task} pairs are ties "
                         "(label 0.5) or have chosen == rejected")
    return task, keep, notes


def _identical(ds, keep: list[int]) -> list[int]:
    """Indices whose chosen and rejected are the same caption, or the same encoded image."""
    chosen, rejected = column(ds, "chosen"), column(ds, "rejected")
    out = []
    for i in keep:
        a, b = chosen[i], rejected[i]
        if isinstance(a, Image.Image) and isinstance(b, Image.Image):  # in-memory (JSONL) images
            a, b = a.tobytes(), b.tobytes()
        if a == b:
            out.append(i)
    return out


def split_by_item(ds, indices: list[int], eval_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Held-out split by `item_id` (all pairs of an input image on one side), so evaluation sees new images."""
    items = column(ds, "item_id") if "item_id" in ds.column_names else list(range(len(ds)))
    keys = list(dict.fromkeys(str(items[i]) for i in indices))
    rng = np.random.default_rng(seed)
    n_eval = int(round(eval_fraction * len(keys)))
    if eval_fraction > 0 and len(keys) > 1:
        n_eval = min(max(n_eval, 1), len(keys) - 1)
    held = {keys[j] for j in rng.permutation(len(keys))[:n_eval]}
    train = [i for i in indices if str(items[i]) not in held]
    return train, [i for i in indices if str(items[i]) in held]


# The square's eight symmetries (flips and quarter turns). Turning the input and both outputs of a pair together
# leaves a colorization preference unchanged, so each epoch can show every pair in another orientation.
DIHEDRAL = (None, *(getattr(Image.Transpose, name) for name in (
    "FLIP_LEFT_RIGHT", "FLIP_TOP_BOTTOM", "ROTATE_90", "ROTATE_180", "ROTATE_270", "TRANSPOSE", "TRANSVERSE")))


class PairDataset(torch.utils.data.Dataset):
    """Pairs of an export at `indices`, decoded lazily: {"image", "chosen", "rejected", "label"}.

    With `augment`, each pair is turned by one of `DIHEDRAL`, drawn from (seed, epoch, row) so that any number
    of processes sees the same orientations; set `epoch` before each pass."""

    def __init__(self, ds, indices: list[int], task: str, augment: bool = False, seed: int = 0):
        self.ds, self.indices, self.task = ds, list(indices), task
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        r = self.ds[self.indices[j]]
        pair = {"image": to_image(r["image"]).convert("RGB"), "label": float(r["label"])}
        for key in ("chosen", "rejected"):
            pair[key] = str(r[key]) if self.task == "captioning" else to_image(r[key]).convert("RGB")
        if self.augment:
            turn = random.Random(f"{self.seed}/{self.epoch}/{self.indices[j]}").choice(DIHEDRAL)
            if turn is not None:
                pair |= {key: pair[key].transpose(turn) for key in ("image", "chosen", "rejected")}
        return pair


def collate_pairs(model, pairs: list[dict], transplant=None) -> dict:
    """A batch of pairs as model inputs (k = 2: chosen then rejected per image) plus `label`.

    With `transplant(output, row)` (the task's), a third output per image (k = 3): the next pair's chosen output
    carried onto this pair's input, a free negative for the in-batch contrastive term."""
    rows = [{"image": p["image"]} for p in pairs]
    if transplant is not None and len(pairs) > 1:
        outputs = [o for i, p in enumerate(pairs) for o in (
            p["chosen"], p["rejected"], transplant(pairs[(i + 1) % len(pairs)]["chosen"], rows[i]))]
    else:
        outputs = [o for p in pairs for o in (p["chosen"], p["rejected"])]
    batch = model.inputs(rows, outputs)
    batch["label"] = torch.tensor([p["label"] for p in pairs], dtype=torch.float32)
    return batch
