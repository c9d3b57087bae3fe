"""Detection through every stage with no stage edited for it: data, pretrain, sample, labeling over HTTP (the real
app, the oracle reading each candidate back from its stored JSON), export, train-reward (by default the box-set
reward model), eval and the demo report; then tune (see its test)."""

import json

import pytest

from reward_model.models import model_class
from vrlhf.cli import main as vrlhf
from vrlhf.tasks import get_task

TINY = ["--image_size", "24", "--patch_size", "6", "--hidden_size", "32", "--layers", "1"]


def run(*argv) -> None:
    assert vrlhf([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """data -> pretrain -> sample -> label over HTTP -> export -> train-reward, once for the tests below."""
    from labeler.store import Store
    from loop.simulated import label_all
    from vrlhf.data import load_rows

    tmp = tmp_path_factory.mktemp("detection")
    task = get_task("detection")
    data, policy, db = tmp / "data", tmp / "policy", tmp / "labels.sqlite"
    run("data", "shapes", "--out", data, "--n", 40, "--size", 24, "--test_fraction", 0.25)
    run("pretrain", "--task", "detection", "--data", data, "--out", policy, "--steps", 2, "--batch_size", 8,
        "--eval_every", 2, "--eval_images", 4, *TINY)
    run("sample", "--task", "detection", "--policy", policy, "--data", data / "train", "--db", db, "--k", 2,
        "--n", 12, "--temperature", 1.5)
    store = Store(str(db))
    labelled = label_all(store, task, {r["id"]: r for r in load_rows(data / "train")}, annotators=1, seed=0,
                         say=lambda *_: None)
    assert labelled["votes"] == store.counts()["comparisons"] >= 6
    store.close()
    run("export", "--db", db, "--out", tmp / "export", "--task", "detection")
    run("train-reward", "--data", tmp / "export", "--out", tmp / "rm", "--epochs", 2, "--batch_size", 4,
        "--eval_fraction", 0, "--eval_every", 2, "--image_size", 24, "--vit_hidden", 16, "--vit_layers", 1,
        "--hidden_size", 8, "--image_encoder", "", "--progress", "false")
    return task, tmp


def test_detection_runs_through_sample_label_export_train_reward_eval_and_report(stages, capsys):
    from labeler.store import Store
    from loop.compare import policy_outputs, versus_mle
    from loop.report import table_rows
    from reward_model import load_reward_model
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_oracle

    task, tmp = stages
    store = Store(str(tmp / "labels.sqlite"))
    assert {v["task"] for v in store.votes()} == {"detection"}
    store.close()
    manifest = json.loads((tmp / "export" / "manifest.json").read_text())
    assert list(manifest["tasks"]) == ["detection"] and manifest["pairs"] >= 6
    rm = load_reward_model(tmp / "rm")
    assert rm.task_module is task and type(rm) is model_class(task, "boxes")  # REWARD_READS: the box-set model
    rows = load_rows(tmp / "data" / "test")
    outputs = policy_outputs(task, task.load_policy(tmp / "policy"), rows, seed=0)
    assert rm.score(rows, outputs["greedy"]).shape == (len(rows),)
    capsys.readouterr()
    run("eval", "--task", "detection", "--policy", tmp / "policy", "--data", tmp / "data" / "test", "--json")
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"map", "ap50", "ar", "oracle_score"} <= set(metrics)
    mle = versus_mle(task, get_oracle(task), rows, outputs, None, 0)
    header, *lines = table_rows(task, {"rounds": [], "fixed": {"mle": mle}})
    assert header[2:] == list(task.REPORT_METRICS) and lines[0][2:5] != ["–"] * 3  # mAP, AP50, AR filled in


def test_detection_tunes_with_the_papers_reward_and_a_learned_one(stages):
    task, tmp = stages
    run("tune", "--task", "detection", "--policy", tmp / "policy", "--data", tmp / "data", "--out", tmp / "tune",
        "--k", 2, "--batch_size", 4, "--steps", 2, "--eval_every", 0, "--save_every", 0, "--eval_size", 4,
        "--num_show", 2, "--log_with", "none", "--reward", f"learned:{tmp / 'rm'}=1.0",
        "--reward", "detection_reward=0.5")
    assert (tmp / "tune" / "final").is_dir() and (tmp / "tune" / "samples_after.png").is_file()
