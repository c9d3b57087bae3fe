"""Boxes from the ecosystem's formats: COCO instances JSON (alone or beside captions) and a `datasets` objects column
(a ClassLabel category arrives as its name), their bad input, and detection pretraining and eval on a COCO folder."""

import json

import pytest
from PIL import Image

from vrlhf.cli import main as vrlhf
from vrlhf.data import DataError, load_rows
from vrlhf.tasks.detection_boxes import true_boxes

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}]


def instances(n_images: int = 3) -> dict:
    """A COCO instances file: image 0 holds a car and a person, image 1 a crowd and a person, the others nothing."""
    return {
        "images": [{"id": 100 + i, "file_name": f"{i:012d}.png", "width": 32, "height": 24} for i in range(n_images)],
        "annotations": [
            {"id": 1, "image_id": 100, "bbox": [2, 3, 10, 8], "category_id": 3, "area": 80, "iscrowd": 0},
            {"id": 2, "image_id": 100, "bbox": [15.5, 1, 6, 20], "category_id": 7, "area": 120, "iscrowd": 0},
            {"id": 3, "image_id": 101, "bbox": [0, 0, 32, 24], "category_id": 7, "area": 768, "iscrowd": 1},
            {"id": 4, "image_id": 101, "bbox": [4, 4, 4, 4], "category_id": 7, "area": 16, "iscrowd": 0},
        ],
        "categories": CATEGORIES,
    }


