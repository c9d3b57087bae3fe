"""The preference-export contract between its writers (labeler, simulated exports) and its reader (reward model).

An export is one directory: the pairs (a saved HF dataset, `pairs.jsonl` + `media/`, or `pairs.parquet`), an
`audit.jsonl` when it comes from the labeler, and `manifest.json`, written last:

    {"schema_version": 1, "format": "hf", "pairs": 1200, "votes": 1350, "tasks": {"captioning": 1200},
     "writer": "vrlhf export", "created_at": "2026-12-01T10:00:00Z", ...}

Writers build the whole directory beside its destination and swap it into place only when complete
(`staged`), in one atomic step, so a writer killed at any point leaves `--out` holding the previous export or the new
one, and the next writer sweeps what it left beside it. Readers refuse a directory without a manifest,
with a newer schema, or whose pair count differs from the manifest's (`read_manifest`, `check_pairs`): a
half-written or hand-assembled export never trains a reward model.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from vrlhf.errors import DataError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("hf", "jsonl", "parquet")


def write_manifest(directory: str | os.PathLike, format: str, pairs: int, tasks: dict[str, int],
                   writer: str, **extra) -> dict:
    """Write `directory/manifest.json` (the last file of an export); returns it."""
    manifest = {"schema_version": SCHEMA_VERSION, "format": format, "pairs": int(pairs), "tasks": dict(tasks),
                "writer": writer, "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the export at `path` (its directory, or a pairs file in it); DataError if it is unusable."""
    path = Path(path)
    file = (path if path.is_dir() else path.parent) / MANIFEST
    if not file.is_file():
        raise DataError(f"export {path} has no {MANIFEST}: an interrupted export, or not written by `vrlhf export`")
    try:
        manifest = json.loads(file.read_text())
    except ValueError as e:
        raise DataError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("pairs"), int):
        raise DataError(f"{file}: expected a JSON object with an integer 'pairs'")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{file}: schema_version {version!r} is not one this code reads (<= {SCHEMA_VERSION})")
    return manifest


def check_pairs(path: str | os.PathLike, manifest: dict, found: int) -> None:
    """Refuse an export whose data holds another number of pairs than its manifest says."""
    if found != manifest["pairs"]:
        raise DataError(f"export {path} holds {found} pairs but its {MANIFEST} says {manifest['pairs']}: "
                        "it was changed after it was written")


@contextmanager
def staged(out: str | os.PathLike) -> Iterator[Path]:
    """A new directory beside `out` to build an export in; when the block ends without error (and a manifest was
    written) it replaces `out`, else it is removed and `out` is left as it was.

    `out` may be missing, empty or a previous export; anything else is refused rather than replaced.
    """
    out = Path(out).absolute()
    if out.parent.is_dir():
        _sweep(out)  # first: a killed writer's previous export goes back to `out` before `out` is judged
    if out.exists() and not _replaceable(out):
        raise DataError(f"--out {out} exists and is not an export (no {MANIFEST}): give a new or empty directory")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:  # a read-only folder, a file in the way: nothing was written
        raise DataError(f"--out {out}: cannot write beside it ({e.strerror}: {e.filename}): give a path in a folder "
                        "you can write") from None
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"an export was staged in {tmp} without writing its {MANIFEST}")
        if not out.exists():
            os.rename(tmp, out)
        elif _exchange(tmp, out):  # one atomic step: `out` holds the new export, `tmp` the old one
            shutil.rmtree(tmp, ignore_errors=True)  # killed before this ends: the next writer sweeps the rest
        else:  # no atomic swap here: two renames; a kill between them is repaired by the next writer (_sweep)
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


RENAME_EXCHANGE = 2  # renameat2's flag: swap two existing paths atomically (Linux >= 3.15)
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories `a` and `b` in one atomic step (Linux's renameat2); False where the C library or the file
    system cannot, so that the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system has no atomic exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replaceable(out: Path) -> bool:
    """An empty directory, an export, or one written before manifests existed (it has the labeler's audit)."""
    return out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST).is_file() or (out / "audit.jsonl").is_file())


