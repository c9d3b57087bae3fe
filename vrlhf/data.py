"""Loaders that turn an image folder, a COCO captions or instances file or a Hugging Face dataset into Rows.

    load_rows("data/shapes/train")                      # image folder: images + metadata.jsonl
    load_rows("captions.json", image_dir="val2017/")     # COCO captions (or a folder holding captions.json)
    load_rows("instances_val2017.json", image_dir="val2017/")   # COCO boxes (or a folder holding instances*.json)
    load_rows("saved_dataset/")                          # datasets.Dataset.save_to_disk
    load_rows("owner/name:validation")                   # a hub dataset id (":SPLIT" when it has several splits)
    load_rows(dataset, image_column="img", caption_column="sentences")   # a `datasets.Dataset` already loaded

A Hugging Face dataset needs an image column (`image_column`, default "image") and, for captioning, a caption column
(`caption_column`: a string or a list of strings per row; default: the first of captions, caption, text).

Boxes, for detection, arrive in one form whatever the source: `attributes["boxes"] = [{"bbox": [x, y, w, h],
"category": name}, ...]` (COCO's box, in pixels). A COCO instances file gives them by `category_id` (named by its
`categories`; crowd regions, `iscrowd` 1, are left out); a folder holding both captions.json and an instances file
gives rows with both. A Hugging Face dataset's `objects` column (`bbox`, `category`: the Hub's detection layout) gives
them too, a ClassLabel category as its name.

Every loader returns Rows (docs/ARCHITECTURE.md): `{"id", "image" (RGB), "captions", "attributes", ...}`.
A missing or unreadable image is skipped and counted in one summary line on stderr, or raises `DataError`
with `strict=True`; a malformed record always raises. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from PIL import Image

from vrlhf.errors import DataError
from vrlhf.hub import is_hub_id


def load_rows(path, strict: bool = False, limit: int | None = None, image_dir: str | Path | None = None,
              check: Callable[[dict], str | None] | None = None, image_column: str = "image",
              caption_column: str = "") -> list[dict]:
    """Rows from `path`, whose format is detected (see the module docstring); at most `limit` rows.

    `path` is a file or folder, a hub dataset id (`owner/name` or `owner/name:split`), or a `datasets.Dataset`.
    `image_dir` is where COCO `file_name`s live (default: the folder of the JSON file).
    `check(row) -> problem | None` (a task's `row_problem`) refuses a row the task cannot use: a `DataError` naming
    the file and row, raised as the rows are read, before anything else is done with them.
    `image_column` / `caption_column` name a Hugging Face dataset's columns (see the module docstring).
    """
    columns = dict(image_column=image_column, caption_column=caption_column)
    if not isinstance(path, (str, Path)):  # a datasets.Dataset (or a one-split DatasetDict) in memory
        origin = getattr(path, "info", None) and path.info.dataset_name or f"<{type(path).__name__}>"
        return _load(_dataset_records(_one_split(path, origin), origin, None, **columns), origin, strict, limit, check)
    if not Path(path).exists() and is_hub_id(path):
        return _load(_dataset_records(_hub_dataset(str(path)), str(path), None, **columns), str(path), strict, limit,
                     check)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "metadata.jsonl").is_file():
            return _load(_imagefolder(path / "metadata.jsonl"), path / "metadata.jsonl", strict, limit, check)
        coco = _coco_files(path)
        if coco:
            return _load(_coco(coco, Path(image_dir or path)), coco[0] if len(coco) == 1 else path, strict, limit,
                         check)
        if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _load(_dataset_records(_saved_dataset(path), path, path, **columns), path, strict, limit, check)
        subfolders = sorted(p.name for p in path.iterdir() if p.is_dir())
        hint = f" (subfolders: {', '.join(subfolders)}; point at one of them?)" if subfolders else ""
        raise DataError(f"{path}: no metadata.jsonl (image folder), captions.json or instances*.json (COCO) or saved "
                        f"Hugging Face dataset here{hint}")
    if path.suffix == ".jsonl":
        return _load(_imagefolder(path), path, strict, limit, check)
    if path.suffix == ".json":
        return _load(_coco([path], Path(image_dir or path.parent)), path, strict, limit, check)
    raise DataError(f"{path}: expected a dataset folder, a metadata.jsonl or a COCO captions or instances .json file")


def split_rows(rows: list[dict], test_fraction: float) -> tuple[list[dict], list[dict]]:
    """The (train, test) split every stage uses: test holds the round(len * test_fraction) rows (at least one if
    the fraction is > 0) whose ids hash lowest. It depends on the row ids only, not on a seed or the rows' order,
    and a smaller fraction holds out a subset of a larger one's rows: so tuning, evaluated on held-out rows with
    the fraction pretraining used (or a smaller one), never meets a row its policy was pretrained on."""
    n_test = min(len(rows), max(int(test_fraction > 0), round(len(rows) * test_fraction)))
    ranked = sorted(range(len(rows)), key=lambda i: (_id_hash(rows[i]["id"]), str(rows[i]["id"])))
    test = set(ranked[:n_test])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def load_split(path, test_fraction: float, **load) -> tuple[list[dict], list[dict]]:
    """(train, test) rows of a dataset: its train and test parts when it has both (folders `path/train` and
    `path/test`, as `vrlhf data shapes` and `DatasetDict.save_to_disk` write them, or the splits of a hub or
    in-memory dataset), else `split_rows` of `path`. `load` goes to `load_rows` (strict, check, columns, ...)."""
    if isinstance(path, (str, Path)):
        root = Path(path)
        if (root / "train").is_dir() and (root / "test").is_dir():
            return load_rows(root / "train", **load), load_rows(root / "test", **load)
        if not root.exists() and is_hub_id(path) and ":" not in str(path):
            if {"train", "test"} <= set(_hub_dataset(str(path), whole=True)):
                return load_rows(f"{path}:train", **load), load_rows(f"{path}:test", **load)
    elif hasattr(path, "keys") and {"train", "test"} <= set(path.keys()):  # a DatasetDict in memory
        return load_rows(path["train"], **load), load_rows(path["test"], **load)
    return split_rows(load_rows(path, **load), test_fraction)


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


def _coco_files(folder: Path) -> list[Path]:
    """The COCO files of a folder: captions.json and/or one instances*.json (several are ambiguous: a DataError)."""
    instances = sorted(folder.glob("instances*.json"))
    if len(instances) > 1:
        raise DataError(f"{folder}: several COCO instances files ({', '.join(p.name for p in instances)}); point at "
                        f"one of them")
    return [p for p in [folder / "captions.json"] if p.is_file()] + instances


def _read_coco(path: Path) -> dict:
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) or not isinstance(
            coco.get("annotations"), list):
        raise DataError(f"{path}: expected COCO captions or instances: {{'images': [...], 'annotations': [...]}}")
    return coco


def _coco_categories(coco: dict, path: Path) -> dict:
    """category id -> name of an instances file's `categories` (empty when it has none)."""
    names = {}
    for number, category in enumerate(coco.get("categories") or [], 1):
        if not isinstance(category, dict) or "id" not in category or not isinstance(category.get("name"), str):
            raise DataError(f"{path}: category {number}: expected {{'id', 'name'}}")
        names[category["id"]] = category["name"]
    return names


def _box(bbox, category, names: dict | None, where: str, field: str) -> dict:
    """One box in the rows' form, {"bbox": [x, y, w, h], "category": name}, checked: 4 finite numbers, no negative
    size, a category `names` knows (`names` None: the category is its own name)."""
    numbers = isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not numbers:
        raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r:.80}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise DataError(f"{where}: bbox {list(bbox)} has a negative size (width {bbox[2]}, height {bbox[3]})")
    if names is not None and category not in names:
        known = ", ".join(map(str, list(names)[:10])) + (", ..." if len(names) > 10 else "")
        raise DataError(f"{where}: unknown {field} {category!r} (known: {known or 'none'})")
    return {"bbox": [float(v) for v in bbox], "category": str(names[category] if names is not None else category)}


