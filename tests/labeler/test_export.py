"""Export: pairs with ties at 0.5, rankings expanded, skips/both-bad/retracted out of pairs but in the audit."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from labfix import fill

from labeler.export import export
from labeler.export import main as export_main
from labeler.store import Store


def vote_all(store: Store, name: str, plan: list[tuple[str, str | None]]) -> list[dict]:
    views = []
    for choice, ranking in plan:
        v = store.next_comparison(name)
        store.vote(v["token"], choice, ranking, annotator=name)
        views.append(v)
    return views


def test_caption_pairs_and_audit(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    fill(store, 5, k=2)
    fill(store, 1, k=3, seed=1, policy="policy-b")
    a, b, tie, skip, bad, rank = vote_all(store, "ann", [("a", None), ("b", None), ("tie", None), ("skip", None),
                                                          ("both_bad", None), ("rank", "BCA")])
    extra = store.next_comparison("ann2")
    store.vote(extra["token"], "a", annotator="ann2")
    store.retract("ann2")  # retracted: no pair
    export(store, tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 3 + 3  # a, b, tie + a 3-way ranking expanded to 3 pairs
    rows = {(r["comparison_id"], r["chosen"], r["rejected"]): r for r in ds}
    text = {c["candidate_id"]: c["text"] for v in (a, b, tie, rank) for c in v["candidates"]}
    pos = lambda v, p: v["candidates"]["ABC".index(p)]["text"]  # noqa: E731
    assert rows[(a["comparison_id"], pos(a, "A"), pos(a, "B"))]["label"] == 1.0
    assert rows[(b["comparison_id"], pos(b, "B"), pos(b, "A"))]["label"] == 1.0
    in_sampling_order = [c["text"] for c in sorted(tie["candidates"], key=lambda c: c["candidate_id"])]
    assert rows[(tie["comparison_id"], *in_sampling_order)]["label"] == 0.5  # a tie: not as shown
    for winner, loser in [("B", "C"), ("B", "A"), ("C", "A")]:
        r = rows[(rank["comparison_id"], pos(rank, winner), pos(rank, loser))]
        assert r["label"] == 1.0 and r["chosen_policy"] == "policy-b"
    assert {skip["comparison_id"], bad["comparison_id"], extra["comparison_id"]}.isdisjoint(ds["comparison_id"])
    r = ds[0]
    assert r["task"] == "captioning" and r["annotator"] == "ann" and r["item_id"].startswith("row-")
    assert r["prompt"] and len(r["images"]) == 1 and r["image"].size == (16, 16) and r["created_at"]
    assert set(text.values()) >= set(ds["chosen"])
    audit = [json.loads(line) for line in open(tmp_path / "hf" / "audit.jsonl")]
    assert [x["choice"] for x in audit] == ["a", "b", "tie", "skip", "both_bad", "rank", "a"]
    assert audit[-1]["retracted_at"] and all(len(x["candidates"]) == x["k"] for x in audit)

    assert export_main(["--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "pq"), "--format",
                        "parquet"]) == 0
    assert len(datasets.Dataset.from_parquet(str(tmp_path / "pq" / "pairs.parquet"))) == 6
    assert export_main(["--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "jl"), "--format",
                        "jsonl"]) == 0
    lines = [json.loads(x) for x in open(tmp_path / "jl" / "pairs.jsonl")]
    assert len(lines) == 6 and (tmp_path / "jl" / lines[0]["image_path"]).exists()


def test_colorization_pairs_are_images(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    fill(store, 2, k=2, task="colorization")
    vote_all(store, "ann", [("b", None), ("tie", None)])
    export(store, tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert ds.features["chosen"].__class__.__name__ == "Image" and "prompt" not in ds.column_names
    assert ds[0]["chosen"].mode == "RGB" and ds[0]["chosen"].size == (16, 16) and sorted(ds["label"]) == [0.5, 1.0]
    fill(store, 1, k=2, task="captioning", seed=3)
    vote_all(store, "ann", [("a", None)])
    with pytest.raises(ValueError, match="several tasks"):
        export(store, tmp_path / "both")
    assert export(store, tmp_path / "cap", task="captioning")["pairs"] == 1


def test_export_order_does_not_depend_on_how_votes_interleaved(tmp_path):
    def older(view) -> str:  # the same judgment whatever order the candidates were shown in
        ids = [c["candidate_id"] for c in view["candidates"]]
        return "a" if ids[0] < ids[1] else "b"

    def labelled(name: str, annotators: list[str]) -> list[tuple]:
        store = Store(tmp_path / f"{name}.sqlite")
        fill(store, 6, k=2)
        views = [store.next_comparison(a) for a in annotators]  # taken together, voted last-first
        for a, v in reversed(list(zip(annotators, views))):
            store.vote(v["token"], older(v), annotator=a)
        while view := store.next_comparison("late"):
            store.vote(view["token"], older(view), annotator="late")
        export(store, tmp_path / name)
        ds = datasets.load_from_disk(str(tmp_path / name))
        return list(zip(ds["comparison_id"], ds["chosen"], ds["rejected"], ds["label"]))

    one_by_one, interleaved = labelled("one", ["solo"]), labelled("many", ["p", "q", "r", "s"])
    assert len(one_by_one) == 6 and one_by_one == interleaved
    assert [row[0] for row in interleaved] == sorted(row[0] for row in interleaved)


def _writes(out: Path) -> set:
    """Every file of `out` and of anything named after it beside it, with size and mtime: any export write shows."""
    seen = set()
    for d in out.parent.glob(f"*{out.name}*"):
        for p in [d, *d.rglob("*")]:
            try:
                st = p.stat()
            except FileNotFoundError:  # renamed or removed while we looked
                continue
            seen.add((str(p), st.st_size, st.st_mtime_ns))
    return seen


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_sigkilled_export_leaves_the_previous_export_whole(tmp_path, fmt):
    """`vrlhf export` killed while it writes: --out still holds the previous export, complete and loadable; what
    the killed run left beside it has no manifest and is refused; the next run replaces --out and sweeps it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from labfix import ROOT

    from reward_model.data import load_export
    from vrlhf.errors import DataError
    from vrlhf.exports import read_manifest

    db = tmp_path / "db.sqlite"
    store = Store(db)
    fill(store, 240, k=2)
    vote_all(store, "ann", [("a", None)] * 120)
    out = tmp_path / "prefs"
    assert export(store, out, fmt)["pairs"] == 120
    vote_all(store, "ann", [("b", None)] * 120)
    data = out / "pairs.jsonl" if fmt == "jsonl" else out
    cmd = [sys.executable, "-m", "labeler.export", "--db", str(db), "--out", str(out), "--format", fmt]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for _ in range(5):  # kill it at its first write; retry if the machine let it finish between two looks
        before = _writes(out)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and _writes(out) == before:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            break
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed, 5 times"
    assert read_manifest(out)["pairs"] == 120 and len(load_export(data)) == 120  # the previous export, whole
    audit = (out / "audit.jsonl").read_text().splitlines()
    assert len(audit) == 120
    left = list(tmp_path.glob(".prefs.partial-*"))
    for partial in left:
        with pytest.raises(DataError, match=f"export {partial} has no manifest.json"):
            load_export(partial)
    export(store, out, fmt)
    assert read_manifest(out)["pairs"] == 240 and len(load_export(data)) == 240
    assert not list(tmp_path.glob(".prefs.*"))  # the killed run's leftovers are swept


