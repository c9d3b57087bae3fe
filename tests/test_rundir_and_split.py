"""One run-directory writer for every trainer, and one train/held-out split for every stage."""

import json
import random

import pytest

from vrlhf.data import load_split, split_rows
from vrlhf.errors import DataError
from vrlhf.rundir import RunDir
from vrlhf.shapes import make_shapes, write_imagefolder


def lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_metrics_are_appended_flushed_and_trimmed_on_resume(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3):
        run.log({"step": step, "loss": float("nan") if step == 2 else 0.5})
        assert lines(tmp_path)[-1]["step"] == step  # on disk at once, not at close
    assert lines(tmp_path)[1]["loss"] is None  # non-finite numbers are null, so the file stays valid JSON
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # torn by a crash
    RunDir(tmp_path, resume_step=2)
    assert [r["step"] for r in lines(tmp_path)] == [1, 2]  # lines past the checkpoint and the torn one are gone
    RunDir(tmp_path)
    assert lines(tmp_path) == []  # a fresh run starts a fresh log
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(DataError, match="metrics.jsonl: line 2 is not valid JSON"):
        RunDir(tmp_path, resume_step=2)


def test_progress_and_config_and_a_disabled_run_writes_nothing(tmp_path):
    from tuner.config import TuneConfig

    run = RunDir(tmp_path / "main")
    run.save_config(TuneConfig(steps=7))
    run.progress(3, 7)
    progress = json.loads((tmp_path / "main" / "progress.json").read_text())
    assert (progress["step"], progress["total"]) == (3, 7) and progress["updated"]
    assert "steps: 7" in (tmp_path / "main" / "config.yaml").read_text()
    other = RunDir(tmp_path / "rank1", enabled=False)
    other.save_config(TuneConfig())
    other.log({"step": 1})
    other.progress(1, 7)
    assert not (tmp_path / "rank1").exists()


def test_split_depends_on_the_row_ids_only():
    rows = make_shapes(50, seed=3, size=24)
    _, test = split_rows(rows, 0.2)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert {r["id"] for r in split_rows(shuffled, 0.2)[1]} == {r["id"] for r in test}  # not the order
    assert len(test) == 10
    assert {r["id"] for r in split_rows(rows, 0.1)[1]} < {r["id"] for r in test}  # a smaller fraction: a subset


@pytest.mark.parametrize("seeds", [(0, 0), (3, 11)])
def test_tuning_is_never_evaluated_on_a_row_pretraining_trained_on(tmp_path, seeds):
    from tuner.config import TuneConfig
    from tuner.train import split_data as tune_split
    from vrlhf.pretrain import PretrainConfig
    from vrlhf.pretrain import split_data as pretrain_split
    from vrlhf.tasks import get_task

    folder = write_imagefolder(make_shapes(60, seed=2, size=24), tmp_path / "one_folder")  # no train/ and test/
    pretrain_seed, tune_seed = seeds
    captioning = get_task("captioning")
    pretrained_on, _ = pretrain_split(PretrainConfig(data=str(folder), seed=pretrain_seed), captioning)
    tune_train, tune_held_out = tune_split(TuneConfig(data=str(folder), seed=tune_seed), captioning)
    assert tune_held_out and not {r["id"] for r in tune_held_out} & {r["id"] for r in pretrained_on}
    assert not {r["id"] for r in tune_held_out} & {r["id"] for r in tune_train}
    assert len(tune_train) + len(tune_held_out) == 60
    # a folder with train/ and test/ is used as it is
    write_imagefolder(make_shapes(8, seed=5, size=24), tmp_path / "split" / "train")
    write_imagefolder(make_shapes(4, seed=6, size=24), tmp_path / "split" / "test")
    train, test = load_split(tmp_path / "split", 0.5)
    assert (len(train), len(test)) == (8, 4)
