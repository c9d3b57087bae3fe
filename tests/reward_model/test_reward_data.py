"""Exports that cannot train a reward model fail with one clear line naming the problem."""

from collections import Counter

import datasets
import pytest
import torch
from PIL import Image

from reward_model.data import load_export, split_by_item, validate
from vrlhf.errors import ConfigError, DataError
from vrlhf.exports import MANIFEST, write_manifest
from vrlhf.tasks import get_task

IMG = Image.new("RGB", (8, 8), (120, 120, 120))


def _export(tmp_path, rows, name="export"):
    ds = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict(
        {c: [] for c in ("task", "image", "chosen", "rejected", "label")})
    ds.save_to_disk(str(tmp_path / name))
    write_manifest(tmp_path / name, "hf", len(ds), dict(Counter(r["task"] for r in rows)), writer="test")
    return str(tmp_path / name)


def _pair(i, chosen="a red circle", rejected="a blue square", label=1.0, task="captioning", image=IMG):
    return {"task": task, "image": image, "chosen": chosen, "rejected": rejected, "label": label,
            "annotator": "a", "item_id": f"item-{i // 2}", "comparison_id": i, "created_at": "2026-01-01"}


def _error(path, task=""):
    with pytest.raises(DataError) as info:
        validate(load_export(path), path, task)
    message = str(info.value)
    assert "\n" not in message and not message.startswith("error")  # the CLI prefixes "vrlhf train-reward: "
    return message


def test_good_export_and_split(tmp_path):
    path = _export(tmp_path, [_pair(i) for i in range(10)] + [_pair(10, label=0.5)])
    task, keep, notes = validate(load_export(path), path)
    assert task.NAME == "captioning" and len(keep) == 11 and notes == []
    train, held = split_by_item(load_export(path), keep, 0.2)
    assert held and train and not {i // 2 for i in train} & {i // 2 for i in held}  # whole items held out


def test_empty_export(tmp_path):
    assert "is empty" in _error(_export(tmp_path, []))


def test_missing_export(tmp_path):
    assert "does not exist" in _error(str(tmp_path / "nope"))


def test_single_class_export(tmp_path):
    rows = [_pair(i, label=0.5) for i in range(4)] + [_pair(4, chosen="same", rejected="same")]
    assert "no preference to learn" in _error(_export(tmp_path, rows))


def test_identical_pairs_are_dropped(tmp_path):
    path = _export(tmp_path, [_pair(0), _pair(1, chosen="same", rejected="same")])
    _, keep, notes = validate(load_export(path), path)
    assert keep == [0] and "chosen == rejected" in notes[0]


def test_missing_image(tmp_path):
    rows = [_pair(i) for i in range(3)]
    rows[2]["image"] = None
    message = _error(_export(tmp_path, rows))
    assert "row 2" in message and "comparison_id 2" in message and "'image'" in message


def test_missing_colorization_output(tmp_path):
    rows = [_pair(i, chosen=IMG, rejected=IMG.convert("L").convert("RGB"), task="colorization") for i in range(2)]
    rows[1]["rejected"] = None
    assert "row 1" in (m := _error(_export(tmp_path, rows))) and "'rejected'" in m


def test_unknown_task(tmp_path):
    message = _error(_export(tmp_path, [_pair(0), _pair(1, task="no_such_task")]))
    assert "row 1" in message and "unknown task 'no_such_task'" in message


def test_task_not_in_export(tmp_path):
    assert "no colorization pairs" in _error(_export(tmp_path, [_pair(0)]), task="colorization")


def test_missing_column(tmp_path):
    rows = [{k: v for k, v in _pair(0).items() if k != "label"}]
    assert "lacks column(s) label" in _error(_export(tmp_path, rows))


def test_jsonl_export(tmp_path):
    IMG.save(tmp_path / "in.png")
    path = tmp_path / "pairs.jsonl"
    import json

    path.write_text("\n".join(json.dumps({**_pair(i), "image": "in.png"}) for i in range(3)))
    write_manifest(tmp_path, "jsonl", 3, {"captioning": 3}, writer="test")
    task, keep, _ = validate(load_export(path), path)
    assert task.NAME == "captioning" and len(keep) == 3


def test_export_without_manifest_is_refused(tmp_path):
    """What an interrupted export leaves (data, no manifest) never loads: one line naming the path."""
    path = _export(tmp_path, [_pair(i) for i in range(4)])
    (tmp_path / "export" / MANIFEST).unlink()
    with pytest.raises(DataError) as info:
        load_export(path)
    assert str(info.value) == (f"export {path} has no {MANIFEST}: an interrupted export, or not written by "
                               "`vrlhf export`")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("")
    with pytest.raises(DataError, match=f"export {jsonl} has no {MANIFEST}"):
        load_export(jsonl)


def test_export_with_another_pair_count_than_its_manifest_is_refused(tmp_path):
    path = _export(tmp_path, [_pair(i) for i in range(4)])
    write_manifest(path, "hf", 5, {"captioning": 5}, writer="test")
    with pytest.raises(DataError, match="holds 4 pairs but its manifest.json says 5"):
        load_export(path)


def test_augment_turns_input_and_both_outputs_together(tmp_path):
    import numpy as np

    from reward_model.data import DIHEDRAL, PairDataset

    rng = np.random.default_rng(0)
    noise = lambda: Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))  # noqa: E731
    path = _export(tmp_path, [_pair(i, noise(), noise(), task="colorization", image=noise()) for i in range(4)])
    ds = load_export(path)
    plain = PairDataset(ds, range(4), get_task("colorization"))
    turned = PairDataset(ds, range(4), get_task("colorization"), augment=True, seed=3)
    seen = set()
    for epoch in range(8):
        turned.epoch = epoch
        for j in range(4):
            a, b = plain[j], turned[j]
            assert a["turn"] is None
            keys = ("image", "chosen", "rejected")
            b = b | {k: b[k] if b["turn"] is None else b[k].transpose(b["turn"]) for k in keys}
            matches = [t for t in DIHEDRAL if all(  # collate_pairs turns the input and what people see of the outputs
                np.array_equal(np.asarray(b[k]), np.asarray(a[k] if t is None else a[k].transpose(t)))
                for k in ("image", "chosen", "rejected"))]
            assert len(matches) == 1  # one and the same turn for the input and both outputs
            assert turned[j]["turn"] == b["turn"]  # reproducible
            seen.add(matches[0])
    assert len(seen) >= 6  # 32 draws over 8 turns: each epoch shows other orientations


