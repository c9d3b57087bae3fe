"""Export standing votes as preference pairs (HF dataset, JSONL or Parquet) plus a full JSONL audit dump.

The export directory follows the contract of `vrlhf.exports` (a manifest written last, the whole directory renamed
into place when complete).

Pairs: "a"/"b" give chosen/rejected with label 1.0, "tie" gives label 0.5, a k-way ranking expands to every
ordered pair (k(k-1)/2 rows). Skips, both-bad and retracted votes make no pairs but are all in `audit.jsonl`; so do
pairs whose chosen and rejected are identical (nothing to learn from them), which the export leaves out and counts.
Every pair carries the annotator's `comment` and `flagged` mark on its comparison. `chosen` / `rejected` are the
outputs as their task stores them (the task contract's STORED: text, or images); pairs of a task whose outputs are
text to people too (SHOWN) also carry TRL's preference columns: `prompt` (text) and `images` (a one-image list).

`export_archive` is the page's export: a zip of one such export per task.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from labeler.store import LabelError, Store
from vrlhf.config import parse_config
from vrlhf.errors import ConfigError
from vrlhf.exports import FORMATS, staged, to_trl_preferences, write_manifest
from vrlhf.marks import dumps, parse

CAPTION_PROMPT = "Describe the image."
EXPORT_FORMATS = (*FORMATS, "trl")  # trl: caption pairs in TRL's vision preference format only (vrlhf.exports)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def vote_pairs(vote: dict) -> list[tuple[int, int, float]]:
    """(chosen candidate id, rejected candidate id, label) pairs a standing vote implies."""
    shown, choice = vote["shown"], vote["choice"]
    if vote["retracted_at"] is not None:
        return []
    if choice == "a":
        return [(shown[0], shown[1], 1.0)]
    if choice == "b":
        return [(shown[1], shown[0], 1.0)]
    if choice == "tie":  # no winner: the candidates in sampling order, whichever side each was shown on
        return [(*sorted(shown[:2]), 0.5)]
    if choice == "rank":
        return [(winner, loser, 1.0) for winner, loser in combinations(vote["ranking"], 2)]
    return []  # skip, both_bad


def pairs(store: Store, votes: list[dict]) -> list[dict]:
    """Preference pairs of `votes` (`store.votes()` rows of one task) as plain dicts; images are media-relative PNG
    paths (keys ending in `_path`). In sampling order, a comparison's votes oldest first: the same labels export
    to the same file, however the annotators' votes interleaved in time."""
    tasks = {v["task"] for v in votes}
    if len(tasks) > 1:
        raise LabelError(f"the database holds several tasks ({', '.join(sorted(tasks))}): pass --task")
    in_order = sorted(votes, key=lambda v: (v["comparison_id"], v["vote_id"]))
    found = [(v, p) for v in in_order for p in vote_pairs(v)]
    cands = store.candidates({cid for _, (winner, loser, _) in found for cid in (winner, loser)})
    rows = []
    for v, (winner, loser, label) in found:
        cw, cl = cands[winner], cands[loser]
        rows.append({"task": v["task"], "image_path": v["image"], "chosen": cw["text"], "rejected": cl["text"],
                     "chosen_path": cw["image"], "rejected_path": cl["image"], "label": label,
                     "annotator": v["annotator"], "item_id": v["item_id"], "comparison_id": v["comparison_id"],
                     "vote_id": v["vote_id"], "created_at": v["created_at"], "chosen_policy": cw["policy"],
                     "rejected_policy": cl["policy"], "comment": v["comment"], "flagged": v["flagged"],
                     "chosen_marks": candidate_marks(v, winner), "rejected_marks": candidate_marks(v, loser)})
    return rows


def candidate_marks(vote: dict, candidate_id: int) -> str:
    """The export cell of one candidate's marks in a vote (`vote["marks"]`: {candidate id: marks}, vrlhf.marks):
    JSON text, "" when the vote marked nothing on it (or the store keeps no marks)."""
    marks = vote.get("marks") or {}
    marks = json.loads(marks) if isinstance(marks, str) else marks
    return dumps(parse(marks.get(str(candidate_id), marks.get(candidate_id))))


def is_text(task) -> bool:
    """Whether a task's outputs are text both as stored and as people see them (captions): TRL's text pairs."""
    return task.STORED == "text" and task.SHOWN == "text"


