"""The labeler's commands on the project's dataclass parser: every flag has help, `-` or `_` in flags, the
positional NAME of `vrlhf annotators add`, roles, and one-line refusals naming the file, task or field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from vrlhf.cli import main as vrlhf

ROOT = Path(__file__).resolve().parents[2]


def refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert vrlhf(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err.strip()


@pytest.mark.parametrize("command", ["sample", "label", "export", "annotators add", "annotators list"])
def test_every_flag_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        vrlhf([*command.split(), "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    flags = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--") and "--help" not in line]
    assert len(flags) >= 2, text
    entries = [e for e in text.split("\n  --")[1:] if not e.startswith("config ")]  # --config: the parser's own
    for entry in entries:  # each field's flag: its help line, then its default
        flag, _, help_ = entry.partition("  ")
        assert len(help_.split()) >= 3 and ("(default" in entry or "(required" in entry), entry


def test_refusals_are_one_line_naming_what_is_wrong(tmp_path, capsys):
    db = str(tmp_path / "labels.sqlite")
    missing = tmp_path / "nowhere.md"
    assert refusal(capsys, ["label", "--db", db, "--guidelines", str(missing)]).startswith(
        f"vrlhf label: --guidelines {missing}: cannot read it (FileNotFoundError")
    (tmp_path / "empty.md").write_text("\n")
    assert refusal(capsys, ["label", "--db", db, "--guidelines", f"captioning={tmp_path / 'empty.md'}"]) == (
        f"vrlhf label: --guidelines {tmp_path / 'empty.md'}: the file is empty")
    assert "no task 'captionin' (tasks: captioning, colorization, detection)" in refusal(
        capsys, ["label", "--db", db, "--guidelines", f"captionin={tmp_path / 'empty.md'}"])
    assert refusal(capsys, ["label", "--db", db, "--overlap-fraction", "lots"]).startswith(
        "vrlhf label: argument --overlap_fraction/--overlap-fraction: invalid float value: 'lots'")
    assert refusal(capsys, ["label"]) == "vrlhf label: --db is required"
    assert refusal(capsys, ["export", "--db", db, "--out", str(tmp_path / "x"), "--format", "csv"]) == (
        "vrlhf export: --format 'csv': use one of hf, jsonl, parquet, trl")
    assert refusal(capsys, ["sample", "--task", "segmentation", "--policy", "p", "--data", "d", "--db", db]).startswith(
        "vrlhf sample: unknown task 'segmentation'; choose one of: captioning")
    assert not Path(db).exists()  # refused before the database was created
    assert refusal(capsys, ["annotators", "add", "--file", str(tmp_path / "u.json")]).startswith(
        "vrlhf annotators: give the annotator's name first; usage: vrlhf annotators add NAME")
    assert refusal(capsys, ["annotators", "remove", "x"]).startswith("vrlhf annotators: unknown sub-command 'remove'")


def test_annotators_add_name_first_with_roles(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.json"
    for argv in (["add", "lead", "--admin", "--file", str(users)], ["add", "ann", "--file", str(users)],
                 ["add", "--name", "kim", "--file", str(users), "--admin", "false"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pw\n"))
        assert vrlhf(["annotators", *argv, "--password-stdin", "--rounds", "4"]) == 0
    assert "added lead to" in capsys.readouterr().out
    entries = json.loads(users.read_text())["users"]
    assert {name: e.get("admin", False) for name, e in entries.items()} == {"lead": True, "ann": False, "kim": False}
    assert vrlhf(["annotators", "list", "--file", str(users)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ann", "kim", "lead (admin)"]
    monkeypatch.setattr("sys.stdin", io.StringIO("new-password\n"))  # a new password keeps nobody else's role
    assert vrlhf(["annotators", "add", "ann", "--file", str(users), "--password-stdin", "--rounds", "4"]) == 0
    assert json.loads(users.read_text())["users"]["lead"]["admin"] is True


def test_the_demo_ships_guidelines_for_every_task():
    from labeler.app import load_guidelines
    from vrlhf.tasks import task_names

    folder = ROOT / "data" / "demo" / "guidelines"
    guides = load_guidelines([f"{task}={folder / task}.md" for task in task_names()])
    assert set(guides) == set(task_names())
    assert all("Tie [3]" in text and "Both bad [0]" in text and "Skip [S]" in text for text in guides.values())