def test_a_failed_export_removes_its_staging_and_keeps_out(tmp_path):
    from vrlhf.exports import MANIFEST, staged

    out = tmp_path / "prefs"
    with staged(out) as tmp:
        (tmp / "pairs.jsonl").write_text("old\n")
        (tmp / MANIFEST).write_text('{"schema_version": 1, "format": "jsonl", "pairs": 1}')
    with pytest.raises(ValueError, match="disk full"), staged(out) as tmp:
        (tmp / "pairs.jsonl").write_text("new, half")
        raise ValueError("disk full")
    assert (out / "pairs.jsonl").read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["prefs"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="is not an export"), staged(tmp_path / "mine"):
        pass  # never replaces a directory that is not an export
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_an_export_with_no_pairs_or_an_unknown_task_is_an_error_and_keeps_out(tmp_path, capsys):
    from vrlhf.cli import main as vrlhf_main

    db = tmp_path / "db.sqlite"
    store = Store(db)
    fill(store, 3, k=2)
    fill(store, 2, k=2, task="colorization", seed=1)
    vote_all(store, "ann", [("a", None)])  # one captioning pair
    out = tmp_path / "prefs"
    base = ["export", "--db", str(db), "--out", str(out)]
    assert vrlhf_main(base + ["--task", "captioning"]) == 0
    before = _writes(out)
    skipped = store.next_comparison("ann", exclude=[2, 3])
    store.vote(skipped["token"], "skip", annotator="ann")  # a colorization vote that makes no pair
    present = "tasks present: captioning (1 vote), colorization (1 vote)"
    for args, message in [
        (["--task", "captionin"], f"no task 'captionin' in sqlite:///{db}; {present}"),
        (["--task", "colorization"], f"nothing to export: 1 colorization vote makes no preference pair "
                                     f"(skips, both-bad and retracted votes make none); {present}"),
    ]:
        capsys.readouterr()
        assert vrlhf_main(base + args) == 2
        assert capsys.readouterr().err == f"vrlhf export: {message}\n"
        assert _writes(out) == before  # the previous export untouched, nothing beside it
    fresh = tmp_path / "new"
    empty = Store(tmp_path / "empty.sqlite")
    with pytest.raises(ValueError, match="nothing to export: 0 votes make no preference pair.*tasks present: none"):
        export(empty, fresh)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.glob("*new*")) == []