def _dataset(store: Store, rows: list[dict], task):
    """The pairs of `task` (its module: pairs() refuses a mix; never empty) as a `datasets.Dataset`."""
    import datasets

    def png(rel):
        return {"bytes": store.media_path(rel).read_bytes(), "path": None}

    images = task.STORED == "image"
    out = {"task": [r["task"] for r in rows], "image": [png(r["image_path"]) for r in rows]}
    for side in ("chosen", "rejected"):
        out[side] = [png(r[f"{side}_path"]) if images else r[side] for r in rows]
    for key in ("label", "annotator", "item_id", "comparison_id", "vote_id", "created_at", "chosen_policy",
                "rejected_policy", "comment", "flagged", "chosen_marks", "rejected_marks"):
        out[key] = [r[key] for r in rows]
    side = datasets.Image() if images else datasets.Value("string")
    features = {"task": datasets.Value("string"), "image": datasets.Image(), "chosen": side, "rejected": side,
                "label": datasets.Value("float32"), "annotator": datasets.Value("string"),
                "item_id": datasets.Value("string"), "comparison_id": datasets.Value("int64"),
                "vote_id": datasets.Value("int64"), "created_at": datasets.Value("string"),
                "chosen_policy": datasets.Value("string"), "rejected_policy": datasets.Value("string"),
                "comment": datasets.Value("string"), "flagged": datasets.Value("bool"),
                "chosen_marks": datasets.Value("string"), "rejected_marks": datasets.Value("string")}
    if is_text(task):  # TRL's vision preference format: prompt + chosen/rejected + images
        out["prompt"] = [CAPTION_PROMPT] * len(rows)
        out["images"] = [[im] for im in out["image"]]
        features |= {"prompt": datasets.Value("string"), "images": datasets.Sequence(datasets.Image())}
    return datasets.Dataset.from_dict(out, features=datasets.Features(features))


