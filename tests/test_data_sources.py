"""Data from the ecosystem: a `datasets` dataset in memory or saved, or a hub dataset id, with its image and caption
columns named by --image_column / --caption_column; missing columns and unreachable ids fail in one line."""

import numpy as np
import pytest

from vrlhf.data import DataError, load_rows, load_split
from vrlhf.shapes import make_shapes

ROWS = make_shapes(5, seed=4)


def dataset(image="img", captions="sentences", n=5):
    import datasets

    return datasets.Dataset.from_dict(
        {image: [r["image"] for r in ROWS[:n]], captions: [r["captions"] for r in ROWS[:n]],
         "id": [r["id"] for r in ROWS[:n]]},
        features=datasets.Features({image: datasets.Image(), captions: datasets.List(datasets.Value("string")),
                                    "id": datasets.Value("string")}))


def one_line(error) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def test_an_in_memory_dataset_with_named_columns():
    rows = load_rows(dataset(), image_column="img", caption_column="sentences")
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS]
    for got, want in zip(rows, ROWS):
        assert got["captions"] == want["captions"]
        assert np.array_equal(np.asarray(got["image"]), np.asarray(want["image"]))


def test_a_saved_dataset_with_named_columns_from_the_cli(tmp_path, capsys):
    from vrlhf.cli import main
    from vrlhf.models import tiny_checkpoint

    dataset().save_to_disk(str(tmp_path / "saved"))
    tiny_checkpoint("git", tmp_path / "git")
    common = ["eval", "--task", "captioning", "--policy", str(tmp_path / "git"), "--data", str(tmp_path / "saved"),
              "--json"]
    assert main(common + ["--image_column", "img", "--caption_column", "sentences"]) == 0
    assert '"cider_d"' in capsys.readouterr().out
    assert main(common + ["--caption_column", "sentences"]) == 2  # the image column is called img, not image
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no image column 'image'" in err and "--image_column" in err


@pytest.mark.parametrize("columns, missing, flag", [(dict(image_column="picture"), "image column 'picture'",
                                                     "--image_column"),
                                                    (dict(image_column="img", caption_column="text"),
                                                     "caption column 'text'", "--caption_column")])
def test_a_dataset_without_the_named_columns_is_refused(columns, missing, flag):
    with pytest.raises(DataError) as error:
        load_rows(dataset(), **columns)
    message = one_line(error)
    assert f"no {missing}" in message and flag in message and "img, sentences, id" in message


def test_a_hub_dataset_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        load_rows("someone/captions:validation")
    message = one_line(error)
    assert message.startswith("someone/captions:") and "HF_HUB_OFFLINE=1" in message


def test_a_hub_dataset_id_goes_to_load_dataset_with_its_split(monkeypatch):
    """The id and split are handed to `datasets.load_dataset` as given (the call is recorded, not downloaded), and a
    hub dataset with train and test splits gives the train/held-out split itself."""
    import datasets

    calls = []

    def load_dataset(repo, split=None, **kwargs):
        calls.append((repo, split))
        data = {"train": dataset(n=3), "test": dataset(n=5).select([3, 4])}
        return data[split] if split else datasets.DatasetDict(data)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = load_rows("someone/captions:test", image_column="img", caption_column="sentences")
    assert calls == [("someone/captions", "test")] and [r["id"] for r in rows] == [ROWS[3]["id"], ROWS[4]["id"]]
    train, test = load_split("someone/captions", 0.5, image_column="img", caption_column="sentences")
    assert [r["id"] for r in train] == [r["id"] for r in ROWS[:3]] and len(test) == 2
    with pytest.raises(DataError, match="splits train, test"):
        load_rows("someone/captions", image_column="img")
