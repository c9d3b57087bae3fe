"""`vrlhf sample` puts no identical candidates to annotators and says how many inputs it dropped; a failed run
leaves nothing new behind (issue 21, rows 13 and 12)."""

from __future__ import annotations

import pytest
from test_sampling import SIZE, tiny

from labeler.store import Store
from vrlhf.cli import main as vrlhf


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vrlhf.shapes import make_shapes, write_imagefolder

    root = tmp_path_factory.mktemp("identical")
    rows = make_shapes(12, seed=0, size=SIZE)
    data = write_imagefolder(rows, root / "shapes")
    return root, data, tiny("captioning", rows, root / "policy")


def sample(world, db, *extra) -> list[str]:
    _, data, policy = world
    return ["sample", "--task", "captioning", "--policy", str(policy), "--data", str(data), "--db", str(db), *extra]


def test_identical_candidates_are_dropped_and_counted(world, tmp_path, capsys):
    """A nearly greedy captioner often writes the same caption twice: such an input is drawn again (up to 4 times),
    and dropped if its candidates still do not differ; the rest are stored, each with two different captions."""
    db = tmp_path / "labels.sqlite"
    assert vrlhf(sample(world, db, "--temperature", "0.03")) == 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    dropped = int(err.split()[1])
    assert err == (f"dropped {dropped} of 12 inputs: 5 draws gave fewer than 2 different candidates (nobody can "
                   "prefer one of two identical outputs)")
    store = Store(db)
    (round_,) = store.rounds()
    assert 0 < dropped < 12 and round_["comparisons"] == 12 - dropped
    assert round_["complete"] and round_["expected"] == 12 - dropped  # complete without the dropped inputs
    seen = 0
    while (view := store.next_comparison("ann")) is not None:
        texts = [c["text"] for c in view["candidates"]]
        assert texts[0] != texts[1]
        store.vote(view["token"], "skip", annotator="ann")
        seen += 1
    assert seen == 12 - dropped


def test_redraws_keep_the_different_candidates_found():
    from labeler.sampling import different

    found = different(["a red circle", "a  red circle", "", "a blue square", ""])
    assert found == ["a red circle", "", "a blue square"]  # spacing is not a difference an annotator sees


def test_all_identical_is_refused_and_leaves_nothing_behind(world, tmp_path, capsys):
    db = tmp_path / "new" / "labels.sqlite"
    capsys.readouterr()
    assert vrlhf(sample(world, db, "--temperature", "0.001")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("dropped 12 of 12 inputs") and err[-1].startswith(
        "vrlhf sample: nothing to label: the candidates of all 12 inputs")
    assert not (tmp_path / "new").exists()  # no database, no media folder, no folder for them
    assert vrlhf(sample(world, tmp_path / "labels.sqlite", "--temperature", "0.03")) == 0
    before = Store(tmp_path / "labels.sqlite").counts()
    assert vrlhf(sample(world, tmp_path / "labels.sqlite", "--temperature", "0.001", "--seed", "3")) == 2
    assert Store(tmp_path / "labels.sqlite").counts() == before  # an existing database: no empty round added


def test_a_failed_sample_leaves_nothing_new_behind(world, tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    capsys.readouterr()
    assert vrlhf(sample(world, db, "--policy", str(tmp_path / "no-such-policy"))) == 2
    assert capsys.readouterr().err.startswith("vrlhf sample: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither labels.sqlite (-wal, -shm) nor labels_media/
    root, data, policy = world
    assert vrlhf(["sample", "--task", "captioning", "--policy", str(policy), "--data", str(tmp_path / "no-data"),
                  "--db", str(tmp_path / "deep" / "er" / "labels.sqlite")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []
