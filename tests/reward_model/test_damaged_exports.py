"""A damaged export is one line naming the file (and row) in `vrlhf train-reward` and `vrlhf eval-reward`, before
any training starts: no traceback, no run directory (issue 21, row 4)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labeler"))
from labfix import fill  # noqa: E402

from labeler.store import Store  # noqa: E402
from reward_model.models import build_reward_model  # noqa: E402
from vrlhf.cli import main as vrlhf  # noqa: E402
from vrlhf.tasks import get_task


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Healthy exports of one database in each format that has files to damage, and a reward model to evaluate."""
    root = tmp_path_factory.mktemp("damaged")
    store = Store(root / "db.sqlite")
    fill(store, 6, k=2)
    for choice in "abaabb":
        store.vote(store.next_comparison("ann")["token"], choice, annotator="ann")
    for fmt in ("hf", "jsonl", "parquet"):
        assert vrlhf(["export", "--db", str(root / "db.sqlite"), "--out", str(root / fmt), "--format", fmt]) == 0
    build_reward_model(get_task("captioning"), hidden_size=16).save_pretrained(root / "rm")
    return root


def truncate(file: Path, keep: float) -> None:
    file.write_bytes(file.read_bytes()[: int(file.stat().st_size * keep)])


def torn_last_line(export: Path) -> tuple[Path, str]:
    file = export / "pairs.jsonl"
    lines = file.read_text().splitlines(keepends=True)
    file.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed half-way through the last line
    return file, f"{file} line {len(lines)}: not valid JSON"


def missing_image(export: Path) -> tuple[Path, str]:
    file = export / "pairs.jsonl"
    third = json.loads(file.read_text().splitlines()[2])
    (export / third["image_path"]).unlink()
    return file, f"{file} line 3: the input image file {export / third['image_path']} is missing"


def arrow(export: Path) -> Path:
    return next(export.glob("*.arrow"))


DAMAGES = {  # name: (format, damage(export) -> (the file the line must name, the start of the message after it))
    "truncated parquet": ("parquet", lambda e: (truncate(e / "pairs.parquet", 0.6), (e / "pairs.parquet",
                                                                                       "damaged Parquet file"))[1]),
    "garbage parquet": ("parquet", lambda e: ((e / "pairs.parquet").write_bytes(b"not parquet" * 100),
                                             (e / "pairs.parquet", "damaged Parquet file"))[1]),
    "truncated arrow": ("hf", lambda e: (f := arrow(e), truncate(f, 0.5), (f, "damaged Arrow file"))[2]),
    "broken dataset_info.json": ("hf", lambda e: ((e / "dataset_info.json").write_text('{"features": {"task'),
                                                  (e / "dataset_info.json", "not valid JSON"))[1]),
    "torn last jsonl line": ("jsonl", torn_last_line),
    "missing image file": ("jsonl", missing_image),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", ["train-reward", "eval-reward"])
def test_a_damaged_export_is_one_line_naming_the_file(exports, tmp_path, capsys, damage, command):
    fmt, harm = DAMAGES[damage]
    export = tmp_path / fmt
    shutil.copytree(exports / fmt, export)
    file, message = harm(export)
    out = tmp_path / "rm-out"
    argv = (["train-reward", "--data", str(export), "--out", str(out), "--image_encoder", "", "--no_progress"]
            if command == "train-reward" else ["eval-reward", "--model", str(exports / "rm"), "--data", str(export)])
    capsys.readouterr()
    assert vrlhf(argv) == 2
    said = capsys.readouterr()
    assert said.err.count("\n") == 1, said.err  # one line, no traceback
    assert str(file) in said.err and message in said.err, said.err
    assert said.out == "" and not out.exists()  # refused before any training: no run directory


def test_healthy_exports_still_load(exports):
    from reward_model.data import load_export

    assert [len(load_export(exports / fmt)) for fmt in ("hf", "jsonl", "parquet")] == [6, 6, 6]