def _coco(paths: list[Path], image_dir: Path) -> Iterator[Record]:
    """Rows of COCO files about the same images (captions.json and an instances file), merged by image id: captions
    from annotations with a `caption`, boxes from annotations with a `bbox` and `category_id`."""
    images, captions, boxes = {}, defaultdict(list), defaultdict(list)
    any_boxes, crowd = False, 0
    for path in paths:
        coco = _read_coco(path)
        names = _coco_categories(coco, path)
        for number, ann in enumerate(coco["annotations"], 1):
            where = f"{path}: annotation " + (f"id {ann['id']}" if isinstance(ann, dict) and "id" in ann else
                                              f"{number}")
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise DataError(f"{where}: expected {{'image_id', 'caption'}} or {{'image_id', 'bbox', "
                                f"'category_id'}}")
            if isinstance(ann.get("caption"), str):
                captions[ann["image_id"]].append(ann["caption"].strip())
            elif "bbox" in ann or "category_id" in ann:
                any_boxes = True
                box = _box(ann.get("bbox"), ann.get("category_id"), names, where, "category_id")
                if ann.get("iscrowd"):
                    crowd += 1  # a crowd region is not one object: no true box for it
                else:
                    boxes[ann["image_id"]].append(box)
            else:
                raise DataError(f"{where}: expected a 'caption' string, or a 'bbox' and a 'category_id'")
        for number, image in enumerate(coco["images"], 1):
            if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                raise DataError(f"{path}: image {number}: expected {{'id', 'file_name'}}")
            images.setdefault(image["id"], (number, image))
    for number, image in images.values():
        attributes = {"boxes": boxes.get(image["id"], [])} if any_boxes else None  # an image may hold no object
        row = {**image, "id": str(image["id"]), "captions": captions.get(image["id"], []), "attributes": attributes}
        yield number, image["file_name"], image_dir / image["file_name"], row
    where = paths[0] if len(paths) == 1 else paths[0].parent
    orphans = sum(len(c) for key, c in captions.items() if key not in images)
    if orphans:
        print(f"{where}: ignored {orphans} captions whose image_id is not in 'images'", file=sys.stderr)
    orphans = sum(len(b) for key, b in boxes.items() if key not in images)
    if orphans or crowd:
        print(f"{where}: ignored {orphans} boxes whose image_id is not in 'images' and {crowd} crowd regions",
              file=sys.stderr)


