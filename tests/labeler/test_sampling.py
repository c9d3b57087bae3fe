"""`vrlhf sample` with real tiny policies from the task modules: rounds, rendered candidates, comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeler.sampling import main as sample_main
from labeler.store import LabelError, Store

SIZE = 24


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    from vrlhf.shapes import make_shapes, write_imagefolder

    rows = make_shapes(5, seed=0, size=SIZE)
    return write_imagefolder(rows, tmp_path_factory.mktemp("shapes")), rows


def tiny(task_name: str, rows, out):
    from vrlhf.tasks import get_task

    task = get_task(task_name)
    size = dict(image_size=SIZE, hidden_size=16, encoder_layers=1, decoder_layers=1, heads=2)
    if task_name == "captioning":
        policy = task.build_policy(task.build_tokenizer([c for r in rows for c in r["captions"]]),
                                   max_new_tokens=6, **size)
    else:
        policy = task.build_policy(grid=2, **size)
    policy.save(out)
    return out


@pytest.mark.parametrize("task_name", ["captioning", "colorization"])
def test_sample_rounds(task_name, shapes_dir, tmp_path):
    data, rows = shapes_dir
    policy = tiny(task_name, rows, tmp_path / "policy")
    db = str(tmp_path / "labels.sqlite")
    common = ["--task", task_name, "--policy", str(policy), "--data", str(data), "--db", db]
    assert sample_main(common + ["--k", "2", "--n", "3", "--seed", "1"]) == 0
    assert sample_main(common + ["--k", "3", "--n", "2", "--name", "tuned"]) == 0  # a second round
    store = Store(db)
    counts = store.counts()
    assert (counts["rounds"], counts["comparisons"], counts["candidates"]) == (2, 5, 3 * 2 + 2 * 3)
    views = []
    while (v := store.next_comparison("ann")) is not None:
        store.vote(v["token"], "skip", annotator="ann")
        views.append(v)
    assert sorted(v["k"] for v in views) == [2, 2, 2, 3, 3]
    for v in views:
        for c in v["candidates"]:
            if task_name == "captioning":
                assert isinstance(c["text"], str) and c["image"] is None
            else:
                im = Image.open(store.media_path(c["image"]))
                assert im.format == "PNG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
        shown = Image.open(store.media_path(v["input"])).convert("RGB")
        if task_name == "colorization":  # annotators see the gray input; the export keeps the colour row
            px = np.asarray(shown)
            assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
            assert v["input"] != v["image"]
    assert {x["policy"] for x in store.votes()} == {"policy", "tuned"}


def test_against_round_pits_a_new_policy_against_the_previous_one(shapes_dir, tmp_path, capsys):
    data, rows = shapes_dir
    old = tiny("captioning", rows, tmp_path / "old")
    from vrlhf.tasks import get_task

    task = get_task("captioning")  # a "tuned" policy: same architecture, other weights
    new = task.build_policy(task.load_policy(old).tokenizer, image_size=SIZE, hidden_size=16, encoder_layers=1,
                            decoder_layers=1, heads=2, max_new_tokens=6, seed=7)
    new.save(tmp_path / "new")
    db = str(tmp_path / "labels.sqlite")
    assert sample_main(["--task", "captioning", "--policy", str(tmp_path / "new"), "--against", str(old),
                        "--data", str(data), "--db", db, "--n", "4"]) == 0
    store = Store(db)
    assert [r["policy_name"] for r in store.rounds()] == ["new", "old (against round 1)"]
    views = []
    while (v := store.next_comparison("ann")) is not None:
        store.vote(v["token"], "a", annotator="ann")
        views.append(v)
    assert len(views) == 4
    for v in views:  # one candidate from each policy, in whichever order the app showed them
        made_by = store.candidates([c["candidate_id"] for c in v["candidates"]])
        assert sorted(c["policy"] for c in made_by.values()) == ["new", "old (against round 1)"]
    from vrlhf.cli import main as vrlhf_main

    capsys.readouterr()
    assert vrlhf_main(["sample", "--task", "captioning", "--policy", str(old), "--against", str(old), "--k", "3",
                       "--data", str(data), "--db", db]) == 2  # --against needs k = 2
    assert capsys.readouterr().err == "vrlhf sample: --against compares one sample of each policy: use --k 2\n"
    with pytest.raises(LabelError, match="use --k 2"):  # the library raises; only the CLI prints and exits
        sample_main(["--task", "captioning", "--policy", str(old), "--against", str(old), "--k", "3",
                     "--data", str(data), "--db", db])


def test_killed_round_is_resumed_not_duplicated(tmp_path):
    """`vrlhf sample --against` SIGKILLed part-way leaves its two rounds incomplete; the same command again
    resumes them: every input once, all n present, both rounds complete, no new round."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from labfix import ROOT

    from vrlhf.shapes import make_shapes, write_imagefolder

    n = 60
    rows = make_shapes(n, seed=4, size=SIZE)
    data = write_imagefolder(rows, tmp_path / "shapes")
    old = tiny("captioning", rows, tmp_path / "old")
    from vrlhf.tasks import get_task

    task = get_task("captioning")
    task.build_policy(task.load_policy(old).tokenizer, image_size=SIZE, hidden_size=16, encoder_layers=1,
                      decoder_layers=1, heads=2, max_new_tokens=6, seed=7).save(tmp_path / "new")

    def count(db) -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                return con.execute("SELECT count(*) FROM comparisons").fetchone()[0]
        except sqlite3.Error:  # not created yet
            return 0

    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for attempt in range(3):  # kill it once some comparisons are in; retry if it finished between two looks
        db = str(tmp_path / f"labels{attempt}.sqlite")
        args = ["--task", "captioning", "--policy", str(tmp_path / "new"), "--against", str(old), "--data", str(data),
                "--db", db, "--n", str(n), "--seed", "3", "--batch-size", "2"]
        proc = subprocess.Popen([sys.executable, "-m", "labeler.sampling", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and count(db) < 4:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # a read-write connection: it rebuilds the WAL index a killed writer may have left stale, which a read-only
        # look (as above, while the writer runs) would not, and could then miss the last committed comparison
        killed_at = Store(db).counts()["comparisons"] if Path(db).exists() else 0
        if proc.returncode == -signal.SIGKILL and killed_at < n:
            break
    assert proc.returncode == -signal.SIGKILL and 0 < killed_at < n, (proc.returncode, killed_at)
    rounds = Store(db).rounds()
    assert [(r["complete"], r["comparisons"]) for r in rounds] == [(False, killed_at), (False, 0)]
    early = Store(db).next_comparison("early")  # the app serves what is in: each comparison is written whole
    Store(db).vote(early["token"], "b", annotator="early")

    assert sample_main(args) == 0  # the same command again
    store = Store(db)
    rounds = store.rounds()
    assert [(r["id"], r["complete"], r["part_of"]) for r in rounds] == [(1, True, None), (2, True, 1)]
    assert rounds[0]["comparisons"] == n == store.counts()["comparisons"]
    views = [early]
    while (v := store.next_comparison("ann")) is not None:
        store.vote(v["token"], "a", annotator="ann")
        views.append(v)
    assert sorted(v["item_id"] for v in views) == sorted(str(r["id"]) for r in rows)  # each input exactly once
    assert [x["annotator"] for x in store.votes()].count("early") == 1
    for v in views:  # one candidate of each policy, the killed run's comparisons included
        made_by = store.candidates([c["candidate_id"] for c in v["candidates"]])
        assert sorted(c["round_id"] for c in made_by.values()) == [1, 2]
    assert sample_main(args) == 0 and len(Store(db).rounds()) == 4  # a complete round is not resumed: a new one