def coco_folder(path, coco: dict, captions: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(coco["images"]):
        Image.new("RGB", (32, 24), (40 * i, 90, 200)).save(path / image["file_name"])
    (path / "instances_val2017.json").write_text(json.dumps(coco))
    if captions is not None:
        (path / "captions.json").write_text(json.dumps(captions))
    return path


def test_coco_instances_load_as_rows_with_named_boxes(tmp_path):
    folder = coco_folder(tmp_path / "coco", instances())
    for source in (folder, folder / "instances_val2017.json"):
        rows = load_rows(source)
        assert [r["id"] for r in rows] == ["100", "101", "102"] and all(r["captions"] == [] for r in rows)
        assert rows[0]["attributes"] == {"boxes": [{"bbox": [2.0, 3.0, 10.0, 8.0], "category": "car"},
                                                   {"bbox": [15.5, 1.0, 6.0, 20.0], "category": "person"}]}
        assert rows[1]["attributes"] == {"boxes": [{"bbox": [4.0, 4.0, 4.0, 4.0], "category": "person"}]}  # no crowd
        assert rows[2]["attributes"] == {"boxes": []}  # an image with no object is a row with no box
        assert rows[0]["image"].size == (32, 24)
    assert true_boxes(rows[0]) == [{"box": [2.0, 3.0, 12.0, 11.0], "label": "car", "score": 1.0},
                                   {"box": [15.5, 1.0, 21.5, 21.0], "label": "person", "score": 1.0}]


def test_a_folder_with_captions_and_instances_gives_rows_with_both(tmp_path):
    captions = {"images": [{"id": 100, "file_name": "000000000000.png"}, {"id": 101, "file_name": "000000000001.png"}],
                "annotations": [{"id": 9, "image_id": 100, "caption": " A car beside a person. "}]}
    rows = load_rows(coco_folder(tmp_path / "coco", instances(), captions))
    assert [r["id"] for r in rows] == ["100", "101", "102"]
    assert rows[0]["captions"] == ["A car beside a person."] and rows[1]["captions"] == []
    assert [b["category"] for b in rows[0]["attributes"]["boxes"]] == ["car", "person"]


def test_a_folder_with_two_instances_files_asks_for_one(tmp_path):
    folder = coco_folder(tmp_path / "coco", instances())
    (folder / "instances_train2017.json").write_text(json.dumps(instances()))
    with pytest.raises(DataError, match="several COCO instances files .*point at one"):
        load_rows(folder)


@pytest.mark.parametrize("bad, message", [
    ({"bbox": [1, 2, 3]}, r"annotation id 2: bbox must be 4 numbers \[x, y, width, height\], got \[1, 2, 3\]"),
    ({"bbox": [1, 2, "3", 4]}, r"annotation id 2: bbox must be 4 numbers"),
    ({"bbox": [1, 2, 3, True]}, r"annotation id 2: bbox must be 4 numbers"),
    ({"bbox": [1, 2, -3, 4]}, r"annotation id 2: bbox \[1, 2, -3, 4\] has a negative size \(width -3, height 4\)"),
    ({"category_id": 5}, r"annotation id 2: unknown category_id 5 \(known: 3, 7\)"),
])
def test_a_bad_annotation_is_one_line_naming_the_file_and_annotation(tmp_path, bad, message):
    coco = instances()
    coco["annotations"][1].update(bad)
    folder = coco_folder(tmp_path / "coco", coco)
    with pytest.raises(DataError, match=message) as error:
        load_rows(folder)
    assert str(error.value).startswith(f"{folder / 'instances_val2017.json'}: ") and "\n" not in str(error.value)


def test_a_datasets_objects_column_gives_class_names_and_boxes():
    import datasets

    image = Image.new("RGB", (32, 24), "white")
    nested = datasets.Features({"image": datasets.Image(), "objects": {  # the Hub's usual layout: a dict of lists
        "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
        "category": datasets.Sequence(datasets.ClassLabel(names=["cat", "dog"]))}})
    listed = datasets.Features({"image": datasets.Image(), "objects": datasets.List({  # a list of objects
        "bbox": datasets.List(datasets.Value("float32"), length=4),
        "category": datasets.ClassLabel(names=["cat", "dog"])})})
    values = [{"bbox": [[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 4.0, 4.0]], "category": [1, 0]},
              {"bbox": [], "category": []}]
    for features, objects in [(nested, values),
                              (listed, [[{"bbox": b, "category": c} for b, c in zip(o["bbox"], o["category"])]
                                        for o in values])]:
        data = datasets.Dataset.from_dict({"image": [image, image], "objects": objects}, features=features)
        first, empty = load_rows(data)
        assert first["attributes"] == {"boxes": [{"bbox": [2.0, 3.0, 10.0, 12.0], "category": "dog"},
                                                 {"bbox": [0.0, 0.0, 4.0, 4.0], "category": "cat"}]}
        assert first["objects"] == {"bbox": [[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 4.0, 4.0]], "category": ["dog", "cat"]}
        assert [b["label"] for b in true_boxes(first)] == ["dog", "cat"] and true_boxes(empty) == []


def test_a_datasets_objects_column_with_string_categories_and_a_bad_box():
    import datasets

    image = Image.new("RGB", (8, 8))
    data = datasets.Dataset.from_dict({"image": [image], "objects": [{"bbox": [[1, 1, 2, 2]], "category": ["kite"]}]},
                                      features=datasets.Features({"image": datasets.Image(), "objects": {
                                          "bbox": datasets.List(datasets.List(datasets.Value("float32"))),
                                          "category": datasets.List(datasets.Value("string"))}}))
    (row,) = load_rows(data)
    assert row["attributes"] == {"boxes": [{"bbox": [1.0, 1.0, 2.0, 2.0], "category": "kite"}]}
    bad = datasets.Dataset.from_dict({"image": [image], "objects": [{"bbox": [[1, 1, -2, 2]], "category": ["kite"]}]},
                                     features=data.features)
    with pytest.raises(DataError, match=r"row 1: object 1: bbox \[1.0, 1.0, -2.0, 2.0\] has a negative size"):
        load_rows(bad)


def test_detection_pretrains_and_evaluates_on_a_coco_folder(tmp_path, capsys):
    coco = instances(8)
    coco["annotations"] += [{"id": 10 + i, "image_id": 100 + i, "bbox": [i, i, 8, 6], "category_id": 3}
                            for i in range(2, 8)]
    folder = coco_folder(tmp_path / "coco", coco)
    tiny = ["--image_size", "24", "--patch_size", "6", "--hidden_size", "32", "--layers", "1"]
    assert vrlhf(["pretrain", "--task", "detection", "--data", str(folder), "--out", str(tmp_path / "policy"),
                  "--steps", "2", "--batch_size", "4", "--eval_every", "2", "--eval_images", "2", *tiny]) == 0
    from vrlhf.tasks import get_task

    assert get_task("detection").load_policy(tmp_path / "policy").meta["classes"] == ["car", "person"]
    capsys.readouterr()
    assert vrlhf(["eval", "--task", "detection", "--policy", str(tmp_path / "policy"), "--data", str(folder),
                  "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"map", "ap50", "ar"} <= set(metrics) and metrics["truth_boxes"] == pytest.approx(9 / 8)  # no crowd