def _sweep(out: Path) -> None:
    """Clear what writers killed mid-way left beside `out` (their process id no longer runs): a `.partial-*` is a new
    export not swapped in, or an old one swapped out, and is removed; an `.old-*` is the previous export that a writer
    without an atomic swap moved aside, put back as `out` if a kill left `out` missing, else removed."""
    leftovers = [p for kind in ("old", "partial") for p in sorted(out.parent.glob(f".{out.name}.{kind}-*-*"))]
    for leftover in leftovers:  # the old exports first: one may have to become `out` again
        pid = leftover.name[len(out.name) + 2:].split("-")[1]
        if not pid.isdigit() or _running(int(pid)):
            continue
        if leftover.name.startswith(f".{out.name}.old-") and not out.exists():
            os.rename(leftover, out)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- TRL's vision preference format -----------------------------------------------------------------------------
# What TRL documents for vision preference data (docs: "Dataset formats", "Vision datasets"; DPOTrainer trains on it):
#     {"images": [PIL image], "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": Q}]}],
#      "chosen": [{"role": "assistant", "content": [{"type": "text", "text": A}]}], "rejected": [... B ...]}

TRL_PROMPT = "Describe the image."  # the question a caption answers (a VLM policy's default prompt)


def trl_preference_features(extra: dict | None = None):
    """The `datasets.Features` of TRL's conversational vision preference format (+ `extra` columns)."""
    import datasets

    def turn():
        return [{"role": datasets.Value("string"),
                 "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}]}]

    return datasets.Features({"images": [datasets.Image()], "prompt": turn(), "chosen": turn(), "rejected": turn(),
                              **(extra or {})})


def is_trl_preferences(dataset) -> bool:
    """Whether a dataset already holds TRL's conversational preference columns (an image column + messages)."""
    import datasets

    names = set(dataset.column_names)
    if not ({"prompt", "chosen", "rejected"} <= names and {"images", "image"} & names):
        return False
    return not isinstance(dataset.features["chosen"], datasets.Value)  # messages, not plain text


def to_trl_preferences(pairs, prompt: str = TRL_PROMPT, keep: tuple[str, ...] = ()):
    """Caption preference pairs (an export's `image`, `chosen`, `rejected`, `label` columns, as `vrlhf export`
    writes them) in TRL's vision preference format, asking each image `prompt`. Ties (label 0.5) have no chosen
    side and are left out. Only TRL's four columns by default (its DPO collator refuses any other key); `keep`
    names export columns to carry along (e.g. `label`, `annotator`, for inspection). DataError for pairs whose
    outputs are not text."""
    import datasets

    from vrlhf.errors import DataError

    names = pairs.column_names
    missing = [c for c in ("image", "chosen", "rejected") if c not in names]
    if missing:
        raise DataError(f"preference pairs lack column(s) {', '.join(missing)} (have: {', '.join(names)})")
    for side in ("chosen", "rejected"):
        if pairs.features[side] != datasets.Value("string"):
            raise DataError(f"preference pairs: {side!r} holds {pairs.features[side]}, not caption text (TRL's "
                            f"preference format is for text answers)")
    labels = pairs["label"] if "label" in names else [1.0] * len(pairs)
    rows = [i for i, label in enumerate(labels) if label is None or float(label) != 0.5]
    pairs = pairs.select(rows)
    kept = {c: pairs.features[c] for c in keep if c in names}
    question = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": prompt}]}]

    def answer(text):
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    columns = {"images": [[image] for image in pairs["image"]], "prompt": [question] * len(pairs),
               "chosen": [answer(t) for t in pairs["chosen"]], "rejected": [answer(t) for t in pairs["rejected"]],
               **{c: pairs[c] for c in kept}}
    return datasets.Dataset.from_dict(columns, features=trl_preference_features(kept))
