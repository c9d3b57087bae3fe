"""The shapes dataset: determinism, pixels that match the attributes, captions that parse back exactly, the CLI."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from skimage.color import rgb2lab

from vrlhf import shapes as S

ROWS = S.make_shapes(300, seed=0)
COMPLETE = S.make_shapes(300, seed=0, references="complete")  # the all-true wording, for tests that need it


def facts(items):
    return sorted((x["size"], x["colour"], x["kind"], x["position"]) for x in items)


def test_same_seed_same_rows_other_seed_other_rows():
    again = S.make_shapes(20, seed=0)
    for a, b in zip(ROWS, again):
        assert a["id"] == b["id"] and a["captions"] == b["captions"] and a["attributes"] == b["attributes"]
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    other = S.make_shapes(20, seed=1)
    assert sum(a["attributes"] != b["attributes"] for a, b in zip(ROWS, other)) >= 18
    assert sum(a["captions"] != b["captions"] for a, b in zip(ROWS, other)) >= 18
    assert other[0]["id"] == "shapes-1-0" and S.shapes_row(7, seed=0)["captions"] == ROWS[7]["captions"]


def test_complete_references_parse_to_exactly_the_shapes():
    for row, writers_row in zip(COMPLETE, ROWS):
        assert row["attributes"] == writers_row["attributes"]  # only the captions depend on `references`
        assert len(row["captions"]) == S.N_CAPTIONS
        assert len(set(row["captions"])) >= 4, row["captions"]
        for text in row["captions"]:
            words = text.split()
            assert len(words) <= S.MAX_CAPTION_WORDS and set(words) <= set(S.VOCABULARY), text
            assert text == " ".join(words) and text.islower()
            assert facts(S.parse_caption(text)) == facts(row["attributes"]["shapes"]), text


def test_grammar_is_small_and_varied():
    assert len(S.VOCABULARY) <= 70 and S.VOCABULARY == sorted(set(S.VOCABULARY))
    for row in ROWS:
        for text in row["captions"]:
            assert set(text.split()) <= set(S.VOCABULARY) and len(text.split()) <= S.MAX_CAPTION_WORDS, text
    used = Counter(w for row in COMPLETE for text in row["captions"] for w in text.split())
    for word in ("big", "large", "little", "small", "middle", "center", "next", "with", "and", "there", "that"):
        assert used[word] > 10, word


def test_pixels_match_the_attributes():
    for row in ROWS[:100]:
        pixels = np.asarray(row["image"])
        attributes = row["attributes"]
        assert row["image"].mode == "RGB" and row["image"].size == (48, 48)
        masks = S.shape_masks(attributes)
        assert max(m.sum() for m in masks) < 48 * 48 and min(m.sum() for m in masks) >= 40
        assert (np.sum(masks, axis=0) <= 1).all(), "shapes overlap"
        for shape, mask in zip(attributes["shapes"], masks):
            colour = S.PALETTE[shape["colour"]]
            assert tuple(pixels[shape["cy"], shape["cx"]]) == colour
            assert (pixels[mask] == colour).all()
            assert shape["position"] == S.POSITIONS[int(3 * shape["cx"] / 48)]
            assert shape["r"] == pytest.approx(S.RADIUS[shape["size"]] * 48, abs=1e-3)
        background = pixels[~S.shape_mask(attributes)]
        assert (background[:, 0] == background[:, 1]).all() and (background[:, 1] == background[:, 2]).all()
        assert abs(background[:, 0].mean() - attributes["background"]) < 1.5
        lab = rgb2lab(background[None].astype(float) / 255)[0]
        assert np.abs(lab[:, 1:]).max() < 0.5  # neutral: a = b = 0


def test_layout_is_balanced():
    shapes = [s for row in ROWS for s in row["attributes"]["shapes"]]
    counts = Counter(len(row["attributes"]["shapes"]) for row in ROWS)
    assert min(counts[1], counts[2], counts[3]) > 60
    for key, values in [("kind", S.KINDS), ("colour", S.COLOURS), ("size", S.SIZES), ("position", S.POSITIONS)]:
        seen = Counter(s[key] for s in shapes)
        assert min(seen[v] for v in values) > len(shapes) / len(values) / 2, (key, seen)


def test_masks_scale_to_other_sizes():
    attributes = ROWS[0]["attributes"]
    small, big = S.shape_mask(attributes), S.shape_mask(attributes, 96)
    assert big.shape == (96, 96)
    assert big.sum() == pytest.approx(4 * small.sum(), rel=0.1)
    assert (big[::2, ::2] == small).mean() > 0.97


@pytest.mark.parametrize("text, expected", [
    ("a big red circle on the left and a little blue square in the middle",
     [("large", "red", "circle", "left"), ("small", "blue", "square", "center")]),
    ("a red circle of large size to the right", [("large", "red", "circle", "right")]),
    ("a Red circle, LARGE, on the left!", [("large", "red", "circle", "left")]),
    ("a red circle", [(None, "red", "circle", None)]),
    ("a red circle big blue square", [("large", "red", "circle", None), (None, "blue", "square", None)]),
    ("red red red circle circle", [(None, "red", "circle", None), (None, None, "circle", None)]),
    ("a big red", []), ("", []), ("the the the", []), ("zzzz 123 @@", []),
])
def test_parse_caption_reads_the_grammar_and_survives_garbage(text, expected):
    got = [(m["size"], m["colour"], m["kind"], m["position"]) for m in S.parse_caption(text)]
    assert got == expected
    assert S.parse_caption(None) == []


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_writes_byte_identical_train_and_test_folders(tmp_path, capsys):
    argv = ["shapes", "--n", "12", "--seed", "5", "--size", "32"]
    assert S.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert "11 train + 1 test" in capsys.readouterr().out
    S.main(argv + ["--out", str(tmp_path / "b")])
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert a == b and len(a) == 12 + 2
    S.main(["shapes", "--n", "12", "--seed", "6", "--size", "32", "--out", str(tmp_path / "c")])
    assert digest(tmp_path / "c") != a
    lines = (tmp_path / "a" / "test" / "metadata.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["file_name"] == "images/shapes-5-11.png" and record["id"] == "shapes-5-11"
    assert record["attributes"]["image_size"] == 32 and len(record["captions"]) == 5


def test_cli_help_documents_every_flag_and_bad_values_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        S.main(["shapes", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--n", "--out", "--seed", "--size", "--test_fraction", "--references"):
        assert flag in text
    assert text.count("default") >= 5
    from vrlhf.cli import main as cli

    assert cli(["data", "shapes", "--n", "0", "--out", "x"]) == 2
    assert cli(["data", "shapes", "--n", "5", "--out", "x", "--references", "poetic"]) == 2
    assert cli(["data", "pictures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--n must be >= 1" in err[0] and "--references" in err[1] and "shapes, photos" in err[2]
    with pytest.raises(ValueError, match="size >= 24"):
        S.make_shapes(1, size=16)
