"""`vrlhf label`, `sample` and `export` given a database or an `--out` they cannot use: one line saying what to do,
no traceback (issue 21, row 5).

A read-only folder is a real one (mode 0555). The tests run as root, whom permission bits do not stop, so those
commands run in a child without the capabilities that let root ignore them (`setpriv --bounding-set
-dac_override,...`): a root process without CAP_DAC_OVERRIDE is held to the owner's bits like anyone else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from labfix import ROOT, refusal

COMMANDS = {  # each command with a database; the rest of its flags good enough to reach the database
    "label": lambda db, tmp: ["label", "--db", db, "--port", "0"],
    "sample": lambda db, tmp: ["sample", "--task", "captioning", "--policy", str(tmp / "p"), "--data", str(tmp / "d"),
                               "--db", db],
    "export": lambda db, tmp: ["export", "--db", db, "--out", str(tmp / "prefs")],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_path_that_is_a_folder_or_not_sqlite(command, tmp_path, capsys):
    argv = COMMANDS[command]
    (tmp_path / "folder").mkdir()
    assert refusal(capsys, argv(str(tmp_path / "folder"), tmp_path)) == (
        f"vrlhf {command}: --db {tmp_path / 'folder'} is a folder: give the SQLite file in it to use, e.g. "
        f"--db {tmp_path / 'folder' / 'labels.sqlite'}")
    (tmp_path / "notes.txt").write_text("my notes, not a database\n" * 100)
    assert refusal(capsys, argv(str(tmp_path / "notes.txt"), tmp_path)) == (
        f"vrlhf {command}: --db {tmp_path / 'notes.txt'} is not a SQLite database: give the labeler's database "
        "file, or a new file name")
    assert (tmp_path / "notes.txt").read_text() == "my notes, not a database\n" * 100  # untouched
    assert refusal(capsys, argv(str(tmp_path / "notes.txt" / "labels.sqlite"), tmp_path)) == (
        f"vrlhf {command}: --db {tmp_path / 'notes.txt' / 'labels.sqlite'}: cannot create its folder (File exists: "
        f"{tmp_path / 'notes.txt'}): give a path in a folder you can write")


def without_root_powers() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a folder read-only for this process")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def run_held_to_permissions(argv: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*without_root_powers(), sys.executable, "-m", "vrlhf.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_read_only_folders_are_one_line_saying_what_to_do(tmp_path, read_only):
    from labfix import fill

    from labeler.store import Store

    db = str(read_only / "labels.sqlite")
    for command in ("sample", "export"):  # `label` opens the store with the same code (and imports Gradio first)
        run = run_held_to_permissions(COMMANDS[command](db, tmp_path))
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr == (f"vrlhf {command}: --db {db}: cannot create the media folder beside it (Permission "
                              f"denied: {read_only / 'labels_media'}): give a path in a folder you can write\n")
    assert list(read_only.iterdir()) == []
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=2)
    store.vote(store.next_comparison("ann")["token"], "a", annotator="ann")
    store.close()
    out = read_only / "prefs"
    run = run_held_to_permissions(["export", "--db", str(tmp_path / "labels.sqlite"), "--out", str(out)])
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"vrlhf export: --out {out}: cannot write beside it (Permission denied: "
                                 f"{read_only}/.prefs.partial-")
    assert run.stderr.endswith("): give a path in a folder you can write\n") and list(read_only.iterdir()) == []
