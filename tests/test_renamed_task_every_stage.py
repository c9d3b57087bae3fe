"""A task no stage has heard of goes through every stage: a copy of a task's module under another name, outside
vrlhf/tasks (`--task renamed_tasks.copy_of_colorization`, a dotted import path), through data, pretrain, sample,
labeling over HTTP (the real app, votes through its API), export, train-reward, tune, eval and the demo report. Every
stage finds what it needs in the task contract; none compares a task's name. Colorization's outputs are stored and
shown as images, captioning's as text."""

import json
import sys
from pathlib import Path

import pytest

from reward_model.models import model_class
from vrlhf.cli import main as vrlhf
from vrlhf.tasks import get_task

PACKAGE = "renamed_tasks"
TINY = ["--image_size", "24", "--patch_size", "6", "--hidden_size", "32", "--layers", "1"]
# per task: a metric reward to tune on beside the learned one, a held-out metric `vrlhf eval` reports, what the tuner
# saves of its samples (a JSON of texts, or a PNG grid of images)
CASES = {"colorization": ("colorfulness=0.5", "ab_error", "samples_after.png"),
         "captioning": ("cider_d=0.5", "cider_d", "samples_after.json")}


@pytest.fixture(params=list(CASES))
def renamed(request, tmp_path, monkeypatch):
    """(the task module, its source copied into a package of its own under the copy's import path as NAME)."""
    original = get_task(request.param)
    source = Path(original.__file__).read_text()
    assert source.count(f'NAME = "{original.NAME}"') == 1
    package = tmp_path / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    name = f"{PACKAGE}.copy_of_{original.NAME}"
    copy = source.replace(f'NAME = "{original.NAME}"', f'NAME = "{name}"')
    (package / f"copy_of_{original.NAME}.py").write_text(copy)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))  # what PYTHONPATH does for a command line
    yield original, get_task(name)
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]


RESOLVED: list[str] = []  # every name get_task resolved (into a module) during the current command


def run(*argv) -> None:
    """Run one `vrlhf` command; it must resolve its task exactly once (`vrlhf data` has none; `vrlhf eval-reward`
    resolves the reward model's)."""
    RESOLVED.clear()
    assert vrlhf([str(a) for a in argv]) == 0, argv
    assert len(RESOLVED) == (argv[0] != "data"), (argv[0], RESOLVED)


def test_a_task_module_no_stage_has_heard_of_runs_through_every_stage(renamed, tmp_path, capsys, monkeypatch):
    from labeler.store import Store
    from loop.compare import policy_outputs, versus_mle
    from loop.report import table_rows, write_report
    from loop.simulated import label_all
    from reward_model import load_reward_model
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_oracle

    original, task = renamed
    import vrlhf.tasks

    resolve = vrlhf.tasks._import  # what get_task does with a name, wherever get_task was imported from
    monkeypatch.setattr(vrlhf.tasks, "_import", lambda name: RESOLVED.append(name) or resolve(name))
    name = task.NAME
    metric_reward, metric, samples_file = CASES[original.NAME]
    assert task.__name__ == name and task is not original and not name.startswith("vrlhf.")
    data, policy, db = tmp_path / "data", tmp_path / "policy", tmp_path / "labels.sqlite"
    run("data", "shapes", "--out", data, "--n", 40, "--size", 24, "--test_fraction", 0.25)
    run("pretrain", "--task", name, "--data", data, "--out", policy, "--steps", 2, "--batch_size", 8,
        "--eval_every", 2, "--eval_images", 4, *TINY)
    run("sample", "--task", name, "--policy", policy, "--data", data / "train", "--db", db, "--k", 2, "--n", 12,
        "--temperature", 1.5)

    # labeling over HTTP: simulated annotators ask the running app for comparisons and vote through its API; the
    # oracle reads each candidate back from what the store kept (from_stored)
    store = Store(str(db))
    train_rows = load_rows(data / "train")
    labelled = label_all(store, task, {r["id"]: r for r in train_rows}, annotators=1, seed=0, say=lambda *_: None)
    comparisons = store.counts()["comparisons"]
    assert labelled["votes"] == comparisons >= 6 and {v["task"] for v in store.votes()} == {name}
    store.close()

    run("export", "--db", db, "--out", tmp_path / "export", "--task", name)
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert list(manifest["tasks"]) == [name]
    run("train-reward", "--data", tmp_path / "export", "--out", tmp_path / "rm", "--epochs", 2, "--batch_size", 4,
        "--eval_fraction", 0, "--eval_every", 2, "--image_size", 24, "--vit_hidden", 16, "--vit_layers", 1,
        "--hidden_size", 8, "--image_encoder", "", "--progress", "false")
    run("eval-reward", "--model", tmp_path / "rm", "--data", tmp_path / "export", "--json")
    rm = load_reward_model(tmp_path / "rm")
    assert rm.task == name and rm.task_module is task and type(rm) is model_class(original, rm.cfg.reads)
    assert rm.cfg.reads == getattr(original, "REWARD_READS", "render")  # the task's default (auto)

    run("tune", "--task", name, "--policy", policy, "--data", data, "--out", tmp_path / "tune", "--k", 2,
        "--batch_size", 4, "--steps", 2, "--eval_every", 0, "--save_every", 0, "--eval_size", 4, "--num_show", 2,
        "--log_with", "none", "--reward", f"learned:{tmp_path / 'rm'}=1.0", "--reward", metric_reward)
    assert (tmp_path / "tune" / samples_file).is_file()  # shown images: a grid; shown text: a JSON
    tuned = tmp_path / "tune" / "final"
    capsys.readouterr()
    run("eval", "--task", name, "--policy", tuned, "--data", data / "test", "--json")
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metric in metrics

    # the demo report on this run: the task's REPORT_METRICS as columns, its inputs and outputs as people see them
    test_rows, oracle = load_rows(data / "test"), get_oracle(task)
    mle = policy_outputs(task, task.load_policy(policy), test_rows, seed=0)
    learned = policy_outputs(task, task.load_policy(tuned), test_rows, seed=0)
    trained = json.loads((tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    evaluation = {"learned": versus_mle(task, oracle, test_rows, learned, mle, 0)}
    result = {"task": name, "seconds": {}, "dirs": {"round-1/learned": str(tmp_path / "tune")},
              "rounds": [{"round": 1, "export": {"pairs": manifest["pairs"]}, "reward_model": trained,
                          "evaluation": evaluation}],
              "fixed": {"mle": versus_mle(task, oracle, test_rows, mle, None, 0)}}
    summary = {"machine": "test", "seconds": 1.0, "config": {}, "tasks": {name: result}}
    header, *lines = table_rows(task, result)
    assert header == ["round", "policy", *task.REPORT_METRICS] and len(lines) == 2
    report = write_report(tmp_path, summary, {name: (test_rows[:2], {"mle": mle["sample"][:2]})}, {name: task})
    images = 2 + 2 * (task.SHOWN == "image")  # the inputs, and the samples where people see images
    assert name in report.read_text() and report.read_text().count("<img class='px'") == images
