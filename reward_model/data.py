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
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from vrlhf import marks as marks_format
from vrlhf.errors import ConfigError, DataError
from vrlhf.exports import check_pairs, is_trl_preferences, read_manifest
from vrlhf.tasks import get_task, task_names

REQUIRED = ("task", "image", "chosen", "rejected", "label")


def export_task(name) -> ModuleType | None:
    """The task module an export's `task` column names (None: no such task). An export carries its task's name: this
    is where reading one turns it into the module, once per command (`validate`)."""
    try:
        return get_task(name)
    except ConfigError:
        return None


PAIRS_FILES = {"jsonl": "pairs.jsonl", "parquet": "pairs.parquet"}  # formats whose pairs are one file in the export


def load_export(path: str | Path):
    """A preference export as a `datasets.Dataset` of the contract's columns (a DatasetDict's splits concatenated).

    `path` is an export directory (any format `vrlhf export` writes: hf, jsonl, parquet, trl) or a pairs file in
    one; the directory must hold the manifest of `vrlhf.exports` (an interrupted export has none) and as many pairs
    as it says. A damaged file (torn JSONL line, truncated Arrow or Parquet, broken dataset_info.json, a missing
    image file) is a DataError naming the file and row, raised here, before any model is built."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"export {path} does not exist")
    manifest = read_manifest(path)
    where = path
    if path.is_dir() and manifest.get("format") in PAIRS_FILES:
        path = path / PAIRS_FILES[manifest["format"]]
        if not path.is_file():
            raise DataError(f"export {where}: its manifest says format {manifest['format']!r} but {path.name} is "
                            "missing")
    if path.is_dir():
        ds = _load_saved(path)
    elif path.suffix == ".parquet":
        ds = _load_parquet(path)
    elif path.suffix in {".jsonl", ".json"}:
        ds = _load_jsonl(path)
    else:
        raise DataError(f"export {path}: expected a saved HF dataset directory, .jsonl or .parquet")
    if is_trl_preferences(ds):
        ds = _from_trl(ds, where, manifest)
    check_pairs(where, manifest, len(ds))
    return ds.flatten_indices() if ds._indices is not None else ds


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0]


def _load_saved(path: Path):
    """`datasets.load_from_disk`, its JSON and Arrow files checked first so that a damaged one is named."""
    import datasets
    import pyarrow as pa

    for name in ("state.json", "dataset_info.json", "dataset_dict.json"):
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise DataError(f"{path / name}: not valid JSON ({_first_line(e)}); export again") from None
    state = path / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files", [None]):
        raise DataError(f"export {path} is empty: no preference pairs")  # 0 shards: unloadable
    for arrow in sorted(path.rglob("*.arrow")):
        try:
            with pa.memory_map(str(arrow)) as source:
                pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{arrow}: damaged Arrow file ({_first_line(e)}); export again") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"export {path} is not a saved HF dataset ({_first_line(e)})") from None
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
        raise DataError(f"export {path}: cannot load the saved dataset ({_first_line(e)}); export again") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets(list(ds.values()))
    return ds


def _load_parquet(path: Path):
    """The Parquet file as a dataset (its features, e.g. images, from the file's schema), read in place."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return datasets.Dataset(pq.read_table(path))
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: damaged Parquet file ({_first_line(e)}); export again") from None


def _load_jsonl(path: Path):
    """JSON lines, one pair each. Images are file paths relative to the file (`vrlhf export --format jsonl` writes
    them as `image_path`, `chosen_path`, `rejected_path` beside `media/`) or base64 data URIs."""
    import datasets

    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path} line {n}: not valid JSON ({_first_line(e)}); a torn line is an "
                                "interrupted write: export again") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {n}: expected a JSON object (one pair), got {type(record).__name__}")
            records.append(_jsonl_pair(record, path.parent, f"{path} line {n}"))
    if not records:
        return datasets.Dataset.from_dict({})
    ds = datasets.Dataset.from_list(records)
    for key in ("image", "chosen", "rejected"):
        if key in ds.column_names and not isinstance(ds.features[key], datasets.Value):  # {bytes, path}: an image
            ds = ds.cast_column(key, datasets.Image())
    return ds


