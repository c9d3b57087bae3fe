"""Rows a task cannot use are refused when they are loaded: one line naming the file and row, before any model."""

import json

import pytest

from vrlhf.data import DataError, load_rows
from vrlhf.shapes import make_shapes, write_imagefolder
from vrlhf.tasks import get_task

ROWS = make_shapes(40, seed=4, size=24)


def folder_with_captions(tmp_path, row_number: int, captions: list[str], split: bool = True):
    """Shapes image folders (train/ and test/, or one folder) whose row `row_number` of train has `captions`."""
    root = tmp_path / "data"
    train = write_imagefolder(ROWS[:30], root / "train" if split else root)
    if split:
        write_imagefolder(ROWS[30:], root / "test")
    meta = train / "metadata.jsonl"
    records = [json.loads(line) for line in meta.read_text().splitlines()]
    records[row_number - 1]["captions"] = captions
    meta.write_text("".join(json.dumps(r) + "\n" for r in records))
    return root, meta


@pytest.mark.parametrize("captions", [[], [""], ["  ", ""]])
def test_captioning_row_without_a_caption_is_refused_with_file_and_row(tmp_path, captions):
    _, meta = folder_with_captions(tmp_path, 7, captions, split=False)
    with pytest.raises(DataError) as error:
        load_rows(meta, check=get_task("captioning").row_problem)
    message = str(error.value)
    assert str(meta) in message and "row 7" in message and "caption" in message and "\n" not in message


def test_a_row_with_one_non_empty_caption_is_valid_and_colorization_needs_none(tmp_path):
    _, meta = folder_with_captions(tmp_path, 7, ["", "a red circle"], split=False)
    assert len(load_rows(meta, check=get_task("captioning").row_problem)) == 30
    _, meta = folder_with_captions(tmp_path / "again", 7, [], split=False)
    assert len(load_rows(meta, check=get_task("colorization").row_problem)) == 30


def test_tune_refuses_a_row_without_captions_before_loading_a_policy(tmp_path, monkeypatch):
    from tuner.config import TuneConfig
    from tuner.train import tune
    from vrlhf.tasks import captioning

    root, meta = folder_with_captions(tmp_path, 5, [])
    monkeypatch.setattr(captioning, "load_policy", lambda *a: pytest.fail("loaded a policy before checking rows"))
    cfg = TuneConfig(task="captioning", policy=str(tmp_path), data=str(root), out=str(tmp_path / "run"),
                     log_with="none")
    with pytest.raises(DataError, match=f"{meta}: row 5 .*caption"):
        tune(cfg)


def test_pretrain_refuses_a_row_without_captions_before_building_a_policy(tmp_path, monkeypatch):
    from vrlhf.pretrain import PretrainConfig, pretrain
    from vrlhf.tasks import captioning

    root, meta = folder_with_captions(tmp_path, 12, [""])
    monkeypatch.setattr(captioning, "build_policy", lambda *a, **k: pytest.fail("built a policy before checking rows"))
    with pytest.raises(DataError, match=f"{meta}: row 12 .*caption"):
        pretrain(PretrainConfig(task="captioning", data=str(root), out=str(tmp_path / "run"), steps=1))


def test_eval_cli_names_the_row_in_one_line(tmp_path, monkeypatch, capsys):
    from vrlhf import cli
    from vrlhf.tasks import captioning

    root, meta = folder_with_captions(tmp_path, 3, [])
    monkeypatch.setattr(captioning, "load_policy", lambda *a: pytest.fail("loaded a policy before checking rows"))
    code = cli.main(["eval", "--task", "captioning", "--policy", "data/demo/captioner", "--data", str(root / "train")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{meta}: row 3" in err
