"""The grid an image candidate is marked on: the one the round's policy colours on (its policy.json), the colorizer's
8 when the server cannot tell, and a comparison's grid read once per round."""

from __future__ import annotations

import json

from labfix import image

from labeler.marking import Grids, grid_of_policy
from labeler.store import Store


def test_the_grid_is_the_policys_and_8_when_the_policy_does_not_say(tmp_path):
    def policy(name: str, text: str | None):
        folder = tmp_path / name
        folder.mkdir()
        if text is not None:
            (folder / "policy.json").write_text(text)
        return str(folder)

    assert grid_of_policy(policy("four", json.dumps({"meta": {"grid": 4}}))) == 4
    assert grid_of_policy(policy("sixteen", json.dumps({"meta": {"grid": 16, "task": "colorization"}}))) == 16
    unusable = {"none": None, "broken": "{not json", "no-meta": "{}", "list": "[1]", "zero": '{"meta": {"grid": 0}}',
                "text": '{"meta": {"grid": "8"}}', "bool": '{"meta": {"grid": true}}',
                "huge": '{"meta": {"grid": 999}}'}
    for name, text in unusable.items():
        assert grid_of_policy(policy(name, text)) == 8, name
    assert grid_of_policy("Salesforce/blip-image-captioning-base") == 8  # a hub id


def test_each_comparison_gets_its_rounds_grid(tmp_path):
    folder = tmp_path / "colorizer"
    folder.mkdir()
    (folder / "policy.json").write_text(json.dumps({"meta": {"grid": 4}}))
    store = Store(tmp_path / "labels.sqlite")
    ours = store.add_round("colorization", str(folder), 2)
    other = store.add_round("colorization", "/runs/elsewhere", 2)
    a = store.add_comparison(ours, "row-0", image(0), [image(1), image(2)])
    b = store.add_comparison(other, "row-1", image(3), [image(4), image(5)])
    grids = Grids(store)
    assert (grids(a), grids(b)) == (4, 8)
    (folder / "policy.json").write_text(json.dumps({"meta": {"grid": 2}}))
    assert grids(a) == 4  # read once: a round's policy does not change under it
