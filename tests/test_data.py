"""Loaders (image folder, COCO captions, saved HF dataset), their error reporting, and the scikit-image photos."""

import json

import numpy as np
import pytest
from PIL import Image

from vrlhf.data import DataError, load_rows, split_rows
from vrlhf.photos import PHOTOS, photo_rows
from vrlhf.shapes import make_shapes, write_imagefolder

ROWS = make_shapes(6, seed=2)


def same_pixels(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def folder(tmp_path):
    return write_imagefolder(ROWS, tmp_path / "shapes")


def test_imagefolder_round_trip(folder):
    for source in (folder, folder / "metadata.jsonl"):
        rows = load_rows(source)
        assert [r["id"] for r in rows] == [r["id"] for r in ROWS]
        for got, want in zip(rows, ROWS):
            assert got["captions"] == want["captions"] and got["attributes"] == want["attributes"]
            assert got["image"].mode == "RGB" and same_pixels(got["image"], want["image"])
    assert [r["id"] for r in load_rows(folder, limit=2)] == [ROWS[0]["id"], ROWS[1]["id"]]


def test_imagefolder_single_caption_fields_grayscale_and_extra_columns(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("L", (8, 8), 77).save(tmp_path / "img" / "cat.png")
    Image.new("RGBA", (8, 8), (9, 8, 7, 6)).save(tmp_path / "img" / "dog.png")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "img/cat.png", "text": "a gray cat", "split": "val"}) + "\n\n"
        + json.dumps({"file_name": "img/dog.png", "caption": "a dog", "id": 12}) + "\n")
    cat, dog = load_rows(tmp_path)
    assert (cat["id"], cat["captions"], cat["attributes"], cat["split"]) == ("cat", ["a gray cat"], None, "val")
    assert (dog["id"], dog["captions"]) == ("12", ["a dog"])
    assert cat["image"].mode == "RGB" and cat["image"].getpixel((0, 0)) == (77, 77, 77)
    assert dog["image"].getpixel((0, 0)) == (9, 8, 7)


def test_coco_captions(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (10, 10), colour).save(tmp_path / f"{i:012d}.jpg", quality=100)
    coco = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 10} for i in range(3)],
            "annotations": [{"image_id": 0, "caption": "red "}, {"image_id": 2, "caption": "blue"},
                            {"image_id": 0, "caption": "all red"}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(coco))
    for rows in (load_rows(tmp_path), load_rows(other, image_dir=tmp_path)):
        assert [(r["id"], r["captions"]) for r in rows] == [("0", ["red", "all red"]), ("1", []), ("2", ["blue"])]
        assert rows[0]["attributes"] is None and rows[0]["width"] == 10
        assert np.abs(np.asarray(rows[2]["image"], int) - [0, 0, 255]).max() < 8


def test_saved_hf_dataset(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict(
        {"image": [r["image"] for r in ROWS[:3]], "captions": [r["captions"] for r in ROWS[:3]],
         "id": [r["id"] for r in ROWS[:3]]},
        features=datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string")),
                                    "id": datasets.Value("string")}))
    data.save_to_disk(str(tmp_path / "hf"))
    rows = load_rows(tmp_path / "hf")
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS[:3]]
    for got, want in zip(rows, ROWS):
        assert got["captions"] == want["captions"] and got["attributes"] is None
        assert same_pixels(got["image"], want["image"])
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataError, match="train, test"):
        load_rows(tmp_path / "dict")
    assert len(load_rows(tmp_path / "dict" / "test")) == 3


def test_missing_and_unreadable_images_are_skipped_and_reported(folder, capsys):
    (folder / "images" / f"{ROWS[1]['id']}.png").unlink()
    (folder / "images" / f"{ROWS[3]['id']}.png").write_bytes(b"not a png")
    rows = load_rows(folder)
    assert [r["id"] for r in rows] == [ROWS[i]["id"] for i in (0, 2, 4, 5)]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 2 of 6 rows" in err
    assert f"images/{ROWS[1]['id']}.png (missing)" in err and f"images/{ROWS[3]['id']}.png (unreadable" in err
    with pytest.raises(DataError, match=rf"row 2: image images/{ROWS[1]['id']}\.png missing"):
        load_rows(folder, strict=True)


def test_malformed_or_empty_datasets_raise(tmp_path, folder):
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    (folder / "metadata.jsonl").write_text("\n".join([lines[0], lines[1][:-5], *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"metadata\.jsonl: line 2: not valid JSON"):
        load_rows(folder)
    (folder / "metadata.jsonl").write_text('{"captions": ["no file name"]}\n')
    with pytest.raises(DataError, match="line 1: expected a JSON object with a 'file_name'"):
        load_rows(folder)
    (folder / "metadata.jsonl").write_text("")
    with pytest.raises(DataError, match="no rows"):
        load_rows(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metadata.jsonl"):
        load_rows(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        load_rows(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad\.json: line 2"):
        load_rows(tmp_path / "bad.json")
    assert issubclass(DataError, ValueError)


def test_all_images_missing_is_an_error(folder, capsys):
    for path in (folder / "images").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="all 6 images missing or unreadable"):
        load_rows(folder)
    assert "skipped 6 of 6 rows" in capsys.readouterr().err


def test_split_rows_is_a_deterministic_partition():
    train, test = split_rows(ROWS, 0.34)
    assert len(test) == 2 and len(train) == 4
    assert sorted(r["id"] for r in train + test) == sorted(r["id"] for r in ROWS)
    assert [r["id"] for r in split_rows(ROWS, 0.34)[1]] == [r["id"] for r in test]
    assert len(split_rows(ROWS, 0.01)[1]) == 1 and len(split_rows(ROWS, 0.0)[1]) == 0


def test_photo_rows_are_deterministic_colour_crops():
    rows = photo_rows(size=32, crops_per_photo=2, seed=0)
    assert [r["id"] for r in rows] == [f"photo-{name}-{j}" for name in PHOTOS for j in range(2)]
    for row in rows:
        assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
        assert row["captions"] == [] and row["attributes"] is None
        pixels = np.asarray(row["image"], int)
        assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 3, row["id"]  # in colour, not gray
    assert not same_pixels(rows[0]["image"], rows[1]["image"])
    again = photo_rows(size=32, crops_per_photo=2, seed=0)
    assert all(same_pixels(a["image"], b["image"]) for a, b in zip(rows, again))