def _one_split(dataset, origin) -> object:
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if len(dataset) != 1:
            raise DataError(f"{origin}: a dataset with splits {', '.join(dataset)}; point at {origin}/<split>"
                            + (" (or ID:SPLIT for a hub id)" if isinstance(origin, str) and is_hub_id(origin) else ""))
        dataset = next(iter(dataset.values()))
    return dataset


def _saved_dataset(path: Path):
    import datasets  # slow to import; only this format needs it

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as error:
        raise DataError(f"{path}: cannot load the saved dataset ({str(error).splitlines()[0]})") from None
    return _one_split(dataset, path)


def _hub_dataset(name: str, whole: bool = False):
    """`owner/name` or `owner/name:split` through `datasets.load_dataset` (downloads unless HF_HUB_OFFLINE is set).
    `whole`: the DatasetDict of every split, to look at its split names."""
    import datasets

    from vrlhf.hub import unreachable

    repo, _, split = name.partition(":")
    try:
        dataset = datasets.load_dataset(repo, split=split or None)
    except Exception as error:  # offline, unknown id, unknown split, no connection: all are one line here
        if split and "split" in str(error).lower():
            raise DataError(f"{name}: no split {split!r} ({str(error).strip().splitlines()[0]})") from None
        raise DataError(unreachable("dataset", repo, error)) from None
    return dataset if whole else _one_split(dataset, name)


def _dataset_records(dataset, origin, base: Path | None, image_column: str = "image",
                     caption_column: str = "") -> Iterator[Record]:
    """Records of a `datasets.Dataset`: the image from `image_column`, the captions from `caption_column` (or the
    first of captions, caption, text); image paths in the data are relative to `base`."""
    import datasets

    names = dataset.column_names
    if image_column not in names:
        raise DataError(f"{origin}: no image column {image_column!r} (columns: {', '.join(names)}; "
                        f"name the image column with --image_column)")
    if caption_column and caption_column not in names:
        raise DataError(f"{origin}: no caption column {caption_column!r} (columns: {', '.join(names)}; "
                        f"name the caption column with --caption_column)")
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # decode here, to report failures
    base = Path(base) if base is not None else Path()
    class_names = _class_names(dataset.features["objects"]) if "objects" in names else None
    for index, record in enumerate(dataset):
        number, where = index + 1, f"{origin}: row {index + 1}"
        image = record.pop(image_column)
        if isinstance(image, dict):  # {"bytes", "path"}
            source = image.get("bytes") or (base / image["path"] if image.get("path") else b"")
            name = image.get("path") or f"<image of row {number}>"
        elif isinstance(image, str):
            source, name = base / image, image
        else:
            raise DataError(f"{where}: unsupported image value {type(image).__name__} in column {image_column!r}")
        attributes = record.get("attributes")
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        captions = _captions({"captions": record[caption_column]} if caption_column else record, where)
        if record.get("objects") is not None:
            record["objects"], boxes = _objects(record["objects"], class_names, where)
            attributes = {"boxes": boxes, **(attributes or {})}  # boxes the attributes already hold come first
        row = {**record, "id": str(record.get("id", index)), "captions": captions, "attributes": attributes}
        yield number, name, source, row


def _class_names(feature) -> dict | None:
    """index -> name of an `objects` feature's ClassLabel category (None when the category is not a ClassLabel). The
    Hub writes it as {"bbox": List(...), "category": List(ClassLabel)} or as List({"bbox", "category": ClassLabel})."""
    import datasets

    while feature is not None and not isinstance(feature, datasets.ClassLabel):
        feature = feature.get("category") if isinstance(feature, dict) else getattr(feature, "feature", None)
    return dict(enumerate(feature.names)) if feature is not None else None


def _objects(objects, class_names: dict | None, where: str) -> tuple[dict, list[dict]]:
    """A row's `objects` value (a dict of lists, or a list of dicts) -> (the same as a dict of lists with category
    names, its boxes in the rows' form)."""
    if isinstance(objects, dict):
        pairs = list(zip(objects.get("bbox") or [], objects.get("category") or [], strict=False))
        if len(objects.get("bbox") or []) != len(objects.get("category") or []):
            raise DataError(f"{where}: objects has {len(objects.get('bbox') or [])} bbox and "
                            f"{len(objects.get('category') or [])} category values")
    elif isinstance(objects, list) and all(isinstance(o, dict) for o in objects):
        pairs = [(o.get("bbox"), o.get("category")) for o in objects]
    else:
        raise DataError(f"{where}: objects must hold 'bbox' and 'category', got {objects!r:.80}")
    boxes = [_box(bbox, category, class_names, f"{where}: object {j}", "category")
             for j, (bbox, category) in enumerate(pairs, 1)]
    return {"bbox": [b["bbox"] for b in boxes], "category": [b["category"] for b in boxes]}, boxes