def _jsonl_pair(record: dict, base: Path, where: str) -> dict:
    """A JSONL pair with its images as {"bytes", "path"} (what `datasets.Image` stores); DataError naming the line
    when an image file is missing or a data URI is broken."""
    task = export_task(record.get("task"))
    images = task is not None and task.STORED == "image"
    for key in ("image", "chosen", "rejected"):
        value = record.get(key)
        if value is None and record.get(f"{key}_path"):
            value = record[f"{key}_path"]
        if key == "image" or images or isinstance(value, str) and value.startswith("data:image"):
            record[key] = _image_ref(value, base, f"{where}: the {'input' if key == 'image' else key} image")
    return record


def _image_ref(value, base: Path, where: str) -> dict | None:
    if value is None or isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return value
    if not isinstance(value, str):
        raise DataError(f"{where} should be a file path or a data URI, not a {type(value).__name__}")
    if value.startswith("data:image"):
        try:
            return {"bytes": base64.b64decode(value.split(",", 1)[1], validate=True), "path": None}
        except (IndexError, ValueError) as e:
            raise DataError(f"{where} is a broken data URI ({_first_line(e)})") from None
    file = Path(value) if Path(value).is_absolute() else base / value
    if not file.is_file():
        raise DataError(f"{where} file {file} is missing")
    return {"bytes": file.read_bytes(), "path": None}


def _from_trl(ds, path: Path, manifest: dict):
    """TRL's vision preference format (`vrlhf export --format trl`: images, conversational prompt, chosen and
    rejected assistant turns; ties left out) as the contract's pair columns, every pair strict (label 1.0)."""
    import datasets

    tasks = list(manifest.get("tasks") or {})
    if len(tasks) != 1:
        raise DataError(f"export {path} is in TRL's format, whose pairs do not name their task; its manifest "
                        f"should name one task, not {tasks}")
    images = column(ds, "images" if "images" in ds.column_names else "image")

    def text(turns) -> str:
        return "".join(part.get("text") or "" for turn in turns or [] for part in turn.get("content") or []
                       if part.get("type") == "text")

    n = len(ds)
    columns = {"task": tasks * n, "image": [im[0] if isinstance(im, list) and im else im for im in images],
               "chosen": [text(t) for t in column(ds, "chosen")], "rejected": [text(t) for t in column(ds, "rejected")],
               "label": [1.0] * n}
    features = datasets.Features({"task": datasets.Value("string"), "image": datasets.Image(),
                                  "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
                                  "label": datasets.Value("float32")})
    return datasets.Dataset.from_dict(columns, features=features)


def column(ds, name: str) -> list:
    """A column as a Python list, straight from Arrow (images stay encoded)."""
    return ds.data.column(name).to_pylist()


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