def test_pairs_are_decoded_once_within_the_budget(tmp_path, monkeypatch):
    """Epochs after the first reuse the decoded pair (a CPU run decoded every image every epoch), each with its own
    turn; past the budget a pair is decoded afresh on every read, and nothing is kept."""
    import numpy as np

    from reward_model import data

    rng = np.random.default_rng(1)
    noise = lambda: Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))  # noqa: E731
    ds = load_export(_export(tmp_path, [_pair(i, noise(), noise(), task="colorization", image=noise())
                                        for i in range(3)]))
    kept = data.PairDataset(ds, range(3), get_task("colorization"), augment=True)
    first = kept[1]
    kept.epoch = 1
    again = kept[1]
    assert again["image"] is first["image"] and again["chosen"] is first["chosen"]
    turns = set()
    for kept.epoch in range(4):
        turns |= {kept[j]["turn"] for j in range(3)}
    assert len(turns) > 1  # the decoded pair is kept, its turn is drawn each epoch
    assert kept._decoded_bytes == 3 * 3 * 6 * 6 * 3
    monkeypatch.setattr(data, "DECODED_BYTES", 6 * 6 * 3 * 3 - 1)  # less than one pair's three images
    fresh = data.PairDataset(ds, range(3), get_task("colorization"))
    assert fresh[1]["image"] is not fresh[1]["image"] and fresh._decoded == {}
    assert np.array_equal(np.asarray(fresh[1]["image"]), np.asarray(first["image"]))
    # a DataLoader worker lives one epoch: it keeps nothing (4 workers would each hold up to the budget)
    monkeypatch.undo()
    kept_in_worker = torch.utils.data.DataLoader(
        data.PairDataset(ds, range(3), get_task("colorization")), batch_size=3, num_workers=1,
        collate_fn=lambda pairs: torch.utils.data.get_worker_info().dataset._decoded_bytes)
    assert list(kept_in_worker) == [0]


def test_augment_flips_refuses_captions():
    from reward_model.train import resolve_augment

    assert resolve_augment("auto", get_task("colorization")) and not resolve_augment("auto", get_task("captioning"))
    with pytest.raises(ConfigError, match="left and right"):
        resolve_augment("flips", get_task("captioning"))
    with pytest.raises(ConfigError, match="auto, flips or none"):
        resolve_augment("rotate", get_task("colorization"))
