"""A task no stage has heard of goes through every stage: a copy of colorization's module under another name, outside
vrlhf/tasks (`--task renamed_tasks.recolor`, a dotted import path), through data, pretrain, sample, labeling over
HTTP (the real app, votes through its API), export, train-reward, tune, eval and the demo report. Every stage finds
what it needs in the task contract; none compares a task's name. (Colorization: its outputs are stored as images.)"""

import json
import sys
from pathlib import Path

import pytest

import vrlhf.tasks.colorization as colorization
from vrlhf.cli import main as vrlhf
from vrlhf.tasks import get_task

PACKAGE = "renamed_tasks"
NAME = f"{PACKAGE}.recolor"
TINY = ["--image_size", "24", "--patch_size", "6", "--hidden_size", "32", "--layers", "1"]


@pytest.fixture
def recolor(tmp_path, monkeypatch):
    """colorization.py's source copied into a package of its own, its NAME the copy's import path."""
    source = Path(colorization.__file__).read_text()
    assert source.count('NAME = "colorization"') == 1
    package = tmp_path / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "recolor.py").write_text(source.replace('NAME = "colorization"', f'NAME = "{NAME}"'))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))  # what PYTHONPATH does for a command line
    yield get_task(NAME)
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]


def run(*argv) -> None:
    assert vrlhf([str(a) for a in argv]) == 0, argv


def test_a_task_module_no_stage_has_heard_of_runs_through_every_stage(recolor, tmp_path, capsys):
    from labeler.store import Store
    from loop.compare import policy_outputs, versus_mle
    from loop.report import table_rows, write_report
    from loop.simulated import label_all
    from reward_model import load_reward_model
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_oracle

    assert recolor.__name__ == NAME and recolor is not colorization and NAME not in str(colorization.__file__)
    data, policy, db = tmp_path / "data", tmp_path / "policy", tmp_path / "labels.sqlite"
    run("data", "shapes", "--out", data, "--n", 40, "--size", 24, "--test_fraction", 0.25)
    run("pretrain", "--task", NAME, "--data", data, "--out", policy, "--steps", 2, "--batch_size", 8,
        "--eval_every", 2, "--eval_images", 4, *TINY)
    run("sample", "--task", NAME, "--policy", policy, "--data", data / "train", "--db", db, "--k", 2, "--n", 12,
        "--temperature", 1.5)

    # labeling over HTTP: simulated annotators ask the running app for comparisons and vote through its API; the
    # oracle reads each candidate back from what the store kept (from_stored)
    store = Store(str(db))
    train_rows = load_rows(data / "train")
    labelled = label_all(store, recolor, {r["id"]: r for r in train_rows}, annotators=1, seed=0, say=lambda *_: None)
    comparisons = store.counts()["comparisons"]
    assert labelled["votes"] == comparisons >= 6 and {v["task"] for v in store.votes()} == {NAME}
    store.close()

    run("export", "--db", db, "--out", tmp_path / "export", "--task", NAME)
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert list(manifest["tasks"]) == [NAME]
    run("train-reward", "--data", tmp_path / "export", "--out", tmp_path / "rm", "--epochs", 2, "--batch_size", 4,
        "--eval_fraction", 0, "--eval_every", 2, "--image_size", 24, "--vit_hidden", 16, "--vit_layers", 1,
        "--hidden_size", 8, "--progress", "false")
    rm = load_reward_model(tmp_path / "rm")
    assert rm.task == NAME and rm.task_module is recolor  # an image reward model: colorizations are shown as images

    run("tune", "--task", NAME, "--policy", policy, "--data", data, "--out", tmp_path / "tune", "--k", 2,
        "--batch_size", 4, "--steps", 2, "--eval_every", 0, "--save_every", 0, "--eval_size", 4, "--num_show", 2,
        "--log_with", "none", "--reward", f"learned:{tmp_path / 'rm'}=1.0", "--reward", "colorfulness=0.5")
    assert (tmp_path / "tune" / "samples_after.png").is_file()  # shown images: a grid, not a JSON of captions
    tuned = tmp_path / "tune" / "final"
    capsys.readouterr()
    run("eval", "--task", NAME, "--policy", tuned, "--data", data / "test", "--json")
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"colorfulness", "ab_error"} <= set(metrics)

    # the demo report on this run: the task's REPORT_METRICS as columns, its inputs and outputs as people see them
    test_rows, oracle = load_rows(data / "test"), get_oracle(recolor)
    mle = policy_outputs(recolor, recolor.load_policy(policy), test_rows, seed=0)
    learned = policy_outputs(recolor, recolor.load_policy(tuned), test_rows, seed=0)
    trained = json.loads((tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    evaluation = {"learned": versus_mle(recolor, oracle, test_rows, learned, mle, 0)}
    result = {"task": NAME, "seconds": {}, "dirs": {"round-1/learned": str(tmp_path / "tune")},
              "rounds": [{"round": 1, "export": {"pairs": manifest["pairs"]}, "reward_model": trained,
                          "evaluation": evaluation}],
              "fixed": {"mle": versus_mle(recolor, oracle, test_rows, mle, None, 0)}}
    summary = {"machine": "test", "seconds": 1.0, "config": {}, "tasks": {NAME: result}}
    header, *lines = table_rows(recolor, result)
    assert header == ["round", "policy", *recolor.REPORT_METRICS] and len(lines) == 2
    report = write_report(tmp_path, summary, {NAME: (test_rows[:2], {"mle": mle["sample"][:2]})}, {NAME: recolor})
    assert NAME in report.read_text() and report.read_text().count("<img class='px'") == 4  # 2 inputs, 2 samples