def validate(ds, path, task: str | ModuleType = "") -> tuple[ModuleType, list[int], list[str]]:
    """Check an export; returns (the task module, indices of the usable pairs, notes). Problems exit with one line.
    `task`: the pairs' task (its module, or its name; empty: the export's only task).

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
    found = Counter(tasks)
    given = task if isinstance(task, ModuleType) else None
    task = given.NAME if given is not None else task
    modules = {name: given if given is not None and name == given.NAME else export_task(name) for name in found}
    for i, t in enumerate(tasks):
        if modules[t] is None:
            raise DataError(f"export {path} {_where(ds, i)}: unknown task {t!r} (known: {', '.join(task_names())})")
    if not task:
        if len(found) > 1:
            raise DataError(f"export {path} mixes tasks {dict(found)}: choose one with --task")
        task = tasks[0]
    the_task = modules.get(task) or given or export_task(task)
    if the_task is None:
        raise DataError(f"unknown task {task!r} (known: {', '.join(task_names())})")
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
    check_images(ds, path, the_task, keep)
    check_marks(ds, path, the_task, keep)
    same = set(_identical(ds, keep))
    if same:
        notes.append(f"dropped {len(same)} pairs with chosen == rejected")
        keep = [i for i in keep if i not in same]
    if not any(float(labels[i]) != 0.5 for i in keep):
        raise DataError(f"export {path} has no preference to learn: all {len(ds)} {task} pairs are ties "
                         "(label 0.5) or have chosen == rejected")
    return the_task, keep, notes


MARK_COLUMNS = ("chosen_marks", "rejected_marks")  # optional: where each candidate was marked wrong (vrlhf.marks)


def check_marks(ds, path, task: ModuleType, keep: list[int]) -> None:
    """Refuse marks that do not fit their output (outside the image, a word past the caption's end), in one line.
    Marks are made on what people see (`SHOWN`): words of a text, cells of an image."""
    text = task.SHOWN == "text"
    for col in (c for c in MARK_COLUMNS if c in ds.column_names):
        values, outputs = column(ds, col), column(ds, col.removesuffix("_marks")) if text else None
        for i in keep:
            marks_format.parse(values[i], outputs[i] if text else marks_format.IMAGE,
                               where=f"export {path} {_where(ds, i)} column {col!r}")


def check_images(ds, path, task: ModuleType, keep: list[int]) -> None:
    """Refuse a pair whose input (or, for image outputs, an output) is not a readable image, in one line naming the
    row: found here, before training, rather than when a batch reaches it. PIL's `verify` reads each file's
    structure and checksums without decoding its pixels."""
    columns = ["image"] + (["chosen", "rejected"] if task.STORED == "image" else [])
    for col in columns:
        values = column(ds, col)
        for i in keep:
            value = values[i]
            try:
                if isinstance(value, dict):
                    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
                    if not source:
                        raise ValueError("no bytes and no path")
                    with Image.open(source) as im:
                        im.verify()
                elif not isinstance(value, Image.Image):
                    raise ValueError(f"a {type(value).__name__}, not an image")
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError for some broken files
                what = "input image" if col == "image" else f"{col} output"
                raise DataError(f"export {path} {_where(ds, i)}: the {what} is not a readable image "
                                f"({_first_line(e)})") from None


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


DECODED_BYTES = 1 << 30  # pixels of decoded pairs a PairDataset keeps between epochs


class PairDataset(torch.utils.data.Dataset):
    """Pairs of an export at `indices`, decoded lazily: {"image", "chosen", "rejected", "label", "turn"}, the outputs
    as the task's `from_stored` reads them back (`collate_pairs` renders them as people saw them).

    With `augment`, each pair is turned by one of `DIHEDRAL` (its "turn", applied by `collate_pairs` to the input and
    what people see of both outputs), drawn from (seed, epoch, row) so that any number of processes sees the same
    orientations; set `epoch` before each pass."""

    def __init__(self, ds, indices: list[int], task: ModuleType, augment: bool = False, seed: int = 0,
                 marks: bool = False, mark_grid: int = 8, mark_boxes: bool = False):
        self.ds, self.indices, self.task = ds, list(indices), task
        self.augment, self.seed, self.epoch = augment, seed, 0
        # with `marks`, each pair also carries "chosen_marks"/"rejected_marks" as bool masks: an image's cells on a
        # mark_grid raster (turned with the image), a caption's words, or with `mark_boxes` a box set's boxes (for a
        # model that reads the boxes, vrlhf/marks.py box_mask); all False where the export has no marks
        self.marks = marks and any(c in ds.column_names for c in MARK_COLUMNS)
        self.mark_grid, self.mark_boxes = mark_grid, mark_boxes
        # Decoded pairs are kept (up to DECODED_BYTES of pixels) for the next epochs: on a CPU, decoding each pair's
        # images every epoch took about a sixth of a small reward model's training. DataLoader workers (GPU runs) are
        # forked each epoch and keep nothing: there every pass decodes afresh, beside the training.
        self._decoded: dict[int, dict] = {}
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        pair = dict(self._decoded.get(j) or self._decode(j))  # a copy: the turn below is this epoch's
        if self.augment:
            pair["turn"] = turn = random.Random(f"{self.seed}/{self.epoch}/{self.indices[j]}").choice(DIHEDRAL)
            if turn is not None and self.marks:  # the cells turn with the image: the same PIL transpose on the mask
                pair |= {key: np.array(Image.fromarray(pair[key]).transpose(turn))
                         for key in ("chosen_marks", "rejected_marks")}
        return pair

    def _decode(self, j: int) -> dict:
        """Pair j as read from the export, not yet turned; kept in `_decoded` while the budget lasts."""
        r = self.ds[self.indices[j]]
        task = self.task
        pair = {"image": to_image(r["image"]).convert("RGB"), "label": float(r["label"]), "turn": None}
        row = {"image": pair["image"]}
        for key in ("chosen", "rejected"):
            pair[key] = task.from_stored(str(r[key]) if task.STORED == "text" else to_image(r[key]), row)
        if self.marks:
            for key in ("chosen", "rejected"):
                pair[f"{key}_marks"] = self._mask(marks_format.parse(r.get(f"{key}_marks")), row, pair[key])
        size = sum(v.width * v.height * len(v.getbands()) for v in pair.values() if isinstance(v, Image.Image))
        in_worker = torch.utils.data.get_worker_info() is not None  # a worker lives one epoch: keeping would only cost
        if not in_worker and self._decoded_bytes + size <= DECODED_BYTES:
            self._decoded[j], self._decoded_bytes = pair, self._decoded_bytes + size
        return pair

    def _mask(self, marks: dict, row: dict, output) -> np.ndarray:
        """One candidate's marks as the regions its reward model scores: boxes, a caption's words or image cells."""
        if self.mark_boxes:
            return marks_format.box_mask(marks, output, *row["image"].size)
        if self.task.SHOWN == "text":
            return marks_format.word_mask(marks, len(self.task.render(row, output).split()))
        return marks_format.cell_mask(marks, self.mark_grid).astype(np.uint8)


def collate_pairs(model, pairs: list[dict], transplant=None) -> dict:
    """A batch of pairs as model inputs (k = 2: chosen then rejected per image) plus `label`: the outputs as people
    saw them (`model.shown`: the task's render), each pair's input and shown images turned by its "turn".

    With `transplant(output, row)` (the task's), a third output per image (k = 3): the next pair's chosen output
    carried onto this pair's input, a free negative for the in-batch contrastive term."""
    rows = [{"image": p["image"]} for p in pairs]
    if transplant is not None and len(pairs) > 1:
        outputs = [o for i, p in enumerate(pairs) for o in (
            p["chosen"], p["rejected"], transplant(pairs[(i + 1) % len(pairs)]["chosen"], rows[i]))]
    else:
        outputs = [o for p in pairs for o in (p["chosen"], p["rejected"])]
    shown = model.shown(rows, outputs)
    per_output = len(outputs) // len(pairs)
    turns = [p.get("turn") for p in pairs]
    if any(turns):  # augmentation: the input and what people see of its outputs turn together
        rows = [{"image": r["image"].transpose(t)} if t is not None else r for r, t in zip(rows, turns)]
        shown = [o.transpose(turns[i // per_output]) if turns[i // per_output] is not None else o
                 for i, o in enumerate(shown)]
    batch = model.inputs(rows, shown)
    batch["label"] = torch.tensor([p["label"] for p in pairs], dtype=torch.float32)
    if "chosen_marks" in pairs[0]:  # [len(outputs), regions]: True where marked; the transplanted output has none
        masks = [torch.as_tensor(m, dtype=torch.bool).flatten() for p in pairs for m in (
            p["chosen_marks"], p["rejected_marks"], *[np.zeros(0, bool)] * (per_output - 2))]
        batch["marks"] = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True, padding_value=False)
    return batch
