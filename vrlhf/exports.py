"""The preference-export contract between its writers (labeler, simulated exports) and its reader (reward model).

An export is one directory: the pairs (a saved HF dataset, `pairs.jsonl` + `media/`, or `pairs.parquet`), an
`audit.jsonl` when it comes from the labeler, and `manifest.json`, written last:

    {"schema_version": 1, "format": "hf", "pairs": 1200, "votes": 1350, "tasks": {"captioning": 1200},
     "writer": "vrlhf export", "created_at": "2026-12-01T10:00:00Z", ...}

Writers build the whole directory beside its destination and rename it into place only when complete
(`staged`), so a killed export leaves the previous one untouched. Readers refuse a directory without a manifest,
with a newer schema, or whose pair count differs from the manifest's (`read_manifest`, `check_pairs`): a
half-written or hand-assembled export never trains a reward model.
"""

from __future__ import annotations

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
    if out.exists() and not _replaceable(out):
        raise DataError(f"--out {out} exists and is not an export (no {MANIFEST}): give a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"an export was staged in {tmp} without writing its {MANIFEST}")
        if out.exists():  # two renames: a reader sees the old export or the new one, never a mix
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replaceable(out: Path) -> bool:
    """An empty directory, an export, or one written before manifests existed (it has the labeler's audit)."""
    return out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST).is_file() or (out / "audit.jsonl").is_file())


def _sweep(out: Path) -> None:
    """Remove the partial exports that killed writers left beside `out` (their process id no longer runs)."""
    for leftover in out.parent.glob(f".{out.name}.partial-*-*"):
        pid = leftover.name[len(out.name) + 2:].split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
