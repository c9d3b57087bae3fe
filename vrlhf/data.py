"""Loaders that turn an image folder, a COCO captions file or a saved Hugging Face dataset into Rows.

    load_rows("data/shapes/train")                      # image folder: images + metadata.jsonl
    load_rows("captions.json", image_dir="val2017/")     # COCO captions (or a folder holding captions.json)
    load_rows("saved_dataset/")                          # datasets.Dataset.save_to_disk

Every loader returns Rows (docs/ARCHITECTURE.md): `{"id", "image" (RGB), "captions", "attributes", ...}`.
A missing or unreadable image is skipped and counted in one summary line on stderr, or raises `DataError`
with `strict=True`; a malformed record always raises. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from PIL import Image

from vrlhf.errors import DataError


def load_rows(path: str | Path, strict: bool = False, limit: int | None = None,
              image_dir: str | Path | None = None, check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Rows from `path`, whose format is detected (see the module docstring); at most `limit` rows.

    `image_dir` is where COCO `file_name`s live (default: the folder of the JSON file).
    `check(row) -> problem | None` (a task's `row_problem`) refuses a row the task cannot use: a `DataError` naming
    the file and row, raised as the rows are read, before anything else is done with them.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "metadata.jsonl").is_file():
            return _load(_imagefolder(path / "metadata.jsonl"), path / "metadata.jsonl", strict, limit, check)
        if (path / "captions.json").is_file():
            return _load(_coco(path / "captions.json", Path(image_dir or path)), path / "captions.json", strict, limit,
                         check)
        if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _load(_hf_dataset(path), path, strict, limit, check)
        subfolders = sorted(p.name for p in path.iterdir() if p.is_dir())
        hint = f" (subfolders: {', '.join(subfolders)}; point at one of them?)" if subfolders else ""
        raise DataError(f"{path}: no metadata.jsonl (image folder), captions.json (COCO) or saved Hugging Face "
                        f"dataset here{hint}")
    if path.suffix == ".jsonl":
        return _load(_imagefolder(path), path, strict, limit, check)
    if path.suffix == ".json":
        return _load(_coco(path, Path(image_dir or path.parent)), path, strict, limit, check)
    raise DataError(f"{path}: expected a dataset folder, a metadata.jsonl or a COCO captions .json file")


def split_rows(rows: list[dict], test_fraction: float) -> tuple[list[dict], list[dict]]:
    """The (train, test) split every stage uses: test holds the round(len * test_fraction) rows (at least one if
    the fraction is > 0) whose ids hash lowest. It depends on the row ids only, not on a seed or the rows' order,
    and a smaller fraction holds out a subset of a larger one's rows: so tuning, evaluated on held-out rows with
    the fraction pretraining used (or a smaller one), never meets a row its policy was pretrained on."""
    n_test = min(len(rows), max(int(test_fraction > 0), round(len(rows) * test_fraction)))
    ranked = sorted(range(len(rows)), key=lambda i: (_id_hash(rows[i]["id"]), str(rows[i]["id"])))
    test = set(ranked[:n_test])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def load_split(path: str | Path, test_fraction: float, **load) -> tuple[list[dict], list[dict]]:
    """(train, test) rows of a dataset: `path/train` and `path/test` when both exist, else `split_rows` of `path`.
    `load` goes to `load_rows` (strict, check, ...)."""
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_rows(root / "train", **load), load_rows(root / "test", **load)
    return split_rows(load_rows(root, **load), test_fraction)


def _id_hash(row_id) -> int:
    return int.from_bytes(hashlib.sha256(str(row_id).encode()).digest()[:8], "big")


# A record is (row number, image name for messages, image source: Path or bytes, row without its image).
Record = tuple[int, str, "Path | bytes", dict]


def _load(records: Iterable[Record], origin: Path, strict: bool, limit: int | None,
          check: Callable[[dict], str | None] | None = None) -> list[dict]:
    rows, skipped, seen = [], [], 0
    for number, name, source, row in records:
        if limit is not None and len(rows) >= limit:
            break
        seen += 1
        problem = check(row) if check is not None else None
        if problem:
            raise DataError(f"{origin}: row {number} (id {row['id']}): {problem}")
        try:
            image = _open(source)
        except FileNotFoundError:
            problem = "missing"
        except Exception as error:  # PIL raises many kinds for corrupt files
            problem = f"unreadable: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        else:
            rows.append({**row, "image": image})
            continue
        if strict:
            raise DataError(f"{origin}: row {number}: image {name} {problem}")
        skipped.append(f"{name} ({problem})")
    if skipped:
        listed = ", ".join(skipped[:5]) + (f", and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"{origin}: skipped {len(skipped)} of {seen} rows: {listed}", file=sys.stderr)
    if not rows:
        raise DataError(f"{origin}: no rows" + (f" (all {seen} images missing or unreadable)" if seen else ""))
    return rows


def _open(source: Path | bytes) -> Image.Image:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.convert("RGB")  # convert() loads the pixels, so truncated files fail here


def _captions(record: dict, where: str) -> list[str]:
    value = next((record[key] for key in ("captions", "caption", "text") if key in record), [])
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{where}: captions must be a string or a list of strings, got {value!r:.80}")
    return captions


def _imagefolder(meta: Path) -> Iterator[Record]:
    root = meta.parent
    with open(meta) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{meta}: line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
                raise DataError(f"{where}: expected a JSON object with a 'file_name' string")
            name = record["file_name"]
            row = {**record, "id": str(record.get("id", Path(name).stem)), "captions": _captions(record, where),
                   "attributes": record.get("attributes")}
            yield number, name, root / name, row


def _coco(path: Path, image_dir: Path) -> Iterator[Record]:
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) or not isinstance(
            coco.get("annotations"), list):
        raise DataError(f"{path}: expected COCO captions: {{'images': [...], 'annotations': [...]}}")
    captions = defaultdict(list)
    for number, ann in enumerate(coco["annotations"], 1):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise DataError(f"{path}: annotation {number}: expected {{'image_id', 'caption'}}")
        captions[ann["image_id"]].append(ann["caption"].strip())
    ids = set()
    for number, image in enumerate(coco["images"], 1):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataError(f"{path}: image {number}: expected {{'id', 'file_name'}}")
        ids.add(image["id"])
        row = {**image, "id": str(image["id"]), "captions": captions.get(image["id"], []), "attributes": None}
        yield number, image["file_name"], image_dir / image["file_name"], row
    orphans = sum(len(c) for key, c in captions.items() if key not in ids)
    if orphans:
        print(f"{path}: ignored {orphans} captions whose image_id is not in 'images'", file=sys.stderr)


def _hf_dataset(path: Path) -> Iterator[Record]:
    import datasets  # slow to import; only this format needs it

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as error:
        raise DataError(f"{path}: cannot load the saved dataset ({str(error).splitlines()[0]})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if len(dataset) != 1:
            raise DataError(f"{path}: a dataset with splits {', '.join(dataset)}; point at {path}/<split>")
        dataset = next(iter(dataset.values()))
    if "image" not in dataset.column_names:
        raise DataError(f"{path}: no 'image' column (columns: {', '.join(dataset.column_names)})")
    if isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))  # decode here, to report failures
    for index, record in enumerate(dataset):
        number, where = index + 1, f"{path}: row {index + 1}"
        image = record.pop("image")
        if isinstance(image, dict):  # {"bytes", "path"}
            source = image.get("bytes") or (path / image["path"] if image.get("path") else b"")
            name = image.get("path") or f"<image of row {number}>"
        elif isinstance(image, str):
            source, name = path / image, image
        else:
            raise DataError(f"{where}: unsupported image value {type(image).__name__}")
        attributes = record.get("attributes")
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        row = {**record, "id": str(record.get("id", index)), "captions": _captions(record, where),
               "attributes": attributes}
        yield number, name, source, row