def export(store: Store, out: str | Path, format: str = "hf", task=None) -> dict:
    """Write the pairs to `out` in `format`, with `out/audit.jsonl` and `out/manifest.json`; returns counts. `task`:
    export only this task (its name, or its module when the caller has it: the demo); None: the store's only task.

    Built in a directory beside `out` and renamed into place only when complete (`vrlhf.exports.staged`): an
    interrupted or refused export leaves `out` as it was.
    """
    if format not in EXPORT_FORMATS:
        raise LabelError(f"unknown format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    every = store.votes()
    counts = Counter(v["task"] for v in every)
    tasks = sorted({r["task"] for r in store.rounds()} | set(counts))
    present = "tasks present: " + (", ".join(f"{t} ({plural(counts[t], 'vote')})" for t in tasks) or "none")
    where = store.url.render_as_string(hide_password=True)
    module, task = (task, task.NAME) if hasattr(task, "NAME") else (None, task)
    if task is not None and task not in tasks:
        raise LabelError(f"no task {task!r} in {where}; {present}")
    votes = [v for v in every if task is None or v["task"] == task]  # in time order: the audit's
    rows = pairs(store, votes)
    if rows:  # the database names the task: resolved here, once, into its module (how its outputs are stored)
        from vrlhf.tasks import get_task

        try:
            the_task = module or get_task(rows[0]["task"])
        except ConfigError as e:
            raise LabelError(f"{where}: {e}") from None
    if not rows:  # refused before anything is written: --out keeps what it had
        what = plural(len(votes), f"{task} vote" if task else "vote")
        raise LabelError(f"nothing to export: {what} {'makes' if len(votes) == 1 else 'make'} no preference pair "
                         f"(skips, both-bad and retracted votes make none); {present}")
    same = [r for r in rows if (r["chosen"], r["chosen_path"]) == (r["rejected"], r["rejected_path"])]
    notes = [f"left out {plural(len(same), 'pair')} whose chosen and rejected are identical (nothing to learn from "
             "them; their votes stay in audit.jsonl)"] if same else []
    if len(same) == len(rows):
        raise LabelError(f"nothing to learn: all {plural(len(rows), 'pair')} of {where} have chosen == rejected "
                         "(identical candidates); nothing was written")
    rows = [r for r in rows if (r["chosen"], r["chosen_path"]) != (r["rejected"], r["rejected_path"])]
    if all(r["label"] == 0.5 for r in rows):
        notes.append(f"all {plural(len(rows), 'pair')} are ties (label 0.5): nothing for a reward model to learn")
    written = len(rows)  # pairs in the export (trl leaves ties out)
    with staged(out) as tmp:
        if format == "jsonl":
            with open(tmp / "pairs.jsonl", "w") as f:
                for r in rows:
                    for key in ("image_path", "chosen_path", "rejected_path"):
                        if r[key] is not None:  # copy the PNGs so the export stands alone
                            dst = tmp / "media" / r[key]
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            if not dst.exists():
                                shutil.copyfile(store.media_path(r[key]), dst)
                            r[key] = f"media/{r[key]}"
                    f.write(json.dumps(r) + "\n")
        elif format == "trl":
            if not is_text(the_task):
                raise LabelError(f"--format trl is TRL's preference format for text outputs; {the_task.NAME} "
                                 f"outputs are not text (use hf, jsonl or parquet)")
            trl = to_trl_preferences(_dataset(store, rows, the_task), CAPTION_PROMPT)
            if len(trl) == 0:
                raise LabelError("nothing to export in TRL's format: every pair is a tie (no chosen side)")
            trl.save_to_disk(str(tmp))
            written = len(trl)
        else:
            ds = _dataset(store, rows, the_task)
            if format == "hf":
                ds.save_to_disk(str(tmp))
            else:
                ds.to_parquet(str(tmp / "pairs.parquet"))
        cands = store.candidates({c for v in votes for c in v["candidate_ids"]})
        with open(tmp / "audit.jsonl", "w") as f:
            for v in votes:
                f.write(json.dumps(v | {"candidates": [cands[c] | {"id": c} for c in v["candidate_ids"]]}) + "\n")
        write_manifest(tmp, format, pairs=written, tasks=dict(Counter(r["task"] for r in rows)),
                       writer="vrlhf export", votes=len(votes), audit="audit.jsonl",
                       source=store.url.render_as_string(hide_password=True))
    return {"pairs": written, "votes": len(votes), "out": str(out), "notes": notes}


def export_archive(store: Store, directory: str | Path, format: str = "hf", task: str | None = None
                   ) -> tuple[Path, dict[str, int]]:
    """The page's export: `directory/preferences-<task or all>-<format>.zip` holding one complete export (pairs,
    audit.jsonl, manifest.json) per task, each in a folder named after its task; `task` keeps to one. Tasks with
    no pair yet are left out; LabelError (naming the tasks present) when no task has one. Returns the zip's path and
    {task: pairs}."""
    if format not in FORMATS:
        raise LabelError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    names = [task] if task else list(store.tasks())
    directory = Path(directory)
    made, refusals = {}, []
    with tempfile.TemporaryDirectory(prefix="vrlhf-export-", dir=directory) as build:
        for name in names:
            try:
                made[name] = export(store, Path(build) / name, format, name)["pairs"]
            except LabelError as e:
                refusals.append(str(e))
        if not made:
            raise LabelError(refusals[0] if refusals else "nothing to export: the database holds no task yet")
        zipped = shutil.make_archive(str(directory / f"preferences-{task or 'all'}-{format}"), "zip", build)
    return Path(zipped), made


@dataclass
class ExportConfig:
    db: str = field(metadata={"help": "database: a SQLite file path or a SQLAlchemy URL"})
    out: str = field(metadata={"help": "output directory: new, empty or a previous export (replaced once the new one "
                                       "is complete)"})
    format: str = field(default="hf", metadata={"help": "hf: datasets.save_to_disk; jsonl: pairs.jsonl + PNGs; "
                                                        "parquet: pairs.parquet; trl: TRL's vision preference format "
                                                        "(captions; ties left out)"})
    task: str | None = field(default=None, metadata={"help": "export only this task (needed when the db holds "
                                                             "several)"})
    media: str | None = field(default=None, metadata={"help": "directory of rendered PNGs (default: beside the "
                                                              "SQLite file; needed with PostgreSQL)"})


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ExportConfig, argv, prog="vrlhf export")
    if cfg.format not in EXPORT_FORMATS:  # before the database is opened
        raise LabelError(f"--format {cfg.format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    summary = export(Store(cfg.db, media=cfg.media), cfg.out, cfg.format, cfg.task)
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {summary['pairs']} pairs from {summary['votes']} votes to {summary['out']} "
          "(+ audit.jsonl, manifest.json)")
    return 0


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf export", main))
